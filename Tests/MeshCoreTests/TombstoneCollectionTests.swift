import Testing
@testable import MeshCore

// Tombstone collection: the state returns to its size after churn, replays of collected writes
// are rejected, and a peer behind the collection horizon gets a replica's whole state.

private let a = TestNetwork.address(1)
private let b = TestNetwork.address(2)
private let c = TestNetwork.address(3)

private func settings(retentionMs: UInt64) -> GossipSettings {
    var settings = GossipSettings.local
    settings.tombstoneRetentionMs = retentionMs
    return settings
}

private func delta(_ replica: ReplicaID, _ user: UserID, count: UInt32, version: UInt64, at changedAt: Int64 = 0) -> PresenceDelta {
    PresenceDelta(replica: replica, userID: user, entry: PresenceEntry(sessionCount: count, version: version, changedAt: changedAt))
}

private let r1 = ReplicaID(name: "node-1", epoch: 11)
private let r2 = ReplicaID(name: "node-2", epoch: 22)

/// Merges `source` into `target` as a push-pull request does: every replica whole.
private func mergeWhole(_ target: inout PresenceCRDT, from source: PresenceCRDT, wall: Int64 = 0) -> [UserPresenceState] {
    let (replicas, entries) = source.transfer(for: nil)
    return target.mergeTransfer(entries, statuses: source.allStatuses, replicas: replicas, wall: wall, at: 0).changes
}

// MARK: - CRDT

@Test func collection_afterRetention_returnsToEmptyState() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1, at: 100)], statuses: [], at: 1_000)
    _ = state.merge([delta(r1, "u", count: 0, version: 2, at: 200)], statuses: [], at: 2_000)
    #expect(state.view(of: "u").lastSeen == 200)

    #expect(state.collectTombstones(now: 2_999, retentionMs: 1_000) == 0, "collected before its retention ended")
    #expect(state.view(of: "u").lastSeen == 200)
    #expect(state.collectTombstones(now: 3_000, retentionMs: 1_000) == 1)
    #expect(state.storageCounts == PresenceCRDT.StorageCounts())
    #expect(state.view(of: "u") == UserPresenceState(userID: "u", isOnline: false, lastSeen: nil, custom: nil))
    #expect(state.horizons[r1] == 2)
}

@Test func collection_onlineElsewhere_keepsUsersTombstones() {
    var state = PresenceCRDT()
    _ = state.merge([
        delta(r1, "u", count: 1, version: 1), delta(r2, "u", count: 1, version: 1), delta(r1, "u", count: 0, version: 2),
    ], statuses: [], at: 0)
    #expect(state.collectTombstones(now: 10_000, retentionMs: 1_000) == 0)
    #expect(state.view(of: "u").isOnline)
    #expect(state.storageCounts.entries == 2)
}

@Test func collection_versionAboveContiguous_waitsForClock() {
    var state = PresenceCRDT()
    // Version 1 (another user's write) never arrived, so the clock stops at 0.
    _ = state.merge([delta(r1, "u", count: 1, version: 2), delta(r1, "u", count: 0, version: 3)], statuses: [], at: 0)
    #expect(state.collectTombstones(now: 10_000, retentionMs: 1_000) == 0)
    state.advanceClock(of: r1, to: 3)
    #expect(state.collectTombstones(now: 10_000, retentionMs: 1_000) == 1)
}

@Test func collection_replayedOnlineDelta_isRejected() {
    var state = PresenceCRDT()
    let online = delta(r1, "u", count: 1, version: 1, at: 100)
    _ = state.merge([online, delta(r1, "u", count: 0, version: 2, at: 200)], statuses: [], at: 0)
    state.collectTombstones(now: 5_000, retentionMs: 1_000)
    #expect(state.storageCounts.entries == 0)

    let replay = state.merge([online], statuses: [], at: 6_000)
    #expect(replay.changes.isEmpty)
    #expect(replay.newDeltas.isEmpty, "a replay must not be gossiped on")
    #expect(!state.view(of: "u").isOnline)
    #expect(state.storageCounts == PresenceCRDT.StorageCounts())

    // A write the clock does not cover is new and is taken.
    let fresh = state.merge([delta(r1, "u", count: 1, version: 3, at: 300)], statuses: [], at: 6_000)
    #expect(fresh.changes.map(\.isOnline) == [true])
}

