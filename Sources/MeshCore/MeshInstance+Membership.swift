// SWIM membership: applying alive, suspect, dead and left claims, refutation, suspicion expiry
// and forgetting. Each `apply…` returns whether the claim was new here, so the caller queues it
// for retransmission.

extension MeshInstance {
    /// Applies an alive claim. A member is added at its first sighting, raised to a higher
    /// incarnation, or replaced by a newer run (epoch) of the same name.
    mutating func applyAlive(_ alive: AliveAnnouncement, at time: MeshTime) -> Bool {
        // Only this node speaks for itself, and no other name may take its address.
        if alive.name == config.name, alive.epoch != epoch, alive.gossipAddress != config.gossipAddress {
            reportNameConflict(ReplicaID(name: alive.name, epoch: alive.epoch), address: alive.gossipAddress)
        }
        guard alive.name != config.name, alive.gossipAddress != config.gossipAddress else { return false }
        let replica = ReplicaID(name: alive.name, epoch: alive.epoch)

        guard let record = records[alive.name] else {
            if let retiredAt = retiredRuns[replica] {
                guard alive.incarnation > retiredAt else { return false }
                retiredRuns[replica] = nil
                presenceState.acceptReplica(replica)
                noteAccepted(replica, at: time)
            }
            insertMember(alive, at: time, previous: nil)
            return true
        }

        if record.member.epoch != alive.epoch {
            // A later start replaces a live run. A run already dead or left gives way to any run not
            // retired here, so a restart whose wall clock went backwards is not locked out.
            let isNewer = record.isOlderRun(than: alive.epoch, startedAt: alive.startedAt)
            guard isNewer || !record.isLive, retiredRuns[replica] == nil else { return false }
            replaceRun(of: record, with: alive, at: time)
            return true
        }

        guard alive.incarnation > record.member.incarnation else { return false }
        let addressChanged = record.member.gossipAddress != alive.gossipAddress
        records[alive.name]?.member.incarnation = alive.incarnation
        records[alive.name]?.member.gossipAddress = alive.gossipAddress
        records[alive.name]?.member.clientAddress = alive.clientAddress
        records[alive.name]?.startedAt = alive.startedAt
        if record.member.state != .alive {
            setState(of: alive.name, to: .alive, at: time)
        }
        if addressChanged {
            evictAddressConflicts(keeping: alive.name, address: alive.gossipAddress, at: time)
        }
        return true
    }

    /// Applies a suspect claim. A claim about this node is refuted. A claim by a new accuser
    /// about a member already suspected here is an independent confirmation: until the
    /// suspicion is fully confirmed, it shortens the suspicion timeout (Lifeguard) and is
    /// gossiped on, so that other nodes count it too.
    mutating func applySuspect(_ accusation: MemberAccusation, at time: MeshTime) -> Bool {
        if accusation.name == config.name {
            if accusation.epoch == epoch { refute(accusedIncarnation: accusation.incarnation) }
            return false
        }
        guard let record = records[accusation.name], record.member.epoch == accusation.epoch,
            record.isLive, accusation.incarnation >= record.member.incarnation
        else { return false }
        if record.member.state == .suspect {
            guard accusation.incarnation > record.member.incarnation else {
                return confirmSuspicion(of: accusation.name, by: accusation.accuser)
            }
            // The member refuted the suspicion held here, though the refutation never arrived,
            // and is suspected again: a new suspicion with its own timeout. Counting the claim as
            // a confirmation of the old one would declare the member dead at once.
            records[accusation.name]?.member.incarnation = accusation.incarnation
            startSuspicion(of: accusation.name, at: time)
            suspicions[accusation.name]?.accusers.insert(accusation.accuser)
            return true
        }
        records[accusation.name]?.member.incarnation = accusation.incarnation
        setState(of: accusation.name, to: .suspect, at: time)
        suspicions[accusation.name]?.accusers.insert(accusation.accuser)
        return true
    }

