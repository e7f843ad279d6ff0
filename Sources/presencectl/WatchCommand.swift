import Dispatch
import Foundation
import PresenceClient
import PresenceProtocol

/// `presencectl watch --node URL [--user ID ...]`: prints presence events of a node as they arrive.
enum WatchCommand {
    static let usage = CommandSpec(
        name: "watch",
        synopsis: "--node URL [--user ID ...] [--as ID] [--for SECONDS]",
        summary: "Connects to one node and prints presence changes as they arrive, one line each: "
            + "time, user ID, status and last seen. Without --user it watches every user.",
        options: [
            OptionSpec("--node", value: "URL", help: "client URL of the node, such as ws://127.0.0.1:7101"),
            OptionSpec("--user", value: "ID", help: "user whose presence to print; repeat it for more users"),
            OptionSpec("--as", value: "ID", help: "user ID this watcher connects as, as an observer that never shows online (default presencectl-watch)"),
            OptionSpec("--for", value: "SECONDS", help: "exit after this many seconds (default: run until Ctrl-C)"),
        ])

    /// Runs the command with the arguments after `watch` and returns the exit status.
    static func run(_ arguments: [String]) -> Int32 {
        let options: Options
        switch usage.parseOptions(arguments, Options.init) {
        case .run(let parsed): options = parsed
        case .exit(let status): return status
        }
        LiveSession.quietWebSocketLibrary()
        return LiveSession.run(limit: options.duration) {
            await watch(options)
        }
    }

    struct Options {
        var endpoint: URL
        var users: [String]
        var duration: Duration?

        init(_ parsed: ParsedArguments) throws {
            _ = try parsed.requirePositionals([])
            guard let node = parsed.value("--node") else {
                throw UsageError("missing --node URL, such as --node ws://127.0.0.1:7101")
            }
            users = try LiveSession.validUserIDs(parsed.allValues("--user"), option: "--user")
            let watcher = parsed.value("--as") ?? "presencectl-watch"
            endpoint = try LiveSession.endpoint(node: node, userId: watcher, option: "--as", observe: true)
            duration = try parsed.seconds("--for", maximum: 86_400)
        }
    }

    @MainActor
    private static func watch(_ options: Options) async -> Int32 {
        let connection = PresenceConnection(urls: [options.endpoint])
        let events = connection.events()
        if options.users.isEmpty {
            await connection.subscribeToAll()
        } else {
            await connection.subscribe(userIds: options.users)
        }
        await connection.start()
        printLine("connecting to \(options.endpoint.absoluteString)")

        for await event in events {
            if Task.isCancelled { break }
            for line in lines(for: event) {
                printLine(line)
            }
            // The watcher's only request is its subscription, so an error means no event will
            // come. Report it and stop instead of waiting.
            if case .error(let payload, _) = event {
                printError("presencectl watch: the node rejected the subscription (\(payload.code)); stopping")
                await connection.stop()
                return 1
            }
        }
        await connection.stop()
        return 0
    }

    /// Formats one event as output lines: one per user for a snapshot, one otherwise.
    static func lines(for event: PresenceEvent, now: Date = Date()) -> [String] {
        let time = now.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        switch event {
        case .sessionReady(let ready):
            return ["\(time)  session ready on node \(ready.node) as \(ready.userId) (session \(ready.sessionId))"]
        case .presence(let presence):
            return ["\(time)  \(describe(presence))"]
        case .snapshot(let snapshot, _):
            if snapshot.users.isEmpty {
                return ["\(time)  snapshot: no users"]
            }
            return snapshot.users.map { "\(time)  \(describe($0))  (snapshot)" }
        case .error(let payload, let requestId):
            let request = requestId.map { " for request \($0)" } ?? ""
            return ["\(time)  server error \(payload.code)\(request): \(payload.message)"]
        case .disconnected(let reason):
            return ["\(time)  disconnected: \(reason); reconnecting"]
        }
    }

