import Foundation
import XCTest

/// A minimal RFC 6455 client on a blocking POSIX socket with a tiny receive buffer, so the
/// node's writes to it are truncated and the node must finish them in order.
final class RawWebSocket {
    let descriptor: Int32
    private var buffer: [UInt8] = []

    init(port: UInt16, path: String, receiveBufferBytes: Int32) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size = receiveBufferBytes
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError(description: "connect to 127.0.0.1:\(port) failed: errno \(errno)") }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try writeAll(Array(request.utf8))
        while true {
            if let end = findHeaderEnd() {
                let head = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(end + 4)
                guard head.hasPrefix("HTTP/1.1 101") else { throw HarnessError(description: "upgrade failed: \(head)") }
                return
            }
            try fill()
        }
    }

    deinit { close(descriptor) }

    private func findHeaderEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4) where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = recv(descriptor, &chunk, chunk.count, 0)
        guard count > 0 else { throw HarnessError(description: "connection closed or timed out while reading (\(count), errno \(errno))") }
        buffer += chunk[..<count]
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written > 0 else { throw HarnessError(description: "write failed: errno \(errno)") }
            offset += written
        }
    }

    /// Sends one masked text frame, as RFC 6455 requires of clients.
    func sendText(_ text: String) throws {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try writeAll(frame)
    }

    /// Reads the next text message (server frames are unmasked; control frames are skipped).
    func readText() throws -> String {
        while true {
            while buffer.count < 2 { try fill() }
            let opcode = buffer[0] & 0x0F
            var length = Int(buffer[1] & 0x7F)
            var header = 2
            if length == 126 {
                while buffer.count < 4 { try fill() }
                length = Int(buffer[2]) << 8 | Int(buffer[3])
                header = 4
            } else if length == 127 {
                while buffer.count < 10 { try fill() }
                length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            while buffer.count < header + length { try fill() }
            let payload = Array(buffer[header..<(header + length)])
            buffer.removeFirst(header + length)
            if opcode == 0x1 { return String(decoding: payload, as: UTF8.self) }
            if opcode == 0x8 { throw HarnessError(description: "server closed the connection") }
        }
    }
}

