// The presence CRDT: per-replica session counts merged by version, a per-user last-writer-wins
// register for custom status, and a per-user max register for the `lastSeen` of dropped replicas.

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

/// One value of a user's `lastSeen` register: the unit that gossip and push-pull carry.
struct LastSeenRecord: Equatable, Sendable {
    var userID: UserID
    /// Wall-clock milliseconds: the `lastSeen` the writer left for the user.
    var wall: Int64
    /// Milliseconds since the value was written, as the sender measured it. Gossip carries only
    /// fresh writes, so it sends no age and the receiver reads 0.
    var ageMs: UInt64 = 0
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

/// One write of a user's custom status. The writes of one user form a last-writer-wins register
/// ordered by `clock`: a write that follows another wins over it whatever the wall clocks read,
/// and of two concurrent writes the one with the larger `stamp` wins.
struct StatusRecord: Equatable, Sendable {
    var userID: UserID
    var value: CustomStatusValue
    var stamp: StatusStamp
    /// Version vector of the user's status writes: per replica, how many of them it had written
    /// when this write was made, counting the writes this one follows.
    var clock: [ReplicaID: UInt64] = [:]

    /// Most replicas a clock keeps. A write drops the smallest counters beyond it, which can
    /// only turn an order by clock into an order by `stamp`.
    static let maxClockEntries = 8

    /// Returns whether `other` wins over this record: its clock dominates this one, or neither
    /// clock dominates and its stamp is larger.
    func isSuperseded(by other: StatusRecord) -> Bool {
        if other.clock != clock {
            if Self.clock(other.clock, dominates: clock) { return true }
            if Self.clock(clock, dominates: other.clock) { return false }
        }
        return stamp < other.stamp
    }

    private static func clock(_ upper: [ReplicaID: UInt64], dominates lower: [ReplicaID: UInt64]) -> Bool {
        lower.allSatisfy { replica, count in (upper[replica] ?? 0) >= count }
    }
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
/// was superseded by a later write of the same user, which may itself be a collected tombstone.
/// `seenAbove` lists single versions beyond. Push-pull sends a peer only the entries above its
/// `contiguous`.
struct ReplicaClock: Equatable, Sendable {
    private(set) var contiguous: UInt64 = 0
    private(set) var seenAbove: Set<UInt64> = []

    /// Returns whether `version` is here or was superseded, so that a write at it is stale.
    func covers(_ version: UInt64) -> Bool {
        version <= contiguous || seenAbove.contains(version)
    }

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

/// The clock and collection state a push-pull payload carries for one replica, besides its entries.
struct ReplicaSummary: Equatable, Sendable {
    /// The sender's contiguous clock of the replica.
    var contiguous: UInt64
    /// The sender's collection horizon of the replica (see `PresenceCRDT.horizons`).
    var horizon: UInt64
    /// True when the payload carries every entry the sender holds for the replica, so an entry
    /// at or below `contiguous` that the payload lacks was collected by the sender.
    var isWhole: Bool
}

/// The merged presence state of the cluster as one node has it, with the user views derived from
/// it. Merging is commutative, associative and idempotent in `entries`, `statuses` and
/// `lastSeen`; every mutation returns the user views that changed.
///
/// Tombstones (entries with no sessions) are collected once held for the retention time, so the
/// state shrinks back when users leave. Two rules keep a collected tombstone from letting an
/// older online entry come back:
/// - A delta at a version the replica's clock covers is rejected unless it supersedes a held
///   entry, so a replayed or late datagram cannot bring back a collected user.
/// - `horizons` records, per replica, the highest version this node may lack because of
///   collection. A peer whose clock of the replica is below it gets the replica's whole state,
///   and a whole state removes the receiver's entries that it covers and lacks.
struct PresenceCRDT: Sendable {
    /// The entries of live replicas, by user. A node stores one per (replica, user) of the whole
    /// cluster, so the table stores them compactly.
    private var table = PresenceEntryTable()
    private(set) var clocks: [ReplicaID: ReplicaClock] = [:]
    /// Collection horizon per replica: every version above it that this node ever held is here or
    /// superseded by an entry here. Raised by local collection and by merging a whole state.
    private(set) var horizons: [ReplicaID: UInt64] = [:]
    /// NOTE: status records are never collected, so the state keeps one record per user who
    /// ever set a custom status.
    private(set) var statuses: [UserID: StatusRecord] = [:]
    /// Replicas whose node is dead, left or replaced by a newer run: their deltas are ignored
    /// until `acceptReplica`.
    private(set) var ignoredReplicas: Set<ReplicaID> = []
    /// Monotonic milliseconds at which each tombstone held here was stored; collection waits
    /// the retention time from it.
    private(set) var tombstonesHeldSince: [ReplicaID: [UserID: UInt64]] = [:]
    /// Per user, the `lastSeen` that removed entries left behind: a dropped replica's tombstones
    /// and online entries, and stale online entries a whole state removed. It is a max register,
    /// so every node that receives the same writes ends with the same value. A node that never
    /// had the removed entries (a restarted one) receives the value by gossip and push-pull.
    private(set) var lastSeen: [UserID: LastSeenValue] = [:]

