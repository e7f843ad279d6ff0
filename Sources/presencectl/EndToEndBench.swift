// The measurements of `presencectl bench e2e`. Each node has one subscriber, an observer session
// that subscribes to every user a sample creates. Users are fresh for every sample, so that no
// sample sees events left over from an earlier one.

import Foundation
import PresenceProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class EndToEndBench {
    /// Nodes of the bench cluster. Figure a opens sessions on node-1 and measures at node-3.
    static let nodeCount = 3

    private let cluster: ScenarioCluster
    private let eventTimeout: Duration
    /// Subscriber session of each running node, by node name.
    private var subscribers: [String: RecordingSession] = [:]
    /// User sessions a sample opened and has not closed yet.
    private var openDevices: [RecordingSession] = []
    /// Random prefix of the user IDs of this run.
    private let runId = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    /// Findings outside the figures, such as a node that did not exit with status 0 after SIGTERM.
    private(set) var anomalies: [String] = []

    init(cluster: ScenarioCluster, eventTimeout: Duration) {
        self.cluster = cluster
        self.eventTimeout = eventTimeout
    }

    func connectSubscribers() throws {
        for node in cluster.nodes {
            try connectSubscriber(to: node.name)
        }
    }

    private func connectSubscriber(to nodeName: String) throws {
        let subscriber = RecordingSession(
            node: cluster.node(nodeName).clientListen, userId: "bench-subscriber-\(nodeName)", observe: true,
            label: "\(nodeName) subscriber")
        subscribers[nodeName] = subscriber
        try subscriber.waitUntilReady(until: deadline())
    }

    func closeSessions() {
        for session in openDevices + Array(subscribers.values) {
            session.close()
        }
        openDevices = []
    }

    // MARK: - Figure a: presence change

    /// Opens a session for a fresh user on node-1 per sample and measures when the subscribers
    /// on node-1 and node-3 receive the online event. Returns the cross-node figure and the two
    /// client-view figures.
    func measurePresenceChange(samples: Int, warmup: Int) throws -> [LatencyFigure] {
        var crossNode = LatencyFigure(
            name: "a) presence change, node-1 → node-3",
            span: "online event at the node-1 subscriber → the same event at the node-3 subscriber",
            medianTarget: .milliseconds(2))
        var clientToRemote = LatencyFigure(
            name: "a) client view, remote subscriber",
            span: "client starts connecting to node-1 → online event at the node-3 subscriber",
            medianTarget: nil)
        var clientToLocal = LatencyFigure(
            name: "a) client view, local subscriber",
            span: "client starts connecting to node-1 → online event at the node-1 subscriber",
            medianTarget: nil)
        var timingFloor = LatencyFigure(
            name: "a) timing floor, node-1 → node-1",
            span: "online event at the node-1 subscriber → the same event at a second node-1 subscriber",
            medianTarget: nil)

        // A second subscriber on node-1 receives the same event as the first one, so the difference
        // of their arrivals shows how much the bench process itself adds to the cross-node figure.
        let second = RecordingSession(
            node: cluster.node("node-1").clientListen, userId: "bench-subscriber-node-1-second", observe: true,
            label: "second node-1 subscriber")
        defer { second.close() }
        try second.waitUntilReady(until: deadline())

        printNote("figure a: \(warmup) warm-up and \(samples) measured sessions opening on node-1")
        for index in 0..<(warmup + samples) {
            let measured = index >= warmup
            let user = "bench-\(runId)-change-\(index)"
            switch try changeSample(user: user, secondLocal: second) {
            case .success(let times):
                guard measured else { continue }
                crossNode.samples.append(times.remote - times.local)
                clientToRemote.samples.append(times.remote - times.connectStarted)
                clientToLocal.samples.append(times.local - times.connectStarted)
                timingFloor.samples.append(times.secondLocal - times.local)
            case .failure(let reason):
                guard measured else { continue }
                crossNode.failures.append("\(user): \(reason)")
            }
            if measured { reportProgress(crossNode, done: index - warmup + 1, of: samples) }
        }
        return [crossNode, clientToRemote, clientToLocal, timingFloor]
    }

    private struct ChangeTimes {
        var connectStarted: ContinuousClock.Instant
        var local: ContinuousClock.Instant
        var secondLocal: ContinuousClock.Instant
        var remote: ContinuousClock.Instant
    }

    private enum SampleOutcome<Value> {
        case success(Value)
        case failure(String)
    }

    private func changeSample(user: String, secondLocal: RecordingSession) throws -> SampleOutcome<ChangeTimes> {
        let local = try subscriber("node-1")
        let remote = try subscriber("node-3")
        for session in [local, secondLocal, remote] {
            try session.subscribe(to: [user], until: deadline())
        }
        let localMark = local.mark
        let secondMark = secondLocal.mark
        let remoteMark = remote.mark

        let device = RecordingSession(
            node: cluster.node("node-1").clientListen, userId: user, observe: false, label: "\(user) on node-1")
        openDevices.append(device)
        defer { closeDevice(device) }

        let until = deadline()
        let localArrival = try awaitEvent(local.waitForPresence(of: user, status: .online, from: localMark, until: until))
        let secondArrival = try awaitEvent(secondLocal.waitForPresence(of: user, status: .online, from: secondMark, until: until))
        let remoteArrival = try awaitEvent(remote.waitForPresence(of: user, status: .online, from: remoteMark, until: until))
        guard case .arrived(let localEvent) = localArrival else {
            return .failure("node-1 subscriber: no online event (\(describe(localArrival)))")
        }
        guard case .arrived(let secondEvent) = secondArrival else {
            return .failure("second node-1 subscriber: no online event (\(describe(secondArrival)))")
        }
        guard case .arrived(let remoteEvent) = remoteArrival else {
            return .failure("node-3 subscriber: no online event (\(describe(remoteArrival)))")
        }

        // The next sample starts once both subscribers have seen this user go offline again, so
        // that its events do not overlap with this sample's.
        let offlineMark = (local: local.mark, remote: remote.mark)
        device.close()
        let offlineUntil = deadline()
        for (name, session, mark) in [("node-1", local, offlineMark.local), ("node-3", remote, offlineMark.remote)] {
            let outcome = try awaitEvent(session.waitForPresence(of: user, status: .offline, from: mark, until: offlineUntil))
            if case .arrived = outcome { continue }
            anomalies.append("\(user): the \(name) subscriber received no offline event after the session closed (\(describe(outcome)))")
        }
        return .success(ChangeTimes(
            connectStarted: device.connectStarted, local: localEvent.instant, secondLocal: secondEvent.instant,
            remote: remoteEvent.instant))
    }

    // MARK: - Figures b and c: a node crashes or leaves

    /// Per sample: connects a fresh user to the victim node, waits until every subscriber has seen
    /// them online, sends `signal` to the victim, and measures until every surviving subscriber
    /// has received the offline event. The victim rotates through the nodes and restarts after
    /// each sample.
    func measureDeparture(signal: Int32, samples: Int) throws -> LatencyFigure {
        var figure = signal == SIGKILL
            ? LatencyFigure(
                name: "b) kill -9 of a node", span: "SIGKILL sent → offline event at the last surviving subscriber",
                medianTarget: .seconds(3))
            : LatencyFigure(
                name: "c) SIGTERM of a node", span: "SIGTERM sent → offline event at the last surviving subscriber",
                medianTarget: .milliseconds(100))
        let tag = signal == SIGKILL ? "kill" : "term"

        printNote("figure \(signal == SIGKILL ? "b" : "c"): \(samples) samples of \(signalName(signal)), each followed by a restart")
        for index in 0..<samples {
            let victim = cluster.nodes[index % cluster.nodes.count].name
            let user = "bench-\(runId)-\(tag)-\(index)"
            switch try departureSample(user: user, victim: victim, signal: signal) {
            case .success(let latency):
                figure.samples.append(latency)
            case .failure(let reason):
                figure.failures.append("\(user) on \(victim): \(reason)")
            }
            try restart(victim)
            reportProgress(figure, done: index + 1, of: samples)
        }
        return figure
    }

    private func departureSample(user: String, victim: String, signal: Int32) throws -> SampleOutcome<Duration> {
        let nodeNames = cluster.nodes.map(\.name)
        for name in nodeNames {
            try subscriber(name).subscribe(to: [user], until: deadline())
        }
        let onlineMarks = try Dictionary(uniqueKeysWithValues: nodeNames.map { ($0, try subscriber($0).mark) })

        let device = RecordingSession(
            node: cluster.node(victim).clientListen, userId: user, observe: false, label: "\(user) on \(victim)")
        openDevices.append(device)
        defer { closeDevice(device) }
        let onlineUntil = deadline()
        for name in nodeNames {
            let outcome = try awaitEvent(try subscriber(name).waitForPresence(
                of: user, status: .online, from: onlineMarks[name]!, until: onlineUntil))
            guard case .arrived = outcome else {
                return .failure("the \(name) subscriber received no online event before the signal (\(describe(outcome)))")
            }
        }

        let survivors = nodeNames.filter { $0 != victim }
        let offlineMarks = try Dictionary(uniqueKeysWithValues: survivors.map { ($0, try subscriber($0).mark) })
        let sent = try cluster.send(signal, to: victim)

        let offlineUntil = ContinuousClock.now + eventTimeout
        var latest = sent
        var misses: [String] = []
        for name in survivors {
            let outcome = try awaitEvent(try subscriber(name).waitForPresence(
                of: user, status: .offline, from: offlineMarks[name]!, until: offlineUntil))
            if case .arrived(let arrival) = outcome {
                latest = max(latest, arrival.instant)
            } else {
                misses.append("the \(name) subscriber received no offline event (\(describe(outcome)))")
            }
        }
        try collectExit(of: victim, after: signal)
        return misses.isEmpty ? .success(latest - sent) : .failure(misses.joined(separator: "; "))
    }

    /// Reaps the victim. A node that leaves after SIGTERM must exit with status 0; any other ending
    /// is recorded as an anomaly.
    private func collectExit(of victim: String, after signal: Int32) throws {
        let grace: Duration = signal == SIGKILL ? .seconds(2) : .seconds(10)
        guard let exit = cluster.waitForExit(of: victim, timeout: grace) else {
            throw ClusterError("\(victim) still runs \(formatSeconds(grace)) after \(signalName(signal))")
        }
        if signal == SIGTERM && exit != "exited with status 0" {
            anomalies.append("\(victim) \(exit) after SIGTERM; a graceful leave exits with status 0")
        }
    }

    /// Starts the victim again on the same ports, waits until the cluster is whole, and connects a
    /// new subscriber to it.
    private func restart(_ victim: String) throws {
        subscribers.removeValue(forKey: victim)?.close()
        try cluster.restart(victim, timeout: .seconds(30))
        try connectSubscriber(to: victim)
    }

    // MARK: - Helpers

    private func subscriber(_ nodeName: String) throws -> RecordingSession {
        guard let session = subscribers[nodeName] else {
            throw ClusterError("no subscriber is connected to \(nodeName)")
        }
        return session
    }

    private func closeDevice(_ device: RecordingSession) {
        device.close()
        _ = device.waitUntilEnded(until: ContinuousClock.now + .seconds(5))
        openDevices.removeAll { $0 === device }
    }

    /// Passes a wait's outcome through, except that an interrupted wait ends the bench.
    private func awaitEvent(_ outcome: ArrivalWait) throws -> ArrivalWait {
        if case .interrupted = outcome { throw ClusterError("interrupted") }
        return outcome
    }

    private func describe(_ outcome: ArrivalWait) -> String {
        switch outcome {
        case .arrived: return "arrived"
        case .timedOut: return "timed out after \(formatSeconds(eventTimeout))"
        case .connectionEnded(let how): return "its connection \(how)"
        case .interrupted: return "interrupted"
        }
    }

    /// Prints the running median on stderr every 10 samples and after the last one.
    private func reportProgress(_ figure: LatencyFigure, done: Int, of total: Int) {
        guard done % 10 == 0 || done == total else { return }
        let median = figure.statistics.map { formatLatency($0.median) } ?? "-"
        let failed = figure.failures.isEmpty ? "" : ", \(figure.failures.count) failed"
        printNote("  \(figure.name): \(done)/\(total) samples, median so far \(median)\(failed)")
    }

    private func deadline() -> ContinuousClock.Instant {
        ContinuousClock.now + eventTimeout
    }
}
