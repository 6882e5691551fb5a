#!/usr/bin/env bash
# bench/realistic/bench.sh: issue 3's realistic benchmark, in one run.
#
# realistic.conf (sessions in memcached; the seed how-to's SqlUserConfig + Quota + Accounting on
# PostgreSQL; bench/run/chain.conf's 9-plugin chain before them) served by ringpolicyd and by the
# Perl mtpolicyd 2.05, the same file for both, each driven by ringpolicyd-load (closed loop,
# generated Postfix 3.7 requests) at 1/16/64/256 connections, repeated; prints a Markdown table
# of the medians: rps, p50/p99, ratios ours/Perl, CPU per request, and the round trips to
# PostgreSQL and memcached per 1000 requests, measured on the servers' side over the measured
# window of each run:
#   - memcached: deltas of its "stats" (cmd_get + cmd_set + cmd_touch + deletes + incr/decr +
#     cas; cmd_get counts keys, a multi-get of 2 keys counts 2) and total_connections;
#   - PostgreSQL: pg_stat_statements' calls of role policyd (statements executed) and
#     pg_stat_database's xact_commit + xact_rollback and sessions of database policyd.
# The script starts a PostgreSQL cluster (initdb in the run directory, fsync off,
# pg_stat_statements preloaded) and one memcached on free loopback ports, creates the tables by
# hand (tables.sql), empties them and memcached before each server, and stops everything it
# started (by pid or process group) when it exits. Needs bash, python3, psql, memcached, the
# PostgreSQL 15 server, the Perl mtpolicyd with libdbd-pg-perl and libcache-memcached-perl, and a
# built ringpolicyd, ringpolicyd-load and ringpolicyd-client.
set -uo pipefail

ARGS=("$@")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
DURATION=10
WARMUP=2
REPEATS=3
CONNS="1 16 64 256"
THREADS=""
SHARDS=0
LOG_LEVEL=0
ONLY="ours,perl"
OUT=""
CACHE_PER_MAIL=0

usage() {
    cat <<USAGE
usage: bench/realistic/bench.sh [options]
  --build DIR          meson build directory with the programs (default: $ROOT/build)
  --duration S         measured seconds per run (default $DURATION)
  --warmup S           warm-up seconds per run, not counted (default $WARMUP)
  --repeats N          runs per point; the table shows medians (default $REPEATS)
  --connections LIST   connection counts (default "$CONNS")
  --threads N          ringpolicyd-load threads (default: one per CPU)
  --shards N           ringpolicyd shards (default 0: one per CPU)
  --log-level N        log_level in the config (default 0)
  --only LIST          comma list of ours,perl (default both)
  --cache-per-mail     ringpolicyd's SqlUserConfig gets cache_per_mail = 1 (one query per
                       mail instead of 2.05's one per request; Perl's file is unchanged)
  --quick              --duration 3 --warmup 1 --repeats 1
  --out FILE           also write the report there
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --log-level) LOG_LEVEL=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --cache-per-mail) CACHE_PER_MAIL=1; shift ;;
    --quick) DURATION=3; WARMUP=1; REPEATS=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$WARMUP" "$REPEATS" "$SHARDS" "$LOG_LEVEL" ${THREADS:+"$THREADS"} $CONNS; do
    case "$n" in '' | *[!0-9]*) echo "bench.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
[ "$DURATION" -gt 0 ] && [ "$REPEATS" -gt 0 ] || { echo "bench.sh: --duration and --repeats must be > 0" >&2; exit 2; }

. "$ROOT/bench/common/bench_lib.sh"
find_programs "$BUILD"
make_run_dir ringpolicyd-realistic || exit 2
trap cleanup EXIT
trap 'exit 130' INT TERM

wants() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------------------------------------
# The backends: PostgreSQL (role and database policyd, the tables, pg_stat_statements) and
# memcached.
start_postgres "$RUN/pg" || exit 2
{ pg_sql postgres "CREATE ROLE policyd LOGIN PASSWORD 'policyd'" &&
    pg_sql postgres "CREATE DATABASE policyd OWNER policyd"; } ||
    { echo "bench.sh: creating role and database policyd failed" >&2; exit 2; }
if pg_sql postgres "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>"$RUN/pgss.err"; then
    PGSS=1
else
    PGSS=0
    note "pg_stat_statements is not available ($(head -1 "$RUN/pgss.err")): statements per 1000 requests not measured"
