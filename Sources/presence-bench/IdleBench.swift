import Foundation

/// `presence-bench idle-rss`: node RSS per idle WebSocket connection.
enum IdleBench {
    static let heading = "### Memory per idle WebSocket connection"
    /// Target RSS per idle connection, in bytes.
    static let targetBytes = 4096.0

    struct Sample {
        var round: Int
        var kind: String
        var connections: Int
        var rssBefore: Int
        var rssAfter: Int
        var nodeFiles: Int
        var connectSeconds: Double

        var bytesPerConnection: Double { Double(rssAfter - rssBefore) / Double(connections) }
    }

    static func main(_ arguments: [String]) -> Int32 {
        let connections: Int, processes: Int, rounds: Int
        let kinds: [String]
        let output: String?
        do {
            let options = try Options(arguments, accepted: ["--connections", "--processes", "--rounds", "--kinds", "--output"])
            connections = try options.integer("--connections", default: 15_000, in: 1...19_800)
            processes = try options.integer("--processes", default: 2, in: 1...16)
            rounds = try options.integer("--rounds", default: 2, in: 1...10)
            kinds = (options.string("--kinds") ?? "observer,user").split(separator: ",").map(String.init)
            guard kinds.allSatisfy({ $0 == "observer" || $0 == "user" }) else {
                throw BenchError("--kinds must list observer and/or user, got \(kinds.joined(separator: ","))")
            }
            output = options.string("--output")
        } catch {
            printError("presence-bench idle-rss: \(error)")
            return 2
        }
        let machine = MachineDescription.current()
        say("machine: \(machine.markdown)")
        var samples: [Sample] = []
        do {
            let directory = try makeRunDirectory("idle")
            for round in 1...rounds {
                for kind in kinds {
                    let group = ChildGroup(directory: directory)
                    defer { group.stopAll() }
                    let sample = try measure(round: round, kind: kind, connections: connections, processes: processes, group)
                    samples.append(sample)
                    say("idle-rss round=\(round) kind=\(kind) connections=\(sample.connections) "
                        + "rss_before_kib=\(sample.rssBefore / 1024) rss_after_kib=\(sample.rssAfter / 1024) "
                        + "bytes_per_connection=\(formatted(sample.bytesPerConnection, 0)) node_files=\(sample.nodeFiles) "
                        + "connect_seconds=\(formatted(sample.connectSeconds, 1))")
                }
            }
        } catch {
            printError("presence-bench idle-rss: \(error)")
            return 1
        }
        if let output {
            do {
                try ResultsFile.update(path: output, machine: machine, subsection: heading, body: markdown(samples, processes))
                say("wrote \(heading) to \(output)")
            } catch {
                printError("presence-bench idle-rss: writing \(output) failed: \(error)")
                return 1
            }
        }
        return 0
    }

    private static func measure(round: Int, kind: String, connections: Int, processes: Int, _ group: ChildGroup) throws -> Sample {
        let node = try NodeProcess.start(group: group, name: "idle-\(kind)-\(round)", seed: nil,
                                   limits: ["maxSessions": connections + 100])
        // Let the node finish starting before the baseline is read.
        usleep(1_000_000)
        guard let before = ProcStats.residentBytes(node.pid) else { throw BenchError("cannot read the node's RSS") }
        let holders = try HolderSet.start(group: group, label: "idle-\(kind)-\(round)", port: node.clientPort, total: connections,
                                          processes: processes, observe: kind == "observer", timeout: 300)
        guard holders.opened == connections else {
            throw BenchError("only \(holders.opened) of \(connections) connections opened")
        }
        // Give the node time to finish the handshakes the clients already saw complete.
        usleep(2_000_000)
        let sessions = node.metric("sessions").map { Int($0) } ?? -1
        guard sessions == connections else {
            throw BenchError("the node reports \(sessions) sessions, expected \(connections)")
        }
        guard let after = ProcStats.residentBytes(node.pid) else { throw BenchError("cannot read the node's RSS") }
        let files = ProcStats.openFiles(node.pid) ?? -1
        holders.stop(group: group)
        group.stop(node.child)
        return Sample(round: round, kind: kind, connections: connections, rssBefore: before, rssAfter: after,
                      nodeFiles: files, connectSeconds: holders.slowestSeconds)
    }

    private static func markdown(_ samples: [Sample], _ processes: Int) -> String {
        var lines: [String] = []
        lines.append("Command: `\(commandLineText)` (\(utcTimestamp())).")
        lines.append("")
        lines.append("""
            A fresh `presence-node` per row; its RSS (`VmRSS` in `/proc/PID/status`) is read 1 s after \
            it starts and again 2 s after \(processes) `presence-bench hold` processes have opened all \
            connections, in at most 200 concurrent handshakes each, and the node reports them all in \
            `presencemesh_sessions`. The figure is the difference divided by the connections. An \
            observer row holds `observe=true` sessions, which cost a connection and a session but no \
            presence entry; a user row holds one session per distinct user, so each user is also \
            online in the node's presence state.
            """)
        lines.append("")
        lines.append("| Round | Sessions | Connections | Node RSS before → after (MiB) | Node open files | RSS per connection (bytes) | Target under 4 KiB |")
        lines.append("|---:|---|---:|---|---:|---:|---|")
        for sample in samples {
            lines.append("| \(sample.round) | \(sample.kind) | \(sample.connections.grouped) | "
                + "\(formatted(Double(sample.rssBefore) / 1_048_576, 1)) → \(formatted(Double(sample.rssAfter) / 1_048_576, 1)) | "
                + "\(sample.nodeFiles.grouped) | \(formatted(sample.bytesPerConnection, 0)) | "
                + "\(verdict(sample.bytesPerConnection < targetBytes)) |")
        }
        return lines.joined(separator: "\n")
    }
}
