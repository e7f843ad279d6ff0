import Foundation
import Observation
import PresenceClient
import PresenceProtocol
import XCTest

final class PresenceConnectionTests: XCTestCase {
    private var server: TestWebSocketServer!

    override func setUpWithError() throws {
        server = TestWebSocketServer()
        try server.start()
    }

    override func tearDownWithError() throws {
        try server.stop()
    }

    func testConnectionReceivesSessionReady() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()

        try await waitUntil("session.ready arrives") { events.elements.contains { $0.isSessionReady } }
        XCTAssertEqual(
            events.elements.first,
            .sessionReady(SessionReady(sessionId: "session-1", userId: "alice", node: "test-node")))
        guard case .connected = await connection.state else {
            return XCTFail("expected .connected, got \(await connection.state)")
        }

        await connection.stop()
        try await waitUntil("the event stream finishes") { events.isFinished }
    }

    @MainActor
    func testSubscribeAppliesSnapshotToStore() async throws {
        server.setUser(UserPresence(userId: "bob", status: .online))
        server.setUser(UserPresence(userId: "carol", status: .offline, lastSeen: "2026-01-02T03:04:05Z"))
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let store = PresenceStore()
        store.follow(connection)
        await connection.subscribe(userIds: ["bob", "carol"])
        await connection.start()

        try await waitUntil("the snapshot reaches the store") { store.entries.count == 2 }
        XCTAssertEqual(store["bob"]?.status, .online)
        XCTAssertEqual(store["carol"]?.status, .offline)
        XCTAssertEqual(store["carol"]?.lastSeen, Date(timeIntervalSince1970: 1_767_323_045))
        XCTAssertTrue(store.isConnected)
        XCTAssertEqual(store.session?.userId, "alice")

        let request = try XCTUnwrap(server.connections.first?.received.first)
        let decoded = try JSONDecoder().decode(Envelope<UserSelectionPayload>.self, from: Data(request.utf8))
        XCTAssertEqual(decoded.type, ClientRequestType.subscribe)
        XCTAssertEqual(decoded.payload.userIds, .users(["bob", "carol"]))
        await connection.stop()
    }

    @MainActor
    func testPresenceEventsUpdateStoreInOrder() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let store = PresenceStore()
        store.follow(connection)
        let events = Recorder(connection.events())
        await connection.subscribe(userIds: ["bob"])
        await connection.start()
        try await waitUntil("the snapshot arrives") { events.elements.contains { $0.isSnapshot } }

        let sequence = [
            UserPresence(userId: "bob", status: .online),
            UserPresence(userId: "bob", status: .offline, lastSeen: "2026-01-02T03:04:05.250Z"),
            UserPresence(userId: "bob", status: .online, custom: CustomStatus(status: "away", text: "lunch")),
            UserPresence(userId: "bob", status: .offline, lastSeen: "2026-01-02T04:00:00Z"),
        ]
        for presence in sequence {
            server.broadcast(presenceEventJSON(presence))
        }

        try await waitUntil("all four events arrive") {
            events.elements.filter { if case .presence = $0 { true } else { false } }.count == 4
        }
        let received = events.elements.compactMap { event -> UserPresence? in
            if case .presence(let presence) = event { return presence }
            return nil
        }
        XCTAssertEqual(received, sequence)
        try await waitUntil("the store applied every event") { store.appliedEventCount == events.elements.count }
        XCTAssertEqual(store["bob"]?.status, .offline)
        XCTAssertEqual(store["bob"]?.lastSeen, Date(timeIntervalSince1970: 1_767_326_400))
        XCTAssertNil(store["bob"]?.custom)
        await connection.stop()
    }

    @MainActor
    func testStoreKeepsCustomStatusAndFractionalLastSeen() {
        let store = PresenceStore()
        store.apply(.presence(UserPresence(userId: "bob", status: .offline, lastSeen: "2026-01-02T03:04:05.250Z")))
        XCTAssertEqual(store["bob"]?.lastSeen, Date(timeIntervalSince1970: 1_767_323_045.25))

        store.apply(.presence(UserPresence(userId: "bob", status: .online, custom: CustomStatus(status: "busy"))))
        XCTAssertEqual(store["bob"]?.custom, CustomStatus(status: "busy"))
        XCTAssertTrue(store["bob"]?.isOnline ?? false)
    }

    @MainActor
    func testSnapshotOfAllUsersMarksMissingUsersOffline() {
        let store = PresenceStore()
        store.apply(.presence(UserPresence(userId: "bob", status: .online)))
        store.apply(.presence(UserPresence(userId: "carol", status: .online)))

        store.apply(.snapshot(PresenceSnapshot(users: [UserPresence(userId: "carol", status: .online)]), selection: .all))

        XCTAssertEqual(store["bob"]?.status, .offline)
        XCTAssertEqual(store["carol"]?.status, .online)
    }

    @MainActor
    func testSnapshotOfListedUsersKeepsOthers() {
        let store = PresenceStore()
        store.apply(.presence(UserPresence(userId: "bob", status: .online)))

        store.apply(.snapshot(PresenceSnapshot(users: [UserPresence(userId: "carol", status: .online)]),
                              selection: .users(["carol"])))

        XCTAssertEqual(store["bob"]?.status, .online)
        XCTAssertEqual(store["carol"]?.status, .online)
    }

    func testReconnectResubscribesAfterServerClose() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.subscribe(userIds: ["bob", "carol"])
        await connection.subscribeToAll()
        await connection.start()
        try await waitUntil("the first connection's snapshots arrive") {
            events.elements.filter(\.isSnapshot).count == 2
        }

        server.closeAll()

        try await waitUntil("the second connection subscribes again") {
            self.server.connections.count == 2 && self.server.connections[1].received.count == 2
        }
        XCTAssertFalse(server.connections[0].isOpen)
        let selections = try server.connections[1].received.map {
            try JSONDecoder().decode(Envelope<UserSelectionPayload>.self, from: Data($0.utf8))
        }
        XCTAssertEqual(selections.map(\.type), [ClientRequestType.subscribe, ClientRequestType.subscribe])
        XCTAssertEqual(selections.map(\.payload.userIds), [.all, .users(["bob", "carol"])])

        try await waitUntil("the second session is ready") { events.elements.filter(\.isSessionReady).count == 2 }
        let disconnects = events.elements.filter(\.isDisconnected)
        XCTAssertEqual(disconnects.count, 1)
        if case .disconnected(let reason) = disconnects.first {
            XCTAssertTrue(reason.contains("1001"), reason)
        }
        await connection.stop()
    }

    func testReconnectMovesToNextURL() async throws {
        let refused = URL(string: "ws://127.0.0.1:\(unusedLocalPort())/v1/ws?userId=alice")!
        let connection = PresenceConnection(
            urls: [refused, server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()

        try await waitUntil("the second URL's session is ready") { events.elements.contains { $0.isSessionReady } }
        XCTAssertTrue(events.elements.first?.isDisconnected ?? false, "\(events.elements)")
        XCTAssertEqual(server.connections.count, 1)
        await connection.stop()
    }

    func testUnsubscribeIsNotResent() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        await connection.subscribe(userIds: ["bob", "carol"])
        await connection.unsubscribe(.users(["bob"]))
        let subscribed = await connection.subscribedUsers
        XCTAssertEqual(subscribed, ["carol"])
        await connection.start()

        try await waitUntil("the subscription is sent") { self.server.connections.first?.received.count == 1 }
        let request = try JSONDecoder().decode(
            Envelope<UserSelectionPayload>.self, from: Data(server.connections[0].received[0].utf8))
        XCTAssertEqual(request.payload.userIds, .users(["carol"]))
        await connection.stop()
    }

    func testQueryReturnsSnapshot() async throws {
        server.setUser(UserPresence(userId: "bob", status: .online))
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()
        try await waitUntil("the session is ready") { events.elements.contains { $0.isSessionReady } }

        let snapshot = try await connection.query(userIds: ["bob", "dave"])

        XCTAssertEqual(snapshot.users, [
            UserPresence(userId: "bob", status: .online), UserPresence(userId: "dave", status: .offline),
        ])
        XCTAssertFalse(events.elements.contains { $0.isSnapshot }, "a query reply must not reach the event stream")
        await connection.stop()
    }

    func testQueryWhileDisconnectedThrows() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        do {
            _ = try await connection.query(userIds: ["bob"])
            XCTFail("query before start must throw")
        } catch let error as PresenceClientError {
            XCTAssertEqual(error, .notConnected)
        }
    }

    func testSetStatusSendsRequest() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()
        try await waitUntil("the session is ready") { events.elements.contains { $0.isSessionReady } }

        try await connection.setStatus("away", text: "lunch")

        try await waitUntil("the server receives the request") { self.server.connections[0].received.count == 1 }
        let request = try JSONDecoder().decode(
            Envelope<SetStatusPayload>.self, from: Data(server.connections[0].received[0].utf8))
        XCTAssertEqual(request.type, ClientRequestType.set)
        XCTAssertEqual(request.payload, SetStatusPayload(status: "away", text: "lunch"))
        await connection.stop()
    }

    func testMalformedMessageIsCountedAndSkipped() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()
        try await waitUntil("the session is ready") { events.elements.contains { $0.isSessionReady } }

        server.broadcast("{not json")
        server.broadcast("{\"type\":\"future.event\",\"payload\":{}}")
        server.broadcast(presenceEventJSON(UserPresence(userId: "bob", status: .online)))

        try await waitUntil("the valid event arrives") { events.elements.count == 2 }
        XCTAssertEqual(events.elements[1], .presence(UserPresence(userId: "bob", status: .online)))
        let malformed = await connection.malformedMessageCount
        XCTAssertEqual(malformed, 1)
        await connection.stop()
    }

    @MainActor
    func testObservationFiresOnPresenceChange() async throws {
        let store = PresenceStore()
        store.apply(.presence(UserPresence(userId: "bob", status: .offline)))
        let changed = Locked(false)

        withObservationTracking {
            _ = store["bob"]?.status
        } onChange: {
            changed.withLock { $0 = true }
        }
        XCTAssertFalse(changed.withLock { $0 })

        store.apply(.presence(UserPresence(userId: "bob", status: .online)))
        XCTAssertTrue(changed.withLock { $0 })
    }

    @MainActor
    func testObservationFiresWhenConnectionDeliversEvent() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let store = PresenceStore()
        store.follow(connection)
        await connection.subscribe(userIds: ["bob"])
        await connection.start()
        try await waitUntil("the snapshot reaches the store") { store["bob"] != nil }
        let changed = Locked(false)
        withObservationTracking {
            _ = store.entries
        } onChange: {
            changed.withLock { $0 = true }
        }

        server.broadcast(presenceEventJSON(UserPresence(userId: "bob", status: .online)))

        try await waitUntil("the observer is notified") { changed.withLock { $0 } }
        XCTAssertEqual(store["bob"]?.status, .online)
        await connection.stop()
    }

    func testStopFinishesStreamsAndIsFinal() async throws {
        let connection = PresenceConnection(urls: [server.url(userId: "alice")], configuration: fastConfiguration())
        let events = Recorder(connection.events())
        await connection.start()
        try await waitUntil("the session is ready") { events.elements.contains { $0.isSessionReady } }

        await connection.stop()

        try await waitUntil("the stream finishes") { events.isFinished }
        let late = Recorder(connection.events())
        try await waitUntil("a stream made after stop finishes at once") { late.isFinished }
        let state = await connection.state
        XCTAssertEqual(state, .stopped)
        try await waitUntil("the server sees the close") { self.server.connections.first?.isOpen == false }
    }
}

