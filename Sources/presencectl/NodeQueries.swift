// Requests that presencectl sends to a node's HTTP endpoints, and a check that a node's ports are free.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One row of `GET /v1/cluster/members`: a member as the responding node sees it.
struct ClusterMember: Decodable, Equatable, Sendable {
    var name: String
    var gossipAddr: String
    var clientAddr: String
    /// One of `alive`, `suspect`, `dead`, `left`.
    var state: String
    var incarnation: UInt64
}

/// Fetches the member list of the node listening on `clientAddress`. Throws a `ClusterError`
/// when the node does not respond in time, responds with another status than 200, or sends
/// a body that is not a member list.
func fetchMembers(_ clientAddress: NodeAddress, timeout: Duration = .seconds(1)) throws -> [ClusterMember] {
    let response: HTTPResponse
    do {
        response = try httpGet(clientAddress, path: "/v1/cluster/members", timeout: timeout)
    } catch {
        throw ClusterError(error.description)
    }
    guard response.statusCode == 200 else {
        throw ClusterError(
            "GET /v1/cluster/members on \(clientAddress) returned HTTP \(response.statusCode): \(response.bodyText.prefix(200))")
    }
    do {
        return try JSONDecoder().decode([ClusterMember].self, from: Data(response.body))
    } catch {
        throw ClusterError("GET /v1/cluster/members on \(clientAddress) returned an invalid member list: \(error)")
    }
}

/// True when `GET /healthz` on `clientAddress` returns 200 within `timeout`.
func isHealthy(_ clientAddress: NodeAddress, timeout: Duration = .seconds(1)) -> Bool {
    (try? httpGet(clientAddress, path: "/healthz", timeout: timeout).statusCode) == 200
}

/// Tries to bind a node's ports and returns why one failed, or nil when they look free. The check binds the
/// client port over TCP and the gossip port over both UDP and TCP, because gossip uses the same
/// port number for push-pull over TCP. Another program can still take a port between this check
/// and the node's start.
func portConflict(of node: ClusterNode) -> String? {
    let checks: [(field: String, address: NodeAddress, type: Int32, protocolName: String)] = [
        ("clientListen", node.clientListen, SocketType.stream, "TCP"),
        ("gossipListen", node.gossipListen, SocketType.datagram, "UDP"),
        ("gossipListen", node.gossipListen, SocketType.stream, "TCP"),
    ]
    for check in checks {
        if let code = bindError(check.address, type: check.type) {
            return "\(node.name): \(check.field) \(check.address) (\(check.protocolName)) cannot be bound: \(errnoDescription(code))"
        }
    }
    return nil
}

/// Binds a socket of `type` to `address` and closes it again. Returns the errno of a failed bind.
private func bindError(_ address: NodeAddress, type: Int32) -> Int32? {
    let descriptor = openSocket(type: type)
    guard descriptor >= 0 else { return errno }
    defer { close(descriptor) }
    if type == SocketType.stream {
        // libuv and libwebsockets set SO_REUSEADDR on their listening sockets, so a node can
        // listen on a port left in TIME_WAIT by a node that just stopped. Without it here, such
        // a port would look taken.
        var on: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
    }
    var socketAddress = address.socketAddress
    let result = withUnsafePointer(to: &socketAddress) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return result == 0 ? nil : errno
}
