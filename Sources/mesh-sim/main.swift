// mesh-sim: runs MeshCore in the deterministic simulator. Scenarios print what the nodes
// observed; `bench` measures dissemination, traffic, crash detection and false positives.

import Foundation
import MeshCore
import MeshSimulator

let usage = """
    usage: mesh-sim scenario partition|loss|pause|restart|burst [--seed N]
           mesh-sim run --nodes N [--seconds S] [--seed N]
           mesh-sim bench [--sizes 10,100,1000,10000] [--fp-sizes 10,100,1000,10000] [--fp-seconds 3600]
                          [--fp-cases 10:5,100:20]
                          [--seed N] [--write FILE]

    scenario  runs one failure scenario with the local preset and prints its outcome
    run       one benchmark run of N nodes (lan preset): delta spread, traffic, crash detection
    bench     runs every size, then false positives at 5% and 20% loss, and prints a Markdown
              section; --write replaces the section "Membership simulator" in FILE (or appends it)
    --seed N        seed of every random choice (default 1); one seed always gives the same run
    --seconds S     virtual seconds of a run (default 60)
    --fp-seconds S  virtual seconds of each false-positive run (default 3600)
    --fp-cases L    false-positive runs as N:loss percent pairs, in place of every --fp-sizes
                    size at 5% and 20% loss
    """

struct Options {
    var values: [String: String] = [:]
    var positional: [String] = []

    init(_ arguments: ArraySlice<String>) throws {
        var rest = arguments
        while let argument = rest.popFirst() {
            if argument.hasPrefix("--") {
                guard let value = rest.popFirst() else { throw UsageError("missing value for \(argument)") }
                values[String(argument.dropFirst(2))] = value
            } else {
                positional.append(argument)
            }
        }
    }

    func integer(_ name: String, default fallback: Int) throws -> Int {
        guard let text = values[name] else { return fallback }
        guard let value = Int(text), value >= 0 else { throw UsageError("--\(name) must be a non-negative integer, got \(text)") }
        return value
    }

    /// Pairs of node count and loss percent, written `N:percent` and separated by commas.
    func lossCases(_ name: String) throws -> [(nodes: Int, lossPercent: Int)]? {
        guard let text = values[name] else { return nil }
        return try text.split(separator: ",").map { item in
            let parts = item.split(separator: ":")
            guard parts.count == 2, let nodes = Int(parts[0]), nodes >= 2, let percent = Int(parts[1]), (0...100).contains(percent)
            else { throw UsageError("--\(name) must list N:percent pairs with N of at least 2 and percent 0 to 100, got \(item)") }
            return (nodes, percent)
        }
    }

