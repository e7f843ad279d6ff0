#if canImport(CWebSockets)
import CLibUV
import CWebSockets
import Foundation

/// A `WebSocketTransport` on libwebsockets, for Linux.
///
/// Each transport runs its own libuv loop on its own thread, with a
/// libwebsockets context on that loop (`LWS_SERVER_OPTION_LIBUV` with the loop
/// as a foreign loop). Other threads never touch libwebsockets: `send` and
/// `close` queue a command and wake the loop with `uv_async_send`, and the
/// loop thread writes from `LWS_CALLBACK_CLIENT_WRITEABLE`.
public final class LibWebSocketsTransport: WebSocketTransport, @unchecked Sendable {
    /// Limits and timeouts of one connection.
    public struct Options: Sendable {
        /// Largest message accepted, in bytes. A larger one closes the
        /// connection with code 1009. Default 16 MiB.
        public var maxMessageBytes: Int = 16 << 20
        /// Seconds allowed for TCP connect plus the opening handshake. Default 10.
        public var connectTimeoutSeconds: UInt32 = 10
        /// Seconds without traffic before the client sends a ping, so a
        /// silent dead peer is noticed. 0 disables pings. Default 20.
        public var pingIdleSeconds: UInt16 = 20
        /// Seconds without traffic, pongs included, before the client drops
        /// the connection. Must exceed `pingIdleSeconds`. Default 30.
        public var hangupIdleSeconds: UInt16 = 30

        public init() {}
    }

    private enum Command {
        case send([UInt8])
        case close
    }

    /// State shared between callers and the loop thread.
    private struct Shared {
        var commands: [Command] = []
        /// Non-nil while the loop accepts commands; `uv_async_send` on a
        /// closed handle is undefined behaviour, so it is cleared before closing.
        var wakeHandle: UnsafeMutablePointer<uv_async_t>?
        var connectCalled = false
        var closeRequestedEarly = false
    }

    public let options: Options
    private let shared = Locked(Shared())

    // Everything below belongs to the loop thread once `connect` started it.
    private var continuation: AsyncStream<WebSocketEvent>.Continuation?
    private var loop: UnsafeMutablePointer<uv_loop_t>?
    private var context: OpaquePointer?
    private var wsi: OpaquePointer?
    private var established = false
    private var closing = false
    private var finished = false
    private var teardownPending = false
    private var tornDown = false
    private var outgoing: [[UInt8]] = []
    private var outgoingHead = 0
    private var writeBuffer: [UInt8] = []
    private var incoming: [UInt8] = []
    private var incomingIsBinary = false
    private var peerCloseCode: Int?
    private var peerCloseReason = ""
    private var handshakeHeaders: [(name: String, value: String)] = []
    /// C memory handed to libwebsockets, which must outlive the context.
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var foreignLoops: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
    private var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?

    public init(options: Options = Options()) {
        self.options = options
    }

    /// Limits libwebsockets' own log lines on stderr to errors and warnings.
    /// The setting is process-wide and by default lws also logs notices, such
    /// as its version, each time a transport creates its context.
    public static func logOnlyLibraryErrorsAndWarnings() {
        lws_set_log_level(LLL_ERR | LLL_WARN, nil)
    }

