import MeshCore

// Named failure scenarios. Each builds a simulation, scripts the failure, and returns what the
// nodes observed, so that tests assert on the result and `mesh-sim scenario` prints it.

/// Membership verdicts and presence views collected from every node of a simulation.
public final class Observations {
    /// Every (observer, member name) verdict of dead, with its virtual milliseconds.
    public private(set) var deaths: [(observer: Int, name: String, at: UInt64)] = []
    /// Every suspicion raised or learned, by observer and member name.
    public private(set) var suspicions = 0

    init(_ simulation: Simulation) {
        simulation.onMemberChanged = { [unowned self] observer, member, _, time in
            switch member.state {
            case .dead: self.deaths.append((observer, member.name, time))
            case .suspect: self.suspicions += 1
            default: break
            }
        }
    }

    /// Verdicts of dead about `name`.
    public func deaths(of name: String) -> [(observer: Int, name: String, at: UInt64)] {
        deaths.filter { $0.name == name }
    }
}

extension Simulation {
    /// Starts `count` nodes that join through node 0, one every 10 ms, and runs until every node
    /// lists every other alive (at most 30 virtual seconds). Returns whether they converged.
    @discardableResult
    public func formCluster(_ count: Int, settings: GossipSettings) -> Bool {
        addNodes(count, settings: settings)
        for index in 0..<count {
            schedule(atMilliseconds: nowMilliseconds + UInt64(index) * 10) { $0.start(index) }
        }
        run(forMilliseconds: UInt64(count) * 10)
        return run(atMostMilliseconds: 30_000, stepMilliseconds: 50) { $0.allSeeEachOtherAlive() } != nil
    }

    /// Checks that every running node lists every other running node alive, and no other
    /// member alive or suspect.
    public func allSeeEachOtherAlive() -> Bool {
        let running = (0..<nodeCount).filter { isRunning($0) }
        for observer in running {
            guard let instance = instance(observer), instance.liveMemberCount == running.count else { return false }
            for other in running {
                guard let member = instance.member(named: name(other)),
                    member.state == .alive, member.epoch == self.instance(other)!.epoch
                else { return false }
            }
        }
        return true
    }

    /// Checks that every running node has exactly `online` as its online users.
    public func allSeeOnline(_ online: Set<UserID>) -> Bool {
        (0..<nodeCount).allSatisfy { node in
            guard let instance = instance(node) else { return true }
            return instance.onlineUsers.count == online.count && Set(instance.onlineUsers) == online
        }
    }

    /// Alive members per gossip address on `node`, for the one-member-per-address rule.
    public func aliveMembersPerAddress(on node: Int) -> [GossipAddress: Int] {
        var counts: [GossipAddress: Int] = [:]
        for member in instance(node)?.members ?? [] where member.state == .alive {
            counts[member.gossipAddress, default: 0] += 1
        }
        return counts
    }
}

/// Returns the minimum suspicion timeout for `members` live members, in milliseconds: how long
/// a fully confirmed suspicion waits before its verdict.
public func minimumSuspicionTimeout(_ settings: GossipSettings, members: Int) -> UInt64 {
    settings.suspicionTimeouts(memberCount: members).min
}

public enum Scenarios {
    public struct PartitionResult: Sendable {
        /// Whether each side declared the whole other side dead during the partition.
        public var sidesDeclaredEachOtherDead: Bool
        /// Whether, during the partition, each side saw only its own side's users online.
        public var usersOfflineAcrossPartition: Bool
        /// Virtual milliseconds from healing until one cluster with every user online everywhere.
        public var healMilliseconds: UInt64?
    }

    /// Five nodes, one user each; partition 2|3 for `partitionMilliseconds`, then heal.
    public static func partition(seed: UInt64, settings: GossipSettings = .local, partitionMilliseconds: UInt64 = 15_000)
        -> PartitionResult
    {
        let simulation = Simulation(seed: seed)
        simulation.formCluster(5, settings: settings)
        let users = Set((0..<5).map { "user-\($0 + 1)" })
        for node in 0..<5 {
            simulation.openSession(user: "user-\(node + 1)", on: node)
        }
        simulation.run(forMilliseconds: 2_000)
        let left = [0, 1]
        let right = [2, 3, 4]
        simulation.partition([left, right])
        simulation.run(forMilliseconds: partitionMilliseconds)

        var declared = true
        var offline = true
        for (side, other) in [(left, right), (right, left)] {
            for observer in side {
                let instance = simulation.instance(observer)!
                for node in other where instance.member(named: simulation.name(node))?.state != .dead {
                    declared = false
                }
                let expected = Set(side.map { "user-\($0 + 1)" })
                if Set(instance.onlineUsers) != expected { offline = false }
            }
        }

        simulation.healNetwork()
        let healed = simulation.run(atMostMilliseconds: 30_000, stepMilliseconds: 10) {
            $0.allSeeEachOtherAlive() && $0.allSeeOnline(users)
        }
        return PartitionResult(
            sidesDeclaredEachOtherDead: declared, usersOfflineAcrossPartition: offline, healMilliseconds: healed)
    }

    public struct LossResult: Sendable {
        public var deathVerdicts: Int
        public var suspicions: Int
        public var converged: Bool
    }

    /// `nodes` nodes under `lossRate` datagram loss on every link for `milliseconds`.
    public static func loss(
        seed: UInt64, nodes: Int = 50, lossRate: Double = 0.1, milliseconds: UInt64 = 60_000,
        settings: GossipSettings = .local
    ) -> LossResult {
        let simulation = Simulation(seed: seed)
        let converged = simulation.formCluster(nodes, settings: settings)
        simulation.defaultLink = simulation.defaultLink.withLoss(lossRate)
        let observations = Observations(simulation)
        simulation.run(forMilliseconds: milliseconds)
        return LossResult(
            deathVerdicts: observations.deaths.count, suspicions: observations.suspicions, converged: converged)
    }

