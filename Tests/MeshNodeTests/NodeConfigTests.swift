import Foundation
import MeshCore
import XCTest

@testable import MeshNode

final class NodeConfigTests: XCTestCase {
    private func problems(_ object: [String: Any]) -> [String] {
        do {
            _ = try NodeConfig.parse(object)
            return []
        } catch let error as ConfigError {
            return error.problems
        } catch {
            return ["unexpected \(error)"]
        }
    }

    func testParse_minimalConfig_usesDefaults() throws {
        let config = try NodeConfig.parse(["name": "node-1"])
        XCTAssertEqual(config.name, "node-1")
        XCTAssertEqual(config.clientListen, HostPort(host: "127.0.0.1", port: 7101))
        XCTAssertEqual(config.gossip, .lan)
        XCTAssertEqual(config.auth.mode, .none)
        XCTAssertEqual(config.presence.offlineGraceMs, 0)
    }

    func testParse_zeroAndOne_areIntegersNotBooleans() throws {
        let config = try NodeConfig.parse([
            "name": "n", "presence": ["offlineGraceMs": 0], "limits": ["maxWildcardSubscribers": 1, "maxSessions": 1],
            "gossip": ["suspicionMult": 1, "directPingRetries": 0],
        ])
        XCTAssertEqual(config.presence.offlineGraceMs, 0)
        XCTAssertEqual(config.limits.maxWildcardSubscribers, 1)
        XCTAssertEqual(config.limits.maxSessions, 1)
        XCTAssertEqual(config.gossip.suspicionMult, 1)
        XCTAssertEqual(config.gossip.directPingRetries, 0)
        XCTAssertTrue(problems(["name": "n", "gossip": ["directPingRetries": 17]]).contains { $0.hasPrefix("gossip.directPingRetries must be") })
        XCTAssertTrue(problems(["name": "n", "presence": ["offlineGraceMs": true]]).contains { $0.hasPrefix("presence.offlineGraceMs must be an integer") })
    }

    func testParse_readmeExample_isValid() throws {
        let text = #"{"name": "node-1", "clientListen": "127.0.0.1:0", "gossipListen": "127.0.0.1:0", "seeds": ["127.0.0.1:7202"],"#
            + #" "auth": {"mode": "none"}, "gossip": {"preset": "lan"}, "presence": {"offlineGraceMs": 0},"#
            + #" "limits": {"maxWildcardSubscribers": 100}, "log": {"level": "info", "format": "logfmt"}}"#
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        XCTAssertNoThrow(try NodeConfig.parse(object))
    }

    func testParse_missingName_namesTheField() {
        XCTAssertTrue(problems([:]).contains { $0.hasPrefix("name is missing") })
    }

    func testParse_unknownFields_areNamedWithTheirPath() {
        let found = problems(["name": "n", "colour": 1, "gossip": ["preset": "lan", "fanuot": 3]])
        XCTAssertTrue(found.contains { $0.hasPrefix("colour is not a known field") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("gossip.fanuot is not a known field") }, "\(found)")
    }

    func testParse_invalidValues_nameFieldAndAcceptedValues() {
        let found = problems([
            "name": "node 1", "clientListen": "localhost", "seeds": ["1.2.3.4:0"],
            "gossip": ["preset": "moon", "probeTimeoutMs": true], "log": ["level": "loud"], "auth": ["mode": "jwt"],
        ])
        XCTAssertTrue(found.contains { $0.hasPrefix("name must be") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("clientListen must be") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("seeds must contain") }, "\(found)")
        XCTAssertTrue(found.contains { $0 == "gossip.preset must be lan, wan or local, got \"moon\"" }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("gossip.probeTimeoutMs must be an integer") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("log.level must be one of") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("auth.mode must be none or hs256") }, "\(found)")
    }

    func testParse_timeoutAboveInterval_rejected() {
        let found = problems(["name": "n", "gossip": ["probeIntervalMs": 100, "probeTimeoutMs": 100]])
        XCTAssertTrue(found.contains { $0.hasPrefix("gossip.probeTimeoutMs must be above 0 and below") }, "\(found)")
    }

    func testParse_hs256WithoutSecret_isRejected() {
        let found = problems(["name": "n", "auth": ["mode": "hs256"]])
        XCTAssertTrue(found.contains { $0.hasPrefix("auth.secrets or auth.secretsFile") }, "\(found)")
    }

    func testLoad_flagsOverrideFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("node-config-\(UUID()).json")
        try Data(#"{"name":"from-file","clientListen":"127.0.0.1:7101","gossip":{"preset":"wan"}}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let config = try NodeConfig.load(arguments: [
            "--config", file.path, "--name", "from-flag", "--client", "127.0.0.1:0", "--seed", "127.0.0.1:9001",
            "--seed", "127.0.0.1:9002", "--preset", "local",
        ])
        XCTAssertEqual(config.name, "from-flag")
        XCTAssertEqual(config.clientListen.port, 0)
        XCTAssertEqual(config.seeds.map(\.description), ["127.0.0.1:9001", "127.0.0.1:9002"])
        XCTAssertEqual(config.gossip, .local)
    }

    func testLoad_invalidJSONFile_namesTheFile() {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID()).json")
        try? Data("{\"name\": ".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        XCTAssertThrowsError(try NodeConfig.load(arguments: ["--config", file.path])) { error in
            XCTAssertTrue("\(error)".contains("is not valid JSON"), "\(error)")
        }
    }

    func testLoad_unknownOption_isNamed() {
        XCTAssertThrowsError(try NodeConfig.load(arguments: ["--name", "n", "--colour", "red"])) { error in
            XCTAssertTrue("\(error)".contains("unknown option --colour"), "\(error)")
        }
    }

    func testHostPort_parsesOnlyIPv4WithPort() {
        XCTAssertEqual(HostPort("127.0.0.1:80"), HostPort(host: "127.0.0.1", port: 80))
        XCTAssertNil(HostPort("127.0.0.1"))
        XCTAssertNil(HostPort("localhost:80"))
        XCTAssertNil(HostPort("127.0.0.1:70000"))
    }

    func testClusterConfigs_allParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for folder in ["local-3", "local-5"] {
            let directory = root.appendingPathComponent("cluster-configs/\(folder)")
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }
            XCTAssertFalse(files.isEmpty, folder)
            for file in files {
                XCTAssertNoThrow(try NodeConfig.load(arguments: ["--config", directory.appendingPathComponent(file).path]), file)
            }
        }
    }

    func testParse_shortSecrets_namedByIndexAndLine() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("secrets-\(UUID().uuidString.prefix(8))").path
        try "0123456789abcdef0123\r\nshort\r\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let found = problems([
            "name": "n", "auth": ["mode": "hs256", "secrets": ["0123456789abcdef", "tiny"], "secretsFile": path],
        ])
        XCTAssertTrue(found.contains("auth.secrets[1] is 4 bytes; a secret must be at least 16 bytes long"), "\(found)")
        XCTAssertTrue(found.contains("auth.secretsFile \(path) line 2 is 5 bytes; a secret must be at least 16 bytes long"), "\(found)")
        XCTAssertEqual(found.count, 2, "\(found)")
    }
}
