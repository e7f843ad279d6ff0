import Testing
@testable import MeshCore

private let a = TestNetwork.address(1)
private let b = TestNetwork.address(2)
private let c = TestNetwork.address(3)

private func isPingRequest(_ sent: TestNetwork.SentMessage, about target: String) -> Bool {
    if case .pingRequest(_, let name, _, _) = sent.message { return name == target }
    return false
}

private func isNack(_ sent: TestNetwork.SentMessage) -> Bool {
    if case .nack = sent.message { return true }
    return false
}

private func isLeft(_ sent: TestNetwork.SentMessage) -> Bool {
    if case .left = sent.message { return true }
    return false
}

@Test func join_throughSeed_everyNodeSeesAllAlive() {
    let network = TestNetwork.cluster(3)
    #expect(network.isConverged)
    for address in [a, b, c] {
        let members = network.node(address).members
        #expect(members.map(\.name) == ["node-1", "node-2", "node-3"])
        #expect(members.allSatisfy { $0.state == .alive })
    }
    #expect(network.node(b).counters.pushPullsStarted >= 1)
    #expect(network.node(c).counters.pushPullsStarted >= 1)
    #expect(network.node(a).counters.probesFailed == 0)
    #expect(network.member("node-2", on: a)?.clientAddress == "127.0.0.1:72021")
}

@Test func join_firstSighting_emitsMemberChangedWithNilPrevious() {
    let network = TestNetwork.cluster(3)
    let events = network.memberEvents(about: "node-3", on: a)
    #expect(events.first?.previous == nil)
    #expect(events.first?.member.state == .alive)
    #expect(events.count == 1)
}

@Test func join_seedStartedLater_joinsByReconnect() {
    let network = TestNetwork()
    network.addNode("node-1", address: a, seeds: [])
    network.addNode("node-2", address: b, seeds: [a])
    network.crash(a)
    network.start(b)
    #expect(network.node(b).counters.pushPullsFailed == 1)
    network.run(for: 1_000)
    network.down.remove(a)
    network.start(a)
    let joined = network.run(atMost: 2_000) { $0.isConverged }
    #expect(joined)
    #expect(network.node(a).members.count == 2)
}

@Test func join_tenNodes_converge() {
    let network = TestNetwork.cluster(10, settle: 5_000)
    #expect(network.isConverged)
    #expect(network.largestDatagram <= GossipSettings.local.maxPacketBytes)
}

@Test func probe_crashedMember_becomesSuspectAfterIndirectProbesFail() throws {
    let network = TestNetwork.cluster(3)
    network.crash(c)
    network.clearEvents()
    let suspected = network.run(atMost: 3_000) { $0.state(of: "node-3", on: a) == .suspect || $0.state(of: "node-3", on: b) == .suspect }
    #expect(suspected)

    let accuser = try #require([a, b].first { network.node($0).counters.suspicionsRaised > 0 })
    let relay = accuser == a ? b : a
    #expect(network.node(accuser).counters.probesFailed >= 1)
    #expect(network.sentMessages.contains { isPingRequest($0, about: "node-3") && $0.from == accuser && $0.to == relay })
    #expect(network.sentMessages.contains { isNack($0) && $0.from == relay && $0.to == accuser })
    // The relay sent a nack, so the accuser does not blame its own network.
    #expect(network.node(accuser).localHealth == 0)
}

@Test func suspicion_timesOut_memberDeclaredDead() throws {
    let network = TestNetwork.cluster(3)
    network.crash(c)
    network.run(for: 3_000)
    let accuser = try #require([a, b].first { network.node($0).counters.suspicionsRaised > 0 })
    let events = network.memberEvents(about: "node-3", on: accuser)
    let suspectedAt = try #require(events.first { $0.member.state == .suspect }?.at)
    let deadEvent = try #require(events.first { $0.member.state == .dead })
    let timeout = suspicionTimeout(multiplier: 3, memberCount: 3, probeIntervalMs: 200)
    #expect(timeout == 600)
    #expect(deadEvent.at - suspectedAt == timeout)
    #expect(deadEvent.previous == .suspect)
    #expect(network.node(accuser).counters.membersDeclaredDead == 1)
    #expect(network.state(of: "node-3", on: a) == .dead)
    #expect(network.state(of: "node-3", on: b) == .dead)
}

