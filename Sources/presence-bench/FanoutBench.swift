import CLibUV
import Foundation
import PresenceProtocol

/// Per-event arrival times across all subscribers, for events sent one at a time: the next event
/// starts only after every subscriber has the current one.
final class EventTracker {
    let subscribers: Int
    /// Events each subscriber has received so far.
    private(set) var received: [Int]
    private(set) var current = -1
    private(set) var receivers = 0
    private(set) var firstArrival: UInt64 = .max
    private(set) var lastArrival: UInt64 = 0
    /// Deliveries that came out of order, twice, or with the wrong content.
    private(set) var unexpected = 0

    init(subscribers: Int) {
        self.subscribers = subscribers
        received = Array(repeating: 0, count: subscribers)
    }

    func begin(_ event: Int) {
        current = event
        receivers = 0
        firstArrival = .max
        lastArrival = 0
    }

    /// Records that `subscriber` has now received `count` events in total, the last one `valid`.
    func record(_ subscriber: Int, count: Int, valid: Bool) {
        let now = monotonicNanoseconds()
        guard count > received[subscriber] else { return }
        let step = count - received[subscriber]
        received[subscriber] = count
        guard valid, step == 1, count == current + 1 else {
            unexpected += 1
            return
        }
        receivers += 1
        firstArrival = min(firstArrival, now)
        lastArrival = max(lastArrival, now)
    }

    var isComplete: Bool { receivers == subscribers }
}

/// Figures of one fan-out batch against one server.
struct FanoutMeasurement {
    /// First subscriber receiving an event until the last one has it, in microseconds.
    var spread: Distribution
    /// The publisher's action until the last subscriber has the event, in microseconds.
    var total: Distribution
    /// Server CPU time (user + system) per delivered event, in microseconds.
    var cpuPerDelivery: Double
    var serverCPUSeconds: Double
    var deliveries: Int
    var unexpected: Int
    /// Mean bytes on the wire of one event, header included.
    var frameBytes: Int?
    /// Server-side notes, such as how many frames the node wrote directly.
    var notes: [String] = []
}

/// One subscriber count measured against the node and against the raw-TCP floor.
struct FanoutResult {
    var subscribers: Int
    var round: Int
    var mesh: FanoutMeasurement
    var raw: FanoutMeasurement
}

enum FanoutBench {
    static let targetUser = "bench-target"

    struct Settings {
        var subscriberCounts: [Int]
        var events: Int
        var warmupEvents = 10
        var gapSeconds: Double
        var rounds: Int
        var output: String?
    }

    static func main(_ arguments: [String]) -> Int32 {
        let settings: Settings
        do {
            let options = try Options(arguments, accepted: ["--subscribers", "--events", "--rounds", "--gap-ms", "--output"])
            let events = try options.integer("--events", default: 200, in: 2...100_000)
            guard events % 2 == 0 else { throw BenchError("--events must be even: each open and each close is one event") }
            settings = Settings(
                subscriberCounts: try options.integers("--subscribers", default: [1000, 5000], in: 1...9000),
                events: events,
                gapSeconds: Double(try options.integer("--gap-ms", default: 5, in: 0...10_000)) / 1000,
                rounds: try options.integer("--rounds", default: 1, in: 1...20),
                output: options.string("--output"))
        } catch {
            printError("presence-bench fanout: \(error)")
            return 2
        }
        let machine = MachineDescription.current()
        say("machine: \(machine.markdown)")
        var results: [FanoutResult] = []
        do {
            let directory = try makeRunDirectory("fanout")
            for round in 1...settings.rounds {
                for count in settings.subscriberCounts {
                    let group = ChildGroup(directory: directory)
                    defer { group.stopAll() }
                    let mesh = try measureMesh(count, settings, group)
                    say(line(count, round, "presencemesh", mesh))
                    let raw = try measureRaw(count, frameBytes: mesh.frameBytes ?? 90, settings, group)
                    say(line(count, round, "raw-tcp", raw))
                    results.append(FanoutResult(subscribers: count, round: round, mesh: mesh, raw: raw))
                    say("ratio n=\(count) round=\(round) cpu=\(formatted(mesh.cpuPerDelivery / raw.cpuPerDelivery)) "
                        + "last_median=\(formatted(mesh.total.median / raw.total.median)) "
                        + "spread_median=\(formatted(mesh.spread.median / raw.spread.median))")
                }
            }
        } catch {
            printError("presence-bench fanout: \(error)")
            return 1
        }
        if let output = settings.output {
            do {
                try ResultsFile.update(path: output, machine: machine, subsection: FanoutReport.heading,
                                       body: FanoutReport.markdown(results, settings))
                say("wrote \(FanoutReport.heading) to \(output)")
            } catch {
                printError("presence-bench fanout: writing \(output) failed: \(error)")
                return 1
            }
        }
        return 0
    }

