// `presencectl bench e2e`: measures, on a local 3-node cluster, how fast a presence change reaches
// another node and how fast survivors report the users of a crashed or departing node offline.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum BenchCommand {
    static let e2e = CommandSpec(
        name: "bench e2e",
        synopsis: "[--samples N] [--output FILE] [--figures LIST] [--preset lan|wan|local] [--dir DIR] [--timeout SECONDS]",
        summary: """
            Starts 3 presence-node processes on free ports of 127.0.0.1 with the node's default gossip \
            settings (preset lan) and measures three figures, each as median, p99, min and max: \
            a) a session opening on node-1 until a subscriber on node-3 receives the online event, \
            b) kill -9 of a node until every surviving subscriber receives its user offline, \
            c) SIGTERM of a node until every surviving subscriber receives its user offline. \
            Figures b and c restart the node after each sample and wait for the cluster to be whole \
            again, so each of their samples takes a few seconds. Prints a results table and stops \
            every node it started. Exits with status 1 when a sample fails or the cluster breaks.
            """,
        options: [
            OptionSpec("--samples", value: "N", help: "measured samples per figure, 1 to 100000 (default 100)"),
            OptionSpec("--output", value: "FILE", help: "also write the results as a Markdown section to FILE, replacing an earlier section of this bench"),
            OptionSpec("--figures", value: "LIST", help: "comma-separated figures to measure: change, kill, term (default all three)"),
            OptionSpec("--preset", value: "NAME", help: "gossip preset of the nodes: lan, wan or local (default: none set, so the node default lan)"),
            OptionSpec("--dir", value: "DIR", help: "directory of the bench cluster's configs, PID files and logs (default .cluster-bench)"),
            OptionSpec("--timeout", value: "SECONDS", help: "how long one expected event may take before its sample fails (default 15)"),
        ])

    /// Figures that --figures accepts, in the order they run.
    static let figureNames = ["change", "kill", "term"]

    /// Runs `presencectl bench SUBCOMMAND ...`; `arguments` starts with the subcommand.
    static func run(_ arguments: [String]) -> Int32 {
        guard let subcommand = arguments.first else {
            printError("missing subcommand for 'presencectl bench'; expected e2e")
            return 2
        }
        if ["help", "--help", "-h"].contains(subcommand) {
            print(e2e.usage)
            return 0
        }
        guard subcommand == "e2e" else {
            printError("unknown subcommand 'bench \(subcommand)'; expected e2e")
            return 2
        }

        let options: EndToEndOptions
        switch e2e.parseOptions(Array(arguments.dropFirst()), EndToEndOptions.init) {
        case .run(let parsed): options = parsed
        case .exit(let status): return status
        }
        quietWebSocketLibrary()

        do {
            return try runEndToEnd(options)
        } catch {
            printError("\(error)")
            return 1
        }
    }

    private static func runEndToEnd(_ options: EndToEndOptions) throws -> Int32 {
        let machine = MachineDescription.current()
        let loadAtStart = currentLoadAverages()
        let binary = try resolveNodeBinary(defaultNodeBinaryPath())
        let directory = ClusterDirectory(options.directory)
        try directory.create()
        let configDirectory = try writeNodeConfigs(in: directory, preset: options.preset)

        installInterruptHandler()
        let cluster = try ScenarioCluster.up(
            ["--configs", configDirectory, "--dir", directory.displayPath, "--binary", binary], directory: directory)
        let bench = EndToEndBench(cluster: cluster, eventTimeout: options.eventTimeout)
        defer {
            bench.closeSessions()
            let stopped = cluster.stopAll()
            if !stopped.isEmpty {
                printNote("stopped \(stopped.joined(separator: ", ")) by PID; logs are in \(directory.path)")
            }
        }

        var figures: [LatencyFigure] = []
        do {
            try bench.connectSubscribers()
            if options.figures.contains("change") {
                figures += try bench.measurePresenceChange(samples: options.samples, warmup: options.warmup)
            }
            if options.figures.contains("kill") {
                figures.append(try bench.measureDeparture(signal: SIGKILL, samples: options.samples))
            }
            if options.figures.contains("term") {
                figures.append(try bench.measureDeparture(signal: SIGTERM, samples: options.samples))
            }
        } catch {
            printError("the bench stopped: \(error)")
            printNote(cluster.logExcerpts())
            if !figures.isEmpty {
                print("results of the figures completed before the bench stopped:")
                print(report(figures, bench: bench, machine: machine, options: options, loadAtStart: loadAtStart).table)
            }
            return 1
        }

        let report = report(figures, bench: bench, machine: machine, options: options, loadAtStart: loadAtStart)
        print(report.table)
        for finding in figures.flatMap({ figure in figure.failures.map { "\(figure.name): \($0)" } }) + bench.anomalies {
            print("finding: \(finding)")
        }
        if let output = options.output {
            try report.writeMarkdown(to: output)
            printNote("wrote the results to \(output)")
        }
        let failed = figures.contains { !$0.failures.isEmpty } || !bench.anomalies.isEmpty
        return failed ? 1 : 0
    }

    private static func report(
        _ figures: [LatencyFigure], bench: EndToEndBench, machine: MachineDescription, options: EndToEndOptions,
        loadAtStart: String
    ) -> EndToEndReport {
        EndToEndReport(
            figures: figures, machine: machine, command: shellCommandLine(CommandLine.arguments),
            preset: options.preset ?? "lan (the node default; the configs set no preset)",
            nodeCount: EndToEndBench.nodeCount, warmupSamples: options.warmup, anomalies: bench.anomalies,
            loadAtStart: loadAtStart, loadAtEnd: currentLoadAverages(), finished: Date())
    }

    /// Writes one config per node into DIR/configs and returns that directory. Each node lists the
    /// gossip addresses of the others as seeds, so any of them can rejoin after a restart.
    private static func writeNodeConfigs(in directory: ClusterDirectory, preset: String?) throws -> String {
        let count = EndToEndBench.nodeCount
        let ports = try ScenarioPorts.findFree(count: count)
        let configDirectory = "\(directory.path)/configs"
        do {
            try FileManager.default.createDirectory(atPath: configDirectory, withIntermediateDirectories: true)
        } catch {
            throw ClusterError("creating \(configDirectory) failed: \(error.localizedDescription)")
        }

        let host = GeneratedClusterDefaults.host
        let gossipAddresses = (0..<count).map { NodeAddress(host: host, port: UInt16(ports.gossip + $0)) }
        for offset in 0..<count {
            let config = BenchNodeConfig(
                name: "node-\(offset + 1)",
                clientListen: NodeAddress(host: host, port: UInt16(ports.client + offset)),
                gossipListen: gossipAddresses[offset],
                seeds: gossipAddresses.enumerated().filter { $0.offset != offset }.map(\.element),
                gossip: preset.map { BenchNodeConfig.Gossip(preset: $0) })
            try writeJSON(config, to: "\(configDirectory)/\(config.name).json")
        }
        return configDirectory
    }
}

