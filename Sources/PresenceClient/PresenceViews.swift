#if canImport(SwiftUI)
import PresenceProtocol
import SwiftUI

/// A small dot for an avatar's corner: green while the user is online,
/// gray otherwise or while unknown.
public struct PresenceDot: View {
    private let store: PresenceStore
    private let userId: String
    private let diameter: CGFloat

    public init(store: PresenceStore, userId: String, diameter: CGFloat = 10) {
        self.store = store
        self.userId = userId
        self.diameter = diameter
    }

    public var body: some View {
        let online = store[userId]?.isOnline ?? false
        Circle()
            .fill(online ? Color.green : Color.gray)
            .frame(width: diameter, height: diameter)
            .overlay(Circle().stroke(Color.white, lineWidth: diameter / 5))
            .accessibilityLabel(online ? "Online" : "Offline")
    }
}

/// One row of a chat list: avatar initial with a presence dot, the contact's
/// name, and their custom status, "Online" or when they were last seen.
public struct ChatListRow: View {
    private let store: PresenceStore
    private let userId: String
    private let title: String

    public init(store: PresenceStore, userId: String, title: String? = nil) {
        self.store = store
        self.userId = userId
        self.title = title ?? userId
    }

    public var body: some View {
        HStack(spacing: 12) {
            ZStack(alignment: .bottomTrailing) {
                Circle()
                    .fill(Color.secondary.opacity(0.25))
                    .frame(width: 40, height: 40)
                    .overlay(Text(title.prefix(1).uppercased()).font(.headline))
                PresenceDot(store: store, userId: userId, diameter: 12)
            }
            VStack(alignment: .leading, spacing: 2) {
                Text(title).font(.body)
                Text(subtitle).font(.caption).foregroundStyle(.secondary)
            }
        }
    }

    private var subtitle: String {
        guard let entry = store[userId] else { return "Unknown" }
        if let custom = entry.custom, custom.status != "online" {
            return [custom.status.capitalized, custom.text].compactMap { $0 }.joined(separator: ": ")
        }
        if entry.isOnline { return "Online" }
        guard let lastSeen = entry.lastSeen else { return "Offline" }
        return "Last seen " + lastSeen.formatted(.relative(presentation: .named))
    }
}
#endif