@Test func suspicion_refutedWithHigherIncarnation_returnsAlive() throws {
    let network = TestNetwork.cluster(3)
    let current = try #require(network.member("node-3", on: b)).incarnation
    network.clearEvents()
    network.inject(
        [.suspect(MemberAccusation(name: "node-3", epoch: network.node(c).epoch, incarnation: current, accuser: "node-1"))],
        to: b, from: a)
    #expect(network.state(of: "node-3", on: b) == .suspect)
    // node-3 learns of the suspicion from gossip, a probe or a reminder, and refutes once.
    let refuted = network.run(atMost: 1_000) { $0.state(of: "node-3", on: b) == .alive && $0.state(of: "node-3", on: a) == .alive }
    #expect(refuted)
    #expect(network.member("node-3", on: b)?.incarnation == current + 1)
    #expect(network.member("node-3", on: a)?.incarnation == current + 1)
    #expect(network.node(c).counters.refutations == 1)
    let states = network.memberEvents(about: "node-3", on: b).map(\.member.state)
    #expect(states == [.suspect, .alive])
    #expect(network.memberEvents(about: "node-3", on: b).last?.previous == .suspect)
}

@Test func refutation_raisesIncarnationAboveAccusation() {
    var instance = MeshInstance(
        config: MeshConfig(name: "self", gossipAddress: "127.0.0.1:1", clientAddress: "", seeds: [], gossip: .local),
        epoch: 9, seed: 3)
    let time = MeshTime(monotonic: 0, wall: 0)
    _ = instance.onStart(at: time)
    let accusation = MemberAccusation(name: "self", epoch: 9, incarnation: 4, accuser: "other")
    _ = instance.onDatagram(GossipCodec.encodeDatagram([.dead(accusation)]), from: "127.0.0.1:2", at: time)
    #expect(instance.members.first?.incarnation == 5)
    #expect(instance.members.first?.state == .alive)
    #expect(instance.counters.refutations == 1)
    // An accusation below the current incarnation is stale: nothing to refute.
    _ = instance.onDatagram(
        GossipCodec.encodeDatagram([.suspect(MemberAccusation(name: "self", epoch: 9, incarnation: 3, accuser: "x"))]),
        from: "127.0.0.1:2", at: time)
    #expect(instance.members.first?.incarnation == 5)
    #expect(instance.counters.refutations == 1)
    // An accusation about another run of this name is not about this run.
    _ = instance.onDatagram(
        GossipCodec.encodeDatagram([.suspect(MemberAccusation(name: "self", epoch: 8, incarnation: 9, accuser: "x"))]),
        from: "127.0.0.1:2", at: time)
    #expect(instance.counters.refutations == 1)
}

/// A single started instance that learns of member "x" through crafted datagrams.
private struct Observer {
    var instance = MeshInstance(
        config: MeshConfig(name: "observer", gossipAddress: "127.0.0.1:1", clientAddress: "", seeds: [], gossip: .local),
        epoch: 1, seed: 7)
    var now: UInt64 = 0
    var directives: [Directive] = []

    init() {
        _ = instance.onStart(at: MeshTime(monotonic: 0, wall: 0))
    }

    mutating func receive(_ messages: [GossipMessage]) {
        now += 1
        directives = instance.onDatagram(
            GossipCodec.encodeDatagram(messages), from: "127.0.0.1:9", at: MeshTime(monotonic: now, wall: Int64(now)))
    }

    func state(of name: String) -> MemberState? {
        instance.members.first { $0.name == name }?.state
    }

    func incarnation(of name: String) -> Incarnation? {
        instance.members.first { $0.name == name }?.incarnation
    }

    var memberChanges: [(Member, MemberState?)] {
        directives.compactMap { if case .memberChanged(let member, let previous) = $0 { return (member, previous) } else { return nil } }
    }
}

private func alive(_ name: String, epoch: Epoch = 5, startedAt: Int64 = 100, incarnation: Incarnation, address: String = "127.0.0.1:5") -> GossipMessage {
    .alive(AliveAnnouncement(
        name: name, epoch: epoch, startedAt: startedAt, incarnation: incarnation, gossipAddress: address, clientAddress: ""))
}

