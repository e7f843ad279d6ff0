import CLibUV
import Foundation

/// `presence-bench hold`: opens many WebSocket sessions to one node and keeps them idle until
/// SIGTERM or `--hold-seconds` pass. The idle-memory and late-join benchmarks start several of
/// these, because one process may open only about 19,990 files.
enum HoldWorker {
    private final class StopFlag {
        var stopped = false
    }

    static func main(_ arguments: [String]) -> Int32 {
        let port: Int, count: Int, observe: Int, maxPending: Int, timeout: Int, holdSeconds: Int
        let prefix: String
        do {
            let options = try Options(arguments, accepted: [
                "--port", "--count", "--prefix", "--observe", "--max-pending", "--timeout", "--hold-seconds",
            ])
            port = try options.integer("--port", default: 0, in: 1...65_535)
            count = try options.integer("--count", default: 1000, in: 1...19_900)
            observe = try options.integer("--observe", default: 0, in: 0...1)
            maxPending = try options.integer("--max-pending", default: 200, in: 1...5000)
            timeout = try options.integer("--timeout", default: 300, in: 1...3600)
            holdSeconds = try options.integer("--hold-seconds", default: 1800, in: 1...7200)
            prefix = options.string("--prefix") ?? "hold-\(getpid())-"
        } catch {
            printError("presence-bench hold: \(error)")
            return 2
        }

        let loop = EventLoop()
        let flag = StopFlag()
        var signalHandles: [UnsafeMutablePointer<uv_signal_t>] = []
        for number in [SIGTERM, SIGINT] {
            let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(loop.loop, handle)
            handle.pointee.data = Unmanaged.passUnretained(flag).toOpaque()
            uv_signal_start(handle, { handle, _ in
                guard let raw = handle?.pointee.data else { return }
                Unmanaged<StopFlag>.fromOpaque(raw).takeUnretainedValue().stopped = true
            }, number)
            signalHandles.append(handle)
        }
        let pool: WebSocketPool
        do {
            pool = try WebSocketPool(eventLoop: loop, port: UInt16(port), capacity: count)
        } catch {
            printError("presence-bench hold: \(error)")
            return 1
        }
        let query = observe == 1 ? "&observe=true" : ""
        let started = monotonicNanoseconds()
        let parent = getppid()
        // A worker whose benchmark process died stops by itself instead of holding sessions forever.
        let shouldStop = { flag.stopped || getppid() != parent }
        let opened = pool.openAll(0..<count, maxPending: maxPending, timeout: Double(timeout), stop: shouldStop) {
            "/v1/ws?userId=\(prefix)\($0)\(query)"
        }
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        print("ready opened=\(opened) failed=\(count - opened) connection_errors=\(pool.failedCount) "
            + "closed_after_open=\(pool.closedCount) seconds=\(formatted(seconds, 2)) last_failure=\(pool.lastFailure)")
        fflush(nil)
        loop.run(timeout: Double(holdSeconds), until: shouldStop)
        // The kernel closes every socket at exit, which ends the sessions as an abrupt close would.
        print("stopping open=\(pool.openCount)")
        fflush(nil)
        return 0
    }
}
