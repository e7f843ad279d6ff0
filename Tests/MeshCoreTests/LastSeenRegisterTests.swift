import Testing
@testable import MeshCore

// The lastSeen register: the lastSeen that dropped replicas leave behind reaches every node,
// restarted ones included, all nodes converge on one value, and collection cannot be undone by
// a peer's copy.

private let a = TestNetwork.address(1)
private let b = TestNetwork.address(2)
private let c = TestNetwork.address(3)

private let r1 = ReplicaID(name: "node-1", epoch: 11)
private let r2 = ReplicaID(name: "node-2", epoch: 22)

private func delta(_ replica: ReplicaID, _ user: UserID, count: UInt32, version: UInt64, at changedAt: Int64) -> PresenceDelta {
    PresenceDelta(replica: replica, userID: user, entry: PresenceEntry(sessionCount: count, version: version, changedAt: changedAt))
}

private func lastSeenWalls(_ state: PresenceCRDT) -> [UserID: Int64] {
    state.lastSeen.mapValues(\.wall)
}

// MARK: - Scenarios on in-process instances

@Test func restart_newEpoch_learnsLastSeenByPushPull() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("yan", on: a)
    network.openSession("zed", on: c)
    network.run(for: 500)
    network.closeSession("yan", on: a)
    network.closeSession("zed", on: c)
    network.run(for: 500)
    let yanClosedAt = try #require(network.node(b).presence(of: "yan").lastSeen)
    let zedClosedAt = try #require(network.node(b).presence(of: "zed").lastSeen)

    // node-1 is everyone's seed and has no seed itself, so it learns only from the push-pulls
    // the others start when they see its new run.
    let oldEpoch = network.node(a).epoch
    network.crash(a)
    network.run(for: 100)
    network.restart(a)
    #expect(network.node(a).epoch != oldEpoch)
    #expect(network.node(a).presence(of: "yan").lastSeen == nil)

    let converged = network.run(atMost: 3_000) { network in
        [a, b, c].allSatisfy { network.node($0).presence(of: "yan").lastSeen == yanClosedAt }
    }
    #expect(converged, "restarted node-1 never learned yan's lastSeen")
    for address in [a, b, c] {
        #expect(network.node(address).presence(of: "yan") == UserPresenceState(
            userID: "yan", isOnline: false, lastSeen: yanClosedAt, custom: nil), "\(address)")
        #expect(network.node(address).presence(of: "zed").lastSeen == zedClosedAt, "\(address)")
    }
}

@Test func pause_closeDuringPause_lastSeenRisesEverywhere() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("pat", on: b)
    network.run(for: 500)
    network.clearEvents()

    // node-2 stops: its peers declare it dead and take pat offline at their detection times.
    network.crash(b)
    let dropped = network.run(atMost: 10_000) { network in
        [a, c].allSatisfy { !network.isOnline("pat", on: $0) }
    }
    try #require(dropped)
    network.run(for: 500)
    let droppedAt = try #require(network.node(a).presence(of: "pat").lastSeen)
    #expect(network.node(c).presence(of: "pat").lastSeen == droppedAt, "survivors disagree on the drop time")

    // node-2 resumes and handles the close that arrived during the pause: a later lastSeen.
    network.run(for: 1_000)
    network.down.remove(b)
    network.closeSession("pat", on: b)
    let closedAt = try #require(network.node(b).presence(of: "pat").lastSeen)
    #expect(closedAt > droppedAt)
    network.event(b) { $0.onTick(at: $1) }

    let converged = network.run(atMost: 5_000) { network in
        [a, b, c].allSatisfy { network.node($0).presence(of: "pat").lastSeen == closedAt }
    }
    #expect(converged, "nodes did not converge on the close during the pause")
    for address in [a, c] {
        let events = network.presenceEvents(of: "pat", on: address)
        #expect(events.allSatisfy { !$0.isOnline }, "\(address): \(events)")
        #expect(events.last == network.node(address).presence(of: "pat"), "\(address): last event is not the view")
    }
}

