import CLibUV
import Foundation
import MeshCore
import PresenceProtocol

extension PresenceNode: ClientServerDelegate {
    func authorizeUpgrade(path: String, query: [String: String], authorization: String?) -> Result<UpgradeGrant, UpgradeRejection> {
        guard !isStopping else {
            return .failure(UpgradeRejection(status: 503, message: "node is shutting down"))
        }
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        guard route == "/v1/ws" else {
            return .failure(UpgradeRejection(status: 404, message: "WebSocket endpoint is /v1/ws, not \(route)"))
        }
        guard clientServer.sessions.count < config.limits.maxSessions else {
            return .failure(UpgradeRejection(status: 503, message: "node already has its maximum of \(config.limits.maxSessions) sessions (limits.maxSessions); try another node"))
        }
        let isObserver: Bool
        switch query["observe"]?.lowercased() {
        case nil, "false", "0": isObserver = false
        case "true", "1": isObserver = true
        case let other?:
            return .failure(UpgradeRejection(status: 400, message: "observe must be true or false, got \"\(other.prefix(32))\""))
        }
        let userID: String
        switch config.auth.mode {
        case .none:
            guard let id = query["userId"] else {
                return .failure(UpgradeRejection(status: 400, message: "missing userId query parameter: connect to /v1/ws?userId=ID"))
            }
            userID = id
        case .hs256:
            switch authenticate(query: query, authorization: authorization) {
            case .failure(let rejection): return .failure(rejection)
            case .success(let subject): userID = subject
            }
            if let claimed = query["userId"], claimed != userID {
                return .failure(UpgradeRejection(status: 400, message: "userId \"\(claimed.prefix(128))\" does not match the token's sub; leave userId out"))
            }
        }
        if let problem = UserIDRules.validationError(userID) {
            let source = config.auth.mode == .hs256 ? "the token's sub is not a valid user ID" : "invalid userId"
            return .failure(UpgradeRejection(status: 400, message: "\(source): \(problem)"))
        }
        return .success(UpgradeGrant(userID: userID, isObserver: isObserver))
    }

