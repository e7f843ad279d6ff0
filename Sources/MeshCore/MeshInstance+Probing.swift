// SWIM failure detection: one probe per round, a direct ping, then indirect pings through other
// members, then suspicion. Lifeguard adds nacks from the relays and local health scaling.

extension MeshInstance {
    /// Ends the current probe round (a target with no ack by now becomes suspect) and starts the
    /// next one.
    mutating func runProbeRound(at time: MeshTime) {
        if let attempt = probe, !attempt.acked {
            counters.probesFailed += 1
            // Lifeguard: relays that got no ack themselves should have sent nacks. Missing nacks
            // mean this node's own network is at fault, so it slows down.
            if attempt.expectedNacks > 0 {
                adjustLocalHealth(by: attempt.expectedNacks - attempt.nacks)
            } else {
                adjustLocalHealth(by: 1)
            }
            if let record = records[attempt.target], record.member.epoch == attempt.targetEpoch {
                raiseSuspicion(of: attempt.target, at: time)
            }
        }
        probe = nil
        guard !hasLeft else { return }

        if let target = nextProbeTarget() {
            nextSequence += 1
            let attempt = ProbeAttempt(
                sequence: nextSequence, target: target.name, targetEpoch: target.epoch,
                targetAddress: target.gossipAddress)
            probe = attempt
            var leading: [GossipMessage] = [.ping(sequence: attempt.sequence, target: target.name, targetEpoch: target.epoch)]
            if target.state == .suspect {
                // Buddy system: a suspect learns of its suspicion from the next probe.
                leading.append(.suspect(MemberAccusation(
                    name: target.name, epoch: target.epoch, incarnation: target.incarnation, accuser: config.name)))
            }
            counters.probesSent += 1
            sendDatagram(leading: leading, to: target.gossipAddress)
            timers.schedule(
                .probeTimeout(sequence: attempt.sequence),
                at: time.monotonic + scaledByHealth(config.gossip.probeTimeoutMs))
        }
        timers.schedule(.probeRound, at: time.monotonic + scaledByHealth(config.gossip.probeIntervalMs))
    }

    /// Handles a direct ping of probe `sequence` that got no ack within `probeTimeoutMs`. With no
    /// direct retries configured, ping-reqs go to `indirectChecks` other alive members at once.
    /// Otherwise the target is pinged again first and the ping-reqs go out one retry step later,
    /// so a retry that gets through saves the ping-reqs, the relayed pings and their replies.
    mutating func probeTimedOut(sequence: UInt64, at time: MeshTime) {
        guard let attempt = probe, attempt.sequence == sequence, !attempt.acked else { return }
        if config.gossip.directPingRetries == 0 {
            sendPingRequests(sequence: sequence)
        } else {
            retryProbe(sequence: sequence, at: time)
        }
    }

    /// Runs one retry step of probe `sequence`, unless the target has acked. It sends the
    /// ping-reqs once one retry is unanswered, pings the target while retries are left, and
    /// schedules the next step. Steps are `(probeIntervalMs − probeTimeoutMs) / (directPingRetries
    /// + 1)` apart, so the ack of the last retry has two steps to arrive before the round ends.
    mutating func retryProbe(sequence: UInt64, at time: MeshTime) {
        let settings = config.gossip
        guard var attempt = probe, attempt.sequence == sequence, !attempt.acked else { return }
        if attempt.retriesSent > 0 && !attempt.sentPingRequests {
            sendPingRequests(sequence: sequence)
            attempt = probe ?? attempt
        }
        if attempt.retriesSent < settings.directPingRetries {
            attempt.retriesSent += 1
            probe = attempt
            sendDatagram(
                leading: [.ping(sequence: sequence, target: attempt.target, targetEpoch: attempt.targetEpoch)],
                to: attempt.targetAddress, piggyback: false)
        }
        if attempt.retriesSent < settings.directPingRetries || !attempt.sentPingRequests {
            timers.schedule(.probeRetry(sequence: sequence), at: time.monotonic + scaledByHealth(settings.retryStepMs))
        }
    }

    /// Sends ping-reqs for probe `sequence` to `indirectChecks` other alive members.
    private mutating func sendPingRequests(sequence: UInt64) {
        guard var attempt = probe, attempt.sequence == sequence else { return }
        let relays = sampleLiveMembers(config.gossip.indirectChecks, excluding: attempt.target, aliveOnly: true)
        attempt.sentPingRequests = true
        attempt.expectedNacks = relays.count
        probe = attempt
        let request = GossipMessage.pingRequest(
            sequence: sequence, target: attempt.target, targetEpoch: attempt.targetEpoch, targetAddress: attempt.targetAddress)
        for relay in relays {
            sendDatagram(leading: [request], to: relay.gossipAddress)
        }
    }

