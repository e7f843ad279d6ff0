import Foundation
import XCTest

/// Presence semantics across real `presence-node` processes: sessions on several nodes, late
/// closes, `lastSeen`, skewed clocks, subscribe races, the offline grace and merging clusters.
final class PresenceSemanticsTests: XCTestCase {
    private var nodes: [NodeProcess] = []
    private var clients: [TestClient] = []
    private var configFiles: [String] = []

    override func tearDown() async throws {
        for client in clients { client.close() }
        clients = []
        for node in nodes { node.stop() }
        nodes = []
        for path in configFiles { try? FileManager.default.removeItem(atPath: path) }
        configFiles = []
    }

    // MARK: - Helpers

    /// Starts nodes `names` in order, each seeded with the first, with per-node extra arguments,
    /// and waits until they all see each other alive.
    private func startCluster(_ names: [String], arguments: (String) -> [String] = { _ in [] }) async throws -> [NodeProcess] {
        var started: [NodeProcess] = []
        for name in names {
            let seeds = started.first.map { [$0.gossipAddress] } ?? []
            let node = try NodeProcess.start(name: name, seeds: seeds, extraArguments: arguments(name))
            nodes.append(node)
            started.append(node)
        }
        try await waitUntilFormed(started)
        return started
    }

    private func waitUntilFormed(_ members: [NodeProcess], timeout: Duration = .seconds(15)) async throws {
        let names = Set(members.map(\.name))
        try await eventually(timeout, "every node to see \(names.sorted()) alive") {
            for node in members where try await node.aliveMemberNames() != names { return false }
            return true
        }
    }

    private func connect(_ user: String, to node: NodeProcess) async throws -> TestClient {
        let client = try await TestClient.connect(node: node, user: user)
        clients.append(client)
        return client
    }

    /// Connects a watcher on `node` subscribed to `users`, after its snapshot arrived.
    private func watcher(_ name: String, on node: NodeProcess, watching users: [String]) async throws -> TestClient {
        let client = try await connect(name, to: node)
        client.subscribe(users)
        try await client.waitForMessage(type: "presence.snapshot", id: "sub")
        return client
    }

    /// Writes a node config file with the given `presence` section; flags supply the rest.
    private func configFile(presence: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("semantics-\(UUID().uuidString.prefix(8)).json").path
        try #"{"presence": \#(presence)}"#.write(toFile: path, atomically: true, encoding: .utf8)
        configFiles.append(path)
        return path
    }

    private func statuses(_ client: TestClient, of user: String) -> [String] {
        client.presenceEvents(for: user).compactMap { $0["status"] as? String }
    }