    private static func line(_ count: Int, _ round: Int, _ label: String, _ m: FanoutMeasurement) -> String {
        "\(label) n=\(count) round=\(round) events=\(m.total.count) "
            + "spread_us median=\(formatted(m.spread.median, 0)) p99=\(formatted(m.spread.p99, 0)) "
            + "last_us median=\(formatted(m.total.median, 0)) p99=\(formatted(m.total.p99, 0)) "
            + "cpu_us_per_delivery=\(formatted(m.cpuPerDelivery, 3)) server_cpu_s=\(formatted(m.serverCPUSeconds, 2)) "
            + "unexpected=\(m.unexpected) frame_bytes=\(m.frameBytes ?? 0) \(m.notes.joined(separator: " "))"
    }

    /// Runs the warm-up and measured events. `act(k)` starts event k; `done(k)` returns true once the
    /// publisher side of event k has settled, besides every subscriber having it.
    private static func runEvents(
        _ settings: Settings, _ loop: EventLoop, _ tracker: EventTracker, serverPID: pid_t,
        measureStart: () -> Void = {}, act: (Int) -> Void, done: (Int) -> Bool
    ) throws -> FanoutMeasurement {
        var spread: [Double] = []
        var total: [Double] = []
        var cpuBefore = 0.0
        let eventCount = settings.warmupEvents + settings.events
        for event in 0..<eventCount {
            if event == settings.warmupEvents {
                measureStart()
                cpuBefore = ProcStats.cpuSeconds(serverPID) ?? .nan
            }
            tracker.begin(event)
            let action = monotonicNanoseconds()
            act(event)
            guard loop.run(timeout: 30, until: { tracker.isComplete && done(event) }) else {
                throw BenchError("event \(event): \(tracker.receivers) of \(tracker.subscribers) subscribers received it within 30 s")
            }
            if event >= settings.warmupEvents {
                spread.append(Double(tracker.lastArrival - tracker.firstArrival) / 1000)
                total.append(Double(tracker.lastArrival - action) / 1000)
            }
            loop.run(seconds: settings.gapSeconds)
        }
        let cpu = (ProcStats.cpuSeconds(serverPID) ?? .nan) - cpuBefore
        let deliveries = settings.events * tracker.subscribers
        return FanoutMeasurement(
            spread: Distribution(spread), total: Distribution(total), cpuPerDelivery: cpu * 1e6 / Double(deliveries),
            serverCPUSeconds: cpu, deliveries: deliveries, unexpected: tracker.unexpected)
    }

