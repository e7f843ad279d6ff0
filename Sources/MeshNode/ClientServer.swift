import CLibUV
import CWebSockets
import Foundation

/// One encoded server-to-client message with the `LWS_PRE` bytes libwebsockets needs in front.
/// A frame is encoded once and the same bytes are written to every session that gets it. The
/// unmasked WebSocket header of a server text frame is the same for every connection, so it is
/// written once into the reserved bytes, where lws would write it too.
final class OutgoingFrame {
    let storage: UnsafeMutableRawPointer
    let count: Int
    /// Header and payload, ready for the socket.
    let wire: UnsafeMutablePointer<UInt8>
    let wireCount: Int

    init(_ text: String) {
        var utf8 = Array(text.utf8)
        let length = utf8.count
        let pre = Int(pm_lws_pre())
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: pre + max(length, 1), alignment: 16)
        utf8.withUnsafeMutableBytes { bytes.advanced(by: pre).copyMemory(from: $0.baseAddress!, byteCount: length) }
        // RFC 6455 section 5.2: FIN and the text opcode, then a 7-bit, 16-bit or 64-bit length.
        var header: [UInt8] = [0x81]
        if length < 126 {
            header.append(UInt8(length))
        } else if length < 65_536 {
            header += [126, UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            header.append(127)
            header += (0..<8).reversed().map { UInt8((UInt64(length) >> (8 * UInt64($0))) & 0xFF) }
        }
        let start = bytes.advanced(by: pre - header.count).assumingMemoryBound(to: UInt8.self)
        start.update(from: header, count: header.count)
        storage = bytes
        count = length
        wire = start
        wireCount = header.count + length
    }

    var payload: UnsafeMutablePointer<UInt8> {
        storage.advanced(by: Int(pm_lws_pre())).assumingMemoryBound(to: UInt8.self)
    }

    deinit { storage.deallocate() }
}

/// A reply to a plain HTTP request.
struct HTTPResponse {
    var status: UInt32
    var contentType: String
    var body: [UInt8]

    static func json(_ text: String, status: UInt32 = 200) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: Array(text.utf8))
    }

    static func text(_ text: String, status: UInt32 = 200) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }
}

/// The identity a WebSocket upgrade was accepted with.
struct UpgradeGrant {
    var userID: String
    /// The session watches without making its user online.
    var isObserver: Bool
}

/// Why a WebSocket upgrade was rejected: sent as the HTTP status and body.
struct UpgradeRejection: Error {
    var status: UInt32
    var message: String
}

/// One open WebSocket client session.
final class ClientSession {
    let id: String
    let userID: String
    fileprivate let wsi: OpaquePointer
    /// The connection's socket, for direct writes.
    fileprivate let socket: Int32
    fileprivate var outbox: [OutgoingFrame] = []
    fileprivate var outboxHead = 0
    fileprivate var inbound: [UInt8] = []
    fileprivate var inboundOversize = false
    fileprivate var closeStatus: UInt16?
    fileprivate var writeFailed = false
    /// The server outlives every session: destroying the lws context closes all sessions first.
    /// `unowned(unsafe)` skips reference counting on the fan-out path.
    fileprivate unowned(unsafe) var server: ClientServer?
    /// Loop time (ms) of the last frame received from the client, pongs included.
    fileprivate(set) var lastActivity: UInt64 = 0
    /// A ping waits for the next writeable callback.
    fileprivate var pingDue = false
    fileprivate(set) var pingSent = false
    fileprivate(set) var isOpen = true
    /// Opened with `observe=true`: the session may watch and query but does not make its user online.
    let isObserver: Bool
    /// User IDs this session subscribed to, besides `"*"`.
    var subscriptions: Set<String> = []
    var subscribedToAll = false

    fileprivate init(id: String, userID: String, wsi: OpaquePointer, isObserver: Bool) {
        self.id = id
        self.isObserver = isObserver
        self.userID = userID
        self.wsi = wsi
        socket = Int32(lws_get_socket_fd(wsi))
    }

    var queuedFrames: Int { outbox.count - outboxHead }

