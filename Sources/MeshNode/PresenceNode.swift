import CLibUV
import Foundation
import MeshCore

/// One PresenceMesh node: a single libuv loop running the UDP gossip socket, the TCP push-pull
/// listener, the WebSocket/HTTP server and every timer, driving a `MeshInstance`.
public final class PresenceNode {
    public let config: NodeConfig
    let logger: Logger
    let loop: UnsafeMutablePointer<uv_loop_t>
    var instance: MeshInstance
    private var gossipSocket: GossipSocket!
    private var pushPullListener: PushPullListener!
    var clientServer: ClientServer!
    private let wakeTimer: UnsafeMutablePointer<uv_timer_t>
    let graceTimer: UnsafeMutablePointer<uv_timer_t>
    private let stopTimer: UnsafeMutablePointer<uv_timer_t>
    private let idleTimer: UnsafeMutablePointer<uv_timer_t>
    private let trimTimer: UnsafeMutablePointer<uv_timer_t>
    private var signalHandles: [UnsafeMutablePointer<uv_signal_t>] = []
    /// Gossip address other members reach this node at (with the OS-chosen port when configured as 0).
    public private(set) var gossipAddress: HostPort
    /// Client address (with the OS-chosen port when configured as 0).
    public private(set) var clientAddress: HostPort
    var subscriptions = SubscriptionIndex()
    /// Offline events waiting out `presence.offlineGraceMs`, by user, with their due time.
    var pendingOffline: [UserID: (state: UserPresenceState, due: UInt64)] = [:]
    /// Users whose last published state is online. It is kept only while `presence.offlineGraceMs`
    /// is above 0, where it distinguishes a user going offline from an offline user whose `lastSeen` rose.
    var publishedOnline: Set<UserID> = []
    var stats = NodeStats()
    private(set) var isStopping = false
    private var shutdownStartedAt: UInt64 = 0
    /// Loop time of the last warning about an unreachable seed.
    private var lastSeedWarningAt: UInt64?
    private var exitCode: Int32 = 0
    let startedAt: Int64

    /// Binds every socket and creates the lws context; throws `ConfigError` naming the address
    /// or package at fault.
    public init(config: NodeConfig) throws {
        self.config = config
        logger = Logger(level: config.log.level, format: config.log.format, fields: [("node", config.name)])
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
        wakeTimer = .allocate(capacity: 1)
        graceTimer = .allocate(capacity: 1)
        stopTimer = .allocate(capacity: 1)
        idleTimer = .allocate(capacity: 1)
        trimTimer = .allocate(capacity: 1)
        PresenceNode.clockOffsetMs = config.clockOffsetMs
        gossipAddress = config.gossipListen
        clientAddress = config.clientListen
        startedAt = PresenceNode.wallClockMilliseconds()
        var generator = SystemRandomNumberGenerator()
        let epoch = generator.next() as UInt64
        // Replaced below once the sockets are bound and the real ports are known.
        instance = MeshInstance(
            config: MeshConfig(
                name: config.name, gossipAddress: config.gossipListen.description, clientAddress: config.clientListen.description,
                seeds: [], gossip: config.gossip),
            epoch: epoch, seed: 0)

        let opaque = Unmanaged.passUnretained(self).toOpaque()
        for timer in [wakeTimer, graceTimer, stopTimer, idleTimer, trimTimer] {
            uv_timer_init(loop, timer)
            timer.pointee.data = opaque
        }
        try bindGossip()
        clientServer = try ClientServer(
            loop: loop, address: config.clientListen, nodeName: config.name, maxMessageBytes: config.limits.maxMessageBytes,
            fileLimit: PresenceNode.openFileLimit(), logger: logger)
        clientServer.delegate = self
        clientAddress.port = clientServer.port

        let seeds = config.seeds.map(\.description).filter { $0 != gossipAddress.description }
        instance = MeshInstance(
            config: MeshConfig(
                name: config.name, gossipAddress: gossipAddress.description, clientAddress: clientAddress.description,
                seeds: seeds, gossip: config.gossip),
            epoch: epoch, seed: generator.next())
    }

    /// Binds UDP and then TCP on the same port number. With port 0 the OS picks the UDP port, and
    /// another pick is tried when that number is taken over TCP.
    private func bindGossip() throws {
        let attempts = config.gossipListen.port == 0 ? 20 : 1
        var lastError: Error?
        // With port 0 the OS picks the TCP port first, because every TCP connection on the host
        // uses a local port. With 99,000 client connections on loopback, 20 attempts that picked
        // the UDP port first all failed. A port free for TCP is nearly always free for UDP.
        for _ in 0..<attempts {
            let listener = try PushPullListener(loop: loop, address: config.gossipListen, logger: logger)
            let bound = HostPort(host: config.gossipListen.host, port: listener.boundPort)
            do {
                gossipSocket = try GossipSocket(loop: loop, address: bound, logger: logger)
                pushPullListener = listener
                gossipAddress = bound
                return
            } catch {
                lastError = error
                listener.close()
            }
        }
        throw lastError!
    }

