// Waiting until the nodes of a local cluster see each other alive, with progress on stderr.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A node process that a wait watches.
struct RunningNode {
    let node: ClusterNode
    let pid: pid_t
}

/// Member list of one node in the latest round of a wait, or why it is missing.
enum NodeView {
    case members([ClusterMember])
    /// The node did not respond to `GET /v1/cluster/members`, for the reason in the text.
    case unreachable(String)

    /// Returns the nodes among `expected` that this view does not list as alive, which is all of
    /// them when the node did not respond.
    func missingAlive(_ expected: [String]) -> [String] {
        guard case .members(let members) = self else { return expected }
        let alive = Set(members.filter { $0.state == "alive" }.map(\.name))
        return expected.filter { !alive.contains($0) }
    }
}

enum FormationOutcome {
    /// Every node lists every other node as alive. The views are by node name.
    case formed([String: NodeView])
    /// A node's process ended during the wait, as the text describes.
    case nodeExited(ClusterNode, String)
    /// The timeout passed first; the views are those of the last round.
    case timedOut([String: NodeView])
    /// SIGINT or SIGTERM arrived during the wait.
    case interrupted
}

/// Polls each node's member list until every node lists every other node of `nodes` as alive.
/// Nodes outside `nodes` are ignored, whatever their state. Each round also checks that every
/// process still runs.
func waitForFormation(of nodes: [RunningNode], timeout: Duration) -> FormationOutcome {
    let deadline = ContinuousClock.now + timeout
    let names = nodes.map(\.node.name)
    var progress = ProgressLine()
    defer { progress.finish() }

    var views: [String: NodeView] = [:]
    while true {
        if interruptRequested { return .interrupted }
        for running in nodes {
            if let exit = ProcessControl.exitDescription(of: running.pid) {
                return .nodeExited(running.node, exit)
            }
        }

        for running in nodes {
            do {
                views[running.node.name] = .members(try fetchMembers(running.node.clientListen))
            } catch {
                views[running.node.name] = .unreachable(String(describing: error))
            }
        }

        let missing = nodes.map { running in
            views[running.node.name]!.missingAlive(names.filter { $0 != running.node.name })
        }
        if missing.allSatisfy(\.isEmpty) { return .formed(views) }

        let summary = zip(nodes, missing).map { running, missingNames in
            let peers = nodes.count - 1
            if case .unreachable = views[running.node.name]! { return "\(running.node.name) not answering" }
            return "\(running.node.name) sees \(peers - missingNames.count)/\(peers) alive"
        }.joined(separator: ", ")
        let remaining = deadline - ContinuousClock.now
        if remaining <= .zero { return .timedOut(views) }
        progress.update("waiting for \(nodes.count) nodes to see each other: \(summary)",
            suffix: " (\(formatSeconds(remaining)) left)")

        ProcessControl.sleep(for: .milliseconds(250))
    }
}

/// Lines that explain a timed-out wait: which node does not see which peer alive, and why.
func describeUnformed(_ nodes: [RunningNode], views: [String: NodeView]) -> [String] {
    let names = nodes.map(\.node.name)
    var lines: [String] = []
    for running in nodes {
        let name = running.node.name
        switch views[name] {
        case .unreachable(let reason):
            lines.append("\(name) did not answer: \(reason)")
        case .members(let members):
            let peers = names.filter { $0 != name }
            for peer in views[name]!.missingAlive(peers) {
                let state = members.first(where: { $0.name == peer })?.state ?? "not listed"
                lines.append("\(name) sees \(peer) as \(state)")
            }
        case nil:
            lines.append("\(name) was not asked")
        }
    }
    return lines
}

/// Returns the nodes that some view does not list as alive, or that did not respond. Their logs
/// are the ones that explain a timed-out wait.
func suspectNodes(_ nodes: [RunningNode], views: [String: NodeView]) -> [RunningNode] {
    let names = nodes.map(\.node.name)
    return nodes.filter { running in
        let name = running.node.name
        if case .unreachable = views[name] { return true }
        return nodes.contains { other in
            other.node.name != name && views[other.node.name]?.missingAlive([name]).isEmpty == false
        } || views[name]?.missingAlive(names.filter { $0 != name }).isEmpty == false
    }
}

/// Returns the state most views give `name`, such as "alive", or "unknown" when no view lists it.
func reportedState(of name: String, views: [String: NodeView]) -> String {
    var counts: [String: Int] = [:]
    for view in views.values {
        guard case .members(let members) = view, let member = members.first(where: { $0.name == name }) else { continue }
        counts[member.state, default: 0] += 1
    }
    return counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }?.key ?? "unknown"
}

/// One line of progress on stderr. On a terminal it is rewritten in place. Elsewhere a new line
/// is printed only when the text before the suffix changes, so that CI logs stay short.
struct ProgressLine {
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private var lastText = ""
    private var lineOpen = false

    mutating func update(_ text: String, suffix: String) {
        if isTerminal {
            writeStandardError("\r\u{1B}[K\(text)\(suffix)")
            lineOpen = true
        } else if text != lastText {
            writeStandardError("\(text)\(suffix)\n")
        }
        lastText = text
    }

    /// Ends a line rewritten in place, so that later output starts on a new line.
    mutating func finish() {
        if lineOpen {
            writeStandardError("\r\u{1B}[K")
            lineOpen = false
        }
    }
}
