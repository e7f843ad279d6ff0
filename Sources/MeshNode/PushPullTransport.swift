import CLibUV
import Foundation
import MeshCore

/// One TCP connection carrying push-pull frames: a 4-byte big-endian length, then the payload.
/// The requester writes one frame and reads one reply frame; the responder does the reverse.
/// Every connection has a deadline, after which it is closed and reported as failed.
final class FramedConnection {
    /// Largest frame accepted: full states of large clusters fit, a garbage length does not.
    static let maxFrameBytes = 256 * 1024 * 1024

    let handle: UnsafeMutablePointer<uv_tcp_t>
    private let timer: UnsafeMutablePointer<uv_timer_t>
    private var received: [UInt8] = []
    private var closed = false
    private var retainedSelf: Unmanaged<FramedConnection>?
    /// Called once with a complete frame.
    var onFrame: ([UInt8]) -> Void = { _ in }
    /// Called once when the connection ends without a complete frame (error, timeout, oversize).
    var onFailure: (String) -> Void = { _ in }
    private var finished = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, timeoutMs: UInt64) {
        handle = .allocate(capacity: 1)
        timer = .allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        uv_timer_init(loop, timer)
        // The connection keeps itself alive until both handles are closed.
        retainedSelf = Unmanaged.passRetained(self)
        let opaque = retainedSelf!.toOpaque()
        handle.pointee.data = opaque
        timer.pointee.data = opaque
        uv_timer_start(
            timer,
            { timer in
                let connection = Unmanaged<FramedConnection>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
                connection.fail("timed out")
            }, timeoutMs, 0)
    }

    private var stream: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self)
    }

    /// Connects to `address` and sends `payload` once connected.
    func connect(to address: HostPort, sending payload: [UInt8]) {
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(Box(payload)).toOpaque()
        var socketAddress = sockaddr_in()
        uv_ip4_addr(address.host, Int32(address.port), &socketAddress)
        let result = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                uv_tcp_connect(request, handle, target) { request, status in
                    let payload = Unmanaged<Box<[UInt8]>>.fromOpaque(request!.pointee.data).takeRetainedValue().value
                    let handle = request!.pointee.handle!
                    request!.deallocate()
                    guard let data = handle.pointee.data else { return }
                    let connection = Unmanaged<FramedConnection>.fromOpaque(data).takeUnretainedValue()
                    guard status == 0 else {
                        connection.fail("connect failed: \(String(cString: uv_strerror(status)))")
                        return
                    }
                    connection.write(payload)
                    connection.startReading()
                }
            }
        }
        if result != 0 {
            Unmanaged<Box<[UInt8]>>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            fail("connect failed: \(String(cString: uv_strerror(result)))")
        }
    }

    func startReading() {
        uv_read_start(
            stream,
            { _, suggested, buffer in
                let memory = UnsafeMutableRawPointer.allocate(byteCount: suggested, alignment: 8)
                buffer!.pointee = uv_buf_init(memory.assumingMemoryBound(to: CChar.self), UInt32(suggested))
            },
            { stream, count, buffer in
                defer { buffer?.pointee.base?.deallocate() }
                guard let data = stream?.pointee.data else { return }
                let connection = Unmanaged<FramedConnection>.fromOpaque(data).takeUnretainedValue()
                if count < 0 {
                    connection.fail(count == Int(UV_EOF.rawValue) ? "closed before a whole frame" : String(cString: uv_strerror(Int32(count))))
                    return
                }
                guard count > 0, let base = buffer?.pointee.base else { return }
                connection.append(UnsafeRawBufferPointer(start: base, count: count))
            })
    }

    private func append(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else { return }
        received.append(contentsOf: bytes)
        guard received.count >= 4 else { return }
        let length = Int(received[0]) << 24 | Int(received[1]) << 16 | Int(received[2]) << 8 | Int(received[3])
        guard length <= Self.maxFrameBytes else {
            fail("frame of \(length) bytes is above the \(Self.maxFrameBytes)-byte limit")
            return
        }
        guard received.count >= 4 + length else { return }
        finished = true
        uv_read_stop(stream)
        let frame = Array(received[4..<(4 + length)])
        received = []
        onFrame(frame)
    }

    /// Writes one frame; with `thenClose`, closes the connection once the write completes.
    func write(_ payload: [UInt8], thenClose: Bool = false) {
        guard !closed else { return }
        let length = UInt32(payload.count)
        var framed = [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
        framed += payload
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(framed.count, 1), alignment: 8)
        framed.withUnsafeBytes { memory.copyMemory(from: $0.baseAddress!, byteCount: framed.count) }
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        request.pointee.data = memory
        var buffer = uv_buf_init(memory.assumingMemoryBound(to: CChar.self), UInt32(framed.count))
        let shouldClose = thenClose
        let result = uv_write(request, stream, &buffer, 1) { request, _ in
            request!.pointee.data.deallocate()
            let stream = request!.pointee.handle!
            request!.deallocate()
            // Closing after a reply is requested through the handle's close flag below.
            if let data = stream.pointee.data {
                let connection = Unmanaged<FramedConnection>.fromOpaque(data).takeUnretainedValue()
                if connection.closeAfterWrite { connection.close() }
            }
        }
        closeAfterWrite = shouldClose
        if result != 0 {
            memory.deallocate()
            request.deallocate()
            fail("write failed: \(String(cString: uv_strerror(result)))")
        }
    }

    private var closeAfterWrite = false

    private func fail(_ reason: String) {
        if !finished {
            finished = true
            onFailure(reason)
        }
        close()
    }

    /// Closes both handles; the connection is released after the second close callback.
    func close() {
        guard !closed else { return }
        closed = true
        onFrame = { _ in }
        onFailure = { _ in }
        uv_timer_stop(timer)
        handle.pointee.data = nil
        timer.pointee.data = nil
        let closer: uv_close_cb = { handle in handle?.deallocate() }
        uv_close(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self), closer)
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self), closer)
        let release = retainedSelf
        retainedSelf = nil
        release?.release()
    }
}

