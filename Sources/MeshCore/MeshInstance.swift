// MeshInstance is the pure core of one node run. The shell feeds it events (datagrams, push-pull
// frames, timer wake-ups, local sessions) with the time they happened at, and executes the
// directives each event returns. The handlers live in extensions by concept:
// MeshInstance+Membership (SWIM states), +Probing (failure detection), +Dissemination
// (datagrams, gossip rounds, push-pull) and +Presence (the CRDT side).

/// The pure state machine of one node run: SWIM membership, the presence CRDT and the gossip
/// codec. Every input is a `mutating func on…` that returns the directives for the shell.
///
/// Every event returns, as its last directive, a `.wakeUp(at:)` for the earliest pending timer
/// (once the instance has started and until it leaves). The shell MUST call `onTick` at or after
/// that instant; calling it early or more often is harmless.
public struct MeshInstance: Sendable {
    public private(set) var config: MeshConfig
    public private(set) var epoch: Epoch
    public internal(set) var counters = MeshCounters()
    /// Lifeguard local health score, 0 (healthy) to 8. Probe intervals and probe timeouts are
    /// multiplied by `localHealth + 1`.
    public internal(set) var localHealth = 0

    var random: SeededRandom
    var isStarted = false
    var hasLeft = false
    var incarnation: Incarnation = 0
    /// Every known member by name, this node included.
    var records = MemberTable()
    /// Lifeguard state of each member this node suspects.
    var suspicions: [String: Suspicion] = [:]
    /// Alive and suspect members, this node included: the N of the protocol's formulas. Kept up
    /// to date by every state change, because datagrams need it and counting is O(N).
    public internal(set) var liveMemberCount = 1
    /// Runs whose member was forgotten after retention or replaced by a newer run, with the
    /// incarnation an alive message must exceed to bring them back (`.max` for replaced runs).
    var retiredRuns: [ReplicaID: Incarnation] = [:]
    /// Other runs of this node's name already reported with `nameConflict`.
    var reportedNameConflicts: Set<ReplicaID> = []
    var timers = TimerList()
    var broadcasts = BroadcastQueue()
    var presenceState = PresenceCRDT()
    /// Write counter of the local replica: the version of its latest entry.
    var localVersion: UInt64 = 0
    var statusClock = HybridClock()
    /// Every live member other than this node, in a shuffled round-robin order, plus members
    /// that died since the order was built (skipped when reached).
    var probeOrder: [String] = []
    /// Serial of the latest push-pull this run started.
    var pushPullSerial: UInt64 = 0
    /// Serials of the push-pulls waiting for a reply, per address, oldest first.
    var pushPullsInFlight: [GossipAddress: [UInt64]] = [:]
    /// Replicas accepted again after a drop (a refuted death or a retired run's return), with
    /// the push-pull serial and monotonic instant at that moment, kept for a minute: replies
    /// to push-pulls started before it must not advance their clocks.
    var acceptedReplicas: [ReplicaID: (serial: UInt64, at: UInt64)] = [:]
    /// Seed address → name of the alive member found there; see `isAliveSeed`.
    var seedOwners: [GossipAddress: String] = [:]
    /// Seed address → reconnect rounds left before an unknown seed is looked up again.
    var seedScanCountdown: [GossipAddress: Int] = [:]
    var probeIndex = 0
    var probe: ProbeAttempt?
    var relayedProbes: [UInt64: RelayedProbe] = [:]
    var nextSequence: UInt64 = 0
    /// Directives of the event being handled, returned by `finish()`.
    var output: [Directive] = []

