// `presencectl demo`: a narrated run of the main job of PresenceMesh on a local cluster. Users
// connect to different nodes, an observer on every node prints each presence event as it
// arrives, and then nodes crash and leave. Every expected event has a deadline, so the demo also
// serves as a smoke test: it exits with status 1 and stops every node when one is missed.

import Foundation
import PresenceClient
import PresenceProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum DemoCommand {
    static let usage = CommandSpec(
        name: "demo",
        synopsis: "[--nodes N] [--dir DIR] [--timeout SECONDS]",
        summary: """
            Starts a local cluster (preset local, free ports on 127.0.0.1), connects alice to node-1, \
            bob to node-2 and carol to node-3, and prints every presence event that an observer on \
            each node receives. Then alice moves to a second device on node-3, node-3 is killed with \
            SIGKILL and node-2 is stopped with SIGTERM, and the demo shows each user go offline on the \
            surviving nodes with the measured delay. It ends with a table of what each observer saw and \
            stops every node. Exits with status 1 if an expected event does not arrive in time.
            """,
        options: [
            OptionSpec("--nodes", value: "N", help: "number of nodes, 3 to 9 (default 3); nodes past node-3 only hold observers"),
            OptionSpec("--dir", value: "DIR", help: "directory of the demo cluster's configs, PID files and logs (default .cluster-demo)"),
            OptionSpec("--timeout", value: "SECONDS", help: "how long each expected event may take before the demo fails (default 10)"),
        ])

    /// Runs the command with the arguments after `demo` and returns the exit status.
    static func run(_ arguments: [String]) -> Int32 {
        let scenario: DemoScenario
        let outcome = usage.parseOptions(arguments) { parsed in
            _ = try parsed.requirePositionals([])
            return DemoScenario(
                nodeCount: try parsed.integer("--nodes", in: 3...9) ?? 3,
                directory: ClusterDirectory(parsed.value("--dir") ?? ".cluster-demo"),
                eventTimeout: try parsed.seconds("--timeout", maximum: 120) ?? .seconds(10))
        }
        switch outcome {
        case .run(let parsed): scenario = parsed
        case .exit(let status): return status
        }
        quietWebSocketLibrary()
        return scenario.run()
    }
}

/// Limits libwebsockets' own stderr lines to errors and warnings, so that they do not mix with
/// the command's output.
func quietWebSocketLibrary() {
    #if !canImport(Darwin)
    LibWebSocketsTransport.logOnlyLibraryErrorsAndWarnings()
    #endif
}

/// The steps of one demo run and the sessions and nodes it started.
final class DemoScenario {
    private let nodeCount: Int
    private let directory: ClusterDirectory
    private let eventTimeout: Duration

    /// Each demo user and the node its first device connects to.
    private let homes = [("alice", "node-1"), ("bob", "node-2"), ("carol", "node-3")]
    private var userIds: [String] { homes.map(\.0) }

    private var cluster: ScenarioCluster?
    /// Observer session of each node, by node name.
    private var observers: [String: RecordingSession] = [:]
    /// Every user session, so that the end of the demo closes them all.
    private var devices: [RecordingSession] = []
    /// Fate of each stopped node, such as "killed with SIGKILL", by node name, for the summary.
    private var fates: [String: String] = [:]

    init(nodeCount: Int, directory: ClusterDirectory, eventTimeout: Duration) {
        self.nodeCount = nodeCount
        self.directory = directory
        self.eventTimeout = eventTimeout
    }

    func run() -> Int32 {
        let started = ContinuousClock.now
        do {
            try startCluster()
            try connectObservers()
            try connectUsers()
            try moveAliceToSecondDevice()
            try killNode3()
            try stopNode2()
            try checkFinalState()
        } catch {
            SharedOutput.line("")
            printError("demo failed: \(error)")
            if let cluster {
                printNote(cluster.logExcerpts())
            }
            stopEverything()
            printSummary()
            return 1
        }
        stopEverything()
        printSummary()
        SharedOutput.line("")
        SharedOutput.line("demo passed in \(formatSeconds(ContinuousClock.now - started)): every expected event arrived")
        return 0
    }

    // MARK: - Steps

