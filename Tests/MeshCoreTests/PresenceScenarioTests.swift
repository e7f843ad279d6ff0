import Testing
@testable import MeshCore

private let a = TestNetwork.address(1)
private let b = TestNetwork.address(2)
private let c = TestNetwork.address(3)

private func sendTargets(_ directives: [Directive]) -> Set<GossipAddress> {
    Set(directives.compactMap { if case .send(_, let to) = $0 { return to } else { return nil } })
}

@Test func presence_openOnA_onlineOnBAndCAtOnce() {
    let network = TestNetwork.cluster(3)
    network.clearEvents()
    let directives = network.openSession("alice", on: a)

    // Fanout 3 covers both peers, so the change goes straight to each of them in this call.
    #expect(sendTargets(directives) == [b, c])
    #expect(directives.contains(.presenceChanged([
        UserPresenceState(userID: "alice", isOnline: true, lastSeen: nil, custom: nil)
    ])))
    // No time has passed: delivery alone made alice online everywhere.
    for address in [a, b, c] {
        #expect(network.isOnline("alice", on: address))
        #expect(network.presenceEvents(of: "alice", on: address).count == 1)
        #expect(network.node(address).onlineUsers == ["alice"])
    }
}

@Test func presence_secondSessionOnSameNode_emitsNothing() {
    let network = TestNetwork.cluster(3)
    network.openSession("alice", on: a)
    network.clearEvents()
    network.openSession("alice", on: a)
    network.closeSession("alice", on: a)
    for address in [a, b, c] {
        #expect(network.presenceEvents(of: "alice", on: address).isEmpty)
        #expect(network.isOnline("alice", on: address))
    }
}

@Test func presence_twoNodes_closingOneKeepsOnline() {
    let network = TestNetwork.cluster(3)
    network.openSession("dana", on: a)
    network.openSession("dana", on: b)
    network.clearEvents()
    network.closeSession("dana", on: a)
    network.run(for: 1_000)
    for address in [a, b, c] {
        #expect(network.isOnline("dana", on: address))
        #expect(network.presenceEvents(of: "dana", on: address).isEmpty)
    }
}

@Test func presence_twoNodes_closingBothGivesOneOffline() {
    let network = TestNetwork.cluster(3)
    network.openSession("dana", on: a)
    network.openSession("dana", on: b)
    network.closeSession("dana", on: a)
    network.run(for: 100)
    network.clearEvents()
    let closedAt = network.time.wall
    network.closeSession("dana", on: b)
    network.run(for: 1_000)
    for address in [a, b, c] {
        let events = network.presenceEvents(of: "dana", on: address)
        #expect(events == [UserPresenceState(userID: "dana", isOnline: false, lastSeen: closedAt, custom: nil)])
        #expect(network.node(address).presence(of: "dana").lastSeen == closedAt)
    }
}

@Test func presence_closeWithoutOpen_isIgnored() {
    let network = TestNetwork.cluster(2)
    let directives = network.closeSession("ghost", on: a)
    #expect(!directives.contains { if case .presenceChanged = $0 { return true } else { return false } })
    #expect(network.node(a).presence(of: "ghost") == UserPresenceState(userID: "ghost", isOnline: false, lastSeen: nil, custom: nil))
}

@Test func presence_invalidUserID_isIgnored() {
    let network = TestNetwork.cluster(2)
    network.openSession("", on: a)
    network.openSession(String(repeating: "x", count: WireLimits.maxUserIDBytes + 1), on: a)
    #expect(network.node(a).onlineUsers.isEmpty)
    #expect(network.node(b).counters.datagramsMalformed == 0)
}

