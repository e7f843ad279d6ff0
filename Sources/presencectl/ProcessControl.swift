// Starting, signalling and watching node processes by PID.
//
// Nodes are started with posix_spawn in a session of their own (setsid), so they keep running
// after presencectl exits and do not receive the terminal's Ctrl-C. Foundation's `Process` keeps
// a child in the caller's session and expects the caller to wait for it, which does not fit.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Failure to start a process, naming the executable.
struct SpawnError: Error, CustomStringConvertible {
    let description: String
}

/// State of a process as a caller that is not its parent can observe it.
enum ProcessState: Equatable {
    /// Running or sleeping.
    case running
    /// Stopped by SIGSTOP or a terminal stop signal; it acts on other signals after SIGCONT.
    case stopped
    /// Exited but not yet reaped by its parent.
    case zombie
    /// No process has this PID.
    case absent

    /// True for a process that can still run code.
    var isAlive: Bool { self == .running || self == .stopped }
}

enum ProcessControl {
    /// Starts `executable` with `arguments` in a new session. Standard input reads /dev/null, and
    /// standard output and standard error go to `logPath`, which is truncated unless `appendLog`.
    /// Returns the PID. The caller's signal mask and handlers are not passed on.
    static func spawnDetached(
        executable: String, arguments: [String], logPath: String, appendLog: Bool
    ) throws -> pid_t {
        #if canImport(Glibc)
        var fileActions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        #else
        var fileActions: posix_spawn_file_actions_t? = nil
        var attributes: posix_spawnattr_t? = nil
        #endif
        posix_spawn_file_actions_init(&fileActions)
        posix_spawnattr_init(&attributes)
        defer {
            posix_spawn_file_actions_destroy(&fileActions)
            posix_spawnattr_destroy(&attributes)
        }

        let logFlags = O_WRONLY | O_CREAT | (appendLog ? O_APPEND : O_TRUNC)
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, logPath, logFlags, 0o644)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        // A node must not keep descriptors that presencectl inherited, such as the pipe of a CI
        // step or a terminal multiplexer, because the holder of the other end may wait for it to
        // close. Darwin closes them with a spawn flag, Linux with one close action for each.
        #if os(Linux)
        for descriptor in inheritedDescriptors() {
            posix_spawn_file_actions_addclose(&fileActions, descriptor)
        }
        #endif

        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for signal in [SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU] {
            sigaddset(&defaultSignals, signal)
        }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        posix_spawnattr_setflags(&attributes, Int16(spawnFlags))

        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        argv.append(nil)
        defer { argv.forEach { free($0) } }

        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &fileActions, &attributes, argv, environ)
        guard result == 0 else {
            throw SpawnError(description: "starting \(executable) failed: \(errnoDescription(result))")
        }
        return pid
    }

    /// Returns the open file descriptors of this process from 3 up, read from /proc/self/fd.
    private static func inheritedDescriptors() -> [Int32] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return [] }
        return names.compactMap { Int32($0) }.filter { $0 > 2 }
    }

    /// Returns the state of `pid`, read from /proc on Linux.
    static func state(of pid: pid_t) -> ProcessState {
        guard pid > 0 else { return .absent }
        #if os(Linux)
        guard let stat = readSmallFile("/proc/\(pid)/stat") else { return .absent }
        // The state letter follows the command name, which is in parentheses and may contain
        // spaces or parentheses itself, so the last ')' ends it.
        guard let nameEnd = stat.lastIndex(of: ")") else { return .absent }
        let rest = stat[stat.index(after: nameEnd)...].drop(while: { $0 == " " })
        switch rest.first {
        case "Z", "X", "x": return .zombie
        case "T", "t": return .stopped
        case nil: return .absent
        default: return .running
        }
        #else
        if kill(pid, 0) == 0 || errno == EPERM { return .running }
        return .absent
        #endif
    }

    /// Returns the command line of `pid` from /proc, or nil when it cannot be read. Other systems
    /// than Linux always get nil.
    static func commandLine(of pid: pid_t) -> [String]? {
        #if os(Linux)
        guard let text = readSmallFile("/proc/\(pid)/cmdline"), !text.isEmpty else { return nil }
        return text.split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init)
        #else
        return nil
        #endif
    }

    /// Sends `signal` to `pid`; returns the errno on failure.
    @discardableResult
    static func send(_ signal: Int32, to pid: pid_t) -> Int32? {
        kill(pid, signal) == 0 ? nil : errno
    }

    /// Reaps `pid` if it is an exited child of this process and returns how it ended, or nil while
    /// it runs. For another process it returns "exited" once the process is gone or a zombie.
    static func exitDescription(of pid: pid_t) -> String? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid {
            return describeWaitStatus(status)
        }
        if result == 0 { return nil }
        return state(of: pid).isAlive ? nil : "exited"
    }

    /// Waits until `pid` is gone or a zombie, reaping it if it is a child of this process.
    /// Returns false if it still runs at `deadline`.
    static func waitForExit(_ pid: pid_t, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            if exitDescription(of: pid) != nil { return true }
            if ContinuousClock.now >= deadline { return false }
            sleep(for: .milliseconds(50))
        }
    }

    /// Stops each PID with SIGTERM, then SIGKILL for those still running after `grace`. A stopped
    /// process also gets SIGCONT, because it acts on SIGTERM only once it runs. Returns the PIDs
    /// that needed SIGKILL.
    @discardableResult
    static func terminate(_ pids: [pid_t], grace: Duration) -> Set<pid_t> {
        for pid in pids {
            send(SIGTERM, to: pid)
            send(SIGCONT, to: pid)
        }
        let deadline = ContinuousClock.now + grace
        var killed: Set<pid_t> = []
        for pid in pids where !waitForExit(pid, until: deadline) {
            send(SIGKILL, to: pid)
            killed.insert(pid)
        }
        let killDeadline = ContinuousClock.now + .seconds(2)
        for pid in killed {
            _ = waitForExit(pid, until: killDeadline)
        }
        return killed
    }

    static func sleep(for duration: Duration) {
        let components = duration.components
        var request = timespec(
            tv_sec: Int(components.seconds), tv_nsec: Int(components.attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
        }
    }

    /// Reads up to 64 KiB of a file, such as one under /proc; returns nil if it cannot be opened.
    static func readSmallFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65_536 {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func describeWaitStatus(_ status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 {
            return "exited with status \((status >> 8) & 0xff)"
        }
        return "was killed by signal \(signal) (\(signalName(signal)))"
    }
}

#if canImport(Glibc)
// Glibc's spawn.h defines POSIX_SPAWN_SETSID as 0x80 only under _GNU_SOURCE, which Swift's Glibc
// module does not set, so the value is written here (glibc 2.26 and later support the flag).
private let spawnFlags: Int32 = 0x80 | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
#else
// NOTE: the Darwin branches of this file have not been compiled or run; only Linux has.
private let spawnFlags = Int32(POSIX_SPAWN_SETSID | POSIX_SPAWN_CLOEXEC_DEFAULT) | POSIX_SPAWN_SETSIGMASK
    | POSIX_SPAWN_SETSIGDEF
#endif

/// Signals that `cluster kill --signal` accepts, by the name without the `SIG` prefix.
let signalsByName: [(name: String, number: Int32)] = [
    ("KILL", SIGKILL), ("TERM", SIGTERM), ("STOP", SIGSTOP), ("CONT", SIGCONT),
]

/// Name of a signal number, such as "SIGKILL", or "signal N" for one not listed here.
func signalName(_ number: Int32) -> String {
    let known: [Int32: String] = [
        SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGABRT: "SIGABRT",
        SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGSEGV: "SIGSEGV", SIGPIPE: "SIGPIPE",
        SIGTERM: "SIGTERM", SIGSTOP: "SIGSTOP", SIGCONT: "SIGCONT", SIGTRAP: "SIGTRAP",
    ]
    return known[number] ?? "signal \(number)"
}
