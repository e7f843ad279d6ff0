import Foundation
import Observation
import PresenceProtocol

/// An observable model of user → presence, fed by a `PresenceConnection`.
///
/// The store applies events strictly in the order the connection received
/// them, so it never shows a state older than the last event. SwiftUI views
/// bind to it directly; every mutation happens on the main actor.
@MainActor
@Observable
public final class PresenceStore {
    /// Known users by user ID.
    public private(set) var entries: [String: Entry] = [:]
    /// The `session.ready` of the current connection; nil while disconnected.
    public private(set) var session: SessionReady?
    /// Reason the last connection ended; nil while connected.
    public private(set) var disconnectReason: String?
    /// The last `error` the server sent that no request awaited.
    public private(set) var lastError: ErrorPayload?
    /// Number of events applied, so a view or test can tell that something changed.
    public private(set) var appliedEventCount = 0

    @ObservationIgnored private var followTask: Task<Void, Never>?

    public init() {}

    /// Whether a connection is open and its session is ready.
    public var isConnected: Bool { session != nil }

    public subscript(userId: String) -> Entry? {
        entries[userId]
    }

    /// Entries sorted with online users first, then by user ID.
    public var sortedEntries: [Entry] {
        entries.values.sorted { lhs, rhs in
            if lhs.isOnline != rhs.isOnline { return lhs.isOnline }
            return lhs.userId < rhs.userId
        }
    }

    /// Applies the events of `connection` from now on, until the connection
    /// stops or `stopFollowing` is called. Call it before `connection.start()`
    /// so the first snapshot is not missed. Following a new connection stops
    /// following the previous one.
    public func follow(_ connection: PresenceConnection) {
        followTask?.cancel()
        let events = connection.events()
        followTask = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                self.apply(event)
            }
        }
    }

    /// Stops applying events of the followed connection.
    public func stopFollowing() {
        followTask?.cancel()
        followTask = nil
    }

    /// Applies one event. Snapshots replace the entries of the users they
    /// list. A snapshot in reply to a subscription to every user also marks
    /// users it leaves out as offline, because it lists every online user.
    public func apply(_ event: PresenceEvent) {
        appliedEventCount += 1
        switch event {
        case .sessionReady(let ready):
            session = ready
            disconnectReason = nil
        case .presence(let presence):
            entries[presence.userId] = Entry(presence)
        case .snapshot(let snapshot, let selection):
            applySnapshot(snapshot, selection: selection)
        case .error(let payload, _):
            lastError = payload
        case .disconnected(let reason):
            session = nil
            disconnectReason = reason
        }
    }

    private func applySnapshot(_ snapshot: PresenceSnapshot, selection: UserSelection?) {
        var updated = entries
        let listed = Set(snapshot.users.map(\.userId))
        if selection == .all {
            for (userId, entry) in updated where entry.isOnline && !listed.contains(userId) {
                updated[userId]?.status = .offline
            }
        }
        for presence in snapshot.users {
            updated[presence.userId] = Entry(presence)
        }
        // One assignment, so observers see one change per snapshot.
        entries = updated
    }
}

extension PresenceStore {
    /// Presence of one user as the store last received it.
    public struct Entry: Sendable, Equatable, Identifiable {
        public var userId: String
        public var status: PresenceStatus
        /// When the user's last session closed, if the server reported it.
        public var lastSeen: Date?
        /// The status the user set themselves, if any.
        public var custom: CustomStatus?

        public var id: String { userId }
        public var isOnline: Bool { status == .online }

        public init(userId: String, status: PresenceStatus, lastSeen: Date? = nil, custom: CustomStatus? = nil) {
            self.userId = userId
            self.status = status
            self.lastSeen = lastSeen
            self.custom = custom
        }

        init(_ presence: UserPresence) {
            self.init(
                userId: presence.userId, status: presence.status,
                lastSeen: presence.lastSeen.flatMap(RFC3339.date(from:)), custom: presence.custom)
        }
    }
}
