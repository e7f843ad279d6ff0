import CLibUV
import Foundation

/// `presence-bench raw-server`: the raw-TCP floor of the fan-out benchmark. One libuv loop accepts
/// connections on 127.0.0.1 and copies every chunk of bytes read from any connection to every
/// other connection, with no framing and no parsing. Each copy is one `uv_try_write`, so each
/// delivery costs one send system call, as a WebSocket write of a small frame does.
final class RawServer {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let listener: UnsafeMutablePointer<uv_tcp_t>
    private var connections: [UnsafeMutablePointer<uv_tcp_t>] = []
    private let readBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: 65_536)
    /// Copies that did not fit the socket buffer at once and went through `uv_write`.
    private var queuedWrites = 0

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        self.loop = loop
        listener = .allocate(capacity: 1)
        uv_tcp_init(loop, listener)
    }

    /// Listens on 127.0.0.1 with an OS-chosen port, prints `ready port=P` and serves until SIGTERM or SIGINT.
    static func main(_ arguments: [String]) -> Int32 {
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        uv_loop_init(loop)
        let server = RawServer(loop: loop)
        loop.pointee.data = Unmanaged.passRetained(server).toOpaque()
        var address = sockaddr_in()
        uv_ip4_addr("127.0.0.1", 0, &address)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(server.listener, $0, 0) }
        }
        let stream = UnsafeMutableRawPointer(server.listener).assumingMemoryBound(to: uv_stream_t.self)
        guard bound == 0, uv_listen(stream, 4096, { listener, status in
            guard status == 0, let listener, let raw = listener.pointee.loop.pointee.data else { return }
            Unmanaged<RawServer>.fromOpaque(raw).takeUnretainedValue().accept(listener)
        }) == 0 else {
            printError("raw-server: could not listen on 127.0.0.1")
            return 1
        }
        var name = sockaddr_in()
        var length = Int32(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &name) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = uv_tcp_getsockname(server.listener, $0, &length) }
        }
        print("ready port=\(UInt16(bigEndian: name.sin_port))")
        fflush(nil)

        for number in [SIGTERM, SIGINT] {
            let signalHandle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(loop, signalHandle)
            uv_signal_start(signalHandle, { handle, _ in
                guard let handle else { return }
                uv_stop(handle.pointee.loop)
            }, number)
        }
        uv_run(loop, UV_RUN_DEFAULT)
        printError("raw-server: stopping with \(server.connections.count) connections, \(server.queuedWrites) queued writes")
        return 0
    }

    private func accept(_ listener: UnsafeMutablePointer<uv_stream_t>) {
        let connection = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop, connection)
        let stream = UnsafeMutableRawPointer(connection).assumingMemoryBound(to: uv_stream_t.self)
        guard uv_accept(listener, stream) == 0 else {
            uv_close(UnsafeMutableRawPointer(connection).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
            return
        }
        uv_tcp_nodelay(connection, 1)
        connections.append(connection)
        uv_read_start(stream, { handle, _, buffer in
            guard let handle, let buffer, let raw = handle.pointee.loop.pointee.data else { return }
            let server = Unmanaged<RawServer>.fromOpaque(raw).takeUnretainedValue()
            buffer.pointee = uv_buf_init(server.readBuffer, 65_536)
        }, { stream, count, buffer in
            guard let stream, let raw = stream.pointee.loop.pointee.data else { return }
            let server = Unmanaged<RawServer>.fromOpaque(raw).takeUnretainedValue()
            server.received(stream, count)
        })
    }

    private func received(_ source: UnsafeMutablePointer<uv_stream_t>, _ count: Int) {
        if count < 0 {
            let handle = UnsafeMutableRawPointer(source).assumingMemoryBound(to: uv_tcp_t.self)
            connections.removeAll { $0 == handle }
            uv_close(UnsafeMutableRawPointer(source).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
            return
        }
        guard count > 0 else { return }
        for connection in connections {
            let target = UnsafeMutableRawPointer(connection).assumingMemoryBound(to: uv_stream_t.self)
            if target == source { continue }
            var buffer = uv_buf_init(readBuffer, UInt32(count))
            let written = Int(uv_try_write(target, &buffer, 1))
            if written == count { continue }
            // The socket buffer was full: the rest goes out through a queued write with its own copy.
            let done = max(written, 0)
            let rest = count - done
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: rest)
            copy.update(from: readBuffer + done, count: rest)
            let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
            request.pointee.data = UnsafeMutableRawPointer(copy)
            var restBuffer = uv_buf_init(copy, UInt32(rest))
            queuedWrites += 1
            uv_write(request, target, &restBuffer, 1) { request, _ in
                guard let request else { return }
                request.pointee.data?.deallocate()
                request.deallocate()
            }
        }
    }
}