@Test func collection_keepsCustomStatus() {
    var state = PresenceCRDT()
    let status = StatusRecord(
        userID: "u", value: CustomStatusValue(status: "away", text: nil), stamp: StatusStamp(wall: 1, counter: 0, node: "node-1"))
    _ = state.merge([delta(r1, "u", count: 1, version: 1), delta(r1, "u", count: 0, version: 2)], statuses: [status], at: 0)
    state.collectTombstones(now: 5_000, retentionMs: 1_000)
    #expect(state.storageCounts.entries == 0)
    #expect(state.view(of: "u").custom == status.value)
    #expect(!state.view(of: "u").isOnline)
}

@Test func collection_droppedReplicaDeparture_isCollected() {
    var state = PresenceCRDT()
    _ = state.merge([delta(r1, "u", count: 1, version: 1)], statuses: [], at: 0)
    #expect(state.dropReplica(r1, wall: 900, at: 1_000).changes.map(\.lastSeen) == [900])
    #expect(state.storageCounts.lastSeenRegisters == 1)
    state.collectTombstones(now: 1_999, retentionMs: 1_000)
    #expect(state.view(of: "u").lastSeen == 900)
    state.collectTombstones(now: 2_000, retentionMs: 1_000)
    #expect(state.storageCounts == PresenceCRDT.StorageCounts())
}

@Test func wholeState_peerBehindHorizon_losesGhost() {
    // The collector saw u come and go and collected the tombstone; the laggard only saw u come.
    var collector = PresenceCRDT()
    _ = collector.merge([
        delta(r1, "u", count: 1, version: 1), delta(r1, "v", count: 1, version: 2), delta(r1, "u", count: 0, version: 3),
    ], statuses: [], at: 0)
    collector.collectTombstones(now: 5_000, retentionMs: 1_000)
    var laggard = PresenceCRDT()
    _ = laggard.merge([delta(r1, "u", count: 1, version: 1)], statuses: [], at: 0)

    // Deltas above the laggard's clock would not show that u is gone; the reply goes whole.
    let (replicas, entries) = collector.transfer(for: laggard.contiguousClocks)
    #expect(replicas[r1]?.isWhole == true)
    let changes = laggard.mergeTransfer(entries, statuses: [], replicas: replicas, wall: 7_000, at: 7_000).changes
    #expect(changes.filter { $0.userID == "u" } == [UserPresenceState(userID: "u", isOnline: false, lastSeen: 7_000, custom: nil)])
    #expect(laggard.view(of: "v").isOnline)
    #expect(laggard.contiguousClocks[r1] == 3)
    #expect(laggard.horizons[r1] == 3)

    // A peer at or above the horizon gets deltas only.
    let (upToDate, newer) = collector.transfer(for: [r1: 3])
    #expect(upToDate[r1]?.isWhole == false)
    #expect(newer.isEmpty)
}

@Test func wholeState_fromLaggard_doesNotRestoreCollectedUser() {
    var collector = PresenceCRDT()
    _ = collector.merge([delta(r1, "u", count: 1, version: 1), delta(r1, "u", count: 0, version: 2)], statuses: [], at: 0)
    collector.collectTombstones(now: 5_000, retentionMs: 1_000)
    var laggard = PresenceCRDT()
    _ = laggard.merge([delta(r1, "u", count: 1, version: 1)], statuses: [], at: 0)

    #expect(mergeWhole(&collector, from: laggard).isEmpty)
    #expect(!collector.view(of: "u").isOnline)
    #expect(collector.storageCounts.entries == 0)
}

/// Writers that each own one replica, as in the CRDT law tests. Each state here receives a random
/// prefix of every replica's writes, as a node does, so its clocks are contiguous and collection
/// has something to collect.
private struct ReplicaHistories {
    var writes: [ReplicaID: [PresenceDelta]] = [:]

    static func random(seed: UInt64, replicas: Int = 3, users: Int = 5, writes: Int = 80) -> ReplicaHistories {
        var random = SeededRandom(seed: seed)
        var histories = ReplicaHistories()
        var counts: [[UInt32]] = Array(repeating: Array(repeating: 0, count: users), count: replicas)
        for step in 0..<writes {
            let index = Int.random(in: 0..<replicas, using: &random)
            let user = Int.random(in: 0..<users, using: &random)
            if counts[index][user] > 0 && Int.random(in: 0..<3, using: &random) > 0 {
                counts[index][user] -= 1
            } else {
                counts[index][user] += 1
            }
            let replica = ReplicaID(name: "node-\(index)", epoch: UInt64(index + 100))
            let version = UInt64((histories.writes[replica]?.count ?? 0) + 1)
            histories.writes[replica, default: []].append(
                delta(replica, "user-\(user)", count: counts[index][user], version: version, at: Int64(step)))
        }
        return histories
    }

