import CLibUV
import CWebSockets
import Foundation
import PresenceProtocol

/// A small WebSocket server on libwebsockets for testing the client. It
/// listens on 127.0.0.1 on a port the OS picks, sends `session.ready` to each
/// new connection, replies to subscribe and query requests with a snapshot of
/// `users`, records every message it receives, and sends scripted events on
/// request. Its libuv loop runs on its own thread.
final class TestWebSocketServer: @unchecked Sendable {
    struct Connection: Sendable {
        var number: Int
        var userId: String
        var received: [String] = []
        var isOpen = true
    }

    private enum Command {
        case broadcast([UInt8])
        case broadcastFragments([[UInt8]])
        case closeAll(lws_close_status)
        case stop
    }

    /// One queued frame. Its `flags` mark whether it starts, continues or ends a message.
    private struct Frame {
        var bytes: [UInt8]
        var flags: lws_write_protocol
    }

    private final class Session {
        let number: Int
        var frames: [Frame] = []
        init(number: Int) { self.number = number }
    }

    private struct Shared {
        var commands: [Command] = []
        var wakeHandle: UnsafeMutablePointer<uv_async_t>?
        var connections: [Connection] = []
        var users: [String: UserPresence] = [:]
        var sendsSessionReady = true
    }

    private let shared = Locked(Shared())
    private let started = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private var thread: Thread?

    // Loop thread only.
    private var loop: UnsafeMutablePointer<uv_loop_t>?
    private var context: OpaquePointer?
    private var sessions: [OpaquePointer: Session] = [:]
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var foreignLoops: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
    private var protocolName: UnsafeMutablePointer<CChar>?
    private var interfaceName: UnsafeMutablePointer<CChar>?
    private var listenPort: Int32 = 0
    private var startError: String?

    /// The port the server listens on, once `start` returned.
    private(set) var port = 0

    /// Returns the client endpoint for `userId`.
    func url(userId: String) -> URL {
        URL(string: "ws://127.0.0.1:\(port)/v1/ws?userId=\(userId)")!
    }

    /// Starts the loop thread and waits up to 5 s for the listener.
    func start() throws {
        let retained = Unmanaged.passRetained(self)
        let thread = Thread {
            retained.takeUnretainedValue().runLoopThread()
            retained.release()
        }
        thread.name = "test-websocket-server"
        self.thread = thread
        thread.start()
        guard started.wait(timeout: .now() + 5) == .success else {
            throw TestServerError("test server did not start within 5 s")
        }
        if let startError { throw TestServerError(startError) }
        port = Int(listenPort)
    }

    /// Stops the server and waits up to 5 s for its loop to close.
    func stop() throws {
        send(.stop)
        guard stopped.wait(timeout: .now() + 5) == .success else {
            throw TestServerError("test server did not stop within 5 s")
        }
    }

    var connections: [Connection] {
        shared.withLock { $0.connections }
    }

    /// Sets the presence the server reports for subscribe and query requests.
    func setUser(_ presence: UserPresence) {
        shared.withLock { $0.users[presence.userId] = presence }
    }

    func setSendsSessionReady(_ value: Bool) {
        shared.withLock { $0.sendsSessionReady = value }
    }

    /// Sends one text message to every open connection.
    func broadcast(_ text: String) {
        send(.broadcast(Array(text.utf8)))
    }

    /// Sends one text message to every open connection as one WebSocket
    /// message of several frames, one per part.
    func broadcastFragments(_ parts: [String]) {
        send(.broadcastFragments(parts.map { Array($0.utf8) }))
    }

    /// Closes every open connection with `status`.
    func closeAll(status: lws_close_status = LWS_CLOSE_STATUS_GOINGAWAY) {
        send(.closeAll(status))
    }

    private func send(_ command: Command) {
        shared.withLock { state in
            state.commands.append(command)
            if let wake = state.wakeHandle { uv_async_send(wake) }
        }
    }