    private func startCluster() throws {
        heading("1. Start a \(nodeCount)-node cluster on 127.0.0.1 (gossip preset local)")
        let ports = try ScenarioPorts.findFree(count: nodeCount)
        cluster = try ScenarioCluster.up(
            ["--nodes", "\(nodeCount)", "--client-port", "\(ports.client)", "--gossip-port", "\(ports.gossip)",
             "--dir", directory.displayPath],
            directory: directory)
        narrate("The demo stops these nodes itself when it ends.")
        for node in cluster!.nodes {
            narrate("\(node.name) client URL: \(node.clientListen.clientURL)")
        }
    }

    private func connectObservers() throws {
        heading("2. Connect an observer (observe=true) to every node, subscribed to \(userIds.joined(separator: ", "))")
        narrate("Every presence event an observer receives is printed as: time, node, user, status, lastSeen.")
        let cluster = try requireCluster()
        for node in cluster.nodes {
            let nodeName = node.name
            let observer = RecordingSession(
                node: node.clientListen, userId: "observer-\(nodeName)", observe: true, label: "\(nodeName) observer"
            ) { _, arrival in
                guard let presence = arrival.presence else { return }
                var line = "  \(timeOfDay(arrival.date))  \(nodeName)  \(presence.userId.padding(toLength: 5, withPad: " ", startingAt: 0))  \(presence.status.rawValue)"
                if let lastSeen = presence.lastSeen { line += "  lastSeen=\(lastSeen)" }
                SharedOutput.line(line)
            }
            observers[nodeName] = observer
            try observer.waitUntilReady(until: deadline())
            let snapshot = try observer.subscribe(to: userIds, until: deadline())
            let states = snapshot.users.map { "\($0.userId) \($0.status.rawValue)" }.joined(separator: ", ")
            narrate("\(nodeName) observer subscribed; snapshot: \(states)")
        }
    }

    private func connectUsers() throws {
        heading("3. Connect alice to node-1, bob to node-2 and carol to node-3; every node reports them online")
        let cluster = try requireCluster()
        for (user, nodeName) in homes {
            let marks = currentMarks()
            let device = RecordingSession(
                node: cluster.node(nodeName).clientListen, userId: user, observe: false, label: "\(user)'s device on \(nodeName)")
            devices.append(device)
            let ready = try device.waitUntilReady(until: deadline())
            narrate("\(user) connected to \(ready.node) (session \(ready.sessionId))")
            let arrivals = try expect(user, .online, on: runningNodeNames(), from: marks, context: "after \(user) connected to \(nodeName)")
            narrate("\(user) reported online by \(describeDelays(arrivals, since: device.connectStarted)) after the connection started")
        }
    }

    private func moveAliceToSecondDevice() throws {
        heading("4. alice opens a second device on node-3, then closes the first one on node-1; she stays online")
        let cluster = try requireCluster()
        let second = RecordingSession(
            node: cluster.node("node-3").clientListen, userId: "alice", observe: false, label: "alice's second device on node-3")
        devices.append(second)
        let ready = try second.waitUntilReady(until: deadline())
        narrate("alice's second device connected to \(ready.node) (session \(ready.sessionId)); no event is due, she was online already")

        // Gossip from node-3 and from node-1 travels on separate paths. If node-1's close reached a
        // node before node-3's new session did, that node would briefly report alice offline, so
        // the first device closes only after node-3's change had ample time to spread (the local
        // preset gossips every 100 ms).
        ProcessControl.sleep(for: .seconds(1))

        let marks = currentMarks()
        let first = devices[0]
        first.close()
        guard first.waitUntilEnded(until: deadline()) else {
            throw ClusterError("alice's first device on node-1 did not close within \(formatSeconds(eventTimeout))")
        }
        narrate("alice's first device on node-1 closed; watching 1.5 s for an offline event that must not come")

        let quietEnd = ContinuousClock.now + .milliseconds(1500)
        for nodeName in runningNodeNames() {
            let observer = observers[nodeName]!
            if case .arrived(let arrival) = observer.waitForPresence(of: "alice", status: .offline, from: marks[nodeName]!, until: quietEnd) {
                throw ClusterError(
                    "\(nodeName) observer received alice offline at \(timeOfDay(arrival.date)) although her second device on node-3 is still connected")
            }
        }

        var states: [String] = []
        for nodeName in runningNodeNames() {
            let presence = try fetchPresence(of: "alice", on: nodeName)
            guard presence.status == .online else {
                throw ClusterError("GET /v1/presence/alice on \(nodeName) returned \(presence.status.rawValue); expected online")
            }
            states.append("\(nodeName) online")
        }
        narrate("no observer reported alice offline; GET /v1/presence/alice: \(states.joined(separator: ", "))")
    }

