import Foundation
import MeshCore
import PresenceProtocol

extension PresenceNode {
    func respond(path: String, query: [String: String], authorization: String?) -> HTTPResponse {
        stats.httpRequests += 1
        // With token authentication on, presence and membership need a token. The health check,
        // metrics and the dashboard page stay open, because the page sends its own token.
        if config.auth.mode == .hs256 && path.hasPrefix("/v1/") {
            if case .failure(let rejection) = authenticate(query: query, authorization: authorization) {
                return httpError(rejection.status, code: "unauthorized", message: rejection.message)
            }
        }
        switch path {
        case "/healthz":
            return .text("ok\n")
        case "/v1/cluster/members":
            return .json(membersJSON())
        case "/v1/presence":
            return presenceList(query["userIds"])
        case "/metrics":
            return HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metricsText().utf8))
        case "/", "/index.html":
            return HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Array(Dashboard.html.utf8))
        default:
            if path.hasPrefix("/v1/presence/") {
                let id = String(path.dropFirst("/v1/presence/".count))
                if let problem = UserIDRules.validationError(id) {
                    return httpError(400, code: "invalid_user_id", message: problem)
                }
                return .json(EventEncoding.presencePayload(publishedPresence(id)))
            }
            return httpError(404, code: "not_found", message: "no endpoint at \(path)")
        }
    }

    private func httpError(_ status: UInt32, code: String, message: String) -> HTTPResponse {
        .json("{\"error\":{\"code\":\(JSONText.quote(code)),\"message\":\(JSONText.quote(message))}}\n", status: status)
    }

    private func presenceList(_ parameter: String?) -> HTTPResponse {
        guard let parameter, !parameter.isEmpty else {
            return httpError(400, code: "invalid_request", message: "userIds query parameter is missing: GET /v1/presence?userIds=a,b")
        }
        let ids = parameter.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard ids.count <= config.limits.maxUsersPerRequest else {
            return httpError(400, code: "too_many_users", message: "userIds contains \(ids.count) IDs; the maximum is \(config.limits.maxUsersPerRequest)")
        }
        for id in ids {
            if let problem = UserIDRules.validationError(id) {
                return httpError(400, code: "invalid_user_id", message: "userIds entry \"\(id.prefix(64))\": \(problem)")
            }
        }
        return .json(EventEncoding.snapshotPayload(ids.map(publishedPresence)))
    }

    func membersJSON() -> String {
        let rows = instance.members.sorted { $0.name < $1.name }.map { member in
            "{\"name\":\(JSONText.quote(member.name)),\"gossipAddr\":\(JSONText.quote(member.gossipAddress)),"
                + "\"clientAddr\":\(JSONText.quote(member.clientAddress)),\"state\":\"\(member.state)\","
                + "\"incarnation\":\(member.incarnation)}"
        }
        return "[" + rows.joined(separator: ",") + "]"
    }

    func metricsText() -> String {
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, UInt64)]) {
            lines.append("# HELP presencemesh_\(name) \(help)")
            lines.append("# TYPE presencemesh_\(name) \(type)")
            for (labels, value) in samples {
                lines.append("presencemesh_\(name)\(labels) \(value)")
            }
        }
        let counters = instance.counters
        let members = instance.members
        metric("members", "gauge", "Members this node knows, by SWIM state.",
               [MemberState.alive, .suspect, .dead, .left].map { state in
                   ("{state=\"\(state)\"}", UInt64(members.filter { $0.state == state }.count))
               })
        metric("sessions", "gauge", "Open WebSocket client sessions on this node.", [("", UInt64(clientServer.sessions.count))])
        metric("online_users", "gauge", "Users online in this node's merged view.", [("", UInt64(instance.onlineUsers.count))])
        metric("wildcard_subscribers", "gauge", "Sessions subscribed to every user.", [("", UInt64(subscriptions.wildcardCount))])
        metric("watched_users", "gauge", "Users at least one local session subscribed to.", [("", UInt64(subscriptions.watchedUserCount))])
        metric("pending_offline_events", "gauge", "Offline events waiting out presence.offlineGraceMs.", [("", UInt64(pendingOffline.count))])
        metric("sessions_opened_total", "counter", "WebSocket sessions opened.", [("", stats.sessionsOpened)])
        metric("sessions_closed_total", "counter", "WebSocket sessions closed.", [("", stats.sessionsClosed)])
        metric("idle_sessions_closed_total", "counter", "Sessions closed because the client sent nothing, not even a pong, for limits.idleTimeoutMs.", [("", stats.idleSessionsClosed)])
        metric("client_messages_total", "counter", "Client messages received.", [("", stats.messagesReceived)])
        metric("client_errors_total", "counter", "Client messages rejected with an error event.", [("", stats.requestErrors)])
        metric("presence_events_total", "counter", "Presence changes fanned out to subscribers.", [("", stats.presenceEvents)])
        metric("frames_queued_total", "counter", "Event frames sent to sessions.", [("", stats.framesQueued)])
        metric("frames_written_directly_total", "counter", "Frames written at once instead of from a writeable callback.", [("", clientServer.directWrites)])
        metric("frames_truncated_direct_writes_total", "counter", "Direct writes the socket took only part of, finished by lws.", [("", clientServer.truncatedDirectWrites)])
        metric("frames_behind_partial_writes_total", "counter", "Frames that waited for lws to finish an earlier truncated write to a slow reader.", [("", clientServer.framesBehindPartialWrites)])
        metric("offline_events_cancelled_total", "counter", "Offline events dropped because the user returned within the grace period.", [("", stats.offlineEventsCancelled)])
        metric("http_requests_total", "counter", "Plain HTTP requests served.", [("", stats.httpRequests)])
        metric("gossip_datagrams_received_total", "counter", "Gossip datagrams received.", [("", counters.datagramsReceived)])
        metric("gossip_datagrams_malformed_total", "counter", "Gossip datagrams dropped because they did not decode.", [("", counters.datagramsMalformed)])
        metric("gossip_datagrams_sent_total", "counter", "Gossip datagrams sent.", [("", counters.datagramsSent)])
        metric("gossip_bytes_sent_total", "counter", "Gossip bytes sent.", [("", counters.bytesSent)])
        metric("probes_sent_total", "counter", "SWIM probes sent.", [("", counters.probesSent)])
        metric("probes_failed_total", "counter", "SWIM probes without an ack, direct or indirect.", [("", counters.probesFailed)])
        metric("suspicions_total", "counter", "Members this node suspected.", [("", counters.suspicionsRaised)])
        metric("refutations_total", "counter", "Times this node refuted suspicion of itself.", [("", counters.refutations)])
        metric("members_declared_dead_total", "counter", "Suspects this node declared dead when their suspicion timed out.", [("", counters.membersDeclaredDead)])
        metric("name_conflicts_total", "counter", "Other nodes seen announcing this node's name from another address.", [("", counters.nameConflicts)])
        metric("push_pulls_total", "counter", "Push-pull state exchanges started.", [("", counters.pushPullsStarted)])
        metric("push_pulls_failed_total", "counter", "Push-pull exchanges that failed.", [("", counters.pushPullsFailed)])
        metric("push_pulls_malformed_total", "counter", "Push-pull frames dropped because they did not decode.", [("", counters.pushPullsMalformed)])
        return lines.joined(separator: "\n") + "\n"
    }
}