    struct LastSeenValue: Equatable, Sendable {
        /// Wall-clock milliseconds.
        var wall: Int64
        /// Local monotonic milliseconds at which the value was written: the receipt time minus
        /// the age the sender reported, so negative when the value is older than this clock.
        /// Every copy of a write ages from the write, not from its receipt, so a node that
        /// collected the value rejects copies still held elsewhere instead of taking them as new.
        var writtenAt: Int64

        func age(at monotonic: UInt64) -> UInt64 {
            let age = Int64(clamping: monotonic) - writtenAt
            return age > 0 ? UInt64(age) : 0
        }
    }

    struct MergeResult: Sendable {
        var changes: [UserPresenceState] = []
        var newDeltas: [PresenceDelta] = []
        var newStatuses: [StatusRecord] = []
        /// `lastSeen` values this node wrote from its own clock during the merge; the caller
        /// gossips them.
        var lastSeenWrites: [LastSeenRecord] = []
    }

    struct DropResult: Sendable {
        var changes: [UserPresenceState] = []
        /// `lastSeen` values this node wrote from its own clock (see `dropReplica`); the caller
        /// gossips them.
        var lastSeenWrites: [LastSeenRecord] = []
    }

    /// Counts of what the state holds, to check that it returns to its size after churn.
    struct StorageCounts: Equatable, Sendable {
        var entries = 0
        var tombstones = 0
        var users = 0
        var views = 0
        var lastSeenRegisters = 0
    }

    func entry(of replica: ReplicaID, user: UserID) -> PresenceEntry? {
        table.entry(of: replica, user: user)
    }

    /// Every entry as user → replica → entry. Builds a copy of the whole state, for tests and
    /// comparisons.
    var entries: [UserID: [ReplicaID: PresenceEntry]] {
        var result: [UserID: [ReplicaID: PresenceEntry]] = [:]
        table.forEach { user, replica, entry in result[user, default: [:]][replica] = entry }
        return result
    }

    /// The view of every user with an entry, a status or a `lastSeen` register. Views are
    /// derived from the state on demand, so this builds them all, for tests and comparisons.
    var views: [UserID: UserPresenceState] {
        var users = Set(statuses.keys).union(lastSeen.keys)
        table.forEach { user, _, _ in users.insert(user) }
        return Dictionary(uniqueKeysWithValues: users.map { ($0, computeView(of: $0)) })
    }

    func isIgnored(_ replica: ReplicaID) -> Bool {
        ignoredReplicas.contains(replica)
    }

    var storageCounts: StorageCounts {
        var counts = StorageCounts()
        counts.users = table.userCount
        counts.entries = table.entryCount
        table.forEach { _, _, entry in
            if entry.sessionCount == 0 { counts.tombstones += 1 }
        }
        counts.views = views.count
        counts.lastSeenRegisters = lastSeen.count
        return counts
    }

