// The local cluster of `presencectl demo` and `presencectl bench`: started through the code of
// `cluster up`, then signalled, restarted and finally stopped by PID.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Node processes that one demo or bench run started and still tracks.
final class ScenarioCluster {
    let directory: ClusterDirectory
    let manifest: ClusterManifest
    /// PID of each node's current process by node name; a node that exited has no entry.
    private(set) var pids: [String: pid_t]

    var nodes: [ClusterNode] { manifest.nodes }

    private init(directory: ClusterDirectory, manifest: ClusterManifest, pids: [String: pid_t]) {
        self.directory = directory
        self.manifest = manifest
        self.pids = pids
    }

    /// Runs `cluster up` with `arguments`, which must include `--dir` naming `directory`. It prints
    /// the node table with each client URL, and returns once every node sees every other alive.
    static func up(_ arguments: [String], directory: ClusterDirectory) throws -> ScenarioCluster {
        let parsed = try ParsedArguments(arguments, for: ClusterCommand.up)
        guard try ClusterCommand.runUp(parsed) == 0 else {
            throw ClusterError("the cluster did not start; the messages above describe the failure")
        }
        let manifest = try directory.readManifest()
        var pids: [String: pid_t] = [:]
        for node in manifest.nodes {
            guard let pid = directory.livePID(of: node) else {
                throw ClusterError("\(node.name) is not running right after cluster up; its log is \(directory.logPath(of: node))")
            }
            pids[node.name] = pid
        }
        return ScenarioCluster(directory: directory, manifest: manifest, pids: pids)
    }

    func node(_ name: String) -> ClusterNode {
        guard let node = manifest.nodes.first(where: { $0.name == name }) else {
            preconditionFailure("no node named \(name) in the scenario cluster")
        }
        return node
    }

    /// Sends `signal` to the node's process and returns the instant taken right before sending.
    func send(_ signal: Int32, to name: String) throws -> ContinuousClock.Instant {
        guard let pid = pids[name] else {
            throw ClusterError("\(name) is not running, so \(signalName(signal)) cannot be sent to it")
        }
        let sent = ContinuousClock.now
        if let code = ProcessControl.send(signal, to: pid) {
            throw ClusterError("sending \(signalName(signal)) to \(name) (pid \(pid)) failed: \(errnoDescription(code))")
        }
        return sent
    }

    /// Waits until the node's process exits and reaps it. Returns how it ended, such as
    /// "exited with status 0", or nil when it still runs after `timeout`.
    func waitForExit(of name: String, timeout: Duration) -> String? {
        guard let pid = pids[name] else { return "was not running" }
        let deadline = ContinuousClock.now + timeout
        while true {
            if let description = ProcessControl.exitDescription(of: pid) {
                pids[name] = nil
                directory.removePID(of: node(name))
                return description
            }
            if ContinuousClock.now >= deadline { return nil }
            ProcessControl.sleep(for: .milliseconds(5))
        }
    }

    /// Starts the node again with its config and ports, and waits until it and every other
    /// running node see each other alive.
    func restart(_ name: String, timeout: Duration) throws {
        let restarted = node(name)
        pids[name] = try ClusterCommand.startNode(restarted, binary: manifest.binaryPath, in: directory, appendLog: true)

        let running = manifest.nodes.compactMap { node in pids[node.name].map { RunningNode(node: node, pid: $0) } }
        switch waitForFormation(of: running, timeout: timeout) {
        case .formed:
            return
        case .nodeExited(let node, let how):
            pids[node.name] = nil
            throw ClusterError(
                "\(node.name) \(how) while \(name) rejoined; lines from its log \(directory.logPath(of: node)):\n"
                    + indent(directory.logExcerpt(of: node)))
        case .timedOut(let views):
            let reasons = describeUnformed(running, views: views).map { "  \($0)" }.joined(separator: "\n")
            throw ClusterError("the cluster was not whole again within \(formatSeconds(timeout)) of restarting \(name):\n\(reasons)")
        case .interrupted:
            throw ClusterError("interrupted")
        }
    }

    /// Stops every node still running with SIGTERM, then SIGKILL after 3 s, by PID, and removes
    /// the PID files. Returns the names of the nodes it stopped, leaving out those that had
    /// already exited, such as a node killed right before.
    @discardableResult
    func stopAll() -> [String] {
        var running: [ClusterNode] = []
        for node in manifest.nodes {
            guard let pid = pids[node.name] else { continue }
            if ProcessControl.exitDescription(of: pid) != nil {
                pids[node.name] = nil
                directory.removePID(of: node)
            } else {
                running.append(node)
            }
        }
        ProcessControl.terminate(running.compactMap { pids[$0.name] }, grace: .seconds(3))
        for node in running {
            pids[node.name] = nil
            directory.removePID(of: node)
        }
        return running.map(\.name)
    }

    /// Lines from the logs of every node, for a failure report.
    func logExcerpts() -> String {
        manifest.nodes.map { node in
            "lines from the log of \(node.name), \(directory.logPath(of: node)):\n" + indent(directory.logExcerpt(of: node, lines: 12))
        }.joined(separator: "\n")
    }
}

/// Client and gossip ports for a scenario cluster: node-K listens on `client + K - 1` and
/// `gossip + K - 1`.
struct ScenarioPorts {
    let client: Int
    let gossip: Int

    /// Finds ports for `count` nodes (at most 10) that are free on 127.0.0.1 right now. The
    /// search stays below the kernel's ephemeral port range, so that no outgoing connection takes a
    /// port of a node while that node is down between a kill and its restart.
    static func findFree(count: Int) throws -> ScenarioPorts {
        precondition((1...10).contains(count), "scenario clusters have 1 to 10 nodes, got \(count)")
        let ephemeralStart = ephemeralPortRangeStart()
        let low = ephemeralStart >= 31_000 ? 30_000 : 10_000
        let high = min(ephemeralStart, 65_536)
        let bases = Array(stride(from: low, to: high - 20, by: 20)).shuffled()

        for base in bases.prefix(200) {
            let candidate = ScenarioPorts(client: base, gossip: base + 10)
            let host = GeneratedClusterDefaults.host
            let nodes = (0..<count).map { offset in
                ClusterNode(
                    name: "node-\(offset + 1)", configPath: "",
                    clientListen: NodeAddress(host: host, port: UInt16(candidate.client + offset)),
                    gossipListen: NodeAddress(host: host, port: UInt16(candidate.gossip + offset)))
            }
            if nodes.allSatisfy({ portConflict(of: $0) == nil }) {
                return candidate
            }
        }
        throw ClusterError("found no \(2 * count) free ports on 127.0.0.1 between \(low) and \(high) after 200 tries")
    }

    /// First port of the kernel's ephemeral range, from /proc on Linux; 32768 elsewhere or when
    /// the file cannot be read.
    private static func ephemeralPortRangeStart() -> Int {
        guard let text = ProcessControl.readSmallFile("/proc/sys/net/ipv4/ip_local_port_range"),
            let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
            let port = Int(first)
        else { return 32_768 }
        return port
    }
}
