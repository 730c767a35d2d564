#!/usr/bin/env bash
# The forwarding case of `make bench`: the broker's token-injecting proxy
# against nginx's `proxy_pass` to the same upstream, measured in one run.
#
#   broker: GET /v1/apps/bench/proxy/cgi-bin/getcallbackip (the token put
#           in, the answer peeked at for a rejection, then relayed)
#   compat: the same call on the broker's WeChat-compatible listener,
#           /cgi-bin/getcallbackip?appid=...&access_token=... (the client's
#           token swapped for the broker's)
#   nginx:  GET /cgi-bin/getcallbackip, proxy_pass with upstream keepalive,
#           2 workers
#   hyper:  GET /cgi-bin/getcallbackip through examples/reference_proxy.rs,
#           the least a hyper 1 proxy does to put a token in and relay the
#           answer, on one thread as the broker's request path: the floor
#           for a proxy built on hyper, to tell the broker's own cost apart
#           from its HTTP library's
#
# The upstream is examples/reference_server.rs answering a small JSON body
# that also parses as a token answer, so the broker fetches its token from
# it too. wrk -t1, keep-alive, alternating broker and nginx each round; CPU
# per request is the proxy's own (utime+stime from /proc over the requests
# it served). Prints a markdown table and, last, the ratios. Loopback only;
# every process started here is stopped by PID.
#
# Knobs: BENCH_DURATION (seconds per run, 8), BENCH_ROUNDS (3),
# BENCH_CONNECTIONS (64), BENCH_PORT_BASE (20960, five ports),
# BENCH_REQUEST_THREADS (the broker's [server] request_threads; its
# default when unset).

set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
PORT_BASE=${BENCH_PORT_BASE:-20960}
UP=$PORT_BASE BROKER=$((PORT_BASE + 1)) NGINX=$((PORT_BASE + 2)) HYPER=$((PORT_BASE + 3))
COMPAT=$((PORT_BASE + 4))

