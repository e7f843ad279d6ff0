import Foundation
import XCTest

/// Real `presence-node` processes on 127.0.0.1, real UDP gossip, real WebSocket clients.
final class ClusterTests: XCTestCase {
    private var cluster: TestCluster!

    override func setUp() async throws {
        cluster = try await TestCluster.start(size: 3)
    }

    override func tearDown() async throws {
        cluster?.shutdown()
        cluster = nil
    }

    func testCluster_forms_everyNodeListsEveryMemberAlive() async throws {
        for node in cluster.nodes {
            let members = try await node.members()
            XCTAssertEqual(members.count, 3, node.name)
            for member in members {
                XCTAssertEqual(member["state"] as? String, "alive")
                XCTAssertNotNil(member["gossipAddr"] as? String)
                XCTAssertNotNil(member["clientAddr"] as? String)
                XCTAssertNotNil(member["incarnation"] as? Int)
            }
        }
        let (status, body) = try await cluster.node("node-2").get("/healthz")
        XCTAssertEqual(status, 200)
        XCTAssertEqual(String(decoding: body, as: UTF8.self), "ok\n")
    }

    func testPresence_onlineOnNode1_seenOnNodes2And3() async throws {
        let watcher2 = try await TestClient.connect(node: cluster.node("node-2"), user: "watcher-2")
        let watcher3 = try await TestClient.connect(node: cluster.node("node-3"), user: "watcher-3")
        watcher2.subscribe(["alice"])
        watcher3.subscribe(["alice"])
        let snapshot = try await watcher2.waitForMessage(type: "presence.snapshot", id: "sub")
        let users = (snapshot["payload"] as? [String: Any])?["users"] as? [[String: Any]]
        XCTAssertEqual(users?.first?["status"] as? String, "offline")
        try await watcher3.waitForMessage(type: "presence.snapshot", id: "sub")

        let alice = try await TestClient.connect(node: cluster.node("node-1"), user: "alice")
        try await watcher2.waitForStatus("online", of: "alice")
        try await watcher3.waitForStatus("online", of: "alice")
        for node in cluster.nodes {
            try await eventually(.seconds(5), "alice online over HTTP on \(node.name)") {
                try await node.presence("alice")["status"] as? String == "online"
            }
        }
        alice.close()
    }

    func testSecondDevice_keepsUserOnline() async throws {
        let watchers = try await [
            TestClient.connect(node: cluster.node("node-1"), user: "w1"),
            TestClient.connect(node: cluster.node("node-2"), user: "w2"),
            TestClient.connect(node: cluster.node("node-3"), user: "w3"),
        ]
        for watcher in watchers {
            watcher.subscribe(["bob"])
            try await watcher.waitForMessage(type: "presence.snapshot", id: "sub")
        }
        let phone = try await TestClient.connect(node: cluster.node("node-1"), user: "bob")
        for watcher in watchers { try await watcher.waitForStatus("online", of: "bob") }
        let laptop = try await TestClient.connect(node: cluster.node("node-3"), user: "bob")

        phone.close()
        // Give the close time to travel; bob must stay online because the laptop is connected.
        try await Task.sleep(for: .milliseconds(500))
        for watcher in watchers {
            XCTAssertEqual(watcher.presenceEvents(for: "bob").map { $0["status"] as? String }, ["online"], watcher.label)
        }

        laptop.close()
        for watcher in watchers { try await watcher.waitForStatus("offline", of: "bob") }
        try await Task.sleep(for: .milliseconds(500))
        for watcher in watchers {
            let events = watcher.presenceEvents(for: "bob")
            XCTAssertEqual(events.map { $0["status"] as? String }, ["online", "offline"], watcher.label)
            let lastSeen = events.last?["lastSeen"] as? String
            XCTAssertNotNil(lastSeen, watcher.label)
            XCTAssertNotNil(lastSeen.flatMap { try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse($0) }, "\(String(describing: lastSeen))")
        }
        let http = try await cluster.node("node-2").presence("bob")
        XCTAssertEqual(http["status"] as? String, "offline")
        XCTAssertNotNil(http["lastSeen"] as? String)
    }

