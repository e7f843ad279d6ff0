// Compact storage of the presence entries: a node stores one entry per (replica, user) of the
// whole cluster, so the bytes per entry bound how many users one node can track.

/// The presence entries of every user, grouped by user, with each user ID stored once.
///
/// A dictionary of dictionaries costs about 240 bytes per entry (measured at 50,000 users, one
/// entry each) and a heap string per user ID of 16 bytes or more. Here each user is one 32-byte record in a dense array holding its first
/// entry inline, its ID is a range of one byte arena, and an open-addressing index of 4-byte
/// buckets finds it. A replica is stored in an entry as a small index into `replicaIDs`. A
/// user's further entries (sessions on several nodes) go to `extraEntries`.
///
/// Iteration follows record order, which depends on the order of inserts and removals, so
/// callers that need a stable order sort.
struct PresenceEntryTable: Sendable {
    /// One entry without its user, with its replica as an index into `replicaIDs`.
    private struct StoredEntry: Sendable {
        var version: UInt64
        var changedAt: Int64
        var sessionCount: UInt32
        var replica: UInt32

        init(_ entry: PresenceEntry, replica: UInt32) {
            version = entry.version
            changedAt = entry.changedAt
            sessionCount = entry.sessionCount
            self.replica = replica
        }

        var entry: PresenceEntry {
            PresenceEntry(sessionCount: sessionCount, version: version, changedAt: changedAt)
        }
    }

    /// One user: its ID's place in `nameBytes` and its first entry. 32 bytes.
    private struct UserRecord: Sendable {
        var first: StoredEntry
        var nameOffset: UInt32
        var nameLength: UInt8
        var isLive: Bool
        /// True when `extraEntries` contains more entries of the user.
        var hasExtra: Bool
    }

    private var records: [UserRecord] = []
    private var freeRecords: [UInt32] = []
    /// UTF-8 bytes of every user ID, back to back. Removed users leave garbage until compaction.
    private var nameBytes: [UInt8] = []
    private var garbageNameBytes = 0
    /// Open-addressing index with linear probing: 0 is an empty bucket, n is record n - 1.
    private var buckets: [UInt32] = []
    /// Entries beyond the first of a user, by record index.
    private var extraEntries: [UInt32: [StoredEntry]] = [:]

    /// Replica per index; nil for a free index. An index is freed when its last entry goes.
    private var replicaIDs: [ReplicaID?] = []
    private var replicaIndexes: [ReplicaID: UInt32] = [:]
    private var replicaEntryCounts: [Int] = []
    private var freeReplicaIndexes: [UInt32] = []

    private(set) var userCount = 0
    private(set) var entryCount = 0

    // MARK: - Queries

    func entry(of replica: ReplicaID, user: UserID) -> PresenceEntry? {
        guard let index = replicaIndexes[replica], let record = find(user) else { return nil }
        return stored(of: index, record: record)?.entry
    }

    func contains(_ user: UserID) -> Bool {
        find(user) != nil
    }

    /// Calls `body` with every entry of `user`.
    func forEachEntry(of user: UserID, _ body: (ReplicaID, PresenceEntry) -> Void) {
        guard let record = find(user) else { return }
        forEachStored(record) { body(replicaIDs[Int($0.replica)]!, $0.entry) }
    }

    /// Returns whether some entry of `user` has a session, and the latest `changedAt` of its
    /// entries (nil when it has none).
    func summary(of user: UserID) -> (isOnline: Bool, latestChange: Int64?) {
        guard let record = find(user) else { return (false, nil) }
        var isOnline = false
        var latest = Int64.min
        forEachStored(record) { stored in
            isOnline = isOnline || stored.sessionCount > 0
            latest = max(latest, stored.changedAt)
        }
        return (isOnline, latest)
    }

    /// Calls `body` with every (user, replica, entry), in record order.
    func forEach(_ body: (UserID, ReplicaID, PresenceEntry) -> Void) {
        for index in records.indices where records[index].isLive {
            let user = userID(of: UInt32(index))
            forEachStored(UInt32(index)) { body(user, replicaIDs[Int($0.replica)]!, $0.entry) }
        }
    }

    /// Returns every entry of `replica` with its user, in record order.
    func entries(of replica: ReplicaID) -> [(user: UserID, entry: PresenceEntry)] {
        guard let replicaIndex = replicaIndexes[replica] else { return [] }
        var result: [(user: UserID, entry: PresenceEntry)] = []
        result.reserveCapacity(replicaEntryCounts[Int(replicaIndex)])
        for index in records.indices where records[index].isLive {
            if let stored = stored(of: replicaIndex, record: UInt32(index)) {
                result.append((userID(of: UInt32(index)), stored.entry))
            }
        }
        return result
    }

    /// Replicas that hold at least one entry.
    var replicas: [ReplicaID] {
        replicaIDs.compactMap { $0 }
    }

