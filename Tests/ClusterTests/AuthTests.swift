import Foundation
import XCTest

@testable import MeshNode

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real node with `auth.mode = "hs256"`: tokens decide who a session is, and presence over
/// HTTP needs a token too.
final class AuthTests: XCTestCase {
    private let secret = "cluster-test-secret-0123456789"
    private var node: NodeProcess!
    private var configPath = ""

    override func setUp() async throws {
        configPath = FileManager.default.temporaryDirectory.appendingPathComponent("auth-\(UUID().uuidString).json").path
        let config = #"{"name":"auth-node","auth":{"mode":"hs256","secrets":["\#(secret)"]}}"#
        FileManager.default.createFile(atPath: configPath, contents: Data(config.utf8))
        node = try NodeProcess.start(name: "auth-node", extraArguments: ["--config", configPath])
    }

    override func tearDown() async throws {
        node?.stop()
        try? FileManager.default.removeItem(atPath: configPath)
    }

    private func token(_ claims: String, secret: String? = nil) -> String {
        let header = JWT.base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let body = JWT.base64URLEncode(Array(claims.utf8))
        let key = Array((secret ?? self.secret).utf8)
        let signature = JWT.base64URLEncode(JWT.hmacSHA256(key: key, message: Array("\(header).\(body)".utf8)))
        return "\(header).\(body).\(signature)"
    }

    private var inAnHour: Int { Int(Date().timeIntervalSince1970) + 3600 }

    private func get(_ path: String, bearer: String? = nil) async throws -> Int {
        var request = URLRequest(url: URL(string: "http://\(node.clientAddress)\(path)")!)
        request.timeoutInterval = 5
        if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }

    private func failsToOpen(_ pathAndQuery: String) async throws -> Bool {
        let client = TestClient(node: node, pathAndQuery: pathAndQuery, label: pathAndQuery)
        defer { client.close() }
        try await eventually(.seconds(5), "the upgrade of \(pathAndQuery) to end") {
            client.events.read { $0.contains { if case .failed = $0 { return true }; if case .opened = $0 { return true }; return false } }
        }
        return !client.events.read { $0.contains(.opened) }
    }

    func testValidToken_opensSessionAsItsSubject() async throws {
        let client = TestClient(node: node, pathAndQuery: "/v1/ws?token=\(token(#"{"sub":"alice","exp":\#(inAnHour)}"#))", label: "alice")
        let ready = try await client.waitForMessage(type: "session.ready")
        XCTAssertEqual((ready["payload"] as? [String: Any])?["userId"] as? String, "alice")
        client.close()
    }

    func testBadTokens_areRejectedBeforeTheUpgrade() async throws {
        let expired = token(#"{"sub":"alice","exp":1000}"#)
        let noExpiry = token(#"{"sub":"alice"}"#)
        let wrongSecret = token(#"{"sub":"alice","exp":\#(inAnHour)}"#, secret: "some-other-secret-value")
        let good = token(#"{"sub":"alice","exp":\#(inAnHour)}"#)
        let invalidSubject = token(#"{"sub":"no spaces allowed","exp":\#(inAnHour)}"#)
        let rejectedQueries = [
            "/v1/ws?userId=alice", "/v1/ws?token=\(expired)", "/v1/ws?token=\(noExpiry)", "/v1/ws?token=\(wrongSecret)",
            "/v1/ws?token=not.a.jwt", "/v1/ws?token=\(good)&userId=mallory", "/v1/ws?token=\(invalidSubject)",
        ]
        for query in rejectedQueries {
            let rejected = try await failsToOpen(query)
            XCTAssertTrue(rejected, query)
        }
    }

    func testPresenceOverHTTP_needsAToken() async throws {
        let good = token(#"{"sub":"reader","exp":\#(inAnHour)}"#)
        let withoutToken = try await get("/v1/presence/alice")
        XCTAssertEqual(withoutToken, 401)
        let membersWithoutToken = try await get("/v1/cluster/members")
        XCTAssertEqual(membersWithoutToken, 401)
        let withToken = try await get("/v1/presence/alice", bearer: good)
        XCTAssertEqual(withToken, 200)
        let health = try await get("/healthz")
        XCTAssertEqual(health, 200)
    }
}
