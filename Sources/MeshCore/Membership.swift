/// The instance's record of one member: its public `Member` value plus protocol bookkeeping.
struct MemberRecord: Sendable {
    var member: Member
    /// Wall-clock start of the member's run; the later start wins between two epochs of one name.
    var startedAt: Int64
    /// Monotonic milliseconds of the last state change; dead and left members are forgotten
    /// `deadMemberRetentionMs` after it.
    var stateChangedAt: UInt64
    /// Monotonic deadline at which a suspect is declared dead; nil unless suspect.
    var suspicionDeadline: UInt64?

    var isLive: Bool { member.state == .alive || member.state == .suspect }

    var replica: ReplicaID { ReplicaID(name: member.name, epoch: member.epoch) }

    var snapshot: MemberSnapshot {
        MemberSnapshot(
            name: member.name, epoch: member.epoch, startedAt: startedAt, incarnation: member.incarnation,
            state: member.state, gossipAddress: member.gossipAddress, clientAddress: member.clientAddress)
    }

    var aliveAnnouncement: AliveAnnouncement {
        AliveAnnouncement(
            name: member.name, epoch: member.epoch, startedAt: startedAt, incarnation: member.incarnation,
            gossipAddress: member.gossipAddress, clientAddress: member.clientAddress)
    }

    /// Compares runs: true when (`epoch`, `startedAt`) is newer than this record's run, which
    /// means a later start, or the larger epoch when both started in the same millisecond.
    func isOlderRun(than epoch: Epoch, startedAt otherStart: Int64) -> Bool {
        (startedAt, member.epoch) < (otherStart, epoch)
    }
}

/// An indirect probe this node runs for another member's `ping-req`.
struct RelayedProbe: Sendable {
    var requester: GossipAddress
    var requesterSequence: UInt64
}

/// The probe of the current round.
struct ProbeAttempt: Sendable {
    var sequence: UInt64
    var target: String
    var targetEpoch: Epoch
    var targetAddress: GossipAddress
    var acked = false
    /// Ping-reqs sent; each relay that gets no ack sends a nack.
    var expectedNacks = 0
    var nacks = 0
}

/// Highest Lifeguard local health score. Probe intervals and timeouts are scaled by
/// `localHealth + 1`, so a node that misses its own deadlines (overloaded, or losing packets)
/// slows down instead of accusing healthy members.
let maxLocalHealth = 8

/// Suspicion timeout: `suspicionMult · max(1, log10(N)) · probeIntervalMs` for N live members
/// (memberlist's `suspicionTimeout`).
func suspicionTimeout(multiplier: Int, memberCount: Int, probeIntervalMs: UInt64) -> UInt64 {
    let scale = max(1.0, log10(Double(max(1, memberCount))))
    return UInt64((Double(multiplier) * scale * Double(probeIntervalMs)).rounded())
}

/// Base-10 logarithm of a positive finite `x`, accurate to about 1e-9. The standard library
/// has none without Foundation, which MeshCore does not import.
func log10(_ x: Double) -> Double {
    precondition(x > 0 && x.isFinite, "log10 needs a positive finite value, got \(x)")
    // x = significand · 2^exponent with significand in [1, 2); log2 of the significand comes
    // one bit at a time from repeated squaring.
    var log2 = Double(x.exponent)
    var y = x.significand
    var bit = 0.5
    for _ in 0..<40 {
        y *= y
        if y >= 2 {
            y /= 2
            log2 += bit
        }
        bit /= 2
    }
    return log2 / 3.321_928_094_887_362_4
}
