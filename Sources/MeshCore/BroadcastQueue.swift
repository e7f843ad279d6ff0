/// Gossip items waiting to be piggybacked on outgoing datagrams (memberlist's
/// `TransmitLimitedQueue`). Each item is sent a limited number of times. A newer item about the
/// same key replaces the older one, so the queue contains at most one item per member, per
/// (replica, user) and per user status.
struct BroadcastQueue: Sendable {
    enum Key: Hashable, Sendable {
        case member(String)
        case presence(ReplicaID, UserID)
        case status(UserID)
    }

    private struct Item: Sendable {
        var framed: [UInt8]
        var transmits: Int
        /// Insertion order: among items sent equally often, the newest goes first.
        var id: UInt64
    }

    /// Upper bound on queued items; beyond it the most-sent items are dropped first, and
    /// push-pull repairs what they would have carried.
    static let maxItems = 50_000

    private var items: [Key: Item] = [:]
    private var nextID: UInt64 = 0

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }

    /// Queues a framed message under `key`, replacing any older item with that key.
    mutating func enqueue(_ key: Key, framed: [UInt8]) {
        nextID += 1
        items[key] = Item(framed: framed, transmits: 0, id: nextID)
        if items.count > Self.maxItems {
            dropMostTransmitted(items.count - Self.maxItems)
        }
    }

    /// Appends queued messages to `messages` while the datagram stays within `maxDatagramBytes`,
    /// least-sent first, newest first among equals. Every item taken counts one transmission and
    /// leaves the queue after `retransmitLimit` of them. Items too large for any datagram of this
    /// size are dropped.
    mutating func fill(_ messages: inout [[UInt8]], maxDatagramBytes: Int, retransmitLimit: Int) {
        var framedBytes = messages.reduce(0) { $0 + $1.count }
        let ordered = items.sorted { lhs, rhs in
            if lhs.value.transmits != rhs.value.transmits { return lhs.value.transmits < rhs.value.transmits }
            return lhs.value.id > rhs.value.id
        }
        let largestPossible = maxDatagramBytes - GossipCodec.datagramSize(messageCount: 1, framedBytes: 0)
        for (key, item) in ordered {
            if item.framed.count > largestPossible {
                // NOTE: only possible for status records with long text under a small
                // maxPacketBytes; those reach other nodes by push-pull alone.
                items[key] = nil
                continue
            }
            let size = GossipCodec.datagramSize(
                messageCount: messages.count + 1, framedBytes: framedBytes + item.framed.count)
            guard size <= maxDatagramBytes else { continue }
            messages.append(item.framed)
            framedBytes += item.framed.count
            if item.transmits + 1 >= retransmitLimit {
                items[key] = nil
            } else {
                items[key]?.transmits += 1
            }
            if maxDatagramBytes - size < GossipCodec.minFramedMessageBytes { break }
        }
    }

    private mutating func dropMostTransmitted(_ excess: Int) {
        let victims = items.sorted { lhs, rhs in
            if lhs.value.transmits != rhs.value.transmits { return lhs.value.transmits > rhs.value.transmits }
            return lhs.value.id < rhs.value.id
        }.prefix(excess)
        for (key, _) in victims {
            items[key] = nil
        }
    }
}

/// Times each gossip item is sent: `retransmitMult · ceil(log10(N + 1))`, at least 1, for N
/// live members. `ceil(log10(N + 1))` is the count of decimal digits of N.
func retransmitLimit(multiplier: Int, memberCount: Int) -> Int {
    var digits = 0
    var rest = max(0, memberCount)
    while rest > 0 {
        digits += 1
        rest /= 10
    }
    return max(1, multiplier * digits)
}