    /// `epoch` must be fresh at every start; `seed` seeds all of the instance's randomness.
    /// `config.name` must be 1 to 255 bytes and the addresses at most 255 bytes, because the wire
    /// format carries no more, and `config.gossip.validate()` must return no problems. The shell
    /// validates both before it builds the instance.
    public init(config: MeshConfig, epoch: Epoch, seed: UInt64) {
        precondition(
            (1...WireLimits.maxNameBytes).contains(config.name.utf8.count),
            "node name must be 1 to \(WireLimits.maxNameBytes) bytes, got \(config.name.utf8.count)")
        precondition(
            (1...WireLimits.maxAddressBytes).contains(config.gossipAddress.utf8.count),
            "gossip address must be 1 to \(WireLimits.maxAddressBytes) bytes, got \(config.gossipAddress.utf8.count)")
        precondition(
            config.clientAddress.utf8.count <= WireLimits.maxAddressBytes,
            "client address must be at most \(WireLimits.maxAddressBytes) bytes, got \(config.clientAddress.utf8.count)")
        let problems = config.gossip.validate()
        precondition(problems.isEmpty, "invalid gossip settings: \(problems.joined(separator: "; "))")
        self.config = config
        self.epoch = epoch
        self.random = SeededRandom(seed: seed)
        let me = Member(
            name: config.name, epoch: epoch, gossipAddress: config.gossipAddress,
            clientAddress: config.clientAddress, incarnation: 0, state: .alive)
        records[config.name] = MemberRecord(member: me, startedAt: 0, stateChangedAt: 0)
    }

    /// Starts the run: contacts the seeds (push-pull) and schedules the first timers.
    public mutating func onStart(at time: MeshTime) -> [Directive] {
        guard !isStarted else { return finish() }
        isStarted = true
        records[config.name]?.startedAt = time.wall
        records[config.name]?.stateChangedAt = time.monotonic
        output.append(.memberChanged(records[config.name]!.member, previous: nil))
        enqueueAlive(of: config.name)
        scheduleFirstRounds(at: time)

        var contacted: Set<GossipAddress> = []
        for seed in config.seeds where seed != config.gossipAddress && contacted.insert(seed).inserted {
            startPushPull(to: seed, at: time)
        }
        return finish()
    }

    /// Starts the run as a member of the cluster `directory` describes, as if its join had
    /// already completed: no seed push-pull and no alive announcement, because every member
    /// listed has this run in its table already. For simulations that start large clusters at once.
    ///
    /// The directory MUST list this run (its name, epoch and gossip address) as alive. Its
    /// incarnation and start time there become this run's own.
    public mutating func onStart(at time: MeshTime, members directory: MemberDirectory) -> [Directive] {
        guard !isStarted else { return finish() }
        guard let me = directory.records[config.name], me.member.epoch == epoch,
            me.member.gossipAddress == config.gossipAddress, me.member.state == .alive
        else {
            preconditionFailure("member directory must list \(config.name) with epoch \(epoch) as alive")
        }
        isStarted = true
        records = MemberTable(directory: directory)
        liveMemberCount = directory.liveCount
        incarnation = me.member.incarnation
        var order = directory.sortedNames
        order.removeAll { $0 == config.name }
        probeOrder = order.shuffled(using: &random)
        probeIndex = 0
        output.append(.memberChanged(me.member, previous: nil))
        scheduleFirstRounds(at: time)
        return finish()
    }

    private mutating func scheduleFirstRounds(at time: MeshTime) {
        let settings = config.gossip
        let now = time.monotonic
        // Random stagger, so nodes started together do not probe, gossip and sync in lockstep.
        timers.schedule(.probeRound, at: now + UInt64.random(in: 1...settings.probeIntervalMs, using: &random))
        timers.schedule(.gossipRound, at: now + UInt64.random(in: 1...settings.gossipIntervalMs, using: &random))
        if settings.pushPullIntervalMs > 0 {
            let interval = pushPullInterval()
            timers.schedule(.pushPullRound, at: now + UInt64.random(in: 1...interval, using: &random))
        }
        timers.schedule(.reconnectRound, at: now + settings.reconnectIntervalMs)
        timers.schedule(
            .tombstoneCollection, at: now + tombstoneCollectionInterval(retentionMs: settings.tombstoneRetentionMs))
    }

    /// A wake-up the instance asked for came due (or later). Runs every due timer.
    public mutating func onTick(at time: MeshTime) -> [Directive] {
        while let kind = timers.popDue(now: time.monotonic) {
            fire(kind, at: time)
        }
        return finish()
    }

