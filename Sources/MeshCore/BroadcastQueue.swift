/// Gossip items waiting to be piggybacked on outgoing datagrams (the transmit-limited queue of
/// SWIM implementations such as memberlist). Each item is sent a limited number of times. A newer
/// item about the same key replaces the older one, so the queue contains at most one item per
/// member, per (replica, user), per user status and per user `lastSeen`.
///
/// Items are kept in two classes, membership and presence, and each datagram takes from both in
/// turn, so a stream of membership news cannot crowd presence deltas out of datagrams (nor the
/// reverse). Within a class the least-transmitted items go first. Among membership items sent
/// equally often the newest goes first, because fresh suspicions and refutations matter most.
/// Among presence items the oldest goes first, so no delta waits behind an endless stream of
/// newer ones.
///
/// Filling a datagram costs time in proportion to the items it takes, not to the queue length:
/// every class keeps one lane per transmit count, and lanes hold (id, key) entries that are
/// checked against `items` when read, so replaced or retired items are skipped lazily.
struct BroadcastQueue: Sendable {
    enum Key: Hashable, Sendable {
        case member(String)
        case presence(ReplicaID, UserID)
        case status(UserID)
        case lastSeen(UserID)

        var isMembership: Bool {
            if case .member = self { return true }
            return false
        }
    }

    private struct Item: Sendable {
        var framed: [UInt8]
        var transmits: Int
        /// Insertion order, unique per enqueue; lane entries carry it to detect replacement.
        var id: UInt64
    }

    private struct LaneEntry: Sendable {
        var id: UInt64
        var key: Key
    }

    /// The entries of one class and one transmit count. Entries are taken from the front
    /// (oldest first) or the back (newest first), depending on the class.
    private struct Lane: Sendable {
        var entries: [LaneEntry] = []
        var head = 0

        var isEmpty: Bool { head == entries.count }

        mutating func append(_ entry: LaneEntry) {
            entries.append(entry)
        }

        mutating func popFront() -> LaneEntry? {
            guard head < entries.count else { return nil }
            let entry = entries[head]
            head += 1
            if head == entries.count {
                entries.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 1024 && head * 2 >= entries.count {
                entries.removeFirst(head)
                head = 0
            }
            return entry
        }

        /// Puts back an entry just taken by `popFront`.
        mutating func pushFront(_ entry: LaneEntry) {
            if head > 0 {
                head -= 1
                entries[head] = entry
            } else {
                entries.insert(entry, at: 0)
            }
        }

        mutating func popBack() -> LaneEntry? {
            guard head < entries.count else { return nil }
            let entry = entries.removeLast()
            if head == entries.count {
                entries.removeAll(keepingCapacity: true)
                head = 0
            }
            return entry
        }
    }

    /// One class of items: lanes indexed by transmit count.
    private struct ItemClass: Sendable {
        var lanes: [Lane] = []
        let newestFirst: Bool

        init(newestFirst: Bool) {
            self.newestFirst = newestFirst
        }

        mutating func add(_ entry: LaneEntry, transmits: Int) {
            while lanes.count <= transmits {
                lanes.append(Lane())
            }
            lanes[transmits].append(entry)
        }

        mutating func take(from lane: Int) -> LaneEntry? {
            newestFirst ? lanes[lane].popBack() : lanes[lane].popFront()
        }

        /// Undoes `take` for entries that did not fit, last taken first.
        mutating func putBack(_ entry: LaneEntry, lane: Int) {
            if newestFirst {
                lanes[lane].append(entry)
            } else {
                lanes[lane].pushFront(entry)
            }
        }
    }

    /// Upper bound on queued items; beyond it the most-sent items are dropped first, and
    /// push-pull repairs what they would have carried.
    static let maxItems = 50_000

    /// Entries that did not fit one datagram before a class gives up its turn. Items are a few
    /// dozen bytes, so after this many misfits the datagram is nearly full.
    private static let maxMisfitsPerFill = 8

    private var items: [Key: Item] = [:]
    private var nextID: UInt64 = 0
    private var membership = ItemClass(newestFirst: true)
    private var presence = ItemClass(newestFirst: false)
    private var membershipCount = 0

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }
    /// Queued membership items (alive, suspect, dead, left).
    var membershipItemCount: Int { membershipCount }
    /// Queued presence deltas and status records.
    var presenceItemCount: Int { items.count - membershipCount }

    /// Queues a framed message under `key`, replacing any older item with that key.
    mutating func enqueue(_ key: Key, framed: [UInt8]) {
        nextID += 1
        let previous = items.updateValue(Item(framed: framed, transmits: 0, id: nextID), forKey: key)
        if previous == nil && key.isMembership {
            membershipCount += 1
        }
        let entry = LaneEntry(id: nextID, key: key)
        if key.isMembership {
            membership.add(entry, transmits: 0)
        } else {
            presence.add(entry, transmits: 0)
        }
        if items.count > Self.maxItems {
            dropMostTransmitted(items.count - Self.maxItems)
        }
    }

