import MeshCore

/// A deterministic many-node simulation of MeshCore: real `MeshInstance` values exchange real
/// datagrams and push-pull frames over a simulated network on virtual time.
///
/// Everything runs from one event heap keyed by (virtual time, sequence): datagram and push-pull
/// deliveries, node wake-ups and scripted actions. Nothing scans all nodes per step, so the cost
/// of a run follows the events it contains. Every random choice (loss, delay, epochs, instance
/// seeds) comes from the simulation's seed, so one seed gives the same trace every time.
///
/// Virtual time is in microseconds; instances see it in milliseconds, as the node's libuv clock
/// gives it.
public final class Simulation {
    /// The shell side of one node: its address, its current run (nil while crashed or before
    /// its start) and what the kernel holds for it while it is paused.
    struct Node {
        var name: String
        var address: GossipAddress
        var seeds: [GossipAddress]
        var settings: GossipSettings
        var instance: MeshInstance?
        /// Whether `instance` is set. Checked instead of `instance != nil`, which copies the whole
        /// instance value in optimised builds.
        var isUp = false
        /// Raised at every crash and restart; deliveries for an earlier run are dropped.
        var run: UInt32 = 0
        var isPaused = false
        /// Inputs that arrived while paused, handled in order on resume.
        var deferred: [DeferredInput] = []
        var deferredDatagramBytes = 0
        /// Instant of the earliest tick event pending for this node, in microseconds.
        var nextWake: UInt64?
        var stats = NodeStats()
    }

    enum DeferredInput {
        case datagram(from: Int32, bytes: [UInt8])
        case pushPullRequest(id: UInt64)
        case pushPullReply(id: UInt64)
        case pushPullFailed(id: UInt64)
    }

    enum Event {
        case tick(node: Int32, run: UInt32)
        case datagram(to: Int32, run: UInt32, from: Int32, bytes: [UInt8])
        case pushPullRequest(id: UInt64)
        case pushPullReply(id: UInt64)
        case pushPullFailed(id: UInt64)
        case action(Int)
    }

    struct PushPull {
        var requester: Int32
        var requesterRun: UInt32
        var target: Int32
        var targetRun: UInt32
        var targetAddress: GossipAddress
        var payload: [UInt8]
        var reply: [UInt8]?
    }

    /// Counts of what one node sent, kept by the shell as a packet capture would.
    public struct NodeStats: Sendable, Equatable {
        public var datagramsSent = 0
        public var datagramBytesSent = 0
        public var pushPullsStarted = 0
        public var pushPullBytesSent = 0
    }

    public let seed: UInt64
    public var defaultLink: LinkProfile
    /// Largest UDP payload bytes queued for a paused node before the kernel drops more: Linux's
    /// default `net.core.rmem_default` of 212,992 bytes.
    public var receiveBufferBytes = 212_992
    /// How long a push-pull waits for its reply before the shell reports it failed: the node
    /// shell's TCP connection timeout.
    public var pushPullTimeoutMicroseconds: UInt64 = 10_000_000
    /// Bytes per microsecond of a TCP stream, for the transfer time of push-pull frames
    /// (125 = 1 Gbit/s).
    public var streamBytesPerMicrosecond: UInt64 = 125
    /// Wall-clock milliseconds at virtual time 0.
    public let wallClockBase: Int64 = 1_700_000_000_000
    /// Hashes every delivery into `traceHash` when on; off saves time in benchmarks.
    public var recordsTrace = true

    /// Called for every `.memberChanged` directive: observing node, member, previous state,
    /// virtual milliseconds.
    public var onMemberChanged: ((Int, Member, MemberState?, UInt64) -> Void)?
    /// Called for every `.presenceChanged` directive: observing node, changes, virtual
    /// milliseconds.
    public var onPresenceChanged: ((Int, [UserPresenceState], UInt64) -> Void)?

