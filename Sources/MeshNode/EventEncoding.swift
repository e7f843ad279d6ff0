import MeshCore

/// Encodes server events as JSON text by hand: one event is encoded once per change and the
/// same text goes to every subscriber, so the encoder sits on the hot path.
enum EventEncoding {
    static func presencePayload(_ presence: UserPresenceState) -> String {
        var text = "{\"userId\":\(JSONText.quote(presence.userID)),\"status\":\"\(presence.isOnline ? "online" : "offline")\""
        if !presence.isOnline, let lastSeen = presence.lastSeen {
            text += ",\"lastSeen\":\"\(RFC3339.string(fromMilliseconds: lastSeen, fractional: true))\""
        }
        if let custom = presence.custom {
            text += ",\"custom\":{\"status\":\(JSONText.quote(custom.status))"
            if let note = custom.text { text += ",\"text\":\(JSONText.quote(note))" }
            text += "}"
        }
        return text + "}"
    }

    static func userPresence(_ presence: UserPresenceState) -> String {
        "{\"type\":\"user.presence\",\"payload\":\(presencePayload(presence))}"
    }

    /// Encodes a snapshot payload. `truncated` adds `"truncated":true` when `limits.maxSnapshotUsers` cut the list.
    static func snapshotPayload(_ users: [UserPresenceState], truncated: Bool = false) -> String {
        "{\"users\":[" + users.map(presencePayload).joined(separator: ",") + "]" + (truncated ? ",\"truncated\":true}" : "}")
    }

    static func snapshot(_ users: [UserPresenceState], truncated: Bool = false, requestID: String?) -> String {
        "{\"type\":\"presence.snapshot\"\(idField(requestID)),\"payload\":\(snapshotPayload(users, truncated: truncated))}"
    }

    static func sessionReady(sessionID: String, userID: String, node: String) -> String {
        "{\"type\":\"session.ready\",\"payload\":{\"sessionId\":\(JSONText.quote(sessionID)),"
            + "\"userId\":\(JSONText.quote(userID)),\"node\":\(JSONText.quote(node))}}"
    }

    static func error(code: String, message: String, requestID: String?) -> String {
        "{\"type\":\"error\"\(idField(requestID)),\"payload\":{\"code\":\(JSONText.quote(code)),\"message\":\(JSONText.quote(message))}}"
    }

    private static func idField(_ requestID: String?) -> String {
        guard let requestID else { return "" }
        return ",\"id\":\(JSONText.quote(requestID))"
    }
}