    /// Appends queued messages to `messages` while the datagram stays within `maxDatagramBytes`,
    /// taking from the membership and presence classes in turn, least-sent first. Every item
    /// taken counts one transmission and leaves the queue after `retransmitLimit` of them. Items
    /// too large for any datagram of this size are dropped.
    mutating func fill(_ messages: inout [[UInt8]], maxDatagramBytes: Int, retransmitLimit: Int) {
        var framedBytes = 0
        for message in messages {
            framedBytes += message.count
        }
        var membershipOpen = true
        var presenceOpen = true
        var membershipMisfits: [(LaneEntry, Int)] = []
        var presenceMisfits: [(LaneEntry, Int)] = []
        // Items taken move to their next lane only after the fill, so none is taken twice.
        var membershipSent: [(LaneEntry, Int)] = []
        var presenceSent: [(LaneEntry, Int)] = []
        var turnIsMembership = true
        // The classes are moved out of `self` for the fill, so `takeOne` can change both them and
        // `items` without overlapping access (and without copying their storage).
        var membershipClass = ItemClass(newestFirst: true)
        var presenceClass = ItemClass(newestFirst: false)
        swap(&membershipClass, &membership)
        swap(&presenceClass, &presence)
        defer {
            swap(&membershipClass, &membership)
            swap(&presenceClass, &presence)
        }
        while membershipOpen || presenceOpen {
            let spaceLeft = maxDatagramBytes - GossipCodec.datagramSize(
                messageCount: messages.count + 1, framedBytes: framedBytes)
            if spaceLeft < GossipCodec.minFramedMessageBytes { break }
            let useMembership = (turnIsMembership && membershipOpen) || !presenceOpen
            turnIsMembership.toggle()
            let taken: Bool
            if useMembership {
                taken = takeOne(
                    from: &membershipClass, into: &messages, framedBytes: &framedBytes, maxDatagramBytes: maxDatagramBytes,
                    retransmitLimit: retransmitLimit, misfits: &membershipMisfits, sent: &membershipSent)
                if !taken { membershipOpen = false }
            } else {
                taken = takeOne(
                    from: &presenceClass, into: &messages, framedBytes: &framedBytes, maxDatagramBytes: maxDatagramBytes,
                    retransmitLimit: retransmitLimit, misfits: &presenceMisfits, sent: &presenceSent)
                if !taken { presenceOpen = false }
            }
        }
        for (entry, lane) in membershipMisfits.reversed() {
            membershipClass.putBack(entry, lane: lane)
        }
        for (entry, lane) in presenceMisfits.reversed() {
            presenceClass.putBack(entry, lane: lane)
        }
        for (entry, lane) in membershipSent {
            membershipClass.add(entry, transmits: lane)
        }
        for (entry, lane) in presenceSent {
            presenceClass.add(entry, transmits: lane)
        }
    }

    /// Moves the next live item of `itemClass` that fits into `messages`. Returns false when the
    /// class has nothing more that fits in this datagram.
    private mutating func takeOne(
        from itemClass: inout ItemClass, into messages: inout [[UInt8]], framedBytes: inout Int,
        maxDatagramBytes: Int, retransmitLimit: Int, misfits: inout [(LaneEntry, Int)],
        sent: inout [(LaneEntry, Int)]
    ) -> Bool {
        let largestPossible = maxDatagramBytes - GossipCodec.datagramSize(messageCount: 1, framedBytes: 0)
        var lane = 0
        while lane < itemClass.lanes.count {
            guard let entry = itemClass.take(from: lane) else {
                lane += 1
                continue
            }
            guard let item = items[entry.key], item.id == entry.id, item.transmits == lane else {
                continue  // Replaced, retired or moved on: a stale entry.
            }
            if item.framed.count > largestPossible {
                // NOTE: only possible for status records with long text under a small
                // maxPacketBytes; those reach other nodes by push-pull alone.
                remove(entry.key)
                continue
            }
            let size = GossipCodec.datagramSize(
                messageCount: messages.count + 1, framedBytes: framedBytes + item.framed.count)
            guard size <= maxDatagramBytes else {
                misfits.append((entry, lane))
                if misfits.count >= Self.maxMisfitsPerFill { return false }
                continue
            }
            messages.append(item.framed)
            framedBytes += item.framed.count
            let transmits = item.transmits + 1
            if transmits >= retransmitLimit {
                remove(entry.key)
            } else {
                items[entry.key]?.transmits = transmits
                sent.append((entry, transmits))
            }
            return true
        }
        return false
    }

    private mutating func remove(_ key: Key) {
        if items.removeValue(forKey: key) != nil && key.isMembership {
            membershipCount -= 1
        }
    }

    /// Drops `excess` items, the most-sent first, and presence before membership among items sent
    /// equally often. Each lane entry is read at most once, so the cost follows the entries read,
    /// not the queue length. Sorting every item on each drop instead took most of a node's CPU
    /// while the gossip of 99,000 users went past the cap.
    private mutating func dropMostTransmitted(_ excess: Int) {
        var remaining = excess
        var lane = max(membership.lanes.count, presence.lanes.count) - 1
        while remaining > 0 && lane >= 0 {
            dropOldest(of: \.presence, lane: lane, remaining: &remaining)
            dropOldest(of: \.membership, lane: lane, remaining: &remaining)
            lane -= 1
        }
    }

    /// Drops items from the front of one lane of `itemClass`, skipping stale entries, until
    /// `remaining` reaches 0 or the lane is empty.
    private mutating func dropOldest(
        of itemClass: WritableKeyPath<BroadcastQueue, ItemClass>, lane: Int, remaining: inout Int
    ) {
        guard remaining > 0, lane < self[keyPath: itemClass].lanes.count else { return }
        // The lane is moved out of `self` while `remove` changes `items`.
        var entries = Lane()
        swap(&entries, &self[keyPath: itemClass].lanes[lane])
        while remaining > 0, let entry = entries.popFront() {
            guard let item = items[entry.key], item.id == entry.id, item.transmits == lane else {
                continue  // Replaced, retired or moved on: a stale entry.
            }
            remove(entry.key)
            remaining -= 1
        }
        swap(&entries, &self[keyPath: itemClass].lanes[lane])
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
