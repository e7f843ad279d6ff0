import Foundation
import MeshCore

/// A `host:port` pair with an IPv4 host, as in `"127.0.0.1:7101"`. With port 0 the OS picks a free port.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `"HOST:PORT"`; returns nil unless HOST is a dotted IPv4 address and PORT is 0 to 65535.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        guard let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// The method clients authenticate with.
public enum AuthMode: String, Sendable {
    /// Development mode: the user is the `userId` query parameter.
    case none
    /// A JWT signed with HMAC-SHA256; the user is its `sub` claim.
    case hs256
}

public struct AuthConfig: Sendable, Equatable {
    public var mode: AuthMode = .none
    /// HMAC secrets; a token signed with any of them is accepted, so secrets rotate without downtime.
    public var secrets: [String] = []
}

/// Presence behaviour of this node.
public struct PresenceSettings: Sendable, Equatable {
    /// Milliseconds an offline event waits before it is sent. A return within it cancels the event,
    /// so a client that reconnects quickly causes no offline/online flap. Default 0 (no delay).
    public var offlineGraceMs: UInt64 = 0
}

/// Per-node resource limits.
public struct Limits: Sendable, Equatable {
    /// Largest client message in bytes; longer messages get an `error` and are discarded.
    public var maxMessageBytes: Int = 65_536
    /// Most user IDs in one `presence.subscribe`, `presence.query` or HTTP query.
    public var maxUsersPerRequest: Int = 10_000
    /// Most user IDs one session may be subscribed to.
    public var maxSubscriptionsPerSession: Int = 50_000
    /// Most sessions on this node that may subscribe to `"*"` (every user) at once.
    public var maxWildcardSubscribers: Int = 100
    /// Most open client sessions on this node; further upgrades get HTTP 503.
    public var maxSessions: Int = 19_000
    /// Largest number of users in a `"*"` snapshot.
    public var maxSnapshotUsers: Int = 100_000
    /// Milliseconds without any frame from a client after which the node pings it.
    public var pingIntervalMs: UInt64 = 30_000
    /// Milliseconds without any frame (pongs included) after which the node closes the session
    /// and, if it was the user's last, takes the user offline. Lower finds vanished phones sooner
    /// and costs clients more wake-ups; it must be above `pingIntervalMs`.
    public var idleTimeoutMs: UInt64 = 60_000
}

public struct LogConfig: Sendable, Equatable {
    public var level: LogLevel = .info
    public var format: LogFormat = .logfmt
}

/// Everything one `presence-node` run is configured with, validated as a whole.
public struct NodeConfig: Sendable, Equatable {
    public var name: String
    public var clientListen = HostPort(host: "127.0.0.1", port: 7101)
    public var gossipListen = HostPort(host: "127.0.0.1", port: 7201)
    public var seeds: [HostPort] = []
    public var auth = AuthConfig()
    public var gossip = GossipSettings.lan
    public var presence = PresenceSettings()
    public var limits = Limits()
    public var log = LogConfig()
    /// Testing aid: milliseconds added to this node's wall clock (may be negative), so tests can
    /// run nodes with skewed clocks on one machine. Set only by the hidden `--clock-offset-ms`
    /// flag. Default 0.
    public var clockOffsetMs: Int64 = 0

    public init(name: String) {
        self.name = name
    }
}

/// A configuration that cannot be used; `problems` name each field and the accepted values.
public struct ConfigError: Error, CustomStringConvertible {
    public var problems: [String]

    public var description: String {
        "invalid configuration:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

/// A node that cannot start although its configuration is valid: a port in use, a missing package.
public struct StartupError: Error, CustomStringConvertible {
    public var message: String

    public var description: String { "cannot start: \(message)" }
}

/// Tells JSON booleans from numbers in `JSONSerialization` output. On Linux the numbers 0 and 1
/// also satisfy `is Bool`, so the check reads the stored C type instead (`c` for a boolean).
func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}

/// Reads a JSON object field by field, recording problems with the field's full path, and
/// reports fields it was never asked about as unknown.
struct JSONFields {
    let path: String
    let object: [String: Any]
    private(set) var used: Set<String> = []

    init(path: String, object: [String: Any]) {
        self.path = path
        self.object = object
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func value(_ key: String) -> Any? {
        used.insert(key)
        return object[key]
    }

    mutating func string(_ key: String, _ problems: inout [String]) -> String? {
        guard let raw = value(key) else { return nil }
        guard let text = raw as? String else {
            problems.append("\(name(key)) must be a string")
            return nil
        }
        return text
    }

    mutating func strings(_ key: String, _ problems: inout [String]) -> [String]? {
        guard let raw = value(key) else { return nil }
        guard let list = raw as? [Any], list.allSatisfy({ $0 is String }) else {
            problems.append("\(name(key)) must be an array of strings")
            return nil
        }
        return list.map { $0 as! String }
    }

    mutating func integer(_ key: String, in range: ClosedRange<Int>, _ problems: inout [String]) -> Int? {
        guard let raw = value(key) else { return nil }
        guard !isJSONBoolean(raw), let number = raw as? NSNumber,
            let integer = Int(exactly: number.doubleValue)
        else {
            problems.append("\(name(key)) must be an integer from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        guard range.contains(integer) else {
            problems.append("\(name(key)) must be from \(range.lowerBound) to \(range.upperBound), got \(integer)")
            return nil
        }
        return integer
    }

    mutating func object(_ key: String, _ problems: inout [String]) -> JSONFields? {
        guard let raw = value(key) else { return nil }
        guard let nested = raw as? [String: Any] else {
            problems.append("\(name(key)) must be an object")
            return nil
        }
        return JSONFields(path: name(key), object: nested)
    }

    func reportUnknown(_ problems: inout [String], known: String) {
        for key in object.keys.sorted() where !used.contains(key) {
            problems.append("\(name(key)) is not a known field (known: \(known))")
        }
    }
}
