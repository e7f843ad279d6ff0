import XCTest

@testable import MeshNode

final class BearerTokenTests: XCTestCase {
    func testBearerToken_schemeInAnyCase() {
        XCTAssertEqual(PresenceNode.bearerToken("Bearer abc"), "abc")
        XCTAssertEqual(PresenceNode.bearerToken("bearer abc"), "abc")
        XCTAssertEqual(PresenceNode.bearerToken("BEARER  abc "), "abc")
    }

    func testBearerToken_otherScheme_isNil() {
        XCTAssertNil(PresenceNode.bearerToken("Basic YWxpY2U6cHc="))
        XCTAssertNil(PresenceNode.bearerToken("Bearer"))
        XCTAssertNil(PresenceNode.bearerToken("Bearer   "))
        XCTAssertNil(PresenceNode.bearerToken(nil))
    }
}
