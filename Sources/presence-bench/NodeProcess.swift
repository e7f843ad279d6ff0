import Foundation

/// One `presence-node` started for a benchmark, on OS-chosen ports of 127.0.0.1.
final class NodeProcess {
    let child: ChildProcess
    let name: String
    let clientPort: UInt16
    let gossipAddress: String
    /// Monotonic time just before the process was started.
    let spawnedAt: UInt64
    /// Monotonic time its `ready` line was read.
    let readyAt: UInt64

    var pid: pid_t { child.pid }

    /// Writes a config file with `limits` and starts the node; throws when it prints no `ready`
    /// line within 15 s.
    init(group: ChildGroup, name: String, seed: String?, limits: [String: Int]) throws {
        self.name = name
        var config: [String: Any] = [
            "name": name,
            "clientListen": "127.0.0.1:0",
            "gossipListen": "127.0.0.1:0",
            "limits": limits,
            "log": ["level": "warning"],
        ]
        if let seed { config["seeds"] = [seed] }
        let configPath = "\(group.directory)/\(name).json"
        let data = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: configPath))
        spawnedAt = monotonicNanoseconds()
        child = try group.start(name: name, executable: Executables.node, arguments: ["--config", configPath])
        guard let ready = child.waitForLine(prefix: "ready ", timeout: 15),
            let client = ready["client"], let gossip = ready["gossip"],
            let portText = client.split(separator: ":").last, let port = UInt16(portText)
        else {
            group.stop(child)
            throw BenchError("node \(name) printed no ready line within 15 s; see \(child.logPath)")
        }
        readyAt = monotonicNanoseconds()
        clientPort = port
        gossipAddress = gossip
    }

    /// Starts a node like `init`, trying again up to `attempts` times when it fails to start.
    /// With port 0 a node may still fail to bind when many client connections hold ephemeral
    /// ports: it logs "address already in use" for its gossip port.
    static func start(group: ChildGroup, name: String, seed: String?, limits: [String: Int], attempts: Int = 5) throws -> NodeProcess {
        var lastError: Error = BenchError("node \(name) was not started")
        for attempt in 1...attempts {
            do {
                return try NodeProcess(group: group, name: attempt == 1 ? name : "\(name)-retry\(attempt)", seed: seed, limits: limits)
            } catch {
                printError("\(error); trying again")
                lastError = error
            }
        }
        throw lastError
    }

    /// Returns a gauge or counter from `/metrics`, or nil when the request fails.
    func metric(_ name: String) -> Double? {
        guard let body = HTTPProbe.get(port: clientPort, path: "/metrics") else { return nil }
        let prefix = "presencemesh_\(name) "
        for line in body.split(separator: "\n") where line.hasPrefix(prefix) {
            return Double(line.dropFirst(prefix.count))
        }
        return nil
    }

    /// Members this node reports alive, from `/v1/cluster/members`.
    func aliveMembers() -> Int? {
        guard let body = HTTPProbe.get(port: clientPort, path: "/v1/cluster/members") else { return nil }
        return body.components(separatedBy: "\"state\":\"alive\"").count - 1
    }
}

/// A benchmark that could not run as asked.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A minimal blocking HTTP/1.1 GET to 127.0.0.1, for node metrics and membership.
enum HTTPProbe {
    /// Returns the response body, or nil when the connection, the request or the status failed.
    /// Waits at most 2 s.
    static func get(port: UInt16, path: String) -> String? {
        let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketFD >= 0 else { return nil }
        defer { close(socketFD) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socketFD, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard send(socketFD, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        // lws may keep the connection open after the response, so the body ends at content-length.
        var expectedTotal: Int?
        while expectedTotal == nil || response.count < expectedTotal! {
            let count = recv(socketFD, &chunk, chunk.count, 0)
            if count <= 0 { break }
            response.append(contentsOf: chunk[..<count])
            if expectedTotal == nil { expectedTotal = completeLength(response) }
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else { return nil }
        return String(text[split.upperBound...])
    }

    /// Header length plus content-length, once the whole header has arrived.
    private static func completeLength(_ response: [UInt8]) -> Int? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard response.count >= 4,
            let end = (0...(response.count - 4)).first(where: { Array(response[$0..<$0 + 4]) == separator })
        else { return nil }
        let header = String(decoding: response[..<end], as: UTF8.self).lowercased()
        for line in header.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            if let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) {
                return end + 4 + length
            }
        }
        return nil
    }
}
