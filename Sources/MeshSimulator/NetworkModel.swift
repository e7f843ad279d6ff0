import Foundation

/// A deterministic random number generator for the simulated network (SplitMix64, Steele,
/// Lea and Flood, 2014). The simulation draws every loss, delay and epoch from one of these,
/// so one seed always gives the same run.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    public mutating func unit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// True with probability `probability`.
    public mutating func chance(_ probability: Double) -> Bool {
        probability > 0 && unit() < probability
    }
}

/// One-way delay of a datagram or TCP segment, in microseconds of virtual time.
public enum LatencyDistribution: Sendable, Equatable {
    case constant(microseconds: UInt64)
    case uniform(minMicroseconds: UInt64, maxMicroseconds: UInt64)
    /// `minMicroseconds` plus an exponential tail with mean `meanExtraMicroseconds`: most
    /// packets arrive near the minimum and a few much later, as on a loaded network.
    case shiftedExponential(minMicroseconds: UInt64, meanExtraMicroseconds: UInt64)

    func sample(using random: inout SimulationRandom) -> UInt64 {
        switch self {
        case .constant(let value):
            return value
        case .uniform(let low, let high):
            return high > low ? low + random.next() % (high - low + 1) : low
        case .shiftedExponential(let low, let mean):
            // 1 − unit() is in (0, 1], so the logarithm is finite; the tail is cut at 20 means.
            let extra = -log(1 - random.unit()) * Double(mean)
            return low + UInt64(min(extra, Double(mean) * 20))
        }
    }
}

/// What the network does to packets on one directed link.
public struct LinkProfile: Sendable, Equatable {
    public var latency: LatencyDistribution
    /// Probability that a datagram is lost, 0 to 1.
    public var lossRate: Double
    /// Probability that a delivered datagram arrives twice.
    public var duplicateRate: Double
    /// Probability that a datagram is held back by `reorderDelayMicroseconds` extra, so later
    /// datagrams overtake it.
    public var reorderRate: Double
    public var reorderDelayMicroseconds: UInt64

    public init(
        latency: LatencyDistribution, lossRate: Double = 0, duplicateRate: Double = 0, reorderRate: Double = 0,
        reorderDelayMicroseconds: UInt64 = 5_000
    ) {
        self.latency = latency
        self.lossRate = lossRate
        self.duplicateRate = duplicateRate
        self.reorderRate = reorderRate
        self.reorderDelayMicroseconds = reorderDelayMicroseconds
    }

    /// One data center: 100 µs minimum, 150 µs mean extra one-way delay, no loss.
    public static let lan = LinkProfile(latency: .shiftedExponential(minMicroseconds: 100, meanExtraMicroseconds: 150))

    /// Between regions: 30 ms minimum, 10 ms mean extra one-way delay.
    public static let wan = LinkProfile(
        latency: .shiftedExponential(minMicroseconds: 30_000, meanExtraMicroseconds: 10_000))

    /// This profile with `lossRate` set.
    public func withLoss(_ rate: Double) -> LinkProfile {
        var copy = self
        copy.lossRate = rate
        return copy
    }
}
