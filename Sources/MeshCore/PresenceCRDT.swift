// The presence CRDT: per-replica session counts merged by version, plus a per-user
// last-writer-wins register for custom status.

/// One run of a node. A restarted node gets a fresh epoch and so a fresh replica, which never
/// resurrects the sessions of its earlier run.
struct ReplicaID: Hashable, Comparable, Sendable {
    var name: String
    var epoch: Epoch

    static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool {
        (lhs.name, lhs.epoch) < (rhs.name, rhs.epoch)
    }
}

/// One replica's entry for one user. Only the owning replica writes it.
struct PresenceEntry: Equatable, Sendable {
    /// Open sessions of the user on the replica; 0 is a tombstone.
    var sessionCount: UInt32
    /// Value of the replica's write counter at this write: 1, 2, 3, ... across all its users.
    var version: UInt64
    /// Wall-clock milliseconds of the write; used only for `lastSeen`.
    var changedAt: Int64
}

/// One entry with its key: the unit of gossip.
struct PresenceDelta: Equatable, Sendable {
    var replica: ReplicaID
    var userID: UserID
    var entry: PresenceEntry
}

/// A hybrid logical timestamp plus the writing node: the order of custom status writes.
struct StatusStamp: Comparable, Sendable {
    var wall: Int64
    var counter: UInt32
    var node: String

    static func < (lhs: StatusStamp, rhs: StatusStamp) -> Bool {
        (lhs.wall, lhs.counter, lhs.node) < (rhs.wall, rhs.counter, rhs.node)
    }
}

/// One write of a user's custom status.
struct StatusRecord: Equatable, Sendable {
    var userID: UserID
    var value: CustomStatusValue
    var stamp: StatusStamp
}

/// The hybrid logical clock that stamps local status writes: never behind the wall clock and
/// never behind any stamp this node has seen, so a write made after seeing another wins over it.
struct HybridClock: Sendable {
    private(set) var wall: Int64 = .min
    private(set) var counter: UInt32 = 0

    mutating func tick(wallNow: Int64) -> (wall: Int64, counter: UInt32) {
        if wallNow > wall {
            wall = wallNow
            counter = 0
        } else if counter == .max {
            wall += 1
            counter = 0
        } else {
            counter += 1
        }
        return (wall, counter)
    }

    mutating func observe(_ stamp: StatusStamp) {
        if stamp.wall > wall || (stamp.wall == wall && stamp.counter > counter) {
            wall = stamp.wall
            counter = stamp.counter
        }
    }
}

/// The versions of one replica present on this node. Every version up to `contiguous` is here or
/// was superseded by a later write of the same user, and `seenAbove` lists single versions beyond.
/// Push-pull sends a peer only the entries above its `contiguous`.
struct ReplicaClock: Equatable, Sendable {
    private(set) var contiguous: UInt64 = 0
    private(set) var seenAbove: Set<UInt64> = []

    mutating func record(_ version: UInt64) {
        guard version > contiguous else { return }
        seenAbove.insert(version)
        compact()
    }

    /// Raises `contiguous` to `version`, when a peer's state up to `version` has been merged.
    mutating func advance(to version: UInt64) {
        guard version > contiguous else { return }
        contiguous = version
        seenAbove = seenAbove.filter { $0 > version }
        compact()
    }

    private mutating func compact() {
        while seenAbove.remove(contiguous + 1) != nil {
            contiguous += 1
        }
    }
}

/// The merged presence state of the cluster as one node has it, with the user views derived from
/// it. Merging is commutative, associative and idempotent in `entries` and `statuses`; every
/// mutation returns the user views that changed.
struct PresenceCRDT: Sendable {
    /// user → replica → entry, for live replicas only.
    /// NOTE: tombstones (session count 0) are never collected, so the state grows with every
    /// user ever seen on a live replica.
    private(set) var entries: [UserID: [ReplicaID: PresenceEntry]] = [:]
    private(set) var usersByReplica: [ReplicaID: Set<UserID>] = [:]
    private(set) var clocks: [ReplicaID: ReplicaClock] = [:]
    private(set) var statuses: [UserID: StatusRecord] = [:]
    /// Replicas whose node is dead, left or replaced by a newer run: their deltas are ignored
    /// until `acceptReplica`.
    private(set) var ignoredReplicas: Set<ReplicaID> = []
    /// The last view of each user reported to the shell.
    private(set) var views: [UserID: UserPresenceState] = [:]
    /// Latest `lastSeen` a replica drop left behind for a user, because the drop removes the
    /// entries that held it.
    private var dropTimes: [UserID: Int64] = [:]

    struct MergeResult: Sendable {
        var changes: [UserPresenceState] = []
        var newDeltas: [PresenceDelta] = []
        var newStatuses: [StatusRecord] = []
    }

    func entry(of replica: ReplicaID, user: UserID) -> PresenceEntry? {
        entries[user]?[replica]
    }

    func isIgnored(_ replica: ReplicaID) -> Bool {
        ignoredReplicas.contains(replica)
    }