fi
pg_sql policyd "SET ROLE policyd; $(cat "$ROOT/bench/realistic/tables.sql")" >/dev/null ||
    { echo "bench.sh: creating the tables failed" >&2; exit 2; }
PG_PID=$(head -1 "$PG_DATA/postmaster.pid")
start_memcached "$RUN/memcached.log" || exit 2

# statements KIND: what role policyd ran since the last reset, most frequent first, into the run
# directory (the statements behind the per-1000 numbers).
statements() {
    [ "$PGSS" = 1 ] || return 0
    pg_sql postgres "SELECT s.calls, regexp_replace(left(s.query, 160), '\s+', ' ', 'g') FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'policyd' ORDER BY s.calls DESC LIMIT 20" >"$RUN/$1.statements" 2>&1
}

# Empties what a previous server left: the accounting tables, memcached (sessions) and the
# statement statistics.
reset_backends() {
    pg_sql policyd "TRUNCATE acct_client_address, acct_sender" >/dev/null
    [ "$PGSS" = 1 ] && pg_sql postgres "SELECT pg_stat_statements_reset()" >/dev/null
    python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall(b"flush_all\r\n"); s.recv(100)' "$MEMCACHED_PORT"
}

# sample_counters FILE DAEMON_PID: the backends' counters as NAME VALUE lines: memcached stats
# (mc_*), PostgreSQL transactions, sessions and statements (pg_*), CPU seconds of the daemon,
# PostgreSQL and memcached (cpu_*). The three readers run at once, without python: on a busy
# machine each start-up takes long enough to move a sample out of its window.
PGQ="SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'policyd'),
            (SELECT sessions FROM pg_stat_database WHERE datname = 'policyd')"
sample_counters() {
    local out=$1 daemon=$2 pgq=$PGQ
    [ "$PGSS" = 1 ] && pgq+=", (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'policyd')"
    memcached_stat "$MEMCACHED_PORT" | sed 's/^/mc_/' >"$out.mc" &
    local mc=$!
    pg_sql postgres "$pgq" | awk -F'|' '{ print "pg_xacts", $1; print "pg_sessions", $2; if (NF > 2) print "pg_calls", $3 }' >"$out.pg" &
    local pg=$!
    {
        echo "cpu_daemon $(server_cpu_s "$daemon")"
        echo "cpu_pg $(server_cpu_s "$PG_PID")"
        echo "cpu_mc $(server_cpu_s "$MEMCACHED_PID")"
    } >"$out"
    wait "$mc" "$pg"
    cat "$out.mc" "$out.pg" >>"$out"
    rm -f "$out.mc" "$out.pg"
}

# ---------------------------------------------------------------------------------------------
# Servers.
# The chain of bench/run/chain.conf: the plugins inside its <VirtualHost>.
CHAIN=$RUN/chain.plugins
sed -n '/^<VirtualHost/,/^<\/VirtualHost>/p' "$ROOT/bench/run/chain.conf" | sed '1d;$d' | grep -v '^ *name *=' >"$CHAIN"

render() {
    local dst=$1 port=$2 conns=$3 kind=$4 ucache=""
    [ "$kind" = ours ] && [ "$CACHE_PER_MAIL" = 1 ] && ucache='cache_per_mail = 1'
    sed -e "s/@UC_CACHE@/$ucache/" -e "s/@PORT@/$port/g" -e "s/@LOG_LEVEL@/$LOG_LEVEL/" \
        -e "s/@MIN_SERVERS@/$((conns + 2))/" -e "s/@MIN_SPARE@/2/" \
        -e "s/@MAX_SPARE@/$((conns + 4))/" \
        -e "s/@MAX_SERVERS@/$((conns + 8))/" -e "s/@SHARDS@/$SHARDS/" \
        -e "s/@MAX_CONNECTIONS@/4096/" -e "s/@PG_PORT@/$PG_PORT/" -e "s/@MC_PORT@/$MEMCACHED_PORT/" \
        -e "/@CHAIN@/{r $CHAIN" -e "d}" "$ROOT/bench/realistic/realistic.conf" >"$dst"
}