    /// Merges deltas, status writes and `lastSeen` values; returns the changed views in
    /// first-touch order and the deltas and statuses that were new here. `monotonic` stamps the
    /// tombstones and `lastSeen` values stored.
    mutating func merge(
        _ deltas: [PresenceDelta], statuses newStatuses: [StatusRecord], lastSeen records: [LastSeenRecord] = [],
        at monotonic: UInt64 = 0
    ) -> MergeResult {
        var result = MergeResult()
        var touched = TouchedUsers()
        mergeEntries(deltas, at: monotonic, into: &result, touched: &touched)
        mergeStatuses(newStatuses, into: &result, touched: &touched)
        mergeLastSeen(records, retentionMs: .max, at: monotonic, touched: &touched)
        result.changes = refreshViews(of: touched)
        return result
    }

    /// Merges the presence part of a push-pull payload: its entries, statuses and `lastSeen`
    /// values. Then, for each replica the payload carries whole, it removes the entries here
    /// that the sender's clock covers and the sender no longer has, and raises clocks and horizons.
    /// `wall` becomes the `lastSeen` of a user whose online entry is removed that way. A
    /// `lastSeen` value aged `retentionMs` or more is ignored, because this node may have
    /// collected it already.
    mutating func mergeTransfer(
        _ deltas: [PresenceDelta], statuses newStatuses: [StatusRecord], lastSeen records: [LastSeenRecord] = [],
        replicas: [ReplicaID: ReplicaSummary], retentionMs: UInt64 = .max, wall: Int64, at monotonic: UInt64
    ) -> MergeResult {
        var result = MergeResult()
        var touched = TouchedUsers()
        mergeEntries(deltas, at: monotonic, into: &result, touched: &touched)
        mergeStatuses(newStatuses, into: &result, touched: &touched)
        mergeLastSeen(records, retentionMs: retentionMs, at: monotonic, touched: &touched)

        var sentUsers: [ReplicaID: Set<UserID>] = [:]
        for delta in deltas where replicas[delta.replica]?.isWhole == true {
            sentUsers[delta.replica, default: []].insert(delta.userID)
        }
        for replica in replicas.keys.sorted() where !ignoredReplicas.contains(replica) {
            let summary = replicas[replica]!
            if summary.isWhole {
                let sent = sentUsers[replica] ?? []
                let held = table.entries(of: replica).sorted { $0.user < $1.user }
                for (user, entry) in held where !sent.contains(user) && entry.version <= summary.contiguous {
                    touched.add(user, previous: view(of: user))
                    removeEntry(of: replica, user: user)
                    if entry.sessionCount > 0 {
                        // A stale online entry: the sender collected the tombstone that ended it,
                        // and the time of that close is lost with it.
                        if writeLastSeen(of: user, wall: wall, at: monotonic) {
                            result.lastSeenWrites.append(LastSeenRecord(userID: user, wall: wall))
                        }
                    }
                }
                horizons[replica] = max(horizons[replica] ?? 0, summary.horizon)
            }
            if summary.contiguous > 0 {
                clocks[replica, default: ReplicaClock()].advance(to: summary.contiguous)
            }
        }
        result.changes = refreshViews(of: touched)
        return result
    }

