// presence-bench: scale figures of PresenceMesh on one machine. Subcommands `fanout`, `idle-rss`
// and `join` start every process they measure on 127.0.0.1 and stop them by PID; `raw-server` and
// `hold` are the helper processes those subcommands start.

import Foundation

let usage = """
    usage: presence-bench SUBCOMMAND [options]

      fanout   [--subscribers 1000,5000] [--events 200] [--rounds 1] [--gap-ms 5] [--output FILE]
               one presence change to N subscribers of one node, against a raw-TCP floor
      idle-rss [--connections 15000] [--processes 2] [--rounds 2] [--kinds observer,user] [--output FILE]
               node RSS per idle WebSocket connection
      join     [--users 100000] [--nodes 5] [--max-sessions-per-node 19800] [--processes-per-node 2]
               [--joins 3] [--output FILE]
               time and memory for a late node to hold every online user of a cluster
      raw-server
               helper: the raw-TCP fan-out server; prints "ready port=P"
      hold     --port P [--count N] [--prefix ID] [--observe 0|1] [--max-pending 200] [--timeout 300]
               [--hold-seconds 1800]
               helper: holds N idle sessions open on a node until SIGTERM

    --output FILE replaces this benchmark's part of the section "Scale on one node and late join"
    in FILE (such as Benchmarks/RESULTS.md) and leaves the rest of FILE as it is.
    """

let arguments = Array(CommandLine.arguments.dropFirst())
let rest = Array(arguments.dropFirst())
let status: Int32
switch arguments.first {
case "fanout":
    ChildRegistry.installSignalHandlers()
    status = FanoutBench.main(rest)
case "idle-rss":
    ChildRegistry.installSignalHandlers()
    status = IdleBench.main(rest)
case "join":
    ChildRegistry.installSignalHandlers()
    status = JoinBench.main(rest)
case "raw-server": status = RawServer.main(rest)
case "hold": status = HoldWorker.main(rest)
case "help", "--help", "-h":
    print(usage)
    status = 0
default:
    printError(usage)
    status = 2
}
exit(status)
