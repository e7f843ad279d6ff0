import CLibUV
import CWebSockets
import Foundation

/// Many libwebsockets client connections on one libuv loop, addressed by index. There is no
/// thread per connection: every callback runs on the loop of `EventLoop`.
final class WebSocketPool {
    enum State: UInt8 {
        case idle, connecting, open, closed, failed
    }

    let eventLoop: EventLoop
    let port: UInt16
    private var context: OpaquePointer?
    private let protocols: UnsafeMutablePointer<lws_protocols>
    private let foreignLoops: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let address: UnsafeMutablePointer<CChar>
    private let hostHeader: UnsafeMutablePointer<CChar>
    private(set) var states: [State]
    private var wsis: [OpaquePointer?]
    /// One text message each connection sends once it is open, such as a subscribe request.
    var greetings: [[UInt8]?]
    private var fragments: [Int: [UInt8]] = [:]
    private(set) var openCount = 0
    /// Connections whose handshake is in flight.
    private(set) var connectingCount = 0
    /// Connections that failed since `openAll` last looked, for retries.
    private var recentFailures: [Int] = []
    private(set) var failedCount = 0
    /// Connections that closed after their handshake had completed.
    private(set) var closedCount = 0
    private(set) var lastFailure = ""
    /// Called with the connection index and one whole received message.
    var onMessage: ((Int, UnsafeRawBufferPointer) -> Void)?
    /// Called with the connection index when the handshake completes.
    var onOpen: ((Int) -> Void)?

    /// Creates the lws client context for `capacity` connections to `127.0.0.1:port`.
    init(eventLoop: EventLoop, port: UInt16, capacity: Int) throws {
        self.eventLoop = eventLoop
        self.port = port
        states = Array(repeating: .idle, count: capacity)
        wsis = Array(repeating: nil, count: capacity)
        greetings = Array(repeating: nil, count: capacity)
        address = strdup("127.0.0.1")
        hostHeader = strdup("127.0.0.1:\(port)")
        protocols = .allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = UnsafePointer(strdup("presence"))
        protocols[0].callback = { wsi, reason, _, input, length in
            guard let wsi, let context = lws_get_context(wsi), let raw = lws_context_user(context) else { return 0 }
            let pool = Unmanaged<WebSocketPool>.fromOpaque(raw).takeUnretainedValue()
            return pool.handle(wsi, reason, input, length)
        }
        foreignLoops = .allocate(capacity: 1)
        foreignLoops.pointee = UnsafeMutableRawPointer(eventLoop.loop)

        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        var info = lws_context_creation_info()
        info.port = CONTEXT_PORT_NO_LISTEN
        info.protocols = UnsafePointer(protocols)
        info.options = UInt64(LWS_SERVER_OPTION_LIBUV)
        info.foreign_loops = foreignLoops
        info.gid = -1
        info.uid = -1
        info.fd_limit_per_thread = UInt32(min(limit.rlim_cur, 1_000_000))
        info.timeout_secs = 60
        info.connect_timeout_secs = 60
        info.user = Unmanaged.passUnretained(self).toOpaque()
        lws_set_log_level(Int32(LLL_ERR), nil)
        context = lws_create_context(&info)
        guard context != nil else {
            throw BenchError("lws_create_context failed; if libwebsockets logged \"unable to load evlib plugin evlib_uv\", install libwebsockets-evlib-uv")
        }
    }

    var capacity: Int { states.count }

    /// Starts the handshake of connection `index` to `path` (which includes the query).
    func connect(_ index: Int, path: String) {
        var info = lws_client_connect_info()
        info.context = context
        info.address = UnsafePointer(address)
        info.port = Int32(port)
        let pathCopy = strdup(path)
        defer { free(pathCopy) }
        info.path = UnsafePointer(pathCopy)
        info.host = UnsafePointer(hostHeader)
        info.origin = UnsafePointer(hostHeader)
        info.ietf_version_or_minus_one = -1
        info.opaque_user_data = UnsafeMutableRawPointer(bitPattern: index + 1)
        states[index] = .connecting
        connectingCount += 1
        if lws_client_connect_via_info(&info) == nil {
            markFailed(index, "lws_client_connect_via_info returned NULL")
        }
    }

