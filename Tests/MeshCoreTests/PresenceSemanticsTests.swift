import Testing
@testable import MeshCore

// Presence semantics on in-process instances: sessions as the unit, late closes, lastSeen,
// skewed wall clocks, and two clusters with users merging into one.

private let a = TestNetwork.address(1)
private let b = TestNetwork.address(2)
private let c = TestNetwork.address(3)
private let d = TestNetwork.address(4)

/// Ten minutes, the clock skew the skew tests give their nodes.
private let tenMinutes: Int64 = 600_000

extension TestNetwork {
    /// Runs an event on `address` with its wall clock shifted by `skew` milliseconds.
    @discardableResult
    fileprivate func skewed(
        _ address: GossipAddress, by skew: Int64, _ body: (inout MeshInstance, MeshTime) -> [Directive]
    ) -> [Directive] {
        event(address) { instance, time in
            body(&instance, MeshTime(monotonic: time.monotonic, wall: time.wall + skew))
        }
    }
}

// MARK: - Sessions

@Test func sessions_staleCloseOnOldNode_keepsUserOnline() {
    let network = TestNetwork.cluster(3)
    network.openSession("bob", on: a)
    network.run(for: 500)
    network.openSession("bob", on: b)
    network.clearEvents()

    // The session on a was found dead late, after bob had reconnected on b.
    network.run(for: 5_000)
    network.closeSession("bob", on: a)
    network.run(for: 1_000)
    for address in [a, b, c] {
        #expect(network.isOnline("bob", on: address), "\(address)")
        #expect(network.presenceEvents(of: "bob", on: address).isEmpty, "\(address)")
    }

    network.closeSession("bob", on: b)
    network.run(for: 500)
    for address in [a, b, c] {
        let events = network.presenceEvents(of: "bob", on: address)
        #expect(events.map(\.isOnline) == [false], "\(address)")
        #expect(events.first?.lastSeen == network.time.wall - 500, "\(address): lastSeen is not b's close")
    }
}

@Test func sessions_staleCloseDeliveredLate_keepsUserOnline() {
    let network = TestNetwork.cluster(3)
    network.openSession("bob", on: a)
    network.openSession("bob", on: b)
    // a's close reaches c only after b's session opened: versions, not arrival, decide.
    network.dropDatagram = { datagram in datagram.from == a && datagram.to == c }
    network.closeSession("bob", on: a)
    network.dropDatagram = nil
    network.clearEvents()
    network.run(for: 12_000)
    for address in [a, b, c] {
        #expect(network.isOnline("bob", on: address), "\(address)")
        #expect(network.presenceEvents(of: "bob", on: address).isEmpty, "\(address)")
        #expect(network.node(address).presenceState.entry(
            of: ReplicaID(name: "node-1", epoch: network.node(a).epoch), user: "bob")?.sessionCount == 0, "\(address)")
    }
}

@Test func sessions_userOnTwoNodes_offlineOnlyWhenBothNodesDie() {
    let network = TestNetwork.cluster(4)
    network.openSession("carol", on: a)
    network.openSession("carol", on: b)
    network.clearEvents()

    network.crash(a)
    let aDead = network.run(atMost: 10_000) { net in [c, d].allSatisfy { net.state(of: "node-1", on: $0) == .dead } }
    #expect(aDead)
    for address in [b, c, d] {
        #expect(network.isOnline("carol", on: address), "\(address)")
        #expect(network.presenceEvents(of: "carol", on: address).isEmpty, "\(address)")
    }

    network.crash(b)
    let bDead = network.run(atMost: 10_000) { net in [c, d].allSatisfy { net.state(of: "node-2", on: $0) == .dead } }
    #expect(bDead)
    for address in [c, d] {
        let events = network.presenceEvents(of: "carol", on: address)
        #expect(events.map(\.isOnline) == [false], "\(address)")
        #expect(events.first?.lastSeen != nil, "\(address)")
    }
}

// MARK: - lastSeen

@Test func lastSeen_isTheClosingNodesClock_sameOnEveryNode() {
    let network = TestNetwork.cluster(3)
    network.skewed(c, by: -tenMinutes) { $0.onSessionOpened(user: "dora", at: $1) }
    network.run(for: 100)
    // c's clock runs ten minutes behind; lastSeen still comes from c, not from the observers.
    network.skewed(c, by: -tenMinutes) { $0.onSessionClosed(user: "dora", at: $1) }
    let closedAt = network.time.wall - tenMinutes
    for address in [a, b, c] {
        #expect(network.presenceEvents(of: "dora", on: address).last?.lastSeen == closedAt, "\(address)")
        #expect(network.node(address).presence(of: "dora").lastSeen == closedAt, "\(address)")
    }
}

