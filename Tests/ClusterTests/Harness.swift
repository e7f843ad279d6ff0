import Foundation
import PresenceClient
import XCTest

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Errors of the cluster test harness. Each names what was awaited and what arrived.
struct HarnessError: Error, CustomStringConvertible {
    var description: String
}

/// A thread-safe value holder for state shared with background tasks.
final class Guarded<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func read<T>(_ body: (Value) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(value) }
    func write<T>(_ body: (inout Value) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(&value) }
}

/// Polls `condition` every 10 ms until it is true or `timeout` passes.
func eventually(_ timeout: Duration, _ what: String, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    if try await condition() { return }
    throw HarnessError(description: "timed out after \(timeout) waiting for \(what)")
}

/// One real `presence-node` process on 127.0.0.1 with OS-chosen ports.
final class NodeProcess: @unchecked Sendable {
    let name: String
    let process: Process
    let clientPort: UInt16
    let gossipPort: UInt16
    let logPath: String

    var clientAddress: String { "127.0.0.1:\(clientPort)" }
    var gossipAddress: String { "127.0.0.1:\(gossipPort)" }
    var pid: Int32 { process.processIdentifier }

    static var binary: URL {
        if let override = ProcessInfo.processInfo.environment["PRESENCE_NODE_BINARY"] {
            return URL(fileURLWithPath: override)
        }
        // The test bundle sits in the same build folder as the executables.
        var folder = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = folder.appendingPathComponent("presence-node")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            folder.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("presence-node")
    }

    /// Starts a node and waits for its `ready` line.
    /// With `logPipe`, the node logs into that pipe instead of the log file.
    static func start(name: String, seeds: [String] = [], extraArguments: [String] = [], logPipe: Pipe? = nil) throws -> NodeProcess {
        let process = Process()
        process.executableURL = binary
        var arguments = ["--name", name, "--client", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--preset", "local", "--log-level", "debug"]
        for seed in seeds { arguments += ["--seed", seed] }
        process.arguments = arguments + extraArguments
        let output = Pipe()
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-test-\(name)-\(UUID().uuidString.prefix(8)).log").path
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardOutput = output
        process.standardError = logPipe ?? FileHandle(forWritingAtPath: logPath)
        try process.run()

        let readyLine = Guarded<String?>(nil)
        let reader = Thread {
            var buffer = Data()
            while true {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { return }
                buffer.append(chunk)
                if let text = String(data: buffer, encoding: .utf8), let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ready ") }) {
                    readyLine.write { $0 = String(line) }
                    return
                }
            }
        }
        reader.start()
        let deadline = Date().addingTimeInterval(20)
        while readyLine.read({ $0 }) == nil && Date() < deadline && process.isRunning {
            Thread.sleep(forTimeInterval: 0.01)
        }
        guard let line = readyLine.read({ $0 }) else {
            if process.isRunning { process.terminate() }
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw HarnessError(description: "node \(name) did not print its ready line; log:\n\(log.suffix(2000))")
        }
        func port(_ key: String) -> UInt16 {
            let field = line.split(separator: " ").first { $0.hasPrefix("\(key)=") } ?? ""
            return UInt16(field.split(separator: ":").last ?? "") ?? 0
        }
        return NodeProcess(name: name, process: process, clientPort: port("client"), gossipPort: port("gossip"), logPath: logPath)
    }

    private init(name: String, process: Process, clientPort: UInt16, gossipPort: UInt16, logPath: String) {
        self.name = name
        self.process = process
        self.clientPort = clientPort
        self.gossipPort = gossipPort
        self.logPath = logPath
    }

    func signal(_ number: Int32) {
        if process.isRunning { kill(pid, number) }
    }

    /// Waits for the process to exit; returns its status, or nil on timeout.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Stops the node: SIGTERM, then SIGKILL after two seconds.
    func stop() {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if waitForExit(timeout: 2) == nil {
            signal(SIGKILL)
            _ = waitForExit(timeout: 2)
        }
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func get(_ path: String) async throws -> (status: Int, body: Data) {
        try await HTTP.get("http://\(clientAddress)\(path)")
    }

    func members() async throws -> [[String: Any]] {
        let (_, body) = try await get("/v1/cluster/members")
        return (try JSONSerialization.jsonObject(with: body) as? [[String: Any]]) ?? []
    }

    func aliveMemberNames() async throws -> Set<String> {
        Set(try await members().filter { $0["state"] as? String == "alive" }.compactMap { $0["name"] as? String })
    }

    func presence(_ user: String) async throws -> [String: Any] {
        let (_, body) = try await get("/v1/presence/\(user)")
        return (try JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:]
    }
}

enum HTTP {
    static func get(_ url: String) async throws -> (status: Int, body: Data) {
        let reply = try await send(url, method: "GET")
        return (reply.status, reply.body)
    }

