// A client WebSocket session that records every server message with the instant it arrived, for
// `presencectl demo` and `presencectl bench`. Callers run on an ordinary thread and block in the
// wait methods, while a task drains the transport's event stream and timestamps each message.

import Foundation
import PresenceClient
import PresenceProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A server message of the client protocol, decoded as far as demo and bench checks need.
enum ServerFrame: Sendable {
    case ready(SessionReady)
    case presence(UserPresence)
    case snapshot(PresenceSnapshot, requestId: String?)
    case error(ErrorPayload, requestId: String?)
    /// A message of another type, or one that did not decode, described by the text.
    case other(String)

    static func decode(_ text: String) -> ServerFrame {
        do {
            switch try ServerMessage.decode(text) {
            case .sessionReady(let ready): return .ready(ready)
            case .presence(let presence): return .presence(presence)
            case .snapshot(let snapshot, let requestId): return .snapshot(snapshot, requestId: requestId)
            case .error(let error, let requestId): return .error(error, requestId: requestId)
            case .unknown(let type): return .other("message of type \(type)")
            }
        } catch {
            return .other("undecodable message \(text.prefix(200)): \(error)")
        }
    }
}

/// One received server message and the moment it arrived.
struct Arrival: Sendable {
    /// Monotonic instant at which the message came out of the transport's event stream in this
    /// process. Latencies are differences of these instants.
    let instant: ContinuousClock.Instant
    /// Wall-clock time of the same moment, for printing.
    let date: Date
    let frame: ServerFrame

    /// The payload when this is a `user.presence` event.
    var presence: UserPresence? {
        if case .presence(let presence) = frame { return presence }
        return nil
    }
}

/// Outcome of a wait for a message.
enum ArrivalWait {
    case arrived(Arrival)
    case timedOut
    /// The connection closed or failed first, as the text describes.
    case connectionEnded(String)
    /// SIGINT or SIGTERM reached presencectl during the wait.
    case interrupted
}

/// One WebSocket session to a node. It connects when created and records every message it
/// receives, in order, until the connection ends.
final class RecordingSession: @unchecked Sendable {
    /// Name for messages, such as "node-2 observer".
    let label: String
    let userId: String
    let url: URL
    /// Monotonic instant taken right before the transport started to connect.
    let connectStarted: ContinuousClock.Instant

    private let transport: any WebSocketTransport
    private let onPresence: (@Sendable (RecordingSession, Arrival) -> Void)?

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var arrivals: [Arrival] = []
    private var opened = false
    private var ending: String?
    private var requestNumber = 0

    /// Connects `userId` to the node whose client port is `node`. With `observe`, the session
    /// watches without making its user online. `onPresence` runs on the stream-draining task for
    /// each `user.presence` event, right after it is recorded.
    init(
        node: NodeAddress, userId: String, observe: Bool, label: String,
        onPresence: (@Sendable (RecordingSession, Arrival) -> Void)? = nil
    ) {
        self.label = label
        self.userId = userId
        self.onPresence = onPresence
        var text = "ws://\(node.connectable)/v1/ws?userId=\(userId)"
        if observe { text += "&observe=true" }
        // User IDs contain only [A-Za-z0-9._:@-], which a URL query may carry unescaped.
        url = URL(string: text)!
        transport = PlatformWebSocket.makeTransport()

        connectStarted = .now
        let stream = transport.connect(to: url, headers: [:])
        Task.detached { [self] in
            for await event in stream {
                record(event)
            }
            end("the event stream finished")
        }
    }

    private func record(_ event: WebSocketEvent) {
        switch event {
        case .opened:
            condition.withLock { opened = true }
            condition.broadcast()
        case .text(let text):
            // The instant is taken before decoding, so the decoder's cost is not part of a latency.
            let instant = ContinuousClock.now
            let arrival = Arrival(instant: instant, date: Date(), frame: ServerFrame.decode(text))
            condition.withLock { arrivals.append(arrival) }
            condition.broadcast()
            if arrival.presence != nil {
                onPresence?(self, arrival)
            }
        case .closed(let code, let reason):
            var text = code.map { "closed with code \($0)" } ?? "closed without a close code"
            if !reason.isEmpty { text += " (\(reason))" }
            end(text)
        case .failed(let reason):
            end("failed: \(reason)")
        }
    }

    private func end(_ description: String) {
        condition.withLock {
            if ending == nil { ending = description }
        }
        condition.broadcast()
    }

    /// Number of messages recorded so far. A wait that starts from it sees only later messages.
    var mark: Int {
        condition.withLock { arrivals.count }
    }

    /// Description of the connection's end, such as "closed with code 1001", or nil while it is open or opening.
    var endDescription: String? {
        condition.withLock { ending }
    }

    /// Returns every `user.presence` event for `user` recorded so far, in order of arrival.
    func presenceArrivals(for user: String) -> [Arrival] {
        condition.withLock { arrivals.filter { $0.presence?.userId == user } }
    }

