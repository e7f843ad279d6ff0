import Foundation
import PresenceProtocol

/// Errors of `PresenceConnection` requests.
public enum PresenceClientError: Error, Equatable, CustomStringConvertible {
    /// The request needs an open connection and there is none right now.
    case notConnected
    /// No reply arrived within the request timeout.
    case timedOut(requestId: String)
    /// The connection closed before the reply arrived.
    case disconnected(reason: String)
    /// The server replied with `error`.
    case server(ErrorPayload)
    /// The connection was stopped.
    case stopped
    /// A node URL or user ID is invalid.
    case invalidEndpoint(String)

    public var description: String {
        switch self {
        case .notConnected: return "not connected to any node"
        case .timedOut(let id): return "request \(id) timed out waiting for a reply"
        case .disconnected(let reason): return "connection lost before the reply arrived: \(reason)"
        case .server(let payload): return "server error \(payload.code): \(payload.message)"
        case .stopped: return "the connection was stopped"
        case .invalidEndpoint(let message): return message
        }
    }
}

/// One client session with a PresenceMesh cluster.
///
/// The connection has at most one WebSocket open. When it closes or cannot be
/// opened, the connection waits a jittered exponential backoff and tries the
/// next node URL in turn, and after each reconnection it sends the current
/// subscriptions again. Events of every connection arrive on `events()`.
public actor PresenceConnection {
    /// Settings of a connection.
    public struct Configuration: Sendable {
        /// Extra HTTP headers of the opening handshake, such as
        /// `Authorization: Bearer TOKEN`.
        public var headers: [String: String] = [:]
        /// Delays between connection attempts.
        public var backoff = Backoff()
        /// Time a `query` waits for its reply. Default 10 s.
        public var requestTimeout: Duration = .seconds(10)
        /// Creates the WebSocket of each attempt.
        public var makeTransport: WebSocketTransportFactory = PlatformWebSocket.makeTransport

        public init() {}
    }

    /// Connection state.
    public enum State: Sendable, Equatable {
        /// Created, `start` not called yet.
        case idle
        /// Opening a WebSocket to this URL.
        case connecting(URL)
        /// The WebSocket to this URL is open.
        case connected(URL)
        /// Waiting before attempt number `attempt` (from 0) after a failure.
        case waiting(attempt: Int, delay: Duration)
        /// `stop` was called; the connection does nothing more.
        case stopped
    }

    /// Node endpoints, tried in order and then again from the first.
    public nonisolated let urls: [URL]
    public let configuration: Configuration
    public private(set) var state: State = .idle
    /// Whether the connection keeps a subscription to every user.
    public private(set) var subscribedToAll = false
    /// Users subscribed one by one, in the order they were first subscribed.
    public private(set) var subscribedUsers: [String] = []
    /// Server messages that could not be decoded and were skipped.
    public private(set) var malformedMessageCount = 0

    private let hub = EventHub()
    private var runTask: Task<Void, Never>?
    private var transport: (any WebSocketTransport)?
    private var nextRequestNumber = 1
    /// Selections of subscribe requests on the current WebSocket, by request ID.
    private var pendingSubscriptions: [String: UserSelection] = [:]
    private var pendingQueries: [String: CheckedContinuation<PresenceSnapshot, any Error>] = [:]
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    /// Creates a connection to the given node endpoints
    /// (`ws://HOST:PORT/v1/ws?userId=ID`). Call `start` to connect.
    public init(urls: [URL], configuration: Configuration = Configuration()) {
        precondition(!urls.isEmpty, "PresenceConnection needs at least one node URL")
        self.urls = urls
        self.configuration = configuration
    }

    /// Builds the client endpoint of a node for a user in `auth.mode = "none"`.
    /// `node` is `ws://HOST:PORT` or `http://HOST:PORT`, optionally with the
    /// `/v1/ws` path; `http` becomes `ws` and `https` becomes `wss`. With
    /// `observe`, the session watches and queries without making the user online.
    public static func endpoint(node: String, userId: String, observe: Bool = false) throws -> URL {
        if let problem = UserIDRules.validationError(userId) {
            throw PresenceClientError.invalidEndpoint("invalid user ID \"\(userId)\": \(problem)")
        }
        guard var components = URLComponents(string: node), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else {
            throw PresenceClientError.invalidEndpoint("invalid node URL \"\(node)\": expected ws://HOST:PORT")
        }
        switch scheme {
        case "ws", "http": components.scheme = "ws"
        case "wss", "https": components.scheme = "wss"
        default:
            throw PresenceClientError.invalidEndpoint(
                "invalid node URL \"\(node)\": the scheme must be ws, wss, http or https")
        }
        if components.path.isEmpty || components.path == "/" {
            components.path = "/v1/ws"
        }
        var query = components.queryItems ?? []
        query.removeAll { $0.name == "userId" }
        query.append(URLQueryItem(name: "userId", value: userId))
        query.removeAll { $0.name == "observe" }
        if observe {
            query.append(URLQueryItem(name: "observe", value: "true"))
        }
        components.queryItems = query
        guard let url = components.url else {
            throw PresenceClientError.invalidEndpoint("invalid node URL \"\(node)\"")
        }
        return url
    }

    // MARK: - Events

    /// Returns a stream of the events that happen from now on. Every stream
    /// gets every event, in order, and finishes when the connection stops.
    public nonisolated func events() -> AsyncStream<PresenceEvent> {
        hub.makeStream()
    }

    // MARK: - Lifecycle

    /// Starts connecting; reconnects until `stop`. Calling it again does nothing.
    public func start() {
        guard case .idle = state else { return }
        runTask = Task { await self.run() }
    }

    /// Closes the WebSocket, stops reconnecting, fails waiting queries and
    /// finishes every event stream. The connection cannot be started again.
    public func stop() async {
        guard state != .stopped else { return }
        state = .stopped
        transport?.close()
        runTask?.cancel()
        await runTask?.value
        runTask = nil
        transport = nil
        failPendingRequests(PresenceClientError.stopped)
        hub.finish()
    }

    private func run() async {
        var attempt = 0
        var urlIndex = 0
        while !Task.isCancelled && state != .stopped {
            let url = urls[urlIndex % urls.count]
            urlIndex += 1
            let reason = await connectOnce(to: url, resetAttempts: { attempt = 0 })
            transport = nil
            pendingSubscriptions.removeAll()
            failPendingRequests(PresenceClientError.disconnected(reason: reason))
            guard !Task.isCancelled, state != .stopped else { break }
            hub.yield(.disconnected(reason: reason))

            let delay = configuration.backoff.delay(attempt: attempt)
            state = .waiting(attempt: attempt, delay: delay)
            attempt += 1
            try? await Task.sleep(for: delay)
        }
    }

    /// Runs one WebSocket from opening to close and returns why it ended.
    private func connectOnce(to url: URL, resetAttempts: () -> Void) async -> String {
        state = .connecting(url)
        let transport = configuration.makeTransport()
        self.transport = transport
        let stream = transport.connect(to: url, headers: configuration.headers)
        for await event in stream {
            switch event {
            case .opened:
                state = .connected(url)
                sendSubscriptions()
            case .text(let text):
                if receive(text) { resetAttempts() }
            case .closed(let code, let reason):
                let detail = reason.isEmpty ? "" : ": \(reason)"
                return "connection to \(url.absoluteString) closed" + (code.map { " with code \($0)" } ?? "") + detail
            case .failed(let message):
                return "connection to \(url.absoluteString) failed: \(message)"
            }
        }
        transport.close()
        return Task.isCancelled ? "stopped" : "connection to \(url.absoluteString) ended"
    }

    /// Routes one server message; returns true for `session.ready`.
    private func receive(_ text: String) -> Bool {
        let message: ServerMessage
        do {
            message = try ServerMessage.decode(text, decoder: decoder)
        } catch {
            malformedMessageCount += 1
            return false
        }
        switch message {
        case .sessionReady(let ready):
            hub.yield(.sessionReady(ready))
            return true
        case .presence(let presence):
            hub.yield(.presence(presence))
        case .snapshot(let snapshot, let requestId):
            if let requestId, let query = pendingQueries.removeValue(forKey: requestId) {
                query.resume(returning: snapshot)
            } else {
                let selection = requestId.flatMap { pendingSubscriptions.removeValue(forKey: $0) }
                hub.yield(.snapshot(snapshot, selection: selection))
            }
        case .error(let payload, let requestId):
            if let requestId, let query = pendingQueries.removeValue(forKey: requestId) {
                query.resume(throwing: PresenceClientError.server(payload))
            } else {
                if let requestId { pendingSubscriptions.removeValue(forKey: requestId) }
                hub.yield(.error(payload, requestId: requestId))
            }
        case .unknown:
            break
        }
        return false
    }

    // MARK: - Requests

    /// Subscribes to the given users, or to every user with `.all`. The
    /// subscription is remembered and sent again after every reconnection;
    /// while disconnected it is only remembered. The reply arrives as a
    /// `.snapshot` event.
    public func subscribe(_ selection: UserSelection) {
        switch selection {
        case .all:
            subscribedToAll = true
        case .users(let ids):
            for id in ids where !subscribedUsers.contains(id) {
                subscribedUsers.append(id)
            }
        }
        if case .connected = state {
            sendSubscribe(selection)
        }
    }

    /// Subscribes to the given users; see `subscribe(_:)`.
    public func subscribe(userIds: [String]) {
        subscribe(.users(userIds))
    }

    /// Subscribes to every user; see `subscribe(_:)`.
    public func subscribeToAll() {
        subscribe(.all)
    }

    /// Ends a subscription made with `subscribe`, here and, when connected, on the server.
    public func unsubscribe(_ selection: UserSelection) {
        switch selection {
        case .all:
            subscribedToAll = false
        case .users(let ids):
            subscribedUsers.removeAll { ids.contains($0) }
        }
        if case .connected = state {
            send(type: ClientRequestType.unsubscribe, payload: UserSelectionPayload(userIds: selection))
        }
    }

    /// Asks for the presence of the given users without subscribing.
    /// Throws `PresenceClientError` when not connected, on timeout, on a
    /// server `error` reply, or when the connection drops first.
    public func query(userIds: [String]) async throws -> PresenceSnapshot {
        guard case .connected = state else { throw PresenceClientError.notConnected }
        let id = send(type: ClientRequestType.query, payload: UserSelectionPayload(userIds: .users(userIds)))
        let timeout = configuration.requestTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.failRequest(id, PresenceClientError.timedOut(requestId: id))
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            pendingQueries[id] = continuation
        }
    }

    /// Sets this user's own custom status (`online`, `away` or `busy`) with
    /// an optional text, for all of the user's devices. Throws
    /// `PresenceClientError.notConnected` when there is no open connection,
    /// because a status sent later could overwrite a newer one set elsewhere.
    public func setStatus(_ status: String, text: String? = nil) throws {
        guard case .connected = state else { throw PresenceClientError.notConnected }
        send(type: ClientRequestType.set, payload: SetStatusPayload(status: status, text: text))
    }

    private func sendSubscriptions() {
        if subscribedToAll {
            sendSubscribe(.all)
        }
        if !subscribedUsers.isEmpty {
            sendSubscribe(.users(subscribedUsers))
        }
    }

    private func sendSubscribe(_ selection: UserSelection) {
        let id = send(type: ClientRequestType.subscribe, payload: UserSelectionPayload(userIds: selection))
        pendingSubscriptions[id] = selection
    }

    /// Encodes and sends one request; returns its request ID.
    @discardableResult
    private func send<Payload: Codable & Sendable>(type: String, payload: Payload) -> String {
        let id = "r\(nextRequestNumber)"
        nextRequestNumber += 1
        let envelope = Envelope(type: type, id: id, payload: payload)
        // JSONEncoder fails only on non-finite floats or invalid top-level
        // values, and these payloads contain neither.
        let data = try! encoder.encode(envelope)
        transport?.send(String(decoding: data, as: UTF8.self))
        return id
    }

    private func failRequest(_ id: String, _ error: any Error) {
        pendingQueries.removeValue(forKey: id)?.resume(throwing: error)
    }

    private func failPendingRequests(_ error: any Error) {
        let queries = pendingQueries
        pendingQueries.removeAll()
        for continuation in queries.values {
            continuation.resume(throwing: error)
        }
    }
}

/// Fans events out to every stream made by `events()`.
final class EventHub: Sendable {
    private struct Subscribers {
        var continuations: [Int: AsyncStream<PresenceEvent>.Continuation] = [:]
        var nextKey = 0
        var finished = false
    }

    private let subscribers = Locked(Subscribers())

    func makeStream() -> AsyncStream<PresenceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: PresenceEvent.self)
        let key = subscribers.withLock { state -> Int? in
            guard !state.finished else { return nil }
            let key = state.nextKey
            state.nextKey += 1
            state.continuations[key] = continuation
            return key
        }
        guard let key else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { _ = $0.continuations.removeValue(forKey: key) }
        }
        return stream
    }

    func yield(_ event: PresenceEvent) {
        // Yielding under the lock keeps the order identical across streams
        // even if two threads yield at once.
        subscribers.withLock { state in
            for continuation in state.continuations.values {
                continuation.yield(event)
            }
        }
    }

    func finish() {
        let continuations = subscribers.withLock { state in
            state.finished = true
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        continuations.forEach { $0.finish() }
    }
}