    public struct PauseResult: Sendable {
        public var pauseMilliseconds: UInt64
        /// Verdicts of dead about the paused node, on any observer.
        public var deathVerdicts: Int
        /// Whether its user was offline on every other node when it woke up.
        public var userOfflineWhilePaused: Bool
        /// Virtual milliseconds from waking until every node lists it alive with its user online.
        public var recoveryMilliseconds: UInt64?
        public var refutations: UInt64
    }

    /// `nodes` nodes; the last one, holding user "paused-user", is paused for
    /// `factor` × the minimum suspicion timeout, then resumed.
    public static func pause(seed: UInt64, factor: Double, nodes: Int = 8, settings: GossipSettings = .local)
        -> PauseResult
    {
        let simulation = Simulation(seed: seed)
        simulation.formCluster(nodes, settings: settings)
        let victim = nodes - 1
        simulation.openSession(user: "paused-user", on: victim)
        simulation.run(forMilliseconds: 2_000)
        let observations = Observations(simulation)
        let pauseMilliseconds = UInt64(Double(minimumSuspicionTimeout(settings, members: nodes)) * factor)
        simulation.pause(victim)
        simulation.run(forMilliseconds: pauseMilliseconds)
        let offline = (0..<victim).allSatisfy { !simulation.instance($0)!.onlineUsers.contains("paused-user") }
        simulation.resume(victim)
        let recovered = simulation.run(atMostMilliseconds: 30_000, stepMilliseconds: 10) {
            $0.allSeeEachOtherAlive() && $0.allSeeOnline(["paused-user"])
        }
        return PauseResult(
            pauseMilliseconds: pauseMilliseconds, deathVerdicts: observations.deaths(of: simulation.name(victim)).count,
            userOfflineWhilePaused: offline, recoveryMilliseconds: recovered,
            refutations: simulation.instance(victim)!.counters.refutations)
    }

    public struct RestartResult: Sendable {
        /// Times any node reported the old run's user online again after reporting it offline
        /// following the restart.
        public var resurrections: Int
        /// Nodes that still showed the old run's user online at the end.
        public var stillOnlineAtEnd: Int
        /// Most alive members at one address on any node, sampled every 10 ms.
        public var maxAliveAtOneAddress: Int
        public var converged: Bool
    }

    /// Six nodes over a reordering, duplicating link; node 2 has a session of "old-user", restarts, and is
    /// watched for 20 virtual seconds.
    public static func restart(seed: UInt64, settings: GossipSettings = .local) -> RestartResult {
        let simulation = Simulation(
            seed: seed,
            link: LinkProfile(
                latency: .shiftedExponential(minMicroseconds: 100, meanExtraMicroseconds: 400), duplicateRate: 0.05,
                reorderRate: 0.1, reorderDelayMicroseconds: 50_000))
        simulation.formCluster(6, settings: settings)
        simulation.openSession(user: "old-user", on: 2)
        simulation.run(forMilliseconds: 2_000)
        var wentOffline: Set<Int> = []
        var resurrections = 0
        simulation.onPresenceChanged = { observer, changes, _ in
            for change in changes where change.userID == "old-user" {
                if !change.isOnline {
                    wentOffline.insert(observer)
                } else if wentOffline.contains(observer) {
                    resurrections += 1
                }
            }
        }

        simulation.restart(2)
        // The restarted run starts with no sessions, so its own view of the user is offline.
        wentOffline.insert(2)
        var maxAlive = 0
        for _ in 0..<2_000 {
            simulation.run(forMilliseconds: 10)
            for node in 0..<6 {
                maxAlive = max(maxAlive, simulation.aliveMembersPerAddress(on: node).values.max() ?? 0)
            }
        }
        let stillOnline = (0..<6).filter { simulation.instance($0)!.onlineUsers.contains("old-user") }.count
        return RestartResult(
            resurrections: resurrections, stillOnlineAtEnd: stillOnline, maxAliveAtOneAddress: maxAlive,
            converged: simulation.allSeeEachOtherAlive())
    }

    public struct BurstResult: Sendable {
        /// Virtual milliseconds until every node had every user online.
        public var convergedMilliseconds: UInt64?
        /// Minimum count of online users on any node at the end.
        public var fewestOnline: Int
        public var datagramsSent: Int
    }

    /// `nodes` nodes; node 0 opens sessions for `changes` users at one instant.
    public static func burst(
        seed: UInt64, nodes: Int = 20, changes: Int = 5_000, lossRate: Double = 0, settings: GossipSettings = .local
    ) -> BurstResult {
        let simulation = Simulation(seed: seed)
        simulation.formCluster(nodes, settings: settings)
        simulation.defaultLink = simulation.defaultLink.withLoss(lossRate)
        for user in 0..<changes {
            simulation.openSession(user: "burst-\(user)", on: 0)
        }
        let converged = simulation.run(atMostMilliseconds: 120_000, stepMilliseconds: 100) { simulation in
            (0..<nodes).allSatisfy { simulation.instance($0)!.onlineUsers.count == changes }
        }
        let fewest = (0..<nodes).map { simulation.instance($0)!.onlineUsers.count }.min() ?? 0
        let sent = (0..<nodes).reduce(0) { $0 + simulation.stats($1).datagramsSent }
        return BurstResult(convergedMilliseconds: converged, fewestOnline: fewest, datagramsSent: sent)
    }
}