final class PresenceClientUnitTests: XCTestCase {
    func testBackoffCeilingDoublesUpToMaximum() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        let expected: [Duration] = [
            .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1),
        ]
        for (attempt, ceiling) in expected.enumerated() {
            XCTAssertEqual(backoff.delay(attempt: attempt, jitter: 1), ceiling, "attempt \(attempt)")
            XCTAssertEqual(backoff.delay(attempt: attempt, jitter: 0), ceiling / 2, "attempt \(attempt)")
        }
        XCTAssertEqual(backoff.delay(attempt: 1_000, jitter: 1), .seconds(1))
    }

    func testBackoffRandomDelayStaysInRange() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        for _ in 0..<100 {
            let delay = backoff.delay(attempt: 2)
            XCTAssertGreaterThanOrEqual(delay, .milliseconds(200))
            XCTAssertLessThanOrEqual(delay, .milliseconds(400))
        }
    }

    func testEndpointFromHTTPNode() throws {
        let url = try PresenceConnection.endpoint(node: "http://127.0.0.1:7101", userId: "alice")
        XCTAssertEqual(url.absoluteString, "ws://127.0.0.1:7101/v1/ws?userId=alice")
    }

    func testEndpointKeepsExplicitPath() throws {
        let url = try PresenceConnection.endpoint(node: "ws://127.0.0.1:7101/v1/ws?userId=old", userId: "bob")
        XCTAssertEqual(url.absoluteString, "ws://127.0.0.1:7101/v1/ws?userId=bob")
    }

    func testEndpointRejectsBadInput() {
        XCTAssertThrowsError(try PresenceConnection.endpoint(node: "ftp://127.0.0.1:7101", userId: "alice"))
        XCTAssertThrowsError(try PresenceConnection.endpoint(node: "127.0.0.1:7101", userId: "alice"))
        XCTAssertThrowsError(try PresenceConnection.endpoint(node: "ws://127.0.0.1:7101", userId: "a b"))
    }
}
