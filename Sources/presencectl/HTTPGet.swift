// A minimal HTTP/1.1 GET client over a non-blocking POSIX TCP socket. presencectl only talks to
// nodes on its own machine, so this supports what `presence-node` sends: `Content-Length` or
// chunked bodies, and `Connection: close`. It needs no event loop and no Foundation networking.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Status, headers and body of one HTTP response.
struct HTTPResponse: Sendable {
    let statusCode: Int
    /// Header values by lowercased name; a repeated header keeps its last value.
    let headers: [String: String]
    let body: [UInt8]

    /// The body decoded as UTF-8, with invalid bytes replaced.
    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// Failure of an HTTP GET. Each description names the address.
enum HTTPGetError: Error, CustomStringConvertible {
    case connectFailed(NodeAddress, errno: Int32)
    case timedOut(NodeAddress, after: Duration)
    case ioFailed(NodeAddress, operation: String, errno: Int32)
    case malformedResponse(NodeAddress, reason: String)
    case responseTooLarge(NodeAddress, limit: Int)

    var description: String {
        switch self {
        case .connectFailed(let address, let code):
            return "connecting to \(address) failed: \(errnoDescription(code))"
        case .timedOut(let address, let timeout):
            return "no response from \(address) within \(formatSeconds(timeout))"
        case .ioFailed(let address, let operation, let code):
            return "\(operation) on the connection to \(address) failed: \(errnoDescription(code))"
        case .malformedResponse(let address, let reason):
            return "invalid HTTP response from \(address): \(reason)"
        case .responseTooLarge(let address, let limit):
            return "response from \(address) is larger than \(limit) bytes"
        }
    }
}

/// Largest response in bytes that `httpGet` reads. Member lists and health responses are far smaller.
let httpResponseLimit = 16 << 20

/// Sends `GET path` to `address` and returns the whole response. `timeout` bounds the connect,
/// the request and the response together. Any status code is returned, not thrown.
func httpGet(_ address: NodeAddress, path: String, timeout: Duration) throws(HTTPGetError) -> HTTPResponse {
    let deadline = ContinuousClock.now + timeout
    let target = address.connectable

    let descriptor = openSocket(type: SocketType.stream)
    guard descriptor >= 0 else { throw .ioFailed(target, operation: "socket", errno: errno) }
    defer { close(descriptor) }
    _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)

    try connect(descriptor, to: target, deadline: deadline, timeout: timeout)

    let request = "GET \(path) HTTP/1.1\r\nHost: \(target)\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    var requestBytes = Array(request.utf8)
    var sent = 0
    while sent < requestBytes.count {
        try waitUntilReady(descriptor, events: POLLOUT, address: target, deadline: deadline, timeout: timeout)
        let count = requestBytes.withUnsafeMutableBytes { buffer in
            send(descriptor, buffer.baseAddress! + sent, buffer.count - sent, sendFlags)
        }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { continue }
            throw .ioFailed(target, operation: "send", errno: errno)
        }
        sent += count
    }
    requestBytes.removeAll()

    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        if let response = try parseCompleteResponse(received, from: target, atEndOfStream: false) {
            return response
        }
        try waitUntilReady(descriptor, events: POLLIN, address: target, deadline: deadline, timeout: timeout)
        let count = chunk.withUnsafeMutableBytes { buffer in
            recv(descriptor, buffer.baseAddress!, buffer.count, 0)
        }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { continue }
            throw .ioFailed(target, operation: "recv", errno: errno)
        }
        if count == 0 {
            guard let response = try parseCompleteResponse(received, from: target, atEndOfStream: true) else {
                throw .malformedResponse(target, reason: "connection closed after \(received.count) bytes")
            }
            return response
        }
        received.append(contentsOf: chunk[0..<count])
        if received.count > httpResponseLimit {
            throw .responseTooLarge(target, limit: httpResponseLimit)
        }
    }
}

#if canImport(Glibc)
private let sendFlags = Int32(MSG_NOSIGNAL)
#else
// Darwin has no MSG_NOSIGNAL; `openSocket` sets SO_NOSIGPIPE instead.
private let sendFlags: Int32 = 0
#endif

/// Connects the non-blocking `descriptor`, waiting at most until `deadline`.
private func connect(
    _ descriptor: Int32, to address: NodeAddress, deadline: ContinuousClock.Instant, timeout: Duration
) throws(HTTPGetError) {
    var socketAddress = address.socketAddress
    let result = withUnsafePointer(to: &socketAddress) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    if result == 0 { return }
    guard errno == EINPROGRESS || errno == EINTR else {
        throw .connectFailed(address, errno: errno)
    }

    try waitUntilReady(descriptor, events: POLLOUT, address: address, deadline: deadline, timeout: timeout)
    var socketError: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &socketError, &length) == 0 else {
        throw .ioFailed(address, operation: "getsockopt", errno: errno)
    }
    if socketError != 0 {
        throw .connectFailed(address, errno: socketError)
    }
}