    /// Acks a ping addressed to this run. A ping for another name (a stale address) is ignored.
    /// A ping for an earlier run of this name gets this run's alive instead of an ack, so the
    /// prober learns of the restart at once, even when this run has no seeds to join through.
    mutating func handlePing(sequence: UInt64, target: String, targetEpoch: Epoch, from: GossipAddress) {
        guard target == config.name else { return }
        guard targetEpoch == epoch else {
            guard !hasLeft, let me = records[config.name] else { return }
            sendDatagram(leading: [.alive(me.aliveAnnouncement)], to: from)
            return
        }
        sendDatagram(leading: [.ack(sequence: sequence)], to: from)
    }

    /// Pings `target` for the member at `from`, and remembers where to forward the ack.
    mutating func handlePingRequest(
        sequence: UInt64, target: String, targetEpoch: Epoch, targetAddress: GossipAddress, from: GossipAddress,
        at time: MeshTime
    ) {
        guard target != config.name || targetEpoch != epoch else {
            // Asked to probe this node itself: the ack can go straight back.
            sendDatagram(leading: [.ack(sequence: sequence)], to: from)
            return
        }
        nextSequence += 1
        let relaySequence = nextSequence
        relayedProbes[relaySequence] = RelayedProbe(requester: from, requesterSequence: sequence)
        sendDatagram(leading: [.ping(sequence: relaySequence, target: target, targetEpoch: targetEpoch)], to: targetAddress)
        timers.schedule(.relayTimeout(sequence: relaySequence), at: time.monotonic + config.gossip.relayNackDelayMs)
    }

    mutating func handleAck(sequence: UInt64) {
        if var attempt = probe, attempt.sequence == sequence {
            if !attempt.acked {
                attempt.acked = true
                probe = attempt
                adjustLocalHealth(by: -1)
            }
            return
        }
        if let relayed = relayedProbes.removeValue(forKey: sequence) {
            sendDatagram(leading: [.ack(sequence: relayed.requesterSequence)], to: relayed.requester)
        }
    }

    mutating func handleNack(sequence: UInt64) {
        guard var attempt = probe, attempt.sequence == sequence else { return }
        attempt.nacks += 1
        probe = attempt
    }

    /// Sends the requester a nack, because the relayed ping got no ack in time.
    mutating func finishRelayedProbe(sequence: UInt64) {
        guard let relayed = relayedProbes.removeValue(forKey: sequence) else { return }
        sendDatagram(leading: [.nack(sequence: relayed.requesterSequence)], to: relayed.requester)
    }

    /// Returns the next member in round-robin order, reshuffling the order after each full pass.
    private mutating func nextProbeTarget() -> Member? {
        for _ in 0..<2 {
            while probeIndex < probeOrder.count {
                let name = probeOrder[probeIndex]
                probeIndex += 1
                if name != config.name, let record = records[name], record.isLive {
                    return record.member
                }
            }
            let candidates = records.records.filter { $0.isLive && $0.member.name != config.name }
                .map(\.member.name).sorted()
            probeOrder = candidates.shuffled(using: &random)
            probeIndex = 0
            if probeOrder.isEmpty { return nil }
        }
        return nil
    }

    /// Puts a new or returning member at a random place in the rest of the current pass, so it
    /// is probed within this pass.
    mutating func insertIntoProbeOrder(_ name: String) {
        guard !probeOrder[probeIndex...].contains(name) else { return }
        let position = Int.random(in: probeIndex...probeOrder.count, using: &random)
        probeOrder.insert(name, at: position)
    }

    /// Up to `count` distinct live members other than this node and `excluded`, chosen at
    /// random; only alive ones when `aliveOnly`.
    ///
    /// Every live member is in `probeOrder`, so in a large table random picks from it find
    /// members in time proportional to `count`, not to N. Small tables, and large ones where
    /// the picks keep missing (mostly dead members), are sampled exactly.
    mutating func sampleLiveMembers(_ count: Int, excluding excluded: String? = nil, aliveOnly: Bool = false) -> [Member] {
        guard count > 0 else { return [] }
        func qualifies(_ record: MemberRecord) -> Bool {
            record.member.name != config.name && record.member.name != excluded
                && (aliveOnly ? record.member.state == .alive : record.isLive)
        }
        if probeOrder.count > 64 {
            var chosen: [Member] = []
            var chosenNames: Set<String> = []
            var attempts = 0
            while chosen.count < count && attempts < 8 * count + 16 {
                attempts += 1
                let name = probeOrder[Int.random(in: 0..<probeOrder.count, using: &random)]
                guard !chosenNames.contains(name), let record = records[name], qualifies(record) else { continue }
                chosenNames.insert(name)
                chosen.append(record.member)
            }
            if chosen.count == count { return chosen }
        }
        let candidates = records.records.filter(qualifies).map(\.member).sorted { $0.name < $1.name }
        return random.sample(count, from: candidates)
    }
}
