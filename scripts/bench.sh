#!/usr/bin/env bash
# The benchmark behind DESIGN.md section 10 (`make bench`).
#
# Runs the broker (`wxbroker serve`, one app, memory store, in front of
# `wxbroker simulate`) and a bare hyper server answering a body of the same
# size (examples/reference_server.rs) side by side, alternating them, and
# writes docs/bench/results.md and docs/bench/latency.png.
#
# Measured:
#   - wrk over TCP (keep-alive, 2 threads, 64 and 256 connections), and the
#     unix_load example over TCP and over the Unix socket (64 connections):
#     req/s, p50, p99, server CPU time per request; ratios broker/reference
#     are taken within each round, then the median over rounds is shown;
#   - a run during which tokens are refreshed against one without;
#   - resident memory idle with one app and under 1000 open connections;
#   - resident memory under a flood of 5000 open keep-alive connections,
#     each having made one request: right after the last answer, and once
#     they have been idle a while (what an idle connection costs, in KiB
#     over the idle figure), then how far and how fast it falls back once
#     they are closed;
#   - start-to-ready time with a stored token (file store).
#
# Everything listens on 127.0.0.1 only; every process started here is
# stopped by PID on exit. Knobs (environment): BENCH_DURATION (seconds per
# run, 10), BENCH_ROUNDS (3), BENCH_REFRESH_DURATION (30), BENCH_FLOOD
# (5000 connections), BENCH_FLOOD_IDLE (15, seconds the flood's
# connections are held idle before their memory is read), BENCH_FLOOD_SETTLE
# (60, seconds allowed for the memory to come back after the flood), BENCH_PORT_BASE
# (20930, nine consecutive ports below the ephemeral range, so that no
# client socket of an earlier run holds one when a server binds it), BENCH_OUT (docs/bench).

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
REFRESH_DURATION=${BENCH_REFRESH_DURATION:-30}
FLOOD=${BENCH_FLOOD:-5000}
FLOOD_IDLE=${BENCH_FLOOD_IDLE:-15}
FLOOD_SETTLE=${BENCH_FLOOD_SETTLE:-60}
PORT_BASE=${BENCH_PORT_BASE:-20930}
OUT=${BENCH_OUT:-docs/bench}
COMMAND="make bench"
if [[ -n "${BENCH_DURATION:-}${BENCH_ROUNDS:-}${BENCH_REFRESH_DURATION:-}${BENCH_FLOOD:-}" ]]; then
    COMMAND="BENCH_DURATION=$DURATION BENCH_ROUNDS=$ROUNDS BENCH_REFRESH_DURATION=$REFRESH_DURATION BENCH_FLOOD=$FLOOD make bench"
fi
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes -------------------------------------------------------------

WORK=$(mktemp -d /tmp/wxbroker-bench.XXXXXX)
PIDS=()
LAST_PID=

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME COMMAND...: runs COMMAND in the background, output in
# $WORK/NAME.log; its PID in LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop PID: SIGTERM, then wait for it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http NAME URL: until URL answers 200, at most 15 s; NAME is the
# process (started by `start`) whose log to show if it does not.
wait_http() {
    local name=$1 url=$2 i
    for i in $(seq 1 300); do
        if curl -sf -o /dev/null "$url"; then return 0; fi
        sleep 0.05
    done
    die "$url did not answer 200 within 15 s; $name: $(tail -5 "$WORK/$name.log")"
}

# kv "k1=v1 k2=v2" KEY: the value of KEY.
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --- tools and binaries ----------------------------------------------------

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    SUDO=
    [[ $(id -u) == 0 ]] || SUDO=sudo
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "building release binaries"
# Two invocations: built together, the daemon would get the features the
# examples' dev-dependencies turn on (tokio's test-util), which the shipped
# binary does not have.
cargo build --release --locked --bin wxbroker
cargo build --release --locked --example reference_server --example unix_load --example ready_time
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WX=$BIN/wxbroker
UL=$BIN/examples/unix_load
CLK_TCK=$(getconf CLK_TCK)