@Test func lastSeen_laterCloseOnSlowClock_staysLatest() {
    let network = TestNetwork.cluster(3)
    network.skewed(a, by: tenMinutes) { $0.onSessionOpened(user: "erik", at: $1) }
    network.skewed(c, by: -tenMinutes) { $0.onSessionOpened(user: "erik", at: $1) }
    network.skewed(a, by: tenMinutes) { $0.onSessionClosed(user: "erik", at: $1) }
    let firstClose = network.node(b).presenceState.latestChange(of: "erik")!
    network.run(for: 1_000)
    network.skewed(c, by: -tenMinutes) { $0.onSessionClosed(user: "erik", at: $1) }

    var reported: Set<Int64> = []
    for address in [a, b, c] {
        let view = network.node(address).presence(of: "erik")
        #expect(!view.isOnline, "\(address)")
        reported.insert(view.lastSeen ?? .min)
    }
    #expect(reported.count == 1, "nodes disagree on lastSeen: \(reported)")
    // c's close came last, so its stamp is above the earlier close of the fast clock.
    #expect(reported.first! > firstClose)
}

// MARK: - Skewed clocks

@Test func skew_tenMinutes_sessionOutcomesMatchUnskewed() {
    func outcomes(skews: [GossipAddress: Int64]) -> [[Bool]] {
        let network = TestNetwork.cluster(3)
        func run(_ address: GossipAddress, _ body: (inout MeshInstance, MeshTime) -> [Directive]) {
            network.skewed(address, by: skews[address] ?? 0, body)
            network.run(for: 50)
        }
        run(a) { $0.onSessionOpened(user: "u", at: $1) }
        run(c) { $0.onSessionOpened(user: "u", at: $1) }
        run(a) { $0.onSessionClosed(user: "u", at: $1) }
        run(b) { $0.onSessionOpened(user: "u", at: $1) }
        run(c) { $0.onSessionClosed(user: "u", at: $1) }
        run(b) { $0.onSessionClosed(user: "u", at: $1) }
        run(c) { $0.onSessionOpened(user: "u", at: $1) }
        return [a, b, c].map { address in network.presenceEvents(of: "u", on: address).map(\.isOnline) }
    }
    let plain = outcomes(skews: [:])
    #expect(plain == Array(repeating: [true, false, true], count: 3))
    #expect(outcomes(skews: [a: tenMinutes, b: 0, c: -tenMinutes]) == plain)
    #expect(outcomes(skews: [a: -tenMinutes, b: tenMinutes, c: 0]) == plain)
}

@Test func skew_laterStatusOnSlowClock_winsEverywhere() {
    let network = TestNetwork.cluster(3)
    network.skewed(a, by: tenMinutes) {
        $0.onStatusSet(user: "erik", status: CustomStatusValue(status: "away", text: "lunch"), at: $1)
    }
    network.run(for: 500)
    network.skewed(c, by: -tenMinutes) {
        $0.onStatusSet(user: "erik", status: CustomStatusValue(status: "busy", text: "call"), at: $1)
    }
    network.run(for: 500)
    for address in [a, b, c] {
        #expect(network.node(address).presence(of: "erik").custom?.status == "busy", "\(address)")
    }
}

@Test func skew_concurrentStatusWrites_convergeEverywhere() {
    let network = TestNetwork.cluster(3)
    // Both writes happen before either node hears of the other's.
    network.dropDatagram = { _ in true }
    network.skewed(a, by: tenMinutes) {
        $0.onStatusSet(user: "erik", status: CustomStatusValue(status: "away", text: nil), at: $1)
    }
    network.skewed(c, by: -tenMinutes) {
        $0.onStatusSet(user: "erik", status: CustomStatusValue(status: "online", text: nil), at: $1)
    }
    network.dropDatagram = nil
    network.run(for: 3 * GossipSettings.local.pushPullIntervalMs)
    let values = Set([a, b, c].map { network.node($0).presence(of: "erik").custom?.status ?? "none" })
    #expect(values.count == 1, "nodes disagree: \(values)")
    // Concurrent writes are ordered by hybrid timestamp: the fast clock's write is later.
    #expect(values.first == "away")
}

// MARK: - Merging clusters

