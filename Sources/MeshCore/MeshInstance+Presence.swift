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
        // Never behind a change of the user this node already holds, so the latest close of a
        // user carries the largest `changedAt` (its `lastSeen`) even when this node's wall clock
        // is behind the node of an earlier close.
        let changedAt = max(time.wall, (presenceState.latestChange(of: user) ?? .min) &+ 1)
        let delta = PresenceDelta(
            replica: localReplica, userID: user,
            entry: PresenceEntry(sessionCount: sessionCount, version: localVersion, changedAt: changedAt))
        let result = presenceState.merge([delta], statuses: [], at: time.monotonic)
        emit(result.changes)
        broadcasts.enqueue(.presence(delta.replica, user), framed: GossipCodec.frame(.presence(delta)))
        sendGossip(fanout: config.gossip.fanout)
    }

    mutating func writeLocalStatus(user: UserID, status: CustomStatusValue, at time: MeshTime) {
        let value = CustomStatusValue(
            status: truncatedUTF8(status.status, maxBytes: WireLimits.maxStatusBytes),
            text: status.text.map { truncatedUTF8($0, maxBytes: WireLimits.maxStatusTextBytes) })
        let stamp = statusClock.tick(wallNow: time.wall)
        // The new write follows the user's current status here, so its clock takes that clock
        // and counts one more write of this replica.
        var clock = presenceState.statuses[user]?.clock ?? [:]
        clock[localReplica, default: 0] += 1
        if clock.count > StatusRecord.maxClockEntries {
            let kept = clock.filter { $0.key != localReplica }.sorted { ($0.value, $0.key) > ($1.value, $1.key) }
                .prefix(StatusRecord.maxClockEntries - 1)
            clock = Dictionary(uniqueKeysWithValues: Array(kept) + [(localReplica, clock[localReplica]!)])
        }
        let record = StatusRecord(
            userID: user, value: value, stamp: StatusStamp(wall: stamp.wall, counter: stamp.counter, node: config.name),
            clock: clock)
        let result = presenceState.merge([], statuses: [record])
        emit(result.changes)
        broadcasts.enqueue(.status(user), framed: GossipCodec.frame(.customStatus(record)))
        sendGossip(fanout: config.gossip.fanout)
    }

    /// Merges deltas, statuses and `lastSeen` values from another node and queues the deltas
    /// and statuses that were new here for retransmission, so news spreads beyond the nodes its
    /// writer reached.
    mutating func mergeRemotePresence(
        _ deltas: [PresenceDelta], statuses: [StatusRecord], lastSeen: [LastSeenRecord] = [], at time: MeshTime
    ) {
        let accepted = deltas.filter { acceptsDeltas(from: $0.replica) }
        for record in statuses {
            statusClock.observe(record.stamp)
        }
        let result = presenceState.merge(accepted, statuses: statuses, lastSeen: lastSeen, at: time.monotonic)
        queueNews(result)
        emit(result.changes)
    }

    /// Queues the deltas and statuses a merge found new for retransmission, and the `lastSeen`
    /// values it wrote from this node's clock.
    private mutating func queueNews(_ result: PresenceCRDT.MergeResult) {
        for delta in result.newDeltas {
            broadcasts.enqueue(.presence(delta.replica, delta.userID), framed: GossipCodec.frame(.presence(delta)))
        }
        for record in result.newStatuses {
            broadcasts.enqueue(.status(record.userID), framed: GossipCodec.frame(.customStatus(record)))
        }
        queueLastSeen(result.lastSeenWrites)
    }

    /// Queues `lastSeen` values written here. Only the writer gossips a value, so each one on
    /// the wire is fresh and its receivers take its age as 0. Push-pull carries it to the nodes
    /// that gossip missed.
    private mutating func queueLastSeen(_ records: [LastSeenRecord]) {
        for record in records {
            broadcasts.enqueue(.lastSeen(record.userID), framed: GossipCodec.frame(.lastSeen(record)))
        }
    }

    /// Fills the presence part of a push-pull payload for a peer with contiguous clocks
    /// `peerClocks`, or with everything for a request (nil). Every `lastSeen` register goes,
    /// with its age at `time`.
    func addPresence(to payload: inout PushPullPayload, peerClocks: [ReplicaID: UInt64]?, at time: MeshTime) {
        let (summaries, entries) = presenceState.transfer(for: peerClocks)
        payload.clocks = summaries.mapValues(\.contiguous)
        payload.horizons = summaries.filter { $0.value.horizon > 0 }.mapValues(\.horizon)
        payload.wholeReplicas = Set(summaries.filter(\.value.isWhole).keys)
        payload.entries = entries
        payload.statuses = presenceState.allStatuses
        payload.lastSeen = presenceState.lastSeenRecords(at: time.monotonic)
    }

    /// Merges the presence part of the other side of a push-pull. The payload held every entry
    /// of a replica above this node's clock (a reply) or every entry (a request), so everything up
    /// to the sender's contiguous clock is here afterwards. A replica sent whole also removes the
    /// entries here that the sender collected.
    mutating func mergePushPullPresence(_ payload: PushPullPayload, at time: MeshTime) {
        for record in payload.statuses {
            statusClock.observe(record.stamp)
        }
        let accepted = payload.entries.filter { acceptsDeltas(from: $0.replica) }
        var summaries: [ReplicaID: ReplicaSummary] = [:]
        for (replica, contiguous) in payload.clocks where acceptsDeltas(from: replica) {
            summaries[replica] = ReplicaSummary(
                contiguous: contiguous, horizon: payload.horizons[replica] ?? 0,
                isWhole: payload.wholeReplicas.contains(replica))
        }
        var result = presenceState.mergeTransfer(
            accepted, statuses: payload.statuses, lastSeen: payload.lastSeen, replicas: summaries,
            retentionMs: config.gossip.tombstoneRetentionMs, wall: time.wall, at: time.monotonic)
        if result.newDeltas.count > Self.maxGossipedPushPullDeltas {
            result.newDeltas = []
        }
        queueNews(result)
        emit(result.changes)
    }

    /// Maximum new deltas from one push-pull that are queued for gossip. More is a bulk transfer,
    /// such as a node joining a loaded cluster or a partition healing. Their writers gossiped
    /// them already, and every member fetches them by its own push-pulls. Queueing them would
    /// hold a framed copy of each (about 400 bytes per entry, measured at 50,000 entries) and
    /// send them ahead of fresh changes, because the queue sends the oldest presence items first.
    static let maxGossipedPushPullDeltas = 1_000

    /// Collects tombstones and `lastSeen` registers held for `tombstoneRetentionMs`, then
    /// schedules the next collection. A collected user's `lastSeen` is forgotten, so the
    /// retention is how long `lastSeen` of a departed user stays available.
    mutating func runTombstoneCollection(at time: MeshTime) {
        let retention = config.gossip.tombstoneRetentionMs
        presenceState.collectTombstones(now: time.monotonic, retentionMs: retention)
        timers.schedule(.tombstoneCollection, at: time.monotonic + tombstoneCollectionInterval(retentionMs: retention))
    }

    /// Drops every entry of a dead, left or replaced replica; its users without another live
    /// session go offline. The `lastSeen` values it leaves that come from this node's clock are
    /// gossiped (see `PresenceCRDT.dropReplica`).
    mutating func dropPresence(of replica: ReplicaID, at time: MeshTime) {
        let result = presenceState.dropReplica(replica, wall: time.wall, at: time.monotonic)
        emit(result.changes)
        queueLastSeen(result.lastSeenWrites)
    }

    mutating func emit(_ changes: [UserPresenceState]) {
        if !changes.isEmpty {
            output.append(.presenceChanged(changes))
        }
    }
}

/// Time between two tombstone collections: a tenth of the retention, at least 100 ms, so a
/// tombstone is collected at most about 10% after its retention ends.
func tombstoneCollectionInterval(retentionMs: UInt64) -> UInt64 {
    max(100, retentionMs / 10)
}
