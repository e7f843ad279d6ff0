import MeshCore
import PresenceProtocol
import XCTest

@testable import MeshNode

final class ClientRequestTests: XCTestCase {
    private func decode(_ text: String, maxUsers: Int = 100) -> Result<(request: ClientRequest, id: String?), RequestError> {
        ClientRequestDecoder.decode(Array(text.utf8), maxUsers: maxUsers)
    }

    private func error(_ text: String, maxUsers: Int = 100) -> RequestError? {
        if case .failure(let error) = decode(text, maxUsers: maxUsers) { return error }
        return nil
    }

    func testDecode_subscribeList_keepsIDAndUsers() throws {
        let (request, id) = try decode(#"{"type":"presence.subscribe","id":"r1","payload":{"userIds":["a","b"]}}"#).get()
        XCTAssertEqual(request, .subscribe(.users(["a", "b"])))
        XCTAssertEqual(id, "r1")
    }

    func testDecode_subscribeStar_isAll() throws {
        XCTAssertEqual(try decode(#"{"type":"presence.subscribe","payload":{"userIds":"*"}}"#).get().request, .subscribe(.all))
    }

    func testDecode_setStatus_readsStatusAndText() throws {
        let request = try decode(#"{"type":"presence.set","payload":{"status":"away","text":"lunch"}}"#).get().request
        XCTAssertEqual(request, .setStatus(CustomStatusValue(status: "away", text: "lunch")))
    }

    func testDecode_invalidJSON_isInvalidJSON() {
        XCTAssertEqual(error("{not json")?.code, "invalid_json")
    }

    func testDecode_notAnObject_isInvalidMessage() {
        XCTAssertEqual(error("[1,2]")?.code, "invalid_message")
        XCTAssertEqual(error("42")?.code, "invalid_message")
    }

    func testDecode_unknownType_namesTheType() {
        let found = error(#"{"type":"presence.dance","id":"x","payload":{}}"#)
        XCTAssertEqual(found?.code, "unknown_type")
        XCTAssertEqual(found?.requestID, "x")
        XCTAssertTrue(found?.message.contains("presence.dance") ?? false)
    }

    func testDecode_missingPayload_isInvalidPayload() {
        XCTAssertEqual(error(#"{"type":"presence.query"}"#)?.code, "invalid_payload")
    }

    func testDecode_illTypedFields_nameTheField() {
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":5}}"#)?.message.hasPrefix("payload.userIds"), true)
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":["a",3]}}"#)?.message, "payload.userIds[1] must be a string")
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":"all"}}"#)?.code, "invalid_payload")
        XCTAssertEqual(error(#"{"type":"presence.set","payload":{"status":"asleep"}}"#)?.message.hasPrefix("payload.status must be one of"), true)
        XCTAssertEqual(error(#"{"type":"presence.set","payload":{"status":"away","text":7}}"#)?.message, "payload.text must be a string")
        XCTAssertEqual(error(#"{"type":3,"payload":{}}"#)?.code, "invalid_message")
        XCTAssertEqual(error(#"{"type":"presence.query","id":12,"payload":{"userIds":[]}}"#)?.message, "\"id\" must be a string")
    }

    func testDecode_invalidUserID_isInvalidUserID() {
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":["good","bad id"]}}"#)?.code, "invalid_user_id")
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":[""]}}"#)?.code, "invalid_user_id")
    }

    func testDecode_tooManyUsers_isTooManyUsers() {
        XCTAssertEqual(error(#"{"type":"presence.query","payload":{"userIds":["a","b","c"]}}"#, maxUsers: 2)?.code, "too_many_users")
    }

    func testEncoding_offlineCarriesLastSeenAndCustom() {
        let text = EventEncoding.userPresence(
            UserPresenceState(userID: "u\"1", isOnline: false, lastSeen: 1_764_880_300_123, custom: CustomStatusValue(status: "away", text: "brb")))
        XCTAssertEqual(
            text,
            #"{"type":"user.presence","payload":{"userId":"u\"1","status":"offline","lastSeen":"2025-12-04T20:31:40.123Z","custom":{"status":"away","text":"brb"}}}"#)
    }

    func testEncoding_onlineHasNoLastSeen() {
        let text = EventEncoding.userPresence(UserPresenceState(userID: "a", isOnline: true, lastSeen: 5, custom: nil))
        XCTAssertEqual(text, #"{"type":"user.presence","payload":{"userId":"a","status":"online"}}"#)
    }

    func testJWT_verifiesTokens() {
        let secret = "0123456789abcdef-secret"
        func token(_ claims: String, secret: String = secret, alg: String = "HS256") -> String {
            let header = JWT.base64URLEncode(Array(#"{"alg":"\#(alg)","typ":"JWT"}"#.utf8))
            let body = JWT.base64URLEncode(Array(claims.utf8))
            let signature = JWT.base64URLEncode(JWT.hmacSHA256(key: Array(secret.utf8), message: Array("\(header).\(body)".utf8)))
            return "\(header).\(body).\(signature)"
        }
        XCTAssertEqual(try JWT.verifyHS256(token(#"{"sub":"alice","exp":2000}"#), secrets: [secret], nowSeconds: 1000).get(), "alice")
        XCTAssertEqual(JWT.verifyHS256(token(#"{"sub":"alice","exp":500}"#), secrets: [secret], nowSeconds: 1000), .failure(.init(message: "token expired")))
        XCTAssertEqual(JWT.verifyHS256(token(#"{"sub":"alice","exp":2000,"nbf":1500}"#), secrets: [secret], nowSeconds: 1000), .failure(.init(message: "token not valid yet (nbf)")))
        XCTAssertEqual(
            JWT.verifyHS256(token(#"{"sub":"alice"}"#), secrets: [secret], nowSeconds: 1000),
            .failure(.init(message: "exp claim is missing; tokens must carry an expiry time")))
        XCTAssertEqual(try JWT.verifyHS256(token(#"{"sub":"alice","exp":1001}"#), secrets: [secret], nowSeconds: 1000).get(), "alice")
        XCTAssertEqual(
            JWT.verifyHS256(token(#"{"sub":"alice"}"#, secret: "another-secret-of-16"), secrets: [secret], nowSeconds: 1000),
            .failure(.init(message: "signature does not match any configured secret")))
        XCTAssertEqual(JWT.verifyHS256(token(#"{"sub":"alice"}"#, alg: "none"), secrets: [secret], nowSeconds: 1000), .failure(.init(message: "alg must be HS256")))
        XCTAssertEqual(try JWT.verifyHS256(token(#"{"sub":"bob","exp":2}"#, secret: "old-secret-16-bytes"), secrets: [secret, "old-secret-16-bytes"], nowSeconds: 1).get(), "bob")
        XCTAssertEqual(JWT.verifyHS256("a.b", secrets: [secret], nowSeconds: 1), .failure(.init(message: "a JWT has three dot-separated parts")))
    }

    func testJWT_hmacMatchesRFC4231Case2() {
        let digest = JWT.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        XCTAssertEqual(digest.map { String(format: "%02x", $0) }.joined(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
