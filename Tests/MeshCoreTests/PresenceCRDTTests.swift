import Testing
@testable import MeshCore

/// Writers that each own one replica and record every write they make, so tests can hand
/// replicas random subsets of the history, in random order.
private struct History {
    var deltas: [PresenceDelta] = []
    var statuses: [StatusRecord] = []

    static func random(seed: UInt64, replicas: Int = 4, users: Int = 6, writes: Int = 60) -> History {
        var random = SeededRandom(seed: seed)
        var history = History()
        var versions = [UInt64](repeating: 0, count: replicas)
        var counts: [[UInt32]] = Array(repeating: Array(repeating: 0, count: users), count: replicas)
        for step in 0..<writes {
            let replica = Int.random(in: 0..<replicas, using: &random)
            let user = Int.random(in: 0..<users, using: &random)
            if Int.random(in: 0..<5, using: &random) == 0 {
                let status = ["away", "busy", "online"].randomElement(using: &random)!
                history.statuses.append(StatusRecord(
                    userID: "user-\(user)", value: CustomStatusValue(status: status, text: "t\(step)"),
                    stamp: StatusStamp(
                        wall: Int64.random(in: 0...20, using: &random), counter: UInt32(step % 3), node: "node-\(replica)")))
                continue
            }
            if counts[replica][user] > 0 && Bool.random(using: &random) {
                counts[replica][user] -= 1
            } else {
                counts[replica][user] += 1
            }
            versions[replica] += 1
            history.deltas.append(PresenceDelta(
                replica: ReplicaID(name: "node-\(replica)", epoch: UInt64(replica + 100)), userID: "user-\(user)",
                entry: PresenceEntry(sessionCount: counts[replica][user], version: versions[replica], changedAt: Int64(step))))
        }
        return history
    }

    /// Builds a state from a random subset of the history, merged in random order.
    func randomState(seed: UInt64) -> PresenceCRDT {
        var random = SeededRandom(seed: seed)
        var state = PresenceCRDT()
        let deltas = deltas.filter { _ in Bool.random(using: &random) }.shuffled(using: &random)
        let statuses = statuses.filter { _ in Bool.random(using: &random) }.shuffled(using: &random)
        _ = state.merge(deltas, statuses: statuses)
        return state
    }
}

private func merged(_ target: PresenceCRDT, _ source: PresenceCRDT) -> (state: PresenceCRDT, changes: [UserPresenceState]) {
    var state = target
    let result = state.merge(source.allDeltas, statuses: source.allStatuses)
    return (state, result.changes)
}

private func sameState(_ a: PresenceCRDT, _ b: PresenceCRDT) -> Bool {
    a.entries == b.entries && a.statuses == b.statuses && a.views == b.views
}

@Test func crdt_merge_isIdempotent() {
    for seed in 1...50 as ClosedRange<UInt64> {
        let history = History.random(seed: seed)
        let a = history.randomState(seed: seed * 31)
        let (once, _) = merged(a, a)
        #expect(sameState(once, a))
        let b = history.randomState(seed: seed * 37)
        let (first, _) = merged(a, b)
        let (second, secondChanges) = merged(first, b)
        #expect(sameState(first, second))
        #expect(secondChanges.isEmpty)
    }
}

@Test func crdt_merge_isCommutative() {
    for seed in 1...50 as ClosedRange<UInt64> {
        let history = History.random(seed: seed)
        let a = history.randomState(seed: seed * 41)
        let b = history.randomState(seed: seed * 43)
        let ab = merged(a, b).state
        let ba = merged(b, a).state
        #expect(ab.entries == ba.entries)
        #expect(ab.statuses == ba.statuses)
        #expect(ab.onlineUsers == ba.onlineUsers)
        for user in (0..<6).map({ "user-\($0)" }) {
            #expect(ab.view(of: user) == ba.view(of: user))
        }
    }
}

@Test func crdt_merge_isAssociative() {
    for seed in 1...50 as ClosedRange<UInt64> {
        let history = History.random(seed: seed)
        let a = history.randomState(seed: seed * 47)
        let b = history.randomState(seed: seed * 53)
        let c = history.randomState(seed: seed * 59)
        let left = merged(merged(a, b).state, c).state
        let right = merged(a, merged(b, c).state).state
        #expect(sameState(left, right))
    }
}

