import CLibUV
import Foundation

/// Monotonic nanoseconds, the same clock libuv timers use.
func monotonicNanoseconds() -> UInt64 { uv_hrtime() }

/// Figures read from `/proc/PID` of a running process.
enum ProcStats {
    /// User plus system CPU time of all threads of `pid`, in seconds, from fields 14 and 15 of
    /// `/proc/PID/stat`. The kernel counts them in clock ticks (`sysconf(_SC_CLK_TCK)`, usually
    /// 100 per second), so one reading is exact to 10 ms.
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // The command name in brackets may contain spaces, so fields are counted after it; the
        // first field after it is field 3 (state).
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident set size of `pid` in bytes, from `VmRSS` in `/proc/PID/status`.
    static func residentBytes(_ pid: pid_t) -> Int? {
        statusField(pid, "VmRSS:").map { $0 * 1024 }
    }

    /// Open file descriptors of `pid`.
    static func openFiles(_ pid: pid_t) -> Int? {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?.count
    }

    private static func statusField(_ pid: pid_t, _ name: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2 { return Int(parts[1]) }
        }
        return nil
    }
}

/// The machine a run happened on, for the results page.
struct MachineDescription {
    var cores: Int
    var cpuModel: String
    var kernel: String
    var swiftVersion: String

    static func current() -> MachineDescription {
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        var model = "unknown"
        if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            for line in info.split(separator: "\n") where line.hasPrefix("model name") {
                if let colon = line.firstIndex(of: ":") {
                    model = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                break
            }
        }
        var names = utsname()
        uname(&names)
        let kernel = withUnsafeBytes(of: &names.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        let swift = commandOutput("/usr/bin/env", ["swift", "--version"])?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        return MachineDescription(cores: cores, cpuModel: model, kernel: kernel, swiftVersion: swift)
    }

    var markdown: String {
        "\(cores) cores (`nproc`), \(cpuModel), Linux \(kernel), \(swiftVersion)"
    }
}

/// Runs a short command and returns its standard output, or nil when it fails to start.
func commandOutput(_ path: String, _ arguments: [String]) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    do { try process.run() } catch { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// Order statistics of one set of samples.
struct Distribution {
    let sorted: [Double]

    init(_ samples: [Double]) { sorted = samples.sorted() }

    var count: Int { sorted.count }

    /// Returns the nearest-rank percentile: the smallest sample with at least `fraction` of the
    /// samples at or below it.
    func percentile(_ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }

    var median: Double { percentile(0.5) }
    var p99: Double { percentile(0.99) }
    var min: Double { sorted.first ?? .nan }
    var max: Double { sorted.last ?? .nan }
}

/// Formats a number with `digits` decimals.
func formatted(_ value: Double, _ digits: Int = 2) -> String {
    String(format: "%.\(digits)f", value)
}

/// Prints a progress line and flushes it, so it appears at once in a file or pipe too.
func say(_ text: String) {
    print(text)
    fflush(nil)
}

/// Prints a line to standard error at once.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