    /// Runs the node until SIGTERM or SIGINT, then leaves the cluster and returns the exit code.
    public func run() -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        fixLargeBlockThreshold()
        // A parent may start us with stop signals blocked (test runners and thread pools do), and
        // a blocked SIGTERM would never reach the handler below.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGTERM)
        sigaddset(&stopSignals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        for number in [SIGTERM, SIGINT] {
            let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(loop, handle)
            handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            uv_signal_start(handle, { handle, number in
                let node = Unmanaged<PresenceNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                node.beginShutdown(signal: number)
            }, number)
            signalHandles.append(handle)
        }
        gossipSocket.onDatagram = { [unowned self] bytes, sender in
            apply(instance.onDatagram(bytes, from: sender, at: now()))
        }
        pushPullListener.respond = { [unowned self] frame in
            let (reply, directives) = instance.onPushPullRequest(frame, at: now())
            apply(directives)
            if frame.count >= 1 << 20 { releaseHeapAfterLargeMerge() }
            return reply
        }
        gossipSocket.startReceiving()
        // A quarter of the ping interval keeps each ping and close within 25% of its due time.
        let sweepMs = max(25, config.limits.pingIntervalMs / 4)
        uv_timer_start(idleTimer, { timer in
            let node = Unmanaged<PresenceNode>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            let closed = node.clientServer.checkIdleSessions(
                now: uv_now(node.loop), pingAfterMs: node.config.limits.pingIntervalMs, closeAfterMs: node.config.limits.idleTimeoutMs)
            node.stats.idleSessionsClosed += UInt64(closed)
        }, sweepMs, sweepMs)
        logger.info(
            "node started",
            [("client", clientAddress), ("gossip", gossipAddress), ("seeds", config.seeds.map(\.description).joined(separator: ",")),
             ("epoch", String(instance.epoch, radix: 16))])
        // One line on stdout for scripts and tests that start nodes on OS-chosen ports.
        print("ready name=\(config.name) client=\(clientAddress) gossip=\(gossipAddress)")
        fflush(nil)
        apply(instance.onStart(at: now()))

        uv_run(loop, UV_RUN_DEFAULT)
        closeRemainingHandles()
        logger.info("node stopped", [("exit", exitCode)])
        return exitCode
    }

    func now() -> MeshTime {
        uv_update_time(loop)
        return MeshTime(monotonic: uv_now(loop), wall: PresenceNode.wallClockMilliseconds())
    }

