import CLibUV
import Foundation

/// One libuv loop driven step by step from straight-line benchmark code. A repeating 2 ms timer
/// makes every `uv_run(UV_RUN_ONCE)` return soon, so conditions and deadlines are checked often
/// even when no I/O arrives. Measured timestamps are taken inside I/O callbacks, never by these checks.
final class EventLoop {
    let loop: UnsafeMutablePointer<uv_loop_t>
    private let heartbeat: UnsafeMutablePointer<uv_timer_t>

    init() {
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
        heartbeat = .allocate(capacity: 1)
        uv_timer_init(loop, heartbeat)
        uv_timer_start(heartbeat, { _ in }, 2, 2)
    }

    /// Runs the loop until `condition` is true or `timeout` seconds pass; returns whether it is true.
    @discardableResult
    func run(timeout: Double, until condition: () -> Bool) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        while !condition() {
            if monotonicNanoseconds() >= deadline { return false }
            uv_run(loop, UV_RUN_ONCE)
        }
        return true
    }

    /// Runs the loop for `seconds`.
    func run(seconds: Double) {
        run(timeout: seconds) { false }
    }

    /// Closes every handle left on the loop and the loop itself.
    func close() {
        uv_timer_stop(heartbeat)
        uv_walk(loop, { handle, _ in
            guard let handle, uv_is_closing(handle) == 0 else { return }
            uv_close(handle, nil)
        }, nil)
        for _ in 0..<100 where uv_run(loop, UV_RUN_NOWAIT) != 0 {}
        if uv_loop_close(loop) == 0 {
            loop.deallocate()
        }
        // NOTE: handles closed by the walk above are not freed, because their owners may be gone;
        // the process ends soon after a loop is closed.
    }
}

/// Returns whether `pattern` occurs in the `count` bytes at `bytes`.
func bytesContain(_ bytes: UnsafeRawPointer, _ count: Int, _ pattern: StaticString) -> Bool {
    let length = pattern.utf8CodeUnitCount
    guard length > 0, count >= length else { return length == 0 }
    let needle = UnsafeRawPointer(pattern.utf8Start)
    let first = needle.load(as: UInt8.self)
    for offset in 0...(count - length) where bytes.load(fromByteOffset: offset, as: UInt8.self) == first {
        if memcmp(bytes + offset, needle, length) == 0 { return true }
    }
    return false
}