    private func onlineUserCount(_ node: NodeProcess) async throws -> Int {
        let (_, body) = try await node.get("/metrics")
        let line = String(decoding: body, as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix("presencemesh_online_users ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    private static func parseRFC3339(_ text: String?) -> Date? {
        text.flatMap { try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse($0) }
    }

    // MARK: - Sessions

    func testStaleSession_closedLate_keepsUserOnline() async throws {
        let cluster = try await startCluster(["node-1", "node-2", "node-3"])
        let watchers = try await [
            watcher("w1", on: cluster[0], watching: ["bob"]),
            watcher("w3", on: cluster[2], watching: ["bob"]),
        ]
        let oldPhone = try await connect("bob", to: cluster[0])
        for watcher in watchers { try await watcher.waitForStatus("online", of: "bob") }
        let newPhone = try await connect("bob", to: cluster[1])

        // The old session is closed late, as after an idle timeout found its socket dead.
        try await Task.sleep(for: .milliseconds(300))
        oldPhone.close()
        try await Task.sleep(for: .milliseconds(800))
        for watcher in watchers {
            XCTAssertEqual(statuses(watcher, of: "bob"), ["online"], watcher.label)
        }
        for node in cluster {
            let presence = try await node.presence("bob")
            XCTAssertEqual(presence["status"] as? String, "online", node.name)
        }

        newPhone.close()
        for watcher in watchers { try await watcher.waitForStatus("offline", of: "bob") }
        for watcher in watchers {
            XCTAssertEqual(statuses(watcher, of: "bob"), ["online", "offline"], watcher.label)
        }
    }

    func testTwoNodeSessions_offlineWhenLastNodeDies() async throws {
        let cluster = try await startCluster(["node-1", "node-2", "node-3"])
        let watcher1 = try await watcher("w1", on: cluster[0], watching: ["carol"])
        _ = try await connect("carol", to: cluster[1])
        _ = try await connect("carol", to: cluster[2])
        try await watcher1.waitForStatus("online", of: "carol")

        cluster[1].signal(SIGKILL)
        try await eventually(.seconds(10), "node-2 dead on node-1") {
            try await cluster[0].members().first { $0["name"] as? String == "node-2" }?["state"] as? String == "dead"
        }
        XCTAssertEqual(statuses(watcher1, of: "carol"), ["online"], "carol flapped when one of her nodes died")

        cluster[2].signal(SIGKILL)
        try await watcher1.waitForStatus("offline", of: "carol", timeout: .seconds(15))
        XCTAssertEqual(statuses(watcher1, of: "carol"), ["online", "offline"])
        XCTAssertNotNil(Self.parseRFC3339(watcher1.presenceEvents(for: "carol").last?["lastSeen"] as? String))
    }

    // MARK: - lastSeen and skewed clocks

    func testLastSeen_fromClosingNode() async throws {
        // node-3's clock runs 10 minutes behind: a lastSeen near real time would come from the
        // watchers' nodes, not from the node that held the session.
        let skew: Int64 = -600_000
        let cluster = try await startCluster(["node-1", "node-2", "node-3"]) { name in
            name == "node-3" ? ["--clock-offset-ms", "\(skew)"] : []
        }
        let watchers = try await [
            watcher("w1", on: cluster[0], watching: ["dora"]),
            watcher("w2", on: cluster[1], watching: ["dora"]),
        ]
        let dora = try await connect("dora", to: cluster[2])
        for watcher in watchers { try await watcher.waitForStatus("online", of: "dora") }

        let before = Date()
        dora.close()
        for watcher in watchers { try await watcher.waitForStatus("offline", of: "dora") }
        let after = Date()

        var seen: Set<String> = []
        for watcher in watchers {
            let lastSeen = watcher.presenceEvents(for: "dora").last?["lastSeen"] as? String
            XCTAssertNotNil(lastSeen, watcher.label)
            if let lastSeen { seen.insert(lastSeen) }
        }
        for node in cluster {
            let presence = try await node.presence("dora")
            XCTAssertEqual(presence["status"] as? String, "offline", node.name)
            if let lastSeen = presence["lastSeen"] as? String { seen.insert(lastSeen) } else { XCTFail("no lastSeen on \(node.name)") }
            let (_, body) = try await node.get("/v1/presence?userIds=dora")
            let users = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["users"] as? [[String: Any]]
            if let lastSeen = users?.first?["lastSeen"] as? String { seen.insert(lastSeen) } else { XCTFail("no lastSeen in the snapshot of \(node.name)") }
        }
        XCTAssertEqual(seen.count, 1, "nodes disagree on lastSeen: \(seen.sorted())")
        let date = try XCTUnwrap(Self.parseRFC3339(seen.first))
        let offset = TimeInterval(skew) / 1000
        XCTAssertGreaterThanOrEqual(date.timeIntervalSince(before), offset - 1, "lastSeen \(date) is not node-3's close time")
        XCTAssertLessThanOrEqual(date.timeIntervalSince(after), offset + 1, "lastSeen \(date) is not node-3's close time")
    }

    func testSkewedClocks_sameOutcomes() async throws {
        let offsets: [String: Int64] = ["node-1": 600_000, "node-2": 0, "node-3": -600_000]
        let cluster = try await startCluster(["node-1", "node-2", "node-3"]) { name in
            ["--clock-offset-ms", "\(offsets[name]!)"]
        }
        let watchers = try await [
            watcher("w1", on: cluster[0], watching: ["erik"]),
            watcher("w2", on: cluster[1], watching: ["erik"]),
            watcher("w3", on: cluster[2], watching: ["erik"]),
        ]
        // Sessions on the fast and the slow node: closing either alone keeps erik online.
        let fast = try await connect("erik", to: cluster[0])
        let slow = try await connect("erik", to: cluster[2])
        for watcher in watchers { try await watcher.waitForStatus("online", of: "erik") }

        // A status set on the fast node, then a later one on the slow node: the later one wins
        // everywhere although its wall clock reads 20 minutes earlier.
        fast.send(#"{"type":"presence.set","id":"s1","payload":{"status":"away","text":"lunch"}}"#)
        for node in cluster {
            try await eventually(.seconds(5), "away on \(node.name)") {
                (try await node.presence("erik")["custom"] as? [String: Any])?["status"] as? String == "away"
            }
        }
        slow.send(#"{"type":"presence.set","id":"s2","payload":{"status":"busy","text":"call"}}"#)
        for node in cluster {
            try await eventually(.seconds(5), "busy on \(node.name)") {
                (try await node.presence("erik")["custom"] as? [String: Any])?["status"] as? String == "busy"
            }
        }

        // Concurrent writes from both devices end with one value on every node.
        fast.send(#"{"type":"presence.set","id":"s3","payload":{"status":"away"}}"#)
        slow.send(#"{"type":"presence.set","id":"s4","payload":{"status":"online"}}"#)
        try await Task.sleep(for: .seconds(1))
        var finals: Set<String> = []
        for node in cluster {
            let custom = try await node.presence("erik")["custom"] as? [String: Any]
            finals.insert(custom?["status"] as? String ?? "none")
        }
        XCTAssertEqual(finals.count, 1, "nodes disagree on erik's status: \(finals.sorted())")

        fast.close()
        try await Task.sleep(for: .milliseconds(800))
        for node in cluster {
            let presence = try await node.presence("erik")
            XCTAssertEqual(presence["status"] as? String, "online", node.name)
        }
        slow.close()
        for watcher in watchers { try await watcher.waitForStatus("offline", of: "erik") }
        try await Task.sleep(for: .milliseconds(300))
        var lastSeen: Set<String> = []
        for watcher in watchers {
            XCTAssertEqual(statuses(watcher, of: "erik").first, "online", watcher.label)
            XCTAssertEqual(statuses(watcher, of: "erik").last, "offline", watcher.label)
            XCTAssertEqual(statuses(watcher, of: "erik").filter { $0 == "offline" }.count, 1, watcher.label)
            if let seen = watcher.presenceEvents(for: "erik").last?["lastSeen"] as? String { lastSeen.insert(seen) }
        }
        XCTAssertEqual(lastSeen.count, 1, "nodes disagree on lastSeen: \(lastSeen.sorted())")
    }

    // MARK: - Subscriptions

    func testSubscribeRace_endsOffline() async throws {
        let cluster = try await startCluster(["node-1", "node-2"])
        let watcherClient = try await connect("watcher", to: cluster[1])
        for round in 0..<12 {
            let user = "racer-\(round)"
            let racer = try await connect(user, to: cluster[0])
            try await eventually(.seconds(5), "\(user) online on node-2") {
                try await cluster[1].presence(user)["status"] as? String == "online"
            }
            // Alternate which side goes first, with a small varying gap, to hit both orders.
            let gap = Duration.milliseconds(round % 4)
            if round % 2 == 0 {
                racer.close()
                try await Task.sleep(for: gap)
                watcherClient.subscribe([user], id: "sub-\(round)")
            } else {
                watcherClient.subscribe([user], id: "sub-\(round)")
                try await Task.sleep(for: gap)
                racer.close()
            }
            try await watcherClient.waitForMessage(type: "presence.snapshot", id: "sub-\(round)")
            try await eventually(.seconds(5), "\(user) offline on node-2") {
                try await cluster[1].presence(user)["status"] as? String == "offline"
            }
        }
        try await Task.sleep(for: .milliseconds(300))

        let messages = watcherClient.messages
        for round in 0..<12 {
            let user = "racer-\(round)"
            guard let snapshotIndex = messages.firstIndex(where: { $0["id"] as? String == "sub-\(round)" }) else {
                XCTFail("no snapshot for \(user)")
                continue
            }
            let snapshotUsers = (messages[snapshotIndex]["payload"] as? [String: Any])?["users"] as? [[String: Any]]
            var belief = [snapshotUsers?.first?["status"] as? String ?? "?"]
            for message in messages[(snapshotIndex + 1)...] where message["type"] as? String == "user.presence" {
                let payload = message["payload"] as? [String: Any]
                guard payload?["userId"] as? String == user else { continue }
                belief.append(payload?["status"] as? String ?? "?")
            }
            XCTAssertEqual(belief.last, "offline", "\(user): snapshot then events \(belief)")
            for (previous, next) in zip(belief, belief.dropFirst()) {
                XCTAssertNotEqual(previous, next, "\(user): repeated state in \(belief)")
            }
            let before = messages[..<snapshotIndex].contains {
                ($0["payload"] as? [String: Any])?["userId"] as? String == user && $0["type"] as? String == "user.presence"
            }
            XCTAssertFalse(before, "\(user): event before the subscription's snapshot")
        }
    }

    func testRapidFlaps_arriveInOrder() async throws {
        let cluster = try await startCluster(["node-1", "node-2", "node-3"])
        let watchers = try await [
            watcher("w2", on: cluster[1], watching: ["flap"]),
            watcher("w3", on: cluster[2], watching: ["flap"]),
        ]
        for _ in 0..<8 {
            let session = try await connect("flap", to: cluster[0])
            try await Task.sleep(for: .milliseconds(20))
            session.close()
            try await Task.sleep(for: .milliseconds(20))
        }
        for node in cluster {
            try await eventually(.seconds(5), "flap offline on \(node.name)") {
                try await node.presence("flap")["status"] as? String == "offline"
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        for watcher in watchers {
            let seen = statuses(watcher, of: "flap")
            XCTAssertFalse(seen.isEmpty, watcher.label)
            XCTAssertEqual(seen.first, "online", watcher.label)
            XCTAssertEqual(seen.last, "offline", "\(watcher.label): \(seen)")
            for (previous, next) in zip(seen, seen.dropFirst()) {
                XCTAssertNotEqual(previous, next, "\(watcher.label): out of order \(seen)")
            }
        }
    }

    // MARK: - Offline grace

    func testGrace_reconnectAfterKill9_noFlap() async throws {
        let config = try configFile(presence: #"{"offlineGraceMs": 5000}"#)
        let cluster = try await startCluster(["node-1", "node-2", "node-3"]) { _ in ["--config", config] }
        let watchers = try await [
            watcher("w1", on: cluster[0], watching: ["phone"]),
            watcher("w2", on: cluster[1], watching: ["phone"]),
        ]
        _ = try await connect("phone", to: cluster[2])
        for watcher in watchers { try await watcher.waitForStatus("online", of: "phone") }

        cluster[2].signal(SIGKILL)
        try await Task.sleep(for: .milliseconds(300))
        let phone = try await connect("phone", to: cluster[1])
        try await eventually(.seconds(10), "node-3 dead on node-1") {
            try await cluster[0].members().first { $0["name"] as? String == "node-3" }?["state"] as? String == "dead"
        }
        // Past the grace of any offline event the death caused.
        try await Task.sleep(for: .milliseconds(5_500))
        for watcher in watchers {
            XCTAssertEqual(statuses(watcher, of: "phone"), ["online"], "\(watcher.label) saw a flap")
        }
        for node in cluster[0...1] {
            let presence = try await node.presence("phone")
            XCTAssertEqual(presence["status"] as? String, "online", node.name)
        }

        // A real departure still arrives, once the grace has passed, with lastSeen.
        phone.close()
        let closed = ContinuousClock.now
        for watcher in watchers { try await watcher.waitForStatus("offline", of: "phone", timeout: .seconds(10)) }
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - closed, .milliseconds(4_500))
        for watcher in watchers {
            XCTAssertEqual(statuses(watcher, of: "phone"), ["online", "offline"], watcher.label)
            XCTAssertNotNil(Self.parseRFC3339(watcher.presenceEvents(for: "phone").last?["lastSeen"] as? String))
        }
    }

    // MARK: - Merging clusters

    func testTwoClusters_mergeWithEqualCounts() async throws {
        let perSide = 10
        let west = try await startCluster(["west-1", "west-2"])
        let east = try await startCluster(["east-1", "east-2"])
        for index in 0..<perSide {
            _ = try await connect("west-user-\(index)", to: west[index % 2])
            _ = try await connect("east-user-\(index)", to: east[index % 2])
        }
        for node in west + east {
            try await eventually(.seconds(5), "\(perSide) users on \(node.name)") { try await onlineUserCount(node) == perSide }
        }

        // A new node with a seed in each cluster joins them.
        let bridge = try NodeProcess.start(name: "bridge", seeds: [west[0].gossipAddress, east[0].gossipAddress])
        nodes.append(bridge)
        let all = west + east + [bridge]
        try await waitUntilFormed(all, timeout: .seconds(20))
        for node in all {
            try await eventually(.seconds(15), "\(2 * perSide) users on \(node.name)") {
                try await onlineUserCount(node) == 2 * perSide
            }
        }
        let ids = (0..<perSide).flatMap { ["west-user-\($0)", "east-user-\($0)"] }
        for node in all {
            let (_, body) = try await node.get("/v1/presence?userIds=\(ids.joined(separator: ","))")
            let users = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["users"] as? [[String: Any]] ?? []
            XCTAssertEqual(users.count, ids.count, node.name)
            XCTAssertEqual(users.filter { $0["status"] as? String == "online" }.count, ids.count, node.name)
        }
    }
}