    /// A UDP datagram arrived. Malformed input is counted and dropped.
    public mutating func onDatagram(_ bytes: [UInt8], from: GossipAddress, at time: MeshTime) -> [Directive] {
        counters.datagramsReceived += 1
        let messages: [GossipMessage]
        do {
            messages = try GossipCodec.decodeDatagram(bytes)
        } catch {
            counters.datagramsMalformed += 1
            return finish()
        }
        handleMessages(messages, from: from, at: time)
        return finish()
    }

    /// A push-pull request frame arrived over TCP. Returns the reply frame (nil when the request
    /// is malformed: the shell closes the connection) and directives.
    public mutating func onPushPullRequest(_ payload: [UInt8], at time: MeshTime) -> (reply: [UInt8]?, directives: [Directive]) {
        guard let request = try? PushPullCodec.decode(payload), request.kind == .request else {
            counters.pushPullsMalformed += 1
            return (nil, finish())
        }
        mergePushPull(request, at: time)
        let reply = PushPullCodec.encode(pushPullPayload(kind: .reply, entriesAbove: request.clocks, at: time))
        return (reply, finish())
    }

    /// The reply to a `.pushPull` directive arrived.
    public mutating func onPushPullReply(_ payload: [UInt8], from: GossipAddress, at time: MeshTime) -> [Directive] {
        guard let reply = try? PushPullCodec.decode(payload), reply.kind == .reply else {
            counters.pushPullsMalformed += 1
            return finish()
        }
        var payload = reply
        let sentAt = finishPushPull(to: from)
        // The reply holds only the entries above the clocks this node sent with its request. A
        // replica dropped and accepted again since then lost entries the reply assumes are here,
        // so its clock must not advance; the next push-pull fetches its entries.
        for (replica, accepted) in acceptedReplicas where sentAt.map({ accepted.serial >= $0 }) ?? true {
            payload.clocks[replica] = nil
        }
        mergePushPull(payload, at: time)
        return finish()
    }

    /// A `.pushPull` to `to` could not connect, timed out or got no valid reply.
    public mutating func onPushPullFailed(to: GossipAddress, at time: MeshTime) -> [Directive] {
        counters.pushPullsFailed += 1
        _ = finishPushPull(to: to)
        return finish()
    }

    /// Counts a newly opened local client session of `user`. User IDs the wire format cannot
    /// carry (empty or over 128 bytes) are ignored.
    public mutating func onSessionOpened(user: UserID, at time: MeshTime) -> [Directive] {
        guard isValidUserID(user) else { return finish() }
        let current = presenceState.entry(of: localReplica, user: user)?.sessionCount ?? 0
        guard current < UInt32.max else { return finish() }
        writeLocalEntry(user: user, sessionCount: current + 1, at: time)
        return finish()
    }

    /// Counts a closed local client session of `user`. A close without a matching open is ignored.
    public mutating func onSessionClosed(user: UserID, at time: MeshTime) -> [Directive] {
        guard isValidUserID(user) else { return finish() }
        let current = presenceState.entry(of: localReplica, user: user)?.sessionCount ?? 0
        guard current > 0 else { return finish() }
        writeLocalEntry(user: user, sessionCount: current - 1, at: time)
        return finish()
    }

    /// `user` set their own status from a local session. The status is cut to 32 bytes and the
    /// text to 256 bytes of UTF-8.
    public mutating func onStatusSet(user: UserID, status: CustomStatusValue, at time: MeshTime) -> [Directive] {
        guard isValidUserID(user) else { return finish() }
        writeLocalStatus(user: user, status: status, at: time)
        return finish()
    }

    /// Graceful leave: announces `left` to every member at once.
    public mutating func onLeave(at time: MeshTime) -> [Directive] {
        guard !hasLeft else { return finish() }
        hasLeft = true
        leave(at: time)
        return finish()
    }

    /// Every member in this node's table, itself included, ordered by name.
    public var members: [Member] {
        records.records.map(\.member).sorted { $0.name < $1.name }
    }

    /// The member named `name` in this node's table, this node included; nil when unknown.
    public func member(named name: String) -> Member? {
        records[name]?.member
    }

    /// The merged presence of `user` (offline with nil `lastSeen` when never seen).
    public func presence(of user: UserID) -> UserPresenceState {
        presenceState.view(of: user)
    }

    /// Every user online in the merged view, ordered by user ID.
    public var onlineUsers: [UserID] {
        presenceState.onlineUsers
    }

