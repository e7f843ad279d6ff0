import Foundation
import MeshNode

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    print(NodeConfig.usage)
    exit(0)
}
if arguments.isEmpty {
    FileHandle.standardError.write(Data("presence-node: no configuration given\n\n\(NodeConfig.usage)\n".utf8))
    exit(2)
}
do {
    let config = try NodeConfig.load(arguments: arguments)
    let node = try PresenceNode(config: config)
    exit(node.run())
} catch let error as ConfigError {
    FileHandle.standardError.write(Data("presence-node: \(error)\n".utf8))
    exit(2)
} catch {
    FileHandle.standardError.write(Data("presence-node: \(error)\n".utf8))
    exit(1)
}
