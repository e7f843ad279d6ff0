/// A binary min-heap of simulation events keyed by (virtual time, sequence). The sequence is
/// the insertion order, so events due at the same instant run in the order they were scheduled,
/// which keeps a run deterministic.
struct EventHeap<Payload> {
    struct Entry {
        var time: UInt64
        var sequence: UInt64
        var payload: Payload
    }

    private var entries: [Entry] = []
    private var nextSequence: UInt64 = 0

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }
    var earliestTime: UInt64? { entries.first?.time }

    mutating func push(_ payload: Payload, at time: UInt64) {
        nextSequence += 1
        entries.append(Entry(time: time, sequence: nextSequence, payload: payload))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(entries[child], entries[parent]) else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !entries.isEmpty else { return nil }
        let last = entries.count - 1
        entries.swapAt(0, last)
        let top = entries.removeLast()
        var parent = 0
        let count = entries.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { break }
            var smallest = left
            let right = left + 1
            if right < count && Self.precedes(entries[right], entries[left]) {
                smallest = right
            }
            guard Self.precedes(entries[smallest], entries[parent]) else { break }
            entries.swapAt(smallest, parent)
            parent = smallest
        }
        return top
    }

    private static func precedes(_ lhs: Entry, _ rhs: Entry) -> Bool {
        lhs.time != rhs.time ? lhs.time < rhs.time : lhs.sequence < rhs.sequence
    }
}
