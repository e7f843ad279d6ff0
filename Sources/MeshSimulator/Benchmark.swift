import MeshCore

/// The membership benchmark: dissemination, traffic and crash detection in one 60-virtual-second
/// run per cluster size, plus false positives over long runs under loss.
public enum MembershipBenchmark {
    public struct RunResult: Sendable {
        public var nodes: Int
        /// Virtual milliseconds from the session open until the delta was on 99.99% and on 100%
        /// of the other nodes.
        public var deltaMilliseconds99_99: UInt64?
        public var deltaMilliseconds100: UInt64?
        public var gossipIntervalMs: UInt64
        /// Datagrams and bytes per node per second over the whole run, the delta's and the
        /// crash's gossip included.
        public var datagramsPerNodePerSecond: Double
        public var bytesPerNodePerSecond: Double
        public var pushPullsPerNodePerSecond: Double
        /// Virtual second from which the steady figures are counted, `steadyFromSeconds`.
        public var steadyFromSeconds: UInt64
        /// Datagrams and bytes per running node per second from `steadyFromSeconds` to the end,
        /// when no scripted event is in flight: SWIM's constant load. Nil when the run ends
        /// before `steadyFromSeconds`.
        public var steadyDatagramsPerNodePerSecond: Double?
        public var steadyBytesPerNodePerSecond: Double?
        /// Whether, at `steadyFromSeconds`, no running node had gossip queued or a member
        /// suspected, so that no event traffic falls into the steady window.
        public var quietAtSteadyStart: Bool
        /// Per observer, virtual milliseconds from the crash until it marked the node dead.
        public var detectionMilliseconds: [UInt64]
        /// Observers that never marked the crashed node dead within the run.
        public var undetected: Int
        /// Death verdicts about nodes that were running.
        public var falseDeaths: Int
        public var virtualSeconds: UInt64
        public var wallSeconds: Double
        public var eventsProcessed: Int
    }

    /// Start of the steady window: the crash at 20 s is detected everywhere within about 8 s at
    /// 10,000 nodes, and its gossip drains within a few rounds after that.
    public static let steadyFromSeconds: UInt64 = 40

    /// One run: `nodes` nodes start bootstrapped; at 5 s node 0 opens a session; at 20 s the last
    /// node crashes; the run ends at `virtualSeconds`. `clock` returns wall seconds.
    public static func run(
        nodes: Int, seed: UInt64, settings: GossipSettings = .lan, virtualSeconds: UInt64 = 60,
        clock: () -> Double
    ) -> RunResult {
        let wallStart = clock()
        let simulation = Simulation(seed: seed)
        simulation.recordsTrace = false
        simulation.addNodes(nodes, settings: settings)
        simulation.startAllBootstrapped()

        let deltaAt: UInt64 = 5_000
        let crashAt: UInt64 = 20_000
        let victim = nodes - 1
        let victimName = simulation.name(victim)
        var reached = 0
        var reached99_99: UInt64?
        var reached100: UInt64?
        // ceil(0.9999 · others), counted with integers so 10,000 nodes need 9,999 of 9,999.
        let others = nodes - 1
        let target99_99 = (others * 9_999 + 9_999) / 10_000
        simulation.onPresenceChanged = { observer, changes, time in
            guard observer != 0 else { return }
            for change in changes where change.userID == "bench-user" && change.isOnline {
                reached += 1
                if reached == target99_99 && reached99_99 == nil { reached99_99 = time - deltaAt }
                if reached == others { reached100 = time - deltaAt }
            }
        }
        var detections: [UInt64] = []
        var falseDeaths = 0
        // (observer, member) pairs in the suspect state, for the quiet check of the steady window.
        var suspectedPairs = 0
        simulation.onMemberChanged = { _, member, previous, time in
            if member.state == .suspect { suspectedPairs += 1 }
            if previous == .suspect { suspectedPairs -= 1 }
            guard member.state == .dead else { return }
            if member.name == victimName && time >= crashAt {
                detections.append(time - crashAt)
            } else {
                falseDeaths += 1
            }
        }
        simulation.schedule(atMilliseconds: deltaAt) { $0.openSession(user: "bench-user", on: 0) }
        simulation.schedule(atMilliseconds: crashAt) { $0.crash(victim) }

        // Counters at the start of the steady window, taken over the nodes still running.
        let steadyFrom = steadyFromSeconds * 1_000
        var steadyStartDatagrams = 0
        var steadyStartBytes = 0
        var quietAtSteadyStart = false
        if virtualSeconds * 1_000 > steadyFrom {
            simulation.schedule(atMilliseconds: steadyFrom) { simulation in
                quietAtSteadyStart = suspectedPairs == 0
                for node in 0..<nodes where simulation.isRunning(node) {
                    let stats = simulation.stats(node)
                    steadyStartDatagrams += stats.datagramsSent
                    steadyStartBytes += stats.datagramBytesSent
                    if simulation.instance(node)?.broadcastQueueDepth ?? 0 > 0 {
                        quietAtSteadyStart = false
                    }
                }
            }
        }
        simulation.run(untilMilliseconds: virtualSeconds * 1_000)

        var datagrams = 0
        var bytes = 0
        var pushPulls = 0
        var steadyEndDatagrams = 0
        var steadyEndBytes = 0
        var running = 0
        for node in 0..<nodes {
            let stats = simulation.stats(node)
            datagrams += stats.datagramsSent
            bytes += stats.datagramBytesSent
            pushPulls += stats.pushPullsStarted
            if simulation.isRunning(node) {
                running += 1
                steadyEndDatagrams += stats.datagramsSent
                steadyEndBytes += stats.datagramBytesSent
            }
        }
        let nodeSeconds = Double(nodes) * Double(virtualSeconds)
        var steadyDatagrams: Double?
        var steadyBytes: Double?
        if virtualSeconds * 1_000 > steadyFrom {
            let steadyNodeSeconds = Double(running) * Double(virtualSeconds - steadyFromSeconds)
            steadyDatagrams = Double(steadyEndDatagrams - steadyStartDatagrams) / steadyNodeSeconds
            steadyBytes = Double(steadyEndBytes - steadyStartBytes) / steadyNodeSeconds
        }
        return RunResult(
            nodes: nodes, deltaMilliseconds99_99: reached99_99, deltaMilliseconds100: reached100,
            gossipIntervalMs: settings.gossipIntervalMs,
            datagramsPerNodePerSecond: Double(datagrams) / nodeSeconds, bytesPerNodePerSecond: Double(bytes) / nodeSeconds,
            pushPullsPerNodePerSecond: Double(pushPulls) / nodeSeconds, steadyFromSeconds: steadyFromSeconds,
            steadyDatagramsPerNodePerSecond: steadyDatagrams, steadyBytesPerNodePerSecond: steadyBytes,
            quietAtSteadyStart: quietAtSteadyStart,
            detectionMilliseconds: detections.sorted(), undetected: max(0, nodes - 1 - detections.count),
            falseDeaths: falseDeaths, virtualSeconds: virtualSeconds, wallSeconds: clock() - wallStart,
            eventsProcessed: simulation.eventsProcessed)
    }