private func accusation(_ name: String, epoch: Epoch = 5, incarnation: Incarnation) -> MemberAccusation {
    MemberAccusation(name: name, epoch: epoch, incarnation: incarnation, accuser: "someone")
}

@Test func membership_ownNameFromOtherAddress_reportedOnce() {
    var observer = Observer()
    let conflicts: (Observer) -> [GossipAddress] = { observer in
        observer.directives.compactMap { if case .nameConflict(let address) = $0 { return address } else { return nil } }
    }
    observer.receive([alive("observer", epoch: 9, incarnation: 1, address: "127.0.0.1:7")])
    #expect(conflicts(observer) == ["127.0.0.1:7"])
    observer.receive([alive("observer", epoch: 9, incarnation: 2, address: "127.0.0.1:7")])
    #expect(conflicts(observer).isEmpty)
    #expect(observer.instance.counters.nameConflicts == 1)
    // Its own announcements, echoed back by a peer, are no conflict.
    observer.receive([alive("observer", epoch: 1, incarnation: 3, address: "127.0.0.1:1")])
    #expect(conflicts(observer).isEmpty)
    #expect(observer.state(of: "observer") == .alive)
}

@Test func membership_staleIncarnations_areIgnored() {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 5)])
    #expect(observer.state(of: "x") == .alive)

    observer.receive([.suspect(accusation("x", incarnation: 3))])
    #expect(observer.state(of: "x") == .alive)
    #expect(observer.memberChanges.isEmpty)

    observer.receive([alive("x", incarnation: 5)])
    #expect(observer.memberChanges.isEmpty)

    observer.receive([.suspect(accusation("x", incarnation: 5))])
    #expect(observer.state(of: "x") == .suspect)

    observer.receive([alive("x", incarnation: 5)])
    #expect(observer.state(of: "x") == .suspect)

    observer.receive([.dead(accusation("x", incarnation: 4))])
    #expect(observer.state(of: "x") == .suspect)

    observer.receive([alive("x", incarnation: 6)])
    #expect(observer.state(of: "x") == .alive)
    #expect(observer.incarnation(of: "x") == 6)

    observer.receive([.dead(accusation("x", incarnation: 5))])
    #expect(observer.state(of: "x") == .alive)

    observer.receive([.dead(accusation("x", incarnation: 6))])
    #expect(observer.state(of: "x") == .dead)

    observer.receive([alive("x", incarnation: 6)])
    #expect(observer.state(of: "x") == .dead)
}

@Test func membership_deadMemberWithHigherIncarnation_returnsAndSyncs() {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 1)])
    observer.receive([.dead(accusation("x", incarnation: 1))])
    #expect(observer.state(of: "x") == .dead)
    observer.receive([alive("x", incarnation: 2)])
    #expect(observer.state(of: "x") == .alive)
    #expect(observer.memberChanges.first?.1 == .dead)
    #expect(observer.directives.contains { if case .pushPull(_, let to) = $0 { return to == "127.0.0.1:5" } else { return false } })
}

@Test func membership_otherEpochs_orderedByStart() {
    var observer = Observer()
    observer.receive([alive("x", epoch: 5, startedAt: 100, incarnation: 3)])
    // An older run's news arriving late changes nothing.
    observer.receive([alive("x", epoch: 4, startedAt: 50, incarnation: 9)])
    #expect(observer.instance.members.first { $0.name == "x" }?.epoch == 5)
    observer.receive([.dead(accusation("x", epoch: 4, incarnation: 9))])
    #expect(observer.state(of: "x") == .alive)
    // A newer run replaces the member at once, even at a lower incarnation.
    observer.receive([alive("x", epoch: 6, startedAt: 200, incarnation: 0)])
    #expect(observer.instance.members.first { $0.name == "x" }?.epoch == 6)
    #expect(observer.state(of: "x") == .alive)
    let changes = observer.memberChanges
    #expect(changes.count == 2)
    #expect(changes.first?.0.epoch == 5)
    #expect(changes.first?.0.state == .dead)
    #expect(changes.last?.0.epoch == 6)
    #expect(changes.last?.1 == .dead)
    // Once replaced, the old run stays retired.
    observer.receive([alive("x", epoch: 5, startedAt: 100, incarnation: 10)])
    #expect(observer.instance.members.first { $0.name == "x" }?.epoch == 6)
}

