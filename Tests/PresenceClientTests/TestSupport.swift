import Foundation
import PresenceClient
import PresenceProtocol
import XCTest

/// Polls `condition` every 10 ms until it holds; fails the test and throws
/// when `timeout` passes first, so no test waits forever.
func waitUntil(
    _ description: String, timeout: Duration = .seconds(5), file: StaticString = #filePath, line: UInt = #line,
    isolation: isolated (any Actor)? = #isolation, _ condition: () async -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    XCTFail("timed out after \(timeout) waiting until \(description)", file: file, line: line)
    throw TestServerError("timed out waiting until \(description)")
}

/// Collects everything a stream delivers, for tests to wait on and inspect.
final class Recorder<Element: Sendable>: Sendable {
    private let storage = Locked<[Element]>([])
    private let finishedFlag = Locked(false)
    private let task: Locked<Task<Void, Never>?> = Locked(nil)

    init(_ stream: AsyncStream<Element>) {
        let storage = self.storage
        let finishedFlag = self.finishedFlag
        task.withLock {
            $0 = Task {
                for await element in stream {
                    storage.withLock { $0.append(element) }
                }
                finishedFlag.withLock { $0 = true }
            }
        }
    }

    var elements: [Element] { storage.withLock { $0 } }
    var isFinished: Bool { finishedFlag.withLock { $0 } }

    func cancel() {
        task.withLock { $0?.cancel() }
    }
}

extension PresenceEvent {
    var isSessionReady: Bool {
        if case .sessionReady = self { return true }
        return false
    }

    var isSnapshot: Bool {
        if case .snapshot = self { return true }
        return false
    }

    var isDisconnected: Bool {
        if case .disconnected = self { return true }
        return false
    }
}

/// Returns a connection configuration with short backoff delays.
func fastConfiguration() -> PresenceConnection.Configuration {
    var configuration = PresenceConnection.Configuration()
    configuration.backoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
    configuration.requestTimeout = .seconds(3)
    return configuration
}

/// Encodes a `user.presence` event as the server does.
func presenceEventJSON(_ presence: UserPresence) -> String {
    let envelope = Envelope(type: ServerEventType.userPresence, payload: presence)
    return String(decoding: try! JSONEncoder().encode(envelope), as: UTF8.self)
}

/// Returns a port on 127.0.0.1 that nothing listens on, by binding port 0,
/// reading the port back and closing the socket.
func unusedLocalPort() -> Int {
    let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socketFD) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            _ = bind(socketFD, socketAddress, length)
            _ = getsockname(socketFD, socketAddress, &length)
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
