#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Prints `message` to stderr as `presencectl: error: MESSAGE`.
func printError(_ message: String) {
    writeStandardError("presencectl: error: \(message)\n")
}

/// Prints `message` to stderr, for progress and notes that are not the command's result.
func printNote(_ message: String) {
    writeStandardError("\(message)\n")
}

/// Writes `text` to file descriptor 2 unbuffered. The C `stderr` stream is a global that Swift 6
/// concurrency checking rejects.
func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let count = bytes.withUnsafeMutableBytes { buffer in
            write(STDERR_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
        }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return }
        offset += count
    }
}