    /// Builds a state from a random prefix of each replica's writes, merged in random order. Each
    /// write is stamped at its position, so collection takes older tombstones first.
    func randomState(seed: UInt64) -> PresenceCRDT {
        var random = SeededRandom(seed: seed)
        var state = PresenceCRDT()
        var received: [PresenceDelta] = []
        for replica in writes.keys.sorted() {
            let all = writes[replica]!
            received.append(contentsOf: all.prefix(Int.random(in: 0...all.count, using: &random)))
        }
        for item in received.shuffled(using: &random) {
            _ = state.merge([item], statuses: [], at: UInt64(item.entry.changedAt))
        }
        return state
    }

    /// Online users after every write.
    var finalOnlineUsers: [UserID] {
        var state = PresenceCRDT()
        _ = state.merge(writes.values.flatMap { $0 }, statuses: [])
        return state.onlineUsers
    }
}

@Test func collection_thenWholeStateExchange_convergesToFullHistoryViews() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let histories = ReplicaHistories.random(seed: seed)
        var states = (0..<4).map { histories.randomState(seed: seed * 97 + UInt64($0)) }
        // Each state collects what it has held past a random cut-off.
        var random = SeededRandom(seed: seed)
        for index in states.indices {
            states[index].collectTombstones(now: 80, retentionMs: UInt64.random(in: 0...80, using: &random))
        }
        // The owner of each replica brings everyone to its full history, then all states
        // exchange whole states twice around.
        var owners = PresenceCRDT()
        _ = owners.merge(histories.writes.values.flatMap { $0 }, statuses: [])
        for index in states.indices {
            _ = mergeWhole(&states[index], from: owners)
        }
        for _ in 0..<2 {
            for i in states.indices {
                for j in states.indices where i != j {
                    _ = mergeWhole(&states[i], from: states[j])
                }
            }
        }
        for state in states {
            #expect(state.onlineUsers == histories.finalOnlineUsers, "seed \(seed)")
            #expect(state.entries == states[0].entries, "seed \(seed): states differ after exchange")
        }
    }
}

@Test func wholeStateMerge_isCommutativeAndIdempotentUnderCollection() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let histories = ReplicaHistories.random(seed: seed)
        var x = histories.randomState(seed: seed * 13)
        var y = histories.randomState(seed: seed * 17)
        x.collectTombstones(now: 80, retentionMs: 40)
        y.collectTombstones(now: 80, retentionMs: 20)

        var xy = x
        _ = mergeWhole(&xy, from: y)
        var yx = y
        _ = mergeWhole(&yx, from: x)
        #expect(xy.entries == yx.entries, "seed \(seed)")
        #expect(xy.onlineUsers == yx.onlineUsers, "seed \(seed)")

        let again = mergeWhole(&xy, from: y)
        #expect(again.isEmpty, "seed \(seed): merging twice emitted \(again)")
        #expect(xy.entries == yx.entries, "seed \(seed)")
    }
}

@Test func wholeStateMerge_emittedChanges_matchViewDifferences() {
    for seed in 1...40 as ClosedRange<UInt64> {
        let histories = ReplicaHistories.random(seed: seed)
        let before = histories.randomState(seed: seed * 19)
        var source = histories.randomState(seed: seed * 23)
        source.collectTombstones(now: 80, retentionMs: 10)
        var after = before
        let changes = mergeWhole(&after, from: source, wall: 999)
        for user in (0..<5).map({ "user-\($0)" }) {
            let emitted = changes.filter { $0.userID == user }
            let lastSeenRose = !after.view(of: user).isOnline
                && (after.view(of: user).lastSeen ?? .min) > (before.view(of: user).lastSeen ?? .min)
            if before.view(of: user).isOnline != after.view(of: user).isOnline || lastSeenRose {
                #expect(emitted == [after.view(of: user)], "seed \(seed): \(user) changed without one event")
            } else {
                #expect(emitted.isEmpty, "seed \(seed): \(user) emitted without a change")
            }
            if !after.view(of: user).isOnline && before.view(of: user).isOnline {
                #expect(after.view(of: user).lastSeen != nil, "seed \(seed): \(user) went offline without lastSeen")
            }
        }
    }
}

