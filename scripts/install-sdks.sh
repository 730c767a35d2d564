#!/usr/bin/env bash
# Installs the WeChat SDKs the SDK tests drive (tests/sdk_python.rs,
# tests/sdk_node.rs), at exact versions, into target/sdk/ (never globally):
#   target/sdk/python  a venv holding wechatpy
#   target/sdk/node    node_modules holding co-wechat-api, wechat-api and
#                      node-easywechat
# Idempotent and quick when already installed: a stamp file per ecosystem
# records the pins it was installed with, and only a change of pins (or a
# missing stamp) reinstalls. A lock makes concurrent callers (parallel
# tests, `make test`) wait for one install instead of racing it.
#
# Usage: scripts/install-sdks.sh [python|node|all]   (default: all)
# WXBROKER_SDK_DIR overrides the install folder.
set -euo pipefail

# The versions the tests were written against. Change them here only.
# node-socialite is node-easywechat's OAuth dependency: its newer releases
# dropped a module node-easywechat 3.6.2 loads, so it is pinned too, as is
# the cryptography backend wechatpy needs (its `cryptography` extra).
PYTHON_PINS="wechatpy[cryptography]==1.8.18"
NODE_PINS="co-wechat-api@3.11.0 wechat-api@1.35.1 node-easywechat@3.6.2 node-socialite@1.4.1"

repo=$(cd "$(dirname "$0")/.." && pwd)
sdk_dir=${WXBROKER_SDK_DIR:-$repo/target/sdk}
which=${1:-all}
mkdir -p "$sdk_dir"

install_python() {
  local dir=$sdk_dir/python stamp=$sdk_dir/python/.pins
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PYTHON_PINS" ] && return 0
  command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
  echo "installing python SDKs into $dir: $PYTHON_PINS"
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input $PYTHON_PINS
  echo "$PYTHON_PINS" >"$stamp"
}

install_node() {
  local dir=$sdk_dir/node stamp=$sdk_dir/node/.pins
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$NODE_PINS" ] && return 0
  command -v npm >/dev/null || { echo "error: npm is required" >&2; exit 1; }
  echo "installing node SDKs into $dir: $NODE_PINS"
  rm -rf "$dir"
  mkdir -p "$dir"
  # A package.json of its own keeps npm from walking up to another project.
  echo '{"name":"wxbroker-sdk-tests","private":true}' >"$dir/package.json"
  # shellcheck disable=SC2086
  npm install --prefix "$dir" --save-exact --no-audit --no-fund \
    --loglevel=error $NODE_PINS
  echo "$NODE_PINS" >"$stamp"
}

# One installer at a time; the others wait, then find the stamps written.
exec 9>"$sdk_dir/.lock"
flock 9
case $which in
  python) install_python ;;
  node) install_node ;;
  all)
    install_python
    install_node
    ;;
  *)
    echo "usage: $0 [python|node|all]" >&2
    exit 2
    ;;
esac