    public private(set) var now: UInt64 = 0
    /// FNV-1a hash of every delivery in order: equal for two runs exactly when their traces match
    /// (up to hash collisions).
    public private(set) var traceHash: UInt64 = 0xCBF2_9CE4_8422_2325
    public private(set) var eventsProcessed = 0
    public private(set) var datagramsDropped = 0

    var nodes: [Node] = []
    private var indexByAddress: [GossipAddress: Int32] = [:]
    private var random: SimulationRandom
    private var heap = EventHeap<Event>()
    private var actions: [Int: (Simulation) -> Void] = [:]
    private var nextActionID = 0
    private var pushPulls: [UInt64: PushPull] = [:]
    private var nextPushPullID: UInt64 = 0

    /// Partition group of each node; datagrams between groups in `blockedGroups` are dropped.
    private var groups: [Int] = []
    private var blockedGroups: Set<UInt64> = []
    /// Directed node pairs (from << 32 | to) cut one way.
    private var blockedPairs: Set<UInt64> = []
    private var linkOverrides: [UInt64: LinkProfile] = [:]
    private var nodeOverrides: [Int32: LinkProfile] = [:]

    public init(seed: UInt64, link: LinkProfile = .lan) {
        self.seed = seed
        self.defaultLink = link
        self.random = SimulationRandom(seed: seed)
    }

    public var nodeCount: Int { nodes.count }

    /// Virtual milliseconds, as instances see them.
    public var nowMilliseconds: UInt64 { now / 1_000 }

    public static func address(of index: Int) -> GossipAddress {
        "10.0.\(index / 256).\(index % 256):7946"
    }

    public static func name(of index: Int) -> String {
        "node-\(index + 1)"
    }

    // MARK: - Nodes

    /// Adds a node that joins through `seeds` (node indices) when started. Returns its index.
    @discardableResult
    public func addNode(settings: GossipSettings, seeds: [Int] = []) -> Int {
        let index = nodes.count
        let address = Self.address(of: index)
        nodes.append(Node(
            name: Self.name(of: index), address: address, seeds: seeds.map(Self.address(of:)), settings: settings))
        indexByAddress[address] = Int32(index)
        groups.append(0)
        return index
    }

    /// Adds `count` nodes, each seeded with node 0.
    public func addNodes(_ count: Int, settings: GossipSettings) {
        for _ in 0..<count {
            addNode(settings: settings, seeds: nodes.isEmpty ? [] : [0])
        }
    }

    public func instance(_ node: Int) -> MeshInstance? {
        nodes[node].instance
    }

    public func stats(_ node: Int) -> NodeStats {
        nodes[node].stats
    }

    public func isRunning(_ node: Int) -> Bool {
        nodes[node].isUp
    }

    public func isPaused(_ node: Int) -> Bool {
        nodes[node].isPaused
    }

    public func name(_ node: Int) -> String {
        nodes[node].name
    }

    /// Starts a node's run with a fresh epoch; it joins through its seeds.
    public func start(_ node: Int) {
        precondition(!nodes[node].isUp, "\(nodes[node].name) is running already")
        nodes[node].run += 1
        nodes[node].instance = makeInstance(node, epoch: random.next())
        nodes[node].isUp = true
        let time = meshTime
        deliver(to: node) { $0.onStart(at: time) }
    }

    /// Starts every node at the current instant as one formed cluster: each instance starts from
    /// a shared member directory listing every node alive, as if all joins had completed. For
    /// clusters too large to join one by one in reasonable time.
    public func startAllBootstrapped() {
        var entries: [(member: Member, startedAt: Int64)] = []
        entries.reserveCapacity(nodes.count)
        var epochs: [Epoch] = []
        for node in nodes {
            let epoch = random.next()
            epochs.append(epoch)
            let member = Member(
                name: node.name, epoch: epoch, gossipAddress: node.address, clientAddress: "",
                incarnation: 0, state: .alive)
            entries.append((member, wallClockBase + Int64(nowMilliseconds)))
        }
        let directory = MemberDirectory(members: entries)
        let time = meshTime
        for index in nodes.indices {
            nodes[index].run += 1
            nodes[index].instance = makeInstance(index, epoch: epochs[index])
            nodes[index].isUp = true
            deliver(to: index) { $0.onStart(at: time, members: directory) }
        }
    }