# The flood's connections on each side (the broker counts two descriptors
# a connection), plus everything else; for this script's processes only.
NOFILE=$((FLOOD * 2 + 4096))
if [[ $(ulimit -Hn) != unlimited ]] && (($(ulimit -Hn) < NOFILE)); then
    ulimit -Hn "$NOFILE" 2>/dev/null || die "the open-file limit ($(ulimit -Hn)) is below $NOFILE; raise it or lower BENCH_FLOOD"
fi
ulimit -Sn "$(ulimit -Hn)"

SIM=$PORT_BASE API=$((PORT_BASE + 1)) OPS=$((PORT_BASE + 2)) REF=$((PORT_BASE + 3))
SIM2=$((PORT_BASE + 4)) API2=$((PORT_BASE + 5)) OPS2=$((PORT_BASE + 6))
API3=$((PORT_BASE + 7)) OPS3=$((PORT_BASE + 8))
read -r EPHEMERAL_LOW EPHEMERAL_HIGH </proc/sys/net/ipv4/ip_local_port_range
if ((PORT_BASE + 8 >= EPHEMERAL_LOW && PORT_BASE <= EPHEMERAL_HIGH)); then
    die "ports $PORT_BASE-$((PORT_BASE + 8)) overlap the ephemeral range $EPHEMERAL_LOW-$EPHEMERAL_HIGH"
fi
for port in $(seq "$PORT_BASE" $((PORT_BASE + 8))); do
    port_free "$port" || die "port $port is taken; set BENCH_PORT_BASE"
done

APPID=wxdemo0000000001
SECRET=demo-secret

# broker_config API OPS SIM STORE-TOML [EXTRA-APP-TOML] [UNIX-SOCKET]
broker_config() {
    local socket_line=
    [[ -z ${6:-} ]] || socket_line="unix_socket = \"$6\""
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
metrics_listen = "127.0.0.1:$2"
max_connections = $((FLOOD + 1000))
$socket_line

[store]
$4

[log]
format = "json"

[[apps]]
name = "bench"
appid = "$APPID"
secret = "$SECRET"
api_base = "http://127.0.0.1:$3"
$5
EOF
}

# --- servers ---------------------------------------------------------------

log "starting the simulator, the broker and the reference server"
start sim "$WX" simulate --listen "127.0.0.1:$SIM" --account "$APPID:$SECRET" --token-lifetime 2h
SIM_PID=$LAST_PID
wait_http sim "http://127.0.0.1:$SIM/__sim/calls"

BROKER_SOCK=$WORK/broker.sock
broker_config "$API" "$OPS" "$SIM" 'backend = "memory"' "" "$BROKER_SOCK" >"$WORK/broker.toml"
start broker "$WX" serve --config "$WORK/broker.toml"
BROKER_PID=$LAST_PID
wait_http broker "http://127.0.0.1:$OPS/readyz"

