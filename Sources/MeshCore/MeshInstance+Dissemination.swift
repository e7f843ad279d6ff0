// Getting state to other members: datagrams filled from the broadcast queue, periodic gossip
// rounds, and push-pull full state exchanges (join, anti-entropy, partition healing).

extension MeshInstance {
    /// Sends one datagram to `address`: the `leading` messages, then, when `piggyback` is set, as
    /// many queued gossip items as fit in `maxPacketBytes`. Nothing is sent when there are no
    /// messages.
    mutating func sendDatagram(leading: [GossipMessage], to address: GossipAddress, piggyback: Bool = true) {
        guard address != config.gossipAddress else { return }
        var framed = leading.map(GossipCodec.frame)
        if piggyback {
            broadcasts.fill(
                &framed, maxDatagramBytes: config.gossip.maxPacketBytes,
                retransmitLimit: retransmitLimit(multiplier: config.gossip.retransmitMult, memberCount: liveMemberCount))
        }
        guard !framed.isEmpty else { return }
        let bytes = GossipCodec.datagram(framed)
        counters.datagramsSent += 1
        counters.bytesSent += UInt64(bytes.count)
        output.append(.send(bytes: bytes, to: address))
    }

    /// Queues a membership message for retransmission; it replaces older news about `name`.
    mutating func enqueueMembership(_ message: GossipMessage, about name: String) {
        broadcasts.enqueue(.member(name), framed: GossipCodec.frame(message))
    }

    mutating func enqueueAlive(of name: String) {
        guard let record = records[name] else { return }
        enqueueMembership(.alive(record.aliveAnnouncement), about: name)
    }

    /// Sends queued items to `fanout` random live members, one datagram each.
    mutating func sendGossip(fanout: Int) {
        guard !hasLeft, !broadcasts.isEmpty else { return }
        for target in sampleLiveMembers(fanout) {
            guard !broadcasts.isEmpty else { break }
            sendDatagram(leading: [], to: target.gossipAddress)
        }
    }

    mutating func runGossipRound(at time: MeshTime) {
        remindSuspects(at: time)
        sendGossip(fanout: config.gossip.fanout)
        timers.schedule(.gossipRound, at: time.monotonic + config.gossip.gossipIntervalMs)
    }

    // MARK: - Push-pull

    mutating func startPushPull(to address: GossipAddress, at time: MeshTime) {
        guard address != config.gossipAddress else { return }
        let payload = pushPullPayload(kind: .request, entriesAbove: [:], at: time)
        counters.pushPullsStarted += 1
        output.append(.pushPull(payload: PushPullCodec.encode(payload), to: address))
        pushPullSerial += 1
        pushPullsInFlight[address, default: []].append(pushPullSerial)
    }

    /// This node's side of a push-pull: every member, its contiguous clocks, and the entries
    /// above `peerClocks` (all entries for a request; see `addPresence`). `time` is when the
    /// payload is sent, from which the ages of its `lastSeen` registers are measured.
    func pushPullPayload(
        kind: PushPullKind, entriesAbove peerClocks: [ReplicaID: UInt64], at time: MeshTime
    ) -> PushPullPayload {
        var payload = PushPullPayload(
            kind: kind, senderName: config.name, senderEpoch: epoch,
            members: records.sortedRecords.map(\.snapshot),
            clocks: [:], entries: [], statuses: [])
        addPresence(to: &payload, peerClocks: kind == .request ? nil : peerClocks, at: time)
        return payload
    }

    /// Merges the other side of a push-pull: members first, then presence, then clocks.
    mutating func mergePushPull(_ payload: PushPullPayload, at time: MeshTime) {
        for snapshot in payload.members {
            switch snapshot.state {
            case .alive:
                let alive = AliveAnnouncement(
                    name: snapshot.name, epoch: snapshot.epoch, startedAt: snapshot.startedAt,
                    incarnation: snapshot.incarnation, gossipAddress: snapshot.gossipAddress,
                    clientAddress: snapshot.clientAddress)
                if applyAlive(alive, at: time) { enqueueMembership(.alive(alive), about: alive.name) }
            case .suspect, .dead:
                // A remote verdict of dead only raises suspicion here, as in memberlist: this node
                // lets its own suspicion timer decide, which gives the member time to refute.
                let accusation = MemberAccusation(
                    name: snapshot.name, epoch: snapshot.epoch, incarnation: snapshot.incarnation,
                    accuser: payload.senderName)
                if applySuspect(accusation, at: time) { enqueueMembership(.suspect(accusation), about: snapshot.name) }
            case .left:
                if applyLeft(name: snapshot.name, epoch: snapshot.epoch, incarnation: snapshot.incarnation, at: time) {
                    enqueueMembership(
                        .left(name: snapshot.name, epoch: snapshot.epoch, incarnation: snapshot.incarnation),
                        about: snapshot.name)
                }
            }
        }

        mergePushPullPresence(payload, at: time)
    }