@Test func dropOnlineEntry_survivorsConvergeOnLatestDetection() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("carl", on: c)
    network.run(for: 500)
    network.crash(c)
    let dropped = network.run(atMost: 10_000) { network in
        [a, b].allSatisfy { !network.isOnline("carl", on: $0) }
    }
    try #require(dropped)
    network.run(for: 500)
    let values = Set([a, b].map { network.node($0).presence(of: "carl").lastSeen })
    #expect(values.count == 1, "survivors disagree: \(values)")
    for address in [a, b] {
        #expect(network.presenceEvents(of: "carl", on: address).last == network.node(address).presence(of: "carl"))
    }
}

// MARK: - CRDT

/// Random writes of entries and `lastSeen` values by four replicas and six users.
private struct RegisterHistory {
    var deltas: [PresenceDelta] = []
    var records: [LastSeenRecord] = []

    static func random(seed: UInt64) -> RegisterHistory {
        var random = SeededRandom(seed: seed)
        var history = RegisterHistory()
        var versions = [UInt64](repeating: 0, count: 4)
        var counts = Array(repeating: [UInt32](repeating: 0, count: 6), count: 4)
        for step in 0..<60 {
            let replica = Int.random(in: 0..<4, using: &random)
            let user = Int.random(in: 0..<6, using: &random)
            if Int.random(in: 0..<3, using: &random) == 0 {
                history.records.append(LastSeenRecord(userID: "user-\(user)", wall: Int64.random(in: 0...80, using: &random)))
                continue
            }
            counts[replica][user] = counts[replica][user] > 0 && Bool.random(using: &random) ? counts[replica][user] - 1 : counts[replica][user] + 1
            versions[replica] += 1
            history.deltas.append(PresenceDelta(
                replica: ReplicaID(name: "node-\(replica)", epoch: UInt64(replica + 100)), userID: "user-\(user)",
                entry: PresenceEntry(sessionCount: counts[replica][user], version: versions[replica], changedAt: Int64(step))))
        }
        return history
    }

    func randomState(seed: UInt64) -> PresenceCRDT {
        var random = SeededRandom(seed: seed)
        var state = PresenceCRDT()
        let deltas = deltas.filter { _ in Bool.random(using: &random) }.shuffled(using: &random)
        let records = records.filter { _ in Bool.random(using: &random) }.shuffled(using: &random)
        _ = state.merge(deltas, statuses: [], lastSeen: records)
        return state
    }
}

/// Merges `source` into `target` as a push-pull request does.
private func mergedWhole(_ target: PresenceCRDT, _ source: PresenceCRDT) -> PresenceCRDT {
    var state = target
    let (replicas, entries) = source.transfer(for: nil)
    _ = state.mergeTransfer(
        entries, statuses: [], lastSeen: source.lastSeenRecords(at: 0), replicas: replicas, wall: 0, at: 0)
    return state
}

private func sameState(_ x: PresenceCRDT, _ y: PresenceCRDT) -> Bool {
    x.entries == y.entries && lastSeenWalls(x) == lastSeenWalls(y) && x.views == y.views
}

@Test func register_merge_isIdempotent() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let history = RegisterHistory.random(seed: seed)
        let x = history.randomState(seed: seed * 7)
        #expect(sameState(mergedWhole(x, x), x), "seed \(seed)")
        let y = history.randomState(seed: seed * 11)
        let once = mergedWhole(x, y)
        var twice = once
        let (replicas, entries) = y.transfer(for: nil)
        let again = twice.mergeTransfer(
            entries, statuses: [], lastSeen: y.lastSeenRecords(at: 0), replicas: replicas, wall: 0, at: 0)
        #expect(sameState(once, twice), "seed \(seed)")
        #expect(again.changes.isEmpty, "seed \(seed): merging twice emitted \(again.changes)")
    }
}