BODY=$(curl -sf -H 'Wxbroker-Client: bench' "http://127.0.0.1:$API/v1/token")
[[ -n $BODY ]] || die "no token from the broker"
BODY_BYTES=${#BODY}
curl -sf -o /dev/null --unix-socket "$BROKER_SOCK" http://localhost/v1/token ||
    die "the broker's Unix socket does not answer"

REF_SOCK=$WORK/reference.sock
start reference "$BIN/examples/reference_server" --listen "127.0.0.1:$REF" --unix "$REF_SOCK" --body "$BODY"
REF_PID=$LAST_PID
wait_http reference "http://127.0.0.1:$REF/v1/token"
REF_BODY=$(curl -sf "http://127.0.0.1:$REF/v1/token")
[[ ${#REF_BODY} == "$BODY_BYTES" ]] || die "reference body is ${#REF_BODY} bytes, broker's $BODY_BYTES"
header_count() { curl -s -D - -o /dev/null "$@" | grep -c ':'; }
BROKER_HEADERS=$(header_count -H 'Wxbroker-Client: bench' "http://127.0.0.1:$API/v1/token")
REF_HEADERS=$(header_count "http://127.0.0.1:$REF/v1/token")
log "token answer: $BODY_BYTES bytes; headers broker $BROKER_HEADERS, reference $REF_HEADERS"

# --- memory ----------------------------------------------------------------

sleep 1
MEM_BROKER_IDLE=$(rss_kib "$BROKER_PID")
MEM_REF_IDLE=$(rss_kib "$REF_PID")

# hold_rss PID CONNECTIONS UNIX_LOAD-TARGET-ARGS...: sets HELD_RSS to the
# VmRSS of PID while CONNECTIONS keep-alive connections (each having made
# one request) are open; they are closed when it returns.
hold_rss() {
    local pid=$1 connections=$2
    shift 2
    local i rss=
    rm -f "$WORK/hold.log"
    start hold "$UL" "$@" --connections "$connections" --hold 20s
    local holder=$LAST_PID
    for i in $(seq 1 600); do
        if grep -q '^holding' "$WORK/hold.log" 2>/dev/null; then
            sleep 0.5
            rss=$(rss_kib "$pid")
            break
        fi
        kill -0 "$holder" 2>/dev/null || break
        sleep 0.05
    done
    stop "$holder"
    [[ -n $rss ]] || die "could not hold $connections connections: $(cat "$WORK/hold.log")"
    HELD_RSS=$rss
}

log "memory: 1000 open connections"
hold_rss "$BROKER_PID" 1000 --tcp "127.0.0.1:$API" --client bench
MEM_BROKER_1000=$HELD_RSS
hold_rss "$REF_PID" 1000 --tcp "127.0.0.1:$REF"
MEM_REF_1000=$HELD_RSS

# The flood: RSS right after FLOOD connections have each made their
# request, then once they have been idle FLOOD_IDLE seconds (the broker
# puts an idle connection's HTTP state down after a quarter second, and
# jemalloc hands the freed pages back to the system within about ten): over
# the idle figure (MEM_BROKER_IDLE, before any connection), that is what an
# idle keep-alive connection costs. Then polled every 0.5 s after they
# close until it is back within 1 MiB of the idle figure or FLOOD_SETTLE
# seconds have passed.
log "memory: a flood of $FLOOD open connections, held idle ${FLOOD_IDLE}s"
MEM_FLOOD_BEFORE=$(rss_kib "$BROKER_PID")
rm -f "$WORK/hold.log"
start hold "$UL" --tcp "127.0.0.1:$API" --client bench --connections "$FLOOD" --hold "$((FLOOD_IDLE + 30))s"
HOLDER_PID=$LAST_PID
for i in $(seq 1 1200); do
    grep -q '^holding' "$WORK/hold.log" 2>/dev/null && break
    kill -0 "$HOLDER_PID" 2>/dev/null || die "could not hold $FLOOD connections: $(cat "$WORK/hold.log")"
    sleep 0.05
done
grep -q '^holding' "$WORK/hold.log" || die "could not hold $FLOOD connections: $(cat "$WORK/hold.log")"
MEM_FLOOD_SERVED=$(rss_kib "$BROKER_PID")
sleep "$FLOOD_IDLE"
MEM_FLOOD=$(rss_kib "$BROKER_PID")
stop "$HOLDER_PID"
FLOOD_KIB_PER_CONNECTION=$(awk -v h="$MEM_FLOOD" -v i="$MEM_BROKER_IDLE" -v n="$FLOOD" 'BEGIN { printf "%.2f", (h - i) / n }')
FLOOD_CLOSED_AT=$(date +%s.%N)
MEM_FLOOD_AFTER_5S=
for i in $(seq 1 $((FLOOD_SETTLE * 2))); do
    MEM_FLOOD_AFTER=$(rss_kib "$BROKER_PID")
    ((i != 10)) || MEM_FLOOD_AFTER_5S=$MEM_FLOOD_AFTER
    ((MEM_FLOOD_AFTER > MEM_BROKER_IDLE + 1024)) || break
    sleep 0.5
done
MEM_FLOOD_AFTER_5S=${MEM_FLOOD_AFTER_5S:-$MEM_FLOOD_AFTER}
FLOOD_SETTLED_S=$(awk -v a="$FLOOD_CLOSED_AT" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "flood: idle $(mib "$MEM_BROKER_IDLE") MiB, $(mib "$MEM_FLOOD_BEFORE") MiB before, $(mib "$MEM_FLOOD_SERVED") MiB served, $(mib "$MEM_FLOOD") MiB idle ($FLOOD_KIB_PER_CONNECTION KiB a connection), $(mib "$MEM_FLOOD_AFTER") MiB ${FLOOD_SETTLED_S}s after closing"

# --- throughput and latency ------------------------------------------------

# Each run appends: case round server requests rps p50_us p99_us cpu_us_per_req
RUNS=$WORK/runs.tsv
: >"$RUNS"

to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 0.001
        printf "%.1f", n * f
    }'
}

# measure CASE ROUND SERVER PID COMMAND...: runs COMMAND, parses wrk or
# unix_load output, and appends a line to $RUNS.
measure() {
    local case=$1 round=$2 server=$3 pid=$4
    shift 4
    local out=$WORK/run.out before after
    before=$(cpu_ticks "$pid")
    "$@" >"$out" 2>&1 || die "$* failed: $(cat "$out")"
    after=$(cpu_ticks "$pid")
    local requests rps p50 p99 errors
    if [[ $1 == wrk ]]; then
        requests=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
        errors=$(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' "$out")
    else
        local line
        line=$(cat "$out")
        requests=$(kv "$line" requests)
        rps=$(kv "$line" rps)
        p50=$(kv "$line" p50_us)
        p99=$(kv "$line" p99_us)
        errors=$(kv "$line" errors)
    fi
    [[ $errors == 0 ]] || die "$case $server: errors: $(cat "$out")"
    local cpu
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$round" "$server" "$requests" "$rps" "$p50" "$p99" "$cpu" >>"$RUNS"
    log "$(printf '%-18s round %s %-9s %9.0f req/s  p50 %7.1f us  p99 %7.1f us  cpu %6.2f us/req' \
        "$case" "$round" "$server" "$rps" "$p50" "$p99" "$cpu")"
}

HDR=(-H 'Wxbroker-Client: bench')
run_case() {
    local case=$1 round=$2 server=$3
    local pid=$BROKER_PID port=$API sock=$BROKER_SOCK client=(--client bench)
    if [[ $server == reference ]]; then
        pid=$REF_PID port=$REF sock=$REF_SOCK client=()
    fi
    local pct=$WORK/pct-$case-$server-$round.txt
    case $case in
    wrk-tcp-c64 | wrk-tcp-c256)
        local conns=${case##*-c}
        measure "$case" "$round" "$server" "$pid" \
            wrk -t2 -c"$conns" -d"${DURATION}s" --latency "${HDR[@]}" "http://127.0.0.1:$port/v1/token"
        ;;
    load-tcp-c64)
        measure "$case" "$round" "$server" "$pid" \
            "$UL" --tcp "127.0.0.1:$port" "${client[@]}" --connections 64 --duration "${DURATION}s" --percentiles "$pct"
        ;;
    load-unix-c64)
        measure "$case" "$round" "$server" "$pid" \
            "$UL" --unix "$sock" --connections 64 --duration "${DURATION}s" --percentiles "$pct"
        ;;
    esac
}

CASES=(wrk-tcp-c64 wrk-tcp-c256 load-tcp-c64 load-unix-c64)
log "throughput: ${#CASES[@]} cases x 2 servers x $ROUNDS rounds x ${DURATION}s"
for round in $(seq 1 "$ROUNDS"); do
    for case in "${CASES[@]}"; do
        # Alternate who goes first so neither always runs on a warmer machine.
        if ((round % 2)); then order=(broker reference); else order=(reference broker); fi
        for server in "${order[@]}"; do
            run_case "$case" "$round" "$server"
        done
    done
done

MEM_BROKER_AFTER=$(rss_kib "$BROKER_PID")
MEM_BROKER_HWM=$(hwm_kib "$BROKER_PID")
MEM_REF_HWM=$(hwm_kib "$REF_PID")

# --- refresh during the run ------------------------------------------------

metric() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }

log "refresh: ${REFRESH_DURATION}s with tokens living 20s, then ${REFRESH_DURATION}s without refreshes"
start sim2 "$WX" simulate --listen "127.0.0.1:$SIM2" --account "$APPID:$SECRET" --token-lifetime 20s
SIM2_PID=$LAST_PID
wait_http sim2 "http://127.0.0.1:$SIM2/__sim/calls"
broker_config "$API2" "$OPS2" "$SIM2" 'backend = "memory"' 'refresh_before = "5s"' >"$WORK/broker2.toml"
start broker2 "$WX" serve --config "$WORK/broker2.toml"
BROKER2_PID=$LAST_PID
wait_http broker2 "http://127.0.0.1:$OPS2/readyz"

refresh_run() {
    local port=$1 ops=$2 pid=$3 before after
    before=$(metric "$ops" 'wxbroker_upstream_fetches_total{')
    local cpu0 cpu1
    cpu0=$(cpu_ticks "$pid")
    "$UL" --tcp "127.0.0.1:$port" --client bench --connections 64 --duration "${REFRESH_DURATION}s" --windows
    cpu1=$(cpu_ticks "$pid")
    after=$(metric "$ops" 'wxbroker_upstream_fetches_total{')
    echo "fetches=$((after - before)) cpu_ticks=$((cpu1 - cpu0))"
}
REFRESH_WITH=$(refresh_run "$API2" "$OPS2" "$BROKER2_PID" | tr '\n' ' ')
stop "$BROKER2_PID"
stop "$SIM2_PID"
REFRESH_WITHOUT=$(refresh_run "$API" "$OPS" "$BROKER_PID" | tr '\n' ' ')
log "with refreshes:    $REFRESH_WITH"
log "without refreshes: $REFRESH_WITHOUT"

# --- start to ready with a stored token -------------------------------------

log "start to ready: one cold start to fill the file store, then warm starts"
mkdir -p "$WORK/store"
broker_config "$API3" "$OPS3" "$SIM" "backend = \"file\"
path = \"$WORK/store\"" "" >"$WORK/broker3.toml"
READY=$BIN/examples/ready_time
COLD=$("$READY" --probe "127.0.0.1:$OPS3" --log "$WORK/cold.log" -- "$WX" serve --config "$WORK/broker3.toml") ||
    die "cold start failed: $(cat "$WORK/cold.log")"
WARM=()
WARM_LOG=()
for i in 1 2 3 4 5; do
    line=$("$READY" --probe "127.0.0.1:$OPS3" --log "$WORK/warm$i.log" -- "$WX" serve --config "$WORK/broker3.toml") ||
        die "warm start $i failed: $(cat "$WORK/warm$i.log")"
    grep -q 'loaded stored token' "$WORK/warm$i.log" || die "warm start $i did not load the stored token"
    WARM+=("$(sed 's/.*ready_ms=\([0-9.]*\).*/\1/' <<<"$line")")
    # In-process: first log line to "loaded stored token", from the daemon's timestamps.
    WARM_LOG+=("$(sed -n 's/.*"timestamp":"[^"]*T\([0-9:.]*\)Z".*"message":"\([^"]*\)".*/\1 \2/p' "$WORK/warm$i.log" |
        awk '{ split($1, t, ":"); s = t[1] * 3600 + t[2] * 60 + t[3] }
             NR == 1 { a = s } /loaded stored token/ { printf "%.2f", (s - a) * 1000; exit }')")
done
COLD_MS=$(sed 's/.*ready_ms=\([0-9.]*\).*/\1/' <<<"$COLD")

# --- report ----------------------------------------------------------------

mkdir -p "$OUT"
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minmax() { tr ' ' '\n' | grep . | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { print a "–" b }'; }

# field CASE SERVER COLUMN: the values of COLUMN over rounds.
col() {
    case $1 in requests) echo 4 ;; rps) echo 5 ;; p50) echo 6 ;; p99) echo 7 ;; cpu) echo 8 ;; esac
}
values() { awk -F'\t' -v c="$1" -v s="$2" -v k="$(col "$3")" '$1 == c && $3 == s { printf "%s ", $k }' "$RUNS"; }
# ratios CASE COLUMN: broker/reference within each round.
ratios() {
    awk -F'\t' -v c="$1" -v k="$(col "$2")" '
        $1 == c && $3 == "broker" { b[$2] = $k }
        $1 == c && $3 == "reference" { r[$2] = $k }
        END { for (i in b) if (r[i] > 0) printf "%.3f ", b[i] / r[i] }' "$RUNS"
}
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print (ok ? "met" : "**missed**") }'; }

