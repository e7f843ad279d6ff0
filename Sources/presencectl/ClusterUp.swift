// `cluster up` and `cluster start`: the subcommands that start node processes and wait for them
// to join.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ClusterCommand {
    static func runUp(_ arguments: ParsedArguments) throws -> Int32 {
        _ = try arguments.requirePositionals([])
        let generated = !arguments.contains("--configs")
        if !generated {
            for option in ["--nodes", "--client-port", "--gossip-port"] where arguments.contains(option) {
                throw UsageError("\(option) sets generated configs, so it cannot be combined with --configs")
            }
        }
        let nodeCount = try arguments.integer("--nodes", in: 1...GeneratedClusterDefaults.maxNodeCount)
            ?? GeneratedClusterDefaults.nodeCount
        let firstClientPort = try arguments.integer("--client-port", in: 1...65_535) ?? GeneratedClusterDefaults.firstClientPort
        let firstGossipPort = try arguments.integer("--gossip-port", in: 1...65_535) ?? GeneratedClusterDefaults.firstGossipPort
        let timeout = try arguments.seconds("--timeout", maximum: 3600) ?? .seconds(30)
        let binary = try resolveNodeBinary(arguments.value("--binary") ?? defaultNodeBinaryPath())

        let directory = directory(arguments)
        try directory.create()
        try directory.lock()
        try rejectRunningCluster(in: directory)

        var nodes: [ClusterNode]
        if let configDirectory = arguments.value("--configs") {
            nodes = try readNodeConfigs(in: configDirectory)
        } else {
            let configs = try generateNodeConfigs(
                count: nodeCount, firstClientPort: firstClientPort, firstGossipPort: firstGossipPort)
            nodes = []
            for config in configs {
                let path = directory.generatedConfigPath(forNodeNamed: config.name)
                try writeJSON(config, to: path)
                nodes.append(
                    ClusterNode(name: config.name, configPath: path, clientListen: config.clientListen, gossipListen: config.gossipListen))
            }
        }

        let conflicts = nodes.compactMap(portConflict(of:))
        if !conflicts.isEmpty {
            let fix = generated
                ? "stop the program that uses them, or choose other ports with --client-port and --gossip-port"
                : "stop the program that uses them, or change the ports in the configs"
            throw ClusterError("ports are in use, so the cluster was not started:\n  " + conflicts.joined(separator: "\n  ") + "\n" + fix)
        }

        removeFilesOfPreviousCluster(in: directory, keeping: nodes)
        // The manifest is written before any node starts, so that 'cluster down' finds every node
        // even if this command dies halfway.
        try directory.writeManifest(ClusterManifest(binaryPath: binary, nodes: nodes))

        installInterruptHandler()
        var started: [RunningNode] = []
        for node in nodes {
            do {
                let pid = try startNode(node, binary: binary, in: directory, appendLog: false)
                started.append(RunningNode(node: node, pid: pid))
            } catch {
                printError(String(describing: error))
                stopStartedNodes(started, in: directory)
                return 1
            }
        }
        printNote("started \(nodes.count) nodes of \(binary); logs are in \(directory.displayPath)")

        let startTime = ContinuousClock.now
        let outcome = waitForFormation(of: started, timeout: timeout)
        guard case .formed(let views) = outcome else {
            reportFailedWait(outcome, of: started, in: directory, timeout: timeout)
            stopStartedNodes(started, in: directory)
            return 1
        }

        print("cluster of \(nodes.count) nodes formed in \(formatSeconds(ContinuousClock.now - startTime)); files are in \(directory.path)")
        var table = TextTable("NODE", "PID", "STATE", "CLIENT URL", "DASHBOARD")
        for running in started {
            table.append(
                running.node.name, "\(running.pid)", reportedState(of: running.node.name, views: views),
                running.node.clientListen.clientURL, running.node.clientListen.dashboardURL)
        }
        print(table.rendered)
        print("stop it with: presencectl cluster down\(directory.dirOptionHint)")
        return 0
    }

    static func runStart(_ arguments: ParsedArguments) throws -> Int32 {
        let name = try arguments.requirePositionals(["NODE"])[0]
        let timeout = try arguments.seconds("--timeout", maximum: 3600) ?? .seconds(30)
        let directory = directory(arguments)
        let manifest = try directory.readManifest()
        let node = try manifest.node(named: name)
        let binary = try resolveNodeBinary(arguments.value("--binary") ?? manifest.binaryPath)
        try directory.lock()

        if let pid = directory.livePID(of: node) {
            throw ClusterError("\(name) is already running (pid \(pid)); stop it first with 'presencectl cluster kill \(name)\(directory.dirOptionHint)'")
        }
        guard FileManager.default.fileExists(atPath: node.configPath) else {
            throw ClusterError("the config of \(name), \(node.configPath), no longer exists; start a new cluster with 'presencectl cluster up'")
        }
        if let conflict = portConflict(of: node) {
            throw ClusterError("\(conflict)\nstop the program that uses the port, then run this command again")
        }

        // The wait covers the other nodes whose processes run. A paused node (SIGSTOP) cannot
        // respond, so it is left out.
        var peers: [RunningNode] = []
        for other in manifest.nodes where other.name != name {
            guard let pid = directory.livePID(of: other) else { continue }
            if ProcessControl.state(of: pid) == .stopped {
                printNote("\(other.name) is paused (SIGSTOP), so the wait leaves it out")
                continue
            }
            peers.append(RunningNode(node: other, pid: pid))
        }

        installInterruptHandler()
        let pid = try startNode(node, binary: binary, in: directory, appendLog: true)
        let restarted = RunningNode(node: node, pid: pid)
        printNote("started \(name) (pid \(pid)); waiting for it and \(peers.count) running peers to see each other alive")

        let outcome = waitForFormation(of: [restarted] + peers, timeout: timeout)
        guard case .formed(let views) = outcome else {
            reportFailedWait(outcome, of: [restarted] + peers, in: directory, timeout: timeout)
            stopStartedNodes([restarted], in: directory)
            return 1
        }

        var table = TextTable("NODE", "PID", "STATE", "CLIENT URL", "DASHBOARD")
        table.append(
            name, "\(pid)", reportedState(of: name, views: views), node.clientListen.clientURL, node.clientListen.dashboardURL)
        print(table.rendered)
        return 0
    }

    /// Starts one node with `presence-node --config FILE` and writes its PID file.
    static func startNode(_ node: ClusterNode, binary: String, in directory: ClusterDirectory, appendLog: Bool) throws -> pid_t {
        let pid: pid_t
        do {
            pid = try ProcessControl.spawnDetached(
                executable: binary, arguments: ["--config", node.configPath], logPath: directory.logPath(of: node),
                appendLog: appendLog)
        } catch {
            throw ClusterError("\(node.name): \(error)")
        }
        try directory.writePID(pid, of: node)
        return pid
    }

    /// Throws when a node recorded in `directory` still runs. Removes PID files of nodes that have
    /// exited.
    static func rejectRunningCluster(in directory: ClusterDirectory) throws {
        guard FileManager.default.fileExists(atPath: directory.manifestPath) else { return }
        let manifest = try directory.readManifest()
        var running: [String] = []
        for node in manifest.nodes {
            if let pid = directory.livePID(of: node) {
                running.append("\(node.name) (pid \(pid))")
            } else {
                directory.removePID(of: node)
            }
        }
        guard running.isEmpty else {
            throw ClusterError(
                "a cluster from \(directory.displayPath) is still running: \(running.joined(separator: ", ")); "
                    + "stop it with 'presencectl cluster down\(directory.dirOptionHint)' or use another --dir")
        }
    }

    /// Removes the log and the generated config of nodes of the previous manifest that the new
    /// cluster does not have, so that `--dir` holds only files of the current cluster.
    private static func removeFilesOfPreviousCluster(in directory: ClusterDirectory, keeping nodes: [ClusterNode]) {
        guard let previous = try? directory.readManifest() else { return }
        let newNames = Set(nodes.map(\.name))
        for old in previous.nodes where !newNames.contains(old.name) {
            unlink(directory.logPath(of: old))
            if old.configPath == directory.generatedConfigPath(forNodeNamed: old.name) {
                unlink(old.configPath)
            }
        }
    }

    /// Prints why a wait ended without a formed cluster, with the log tail of each node to blame.
    private static func reportFailedWait(
        _ outcome: FormationOutcome, of nodes: [RunningNode], in directory: ClusterDirectory, timeout: Duration
    ) {
        switch outcome {
        case .formed:
            return
        case .interrupted:
            printError("interrupted; stopping the nodes this command started")
        case .nodeExited(let node, let how):
            printError("\(node.name) \(how) before the cluster formed; lines from its log \(directory.logPath(of: node)):")
            printNote(indent(directory.logExcerpt(of: node)))
        case .timedOut(let views):
            printError("the cluster did not form within \(formatSeconds(timeout)):")
            for line in describeUnformed(nodes, views: views) {
                printNote("  \(line)")
            }
            for running in suspectNodes(nodes, views: views) {
                printNote("lines from the log of \(running.node.name), \(directory.logPath(of: running.node)):")
                printNote(indent(directory.logExcerpt(of: running.node)))
            }
        }
    }

    /// Stops the nodes this command started, by PID, and removes their PID files.
    private static func stopStartedNodes(_ nodes: [RunningNode], in directory: ClusterDirectory) {
        guard !nodes.isEmpty else { return }
        ProcessControl.terminate(nodes.map(\.pid), grace: .seconds(3))
        for running in nodes {
            directory.removePID(of: running.node)
        }
        printNote("stopped \(nodes.map(\.node.name).joined(separator: ", "))")
    }
}

/// `text` with every line indented by four spaces.
func indent(_ text: String) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).map { "    \($0)" }.joined(separator: "\n")
}