    /// Sends a frame, in the order frames were sent. When nothing is queued and lws has no
    /// unsent bytes, the frame goes straight to the socket. That skips a poll round trip and the
    /// lws write path per delivery. If the socket takes only part of it, lws gets the rest and
    /// sends it before any later write or writeable callback. Otherwise the frame waits in the
    /// queue for the next writeable callback.
    func send(_ frame: OutgoingFrame) {
        guard isOpen, closeStatus == nil, !writeFailed else { return }
        let partiallyWritten = lws_partial_buffered(wsi) != 0
        if partiallyWritten { server?.framesBehindPartialWrites += 1 }
        if outboxHead == outbox.count, !pingDue, server?.isInCallback(for: wsi) == false, !partiallyWritten {
            server?.directWrites += 1
            let sent = Glibc.send(socket, frame.wire, frame.wireCount, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if sent == frame.wireCount { return }
            if sent < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
                // The connection is closing; lws reports it with LWS_CALLBACK_CLOSED.
                writeFailed = true
                return
            }
            let done = max(sent, 0)
            server?.truncatedDirectWrites += 1
            // LWS_WRITE_HTTP makes lws send the bytes as they are, with no WebSocket framing.
            if lws_write(wsi, frame.wire + done, frame.wireCount - done, LWS_WRITE_HTTP) < 0 {
                writeFailed = true
            }
            return
        }
        outbox.append(frame)
        if outbox.count - outboxHead == 1 {
            lws_callback_on_writable(wsi)
        }
    }

    /// Closes the session at once with a WebSocket close status, dropping queued frames. Call it
    /// from outside lws callbacks only: libwebsockets 4.1 sends the close frame on this path,
    /// while a writeable callback that returns -1 after `lws_close_reason` drops the TCP
    /// connection without one.
    func closeNow(status: UInt16, reason: String) {
        guard isOpen else { return }
        closeStatus = status
        var bytes = Array(reason.utf8.prefix(120))
        lws_close_reason(wsi, lws_close_status(rawValue: UInt32(status)), &bytes, bytes.count)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC)
    }

    fileprivate func popFrame() -> OutgoingFrame? {
        guard outboxHead < outbox.count else { return nil }
        let frame = outbox[outboxHead]
        outboxHead += 1
        if outboxHead == outbox.count {
            outbox.removeAll(keepingCapacity: outbox.capacity <= 64)
            outboxHead = 0
        } else if outboxHead > 1024 && outboxHead * 2 > outbox.count {
            outbox.removeFirst(outboxHead)
            outboxHead = 0
        }
        return frame
    }
}

/// Receives what happens on the client port.
protocol ClientServerDelegate: AnyObject {
    /// Returns the response to a plain HTTP GET; `authorization` is the request's Authorization header.
    func respond(path: String, query: [String: String], authorization: String?) -> HTTPResponse
    /// Decides whether a WebSocket upgrade may proceed, and for which user.
    func authorizeUpgrade(path: String, query: [String: String], authorization: String?) -> Result<UpgradeGrant, UpgradeRejection>
    func sessionOpened(_ session: ClientSession)
    func sessionReceived(_ session: ClientSession, message: [UInt8])
    /// Reports a client message that was discarded because it was binary or over the size limit.
    func sessionRejectedMessage(_ session: ClientSession, reason: String)
    func sessionClosed(_ session: ClientSession)
}

/// The WebSocket and HTTP server of a node: libwebsockets running on the node's libuv loop.
final class ClientServer {
    private var context: OpaquePointer?
    private let protocols: UnsafeMutablePointer<lws_protocols>
    private let foreignLoops: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let interface: UnsafeMutablePointer<CChar>
    private let protocolName: UnsafeMutablePointer<CChar>
    private let retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>
    private let logger: Logger
    private let loop: UnsafeMutablePointer<uv_loop_t>
    weak var delegate: ClientServerDelegate?
    let maxMessageBytes: Int
    private var nextSessionNumber: UInt64 = 0
    private let sessionPrefix: String
    /// Open sessions by ID.
    private(set) var sessions: [String: ClientSession] = [:]
    private(set) var port: UInt16 = 0
    /// The connection whose lws callback is running, if any. A session is never written to
    /// directly from inside its own callback, because lws may be mid-way through that connection's state.
    private var callbackWSI: OpaquePointer?
    /// Frames written straight from `send` instead of from a writeable callback.
    fileprivate(set) var directWrites: UInt64 = 0
    /// Frames that waited because lws still held part of an earlier write: a sign of slow readers.
    fileprivate(set) var framesBehindPartialWrites: UInt64 = 0
    /// Direct writes the socket took only part of, finished by lws.
    fileprivate(set) var truncatedDirectWrites: UInt64 = 0

    func isInCallback(for wsi: OpaquePointer) -> Bool { callbackWSI == wsi }

    private final class HTTPExchange {
        let response: HTTPResponse
        var offset = 0
        init(_ response: HTTPResponse) { self.response = response }
    }