    /// Every user with at least one entry that has a session, in record order.
    var onlineUsers: [UserID] {
        var result: [UserID] = []
        for index in records.indices where records[index].isLive {
            var isOnline = false
            forEachStored(UInt32(index)) { isOnline = isOnline || $0.sessionCount > 0 }
            if isOnline { result.append(userID(of: UInt32(index))) }
        }
        return result
    }

    // MARK: - Writes

    /// Stores `entry` as the entry of `replica` for `user`, replacing any entry there.
    mutating func set(_ entry: PresenceEntry, of replica: ReplicaID, user: UserID) {
        let replicaIndex = internReplica(replica)
        let record = findOrInsert(user)
        let stored = StoredEntry(entry, replica: replicaIndex)
        if records[Int(record)].first.replica == replicaIndex {
            records[Int(record)].first = stored
            return
        }
        if records[Int(record)].hasExtra, let position = extraEntries[record]!.firstIndex(where: { $0.replica == replicaIndex }) {
            extraEntries[record]![position] = stored
            return
        }
        if records[Int(record)].first.replica == Self.noReplica {
            records[Int(record)].first = stored
        } else {
            extraEntries[record, default: []].append(stored)
            records[Int(record)].hasExtra = true
        }
        replicaEntryCounts[Int(replicaIndex)] += 1
        entryCount += 1
    }

    /// Removes the entry of `replica` for `user`, and the user when it has no entry left.
    mutating func remove(of replica: ReplicaID, user: UserID) {
        guard let replicaIndex = replicaIndexes[replica], let record = find(user) else { return }
        let slot = Int(record)
        if records[slot].first.replica == replicaIndex {
            if records[slot].hasExtra {
                records[slot].first = extraEntries[record]!.removeLast()
                if extraEntries[record]!.isEmpty {
                    extraEntries[record] = nil
                    records[slot].hasExtra = false
                }
            } else {
                records[slot].first.replica = Self.noReplica
            }
        } else if records[slot].hasExtra, let position = extraEntries[record]!.firstIndex(where: { $0.replica == replicaIndex }) {
            extraEntries[record]!.remove(at: position)
            if extraEntries[record]!.isEmpty {
                extraEntries[record] = nil
                records[slot].hasExtra = false
            }
        } else {
            return
        }
        entryCount -= 1
        releaseReplica(replicaIndex)
        if records[slot].first.replica == Self.noReplica {
            removeUser(record)
        }
    }

    // MARK: - Internals

    private static let noReplica = UInt32.max

    private func stored(of replicaIndex: UInt32, record: UInt32) -> StoredEntry? {
        let user = records[Int(record)]
        if user.first.replica == replicaIndex { return user.first }
        guard user.hasExtra else { return nil }
        return extraEntries[record]!.first { $0.replica == replicaIndex }
    }

    private func forEachStored(_ record: UInt32, _ body: (StoredEntry) -> Void) {
        let user = records[Int(record)]
        if user.first.replica != Self.noReplica { body(user.first) }
        if user.hasExtra {
            for stored in extraEntries[record]! { body(stored) }
        }
    }

    private func userID(of record: UInt32) -> UserID {
        let user = records[Int(record)]
        let start = Int(user.nameOffset)
        return String(decoding: nameBytes[start..<start + Int(user.nameLength)], as: UTF8.self)
    }

    private mutating func internReplica(_ replica: ReplicaID) -> UInt32 {
        if let index = replicaIndexes[replica] { return index }
        let index: UInt32
        if let free = freeReplicaIndexes.popLast() {
            index = free
            replicaIDs[Int(index)] = replica
        } else {
            index = UInt32(replicaIDs.count)
            precondition(index < Self.noReplica, "more than \(Self.noReplica - 1) replicas hold entries")
            replicaIDs.append(replica)
            replicaEntryCounts.append(0)
        }
        replicaIndexes[replica] = index
        return index
    }

