#!/usr/bin/env bash
# bench/run/bench.sh: the ringpolicyd benchmark, in one run.
#
# Drives, with ringpolicyd-load (closed loop, realistic Postfix 3.7 requests), one after another:
#   bare        the bare engine responder (bench/responder/ringpolicyd-bare): a fixed
#               action=DUNNO, our ceiling
#   ours-one    ringpolicyd with one.conf (one Action plugin)
#   ours-chain  ringpolicyd with chain.conf (9 RegexList/Condition/SetField/ScoreAction/
#               AddScoreHeader plugins)
#   perl-one    the Perl mtpolicyd 2.05 with one.conf
#   perl-chain  the Perl mtpolicyd 2.05 with chain.conf
# each at 1/16/64/256 connections, repeated, and prints a Markdown table of the medians (rps,
# p50/p99/p99.9) with the ratios ours/Perl and ours/bare. Then the memory measurement: 10,000
# idle keepalive connections opened to ringpolicyd (and to the bare responder), and the RSS
# delta per connection from /proc/PID/status; for Perl, the memory of one worker process (it
# needs one per connection).
#
# Parts whose program is not built (or not installed) print "skipped: ..." and the rest runs.
# Everything runs on 127.0.0.1 with free ports; servers are started in the foreground, owned by
# this script and stopped (by pid) when it exits. Configs, logs and raw JSON stay in the run
# directory (/tmp/ringpolicyd-bench.*), named at the end of the report. Needs bash, python3 (for the medians) and a built ringpolicyd-load and
# ringpolicyd-client (ninja -C BUILD bench/load/ringpolicyd-load policy/client/ringpolicyd-client).
set -uo pipefail

ARGS=("$@")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
DURATION=10
WARMUP=2
REPEATS=3
CONNS="1 16 64 256"
IDLE=10000
THREADS=""
SHARDS=0
LOG_LEVEL=0
ONLY="bare,ours,perl,memory"
OUT=""
SESSION=0

usage() {
    cat <<EOF
usage: bench/run/bench.sh [options]
  --build DIR          meson build directory with the programs (default: $ROOT/build)
  --duration S         measured seconds per run (default $DURATION)
  --warmup S           warm-up seconds per run, not counted (default $WARMUP)
  --repeats N          runs per point; the table shows medians (default $REPEATS)
  --connections LIST   connection counts (default "$CONNS")
  --idle N             idle connections for the memory measurement (default $IDLE)
  --threads N          ringpolicyd-load threads (default: one per CPU)
  --shards N           ringpolicyd shards (default 0: one per CPU)
  --log-level N        log_level in both configs (default 0: no per-request log lines)
  --only LIST          comma list of bare,ours,perl,memory (default all)
  --session            give chain.conf a session cache: Memory for ringpolicyd, Memcached
                       (a memcached started on a free loopback port) for the Perl mtpolicyd
  --quick              --duration 3 --warmup 1 --repeats 1 --idle 2000
  --out FILE           also write the report there
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --log-level) LOG_LEVEL=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --session) SESSION=1; shift ;;
    --quick) DURATION=3; WARMUP=1; REPEATS=1; IDLE=2000; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$WARMUP" "$REPEATS" "$IDLE" "$SHARDS" "$LOG_LEVEL" ${THREADS:+"$THREADS"} $CONNS; do
    case "$n" in '' | *[!0-9]*) echo "bench.sh: '$n' is not a number" >&2; exit 2 ;; esac
done

# ---------------------------------------------------------------------------------------------
# The run directory, processes we start and stop (by pid only), skip/note, free ports,
# readiness, CPU samples: bench/common/bench_lib.sh.
. "$ROOT/bench/common/bench_lib.sh"
find_programs "$BUILD"
make_run_dir ringpolicyd-bench || exit 2
trap cleanup EXIT
trap 'exit 130' INT TERM

wants() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }

# The <SessionCache> block for --session: in-process for ringpolicyd, memcached for Perl (2.05
# has no in-process cache that workers share).
MEMCACHED_PORT=""
MEMCACHED_PID=""
session_block() {
    local kind=$1
    [ "$SESSION" = 1 ] || return 0
    if [ "$kind" = perl ]; then
        printf '<Connection memcached>\n  module = "Memcached"\n  servers = "127.0.0.1:%s"\n</Connection>\n' "$MEMCACHED_PORT"
        printf '<SessionCache>\n  module = "Memcached"\n  memcached = "memcached"\n</SessionCache>\n'
    else
        printf '<SessionCache>\n  module = "Memory"\n</SessionCache>\n'
    fi
}

