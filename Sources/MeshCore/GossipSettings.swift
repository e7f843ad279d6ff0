/// Timing and size settings of the membership and gossip protocol. Every duration is in
/// milliseconds. Start from a preset (`.lan`, `.wan`, `.local`) and change single fields;
/// `validate()` checks the settings as a whole.
public struct GossipSettings: Sendable, Equatable {
    /// Time between two probes of this node. Each round probes one member, so a failed member
    /// is probed within about N rounds. Lower detects failures sooner at the cost of traffic.
    public var probeIntervalMs: UInt64
    /// How long a direct ping waits for its ack before it is retried and sent to relays. Must be below
    /// `probeIntervalMs`; set it above the network's 99th percentile round trip.
    public var probeTimeoutMs: UInt64
    /// Members asked to ping a target on our behalf (`ping-req`) when a direct ping fails.
    /// More members tolerate more lossy paths at the cost of extra packets.
    public var indirectChecks: Int
    /// Direct pings sent again to a target that has not acked within `probeTimeoutMs`. The
    /// first goes out at the timeout, the others at steps of `(probeIntervalMs − probeTimeoutMs)
    /// / (directPingRetries + 1)`, and the ping-reqs to `indirectChecks` relays one step after the
    /// first retry, so a retry that gets through saves them. Retries stand in for memberlist's TCP
    /// fallback ping and carry no gossip items. With independent loss p on every link, a direct
    /// round trip of two datagrams fails with probability 1 − (1 − p)², 0.36 at 20% loss. A
    /// relayed one costs four datagrams and fails with 1 − (1 − p)⁴, 0.59. Under random loss a
    /// retry therefore cuts false suspicions more cheaply than a relay, and relays still cover a
    /// broken path between two members. Higher sends up to this many more small datagrams for a
    /// member that is really down. Default 10 in every preset. 0 sends the ping-reqs at the
    /// timeout, as plain SWIM does.
    public var directPingRetries: Int = 10
    /// Suspicion timeout multiplier. The minimum suspicion timeout is
    /// `suspicionMult · max(1, log10(N)) · probeIntervalMs` for N live members: a suspect is
    /// declared dead no sooner than that after its suspicion started. Higher tolerates slower
    /// nodes and delays true detection.
    public var suspicionMult: Int
    /// Maximum suspicion timeout as a multiple of the minimum. A suspicion starts at the
    /// maximum, `suspicionMaxTimeoutMult · min`, and shrinks towards the minimum as other
    /// members confirm it (Lifeguard's dynamic suspicion): `max(min, max − (max − min) ·
    /// log(c + 1) / log(k + 1))` after c confirmations, with k = `suspicionConfirmations`.
    /// Higher protects a member that only one node with a bad link suspects, and delays the
    /// verdict when no other member confirms. Default 6 in every preset; 1 makes the timeout fixed.
    public var suspicionMaxTimeoutMult: Int
    /// Independent confirmations (suspect messages from other members) after which the suspicion
    /// timeout reaches its minimum. It is capped at N − 2 for N live members, because only
    /// members other than the accuser and the suspect can confirm. Higher needs more agreement
    /// before the fastest verdict. Default 3, the number of indirect probes, in every preset.
    public var suspicionConfirmations: Int
    /// Retransmit multiplier: each gossip item is sent `retransmitMult · ceil(log10(N + 1))`
    /// times. Higher makes delivery more certain under loss and adds traffic.
    public var retransmitMult: Int
    /// Time between gossip rounds that send queued items to `fanout` random members.
    public var gossipIntervalMs: UInt64
    /// Members that each gossip round, and each local presence change, is sent to at once.
    public var fanout: Int
    /// Time between full state exchanges (push-pull over TCP) with one random member.
    /// Above 32 live members it is stretched to `pushPullIntervalMs · (ceil(log2(N) − 5) + 1)`,
    /// because each exchange carries the whole member table (with 10,000 members the lan
    /// preset's 30 s becomes 300 s). Lower repairs lost gossip sooner at the cost of bandwidth.
    /// Zero turns periodic push-pull off; joins and reconnects still use it.
    public var pushPullIntervalMs: UInt64
    /// Time between attempts to reach seeds and recently dead members, so that a partitioned
    /// cluster heals by itself: each round push-pulls one random seed that is not known alive or
    /// one random dead member within `deadMemberRetentionMs`. Dead members are retried with
    /// probability min(1, 8 / N) per round for N live members, so a cluster sends about 8 such
    /// push-pulls per round at any size. Two halves of a healed small partition merge within
    /// about one round. Lower heals sooner and sends more push-pulls into a
    /// partition that is still there.
    public var reconnectIntervalMs: UInt64
    /// How long a dead or left member is remembered (and retried) before it is forgotten.
    public var deadMemberRetentionMs: UInt64
    /// Largest UDP datagram this node sends. 1400 stays under a 1500-byte Ethernet MTU.
    public var maxPacketBytes: Int
    /// How long a tombstone (a replica's entry of a user after the user's last session there
    /// closed) is kept before it is collected. A departed user's `lastSeen` stays known that long;
    /// afterwards the user is reported like one never seen. Longer keeps `lastSeen` longer and
    /// holds more memory after churn. Default 300,000 (5 minutes) in every preset.
    public var tombstoneRetentionMs: UInt64 = 300_000

