/// Jittered exponential backoff between reconnection attempts.
///
/// Attempt `n` (from 0) waits between half and all of
/// `min(maximum, initial · 2ⁿ)`, so many clients that lost the same node
/// spread their reconnections instead of arriving at once.
public struct Backoff: Sendable, Equatable {
    /// Upper bound of the first delay. Default 250 ms.
    public var initial: Duration
    /// Upper bound of any delay. Default 30 s.
    public var maximum: Duration

    public init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// Returns the delay before attempt `attempt`; `jitter` in 0...1 picks the
    /// point between half and all of the ceiling.
    public func delay(attempt: Int, jitter: Double) -> Duration {
        let ceiling = self.ceiling(attempt: attempt)
        let fraction = 0.5 + 0.5 * min(max(jitter, 0), 1)
        return ceiling * fraction
    }

    /// Returns the delay before attempt `attempt` with a random jitter.
    public func delay(attempt: Int) -> Duration {
        delay(attempt: attempt, jitter: Double.random(in: 0...1))
    }

    func ceiling(attempt: Int) -> Duration {
        var ceiling = initial
        var remaining = max(attempt, 0)
        while remaining > 0 && ceiling < maximum {
            ceiling *= 2
            remaining -= 1
        }
        return min(ceiling, maximum)
    }
}
