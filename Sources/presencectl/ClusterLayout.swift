// The files of a local cluster: node configs, the manifest that `cluster up` writes, and one PID
// file and one log per node, all in the cluster directory (`--dir`, default `.cluster`).

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure that stops a cluster command with exit status 1; its text is printed to stderr.
struct ClusterError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// One node of a local cluster: its name, the config it runs with and the addresses it listens on.
struct ClusterNode: Codable, Equatable {
    var name: String
    /// Absolute path of the JSON config passed to `presence-node --config`.
    var configPath: String
    var clientListen: NodeAddress
    var gossipListen: NodeAddress
}

/// Contents of `cluster.json` in the cluster directory: everything later commands need to find,
/// restart and stop the nodes that `cluster up` started.
struct ClusterManifest: Codable {
    /// Absolute path of the `presence-node` executable the nodes run.
    var binaryPath: String
    var nodes: [ClusterNode]

    /// Returns the node called `name`, or throws a `UsageError` that lists the known names.
    func node(named name: String) throws -> ClusterNode {
        guard let node = nodes.first(where: { $0.name == name }) else {
            let known = nodes.map(\.name).joined(separator: ", ")
            throw UsageError("no node named '\(name)' in this cluster; its nodes are \(known)")
        }
        return node
    }
}

/// Paths of one cluster directory and the reads and writes of its files.
struct ClusterDirectory {
    /// Absolute path of the directory.
    let path: String
    /// The directory as the user wrote it, for hints such as `cluster down --dir .cluster`.
    let displayPath: String

    init(_ argument: String) {
        displayPath = argument
        let url = URL(fileURLWithPath: argument, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        path = url.standardizedFileURL.path
    }

    var manifestPath: String { "\(path)/cluster.json" }
    func pidPath(of node: ClusterNode) -> String { "\(path)/\(node.name).pid" }
    func logPath(of node: ClusterNode) -> String { "\(path)/\(node.name).log" }
    func generatedConfigPath(forNodeNamed name: String) -> String { "\(path)/\(name).json" }

    /// `--dir` as the user wrote it, followed by a space, for command hints; empty for the default.
    var dirOptionHint: String {
        displayPath == ClusterDirectory.defaultPath ? "" : " --dir \(displayPath)"
    }

    static let defaultPath = ".cluster"

    func create() throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ClusterError("creating the cluster directory \(path) failed: \(error.localizedDescription)")
        }
    }

    /// Reads the manifest. When there is none, it throws a `ClusterError` with the command that
    /// starts a cluster.
    func readManifest() throws -> ClusterManifest {
        guard let data = FileManager.default.contents(atPath: manifestPath) else {
            throw ClusterError(
                "no cluster found in \(displayPath): \(manifestPath) is missing; start one with 'presencectl cluster up\(dirOptionHint)'")
        }
        do {
            return try JSONDecoder().decode(ClusterManifest.self, from: data)
        } catch {
            throw ClusterError("\(manifestPath) is not a valid cluster manifest: \(error)")
        }
    }

    func writeManifest(_ manifest: ClusterManifest) throws {
        try writeJSON(manifest, to: manifestPath)
    }

    /// Reads the PID in the node's PID file; returns nil when there is no valid PID file.
    func recordedPID(of node: ClusterNode) -> pid_t? {
        guard let text = try? String(contentsOfFile: pidPath(of: node), encoding: .utf8) else { return nil }
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else { return nil }
        return pid
    }

    /// Returns the PID of the node's process if it is alive and runs this node's config. A PID file whose
    /// process has exited, or whose PID now belongs to another program, yields nil.
    func livePID(of node: ClusterNode) -> pid_t? {
        guard let pid = recordedPID(of: node) else { return nil }
        guard ProcessControl.state(of: pid).isAlive else { return nil }
        // On Linux the command line shows whether another program reused the PID. Where it
        // cannot be read, the PID is trusted.
        if let commandLine = ProcessControl.commandLine(of: pid) {
            guard let index = commandLine.firstIndex(of: "--config"), index + 1 < commandLine.count,
                commandLine[index + 1] == node.configPath
            else { return nil }
        }
        return pid
    }

    func writePID(_ pid: pid_t, of node: ClusterNode) throws {
        do {
            try "\(pid)\n".write(toFile: pidPath(of: node), atomically: true, encoding: .utf8)
        } catch {
            throw ClusterError("writing \(pidPath(of: node)) failed: \(error.localizedDescription)")
        }
    }

    func removePID(of node: ClusterNode) {
        unlink(pidPath(of: node))
    }

    /// Returns the end of the node's log for an error report: its first error lines, such as a
    /// Swift "Fatal error" that a crash backtrace would push out of view, followed by the last
    /// `count` lines. Returns a note instead when the log is missing or empty.
    func logExcerpt(of node: ClusterNode, lines count: Int = 20) -> String {
        let path = logPath(of: node)
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            return "(no log at \(path))"
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard !lines.isEmpty else { return "(\(path) is empty)" }

        let tailStart = max(0, lines.count - count)
        let errorMarkers = ["level=error", "Fatal error", "Precondition failed", "Assertion failed", "*** Program crashed"]
        let earlierErrors = lines[..<tailStart].filter { line in errorMarkers.contains { line.contains($0) } }.prefix(5)

        var excerpt = Array(earlierErrors)
        if !earlierErrors.isEmpty { excerpt.append("...") }
        excerpt.append(contentsOf: lines[tailStart...])
        return excerpt.joined(separator: "\n")
    }

    /// Takes an exclusive lock on the directory, so that two presencectl commands do not start or
    /// stop the same nodes at once. The lock lasts until this process exits. Throws when another
    /// command holds it.
    func lock() throws {
        let lockPath = "\(path)/.lock"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ClusterError("opening \(lockPath) failed: \(errnoDescription())")
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            close(descriptor)
            throw ClusterError(
                "another presencectl command is starting or stopping the cluster in \(displayPath); wait for it to finish")
        }
        // The descriptor stays open on purpose: closing it would release the lock.
    }
}

/// Encodes `value` as indented JSON with sorted keys and writes it to `path` atomically.
func writeJSON(_ value: some Encodable, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    do {
        var data = try encoder.encode(value)
        data.append(0x0A)
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
        throw ClusterError("writing \(path) failed: \(error.localizedDescription)")
    }
}