    /// Counts `accuser`'s suspicion of `name` and brings its deadline forward. Returns whether the
    /// accuser was new and counted, which is never the case once the suspicion is fully
    /// confirmed. This node's own failed probe of a suspect counts like any other accuser.
    private mutating func confirmSuspicion(of name: String, by accuser: String) -> Bool {
        guard accuser != name, var suspicion = suspicions[name], !suspicion.isFullyConfirmed,
            suspicion.accusers.insert(accuser).inserted
        else { return false }
        suspicions[name] = suspicion
        timers.schedule(.suspicionTimeout(name: name), at: suspicion.deadline)
        return true
    }

    /// Applies a dead claim; a claim about this node is refuted.
    mutating func applyDead(_ accusation: MemberAccusation, at time: MeshTime) -> Bool {
        if accusation.name == config.name {
            if accusation.epoch == epoch { refute(accusedIncarnation: accusation.incarnation) }
            return false
        }
        guard let record = records[accusation.name], record.member.epoch == accusation.epoch,
            record.isLive, accusation.incarnation >= record.member.incarnation
        else { return false }
        records[accusation.name]?.member.incarnation = accusation.incarnation
        setState(of: accusation.name, to: .dead, at: time)
        return true
    }

    /// Applies a graceful leave. A leave claimed about this node while it runs is refuted like a
    /// death.
    mutating func applyLeft(name: String, epoch leftEpoch: Epoch, incarnation leftIncarnation: Incarnation, at time: MeshTime) -> Bool {
        if name == config.name {
            if leftEpoch == epoch { refute(accusedIncarnation: leftIncarnation) }
            return false
        }
        guard let record = records[name], record.member.epoch == leftEpoch,
            record.isLive, leftIncarnation >= record.member.incarnation
        else { return false }
        records[name]?.member.incarnation = leftIncarnation
        setState(of: name, to: .left, at: time)
        return true
    }

    /// Raises this node's incarnation above an accusation and gossips alive.
    mutating func refute(accusedIncarnation: Incarnation) {
        guard !hasLeft, accusedIncarnation >= incarnation else { return }
        incarnation = accusedIncarnation + 1
        records[config.name]?.member.incarnation = incarnation
        counters.refutations += 1
        // Being accused is a hint that this node replies slowly (Lifeguard).
        adjustLocalHealth(by: 1)
        enqueueAlive(of: config.name)
    }

    mutating func noteAccepted(_ replica: ReplicaID, at time: MeshTime) {
        acceptedReplicas = acceptedReplicas.filter { $0.value.at + 60_000 > time.monotonic }
        acceptedReplicas[replica] = (pushPullSerial, time.monotonic)
    }

    /// Sends this run's alive straight back to a node that still accuses it at an incarnation it
    /// has already refuted. That node missed the refutation's gossip (under loss, an epidemic
    /// misses a few nodes), and would otherwise declare this node dead when its timer runs out.
    mutating func answerStaleAccusation(_ accusation: MemberAccusation, from address: GossipAddress) {
        guard accusation.name == config.name, accusation.epoch == epoch, accusation.incarnation < incarnation,
            !hasLeft, let me = records[config.name]
        else { return }
        sendDatagram(leading: [.alive(me.aliveAnnouncement)], to: address)
    }

    /// Sends a suspect its suspicion again in the final stretch before this node would declare it
    /// dead (`Suspicion.finalStretchMs`), at most once per probe interval. Most nodes have
    /// dropped a refuted suspicion long before, so only the few whose copy of the refutation was
    /// lost send reminders, and the suspect replies to each with its alive directly (see
    /// `answerStaleAccusation`). A crashed member gets a few datagrams from each node, once.
    /// Reminders carry no gossip items: an item sent to a member that is likely down would use
    /// up one of its few transmissions.
    mutating func remindSuspects(at time: MeshTime) {
        guard !suspicions.isEmpty, !hasLeft else { return }
        let probeInterval = config.gossip.probeIntervalMs
        for name in suspicions.keys.sorted() {
            guard let suspicion = suspicions[name], let record = records[name], record.member.state == .suspect,
                suspicion.deadline <= time.monotonic + suspicion.finalStretchMs(probeIntervalMs: probeInterval),
                time.monotonic >= suspicion.lastReminder.map { $0 + probeInterval } ?? 0
            else { continue }
            suspicions[name]?.lastReminder = time.monotonic
            let accusation = MemberAccusation(
                name: name, epoch: record.member.epoch, incarnation: record.member.incarnation, accuser: config.name)
            sendDatagram(leading: [.suspect(accusation)], to: record.member.gossipAddress, piggyback: false)
        }
    }