    /// Measures N observing subscribers of one user on a node. A publisher session of that user
    /// opens and closes, and each open and each close is one event.
    static func measureMesh(_ count: Int, _ settings: Settings, _ group: ChildGroup) throws -> FanoutMeasurement {
        let node = try NodeProcess.start(group: group, name: "fanout-\(count)", seed: nil,
                                   limits: ["maxSessions": count + 100])
        let loop = EventLoop()
        defer { loop.close() }
        // The publisher opens and closes a session per event through libwebsockets; the
        // subscribers only read, through the same plain TCP reads as the raw-TCP floor's.
        let pool = try WebSocketPool(eventLoop: loop, port: node.clientPort, capacity: 1)
        let publisher = 0
        let request = Envelope(type: ClientRequestType.subscribe, id: "s",
                               payload: UserSelectionPayload(userIds: .users([targetUser])))
        let subscribers = PlainWebSocketClients(
            eventLoop: loop, count: count, port: node.clientPort, path: { "/v1/ws?userId=bench-sub-\($0)&observe=true" },
            greeting: Array(try JSONEncoder().encode(request)))

        let tracker = EventTracker(subscribers: count)
        var subscribed = 0
        var frameSizes: [Int] = []
        subscribers.onMessage = { index, message in
            guard let base = message.baseAddress else { return }
            if bytesContain(base, message.count, "\"type\":\"user.presence\"") {
                let online = bytesContain(base, message.count, "\"status\":\"online\"")
                let expectOnline = (tracker.received[index] % 2) == 0
                tracker.record(index, count: tracker.received[index] + 1, valid: online == expectOnline)
                if index == 0 && frameSizes.count < 64 { frameSizes.append(message.count) }
            } else if bytesContain(base, message.count, "\"type\":\"presence.snapshot\"") {
                subscribed += 1
            }
        }
        let opened = subscribers.connectAll(port: node.clientPort, maxPending: 256, timeout: 120)
        guard opened == count else {
            throw BenchError("only \(opened) of \(count) subscribers connected to the node; \(subscribers.failures.first ?? "no failure reported")")
        }
        guard loop.run(timeout: 60, until: { subscribed == count }) else {
            throw BenchError("only \(subscribed) of \(count) subscribers got their subscription snapshot within 60 s")
        }
        var directBefore: Double?
        var queuedBefore: Double?
        var measurement = try runEvents(settings, loop, tracker, serverPID: node.pid, measureStart: {
            directBefore = node.metric("frames_written_directly_total")
            queuedBefore = node.metric("frames_queued_total")
        }, act: { event in
            if event % 2 == 0 {
                pool.connect(publisher, path: "/v1/ws?userId=\(targetUser)")
            } else {
                pool.close(publisher)
            }
        }, done: { event in
            event % 2 == 0 ? pool.states[publisher] == .open : pool.states[publisher] != .open
        })
        if let directBefore, let queuedBefore, let direct = node.metric("frames_written_directly_total"),
            let queued = node.metric("frames_queued_total")
        {
            measurement.notes.append("frames_sent=\(Int(queued - queuedBefore)) written_directly=\(Int(direct - directBefore))")
        }
        // Payload bytes plus the 2-byte header of an unmasked server frame under 126 bytes.
        if !frameSizes.isEmpty {
            measurement.frameBytes = frameSizes.reduce(0, +) / frameSizes.count + 2
        }
        measurement.notes.append("node_rss_mib=\(formatted(Double(ProcStats.residentBytes(node.pid) ?? 0) / 1_048_576, 1))")
        subscribers.closeAll()
        pool.destroy()
        group.stop(node.child)
        return measurement
    }

    /// N plain TCP subscribers of the raw server and one publisher connection that writes
    /// `frameBytes` per event.
    static func measureRaw(_ count: Int, frameBytes: Int, _ settings: Settings, _ group: ChildGroup) throws -> FanoutMeasurement {
        let server = try group.start(name: "raw-server-\(count)", executable: Executables.bench, arguments: ["raw-server"])
        guard let ready = server.waitForLine(prefix: "ready ", timeout: 15), let port = ready["port"].flatMap(UInt16.init) else {
            throw BenchError("raw-server printed no ready line within 15 s; see \(server.logPath)")
        }
        let loop = EventLoop()
        defer { loop.close() }
        let publisher = count
        let clients = RawClientSet(eventLoop: loop, count: count + 1)
        let tracker = EventTracker(subscribers: count)
        clients.onData = { index, total in
            guard index != publisher else { return }
            tracker.record(index, count: total / frameBytes, valid: total % frameBytes == 0)
        }
        let connected = clients.connectAll(port: port, maxPending: 256, timeout: 120)
        guard connected == count + 1 else {
            throw BenchError("only \(connected) of \(count + 1) raw connections connected")
        }
        let message = UnsafeMutablePointer<CChar>.allocate(capacity: frameBytes)
        defer { message.deallocate() }
        message.initialize(repeating: CChar(UInt8(ascii: "x")), count: frameBytes)
        var measurement = try runEvents(settings, loop, tracker, serverPID: server.pid, act: { _ in
            if !clients.send(publisher, message, frameBytes) {
                printError("raw publisher write was short")
            }
        }, done: { _ in true })
        measurement.frameBytes = frameBytes
        clients.closeAll()
        group.stop(server)
        return measurement
    }
}
