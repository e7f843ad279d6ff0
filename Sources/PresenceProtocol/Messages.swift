// Wire types of the client protocol: one JSON object per WebSocket text frame,
// `{"type": "...", "id": "optional request id", "payload": {...}}`.

/// Presence of one user as clients see it.
public enum PresenceStatus: String, Codable, Sendable, Equatable {
    case online
    case offline
}

/// A status the user set themselves, shared by all of their devices.
public struct CustomStatus: Codable, Sendable, Equatable {
    /// One of `online`, `away`, `busy`.
    public var status: String
    public var text: String?

    public init(status: String, text: String? = nil) {
        self.status = status
        self.text = text
    }
}

/// Payload of `user.presence` events and of each row of a snapshot.
public struct UserPresence: Codable, Sendable, Equatable {
    public var userId: String
    public var status: PresenceStatus
    /// RFC 3339 UTC time of the last session's close; present when offline and known.
    public var lastSeen: String?
    public var custom: CustomStatus?

    public init(userId: String, status: PresenceStatus, lastSeen: String? = nil, custom: CustomStatus? = nil) {
        self.userId = userId
        self.status = status
        self.lastSeen = lastSeen
        self.custom = custom
    }
}

/// Payload of `session.ready`, the first event on every connection.
public struct SessionReady: Codable, Sendable, Equatable {
    public var sessionId: String
    public var userId: String
    public var node: String

    public init(sessionId: String, userId: String, node: String) {
        self.sessionId = sessionId
        self.userId = userId
        self.node = node
    }
}

/// Payload of `presence.snapshot` replies and of `GET /v1/presence?userIds=`.
public struct PresenceSnapshot: Codable, Sendable, Equatable {
    public var users: [UserPresence]

    public init(users: [UserPresence]) {
        self.users = users
    }
}

/// Payload of `error` events.
public struct ErrorPayload: Codable, Sendable, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// Event type names sent by the server.
public enum ServerEventType {
    public static let sessionReady = "session.ready"
    public static let userPresence = "user.presence"
    public static let snapshot = "presence.snapshot"
    public static let error = "error"
}

/// Request type names sent by clients.
public enum ClientRequestType {
    public static let subscribe = "presence.subscribe"
    public static let unsubscribe = "presence.unsubscribe"
    public static let query = "presence.query"
    public static let set = "presence.set"
}

/// One message in either direction, generic over its payload.
public struct Envelope<Payload: Codable & Sendable>: Codable, Sendable {
    public var type: String
    public var id: String?
    public var payload: Payload

    public init(type: String, id: String? = nil, payload: Payload) {
        self.type = type
        self.id = id
        self.payload = payload
    }
}

/// The user set selected by `presence.subscribe`, `presence.unsubscribe` and
/// `presence.query`: a list of IDs, or `"*"` for every user.
public enum UserSelection: Codable, Sendable, Equatable {
    case all
    case users([String])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            guard text == "*" else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "userIds must be an array of user IDs or \"*\", got \"\(text)\"")
            }
            self = .all
            return
        }
        self = .users(try container.decode([String].self))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .all: try container.encode("*")
        case .users(let ids): try container.encode(ids)
        }
    }
}

/// Payload of `presence.subscribe`, `presence.unsubscribe` and `presence.query`.
public struct UserSelectionPayload: Codable, Sendable, Equatable {
    public var userIds: UserSelection

    public init(userIds: UserSelection) {
        self.userIds = userIds
    }
}

/// Payload of `presence.set`.
public struct SetStatusPayload: Codable, Sendable, Equatable {
    public var status: String
    public var text: String?

    public init(status: String, text: String? = nil) {
        self.status = status
        self.text = text
    }
}

/// Rules for user IDs: 1 to 128 bytes of `[A-Za-z0-9._:@-]`.
public enum UserIDRules {
    public static let maxBytes = 128

    /// Returns nil when `id` is valid, otherwise the reason it is not.
    public static func validationError(_ id: String) -> String? {
        let bytes = Array(id.utf8)
        if bytes.isEmpty { return "user ID is empty" }
        if bytes.count > maxBytes { return "user ID is \(bytes.count) bytes, the maximum is \(maxBytes)" }
        for byte in bytes where !isAllowed(byte) {
            return "user ID contains a character outside [A-Za-z0-9._:@-]"
        }
        return nil
    }

    public static func isValid(_ id: String) -> Bool { validationError(id) == nil }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}