    func testKill9_usersGoOffline() async throws {
        let watcher1 = try await TestClient.connect(node: cluster.node("node-1"), user: "w1")
        let watcher2 = try await TestClient.connect(node: cluster.node("node-2"), user: "w2")
        for watcher in [watcher1, watcher2] {
            watcher.subscribe(["carol", "dave"])
            try await watcher.waitForMessage(type: "presence.snapshot", id: "sub")
        }
        _ = try await TestClient.connect(node: cluster.node("node-3"), user: "carol")
        _ = try await TestClient.connect(node: cluster.node("node-3"), user: "dave")
        for watcher in [watcher1, watcher2] {
            try await watcher.waitForStatus("online", of: "carol")
            try await watcher.waitForStatus("online", of: "dave")
        }

        cluster.node("node-3").signal(SIGKILL)
        for watcher in [watcher1, watcher2] {
            try await watcher.waitForStatus("offline", of: "carol", timeout: .seconds(15))
            try await watcher.waitForStatus("offline", of: "dave", timeout: .seconds(15))
            XCTAssertNotNil(watcher.presenceEvents(for: "carol").last?["lastSeen"] as? String)
        }
        try await eventually(.seconds(10), "node-3 dead on node-1") {
            try await cluster.node("node-1").members().first { $0["name"] as? String == "node-3" }?["state"] as? String == "dead"
        }
    }

    func testSIGTERM_leavesAndCloses1001() async throws {
        let watcher = try await TestClient.connect(node: cluster.node("node-1"), user: "w1")
        watcher.subscribe(["erin"])
        try await watcher.waitForMessage(type: "presence.snapshot", id: "sub")
        let erin = try await TestClient.connect(node: cluster.node("node-2"), user: "erin")
        try await watcher.waitForStatus("online", of: "erin")

        let stopped = ContinuousClock.now
        cluster.node("node-2").signal(SIGTERM)
        try await watcher.waitForStatus("offline", of: "erin", timeout: .seconds(1))
        let elapsed = ContinuousClock.now - stopped
        XCTAssertLessThan(elapsed, .seconds(1))
        XCTAssertEqual(cluster.node("node-2").waitForExit(timeout: 5), 0)
        try await eventually(.seconds(5), "erin's socket to close") { erin.closeCode != nil }
        XCTAssertEqual(erin.closeCode, .some(1001))
        try await eventually(.seconds(5), "node-2 left on node-1") {
            try await cluster.node("node-1").members().first { $0["name"] as? String == "node-2" }?["state"] as? String == "left"
        }
    }