    /// Suspects `name` after its probe failed, and gossips the suspicion to the cluster and the
    /// suspect. When `name` is suspected already, the failed probe confirms that suspicion.
    mutating func raiseSuspicion(of name: String, at time: MeshTime) {
        guard let record = records[name], record.isLive else { return }
        let accusation = MemberAccusation(
            name: name, epoch: record.member.epoch, incarnation: record.member.incarnation, accuser: config.name)
        if record.member.state == .suspect {
            if confirmSuspicion(of: name, by: config.name) {
                enqueueMembership(.suspect(accusation), about: name)
            }
            return
        }
        counters.suspicionsRaised += 1
        setState(of: name, to: .suspect, at: time)
        suspicions[name]?.accusers.insert(config.name)
        enqueueMembership(.suspect(accusation), about: name)
        sendDatagram(leading: [.suspect(accusation)], to: record.member.gossipAddress)
    }

    mutating func expireSuspicion(of name: String, at time: MeshTime) {
        guard let record = records[name], record.member.state == .suspect,
            let deadline = suspicions[name]?.deadline, deadline <= time.monotonic
        else { return }
        counters.membersDeclaredDead += 1
        setState(of: name, to: .dead, at: time)
        let accusation = MemberAccusation(
            name: name, epoch: record.member.epoch, incarnation: record.member.incarnation, accuser: config.name)
        enqueueMembership(.dead(accusation), about: name)
    }

    mutating func forgetIfExpired(_ name: String, at time: MeshTime) {
        guard name != config.name, let record = records[name], !record.isLive,
            record.stateChangedAt + config.gossip.deadMemberRetentionMs <= time.monotonic
        else { return }
        records[name] = nil
        retiredRuns[record.replica] = record.member.incarnation
    }

    /// Moves `name` to `state`, emits `.memberChanged`, and does what the new state implies:
    /// a suspicion timer, dropping the replica's presence, or accepting it again.
    mutating func setState(of name: String, to state: MemberState, at time: MeshTime) {
        guard let record = records[name], record.member.state != state else { return }
        let previous = record.member.state
        records[name]?.member.state = state
        liveMemberCount += (state == .alive || state == .suspect ? 1 : 0) - (record.isLive ? 1 : 0)
        records[name]?.stateChangedAt = time.monotonic
        suspicions[name] = nil
        output.append(.memberChanged(records[name]!.member, previous: previous))

        switch state {
        case .alive:
            if previous == .dead || previous == .left {
                // The member refuted its death: take its entries again and fetch them now.
                presenceState.acceptReplica(record.replica)
                noteAccepted(record.replica, at: time)
                insertIntoProbeOrder(name)
                if !hasLeft { startPushPull(to: record.member.gossipAddress, at: time) }
            }
        case .suspect:
            startSuspicion(of: name, at: time)
        case .dead, .left:
            dropPresence(of: record.replica, at: time)
            timers.schedule(.forgetMember(name: name), at: time.monotonic + config.gossip.deadMemberRetentionMs)
        }
    }

