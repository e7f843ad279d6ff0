// presencectl: runs local PresenceMesh clusters and watches presence from the terminal.
// Exit status: 0 on success, 1 when a command fails, 2 for a usage error.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Usage of the commands that parse their own arguments, for the overview of `presencectl help`.
let watchUsage = CommandSpec(
    name: "watch",
    synopsis: "--node URL [--user ID ...]",
    summary: "Connects to one node and prints presence changes as they arrive.",
    options: [
        OptionSpec("--node", value: "URL", help: "client URL of the node, such as ws://127.0.0.1:7101/v1/ws"),
        OptionSpec("--user", value: "ID", help: "user whose presence to print; repeat it for more users"),
    ])

let chatListUsage = CommandSpec(
    name: "chatlist",
    synopsis: "--node URL --user ID --contacts ID,ID,...",
    summary: "Shows a live chat list in the terminal: each contact with an online dot or the time last seen.",
    options: [
        OptionSpec("--node", value: "URL", help: "client URL of the node, such as ws://127.0.0.1:7101/v1/ws"),
        OptionSpec("--user", value: "ID", help: "user the chat list belongs to, who connects as this user"),
        OptionSpec("--contacts", value: "IDS", help: "comma-separated user IDs that the list shows"),
    ])

/// Every command, in the order `presencectl help` lists them.
let allCommands = ClusterCommand.subcommands + [watchUsage, chatListUsage, DemoCommand.usage, BenchCommand.e2e]

/// Builds the overview that `presencectl help` prints: each command's synopsis, summary and options.
func overview() -> String {
    var lines = [
        "presencectl: runs local PresenceMesh clusters and watches presence from the terminal.",
        "",
        "Usage: presencectl COMMAND [OPTIONS]",
    ]
    for command in allCommands {
        lines.append("")
        lines.append("presencectl \(command.name) \(command.synopsis)")
        lines.append(contentsOf: wrap(command.summary, width: 96, indent: "    "))
        lines.append(contentsOf: CommandSpec.optionLines(command.options, indent: "    "))
    }
    lines.append("")
    lines.append("presencectl help [COMMAND]")
    lines.append("    Prints this overview, or the usage of one command such as 'cluster up'.")
    lines.append("")
    lines.append("Exit status: 0 on success, 1 when the command fails, 2 for a usage error.")
    return lines.joined(separator: "\n")
}

/// Runs `presencectl help [COMMAND...]`.
func runHelp(_ words: [String]) -> Int32 {
    if words.isEmpty {
        print(overview())
        return 0
    }
    let name = words.joined(separator: " ")
    if name == "cluster" {
        print(ClusterCommand.usageOfAllSubcommands)
        return 0
    }
    guard let command = allCommands.first(where: { $0.name == name }) else {
        printError("unknown command '\(name)'; run 'presencectl help' to list the commands")
        return 2
    }
    print(command.usage)
    return 0
}

let arguments = Array(CommandLine.arguments.dropFirst())
let status: Int32
switch arguments.first {
case nil:
    print(overview())
    status = 2
case "help", "--help", "-h":
    status = runHelp(Array(arguments.dropFirst()))
case "cluster":
    status = ClusterCommand.run(Array(arguments.dropFirst()))
case "watch":
    status = WatchCommand.run(Array(CommandLine.arguments.dropFirst(2)))
case "chatlist":
    status = ChatListCommand.run(Array(CommandLine.arguments.dropFirst(2)))
case "demo":
    status = DemoCommand.run(Array(arguments.dropFirst()))
case "bench":
    status = BenchCommand.run(Array(arguments.dropFirst()))
case let command?:
    printError("unknown command '\(command)'; run 'presencectl help' to list the commands")
    status = 2
}
exit(status)