    private func killNode3() throws {
        let cluster = try requireCluster()
        let pid = cluster.pids["node-3"].map(String.init) ?? "?"
        heading("5. kill -9 node-3 (pid \(pid)), which holds carol's only device and alice's remaining one")
        let survivors = runningNodeNames().filter { $0 != "node-3" }
        let marks = currentMarks()
        let sent = try cluster.send(SIGKILL, to: "node-3")
        fates["node-3"] = "killed with SIGKILL"
        narrate("sent SIGKILL to node-3; survivors detect the crash through failed probes and a suspicion timeout")

        for user in ["carol", "alice"] {
            let arrivals = try expect(user, .offline, on: survivors, from: marks, context: "after kill -9 of node-3")
            narrate("\(user) reported offline by \(describeDelays(arrivals, since: sent)) after the kill")
        }
        let exit = cluster.waitForExit(of: "node-3", timeout: .seconds(2)) ?? "is still running 2 s after SIGKILL"
        narrate("node-3 \(exit); its observer's connection \(observers["node-3"]?.endDescription ?? "is still open")")
    }

    private func stopNode2() throws {
        let cluster = try requireCluster()
        let pid = cluster.pids["node-2"].map(String.init) ?? "?"
        heading("6. Stop node-2 (pid \(pid)) with SIGTERM: it leaves gracefully and bob goes offline at once")
        let survivors = runningNodeNames().filter { $0 != "node-2" }
        let marks = currentMarks()
        let sent = try cluster.send(SIGTERM, to: "node-2")
        fates["node-2"] = "stopped with SIGTERM"

        let arrivals = try expect("bob", .offline, on: survivors, from: marks, context: "after SIGTERM to node-2")
        narrate("bob reported offline by \(describeDelays(arrivals, since: sent)) after SIGTERM")

        guard let exit = cluster.waitForExit(of: "node-2", timeout: .seconds(10)) else {
            throw ClusterError("node-2 did not exit within 10 s of SIGTERM")
        }
        guard exit == "exited with status 0" else {
            throw ClusterError("node-2 \(exit) after SIGTERM; a graceful leave exits with status 0")
        }
        let observer = observers["node-2"]!
        _ = observer.waitUntilEnded(until: deadline())
        let closing = observer.endDescription ?? "is still open"
        narrate("node-2 \(exit); its observer's connection \(closing)")
        guard closing.hasPrefix("closed with code 1001") else {
            throw ClusterError("node-2 observer's connection \(closing); a node that leaves closes its clients with code 1001")
        }
    }

    private func checkFinalState() throws {
        heading("7. Check the final state over HTTP")
        for nodeName in runningNodeNames() {
            let cluster = try requireCluster()
            let path = "/v1/presence?userIds=\(userIds.joined(separator: ","))"
            let response = try httpGet(cluster.node(nodeName).clientListen, path: path, timeout: .seconds(2))
            guard response.statusCode == 200,
                let snapshot = try? JSONDecoder().decode(PresenceSnapshot.self, from: Data(response.body))
            else {
                throw ClusterError("GET \(path) on \(nodeName) returned HTTP \(response.statusCode): \(response.bodyText.prefix(200))")
            }
            for user in snapshot.users where user.status != .offline || user.lastSeen == nil {
                throw ClusterError("GET \(path) on \(nodeName) reports \(user.userId) \(user.status.rawValue) with lastSeen \(user.lastSeen ?? "missing"); expected offline with lastSeen")
            }
            let states = snapshot.users.map { "\($0.userId) offline since \($0.lastSeen!)" }.joined(separator: ", ")
            narrate("GET \(path) on \(nodeName): \(states)")
        }
    }

    // MARK: - Ending

    private func stopEverything() {
        for session in devices + Array(observers.values) {
            session.close()
        }
        guard let cluster else { return }
        let stopped = cluster.stopAll()
        if !stopped.isEmpty {
            narrate("stopped \(stopped.joined(separator: ", ")) by PID; logs are in \(directory.path)")
        }
    }

