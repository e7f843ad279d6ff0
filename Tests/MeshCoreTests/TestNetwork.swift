@testable import MeshCore

/// An in-process network of instances with virtual time. Datagrams arrive instantly in send
/// order, push-pulls get their reply synchronously, and nothing sleeps.
final class TestNetwork {
    struct Datagram {
        var bytes: [UInt8]
        var from: GossipAddress
        var to: GossipAddress
    }

    private enum Delivery {
        case datagram(Datagram)
        case pushPull(payload: [UInt8], from: GossipAddress, to: GossipAddress)
    }

    struct MemberEvent {
        var at: UInt64
        var member: Member
        var previous: MemberState?
    }

    struct SentMessage {
        var message: GossipMessage
        var from: GossipAddress
        var to: GossipAddress
        /// Virtual milliseconds at delivery; the test network delivers at once.
        var sentAt: UInt64
    }

    let settings: GossipSettings
    private(set) var nodes: [GossipAddress: MeshInstance] = [:]
    private(set) var wakeUps: [GossipAddress: UInt64] = [:]
    private var pending: [Delivery] = []
    private var nextEpoch: Epoch = 1_000
    private var nextSeed: UInt64 = 1

    /// Monotonic milliseconds; the wall clock runs at a fixed offset from it.
    private(set) var now: UInt64 = 10_000
    let wallOffset: Int64 = 1_700_000_000_000

    /// Crashed nodes: they neither receive, send nor tick.
    var down: Set<GossipAddress> = []
    /// Cut links, both directions, as sorted address pairs.
    private var cutLinks: Set<[GossipAddress]> = []
    /// Drops a datagram when it returns true, after the other checks.
    var dropDatagram: ((Datagram) -> Bool)?

    private(set) var presenceEvents: [GossipAddress: [UserPresenceState]] = [:]
    private(set) var presenceBatches: [GossipAddress: [[UserPresenceState]]] = [:]
    private(set) var memberEvents: [GossipAddress: [MemberEvent]] = [:]
    private(set) var sentMessages: [SentMessage] = []
    private(set) var datagramsDelivered = 0
    private(set) var largestDatagram = 0

    init(settings: GossipSettings = .local) {
        self.settings = settings
    }

    var time: MeshTime { MeshTime(monotonic: now, wall: Int64(now) + wallOffset) }

    func wall(at monotonic: UInt64) -> Int64 { Int64(monotonic) + wallOffset }

    func node(_ address: GossipAddress) -> MeshInstance { nodes[address]! }

    static func address(_ index: Int) -> GossipAddress { "127.0.0.1:\(7200 + index)" }

    /// Adds a node and returns its address; it does nothing until `start`.
    @discardableResult
    func addNode(
        _ name: String, address: GossipAddress, seeds: [GossipAddress], settings override: GossipSettings? = nil
    ) -> GossipAddress {
        nextEpoch += 7
        nextSeed += 1
        let config = MeshConfig(
            name: name, gossipAddress: address, clientAddress: "127.0.0.1:\(address.split(separator: ":").last!)1",
            seeds: seeds, gossip: override ?? settings)
        nodes[address] = MeshInstance(config: config, epoch: nextEpoch, seed: nextSeed)
        return address
    }

    /// Builds `count` nodes named node-1... with node-1 as everyone's seed, starts them and lets
    /// them converge for `settle` milliseconds.
    static func cluster(_ count: Int, settings: GossipSettings = .local, settle: UInt64 = 2_000) -> TestNetwork {
        let network = TestNetwork(settings: settings)
        for index in 1...count {
            let seeds = index == 1 ? [] : [address(1)]
            network.addNode("node-\(index)", address: address(index), seeds: seeds)
        }
        for index in 1...count {
            network.start(address(index))
        }
        network.run(for: settle)
        return network
    }

    func start(_ address: GossipAddress) {
        apply(address, nodes[address]!.onStart(at: time))
        deliverAll()
    }

    /// Replaces the node at `address` with a new run (new epoch) and starts it.
    func restart(_ address: GossipAddress) {
        let old = nodes[address]!
        down.remove(address)
        addNode(old.config.name, address: address, seeds: old.config.seeds)
        start(address)
    }

    func crash(_ address: GossipAddress) {
        down.insert(address)
        wakeUps[address] = nil
    }

    func cut(_ a: GossipAddress, _ b: GossipAddress) {
        cutLinks.insert([a, b].sorted())
    }

    func heal(_ a: GossipAddress, _ b: GossipAddress) {
        cutLinks.remove([a, b].sorted())
    }

    func isCut(_ a: GossipAddress, _ b: GossipAddress) -> Bool {
        cutLinks.contains([a, b].sorted())
    }

    // MARK: - Events into nodes

    @discardableResult
    func event(_ address: GossipAddress, _ body: (inout MeshInstance, MeshTime) -> [Directive]) -> [Directive] {
        var instance = nodes[address]!
        let directives = body(&instance, time)
        nodes[address] = instance
        apply(address, directives)
        deliverAll()
        return directives
    }

    @discardableResult
    func openSession(_ user: UserID, on address: GossipAddress) -> [Directive] {
        event(address) { $0.onSessionOpened(user: user, at: $1) }
    }

    @discardableResult
    func closeSession(_ user: UserID, on address: GossipAddress) -> [Directive] {
        event(address) { $0.onSessionClosed(user: user, at: $1) }
    }

    @discardableResult
    func setStatus(_ user: UserID, _ status: CustomStatusValue, on address: GossipAddress) -> [Directive] {
        event(address) { $0.onStatusSet(user: user, status: status, at: $1) }
    }