@Test func membership_deadRun_givesWayToEarlierStartedRun() {
    var observer = Observer()
    observer.receive([alive("x", epoch: 5, startedAt: 100, incarnation: 0)])
    observer.receive([alive("x", epoch: 4, startedAt: 50, incarnation: 0)])
    #expect(observer.instance.members.first { $0.name == "x" }?.epoch == 5)
    observer.receive([.dead(accusation("x", epoch: 5, incarnation: 0))])
    observer.receive([alive("x", epoch: 4, startedAt: 50, incarnation: 0)])
    #expect(observer.instance.members.first { $0.name == "x" }?.epoch == 4)
    #expect(observer.state(of: "x") == .alive)
}

@Test func membership_newNameAtSameAddress_marksOldDead() {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 1, address: "127.0.0.1:5")])
    observer.receive([alive("y", incarnation: 0, address: "127.0.0.1:5")])
    #expect(observer.state(of: "x") == .dead)
    #expect(observer.state(of: "y") == .alive)
}

@Test func membership_claimOnOwnAddress_isIgnored() {
    var observer = Observer()
    observer.receive([alive("imposter", incarnation: 1, address: "127.0.0.1:1")])
    #expect(observer.state(of: "imposter") == nil)
    #expect(observer.state(of: "observer") == .alive)
}

@Test func ping_forAnotherName_isNotAcked() {
    var observer = Observer()
    observer.receive([.ping(sequence: 1, target: "someone-else", targetEpoch: 1)])
    #expect(!observer.directives.contains { if case .send = $0 { return true } else { return false } })
    observer.receive([.ping(sequence: 2, target: "observer", targetEpoch: 1)])
    let acks = observer.directives.compactMap { directive -> [GossipMessage]? in
        if case .send(let bytes, let to) = directive, to == "127.0.0.1:9" { return try? GossipCodec.decodeDatagram(bytes) }
        return nil
    }.flatMap { $0 }
    #expect(acks.contains(.ack(sequence: 2)))
}

@Test func ping_forEarlierRun_getsAliveInsteadOfAck() {
    var observer = Observer()
    observer.receive([.ping(sequence: 3, target: "observer", targetEpoch: 0)])
    let replies = observer.directives.compactMap { directive -> [GossipMessage]? in
        if case .send(let bytes, let to) = directive, to == "127.0.0.1:9" { return try? GossipCodec.decodeDatagram(bytes) }
        return nil
    }.flatMap { $0 }
    #expect(!replies.contains(.ack(sequence: 3)))
    #expect(replies.contains { if case .alive(let alive) = $0 { return alive.name == "observer" && alive.epoch == 1 } else { return false } })
}

@Test func restart_seedlessNode_rejoinsThroughProbes() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("alice", on: a)
    let oldEpoch = network.node(a).epoch
    network.crash(a)
    network.restart(a)
    #expect(network.node(a).config.seeds.isEmpty)
    #expect(network.node(a).epoch != oldEpoch)
    let rejoined = network.run(atMost: 3_000) { $0.isConverged }
    #expect(rejoined)
    for address in [b, c] {
        #expect(network.member("node-1", on: address)?.epoch == network.node(a).epoch)
        #expect(!network.isOnline("alice", on: address))
    }
    #expect(network.node(a).members.count == 3)
}

@Test func leave_sendsLeftToEveryMember_andDropsUsers() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("bob", on: b)
    #expect(network.isOnline("bob", on: a))
    network.clearEvents()
    let directives = network.leave(b)

    let leftTargets = network.sentMessages.filter { isLeft($0) && $0.from == b }.map(\.to)
    #expect(Set(leftTargets) == [a, c])
    let sendCount = directives.filter { if case .send = $0 { return true } else { return false } }.count
    #expect(sendCount == 2)
    #expect(!directives.contains { if case .wakeUp = $0 { return true } else { return false } })

    #expect(network.state(of: "node-2", on: b) == .left)
    #expect(network.state(of: "node-2", on: a) == .left)
    #expect(network.state(of: "node-2", on: c) == .left)
    for address in [a, c] {
        let events = network.presenceEvents(of: "bob", on: address)
        #expect(events == [UserPresenceState(userID: "bob", isOnline: false, lastSeen: network.time.wall, custom: nil)])
    }
}