    /// Waits for the first message at index `mark` or later that `matches` accepts. Messages that
    /// arrived before the connection ended are still found after it ended.
    func waitForArrival(
        from mark: Int, until deadline: ContinuousClock.Instant, matching matches: (ServerFrame) -> Bool
    ) -> ArrivalWait {
        condition.lock()
        defer { condition.unlock() }
        var index = mark
        while true {
            while index < arrivals.count {
                if matches(arrivals[index].frame) { return .arrived(arrivals[index]) }
                index += 1
            }
            if let ending { return .connectionEnded(ending) }
            if interruptRequested { return .interrupted }
            let now = ContinuousClock.now
            if now >= deadline { return .timedOut }
            // Short slices, so that Ctrl-C ends a long wait promptly.
            let slice = min(deadline - now, .milliseconds(100))
            _ = condition.wait(until: Date().addingTimeInterval(seconds(slice)))
        }
    }

    /// Waits for the first `user.presence` event for `user` with `status`, from `mark` on.
    func waitForPresence(
        of user: String, status: PresenceStatus, from mark: Int, until deadline: ContinuousClock.Instant
    ) -> ArrivalWait {
        waitForArrival(from: mark, until: deadline) { frame in
            guard case .presence(let presence) = frame else { return false }
            return presence.userId == user && presence.status == status
        }
    }

    /// Waits for `session.ready` and returns its payload. Throws a `ClusterError` naming this
    /// session when it does not arrive in time or the node sends an error first.
    @discardableResult
    func waitUntilReady(until deadline: ContinuousClock.Instant) throws -> SessionReady {
        let outcome = waitForArrival(from: 0, until: deadline) { frame in
            switch frame {
            case .ready, .error: return true
            default: return false
            }
        }
        switch outcome {
        case .arrived(let arrival):
            if case .ready(let ready) = arrival.frame { return ready }
            if case .error(let payload, _) = arrival.frame {
                throw ClusterError("\(label): the node rejected the session: \(payload.code): \(payload.message)")
            }
            throw ClusterError("\(label): unexpected first message")
        case .timedOut:
            throw ClusterError("\(label): no session.ready from \(url.absoluteString) within the timeout")
        case .connectionEnded(let how):
            throw ClusterError("\(label): the connection to \(url.absoluteString) \(how) before session.ready")
        case .interrupted:
            throw ClusterError("interrupted")
        }
    }

    /// Subscribes to `users` and returns the snapshot the node replies with. The session must be
    /// ready, because the transport drops messages sent before the handshake completes.
    @discardableResult
    func subscribe(to users: [String], until deadline: ContinuousClock.Instant) throws -> PresenceSnapshot {
        let requestId: String = condition.withLock {
            requestNumber += 1
            return "subscribe-\(requestNumber)"
        }
        let start = mark
        let request = Envelope(
            type: ClientRequestType.subscribe, id: requestId,
            payload: UserSelectionPayload(userIds: .users(users)))
        let data = try JSONEncoder().encode(request)
        transport.send(String(decoding: data, as: UTF8.self))

        let outcome = waitForArrival(from: start, until: deadline) { frame in
            switch frame {
            case .snapshot(_, let id), .error(_, let id): return id == requestId
            default: return false
            }
        }
        switch outcome {
        case .arrived(let arrival):
            if case .snapshot(let snapshot, _) = arrival.frame { return snapshot }
            if case .error(let payload, _) = arrival.frame {
                throw ClusterError("\(label): subscribing to \(users.joined(separator: ",")) failed: \(payload.code): \(payload.message)")
            }
            throw ClusterError("\(label): unexpected reply to \(requestId)")
        case .timedOut:
            throw ClusterError("\(label): no snapshot in reply to presence.subscribe within the timeout")
        case .connectionEnded(let how):
            throw ClusterError("\(label): the connection \(how) before the subscription was confirmed")
        case .interrupted:
            throw ClusterError("interrupted")
        }
    }

    /// Starts the closing handshake; the recorded messages stay readable.
    func close() {
        transport.close()
    }

    /// Waits until the connection has ended; returns false if it is still open at `deadline`.
    func waitUntilEnded(until deadline: ContinuousClock.Instant) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while ending == nil {
            let now = ContinuousClock.now
            if now >= deadline { return false }
            _ = condition.wait(until: Date().addingTimeInterval(seconds(min(deadline - now, .milliseconds(100)))))
        }
        return true
    }
}

/// Converts a duration to seconds.
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Converts a duration to milliseconds.
func milliseconds(_ duration: Duration) -> Double {
    seconds(duration) * 1000
}

/// Formats a latency with a precision that suits its size, such as "0.412 ms", "38.1 ms" or "2514 ms".
func formatLatency(_ duration: Duration) -> String {
    let value = milliseconds(duration)
    switch abs(value) {
    case ..<10: return String(format: "%.3f ms", value)
    case ..<100: return String(format: "%.1f ms", value)
    default: return String(format: "%.0f ms", value)
    }
}

/// Serializes lines on stdout, because narration on the main thread and events from the
/// stream-draining tasks print at the same time.
enum SharedOutput {
    private static let lock = NSLock()

    static func line(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        print(text)
        fflush(nil)
    }
}

/// Formats the local time of day with milliseconds, such as "14:03:22.481".
func timeOfDay(_ date: Date) -> String {
    var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
    let millisecondsPart = Int((date.timeIntervalSince1970 - Double(seconds)) * 1000)
    var parts = tm()
    localtime_r(&seconds, &parts)
    return String(format: "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min, parts.tm_sec, millisecondsPart)
}
