#!/usr/bin/env bash
# What an idle keep-alive connection costs the broker in resident memory,
# and whether that memory is given back once the connections close.
#
# Starts `wxbroker simulate` and `wxbroker serve` (one app, memory store)
# from release binaries already built (target/release/wxbroker and
# target/release/examples/unix_load; `make bench` builds both), then:
#   1. VmRSS idle, the token held and one request served;
#   2. VmRSS while CONN_MEMORY_CONNECTIONS (5000) keep-alive TCP connections
#      are open, each having made one `GET /v1/token` request: right after
#      the last answer (`served`), and once they have been idle
#      CONN_MEMORY_IDLE (15) seconds (`held`: the broker puts an idle
#      connection's HTTP state down after a quarter second, and jemalloc
#      hands freed pages back within about ten);
#   3. VmRSS after they close, polled every 0.5 s until it is back within
#      CONN_MEMORY_SLACK_KIB (1024) of the idle figure or
#      CONN_MEMORY_SETTLE (30) seconds have passed; `after_5s_kib` is the
#      figure 5 s after the close.
# Prints one `key=value` line per round (KiB, seconds). Everything listens
# on 127.0.0.1; every process started here is stopped by PID on exit.
# CONN_MEMORY_PORT_BASE (20960): two consecutive ports. CONN_MEMORY_ROUNDS
# (1): floods in a row against the same broker. CONN_MEMORY_BIN: another
# wxbroker binary to measure (an older build, say).

set -euo pipefail

cd "$(dirname "$0")/.."
CONNECTIONS=${CONN_MEMORY_CONNECTIONS:-5000}
SETTLE=${CONN_MEMORY_SETTLE:-30}
IDLE_WAIT=${CONN_MEMORY_IDLE:-15}
SLACK=${CONN_MEMORY_SLACK_KIB:-1024}
ROUNDS=${CONN_MEMORY_ROUNDS:-1}
PORT_BASE=${CONN_MEMORY_PORT_BASE:-20960}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
WX=${CONN_MEMORY_BIN:-$BIN/wxbroker}
UL=$BIN/examples/unix_load
[[ -x $WX && -x $UL ]] || { echo "build first: cargo build --release --locked --bin wxbroker; cargo build --release --locked --example unix_load" >&2; exit 1; }

NOFILE=$((CONNECTIONS + 4096))
if [[ $(ulimit -Hn) != unlimited ]] && (($(ulimit -Hn) < NOFILE)); then
    ulimit -Hn "$NOFILE" 2>/dev/null || { echo "the open-file limit ($(ulimit -Hn)) is below $NOFILE" >&2; exit 1; }
fi
ulimit -Sn "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/wxbroker-connmem.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
wait_http() {
    local i
    for i in $(seq 1 300); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "$1 did not answer within 15 s" >&2
    exit 1
}

SIM=$PORT_BASE API=$((PORT_BASE + 1))
APPID=wxdemo0000000001
"$WX" simulate --listen "127.0.0.1:$SIM" --account "$APPID:demo-secret" --token-lifetime 2h >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SIM/__sim/calls"
cat >"$WORK/broker.toml" <<EOF
[server]
listen = "127.0.0.1:$API"
max_connections = $((CONNECTIONS + 1000))

[store]
backend = "memory"

[log]
format = "json"

[[apps]]
name = "bench"
appid = "$APPID"
secret = "demo-secret"
api_base = "http://127.0.0.1:$SIM"
EOF
"$WX" serve --config "$WORK/broker.toml" >"$WORK/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
for i in $(seq 1 300); do
    curl -sf -o /dev/null -H 'Wxbroker-Client: bench' "http://127.0.0.1:$API/v1/token" && break
    sleep 0.05
done
sleep 1
IDLE=$(rss_kib "$BROKER")

for round in $(seq 1 "$ROUNDS"); do
    "$UL" --tcp "127.0.0.1:$API" --client bench --connections "$CONNECTIONS" --hold 600s >"$WORK/hold.log" 2>&1 &
    HOLDER=$!
    PIDS+=("$HOLDER")
    for i in $(seq 1 1200); do
        grep -q '^holding' "$WORK/hold.log" 2>/dev/null && break
        kill -0 "$HOLDER" 2>/dev/null || { cat "$WORK/hold.log" >&2; exit 1; }
        sleep 0.05
    done
    SERVED=$(rss_kib "$BROKER")
    sleep "$IDLE_WAIT"
    HELD=$(rss_kib "$BROKER")
    kill "$HOLDER"
    wait "$HOLDER" 2>/dev/null || true
    CLOSED_AT=$(date +%s.%N)
    AFTER_5S=
    for i in $(seq 1 $((SETTLE * 2))); do
        AFTER=$(rss_kib "$BROKER")
        ((i != 10)) || AFTER_5S=$AFTER
        ((AFTER > IDLE + SLACK)) || break
        sleep 0.5
    done
    SETTLED=$(awk -v a="$CLOSED_AT" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    PER=$(awk -v h="$HELD" -v i="$IDLE" -v n="$CONNECTIONS" 'BEGIN { printf "%.2f", (h - i) / n }')
    echo "round=$round connections=$CONNECTIONS idle_kib=$IDLE served_kib=$SERVED held_kib=$HELD per_connection_kib=$PER after_5s_kib=${AFTER_5S:-$AFTER} after_kib=$AFTER settled_s=$SETTLED"
done
