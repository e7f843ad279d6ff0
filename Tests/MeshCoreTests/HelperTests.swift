import Testing
@testable import MeshCore

@Test func retransmitLimit_followsDigitCount() {
    let cases: [(multiplier: Int, members: Int, expected: Int)] = [
        (4, 0, 1), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (3, 3, 3), (1, 1_000, 4),
    ]
    for entry in cases {
        #expect(retransmitLimit(multiplier: entry.multiplier, memberCount: entry.members) == entry.expected)
    }
}

@Test func suspicionTimeout_scalesWithLog10() {
    let cases: [(multiplier: Int, members: Int, interval: UInt64, expected: UInt64)] = [
        (3, 1, 200, 600), (3, 3, 200, 600), (3, 10, 200, 600), (3, 100, 200, 1_200), (4, 1_000, 1_000, 12_000),
        (3, 20, 500, 1_952),
    ]
    for entry in cases {
        #expect(suspicionTimeout(multiplier: entry.multiplier, memberCount: entry.members, probeIntervalMs: entry.interval) == entry.expected)
    }
}

@Test func suspicionFinalStretch_isHalfTheTimeout() {
    // minimum timeout, probe interval, confirmations, expected stretch.
    let cases: [(minTimeout: UInt64, probeInterval: UInt64, confirmations: Int, expected: UInt64)] = [
        (3_000, 500, 0, 9_000), (3_000, 500, 3, 3_000), (4_500, 500, 3, 3_000), (6_000, 500, 3, 3_000),
        (12_000, 1_000, 3, 6_000), (600, 200, 0, 1_800), (600, 200, 3, 1_200),
    ]
    for entry in cases {
        var suspicion = Suspicion(
            startedAt: 1_000, expectedConfirmations: 3, minTimeoutMs: entry.minTimeout, maxTimeoutMs: entry.minTimeout * 6)
        suspicion.accusers = Set((0...entry.confirmations).map { "accuser-\($0)" })
        #expect(suspicion.finalStretchMs(probeIntervalMs: entry.probeInterval) == entry.expected)
    }
}

@Test func log10_matchesKnownValues() {
    let cases: [(Double, Double)] = [(1, 0), (10, 1), (1_000, 3), (2, 0.301_029_995_663_981), (0.5, -0.301_029_995_663_981), (20, 1.301_029_995_663_981)]
    for (input, expected) in cases {
        #expect(abs(log10(input) - expected) < 1e-9)
    }
}

@Test func seededRandom_sameSeed_sameSequence() {
    var first = SeededRandom(seed: 42)
    var second = SeededRandom(seed: 42)
    var other = SeededRandom(seed: 43)
    let a = (0..<10).map { _ in first.next() }
    #expect(a == (0..<10).map { _ in second.next() })
    #expect(a != (0..<10).map { _ in other.next() })
}

@Test func seededRandom_sample_isDistinctSubset() {
    var random = SeededRandom(seed: 1)
    let picked = random.sample(3, from: Array(0..<10))
    #expect(picked.count == 3)
    #expect(Set(picked).count == 3)
    #expect(random.sample(5, from: [1, 2]).count == 2)
    #expect(random.sample(0, from: [1, 2]).isEmpty)
}

@Test func timerList_popsInDeadlineOrder() {
    var timers = TimerList()
    timers.schedule(.gossipRound, at: 30)
    timers.schedule(.probeRound, at: 10)
    timers.schedule(.reconnectRound, at: 10)
    timers.schedule(.pushPullRound, at: 20)
    #expect(timers.earliest == 10)
    #expect(timers.popDue(now: 5) == nil)
    #expect(timers.popDue(now: 25) == .probeRound)
    #expect(timers.popDue(now: 25) == .reconnectRound)
    #expect(timers.popDue(now: 25) == .pushPullRound)
    #expect(timers.popDue(now: 25) == nil)
    #expect(timers.earliest == 30)
}