    func testRandomDatagrams_atEveryGossipPort_changeNothing() async throws {
        let watcher = try await TestClient.connect(node: cluster.node("node-1"), user: "w1")
        watcher.subscribe(["frank"])
        try await watcher.waitForMessage(type: "presence.snapshot", id: "sub")
        _ = try await TestClient.connect(node: cluster.node("node-2"), user: "frank")
        try await watcher.waitForStatus("online", of: "frank")

        let socket = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(socket, 0)
        defer { close(socket) }
        var generator = SplitMix(seed: 0x5EED)
        for node in cluster.nodes {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = node.gossipPort.bigEndian
            inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
            for index in 0..<500 {
                var bytes = (0..<Int(generator.next() % 1400)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                if index % 3 == 0 && !bytes.isEmpty { bytes[0] = 1 }
                _ = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(socket, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
        }
        try await Task.sleep(for: .seconds(2))
        for node in cluster.nodes {
            XCTAssertTrue(node.process.isRunning, node.name)
            let alive = try await node.aliveMemberNames()
            XCTAssertEqual(alive, ["node-1", "node-2", "node-3"], node.name)
            let frank = try await node.presence("frank")
            XCTAssertEqual(frank["status"] as? String, "online", node.name)
            let (_, metrics) = try await node.get("/metrics")
            let line = String(decoding: metrics, as: UTF8.self).split(separator: "\n")
                .first { $0.hasPrefix("presencemesh_gossip_datagrams_malformed_total ") }
            let count = line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
            XCTAssertGreaterThan(count, 0, node.name)
        }
        XCTAssertEqual(watcher.presenceEvents(for: "frank").count, 1)
    }

    func testBadInput_getsErrorEvents() async throws {
        let client = try await TestClient.connect(node: cluster.node("node-1"), user: "grace")
        let cases: [(String, String)] = [
            ("{not json", "invalid_json"),
            (#"{"type":"presence.dance","id":"x1","payload":{}}"#, "unknown_type"),
            (#"{"type":"presence.subscribe","id":"x2"}"#, "invalid_payload"),
            (#"{"type":"presence.subscribe","id":"x3","payload":{"userIds":42}}"#, "invalid_payload"),
            (#"{"type":"presence.query","id":"x4","payload":{"userIds":["ok","not ok"]}}"#, "invalid_user_id"),
            (#"{"type":"presence.set","id":"x5","payload":{"status":"sleeping"}}"#, "invalid_payload"),
        ]
        for (index, (message, code)) in cases.enumerated() {
            client.send(message)
            try await eventually(.seconds(5), "error \(index + 1) for \(message)") {
                client.messages.filter { $0["type"] as? String == "error" }.count == index + 1
            }
            let error = client.messages.filter { $0["type"] as? String == "error" }.last!
            let payload = error["payload"] as? [String: Any]
            XCTAssertEqual(payload?["code"] as? String, code, message)
            XCTAssertFalse((payload?["message"] as? String ?? "").isEmpty, message)
        }
        XCTAssertEqual(client.messages.last?["id"] as? String, "x5")
        client.send(#"{"type":"presence.query","id":"after","payload":{"userIds":["grace"]}}"#)
        let reply = try await client.waitForMessage(type: "presence.snapshot", id: "after")
        let users = (reply["payload"] as? [String: Any])?["users"] as? [[String: Any]]
        XCTAssertEqual(users?.first?["status"] as? String, "online")
        XCTAssertTrue(client.isOpen)
    }

    func testInvalidUserID_gets400() async throws {
        let node = cluster.node("node-1")
        let client = TestClient(node: node, user: "bad%20id")
        try await eventually(.seconds(5), "the upgrade to fail") {
            client.events.read { $0.contains { if case .failed = $0 { return true }; return false } }
        }
        XCTAssertFalse(client.events.read { $0.contains(.opened) })
        let (status, body) = try await node.get("/v1/presence/bad%20id")
        XCTAssertEqual(status, 400)
        XCTAssertTrue(String(decoding: body, as: UTF8.self).contains("invalid_user_id"))
        let (missing, _) = try await node.get("/v1/presence")
        XCTAssertEqual(missing, 400)
        let alive = try await node.aliveMemberNames()
        XCTAssertEqual(alive.count, 3)
    }
}

/// SplitMix64: a small seeded generator for reproducible test input.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class NameConflictTests: XCTestCase {
    func testDuplicateName_cutOffNodeLogsIt() async throws {
        let first = try NodeProcess.start(name: "node-1")
        defer { first.stop() }
        let second = try NodeProcess.start(name: "node-2", seeds: [first.gossipAddress])
        defer { second.stop() }
        let duplicate = try NodeProcess.start(name: "node-1", seeds: [second.gossipAddress])
        defer { duplicate.stop() }
        let message = "another node runs with this node's name"
        // The later run takes the name in node-2's table, so the first run is the one cut off.
        try await eventually(.seconds(10), "the first node-1 logs the conflict") { first.log.contains(message) }
        XCTAssertTrue(first.log.contains("other_gossip=\(duplicate.gossipAddress)"), first.log)
        let (_, metrics) = try await first.get("/metrics")
        XCTAssertTrue(String(decoding: metrics, as: UTF8.self).contains("presencemesh_name_conflicts_total 1\n"))
    }
}

final class SeedWarningTests: XCTestCase {
    func testUnreachableSeed_loggedAsWarning() async throws {
        // A port that was free a moment ago, so nothing listens there.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) == 0 && getsockname(probe, $0, &length) == 0 }
        }
        let port = UInt16(bigEndian: address.sin_port)
        close(probe)
        let node = try NodeProcess.start(name: "node-1", seeds: ["127.0.0.1:\(port)"])
        defer { node.stop() }
        try await eventually(.seconds(5), "a warning about the seed") {
            node.log.contains("level=warning msg=\"seed unreachable; this node runs alone until a seed responds\"")
        }
        XCTAssertTrue(node.log.contains("seed=127.0.0.1:\(port)"), node.log)
    }
}

final class HTTPMethodTests: XCTestCase {
    func testOtherMethods_get405WithAllow() async throws {
        let node = try NodeProcess.start(name: "node-1")
        defer { node.stop() }
        for method in ["POST", "PUT", "DELETE"] {
            let reply = try await HTTP.send("http://\(node.clientAddress)/v1/presence/alice", method: method)
            XCTAssertEqual(reply.status, 405, method)
            XCTAssertEqual(reply.allow, "GET", method)
            XCTAssertTrue(String(decoding: reply.body, as: UTF8.self).contains("method_not_allowed"), method)
        }
        let (status, _) = try await node.get("/v1/presence/alice")
        XCTAssertEqual(status, 200)
    }
}