    // MARK: - Loop thread

    private func runLoopThread() {
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        self.loop = loop
        uv_loop_init(loop)
        let wake = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
        uv_async_init(loop, wake) { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<TestWebSocketServer>.fromOpaque(data).takeUnretainedValue().processCommands()
        }
        wake.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        shared.withLock { $0.wakeHandle = wake }

        protocolName = strdup("presence")
        interfaceName = strdup("127.0.0.1")
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = UnsafePointer(protocolName)
        protocols[0].callback = testServerCallback
        // A small receive buffer, so larger messages arrive in several parts.
        protocols[0].rx_buffer_size = 1024
        self.protocols = protocols
        let foreignLoops = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        foreignLoops.initialize(to: UnsafeMutableRawPointer(loop))
        self.foreignLoops = foreignLoops

        var info = lws_context_creation_info()
        info.port = 0
        info.iface = UnsafePointer(interfaceName)
        info.protocols = UnsafePointer(protocols)
        info.options = UInt64(LWS_SERVER_OPTION_LIBUV)
        info.foreign_loops = foreignLoops
        info.user = Unmanaged.passUnretained(self).toOpaque()

        if let context = lws_create_context(&info) {
            self.context = context
            listenPort = lws_get_vhost_listen_port(lws_get_vhost_by_name(context, "default"))
            if listenPort <= 0 { startError = "test server has no listen port" }
        } else {
            startError = "lws_create_context failed; is libwebsockets-evlib-uv installed?"
        }
        started.signal()
        if startError != nil { shutdown() }

        uv_run(loop, UV_RUN_DEFAULT)
        if uv_loop_close(loop) != 0 {
            uv_walk(loop, { handle, _ in
                if let handle, uv_is_closing(handle) == 0 { uv_close(handle, nil) }
            }, nil)
            uv_run(loop, UV_RUN_DEFAULT)
            uv_loop_close(loop)
        }
        loop.deallocate()
        protocols.deallocate()
        foreignLoops.deallocate()
        free(protocolName)
        free(interfaceName)
        stopped.signal()
    }