    /// Opens connections `indices` with at most `maxPending` handshakes in flight; a connection
    /// that fails or closes while opening is retried up to twice. Returns the number open when all
    /// finished, `timeout` seconds passed or `stop` returned true.
    func openAll(
        _ indices: Range<Int>, maxPending: Int, timeout: Double, stop: () -> Bool = { false }, path: (Int) -> String
    ) -> Int {
        var next = indices.lowerBound
        var attempts: [Int: Int] = [:]
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        recentFailures.removeAll()
        while monotonicNanoseconds() < deadline && !stop() {
            var retry: [Int] = []
            for index in recentFailures where indices.contains(index) && attempts[index, default: 0] < 2 {
                attempts[index, default: 0] += 1
                retry.append(index)
            }
            recentFailures.removeAll()
            for index in retry {
                connect(index, path: path(index))
            }
            while connectingCount < maxPending && next < indices.upperBound {
                connect(next, path: path(next))
                next += 1
            }
            if next == indices.upperBound && connectingCount == 0 && recentFailures.isEmpty { break }
            uv_run(eventLoop.loop, UV_RUN_ONCE)
        }
        return indices.filter { states[$0] == .open }.count
    }

    /// Closes connection `index` at once with a normal close status. Call it from outside lws callbacks.
    func close(_ index: Int) {
        guard let wsi = wsis[index], states[index] == .open else { return }
        var reason: [UInt8] = []
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, &reason, 0)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC)
    }

    /// Destroys the context, which closes every connection.
    func destroy() {
        guard let context else { return }
        self.context = nil
        lws_context_destroy(context)
        eventLoop.run(seconds: 0.3)
    }

    private func markFailed(_ index: Int, _ reason: String) {
        guard states[index] != .failed else { return }
        if states[index] == .open { openCount -= 1 }
        if states[index] == .connecting { connectingCount -= 1 }
        recentFailures.append(index)
        states[index] = .failed
        wsis[index] = nil
        failedCount += 1
        lastFailure = reason
    }

    private func handle(
        _ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ input: UnsafeMutableRawPointer?, _ length: Int
    ) -> Int32 {
        guard let tag = lws_get_opaque_user_data(wsi) else { return 0 }
        let index = Int(bitPattern: tag) - 1
        guard index >= 0 && index < states.count else { return 0 }
        switch reason {
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            if states[index] == .connecting { connectingCount -= 1 }
            states[index] = .open
            wsis[index] = wsi
            openCount += 1
            if greetings[index] != nil { lws_callback_on_writable(wsi) }
            onOpen?(index)

        case LWS_CALLBACK_CLIENT_WRITEABLE:
            guard let greeting = greetings[index] else { return 0 }
            let pre = Int(pm_lws_pre())
            var buffer = [UInt8](repeating: 0, count: pre + greeting.count)
            buffer.replaceSubrange(pre..., with: greeting)
            let written = buffer.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + pre, greeting.count, LWS_WRITE_TEXT) }
            return written < greeting.count ? -1 : 0

        case LWS_CALLBACK_CLIENT_RECEIVE:
            receive(index, wsi, input, length)

        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let text = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "unknown"
            markFailed(index, text)

        case LWS_CALLBACK_CLIENT_CLOSED:
            if states[index] == .connecting {
                markFailed(index, "closed during the handshake")
            } else {
                if states[index] == .open {
                    openCount -= 1
                    closedCount += 1
                    recentFailures.append(index)
                }
                states[index] = .closed
                wsis[index] = nil
            }

        case LWS_CALLBACK_WSI_DESTROY:
            // Some handshake failures end without CLIENT_CONNECTION_ERROR; without this the
            // connection would count as in flight forever.
            if states[index] == .connecting {
                markFailed(index, "destroyed during the handshake")
            }

        default:
            break
        }
        return 0
    }

    private func receive(_ index: Int, _ wsi: OpaquePointer, _ input: UnsafeMutableRawPointer?, _ length: Int) {
        let complete = lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0
        if complete && fragments[index] == nil {
            // The common case: the whole message arrived in one callback.
            onMessage?(index, UnsafeRawBufferPointer(start: input, count: length))
            return
        }
        if let input, length > 0 {
            fragments[index, default: []].append(contentsOf: UnsafeRawBufferPointer(start: input, count: length))
        }
        guard complete, let message = fragments.removeValue(forKey: index) else { return }
        message.withUnsafeBytes { onMessage?(index, $0) }
    }
}
