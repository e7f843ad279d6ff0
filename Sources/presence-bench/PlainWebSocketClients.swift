import CLibUV
import Foundation

/// WebSocket subscribers on plain libuv TCP connections: each sends its HTTP upgrade request
/// and one masked text message, then splits what it reads into server frames. The fan-out
/// benchmark reads the node through these and the raw-TCP floor through a bare `RawClientSet`.
/// Both servers are thus read through the same code, and the only extra client work for the
/// node is the frame header of each message.
final class PlainWebSocketClients {
    private let connections: RawClientSet
    private var requests: [[UInt8]]
    private var greetings: [[UInt8]]
    /// Bytes read and not yet handled: the HTTP response before the upgrade, then part of a frame.
    private var pending: [[UInt8]]
    private var upgraded: [Bool]
    private(set) var upgradedCount = 0
    private(set) var failures: [String] = []
    /// Called with the connection index and the payload of one whole text frame.
    var onMessage: ((Int, UnsafeRawBufferPointer) -> Void)?

    /// `path(i)` is the request path of connection `i`; `greeting` is the text message each sends
    /// once it is upgraded.
    init(eventLoop: EventLoop, count: Int, port: UInt16, path: (Int) -> String, greeting: [UInt8]) {
        connections = RawClientSet(eventLoop: eventLoop, count: count)
        requests = (0..<count).map { index in
            Array("""
                GET \(path(index)) HTTP/1.1\r
                Host: 127.0.0.1:\(port)\r
                Upgrade: websocket\r
                Connection: Upgrade\r
                Sec-WebSocket-Key: cHJlc2VuY2UtYmVuY2gtMDE=\r
                Sec-WebSocket-Version: 13\r
                \r

                """.utf8)
        }
        greetings = Array(repeating: Self.maskedTextFrame(greeting), count: count)
        pending = Array(repeating: [], count: count)
        upgraded = Array(repeating: false, count: count)
        connections.onConnect = { [unowned self] index in
            send(index, requests[index])
        }
        connections.onBytes = { [unowned self] index, bytes in
            received(index, bytes)
        }
    }

    /// Connects every client, at most `maxPending` at a time, and waits until each is upgraded
    /// or `timeout` seconds have passed. Returns the number upgraded.
    func connectAll(port: UInt16, maxPending: Int, timeout: Double) -> Int {
        let start = monotonicNanoseconds()
        let connected = connections.connectAll(port: port, maxPending: maxPending, timeout: timeout)
        let left = max(0, timeout - Double(monotonicNanoseconds() - start) / 1e9)
        _ = connections.eventLoop.run(timeout: left, until: { upgradedCount + failures.count >= connected })
        return upgradedCount
    }

    func closeAll() {
        connections.closeAll()
    }

    private func send(_ index: Int, _ bytes: [UInt8]) {
        var copy = bytes
        let written = copy.withUnsafeMutableBytes { buffer in
            connections.send(index, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), buffer.count)
        }
        if !written { failures.append("client \(index): a write of \(bytes.count) bytes was short") }
    }

    private func received(_ index: Int, _ bytes: UnsafeRawBufferPointer) {
        if upgraded[index] && pending[index].isEmpty {
            let used = splitFrames(index, bytes)
            if used < bytes.count { pending[index].append(contentsOf: bytes[used...]) }
            return
        }
        pending[index].append(contentsOf: bytes)
        if !upgraded[index] {
            guard let end = headerEnd(pending[index]) else { return }
            let status = String(decoding: pending[index].prefix(12), as: UTF8.self)
            guard status.hasPrefix("HTTP/1.1 101") else {
                failures.append("client \(index): upgrade refused: \(status)")
                pending[index] = []
                return
            }
            upgraded[index] = true
            upgradedCount += 1
            pending[index].removeFirst(end)
            send(index, greetings[index])
        }
        let buffered = pending[index]
        let used = buffered.withUnsafeBytes { splitFrames(index, $0) }
        pending[index].removeFirst(used)
    }

    /// Hands every whole frame at the start of `bytes` to `onMessage` and returns the bytes used.
    private func splitFrames(_ index: Int, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while bytes.count - offset >= 2 {
            let opcode = bytes[offset] & 0x0F
            var length = Int(bytes[offset + 1] & 0x7F)
            var header = 2
            if length == 126 {
                guard bytes.count - offset >= 4 else { break }
                length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                header = 4
            } else if length == 127 {
                guard bytes.count - offset >= 10 else { break }
                length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[offset + 2 + $1]) }
                header = 10
            }
            guard bytes.count - offset >= header + length else { break }
            if opcode == 1 {
                onMessage?(index, UnsafeRawBufferPointer(rebasing: bytes[(offset + header)..<(offset + header + length)]))
            }
            offset += header + length
        }
        return offset
    }

    private func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for end in 4...bytes.count where bytes[end - 4] == 13 && bytes[end - 3] == 10 && bytes[end - 2] == 13 && bytes[end - 1] == 10 {
            return end
        }
        return nil
    }

    /// A client text frame: clients must mask their frames, here with a fixed key.
    private static func maskedTextFrame(_ payload: [UInt8]) -> [UInt8] {
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        frame += key
        for (position, byte) in payload.enumerated() {
            frame.append(byte ^ key[position % 4])
        }
        return frame
    }
}
