// The binary gossip codec: datagram framing, the message kinds and their bodies.
//
// A datagram is:
//
//     version: UInt8 (= gossipProtocolVersion)
//     count:   varint
//     count times: kind: UInt8, length: varint, body: `length` bytes
//
// Integers are unsigned LEB128 varints unless noted; epochs are 8 bytes big-endian; signed
// wall-clock milliseconds are zigzag varints. Strings are a varint byte length and UTF-8 bytes,
// with a per-field maximum length. Decoding checks every read against the end of the input and
// throws `DecodeError`; it never traps on remote input.

/// Version byte at the start of every datagram. Version 1 has message kinds 1 to 10, and its
/// pings and ping-reqs name the target run by name and epoch. Version 2 added the version vector
/// at the end of a custom status record. Version 3 added kind 11, `lastSeen`, which a version 2
/// decoder would reject with the whole datagram.
let gossipProtocolVersion: UInt8 = 3

/// Message kinds. The numbers are the wire protocol: append new kinds, never renumber or reuse.
enum MessageKind: UInt8, Sendable {
    case ping = 1
    case pingRequest = 2
    case ack = 3
    case nack = 4
    case alive = 5
    case suspect = 6
    case dead = 7
    case left = 8
    case presence = 9
    case customStatus = 10
    case lastSeen = 11
}

/// Byte limits of the string fields. Decoding rejects longer strings.
enum WireLimits {
    static let maxNameBytes = 255
    static let maxAddressBytes = 255
    static let maxUserIDBytes = 128
    static let maxStatusBytes = 32
    static let maxStatusTextBytes = 256
}

/// The reason a datagram or push-pull payload was rejected.
enum DecodeError: Error, Equatable, Sendable {
    case truncated
    case unsupportedVersion(UInt8)
    case unknownKind(UInt8)
    case invalidUTF8
    case invalidLength(field: String, bytes: Int)
    case varintOverflow
    case valueOutOfRange(field: String)
    case trailingBytes(Int)
}

/// A member announcing itself alive at `incarnation` (SWIM "alive", memberlist `aliveMsg`).
struct AliveAnnouncement: Equatable, Sendable {
    var name: String
    var epoch: Epoch
    /// Wall-clock milliseconds at which this run of the node started; orders two runs
    /// (epochs) of one name, so the later start replaces the earlier.
    var startedAt: Int64
    var incarnation: Incarnation
    var gossipAddress: GossipAddress
    var clientAddress: String
}

/// A claim by `accuser` that member `name` is suspect or dead at `incarnation`.
struct MemberAccusation: Equatable, Sendable {
    var name: String
    var epoch: Epoch
    var incarnation: Incarnation
    var accuser: String
}

/// One message inside a datagram.
enum GossipMessage: Equatable, Sendable {
    /// A direct probe of the run (`target`, `targetEpoch`). Only that run acks, so a node that
    /// took over the address, or a restart of the target, does not pass for the probed run.
    case ping(sequence: UInt64, target: String, targetEpoch: Epoch)
    /// Asks the receiver to ping the run (`target`, `targetEpoch`) at `targetAddress` and forward
    /// its ack.
    case pingRequest(sequence: UInt64, target: String, targetEpoch: Epoch, targetAddress: GossipAddress)
    case ack(sequence: UInt64)
    /// Sent by a relay of a `pingRequest` that got no ack in time (Lifeguard). It shows the prober
    /// that its own network path works.
    case nack(sequence: UInt64)
    case alive(AliveAnnouncement)
    case suspect(MemberAccusation)
    case dead(MemberAccusation)
    case left(name: String, epoch: Epoch, incarnation: Incarnation)
    case presence(PresenceDelta)
    case customStatus(StatusRecord)
    /// A `lastSeen` value its sender just wrote for a user whose entries it dropped.
    case lastSeen(LastSeenRecord)
}

// MARK: - Byte writer and reader

struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func writeByte(_ value: UInt8) {
        bytes.append(value)
    }

    mutating func writeUInt64BigEndian(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    mutating func writeVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func writeSigned(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Writes a length-prefixed string. Callers keep strings within the field's limit, because
    /// the decoder rejects longer ones.
    mutating func writeString(_ value: String) {
        writeVarint(UInt64(value.utf8.count))
        bytes.append(contentsOf: value.utf8)
    }

    mutating func writeBytes(_ value: [UInt8]) {
        bytes.append(contentsOf: value)
    }
}

struct ByteReader {
    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
    }

    private init(_ bytes: [UInt8], position: Int, end: Int) {
        self.bytes = bytes
        self.position = position
        self.end = end
    }

    var remaining: Int { end - position }
    var isAtEnd: Bool { position == end }

    mutating func readByte() throws -> UInt8 {
        guard position < end else { throw DecodeError.truncated }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func readUInt64BigEndian() throws -> UInt64 {
        guard remaining >= 8 else { throw DecodeError.truncated }
        var value: UInt64 = 0
        for _ in 0..<8 {
            value = (value << 8) | UInt64(bytes[position])
            position += 1
        }
        return value
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    mutating func readVarint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readByte()
            if shift == 63 && byte > 1 { throw DecodeError.varintOverflow }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { throw DecodeError.varintOverflow }
        }
    }

    mutating func readUInt32(field: String) throws -> UInt32 {
        let value = try readVarint()
        guard let narrow = UInt32(exactly: value) else { throw DecodeError.valueOutOfRange(field: field) }
        return narrow
    }

    mutating func readSigned() throws -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
    }

    /// Reads a varint length and checks it against `maxBytes` and the bytes left.
    mutating func readLength(field: String, maxBytes: Int) throws -> Int {
        let length = try readVarint()
        guard length <= UInt64(maxBytes) else {
            throw DecodeError.invalidLength(field: field, bytes: length > UInt64(Int.max) ? Int.max : Int(length))
        }
        guard Int(length) <= remaining else { throw DecodeError.truncated }
        return Int(length)
    }

    /// Reads a length-prefixed UTF-8 string of `minBytes...maxBytes` bytes.
    mutating func readString(field: String, minBytes: Int = 1, maxBytes: Int) throws -> String {
        let length = try readLength(field: field, maxBytes: maxBytes)
        guard length >= minBytes else { throw DecodeError.invalidLength(field: field, bytes: length) }
        let slice = bytes[position..<(position + length)]
        position += length
        guard let string = String(validating: slice, as: UTF8.self) else { throw DecodeError.invalidUTF8 }
        return string
    }

    /// Reads a count of elements that each take at least `minElementBytes`. A count that cannot
    /// fit in the bytes left is rejected before anything is allocated for it.
    mutating func readCount(field: String, minElementBytes: Int) throws -> Int {
        let count = try readVarint()
        guard count <= UInt64(remaining / max(1, minElementBytes)) else {
            throw DecodeError.invalidLength(field: field, bytes: count > UInt64(Int.max) ? Int.max : Int(count))
        }
        return Int(count)
    }

    /// Splits off the next `length` bytes as their own reader.
    mutating func readSubreader(length: Int) throws -> ByteReader {
        guard length <= remaining else { throw DecodeError.truncated }
        let sub = ByteReader(bytes, position: position, end: position + length)
        position += length
        return sub
    }

    func expectEnd() throws {
        guard isAtEnd else { throw DecodeError.trailingBytes(remaining) }
    }
}

// MARK: - Datagram codec

enum GossipCodec {
    /// Smallest encoded message: a kind byte and a zero length.
    static let minFramedMessageBytes = 2

    /// Encodes a message as kind, body length and body, ready to place in a datagram.
    static func frame(_ message: GossipMessage) -> [UInt8] {
        var body = ByteWriter()
        let kind: MessageKind
        switch message {
        case .ping(let sequence, let target, let targetEpoch):
            kind = .ping
            body.writeVarint(sequence)
            body.writeString(target)
            body.writeUInt64BigEndian(targetEpoch)
        case .pingRequest(let sequence, let target, let targetEpoch, let targetAddress):
            kind = .pingRequest
            body.writeVarint(sequence)
            body.writeString(target)
            body.writeUInt64BigEndian(targetEpoch)
            body.writeString(targetAddress)
        case .ack(let sequence):
            kind = .ack
            body.writeVarint(sequence)
        case .nack(let sequence):
            kind = .nack
            body.writeVarint(sequence)
        case .alive(let alive):
            kind = .alive
            body.writeString(alive.name)
            body.writeUInt64BigEndian(alive.epoch)
            body.writeSigned(alive.startedAt)
            body.writeVarint(alive.incarnation)
            body.writeString(alive.gossipAddress)
            body.writeString(alive.clientAddress)
        case .suspect(let accusation), .dead(let accusation):
            kind = message.isSuspect ? .suspect : .dead
            body.writeString(accusation.name)
            body.writeUInt64BigEndian(accusation.epoch)
            body.writeVarint(accusation.incarnation)
            body.writeString(accusation.accuser)
        case .left(let name, let epoch, let incarnation):
            kind = .left
            body.writeString(name)
            body.writeUInt64BigEndian(epoch)
            body.writeVarint(incarnation)
        case .presence(let delta):
            kind = .presence
            writeDelta(delta, to: &body)
        case .customStatus(let record):
            kind = .customStatus
            writeStatus(record, to: &body)
        case .lastSeen(let record):
            kind = .lastSeen
            body.writeString(record.userID)
            body.writeSigned(record.wall)
        }
        var framed = ByteWriter()
        framed.writeByte(kind.rawValue)
        framed.writeVarint(UInt64(body.bytes.count))
        framed.writeBytes(body.bytes)
        return framed.bytes
    }