log() { printf '[bench-proxy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
if ((${#need[@]})); then
    SUDO=
    [[ $(id -u) == 0 ]] || SUDO=sudo
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/wxbroker-bench-proxy.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
wait_http() {
    local url=$1 i
    shift
    for i in $(seq 1 300); do
        curl -sf -o /dev/null "$@" "$url" && return 0
        sleep 0.05
    done
    die "$url did not answer 200 within 15 s"
}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
CLK_TCK=$(getconf CLK_TCK)

cargo build --release --locked --bin wxbroker >&2
cargo build --release --locked --example reference_server --example reference_proxy >&2
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

BODY='{"access_token":"bench-upstream-token-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST","expires_in":7000}'
start upstream "$BIN/examples/reference_server" --listen "127.0.0.1:$UP" --body "$BODY"
wait_http "http://127.0.0.1:$UP/cgi-bin/getcallbackip"

cat >"$WORK/broker.toml" <<EOF
[server]
listen = "127.0.0.1:$BROKER"
wechat_compat_listen = "127.0.0.1:$COMPAT"
${BENCH_REQUEST_THREADS:+request_threads = $BENCH_REQUEST_THREADS}

[store]
backend = "memory"

[[apps]]
name = "bench"
appid = "wxbench000000000"
secret = "bench-secret"
api_base = "http://127.0.0.1:$UP"
EOF
RUST_LOG=warn start broker "$BIN/wxbroker" serve --config "$WORK/broker.toml"
BROKER_PID=$LAST_PID
BURL="http://127.0.0.1:$BROKER/v1/apps/bench/proxy/cgi-bin/getcallbackip"
CURL="http://127.0.0.1:$COMPAT/cgi-bin/getcallbackip?appid=wxbench000000000&access_token=client-held"
wait_http "$BURL" -H 'Wxbroker-Client: bench'

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
start nginx "$NGINX_BIN" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
NGINX_PID=$LAST_PID
NURL="http://127.0.0.1:$NGINX/cgi-bin/getcallbackip"
wait_http "$NURL"

start hyper "$BIN/examples/reference_proxy" --listen "127.0.0.1:$HYPER" --upstream "127.0.0.1:$UP"
HYPER_PID=$LAST_PID
HURL="http://127.0.0.1:$HYPER/cgi-bin/getcallbackip"
wait_http "$HURL"

# CPU of a process and its children (nginx's workers), in ticks.
group_ticks() {
    local pid=$1 total child
    total=$(cpu_ticks "$pid")
    for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
        total=$((total + $(cpu_ticks "$child")))
    done
    echo "$total"
}

RUNS=$WORK/runs.tsv
: >"$RUNS"
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 0.001; printf "%.1f", n * f }'
}
measure() {
    local who=$1 url=$2 pid=$3 round=$4
    shift 4
    local before after out=$WORK/wrk.out
    before=$(group_ticks "$pid")
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" "$url" >"$out"
    after=$(group_ticks "$pid")
    grep -q 'Non-2xx\|Socket errors' "$out" && die "$who: errors during load: $(cat "$out")"
    local requests rps p99 cpu
    requests=$(awk '/requests in/ { print $1 }' "$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$who" "$round" "$rps" "$p99" "$cpu" >>"$RUNS"
    log "$(printf '%-6s round %s %9.0f req/s  p99 %8.1f us  cpu %6.2f us/req' "$who" "$round" "$rps" "$p99" "$cpu")"
}

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=(broker nginx compat hyper); else order=(hyper compat nginx broker); fi
    for who in "${order[@]}"; do
        case $who in
        broker) measure broker "$BURL" "$BROKER_PID" "$round" -H 'Wxbroker-Client: bench' ;;
        nginx) measure nginx "$NURL" "$NGINX_PID" "$round" ;;
        compat) measure compat "$CURL" "$BROKER_PID" "$round" ;;
        hyper) measure hyper "$HURL" "$HYPER_PID" "$round" ;;
        esac
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v w="$1" -v k="$2" '$1 == w { print $k }' "$RUNS" | median; }
# ratio KEY [WHO [OF]]: WHO's figure over OF's (broker over nginx), per
# round, median.
ratio() {
    awk -F'\t' -v k="$1" -v who="${2:-broker}" -v of="${3:-nginx}" '$1 == who { b[$2] = $k } $1 == of { n[$2] = $k }
        END { for (r in b) if (n[r] > 0) printf "%.3f\n", b[r] / n[r] }' "$RUNS" | median
}
echo "| forwarding (wrk -t1, $CONNS connections, ${DURATION} s x $ROUNDS rounds) | req/s | p99 µs | CPU µs/req |"
echo "| --- | ---: | ---: | ---: |"
echo "| broker \`/v1/apps/bench/proxy/cgi-bin/getcallbackip\` | $(col broker 3) | $(col broker 4) | $(col broker 5) |"
echo "| nginx \`proxy_pass\`, 2 workers, upstream keepalive | $(col nginx 3) | $(col nginx 4) | $(col nginx 5) |"
echo "| broker's compatible listener, the same call | $(col compat 3) | $(col compat 4) | $(col compat 5) |"
echo "| hyper 1 proxy (\`examples/reference_proxy.rs\`), one thread | $(col hyper 3) | $(col hyper 4) | $(col hyper 5) |"
echo "| ratio broker/nginx, per round, median | $(ratio 3) | $(ratio 4) | $(ratio 5) |"
echo "| ratio compatible listener/nginx | $(ratio 3 compat) | $(ratio 4 compat) | $(ratio 5 compat) |"
echo "| ratio hyper proxy/nginx | $(ratio 3 hyper) | $(ratio 4 hyper) | $(ratio 5 hyper) |"
echo "| ratio broker/hyper proxy | $(ratio 3 broker hyper) | $(ratio 4 broker hyper) | $(ratio 5 broker hyper) |"
echo
echo "forwarding: rps_ratio=$(ratio 3) p99_ratio=$(ratio 4) cpu_ratio=$(ratio 5) (targets: >= 0.8, <= 1.5, <= 1.5)"
echo "compatible listener: rps_ratio=$(ratio 3 compat) p99_ratio=$(ratio 4 compat) cpu_ratio=$(ratio 5 compat)"