@Test func broadcastQueue_newerItemReplacesOlder() {
    var queue = BroadcastQueue()
    queue.enqueue(.member("x"), framed: GossipCodec.frame(.ack(sequence: 1)))
    queue.enqueue(.member("x"), framed: GossipCodec.frame(.ack(sequence: 2)))
    #expect(queue.count == 1)
    var messages: [[UInt8]] = []
    queue.fill(&messages, maxDatagramBytes: 1400, retransmitLimit: 5)
    #expect(messages == [GossipCodec.frame(.ack(sequence: 2))])
}

@Test func broadcastQueue_leastTransmittedFirst_andRetired() {
    var queue = BroadcastQueue()
    queue.enqueue(.member("old"), framed: GossipCodec.frame(.ack(sequence: 1)))
    var first: [[UInt8]] = []
    queue.fill(&first, maxDatagramBytes: 1400, retransmitLimit: 2)
    queue.enqueue(.member("new"), framed: GossipCodec.frame(.ack(sequence: 2)))
    var second: [[UInt8]] = []
    queue.fill(&second, maxDatagramBytes: 1400, retransmitLimit: 2)
    #expect(second == [GossipCodec.frame(.ack(sequence: 2)), GossipCodec.frame(.ack(sequence: 1))])
    // "old" reached its limit of 2 and left the queue.
    #expect(queue.count == 1)
}

@Test func broadcastQueue_overCap_dropsMostSentFirst() {
    var queue = BroadcastQueue()
    // Three items sent once each, then enough unsent ones to pass the cap by two.
    for index in 1...3 {
        queue.enqueue(.member("sent-\(index)"), framed: GossipCodec.frame(.ack(sequence: UInt64(index))))
    }
    var sent: [[UInt8]] = []
    queue.fill(&sent, maxDatagramBytes: 1400, retransmitLimit: 10)
    #expect(sent.count == 3)
    for index in 0..<(BroadcastQueue.maxItems - 1) {
        queue.enqueue(.lastSeen("user-\(index)"), framed: GossipCodec.frame(.ack(sequence: UInt64(100 + index))))
    }
    #expect(queue.count == BroadcastQueue.maxItems)
    // Two of the sent items went, and every unsent one is left.
    #expect(queue.membershipItemCount == 1)
    #expect(queue.presenceItemCount == BroadcastQueue.maxItems - 1)
    var next: [[UInt8]] = []
    queue.fill(&next, maxDatagramBytes: 1400, retransmitLimit: 10)
    let sentLeft = (1...3).filter { next.contains(GossipCodec.frame(.ack(sequence: UInt64($0)))) }
    #expect(sentLeft.count == 1)
}

@Test func broadcastQueue_neverExceedsDatagramSize() {
    var queue = BroadcastQueue()
    for index in 0..<300 {
        let delta = PresenceDelta(
            replica: ReplicaID(name: String(repeating: "n", count: 200), epoch: 1), userID: "user-\(index)",
            entry: PresenceEntry(sessionCount: 1, version: UInt64(index + 1), changedAt: 0))
        queue.enqueue(.presence(delta.replica, delta.userID), framed: GossipCodec.frame(.presence(delta)))
    }
    for maxBytes in [512, 700, 1400] {
        var messages = [GossipCodec.frame(.ping(sequence: 1, target: "t", targetEpoch: 1))]
        queue.fill(&messages, maxDatagramBytes: maxBytes, retransmitLimit: 100)
        #expect(GossipCodec.datagram(messages).count <= maxBytes)
        #expect(messages.count > 1)
    }
}

@Test func truncatedUTF8_cutsAtScalarBoundary() {
    #expect(truncatedUTF8("abc", maxBytes: 5) == "abc")
    #expect(truncatedUTF8("aé", maxBytes: 2) == "a")
    #expect(truncatedUTF8("🍜🍜", maxBytes: 7) == "🍜")
}