final class SlowSubscriberTests: XCTestCase {
    func testSlowSubscriber_getsEveryEventInOrder() async throws {
        let node = try NodeProcess.start(name: "node-1")
        defer { node.stop() }
        let subscriber = try RawWebSocket(port: node.clientPort, path: "/v1/ws?userId=slow&observe=true", receiveBufferBytes: 4096)
        XCTAssertTrue(try subscriber.readText().contains("session.ready"))
        try subscriber.sendText(#"{"type":"presence.subscribe","id":"s","payload":{"userIds":["talker"]}}"#)
        XCTAssertTrue(try subscriber.readText().contains("presence.snapshot"))

        // The talker sets its status many times while the subscriber reads nothing, so the node's
        // socket buffer to the subscriber fills and writes to it are truncated.
        let talker = try await TestClient.connect(node: node, user: "talker")
        let count = 8_000
        let padding = String(repeating: "x", count: 240)
        for index in 0..<count {
            talker.send(#"{"type":"presence.set","payload":{"status":"away","text":"\#(index) \#(padding)"}}"#)
        }
        try await Task.sleep(for: .seconds(1))

        var texts: [String] = []
        while texts.count < count {
            let message = try subscriber.readText()
            guard let object = try JSONSerialization.jsonObject(with: Data(message.utf8)) as? [String: Any],
                let payload = object["payload"] as? [String: Any], let custom = payload["custom"] as? [String: Any],
                let text = custom["text"] as? String
            else { continue }
            texts.append(String(text.prefix { $0 != " " }))
        }
        XCTAssertEqual(texts, (0..<count).map(String.init))
        talker.close()

        let (_, metrics) = try await node.get("/metrics")
        let text = String(decoding: metrics, as: UTF8.self)
        func value(_ name: String) -> Int {
            let line = text.split(separator: "\n").first { $0.hasPrefix("\(name) ") }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        }
        XCTAssertGreaterThan(value("presencemesh_frames_behind_partial_writes_total"), 0, "no write to the slow subscriber was truncated")
        XCTAssertGreaterThan(value("presencemesh_frames_written_directly_total"), 0)
        XCTAssertGreaterThan(value("presencemesh_frames_truncated_direct_writes_total"), 0, "no direct write was truncated")
    }
}

final class KeepaliveTests: XCTestCase {
    func testSilentClient_closedAndOffline() async throws {
        let configPath = FileManager.default.temporaryDirectory.appendingPathComponent("keepalive-\(UUID().uuidString).json").path
        let config = #"{"name":"keepalive","limits":{"pingIntervalMs":300,"idleTimeoutMs":900}}"#
        FileManager.default.createFile(atPath: configPath, contents: Data(config.utf8))
        defer { try? FileManager.default.removeItem(atPath: configPath) }
        let node = try NodeProcess.start(name: "keepalive", extraArguments: ["--config", configPath])
        defer { node.stop() }

        // libwebsockets replies to pings by itself, so this watcher stays although it sends nothing.
        let watcher = try await TestClient.connect(node: node, user: "watcher")
        watcher.subscribe(["ghost"])
        try await watcher.waitForMessage(type: "presence.snapshot", id: "sub")
        // The raw client never replies to pings, like a phone that lost its network.
        let ghost = try RawWebSocket(port: node.clientPort, path: "/v1/ws?userId=ghost", receiveBufferBytes: 65_536)
        try await watcher.waitForStatus("online", of: "ghost")

        try await watcher.waitForStatus("offline", of: "ghost", timeout: .seconds(5))
        try await Task.sleep(for: .seconds(1))
        XCTAssertTrue(watcher.isOpen)
        let (_, metrics) = try await node.get("/metrics")
        XCTAssertTrue(String(decoding: metrics, as: UTF8.self).contains("presencemesh_idle_sessions_closed_total 1\n"))
        _ = ghost
        watcher.close()
    }

    func testClosedLogPipe_nodeKeepsRunning() async throws {
        let pipe = Pipe()
        let node = try NodeProcess.start(name: "node-1", logPipe: pipe)
        defer { node.stop() }
        // The reader of the node's stderr goes away, as when `| head` exits.
        try pipe.fileHandleForReading.close()
        try pipe.fileHandleForWriting.close()
        for index in 0..<3 {
            let client = try await TestClient.connect(node: node, user: "user-\(index)")
            client.close()
        }
        let (status, _) = try await node.get("/healthz")
        XCTAssertEqual(status, 200)
        XCTAssertTrue(node.process.isRunning)
    }

    func testForeignClientAddress_exitsNamingIt() throws {
        let process = Process()
        process.executableURL = NodeProcess.binary
        // 192.0.2.1 is a documentation address (RFC 5737) that no interface here has; the bind
        // fails before any packet is sent.
        process.arguments = ["--name", "n", "--client", "192.0.2.1:0", "--gossip", "127.0.0.1:0", "--preset", "local"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { process.terminate() }
        XCTAssertFalse(process.isRunning, "the node kept running with no client listener")
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 1, text)
        XCTAssertTrue(text.contains("clientListen 192.0.2.1:0"), text)
        XCTAssertTrue(text.contains("no interface of this machine has that address"), text)
    }
}

final class PresencectlTests: XCTestCase {
    func testWatch_rejectedSubscription_exitsWithError() async throws {
        let configPath = FileManager.default.temporaryDirectory.appendingPathComponent("watch-limit-\(UUID().uuidString.prefix(8)).json").path
        try #"{"name": "node-1", "limits": {"maxWildcardSubscribers": 0}}"#.write(toFile: configPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: configPath) }
        let node = try NodeProcess.start(name: "node-1", extraArguments: ["--config", configPath])
        defer { node.stop() }

        let watch = Process()
        watch.executableURL = NodeProcess.binary.deletingLastPathComponent().appendingPathComponent("presencectl")
        watch.arguments = ["watch", "--node", "ws://\(node.clientAddress)", "--for", "20"]
        let errors = Pipe()
        watch.standardError = errors
        watch.standardOutput = FileHandle.nullDevice
        try watch.run()
        let deadline = Date().addingTimeInterval(15)
        while watch.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if watch.isRunning { watch.terminate() }
        XCTAssertFalse(watch.isRunning, "watch kept waiting after the node rejected its subscription")
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(watch.terminationStatus, 1, text)
        XCTAssertTrue(text.contains("wildcard_limit"), text)
    }

    func testChatList_toPipe_writesNoEscapes() async throws {
        let node = try NodeProcess.start(name: "node-1")
        defer { node.stop() }
        let chatList = Process()
        chatList.executableURL = NodeProcess.binary.deletingLastPathComponent().appendingPathComponent("presencectl")
        chatList.arguments = ["chatlist", "--node", "ws://\(node.clientAddress)", "--user", "bob", "--contacts", "alice,carol", "--once", "2"]
        let output = Pipe()
        chatList.standardOutput = output
        chatList.standardError = FileHandle.nullDevice
        try chatList.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        chatList.waitUntilExit()
        XCTAssertTrue(text.contains("Chats of bob"), text)
        XCTAssertTrue(text.contains("alice"), text)
        XCTAssertFalse(text.contains("\u{1B}"), text)
    }
}