    /// Size of a datagram holding `messageCount` framed messages of `framedBytes` bytes in total.
    static func datagramSize(messageCount: Int, framedBytes: Int) -> Int {
        1 + varintSize(UInt64(messageCount)) + framedBytes
    }

    /// Joins framed messages into one datagram.
    static func datagram(_ framedMessages: [[UInt8]]) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeByte(gossipProtocolVersion)
        writer.writeVarint(UInt64(framedMessages.count))
        for framed in framedMessages {
            writer.writeBytes(framed)
        }
        return writer.bytes
    }

    static func encodeDatagram(_ messages: [GossipMessage]) -> [UInt8] {
        datagram(messages.map(frame))
    }

    /// Decodes a whole datagram; any error rejects all of it.
    static func decodeDatagram(_ bytes: [UInt8]) throws -> [GossipMessage] {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version == gossipProtocolVersion else { throw DecodeError.unsupportedVersion(version) }
        let count = try reader.readCount(field: "message count", minElementBytes: minFramedMessageBytes)
        var messages: [GossipMessage] = []
        messages.reserveCapacity(count)
        for _ in 0..<count {
            let rawKind = try reader.readByte()
            guard let kind = MessageKind(rawValue: rawKind) else { throw DecodeError.unknownKind(rawKind) }
            let length = try reader.readLength(field: "message body", maxBytes: reader.remaining)
            var body = try reader.readSubreader(length: length)
            messages.append(try decodeBody(kind, from: &body))
            // A body longer than its kind needs is malformed in version 1, because fields are only
            // added with a new protocol version.
            try body.expectEnd()
        }
        try reader.expectEnd()
        return messages
    }

    private static func decodeBody(_ kind: MessageKind, from body: inout ByteReader) throws -> GossipMessage {
        switch kind {
        case .ping:
            let sequence = try body.readVarint()
            let target = try body.readString(field: "ping target", maxBytes: WireLimits.maxNameBytes)
            let targetEpoch = try body.readUInt64BigEndian()
            return .ping(sequence: sequence, target: target, targetEpoch: targetEpoch)
        case .pingRequest:
            let sequence = try body.readVarint()
            let target = try body.readString(field: "ping-req target", maxBytes: WireLimits.maxNameBytes)
            let targetEpoch = try body.readUInt64BigEndian()
            let address = try body.readString(field: "ping-req address", maxBytes: WireLimits.maxAddressBytes)
            return .pingRequest(sequence: sequence, target: target, targetEpoch: targetEpoch, targetAddress: address)
        case .ack:
            return .ack(sequence: try body.readVarint())
        case .nack:
            return .nack(sequence: try body.readVarint())
        case .alive:
            let name = try body.readString(field: "alive name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try body.readUInt64BigEndian()
            let startedAt = try body.readSigned()
            let incarnation = try body.readVarint()
            let gossipAddress = try body.readString(field: "alive gossip address", maxBytes: WireLimits.maxAddressBytes)
            let clientAddress = try body.readString(
                field: "alive client address", minBytes: 0, maxBytes: WireLimits.maxAddressBytes)
            return .alive(AliveAnnouncement(
                name: name, epoch: epoch, startedAt: startedAt, incarnation: incarnation,
                gossipAddress: gossipAddress, clientAddress: clientAddress))
        case .suspect, .dead:
            let name = try body.readString(field: "accused name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try body.readUInt64BigEndian()
            let incarnation = try body.readVarint()
            let accuser = try body.readString(field: "accuser name", maxBytes: WireLimits.maxNameBytes)
            let accusation = MemberAccusation(name: name, epoch: epoch, incarnation: incarnation, accuser: accuser)
            return kind == .suspect ? .suspect(accusation) : .dead(accusation)
        case .left:
            let name = try body.readString(field: "left name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try body.readUInt64BigEndian()
            let incarnation = try body.readVarint()
            return .left(name: name, epoch: epoch, incarnation: incarnation)
        case .presence:
            return .presence(try readDelta(from: &body))
        case .customStatus:
            return .customStatus(try readStatus(from: &body))
        case .lastSeen:
            let user = try body.readString(field: "user ID", maxBytes: WireLimits.maxUserIDBytes)
            return .lastSeen(LastSeenRecord(userID: user, wall: try body.readSigned()))
        }
    }

    // Presence deltas and status records are shared with the push-pull payload.

    static func writeDelta(_ delta: PresenceDelta, to writer: inout ByteWriter) {
        writer.writeString(delta.replica.name)
        writer.writeUInt64BigEndian(delta.replica.epoch)
        writer.writeString(delta.userID)
        writer.writeVarint(UInt64(delta.entry.sessionCount))
        writer.writeVarint(delta.entry.version)
        writer.writeSigned(delta.entry.changedAt)
    }

    static func readDelta(from reader: inout ByteReader) throws -> PresenceDelta {
        let name = try reader.readString(field: "replica name", maxBytes: WireLimits.maxNameBytes)
        let epoch = try reader.readUInt64BigEndian()
        let user = try reader.readString(field: "user ID", maxBytes: WireLimits.maxUserIDBytes)
        let sessionCount = try reader.readUInt32(field: "session count")
        let version = try reader.readVarint()
        guard version > 0 else { throw DecodeError.valueOutOfRange(field: "presence version") }
        let changedAt = try reader.readSigned()
        return PresenceDelta(
            replica: ReplicaID(name: name, epoch: epoch), userID: user,
            entry: PresenceEntry(sessionCount: sessionCount, version: version, changedAt: changedAt))
    }

    static func writeStatus(_ record: StatusRecord, to writer: inout ByteWriter) {
        writer.writeString(record.userID)
        writer.writeString(record.value.status)
        if let text = record.value.text {
            writer.writeByte(1)
            writer.writeString(text)
        } else {
            writer.writeByte(0)
        }
        writer.writeSigned(record.stamp.wall)
        writer.writeVarint(UInt64(record.stamp.counter))
        writer.writeString(record.stamp.node)
        let clock = record.clock.sorted { $0.key < $1.key }
        writer.writeVarint(UInt64(clock.count))
        for (replica, count) in clock {
            writer.writeString(replica.name)
            writer.writeUInt64BigEndian(replica.epoch)
            writer.writeVarint(count)
        }
    }

    static func readStatus(from reader: inout ByteReader) throws -> StatusRecord {
        let user = try reader.readString(field: "user ID", maxBytes: WireLimits.maxUserIDBytes)
        let status = try reader.readString(field: "status", maxBytes: WireLimits.maxStatusBytes)
        let text: String?
        switch try reader.readByte() {
        case 0: text = nil
        case 1: text = try reader.readString(field: "status text", minBytes: 0, maxBytes: WireLimits.maxStatusTextBytes)
        default: throw DecodeError.valueOutOfRange(field: "status text flag")
        }
        let wall = try reader.readSigned()
        let counter = try reader.readUInt32(field: "status counter")
        let node = try reader.readString(field: "status node", maxBytes: WireLimits.maxNameBytes)
        let clockCount = try reader.readVarint()
        guard clockCount <= UInt64(StatusRecord.maxClockEntries) else {
            throw DecodeError.valueOutOfRange(field: "status clock count")
        }
        var clock: [ReplicaID: UInt64] = [:]
        for _ in 0..<clockCount {
            let name = try reader.readString(field: "status clock replica name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try reader.readUInt64BigEndian()
            clock[ReplicaID(name: name, epoch: epoch)] = try reader.readVarint()
        }
        return StatusRecord(
            userID: user, value: CustomStatusValue(status: status, text: text),
            stamp: StatusStamp(wall: wall, counter: counter, node: node), clock: clock)
    }

    static func varintSize(_ value: UInt64) -> Int {
        var size = 1
        var rest = value >> 7
        while rest > 0 {
            size += 1
            rest >>= 7
        }
        return size
    }
}

extension GossipMessage {
    fileprivate var isSuspect: Bool {
        if case .suspect = self { return true }
        return false
    }
}

/// Returns the longest prefix of `string` whose UTF-8 form fits in `maxBytes`, cut at a scalar
/// boundary.
func truncatedUTF8(_ string: String, maxBytes: Int) -> String {
    guard string.utf8.count > maxBytes else { return string }
    var scalars = String.UnicodeScalarView()
    var used = 0
    for scalar in string.unicodeScalars {
        let size = String(scalar).utf8.count
        if used + size > maxBytes { break }
        used += size
        scalars.append(scalar)
    }
    return String(scalars)
}

/// Checks that `string` is a user ID the codec can carry: 1 to 128 bytes of UTF-8.
func isValidUserID(_ string: String) -> Bool {
    let count = string.utf8.count
    return count >= 1 && count <= WireLimits.maxUserIDBytes
}