# start_server KIND CONNS: sets SERVER_PID and SERVER_PORT, or returns 1.
start_server() {
    local kind=$1 conns=$2 prog=$OURS
    local log=$RUN/$kind.c$conns.log conf=$RUN/$kind.c$conns.conf
    [ "$kind" = perl ] && prog=$PERL
    SERVER_PORT=$(free_port)
    render "$conf" "$SERVER_PORT" "$conns" "$kind"
    "${NEWPGRP[@]}" "$prog" -f -c "$conf" >"$log" 2>&1 </dev/null &
    SERVER_PID=$!
    GROUPS_STARTED+=("$SERVER_PID")
    if ! wait_ready "$SERVER_PORT" "$SERVER_PID" 30; then
        skip "$kind c=$conns: did not answer on 127.0.0.1:$SERVER_PORT within 30 s (log: $log)"
        tail -5 "$log" >&2
        stop_group "$SERVER_PID"
        return 1
    fi
    if [ "$kind" = perl ]; then
        wait_perl_pool "$SERVER_PID" $((conns + 2)) "perl c=$conns"
    fi
    return 0
}

sample_server() { sample_counters "$1" "$SERVER_PID"; }

# run_point KIND CONNS: the repeats of one measurement, the counters sampled after the warm-up
# and at the end of the measured window.
run_point() {
    local kind=$1 conns=$2 rep
    for rep in $(seq "$REPEATS"); do
        local base=$RUN/results/$kind.$conns.$rep
        load_window "$base" sample_server --server "127.0.0.1:$SERVER_PORT" \
            --connections "$conns" --label "$kind c=$conns rep=$rep" ${THREADS:+--threads "$THREADS"}
        echo "  $kind c=$conns rep $rep: $(load_line "$base.json")" >&2
    done
}

bench_ours() {
    reset_backends
    start_server ours 0 || return
    local conns
    for conns in $CONNS; do run_point ours "$conns"; done
    stop_group "$SERVER_PID"
    statements ours
}

# Perl: one worker per connection, restarted with a pool sized to each connection count.
bench_perl() {
    local conns
    reset_backends
    for conns in $CONNS; do
        start_server perl "$conns" || continue
        run_point perl "$conns"
        stop_group "$SERVER_PID"
    done
    statements perl
}

