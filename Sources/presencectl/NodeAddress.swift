#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 `HOST:PORT` as node configs write `clientListen`, `gossipListen` and `seeds`.
struct NodeAddress: Hashable, Codable, CustomStringConvertible, Sendable {
    /// Dotted IPv4 address, such as `127.0.0.1`.
    let host: String
    let port: UInt16

    init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `"HOST:PORT"`; returns nil unless HOST is a dotted IPv4 address and PORT is 1 to 65535.
    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        guard let port = UInt16(text[text.index(after: colon)...]), port != 0 else { return nil }
        var parsed = in_addr()
        guard inet_pton(AF_INET, host, &parsed) == 1 else { return nil }
        self.host = host
        self.port = port
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = NodeAddress(text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "expected IPv4HOST:PORT such as 127.0.0.1:7101, got \"\(text)\"")
        }
        self = address
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    var description: String { "\(host):\(port)" }

    /// The address to connect to: a node listening on the wildcard `0.0.0.0` is reached on loopback.
    var connectable: NodeAddress {
        host == "0.0.0.0" ? NodeAddress(host: "127.0.0.1", port: port) : self
    }

    /// WebSocket URL that clients of a node with this `clientListen` connect to.
    var clientURL: String { "ws://\(connectable)/v1/ws" }

    /// URL of the live dashboard page of a node with this `clientListen`.
    var dashboardURL: String { "http://\(connectable)/" }

    /// The address as a `sockaddr_in` for `bind` and `connect`.
    var socketAddress: sockaddr_in {
        var address = sockaddr_in()
        #if canImport(Darwin)
        address.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, host, &address.sin_addr)
        return address
    }
}

/// Socket types as `Int32`; Glibc imports them as an enum, Darwin as plain integers.
enum SocketType {
    #if canImport(Glibc)
    static let stream = Int32(SOCK_STREAM.rawValue)
    static let datagram = Int32(SOCK_DGRAM.rawValue)
    #else
    static let stream = SOCK_STREAM
    static let datagram = SOCK_DGRAM
    #endif
}

/// Opens an IPv4 socket of `type` with close-on-exec set, so that node processes started later
/// do not inherit it. Returns -1 with `errno` set on failure.
func openSocket(type: Int32) -> Int32 {
    #if canImport(Glibc)
    return socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
    #else
    let descriptor = socket(AF_INET, type, 0)
    if descriptor >= 0 {
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        var on: Int32 = 1
        _ = setsockopt(descriptor, SOL_SOCKET, SO_NOSIGPIPE, &on, socklen_t(MemoryLayout<Int32>.size))
    }
    return descriptor
    #endif
}

/// Text of the current `errno`, such as "Connection refused".
func errnoDescription(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
