/// The instance's record of one member: its public `Member` value plus protocol bookkeeping.
struct MemberRecord: Sendable {
    var member: Member
    /// Wall-clock start of the member's run; the later start wins between two epochs of one name.
    var startedAt: Int64
    /// Monotonic milliseconds of the last state change; dead and left members are forgotten
    /// `deadMemberRetentionMs` after it.
    var stateChangedAt: UInt64

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
    /// Direct pings sent again after the probe timeout.
    var retriesSent = 0
    /// Whether the ping-reqs to relays have gone out.
    var sentPingRequests = false
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

/// The member table of one instance, by name.
///
/// An instance started from a `MemberDirectory` shares the directory's table with every other
/// instance started from it (copy-on-write), and keeps its own changes in `changed` on top of
/// it. That lets a simulator run thousands of instances that each know thousands of members
/// without a copy of the whole table per instance. An instance that joined by itself keeps
/// everything in `changed`.
struct MemberTable: Sendable {
    private var shared: [String: MemberRecord]
    /// Names of `shared` removed by this instance.
    private var removed: Set<String> = []
    private var changed: [String: MemberRecord] = [:]
    /// Names of dead and left members: the candidates of reconnect rounds.
    private(set) var nonLiveNames: Set<String>
    private(set) var count: Int

    init() {
        shared = [:]
        nonLiveNames = []
        count = 0
    }

    /// Gossip address → name in the directory the table started from; empty otherwise.
    private(set) var sharedNameByAddress: [GossipAddress: String] = [:]
    private var sharedSortedNames: [String] = []

    init(directory: MemberDirectory) {
        sharedNameByAddress = directory.nameByAddress
        sharedSortedNames = directory.sortedNames
        shared = directory.records
        nonLiveNames = directory.nonLiveNames
        count = directory.records.count
    }

    subscript(name: String) -> MemberRecord? {
        get {
            if !changed.isEmpty, let record = changed[name] { return record }
            if shared.isEmpty || (!removed.isEmpty && removed.contains(name)) { return nil }
            return shared[name]
        }
        set {
            let old = self[name]
            if let newValue {
                changed[name] = newValue
                if !shared.isEmpty { removed.remove(name) }
                if newValue.isLive {
                    nonLiveNames.remove(name)
                } else {
                    nonLiveNames.insert(name)
                }
            } else {
                changed[name] = nil
                if shared[name] != nil { removed.insert(name) }
                nonLiveNames.remove(name)
            }
            count += (newValue == nil ? 0 : 1) - (old == nil ? 0 : 1)
        }
    }

    /// Every record, in no particular order. O(N): for rare events and whole-table payloads.
    var records: [MemberRecord] {
        var result = Array(changed.values)
        result.reserveCapacity(count)
        for (name, record) in shared where changed[name] == nil && !removed.contains(name) {
            result.append(record)
        }
        return result
    }

    /// Every name, sorted. O(N log N).
    var sortedNames: [String] {
        records.map(\.member.name).sorted()
    }

    /// Every record, ordered by name. A table started from a directory merges the directory's
    /// sorted names with its own few changes instead of sorting N records.
    var sortedRecords: [MemberRecord] {
        guard !shared.isEmpty else {
            return changed.values.sorted { $0.member.name < $1.member.name }
        }
        let extra = changed.keys.filter { shared[$0] == nil }.sorted()
        var result: [MemberRecord] = []
        result.reserveCapacity(count)
        var extraIndex = 0
        for name in sharedSortedNames {
            while extraIndex < extra.count && extra[extraIndex] < name {
                result.append(changed[extra[extraIndex]]!)
                extraIndex += 1
            }
            if let record = self[name] { result.append(record) }
        }
        while extraIndex < extra.count {
            result.append(changed[extra[extraIndex]]!)
            extraIndex += 1
        }
        return result
    }
}

/// A member table that many instances can start from at once, as if each had already joined
/// the cluster it describes. Instances share its storage until they change a member, so a
/// simulator can start thousands of nodes that each know thousands of members.
public struct MemberDirectory: Sendable {
    let records: [String: MemberRecord]
    let nonLiveNames: Set<String>
    let nameByAddress: [GossipAddress: String]
    let liveCount: Int
    /// Names sorted, so that each instance shuffles them into its probe order deterministically.
    let sortedNames: [String]