    /// Starts the suspicion timer of `name` at its longest timeout, with no accusers yet.
    private mutating func startSuspicion(of name: String, at time: MeshTime) {
        let settings = config.gossip
        let minTimeout = suspicionTimeout(
            multiplier: settings.suspicionMult, memberCount: liveMemberCount,
            probeIntervalMs: settings.probeIntervalMs)
        // Only members other than this node and the suspect can confirm.
        let confirmers = max(0, min(settings.suspicionConfirmations, liveMemberCount - 2))
        let suspicion = Suspicion(
            startedAt: time.monotonic, expectedConfirmations: confirmers, minTimeoutMs: minTimeout,
            maxTimeoutMs: minTimeout * UInt64(settings.suspicionMaxTimeoutMult))
        suspicions[name] = suspicion
        timers.schedule(.suspicionTimeout(name: name), at: suspicion.deadline)
    }

    private mutating func insertMember(_ alive: AliveAnnouncement, at time: MeshTime, previous: MemberState?) {
        let member = Member(
            name: alive.name, epoch: alive.epoch, gossipAddress: alive.gossipAddress,
            clientAddress: alive.clientAddress, incarnation: alive.incarnation, state: .alive)
        if records[alive.name]?.isLive != true {
            liveMemberCount += 1
        }
        records[alive.name] = MemberRecord(
            member: member, startedAt: alive.startedAt, stateChangedAt: time.monotonic)
        output.append(.memberChanged(member, previous: previous))
        insertIntoProbeOrder(alive.name)
        evictAddressConflicts(keeping: alive.name, address: alive.gossipAddress, at: time)
    }

    /// Replaces the run of a restarted node. The old run is treated as dead (its presence dropped
    /// at once) and retired, and the new run becomes the alive member of that name. Emits the old
    /// run's move to dead, then the new run with the old run's final state as `previous`.
    private mutating func replaceRun(of old: MemberRecord, with alive: AliveAnnouncement, at time: MeshTime) {
        if old.isLive {
            setState(of: old.member.name, to: .dead, at: time)
        }
        dropPresence(of: old.replica, at: time)
        retiredRuns[old.replica] = .max
        let finalState = records[old.member.name]?.member.state ?? .dead
        insertMember(alive, at: time, previous: finalState)
        // Deltas of the new run that arrived before this alive were ignored; fetch them.
        if !hasLeft { startPushPull(to: alive.gossipAddress, at: time) }
    }

    /// Marks dead every other live member at `address`: an address has one live member at most,
    /// and the newest claim to it wins.
    private mutating func evictAddressConflicts(keeping name: String, address: GossipAddress, at time: MeshTime) {
        let conflicting = records.records.filter {
            $0.member.name != name && $0.member.name != config.name && $0.isLive && $0.member.gossipAddress == address
        }.map(\.member.name).sorted()
        for other in conflicting {
            guard let record = records[other] else { continue }
            setState(of: other, to: .dead, at: time)
            let accusation = MemberAccusation(
                name: other, epoch: record.member.epoch, incarnation: record.member.incarnation, accuser: config.name)
            enqueueMembership(.dead(accusation), about: other)
        }
    }

    /// Leaves the cluster: self becomes left, every live member gets a `left` datagram, and all
    /// timers stop.
    mutating func leave(at time: MeshTime) {
        let previous = records[config.name]!.member.state
        records[config.name]?.member.state = .left
        if previous == .alive || previous == .suspect {
            liveMemberCount -= 1
        }
        records[config.name]?.stateChangedAt = time.monotonic
        output.append(.memberChanged(records[config.name]!.member, previous: previous))
        let message = GossipMessage.left(name: config.name, epoch: epoch, incarnation: incarnation)
        enqueueMembership(message, about: config.name)
        let peers = records.records.filter { $0.member.name != config.name && $0.isLive }
            .map(\.member.gossipAddress).sorted()
        for address in peers {
            sendDatagram(leading: [message], to: address)
        }
        timers.removeAll()
        probe = nil
        relayedProbes = [:]
    }

    /// Reports another run of this node's name once.
    private mutating func reportNameConflict(_ run: ReplicaID, address: GossipAddress) {
        guard reportedNameConflicts.insert(run).inserted else { return }
        counters.nameConflicts += 1
        output.append(.nameConflict(otherAddress: address))
    }
}
