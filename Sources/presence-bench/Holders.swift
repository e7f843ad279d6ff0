import Foundation

/// `presence-bench hold` processes that together keep `total` sessions open on one node.
struct HolderSet {
    var workers: [ChildProcess] = []
    var opened = 0
    var slowestSeconds = 0.0

    /// Starts the workers, each with an equal share of `total`, and waits for every `ready` line.
    static func start(
        group: ChildGroup, label: String, port: UInt16, total: Int, processes: Int, observe: Bool, timeout: Double
    ) throws -> HolderSet {
        var set = HolderSet()
        for worker in 0..<processes {
            let share = total / processes + (worker < total % processes ? 1 : 0)
            guard share > 0 else { continue }
            let child = try group.start(name: "\(label)-w\(worker)", executable: Executables.bench, arguments: [
                "hold", "--port", String(port), "--count", String(share), "--prefix", "\(label)-w\(worker)-",
                "--observe", observe ? "1" : "0", "--timeout", String(Int(timeout)),
            ])
            set.workers.append(child)
        }
        for child in set.workers {
            guard let ready = child.waitForLine(prefix: "ready ", timeout: timeout + 30) else {
                throw BenchError("\(child.name) did not report its sessions open within \(Int(timeout + 30)) s; see \(child.logPath)")
            }
            set.opened += Int(ready["opened"] ?? "") ?? 0
            set.slowestSeconds = max(set.slowestSeconds, Double(ready["seconds"] ?? "") ?? 0)
            if let failed = Int(ready["failed"] ?? ""), failed > 0 {
                printError("\(child.name): \(failed) sessions failed to open, last failure: \(ready["last_failure"] ?? "")")
            }
        }
        return set
    }

    func stop(group: ChildGroup) {
        for worker in workers { group.stop(worker) }
    }
}