@Test func register_merge_isCommutative() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let history = RegisterHistory.random(seed: seed)
        let x = history.randomState(seed: seed * 13)
        let y = history.randomState(seed: seed * 17)
        #expect(sameState(mergedWhole(x, y), mergedWhole(y, x)), "seed \(seed)")
    }
}

@Test func register_merge_isAssociative() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let history = RegisterHistory.random(seed: seed)
        let x = history.randomState(seed: seed * 19)
        let y = history.randomState(seed: seed * 23)
        let z = history.randomState(seed: seed * 29)
        #expect(sameState(mergedWhole(mergedWhole(x, y), z), mergedWhole(x, mergedWhole(y, z))), "seed \(seed)")
    }
}

@Test func register_deltaPath_equalsFullStatePath() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let history = RegisterHistory.random(seed: seed)
        var deltaPath = PresenceCRDT()
        for delta in history.deltas {
            _ = deltaPath.merge([delta], statuses: [])
        }
        for record in history.records {
            _ = deltaPath.merge([], statuses: [], lastSeen: [record])
        }
        var whole = PresenceCRDT()
        _ = whole.merge(history.deltas, statuses: [], lastSeen: history.records)
        let fullStatePath = mergedWhole(PresenceCRDT(), whole)
        #expect(sameState(deltaPath, fullStatePath), "seed \(seed)")
        #expect(lastSeenWalls(fullStatePath) == Dictionary(
            history.records.map { ($0.userID, $0.wall) }, uniquingKeysWith: max), "seed \(seed)")
    }
}

@Test func register_lowerValue_isIgnored() {
    var state = PresenceCRDT()
    _ = state.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 50)])
    let lower = state.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 40)])
    #expect(lower.changes.isEmpty)
    #expect(state.view(of: "u").lastSeen == 50)
    let higher = state.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 60)])
    #expect(higher.changes == [UserPresenceState(userID: "u", isOnline: false, lastSeen: 60, custom: nil)])
}

@Test func dropReplica_tombstone_leavesItsCloseTime() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1, at: 10), delta(r1, "u", count: 0, version: 2, at: 20)], statuses: [])
    let result = state.dropReplica(r1, wall: 900)
    #expect(result.changes.isEmpty, "lastSeen did not change, so nothing is news")
    #expect(result.lastSeenWrites.isEmpty, "a tombstone's close time is the same on every node")
    #expect(lastSeenWalls(state) == ["u": 20])
    #expect(state.view(of: "u").lastSeen == 20)
}

@Test func dropReplica_onlineEntry_writesDetectionTime() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1, at: 10)], statuses: [])
    let result = state.dropReplica(r1, wall: 900)
    #expect(result.changes == [UserPresenceState(userID: "u", isOnline: false, lastSeen: 900, custom: nil)])
    #expect(result.lastSeenWrites == [LastSeenRecord(userID: "u", wall: 900)])
}

@Test func dropReplica_userOnlineElsewhere_staysOnline() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1, at: 10), delta(r2, "u", count: 1, version: 1, at: 11)], statuses: [])
    let result = state.dropReplica(r1, wall: 900)
    #expect(result.changes.isEmpty)
    #expect(state.view(of: "u").isOnline)
    // The later close on node-2 stays the lastSeen.
    _ = state.merge([delta(r2, "u", count: 0, version: 2, at: 950)], statuses: [])
    #expect(state.view(of: "u").lastSeen == 950)
}

// MARK: - Collection

@Test func collection_register_goesAfterRetention() {
    var state = PresenceCRDT()
    _ = state.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 1_000)
    state.collectTombstones(now: 1_999, retentionMs: 1_000)
    #expect(state.view(of: "u").lastSeen == 5)
    state.collectTombstones(now: 2_000, retentionMs: 1_000)
    #expect(state.storageCounts == PresenceCRDT.StorageCounts())
    #expect(state.view(of: "u").lastSeen == nil)
}

@Test func collection_registerOfOnlineUser_goesAlone() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1, at: 10)], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 0)
    state.collectTombstones(now: 1_000, retentionMs: 1_000)
    #expect(state.lastSeen.isEmpty)
    #expect(state.view(of: "u").isOnline)
    #expect(state.storageCounts.entries == 1)
}

