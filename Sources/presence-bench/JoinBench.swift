import Foundation

/// `presence-bench join`: a node joins a loaded cluster late. Measures how long until it reports
/// every online user, and how much memory each (replica, user) entry costs it.
enum JoinBench {
    static let heading = "### A node joining a cluster with 100,000 online users"
    static let targetSeconds = 2.0
    static let targetBytesPerEntry = 150.0

    struct Settings {
        var users: Int
        var nodes: Int
        var maxSessionsPerNode: Int
        var processesPerNode: Int
        var joins: Int
        var output: String?
    }

    struct JoinSample {
        var name: String
        /// Process start until the node's `presencemesh_online_users` equals the cluster's users, in seconds.
        var fromStart: Double
        /// The node's `ready` line until then, in seconds.
        var fromReady: Double
        var rssAtReady: Int
        var rssAfter: Int
    }

    struct Outcome {
        var usersPerNode: Int
        var onlineUsers: Int
        var connectSeconds: Double
        var convergeSeconds: Double
        var holderFiles: [Int]
        var holderRSS: [Int]
        var baselineRSS: Int
        var joins: [JoinSample]
    }

    static func main(_ arguments: [String]) -> Int32 {
        let settings: Settings
        do {
            let options = try Options(arguments, accepted: [
                "--users", "--nodes", "--max-sessions-per-node", "--processes-per-node", "--joins", "--output",
            ])
            settings = Settings(
                users: try options.integer("--users", default: 100_000, in: 1...1_000_000),
                nodes: try options.integer("--nodes", default: 5, in: 1...20),
                maxSessionsPerNode: try options.integer("--max-sessions-per-node", default: 19_800, in: 1...19_900),
                processesPerNode: try options.integer("--processes-per-node", default: 2, in: 1...8),
                joins: try options.integer("--joins", default: 3, in: 1...20),
                output: options.string("--output"))
        } catch {
            printError("presence-bench join: \(error)")
            return 2
        }
        let machine = MachineDescription.current()
        say("machine: \(machine.markdown)")
        let outcome: Outcome
        do {
            let directory = try makeRunDirectory("join")
            let group = ChildGroup(directory: directory)
            defer { group.stopAll() }
            outcome = try measure(settings, group)
        } catch {
            printError("presence-bench join: \(error)")
            return 1
        }
        if let output = settings.output {
            do {
                try ResultsFile.update(path: output, machine: machine, subsection: heading, body: markdown(outcome, settings))
                say("wrote \(heading) to \(output)")
            } catch {
                printError("presence-bench join: writing \(output) failed: \(error)")
                return 1
            }
        }
        return 0
    }

    private static func measure(_ settings: Settings, _ group: ChildGroup) throws -> Outcome {
        // One session per user and one file per session: a node cannot hold more sessions than
        // its file limit allows, so the users per node may be capped below users / nodes.
        let usersPerNode = min((settings.users + settings.nodes - 1) / settings.nodes, settings.maxSessionsPerNode)
        if usersPerNode * settings.nodes < settings.users {
            say("note: \(settings.users) users need \(settings.users / settings.nodes) sessions per node; "
                + "capped at \(usersPerNode), so \(usersPerNode * settings.nodes) users are measured")
        }
        let limits = ["maxSessions": usersPerNode + 50]
        var nodes: [NodeProcess] = []
        let first = try NodeProcess.start(group: group, name: "node-1", seed: nil, limits: limits)
        nodes.append(first)
        for number in stride(from: 2, through: settings.nodes, by: 1) {
            nodes.append(try NodeProcess.start(group: group, name: "node-\(number)", seed: first.gossipAddress, limits: limits))
        }
        try waitUntil(timeout: 60, "every node to see \(settings.nodes) members alive") {
            nodes.allSatisfy { $0.aliveMembers() == settings.nodes }
        }
        say("cluster of \(settings.nodes) nodes formed")

        let connectStart = monotonicNanoseconds()
        var opened = 0
        for (position, node) in nodes.enumerated() {
            let holders = try HolderSet.start(group: group, label: "users-n\(position + 1)", port: node.clientPort,
                                              total: usersPerNode, processes: settings.processesPerNode, observe: false,
                                              timeout: 600)
            opened += holders.opened
            say("node-\(position + 1): \(holders.opened) sessions open in \(formatted(holders.slowestSeconds, 1)) s")
        }
        let connectSeconds = Double(monotonicNanoseconds() - connectStart) / 1e9
        let convergeStart = monotonicNanoseconds()
        try waitUntil(timeout: 120, "every node to report \(opened) online users") {
            nodes.allSatisfy { $0.metric("online_users").map { Int($0) } == opened }
        }
        let convergeSeconds = Double(monotonicNanoseconds() - convergeStart) / 1e9
        say("\(opened) users online on every node; converged \(formatted(convergeSeconds, 2)) s after the last session opened")
        let holderFiles = nodes.map { ProcStats.openFiles($0.pid) ?? -1 }
        let holderRSS = nodes.map { ProcStats.residentBytes($0.pid) ?? -1 }

        // The same node config with no seed and no entries, for the memory baseline.
        let baselineNode = try NodeProcess.start(group: group, name: "baseline", seed: nil, limits: limits)
        usleep(2_000_000)
        let baselineRSS = ProcStats.residentBytes(baselineNode.pid) ?? 0
        group.stop(baselineNode.child)

        var joins: [JoinSample] = []
        for number in 1...settings.joins {
            let seed = nodes[(number - 1) % nodes.count]
            let late = try NodeProcess.start(group: group, name: "late-\(number)", seed: seed.gossipAddress, limits: limits)
            let rssAtReady = ProcStats.residentBytes(late.pid) ?? 0
            var heldAt: UInt64 = 0
            try waitUntil(timeout: 60, "late-\(number) to report \(opened) online users", pollSeconds: 0.01) {
                guard late.metric("online_users").map({ Int($0) }) == opened else { return false }
                heldAt = monotonicNanoseconds()
                return true
            }
            usleep(2_000_000)
            let sample = JoinSample(
                name: late.name, fromStart: Double(heldAt - late.spawnedAt) / 1e9,
                fromReady: Double(heldAt - late.readyAt) / 1e9,
                rssAtReady: rssAtReady, rssAfter: ProcStats.residentBytes(late.pid) ?? 0)
            joins.append(sample)
            say("\(late.name): holds \(opened) users \(formatted(sample.fromStart, 3)) s after start "
                + "(\(formatted(sample.fromReady, 3)) s after ready); rss \(sample.rssAtReady / 1024) → \(sample.rssAfter / 1024) KiB; "
                + "baseline \(baselineRSS / 1024) KiB; bytes per entry \(formatted(Double(sample.rssAfter - baselineRSS) / Double(opened), 1))")
            group.stop(late.child)
            // The graceful leave reaches the others; give it a moment before the next join.
            usleep(1_000_000)
        }
        return Outcome(usersPerNode: usersPerNode, onlineUsers: opened, connectSeconds: connectSeconds,
                       convergeSeconds: convergeSeconds, holderFiles: holderFiles, holderRSS: holderRSS,
                       baselineRSS: baselineRSS, joins: joins)
    }

