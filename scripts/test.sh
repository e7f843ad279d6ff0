#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