    /// Push-pull with one random alive member, for anti-entropy.
    mutating func runPushPullRound(at time: MeshTime) {
        if !hasLeft, let target = sampleLiveMembers(1, aliveOnly: true).first {
            startPushPull(to: target.gossipAddress, at: time)
        }
        timers.schedule(.pushPullRound, at: time.monotonic + pushPullInterval())
    }

    /// `pushPullIntervalMs` stretched for large clusters, because every push-pull carries the
    /// whole member table: `pushPullIntervalMs · (ceil(log2(N) − log2(32)) + 1)` above 32 live
    /// members, so the state sync traffic of a node grows with log N instead of N.
    func pushPullInterval() -> UInt64 {
        pushPullScaledInterval(config.gossip.pushPullIntervalMs, memberCount: liveMemberCount)
    }

    /// Push-pull with one seed that is not a known alive member, or one dead member within
    /// retention, so that a partition heals without an operator.
    mutating func runReconnectRound(at time: MeshTime) {
        var candidates = Set(config.seeds.filter { $0 != config.gossipAddress && !isAliveSeed($0) })
        // Each node retries dead members in a round with probability min(1, quota / N), so the
        // cluster as a whole sends about `deadRetriesPerRound` such push-pulls per round at any
        // size: every member of a small partition retries every round, while 10,000 nodes do
        // not all push-pull one crashed node every second.
        let quota = Double(deadRetriesPerRound) / Double(max(1, liveMemberCount))
        if !records.nonLiveNames.isEmpty && (quota >= 1 || Double.random(in: 0..<1, using: &random) < quota) {
            for name in records.nonLiveNames {
                if let record = records[name], record.member.state == .dead {
                    candidates.insert(record.member.gossipAddress)
                }
            }
        }
        if !hasLeft, let target = random.sample(1, from: candidates.sorted()).first {
            startPushPull(to: target, at: time)
        }
        timers.schedule(.reconnectRound, at: time.monotonic + config.gossip.reconnectIntervalMs)
    }
}

extension MeshInstance {
    /// Whether an alive member is known at seed address `address`. The first check of each
    /// seed scans the table. The result is cached per seed with the member's name, and checked
    /// again against that member on each later call.
    mutating func isAliveSeed(_ address: GossipAddress) -> Bool {
        if let name = seedOwners[address], let record = records[name], record.member.state == .alive,
            record.member.gossipAddress == address
        {
            return true
        }
        seedOwners[address] = nil
        guard seedScanCountdown[address, default: 0] == 0 else {
            seedScanCountdown[address]! -= 1
            return false
        }
        // A table started from a directory looks the address up in the directory's index first.
        if let name = records.sharedNameByAddress[address], let record = records[name],
            record.member.state == .alive, record.member.gossipAddress == address
        {
            seedOwners[address] = name
            return true
        }
        let owner = records.records.first { $0.member.state == .alive && $0.member.gossipAddress == address }
        if let owner {
            seedOwners[address] = owner.member.name
            return true
        }
        // Scanning a table of thousands of members every round costs more than the round; an
        // unknown seed is looked up again only every tenth round.
        seedScanCountdown[address] = 9
        return false
    }
}

/// Push-pulls to dead members that a whole cluster sends per reconnect round, on average.
let deadRetriesPerRound = 8

/// `interval` · (ceil(log2(N) − log2(32)) + 1) for N above 32, else `interval`.
func pushPullScaledInterval(_ interval: UInt64, memberCount: Int) -> UInt64 {
    guard memberCount > 32, interval > 0 else { return interval }
    // ceil(log2(N)) − 5 via the bit length of N − 1, which is exact for integers.
    let ceilLog2 = UInt64.bitWidth - UInt64(memberCount - 1).leadingZeroBitCount
    return interval * UInt64(ceilLog2 - 5 + 1)
}

extension MeshInstance {
    /// Forgets the oldest push-pull in flight to `address` and returns its serial, nil when none
    /// was in flight (a reply the shell matched to no request of this run).
    mutating func finishPushPull(to address: GossipAddress) -> UInt64? {
        guard var serials = pushPullsInFlight[address], !serials.isEmpty else { return nil }
        let serial = serials.removeFirst()
        pushPullsInFlight[address] = serials.isEmpty ? nil : serials
        return serial
    }
}