    private func printSummary() {
        guard let cluster, !observers.isEmpty else { return }
        heading("Summary: the presence events each observer received")
        var table = TextTable("OBSERVER ON", "THAT NODE", "USER", "EVENTS (local time, status)")
        for node in cluster.nodes {
            guard let observer = observers[node.name] else { continue }
            let fate = fates[node.name] ?? "running at the end"
            for user in userIds {
                let events = observer.presenceArrivals(for: user).map { arrival in
                    "\(timeOfDay(arrival.date)) \(arrival.presence!.status.rawValue)"
                }
                table.append(node.name, fate, user, events.isEmpty ? "(none)" : events.joined(separator: ", "))
            }
        }
        SharedOutput.line(table.rendered)
    }

    // MARK: - Helpers

    /// Waits until the observer of each node in `nodeNames` receives `status` for `user`, counting
    /// only events after `marks`. Returns the arrivals by node name. Throws naming every observer
    /// that missed the event and what it received instead.
    private func expect(
        _ user: String, _ status: PresenceStatus, on nodeNames: [String], from marks: [String: Int], context: String
    ) throws -> [(String, Arrival)] {
        let until = deadline()
        var arrivals: [(String, Arrival)] = []
        var misses: [String] = []
        for nodeName in nodeNames {
            let observer = observers[nodeName]!
            switch observer.waitForPresence(of: user, status: status, from: marks[nodeName]!, until: until) {
            case .arrived(let arrival):
                arrivals.append((nodeName, arrival))
            case .interrupted:
                throw ClusterError("interrupted")
            case .timedOut:
                misses.append("\(nodeName) observer: nothing within \(formatSeconds(eventTimeout)); \(describeReceived(user, by: observer))")
            case .connectionEnded(let how):
                misses.append("\(nodeName) observer: its connection \(how); \(describeReceived(user, by: observer))")
            }
        }
        guard misses.isEmpty else {
            throw ClusterError("\(user) \(status.rawValue) did not arrive \(context):\n  " + misses.joined(separator: "\n  "))
        }
        return arrivals
    }

    private func describeReceived(_ user: String, by observer: RecordingSession) -> String {
        let events = observer.presenceArrivals(for: user).map { "\($0.presence!.status.rawValue) at \(timeOfDay($0.date))" }
        return events.isEmpty ? "it received no event for \(user)" : "its events for \(user): \(events.joined(separator: ", "))"
    }

    /// Formats arrivals as "node-1 0.412 ms, node-2 1.3 ms", each the time from `start` to the arrival.
    private func describeDelays(_ arrivals: [(String, Arrival)], since start: ContinuousClock.Instant) -> String {
        arrivals.map { "\($0.0) \(formatLatency($0.1.instant - start))" }.joined(separator: ", ")
    }

    private func fetchPresence(of user: String, on nodeName: String) throws -> UserPresence {
        let response = try httpGet(try requireCluster().node(nodeName).clientListen, path: "/v1/presence/\(user)", timeout: .seconds(2))
        guard response.statusCode == 200, let presence = try? JSONDecoder().decode(UserPresence.self, from: Data(response.body)) else {
            throw ClusterError("GET /v1/presence/\(user) on \(nodeName) returned HTTP \(response.statusCode): \(response.bodyText.prefix(200))")
        }
        return presence
    }

    /// Names of the nodes whose process still runs, in node order.
    private func runningNodeNames() -> [String] {
        guard let cluster else { return [] }
        return cluster.nodes.map(\.name).filter { cluster.pids[$0] != nil }
    }

    /// Returns the number of messages each observer has recorded so far, by node name.
    private func currentMarks() -> [String: Int] {
        observers.mapValues(\.mark)
    }

    private func requireCluster() throws -> ScenarioCluster {
        guard let cluster else { throw ClusterError("the cluster is not running") }
        return cluster
    }

    private func deadline() -> ContinuousClock.Instant {
        ContinuousClock.now + eventTimeout
    }

    private func heading(_ text: String) {
        SharedOutput.line("")
        SharedOutput.line("== \(text)")
    }

    private func narrate(_ text: String) {
        SharedOutput.line(text)
    }
}
