#!/usr/bin/env bash
# Installs what is missing, builds, and runs the live demo: a 3-node cluster on
# 127.0.0.1, users on different nodes, a node killed, the cluster stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
swift build -c release
exec .build/release/presencectl demo "$@"
