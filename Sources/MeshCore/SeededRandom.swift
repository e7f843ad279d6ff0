/// A deterministic random number generator: xoshiro256** (Blackman and Vigna, 2018), with its
/// 256-bit state filled from a 64-bit seed by SplitMix64 as its authors recommend.
///
/// The instance draws every random choice (probe order, gossip targets, timer stagger) from this
/// generator, so one seed and one sequence of events always give the same directives.
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    init(seed: UInt64) {
        var splitMix = seed
        func nextSplitMix() -> UInt64 {
            splitMix &+= 0x9E37_79B9_7F4A_7C15
            var z = splitMix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = nextSplitMix()
        s1 = nextSplitMix()
        s2 = nextSplitMix()
        s3 = nextSplitMix()
    }

    mutating func next() -> UInt64 {
        let result = rotateLeft(s1 &* 5, by: 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotateLeft(s3, by: 45)
        return result
    }

    private func rotateLeft(_ x: UInt64, by k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }

    /// Up to `count` elements of `elements`, chosen uniformly without repetition.
    mutating func sample<T>(_ count: Int, from elements: [T]) -> [T] {
        guard count > 0 else { return [] }
        return Array(elements.shuffled(using: &self).prefix(count))
    }
}
