import Foundation

/// Markdown of the fan-out benchmark.
enum FanoutReport {
    static let heading = "### One presence change fanned out to many subscribers"

    /// Target: the node within this factor of the raw-TCP floor, for CPU per delivery and for time to the last subscriber.
    static let targetRatio = 1.2

    static func markdown(_ results: [FanoutResult], _ settings: FanoutBench.Settings) -> String {
        var lines: [String] = []
        lines.append("Command: `\(commandLineText)` (\(utcTimestamp())).")
        lines.append("")
        lines.append("""
            One client process with one libuv loop holds N WebSocket connections to one \
            `presence-node`, each an `observe=true` session subscribed to one user. The subscribers \
            read plain libuv TCP sockets and split the bytes into frames themselves. A publisher \
            session of that user, a libwebsockets client, opens and closes: each open and each close \
            is one event to all N. The floor is `presence-bench raw-server`, one libuv loop that \
            copies each message from the publisher connection to every other connection with no \
            framing, driven by the same client over N plain TCP connections with the same read code \
            and messages of the node's frame size. Each batch \
            has \(settings.warmupEvents) warm-up events and then \(settings.events) measured events, \
            one at a time, with \(Int(settings.gapSeconds * 1000)) ms between them. Time to last is \
            from the publisher's action (connect or close started, or the raw write) until the last \
            subscriber has read the event; first to last is between the first and the last \
            subscriber reading it. Server CPU is utime + stime from `/proc/PID/stat` over the \
            measured events, divided by events × N.
            """)
        lines.append("")
        lines.append("| Subscribers | Round | Server | Time to last, median / p99 (ms) | First to last, median / p99 (ms) | Server CPU per delivery (µs) |")
        lines.append("|---:|---:|---|---|---|---:|")
        for result in results {
            for (label, m) in [("PresenceMesh", result.mesh), ("raw TCP", result.raw)] {
                lines.append("| \(result.subscribers.grouped) | \(result.round) | \(label) | "
                    + "\(ms(m.total.median)) / \(ms(m.total.p99)) | \(ms(m.spread.median)) / \(ms(m.spread.p99)) | "
                    + "\(formatted(m.cpuPerDelivery, 2)) |")
            }
            let mesh = result.mesh, raw = result.raw
            lines.append("| \(result.subscribers.grouped) | \(result.round) | ratio | "
                + "\(formatted(mesh.total.median / raw.total.median)) / \(formatted(mesh.total.p99 / raw.total.p99)) | "
                + "\(formatted(mesh.spread.median / raw.spread.median)) / \(formatted(mesh.spread.p99 / raw.spread.p99)) | "
                + "\(formatted(mesh.cpuPerDelivery / raw.cpuPerDelivery)) |")
        }
        lines.append("")
        lines.append("Against the targets (PresenceMesh within \(formatted(targetRatio, 1))× the floor), per batch:")
        lines.append("")
        for result in results {
            let cpuRatio = result.mesh.cpuPerDelivery / result.raw.cpuPerDelivery
            let timeRatio = result.mesh.total.median / result.raw.total.median
            var line = "- \(result.subscribers.grouped) subscribers, round \(result.round): CPU per delivery "
                + "\(formatted(cpuRatio))×, \(verdict(cpuRatio <= targetRatio)); median time to last \(formatted(timeRatio))×, "
                + "\(verdict(timeRatio <= targetRatio))."
            let notes = result.mesh.notes.filter { $0.hasPrefix("frames_sent") }
            if !notes.isEmpty { line += " Node counters over the batch: \(notes.joined(separator: ", "))." }
            if result.mesh.unexpected + result.raw.unexpected > 0 {
                line += " Unexpected deliveries: \(result.mesh.unexpected) (node), \(result.raw.unexpected) (raw)."
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    private static func ms(_ microseconds: Double) -> String { formatted(microseconds / 1000, 2) }
}