    private func processCommands() {
        let commands = shared.withLock { state -> [Command] in
            defer { state.commands.removeAll() }
            return state.commands
        }
        for command in commands {
            switch command {
            case .broadcast(let bytes):
                for (wsi, session) in sessions {
                    session.frames.append(Frame(bytes: bytes, flags: LWS_WRITE_TEXT))
                    lws_callback_on_writable(wsi)
                }
            case .broadcastFragments(let parts):
                for (wsi, session) in sessions {
                    for (index, part) in parts.enumerated() {
                        let kind = index == 0 ? LWS_WRITE_TEXT.rawValue : LWS_WRITE_CONTINUATION.rawValue
                        let more = index == parts.count - 1 ? 0 : LWS_WRITE_NO_FIN.rawValue
                        session.frames.append(Frame(bytes: part, flags: lws_write_protocol(rawValue: kind | more)))
                    }
                    lws_callback_on_writable(wsi)
                }
            case .closeAll(let status):
                // In lws 4.1.6, returning -1 from a writeable callback skips
                // the close frame, so the close starts from outside any
                // callback with a synchronous kill, which sends it.
                for wsi in sessions.keys {
                    lws_close_reason(wsi, status, nil, 0)
                    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC)
                }
            case .stop:
                shutdown()
                return
            }
        }
    }

    private func shutdown() {
        if let context {
            self.context = nil
            lws_context_destroy(context)
        }
        sessions.removeAll()
        let wake = shared.withLock { state -> UnsafeMutablePointer<uv_async_t>? in
            defer { state.wakeHandle = nil }
            return state.wakeHandle
        }
        wake?.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { handle in
            uv_close(handle) { closed in
                closed?.withMemoryRebound(to: uv_async_t.self, capacity: 1) { $0.deallocate() }
            }
        }
    }

    fileprivate func handle(
        wsi: OpaquePointer, reason: lws_callback_reasons, input: UnsafeMutableRawPointer?, length: Int
    ) -> Int32 {
        switch reason {
        case LWS_CALLBACK_ESTABLISHED:
            var buffer = [CChar](repeating: 0, count: 256)
            let userId = lws_get_urlarg_by_name(wsi, "userId=", &buffer, Int32(buffer.count)).map {
                String(cString: $0)
            } ?? ""
            let (number, sendsReady) = shared.withLock { state -> (Int, Bool) in
                let number = state.connections.count + 1
                state.connections.append(Connection(number: number, userId: userId))
                return (number, state.sendsSessionReady)
            }
            let session = Session(number: number)
            sessions[wsi] = session
            if sendsReady {
                let ready = Envelope(
                    type: ServerEventType.sessionReady,
                    payload: SessionReady(sessionId: "session-\(number)", userId: userId, node: "test-node"))
                session.frames.append(Frame(bytes: Array(try! JSONEncoder().encode(ready)), flags: LWS_WRITE_TEXT))
                lws_callback_on_writable(wsi)
            }

        case LWS_CALLBACK_RECEIVE:
            guard let session = sessions[wsi], let input else { return 0 }
            // Client requests are small, so one callback carries one whole message.
            let text = String(decoding: UnsafeRawBufferPointer(start: input, count: length), as: UTF8.self)
            shared.withLock { $0.connections[session.number - 1].received.append(text) }
            for reply in replies(to: text) {
                session.frames.append(Frame(bytes: Array(reply.utf8), flags: LWS_WRITE_TEXT))
            }
            lws_callback_on_writable(wsi)

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let session = sessions[wsi] else { return 0 }
            guard !session.frames.isEmpty else { return 0 }
            let frame = session.frames.removeFirst()
            let headroom = pm_lws_pre()
            var buffer = [UInt8](repeating: 0, count: headroom) + frame.bytes
            let written = buffer.withUnsafeMutableBufferPointer {
                lws_write(wsi, $0.baseAddress! + headroom, frame.bytes.count, frame.flags)
            }
            if written < frame.bytes.count { return -1 }
            if !session.frames.isEmpty { lws_callback_on_writable(wsi) }

        case LWS_CALLBACK_CLOSED:
            if let session = sessions.removeValue(forKey: wsi) {
                shared.withLock { $0.connections[session.number - 1].isOpen = false }
            }

        default:
            break
        }
        return 0
    }

    /// Builds the snapshot replies to subscribe and query requests.
    private func replies(to text: String) -> [String] {
        guard let request = try? JSONDecoder().decode(Envelope<UserSelectionPayload>.self, from: Data(text.utf8)),
            request.type == ClientRequestType.subscribe || request.type == ClientRequestType.query
        else { return [] }
        let users = shared.withLock { state -> [UserPresence] in
            switch request.payload.userIds {
            case .all:
                return state.users.values.sorted { $0.userId < $1.userId }
            case .users(let ids):
                return ids.map { state.users[$0] ?? UserPresence(userId: $0, status: .offline) }
            }
        }
        let reply = Envelope(type: ServerEventType.snapshot, id: request.id, payload: PresenceSnapshot(users: users))
        return [String(decoding: try! JSONEncoder().encode(reply), as: UTF8.self)]
    }
}

struct TestServerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

private func testServerCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ length: Int
) -> Int32 {
    guard let wsi, let context = lws_get_context(wsi), let owner = lws_context_user(context) else {
        return lws_callback_http_dummy(wsi, reason, user, input, length)
    }
    let server = Unmanaged<TestWebSocketServer>.fromOpaque(owner).takeUnretainedValue()
    let result = server.handle(wsi: wsi, reason: reason, input: input, length: length)
    if result != 0 { return result }
    return lws_callback_http_dummy(wsi, reason, user, input, length)
}

/// A lock-guarded value for test helpers.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
