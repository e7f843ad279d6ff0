// PLACEHOLDER API: the helper building MeshCore replaces these bodies with the real
// implementation, keeping the public signatures.

/// The pure state machine of one node run: SWIM membership, the presence CRDT and the gossip
/// codec. Every input is a `mutating func on…` that returns the directives for the shell.
public struct MeshInstance: Sendable {
    public private(set) var config: MeshConfig
    public private(set) var epoch: Epoch
    public private(set) var counters = MeshCounters()

    /// `epoch` must be fresh at every start; `seed` seeds all of the instance's randomness.
    public init(config: MeshConfig, epoch: Epoch, seed: UInt64) {
        self.config = config
        self.epoch = epoch
    }

    /// Starts the run: contacts the seeds (push-pull) and schedules the first timers.
    public mutating func onStart(at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A wake-up the instance asked for came due (or later). Runs every due timer.
    public mutating func onTick(at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A UDP datagram arrived. Malformed input is counted and dropped.
    public mutating func onDatagram(_ bytes: [UInt8], from: GossipAddress, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A push-pull request frame arrived over TCP. Returns the reply frame (nil when the request
    /// is malformed: the shell closes the connection) and directives.
    public mutating func onPushPullRequest(_ payload: [UInt8], at time: MeshTime) -> (reply: [UInt8]?, directives: [Directive]) { fatalError("unimplemented") }

    /// The reply to a `.pushPull` directive arrived.
    public mutating func onPushPullReply(_ payload: [UInt8], from: GossipAddress, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A `.pushPull` to `to` could not connect, timed out or got no valid reply.
    public mutating func onPushPullFailed(to: GossipAddress, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A local client session of `user` opened.
    public mutating func onSessionOpened(user: UserID, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// A local client session of `user` closed.
    public mutating func onSessionClosed(user: UserID, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// `user` set their own status from a local session.
    public mutating func onStatusSet(user: UserID, status: CustomStatusValue, at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// Graceful leave: announces `left` to every member at once.
    public mutating func onLeave(at time: MeshTime) -> [Directive] { fatalError("unimplemented") }

    /// Every member this node knows, itself included.
    public var members: [Member] { fatalError("unimplemented") }

    /// The merged presence of `user` (offline with nil `lastSeen` when never seen).
    public func presence(of user: UserID) -> UserPresenceState { fatalError("unimplemented") }

    /// Every user online in the merged view.
    public var onlineUsers: [UserID] { fatalError("unimplemented") }
}
