// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "PresenceMesh",
    platforms: [.macOS(.v14), .iOS(.v17)],
    products: [
        .library(name: "PresenceProtocol", targets: ["PresenceProtocol"]),
        .library(name: "PresenceClient", targets: ["PresenceClient"]),
        .library(name: "MeshCore", targets: ["MeshCore"]),
        .executable(name: "presence-node", targets: ["presence-node"]),
        .executable(name: "presencectl", targets: ["presencectl"]),
    ],
    targets: [
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        .systemLibrary(
            name: "CWebSockets",
            pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev", "libwebsockets-evlib-uv"])]
        ),
        .systemLibrary(
            name: "CCrypto",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "PresenceProtocol"),
        // Pure protocol logic: no I/O, no clock reads, no system randomness.
        .target(name: "MeshCore"),
        .target(
            name: "MeshNode",
            dependencies: ["MeshCore", "PresenceProtocol", "CLibUV", "CWebSockets", "CCrypto"]
        ),
        .target(
            name: "PresenceClient",
            dependencies: [
                "PresenceProtocol",
                .target(name: "CLibUV", condition: .when(platforms: [.linux])),
                .target(name: "CWebSockets", condition: .when(platforms: [.linux])),
            ]
        ),
        .target(name: "MeshSimulator", dependencies: ["MeshCore"]),
        .executableTarget(name: "presence-node", dependencies: ["MeshNode"]),
        .executableTarget(name: "presence-bench", dependencies: ["CLibUV", "CWebSockets", "PresenceProtocol"]),
        .executableTarget(name: "mesh-sim", dependencies: ["MeshSimulator", "MeshCore"]),
        .executableTarget(
            name: "presencectl",
            dependencies: ["PresenceClient", "PresenceProtocol", "MeshSimulator", "MeshCore"]
        ),
        .testTarget(name: "PresenceProtocolTests", dependencies: ["PresenceProtocol"]),
        .testTarget(name: "MeshCoreTests", dependencies: ["MeshCore"]),
        .testTarget(name: "MeshNodeTests", dependencies: ["MeshNode", "MeshCore"]),
        .testTarget(name: "PresenceClientTests", dependencies: ["PresenceClient", "PresenceProtocol", "CLibUV", "CWebSockets"]),
        .testTarget(name: "MeshSimulatorTests", dependencies: ["MeshSimulator", "MeshCore"]),
        .testTarget(
            name: "ClusterTests",
            dependencies: ["PresenceClient", "PresenceProtocol", "MeshNode"]
        ),
    ]
)