row() {
    local case=$1 m
    local cells=()
    for m in rps p50 p99 cpu; do
        cells+=("$(values "$case" broker "$m" | median)" "$(values "$case" reference "$m" | median)"
            "$(ratios "$case" "$m" | median) ($(ratios "$case" "$m" | minmax))")
    done
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$case" "${cells[@]}"
}

R_RPS=$(ratios wrk-tcp-c64 rps | median)
R_CPU=$(ratios wrk-tcp-c64 cpu | median)
R_P99=$(ratios wrk-tcp-c64 p99 | median)
UNIX_RPS=$(values load-unix-c64 broker rps | median)
TCP_RPS=$(values load-tcp-c64 broker rps | median)
UNIX_CPU=$(values load-unix-c64 broker cpu | median)
TCP_CPU=$(values load-tcp-c64 broker cpu | median)
UNIX_P99=$(values load-unix-c64 broker p99 | median)
TCP_P99=$(values load-tcp-c64 broker p99 | median)
W_MED=$(printf '%s ' "${WARM[@]}" | median)
W_LOG_MED=$(printf '%s ' "${WARM_LOG[@]}" | median)

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    echo "# Benchmark results"
    echo
    echo "Targets: DESIGN.md section 10. Produced by \`scripts/bench.sh\`."
    echo
    echo "- date: $STARTED_AT"
    echo "- command: \`$COMMAND\` ($ROUNDS rounds of ${DURATION} s per case and server, alternating broker and reference)"
    echo "- machine: $(nproc) CPUs, $CPU_MODEL, Linux $(uname -r); load average at start $LOAD_AT_START"
    echo "- $(rustc --version)"
    echo "- broker: \`wxbroker serve\`, one app, memory store, JSON log at info, in front of \`wxbroker simulate\` (separate process)"
    echo "- reference: \`examples/reference_server.rs\`, bare hyper 1 http1 on a multi-thread tokio runtime, fixed body of $BODY_BYTES bytes (the broker's \`/v1/token\` answer is $BODY_BYTES bytes), content-type and cache-control headers ($REF_HEADERS response header lines against the broker's $BROKER_HEADERS)"
    echo
    echo "The load generator, both servers and whatever else runs on the machine share"
    echo "$(nproc) cores, so req/s is capped by the generator for any fast server: CPU"
    echo "time per request (utime+stime of the server process from /proc, divided by"
    echo "the requests served) is the figure that tells the servers apart. Other"
    echo "builds may have been running during the measurement; ratios are taken"
    echo "between broker and reference runs of the same round, minutes apart at most."
    echo
    echo "## Throughput, latency, CPU per request"
    echo
    echo "Medians over rounds; the ratio is broker/reference per round, median (min–max)."
    echo "\`wrk-*\`: wrk, 2 threads, keep-alive. \`load-*\`: examples/unix_load.rs, 2 threads, keep-alive,"
    echo "the same client over TCP and over the Unix socket. Latencies in µs, CPU in µs per request."
    echo
    echo "| case | broker req/s | reference req/s | ratio | broker p50 | ref p50 | ratio | broker p99 | ref p99 | ratio | broker CPU/req | ref CPU/req | ratio |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for case in "${CASES[@]}"; do row "$case"; done
    echo
    echo "## Against the targets"
    echo
    echo "| target | measured | |"
    echo "| --- | --- | --- |"
    echo "| req/s ≥ 0.90 × reference (wrk, TCP, 64 connections) | $R_RPS | $(verdict "$R_RPS" '>=' 0.90) |"
    echo "| CPU per request ≤ 1.25 × reference (wrk, TCP, 64 connections) | $R_CPU | $(verdict "$R_CPU" '<=' 1.25) |"
    echo "| p99 ≤ 2 × reference (wrk, TCP, 64 connections) | $R_P99 | $(verdict "$R_P99" '<=' 2.0) |"
    echo "| Unix socket at least matches TCP (broker, same client): req/s unix/tcp | $UNIX_RPS / $TCP_RPS = $(awk -v a="$UNIX_RPS" -v b="$TCP_RPS" 'BEGIN { printf "%.2f", a / b }') | $(verdict "$(awk -v a="$UNIX_RPS" -v b="$TCP_RPS" 'BEGIN { print a / b }')" '>=' 0.98) |"
    echo "| … CPU per request unix/tcp | $UNIX_CPU / $TCP_CPU µs | $(verdict "$(awk -v a="$UNIX_CPU" -v b="$TCP_CPU" 'BEGIN { print a / b }')" '<=' 1.02) |"
    echo "| … p99 unix/tcp | $UNIX_P99 / $TCP_P99 µs | $(verdict "$(awk -v a="$UNIX_P99" -v b="$TCP_P99" 'BEGIN { print a / b }')" '<=' 1.05) |"
    echo "| p99 over windows with a refresh = p99 without (see below; within 20% counts as equal) | $(kv "$REFRESH_WITH" p99_refresh_windows_us) vs $(kv "$REFRESH_WITHOUT" p99_us) µs | $(verdict "$(awk -v a="$(kv "$REFRESH_WITH" p99_refresh_windows_us)" -v b="$(kv "$REFRESH_WITHOUT" p99_us)" 'BEGIN { print a / b }')" '<=' 1.2) |"
    echo "| RSS idle, one app ≤ 16 MiB | $(mib "$MEM_BROKER_IDLE") MiB | $(verdict "$MEM_BROKER_IDLE" '<=' 16384) |"
    echo "| RSS under 1000 connections ≤ 32 MiB | $(mib "$MEM_BROKER_1000") MiB | $(verdict "$MEM_BROKER_1000" '<=' 32768) |"
    echo "| RSS back to idle (≤ 16 MiB) after a flood of $FLOOD connections closes | $(mib "$MEM_FLOOD_AFTER") MiB after ${FLOOD_SETTLED_S} s | $(verdict "$MEM_FLOOD_AFTER" '<=' 16384) |"
    echo "| an idle keep-alive connection ≤ 8 KiB over the idle figure ($FLOOD connections, one request each, idle ${FLOOD_IDLE} s) | $FLOOD_KIB_PER_CONNECTION KiB ($(mib "$MEM_FLOOD") MiB against $(mib "$MEM_BROKER_IDLE") MiB) | $(verdict "$FLOOD_KIB_PER_CONNECTION" '<=' 8) |"
    echo "| RSS back to the idle figure (within 1 MiB of $(mib "$MEM_BROKER_IDLE") MiB) once the flood closes | $(mib "$MEM_FLOOD_AFTER_5S") MiB after 5 s, $(mib "$MEM_FLOOD_AFTER") MiB after ${FLOOD_SETTLED_S} s | $(verdict "$MEM_FLOOD_AFTER" '<=' "$((MEM_BROKER_IDLE + 1024))") |"
    echo "| start to ready with a stored token < 100 ms | $W_MED ms (median of ${#WARM[@]}) | $(verdict "$W_MED" '<=' 99.999) |"
    echo
    echo "Where the broker's time goes, from a profile: [profile.md](profile.md)."
    echo
    echo "## Refresh during the run"
    echo
    echo "unix_load over TCP, 64 connections, ${REFRESH_DURATION} s each. With refreshes: a second"
    echo "broker whose simulator hands out 20 s tokens, \`refresh_before = \"5s\"\`, so a refresh"
    echo "every 15 s. A one-second window counts as containing a refresh when some connection"
    echo "saw the access_token change in it."
    echo
    echo "| run | upstream fetches | req/s | p50 µs | p99 µs | p99 in refresh windows µs | p99 in other windows µs | worst 1 s window p99 µs | max µs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for run in with without; do
        if [[ $run == with ]]; then r=$REFRESH_WITH; label="with refreshes (windows $(kv "$r" refresh_windows))"; else r=$REFRESH_WITHOUT; label="without"; fi
        echo "| $label | $(kv "$r" fetches) | $(kv "$r" rps) | $(kv "$r" p50_us) | $(kv "$r" p99_us) | $(kv "$r" p99_refresh_windows_us) | $(kv "$r" p99_other_windows_us) | $(kv "$r" worst_window_p99_us) | $(kv "$r" max_us) |"
    done
    echo
    echo "## Memory (VmRSS)"
    echo
    echo "| | broker | reference |"
    echo "| --- | ---: | ---: |"
    echo "| idle (broker: one app, token held) | $(mib "$MEM_BROKER_IDLE") MiB | $(mib "$MEM_REF_IDLE") MiB |"
    echo "| 1000 open keep-alive TCP connections, one request each | $(mib "$MEM_BROKER_1000") MiB | $(mib "$MEM_REF_1000") MiB |"
    echo "| a flood of $FLOOD such connections (broker at $(mib "$MEM_FLOOD_BEFORE") MiB before it), right after the last answer | $(mib "$MEM_FLOOD_SERVED") MiB | |"
    echo "| … the same connections idle ${FLOOD_IDLE} s: $FLOOD_KIB_PER_CONNECTION KiB a connection over the idle figure | $(mib "$MEM_FLOOD") MiB | |"
    echo "| the flood closed: 5 s later | $(mib "$MEM_FLOOD_AFTER_5S") MiB | |"
    echo "| … polled every 0.5 s until within 1 MiB of the idle figure, at most ${FLOOD_SETTLE} s | $(mib "$MEM_FLOOD_AFTER") MiB after ${FLOOD_SETTLED_S} s | |"
    echo "| idle again after all runs | $(mib "$MEM_BROKER_AFTER") MiB | |"
    echo "| peak (VmHWM) over all runs | $(mib "$MEM_BROKER_HWM") MiB | $(mib "$MEM_REF_HWM") MiB |"
    echo
    echo "## Start to ready"
    echo
    echo "\`wxbroker serve\` with a file store, spawned by examples/ready_time.rs, which polls"
    echo "\`GET /readyz\` on the operations listener every millisecond; from spawn to the first 200."
    echo
    echo "| | ms |"
    echo "| --- | ---: |"
    echo "| cold (no stored token; one upstream fetch from the simulator) | $COLD_MS |"
    echo "| warm, median of ${#WARM[@]} (all: ${WARM[*]}) | $W_MED |"
    echo "| warm, in-process: first log line to \"loaded stored token\", median (all: ${WARM_LOG[*]}) | $W_LOG_MED |"
    echo
    echo "## Raw runs"
    echo
    echo "| case | round | server | requests | req/s | p50 µs | p99 µs | CPU µs/req |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    sort -t$'\t' -k1,1 -k2,2n -k3,3 "$RUNS" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
    echo
    echo "![latency percentiles](latency.png)"
} >"$OUT/results.md"

