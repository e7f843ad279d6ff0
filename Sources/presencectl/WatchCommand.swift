/// `presencectl watch --node URL [--user ID ...]`: prints presence events of a node as they arrive.
enum WatchCommand {
    /// Runs the command with the arguments after `watch` and returns the exit status.
    static func run(_ arguments: [String]) -> Int32 {
        // TODO: the WebSocket client of PresenceClient is not in the tree yet, so this command
        // only reports that it is missing. The client SDK's version of this file replaces it.
        printError("'watch' is not available in this build because the client SDK is missing")
        return 1
    }
}