@Test func leave_leftMemberIsNotProbedOrSuspected() {
    let network = TestNetwork.cluster(3)
    network.leave(b)
    network.crash(b)
    network.run(for: 3_000)
    #expect(network.state(of: "node-2", on: a) == .left)
    #expect(network.node(a).counters.suspicionsRaised == 0)
    #expect(network.node(c).counters.suspicionsRaised == 0)
}

@Test func restart_newEpoch_replacesOldRunAndDropsUsers() throws {
    let network = TestNetwork.cluster(3)
    network.openSession("carol", on: c)
    let oldEpoch = network.node(c).epoch
    network.crash(c)
    network.run(for: 50)
    network.clearEvents()
    network.restart(c)
    let newEpoch = network.node(c).epoch
    #expect(newEpoch != oldEpoch)
    network.run(for: 500)

    for address in [a, b] {
        let member = try #require(network.member("node-3", on: address))
        #expect(member.epoch == newEpoch)
        #expect(member.state == .alive)
        #expect(!network.isOnline("carol", on: address))
        // A second offline event comes when the other survivor's later drop time arrives.
        let events = network.presenceEvents(of: "carol", on: address)
        #expect((1...2).contains(events.count))
        #expect(events.allSatisfy { !$0.isOnline })
        #expect(events.last == network.node(address).presence(of: "carol"))
        let memberEvents = network.memberEvents(about: "node-3", on: address)
        #expect(memberEvents.contains { $0.member.epoch == oldEpoch && $0.member.state == .dead })
        #expect(memberEvents.last?.member.epoch == newEpoch)
    }
    #expect(network.isConverged)

    network.openSession("carol", on: c)
    #expect(network.isOnline("carol", on: a))
    #expect(network.isOnline("carol", on: b))
}

@Test func deadMember_isForgottenAfterRetention() {
    var settings = GossipSettings.local
    settings.deadMemberRetentionMs = 5_000
    let network = TestNetwork.cluster(3, settings: settings)
    network.crash(c)
    network.run(for: 3_000)
    #expect(network.state(of: "node-3", on: a) == .dead)
    network.run(for: 6_000)
    #expect(network.state(of: "node-3", on: a) == nil)
    #expect(network.state(of: "node-3", on: b) == nil)
    // Late news of the forgotten run at its old incarnation cannot bring it back.
    let epoch = network.node(c).epoch
    network.inject([alive("node-3", epoch: epoch, startedAt: 0, incarnation: 0, address: c)], to: a, from: b)
    #expect(network.state(of: "node-3", on: a) == nil)
}

@Test func partition_healsByItself() {
    let network = TestNetwork.cluster(3)
    network.openSession("alice", on: a)
    network.openSession("carol", on: c)
    network.cut(a, c)
    network.cut(b, c)
    // Alone, node-3 gets no confirmation of its suspicions, so they run to the maximum
    // timeout: 6 · 600 ms after the failed probe.
    network.run(for: 6_000)
    #expect(network.state(of: "node-3", on: a) == .dead)
    #expect(network.state(of: "node-1", on: c) == .dead)
    #expect(!network.isOnline("carol", on: a))
    #expect(!network.isOnline("alice", on: c))

    network.heal(a, c)
    network.heal(b, c)
    let converged = network.run(atMost: 10_000) { $0.isConverged }
    #expect(converged)
    network.run(for: 1_000)
    for address in [a, b, c] {
        #expect(network.isOnline("alice", on: address))
        #expect(network.isOnline("carol", on: address))
    }
}

@Test func instance_everyEventEndsWithWakeUp() throws {
    let network = TestNetwork.cluster(2)
    let directives = network.openSession("u", on: a)
    let last = try #require(directives.last)
    guard case .wakeUp(let at) = last else {
        Issue.record("last directive is \(last), expected a wake-up")
        return
    }
    #expect(at > network.now)
}

@Test func instance_sameSeeds_giveSameRun() {
    func run() -> TestNetwork {
        let network = TestNetwork.cluster(4)
        network.openSession("u", on: b)
        network.crash(TestNetwork.address(4))
        network.run(for: 3_000)
        return network
    }
    let first = run()
    let second = run()
    for index in 1...3 {
        let address = TestNetwork.address(index)
        #expect(first.node(address).members == second.node(address).members)
        #expect(first.node(address).counters == second.node(address).counters)
    }
    #expect(first.datagramsDelivered == second.datagramsDelivered)
}

