import MeshCore

/// Maps each user to the local sessions watching them, plus the sessions watching everyone.
/// Values are session references keyed by object identity.
struct SubscriptionIndex {
    private(set) var watchers: [UserID: [ObjectIdentifier: ClientSession]] = [:]
    private(set) var wildcard: [ObjectIdentifier: ClientSession] = [:]

    mutating func subscribe(_ session: ClientSession, to users: [UserID]) {
        let key = ObjectIdentifier(session)
        for user in users where session.subscriptions.insert(user).inserted {
            watchers[user, default: [:]][key] = session
        }
    }

    mutating func subscribeToAll(_ session: ClientSession) {
        session.subscribedToAll = true
        wildcard[ObjectIdentifier(session)] = session
    }

    mutating func unsubscribe(_ session: ClientSession, from users: [UserID]) {
        let key = ObjectIdentifier(session)
        for user in users where session.subscriptions.remove(user) != nil {
            watchers[user]?[key] = nil
            if watchers[user]?.isEmpty == true { watchers[user] = nil }
        }
    }

    mutating func unsubscribeFromAll(_ session: ClientSession) {
        session.subscribedToAll = false
        wildcard[ObjectIdentifier(session)] = nil
    }

    /// Drops every subscription of a closed session.
    mutating func remove(_ session: ClientSession) {
        unsubscribe(session, from: Array(session.subscriptions))
        unsubscribeFromAll(session)
    }

    /// Calls `body` once for each session that watches `user`, explicitly or through `"*"`.
    func forEachWatcher(of user: UserID, _ body: (ClientSession) -> Void) {
        let explicit = watchers[user]
        explicit?.values.forEach(body)
        for (key, session) in wildcard where explicit?[key] == nil {
            body(session)
        }
    }

    var wildcardCount: Int { wildcard.count }
    var watchedUserCount: Int { watchers.count }
}
