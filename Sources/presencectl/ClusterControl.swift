// `cluster status`, `cluster down` and `cluster kill`: the subcommands that inspect and signal
// nodes that `cluster up` started.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ClusterCommand {
    static func runStatus(_ arguments: ParsedArguments) throws -> Int32 {
        _ = try arguments.requirePositionals([])
        let timeout = try arguments.seconds("--timeout", maximum: 60) ?? .seconds(1)
        let directory = directory(arguments)
        let manifest = try directory.readManifest()

        var table = TextTable("NODE", "PID", "PROCESS", "CLIENT URL", "MEMBERS SEEN")
        for node in manifest.nodes {
            let recorded = directory.recordedPID(of: node)
            let live = directory.livePID(of: node)
            let process: String
            let members: String
            switch (recorded, live) {
            case (nil, _):
                process = "not running"
                members = "-"
            case (_, nil):
                process = "exited"
                members = "-"
            case (_, let pid?):
                if ProcessControl.state(of: pid) == .stopped {
                    process = "paused"
                    members = "- (a paused process cannot answer)"
                } else {
                    process = "running"
                    members = describeMembers(of: node, timeout: timeout)
                }
            }
            table.append(node.name, recorded.map(String.init) ?? "-", process, node.clientListen.clientURL, members)
        }
        print(table.rendered)
        return 0
    }

    static func runDown(_ arguments: ParsedArguments) throws -> Int32 {
        _ = try arguments.requirePositionals([])
        let grace = try arguments.seconds("--timeout", maximum: 600) ?? .seconds(5)
        let directory = directory(arguments)
        let manifest = try directory.readManifest()
        try directory.lock()

        var running: [RunningNode] = []
        for node in manifest.nodes {
            if let pid = directory.livePID(of: node) {
                running.append(RunningNode(node: node, pid: pid))
            } else {
                directory.removePID(of: node)
            }
        }
        guard !running.isEmpty else {
            print("no node of the cluster in \(directory.displayPath) is running")
            return 0
        }

        let killed = ProcessControl.terminate(running.map(\.pid), grace: grace)
        var stillRunning: [String] = []
        for entry in running {
            let name = entry.node.name
            if ProcessControl.state(of: entry.pid).isAlive {
                stillRunning.append("\(name) (pid \(entry.pid))")
                continue
            }
            directory.removePID(of: entry.node)
            if killed.contains(entry.pid) {
                print("\(name) (pid \(entry.pid)) did not exit within \(formatSeconds(grace)) of SIGTERM and was killed with SIGKILL")
            } else {
                print("\(name) (pid \(entry.pid)) stopped")
            }
        }
        guard stillRunning.isEmpty else {
            printError("still running after SIGKILL: \(stillRunning.joined(separator: ", "))")
            return 1
        }
        return 0
    }

    static func runKill(_ arguments: ParsedArguments) throws -> Int32 {
        let name = try arguments.requirePositionals(["NODE"])[0]
        let signal = try parseSignal(arguments.value("--signal") ?? "KILL")
        let directory = directory(arguments)
        let manifest = try directory.readManifest()
        let node = try manifest.node(named: name)

        guard let pid = directory.livePID(of: node) else {
            throw ClusterError("\(name) is not running; start it with 'presencectl cluster start \(name)\(directory.dirOptionHint)'")
        }
        let wasPaused = ProcessControl.state(of: pid) == .stopped
        if let code = ProcessControl.send(signal.number, to: pid) {
            throw ClusterError("sending SIG\(signal.name) to \(name) (pid \(pid)) failed: \(errnoDescription(code))")
        }

        switch signal.number {
        case SIGKILL, SIGTERM:
            if signal.number == SIGTERM && wasPaused {
                print("sent SIGTERM to \(name) (pid \(pid)); it is paused, so it acts on the signal only after "
                    + "'presencectl cluster kill \(name) --signal CONT\(directory.dirOptionHint)'")
                return 0
            }
            let grace: Duration = signal.number == SIGKILL ? .seconds(2) : .seconds(10)
            if ProcessControl.waitForExit(pid, until: ContinuousClock.now + grace) {
                directory.removePID(of: node)
                print("sent SIG\(signal.name) to \(name) (pid \(pid)); it exited")
            } else {
                print("sent SIG\(signal.name) to \(name) (pid \(pid)); it is still running after \(formatSeconds(grace))")
            }
        case SIGSTOP:
            print("sent SIGSTOP to \(name) (pid \(pid)); it stays paused until "
                + "'presencectl cluster kill \(name) --signal CONT\(directory.dirOptionHint)'")
        default:
            print("sent SIG\(signal.name) to \(name) (pid \(pid))")
        }
        return 0
    }

    /// Fetches and formats the members a node reports, such as "node-1 alive, node-2 suspect", or
    /// returns why the request failed.
    private static func describeMembers(of node: ClusterNode, timeout: Duration) -> String {
        do {
            let members = try fetchMembers(node.clientListen, timeout: timeout)
                .sorted { $0.name.compare($1.name, options: .numeric) == .orderedAscending }
            guard !members.isEmpty else { return "(empty list)" }
            return members.map { "\($0.name) \($0.state)" }.joined(separator: ", ")
        } catch {
            return "no answer: \(error)"
        }
    }
}