    /// Wall-clock milliseconds since 1970, plus `clockOffsetMs`.
    static func wallClockMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000 + clockOffsetMs
    }

    /// Testing aid: the `clockOffsetMs` of the node's config, set once in `init` before the loop
    /// runs. A process runs one node, so one value per process is enough.
    nonisolated(unsafe) static var clockOffsetMs: Int64 = 0

    /// Executes directives in order.
    func apply(_ directives: [Directive]) {
        for directive in directives {
            switch directive {
            case .send(let bytes, let address):
                gossipSocket.send(bytes, to: address)
            case .pushPull(let payload, let address):
                startPushPull(payload, to: address)
            case .wakeUp(let due):
                let current = uv_now(loop)
                uv_timer_start(wakeTimer, { timer in
                    let node = Unmanaged<PresenceNode>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
                    node.apply(node.instance.onTick(at: node.now()))
                }, due > current ? due - current : 0, 0)
            case .presenceChanged(let changes):
                publish(changes)
            case .memberChanged(let member, let previous):
                logMemberChange(member, previous: previous)
            case .nameConflict(let otherAddress):
                logger.error(
                    "another node runs with this node's name; give each node a unique name and restart one of them",
                    [("name", config.name), ("other_gossip", otherAddress), ("gossip", gossipAddress)])
            }
        }
    }

    private func logMemberChange(_ member: Member, previous: MemberState?) {
        guard member.name != config.name else { return }
        let values: [(String, Any)] = [
            ("member", member.name), ("state", member.state), ("incarnation", member.incarnation),
            ("gossip", member.gossipAddress), ("previous", previous.map { "\($0)" } ?? "none"),
        ]
        switch member.state {
        case .alive: logger.info(previous == nil ? "member joined" : "member alive", values)
        case .suspect: logger.info("member suspected", values)
        case .dead: logger.info("member dead", values)
        case .left: logger.info("member left", values)
        }
    }

    private func startPushPull(_ payload: [UInt8], to address: String) {
        guard let target = HostPort(address), target.port != 0 else {
            apply(instance.onPushPullFailed(to: address, at: now()))
            return
        }
        stats.pushPullsStarted += 1
        let connection = FramedConnection(loop: loop, timeoutMs: 5_000)
        connection.onFrame = { [unowned self, unowned connection] frame in
            connection.close()
            apply(instance.onPushPullReply(frame, from: address, at: now()))
            if frame.count >= 1 << 20 { releaseHeapAfterLargeMerge() }
        }
        connection.onFailure = { [unowned self] reason in
            logger.debug("push-pull failed", [("addr", address), ("reason", reason)])
            warnIfSeedUnreachable(address, reason: reason)
            apply(instance.onPushPullFailed(to: address, at: now()))
        }
        connection.connect(to: target, sending: payload)
    }

    /// Logs a warning when a push-pull to a seed fails while this node has no other live member,
    /// at most once a minute, because a node that cannot join otherwise runs alone in silence.
    private func warnIfSeedUnreachable(_ address: String, reason: String) {
        guard instance.liveMemberCount <= 1, config.seeds.contains(where: { $0.description == address }) else { return }
        let current = uv_now(loop)
        if let last = lastSeedWarningAt, current - last < 60_000 { return }
        lastSeedWarningAt = current
        logger.warning(
            "seed unreachable; this node runs alone until a seed responds",
            [("seed", address), ("reason", reason), ("hint", "a seed is the gossipListen address of a running node")])
    }

    /// Leaves the cluster: announces `left`, closes every client with 1001 (going away), then
    /// stops the loop once the close frames had time to go out.
    func beginShutdown(signal number: Int32) {
        guard !isStopping else {
            logger.warning("second stop signal: exiting at once", [("signal", number)])
            exit(1)
        }
        isStopping = true
        logger.info("stopping", [("signal", number), ("sessions", clientServer.sessions.count)])
        apply(instance.onLeave(at: now()))
        for session in Array(clientServer.sessions.values) {
            session.closeNow(status: 1001, reason: "node shutting down")
        }
        uv_timer_stop(wakeTimer)
        uv_timer_stop(graceTimer)
        uv_timer_stop(idleTimer)
        uv_timer_stop(trimTimer)
        shutdownStartedAt = uv_now(loop)
        uv_timer_start(stopTimer, { timer in
            let node = Unmanaged<PresenceNode>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            node.finishShutdownWhenClientsClosed()
        }, 20, 20)
    }

    /// Destroys the WebSocket server once every client has replied to the close frame, or after
    /// `PresenceNode.closeHandshakeMs`. Destroying it earlier resets connections whose close frame
    /// the client has not read yet, and the client then sees 1006 instead of 1001.
    private func finishShutdownWhenClientsClosed() {
        let waited = uv_now(loop) - shutdownStartedAt
        guard clientServer.sessions.isEmpty || waited >= Self.closeHandshakeMs else { return }
        if !clientServer.sessions.isEmpty {
            logger.info("closing clients that did not finish the close handshake", [("sessions", clientServer.sessions.count)])
        }
        uv_timer_stop(stopTimer)
        clientServer.destroy()
        uv_timer_start(stopTimer, { timer in
            let node = Unmanaged<PresenceNode>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            uv_stop(node.loop)
        }, 200, 0)
    }

    /// Returns free heap pages to the kernel now, and again 500 ms after the last large merge. The
    /// payload, its decoded entries and the reply are freed only after the merge returns, and
    /// several peers' payloads may arrive in a burst, so a single trim leaves some pages behind.
    private func releaseHeapAfterLargeMerge() {
        releaseFreeHeapMemory()
        uv_timer_start(trimTimer, { _ in releaseFreeHeapMemory() }, 500, 0)
    }

    /// Maximum wait, in milliseconds, for clients to reply to the close frame at shutdown.
    static let closeHandshakeMs: UInt64 = 2_000

    /// Closes every handle still open after the loop stopped and runs the loop until they are gone.
    private func closeRemainingHandles() {
        clientServer.destroy()
        gossipSocket.close()
        pushPullListener.close()
        let closer: uv_close_cb = { handle in handle?.deallocate() }
        for timer in [wakeTimer, graceTimer, stopTimer, idleTimer, trimTimer] {
            uv_close(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self), closer)
        }
        for handle in signalHandles {
            uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self), closer)
        }
        signalHandles = []
        uv_walk(loop, { handle, _ in
            if let handle, uv_is_closing(handle) == 0 { uv_close(handle, nil) }
        }, nil)
        uv_run(loop, UV_RUN_DEFAULT)
        if uv_loop_close(loop) != 0 {
            logger.debug("loop closed with handles still open")
        }
    }

    static func openFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, 1_000_000))
    }
}

/// Counters of the node shell, exported on `/metrics`.
struct NodeStats {
    var sessionsOpened: UInt64 = 0
    var sessionsClosed: UInt64 = 0
    var messagesReceived: UInt64 = 0
    var requestErrors: UInt64 = 0
    var upgradesRejected: UInt64 = 0
    var presenceEvents: UInt64 = 0
    var framesQueued: UInt64 = 0
    var offlineEventsCancelled: UInt64 = 0
    var pushPullsStarted: UInt64 = 0
    var httpRequests: UInt64 = 0
    var idleSessionsClosed: UInt64 = 0
}