    public init(
        probeIntervalMs: UInt64, probeTimeoutMs: UInt64, indirectChecks: Int, suspicionMult: Int,
        retransmitMult: Int, gossipIntervalMs: UInt64, fanout: Int, pushPullIntervalMs: UInt64,
        reconnectIntervalMs: UInt64, deadMemberRetentionMs: UInt64, maxPacketBytes: Int,
        suspicionMaxTimeoutMult: Int = 6, suspicionConfirmations: Int = 3
    ) {
        self.probeIntervalMs = probeIntervalMs
        self.probeTimeoutMs = probeTimeoutMs
        self.indirectChecks = indirectChecks
        self.suspicionMult = suspicionMult
        self.retransmitMult = retransmitMult
        self.gossipIntervalMs = gossipIntervalMs
        self.fanout = fanout
        self.pushPullIntervalMs = pushPullIntervalMs
        self.reconnectIntervalMs = reconnectIntervalMs
        self.deadMemberRetentionMs = deadMemberRetentionMs
        self.maxPacketBytes = maxPacketBytes
        self.suspicionMaxTimeoutMult = suspicionMaxTimeoutMult
        self.suspicionConfirmations = suspicionConfirmations
    }

    /// Defaults for one data center: in `mesh-sim bench`, every node of a 10-node cluster marked a
    /// crashed node dead within 3.1 s, and of a 10,000-node cluster within 7.6 s.
    public static let lan = GossipSettings(
        probeIntervalMs: 500, probeTimeoutMs: 200, indirectChecks: 3, suspicionMult: 3,
        retransmitMult: 4, gossipIntervalMs: 200, fanout: 3, pushPullIntervalMs: 30_000,
        reconnectIntervalMs: 1_000, deadMemberRetentionMs: 300_000, maxPacketBytes: 1400,
        suspicionMaxTimeoutMult: 6, suspicionConfirmations: 3)

    /// Across regions: longer timeouts for round trips of hundreds of milliseconds.
    public static let wan = GossipSettings(
        probeIntervalMs: 5_000, probeTimeoutMs: 3_000, indirectChecks: 3, suspicionMult: 6,
        retransmitMult: 4, gossipIntervalMs: 500, fanout: 4, pushPullIntervalMs: 60_000,
        reconnectIntervalMs: 5_000, deadMemberRetentionMs: 600_000, maxPacketBytes: 1400,
        suspicionMaxTimeoutMult: 6, suspicionConfirmations: 3)

    /// One machine (loopback): short timeouts for tests and local clusters.
    public static let local = GossipSettings(
        probeIntervalMs: 200, probeTimeoutMs: 100, indirectChecks: 3, suspicionMult: 3,
        retransmitMult: 3, gossipIntervalMs: 100, fanout: 3, pushPullIntervalMs: 10_000,
        reconnectIntervalMs: 500, deadMemberRetentionMs: 60_000, maxPacketBytes: 1400,
        suspicionMaxTimeoutMult: 6, suspicionConfirmations: 3)