final class Box<Value> {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Accepts push-pull connections on the gossip port and answers each request frame.
final class PushPullListener {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private let logger: Logger
    /// Turns a request frame into the reply frame; nil closes the connection without a reply.
    var respond: ([UInt8]) -> [UInt8]? = { _ in nil }
    static let connectionTimeoutMs: UInt64 = 10_000

    init(loop: UnsafeMutablePointer<uv_loop_t>, address: HostPort, logger: Logger) throws {
        self.loop = loop
        self.logger = logger
        handle = .allocate(capacity: 1)
        uv_tcp_init(loop, handle)
        var socketAddress = sockaddr_in()
        uv_ip4_addr(address.host, Int32(address.port), &socketAddress)
        var result = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(handle, $0, 0) }
        }
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        if result == 0 {
            result = uv_listen(
                UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self), 128
            ) { server, status in
                guard status == 0, let server, let data = server.pointee.data else { return }
                Unmanaged<PushPullListener>.fromOpaque(data).takeUnretainedValue().accept(server)
            }
        }
        guard result == 0 else {
            let message = String(cString: uv_strerror(result))
            handle.pointee.data = nil
            uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
            throw StartupError(message: "gossipListen \(address): TCP listen for push-pull failed: \(message)")
        }
    }

    /// The bound port (the OS's choice when the configured port was 0).
    var boundPort: UInt16 {
        SocketAddress.boundPort { uv_tcp_getsockname(handle, $0, $1) }
    }

    private func accept(_ server: UnsafeMutablePointer<uv_stream_t>) {
        let connection = FramedConnection(loop: loop, timeoutMs: Self.connectionTimeoutMs)
        let client = UnsafeMutableRawPointer(connection.handle).assumingMemoryBound(to: uv_stream_t.self)
        guard uv_accept(server, client) == 0 else {
            connection.close()
            return
        }
        connection.onFrame = { [weak self, unowned connection] frame in
            guard let self, let reply = self.respond(frame) else {
                connection.close()
                return
            }
            connection.write(reply, thenClose: true)
        }
        connection.onFailure = { [logger] reason in
            logger.debug("push-pull request dropped", [("reason", reason)])
        }
        connection.startReading()
    }

    func close() {
        handle.pointee.data = nil
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
    }
}