/// Polls `descriptor` for `events` until it is ready or `deadline` passes.
private func waitUntilReady(
    _ descriptor: Int32, events: Int32, address: NodeAddress, deadline: ContinuousClock.Instant,
    timeout: Duration
) throws(HTTPGetError) {
    while true {
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { throw .timedOut(address, after: timeout) }
        let milliseconds = max(1, Int32(clamping: remaining.components.seconds * 1000
            + remaining.components.attoseconds / 1_000_000_000_000_000))
        var entry = pollfd(fd: descriptor, events: Int16(events), revents: 0)
        let ready = poll(&entry, 1, milliseconds)
        if ready > 0 { return }
        if ready < 0 && errno != EINTR {
            throw .ioFailed(address, operation: "poll", errno: errno)
        }
    }
}

/// Parses `bytes` as one HTTP response. Returns nil when more bytes are needed, which is only
/// possible while `atEndOfStream` is false.
private func parseCompleteResponse(
    _ bytes: [UInt8], from address: NodeAddress, atEndOfStream: Bool
) throws(HTTPGetError) -> HTTPResponse? {
    let separator: [UInt8] = [13, 10, 13, 10]
    guard let headerEnd = firstIndex(of: separator, in: bytes, from: 0) else {
        if atEndOfStream {
            throw .malformedResponse(address, reason: "the header section has no end")
        }
        return nil
    }

    let headerText = String(decoding: bytes[0..<headerEnd], as: UTF8.self)
    var lines = headerText.components(separatedBy: "\r\n")
    let statusLine = lines.removeFirst()
    let statusParts = statusLine.split(separator: " ", maxSplits: 2)
    guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let statusCode = Int(statusParts[1]) else {
        throw .malformedResponse(address, reason: "invalid status line \"\(statusLine)\"")
    }

    var headers: [String: String] = [:]
    for line in lines {
        guard let colon = line.firstIndex(of: ":") else {
            throw .malformedResponse(address, reason: "invalid header line \"\(line)\"")
        }
        let name = line[..<colon].lowercased()
        headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }

    let bodyStart = headerEnd + separator.count
    if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
        guard let body = try decodeChunked(bytes, from: bodyStart, address: address) else {
            if atEndOfStream {
                throw .malformedResponse(address, reason: "connection closed inside a chunked body")
            }
            return nil
        }
        return HTTPResponse(statusCode: statusCode, headers: headers, body: body)
    }

    if let lengthText = headers["content-length"] {
        guard let length = Int(lengthText), length >= 0 else {
            throw .malformedResponse(address, reason: "invalid Content-Length \"\(lengthText)\"")
        }
        guard bytes.count - bodyStart >= length else {
            if atEndOfStream {
                throw .malformedResponse(
                    address, reason: "body has \(bytes.count - bodyStart) of \(length) bytes when the connection closed")
            }
            return nil
        }
        return HTTPResponse(statusCode: statusCode, headers: headers, body: Array(bytes[bodyStart..<bodyStart + length]))
    }

    // Without a length the body ends when the server closes the connection.
    guard atEndOfStream else { return nil }
    return HTTPResponse(statusCode: statusCode, headers: headers, body: Array(bytes[bodyStart...]))
}

/// Decodes a chunked body that starts at `start`. Returns nil when the last chunk has not arrived yet.
private func decodeChunked(_ bytes: [UInt8], from start: Int, address: NodeAddress) throws(HTTPGetError) -> [UInt8]? {
    let lineEnd: [UInt8] = [13, 10]
    var body: [UInt8] = []
    var position = start
    while true {
        guard let sizeEnd = firstIndex(of: lineEnd, in: bytes, from: position) else { return nil }
        let sizeLine = String(decoding: bytes[position..<sizeEnd], as: UTF8.self)
        let sizeText = sizeLine.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
        guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
            throw .malformedResponse(address, reason: "invalid chunk size \"\(sizeLine)\"")
        }
        let dataStart = sizeEnd + lineEnd.count
        if size == 0 {
            // The last chunk may be followed by trailer fields; they end with an empty line.
            return firstIndex(of: [13, 10, 13, 10], in: bytes, from: sizeEnd) == nil ? nil : body
        }
        guard bytes.count >= dataStart + size + lineEnd.count else { return nil }
        body.append(contentsOf: bytes[dataStart..<dataStart + size])
        position = dataStart + size + lineEnd.count
    }
}

/// Index of the first occurrence of `pattern` in `bytes` at or after `start`.
private func firstIndex(of pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
    guard bytes.count >= pattern.count, start <= bytes.count - pattern.count else { return nil }
    for index in start...(bytes.count - pattern.count) where bytes[index] == pattern[0] {
        if Array(bytes[index..<index + pattern.count]) == pattern { return index }
    }
    return nil
}

/// Formats a duration as seconds with at most one decimal, such as "2.5 s".
func formatSeconds(_ duration: Duration) -> String {
    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    let tenths = (seconds * 10).rounded() / 10
    return tenths == tenths.rounded() ? "\(Int(tenths)) s" : "\(tenths) s"
}