# render KIND SRC DST PORT CONNS: fills in a config template.
render() {
    local kind=$1 src=$2 dst=$3 port=$4 conns=$5
    session_block "$kind" >"$dst.session"
    sed -e "s/@PORT@/$port/g" -e "s/@LOG_LEVEL@/$LOG_LEVEL/" \
        -e "s/@MIN_SERVERS@/$((conns + 2))/" -e "s/@MIN_SPARE@/2/" \
        -e "s/@MAX_SPARE@/$((conns + 4))/" \
        -e "s/@MAX_SERVERS@/$((conns + 8))/" -e "s/@SHARDS@/$SHARDS/" \
        -e "s/@MAX_CONNECTIONS@/$((IDLE + 1024))/" \
        -e "/@SESSION_CACHE@/{r $dst.session" -e "d}" "$src" >"$dst"
    rm -f "$dst.session"
}

# start_server KIND NAME CONF_TEMPLATE CONNS: sets SERVER_PID and SERVER_PORT, or returns 1.
start_server() {
    local kind=$1 name=$2 template=$3 conns=$4 log=$RUN/$2.c$4.log
    SERVER_PORT=$(free_port)
    case "$kind" in
    bare)
        local shards=()
        [ "$SHARDS" != 0 ] && shards=(--shards "$SHARDS")
        "${NEWPGRP[@]}" "$BARE" --listen "127.0.0.1:$SERVER_PORT" "${shards[@]}" \
            --conns-max $((IDLE + 1024)) >"$log" 2>&1 </dev/null &
        ;;
    ours | perl)
        local conf=$RUN/$name.c$conns.conf prog=$OURS
        [ "$kind" = perl ] && prog=$PERL
        render "$kind" "$template" "$conf" "$SERVER_PORT" "$conns"
        "${NEWPGRP[@]}" "$prog" -f -c "$conf" >"$log" 2>&1 </dev/null &
        ;;
    esac
    SERVER_PID=$!
    GROUPS_STARTED+=("$SERVER_PID")
    if ! wait_ready "$SERVER_PORT" "$SERVER_PID" 30; then
        skip "$name: did not answer on 127.0.0.1:$SERVER_PORT within 30 s (log: $log)"
        tail -5 "$log" >&2
        stop_group "$SERVER_PID"
        return 1
    fi
    if [ "$kind" = perl ]; then
        # One worker per connection: wait until the whole pool is forked.
        wait_perl_pool "$SERVER_PID" $((conns + 2)) "$name c=$conns"
    fi
    return 0
}

POINT_PIDS=()
sample_cpu() { server_cpu_s "${POINT_PIDS[@]}" >"$1"; }

# run_point NAME CONNS PORT PID: the repeats of one measurement, with the server's CPU time
# over the measured window (sampled after the warm-up and at the end).
run_point() {
    local name=$1 conns=$2 port=$3 pid=$4 rep
    local pids=("$pid")
    # Perl's sessions live in memcached: its CPU is part of Perl's cost per request.
    [ "$name" = perl-chain ] && [ -n "$MEMCACHED_PID" ] && pids+=("$MEMCACHED_PID")
    # The servers' CPU seconds, sampled around the measured window (POINT_PIDS).
    POINT_PIDS=("${pids[@]}")
    for rep in $(seq "$REPEATS"); do
        local base=$RUN/results/$name.$conns.$rep
        load_window "$base" sample_cpu --server "127.0.0.1:$port" --connections "$conns" \
            --label "$name c=$conns rep=$rep" ${THREADS:+--threads "$THREADS"}
        awk '{ v[NR] = $1 } END { printf "%.2f\n", v[2] - v[1] }' "$base.before" "$base.after" >"$base.cpu"
        echo "  $name c=$conns rep $rep: $(load_line "$base.json")" >&2
    done
}