    /// Members currently suspected by this node, ordered by name.
    public var suspects: [Member] {
        members.filter { $0.state == .suspect }
    }

    /// Gossip items waiting for (re)transmission.
    public var broadcastQueueDepth: Int {
        broadcasts.count
    }

    // MARK: - Internals shared by the extensions

    var localReplica: ReplicaID { ReplicaID(name: config.name, epoch: epoch) }

    /// `interval` scaled by Lifeguard local health.
    func scaledByHealth(_ interval: UInt64) -> UInt64 {
        interval * UInt64(localHealth + 1)
    }

    mutating func adjustLocalHealth(by delta: Int) {
        localHealth = min(maxLocalHealth, max(0, localHealth + delta))
    }

    /// Ends an event: returns its directives, then the wake-up for the earliest pending timer.
    mutating func finish() -> [Directive] {
        assert(
            liveMemberCount == records.records.filter(\.isLive).count,
            "live member count \(liveMemberCount) is out of step with the member table")
        var result = output
        output = []
        if let earliest = timers.earliest {
            result.append(.wakeUp(at: earliest))
        }
        return result
    }

    private mutating func fire(_ kind: TimerKind, at time: MeshTime) {
        switch kind {
        case .probeRound:
            runProbeRound(at: time)
        case .probeTimeout(let sequence):
            probeTimedOut(sequence: sequence, at: time)
        case .probeRetry(let sequence):
            retryProbe(sequence: sequence, at: time)
        case .relayTimeout(let sequence):
            finishRelayedProbe(sequence: sequence)
        case .gossipRound:
            runGossipRound(at: time)
        case .pushPullRound:
            runPushPullRound(at: time)
        case .reconnectRound:
            runReconnectRound(at: time)
        case .suspicionTimeout(let name):
            expireSuspicion(of: name, at: time)
        case .forgetMember(let name):
            forgetIfExpired(name, at: time)
        case .tombstoneCollection:
            runTombstoneCollection(at: time)
        }
    }

    /// Applies the messages of one decoded datagram: membership first, so presence deltas of a
    /// member announced in the same datagram are accepted, then probes, then presence.
    private mutating func handleMessages(_ messages: [GossipMessage], from: GossipAddress, at time: MeshTime) {
        var deltas: [PresenceDelta] = []
        var statuses: [StatusRecord] = []
        var lastSeen: [LastSeenRecord] = []
        for message in messages {
            switch message {
            case .alive(let alive):
                if applyAlive(alive, at: time) { enqueueMembership(message, about: alive.name) }
            case .suspect(let accusation):
                answerStaleAccusation(accusation, from: from)
                if applySuspect(accusation, at: time) { enqueueMembership(message, about: accusation.name) }
            case .dead(let accusation):
                answerStaleAccusation(accusation, from: from)
                if applyDead(accusation, at: time) { enqueueMembership(message, about: accusation.name) }
            case .left(let name, let epoch, let incarnation):
                if applyLeft(name: name, epoch: epoch, incarnation: incarnation, at: time) {
                    enqueueMembership(message, about: name)
                }
            case .presence(let delta):
                deltas.append(delta)
            case .customStatus(let record):
                statuses.append(record)
            case .lastSeen(let record):
                lastSeen.append(record)
            case .ping, .pingRequest, .ack, .nack:
                break
            }
        }
        for message in messages {
            switch message {
            case .ping(let sequence, let target, let targetEpoch):
                handlePing(sequence: sequence, target: target, targetEpoch: targetEpoch, from: from)
            case .pingRequest(let sequence, let target, let targetEpoch, let targetAddress):
                handlePingRequest(
                    sequence: sequence, target: target, targetEpoch: targetEpoch, targetAddress: targetAddress,
                    from: from, at: time)
            case .ack(let sequence):
                handleAck(sequence: sequence)
            case .nack(let sequence):
                handleNack(sequence: sequence)
            default:
                break
            }
        }
        if !deltas.isEmpty || !statuses.isEmpty || !lastSeen.isEmpty {
            mergeRemotePresence(deltas, statuses: statuses, lastSeen: lastSeen, at: time)
        }
    }
}
