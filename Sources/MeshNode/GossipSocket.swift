import CLibUV
import Foundation
import MeshCore

/// The node's UDP gossip socket on the libuv loop. Received datagrams go to `onDatagram`
/// with the sender as `"ip:port"`.
final class GossipSocket {
    private let handle: UnsafeMutablePointer<uv_udp_t>
    private let receiveBuffer: UnsafeMutableRawPointer
    private static let receiveBufferSize = 65_536
    private var addressCache: [String: sockaddr_in] = [:]
    private let logger: Logger
    var onDatagram: ([UInt8], String) -> Void = { _, _ in }
    /// Datagrams that could not be handed to the kernel.
    private(set) var sendFailures: UInt64 = 0

    /// Binds `address` on `loop`; throws a message naming the address when the bind fails.
    init(loop: UnsafeMutablePointer<uv_loop_t>, address: HostPort, logger: Logger) throws {
        self.logger = logger
        handle = .allocate(capacity: 1)
        receiveBuffer = .allocate(byteCount: Self.receiveBufferSize, alignment: 8)
        uv_udp_init(loop, handle)
        var socketAddress = sockaddr_in()
        uv_ip4_addr(address.host, Int32(address.port), &socketAddress)
        let result = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(handle, $0, 0) }
        }
        guard result == 0 else {
            let message = String(cString: uv_strerror(result))
            uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
            throw StartupError(message: "gossipListen \(address): UDP bind failed: \(message)")
        }
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// The bound port (the OS's choice when the configured port was 0).
    var boundPort: UInt16 {
        SocketAddress.boundPort { uv_udp_getsockname(handle, $0, $1) }
    }

    func startReceiving() {
        uv_udp_recv_start(
            handle,
            { handle, _, buffer in
                let socket = Unmanaged<GossipSocket>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                buffer!.pointee = uv_buf_init(
                    socket.receiveBuffer.assumingMemoryBound(to: CChar.self), UInt32(GossipSocket.receiveBufferSize))
            },
            { handle, count, buffer, address, _ in
                guard count > 0, let address, let handle else { return }
                let socket = Unmanaged<GossipSocket>.fromOpaque(handle.pointee.data).takeUnretainedValue()
                let bytes = Array(UnsafeRawBufferPointer(start: buffer!.pointee.base, count: count))
                socket.onDatagram(bytes, SocketAddress.describe(address))
            })
    }

    /// Sends one datagram now; a full kernel buffer drops it, as UDP may anyway.
    func send(_ bytes: [UInt8], to address: String) {
        guard let destination = resolve(address) else {
            sendFailures += 1
            logger.debug("gossip address invalid", [("addr", address)])
            return
        }
        var target = destination
        let result = bytes.withUnsafeBytes { raw -> Int32 in
            var buffer = uv_buf_init(
                UnsafeMutablePointer(mutating: raw.baseAddress!.assumingMemoryBound(to: CChar.self)), UInt32(raw.count))
            return withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(handle, &buffer, 1, $0) }
            }
        }
        if result < 0 {
            sendFailures += 1
            logger.debug("gossip send failed", [("addr", address), ("error", String(cString: uv_strerror(result)))])
        }
    }

    private func resolve(_ address: String) -> sockaddr_in? {
        if let cached = addressCache[address] { return cached }
        guard let parsed = HostPort(address), parsed.port != 0 else { return nil }
        var socketAddress = sockaddr_in()
        uv_ip4_addr(parsed.host, Int32(parsed.port), &socketAddress)
        if addressCache.count > 10_000 { addressCache.removeAll() }
        addressCache[address] = socketAddress
        return socketAddress
    }

    func close() {
        uv_udp_recv_stop(handle)
        handle.pointee.data = nil
        let buffer = receiveBuffer
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { $0?.deallocate() }
        // The receive buffer outlives the handle only until the close callback; no receive runs after recv_stop.
        buffer.deallocate()
    }
}

enum SocketAddress {
    /// Port of the IPv4 address that `getsockname` (`uv_udp_getsockname` or `uv_tcp_getsockname`
    /// of one handle) reports.
    static func boundPort(_ getsockname: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32) -> UInt16 {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname($0, &length) }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// `"ip:port"` of an IPv4 socket address; other families are described as `"unknown"`.
    static func describe(_ address: UnsafePointer<sockaddr>) -> String {
        guard address.pointee.sa_family == sa_family_t(AF_INET) else { return "unknown" }
        return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ipv4 in
            var name = [CChar](repeating: 0, count: 32)
            var copy = ipv4.pointee
            uv_ip4_name(&copy, &name, name.count)
            return "\(String(cString: name)):\(UInt16(bigEndian: ipv4.pointee.sin_port))"
        }
    }
}
