// Results of `presencectl bench e2e`: latency statistics, the machine they were measured on, the
// table printed on stdout and the Markdown section written with --output.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One measured latency: its samples, what is measured between which two moments, and its target.
struct LatencyFigure {
    /// Short name of the figure, such as "a) presence change, node-1 to node-3".
    let name: String
    /// The two moments the latency spans, such as "SIGKILL sent → last survivor's offline event".
    let span: String
    /// Target for the median; nil for a figure reported without one.
    let medianTarget: Duration?
    var samples: [Duration] = []
    /// Samples that produced no value, each with the reason.
    var failures: [String] = []

    init(name: String, span: String, medianTarget: Duration?) {
        self.name = name
        self.span = span
        self.medianTarget = medianTarget
    }

    var statistics: LatencyStatistics? {
        LatencyStatistics(samples)
    }

    /// "met" or "missed" against the median target, or "-" without one. A figure with failed
    /// samples misses its target whatever its median.
    var verdict: String {
        guard let medianTarget else { return "-" }
        guard let statistics, failures.isEmpty else { return "missed" }
        return statistics.median < medianTarget ? "met" : "missed"
    }

    var targetText: String {
        medianTarget.map { "median < \(formatTarget($0))" } ?? "-"
    }
}

/// Median, 99th percentile, minimum and maximum of a set of samples.
struct LatencyStatistics {
    let count: Int
    /// Middle sample, or the mean of the two middle samples for an even count.
    let median: Duration
    /// Nearest-rank 99th percentile: the smallest sample that at least 99 % of the samples do
    /// not exceed. Below 100 samples it is the maximum.
    let p99: Duration
    let minimum: Duration
    let maximum: Duration

    init?(_ samples: [Duration]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        count = sorted.count
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        let rank = Int((0.99 * Double(sorted.count)).rounded(.up))
        p99 = sorted[max(0, rank - 1)]
        minimum = sorted.first!
        maximum = sorted.last!
    }
}

/// The machine and toolchain a benchmark ran on.
struct MachineDescription {
    /// Processors available to this process, as `nproc` prints them.
    let processorCount: String
    /// `model name` of the first processor in /proc/cpuinfo.
    let cpuModel: String
    /// Kernel release, as `uname -r` prints it.
    let kernel: String
    /// First line of `swift --version`.
    let swiftVersion: String
    /// "release" or "debug": how this presencectl was compiled.
    let buildConfiguration: String

    static func current() -> MachineDescription {
        let cpuInfo = ProcessControl.readSmallFile("/proc/cpuinfo") ?? ""
        let modelLine = cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        let model = modelLine.flatMap { line in line.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) }

        var names = utsname()
        let kernel = uname(&names) == 0
            ? withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            : "unknown"

        #if DEBUG
        let configuration = "debug"
        #else
        let configuration = "release"
        #endif

        return MachineDescription(
            processorCount: firstOutputLine(of: ["nproc"]) ?? "\(ProcessInfo.processInfo.activeProcessorCount)",
            cpuModel: model ?? "unknown (no model name in /proc/cpuinfo)",
            kernel: kernel,
            swiftVersion: firstOutputLine(of: ["swift", "--version"]) ?? "unknown (swift --version failed)",
            buildConfiguration: configuration)
    }

    /// Runs a program found on PATH and returns the first line it prints, or nil when it fails.
    private static func firstOutputLine(of command: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return nil
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init)
    }
}

/// Everything one `bench e2e` run reports.
struct EndToEndReport {
    let figures: [LatencyFigure]
    let machine: MachineDescription
    /// The command line as run, quoted for a shell.
    let command: String
    /// Gossip preset of the nodes: "lan (node default)" unless --preset chose another.
    let preset: String
    let nodeCount: Int
    let warmupSamples: Int
    /// Other findings of the run, such as a node that exited with a non-zero status.
    let anomalies: [String]
    /// Load averages over 1, 5 and 15 minutes from /proc/loadavg when the run started and ended.
    /// The bench itself adds about one busy process, so a higher load shows other work on the machine.
    let loadAtStart: String
    let loadAtEnd: String
    let finished: Date

    /// Heading of the Markdown section; --output replaces an existing section with this heading.
    static let sectionHeading = "## End-to-end latency (presencectl bench e2e)"

    /// The results table for the terminal.
    var table: String {
        var table = TextTable("FIGURE", "FROM → TO", "SAMPLES", "MEDIAN", "P99", "MIN", "MAX", "TARGET", "RESULT")
        for figure in figures {
            let cells = statisticCells(figure)
            table.append(
                figure.name, figure.span, sampleText(figure), cells[0], cells[1], cells[2], cells[3], figure.targetText,
                figure.verdict)
        }
        return table.rendered
    }