    /// Creates the lws context on `loop` listening on `address`. Throws a message naming the
    /// missing package or the address when lws cannot start.
    init(
        loop: UnsafeMutablePointer<uv_loop_t>, address: HostPort, nodeName: String, maxMessageBytes: Int,
        fileLimit: Int, logger: Logger
    ) throws {
        self.loop = loop
        self.logger = logger
        self.maxMessageBytes = maxMessageBytes
        sessionPrefix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        interface = strdup(address.host)
        protocolName = strdup("presence")
        protocols = .allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = UnsafePointer(protocolName)
        protocols[0].callback = { wsi, reason, user, input, length in
            ClientServer.dispatch(wsi, reason, user, input, length)
        }
        protocols[0].per_session_data_size = MemoryLayout<UnsafeMutableRawPointer?>.size
        // Small receive buffers keep idle connections cheap; longer messages arrive in pieces
        // that `gather` joins.
        protocols[0].rx_buffer_size = 1024
        foreignLoops = .allocate(capacity: 1)
        foreignLoops.pointee = UnsafeMutableRawPointer(loop)
        retryPolicy = .allocate(capacity: 1)
        retryPolicy.initialize(to: lws_retry_bo_t())
        // Zero turns lws's own per-connection idle timers off. lws 4.1 keeps them in one list
        // sorted by due time, and every re-arm walks it, which made accepting and holding 20,000
        // sessions cost O(N^2) CPU. `checkIdleSessions` does the same job in one sweep instead.
        retryPolicy.pointee.secs_since_valid_ping = 0
        retryPolicy.pointee.secs_since_valid_hangup = 0

        var info = lws_context_creation_info()
        info.port = Int32(address.port)
        info.iface = UnsafePointer(interface)
        info.protocols = UnsafePointer(protocols)
        info.options = UInt64(LWS_SERVER_OPTION_LIBUV) | UInt64(LWS_SERVER_OPTION_VALIDATE_UTF8)
            | UInt64(LWS_SERVER_OPTION_DISABLE_IPV6)
        info.foreign_loops = foreignLoops
        info.gid = -1
        info.uid = -1
        info.max_http_header_data = 16_384
        info.timeout_secs = 20
        info.fd_limit_per_thread = UInt32(max(fileLimit, 1024))
        info.retry_and_idle_policy = UnsafePointer(retryPolicy)
        let unmanaged = Unmanaged.passUnretained(self)
        info.user = unmanaged.toOpaque()

        // lws waits for an interface that does not exist yet instead of failing, which would
        // leave the node running with no client listener.
        if Self.bindError(address) == EADDRNOTAVAIL {
            throw StartupError(
                message: "clientListen \(address): TCP listen failed: \(String(cString: strerror(EADDRNOTAVAIL))): "
                    + "no interface of this machine has that address")
        }
        ClientServer.routeLibraryLogs()
        context = lws_create_context(&info)
        guard let context else {
            throw StartupError(message: "clientListen \(address): the WebSocket server could not start. If the log above says "
                    + "\"unable to load evlib plugin evlib_uv\", install the Debian package libwebsockets-evlib-uv; "
                    + "otherwise the address may be in use.")
        }
        guard let vhost = lws_get_vhost_by_name(context, "default"), lws_get_vhost_listen_port(vhost) > 0 else {
            lws_context_destroy(context)
            self.context = nil
            throw StartupError(message: "clientListen \(address): TCP listen failed: \(Self.listenFailureReason(address))")
        }
        let listenPort = lws_get_vhost_listen_port(vhost)
        port = UInt16(listenPort)
    }

    /// Binds a throwaway socket to `address` to learn why lws could not listen there; lws only logs it.
    private static func listenFailureReason(_ address: HostPort) -> String {
        let error = bindError(address)
        return error == 0 ? "unknown reason (see the libwebsockets lines above)" : String(cString: strerror(error))
    }

    /// Returns the errno of binding a throwaway socket to `address` with `SO_REUSEADDR`, as lws
    /// binds, or 0 when the bind works.
    private static func bindError(_ address: HostPort) -> Int32 {
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard probe >= 0 else { return errno }
        defer { close(probe) }
        var reuse: Int32 = 1
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        uv_ip4_addr(address.host, Int32(address.port), &socketAddress)
        let result = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0 ? 0 : errno
    }