    /// `members` lists each member with the wall-clock milliseconds its run started at. Names
    /// must be unique.
    public init(members: [(member: Member, startedAt: Int64)]) {
        var records: [String: MemberRecord] = [:]
        records.reserveCapacity(members.count)
        var nonLive: Set<String> = []
        var nameByAddress: [GossipAddress: String] = [:]
        var live = 0
        for (member, startedAt) in members {
            precondition(records[member.name] == nil, "member directory lists \(member.name) twice")
            let record = MemberRecord(member: member, startedAt: startedAt, stateChangedAt: 0)
            records[member.name] = record
            nameByAddress[member.gossipAddress] = member.name
            if record.isLive { live += 1 } else { nonLive.insert(member.name) }
        }
        self.records = records
        self.nonLiveNames = nonLive
        self.nameByAddress = nameByAddress
        self.liveCount = live
        self.sortedNames = records.keys.sorted()
    }

    /// Members listed.
    public var count: Int { records.count }
}

/// The Lifeguard state of one suspicion: when it started and who confirmed it.
struct Suspicion: Sendable {
    var startedAt: UInt64
    /// Monotonic instant this node last sent the suspect a reminder of its suspicion, nil before
    /// the first.
    var lastReminder: UInt64? = nil
    /// The nodes whose suspect messages about the member reached this one, this node included
    /// when it raised the suspicion: the first accuser and at most `expectedConfirmations` more.
    /// All but the first are independent confirmations.
    var accusers: Set<String> = []
    /// Confirmations after which the timeout reaches its minimum.
    var expectedConfirmations: Int
    var minTimeoutMs: UInt64
    var maxTimeoutMs: UInt64

    /// Whether the suspicion has all the confirmations it counts. Further accusers move the
    /// deadline no more, so they are neither counted nor gossiped on, as memberlist's
    /// `suspicion.Confirm` also stops at its k-th confirmation.
    var isFullyConfirmed: Bool {
        accusers.count > expectedConfirmations
    }

    /// Returns the time before the deadline in which this node reminds the suspect, once per probe
    /// interval: the second half of the current timeout, and at least six probe intervals.
    /// At 20% loss a reminder and its reply both arrive with probability 0.64. Six tries then all
    /// fail with probability 0.002, and the 18 tries of an unconfirmed suspicion at N = 100 on
    /// the lan preset with probability 1e-8. So a node that missed the refutation's gossip (about
    /// one observer in 16,000 at 20% loss and N = 100, an estimate) almost always learns of it.
    func finalStretchMs(probeIntervalMs: UInt64) -> UInt64 {
        max(6 * probeIntervalMs, (deadline - startedAt) / 2)
    }

    /// Monotonic instant at which the suspect is declared dead, given the confirmations so far.
    var deadline: UInt64 {
        startedAt + dynamicSuspicionTimeout(
            confirmations: max(0, accusers.count - 1), expectedConfirmations: expectedConfirmations,
            minTimeoutMs: minTimeoutMs, maxTimeoutMs: maxTimeoutMs)
    }
}

/// Lifeguard's dynamic suspicion timeout: `maxTimeoutMs` with no confirmation, falling with the
/// logarithm of the confirmations to `minTimeoutMs` at `expectedConfirmations`:
/// `max(min, max − (max − min) · log(c + 1) / log(k + 1))`. With `k` = 0 it is `minTimeoutMs`.
/// Many independent suspicions mean the member is very likely down, so it is declared dead
/// sooner, while a lone suspicion, maybe from a node with a bad link, waits the longest.
func dynamicSuspicionTimeout(
    confirmations: Int, expectedConfirmations: Int, minTimeoutMs: UInt64, maxTimeoutMs: UInt64
) -> UInt64 {
    guard expectedConfirmations > 0, maxTimeoutMs > minTimeoutMs else { return minTimeoutMs }
    let fraction = log10(Double(confirmations + 1)) / log10(Double(expectedConfirmations + 1))
    let span = Double(maxTimeoutMs - minTimeoutMs)
    let timeout = Double(maxTimeoutMs) - span * fraction
    return max(minTimeoutMs, UInt64(max(0, timeout).rounded(.down)))
}