# ---------------------------------------------------------------------------------------------
# The setup, printed with the results.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
{
    echo "# ringpolicyd realistic benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    setup_lines "$ROOT" "$BUILD"
    echo "- config: bench/realistic/realistic.conf, the same file for both daemons: sessions in memcached, bench/run/chain.conf's 9 plugins, SqlUserConfig + Quota + Accounting (client_address, sender) on PostgreSQL$([ "$CACHE_PER_MAIL" = 1 ] && echo "; ringpolicyd's SqlUserConfig with cache_per_mail = 1 (--cache-per-mail)")"
    echo "- backends: $("$PG_BIN/postgres" --version) on 127.0.0.1:$PG_PORT (fsync off, synchronous_commit off; pg_stat_statements $([ "$PGSS" = 1 ] && echo on || echo off)), memcached $(memcached -V 2>/dev/null | awk '{print $2}') on 127.0.0.1:$MEMCACHED_PORT (2 threads); both on this machine, their CPU shown apart"
    echo "- load: ringpolicyd-load, closed loop, generated Postfix 3.7 mails (1-5 recipients: RCPT each, then END-OF-MESSAGE, one instance per mail), threads ${THREADS:-one per CPU}; $DURATION s measured after $WARMUP s warm-up, $REPEATS repeat(s) per point, medians shown"
    echo "- ringpolicyd: shards=$SHARDS (0 = one per CPU), log_level=$LOG_LEVEL, Accounting flush_interval at its default"
    echo "- Perl mtpolicyd $(perl -MMail::MtPolicyd -e 'print $Mail::MtPolicyd::VERSION' 2>/dev/null || echo '?'): restarted for each connection count N with min_servers=N+2, max_spare_servers=N+4, max_servers=N+8, one worker per connection, all forked before measuring"
    echo "- command: $0 ${ARGS[*]}"
    echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$REPORT"
cat "$REPORT" >&2

if wants ours; then
    if [ -x "$OURS" ]; then echo "ringpolicyd ..." >&2; bench_ours; else skip "ours: $OURS is not built"; fi
fi
if wants perl; then
    if [ -x "$PERL" ]; then echo "Perl mtpolicyd ..." >&2; bench_perl; else skip "perl: $PERL is not installed"; fi
fi

# ---------------------------------------------------------------------------------------------
# The report.
python3 - "$RUN" "$CONNS" >>"$REPORT" <<'PY'
import glob, json, os, statistics, sys

run, conns = sys.argv[1], [int(c) for c in sys.argv[2].split()]
MC_OPS = ["cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses", "incr_hits",
          "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_misses", "cas_badval"]
def counters(path):
    c = {}
    for line in open(path):
        k, _, v = line.strip().partition(" ")
        try:
            c[k] = float(v)
        except ValueError:
            pass
    return c

points = {}
for path in glob.glob(os.path.join(run, "results", "*.json")):
    kind, c, _rep, _ = os.path.basename(path).rsplit(".", 3)
    base = path[:-len(".json")]
    try:
        d = json.load(open(path))
        a, b = counters(base + ".before"), counters(base + ".after")
    except (OSError, ValueError):
        continue
    n = d["requests"]
    if not n:
        continue
    delta = lambda k: b[k] - a[k] if k in a and k in b else None
    per_k = lambda v: v * 1000.0 / n if v is not None else None
    d["mc_ops"] = per_k(sum(delta("mc_" + k) or 0 for k in MC_OPS))
    # The later sample's own connection is in the delta.
    conn = delta("mc_total_connections")
    d["mc_conns"] = conn - 1 if conn is not None else None
    d["pg_calls"] = per_k(delta("pg_calls"))
    d["pg_xacts"] = per_k(delta("pg_xacts"))
    d["pg_sessions"] = delta("pg_sessions")
    d["cpu_daemon"] = per_k(delta("cpu_daemon") * 1000.0) if delta("cpu_daemon") is not None else None
    d["cpu_backends"] = (per_k((delta("cpu_pg") + delta("cpu_mc")) * 1000.0)
                         if delta("cpu_pg") is not None and delta("cpu_mc") is not None else None)
    points.setdefault((kind, int(c)), []).append(d)

def med(kind, c, get):
    v = [get(d) for d in points.get((kind, c), [])]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None

def fmt(v, spec="%.0f"):
    return spec % v if v is not None else "-"

key = lambda k: (lambda d: d[k])
lat = lambda k: (lambda d: d["latency_us"][k])
print("## Throughput, latency and round trips (medians)\n")
print("| server | conns | rps | p50 us | p99 us | errors | rps vs Perl | p99 vs Perl | daemon CPU us/req | PG+memcached CPU us/req | PG statements /1000 req | PG transactions /1000 req | PG sessions opened | memcached ops /1000 req | memcached connections opened |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for kind in ["ours", "perl"]:
    for c in conns:
        if (kind, c) not in points:
            continue
        r = med(kind, c, key("rps"))
        p99 = med(kind, c, lat("p99"))
        vs = p99vs = ""
        if kind == "ours" and ("perl", c) in points:
            pr, pp = med("perl", c, key("rps")), med("perl", c, lat("p99"))
            vs = "%.1fx" % (r / pr) if pr else "-"
            p99vs = "%.1fx lower" % (pp / p99) if p99 else "-"
        errors = sum(d["errors"] for d in points[(kind, c)])
        print(f"| {kind} | {c} | {r:.0f} | {fmt(med(kind, c, lat('p50')))} | {fmt(p99)} | {errors} | "
              f"{vs} | {p99vs} | {fmt(med(kind, c, key('cpu_daemon')), '%.1f')} | "
              f"{fmt(med(kind, c, key('cpu_backends')), '%.1f')} | {fmt(med(kind, c, key('pg_calls')), '%.1f')} | "
              f"{fmt(med(kind, c, key('pg_xacts')), '%.1f')} | {fmt(med(kind, c, key('pg_sessions')))} | "
              f"{fmt(med(kind, c, key('mc_ops')), '%.1f')} | {fmt(med(kind, c, key('mc_conns')))} |")

print("\nActions answered (all runs of a server, share of replies):\n")
for kind in ["ours", "perl"]:
    totals = {}
    for (k, _c), runs in points.items():
        if k == kind:
            for d in runs:
                for a, n in d["actions"].items():
                    totals[a] = totals.get(a, 0) + n
    if totals:
        all_ = sum(totals.values())
        print(f"- {kind}: " + ", ".join(f"{a} {100.0 * n / all_:.1f}%" for a, n in
                                        sorted(totals.items(), key=lambda x: -x[1])))
print("""
Round trips are counted by the servers over each run's measured window and divided by the
replies in it: PostgreSQL statements from pg_stat_statements (calls of role policyd; a
multi-row upsert is one), transactions from pg_stat_database (its counters are flushed by each
backend at most once a second, so short windows are approximate), memcached operations from its
stats (gets count keys). "opened" columns are totals in the window, not per 1000 requests.""")
PY

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
note "load average at the end: $LOAD_END on $(nproc) CPUs (other work on the box skews absolute numbers; compare the ratios)"
report_tail

cat "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT"
exit 0