    /// Polls `condition` every `pollSeconds` until it holds; throws after `timeout` seconds.
    private static func waitUntil(timeout: Double, _ what: String, pollSeconds: Double = 0.2, _ condition: () -> Bool) throws {
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        while !condition() {
            guard monotonicNanoseconds() < deadline else { throw BenchError("timed out after \(Int(timeout)) s waiting for \(what)") }
            usleep(UInt32(pollSeconds * 1e6))
        }
    }

    private static func markdown(_ outcome: Outcome, _ settings: Settings) -> String {
        let entries = outcome.onlineUsers
        var lines: [String] = []
        lines.append("Command: `\(commandLineText)` (\(utcTimestamp())).")
        lines.append("")
        lines.append("""
            \(settings.nodes) `presence-node` processes form a cluster; `presence-bench hold` processes \
            (\(settings.processesPerNode) per node) open one session per user, \(outcome.usersPerNode.grouped) \
            users per node, \(outcome.onlineUsers.grouped) in all, in \(formatted(outcome.connectSeconds, 1)) s; \
            every node then reports them all in `presencemesh_online_users` within \
            \(formatted(outcome.convergeSeconds, 2)) s. Then a new node starts with one cluster node as its \
            seed, and `/metrics` of the new node is polled every 10 ms until it reports every user online. \
            Its memory per (replica, user) entry is its RSS 2 s after that, less the RSS of an idle node \
            with the same config and no seed (\(formatted(Double(outcome.baselineRSS) / 1_048_576, 1)) MiB), \
            divided by the \(entries.grouped) entries. Each late node leaves before the next one joins.
            """)
        if outcome.usersPerNode * settings.nodes < settings.users {
            lines.append("")
            lines.append("""
                \(settings.users.grouped) users over \(settings.nodes) nodes need \
                \((settings.users / settings.nodes).grouped) sessions per node, and each session is one \
                open file of the node. One process here may open 20,000 files (`ulimit -n`, hard limit), \
                and a node also needs files for its listeners, gossip sockets and event loop, so each node \
                held \(outcome.usersPerNode.grouped) sessions and the figures are for \
                \(outcome.onlineUsers.grouped) users. Open files per node with its sessions: \
                \(outcome.holderFiles.map { $0.grouped }.joined(separator: ", ")).
                """)
        }
        lines.append("")
        lines.append("| Late node | Start → holds all (s) | Ready line → holds all (s) | RSS at ready → after (MiB) | Bytes per entry | Time under 2 s | Bytes under 150 |")
        lines.append("|---|---:|---:|---|---:|---|---|")
        for join in outcome.joins {
            let perEntry = Double(join.rssAfter - outcome.baselineRSS) / Double(entries)
            lines.append("| \(join.name) | \(formatted(join.fromStart, 3)) | \(formatted(join.fromReady, 3)) | "
                + "\(formatted(Double(join.rssAtReady) / 1_048_576, 1)) → \(formatted(Double(join.rssAfter) / 1_048_576, 1)) | "
                + "\(formatted(perEntry, 0)) | \(verdict(join.fromStart < targetSeconds)) | \(verdict(perEntry < targetBytesPerEntry)) |")
        }
        let times = Distribution(outcome.joins.map(\.fromStart))
        lines.append("")
        lines.append("Median start → holds all over \(outcome.joins.count) joins: \(formatted(times.median, 3)) s. "
            + "RSS of the cluster nodes holding the sessions: "
            + outcome.holderRSS.map { "\(formatted(Double($0) / 1_048_576, 0)) MiB" }.joined(separator: ", ") + ".")
        return lines.joined(separator: "\n")
    }
}
