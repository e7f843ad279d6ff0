// The push-pull payload: one TCP frame each way with a node's full membership and the presence
// state the other side lacks.
//
//     version: UInt8 (= pushPullProtocolVersion)
//     kind:    UInt8 (1 request, 2 reply)
//     sender name: string, sender epoch: 8 bytes
//     members:  count, then name, epoch, startedAt, incarnation, state: UInt8, gossip address,
//               client address
//     clocks:   count, then replica name, epoch, contiguous version, collection horizon,
//               flags: UInt8 (bit 0: the entries of this replica are its whole state)
//     entries:  count, then presence deltas as in a datagram
//     statuses: count, then status records as in a datagram
//     lastSeen: count, then user ID, wall-clock milliseconds (zigzag varint), age in ms (varint)
//
// A request carries the sender's contiguous clocks and all its entries, every replica whole. A
// reply carries the responder's clocks and, per replica, the entries above the requester's
// clock, or every entry (whole) when the requester's clock is below the responder's collection
// horizon: then the requester may hold an entry whose tombstone the responder collected, and
// only the whole state shows that the entry is gone. Both kinds carry every `lastSeen` register
// with its age when the payload was built.

/// Version byte of the push-pull payload. Version 1 had clocks without horizon and flags;
/// version 2 added them with tombstone collection. Version 3 added the `lastSeen` list at the
/// end, so a restarted node learns the `lastSeen` of users whose replica was dropped.
let pushPullProtocolVersion: UInt8 = 3

/// Push-pull payload kinds; the numbers are the wire protocol, append-only.
enum PushPullKind: UInt8, Sendable {
    case request = 1
    case reply = 2
}

/// One member as a push-pull payload lists it.
struct MemberSnapshot: Equatable, Sendable {
    var name: String
    var epoch: Epoch
    var startedAt: Int64
    var incarnation: Incarnation
    var state: MemberState
    var gossipAddress: GossipAddress
    var clientAddress: String
}

struct PushPullPayload: Equatable, Sendable {
    var kind: PushPullKind
    var senderName: String
    var senderEpoch: Epoch
    var members: [MemberSnapshot]
    var clocks: [ReplicaID: UInt64]
    var entries: [PresenceDelta]
    var statuses: [StatusRecord]
    /// Collection horizons of the replicas in `clocks`; a replica missing here has horizon 0.
    var horizons: [ReplicaID: UInt64] = [:]
    /// Replicas in `clocks` whose entries the payload carries whole.
    var wholeReplicas: Set<ReplicaID> = []
    /// The sender's `lastSeen` registers with their ages.
    var lastSeen: [LastSeenRecord] = []
}

enum PushPullCodec {
    static func encode(_ payload: PushPullPayload) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeByte(pushPullProtocolVersion)
        writer.writeByte(payload.kind.rawValue)
        writer.writeString(payload.senderName)
        writer.writeUInt64BigEndian(payload.senderEpoch)

        writer.writeVarint(UInt64(payload.members.count))
        for member in payload.members {
            writer.writeString(member.name)
            writer.writeUInt64BigEndian(member.epoch)
            writer.writeSigned(member.startedAt)
            writer.writeVarint(member.incarnation)
            writer.writeByte(member.state.rawValue)
            writer.writeString(member.gossipAddress)
            writer.writeString(member.clientAddress)
        }

        let clocks = payload.clocks.sorted { $0.key < $1.key }
        writer.writeVarint(UInt64(clocks.count))
        for (replica, contiguous) in clocks {
            writer.writeString(replica.name)
            writer.writeUInt64BigEndian(replica.epoch)
            writer.writeVarint(contiguous)
            writer.writeVarint(payload.horizons[replica] ?? 0)
            writer.writeByte(payload.wholeReplicas.contains(replica) ? 1 : 0)
        }

        writer.writeVarint(UInt64(payload.entries.count))
        for delta in payload.entries {
            GossipCodec.writeDelta(delta, to: &writer)
        }

        writer.writeVarint(UInt64(payload.statuses.count))
        for record in payload.statuses {
            GossipCodec.writeStatus(record, to: &writer)
        }

