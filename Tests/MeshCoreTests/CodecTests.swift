import Testing
@testable import MeshCore

/// One message of every kind, with fields near their limits where that matters.
let everyKindOfMessage: [GossipMessage] = [
    .ping(sequence: 0, target: "node-1", targetEpoch: 0),
    .ping(sequence: .max, target: String(repeating: "n", count: WireLimits.maxNameBytes), targetEpoch: .max),
    .pingRequest(sequence: 42, target: "node-2", targetEpoch: 12, targetAddress: "127.0.0.1:7202"),
    .ack(sequence: 7),
    .nack(sequence: 1 << 40),
    .alive(AliveAnnouncement(
        name: "node-3", epoch: .max, startedAt: -5, incarnation: 9, gossipAddress: "127.0.0.1:7203",
        clientAddress: "")),
    .suspect(MemberAccusation(name: "node-3", epoch: 1, incarnation: 2, accuser: "node-1")),
    .dead(MemberAccusation(name: "node-3", epoch: 1, incarnation: 3, accuser: "nöde-ü")),
    .left(name: "node-4", epoch: 0, incarnation: 0),
    .presence(PresenceDelta(
        replica: ReplicaID(name: "node-1", epoch: 77), userID: String(repeating: "u", count: WireLimits.maxUserIDBytes),
        entry: PresenceEntry(sessionCount: .max, version: 1, changedAt: 1_700_000_000_000))),
    .presence(PresenceDelta(
        replica: ReplicaID(name: "node-1", epoch: 77), userID: "alice",
        entry: PresenceEntry(sessionCount: 0, version: .max, changedAt: .min))),
    .customStatus(StatusRecord(
        userID: "bob", value: CustomStatusValue(status: "away", text: "lunch 🍜"),
        stamp: StatusStamp(wall: 1_700_000_000_000, counter: 3, node: "node-2"))),
    .customStatus(StatusRecord(
        userID: "bob", value: CustomStatusValue(status: "busy", text: nil),
        stamp: StatusStamp(wall: .max, counter: .max, node: "node-2"))),
]

private func deltas(_ count: Int) -> [GossipMessage] {
    var messages: [GossipMessage] = []
    for index in 0..<count {
        let replica = ReplicaID(name: "node-\(index % 5)", epoch: UInt64(index))
        let entry = PresenceEntry(sessionCount: UInt32(index % 3), version: UInt64(index + 1), changedAt: Int64(index))
        messages.append(.presence(PresenceDelta(replica: replica, userID: "user-\(index)", entry: entry)))
    }
    return messages
}

@Test func codec_everyKind_roundTrips() throws {
    for message in everyKindOfMessage {
        let bytes = GossipCodec.encodeDatagram([message])
        #expect(bytes.first == gossipProtocolVersion)
        #expect(try GossipCodec.decodeDatagram(bytes) == [message])
    }
}

@Test func codec_allKindsInOneDatagram_roundTrip() throws {
    let bytes = GossipCodec.encodeDatagram(everyKindOfMessage)
    #expect(try GossipCodec.decodeDatagram(bytes) == everyKindOfMessage)
}

@Test func codec_kindNumbers_areFixed() {
    let expected: [(MessageKind, UInt8)] = [
        (.ping, 1), (.pingRequest, 2), (.ack, 3), (.nack, 4), (.alive, 5), (.suspect, 6), (.dead, 7),
        (.left, 8), (.presence, 9), (.customStatus, 10), (.lastSeen, 11),
    ]
    for (kind, number) in expected {
        #expect(kind.rawValue == number)
    }
    #expect(gossipProtocolVersion == 3)
    #expect(pushPullProtocolVersion == 3)
}

@Test func codec_moreThan255Messages_roundTrip() throws {
    for count in [255, 256, 1000] {
        let messages = (0..<count).map { GossipMessage.ack(sequence: UInt64($0)) }
        let bytes = GossipCodec.encodeDatagram(messages)
        #expect(try GossipCodec.decodeDatagram(bytes) == messages)
    }
}

@Test func codec_batches_splitIntoDatagramsWithinLimit() throws {
    let maxPacketBytes = 1400
    for count in [255, 256, 1000] {
        var queue = BroadcastQueue()
        let messages = deltas(count)
        for case .presence(let delta) in messages {
            queue.enqueue(.presence(delta.replica, delta.userID), framed: GossipCodec.frame(.presence(delta)))
        }
        var received: [GossipMessage] = []
        var datagrams = 0
        while !queue.isEmpty {
            var framed: [[UInt8]] = []
            queue.fill(&framed, maxDatagramBytes: maxPacketBytes, retransmitLimit: 1)
            #expect(!framed.isEmpty)
            let bytes = GossipCodec.datagram(framed)
            #expect(bytes.count <= maxPacketBytes)
            received += try GossipCodec.decodeDatagram(bytes)
            datagrams += 1
        }
        #expect(datagrams > 1)
        #expect(received.count == count)
        #expect(Set(received.map(\.debugKey)) == Set(messages.map(\.debugKey)))
    }
}