    @discardableResult
    func leave(_ address: GossipAddress) -> [Directive] {
        event(address) { $0.onLeave(at: $1) }
    }

    /// Hands `messages` to `address` as one datagram from `from`, without the network.
    @discardableResult
    func inject(_ messages: [GossipMessage], to address: GossipAddress, from: GossipAddress) -> [Directive] {
        event(address) { $0.onDatagram(GossipCodec.encodeDatagram(messages), from: from, at: $1) }
    }

    // MARK: - Time

    func run(for milliseconds: UInt64) {
        run(until: now + milliseconds)
    }

    /// Advances virtual time to `deadline`, firing every wake-up on the way in time order.
    func run(until deadline: UInt64) {
        deliverAll()
        while true {
            let due = wakeUps.filter { !down.contains($0.key) }.values.min()
            guard let next = due, next <= deadline else { break }
            now = max(now, next)
            for address in wakeUps.keys.sorted() where wakeUps[address]! <= now && !down.contains(address) {
                wakeUps[address] = nil
                var instance = nodes[address]!
                let directives = instance.onTick(at: time)
                nodes[address] = instance
                apply(address, directives)
            }
            deliverAll()
        }
        now = max(now, deadline)
    }

    /// Runs until `condition` holds, checking after every step, or fails after `limit` ms.
    @discardableResult
    func run(atMost limit: UInt64, until condition: (TestNetwork) -> Bool) -> Bool {
        let deadline = now + limit
        while now < deadline {
            if condition(self) { return true }
            run(until: min(deadline, now + 10))
        }
        return condition(self)
    }

    // MARK: - Delivery

    private func apply(_ address: GossipAddress, _ directives: [Directive]) {
        for directive in directives {
            switch directive {
            case .send(let bytes, let to):
                pending.append(.datagram(Datagram(bytes: bytes, from: address, to: to)))
            case .pushPull(let payload, let to):
                pending.append(.pushPull(payload: payload, from: address, to: to))
            case .wakeUp(let at):
                wakeUps[address] = at
            case .presenceChanged(let changes):
                presenceEvents[address, default: []].append(contentsOf: changes)
                presenceBatches[address, default: []].append(changes)
            case .memberChanged(let member, let previous):
                memberEvents[address, default: []].append(MemberEvent(at: now, member: member, previous: previous))
            case .nameConflict:
                break
            }
        }
    }

    private func deliverAll() {
        while !pending.isEmpty {
            let delivery = pending.removeFirst()
            switch delivery {
            case .datagram(let datagram):
                deliver(datagram)
            case .pushPull(let payload, let from, let to):
                exchange(payload, from: from, to: to)
            }
        }
    }

    private func deliver(_ datagram: Datagram) {
        largestDatagram = max(largestDatagram, datagram.bytes.count)
        if let messages = try? GossipCodec.decodeDatagram(datagram.bytes) {
            for message in messages {
                sentMessages.append(SentMessage(message: message, from: datagram.from, to: datagram.to, sentAt: now))
            }
        }
        guard !down.contains(datagram.from), !down.contains(datagram.to), nodes[datagram.to] != nil,
            !isCut(datagram.from, datagram.to), dropDatagram?(datagram) != true
        else { return }
        datagramsDelivered += 1
        var instance = nodes[datagram.to]!
        let directives = instance.onDatagram(datagram.bytes, from: datagram.from, at: time)
        nodes[datagram.to] = instance
        apply(datagram.to, directives)
    }

    private func exchange(_ payload: [UInt8], from: GossipAddress, to: GossipAddress) {
        guard !down.contains(from) else { return }
        var requester = nodes[from]!
        guard !down.contains(to), var responder = nodes[to], !isCut(from, to) else {
            let directives = requester.onPushPullFailed(to: to, at: time)
            nodes[from] = requester
            apply(from, directives)
            return
        }
        let (reply, responderDirectives) = responder.onPushPullRequest(payload, at: time)
        nodes[to] = responder
        apply(to, responderDirectives)
        let directives: [Directive]
        if let reply {
            directives = requester.onPushPullReply(reply, from: to, at: time)
        } else {
            directives = requester.onPushPullFailed(to: to, at: time)
        }
        nodes[from] = requester
        apply(from, directives)
    }

    // MARK: - Queries

    func state(of name: String, on address: GossipAddress) -> MemberState? {
        nodes[address]!.members.first { $0.name == name }?.state
    }

    func member(_ name: String, on address: GossipAddress) -> Member? {
        nodes[address]!.members.first { $0.name == name }
    }

    func isOnline(_ user: UserID, on address: GossipAddress) -> Bool {
        nodes[address]!.presence(of: user).isOnline
    }

    func presenceEvents(of user: UserID, on address: GossipAddress) -> [UserPresenceState] {
        (presenceEvents[address] ?? []).filter { $0.userID == user }
    }

    func memberEvents(about name: String, on address: GossipAddress) -> [MemberEvent] {
        (memberEvents[address] ?? []).filter { $0.member.name == name }
    }

    func clearEvents() {
        presenceEvents = [:]
        presenceBatches = [:]
        memberEvents = [:]
        sentMessages = []
    }

    /// True when every running node has every running node alive in its member table.
    var isConverged: Bool {
        let running = nodes.keys.filter { !down.contains($0) }
        let names = Set(running.map { nodes[$0]!.config.name })
        for address in running {
            let alive = Set(nodes[address]!.members.filter { $0.state == .alive }.map(\.name))
            if !names.isSubset(of: alive) { return false }
        }
        return true
    }
}