    /// Frees the replica's index after one of its entries went, if none is left.
    private mutating func releaseReplica(_ index: UInt32) {
        replicaEntryCounts[Int(index)] -= 1
        guard replicaEntryCounts[Int(index)] == 0, let replica = replicaIDs[Int(index)] else { return }
        replicaIDs[Int(index)] = nil
        replicaIndexes[replica] = nil
        freeReplicaIndexes.append(index)
    }

    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
        return hasher.finalize()
    }

    private func hashOfRecord(_ record: UInt32) -> Int {
        let user = records[Int(record)]
        let start = Int(user.nameOffset)
        return nameBytes.withUnsafeBufferPointer { all in
            Self.hash(UnsafeBufferPointer(rebasing: all[start..<start + Int(user.nameLength)]))
        }
    }

    /// Returns the bucket where `bytes` is or would go, and its record if present.
    private func probe(_ bytes: UnsafeBufferPointer<UInt8>, hash: Int) -> (bucket: Int, record: UInt32?) {
        let mask = buckets.count - 1
        var bucket = hash & mask
        while true {
            let value = buckets[bucket]
            if value == 0 { return (bucket, nil) }
            let user = records[Int(value - 1)]
            if Int(user.nameLength) == bytes.count {
                let start = Int(user.nameOffset)
                let isEqual = nameBytes.withUnsafeBufferPointer { all in
                    UnsafeBufferPointer(rebasing: all[start..<start + bytes.count]).elementsEqual(bytes)
                }
                if isEqual { return (bucket, value - 1) }
            }
            bucket = (bucket + 1) & mask
        }
    }

    private func find(_ user: UserID) -> UInt32? {
        guard userCount > 0 else { return nil }
        var user = user
        return user.withUTF8 { bytes in probe(bytes, hash: Self.hash(bytes)).record }
    }

    private mutating func findOrInsert(_ user: UserID) -> UInt32 {
        if let record = find(user) { return record }
        // Keep the load at or below 3/4.
        if (userCount + 1) * 4 > buckets.count * 3 {
            rebuildIndex(capacity: max(16, buckets.count * 2))
        }
        var user = user
        return user.withUTF8 { bytes in
            precondition(bytes.count <= Int(UInt8.max), "user ID of \(bytes.count) bytes is over \(UInt8.max)")
            let (bucket, _) = probe(bytes, hash: Self.hash(bytes))
            let offset = UInt32(nameBytes.count)
            nameBytes.append(contentsOf: bytes)
            let none = StoredEntry(PresenceEntry(sessionCount: 0, version: 0, changedAt: 0), replica: Self.noReplica)
            let record = UserRecord(first: none, nameOffset: offset, nameLength: UInt8(bytes.count), isLive: true, hasExtra: false)
            let index: UInt32
            if let free = freeRecords.popLast() {
                index = free
                records[Int(index)] = record
            } else {
                index = UInt32(records.count)
                records.append(record)
            }
            buckets[bucket] = index + 1
            userCount += 1
            return index
        }
    }

    private mutating func removeUser(_ record: UInt32) {
        let user = records[Int(record)]
        let start = Int(user.nameOffset)
        let bytes = Array(nameBytes[start..<start + Int(user.nameLength)])
        var bucket = bytes.withUnsafeBufferPointer { probe($0, hash: Self.hash($0)).bucket }

        // Backward-shift deletion: move later entries of the probe run into the gap, so lookups
        // need no deletion markers.
        let mask = buckets.count - 1
        buckets[bucket] = 0
        var next = bucket
        while true {
            next = (next + 1) & mask
            let value = buckets[next]
            if value == 0 { break }
            let home = hashOfRecord(value - 1) & mask
            // The entry at `next` may move to `bucket` unless its home lies cyclically in (bucket, next].
            let homeInGap = bucket <= next ? (home > bucket && home <= next) : (home > bucket || home <= next)
            if !homeInGap {
                buckets[bucket] = value
                buckets[next] = 0
                bucket = next
            }
        }

        records[Int(record)].isLive = false
        freeRecords.append(record)
        garbageNameBytes += Int(user.nameLength)
        userCount -= 1

        if userCount == 0 {
            self = PresenceEntryTable(replicaIDs: replicaIDs, replicaIndexes: replicaIndexes,
                                      replicaEntryCounts: replicaEntryCounts, freeReplicaIndexes: freeReplicaIndexes)
        } else if garbageNameBytes > 4096 && garbageNameBytes * 2 > nameBytes.count {
            compactNames()
        } else if buckets.count > 64 && userCount * 8 < buckets.count {
            rebuildIndex(capacity: buckets.count / 2)
        }
    }

    private init(replicaIDs: [ReplicaID?], replicaIndexes: [ReplicaID: UInt32], replicaEntryCounts: [Int],
                 freeReplicaIndexes: [UInt32]) {
        self.replicaIDs = replicaIDs
        self.replicaIndexes = replicaIndexes
        self.replicaEntryCounts = replicaEntryCounts
        self.freeReplicaIndexes = freeReplicaIndexes
    }

    init() {}

    /// Copies the live user IDs into a fresh arena, dropping the bytes of removed users.
    private mutating func compactNames() {
        var compacted: [UInt8] = []
        compacted.reserveCapacity(nameBytes.count - garbageNameBytes)
        for index in records.indices where records[index].isLive {
            let start = Int(records[index].nameOffset)
            records[index].nameOffset = UInt32(compacted.count)
            compacted.append(contentsOf: nameBytes[start..<start + Int(records[index].nameLength)])
        }
        nameBytes = compacted
        garbageNameBytes = 0
    }

    private mutating func rebuildIndex(capacity: Int) {
        buckets = [UInt32](repeating: 0, count: capacity)
        let mask = capacity - 1
        for index in records.indices where records[index].isLive {
            var bucket = hashOfRecord(UInt32(index)) & mask
            while buckets[bucket] != 0 {
                bucket = (bucket + 1) & mask
            }
            buckets[bucket] = UInt32(index) + 1
        }
    }
}