// MARK: - Instances

@Test func churn_manyUsersComeAndGo_everyNodeReturnsToBaseline() {
    let network = TestNetwork.cluster(3, settings: settings(retentionMs: 2_000))
    network.openSession("resident", on: a)
    network.run(for: 500)
    let baseline = [a, b, c].map { network.node($0).presenceState.storageCounts }

    for round in 0..<5 {
        for index in 0..<40 {
            let user = "churn-\(round)-\(index)"
            let node = [a, b, c][index % 3]
            network.openSession(user, on: node)
            if index % 4 == 0 { network.openSession(user, on: [a, b, c][(index + 1) % 3]) }
        }
        network.run(for: 200)
        for index in 0..<40 {
            let user = "churn-\(round)-\(index)"
            network.closeSession(user, on: [a, b, c][index % 3])
            if index % 4 == 0 { network.closeSession(user, on: [a, b, c][(index + 1) % 3]) }
        }
        network.run(for: 200)
    }
    for address in [a, b, c] {
        #expect(network.node(address).onlineUsers == ["resident"])
        #expect(network.node(address).presenceState.storageCounts.entries > baseline[0].entries)
    }

    // Retention plus one collection interval plus a push-pull round to carry the clocks.
    network.run(for: 2_000 + 200 + GossipSettings.local.pushPullIntervalMs)
    for (index, address) in [a, b, c].enumerated() {
        #expect(network.node(address).presenceState.storageCounts == baseline[index], "\(address)")
        #expect(network.node(address).onlineUsers == ["resident"])
    }
}

@Test func replay_ofCollectedOnlineDatagram_changesNothing() {
    let network = TestNetwork.cluster(3, settings: settings(retentionMs: 1_000))
    network.openSession("mallory", on: a)
    let captured = network.sentMessages.compactMap { sent -> PresenceDelta? in
        guard sent.from == a, case .presence(let delta) = sent.message, delta.userID == "mallory" else { return nil }
        return delta
    }
    #expect(!captured.isEmpty)
    network.closeSession("mallory", on: a)
    network.run(for: 1_000 + 100 + GossipSettings.local.pushPullIntervalMs)
    for address in [a, b, c] {
        #expect(network.node(address).presenceState.storageCounts.entries == 0, "\(address) kept a tombstone")
    }
    network.clearEvents()

    for address in [b, c] {
        network.inject(captured.map { .presence($0) }, to: address, from: a)
    }
    network.run(for: 2_000)
    for address in [a, b, c] {
        #expect(!network.isOnline("mallory", on: address), "replay brought mallory back on \(address)")
        #expect(network.presenceEvents(of: "mallory", on: address).isEmpty)
    }
}

@Test func nodeThatMissedTombstone_getsWholeStateInPushPull() {
    // Periodic push-pull is off, so the only exchange is the one this test starts.
    var quiet = settings(retentionMs: 1_000)
    quiet.pushPullIntervalMs = 0
    let network = TestNetwork.cluster(3, settings: quiet)
    network.openSession("ghost", on: a)
    #expect(network.isOnline("ghost", on: c))

    // c hears nothing about ghost while ghost leaves and a and b collect the tombstone.
    network.dropDatagram = { datagram in
        guard datagram.to == c, let messages = try? GossipCodec.decodeDatagram(datagram.bytes) else { return false }
        return messages.contains { if case .presence(let delta) = $0 { return delta.userID == "ghost" } else { return false } }
    }
    network.closeSession("ghost", on: a)
    network.run(for: 1_500)
    #expect(network.isOnline("ghost", on: c))
    #expect(network.node(a).presenceState.storageCounts.entries == 0)
    #expect(network.node(b).presenceState.storageCounts.entries == 0)
    #expect(network.node(c).members.allSatisfy { $0.state == .alive })

    network.dropDatagram = nil
    network.clearEvents()
    network.event(c) { instance, time in
        instance.startPushPull(to: a, at: time)
        return instance.finish()
    }
    #expect(!network.isOnline("ghost", on: c), "ghost stayed online on the node that missed its tombstone")
    let events = network.presenceEvents(of: "ghost", on: c)
    #expect(events.map(\.isOnline) == [false])
    #expect(events.last?.lastSeen != nil)
    #expect(network.node(c).presenceState.storageCounts.entries == 0)
}
