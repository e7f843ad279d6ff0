import Foundation
import XCTest

/// `lastSeen` across real `presence-node` processes: every node, a restarted one included,
/// reports the same `lastSeen` for users whose last session was on a node that went away.
final class LastSeenTests: XCTestCase {
    private var nodes: [NodeProcess] = []
    private var clients: [TestClient] = []

    override func tearDown() async throws {
        for client in clients { client.close() }
        clients = []
        for node in nodes { node.stop() }
        nodes = []
    }

    /// Returns the `status` and `lastSeen` that `node` reports over HTTP for `user`.
    private func reported(_ user: String, on node: NodeProcess) async throws -> (status: String?, lastSeen: String?) {
        let presence = try await node.presence(user)
        return (presence["status"] as? String, presence["lastSeen"] as? String)
    }

    func testRestartedNode_reportsSameLastSeen() async throws {
        let first = try NodeProcess.start(name: "node-1")
        nodes.append(first)
        for name in ["node-2", "node-3"] {
            nodes.append(try NodeProcess.start(name: name, seeds: [first.gossipAddress]))
        }
        let names = Set(nodes.map(\.name))
        try await eventually(.seconds(15), "every node to see \(names.sorted()) alive") {
            for node in nodes where try await node.aliveMemberNames() != names { return false }
            return true
        }

        let yan = try await TestClient.connect(node: nodes[0], user: "yan")
        let zed = try await TestClient.connect(node: nodes[2], user: "zed")
        clients += [yan, zed]
        for node in nodes {
            try await eventually(.seconds(5), "yan and zed online on \(node.name)") {
                let yanStatus = try await reported("yan", on: node).status
                let zedStatus = try await reported("zed", on: node).status
                return yanStatus == "online" && zedStatus == "online"
            }
        }
        yan.close()
        zed.close()

        var closedAt: [String: String] = [:]
        for user in ["yan", "zed"] {
            try await eventually(.seconds(5), "\(user) offline with one lastSeen on every node") {
                var seen: Set<String> = []
                for node in nodes {
                    let state = try await reported(user, on: node)
                    guard state.status == "offline", let lastSeen = state.lastSeen else { return false }
                    seen.insert(lastSeen)
                }
                closedAt[user] = seen.first
                return seen.count == 1
            }
        }

        // kill -9 node-1, then start a new run of it at the same ports: it begins with no state.
        let old = nodes[0]
        old.signal(SIGKILL)
        XCTAssertNotNil(old.waitForExit(timeout: 5), "node-1 did not exit after SIGKILL")
        let restarted = try NodeProcess.start(
            name: "node-1", clientAddress: old.clientAddress, gossipAddress: old.gossipAddress)
        nodes[0] = restarted

        for user in ["yan", "zed"] {
            for node in nodes {
                try await eventually(.seconds(10), "\(user) lastSeen \(closedAt[user] ?? "?") on \(node.name)") {
                    try await reported(user, on: node).lastSeen == closedAt[user]
                }
            }
        }
        for user in ["yan", "zed"] {
            for node in nodes {
                let state = try await reported(user, on: node)
                XCTAssertEqual(state.status, "offline", "\(user) on \(node.name)")
                XCTAssertEqual(state.lastSeen, closedAt[user], "\(user) on \(node.name)")
            }
        }
    }
}