    /// Returns the token of an `Authorization: Bearer TOKEN` header, nil for another scheme. The
    /// scheme name is case-insensitive (RFC 7235, section 2.1).
    static func bearerToken(_ authorization: String?) -> String? {
        guard let authorization else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    /// Verifies the JWT of a request in `hs256` mode, from `Authorization: Bearer` or `?token=`,
    /// and returns its subject.
    func authenticate(query: [String: String], authorization: String?) -> Result<String, UpgradeRejection> {
        guard let token = Self.bearerToken(authorization) ?? query["token"] else {
            return .failure(UpgradeRejection(status: 401, message: "missing token: send Authorization: Bearer TOKEN or ?token=TOKEN"))
        }
        switch JWT.verifyHS256(token, secrets: config.auth.secrets, nowSeconds: PresenceNode.wallClockMilliseconds() / 1000) {
        case .success(let subject): return .success(subject)
        case .failure(let problem): return .failure(UpgradeRejection(status: 401, message: "invalid token: \(problem.message)"))
        }
    }

    func sessionOpened(_ session: ClientSession) {
        stats.sessionsOpened += 1
        logger.debug("session opened", [("session", session.id), ("user", session.userID)])
        session.send(OutgoingFrame(EventEncoding.sessionReady(sessionID: session.id, userID: session.userID, node: config.name)))
        guard !session.isObserver else { return }
        apply(instance.onSessionOpened(user: session.userID, at: now()))
    }

    func sessionClosed(_ session: ClientSession) {
        stats.sessionsClosed += 1
        subscriptions.remove(session)
        logger.debug("session closed", [("session", session.id), ("user", session.userID)])
        // After a leave the whole replica is gone from the cluster; per-session deltas would only add noise.
        guard !isStopping, !session.isObserver else { return }
        apply(instance.onSessionClosed(user: session.userID, at: now()))
    }

    func sessionRejectedMessage(_ session: ClientSession, reason: String) {
        stats.requestErrors += 1
        let code = reason.hasPrefix("binary") ? "invalid_message" : "message_too_large"
        session.send(OutgoingFrame(EventEncoding.error(code: code, message: reason, requestID: nil)))
    }

    func sessionReceived(_ session: ClientSession, message: [UInt8]) {
        stats.messagesReceived += 1
        switch ClientRequestDecoder.decode(message, maxUsers: config.limits.maxUsersPerRequest) {
        case .failure(let error):
            reject(session, error)
        case .success(let (request, requestID)):
            handle(request, requestID: requestID, from: session)
        }
    }

    private func reject(_ session: ClientSession, _ error: RequestError) {
        stats.requestErrors += 1
        logger.debug("request rejected", [("session", session.id), ("code", error.code), ("reason", error.message)])
        session.send(OutgoingFrame(EventEncoding.error(code: error.code, message: error.message, requestID: error.requestID)))
    }

    private func handle(_ request: ClientRequest, requestID: String?, from session: ClientSession) {
        switch request {
        case .subscribe(.all):
            if !session.subscribedToAll {
                guard subscriptions.wildcardCount < config.limits.maxWildcardSubscribers else {
                    reject(session, RequestError(
                        code: "wildcard_limit",
                        message: "this node allows \(config.limits.maxWildcardSubscribers) \"*\" subscriptions at once (limits.maxWildcardSubscribers); subscribe to a list of user IDs instead",
                        requestID: requestID))
                    return
                }
            }
            // The snapshot is queued before any later event, so the stream continues from it.
            let (users, truncated) = allOnlineUsers()
            session.send(OutgoingFrame(EventEncoding.snapshot(users, truncated: truncated, requestID: requestID)))
            subscriptions.subscribeToAll(session)

        case .subscribe(.users(let ids)):
            let added = Set(ids).subtracting(session.subscriptions).count
            guard session.subscriptions.count + added <= config.limits.maxSubscriptionsPerSession else {
                reject(session, RequestError(
                    code: "subscription_limit",
                    message: "a session may watch \(config.limits.maxSubscriptionsPerSession) users (limits.maxSubscriptionsPerSession); this request would make \(session.subscriptions.count + added)",
                    requestID: requestID))
                return
            }
            session.send(OutgoingFrame(EventEncoding.snapshot(ids.map(publishedPresence), requestID: requestID)))
            subscriptions.subscribe(session, to: ids)

        case .unsubscribe(.all):
            subscriptions.unsubscribeFromAll(session)

        case .unsubscribe(.users(let ids)):
            subscriptions.unsubscribe(session, from: ids)

        case .query(.all):
            let (users, truncated) = allOnlineUsers()
            session.send(OutgoingFrame(EventEncoding.snapshot(users, truncated: truncated, requestID: requestID)))

        case .query(.users(let ids)):
            session.send(OutgoingFrame(EventEncoding.snapshot(ids.map(publishedPresence), requestID: requestID)))

        case .setStatus(let status):
            guard !session.isObserver else {
                reject(session, RequestError(code: "observer_session", message: "an observer session (observe=true) cannot set a status", requestID: requestID))
                return
            }
            apply(instance.onStatusSet(user: session.userID, status: status, at: now()))
        }
    }

    /// Returns presence as this node last published it. A user whose offline event is still
    /// waiting out the grace period is reported online, matching the last event clients received.
    func publishedPresence(_ user: UserID) -> UserPresenceState {
        if let pending = pendingOffline[user] {
            var state = pending.state
            state.isOnline = true
            state.lastSeen = nil
            return state
        }
        return instance.presence(of: user)
    }

    /// Returns every user online in the published view, sorted by ID and capped at
    /// `limits.maxSnapshotUsers`, and whether the cap cut the list.
    func allOnlineUsers() -> (users: [UserPresenceState], truncated: Bool) {
        var ids = Set(instance.onlineUsers)
        ids.formUnion(pendingOffline.keys)
        let users = ids.sorted().prefix(config.limits.maxSnapshotUsers).map(publishedPresence)
        return (users, ids.count > users.count)
    }

    /// Fans presence changes out to subscribers. With `presence.offlineGraceMs` set, an offline
    /// waits and is dropped if the user comes back online first.
    func publish(_ changes: [UserPresenceState]) {
        let grace = config.presence.offlineGraceMs
        for change in changes {
            if grace > 0 {
                if !change.isOnline {
                    if let pending = pendingOffline[change.userID] {
                        pendingOffline[change.userID] = (change, pending.due)
                        continue
                    }
                    // Only a user clients see online waits; for a user already offline this is
                    // news about `lastSeen` and goes out at once.
                    if publishedOnline.contains(change.userID) {
                        pendingOffline[change.userID] = (change, uv_now(loop) + grace)
                        scheduleGraceTimer()
                        continue
                    }
                }
                if let pending = pendingOffline.removeValue(forKey: change.userID) {
                    stats.offlineEventsCancelled += 1
                    // Clients still see the user online; only a custom status change is news.
                    guard change.custom != pending.state.custom else { continue }
                }
            }
            fanOut(change)
        }
    }

    private func fanOut(_ change: UserPresenceState) {
        stats.presenceEvents += 1
        if config.presence.offlineGraceMs > 0 {
            if change.isOnline {
                publishedOnline.insert(change.userID)
            } else {
                publishedOnline.remove(change.userID)
            }
        }
        var frame: OutgoingFrame?
        subscriptions.forEachWatcher(of: change.userID) { session in
            if frame == nil { frame = OutgoingFrame(EventEncoding.userPresence(change)) }
            session.send(frame!)
            stats.framesQueued += 1
        }
    }

    private func scheduleGraceTimer() {
        guard let next = pendingOffline.values.map(\.due).min() else { return }
        let current = uv_now(loop)
        uv_timer_start(graceTimer, { timer in
            let node = Unmanaged<PresenceNode>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            node.flushDueOfflineEvents()
        }, next > current ? next - current : 0, 0)
    }

    private func flushDueOfflineEvents() {
        let current = uv_now(loop)
        let due = pendingOffline.filter { $0.value.due <= current }.sorted { $0.value.due < $1.value.due }
        for (user, pending) in due {
            pendingOffline[user] = nil
            fanOut(pending.state)
        }
        scheduleGraceTimer()
    }
}
