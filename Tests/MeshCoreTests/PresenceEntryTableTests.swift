import Testing
@testable import MeshCore

/// Applies the same random sets and removals to the table and to a dictionary of dictionaries,
/// and checks after every step that both hold the same entries.
@Test(arguments: [UInt64(1), 2, 3, 4, 5])
func entryTable_randomWrites_matchDictionary(seed: UInt64) {
    var random = SeededRandom(seed: seed)
    var table = PresenceEntryTable()
    var reference: [UserID: [ReplicaID: PresenceEntry]] = [:]
    let replicas = (0..<4).map { ReplicaID(name: "node-\($0)", epoch: UInt64($0) + 100) }
    // Half the IDs are over 15 bytes, the longest a Swift string stores without a heap buffer.
    let users = (0..<300).map { $0 % 2 == 0 ? "u\($0)" : "a-long-user-identifier-\($0)" }

    for step in 0..<6_000 {
        let user = users.randomElement(using: &random)!
        let replica = replicas.randomElement(using: &random)!
        if Int.random(in: 0..<3, using: &random) == 0 {
            table.remove(of: replica, user: user)
            reference[user]?[replica] = nil
            if reference[user]?.isEmpty == true { reference[user] = nil }
        } else {
            let entry = PresenceEntry(
                sessionCount: UInt32.random(in: 0...2, using: &random), version: UInt64(step) + 1,
                changedAt: Int64(step))
            table.set(entry, of: replica, user: user)
            reference[user, default: [:]][replica] = entry
        }
        #expect(table.entry(of: replica, user: user) == reference[user]?[replica], "seed \(seed) step \(step)")
    }

    var copied: [UserID: [ReplicaID: PresenceEntry]] = [:]
    table.forEach { user, replica, entry in copied[user, default: [:]][replica] = entry }
    #expect(copied == reference)
    #expect(table.userCount == reference.count)
    #expect(table.entryCount == reference.values.reduce(0) { $0 + $1.count })
    for user in users {
        #expect(table.contains(user) == (reference[user] != nil), "\(user)")
    }
    for replica in replicas {
        let held = Dictionary(uniqueKeysWithValues: table.entries(of: replica).map { ($0.user, $0.entry) })
        #expect(held == reference.compactMapValues { $0[replica] }, "\(replica.name)")
    }
    let online = reference.filter { $0.value.values.contains { $0.sessionCount > 0 } }.keys.sorted()
    #expect(table.onlineUsers.sorted() == online)
}

@Test func entryTable_removingEveryUser_freesReplicas() {
    var table = PresenceEntryTable()
    let a = ReplicaID(name: "a", epoch: 1)
    let b = ReplicaID(name: "b", epoch: 2)
    for number in 0..<2_000 {
        let entry = PresenceEntry(sessionCount: 1, version: UInt64(number) + 1, changedAt: 0)
        table.set(entry, of: a, user: "user-with-a-long-id-\(number)")
        table.set(entry, of: b, user: "user-with-a-long-id-\(number)")
    }
    #expect(table.entryCount == 4_000)
    #expect(Set(table.replicas) == [a, b])

    for number in 0..<2_000 {
        table.remove(of: a, user: "user-with-a-long-id-\(number)")
    }
    #expect(table.replicas == [b])
    #expect(table.userCount == 2_000)
    for number in 0..<2_000 {
        table.remove(of: b, user: "user-with-a-long-id-\(number)")
    }
    #expect(table.userCount == 0)
    #expect(table.entryCount == 0)
    #expect(table.replicas.isEmpty)
    #expect(table.entry(of: b, user: "user-with-a-long-id-1") == nil)
}

@Test func entryTable_userSummary_coversEveryReplica() {
    var table = PresenceEntryTable()
    let a = ReplicaID(name: "a", epoch: 1)
    let b = ReplicaID(name: "b", epoch: 2)
    table.set(PresenceEntry(sessionCount: 0, version: 1, changedAt: 50), of: a, user: "u")
    table.set(PresenceEntry(sessionCount: 1, version: 1, changedAt: 20), of: b, user: "u")

    let online = table.summary(of: "u")
    #expect(online.isOnline)
    #expect(online.latestChange == 50)

    table.remove(of: b, user: "u")
    let offline = table.summary(of: "u")
    #expect(!offline.isOnline)
    #expect(offline.latestChange == 50)
    #expect(table.summary(of: "nobody").latestChange == nil)
}
