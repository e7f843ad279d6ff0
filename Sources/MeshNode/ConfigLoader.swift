import Foundation
import MeshCore

extension NodeConfig {
    /// Command-line help of `presence-node`.
    public static let usage = """
        usage: presence-node --config FILE [options]
               presence-node --name NAME [options]

        options (each overrides the config file):
          --config FILE        JSON node configuration
          --name NAME          node name, unique in the cluster
          --client HOST:PORT   WebSocket and HTTP listen address (port 0: any free port)
          --gossip HOST:PORT   UDP gossip and TCP push-pull listen address (port 0: any free port)
          --seed HOST:PORT     gossip address of a member to join through (repeatable)
          --preset NAME        gossip timing preset: lan, wan or local
          --log-level LEVEL    trace, debug, info, warning or error
          --help               print this help
        """

    /// Builds the configuration from command-line arguments (without the program name): the
    /// `--config` file first, then every flag on top. Throws `ConfigError` naming each problem.
    public static func load(arguments: [String]) throws -> NodeConfig {
        var problems: [String] = []
        var flags: [(String, String)] = []
        var configPath: String?
        var index = 0
        // --clock-offset-ms is a testing aid and stays out of the help text.
        let valued: Set<String> = [
            "--config", "--name", "--client", "--gossip", "--seed", "--preset", "--log-level", "--clock-offset-ms",
        ]
        while index < arguments.count {
            let argument = arguments[index]
            guard valued.contains(argument) else {
                problems.append("unknown option \(argument) (run presence-node --help)")
                index += 1
                continue
            }
            guard index + 1 < arguments.count else {
                problems.append("option \(argument) needs a value")
                break
            }
            if argument == "--config" {
                configPath = arguments[index + 1]
            } else {
                flags.append((argument, arguments[index + 1]))
            }
            index += 2
        }
        guard problems.isEmpty else { throw ConfigError(problems: problems) }

        var object: [String: Any] = [:]
        if let configPath {
            guard let data = FileManager.default.contents(atPath: configPath) else {
                let reason = access(configPath, F_OK) == 0 ? "permission denied or not a regular file" : "no such file"
                throw ConfigError(problems: ["config file \(configPath) cannot be read: \(reason)"])
            }
            do {
                guard let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                    throw ConfigError(problems: ["config file \(configPath) must contain a JSON object"])
                }
                object = parsed
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError(problems: ["config file \(configPath) is not valid JSON: \(error.localizedDescription)"])
            }
        }