    /// Crashes a node: it stops at once, and everything sent to it is lost.
    public func crash(_ node: Int) {
        nodes[node].instance = nil
        nodes[node].isUp = false
        nodes[node].run += 1
        nodes[node].isPaused = false
        nodes[node].deferred = []
        nodes[node].deferredDatagramBytes = 0
        nodes[node].nextWake = nil
    }

    /// Crashes the node if it runs, and starts a new run (new epoch) at the same address.
    public func restart(_ node: Int) {
        if nodes[node].isUp { crash(node) }
        start(node)
    }

    /// Stops a node from processing anything, as SIGSTOP does. Datagrams queue in its receive
    /// buffer up to `receiveBufferBytes` and are dropped beyond; push-pull connections wait.
    public func pause(_ node: Int) {
        guard nodes[node].isUp else { return }
        nodes[node].isPaused = true
    }

    /// Lets a paused node run again: it handles what queued up, then its overdue timers.
    public func resume(_ node: Int) {
        guard nodes[node].isPaused else { return }
        nodes[node].isPaused = false
        let inputs = nodes[node].deferred
        nodes[node].deferred = []
        nodes[node].deferredDatagramBytes = 0
        for input in inputs {
            switch input {
            case .datagram(let from, let bytes):
                handleDatagram(to: node, from: Int(from), bytes: bytes)
            case .pushPullRequest(let id):
                handlePushPullRequest(id)
            case .pushPullReply(let id):
                handlePushPullReply(id)
            case .pushPullFailed(let id):
                handlePushPullFailed(id)
            }
        }
        let time = meshTime
        deliver(to: node) { $0.onTick(at: time) }
    }

    // MARK: - Clients

    public func openSession(user: UserID, on node: Int) {
        let time = meshTime
        deliver(to: node) { $0.onSessionOpened(user: user, at: time) }
    }

    public func closeSession(user: UserID, on node: Int) {
        let time = meshTime
        deliver(to: node) { $0.onSessionClosed(user: user, at: time) }
    }

    public func leave(_ node: Int) {
        let time = meshTime
        deliver(to: node) { $0.onLeave(at: time) }
    }

    // MARK: - Network conditions

    /// Splits the nodes into `groups`; datagrams and streams between different groups are
    /// dropped both ways. Nodes in no group form one more group.
    public func partition(_ groups: [[Int]]) {
        for index in self.groups.indices {
            self.groups[index] = 0
        }
        for (number, members) in groups.enumerated() {
            for node in members {
                self.groups[node] = number + 1
            }
        }
        blockedGroups = []
        for from in 0...groups.count {
            for to in 0...groups.count where from != to {
                blockedGroups.insert(UInt64(from) << 32 | UInt64(to))
            }
        }
    }

    /// Drops everything sent from any of `from` to any of `to`, one way only.
    public func blockOneWay(from: [Int], to: [Int]) {
        for source in from {
            for destination in to where source != destination {
                blockedPairs.insert(Self.pairKey(source, destination))
            }
        }
    }

    /// Removes every partition and one-way block.
    public func healNetwork() {
        for index in groups.indices {
            groups[index] = 0
        }
        blockedGroups = []
        blockedPairs = []
    }

    /// Sets the profile of the link from `from` to `to` (one way).
    public func setLink(from: Int, to: Int, _ profile: LinkProfile) {
        linkOverrides[Self.pairKey(from, to)] = profile
    }

    /// Sets the profile of every link to and from `node`; per-link profiles take precedence.
    public func setLinks(of node: Int, _ profile: LinkProfile) {
        nodeOverrides[Int32(node)] = profile
    }