@Test func presence_deadNodesUsers_goOfflineOnSurvivors() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("carol", on: c)
    network.openSession("alice", on: a)
    network.openSession("alice", on: c)
    network.clearEvents()
    network.crash(c)
    network.run(for: 3_000)
    for address in [a, b] {
        #expect(network.state(of: "node-3", on: address) == .dead)
        let deadAt = try #require(network.memberEvents(about: "node-3", on: address).first { $0.member.state == .dead }?.at)
        let events = network.presenceEvents(of: "carol", on: address)
        #expect(events == [UserPresenceState(userID: "carol", isOnline: false, lastSeen: network.wall(at: deadAt), custom: nil)])
        // alice keeps her session on node-1.
        #expect(network.isOnline("alice", on: address))
        #expect(network.presenceEvents(of: "alice", on: address).isEmpty)
    }
}

@Test func presence_suspectNode_keepsItsUsers() {
    let network = TestNetwork.cluster(3)
    network.openSession("carol", on: c)
    network.crash(c)
    let suspected = network.run(atMost: 2_000) { $0.state(of: "node-3", on: a) == .suspect }
    #expect(suspected)
    #expect(network.isOnline("carol", on: a))
}

@Test func presence_lateJoiner_getsStateByPushPull() {
    let network = TestNetwork.cluster(3)
    network.openSession("alice", on: a)
    network.openSession("bob", on: b)
    network.closeSession("bob", on: b)
    network.openSession("carol", on: c)
    let d = TestNetwork.address(4)
    network.addNode("node-4", address: d, seeds: [a])
    network.start(d)
    // The join push-pull alone, before any timer, carries the whole state.
    #expect(network.node(d).onlineUsers == ["alice", "carol"])
    #expect(network.node(d).presence(of: "bob") == network.node(a).presence(of: "bob"))
    network.run(for: 2_000)
    #expect(network.isConverged)
}

@Test func presence_deltaPath_equalsPushPullPath() {
    let network = TestNetwork.cluster(3)
    var random = SeededRandom(seed: 17)
    var open: [GossipAddress: [String: Int]] = [:]
    for _ in 0..<200 {
        let address = [a, b, c].randomElement(using: &random)!
        let user = "user-\(Int.random(in: 0..<15, using: &random))"
        if (open[address]?[user] ?? 0) > 0 && Bool.random(using: &random) {
            network.closeSession(user, on: address)
            open[address]![user]! -= 1
        } else {
            network.openSession(user, on: address)
            open[address, default: [:]][user, default: 0] += 1
        }
        network.run(for: UInt64.random(in: 0...20, using: &random))
    }
    network.run(for: 2_000)
    let d = TestNetwork.address(4)
    network.addNode("node-4", address: d, seeds: [a])
    network.start(d)
    for user in (0..<15).map({ "user-\($0)" }) {
        let expectedOnline = [a, b, c].contains { (open[$0]?[user] ?? 0) > 0 }
        for address in [a, b, c, d] {
            #expect(network.isOnline(user, on: address) == expectedOnline)
            #expect(network.node(address).presence(of: user) == network.node(a).presence(of: user))
        }
    }
}

@Test func presence_thousandUsers_reachPeersWithinPacketLimit() {
    let network = TestNetwork.cluster(3)
    for index in 0..<1_000 {
        network.event(a) { $0.onSessionOpened(user: "user-\(index)", at: $1) }
    }
    network.run(for: 3_000)
    #expect(network.largestDatagram <= GossipSettings.local.maxPacketBytes)
    #expect(network.node(b).onlineUsers.count == 1_000)
    #expect(network.node(c).onlineUsers.count == 1_000)
}

@Test func presence_lostDeltas_repairedByPushPull() {
    var settings = GossipSettings.local
    settings.pushPullIntervalMs = 1_000
    let network = TestNetwork.cluster(3, settings: settings)
    // Every presence datagram to node-3 is lost, so only push-pull can bring the users.
    network.dropDatagram = { datagram in
        guard datagram.to == c, let messages = try? GossipCodec.decodeDatagram(datagram.bytes) else { return false }
        return messages.contains { if case .presence = $0 { return true } else { return false } }
    }
    for index in 0..<20 {
        network.openSession("user-\(index)", on: a)
    }
    #expect(network.node(c).onlineUsers.isEmpty)
    let repaired = network.run(atMost: 5_000) { $0.node(c).onlineUsers.count == 20 }
    #expect(repaired)
}