# bench_target KIND NAME TEMPLATE: every connection count. Perl gets a pool sized to each.
bench_target() {
    local kind=$1 name=$2 template=$3 conns
    if [ "$kind" = perl ]; then
        for conns in $CONNS; do
            start_server perl "$name" "$template" "$conns" || continue
            run_point "$name" "$conns" "$SERVER_PORT" "$SERVER_PID"
            local workers
            workers=$(pgrep -c -P "$SERVER_PID" || true)
            [ "$workers" -ge "$conns" ] ||
                note "$name c=$conns: only $workers Perl workers left after the runs (fewer than the connections)"
            [ "$conns" = "$PERL_MEM_CONNS" ] && perl_worker_memory "$SERVER_PID" "$name"
            stop_group "$SERVER_PID"
        done
        return
    fi
    start_server "$kind" "$name" "$template" 0 || return
    for conns in $CONNS; do run_point "$name" "$conns" "$SERVER_PORT" "$SERVER_PID"; done
    stop_group "$SERVER_PID"
}

# Perl: one process per connection, so its memory per connection is a worker's.
perl_worker_memory() {
    local master=$1 name=$2 rss=0 pss=0 n=0 pid
    for pid in $(pgrep -P "$master"); do
        rss=$((rss + $(rss_kb "$pid")))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] && echo "{\"name\":\"$name\",\"workers\":$n,\"rss_kb_per_worker\":$((rss / n)),\"pss_kb_per_worker\":$((pss / n)),\"master_rss_kb\":$(rss_kb "$master")}" >>"$RUN/memory.jsonl"
}

# memory_idle KIND NAME: RSS before and while IDLE idle keepalive connections are held.
memory_idle() {
    local kind=$1 name=$2
    start_server "$kind" "$name-mem" "$ROOT/bench/run/one.conf" 0 || return
    local pid=$SERVER_PID port=$SERVER_PORT
    sleep 1
    local before
    before=$(rss_kb "$pid")
    local out=$RUN/$name.idle.out
    "$LOAD" --server "127.0.0.1:$port" --idle "$IDLE" --hold 600 >"$out" 2>>"$RUN/load.stderr" &
    local load_pid=$!
    STARTED+=("$load_pid")
    for _ in $(seq 1800); do
        grep -q '^ready:' "$out" 2>/dev/null && break
        kill -0 "$load_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^ready:' "$out"; then
        skip "memory $name: the idle connections were not opened ($(head -1 "$out"))"
        stop_pid "$load_pid"
        stop_group "$pid"
        return
    fi
    sleep 1
    local after open errors
    after=$(rss_kb "$pid")
    open=$(sed -n 's/^ready: \([0-9]*\) idle connections open, \([0-9]*\) errors.*/\1/p' "$out")
    errors=$(sed -n 's/^ready: \([0-9]*\) idle connections open, \([0-9]*\) errors.*/\2/p' "$out")
    # The connections are really open (and served) only if the daemon still answers.
    local alive=yes
    printf 'client_address=192.0.2.1\n\n' | "$CLIENT" -t 5 -h "127.0.0.1:$port" >/dev/null 2>&1 || alive=no
    stop_pid "$load_pid"
    stop_group "$pid"
    echo "{\"name\":\"$name\",\"idle\":$IDLE,\"open\":${open:-0},\"errors\":${errors:-0},\"rss_kb_before\":${before:-0},\"rss_kb_after\":${after:-0},\"answers_while_held\":\"$alive\"}" >>"$RUN/memory.jsonl"
}

# ---------------------------------------------------------------------------------------------
# memcached for the Perl session cache (--session).
if [ "$SESSION" = 1 ]; then
    start_memcached "$RUN/memcached.log" || exit 2
fi