    /// Drops every entry of `replica` and ignores its later deltas. Each entry leaves its user's
    /// `lastSeen` in the register: a tombstone its `changedAt` (the close), an online entry
    /// `wall`, the time of the event that dropped it. Users left without a live session go
    /// offline.
    ///
    /// A tombstone's value is the same on every node that has the tombstone, so it is not
    /// gossiped, and push-pull takes it to the nodes that lack it. An online entry has no close
    /// time, so each node writes when it learned of the drop. The entry's own `changedAt` would
    /// be the same everywhere, but it is when the session count last changed, which may be hours
    /// before the crash. The detection times differ by the detection delay and clock skew, and
    /// the max register makes every node converge on the latest of them once gossip carries
    /// `lastSeenWrites`.
    mutating func dropReplica(_ replica: ReplicaID, wall: Int64, at monotonic: UInt64 = 0) -> DropResult {
        ignoredReplicas.insert(replica)
        clocks[replica] = nil
        horizons[replica] = nil
        let held = table.entries(of: replica).sorted { $0.user < $1.user }
        var result = DropResult()
        var touched = TouchedUsers()
        for (user, entry) in held {
            touched.add(user, previous: view(of: user))
            removeEntry(of: replica, user: user)
            if entry.sessionCount == 0 {
                writeLastSeen(of: user, wall: entry.changedAt, at: monotonic)
            } else if writeLastSeen(of: user, wall: wall, at: monotonic) {
                result.lastSeenWrites.append(LastSeenRecord(userID: user, wall: wall))
            }
        }
        tombstonesHeldSince[replica] = nil
        result.changes = refreshViews(of: touched)
        return result
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

    /// Collects every user whose entries are all tombstones held at least `retentionMs` and
    /// covered by their replica's contiguous clock, and whose `lastSeen` register (if any) is
    /// as old. Such a user's entries, register and view go, and each replica's horizon rises to
    /// the versions collected. A user with a custom status keeps the status and the view. An
    /// expired register of a user online here goes alone, because a later close writes a later
    /// `lastSeen`. Returns the number of entries collected.
    @discardableResult
    mutating func collectTombstones(now monotonic: UInt64, retentionMs: UInt64) -> Int {
        func isExpired(_ since: UInt64) -> Bool { since <= monotonic && monotonic - since >= retentionMs }
        func isRegisterExpired(_ user: UserID) -> Bool {
            lastSeen[user].map { $0.age(at: monotonic) >= retentionMs } ?? true
        }

        var candidates: Set<UserID> = []
        for held in tombstonesHeldSince.values {
            for (user, since) in held where isExpired(since) {
                candidates.insert(user)
            }
        }
        for user in lastSeen.keys where isRegisterExpired(user) {
            candidates.insert(user)
        }

        var collected = 0
        for user in candidates.sorted() {
            guard isRegisterExpired(user) else { continue }
            var userEntries: [ReplicaID: PresenceEntry] = [:]
            table.forEachEntry(of: user) { replica, entry in userEntries[replica] = entry }
            if userEntries.values.contains(where: { $0.sessionCount > 0 }) {
                lastSeen[user] = nil
                continue
            }
            let collectable = userEntries.allSatisfy { replica, entry in
                guard entry.sessionCount == 0, let since = tombstonesHeldSince[replica]?[user], isExpired(since)
                else { return false }
                return clocks[replica]?.contiguous ?? 0 >= entry.version
            }
            guard collectable else { continue }
            for (replica, entry) in userEntries {
                removeEntry(of: replica, user: user)
                horizons[replica] = max(horizons[replica] ?? 0, entry.version)
                collected += 1
            }
            lastSeen[user] = nil
        }
        return collected
    }

    /// Contiguous clock of every replica with state here.
    var contiguousClocks: [ReplicaID: UInt64] {
        clocks.mapValues(\.contiguous)
    }

    /// Every entry, ordered by replica, then version.
    var allDeltas: [PresenceDelta] {
        deltas(newerThan: [:])
    }

    /// Every entry of `replica`, ordered by version.
    func deltas(of replica: ReplicaID, newerThan floor: UInt64 = 0) -> [PresenceDelta] {
        var result: [PresenceDelta] = []
        for (user, entry) in table.entries(of: replica) where entry.version > floor {
            result.append(PresenceDelta(replica: replica, userID: user, entry: entry))
        }
        result.sort { $0.entry.version < $1.entry.version }
        return result
    }

    /// Entries a peer with contiguous clocks `peerClocks` may lack: those above the peer's clock
    /// of their replica, ordered by replica, then version.
    func deltas(newerThan peerClocks: [ReplicaID: UInt64]) -> [PresenceDelta] {
        deltas(newerThan: { peerClocks[$0] ?? 0 })
    }

    /// Entries above `floor` of their replica, ordered by replica, then version, from one pass
    /// over the table.
    private func deltas(newerThan floor: (ReplicaID) -> UInt64) -> [PresenceDelta] {
        var floors: [ReplicaID: UInt64] = [:]
        for replica in table.replicas {
            floors[replica] = floor(replica)
        }
        var byReplica: [ReplicaID: [PresenceDelta]] = [:]
        table.forEach { user, replica, entry in
            if entry.version > floors[replica]! {
                byReplica[replica, default: []].append(PresenceDelta(replica: replica, userID: user, entry: entry))
            }
        }
        var result: [PresenceDelta] = []
        result.reserveCapacity(byReplica.values.reduce(0) { $0 + $1.count })
        for replica in byReplica.keys.sorted() {
            result.append(contentsOf: byReplica[replica]!.sorted { $0.entry.version < $1.entry.version })
        }
        return result
    }

    /// Returns the presence part of a push-pull payload for a peer with contiguous clocks
    /// `peerClocks`: a summary of every replica with state here, and the entries the peer may lack. A replica
    /// goes whole when the peer's clock of it is below its horizon here, because then the peer
    /// may hold an entry whose tombstone was collected here. With nil `peerClocks` (a request)
    /// every replica goes whole. The `lastSeen` registers go separately (`lastSeenRecords`).
    func transfer(for peerClocks: [ReplicaID: UInt64]?) -> (replicas: [ReplicaID: ReplicaSummary], entries: [PresenceDelta]) {
        var summaries: [ReplicaID: ReplicaSummary] = [:]
        let replicas = Set(clocks.keys).union(table.replicas).sorted()
        for replica in replicas {
            let horizon = horizons[replica] ?? 0
            let peerClock = peerClocks.map { $0[replica] ?? 0 }
            let isWhole = peerClock.map { $0 < horizon } ?? true
            summaries[replica] = ReplicaSummary(
                contiguous: clocks[replica]?.contiguous ?? 0, horizon: horizon, isWhole: isWhole)
        }
        let result = deltas(newerThan: { replica in
            summaries[replica]!.isWhole ? 0 : peerClocks?[replica] ?? 0
        })
        return (summaries, result)
    }

    /// Every `lastSeen` register, ordered by user, with its age at `monotonic`, the time of
    /// sending. The age MUST NOT be understated, because a copy younger than its write would
    /// outlive the collection of the value elsewhere and bring it back there.
    func lastSeenRecords(at monotonic: UInt64) -> [LastSeenRecord] {
        lastSeen.keys.sorted().map { user in
            let value = lastSeen[user]!
            return LastSeenRecord(userID: user, wall: value.wall, ageMs: value.age(at: monotonic))
        }
    }

    /// Latest `changedAt` of any entry of `user` here, or its `lastSeen` register if later; nil
    /// when there is neither.
    func latestChange(of user: UserID) -> Int64? {
        let entryChange = table.summary(of: user).latestChange
        guard let register = lastSeen[user]?.wall else { return entryChange }
        return max(entryChange ?? .min, register)
    }

    /// Every status record, ordered by user.
    var allStatuses: [StatusRecord] {
        statuses.keys.sorted().compactMap { statuses[$0] }
    }

    /// Returns the merged presence of `user`: offline with nil `lastSeen` when never seen.
    func view(of user: UserID) -> UserPresenceState {
        computeView(of: user)
    }

    var onlineUsers: [UserID] {
        table.onlineUsers.sorted()
    }

    // MARK: - Internals

    /// Users touched by one mutation, in first-touch order, with their views before it. Views
    /// are not stored, so each mutation MUST add a user before it changes the user's state.
    private struct TouchedUsers {
        var ordered: [(user: UserID, previous: UserPresenceState)] = []
        var seen: Set<UserID> = []

        mutating func add(_ user: UserID, previous: @autoclosure () -> UserPresenceState) {
            if seen.insert(user).inserted { ordered.append((user, previous())) }
        }
    }

    private mutating func mergeEntries(
        _ deltas: [PresenceDelta], at monotonic: UInt64, into result: inout MergeResult, touched: inout TouchedUsers
    ) {
        for delta in deltas where !ignoredReplicas.contains(delta.replica) {
            let version = delta.entry.version
            if let current = table.entry(of: delta.replica, user: delta.userID) {
                if current.version >= version {
                    // Superseded here, so the version is covered all the same.
                    clocks[delta.replica, default: ReplicaClock()].record(version)
                    continue
                }
            } else if clocks[delta.replica]?.covers(version) == true {
                // Nothing is held for the user although the clock covers this version, so a later
                // tombstone of the user was collected here: the delta is stale (a replay or a late
                // retransmission) and must not bring the user back.
                continue
            }
            clocks[delta.replica, default: ReplicaClock()].record(version)
            touched.add(delta.userID, previous: view(of: delta.userID))
            storeEntry(delta.entry, of: delta.replica, user: delta.userID, at: monotonic)
            result.newDeltas.append(delta)
        }
    }

    private mutating func mergeStatuses(
        _ newStatuses: [StatusRecord], into result: inout MergeResult, touched: inout TouchedUsers
    ) {
        for record in newStatuses {
            if let current = statuses[record.userID], !current.isSuperseded(by: record) { continue }
            touched.add(record.userID, previous: view(of: record.userID))
            statuses[record.userID] = record
            result.newStatuses.append(record)
        }
    }

    /// Merges `lastSeen` values by max. Of two copies of one value the older age is kept, and
    /// a value aged `retentionMs` or more is ignored. A value taken here is not gossiped on,
    /// because only its writer gossips it and push-pull spreads it further.
    private mutating func mergeLastSeen(
        _ records: [LastSeenRecord], retentionMs: UInt64, at monotonic: UInt64, touched: inout TouchedUsers
    ) {
        for record in records where record.ageMs < retentionMs {
            let writtenAt = Int64(clamping: monotonic) - Int64(clamping: record.ageMs)
            if let current = lastSeen[record.userID] {
                if record.wall < current.wall { continue }
                if record.wall == current.wall {
                    lastSeen[record.userID]?.writtenAt = min(current.writtenAt, writtenAt)
                    continue
                }
            }
            touched.add(record.userID, previous: view(of: record.userID))
            lastSeen[record.userID] = LastSeenValue(wall: record.wall, writtenAt: writtenAt)
        }
    }

    /// Raises the `lastSeen` register of `user` to `wall`, written now. Returns whether it rose.
    @discardableResult
    private mutating func writeLastSeen(of user: UserID, wall: Int64, at monotonic: UInt64) -> Bool {
        if let current = lastSeen[user], current.wall >= wall { return false }
        lastSeen[user] = LastSeenValue(wall: wall, writtenAt: Int64(clamping: monotonic))
        return true
    }

    private mutating func storeEntry(_ entry: PresenceEntry, of replica: ReplicaID, user: UserID, at monotonic: UInt64) {
        table.set(entry, of: replica, user: user)
        if entry.sessionCount == 0 {
            tombstonesHeldSince[replica, default: [:]][user] = monotonic
        } else {
            tombstonesHeldSince[replica]?[user] = nil
        }
    }

    private mutating func removeEntry(of replica: ReplicaID, user: UserID) {
        table.remove(of: replica, user: user)
        tombstonesHeldSince[replica]?[user] = nil
        if tombstonesHeldSince[replica]?.isEmpty == true { tombstonesHeldSince[replica] = nil }
    }

    /// Recomputes the views of the touched users and returns those whose online state or custom status
    /// changed, or who stay offline with a later `lastSeen` (a later close or a higher register
    /// received). Reporting the later value makes every client end on what HTTP returns. A
    /// `lastSeen` that falls or goes is not reported: only collection, here or by a peer whose
    /// whole state removes a tombstone, takes one away.
    private func refreshViews(of touched: TouchedUsers) -> [UserPresenceState] {
        var changes: [UserPresenceState] = []
        for (user, previous) in touched.ordered {
            let fresh = computeView(of: user)
            let lastSeenRose = !fresh.isOnline && (fresh.lastSeen ?? .min) > (previous.lastSeen ?? .min)
            if fresh.isOnline != previous.isOnline || fresh.custom != previous.custom || lastSeenRose {
                changes.append(fresh)
            }
        }
        return changes
    }

    /// Online iff some live replica has a session. Offline `lastSeen` is the latest close this
    /// node has: the newest tombstone or `lastSeen` register of the user.
    private func computeView(of user: UserID) -> UserPresenceState {
        let summary = table.summary(of: user)
        var lastSeen: Int64?
        if !summary.isOnline {
            let register = self.lastSeen[user]?.wall
            lastSeen = register.map { max($0, summary.latestChange ?? .min) } ?? summary.latestChange
        }
        let isOnline = summary.isOnline
        return UserPresenceState(userID: user, isOnline: isOnline, lastSeen: lastSeen, custom: statuses[user]?.value)
    }
}