/// Plain TCP connections from the benchmark client to the raw server, on the client's loop.
/// Each subscriber counts the bytes it has read; the server adds no framing, so with messages
/// of a fixed size the k-th message is complete when k times that size has arrived.
final class RawClientSet {
    let eventLoop: EventLoop
    private(set) var handles: [UnsafeMutablePointer<uv_tcp_t>] = []
    private(set) var bytesRead: [Int]
    private(set) var connectedCount = 0
    private(set) var failedCount = 0
    private var connectingCount = 0
    private let readBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: 65_536)
    /// Called with the connection index and its total bytes read so far.
    var onData: ((Int, Int) -> Void)?
    /// Called with the connection index and the bytes of each read.
    var onBytes: ((Int, UnsafeRawBufferPointer) -> Void)?
    /// Called with the connection index once its TCP connection is up.
    var onConnect: ((Int) -> Void)?

    init(eventLoop: EventLoop, count: Int) {
        self.eventLoop = eventLoop
        bytesRead = Array(repeating: 0, count: count)
    }

    private final class Tag {
        unowned let set: RawClientSet
        let index: Int
        init(set: RawClientSet, index: Int) {
            self.set = set
            self.index = index
        }
    }

    /// Connects all `count` sockets to `127.0.0.1:port`, at most `maxPending` at a time. Returns the number connected.
    func connectAll(port: UInt16, maxPending: Int, timeout: Double) -> Int {
        var address = sockaddr_in()
        uv_ip4_addr("127.0.0.1", Int32(port), &address)
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        var next = 0
        while monotonicNanoseconds() < deadline {
            while connectingCount < maxPending && next < bytesRead.count {
                startConnect(next, &address)
                next += 1
            }
            if next == bytesRead.count && connectingCount == 0 { break }
            uv_run(eventLoop.loop, UV_RUN_ONCE)
        }
        return connectedCount
    }

    private func startConnect(_ index: Int, _ address: inout sockaddr_in) {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(eventLoop.loop, handle)
        handle.pointee.data = Unmanaged.passRetained(Tag(set: self, index: index)).toOpaque()
        handles.append(handle)
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        connectingCount += 1
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                uv_tcp_connect(request, handle, address) { request, status in
                    guard let request, let stream = request.pointee.handle, let raw = stream.pointee.data else { return }
                    request.deallocate()
                    let tag = Unmanaged<Tag>.fromOpaque(raw).takeUnretainedValue()
                    tag.set.connected(stream, status)
                }
            }
        }
        if status != 0 {
            request.deallocate()
            connectingCount -= 1
            failedCount += 1
        }
    }

    private func connected(_ stream: UnsafeMutablePointer<uv_stream_t>, _ status: Int32) {
        connectingCount -= 1
        guard status == 0 else {
            failedCount += 1
            return
        }
        connectedCount += 1
        uv_tcp_nodelay(UnsafeMutableRawPointer(stream).assumingMemoryBound(to: uv_tcp_t.self), 1)
        uv_read_start(stream, { handle, _, buffer in
            guard let handle, let buffer, let raw = handle.pointee.data else { return }
            let tag = Unmanaged<Tag>.fromOpaque(raw).takeUnretainedValue()
            buffer.pointee = uv_buf_init(tag.set.readBuffer, 65_536)
        }, { stream, count, _ in
            guard let stream, let raw = stream.pointee.data, count > 0 else { return }
            let tag = Unmanaged<Tag>.fromOpaque(raw).takeUnretainedValue()
            tag.set.bytesRead[tag.index] += count
            tag.set.onData?(tag.index, tag.set.bytesRead[tag.index])
            tag.set.onBytes?(tag.index, UnsafeRawBufferPointer(start: tag.set.readBuffer, count: count))
        })
        if let raw = stream.pointee.data {
            onConnect?(Unmanaged<Tag>.fromOpaque(raw).takeUnretainedValue().index)
        }
    }

    /// Writes `bytes` on connection `index` with one `uv_try_write`; returns whether all were written.
    func send(_ index: Int, _ bytes: UnsafeMutablePointer<CChar>, _ count: Int) -> Bool {
        let stream = UnsafeMutableRawPointer(handles[index]).assumingMemoryBound(to: uv_stream_t.self)
        var buffer = uv_buf_init(bytes, UInt32(count))
        return uv_try_write(stream, &buffer, 1) == count
    }

    /// Closes every connection.
    func closeAll() {
        for handle in handles {
            let raw = UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)
            if uv_is_closing(raw) == 0 {
                uv_close(raw) { handle in
                    guard let handle else { return }
                    if let raw = handle.pointee.data { Unmanaged<Tag>.fromOpaque(raw).release() }
                    handle.deallocate()
                }
            }
        }
        handles.removeAll()
        eventLoop.run(seconds: 0.2)
    }
}