    public func isBlocked(from: Int, to: Int) -> Bool {
        if !blockedGroups.isEmpty && blockedGroups.contains(UInt64(groups[from]) << 32 | UInt64(groups[to])) {
            return true
        }
        return !blockedPairs.isEmpty && blockedPairs.contains(Self.pairKey(from, to))
    }

    // MARK: - Running

    /// Runs `action` at virtual millisecond `milliseconds` (or now, if that has passed).
    public func schedule(atMilliseconds milliseconds: UInt64, _ action: @escaping (Simulation) -> Void) {
        nextActionID += 1
        actions[nextActionID] = action
        heap.push(.action(nextActionID), at: max(now, milliseconds * 1_000))
    }

    /// Processes every event up to and including virtual millisecond `milliseconds`.
    public func run(untilMilliseconds milliseconds: UInt64) {
        let limit = milliseconds * 1_000
        while let time = heap.earliestTime, time <= limit {
            let entry = heap.pop()!
            now = entry.time
            eventsProcessed += 1
            process(entry.payload)
        }
        now = max(now, limit)
    }

    public func run(forMilliseconds milliseconds: UInt64) {
        run(untilMilliseconds: nowMilliseconds + milliseconds)
    }

    /// Runs in steps of `stepMilliseconds` until `condition` returns true or `milliseconds` have passed.
    /// Returns the virtual milliseconds it took, or nil when it never did.
    @discardableResult
    public func run(
        atMostMilliseconds milliseconds: UInt64, stepMilliseconds: UInt64 = 10, until condition: (Simulation) -> Bool
    ) -> UInt64? {
        let start = nowMilliseconds
        while nowMilliseconds - start <= milliseconds {
            if condition(self) { return nowMilliseconds - start }
            run(forMilliseconds: stepMilliseconds)
        }
        return nil
    }

    // MARK: - Internals

    private var meshTime: MeshTime {
        let milliseconds = nowMilliseconds
        return MeshTime(monotonic: milliseconds, wall: wallClockBase + Int64(milliseconds))
    }

    private static func pairKey(_ from: Int, _ to: Int) -> UInt64 {
        UInt64(from) << 32 | UInt64(to)
    }

    private func makeInstance(_ node: Int, epoch: Epoch) -> MeshInstance {
        let config = MeshConfig(
            name: nodes[node].name, gossipAddress: nodes[node].address, clientAddress: "",
            seeds: nodes[node].seeds, gossip: nodes[node].settings)
        return MeshInstance(config: config, epoch: epoch, seed: random.next())
    }

    private func link(from: Int, to: Int) -> LinkProfile {
        if !linkOverrides.isEmpty, let profile = linkOverrides[Self.pairKey(from, to)] { return profile }
        if !nodeOverrides.isEmpty {
            if let profile = nodeOverrides[Int32(from)] ?? nodeOverrides[Int32(to)] { return profile }
        }
        return defaultLink
    }