@Test(arguments: [10, 50, 51, 500])
func merge_twoClusters_everyNodeHoldsAll(perSide: Int) {
    let network = TestNetwork()
    let west = (1...3).map { TestNetwork.address($0) }
    let east = (4...6).map { TestNetwork.address($0) }
    for (index, address) in west.enumerated() {
        network.addNode("west-\(index + 1)", address: address, seeds: index == 0 ? [] : [west[0]])
    }
    for (index, address) in east.enumerated() {
        network.addNode("east-\(index + 1)", address: address, seeds: index == 0 ? [] : [east[0]])
    }
    for address in west + east { network.start(address) }
    network.run(for: 2_000)
    for index in 0..<perSide {
        network.openSession("west-user-\(index)", on: west[index % 3])
        network.openSession("east-user-\(index)", on: east[index % 3])
    }
    network.run(for: 2_000)
    for address in west + east {
        #expect(network.node(address).onlineUsers.count == perSide, "\(address) before the merge")
    }

    // A new node with a seed in each cluster joins them.
    let bridge = TestNetwork.address(7)
    network.addNode("bridge", address: bridge, seeds: [west[0], east[0]])
    network.start(bridge)
    let everyone = west + east + [bridge]
    let merged = network.run(atMost: 60_000) { net in
        everyone.allSatisfy { net.node($0).onlineUsers.count == 2 * perSide }
    }
    #expect(merged, "counts \(everyone.map { network.node($0).onlineUsers.count })")
    #expect(network.isConverged)
    let expected = network.node(bridge).onlineUsers
    for address in everyone {
        #expect(network.node(address).onlineUsers == expected, "\(address)")
    }
}

// MARK: - Status register

private let replicaA = ReplicaID(name: "node-a", epoch: 1)
private let replicaB = ReplicaID(name: "node-b", epoch: 2)

private func status(_ text: String, wall: Int64, node: String, clock: [ReplicaID: UInt64]) -> StatusRecord {
    StatusRecord(
        userID: "u", value: CustomStatusValue(status: "away", text: text),
        stamp: StatusStamp(wall: wall, counter: 0, node: node), clock: clock)
}

@Test func status_followingWrite_winsOverLargerStamp() {
    let first = status("first", wall: 1_000, node: "node-a", clock: [replicaA: 1])
    // Written after seeing `first`, by a node whose stamp reads earlier.
    let second = status("second", wall: 10, node: "node-b", clock: [replicaA: 1, replicaB: 1])
    #expect(first.isSuperseded(by: second))
    #expect(!second.isSuperseded(by: first))
    for order in [[first, second], [second, first]] {
        var state = PresenceCRDT()
        for record in order { _ = state.merge([], statuses: [record]) }
        #expect(state.view(of: "u").custom?.text == "second")
    }
}

@Test func status_concurrentWrites_orderedByStampThenNode() {
    let early = status("early", wall: 10, node: "node-b", clock: [replicaB: 1])
    let late = status("late", wall: 20, node: "node-a", clock: [replicaA: 1])
    #expect(early.isSuperseded(by: late))
    #expect(!late.isSuperseded(by: early))
    let tieA = status("a", wall: 20, node: "node-a", clock: [replicaA: 2])
    let tieB = status("b", wall: 20, node: "node-b", clock: [replicaB: 2])
    #expect(tieA.isSuperseded(by: tieB))
    #expect(!tieB.isSuperseded(by: tieA))
    #expect(!tieA.isSuperseded(by: tieA))
}

@Test func status_clock_roundTripsInDatagram() throws {
    let record = status("x", wall: -5, node: "node-a", clock: [replicaA: 3, replicaB: 7])
    let decoded = try GossipCodec.decodeDatagram(GossipCodec.encodeDatagram([.customStatus(record)]))
    #expect(decoded == [.customStatus(record)])
}

@Test func status_writeAfterSeeingAnother_carriesDominatingClock() {
    let network = TestNetwork.cluster(3)
    network.skewed(a, by: tenMinutes) { $0.onStatusSet(user: "u", status: CustomStatusValue(status: "away", text: nil), at: $1) }
    let first = network.node(c).presenceState.statuses["u"]!
    network.skewed(c, by: -tenMinutes) { $0.onStatusSet(user: "u", status: CustomStatusValue(status: "busy", text: nil), at: $1) }
    let second = network.node(c).presenceState.statuses["u"]!
    #expect(second.clock.count == 2)
    #expect(first.isSuperseded(by: second))
    #expect(second.clock.allSatisfy { replica, count in count >= (first.clock[replica] ?? 0) })
}