# ---------------------------------------------------------------------------------------------
# The setup, printed with the results.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
PERL_MEM_CONNS=$(echo $CONNS | awk '{print $NF}')
for c in $CONNS; do [ "$c" = 64 ] && PERL_MEM_CONNS=64; done
{
    echo "# ringpolicyd benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    setup_lines "$ROOT" "$BUILD"
    echo "- load: ringpolicyd-load, closed loop, generated Postfix 3.7 mails (1-5 recipients: RCPT each, then END-OF-MESSAGE, one instance per mail), threads ${THREADS:-one per CPU}; $DURATION s measured after $WARMUP s warm-up, $REPEATS repeat(s) per point, medians shown"
    echo "- bare: ringpolicyd-bare --shards $SHARDS (0 = one per CPU) --conns-max $((IDLE + 1024)), answering action=dunno to every request"
    echo "- all servers share this machine with the load generator (loopback); one server runs at a time, in the load generator's session (scheduler autogroup: $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo '?'))"
    echo "- ringpolicyd: shards=$SHARDS (0 = one per CPU), max_connections=$((IDLE + 1024)) per shard, log_level=$LOG_LEVEL"
    if [ "$SESSION" = 1 ]; then
        echo "- session cache in chain.conf: ringpolicyd module=Memory, Perl module=Memcached (memcached 127.0.0.1:$MEMCACHED_PORT, 2 threads, 256 MiB, its CPU counted as Perl's); one.conf has none"
    else
        echo "- no SessionCache: a fresh session per request in both daemons (2.05's behaviour without one); --session adds one"
    fi
    echo "- Perl mtpolicyd $(perl -MMail::MtPolicyd -e 'print $Mail::MtPolicyd::VERSION' 2>/dev/null || echo '?'): restarted for each connection count N with min_servers=N+2, min_spare_servers=2, max_spare_servers=N+4 (so the idle pool is not cut back before the load arrives), max_servers=N+8, max_requests=1000000, keepalive_timeout=0, log_level=$LOG_LEVEL: one pre-forked worker per connection, all forked before measuring"
    echo "- command: $0 ${ARGS[*]}"
    echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg), memory available $(awk '/^MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) (other work on the box skews absolute numbers; the ratios come from the same run)"
    echo
} >"$REPORT"
cat "$REPORT" >&2

# ---------------------------------------------------------------------------------------------
# The runs.
if wants bare; then
    if [ -x "$BARE" ]; then
        echo "bare responder ..." >&2
        bench_target bare bare ""
    else
        skip "bare: $BARE is not built"
    fi
fi
if wants ours; then
    if [ -x "$OURS" ]; then
        echo "ringpolicyd ..." >&2
        bench_target ours ours-one "$ROOT/bench/run/one.conf"
        bench_target ours ours-chain "$ROOT/bench/run/chain.conf"
    else
        skip "ours-one, ours-chain: $OURS is not built"
    fi
fi
if wants perl; then
    if [ -x "$PERL" ]; then
        echo "Perl mtpolicyd ..." >&2
        bench_target perl perl-one "$ROOT/bench/run/one.conf"
        bench_target perl perl-chain "$ROOT/bench/run/chain.conf"
    else
        skip "perl-one, perl-chain: $PERL is not installed"
    fi
fi
if wants memory; then
    echo "memory ..." >&2
    if [ -x "$OURS" ]; then memory_idle ours ringpolicyd; else skip "memory ringpolicyd: $OURS is not built"; fi
    if [ -x "$BARE" ]; then memory_idle bare bare; else skip "memory bare: $BARE is not built"; fi
fi

# ---------------------------------------------------------------------------------------------
# The report.
python3 - "$RUN" "$CONNS" >>"$REPORT" <<'PY'
import glob, json, os, statistics, sys

run, conns = sys.argv[1], [int(c) for c in sys.argv[2].split()]
points = {}
for path in glob.glob(os.path.join(run, "results", "*.json")):
    name, c, _rep, _ = os.path.basename(path).rsplit(".", 3)
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        continue
    try:
        with open(path[:-len(".json")] + ".cpu") as f:
            cpu_s = float(f.read())
        ok = d["requests"] and cpu_s > 0
        d["server_cpu_us_per_req"] = cpu_s * 1e6 / d["requests"] if ok else None
    except (OSError, ValueError):
        d["server_cpu_us_per_req"] = None
    points.setdefault((name, int(c)), []).append(d)

def med(name, c, get):
    values = [get(d) for d in points.get((name, c), [])]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt(v, spec="%.0f"):
    return spec % v if v is not None else "-"

rps = lambda d: d["rps"]
lat = lambda k: (lambda d: d["latency_us"][k])

def ratio(a, b, fmt="%.1fx"):
    return fmt % (a / b) if a is not None and b else "-"

