import Foundation
import PresenceClient
import PresenceProtocol
import XCTest

final class LibWebSocketsTransportTests: XCTestCase {
    private var server: TestWebSocketServer!

    override func setUpWithError() throws {
        server = TestWebSocketServer()
        try server.start()
    }

    override func tearDownWithError() throws {
        try server.stop()
    }

    func testTransportOpensAndReceivesSessionReady() async throws {
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))

        try await waitUntil("the session.ready text arrives") { events.elements.count >= 2 }
        XCTAssertEqual(events.elements.first, .opened)
        guard case .text(let text) = events.elements[1] else {
            return XCTFail("expected a text message, got \(events.elements[1])")
        }
        let ready = try JSONDecoder().decode(Envelope<SessionReady>.self, from: Data(text.utf8))
        XCTAssertEqual(ready.type, ServerEventType.sessionReady)
        XCTAssertEqual(ready.payload.userId, "alice")

        transport.close()
        try await waitUntil("the stream finishes after close") { events.isFinished }
        XCTAssertEqual(events.elements.last, .closed(code: nil, reason: ""))
    }

    func testTransportSendsTextToServer() async throws {
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        try await waitUntil("the connection opens") { events.elements.contains(.opened) }

        transport.send("{\"type\":\"hello\"}")
        transport.send("{\"type\":\"second\"}")

        try await waitUntil("the server receives both messages") {
            self.server.connections.first?.received.count == 2
        }
        XCTAssertEqual(server.connections.first?.received, ["{\"type\":\"hello\"}", "{\"type\":\"second\"}"])
        transport.close()
        try await waitUntil("the stream finishes") { events.isFinished }
    }

    func testTransportReportsRefusedConnection() async throws {
        let transport = LibWebSocketsTransport()
        let url = URL(string: "ws://127.0.0.1:\(unusedLocalPort())/v1/ws?userId=alice")!
        let events = Recorder(transport.connect(to: url, headers: [:]))

        try await waitUntil("the stream finishes") { events.isFinished }
        XCTAssertEqual(events.elements.count, 1)
        guard case .failed = events.elements.first else {
            return XCTFail("expected .failed, got \(events.elements)")
        }
    }

    func testTransportRejectsNonWebSocketURL() async throws {
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: URL(string: "ftp://127.0.0.1/")!, headers: [:]))

        try await waitUntil("the stream finishes") { events.isFinished }
        guard case .failed(let message) = events.elements.first else {
            return XCTFail("expected .failed, got \(events.elements)")
        }
        XCTAssertTrue(message.contains("ftp://127.0.0.1/"), message)
    }

    func testTransportReassemblesLargeMessage() async throws {
        server.setSendsSessionReady(false)
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        try await waitUntil("the connection opens") { events.elements.contains(.opened) }

        // 300 KB is far above both receive buffers, so it arrives in many parts.
        let large = "{\"data\":\"" + String(repeating: "0123456789", count: 30_000) + "\"}"
        server.broadcast(large)

        try await waitUntil("the large message arrives") { events.elements.count >= 2 }
        XCTAssertEqual(events.elements.count, 2)
        XCTAssertEqual(events.elements[1], .text(large))
        transport.close()
        try await waitUntil("the stream finishes") { events.isFinished }
    }

    func testTransportReassemblesFragmentedMessage() async throws {
        server.setSendsSessionReady(false)
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        try await waitUntil("the connection opens") { events.elements.contains(.opened) }

        server.broadcastFragments(["{\"type\":", "\"user.presence\",\"payload\":", "{\"userId\":\"bob\"}}"])
        server.broadcast("after")

        try await waitUntil("both messages arrive") { events.elements.count >= 3 }
        XCTAssertEqual(events.elements[1], .text("{\"type\":\"user.presence\",\"payload\":{\"userId\":\"bob\"}}"))
        XCTAssertEqual(events.elements[2], .text("after"))
        transport.close()
        try await waitUntil("the stream finishes") { events.isFinished }
    }

    func testTransportReportsServerCloseCode() async throws {
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        try await waitUntil("the connection opens") { events.elements.contains(.opened) }

        server.closeAll()

        try await waitUntil("the stream finishes") { events.isFinished }
        XCTAssertEqual(events.elements.last, .closed(code: 1001, reason: ""))
    }

    func testTransportCloseBeforeOpenFinishes() async throws {
        let transport = LibWebSocketsTransport()
        let events = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        transport.close()

        try await waitUntil("the stream finishes") { events.isFinished }
        guard case .closed = events.elements.last else {
            return XCTFail("expected .closed last, got \(events.elements)")
        }
    }

    func testTransportSecondConnectFails() async throws {
        let transport = LibWebSocketsTransport()
        let first = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))
        let second = Recorder(transport.connect(to: server.url(userId: "alice"), headers: [:]))

        try await waitUntil("the second stream finishes") { second.isFinished }
        guard case .failed = second.elements.first else {
            return XCTFail("expected .failed, got \(second.elements)")
        }
        transport.close()
        try await waitUntil("the first stream finishes") { first.isFinished }
    }
}