    /// Sends a request with `method` and returns the status, the `Allow` header and the body.
    static func send(_ url: String, method: String) async throws -> (status: Int, allow: String?, body: Data) {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 5
        request.httpMethod = method
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (http?.statusCode ?? 0, http?.value(forHTTPHeaderField: "Allow"), data)
    }
}

/// A started set of nodes, all seeded with the first; stopped in `shutdown`.
final class TestCluster: @unchecked Sendable {
    private(set) var nodes: [NodeProcess] = []

    static func start(size: Int, extraArguments: [String] = []) async throws -> TestCluster {
        let cluster = TestCluster()
        do {
            let first = try NodeProcess.start(name: "node-1", extraArguments: extraArguments)
            cluster.nodes.append(first)
            for index in 2...max(size, 2) where index <= size {
                cluster.nodes.append(try NodeProcess.start(name: "node-\(index)", seeds: [first.gossipAddress], extraArguments: extraArguments))
            }
            try await cluster.waitUntilFormed()
        } catch {
            cluster.shutdown()
            throw error
        }
        return cluster
    }

    /// Waits until every running node lists every running node as alive.
    func waitUntilFormed(timeout: Duration = .seconds(15)) async throws {
        let running = nodes.filter { $0.process.isRunning }
        let names = Set(running.map(\.name))
        try await eventually(timeout, "every node to see \(names.sorted()) alive") {
            for node in running where try await node.aliveMemberNames() != names { return false }
            return true
        }
    }

    func node(_ name: String) -> NodeProcess { nodes.first { $0.name == name }! }

    func shutdown() {
        for node in nodes { node.stop() }
    }
}

/// A real WebSocket client (libwebsockets) that records every message it receives.
final class TestClient: @unchecked Sendable {
    let transport = LibWebSocketsTransport()
    let events = Guarded<[WebSocketEvent]>([])
    private var pump: Task<Void, Never>?
    let label: String

    convenience init(node: NodeProcess, user: String, query: String = "") {
        self.init(node: node, pathAndQuery: "/v1/ws?userId=\(user)\(query)", label: "\(user)@\(node.name)")
    }

    init(node: NodeProcess, pathAndQuery: String, label: String) {
        self.label = label
        let url = URL(string: "ws://\(node.clientAddress)\(pathAndQuery)")!
        let stream = transport.connect(to: url, headers: [:])
        let events = self.events
        pump = Task {
            for await event in stream { events.write { $0.append(event) } }
        }
    }

    /// Connects and waits for `session.ready`.
    static func connect(node: NodeProcess, user: String, query: String = "") async throws -> TestClient {
        let client = TestClient(node: node, user: user, query: query)
        try await client.waitForMessage(type: "session.ready")
        return client
    }

    var messages: [[String: Any]] {
        events.read { list in
            list.compactMap { event -> [String: Any]? in
                guard case .text(let text) = event else { return nil }
                return try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            }
        }
    }

    var closeCode: Int?? {
        events.read { list in
            for event in list { if case .closed(let code, _) = event { return .some(code) } }
            return nil
        }
    }

    var isOpen: Bool {
        events.read { list in
            list.contains(.opened) && !list.contains { if case .closed = $0 { return true }; if case .failed = $0 { return true }; return false }
        }
    }

    func send(_ json: String) { transport.send(json) }

    func subscribe(_ users: [String], id: String = "sub") {
        let list = users.map { "\"\($0)\"" }.joined(separator: ",")
        send(#"{"type":"presence.subscribe","id":"\#(id)","payload":{"userIds":[\#(list)]}}"#)
    }

    /// Presence events received for `user`, in order.
    func presenceEvents(for user: String) -> [[String: Any]] {
        messages.filter { $0["type"] as? String == "user.presence" }
            .compactMap { $0["payload"] as? [String: Any] }
            .filter { $0["userId"] as? String == user }
    }

    func lastStatus(of user: String) -> String? {
        presenceEvents(for: user).last?["status"] as? String
    }

    @discardableResult
    func waitForMessage(type: String, id: String? = nil, timeout: Duration = .seconds(10)) async throws -> [String: Any] {
        var found: [String: Any]?
        try await eventually(timeout, "\(type) on \(label); got \(messages.map { $0["type"] ?? "?" })") {
            found = messages.first { $0["type"] as? String == type && (id == nil || $0["id"] as? String == id) }
            return found != nil
        }
        return found!
    }

    func waitForStatus(_ status: String, of user: String, timeout: Duration = .seconds(10)) async throws {
        try await eventually(timeout, "\(user) \(status) on \(label); events \(presenceEvents(for: user))") {
            lastStatus(of: user) == status
        }
    }

    func close() {
        transport.close()
    }

    deinit { pump?.cancel() }
}

extension NodeProcess {
    /// Starts a node listening at fixed addresses, to restart a node at the ports of its earlier
    /// run. The `--client` and `--gossip` flags come after the OS-chosen ones of `start`, and
    /// the node takes the last value of a repeated flag.
    static func start(
        name: String, clientAddress: String, gossipAddress: String, seeds: [String] = [], extraArguments: [String] = []
    ) throws -> NodeProcess {
        try start(
            name: name, seeds: seeds,
            extraArguments: ["--client", clientAddress, "--gossip", gossipAddress] + extraArguments)
    }
}