/// Node config of the bench cluster. Unlike the generated configs of `cluster up`, it sets no
/// gossip preset unless --preset names one, so the nodes run with their default settings.
private struct BenchNodeConfig: Encodable {
    struct Gossip: Encodable {
        var preset: String
    }

    struct Log: Encodable {
        var level: String
    }

    var name: String
    var clientListen: NodeAddress
    var gossipListen: NodeAddress
    var seeds: [NodeAddress]
    /// Omitted from the JSON when nil.
    var gossip: Gossip?
    var log = Log(level: "info")
}

/// Options of `bench e2e`, checked.
struct EndToEndOptions {
    var samples: Int
    /// Unmeasured samples of figure a before the measured ones, so that first-use costs such as
    /// loading libwebsockets' event library plugin stay out of the numbers.
    var warmup = 5
    var output: String?
    var figures: [String]
    /// Gossip preset written into the node configs; nil writes none.
    var preset: String?
    var directory: String
    var eventTimeout: Duration

    init(_ parsed: ParsedArguments) throws {
        _ = try parsed.requirePositionals([])
        samples = try parsed.integer("--samples", in: 1...100_000) ?? 100
        output = parsed.value("--output")
        directory = parsed.value("--dir") ?? ".cluster-bench"
        eventTimeout = try parsed.seconds("--timeout", maximum: 600) ?? .seconds(15)

        if let list = parsed.value("--figures") {
            let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            for name in names where !BenchCommand.figureNames.contains(name) {
                throw UsageError("invalid figure '\(name)' in --figures: expected change, kill or term, separated by commas")
            }
            guard !names.isEmpty else {
                throw UsageError("--figures is empty: expected change, kill or term, separated by commas")
            }
            figures = BenchCommand.figureNames.filter(names.contains)
        } else {
            figures = BenchCommand.figureNames
        }

        if let preset = parsed.value("--preset") {
            guard ["lan", "wan", "local"].contains(preset) else {
                throw UsageError("invalid value '\(preset)' for --preset: expected lan, wan or local")
            }
            self.preset = preset
        }
    }
}