    private func process(_ event: Event) {
        switch event {
        case .tick(let node, let run):
            let index = Int(node)
            guard nodes[index].run == run, nodes[index].nextWake == now else { return }
            nodes[index].nextWake = nil
            guard !nodes[index].isPaused else { return }
            let time = meshTime
            deliver(to: index) { $0.onTick(at: time) }
        case .datagram(let to, let run, let from, let bytes):
            let index = Int(to)
            guard nodes[index].run == run, nodes[index].isUp else { return }
            if recordsTrace { mixTrace(1, UInt64(from), UInt64(to), bytes) }
            if nodes[index].isPaused {
                guard nodes[index].deferredDatagramBytes + bytes.count <= receiveBufferBytes else {
                    datagramsDropped += 1
                    return
                }
                nodes[index].deferredDatagramBytes += bytes.count
                nodes[index].deferred.append(.datagram(from: from, bytes: bytes))
                return
            }
            handleDatagram(to: index, from: Int(from), bytes: bytes)
        case .pushPullRequest(let id):
            guard let pushPull = pushPulls[id] else { return }
            let target = Int(pushPull.target)
            guard nodes[target].run == pushPull.targetRun, nodes[target].isUp else {
                // The target crashed while the request was on its way: connection reset.
                failPushPull(id, after: link(from: target, to: Int(pushPull.requester)).latency.sample(using: &random))
                return
            }
            if nodes[target].isPaused {
                nodes[target].deferred.append(.pushPullRequest(id: id))
                return
            }
            handlePushPullRequest(id)
        case .pushPullReply(let id):
            guard let pushPull = pushPulls[id] else { return }
            let requester = Int(pushPull.requester)
            guard nodes[requester].run == pushPull.requesterRun, nodes[requester].isUp else {
                pushPulls[id] = nil
                return
            }
            if nodes[requester].isPaused {
                nodes[requester].deferred.append(.pushPullReply(id: id))
                return
            }
            handlePushPullReply(id)
        case .pushPullFailed(let id):
            guard let pushPull = pushPulls[id] else { return }
            let requester = Int(pushPull.requester)
            guard nodes[requester].run == pushPull.requesterRun, nodes[requester].isUp else {
                pushPulls[id] = nil
                return
            }
            if nodes[requester].isPaused {
                nodes[requester].deferred.append(.pushPullFailed(id: id))
                return
            }
            handlePushPullFailed(id)
        case .action(let id):
            if let action = actions.removeValue(forKey: id) {
                action(self)
            }
        }
    }

    private func handleDatagram(to node: Int, from: Int, bytes: [UInt8]) {
        let time = meshTime
        let address = nodes[from].address
        deliver(to: node) { $0.onDatagram(bytes, from: address, at: time) }
    }

    private func handlePushPullRequest(_ id: UInt64) {
        guard var pushPull = pushPulls[id] else { return }
        let target = Int(pushPull.target)
        guard nodes[target].run == pushPull.targetRun, nodes[target].isUp else {
            failPushPull(id, after: 0)
            return
        }
        if recordsTrace { mixTrace(2, UInt64(pushPull.requester), UInt64(target), pushPull.payload) }
        let time = meshTime
        let payload = pushPull.payload
        var reply: [UInt8]?
        deliver(to: target) { instance in
            let result = instance.onPushPullRequest(payload, at: time)
            reply = result.reply
            return result.directives
        }
        guard let reply else {
            failPushPull(id, after: 0)
            return
        }
        let requester = Int(pushPull.requester)
        nodes[target].stats.pushPullBytesSent += reply.count
        guard !isBlocked(from: target, to: requester) else { return }  // The requester times out.
        pushPull.reply = reply
        pushPull.payload = []
        pushPulls[id] = pushPull
        let delay = link(from: target, to: requester).latency.sample(using: &random)
            + UInt64(reply.count) / streamBytesPerMicrosecond
        heap.push(.pushPullReply(id: id), at: now + delay)
    }

    private func handlePushPullReply(_ id: UInt64) {
        guard let pushPull = pushPulls.removeValue(forKey: id), let reply = pushPull.reply else { return }
        let requester = Int(pushPull.requester)
        if recordsTrace { mixTrace(3, UInt64(pushPull.target), UInt64(requester), reply) }
        let time = meshTime
        let address = pushPull.targetAddress
        deliver(to: requester) { $0.onPushPullReply(reply, from: address, at: time) }
    }

    private func handlePushPullFailed(_ id: UInt64) {
        guard let pushPull = pushPulls.removeValue(forKey: id) else { return }
        let requester = Int(pushPull.requester)
        if recordsTrace { mixTrace(4, UInt64(pushPull.target), UInt64(requester), []) }
        let time = meshTime
        let address = pushPull.targetAddress
        deliver(to: requester) { $0.onPushPullFailed(to: address, at: time) }
    }

    private func failPushPull(_ id: UInt64, after delay: UInt64) {
        heap.push(.pushPullFailed(id: id), at: now + delay)
    }