@Test func codec_truncatedDatagram_isRejectedAtEveryLength() {
    let bytes = GossipCodec.encodeDatagram(everyKindOfMessage)
    for length in 0..<bytes.count {
        #expect(throws: DecodeError.self) { try GossipCodec.decodeDatagram(Array(bytes[0..<length])) }
    }
}

@Test func codec_trailingByte_isRejected() {
    let bytes = GossipCodec.encodeDatagram([.ack(sequence: 1)]) + [0]
    #expect(throws: DecodeError.trailingBytes(1)) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_unknownKind_isRejected() {
    let bytes: [UInt8] = [gossipProtocolVersion, 1, 200, 0]
    #expect(throws: DecodeError.unknownKind(200)) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_otherVersion_isRejected() {
    var bytes = GossipCodec.encodeDatagram([.ack(sequence: 1)])
    bytes[0] = gossipProtocolVersion + 1
    #expect(throws: DecodeError.unsupportedVersion(gossipProtocolVersion + 1)) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_invalidUTF8_isRejected() {
    var writer = ByteWriter()
    writer.writeVarint(1)
    writer.writeVarint(2)
    writer.writeBytes([0xC3, 0x28])
    let body = writer.bytes
    let bytes: [UInt8] = [gossipProtocolVersion, 1, MessageKind.ping.rawValue, UInt8(body.count)] + body
    #expect(throws: DecodeError.invalidUTF8) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_overlongUserID_isRejected() {
    let delta = PresenceDelta(
        replica: ReplicaID(name: "n", epoch: 1), userID: String(repeating: "u", count: WireLimits.maxUserIDBytes + 1),
        entry: PresenceEntry(sessionCount: 1, version: 1, changedAt: 0))
    let bytes = GossipCodec.encodeDatagram([.presence(delta)])
    #expect(throws: DecodeError.self) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_lengthPastEnd_isRejected() {
    let bytes: [UInt8] = [gossipProtocolVersion, 1, MessageKind.ack.rawValue, 100, 1]
    #expect(throws: DecodeError.self) { try GossipCodec.decodeDatagram(bytes) }
}

@Test func codec_hugeCount_isRejectedBeforeAllocation() {
    var writer = ByteWriter()
    writer.writeByte(gossipProtocolVersion)
    writer.writeVarint(.max)
    #expect(throws: DecodeError.self) { try GossipCodec.decodeDatagram(writer.bytes) }
}

@Test func codec_overlongVarint_isRejected() throws {
    let bytes: [UInt8] = [gossipProtocolVersion, 1, MessageKind.ack.rawValue, 11] + Array(repeating: 0xFF, count: 10) + [1]
    #expect(throws: DecodeError.self) { try GossipCodec.decodeDatagram(bytes) }
    var reader = ByteReader(Array(repeating: 0xFF, count: 9) + [0x02])
    #expect(throws: DecodeError.varintOverflow) { try reader.readVarint() }
    var maxReader = ByteReader(Array(repeating: 0xFF, count: 9) + [0x01])
    #expect(try maxReader.readVarint() == .max)
}

@Test func codec_signedValues_roundTrip() throws {
    for value: Int64 in [0, 1, -1, 63, -64, 1_700_000_000_000, .max, .min] {
        var writer = ByteWriter()
        writer.writeSigned(value)
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readSigned() == value)
    }
}

@Test func instance_truncatedDatagrams_areCountedAndDropped() {
    let network = TestNetwork.cluster(2)
    let target = TestNetwork.address(1)
    let alive = GossipMessage.alive(AliveAnnouncement(
        name: "intruder", epoch: 5, startedAt: 0, incarnation: 1, gossipAddress: "127.0.0.1:9999", clientAddress: ""))
    let bytes = GossipCodec.encodeDatagram([alive] + everyKindOfMessage)
    let before = network.node(target).counters
    for length in 0..<bytes.count {
        network.event(target) { $0.onDatagram(Array(bytes[0..<length]), from: "127.0.0.1:9999", at: $1) }
    }
    let after = network.node(target).counters
    #expect(after.datagramsMalformed - before.datagramsMalformed == UInt64(bytes.count))
    #expect(after.datagramsReceived - before.datagramsReceived == UInt64(bytes.count))
    // The alive message at the front decodes on its own, but no part of a rejected datagram is used.
    #expect(network.member("intruder", on: target) == nil)
}