order = ["bare", "ours-one", "ours-chain", "perl-one", "perl-chain"]
print("## Throughput and latency (medians)\n")
print("| server | conns | rps | p50 us | p99 us | p99.9 us | max us | errors | server CPU us/req | rps vs Perl | p99 vs Perl | CPU/req vs Perl | rps vs bare |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
cpu_req = lambda d: d["server_cpu_us_per_req"]
for name in order:
    for c in conns:
        if (name, c) not in points:
            continue
        r = med(name, c, rps)
        perl = "perl-" + name.split("-", 1)[1] if name.startswith("ours-") else None
        vs_perl = ratio(r, med(perl, c, rps)) if perl else ""
        p99 = med(name, c, lat("p99"))
        p99_perl = med(perl, c, lat("p99")) if perl else None
        # How many times lower our p99 is than Perl's.
        p99_vs = ratio(p99_perl, p99, "%.1fx lower") if perl and p99 else ""
        vs_bare = ratio(r, med("bare", c, rps), "%.2f") if name != "bare" else ""
        cpu = med(name, c, cpu_req)
        # How many times less server CPU we spend per request than Perl.
        cpu_vs = ratio(med(perl, c, cpu_req), cpu, "%.1fx less") if perl and cpu else ""
        errors = sum(d["errors"] for d in points[(name, c)])
        print(f"| {name} | {c} | {r:.0f} | {fmt(med(name, c, lat('p50')))} | {fmt(p99)} | "
              f"{fmt(med(name, c, lat('p999')))} | {fmt(med(name, c, lat('max')))} | {errors} | "
              f"{fmt(cpu, '%.1f')} | {vs_perl} | {p99_vs} | {cpu_vs} | {vs_bare} |")

print("\nActions answered (all runs of a server, share of replies):\n")
for name in order:
    totals = {}
    for (n, _c), runs in points.items():
        if n == name:
            for d in runs:
                for a, k in d["actions"].items():
                    totals[a] = totals.get(a, 0) + k
    if totals:
        all_ = sum(totals.values())
        print(f"- {name}: " + ", ".join(f"{a} {100.0 * k / all_:.1f}%" for a, k in
                                        sorted(totals.items(), key=lambda x: -x[1])))

cpu = [d.get("client_cpu_pct", 0) for runs in points.values() for d in runs]
cpu_req = [d["client_cpu_us_per_req"] for runs in points.values() for d in runs
           if d.get("client_cpu_us_per_req")]
if cpu:
    print(f"\nLoad generator CPU during the measured windows: median {statistics.median(cpu):.0f}%, "
          f"max {max(cpu):.0f}% of one core (the box has {os.cpu_count()} CPUs)"
          + (f"; {statistics.median(cpu_req):.1f} us per request (median), most of it the "
             f"kernel's loopback TCP work" if cpu_req else "") + ".")

mem_path = os.path.join(run, "memory.jsonl")
mems = []
if os.path.exists(mem_path):
    with open(mem_path) as f:
        mems = [json.loads(line) for line in f if line.strip()]
if mems:
    print("\n## Memory\n")
idle = [m for m in mems if "workers" not in m]
perl_lines = [m for m in mems if "workers" in m]
if idle:
    print("| server | idle connections | RSS before | RSS with them open | per connection | still answering |")
    print("|---|---:|---:|---:|---:|---|")
    for m in idle:
        delta_kb = m["rss_kb_after"] - m["rss_kb_before"]
        per = delta_kb * 1024.0 / m["open"] if m["open"] else 0
        print(f"| {m['name']} | {m['open']} of {m['idle']} ({m['errors']} errors) | "
              f"{m['rss_kb_before'] / 1024:.1f} MiB | {m['rss_kb_after'] / 1024:.1f} MiB | "
              f"{per:.0f} bytes | {m['answers_while_held']} |")
for m in perl_lines:
    print(f"\nPerl mtpolicyd ({m['name']}) needs one worker process per connection: with "
          f"{m['workers']} workers, each had {m['rss_kb_per_worker'] / 1024:.1f} MiB RSS "
          f"({m['pss_kb_per_worker'] / 1024:.1f} MiB PSS, i.e. its unshared share), "
          f"master {m['master_rss_kb'] / 1024:.1f} MiB.")
PY

AVAIL_END_KB=$(awk '/^MemAvailable/ {print $2}' /proc/meminfo)
if [ "${AVAIL_END_KB:-0}" -lt 2097152 ]; then
    note "memory was short: $((AVAIL_END_KB / 1024)) MiB available at the end; paging skews every number, most of all the Perl daemon's (many processes)"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_END%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
    note "the machine was busy: load average $LOAD_END at the end on $(nproc) CPUs; absolute numbers are low and noisy, compare the ratios and the CPU per request"
else
    note "load average at the end: $LOAD_END"
fi
report_tail

cat "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT"
exit 0