@Test func crdt_emittedChanges_matchViewDifferences() {
    for seed in 1...50 as ClosedRange<UInt64> {
        let history = History.random(seed: seed)
        let a = history.randomState(seed: seed * 61)
        let b = history.randomState(seed: seed * 67)
        let (result, changes) = merged(a, b)
        #expect(Set(changes.map(\.userID)).count == changes.count, "each user changes at most once per merge")
        for user in (0..<6).map({ "user-\($0)" }) {
            let before = a.view(of: user)
            let after = result.view(of: user)
            let emitted = changes.first { $0.userID == user }
            let lastSeenRose = !after.isOnline && (after.lastSeen ?? .min) > (before.lastSeen ?? .min)
            if before.isOnline != after.isOnline || before.custom != after.custom || lastSeenRose {
                #expect(emitted == after, "\(user) changed without an event")
            } else {
                #expect(emitted == nil, "\(user) emitted without a change")
            }
        }
    }
}

@Test func crdt_deltaPath_equalsFullStatePath() {
    for seed in 1...30 as ClosedRange<UInt64> {
        let history = History.random(seed: seed)
        var deltaPath = PresenceCRDT()
        var emittedOnline: [UserID: Bool] = [:]
        for delta in history.deltas {
            for change in deltaPath.merge([delta], statuses: []).changes {
                emittedOnline[change.userID] = change.isOnline
            }
        }
        for record in history.statuses {
            _ = deltaPath.merge([], statuses: [record])
        }
        var source = PresenceCRDT()
        _ = source.merge(history.deltas, statuses: history.statuses)
        var fullPath = PresenceCRDT()
        let fullChanges = fullPath.merge(source.allDeltas, statuses: source.allStatuses).changes
        #expect(deltaPath.entries == fullPath.entries)
        #expect(deltaPath.statuses == fullPath.statuses)
        #expect(deltaPath.onlineUsers == fullPath.onlineUsers)
        for user in (0..<6).map({ "user-\($0)" }) {
            #expect(deltaPath.view(of: user) == fullPath.view(of: user))
            // The last online state the delta path reported is the one the full path reports.
            let fullOnline = fullChanges.last { $0.userID == user }?.isOnline ?? false
            #expect((emittedOnline[user] ?? false) == fullOnline)
        }
    }
}

@Test func crdt_olderVersion_isIgnored() {
    var state = PresenceCRDT()
    let replica = ReplicaID(name: "a", epoch: 1)
    let newer = PresenceDelta(replica: replica, userID: "u", entry: PresenceEntry(sessionCount: 0, version: 5, changedAt: 50))
    let older = PresenceDelta(replica: replica, userID: "u", entry: PresenceEntry(sessionCount: 1, version: 4, changedAt: 40))
    _ = state.merge([newer], statuses: [])
    let result = state.merge([older], statuses: [])
    #expect(result.newDeltas.isEmpty)
    #expect(result.changes.isEmpty)
    #expect(state.entry(of: replica, user: "u") == newer.entry)
}

@Test func crdt_dropReplica_takesUsersOfflineAndIgnoresLaterDeltas() {
    var state = PresenceCRDT()
    let a = ReplicaID(name: "a", epoch: 1)
    let b = ReplicaID(name: "b", epoch: 2)
    _ = state.merge([
        PresenceDelta(replica: a, userID: "only-a", entry: PresenceEntry(sessionCount: 1, version: 1, changedAt: 10)),
        PresenceDelta(replica: a, userID: "both", entry: PresenceEntry(sessionCount: 1, version: 2, changedAt: 11)),
        PresenceDelta(replica: b, userID: "both", entry: PresenceEntry(sessionCount: 2, version: 1, changedAt: 12)),
    ], statuses: [])
    let changes = state.dropReplica(a, wall: 500).changes
    #expect(changes == [UserPresenceState(userID: "only-a", isOnline: false, lastSeen: 500, custom: nil)])
    #expect(state.view(of: "both").isOnline)
    let late = state.merge(
        [PresenceDelta(replica: a, userID: "late", entry: PresenceEntry(sessionCount: 1, version: 3, changedAt: 13))],
        statuses: [])
    #expect(late.changes.isEmpty)
    #expect(!state.view(of: "late").isOnline)
    state.acceptReplica(a)
    let restored = state.merge(
        [PresenceDelta(replica: a, userID: "late", entry: PresenceEntry(sessionCount: 1, version: 3, changedAt: 13))],
        statuses: [])
    #expect(restored.changes.map(\.userID) == ["late"])
}