    func integers(_ name: String, default fallback: [Int]) throws -> [Int] {
        guard let text = values[name] else { return fallback }
        return try text.split(separator: ",").map {
            guard let value = Int($0), value >= 2 else { throw UsageError("--\(name) must list sizes of at least 2, got \(text)") }
            return value
        }
    }
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

let started = ContinuousClock.now
func wallSeconds() -> Double {
    let elapsed = ContinuousClock.now - started
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

func format(_ milliseconds: UInt64?) -> String {
    guard let milliseconds else { return "never" }
    return String(format: "%.2f s", Double(milliseconds) / 1_000)
}

func runScenario(_ name: String, seed: UInt64) throws {
    switch name {
    case "partition":
        let result = Scenarios.partition(seed: seed)
        print("partition 2|3 for 15 s: sides declared each other dead: \(result.sidesDeclaredEachOtherDead)")
        print("users offline across the partition: \(result.usersOfflineAcrossPartition)")
        print("one cluster with every user online after healing: \(format(result.healMilliseconds))")
    case "loss":
        let result = Scenarios.loss(seed: seed)
        print("50 nodes, 10% loss, 60 s: death verdicts \(result.deathVerdicts), suspicions \(result.suspicions)")
    case "pause":
        for factor in [0.8, 3.0] {
            let result = Scenarios.pause(seed: seed, factor: factor)
            print("paused \(result.pauseMilliseconds) ms (\(factor) x minimum suspicion timeout): death verdicts \(result.deathVerdicts), user offline while paused: \(result.userOfflineWhilePaused), refutations \(result.refutations), recovered after \(format(result.recoveryMilliseconds))")
        }
    case "restart":
        let result = Scenarios.restart(seed: seed)
        print("restart at the same address: old sessions back online \(result.resurrections) times, still online on \(result.stillOnlineAtEnd) nodes at the end, most alive members at one address \(result.maxAliveAtOneAddress), converged \(result.converged)")
    case "burst":
        let result = Scenarios.burst(seed: seed)
        print("5,000 changes on one of 20 nodes: all nodes have all users after \(format(result.convergedMilliseconds)), fewest online \(result.fewestOnline), datagrams \(result.datagramsSent)")
    default:
        throw UsageError("unknown scenario \(name); expected partition, loss, pause, restart or burst")
    }
}

func describe(_ run: MembershipBenchmark.RunResult) -> String {
    let rounds = { (milliseconds: UInt64?) -> String in
        guard let milliseconds else { return "never" }
        return String(format: "%.1f", Double(milliseconds) / Double(run.gossipIntervalMs))
    }
    let detection = run.detectionMilliseconds
    let steady = run.steadyDatagramsPerNodePerSecond.map { String(format: "%.2f", $0) } ?? "not measured"
    let steadyBytes = run.steadyBytesPerNodePerSecond.map { String(format: "%.0f", $0) } ?? "not measured"
    return "| \(run.nodes) | \(rounds(run.deltaMilliseconds99_99)) / \(format(run.deltaMilliseconds99_99)) "
        + "| \(rounds(run.deltaMilliseconds100)) / \(format(run.deltaMilliseconds100)) "
        + "| \(steady) / \(steadyBytes) | \(run.quietAtSteadyStart ? "yes" : "no") "
        + String(format: "| %.2f / %.0f | %.3f ", run.datagramsPerNodePerSecond, run.bytesPerNodePerSecond, run.pushPullsPerNodePerSecond)
        + "| \(format(detection.first)) / \(format(MembershipBenchmark.percentile(detection, 50))) / "
        + "\(format(MembershipBenchmark.percentile(detection, 99))) / \(format(detection.last)) "
        + "| \(run.undetected) | \(run.falseDeaths) "
        + String(format: "| %.1f s |", run.wallSeconds)
}

let runHeader = """
    | N | delta on 99.99%: rounds / time | delta on 100%: rounds / time | steady datagrams / bytes per node per s | steady window quiet | whole-run datagrams / bytes per node per s | push-pulls/node/s | crash detection min / median / p99 / max | observers that missed the crash | false deaths | wall time |
    |---|---|---|---|---|---|---|---|---|---|---|
    """

func shell(_ command: String) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = Pipe()
    do { try process.run() } catch { return "unknown (\(error))" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

func ceilLog3(_ n: Int) -> Int {
    var rounds = 0
    var reach = 1
    while reach < n {
        reach *= 3
        rounds += 1
    }
    return rounds
}

func bench(_ options: Options) throws {
    let sizes = try options.integers("sizes", default: [10, 100, 1_000, 10_000])
    let falsePositiveSizes = try options.integers("fp-sizes", default: [10, 100, 1_000, 10_000])
    let falsePositiveSeconds = UInt64(try options.integer("fp-seconds", default: 3_600))
    let seed = UInt64(try options.integer("seed", default: 1))
    let falsePositiveCases = try options.lossCases("fp-cases")
        ?? falsePositiveSizes.flatMap { size in [(nodes: size, lossPercent: 5), (nodes: size, lossPercent: 20)] }
    let command = CommandLine.arguments.joined(separator: " ")

    var runs: [MembershipBenchmark.RunResult] = []
    for size in sizes {
        let run = MembershipBenchmark.run(nodes: size, seed: seed, clock: wallSeconds)
        FileHandle.standardError.write(Data("N=\(size) done in \(String(format: "%.1f", run.wallSeconds)) s\n".utf8))
        runs.append(run)
    }
    var falsePositives: [MembershipBenchmark.FalsePositiveResult] = []
    for (size, percent) in falsePositiveCases {
        let loss = Double(percent) / 100
        let result = MembershipBenchmark.falsePositives(
            nodes: size, lossRate: loss, seed: seed, virtualSeconds: falsePositiveSeconds, clock: wallSeconds
        ) { partial in
            FileHandle.standardError.write(Data((
                "false positives N=\(size) loss=\(loss) at \(partial.virtualSeconds) virtual s: "
                    + "\(partial.nodesDeclaredDead) nodes declared dead, \(partial.suspicions) suspicions, "
                    + "\(String(format: "%.1f", partial.wallSeconds)) s wall\n").utf8))
        }
        FileHandle.standardError.write(Data("false positives N=\(size) loss=\(loss) done in \(String(format: "%.1f", result.wallSeconds)) s\n".utf8))
        falsePositives.append(result)
    }

    var lines: [String] = []
    lines.append("## Membership simulator (mesh-sim bench)")
    lines.append("")
    lines.append("Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (nproc), "
        + "\(shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'")), "
        + "Linux \(shell("uname -r")), \(shell("swift --version 2>&1 | head -1")).")
    lines.append("")
    lines.append("Command: `\(command)`, a release build of mesh-sim (seed \(seed)).")
    lines.append("")
    lines.append("Every run uses the lan preset on simulated links with 100 µs minimum and 150 µs mean extra one-way "
        + "delay and no loss. Nodes start as one formed cluster (a shared member directory). At 5 s node-1 opens "
        + "a session; at 20 s the last node crashes; runs last 60 virtual seconds. Rounds are virtual time divided "
        + "by the 200 ms gossip interval. Datagram figures count every UDP datagram sent (probes, acks, gossip); "
        + "push-pulls are TCP exchanges, counted apart. Steady figures count the datagrams the running nodes "
        + "sent from \(MembershipBenchmark.steadyFromSeconds) s to the end, after the crash's gossip has drained: "
        + "SWIM's constant load. The steady window is quiet when, at its start, no node had gossip queued or "
        + "a member suspected. Whole-run figures also contain the gossip of the delta and of the crash, whose "
        + "retransmissions grow with log N by design (`retransmitMult · ceil(log10(N + 1))` per node and item).")
    lines.append("")
    lines.append(runHeader)
    for run in runs {
        lines.append(describe(run))
    }
    lines.append("")
    lines.append("False positives (healthy nodes declared dead) with loss on every link, lan preset:")
    lines.append("")
    lines.append("| N | loss | virtual time | death verdicts | nodes declared dead | suspicions | datagrams / bytes per node per s | wall time |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for result in falsePositives {
        lines.append(String(
            format: "| %d | %.0f%% | %d s | %d | %d | %d | %.2f / %.0f | %.1f s |", result.nodes, result.lossRate * 100,
            Int(result.virtualSeconds), result.deathVerdicts, result.nodesDeclaredDead, result.suspicions,
            result.datagramsPerNodeSecond, result.bytesPerNodeSecond, result.wallSeconds))
    }
    lines.append("")
    lines.append("Targets:")
    lines.append("")
    if let large = runs.first(where: { $0.nodes == 10_000 }) {
        let limit = ceilLog3(large.nodes) + 4
        let rounds = large.deltaMilliseconds100.map { Double($0) / Double(large.gossipIntervalMs) }
        let met = rounds.map { $0 <= Double(limit) } ?? false
        lines.append("- 10,000 nodes, delta on 100% within ceil(log3 N) + 4 = \(limit) rounds: "
            + (rounds.map { String(format: "%.1f rounds", $0) } ?? "never") + " — \(met ? "met" : "missed").")
        let wallMet = large.wallSeconds < 60
        lines.append(String(format: "- 10,000 nodes × 60 virtual s in under 60 s wall: %.1f s — %@.", large.wallSeconds, wallMet ? "met" : "missed"))
    } else {
        lines.append("- 10,000-node targets: not run (no N = 10,000 in --sizes).")
    }
    let targetRuns = runs.filter { $0.nodes >= 100 && $0.nodes <= 10_000 }
    let steadyLoads = targetRuns.compactMap(\.steadyDatagramsPerNodePerSecond)
    if steadyLoads.count == targetRuns.count, let low = steadyLoads.min(), let high = steadyLoads.max(),
        let base = runs.first(where: { $0.nodes == 100 })?.steadyDatagramsPerNodePerSecond
    {
        let spread = max(abs(high - base), abs(low - base)) / base * 100
        let quiet = targetRuns.allSatisfy(\.quietAtSteadyStart)
        let met = spread <= 15 && quiet
        lines.append(String(
            format: "- steady datagrams/node/s within ±15%% from N = 100 to 10,000: %.2f to %.2f, at most %.1f%% from N = 100%@ — %@.",
            low, high, spread, quiet ? "" : " (a steady window was not quiet)", met ? "met" : "missed"))
    } else if !targetRuns.isEmpty {
        lines.append("- steady datagrams/node/s: not measured (runs shorter than \(MembershipBenchmark.steadyFromSeconds) virtual s).")
    }
    let wholeLoads = targetRuns.map(\.datagramsPerNodePerSecond)
    if let low = wholeLoads.min(), let high = wholeLoads.max(), let base = runs.first(where: { $0.nodes == 100 })?.datagramsPerNodePerSecond {
        let spread = max(abs(high - base), abs(low - base)) / base * 100
        lines.append(String(
            format: "- for comparison, not the target: whole-run datagrams/node/s, the delta's and the crash's gossip included, %.2f to %.2f, at most %.1f%% from N = 100.",
            low, high, spread))
    }
    if let target = falsePositives.first(where: { $0.nodes == 100 && $0.lossRate == 0.05 }) {
        let met = target.deathVerdicts == 0 && target.virtualSeconds >= 3_600
        lines.append("- zero false positives in one virtual hour, 5% loss, N = 100: \(target.deathVerdicts) in \(target.virtualSeconds) s — \(met ? "met" : "missed").")
    }
    let section = lines.joined(separator: "\n") + "\n"
    print(section, terminator: "")

    if let path = options.values["write"] {
        let existing = (try? String(contentsOfFile: path, encoding: .utf8)) ?? "# Benchmark results\n"
        let heading = "## Membership simulator (mesh-sim bench)"
        var updated: String
        if let start = existing.range(of: heading) {
            let tail = existing[start.upperBound...]
            let end = tail.range(of: "\n## ")?.lowerBound ?? existing.endIndex
            let after = end == existing.endIndex ? "" : String(existing[existing.index(after: end)...])
            updated = String(existing[..<start.lowerBound]) + section + (after.isEmpty ? "" : "\n" + after)
        } else {
            updated = existing.hasSuffix("\n\n") || existing.isEmpty ? existing : existing + (existing.hasSuffix("\n") ? "\n" : "\n\n")
            updated += section
        }
        try updated.write(toFile: path, atomically: true, encoding: .utf8)
        FileHandle.standardError.write(Data("wrote the section to \(path)\n".utf8))
    }
}

do {
    let arguments = CommandLine.arguments.dropFirst()
    guard let command = arguments.first else { throw UsageError("missing command") }
    let options = try Options(arguments.dropFirst())
    switch command {
    case "scenario":
        guard let name = options.positional.first else { throw UsageError("missing scenario name") }
        try runScenario(name, seed: UInt64(try options.integer("seed", default: 1)))
    case "run":
        let nodes = try options.integer("nodes", default: 100)
        guard nodes >= 2 else { throw UsageError("--nodes must be at least 2, got \(nodes)") }
        let run = MembershipBenchmark.run(
            nodes: nodes, seed: UInt64(try options.integer("seed", default: 1)),
            virtualSeconds: UInt64(try options.integer("seconds", default: 60)), clock: wallSeconds)
        print(runHeader)
        print(describe(run))
        print("events processed: \(run.eventsProcessed)")
    case "bench":
        try bench(options)
    case "help", "--help", "-h":
        print(usage)
    default:
        throw UsageError("unknown command \(command)")
    }
} catch {
    FileHandle.standardError.write(Data("mesh-sim: \(error)\n\(usage)\n".utf8))
    exit(2)
}
