import Foundation

/// A process this benchmark started. It is stopped by its own PID only, with SIGTERM and, if it
/// has not exited after a grace period, SIGKILL.
final class ChildProcess {
    let name: String
    let process: Process
    private let stdoutFD: Int32
    private var buffered: [UInt8] = []
    let logPath: String

    var pid: pid_t { process.processIdentifier }

    /// Starts `executable` with `arguments`; its stderr goes to `logPath` and its stdout is read
    /// line by line with `readLine(timeout:)`. Its stdin is /dev/null.
    init(name: String, executable: String, arguments: [String], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        stdoutFD = output.fileHandleForReading.fileDescriptor
        ChildRegistry.add(process.processIdentifier)
    }

    /// Reads one line of the child's stdout, waiting at most `timeout` seconds. Returns nil on
    /// timeout or when the child closed its stdout.
    func readLine(timeout: Double) -> String? {
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        while true {
            if let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeFirst(newline + 1)
                return line
            }
            let now = monotonicNanoseconds()
            guard now < deadline else { return nil }
            var descriptor = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let waitMilliseconds = Int32(min((deadline - now) / 1_000_000 + 1, 1000))
            let ready = poll(&descriptor, 1, waitMilliseconds)
            if ready < 0 && errno != EINTR { return nil }
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = read(stdoutFD, &chunk, chunk.count)
            if count <= 0 { return nil }
            buffered.append(contentsOf: chunk[..<count])
        }
    }

    /// Reads lines until one starts with `prefix`; returns its `key=value` fields, or nil on timeout.
    func waitForLine(prefix: String, timeout: Double) -> [String: String]? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let line = readLine(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if line.hasPrefix(prefix) { return Self.fields(of: line) }
        }
        return nil
    }

    static func fields(of line: String) -> [String: String] {
        var fields: [String: String] = [:]
        for part in line.split(separator: " ") {
            if let equals = part.firstIndex(of: "=") {
                fields[String(part[..<equals])] = String(part[part.index(after: equals)...])
            }
        }
        return fields
    }

    var isRunning: Bool { process.isRunning }

    /// Sends SIGTERM to this child's PID, waits up to `grace` seconds, then sends SIGKILL.
    /// Returns the exit status, or nil if the child had to be killed.
    @discardableResult
    func stop(grace: Double = 10) -> Int32? {
        defer { ChildRegistry.remove(pid) }
        guard process.isRunning else { return process.terminationStatus }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline {
            usleep(20_000)
        }
        if process.isRunning {
            printError("\(name) (pid \(pid)) did not exit \(Int(grace)) s after SIGTERM; sending SIGKILL")
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }
}

/// Child processes started by one benchmark run, stopped in reverse order of starting.
final class ChildGroup {
    private(set) var children: [ChildProcess] = []
    let directory: String

    init(directory: String) {
        self.directory = directory
    }

    func start(name: String, executable: String, arguments: [String]) throws -> ChildProcess {
        let child = try ChildProcess(
            name: name, executable: executable, arguments: arguments, logPath: "\(directory)/\(name).log")
        children.append(child)
        return child
    }

    func stop(_ child: ChildProcess) {
        child.stop()
        children.removeAll { $0 === child }
    }

    func stopAll() {
        for child in children.reversed() {
            child.stop()
        }
        children.removeAll()
    }
}

/// Paths of the executables next to this one in the build folder.
enum Executables {
    static var directory: String {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (own as NSString).deletingLastPathComponent
    }

    static var bench: String { "\(directory)/presence-bench" }
    static var node: String { "\(directory)/presence-node" }
}

/// Makes a fresh run folder under the system temporary folder.
func makeRunDirectory(_ label: String) throws -> String {
    let path = NSTemporaryDirectory() + "presence-bench-\(label)-\(getpid())-\(Int(Date().timeIntervalSince1970))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// PIDs of running children in a fixed C buffer, so that a signal handler can stop them when this
/// process is interrupted: Swift objects cannot be used safely from a signal handler.
enum ChildRegistry {
    static let capacity = 256
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<pid_t> = {
        let slots = UnsafeMutablePointer<pid_t>.allocate(capacity: capacity)
        slots.initialize(repeating: 0, count: capacity)
        return slots
    }()

    static func add(_ pid: pid_t) {
        for index in 0..<capacity where slots[index] == 0 {
            slots[index] = pid
            return
        }
    }

    static func remove(_ pid: pid_t) {
        for index in 0..<capacity where slots[index] == pid {
            slots[index] = 0
        }
    }

    /// On SIGINT or SIGTERM, sends SIGTERM to every registered child and exits with status 130.
    static func installSignalHandlers() {
        _ = slots
        for number in [SIGINT, SIGTERM] {
            signal(number) { _ in
                for index in 0..<ChildRegistry.capacity where ChildRegistry.slots[index] > 0 {
                    kill(ChildRegistry.slots[index], SIGTERM)
                }
                _exit(130)
            }
        }
    }
}