@Test func crdt_lastSeen_isLatestClose() {
    var state = PresenceCRDT()
    let a = ReplicaID(name: "a", epoch: 1)
    let b = ReplicaID(name: "b", epoch: 1)
    _ = state.merge([
        PresenceDelta(replica: a, userID: "u", entry: PresenceEntry(sessionCount: 1, version: 1, changedAt: 10)),
        PresenceDelta(replica: b, userID: "u", entry: PresenceEntry(sessionCount: 1, version: 1, changedAt: 11)),
    ], statuses: [])
    let first = state.merge(
        [PresenceDelta(replica: a, userID: "u", entry: PresenceEntry(sessionCount: 0, version: 2, changedAt: 20))],
        statuses: [])
    #expect(first.changes.isEmpty)
    let second = state.merge(
        [PresenceDelta(replica: b, userID: "u", entry: PresenceEntry(sessionCount: 0, version: 2, changedAt: 30))],
        statuses: [])
    #expect(second.changes == [UserPresenceState(userID: "u", isOnline: false, lastSeen: 30, custom: nil)])
}

@Test func crdt_status_lastWriterWins() {
    var state = PresenceCRDT()
    let early = StatusRecord(
        userID: "u", value: CustomStatusValue(status: "away", text: nil), stamp: StatusStamp(wall: 10, counter: 0, node: "b"))
    let late = StatusRecord(
        userID: "u", value: CustomStatusValue(status: "busy", text: "call"), stamp: StatusStamp(wall: 10, counter: 1, node: "a"))
    let tie = StatusRecord(
        userID: "u", value: CustomStatusValue(status: "online", text: nil), stamp: StatusStamp(wall: 10, counter: 1, node: "c"))
    #expect(state.merge([], statuses: [late]).changes.count == 1)
    #expect(state.merge([], statuses: [early]).changes.isEmpty)
    #expect(state.view(of: "u").custom == late.value)
    #expect(state.merge([], statuses: [tie]).changes.first?.custom == tie.value)
    #expect(state.view(of: "u").isOnline == false)
}

@Test func replicaClock_tracksContiguousVersions() {
    var clock = ReplicaClock()
    clock.record(2)
    #expect(clock.contiguous == 0)
    clock.record(1)
    #expect(clock.contiguous == 2)
    clock.record(5)
    clock.record(4)
    #expect(clock.contiguous == 2)
    #expect(clock.seenAbove == [4, 5])
    clock.advance(to: 3)
    #expect(clock.contiguous == 5)
    #expect(clock.seenAbove.isEmpty)
    clock.record(5)
    clock.advance(to: 1)
    #expect(clock.contiguous == 5)
}

@Test func crdt_deltasNewerThan_sendsOnlyWhatPeerLacks() {
    var state = PresenceCRDT()
    let a = ReplicaID(name: "a", epoch: 1)
    let b = ReplicaID(name: "b", epoch: 1)
    var deltas: [PresenceDelta] = []
    for version in 1...6 as ClosedRange<UInt64> {
        deltas.append(PresenceDelta(
            replica: a, userID: "u\(version)", entry: PresenceEntry(sessionCount: 1, version: version, changedAt: 0)))
    }
    deltas.append(PresenceDelta(replica: b, userID: "x", entry: PresenceEntry(sessionCount: 1, version: 1, changedAt: 0)))
    _ = state.merge(deltas, statuses: [])
    let lacking = state.deltas(newerThan: [a: 4, b: 1])
    #expect(lacking.map(\.entry.version) == [5, 6])
    #expect(lacking.allSatisfy { $0.replica == a })
    #expect(state.contiguousClocks == [a: 6, b: 1])
}

@Test func hybridClock_neverGoesBackwards() {
    var clock = HybridClock()
    #expect(clock.tick(wallNow: 100) == (wall: 100, counter: 0))
    #expect(clock.tick(wallNow: 100) == (wall: 100, counter: 1))
    #expect(clock.tick(wallNow: 90) == (wall: 100, counter: 2))
    clock.observe(StatusStamp(wall: 200, counter: 5, node: "x"))
    #expect(clock.tick(wallNow: 150) == (wall: 200, counter: 6))
    #expect(clock.tick(wallNow: 300) == (wall: 300, counter: 0))
}
