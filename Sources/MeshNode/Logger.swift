#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Log severity, lowest first.
public enum LogLevel: Int, Comparable, Sendable, CaseIterable {
    case trace, debug, info, warning, error

    public var name: String {
        switch self {
        case .trace: return "trace"
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warning"
        case .error: return "error"
        }
    }

    public init?(name: String) {
        guard let level = LogLevel.allCases.first(where: { $0.name == name }) else { return nil }
        self = level
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Output format of log lines.
public enum LogFormat: String, Sendable {
    case logfmt
    case json
}

/// Writes one line per event to stderr: `ts=… level=info msg="member suspected" node=node-2`.
/// Used from the node's loop thread only.
public final class Logger: @unchecked Sendable {
    public var level: LogLevel
    public var format: LogFormat
    private let fields: [(String, String)]

    public init(level: LogLevel = .info, format: LogFormat = .logfmt, fields: [(String, String)] = []) {
        self.level = level
        self.format = format
        self.fields = fields
    }

    public func trace(_ message: @autoclosure () -> String, _ values: @autoclosure () -> [(String, Any)] = []) {
        log(.trace, message(), values())
    }

    public func debug(_ message: @autoclosure () -> String, _ values: @autoclosure () -> [(String, Any)] = []) {
        log(.debug, message(), values())
    }

    public func info(_ message: String, _ values: [(String, Any)] = []) { log(.info, message, values) }
    public func warning(_ message: String, _ values: [(String, Any)] = []) { log(.warning, message, values) }
    public func error(_ message: String, _ values: [(String, Any)] = []) { log(.error, message, values) }

    public func isEnabled(_ level: LogLevel) -> Bool { level >= self.level }

    public func log(_ level: LogLevel, _ message: String, _ values: [(String, Any)]) {
        guard level >= self.level else { return }
        let timestamp = RFC3339.string(fromMilliseconds: Int64(Date().timeIntervalSince1970 * 1000), fractional: true)
        var pairs: [(String, String)] = [("ts", timestamp), ("level", level.name), ("msg", message)]
        pairs += fields
        pairs += values.map { ($0.0, String(describing: $0.1)) }
        let line: String
        switch format {
        case .logfmt:
            line = pairs.map { "\($0.0)=\(Logger.logfmtValue($0.1))" }.joined(separator: " ")
        case .json:
            line = "{" + pairs.map { "\(JSONText.quote($0.0)):\(JSONText.quote($0.1))" }.joined(separator: ",") + "}"
        }
        Logger.writeToStandardError(line + "\n")
    }

    /// Writes `text` to stderr and drops what cannot be written. `FileHandle.write` stops the
    /// process when the reader of a pipe has gone (EPIPE), and a node must outlive its log reader.
    static func writeToStandardError(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }

    static func logfmtValue(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\n" }
        guard needsQuotes else { return value }
        let escaped = value.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
        return "\"\(escaped)\""
    }
}

/// JSON string quoting for hand-built JSON text.
enum JSONText {
    static func quote(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// RFC 3339 UTC timestamps, e.g. `2026-12-04T20:31:40Z`.
public enum RFC3339 {
    public static func string(fromMilliseconds milliseconds: Int64, fractional: Bool = false) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let base = String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
        if fractional {
            return base + String(format: ".%03dZ", Int(milliseconds % 1000))
        }
        return base + "Z"
    }
}
