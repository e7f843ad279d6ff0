#if canImport(Darwin)
import Foundation

/// A `WebSocketTransport` on `URLSessionWebSocketTask`, for Apple platforms.
public final class URLSessionTransport: NSObject, WebSocketTransport, URLSessionWebSocketDelegate, @unchecked Sendable {
    private struct State {
        var task: URLSessionWebSocketTask?
        var session: URLSession?
        var continuation: AsyncStream<WebSocketEvent>.Continuation?
        var connectCalled = false
    }

    private let state = Locked(State())

    public func connect(to url: URL, headers: [String: String]) -> AsyncStream<WebSocketEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: WebSocketEvent.self)
        var request = URLRequest(url: url)
        for (name, value) in headers {
            request.setValue(value, forHTTPHeaderField: name)
        }
        let session = URLSession(configuration: .default, delegate: self, delegateQueue: nil)
        let task = session.webSocketTask(with: request)
        let started = state.withLock { state -> Bool in
            guard !state.connectCalled else { return false }
            state.connectCalled = true
            state.task = task
            state.session = session
            state.continuation = continuation
            return true
        }
        guard started else {
            session.invalidateAndCancel()
            continuation.yield(.failed("connect was already called on this transport; create a new one per connection"))
            continuation.finish()
            return stream
        }
        task.resume()
        return stream
    }

    public func send(_ text: String) {
        guard let task = state.withLock({ $0.task }) else { return }
        task.send(.string(text)) { [weak self] error in
            if let error { self?.finish(.failed("send failed: \(error.localizedDescription)")) }
        }
    }

    public func close() {
        let task = state.withLock { $0.task }
        guard let task else {
            finish(.closed(code: nil, reason: "closed before connecting"))
            return
        }
        task.cancel(with: .normalClosure, reason: nil)
    }

    /// Receives one message, then requests the next, because URLSession
    /// delivers messages only on request. It reassembles fragments itself.
    private func receiveNext(_ task: URLSessionWebSocketTask) {
        task.receive { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(.string(let text)):
                self.yield(.text(text))
                self.receiveNext(task)
            case .success:
                // NOTE: binary messages are not part of the client protocol and are dropped.
                self.receiveNext(task)
            case .failure(let error):
                let code = task.closeCode == .invalid ? nil : task.closeCode.rawValue
                if let code {
                    let reason = task.closeReason.map { String(decoding: $0, as: UTF8.self) } ?? ""
                    self.finish(.closed(code: code, reason: reason))
                } else {
                    self.finish(.failed(error.localizedDescription))
                }
            }
        }
    }

    public func urlSession(
        _ session: URLSession, webSocketTask: URLSessionWebSocketTask, didOpenWithProtocol protocol: String?
    ) {
        yield(.opened)
        receiveNext(webSocketTask)
    }

    public func urlSession(
        _ session: URLSession, webSocketTask: URLSessionWebSocketTask,
        didCloseWith closeCode: URLSessionWebSocketTask.CloseCode, reason: Data?
    ) {
        let text = reason.map { String(decoding: $0, as: UTF8.self) } ?? ""
        finish(.closed(code: closeCode == .invalid ? nil : closeCode.rawValue, reason: text))
    }

    public func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        if let error {
            finish(.failed(error.localizedDescription))
        } else {
            finish(.closed(code: nil, reason: ""))
        }
    }

    private func yield(_ event: WebSocketEvent) {
        state.withLock { $0.continuation?.yield(event) }
    }

    /// Delivers the last event, ends the stream and releases the session,
    /// which otherwise keeps its delegate alive.
    private func finish(_ event: WebSocketEvent) {
        let (continuation, session) = state.withLock { state in
            defer {
                state.continuation = nil
                state.session = nil
                state.task = nil
            }
            return (state.continuation, state.session)
        }
        continuation?.yield(event)
        continuation?.finish()
        session?.finishTasksAndInvalidate()
    }
}
#endif
