import Foundation

/// Writes this benchmark's section of a shared Markdown results page. Other sections of the page
/// belong to other benchmarks: the file is read again right before each write, and only
/// `## Scale on one node and late join` is touched, and inside it only the `###` subsection
/// being written. Text in the section before its first `###` heading is kept once written.
enum ResultsFile {
    static let heading = "## Scale on one node and late join"

    static func update(path: String, machine: MachineDescription, subsection: String, body: String) throws {
        let existing = (try? String(contentsOfFile: path, encoding: .utf8)) ?? "# Benchmark results\n"
        var lines = existing.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }

        guard let start = lines.firstIndex(of: heading) else {
            var text = lines.joined(separator: "\n")
            text += "\n\n" + heading + "\n\n" + introduction(machine) + "\n\n" + subsection + "\n\n" + body + "\n"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("## ") } ?? lines.count
        var section = Array(lines[start..<end])
        while section.last == "" { section.removeLast() }
        let block = [subsection, ""] + body.components(separatedBy: "\n")
        if let sub = section.firstIndex(of: subsection) {
            let subEnd = section[(sub + 1)...].firstIndex { $0.hasPrefix("### ") } ?? section.count
            var replacement = block
            if subEnd < section.count { replacement.append("") }
            section.replaceSubrange(sub..<subEnd, with: replacement)
        } else {
            section += [""] + block
        }
        while section.last == "" { section.removeLast() }
        var result = Array(lines[..<start]) + section
        if end < lines.count { result += [""] + Array(lines[end...]) }
        try (result.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func introduction(_ machine: MachineDescription) -> String {
        """
        Measured with `presence-bench` built with `swift build -c release`, every process on \
        127.0.0.1 of one machine: \(machine.markdown). The machine was shared with other engineers \
        compiling at the same time, so figures that depend on free CPU were repeated.
        """
    }
}

extension Int {
    /// The number with thousands separators, as in 15,000.
    var grouped: String {
        let formatter = NumberFormatter()
        formatter.numberStyle = .decimal
        formatter.groupingSeparator = ","
        formatter.usesGroupingSeparator = true
        return formatter.string(from: NSNumber(value: self)) ?? String(self)
    }
}

/// "met" or "missed" for a figure against its target.
func verdict(_ met: Bool) -> String { met ? "met" : "missed" }

/// Today's date and time in UTC, for the results page.
func utcTimestamp() -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
    return formatter.string(from: Date())
}