@Test func collection_peerCopyAtRetention_isRejected() {
    // Both nodes got the value at once; x collects first and then merges y's copy.
    var x = PresenceCRDT()
    var y = PresenceCRDT()
    _ = x.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 0)
    _ = y.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 0)
    x.collectTombstones(now: 1_000, retentionMs: 1_000)
    #expect(x.lastSeen.isEmpty)
    let result = x.mergeTransfer(
        [], statuses: [], lastSeen: y.lastSeenRecords(at: 1_000), replicas: [:], retentionMs: 1_000, wall: 0, at: 1_000)
    #expect(result.changes.isEmpty)
    #expect(x.lastSeen.isEmpty, "a copy as old as the retention came back")
}

@Test func collection_youngerCopies_expireWithTheWrite() {
    // y received the value 300 ms after x. Copies passed back and forth keep the older age, so
    // both collect it within one retention of the write, and no exchange brings it back.
    var x = PresenceCRDT()
    var y = PresenceCRDT()
    _ = x.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 0)
    _ = y.merge([], statuses: [], lastSeen: [LastSeenRecord(userID: "u", wall: 5)], at: 300)
    _ = y.mergeTransfer(
        [], statuses: [], lastSeen: x.lastSeenRecords(at: 400), replicas: [:], retentionMs: 1_000, wall: 0, at: 400)
    #expect(y.lastSeen["u"]?.age(at: 400) == 400, "y kept the younger age of its own copy")

    for now in stride(from: 500 as UInt64, through: 3_000, by: 100) {
        _ = x.mergeTransfer(
            [], statuses: [], lastSeen: y.lastSeenRecords(at: now), replicas: [:], retentionMs: 1_000, wall: 0, at: now)
        _ = y.mergeTransfer(
            [], statuses: [], lastSeen: x.lastSeenRecords(at: now), replicas: [:], retentionMs: 1_000, wall: 0, at: now)
        x.collectTombstones(now: now, retentionMs: 1_000)
        y.collectTombstones(now: now, retentionMs: 1_000)
        if now >= 1_000 {
            #expect(x.lastSeen.isEmpty, "x holds the value at \(now)")
            #expect(y.lastSeen.isEmpty, "y holds the value at \(now)")
        }
    }
}

// MARK: - Codec

@Test func codec_lastSeenMessage_roundTrips() throws {
    let message = GossipMessage.lastSeen(LastSeenRecord(userID: "yan", wall: -1_700_000_000_123))
    #expect(try GossipCodec.decodeDatagram(GossipCodec.encodeDatagram([message])) == [message])
}

@Test func codec_pushPullLastSeen_roundTripsWithAge() throws {
    var payload = PushPullPayload(
        kind: .reply, senderName: "node-2", senderEpoch: 7, members: [], clocks: [:], entries: [], statuses: [])
    payload.lastSeen = [
        LastSeenRecord(userID: "yan", wall: 1_700_000_000_654, ageMs: 1_234),
        LastSeenRecord(userID: "zed", wall: 5, ageMs: 0),
    ]
    let bytes = PushPullCodec.encode(payload)
    #expect(bytes.first == 3)
    #expect(try PushPullCodec.decode(bytes) == payload)
    for length in 0..<bytes.count {
        #expect(throws: DecodeError.self) { try PushPullCodec.decode(Array(bytes[0..<length])) }
    }
}

@Test func codec_pushPullLastSeenCount_beyondInput_isRejected() {
    var payload = PushPullPayload(
        kind: .request, senderName: "node-2", senderEpoch: 7, members: [], clocks: [:], entries: [], statuses: [])
    payload.lastSeen = []
    var bytes = PushPullCodec.encode(payload)
    bytes[bytes.count - 1] = 100
    #expect(throws: DecodeError.self) { try PushPullCodec.decode(bytes) }
}