@Test func localHealth_risesWhenNoRelayAnswers() {
    let network = TestNetwork.cluster(2)
    network.crash(b)
    network.run(for: 400)
    // With no other member to ask, a failed probe counts against this node's own health.
    #expect(network.node(a).localHealth >= 1)
}

/// Takes every queued gossip item once and returns the accusers of the suspect messages among them.
private func drainSuspectAccusers(_ instance: inout MeshInstance) throws -> [String] {
    var framed: [[UInt8]] = []
    instance.broadcasts.fill(&framed, maxDatagramBytes: 65_000, retransmitLimit: 1)
    guard !framed.isEmpty else { return [] }
    return try GossipCodec.decodeDatagram(GossipCodec.datagram(framed)).compactMap {
        if case .suspect(let accusation) = $0 { return accusation.accuser } else { return nil }
    }
}

@Test func suspicion_fullyConfirmed_ignoresFurtherAccusers() throws {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 1)])
    for index in 1...4 {
        observer.receive([alive("y\(index)", incarnation: 1, address: "127.0.0.1:\(20 + index)")])
    }
    // Six live members: every member but the observer and the suspect can confirm, so the
    // suspicion counts the first accuser and 3 confirmations (the `local` preset's default).
    func suspect(by accuser: String) {
        observer.receive([.suspect(MemberAccusation(name: "x", epoch: 5, incarnation: 1, accuser: accuser))])
    }
    suspect(by: "a0")
    #expect(observer.state(of: "x") == .suspect)
    #expect(try drainSuspectAccusers(&observer.instance) == ["a0"])

    for accuser in ["a1", "a2", "a3"] {
        suspect(by: accuser)
        #expect(try drainSuspectAccusers(&observer.instance) == [accuser])
    }
    let suspicion = try #require(observer.instance.suspicions["x"])
    #expect(suspicion.isFullyConfirmed)
    #expect(suspicion.deadline == suspicion.startedAt + suspicion.minTimeoutMs)

    suspect(by: "a4")
    #expect(try drainSuspectAccusers(&observer.instance).isEmpty)
    #expect(observer.instance.suspicions["x"]?.accusers.count == 4)
    #expect(observer.instance.suspicions["x"]?.deadline == suspicion.deadline)
}

/// One failed probe as the network saw it: its first ping-req and its direct pings, in order.
private struct FailedProbe {
    var sequence: UInt64
    var request: TestNetwork.SentMessage
    var pings: [TestNetwork.SentMessage]
}

/// Returns the first probe of `target` at `address` that sent ping-reqs.
private func firstFailedProbe(of target: String = "node-3", at address: GossipAddress = c, in network: TestNetwork) throws -> FailedProbe {
    let request = try #require(network.sentMessages.first { isPingRequest($0, about: target) })
    var requestSequence: UInt64?
    if case .pingRequest(let sequence, _, _, _) = request.message { requestSequence = sequence }
    let sequence = try #require(requestSequence)
    let pings = network.sentMessages.filter {
        if case .ping(sequence, target, _) = $0.message { return $0.from == request.from && $0.to == address }
        return false
    }
    return FailedProbe(sequence: sequence, request: request, pings: pings)
}

@Test func probe_noAck_retriesDirectlyThenAsksRelays() throws {
    let network = TestNetwork.cluster(3)
    network.crash(c)
    network.clearEvents()
    let requestSent = network.run(atMost: 3_000) { network in
        network.sentMessages.contains { isPingRequest($0, about: "node-3") }
    }
    #expect(requestSent)
    network.run(for: GossipSettings.local.probeIntervalMs)
    let probe = try firstFailedProbe(in: network)
    let settings = GossipSettings.local
    let step = settings.retryStepMs
    #expect(probe.pings.count == 1 + settings.directPingRetries)
    let first = try #require(probe.pings.first).sentAt
    // The first retry at the timeout, the ping-reqs one step later, the last retry two steps
    // before the round ends.
    #expect(probe.pings.dropFirst().first?.sentAt == first + settings.probeTimeoutMs)
    #expect(probe.request.sentAt == first + settings.probeTimeoutMs + step)
    #expect(probe.pings.last?.sentAt == first + settings.probeTimeoutMs + UInt64(settings.directPingRetries - 1) * step)
}