    /// Time between two direct retries of a probe, and from the first retry to the ping-reqs.
    public var retryStepMs: UInt64 {
        (probeIntervalMs - probeTimeoutMs) / UInt64(directPingRetries + 1)
    }

    /// How long a relay waits for the target's ack before it sends the requester a nack: 80% of
    /// the requester's round that is left when the ping-req arrives, and at most 80% of
    /// `probeTimeoutMs`. A nack that arrives after the round ended counts against the requester's
    /// local health as if the relay had sent nothing. On the wan preset (3 s timeout, 5 s
    /// interval), 80% of the timeout alone would be 2.4 s, past the round's end.
    public var relayNackDelayMs: UInt64 {
        let pingRequestsAt = probeTimeoutMs + (directPingRetries > 0 ? retryStepMs : 0)
        return min(probeTimeoutMs, probeIntervalMs - pingRequestsAt) * 4 / 5
    }

    /// Minimum and maximum suspicion timeout, in milliseconds, for `memberCount` live members:
    /// a suspicion that reaches `suspicionConfirmations` confirmations waits the minimum, one
    /// with no confirmation waits the maximum.
    public func suspicionTimeouts(memberCount: Int) -> (min: UInt64, max: UInt64) {
        let minimum = suspicionTimeout(
            multiplier: suspicionMult, memberCount: memberCount, probeIntervalMs: probeIntervalMs)
        return (minimum, minimum * UInt64(suspicionMaxTimeoutMult))
    }

    /// Problems with the settings taken as a whole, each naming its field; empty when valid.
    public func validate() -> [String] {
        var problems: [String] = []
        if probeIntervalMs == 0 { problems.append("gossip.probeIntervalMs must be above 0") }
        if probeTimeoutMs == 0 || probeTimeoutMs >= probeIntervalMs {
            problems.append(
                "gossip.probeTimeoutMs must be above 0 and below gossip.probeIntervalMs (\(probeIntervalMs)), got \(probeTimeoutMs); "
                    + "a field that is not set takes its value from gossip.preset")
        }
        if indirectChecks < 0 || indirectChecks > 16 {
            problems.append("gossip.indirectChecks must be 0 to 16, got \(indirectChecks)")
        }
        if directPingRetries < 0 || directPingRetries > 16 {
            problems.append("gossip.directPingRetries must be 0 to 16, got \(directPingRetries)")
        }
        if suspicionMult < 1 { problems.append("gossip.suspicionMult must be at least 1, got \(suspicionMult)") }
        if suspicionMaxTimeoutMult < 1 || suspicionMaxTimeoutMult > 100 {
            problems.append("gossip.suspicionMaxTimeoutMult must be 1 to 100, got \(suspicionMaxTimeoutMult)")
        }
        if suspicionConfirmations < 0 || suspicionConfirmations > 64 {
            problems.append("gossip.suspicionConfirmations must be 0 to 64, got \(suspicionConfirmations)")
        }
        if retransmitMult < 1 { problems.append("gossip.retransmitMult must be at least 1, got \(retransmitMult)") }
        if gossipIntervalMs == 0 { problems.append("gossip.gossipIntervalMs must be above 0") }
        if fanout < 1 { problems.append("gossip.fanout must be at least 1, got \(fanout)") }
        if reconnectIntervalMs == 0 { problems.append("gossip.reconnectIntervalMs must be above 0") }
        if maxPacketBytes < 512 || maxPacketBytes > 65_000 {
            problems.append("gossip.maxPacketBytes must be 512 to 65000, got \(maxPacketBytes)")
        }
        return problems
    }
}

/// Identity and settings of one node run.
public struct MeshConfig: Sendable, Equatable {
    public var name: String
    /// Address other members send gossip to; also the TCP push-pull address.
    public var gossipAddress: GossipAddress
    /// Client listen address, advertised to other members.
    public var clientAddress: String
    /// Gossip addresses to join through and to retry while partitioned.
    public var seeds: [GossipAddress]
    public var gossip: GossipSettings

    public init(name: String, gossipAddress: GossipAddress, clientAddress: String, seeds: [GossipAddress], gossip: GossipSettings) {
        self.name = name
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
        self.seeds = seeds
        self.gossip = gossip
    }
}
