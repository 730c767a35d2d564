#!/usr/bin/env bash
# Installs the programs the test suite drives for real, if any is missing:
# redis-server, redis-sentinel and redis-cli (cluster mode on one Redis,
# Sentinel and Redis Cluster), prometheus and promtool (metrics and alert
# rules), node (the Node.js client), systemd-analyze (verifies the systemd
# unit), npm and python3 (scripts/install-sdks.sh installs the WeChat SDKs
# with them). Debian packages; needs root.
set -euo pipefail

declare -A package_for=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [redis-cli]=redis-tools
  [prometheus]=prometheus
  [promtool]=prometheus
  [node]=nodejs
  [npm]=npm
  [python3]=python3
  [systemd-analyze]=systemd
)

missing=()
for tool in "${!package_for[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_for[$tool]}")
done
# The SDK venv needs venv and ensurepip, which Debian's python3 splits off;
# prlimit, unshare and flock (the fd-limit and transparent-mode tests, the
# SDK install lock) come with util-linux.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
for tool in prlimit unshare flock; do
  command -v "$tool" >/dev/null 2>&1 || missing+=(util-linux)
done
[ ${#missing[@]} -eq 0 ] && exit 0

packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
echo "installing test dependencies: $packages"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: not root; install these Debian packages first: $packages" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