@Test func status_setOnA_seenEverywhereWithUnchangedOnline() {
    let network = TestNetwork.cluster(3)
    network.openSession("erin", on: b)
    network.clearEvents()
    let away = CustomStatusValue(status: "away", text: "lunch")
    network.setStatus("erin", away, on: a)
    for address in [a, b, c] {
        let events = network.presenceEvents(of: "erin", on: address)
        #expect(events == [UserPresenceState(userID: "erin", isOnline: true, lastSeen: nil, custom: away)])
    }
}

@Test func status_concurrentWrites_converge() {
    let network = TestNetwork.cluster(3)
    network.setStatus("erin", CustomStatusValue(status: "away", text: nil), on: a)
    network.cut(a, b)
    network.cut(b, c)
    network.cut(a, c)
    network.setStatus("erin", CustomStatusValue(status: "busy", text: "b"), on: b)
    network.setStatus("erin", CustomStatusValue(status: "online", text: "c"), on: c)
    network.heal(a, b)
    network.heal(b, c)
    network.heal(a, c)
    network.run(for: 2_000)
    let final = network.node(a).presence(of: "erin").custom
    #expect(final != nil)
    #expect(network.node(b).presence(of: "erin").custom == final)
    #expect(network.node(c).presence(of: "erin").custom == final)
    // Both writes saw node-1's stamp and then stamped at the same wall time, so the node name
    // breaks the tie.
    #expect(final == CustomStatusValue(status: "online", text: "c"))
}

@Test func status_laterWrite_wins() {
    let network = TestNetwork.cluster(3)
    network.setStatus("erin", CustomStatusValue(status: "away", text: nil), on: c)
    network.run(for: 50)
    network.setStatus("erin", CustomStatusValue(status: "busy", text: nil), on: a)
    network.run(for: 1_000)
    for address in [a, b, c] {
        #expect(network.node(address).presence(of: "erin").custom == CustomStatusValue(status: "busy", text: nil))
    }
}

@Test func status_overlongText_isCut() {
    let network = TestNetwork.cluster(2)
    let text = String(repeating: "é", count: 200)
    network.setStatus("erin", CustomStatusValue(status: "away", text: text), on: a)
    let seen = network.node(b).presence(of: "erin").custom?.text
    #expect(seen?.utf8.count == WireLimits.maxStatusTextBytes)
    #expect(seen == String(repeating: "é", count: 128))
}

@Test func presence_fanoutOne_reachesEveryNodeByRelaying() {
    var settings = GossipSettings.local
    settings.fanout = 1
    let network = TestNetwork.cluster(6, settings: settings)
    network.openSession("alice", on: a)
    let reached = network.run(atMost: 2_000) { network in
        (1...6).allSatisfy { network.isOnline("alice", on: TestNetwork.address($0)) }
    }
    #expect(reached)
}

@Test func presence_lossyNetwork_converges() {
    let network = TestNetwork.cluster(5)
    var random = SeededRandom(seed: 8)
    network.dropDatagram = { _ in Int.random(in: 0..<10, using: &random) < 3 }
    for index in 0..<30 {
        network.openSession("user-\(index)", on: TestNetwork.address(index % 5 + 1))
    }
    for index in 0..<10 {
        network.closeSession("user-\(index)", on: TestNetwork.address(index % 5 + 1))
    }
    network.run(for: 3_000)
    network.dropDatagram = nil
    let converged = network.run(atMost: 25_000) { network in
        (1...5).allSatisfy { network.node(TestNetwork.address($0)).onlineUsers.count == 20 }
    }
    #expect(converged)
    #expect(network.isConverged)
}
