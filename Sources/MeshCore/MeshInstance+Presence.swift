// The presence side of the instance: local session and status writes, merging remote state, and
// dropping the replicas of dead, left or replaced runs.

extension MeshInstance {
    /// Whether deltas of `replica` are taken: its member must be live with that very epoch, or
    /// not known yet (its alive may still be on the way) and not retired.
    func acceptsDeltas(from replica: ReplicaID) -> Bool {
        if let record = records[replica.name] {
            return record.member.epoch == replica.epoch && record.isLive
        }
        return retiredRuns[replica] == nil && !presenceState.isIgnored(replica)
    }

    /// Writes the local replica's entry for `user`, gossips it and sends it at once to `fanout`
    /// members, so a change reaches a small cluster within one network hop.
    mutating func writeLocalEntry(user: UserID, sessionCount: UInt32, at time: MeshTime) {
        localVersion += 1
        let delta = PresenceDelta(
            replica: localReplica, userID: user,
            entry: PresenceEntry(sessionCount: sessionCount, version: localVersion, changedAt: time.wall))
        let result = presenceState.merge([delta], statuses: [])
        emit(result.changes)
        broadcasts.enqueue(.presence(delta.replica, user), framed: GossipCodec.frame(.presence(delta)))
        sendGossip(fanout: config.gossip.fanout)
    }

    mutating func writeLocalStatus(user: UserID, status: CustomStatusValue, at time: MeshTime) {
        let value = CustomStatusValue(
            status: truncatedUTF8(status.status, maxBytes: WireLimits.maxStatusBytes),
            text: status.text.map { truncatedUTF8($0, maxBytes: WireLimits.maxStatusTextBytes) })
        let stamp = statusClock.tick(wallNow: time.wall)
        let record = StatusRecord(
            userID: user, value: value, stamp: StatusStamp(wall: stamp.wall, counter: stamp.counter, node: config.name))
        let result = presenceState.merge([], statuses: [record])
        emit(result.changes)
        broadcasts.enqueue(.status(user), framed: GossipCodec.frame(.customStatus(record)))
        sendGossip(fanout: config.gossip.fanout)
    }

    /// Merges deltas and statuses from another node and queues what was new here for
    /// retransmission, so news spreads beyond the nodes its writer reached.
    mutating func mergeRemotePresence(_ deltas: [PresenceDelta], statuses: [StatusRecord], at time: MeshTime) {
        let accepted = deltas.filter { acceptsDeltas(from: $0.replica) }
        for record in statuses {
            statusClock.observe(record.stamp)
        }
        let result = presenceState.merge(accepted, statuses: statuses)
        for delta in result.newDeltas {
            broadcasts.enqueue(.presence(delta.replica, delta.userID), framed: GossipCodec.frame(.presence(delta)))
        }
        for record in result.newStatuses {
            broadcasts.enqueue(.status(record.userID), framed: GossipCodec.frame(.customStatus(record)))
        }
        emit(result.changes)
    }

    /// Drops every entry of a dead, left or replaced replica; its users without another live
    /// session go offline, with `lastSeen` = the wall time of this event.
    mutating func dropPresence(of replica: ReplicaID, at time: MeshTime) {
        emit(presenceState.dropReplica(replica, wall: time.wall))
    }

    mutating func emit(_ changes: [UserPresenceState]) {
        if !changes.isEmpty {
            output.append(.presenceChanged(changes))
        }
    }
}