        writer.writeVarint(UInt64(payload.lastSeen.count))
        for record in payload.lastSeen {
            writer.writeString(record.userID)
            writer.writeSigned(record.wall)
            writer.writeVarint(record.ageMs)
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) throws -> PushPullPayload {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version == pushPullProtocolVersion else { throw DecodeError.unsupportedVersion(version) }
        let rawKind = try reader.readByte()
        guard let kind = PushPullKind(rawValue: rawKind) else { throw DecodeError.unknownKind(rawKind) }
        let senderName = try reader.readString(field: "sender name", maxBytes: WireLimits.maxNameBytes)
        let senderEpoch = try reader.readUInt64BigEndian()

        // Each element takes at least this many bytes, which bounds the counts before allocation.
        let memberCount = try reader.readCount(field: "member count", minElementBytes: 14)
        var members: [MemberSnapshot] = []
        members.reserveCapacity(memberCount)
        for _ in 0..<memberCount {
            let name = try reader.readString(field: "member name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try reader.readUInt64BigEndian()
            let startedAt = try reader.readSigned()
            let incarnation = try reader.readVarint()
            let rawState = try reader.readByte()
            guard let state = MemberState(rawValue: rawState) else {
                throw DecodeError.valueOutOfRange(field: "member state")
            }
            let gossipAddress = try reader.readString(field: "member gossip address", maxBytes: WireLimits.maxAddressBytes)
            let clientAddress = try reader.readString(
                field: "member client address", minBytes: 0, maxBytes: WireLimits.maxAddressBytes)
            members.append(MemberSnapshot(
                name: name, epoch: epoch, startedAt: startedAt, incarnation: incarnation, state: state,
                gossipAddress: gossipAddress, clientAddress: clientAddress))
        }

        let clockCount = try reader.readCount(field: "clock count", minElementBytes: 13)
        var clocks: [ReplicaID: UInt64] = [:]
        var horizons: [ReplicaID: UInt64] = [:]
        var wholeReplicas: Set<ReplicaID> = []
        for _ in 0..<clockCount {
            let name = try reader.readString(field: "clock replica name", maxBytes: WireLimits.maxNameBytes)
            let epoch = try reader.readUInt64BigEndian()
            let replica = ReplicaID(name: name, epoch: epoch)
            clocks[replica] = try reader.readVarint()
            let horizon = try reader.readVarint()
            if horizon > 0 { horizons[replica] = horizon }
            switch try reader.readByte() {
            case 0: break
            case 1: wholeReplicas.insert(replica)
            default: throw DecodeError.valueOutOfRange(field: "clock flags")
            }
        }

        let entryCount = try reader.readCount(field: "entry count", minElementBytes: 14)
        var entries: [PresenceDelta] = []
        entries.reserveCapacity(entryCount)
        for _ in 0..<entryCount {
            entries.append(try GossipCodec.readDelta(from: &reader))
        }

        let statusCount = try reader.readCount(field: "status count", minElementBytes: 8)
        var statuses: [StatusRecord] = []
        statuses.reserveCapacity(statusCount)
        for _ in 0..<statusCount {
            statuses.append(try GossipCodec.readStatus(from: &reader))
        }

        // A user ID of 1 byte or more plus two varints: at least 4 bytes.
        let lastSeenCount = try reader.readCount(field: "lastSeen count", minElementBytes: 4)
        var lastSeen: [LastSeenRecord] = []
        lastSeen.reserveCapacity(lastSeenCount)
        for _ in 0..<lastSeenCount {
            let user = try reader.readString(field: "user ID", maxBytes: WireLimits.maxUserIDBytes)
            let wall = try reader.readSigned()
            let age = try reader.readVarint()
            lastSeen.append(LastSeenRecord(userID: user, wall: wall, ageMs: age))
        }

        try reader.expectEnd()
        return PushPullPayload(
            kind: kind, senderName: senderName, senderEpoch: senderEpoch, members: members,
            clocks: clocks, entries: entries, statuses: statuses, horizons: horizons, wholeReplicas: wholeReplicas,
            lastSeen: lastSeen)
    }
}
