#!/usr/bin/env bash
# Installs the Debian packages PresenceMesh builds against, and any package named
# as an argument, when one is missing, and checks that the Swift toolchain is on
# the PATH.
set -euo pipefail

if ! command -v swift >/dev/null 2>&1; then
  echo "swift was not found on PATH; install Swift 6 (swift.org) and run this again." >&2
  exit 1
fi

packages=(libuv1-dev libwebsockets-dev libwebsockets-evlib-uv libssl-dev pkg-config "$@")
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing missing packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