    /// The Markdown section for Benchmarks/RESULTS.md.
    var markdown: String {
        var lines = [
            Self.sectionHeading,
            "",
            "Measured on \(iso8601(finished)) with:",
            "",
            "```",
            command,
            "```",
            "",
            "- Machine: \(machine.processorCount) processors (nproc), \(machine.cpuModel), Linux \(machine.kernel)",
            "- Toolchain: \(machine.swiftVersion), \(machine.buildConfiguration) build of presencectl and presence-node",
            "- Cluster: \(nodeCount) presence-node processes on 127.0.0.1, gossip preset \(preset), "
                + "and the bench's WebSocket clients in one process on the same machine",
            "- Load average (1, 5, 15 min): \(loadAtStart) at the start, \(loadAtEnd) at the end",
            "",
            "| Figure | From → to | Samples | Median | p99 | Min | Max | Target | Result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for figure in figures {
            let cells = statisticCells(figure)
            lines.append(
                "| \(figure.name) | \(figure.span) | \(sampleText(figure)) | \(cells[0]) | \(cells[1]) | \(cells[2]) | "
                    + "\(cells[3]) | \(figure.targetText) | \(figure.verdict) |")
        }
        lines += [
            "",
            "How each figure is measured:",
            "",
            "- Every timestamp is taken in the bench process when a message comes out of its WebSocket "
                + "client's event stream, or right before it sends a signal or starts a connection. "
                + "Subscribers are observer sessions (`observe=true`), one per node.",
            "- a) Presence change: each sample opens a session for a fresh user on node-1. The cross-node "
                + "figure is the arrival of the `user.presence` online event at the node-3 subscriber minus "
                + "its arrival at the node-1 subscriber. node-1 publishes the change to its own subscribers "
                + "when it accepts the session, so the figure is the time the gossip path to node-3 adds to "
                + "local delivery. A negative sample means the bench process timestamped node-3's event "
                + "first. The timing-floor figure is the same difference for two subscribers on node-1, "
                + "which receive one event at once: it shows how much scheduling in the bench process "
                + "alone spreads the arrivals. The client-view figures start right before the new user's "
                + "client begins to connect, so they also contain the client's libwebsockets setup, the "
                + "TCP connect and the HTTP upgrade. \(warmupSamples) warm-up samples ran before the measured ones.",
            "- b) kill -9: a fresh user connects to the victim node, and every subscriber has seen them "
                + "online. The figure runs from right before SIGKILL until the last surviving subscriber "
                + "receives the offline event. The victim rotates through node-1, node-2 and node-3. After "
                + "each sample the victim restarts as a new process on the same ports, and the next sample "
                + "waits until every node lists every other as alive.",
            "- c) SIGTERM: as b), with SIGTERM, so the victim leaves the cluster gracefully.",
            "- p99 is the nearest-rank 99th percentile; with 100 samples it is the second-largest sample.",
        ]
        let failures = figures.flatMap { figure in figure.failures.map { "\(figure.name): \($0)" } }
        if !failures.isEmpty || !anomalies.isEmpty {
            lines += ["", "Failed samples and other findings:", ""]
            lines += (failures + anomalies).map { "- \($0)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes the Markdown section to `path`. An existing section with the same heading is replaced
    /// up to the next `## ` heading; otherwise the section is appended, so other sections stay.
    func writeMarkdown(to path: String) throws {
        let section = markdown
        var text: String
        if let existing = try? String(contentsOfFile: path, encoding: .utf8) {
            var lines = existing.components(separatedBy: "\n")
            if let start = lines.firstIndex(of: Self.sectionHeading) {
                let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("## ") } ?? lines.count
                let replacement = section.components(separatedBy: "\n").dropLast()
                // The empty line keeps a blank line before the next heading.
                lines.replaceSubrange(start..<end, with: Array(replacement) + [""])
                text = lines.joined(separator: "\n")
                while text.hasSuffix("\n\n") { text.removeLast() }
            } else {
                text = existing.hasSuffix("\n") ? existing : existing + "\n"
                text += "\n" + section
            }
        } else {
            text = "# Benchmark results\n\n" + section
        }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw ClusterError("writing \(path) failed: \(error.localizedDescription)")
        }
    }

    private func statisticCells(_ figure: LatencyFigure) -> [String] {
        guard let statistics = figure.statistics else { return ["-", "-", "-", "-"] }
        return [statistics.median, statistics.p99, statistics.minimum, statistics.maximum].map(formatLatency)
    }

    private func sampleText(_ figure: LatencyFigure) -> String {
        figure.failures.isEmpty ? "\(figure.samples.count)" : "\(figure.samples.count) (\(figure.failures.count) failed)"
    }
}

/// Reads the 1, 5 and 15 minute load averages from /proc/loadavg, such as "0.52 0.61 0.70".
func currentLoadAverages() -> String {
    guard let text = ProcessControl.readSmallFile("/proc/loadavg") else { return "unknown" }
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// Formats a target such as 2 ms or 3 s.
private func formatTarget(_ duration: Duration) -> String {
    let value = milliseconds(duration)
    return value >= 1000 ? "\(formatSeconds(duration))" : String(format: "%.0f ms", value)
}

/// Formats a date as UTC RFC 3339 with seconds, such as 2025-01-31T14:03:22Z.
private func iso8601(_ date: Date) -> String {
    date.formatted(Date.ISO8601FormatStyle())
}

/// Quotes each argument for a POSIX shell where needed and joins them with spaces.
func shellCommandLine(_ arguments: [String]) -> String {
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@+%")
    return arguments.map { argument in
        if !argument.isEmpty && argument.allSatisfy(safe.contains) { return argument }
        return "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }.joined(separator: " ")
}