@Test func instance_randomBytes_areCountedAndDropped() {
    let network = TestNetwork.cluster(2)
    let target = TestNetwork.address(1)
    var random = SeededRandom(seed: 2024)
    let before = network.node(target).counters
    let membersBefore = network.node(target).members
    var decodable = 0
    for _ in 0..<10_000 {
        let length = Int.random(in: 0...300, using: &random)
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
        if (try? GossipCodec.decodeDatagram(bytes)) != nil { decodable += 1 }
        network.event(target) { $0.onDatagram(bytes, from: "127.0.0.1:9999", at: $1) }
    }
    let after = network.node(target).counters
    #expect(decodable == 0)
    #expect(after.datagramsMalformed - before.datagramsMalformed == 10_000)
    #expect(network.node(target).members == membersBefore)
}

@Test func instance_randomBytesWithValidHeader_areRejected() {
    var random = SeededRandom(seed: 99)
    var instance = MeshInstance(
        config: MeshConfig(name: "n", gossipAddress: "127.0.0.1:1", clientAddress: "", seeds: [], gossip: .local),
        epoch: 1, seed: 1)
    _ = instance.onStart(at: MeshTime(monotonic: 0, wall: 0))
    var malformed: UInt64 = 0
    for _ in 0..<10_000 {
        let length = Int.random(in: 0...200, using: &random)
        let kind = UInt8.random(in: 1...10, using: &random)
        let body = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
        let bytes: [UInt8] = [gossipProtocolVersion, 1, kind] + body
        if (try? GossipCodec.decodeDatagram(bytes)) == nil { malformed += 1 }
        _ = instance.onDatagram(bytes, from: "127.0.0.1:2", at: MeshTime(monotonic: 1, wall: 1))
    }
    #expect(instance.counters.datagramsMalformed == malformed)
    #expect(malformed > 9_900)
}

// MARK: - Push-pull payload

private func samplePayload(kind: PushPullKind) -> PushPullPayload {
    PushPullPayload(
        kind: kind, senderName: "node-1", senderEpoch: 11,
        members: [
            MemberSnapshot(
                name: "node-1", epoch: 11, startedAt: 100, incarnation: 2, state: .alive,
                gossipAddress: "127.0.0.1:7201", clientAddress: "127.0.0.1:7101"),
            MemberSnapshot(
                name: "node-2", epoch: 12, startedAt: -1, incarnation: 0, state: .left,
                gossipAddress: "127.0.0.1:7202", clientAddress: ""),
        ],
        clocks: [ReplicaID(name: "node-1", epoch: 11): 5, ReplicaID(name: "node-2", epoch: 12): 0],
        entries: deltas(20).compactMap { if case .presence(let delta) = $0 { return delta } else { return nil } },
        statuses: everyKindOfMessage.compactMap { if case .customStatus(let record) = $0 { return record } else { return nil } })
}

@Test func pushPull_payload_roundTrips() throws {
    for kind in [PushPullKind.request, .reply] {
        let payload = samplePayload(kind: kind)
        #expect(try PushPullCodec.decode(PushPullCodec.encode(payload)) == payload)
    }
}

@Test func pushPull_truncatedPayload_isRejectedAtEveryLength() {
    let bytes = PushPullCodec.encode(samplePayload(kind: .request))
    for length in 0..<bytes.count {
        #expect(throws: DecodeError.self) { try PushPullCodec.decode(Array(bytes[0..<length])) }
    }
}

@Test func pushPull_malformedRequest_repliesNilAndCounts() {
    var instance = MeshInstance(
        config: MeshConfig(name: "n", gossipAddress: "127.0.0.1:1", clientAddress: "", seeds: [], gossip: .local),
        epoch: 1, seed: 1)
    _ = instance.onStart(at: MeshTime(monotonic: 0, wall: 0))
    var random = SeededRandom(seed: 5)
    let valid = PushPullCodec.encode(samplePayload(kind: .request))
    var inputs: [[UInt8]] = [[], [pushPullProtocolVersion], PushPullCodec.encode(samplePayload(kind: .reply))]
    inputs.append(Array(valid.dropLast()))
    for _ in 0..<1_000 {
        inputs.append((0..<Int.random(in: 0...100, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
    }
    for input in inputs {
        let (reply, _) = instance.onPushPullRequest(input, at: MeshTime(monotonic: 1, wall: 1))
        #expect(reply == nil)
    }
    #expect(instance.counters.pushPullsMalformed == UInt64(inputs.count))
    _ = instance.onPushPullReply([1, 2, 3], from: "127.0.0.1:2", at: MeshTime(monotonic: 1, wall: 1))
    #expect(instance.counters.pushPullsMalformed == UInt64(inputs.count) + 1)
}

extension GossipMessage {
    /// A printable identity for set comparisons in tests.
    var debugKey: String { "\(self)" }
}
