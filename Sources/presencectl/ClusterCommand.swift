// `presencectl cluster`: start, inspect and stop a cluster of presence-node processes on this
// machine. The subcommands share the cluster directory (`--dir`), where `cluster up` records the
// nodes it started.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum ClusterCommand {
    static let dirOption = OptionSpec(
        "--dir", value: "DIR",
        help: "directory of the cluster's manifest, generated configs, PID files and logs (default .cluster)")

    static let up = CommandSpec(
        name: "cluster up",
        synopsis: "[--nodes N [--client-port PORT] [--gossip-port PORT] | --configs DIR] [--dir DIR] [--binary PATH] [--timeout SECONDS]",
        summary: """
            Starts presence-node processes on this machine (127.0.0.1 for generated configs) and \
            waits until every node sees every other node alive, then prints each node's PID, client \
            URL and dashboard URL. The nodes keep running after this command returns. If the cluster \
            does not form, it prints the failing node's log, stops every node it started and exits \
            with status 1.
            """,
        options: [
            OptionSpec("--nodes", value: "N", help: "number of nodes to generate configs for, node-1 to node-N (1 to 64, default 3)"),
            OptionSpec("--configs", value: "DIR", help: "start one node per *.json config in DIR instead, such as cluster-configs/local-3"),
            OptionSpec("--client-port", value: "PORT", help: "client (HTTP and WebSocket) port of generated node-1; node-K gets PORT+K-1 (default 7101)"),
            OptionSpec("--gossip-port", value: "PORT", help: "gossip (UDP and TCP) port of generated node-1; node-K gets PORT+K-1 (default 7201)"),
            dirOption,
            OptionSpec("--binary", value: "PATH", help: "presence-node executable to run (default: the one in presencectl's directory)"),
            OptionSpec("--timeout", value: "SECONDS", help: "how long to wait for the cluster to form (default 30)"),
        ])

    static let status = CommandSpec(
        name: "cluster status",
        synopsis: "[--dir DIR] [--timeout SECONDS]",
        summary: "Lists the cluster's nodes, whether each process is running, and the members each running node reports.",
        options: [
            dirOption,
            OptionSpec("--timeout", value: "SECONDS", help: "how long to wait for each node's member list (default 1)"),
        ])

    static let down = CommandSpec(
        name: "cluster down",
        synopsis: "[--dir DIR] [--timeout SECONDS]",
        summary: "Stops every node with SIGTERM, sends SIGKILL to those still running after the timeout, and removes their PID files.",
        options: [
            dirOption,
            OptionSpec("--timeout", value: "SECONDS", help: "how long the nodes have to exit after SIGTERM (default 5)"),
        ])

    static let kill = CommandSpec(
        name: "cluster kill",
        synopsis: "NODE [--signal KILL|TERM|STOP|CONT] [--dir DIR]",
        summary: "Sends a signal to one node, such as node-2: KILL to crash it, TERM to make it leave gracefully, STOP and CONT to pause and resume it.",
        options: [
            OptionSpec("--signal", value: "NAME", help: "signal to send: KILL, TERM, STOP or CONT, with or without SIG (default KILL)"),
            dirOption,
        ])

    static let start = CommandSpec(
        name: "cluster start",
        synopsis: "NODE [--dir DIR] [--binary PATH] [--timeout SECONDS]",
        summary: """
            Starts one stopped node of the cluster again, with the config and ports that cluster up \
            gave it, and waits until it and every other running node see each other alive.
            """,
        options: [
            dirOption,
            OptionSpec("--binary", value: "PATH", help: "presence-node executable to run (default: the one cluster up used)"),
            OptionSpec("--timeout", value: "SECONDS", help: "how long to wait for the node to rejoin (default 30)"),
        ])

    static let subcommands = [up, status, down, kill, start]

    /// Runs `presencectl cluster SUBCOMMAND ...`; `arguments` starts with the subcommand.
    /// Returns the exit status: 0 on success, 1 on a failure, 2 on a usage error.
    static func run(_ arguments: [String]) -> Int32 {
        guard let subcommand = arguments.first else {
            printError("missing subcommand for 'presencectl cluster'; expected up, status, down, kill or start")
            return 2
        }
        if ["help", "--help", "-h"].contains(subcommand) {
            print(usageOfAllSubcommands)
            return 0
        }
        let rest = Array(arguments.dropFirst())
        let handlers: [String: (CommandSpec, (ParsedArguments) throws -> Int32)] = [
            "up": (up, runUp), "status": (status, runStatus), "down": (down, runDown),
            "kill": (kill, runKill), "start": (start, runStart),
        ]
        guard let (spec, handler) = handlers[subcommand] else {
            printError("unknown subcommand 'cluster \(subcommand)'; expected up, status, down, kill or start")
            return 2
        }

        do {
            let parsed = try ParsedArguments(rest, for: spec)
            if parsed.helpRequested {
                print(spec.usage)
                return 0
            }
            return try handler(parsed)
        } catch let error as UsageError {
            printError(error.description)
            return 2
        } catch {
            printError(String(describing: error))
            return 1
        }
    }

    /// Usage of every `cluster` subcommand, one after another.
    static var usageOfAllSubcommands: String {
        subcommands.map(\.usage).joined(separator: "\n\n")
    }

    /// Returns the cluster directory that `--dir` names, or the default one.
    static func directory(_ arguments: ParsedArguments) -> ClusterDirectory {
        ClusterDirectory(arguments.value("--dir") ?? ClusterDirectory.defaultPath)
    }
}

/// Absolute path of the `presence-node` executable in the directory of this executable.
func defaultNodeBinaryPath() -> String {
    let executable = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
    return executable.resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("presence-node").path
}

/// Makes `path` absolute and checks that it is an executable file.
func resolveNodeBinary(_ path: String) throws -> String {
    let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: absolute, isDirectory: &isDirectory), !isDirectory.boolValue,
        access(absolute, X_OK) == 0
    else {
        throw ClusterError(
            "presence-node executable not found at \(absolute); build it with 'swift build --product presence-node' or pass --binary PATH")
    }
    return absolute
}

/// Parses a `--signal` value such as `KILL`, `SIGKILL` or `kill`.
func parseSignal(_ text: String) throws -> (name: String, number: Int32) {
    var name = text.uppercased()
    if name.hasPrefix("SIG") { name.removeFirst(3) }
    guard let entry = signalsByName.first(where: { $0.name == name }) else {
        throw UsageError("invalid value '\(text)' for --signal: expected KILL, TERM, STOP or CONT")
    }
    return entry
}

// Set by the SIGINT and SIGTERM handlers while `cluster up` or `cluster start` waits, so that an
// interrupted wait still stops the nodes it started.
nonisolated(unsafe) private var interruptSignal: sig_atomic_t = 0

/// Replaces the default action of SIGINT and SIGTERM with setting a flag that `interruptRequested`
/// reads.
func installInterruptHandler() {
    signal(SIGINT) { _ in interruptSignal = 1 }
    signal(SIGTERM) { _ in interruptSignal = 1 }
}

/// True after SIGINT or SIGTERM arrived, once `installInterruptHandler` was called.
var interruptRequested: Bool { interruptSignal != 0 }