@Test(arguments: [("lan", GossipSettings.lan), ("wan", GossipSettings.wan), ("local", GossipSettings.local)])
func probe_relayNacks_arriveBeforeRoundEnds(preset: String, settings: GossipSettings) throws {
    let network = TestNetwork.cluster(4, settings: settings, settle: 6 * settings.probeIntervalMs)
    network.crash(TestNetwork.address(4))
    network.clearEvents()
    let requestSent = network.run(atMost: 40 * settings.probeIntervalMs) { network in
        network.sentMessages.contains { isPingRequest($0, about: "node-4") }
    }
    #expect(requestSent, "\(preset): no ping-req")
    network.run(for: settings.probeIntervalMs)
    let probe = try firstFailedProbe(of: "node-4", at: TestNetwork.address(4), in: network)
    let roundStart = try #require(probe.pings.first).sentAt
    let nacks = network.sentMessages.filter {
        if case .nack(probe.sequence) = $0.message { return $0.to == probe.request.from }
        return false
    }
    #expect(nacks.count == 2, "\(preset): \(nacks.count) nacks")
    for nack in nacks {
        #expect(nack.sentAt < roundStart + settings.probeIntervalMs, "\(preset): nack after the round ended")
    }
}

@Test func probe_noRetries_asksRelaysAtTimeout() throws {
    var settings = GossipSettings.local
    settings.directPingRetries = 0
    let network = TestNetwork.cluster(3, settings: settings)
    network.crash(c)
    network.clearEvents()
    let requestSent = network.run(atMost: 3_000) { network in
        network.sentMessages.contains { isPingRequest($0, about: "node-3") }
    }
    #expect(requestSent)
    network.run(for: settings.probeIntervalMs)
    let probe = try firstFailedProbe(in: network)
    #expect(probe.pings.count == 1)
    #expect(probe.request.sentAt == (probe.pings.first?.sentAt ?? 0) + settings.probeTimeoutMs)
}

@Test func probe_answeredRetry_asksNoRelays() throws {
    let network = TestNetwork.cluster(3)
    var droppedPings = 0
    network.dropDatagram = { datagram in
        guard droppedPings == 0, datagram.to == c,
            let messages = try? GossipCodec.decodeDatagram(datagram.bytes),
            messages.contains(where: { if case .ping = $0 { return true } else { return false } })
        else { return false }
        droppedPings += 1
        return true
    }
    network.clearEvents()
    network.run(for: 3 * GossipSettings.local.probeIntervalMs)
    #expect(droppedPings == 1)
    #expect(!network.sentMessages.contains { isPingRequest($0, about: "node-3") })
}

@Test func suspicion_fromGossip_sendsSuspectNothing() {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 1)])
    observer.receive([alive("y", incarnation: 1, address: "127.0.0.1:6")])
    observer.receive([.suspect(accusation("x", incarnation: 1))])
    #expect(observer.state(of: "x") == .suspect)
    let toSuspect = observer.directives.contains { if case .send(_, let to) = $0 { return to == "127.0.0.1:5" } else { return false } }
    #expect(!toSuspect)
}

@Test func suspicion_higherIncarnation_restartsTimeout() throws {
    var observer = Observer()
    observer.receive([alive("x", incarnation: 1)])
    for index in 1...4 {
        observer.receive([alive("y\(index)", incarnation: 1, address: "127.0.0.1:\(20 + index)")])
    }
    observer.receive([.suspect(MemberAccusation(name: "x", epoch: 5, incarnation: 1, accuser: "a0"))])
    let first = try #require(observer.instance.suspicions["x"])
    // x refuted at incarnation 2 without this node hearing of it, and is suspected again late in
    // the first suspicion: a confirmation of the old one would bring the deadline forward.
    observer.now = first.deadline - 10
    observer.receive([.suspect(MemberAccusation(name: "x", epoch: 5, incarnation: 2, accuser: "a1"))])
    #expect(observer.state(of: "x") == .suspect)
    #expect(observer.incarnation(of: "x") == 2)
    let second = try #require(observer.instance.suspicions["x"])
    #expect(second.startedAt == first.deadline - 9)
    #expect(second.accusers == ["a1"])
    #expect(second.deadline == second.startedAt + second.maxTimeoutMs)
}
