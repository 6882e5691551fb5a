#!/usr/bin/env bash
# bench/ops/scrape.sh: what GET /metrics costs (issue 6).
#
# Starts one ringpolicyd (bench/run/chain.conf, 9 plugins, with http_port) on free loopback
# ports and measures, in one run:
#   1. the scrape rate: wrk -t1 -c1 -dDURATION against /metrics (no policy load);
#   2. policy throughput with ringpolicyd-load (CONNS connections) REPEATS times without and
#      REPEATS times with one scrape per second (curl in a loop), interleaved (off, on, off,
#      on, ...) so drift hits both alike; prints each run, the medians and the cost in percent.
# The daemon is started in the foreground, owned by this script and stopped by pid on exit.
#
# usage: bench/ops/scrape.sh [BUILD_DIR] (default: build); env DURATION (10), REPEATS (3),
# CONNS (16), SHARDS (0: one per CPU). Needs wrk, curl, python3 and a built ringpolicyd and
# ringpolicyd-load (ninja -C BUILD policy/ringpolicyd bench/load/ringpolicyd-load).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNS=${CONNS:-16}
SHARDS=${SHARDS:-0}
DAEMON=$BUILD/policy/ringpolicyd
LOAD=$BUILD/bench/load/ringpolicyd-load
for p in "$DAEMON" "$LOAD"; do
    [ -x "$p" ] || { echo "scrape.sh: $p is not built" >&2; exit 2; }
done
for t in wrk curl python3; do
    command -v $t >/dev/null || { echo "scrape.sh: $t is not installed" >&2; exit 2; }
done

DIR=$(mktemp -d /tmp/ringpolicyd-scrape.XXXXXX)
PID=""
SCRAPER=""
cleanup() {
    [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null && wait "$SCRAPER" 2>/dev/null
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
HTTP=$(free_port)
sed -e "s/@PORT@/$PORT/g" -e "s/@LOG_LEVEL@/0/" -e "s/@MIN_SERVERS@/4/" -e "s/@MIN_SPARE@/1/" \
    -e "s/@MAX_SPARE@/4/" -e "s/@MAX_SERVERS@/64/" -e "s/@SHARDS@/$SHARDS/" \
    -e "s/@MAX_CONNECTIONS@/4096/" -e "s/@SESSION_CACHE@//" "$ROOT/bench/run/chain.conf" \
    >"$DIR/conf"
sed -i "1i http_port = \"127.0.0.1:$HTTP\"" "$DIR/conf"
"$DAEMON" -f -c "$DIR/conf" >"$DIR/daemon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null || { echo "daemon not ready" >&2; cat "$DIR/daemon.log"; exit 1; }

echo "# scrape benchmark: $(nproc) CPUs, $DAEMON, shards=$SHARDS (0: one per CPU), chain.conf + http_port"
BYTES=$(curl -s "http://127.0.0.1:$HTTP/metrics" | wc -c)
echo "page: $BYTES bytes"

echo "## 1. scrape rate: wrk -t1 -c1 -d${DURATION}s http://127.0.0.1:PORT/metrics"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; } # utime + stime of the daemon
C0=$(cpu_ticks)
wrk -t1 -c1 -d"${DURATION}s" "http://127.0.0.1:$HTTP/metrics" | tee "$DIR/wrk.txt"
C1=$(cpu_ticks)
SCRAPE_RATE=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$DIR/wrk.txt")
SCRAPE_N=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$DIR/wrk.txt")
CPU_US=$(( (C1 - C0) * 1000000 / $(getconf CLK_TCK) ))

run_load() { # $1: label
    "$LOAD" --server "127.0.0.1:$PORT" --connections "$CONNS" --duration "$DURATION" \
        --warmup 2 --json --label "$1" 2>>"$DIR/load.err" | tail -1
}

echo "## 2. policy throughput: ringpolicyd-load --server 127.0.0.1:PORT --connections $CONNS --duration $DURATION --warmup 2, without and with one scrape per second"
: >"$DIR/runs.jsonl"
for i in $(seq "$REPEATS"); do
    run_load "off" | tee -a "$DIR/runs.jsonl"
    (while true; do curl -s -o /dev/null "http://127.0.0.1:$HTTP/metrics"; sleep 1; done) &
    SCRAPER=$!
    run_load "on" | tee -a "$DIR/runs.jsonl"
    kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null; SCRAPER=""
done
SCRAPES=$(curl -s "http://127.0.0.1:$HTTP/metrics" | sed -n 's/^ringpolicyd_http_responses_total{code="2xx"} //p')

python3 - "$DIR/runs.jsonl" "$SCRAPE_RATE" "$BYTES" "$SCRAPES" "$CPU_US" "$SCRAPE_N" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
label = lambda r: r.get("label", r.get("setup", {}).get("label"))
off = [r["rps"] for r in runs if label(r) == "off"]
on = [r["rps"] for r in runs if label(r) == "on"]
mo, mn = statistics.median(off), statistics.median(on)
print("## result")
print(f"scrape rate: {float(sys.argv[2]):.0f} scrapes/s of a {sys.argv[3]}-byte page (wrk -t1 -c1)")
per = float(sys.argv[5]) / max(1, int(sys.argv[6]))
print(f"daemon CPU per scrape: {per:.0f} us (its user+system time during wrk / scrapes); one scrape "
      f"a second is {per / 1e4:.3f}% of one CPU")
print("policy rps without scrapes: " + ", ".join(f"{x:.0f}" for x in off) + f" (median {mo:.0f})")
print("policy rps with 1 scrape/s: " + ", ".join(f"{x:.0f}" for x in on) + f" (median {mn:.0f})")
print(f"cost of one scrape per second: {100.0 * (mo - mn) / mo:+.2f}% of throughput (target < 1%)")
print(f"HTTP 2xx answered by the daemon: {sys.argv[4]}")
EOF
echo "run directory: $DIR"