    /// Runs one event on a node's instance and executes the directives it returns.
    private func deliver(to node: Int, _ event: (inout MeshInstance) -> [Directive]) {
        guard nodes[node].isUp, !nodes[node].isPaused else { return }
        let directives = event(&nodes[node].instance!)
        for directive in directives {
            execute(directive, from: node)
        }
    }

    private func execute(_ directive: Directive, from node: Int) {
        switch directive {
        case .send(let bytes, let address):
            nodes[node].stats.datagramsSent += 1
            nodes[node].stats.datagramBytesSent += bytes.count
            guard let target = indexByAddress[address] else { return }
            let to = Int(target)
            guard !isBlocked(from: node, to: to) else {
                datagramsDropped += 1
                return
            }
            let profile = link(from: node, to: to)
            if random.chance(profile.lossRate) {
                datagramsDropped += 1
                return
            }
            var delay = profile.latency.sample(using: &random)
            if random.chance(profile.reorderRate) {
                delay += profile.reorderDelayMicroseconds
            }
            let run = nodes[to].run
            heap.push(.datagram(to: target, run: run, from: Int32(node), bytes: bytes), at: now + delay)
            if random.chance(profile.duplicateRate) {
                let extra = profile.latency.sample(using: &random)
                heap.push(.datagram(to: target, run: run, from: Int32(node), bytes: bytes), at: now + delay + extra)
            }
        case .pushPull(let payload, let address):
            nodes[node].stats.pushPullsStarted += 1
            nodes[node].stats.pushPullBytesSent += payload.count
            nextPushPullID += 1
            let id = nextPushPullID
            guard let target = indexByAddress[address] else {
                pushPulls[id] = PushPull(
                    requester: Int32(node), requesterRun: nodes[node].run, target: -1, targetRun: 0,
                    targetAddress: address, payload: [], reply: nil)
                failPushPull(id, after: pushPullTimeoutMicroseconds)
                return
            }
            let to = Int(target)
            pushPulls[id] = PushPull(
                requester: Int32(node), requesterRun: nodes[node].run, target: target, targetRun: nodes[to].run,
                targetAddress: address, payload: payload, reply: nil)
            let profile = link(from: node, to: to)
            let oneWay = profile.latency.sample(using: &random)
            if isBlocked(from: node, to: to) || isBlocked(from: to, to: node) {
                // The handshake never completes: the shell's timeout reports the failure.
                failPushPull(id, after: pushPullTimeoutMicroseconds)
            } else if !nodes[to].isUp {
                // Nothing listens at the address: the connection is refused after a round trip.
                failPushPull(id, after: 2 * oneWay)
            } else {
                // A TCP handshake, then the frame.
                let delay = 3 * oneWay + UInt64(payload.count) / streamBytesPerMicrosecond
                heap.push(.pushPullRequest(id: id), at: now + delay)
                heap.push(.pushPullFailed(id: id), at: now + pushPullTimeoutMicroseconds)
            }
        case .wakeUp(let milliseconds):
            let time = max(now, milliseconds * 1_000)
            if let pending = nodes[node].nextWake, pending <= time { return }
            nodes[node].nextWake = time
            heap.push(.tick(node: Int32(node), run: nodes[node].run), at: time)
        case .presenceChanged(let changes):
            onPresenceChanged?(node, changes, nowMilliseconds)
        case .memberChanged(let member, let previous):
            onMemberChanged?(node, member, previous, nowMilliseconds)
        case .nameConflict:
            // Counted in the instance's `nameConflicts`; simulated nodes have unique names.
            break
        }
    }

    private func mixTrace(_ kind: UInt64, _ from: UInt64, _ to: UInt64, _ bytes: [UInt8]) {
        var hash = traceHash
        for value in [now, kind, from, to, UInt64(bytes.count)] {
            hash = (hash ^ value) &* 0x100_0000_01B3
        }
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3
        }
        traceHash = hash
    }
}