# --- plot ------------------------------------------------------------------

# Percentiles of the last round, on a "nines" axis: x = -log10(1 - p/100).
for series in load-tcp-c64-broker load-tcp-c64-reference load-unix-c64-broker load-unix-c64-reference; do
    awk '{ printf "%.4f %s %s\n", -log(1 - $1 / 100) / log(10), $2, $1 }' \
        "$WORK/pct-${series%-*}-${series##*-}-$ROUNDS.txt" >"$WORK/$series.dat"
done
gnuplot <<EOF
set terminal pngcairo size 1000,600 font "sans,11"
set output "$OUT/latency.png"
set title "GET /v1/token latency, 64 keep-alive connections, unix_load, round $ROUNDS of $ROUNDS ($(nproc) CPUs shared)" noenhanced
set xlabel "percentile"
set ylabel "latency (µs, log scale)"
set logscale y
set grid xtics ytics mytics
set key top left
set xtics ("50" 0.301, "75" 0.602, "90" 1, "95" 1.301, "99" 2, "99.5" 2.301, "99.9" 3, "99.99" 4)
plot "$WORK/load-tcp-c64-broker.dat" using 1:2 with linespoints lw 2 pt 7 lc rgb "#c0392b" title "broker, TCP", \
     "$WORK/load-tcp-c64-reference.dat" using 1:2 with linespoints lw 2 pt 7 dt 2 lc rgb "#e67e22" title "reference, TCP", \
     "$WORK/load-unix-c64-broker.dat" using 1:2 with linespoints lw 2 pt 5 lc rgb "#2471a3" title "broker, Unix socket", \
     "$WORK/load-unix-c64-reference.dat" using 1:2 with linespoints lw 2 pt 5 dt 2 lc rgb "#48c9b0" title "reference, Unix socket"
EOF

log "wrote $OUT/results.md and $OUT/latency.png"
cat "$OUT/results.md"