        var seedFlags: [Any] = []
        var clockOffsetMs: Int64 = 0
        for (flag, value) in flags {
            switch flag {
            case "--name": object["name"] = value
            case "--client": object["clientListen"] = value
            case "--gossip": object["gossipListen"] = value
            case "--seed": seedFlags.append(value)
            case "--preset":
                var gossip = object["gossip"] as? [String: Any] ?? [:]
                gossip["preset"] = value
                object["gossip"] = gossip
            case "--log-level":
                var log = object["log"] as? [String: Any] ?? [:]
                log["level"] = value
                object["log"] = log
            case "--clock-offset-ms":
                guard let offset = Int64(value), abs(offset) <= 86_400_000 else {
                    throw ConfigError(problems: ["--clock-offset-ms must be an integer from -86400000 to 86400000, got \"\(value)\""])
                }
                clockOffsetMs = offset
            default: break
            }
        }
        if !seedFlags.isEmpty { object["seeds"] = seedFlags }
        var config = try parse(object)
        config.clockOffsetMs = clockOffsetMs
        return config
    }

    /// Validates a decoded JSON configuration as a whole.
    public static func parse(_ object: [String: Any]) throws -> NodeConfig {
        var problems: [String] = []
        var root = JSONFields(path: "", object: object)

        let name = root.string("name", &problems)
        if name == nil && object["name"] == nil {
            problems.append("name is missing: set \"name\" in the config file or pass --name")
        }
        var config = NodeConfig(name: name ?? "")
        if let name, !NodeConfig.isValidNodeName(name) {
            problems.append("name must be 1 to 64 characters of [A-Za-z0-9._-], got \"\(name)\"")
        }
        if let text = root.string("clientListen", &problems) {
            if let address = HostPort(text) { config.clientListen = address } else {
                problems.append("clientListen must be HOST:PORT with an IPv4 host, such as 127.0.0.1:7101, got \"\(text)\"")
            }
        }
        if let text = root.string("gossipListen", &problems) {
            if let address = HostPort(text) { config.gossipListen = address } else {
                problems.append("gossipListen must be HOST:PORT with an IPv4 host, such as 127.0.0.1:7201, got \"\(text)\"")
            }
        }
        if let seeds = root.strings("seeds", &problems) {
            for seed in seeds {
                if let address = HostPort(seed), address.port != 0 { config.seeds.append(address) } else {
                    problems.append("seeds must contain HOST:PORT entries with an IPv4 host and a port from 1 to 65535, got \"\(seed)\"")
                }
            }
        }
        if var auth = root.object("auth", &problems) {
            parseAuth(&auth, into: &config, &problems)
        }
        if var gossip = root.object("gossip", &problems) {
            parseGossip(&gossip, into: &config, &problems)
        }
        if var presence = root.object("presence", &problems) {
            if let grace = presence.integer("offlineGraceMs", in: 0...600_000, &problems) {
                config.presence.offlineGraceMs = UInt64(grace)
            }
            presence.reportUnknown(&problems, known: "offlineGraceMs")
        }
        if var limits = root.object("limits", &problems) {
            parseLimits(&limits, into: &config, &problems)
        }
        if var log = root.object("log", &problems) {
            if let level = log.string("level", &problems) {
                if let parsed = LogLevel(name: level) { config.log.level = parsed } else {
                    problems.append("log.level must be one of trace, debug, info, warning, error, got \"\(level)\"")
                }
            }
            if let format = log.string("format", &problems) {
                if let parsed = LogFormat(rawValue: format) { config.log.format = parsed } else {
                    problems.append("log.format must be logfmt or json, got \"\(format)\"")
                }
            }
            log.reportUnknown(&problems, known: "level, format")
        }
        root.reportUnknown(
            &problems, known: "name, clientListen, gossipListen, seeds, auth, gossip, presence, limits, log")

        if config.clientListen.port != 0 && config.clientListen == config.gossipListen {
            problems.append("clientListen and gossipListen must differ, both are \(config.clientListen)")
        }
        problems += config.gossip.validate()
        guard problems.isEmpty else { throw ConfigError(problems: problems) }
        return config
    }

    private static func parseAuth(_ auth: inout JSONFields, into config: inout NodeConfig, _ problems: inout [String]) {
        if let mode = auth.string("mode", &problems) {
            if let parsed = AuthMode(rawValue: mode) { config.auth.mode = parsed } else {
                problems.append("auth.mode must be none or hs256, got \"\(mode)\"")
            }
        }
        if let secrets = auth.strings("secrets", &problems) {
            config.auth.secrets += secrets
            for (index, secret) in secrets.enumerated() where secret.utf8.count < 16 {
                problems.append("auth.secrets[\(index)] is \(secret.utf8.count) bytes; a secret must be at least 16 bytes long")
            }
        }
        if let path = auth.string("secretsFile", &problems) {
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
                for (index, line) in lines.enumerated() where !line.isEmpty {
                    let secret = String(line)
                    config.auth.secrets.append(secret)
                    if secret.utf8.count < 16 {
                        problems.append(
                            "auth.secretsFile \(path) line \(index + 1) is \(secret.utf8.count) bytes; a secret must be at least 16 bytes long")
                    }
                }
            } else {
                problems.append("auth.secretsFile \(path) cannot be read")
            }
        }
        auth.reportUnknown(&problems, known: "mode, secrets, secretsFile")
        if config.auth.mode == .hs256 && config.auth.secrets.isEmpty {
            problems.append("auth.secrets or auth.secretsFile must hold at least one secret when auth.mode is hs256")
        }
    }

    private static func parseGossip(_ gossip: inout JSONFields, into config: inout NodeConfig, _ problems: inout [String]) {
        if let preset = gossip.string("preset", &problems) {
            switch preset {
            case "lan": config.gossip = .lan
            case "wan": config.gossip = .wan
            case "local": config.gossip = .local
            default: problems.append("gossip.preset must be lan, wan or local, got \"\(preset)\"")
            }
        }
        let hour = 3_600_000
        if let value = gossip.integer("probeIntervalMs", in: 1...hour, &problems) { config.gossip.probeIntervalMs = UInt64(value) }
        if let value = gossip.integer("probeTimeoutMs", in: 1...hour, &problems) { config.gossip.probeTimeoutMs = UInt64(value) }
        if let value = gossip.integer("indirectChecks", in: 0...16, &problems) { config.gossip.indirectChecks = value }
        if let value = gossip.integer("directPingRetries", in: 0...16, &problems) { config.gossip.directPingRetries = value }
        if let value = gossip.integer("suspicionMult", in: 1...100, &problems) { config.gossip.suspicionMult = value }
        if let value = gossip.integer("suspicionMaxTimeoutMult", in: 1...100, &problems) {
            config.gossip.suspicionMaxTimeoutMult = value
        }
        if let value = gossip.integer("suspicionConfirmations", in: 0...64, &problems) {
            config.gossip.suspicionConfirmations = value
        }
        if let value = gossip.integer("retransmitMult", in: 1...100, &problems) { config.gossip.retransmitMult = value }
        if let value = gossip.integer("gossipIntervalMs", in: 1...hour, &problems) { config.gossip.gossipIntervalMs = UInt64(value) }
        if let value = gossip.integer("fanout", in: 1...64, &problems) { config.gossip.fanout = value }
        if let value = gossip.integer("pushPullIntervalMs", in: 0...hour, &problems) { config.gossip.pushPullIntervalMs = UInt64(value) }
        if let value = gossip.integer("reconnectIntervalMs", in: 1...hour, &problems) { config.gossip.reconnectIntervalMs = UInt64(value) }
        if let value = gossip.integer("deadMemberRetentionMs", in: 0...(24 * hour), &problems) {
            config.gossip.deadMemberRetentionMs = UInt64(value)
        }
        if let value = gossip.integer("tombstoneRetentionMs", in: 0...(24 * hour), &problems) {
            config.gossip.tombstoneRetentionMs = UInt64(value)
        }
        if let value = gossip.integer("maxPacketBytes", in: 512...65_000, &problems) { config.gossip.maxPacketBytes = value }
        gossip.reportUnknown(
            &problems,
            known: "preset, probeIntervalMs, probeTimeoutMs, indirectChecks, directPingRetries, suspicionMult, suspicionMaxTimeoutMult, "
                + "suspicionConfirmations, retransmitMult, gossipIntervalMs, fanout, pushPullIntervalMs, reconnectIntervalMs, deadMemberRetentionMs, "
                + "tombstoneRetentionMs, maxPacketBytes")
    }

    private static func parseLimits(_ limits: inout JSONFields, into config: inout NodeConfig, _ problems: inout [String]) {
        if let value = limits.integer("maxMessageBytes", in: 256...16_777_216, &problems) { config.limits.maxMessageBytes = value }
        if let value = limits.integer("maxUsersPerRequest", in: 1...1_000_000, &problems) { config.limits.maxUsersPerRequest = value }
        if let value = limits.integer("maxSubscriptionsPerSession", in: 1...10_000_000, &problems) {
            config.limits.maxSubscriptionsPerSession = value
        }
        if let value = limits.integer("maxWildcardSubscribers", in: 0...1_000_000, &problems) { config.limits.maxWildcardSubscribers = value }
        if let value = limits.integer("maxSessions", in: 1...1_000_000, &problems) { config.limits.maxSessions = value }
        if let value = limits.integer("maxSnapshotUsers", in: 1...10_000_000, &problems) { config.limits.maxSnapshotUsers = value }
        if let value = limits.integer("pingIntervalMs", in: 100...3_600_000, &problems) { config.limits.pingIntervalMs = UInt64(value) }
        if let value = limits.integer("idleTimeoutMs", in: 200...7_200_000, &problems) { config.limits.idleTimeoutMs = UInt64(value) }
        if config.limits.idleTimeoutMs <= config.limits.pingIntervalMs {
            problems.append(
                "limits.idleTimeoutMs (\(config.limits.idleTimeoutMs)) must be above limits.pingIntervalMs (\(config.limits.pingIntervalMs)), so a client has time to answer the ping")
        }
        limits.reportUnknown(
            &problems,
            known: "maxMessageBytes, maxUsersPerRequest, maxSubscriptionsPerSession, maxWildcardSubscribers, maxSessions, "
                + "maxSnapshotUsers, pingIntervalMs, idleTimeoutMs")
    }
}

extension NodeConfig {
    /// Node names are 1 to 64 characters of `[A-Za-z0-9._-]`.
    static func isValidNodeName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            }
    }
}
