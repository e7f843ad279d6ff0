/// The protocol timers of one instance.
enum TimerKind: Hashable, Sendable {
    /// End of the current probe round and start of the next.
    case probeRound
    /// The direct ping of probe `sequence` got no ack in time: retry it or send ping-reqs.
    case probeTimeout(sequence: UInt64)
    /// Probe `sequence` still has no ack one retry step later: send ping-reqs, ping once more.
    case probeRetry(sequence: UInt64)
    /// A ping this node sent on behalf of a `ping-req` got no ack in time: send a nack.
    case relayTimeout(sequence: UInt64)
    case gossipRound
    case pushPullRound
    case reconnectRound
    /// A suspect's suspicion may have run out.
    case suspicionTimeout(name: String)
    /// A dead or left member may have passed its retention.
    case forgetMember(name: String)
    /// Collect presence tombstones held past their retention.
    case tombstoneCollection
}

/// Pending deadlines in monotonic milliseconds, earliest first. Handlers check that a fired
/// timer still applies, so a stale timer (for a refuted suspicion, say) is harmless.
struct TimerList: Sendable {
    private struct Timer: Sendable {
        var deadline: UInt64
        var order: UInt64
        var kind: TimerKind
    }

    private var timers: [Timer] = []
    private var nextOrder: UInt64 = 0

    var earliest: UInt64? { timers.first?.deadline }
    var count: Int { timers.count }

    mutating func schedule(_ kind: TimerKind, at deadline: UInt64) {
        nextOrder += 1
        let timer = Timer(deadline: deadline, order: nextOrder, kind: kind)
        // Binary search for the first timer that fires later; equal deadlines keep insertion order.
        var low = 0
        var high = timers.count
        while low < high {
            let middle = (low + high) / 2
            if timers[middle].deadline <= deadline {
                low = middle + 1
            } else {
                high = middle
            }
        }
        timers.insert(timer, at: low)
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    mutating func popDue(now: UInt64) -> TimerKind? {
        guard let first = timers.first, first.deadline <= now else { return nil }
        timers.removeFirst()
        return first.kind
    }

    mutating func removeAll() {
        timers.removeAll()
    }
}
