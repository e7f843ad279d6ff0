import Foundation

/// Event of a WebSocket connection, delivered in order. After `.closed` or `.failed`
/// nothing more arrives and the event stream finishes.
public enum WebSocketEvent: Sendable, Equatable {
    /// The opening handshake completed; `send` now reaches the peer.
    case opened
    /// One complete text message, reassembled from its fragments.
    case text(String)
    /// The connection closed. `code` is the close code the peer sent, or nil
    /// when it sent none (a dropped TCP connection or a local close).
    case closed(code: Int?, reason: String)
    /// The connection could not be opened or failed while open.
    case failed(String)
}

/// A client WebSocket carrying text messages. One transport object carries
/// one connection: to reconnect, create a new one.
///
/// Implementations MUST be safe to call from any thread or task, and MUST
/// deliver every event of a connection on the stream that `connect` returns.
public protocol WebSocketTransport: AnyObject, Sendable {
    /// Starts the opening handshake with `url` (`ws://` or `wss://`), sending
    /// `headers` as extra HTTP request headers. A second call returns a stream that fails at once.
    func connect(to url: URL, headers: [String: String]) -> AsyncStream<WebSocketEvent>

    /// Queues one text message. Messages sent before `.opened` or after a
    /// close are dropped.
    func send(_ text: String)

    /// Starts the closing handshake with code 1000, or abandons a connection
    /// still opening. The stream then ends with `.closed`.
    func close()
}

/// Creates the transport for one connection attempt.
public typealias WebSocketTransportFactory = @Sendable () -> any WebSocketTransport

/// The transport this platform supports: URLSessionWebSocketTask on Apple
/// platforms, libwebsockets on Linux.
public enum PlatformWebSocket {
    public static let makeTransport: WebSocketTransportFactory = {
        #if canImport(Darwin)
        return URLSessionTransport()
        #else
        return LibWebSocketsTransport()
        #endif
    }
}
