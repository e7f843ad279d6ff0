import Foundation
import PresenceProtocol

/// A server event decoded from the client protocol, or a change of the
/// connection itself, in the order the connection saw them.
public enum PresenceEvent: Sendable, Equatable {
    /// `session.ready`: the first event on every (re)connection.
    case sessionReady(SessionReady)
    /// `user.presence`: one user's presence or custom status changed.
    case presence(UserPresence)
    /// `presence.snapshot` in reply to a subscription. `selection` is the set
    /// of users the subscription asked for, or nil when the reply matched no
    /// request this connection sent.
    case snapshot(PresenceSnapshot, selection: UserSelection?)
    /// `error` from the server. `requestId` is the ID of the request it replies to, if any.
    case error(ErrorPayload, requestId: String?)
    /// The connection was lost or could not be opened, for `reason`. The
    /// connection retries unless it was stopped.
    case disconnected(reason: String)
}

/// A server message decoded far enough to route it.
public enum ServerMessage: Equatable, Sendable {
    case sessionReady(SessionReady)
    case presence(UserPresence)
    case snapshot(PresenceSnapshot, requestId: String?)
    case error(ErrorPayload, requestId: String?)
    /// A well-formed message of a type this client does not know; newer
    /// servers may add types, so these are skipped.
    case unknown(type: String)

    private struct Header: Decodable {
        var type: String
        var id: String?
    }

    /// Decodes one text frame; throws `DecodingError` on malformed JSON or payloads.
    public static func decode(_ text: String, decoder: JSONDecoder = JSONDecoder()) throws -> ServerMessage {
        let data = Data(text.utf8)
        let header = try decoder.decode(Header.self, from: data)
        switch header.type {
        case ServerEventType.sessionReady:
            return .sessionReady(try decoder.decode(Envelope<SessionReady>.self, from: data).payload)
        case ServerEventType.userPresence:
            return .presence(try decoder.decode(Envelope<UserPresence>.self, from: data).payload)
        case ServerEventType.snapshot:
            return .snapshot(try decoder.decode(Envelope<PresenceSnapshot>.self, from: data).payload, requestId: header.id)
        case ServerEventType.error:
            return .error(try decoder.decode(Envelope<ErrorPayload>.self, from: data).payload, requestId: header.id)
        default:
            return .unknown(type: header.type)
        }
    }
}

/// Parses the RFC 3339 UTC times of `lastSeen`, with or without fractional seconds.
public enum RFC3339 {
    public static func date(from text: String) -> Date? {
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) {
            return date
        }
        return try? Date.ISO8601FormatStyle().parse(text)
    }
}