    private static func describe(_ presence: UserPresence) -> String {
        var text = "\(presence.userId)  \(presence.status.rawValue)"
        if let custom = presence.custom {
            text += "  custom=\(custom.status)"
            if let note = custom.text, !note.isEmpty { text += " \"\(note)\"" }
        }
        if let lastSeen = presence.lastSeen {
            text += "  lastSeen=\(lastSeen)"
        }
        return text
    }

    private static func printLine(_ line: String) {
        print(line)
        fflush(nil)
    }
}

/// Runs a command that stays connected: pumps the main run loop so main-actor
/// work runs, and ends on SIGINT, when a time limit passes, or when the work
/// returns. Shared by `watch` and `chatlist`.
enum LiveSession {
    /// Runs `body` on the main actor until it returns, SIGINT arrives or
    /// `limit` passes. Then it cancels the body and waits up to 5 s for it.
    /// Returns the body's exit status, or 1 when the body did not finish in time.
    static func run(limit: Duration?, _ body: @escaping @MainActor @Sendable () async -> Int32) -> Int32 {
        let interrupted = SignalFlag(signal: SIGINT)
        let task = Task { @MainActor in await body() }
        let result = Locked<Int32?>(nil)
        Task {
            let status = await task.value
            result.withLock { $0 = status }
        }

        let deadline = limit.map { ContinuousClock.now + $0 }
        while result.withLock({ $0 }) == nil {
            if interrupted.isSet || deadline.map({ ContinuousClock.now >= $0 }) == true {
                break
            }
            _ = RunLoop.main.run(mode: .default, before: Date().addingTimeInterval(0.05))
        }

        task.cancel()
        let stopDeadline = ContinuousClock.now + .seconds(5)
        while result.withLock({ $0 }) == nil && ContinuousClock.now < stopDeadline {
            _ = RunLoop.main.run(mode: .default, before: Date().addingTimeInterval(0.05))
        }
        interrupted.restore()
        guard let status = result.withLock({ $0 }) else {
            printError("the connection did not close within 5 s; exiting anyway")
            return 1
        }
        return status
    }

    /// Limits libwebsockets' own stderr lines to errors and warnings, so they
    /// do not mix with the command's output.
    static func quietWebSocketLibrary() {
        #if !canImport(Darwin)
        LibWebSocketsTransport.logOnlyLibraryErrorsAndWarnings()
        #endif
    }

    /// Checks each user ID; throws `UsageError` naming the option and the ID.
    static func validUserIDs(_ ids: [String], option: String) throws -> [String] {
        for id in ids {
            if let problem = UserIDRules.validationError(id) {
                throw UsageError("invalid user ID '\(id)' for \(option): \(problem)")
            }
        }
        return ids
    }

    /// Builds the client endpoint; throws `UsageError` for an invalid node URL or user ID.
    static func endpoint(node: String, userId: String, option: String, observe: Bool = false) throws -> URL {
        if let problem = UserIDRules.validationError(userId) {
            throw UsageError("invalid user ID '\(userId)' for \(option): \(problem)")
        }
        do {
            return try PresenceConnection.endpoint(node: node, userId: userId, observe: observe)
        } catch {
            throw UsageError("invalid value '\(node)' for --node: expected a URL such as ws://127.0.0.1:7101")
        }
    }
}

/// Records that a signal arrived instead of letting it end the process.
final class SignalFlag {
    private let source: DispatchSourceSignal
    private let flag = Locked(false)
    private let signalNumber: Int32

    init(signal signalNumber: Int32) {
        self.signalNumber = signalNumber
        signal(signalNumber, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        let flag = self.flag
        source.setEventHandler { flag.withLock { $0 = true } }
        source.resume()
    }

    var isSet: Bool { flag.withLock { $0 } }

    /// Restores the default action of the signal.
    func restore() {
        source.cancel()
        signal(signalNumber, SIG_DFL)
    }
}
