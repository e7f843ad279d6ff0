// Vocabulary shared by the membership protocol, the presence CRDT and the shell.
//
// - instance: `MeshInstance`, the pure state machine of one node run.
// - shell: the code that owns sockets and timers (MeshNode, or MeshSimulator)
//   and feeds events into the instance.
// - directive: what the instance asks the shell to do after an event.

/// A SWIM incarnation number: only the member itself raises it, to refute suspicion.
public typealias Incarnation = UInt64

/// A random number chosen at each start of a node; a replica is `(name, epoch)`.
public typealias Epoch = UInt64

/// A user ID as it appears on the client protocol.
public typealias UserID = String

/// A gossip address, `"host:port"`, as the shell binds and sends to it.
public typealias GossipAddress = String

/// The two clocks an event happens at. The instance reads no clock itself.
public struct MeshTime: Sendable, Equatable {
    /// Monotonic milliseconds, from the shell's event-loop clock. Every timer runs on it.
    public var monotonic: UInt64
    /// Wall-clock milliseconds since 1970; only stamped into `lastSeen` and status timestamps,
    /// never used to order session state.
    public var wall: Int64

    public init(monotonic: UInt64, wall: Int64) {
        self.monotonic = monotonic
        self.wall = wall
    }
}

/// SWIM member states. Legal transitions: alive → suspect → dead, alive/suspect → left,
/// and back to alive from suspect or dead only with a higher incarnation (refutation)
/// or a new epoch (restart).
public enum MemberState: UInt8, Sendable, Equatable, CustomStringConvertible {
    case alive = 0
    case suspect = 1
    case dead = 2
    case left = 3

    public var description: String {
        switch self {
        case .alive: return "alive"
        case .suspect: return "suspect"
        case .dead: return "dead"
        case .left: return "left"
        }
    }
}

/// One member as recorded in this node's member table.
public struct Member: Sendable, Equatable {
    public var name: String
    public var epoch: Epoch
    public var gossipAddress: GossipAddress
    /// Client listen address, `"host:port"`, for `GET /v1/cluster/members`.
    public var clientAddress: String
    public var incarnation: Incarnation
    public var state: MemberState

    public init(
        name: String, epoch: Epoch, gossipAddress: GossipAddress, clientAddress: String,
        incarnation: Incarnation, state: MemberState
    ) {
        self.name = name
        self.epoch = epoch
        self.gossipAddress = gossipAddress
        self.clientAddress = clientAddress
        self.incarnation = incarnation
        self.state = state
    }
}

/// A user-set status (`online`, `away`, `busy`) with optional text.
public struct CustomStatusValue: Sendable, Equatable {
    public var status: String
    public var text: String?

    public init(status: String, text: String?) {
        self.status = status
        self.text = text
    }
}

/// A user's presence as one node's merged state has it.
public struct UserPresenceState: Sendable, Equatable {
    public var userID: UserID
    public var isOnline: Bool
    /// Wall-clock milliseconds of the last session's close; nil while online or never seen.
    public var lastSeen: Int64?
    public var custom: CustomStatusValue?

    public init(userID: UserID, isOnline: Bool, lastSeen: Int64?, custom: CustomStatusValue?) {
        self.userID = userID
        self.isOnline = isOnline
        self.lastSeen = lastSeen
        self.custom = custom
    }
}

/// An action the instance requests from its shell.
public enum Directive: Sendable, Equatable {
    /// Send one UDP datagram; never longer than `maxPacketBytes`.
    case send(bytes: [UInt8], to: GossipAddress)
    /// Open a TCP connection to the gossip port at `to`, send `payload` as one frame and hand the
    /// reply frame to `onPushPullReply`, or report `onPushPullFailed`.
    case pushPull(payload: [UInt8], to: GossipAddress)
    /// Call `onTick` once the monotonic clock reaches this instant. A later directive replaces it.
    case wakeUp(at: UInt64)
    /// Users whose presence (online, offline or custom status) changed in the merged view,
    /// in the order the changes happened. The shell fans these out to subscribers.
    case presenceChanged([UserPresenceState])
    /// A member entered a new state (including a first sighting); for logs and metrics.
    case memberChanged(Member, previous: MemberState?)
    /// Another run announced itself with this node's name from another gossip address. Names
    /// must be unique: the later run takes the name in the other members' tables, and this
    /// node stays cut off until one of the two is restarted with another name. Reported once
    /// per other run.
    case nameConflict(otherAddress: GossipAddress)
}

/// Counters the instance keeps for metrics.
public struct MeshCounters: Sendable, Equatable {
    public var datagramsReceived: UInt64 = 0
    /// Datagrams that failed to decode; they are dropped whole and never parsed further.
    public var datagramsMalformed: UInt64 = 0
    public var datagramsSent: UInt64 = 0
    public var bytesSent: UInt64 = 0
    public var probesSent: UInt64 = 0
    public var probesFailed: UInt64 = 0
    public var suspicionsRaised: UInt64 = 0
    /// Suspects this node declared dead when their suspicion timed out.
    public var membersDeclaredDead: UInt64 = 0
    public var refutations: UInt64 = 0
    public var pushPullsStarted: UInt64 = 0
    public var pushPullsFailed: UInt64 = 0
    public var pushPullsMalformed: UInt64 = 0
    /// Other runs seen announcing this node's name from another address.
    public var nameConflicts: UInt64 = 0

    public init() {}
}