    /// Sends libwebsockets' own errors and warnings to stderr as log lines of ours; its notices
    /// (version banners and the like) are dropped.
    static func routeLibraryLogs() {
        lws_set_log_level(Int32(LLL_ERR | LLL_WARN)) { level, line in
            guard let line else { return }
            let text = String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
            let severity = level & Int32(LLL_ERR) != 0 ? "error" : "warning"
            let timestamp = RFC3339.string(fromMilliseconds: PresenceNode.wallClockMilliseconds(), fractional: true)
            let entry = "ts=\(timestamp) level=\(severity) msg=\"libwebsockets\" detail=\(Logger.logfmtValue(text))\n"
            Logger.writeToStandardError(entry)
        }
    }

    /// Pings sessions that sent nothing for `pingAfterMs` and closes those that still sent nothing
    /// (not even a pong) for `closeAfterMs`, so a vanished client's user goes offline. Call it
    /// from a timer, outside lws callbacks. Returns the number of sessions closed.
    @discardableResult
    func checkIdleSessions(now: UInt64, pingAfterMs: UInt64, closeAfterMs: UInt64) -> Int {
        var closed = 0
        for session in Array(sessions.values) where session.isOpen {
            let idle = now >= session.lastActivity ? now - session.lastActivity : 0
            // A client that does not reply to the close frame either is dropped at the next sweep,
            // when the second `closeNow` frees the connection that lws kept waiting for the close ack.
            if idle >= closeAfterMs {
                if session.closeStatus == nil {
                    logger.debug("closing idle session", [("session", session.id), ("user", session.userID), ("idleMs", idle)])
                    closed += 1
                }
                session.closeNow(status: 1001, reason: "no activity for \(idle) ms (limits.idleTimeoutMs is \(closeAfterMs))")
            } else if idle >= pingAfterMs && !session.pingSent && !session.pingDue {
                session.pingDue = true
                lws_callback_on_writable(session.wsi)
            }
        }
        return closed
    }

    /// Destroys the lws context: every connection closes at once and `sessionClosed` runs for each.
    func destroy() {
        guard let context else { return }
        self.context = nil
        lws_context_destroy(context)
    }

    private static func dispatch(
        _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
        _ input: UnsafeMutableRawPointer?, _ length: Int
    ) -> Int32 {
        guard let wsi, let context = lws_get_context(wsi), let raw = lws_context_user(context) else {
            return lws_callback_http_dummy(wsi, reason, user, input, length)
        }
        let server = Unmanaged<ClientServer>.fromOpaque(raw).takeUnretainedValue()
        let outer = server.callbackWSI
        server.callbackWSI = wsi
        defer { server.callbackWSI = outer }
        return server.handle(wsi, reason, user, input, length)
    }

    private func handle(
        _ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
        _ input: UnsafeMutableRawPointer?, _ length: Int
    ) -> Int32 {
        let slot = user?.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        switch reason {
        case LWS_CALLBACK_HTTP:
            let path = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "/"
            // lws files the request path under the token of its method, and every endpoint is GET.
            guard lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 else {
                logger.debug("HTTP method not allowed", [("path", path)])
                return writeClosingResponse(
                    wsi, status: 405, code: "method_not_allowed",
                    message: "only GET is supported; use GET, or a WebSocket upgrade at /v1/ws", extraHeaders: "allow: GET\r\n")
            }
            let authorization = Self.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)
            let response = delegate?.respond(path: path, query: Self.queryArguments(wsi), authorization: authorization)
                ?? .text("unavailable\n", status: 503)
            return startResponse(wsi, slot, response)

        case LWS_CALLBACK_HTTP_WRITEABLE:
            return continueResponse(wsi, slot)

        case LWS_CALLBACK_CLOSED_HTTP:
            releaseExchange(slot)
            return 0

        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            let path = Self.header(wsi, WSI_TOKEN_GET_URI) ?? ""
            let authorization = Self.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)
            let verdict = delegate?.authorizeUpgrade(path: path, query: Self.queryArguments(wsi), authorization: authorization)
                ?? .failure(UpgradeRejection(status: 503, message: "server is stopping"))
            if case .failure(let rejection) = verdict {
                logger.debug("upgrade rejected", [("status", rejection.status), ("reason", rejection.message)])
                return rejectUpgrade(wsi, rejection)
            }
            return 0

