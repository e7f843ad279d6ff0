import Foundation
import Observation
import PresenceClient
import PresenceProtocol

/// `presencectl chatlist --node URL --user ID --contacts ID,ID,...`: a live terminal chat list.
enum ChatListCommand {
    static let usage = CommandSpec(
        name: "chatlist",
        synopsis: "--node URL --user ID --contacts ID,ID,... [--once SECONDS]",
        summary: "Shows a live chat list in the terminal: each contact with a green dot while online, "
            + "or a gray dot and the time last seen. Redraws on every change; Ctrl-C exits.",
        options: [
            OptionSpec("--node", value: "URL", help: "client URL of the node, such as ws://127.0.0.1:7101"),
            OptionSpec("--user", value: "ID", help: "user the chat list belongs to, who connects as this user"),
            OptionSpec("--contacts", value: "IDS", help: "comma-separated user IDs that the list shows"),
            OptionSpec("--once", value: "SECONDS", help: "exit after this many seconds (default: run until Ctrl-C)"),
        ])

    /// Runs the command with the arguments after `chatlist` and returns the exit status.
    static func run(_ arguments: [String]) -> Int32 {
        let options: Options
        switch usage.parseOptions(arguments, Options.init) {
        case .run(let parsed): options = parsed
        case .exit(let status): return status
        }
        LiveSession.quietWebSocketLibrary()
        let terminal = isatty(STDOUT_FILENO) == 1
        if terminal { writeStandardOutput(ANSI.hideCursor) }
        let status = LiveSession.run(limit: options.duration) {
            await show(options, clearsScreen: terminal)
        }
        if terminal { writeStandardOutput(ANSI.showCursor) }
        return status
    }

    struct Options {
        var endpoint: URL
        var user: String
        var contacts: [String]
        var duration: Duration?

        init(_ parsed: ParsedArguments) throws {
            _ = try parsed.requirePositionals([])
            guard let node = parsed.value("--node") else {
                throw UsageError("missing --node URL, such as --node ws://127.0.0.1:7101")
            }
            guard let user = parsed.value("--user") else {
                throw UsageError("missing --user ID: the user whose chat list to show")
            }
            guard let contactList = parsed.value("--contacts") else {
                throw UsageError("missing --contacts ID,ID,...: the users the chat list shows")
            }
            let contacts = contactList.split(separator: ",", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            if contacts.contains(where: \.isEmpty) {
                throw UsageError("invalid value '\(contactList)' for --contacts: a user ID is empty")
            }
            self.user = user
            self.contacts = try LiveSession.validUserIDs(contacts, option: "--contacts")
            self.endpoint = try LiveSession.endpoint(node: node, userId: user, option: "--user")
            self.duration = try parsed.seconds("--once", maximum: 86_400)
        }
    }

    @MainActor
    private static func show(_ options: Options, clearsScreen: Bool) async -> Int32 {
        let connection = PresenceConnection(urls: [options.endpoint])
        let store = PresenceStore()
        store.follow(connection)
        await connection.subscribe(userIds: options.contacts)
        await connection.start()

        // A redraw follows each store change, and one a second keeps the
        // "last seen" times current.
        let (redraws, requestRedraw) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                requestRedraw.yield()
            }
        }
        var lastFrame = ""
        let draw = {
            let frame = withObservationTracking {
                render(store: store, options: options, now: Date())
            } onChange: {
                requestRedraw.yield()
            }
            if frame != lastFrame {
                lastFrame = frame
                // Output that is not a terminal (a pipe, a file) gets the frames without colours.
                writeStandardOutput(clearsScreen ? ANSI.home + ANSI.clearScreen + frame : "\n" + ANSI.stripped(frame))
            }
        }
        draw()
        for await _ in redraws {
            if Task.isCancelled { break }
            draw()
        }
        ticker.cancel()
        await connection.stop()
        store.stopFollowing()
        return 0
    }

    /// Renders the chat list: a header with the connection state, then one
    /// line per contact in the order given.
    @MainActor
    static func render(store: PresenceStore, options: Options, now: Date) -> String {
        var lines: [String] = []
        if let session = store.session {
            lines.append("\(ANSI.bold)Chats of \(options.user)\(ANSI.reset)  connected to \(session.node)")
        } else if let reason = store.disconnectReason {
            lines.append("\(ANSI.bold)Chats of \(options.user)\(ANSI.reset)  reconnecting (\(reason))")
        } else {
            lines.append("\(ANSI.bold)Chats of \(options.user)\(ANSI.reset)  connecting to \(options.endpoint.absoluteString)")
        }
        lines.append("")
        let width = options.contacts.map(\.count).max() ?? 0
        for contact in options.contacts {
            let entry = store[contact]
            let dot = entry?.isOnline == true ? "\(ANSI.green)●\(ANSI.reset)" : "\(ANSI.gray)●\(ANSI.reset)"
            let name = contact.padding(toLength: width, withPad: " ", startingAt: 0)
            lines.append(" \(dot) \(name)  \(describe(entry, now: now))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func describe(_ entry: PresenceStore.Entry?, now: Date) -> String {
        guard let entry else { return "\(ANSI.gray)unknown\(ANSI.reset)" }
        var text: String
        if entry.isOnline {
            text = "online"
        } else if let lastSeen = entry.lastSeen {
            text = "\(ANSI.gray)last seen \(relativeTime(from: lastSeen, to: now))\(ANSI.reset)"
        } else {
            text = "\(ANSI.gray)offline\(ANSI.reset)"
        }
        if let custom = entry.custom, custom.status != "online" {
            text += "  [\(custom.status)" + (custom.text.map { ": \($0)" } ?? "") + "]"
        }
        return text
    }

    /// Formats the time between two instants as "just now", "5 min ago" and so on.
    static func relativeTime(from date: Date, to now: Date) -> String {
        let seconds = Int(now.timeIntervalSince(date))
        switch seconds {
        case ..<10: return "just now"
        case ..<60: return "\(seconds) s ago"
        case ..<3_600: return "\(seconds / 60) min ago"
        case ..<86_400: return "\(seconds / 3_600) h ago"
        default: return "\(seconds / 86_400) d ago"
        }
    }

    private static func writeStandardOutput(_ text: String) {
        print(text, terminator: "")
        fflush(nil)
    }
}

/// ANSI escape sequences of the chat list.
private enum ANSI {
    static let home = "\u{1B}[H"
    static let clearScreen = "\u{1B}[2J"
    static let hideCursor = "\u{1B}[?25l"
    static let showCursor = "\u{1B}[?25h"
    static let bold = "\u{1B}[1m"
    static let green = "\u{1B}[32m"
    static let gray = "\u{1B}[90m"
    static let reset = "\u{1B}[0m"

    /// Returns `text` without its escape sequences (ESC, `[`, parameters, one final letter).
    static func stripped(_ text: String) -> String {
        var result = ""
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            guard character == "\u{1B}" else {
                result.append(character)
                continue
            }
            guard iterator.next() == "[" else { continue }
            while let next = iterator.next(), !next.isLetter {}
        }
        return result
    }
}