    public func connect(to url: URL, headers: [String: String]) -> AsyncStream<WebSocketEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: WebSocketEvent.self)
        let alreadyCalled = shared.withLock { state -> Bool in
            defer { state.connectCalled = true }
            return state.connectCalled
        }
        if alreadyCalled {
            continuation.yield(.failed("connect was already called on this transport; create a new one per connection"))
            continuation.finish()
            return stream
        }
        guard let target = Target(url: url) else {
            continuation.yield(.failed("invalid WebSocket URL \(url.absoluteString): expected ws://HOST[:PORT]/PATH"))
            continuation.finish()
            return stream
        }
        self.continuation = continuation
        self.handshakeHeaders = headers.sorted { $0.key < $1.key }.map { (name: $0.key, value: $0.value) }

        // The thread keeps the transport alive until the loop has closed.
        let retained = Unmanaged.passRetained(self)
        let thread = Thread {
            retained.takeUnretainedValue().runLoopThread(target)
            retained.release()
        }
        thread.name = "presence-websocket"
        thread.start()
        return stream
    }

    public func send(_ text: String) {
        enqueue(.send(Array(text.utf8)))
    }

    public func close() {
        enqueue(.close)
    }

    private func enqueue(_ command: Command) {
        shared.withLock { state in
            guard let wake = state.wakeHandle else {
                // Before the loop runs, a close is remembered; sends are dropped
                // because nothing can be sent before `.opened` anyway.
                if case .close = command { state.closeRequestedEarly = true }
                return
            }
            state.commands.append(command)
            uv_async_send(wake)
        }
    }

    // MARK: - Loop thread

    /// Host, port and request path of a `ws://` URL.
    private struct Target {
        var host: String
        var port: Int32
        var path: String
        var useTLS: Bool

        init?(url: URL) {
            guard let components = URLComponents(url: url, resolvingAgainstBaseURL: false),
                let scheme = components.scheme?.lowercased(), scheme == "ws" || scheme == "wss",
                let host = components.host, !host.isEmpty
            else { return nil }
            self.host = host
            self.useTLS = scheme == "wss"
            self.port = Int32(components.port ?? (useTLS ? 443 : 80))
            var path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
            if let query = components.percentEncodedQuery { path += "?" + query }
            self.path = path
        }

        /// The Host header value: the port is left out when it is the scheme's default.
        var hostHeader: String {
            let defaultPort: Int32 = useTLS ? 443 : 80
            let bracketed = host.contains(":") ? "[\(host)]" : host
            return port == defaultPort ? bracketed : "\(bracketed):\(port)"
        }
    }

    private func runLoopThread(_ target: Target) {
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        self.loop = loop
        uv_loop_init(loop)

        let wake = UnsafeMutablePointer<uv_async_t>.allocate(capacity: 1)
        uv_async_init(loop, wake) { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<LibWebSocketsTransport>.fromOpaque(data).takeUnretainedValue().processCommands()
        }
        wake.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let closedEarly = shared.withLock { state -> Bool in
            state.wakeHandle = wake
            return state.closeRequestedEarly
        }

        if closedEarly {
            finish(.closed(code: nil, reason: "closed before connecting"))
            teardown()
        } else if createContext() {
            openConnection(target)
        } else {
            teardown()
        }

        uv_run(loop, UV_RUN_DEFAULT)
        closeLoop(loop)
        loop.deallocate()
        self.loop = nil
        releaseCMemory()
        finish(.closed(code: nil, reason: "event loop stopped"))
    }

    private func createContext() -> Bool {
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = UnsafePointer(duplicate("presence"))
        protocols[0].callback = libWebSocketsCallback
        self.protocols = protocols

        let foreignLoops = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        foreignLoops.initialize(to: UnsafeMutableRawPointer(loop))
        self.foreignLoops = foreignLoops

        var info = lws_context_creation_info()
        info.port = CONTEXT_PORT_NO_LISTEN
        info.protocols = UnsafePointer(protocols)
        info.options = UInt64(LWS_SERVER_OPTION_LIBUV)
        info.foreign_loops = foreignLoops
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.timeout_secs = options.connectTimeoutSeconds
        info.connect_timeout_secs = options.connectTimeoutSeconds

        guard let context = lws_create_context(&info) else {
            finish(.failed(
                "lws_create_context failed: the libuv event library plugin of libwebsockets could not be loaded; "
                    + "install the libwebsockets-evlib-uv package"))
            return false
        }
        self.context = context
        return true
    }

    private func openConnection(_ target: Target) {
        var info = lws_client_connect_info()
        info.context = context
        info.address = UnsafePointer(duplicate(target.host))
        info.port = target.port
        info.path = UnsafePointer(duplicate(target.path))
        info.host = UnsafePointer(duplicate(target.hostHeader))
        info.origin = UnsafePointer(duplicate(target.hostHeader))
        info.ietf_version_or_minus_one = -1
        if target.useTLS {
            info.ssl_connection = Int32(LCCSCF_USE_SSL.rawValue)
        }
        if options.pingIdleSeconds > 0 {
            let policy = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
            policy.initialize(to: lws_retry_bo_t())
            policy.pointee.secs_since_valid_ping = options.pingIdleSeconds
            policy.pointee.secs_since_valid_hangup = max(options.hangupIdleSeconds, options.pingIdleSeconds + 1)
            retryPolicy = policy
            info.retry_and_idle_policy = UnsafePointer(policy)
        }
        withUnsafeMutablePointer(to: &wsi) { wsiSlot in
            info.pwsi = wsiSlot
            if lws_client_connect_via_info(&info) == nil {
                wsiSlot.pointee = nil
                finish(.failed("could not start connecting to \(target.hostHeader)"))
                scheduleTeardown()
            }
        }
    }

    /// Runs the commands queued by other threads; called by the wake handle.
    private func processCommands() {
        let commands = shared.withLock { state -> [Command] in
            defer { state.commands.removeAll() }
            return state.commands
        }
        for command in commands {
            switch command {
            case .send(let bytes):
                guard established, !closing, let wsi else { continue }
                outgoing.append(bytes)
                lws_callback_on_writable(wsi)
            case .close:
                requestClose(status: LWS_CLOSE_STATUS_NORMAL)
            }
        }
        if teardownPending {
            teardown()
        }
    }

    private func requestClose(status: lws_close_status) {
        guard !closing else { return }
        closing = true
        if established, let wsi {
            startClosingHandshake(wsi, status: status)
        } else {
            finish(.closed(code: nil, reason: "closed before the handshake completed"))
            scheduleTeardown()
        }
    }

    fileprivate func handle(
        wsi: OpaquePointer?, reason: lws_callback_reasons, input: UnsafeMutableRawPointer?, length: Int
    ) -> Int32 {
        switch reason {
        case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
            return appendHandshakeHeaders(wsi: wsi, input: input, length: length)

        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            established = true
            self.wsi = wsi
            yield(.opened)

        case LWS_CALLBACK_CLIENT_RECEIVE:
            return receive(wsi: wsi, input: input, length: length)

        case LWS_CALLBACK_CLIENT_WRITEABLE:
            return writeNext(wsi: wsi)

        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            recordPeerClose(input: input, length: length)

        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let message = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "unknown error"
            self.wsi = nil
            finish(.failed(message))
            scheduleTeardown()

        case LWS_CALLBACK_CLIENT_CLOSED:
            self.wsi = nil
            finish(.closed(code: peerCloseCode, reason: peerCloseReason))
            scheduleTeardown()

        default:
            break
        }
        return 0
    }

    private func appendHandshakeHeaders(wsi: OpaquePointer?, input: UnsafeMutableRawPointer?, length: Int) -> Int32 {
        guard let input, !handshakeHeaders.isEmpty else { return 0 }
        // `input` points at lws's write cursor into the request buffer and
        // `length` is the space left after it.
        let cursor = input.assumingMemoryBound(to: UnsafeMutablePointer<UInt8>?.self)
        guard let start = cursor.pointee else { return 0 }
        let end = start + length
        for header in handshakeHeaders {
            let name = Array((header.name.lowercased() + ":").utf8) + [0]
            let value = Array(header.value.utf8)
            let result = value.withUnsafeBufferPointer { valueBytes in
                lws_add_http_header_by_name(wsi, name, valueBytes.baseAddress, Int32(valueBytes.count), cursor, end)
            }
            if result != 0 {
                finish(.failed("HTTP header \(header.name) does not fit in the handshake request"))
                return -1
            }
        }
        return 0
    }

    private func receive(wsi: OpaquePointer?, input: UnsafeMutableRawPointer?, length: Int) -> Int32 {
        if incoming.isEmpty {
            incomingIsBinary = lws_frame_is_binary(wsi) != 0
        }
        if incoming.count + length > options.maxMessageBytes {
            incoming.removeAll()
            finish(.failed("received a message larger than the maximum of \(options.maxMessageBytes) bytes"))
            lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, nil, 0)
            return -1
        }
        if let input, length > 0 {
            incoming.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length))
        }
        // A message is complete only at the end of its final fragment; lws
        // may also split one frame over several callbacks.
        guard lws_is_final_fragment(wsi) != 0, lws_remaining_packet_payload(wsi) == 0 else { return 0 }

        let message = incoming
        incoming.removeAll(keepingCapacity: incoming.count <= 64 << 10)
        // NOTE: binary messages are not part of the client protocol and are dropped.
        guard !incomingIsBinary else { return 0 }
        guard let text = String(validating: message, as: UTF8.self) else {
            finish(.failed("received a text message that is not valid UTF-8"))
            lws_close_reason(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, nil, 0)
            return -1
        }
        yield(.text(text))
        return 0
    }

    /// Sends a close frame with `status` and closes once the peer replies with its own or
    /// lws's close timeout passes. Must run outside lws callbacks. Checked
    /// with lws 4.1.6: returning -1 from the writeable callback marks the
    /// socket unusable and sends no close frame, and `LWS_TO_KILL_ASYNC` set
    /// from a libuv callback did not fire within 5 s, so the close is a
    /// synchronous kill.
    private func startClosingHandshake(_ wsi: OpaquePointer, status: lws_close_status) {
        lws_close_reason(wsi, status, nil, 0)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC)
    }

    private func writeNext(wsi: OpaquePointer?) -> Int32 {
        guard !closing else { return 0 }
        guard outgoingHead < outgoing.count else { return 0 }
        let payload = outgoing[outgoingHead]
        outgoingHead += 1
        if outgoingHead == outgoing.count {
            outgoing.removeAll(keepingCapacity: true)
            outgoingHead = 0
        }

        // lws writes the frame header into the LWS_PRE bytes in front of the payload.
        let headroom = pm_lws_pre()
        writeBuffer.removeAll(keepingCapacity: true)
        writeBuffer.append(contentsOf: repeatElement(0, count: headroom))
        writeBuffer.append(contentsOf: payload)
        let written = writeBuffer.withUnsafeMutableBufferPointer { buffer in
            lws_write(wsi, buffer.baseAddress! + headroom, payload.count, LWS_WRITE_TEXT)
        }
        if written < payload.count {
            finish(.failed("writing a message of \(payload.count) bytes failed"))
            return -1
        }
        if outgoingHead < outgoing.count {
            lws_callback_on_writable(wsi)
        }
        return 0
    }

    private func recordPeerClose(input: UnsafeMutableRawPointer?, length: Int) {
        guard let input, length >= 2 else { return }
        let bytes = UnsafeRawBufferPointer(start: input, count: length)
        peerCloseCode = Int(bytes[0]) << 8 | Int(bytes[1])
        peerCloseReason = String(decoding: bytes.dropFirst(2), as: UTF8.self)
    }

    private func yield(_ event: WebSocketEvent) {
        guard !finished else { return }
        continuation?.yield(event)
    }

    /// Delivers the last event of the connection and ends the stream.
    private func finish(_ event: WebSocketEvent) {
        guard !finished else { return }
        finished = true
        continuation?.yield(event)
        continuation?.finish()
        continuation = nil
    }

    /// Tears down on the next loop iteration, because lws must not destroy
    /// its context from inside its own callback.
    private func scheduleTeardown() {
        teardownPending = true
        shared.withLock { state in
            if let wake = state.wakeHandle { uv_async_send(wake) }
        }
    }

    /// Destroys the context and closes the wake handle, after which `uv_run` returns.
    private func teardown() {
        guard !tornDown else { return }
        tornDown = true
        if let context {
            self.context = nil
            lws_context_destroy(context)
        }
        let wake = shared.withLock { state -> UnsafeMutablePointer<uv_async_t>? in
            defer { state.wakeHandle = nil }
            return state.wakeHandle
        }
        if let wake {
            wake.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { handle in
                uv_close(handle) { closed in
                    closed?.withMemoryRebound(to: uv_async_t.self, capacity: 1) { $0.deallocate() }
                }
            }
        }
    }

    /// Closes the loop, first closing any handle still open so `uv_loop_close` succeeds.
    private func closeLoop(_ loop: UnsafeMutablePointer<uv_loop_t>) {
        if uv_loop_close(loop) == 0 { return }
        uv_walk(loop, { handle, _ in
            if let handle, uv_is_closing(handle) == 0 { uv_close(handle, nil) }
        }, nil)
        uv_run(loop, UV_RUN_DEFAULT)
        uv_loop_close(loop)
    }

    private func duplicate(_ text: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(text)!
        cStrings.append(copy)
        return copy
    }

    private func releaseCMemory() {
        cStrings.forEach { free($0) }
        cStrings.removeAll()
        protocols?.deallocate()
        protocols = nil
        foreignLoops?.deallocate()
        foreignLoops = nil
        retryPolicy?.deallocate()
        retryPolicy = nil
    }
}

/// The protocol callback of every transport's context; the context's user
/// pointer is the transport.
private func libWebSocketsCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ length: Int
) -> Int32 {
    guard let wsi, let context = lws_get_context(wsi), let user = lws_context_user(context) else {
        return lws_callback_http_dummy(wsi, reason, nil, input, length)
    }
    let transport = Unmanaged<LibWebSocketsTransport>.fromOpaque(user).takeUnretainedValue()
    let result = transport.handle(wsi: wsi, reason: reason, input: input, length: length)
    if result != 0 { return result }
    return lws_callback_http_dummy(wsi, reason, nil, input, length)
}
#endif