    public struct FalsePositiveResult: Sendable {
        public var nodes: Int
        public var lossRate: Double
        public var virtualSeconds: UInt64
        /// Death verdicts about running nodes, over all observers.
        public var deathVerdicts: Int
        /// Distinct nodes that some observer declared dead.
        public var nodesDeclaredDead: Int
        public var suspicions: Int
        /// UDP datagrams and their bytes sent per node per virtual second, over the whole run.
        public var datagramsPerNodeSecond: Double
        public var bytesPerNodeSecond: Double
        public var wallSeconds: Double
    }

    /// `nodes` healthy nodes under `lossRate` loss on every link for `virtualSeconds`.
    public static func falsePositives(
        nodes: Int, lossRate: Double, seed: UInt64, settings: GossipSettings = .lan, virtualSeconds: UInt64 = 3_600,
        clock: () -> Double, progress: (FalsePositiveResult) -> Void = { _ in }
    ) -> FalsePositiveResult {
        let wallStart = clock()
        let simulation = Simulation(seed: seed, link: LinkProfile.lan.withLoss(lossRate))
        simulation.recordsTrace = false
        simulation.addNodes(nodes, settings: settings)
        simulation.startAllBootstrapped()
        var verdicts = 0
        var declared: Set<String> = []
        var suspicions = 0
        simulation.onMemberChanged = { _, member, _, _ in
            switch member.state {
            case .dead:
                verdicts += 1
                declared.insert(member.name)
            case .suspect:
                suspicions += 1
            default:
                break
            }
        }
        func result(after seconds: UInt64) -> FalsePositiveResult {
            var datagrams = 0
            var bytes = 0
            for node in 0..<nodes {
                datagrams += simulation.stats(node).datagramsSent
                bytes += simulation.stats(node).datagramBytesSent
            }
            let nodeSeconds = Double(nodes) * Double(max(1, seconds))
            return FalsePositiveResult(
                nodes: nodes, lossRate: lossRate, virtualSeconds: seconds, deathVerdicts: verdicts,
                nodesDeclaredDead: declared.count, suspicions: suspicions,
                datagramsPerNodeSecond: Double(datagrams) / nodeSeconds, bytesPerNodeSecond: Double(bytes) / nodeSeconds,
                wallSeconds: clock() - wallStart)
        }
        // The run goes in steps of five virtual minutes, so a long run reports how far it got.
        let step: UInt64 = 300
        var reached: UInt64 = 0
        while reached < virtualSeconds {
            reached = min(virtualSeconds, reached + step)
            simulation.run(untilMilliseconds: reached * 1_000)
            if reached < virtualSeconds { progress(result(after: reached)) }
        }
        return result(after: virtualSeconds)
    }

    /// Percentile `p` (0 to 100) of sorted `values`, nearest rank.
    public static func percentile(_ values: [UInt64], _ p: Double) -> UInt64? {
        guard !values.isEmpty else { return nil }
        let rank = Int((p / 100 * Double(values.count)).rounded(.up))
        return values[min(values.count - 1, max(0, rank - 1))]
    }
}
