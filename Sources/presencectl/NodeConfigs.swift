// Node configs for local clusters: generated ones for `cluster up --nodes N`, and reading the
// fields presencectl needs from ready configs in a directory for `cluster up --configs DIR`.

import Foundation

/// The config `cluster up --nodes N` writes for each node, in the JSON shape `presence-node --config` reads.
struct GeneratedNodeConfig: Encodable {
    struct Gossip: Encodable {
        var preset: String
    }

    struct Log: Encodable {
        var level: String
    }

    var name: String
    var clientListen: NodeAddress
    var gossipListen: NodeAddress
    var seeds: [NodeAddress]
    var gossip = Gossip(preset: "local")
    var log = Log(level: "info")
}

/// First ports and host of generated clusters. Node K (from 1) listens on port `first + K - 1`.
enum GeneratedClusterDefaults {
    static let host = "127.0.0.1"
    static let firstClientPort = 7101
    static let firstGossipPort = 7201
    static let nodeCount = 3
    static let maxNodeCount = 64
}

/// Configs for `count` nodes named node-1 to node-N on 127.0.0.1. Every node is seeded with the
/// gossip address of node-1 and, when there is one, node-2, so that a restarted node-1 still finds
/// the cluster through node-2.
func generateNodeConfigs(count: Int, firstClientPort: Int, firstGossipPort: Int) throws -> [GeneratedNodeConfig] {
    let clientPorts = firstClientPort..<(firstClientPort + count)
    let gossipPorts = firstGossipPort..<(firstGossipPort + count)
    guard clientPorts.upperBound - 1 <= 65_535, gossipPorts.upperBound - 1 <= 65_535 else {
        throw UsageError("ports of \(count) nodes from \(firstClientPort) and \(firstGossipPort) go past 65535")
    }
    guard !clientPorts.overlaps(gossipPorts) else {
        throw UsageError(
            "client ports \(clientPorts.lowerBound)-\(clientPorts.upperBound - 1) overlap gossip ports "
                + "\(gossipPorts.lowerBound)-\(gossipPorts.upperBound - 1); choose --client-port and --gossip-port further apart")
    }

    let host = GeneratedClusterDefaults.host
    let seeds = gossipPorts.prefix(2).map { NodeAddress(host: host, port: UInt16($0)) }
    return (0..<count).map { offset in
        GeneratedNodeConfig(
            name: "node-\(offset + 1)",
            clientListen: NodeAddress(host: host, port: UInt16(firstClientPort + offset)),
            gossipListen: NodeAddress(host: host, port: UInt16(firstGossipPort + offset)),
            seeds: seeds)
    }
}

/// Reads every `*.json` file in `directory` as a node config and returns the nodes in natural
/// order of file name (node-2 before node-10). Each config must set `name`, `clientListen` and
/// `gossipListen`, because presencectl needs them to watch the node and to check its ports.
/// The node itself validates every other field when it starts.
func readNodeConfigs(in directory: String) throws -> [ClusterNode] {
    let directoryURL = URL(fileURLWithPath: directory).standardizedFileURL
    let fileNames: [String]
    do {
        fileNames = try FileManager.default.contentsOfDirectory(atPath: directoryURL.path)
    } catch {
        throw ClusterError("reading the config directory \(directory) failed: \(error.localizedDescription)")
    }

    let configNames = fileNames.filter { $0.hasSuffix(".json") }
        .sorted { $0.compare($1, options: .numeric) == .orderedAscending }
    guard !configNames.isEmpty else {
        throw ClusterError("no *.json node configs found in \(directory)")
    }

    var nodes: [ClusterNode] = []
    for fileName in configNames {
        let path = directoryURL.appendingPathComponent(fileName).path
        nodes.append(try readNodeConfig(at: path))
    }
    try checkDistinct(nodes)
    return nodes
}

/// Reads the fields presencectl needs from one node config file.
private func readNodeConfig(at path: String) throws -> ClusterNode {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ClusterError("reading \(path) failed")
    }
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
        throw ClusterError("\(path) is not a JSON object")
    }

    guard let name = object["name"] as? String, isValidNodeName(name) else {
        throw ClusterError(
            "\(path): name must be a string of 1 to 64 letters, digits, '.', '_' or '-', got \(String(describing: object["name"] ?? "nothing"))")
    }

    func address(_ field: String) throws -> NodeAddress {
        guard let text = object[field] as? String else {
            throw ClusterError("\(path): \(field) is missing; cluster up needs it to reach the node")
        }
        guard let address = NodeAddress(text) else {
            throw ClusterError("\(path): \(field) must be IPv4HOST:PORT such as 127.0.0.1:7101, got \"\(text)\"")
        }
        return address
    }

    return ClusterNode(
        name: name, configPath: path, clientListen: try address("clientListen"), gossipListen: try address("gossipListen"))
}

/// Node names become file names in the cluster directory, so they are limited to a safe set.
func isValidNodeName(_ name: String) -> Bool {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return (1...64).contains(name.count) && name.allSatisfy(allowed.contains) && !name.hasPrefix(".")
}

/// Throws when two nodes share a name or a listen address.
private func checkDistinct(_ nodes: [ClusterNode]) throws {
    var names: [String: String] = [:]
    var ports: [NodeAddress: String] = [:]
    for node in nodes {
        if let other = names[node.name] {
            throw ClusterError("\(other) and \(node.configPath) both name a node '\(node.name)'")
        }
        names[node.name] = node.configPath
        for (field, address) in [("clientListen", node.clientListen), ("gossipListen", node.gossipListen)] {
            if let other = ports[address] {
                throw ClusterError("\(node.configPath): \(field) \(address) is also used by \(other)")
            }
            ports[address] = "\(node.name) (\(node.configPath))"
        }
    }
}