        case LWS_CALLBACK_ESTABLISHED:
            let path = Self.header(wsi, WSI_TOKEN_GET_URI) ?? ""
            let authorization = Self.header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)
            let query = Self.queryArguments(wsi)
            guard let slot, let delegate,
                case .success(let grant) = delegate.authorizeUpgrade(path: path, query: query, authorization: authorization)
            else { return -1 }
            nextSessionNumber += 1
            let session = ClientSession(
                id: "\(sessionPrefix)-\(nextSessionNumber)", userID: grant.userID, wsi: wsi, isObserver: grant.isObserver)
            session.server = self
            session.lastActivity = uv_now(loop)
            slot.pointee = Unmanaged.passRetained(session).toOpaque()
            sessions[session.id] = session
            delegate.sessionOpened(session)
            return 0

        case LWS_CALLBACK_RECEIVE:
            guard let session = session(in: slot) else { return 0 }
            session.lastActivity = uv_now(loop)
            session.pingSent = false
            gather(session, wsi, input, length)
            return 0

        case LWS_CALLBACK_RECEIVE_PONG:
            guard let session = session(in: slot) else { return 0 }
            logger.trace("pong received", [("session", session.id)])
            session.lastActivity = uv_now(loop)
            session.pingSent = false
            return 0

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let session = session(in: slot) else { return 0 }
            return write(session, wsi)

        case LWS_CALLBACK_CLOSED:
            guard let slot, let raw = slot.pointee else { return 0 }
            slot.pointee = nil
            let session = Unmanaged<ClientSession>.fromOpaque(raw).takeRetainedValue()
            session.isOpen = false
            sessions[session.id] = nil
            delegate?.sessionClosed(session)
            return 0

        default:
            return lws_callback_http_dummy(wsi, reason, user, input, length)
        }
    }

    private func session(in slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> ClientSession? {
        guard let raw = slot?.pointee else { return nil }
        return Unmanaged<ClientSession>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Joins the pieces of one client message. lws hands a message over in several calls when it
    /// is longer than the receive buffer or was sent in fragments.
    private func gather(_ session: ClientSession, _ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?, _ length: Int) {
        if lws_frame_is_binary(wsi) != 0 {
            session.inboundOversize = true
        }
        if !session.inboundOversize {
            if session.inbound.count + length > maxMessageBytes {
                session.inboundOversize = true
                session.inbound = []
            } else if let input, length > 0 {
                session.inbound.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length))
            }
        }
        guard lws_is_final_fragment(wsi) != 0, lws_remaining_packet_payload(wsi) == 0 else { return }
        let binary = lws_frame_is_binary(wsi) != 0
        if session.inboundOversize {
            session.inboundOversize = false
            session.inbound = []
            let reason = binary
                ? "binary messages are not accepted; send JSON text frames"
                : "message is longer than the \(maxMessageBytes)-byte limit"
            delegate?.sessionRejectedMessage(session, reason: reason)
            return
        }
        let message = session.inbound
        session.inbound = []
        delegate?.sessionReceived(session, message: message)
    }

    private func write(_ session: ClientSession, _ wsi: OpaquePointer) -> Int32 {
        if session.pingDue {
            session.pingDue = false
            session.pingSent = true
            // lws 4.1 reports a pong to the protocol callback only when it carries a payload, so
            // the ping sends four bytes for the client to echo.
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Int(pm_lws_pre()) + 4)
            defer { buffer.deallocate() }
            (buffer + Int(pm_lws_pre())).update(repeating: UInt8(ascii: "p"), count: 4)
            if lws_write(wsi, buffer + Int(pm_lws_pre()), 4, LWS_WRITE_PING) < 0 { return -1 }
            logger.trace("ping sent", [("session", session.id)])
            if session.queuedFrames > 0 { lws_callback_on_writable(wsi) }
            return 0
        }
        if let frame = session.popFrame() {
            let written = lws_write(wsi, frame.payload, frame.count, LWS_WRITE_TEXT)
            if written < 0 {
                logger.debug("session write failed", [("session", session.id), ("user", session.userID)])
                return -1
            }
            if session.queuedFrames > 0 {
                lws_callback_on_writable(wsi)
            }
        }
        return 0
    }

    /// Sends the HTTP error response to a rejected upgrade. Returning 1 informs lws that the response was sent.
    private func rejectUpgrade(_ wsi: OpaquePointer, _ rejection: UpgradeRejection) -> Int32 {
        let code: String
        switch rejection.status {
        case 400: code = "invalid_request"
        case 401: code = "unauthorized"
        case 404: code = "not_found"
        default: code = "unavailable"
        }
        return writeClosingResponse(wsi, status: rejection.status, code: code, message: rejection.message)
    }

    /// Writes a whole JSON error response with `connection: close` in one write and returns 1, so
    /// lws treats the response as sent and closes the connection. This also works for a request
    /// whose body lws would otherwise wait for.
    private func writeClosingResponse(
        _ wsi: OpaquePointer, status: UInt32, code: String, message: String, extraHeaders: String = ""
    ) -> Int32 {
        let body = "{\"error\":{\"code\":\"\(code)\",\"message\":\(JSONText.quote(message))}}\n"
        // lws 4.1 labels an upgrade rejection HTTP/1.0 because the request never reached its HTTP
        // handling. Strict WebSocket clients reject an HTTP/1.0 reply, so the status line is written here.
        let reasons: [UInt32: String] = [
            400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable",
        ]
        let response = Array(
            ("HTTP/1.1 \(status) \(reasons[status] ?? "Error")\r\ncontent-type: application/json\r\n"
                + "content-length: \(body.utf8.count)\r\n\(extraHeaders)connection: close\r\n\r\n" + body).utf8)
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Int(pm_lws_pre()) + response.count)
        defer { buffer.deallocate() }
        let start = buffer + Int(pm_lws_pre())
        start.update(from: response, count: response.count)
        return lws_write(wsi, start, response.count, LWS_WRITE_HTTP_HEADERS) == response.count ? 1 : -1
    }

    private func startResponse(_ wsi: OpaquePointer, _ slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ response: HTTPResponse) -> Int32 {
        guard let slot else { return -1 }
        let capacity = Int(pm_lws_pre()) + 1024
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        let start = buffer + Int(pm_lws_pre())
        var position: UnsafeMutablePointer<UInt8>? = start
        let end = buffer + capacity - 1
        if lws_add_http_common_headers(wsi, response.status, response.contentType, lws_filepos_t(response.body.count), &position, end) != 0 {
            return 1
        }
        let noStore = "no-store"
        if lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, noStore, Int32(noStore.utf8.count), &position, end) != 0 {
            return 1
        }
        if lws_finalize_write_http_header(wsi, start, &position, end) != 0 {
            return 1
        }
        releaseExchange(slot)
        slot.pointee = Unmanaged.passRetained(HTTPExchange(response)).toOpaque()
        lws_callback_on_writable(wsi)
        return 0
    }

    private func continueResponse(_ wsi: OpaquePointer, _ slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
        guard let slot, let raw = slot.pointee else { return 0 }
        let exchange = Unmanaged<HTTPExchange>.fromOpaque(raw).takeUnretainedValue()
        let chunkLimit = 16_384
        let remaining = exchange.response.body.count - exchange.offset
        let chunk = min(remaining, chunkLimit)
        let final = chunk == remaining
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Int(pm_lws_pre()) + max(chunk, 1))
        defer { buffer.deallocate() }
        exchange.response.body.withUnsafeBufferPointer { body in
            (buffer + Int(pm_lws_pre())).update(from: body.baseAddress! + exchange.offset, count: chunk)
        }
        let written = lws_write(wsi, buffer + Int(pm_lws_pre()), chunk, final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP)
        if written < chunk { return -1 }
        exchange.offset += chunk
        if !final {
            lws_callback_on_writable(wsi)
            return 0
        }
        releaseExchange(slot)
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }

    private func releaseExchange(_ slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) {
        guard let slot, let raw = slot.pointee else { return }
        slot.pointee = nil
        Unmanaged<HTTPExchange>.fromOpaque(raw).release()
    }

    private static func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let length = lws_hdr_total_length(wsi, token)
        guard length > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(length) + 1)
        guard lws_hdr_copy(wsi, &buffer, Int32(buffer.count), token) >= 0 else { return nil }
        return String(cString: buffer)
    }

    /// URL query arguments, decoded by lws; a repeated name keeps its first value.
    private static func queryArguments(_ wsi: OpaquePointer) -> [String: String] {
        var arguments: [String: String] = [:]
        let total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS)
        guard total > 0 else { return arguments }
        var buffer = [CChar](repeating: 0, count: Int(total) + 1)
        var index: Int32 = 0
        while lws_hdr_copy_fragment(wsi, &buffer, Int32(buffer.count), WSI_TOKEN_HTTP_URI_ARGS, index) >= 0 {
            let fragment = String(cString: buffer)
            if let equals = fragment.firstIndex(of: "=") {
                let name = String(fragment[..<equals])
                if arguments[name] == nil { arguments[name] = String(fragment[fragment.index(after: equals)...]) }
            } else if arguments[fragment] == nil {
                arguments[fragment] = ""
            }
            index += 1
        }
        return arguments
    }
}