    /// Merges deltas and status writes; returns the changed views in first-touch order and the
    /// deltas and statuses that were new here.
    mutating func merge(_ deltas: [PresenceDelta], statuses newStatuses: [StatusRecord]) -> MergeResult {
        var result = MergeResult()
        var touched: [UserID] = []
        var touchedSet: Set<UserID> = []
        func touch(_ user: UserID) {
            if touchedSet.insert(user).inserted { touched.append(user) }
        }

        for delta in deltas where !ignoredReplicas.contains(delta.replica) {
            clocks[delta.replica, default: ReplicaClock()].record(delta.entry.version)
            if let current = entries[delta.userID]?[delta.replica], current.version >= delta.entry.version {
                continue
            }
            entries[delta.userID, default: [:]][delta.replica] = delta.entry
            usersByReplica[delta.replica, default: []].insert(delta.userID)
            result.newDeltas.append(delta)
            touch(delta.userID)
        }

        for record in newStatuses {
            if let current = statuses[record.userID], current.stamp >= record.stamp { continue }
            statuses[record.userID] = record
            result.newStatuses.append(record)
            touch(record.userID)
        }

        result.changes = refreshViews(of: touched)
        return result
    }

    /// Drops every entry of `replica` and ignores its later deltas. Users left without a live
    /// session go offline with `lastSeen` = `wall`, the time of the event that dropped it.
    mutating func dropReplica(_ replica: ReplicaID, wall: Int64) -> [UserPresenceState] {
        ignoredReplicas.insert(replica)
        clocks[replica] = nil
        guard let users = usersByReplica.removeValue(forKey: replica) else { return [] }
        let ordered = users.sorted()
        for user in ordered {
            guard let entry = entries[user]?.removeValue(forKey: replica) else { continue }
            if entries[user]?.isEmpty == true { entries[user] = nil }
            let left = entry.sessionCount > 0 ? wall : entry.changedAt
            dropTimes[user] = max(dropTimes[user] ?? .min, left)
        }
        return refreshViews(of: ordered)
    }

    /// Accepts deltas of `replica` again, after its node refuted its death.
    mutating func acceptReplica(_ replica: ReplicaID) {
        ignoredReplicas.remove(replica)
    }

    /// Raises the contiguous clock of `replica`, unless it is ignored.
    mutating func advanceClock(of replica: ReplicaID, to version: UInt64) {
        guard !ignoredReplicas.contains(replica), version > 0 else { return }
        clocks[replica, default: ReplicaClock()].advance(to: version)
    }

    /// Contiguous clock of every replica with state here.
    var contiguousClocks: [ReplicaID: UInt64] {
        clocks.mapValues(\.contiguous)
    }

    /// Every entry, ordered by replica, then version.
    var allDeltas: [PresenceDelta] {
        deltas(newerThan: [:])
    }

    /// Entries a peer with contiguous clocks `peerClocks` may lack: those above the peer's clock
    /// of their replica, ordered by replica, then version.
    func deltas(newerThan peerClocks: [ReplicaID: UInt64]) -> [PresenceDelta] {
        var result: [PresenceDelta] = []
        for replica in usersByReplica.keys.sorted() {
            let floor = peerClocks[replica] ?? 0
            var replicaDeltas: [PresenceDelta] = []
            for user in usersByReplica[replica] ?? [] {
                guard let entry = entries[user]?[replica], entry.version > floor else { continue }
                replicaDeltas.append(PresenceDelta(replica: replica, userID: user, entry: entry))
            }
            replicaDeltas.sort { $0.entry.version < $1.entry.version }
            result.append(contentsOf: replicaDeltas)
        }
        return result
    }

    /// Every status record, ordered by user.
    var allStatuses: [StatusRecord] {
        statuses.keys.sorted().compactMap { statuses[$0] }
    }

    /// Returns the merged presence of `user`: offline with nil `lastSeen` when never seen.
    func view(of user: UserID) -> UserPresenceState {
        // Every user with an entry or a status has a view, because each merge refreshes them.
        views[user] ?? UserPresenceState(userID: user, isOnline: false, lastSeen: nil, custom: nil)
    }

    var onlineUsers: [UserID] {
        views.values.filter(\.isOnline).map(\.userID).sorted()
    }

    /// Recomputes the views of `users` and returns those whose online state or custom status
    /// changed. `lastSeen` alone changes silently, because no client-visible state changed.
    private mutating func refreshViews(of users: [UserID]) -> [UserPresenceState] {
        var changes: [UserPresenceState] = []
        for user in users {
            let fresh = computeView(of: user)
            let previous = view(of: user)
            views[user] = fresh
            if fresh.isOnline != previous.isOnline || fresh.custom != previous.custom {
                changes.append(fresh)
            }
        }
        return changes
    }

    /// Online iff some live replica has a session. Offline `lastSeen` is the latest close this
    /// node has: the newest tombstone or replica drop of the user.
    private func computeView(of user: UserID) -> UserPresenceState {
        let userEntries = entries[user] ?? [:]
        let isOnline = userEntries.values.contains { $0.sessionCount > 0 }
        var lastSeen: Int64? = nil
        if !isOnline {
            let candidates = userEntries.values.map(\.changedAt) + (dropTimes[user].map { [$0] } ?? [])
            lastSeen = candidates.max()
        }
        return UserPresenceState(userID: user, isOnline: isOnline, lastSeen: lastSeen, custom: statuses[user]?.value)
    }
}
