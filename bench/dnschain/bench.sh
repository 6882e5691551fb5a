#!/usr/bin/env bash
# bench/dnschain/bench.sh: issue 5's benchmark, in one run.
#
# The Debian package's /etc/mtpolicyd/mtpolicyd.conf (8 RBLs, DBL on 3 names, SPF, GeoIP,
# Greylist, scoring; sessions in memcached, the Greylist autowl in SQLite) served by ringpolicyd
# and by the Perl mtpolicyd 2.05, the same file for both (only the port, the memcached address,
# the SQLite path, the Perl pool size and, for ringpolicyd, dns_servers changed; user/group
# dropped), each driven by ringpolicyd-load (closed loop, generated Postfix 3.7 mails, one RCPT
# and END-OF-MESSAGE each, a session per mail) at 64 connections (--connections), in two modes:
#   - realistic: mails from a pool of 65,536 clients of which 256 send half (the load
#     generator's default skew), so a resolver cache sees the hit rate a relay sees;
#   - miss: every mail from a client never seen before (address, HELO, reverse name, sender
#     domain all new): every DNS lookup misses every cache.
# nsd on a free loopback port stands in for the public lists and the senders' domains
# (dnschain.zones.sh writes the zones: a share of the address space listed on each list by
# wildcards, SPF records for the generated sender domains). The DNS queries per request are
# counted by nsd itself (nsd-control stats over a Unix socket) over each run's measured window.
# Each daemon gets its own memcached and SQLite file; the Perl daemon reaches nsd through
# RES_NAMESERVERS / RES_OPTIONS (Net::DNS, which Mail::SPF uses too), ringpolicyd through
# dns_servers. Everything started is stopped (by pid or process group) at exit.
# Needs: nsd, memcached, geoip-database, the Perl mtpolicyd (libcache-memcached-perl,
# libdbd-sqlite3-perl), a built ringpolicyd, ringpolicyd-load and ringpolicyd-client.
set -uo pipefail

ARGS=("$@")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
DURATION=10
WARMUP=2
REPEATS=3
CONNS="64"
MODES="realistic miss"
SHARDS=0
ONLY="ours,perl"
OUT=""
SHIPPED=/etc/mtpolicyd/mtpolicyd.conf

usage() {
    cat <<USAGE
usage: bench/dnschain/bench.sh [options]
  --build DIR          meson build directory with the programs (default: $ROOT/build)
  --duration S         measured seconds per run (default $DURATION)
  --warmup S           warm-up seconds per run, not counted (default $WARMUP)
  --repeats N          runs per point; the table shows medians (default $REPEATS)
  --connections LIST   connection counts (default "$CONNS")
  --modes LIST         realistic and/or miss (default "$MODES")
  --shards N           ringpolicyd shards (default 0: one per CPU)
  --only LIST          comma list of ours,perl (default both)
  --config FILE        the mtpolicyd.conf to serve (default $SHIPPED)
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
    --modes) MODES=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --config) SHIPPED=$2; shift 2 ;;
    --quick) DURATION=3; WARMUP=1; REPEATS=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$WARMUP" "$REPEATS" "$SHARDS" $CONNS; do
    case "$n" in '' | *[!0-9]*) echo "bench.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
for m in $MODES; do
    case "$m" in realistic | miss) ;; *) echo "bench.sh: unknown mode '$m'" >&2; exit 2 ;; esac
done
[ "$DURATION" -gt 0 ] && [ "$REPEATS" -gt 0 ] || { echo "bench.sh: --duration and --repeats must be > 0" >&2; exit 2; }
[ -r "$SHIPPED" ] || { echo "bench.sh: $SHIPPED is missing (apt-get install mtpolicyd)" >&2; exit 2; }
[ -x /usr/sbin/nsd ] || { echo "bench.sh: nsd is needed (apt-get install nsd)" >&2; exit 2; }
[ -r /usr/share/GeoIP/GeoIP.dat ] || { echo "bench.sh: /usr/share/GeoIP/GeoIP.dat is needed (apt-get install geoip-database)" >&2; exit 2; }

. "$ROOT/bench/common/bench_lib.sh"
find_programs "$BUILD"
make_run_dir ringpolicyd-dnschain || exit 2
trap cleanup EXIT
trap 'exit 130' INT TERM

wants() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------------------------------------
# nsd with the zones, its statistics over a Unix control socket.
NSD_DIR=$RUN/nsd
mkdir -p "$NSD_DIR"
NSD_PORT=$(free_port)
bash "$ROOT/bench/dnschain/zones.sh" "$NSD_DIR" >"$NSD_DIR/zones.conf" ||
    { echo "bench.sh: writing the zones failed" >&2; exit 2; }
cat >"$NSD_DIR/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  do-ip6: no
  username: ""
  chroot: ""
  database: ""
  server-count: 1
  verbosity: 0
  rrl-ratelimit: 0
  zonesdir: "$NSD_DIR"
  zonelistfile: "$NSD_DIR/zone.list"
  xfrdfile: "$NSD_DIR/xfrd.state"
  xfrdir: "$NSD_DIR"
  pidfile: "$NSD_DIR/nsd.pid"
  logfile: "$NSD_DIR/nsd.log"
remote-control:
  control-enable: yes
  control-interface: $NSD_DIR/nsd.ctl
CONF
cat "$NSD_DIR/zones.conf" >>"$NSD_DIR/nsd.conf"
"${NEWPGRP[@]}" /usr/sbin/nsd -d -c "$NSD_DIR/nsd.conf" >"$NSD_DIR/stdout.log" 2>&1 </dev/null &
NSD_PID=$!
GROUPS_STARTED+=("$NSD_PID")
nsd_queries() {
    nsd-control -c "$NSD_DIR/nsd.conf" stats_noreset 2>/dev/null | awk -F= '$1 == "num.queries" { print $2 }'
}
for _ in $(seq 100); do
    [ -n "$(nsd_queries)" ] && break
    sleep 0.1
done
[ -n "$(nsd_queries)" ] || { echo "bench.sh: nsd did not start (see $NSD_DIR/nsd.log)" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# The configuration: the shipped file with the substitutions named in the header.
render() {
    local kind=$1 dst=$2 port=$3 mc_port=$4 conns=$5 dbdir=$6
    mkdir -p "$dbdir"
    {
        [ "$kind" = ours ] && printf 'dns_servers = "127.0.0.1:%s"\nshards = %s\n' "$NSD_PORT" "$SHARDS"
        grep -v -E '^(user|group)[[:space:]]*=' "$SHIPPED" |
            sed -e "s/^port=\"127.0.0.1:12345\"/port=\"127.0.0.1:$port\"/" \
                -e "s/^<VirtualHost 12345>/<VirtualHost $port>/" \
                -e "s/servers = \"127.0.0.1:11211\"/servers = \"127.0.0.1:$mc_port\"/" \
                -e "s|dbname=/var/lib/mtpolicyd/mtpolicyd.sqlite|dbname=$dbdir/mtpolicyd.sqlite|" \
                -e "s/^min_servers=.*/min_servers=$((conns + 2))/" \
                -e "s/^min_spare_servers=.*/min_spare_servers=2/" \
                -e "s/^max_spare_servers=.*/max_spare_servers=$((conns + 4))/" \
                -e "s/^max_servers=.*/max_servers=$((conns + 8))/"
    } >"$dst"
    grep -q "127.0.0.1:$port" "$dst" && grep -q "127.0.0.1:$mc_port" "$dst" ||
        { echo "bench.sh: $SHIPPED does not have the expected port/memcached lines" >&2; return 1; }
}

# wait_answer PORT PID TIMEOUT_S: like bench_lib's wait_ready, with a request the chain can
# answer (DBL fails a request without sender, helo_name and reverse_client_name).
wait_answer() {
    local port=$1 pid=$2 timeout_s=$3
    for _ in $(seq $((timeout_s * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        if printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=ready.mx.example\nsender=ready@mx.example\nrecipient=r@example.com\ninstance=ready.%s\n\n' "$RANDOM" |
            "$CLIENT" -t 5 -h "127.0.0.1:$port" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# start_server KIND CONNS: its memcached, then the daemon; sets SERVER_PID, SERVER_PORT, MC_PID.
start_server() {
    local kind=$1 conns=$2 prog=$OURS
    local log=$RUN/$kind.c$conns.log conf=$RUN/$kind.c$conns.conf
    [ "$kind" = perl ] && prog=$PERL
    start_memcached "$RUN/memcached.$kind.c$conns.log" || return 1
    MC_PID=$MEMCACHED_PID
    SERVER_PORT=$(free_port)
    render "$kind" "$conf" "$SERVER_PORT" "$MEMCACHED_PORT" "$conns" "$RUN/db.$kind.c$conns" || return 1
    if [ "$kind" = perl ]; then
        RES_NAMESERVERS=127.0.0.1 RES_OPTIONS="port:$NSD_PORT" \
            "${NEWPGRP[@]}" "$prog" -f -c "$conf" >"$log" 2>&1 </dev/null &
    else
        "${NEWPGRP[@]}" "$prog" -f -c "$conf" >"$log" 2>&1 </dev/null &
    fi
    SERVER_PID=$!
    GROUPS_STARTED+=("$SERVER_PID")
    if ! wait_answer "$SERVER_PORT" "$SERVER_PID" 60; then
        skip "$kind c=$conns: did not answer on 127.0.0.1:$SERVER_PORT within 60 s (log: $log)"
        tail -5 "$log" >&2
        stop_server
        return 1
    fi
    [ "$kind" = perl ] && wait_perl_pool "$SERVER_PID" $((conns + 2)) "perl c=$conns"
    return 0
}
stop_server() {
    stop_group "$SERVER_PID"
    stop_group "$MC_PID"
}

# sample FILE: nsd's query count and the daemon's CPU seconds.
sample() {
    {
        echo "dns_queries $(nsd_queries)"
        echo "cpu_daemon $(server_cpu_s "$SERVER_PID")"
    } >"$1"
}

# run_point KIND MODE CONNS: the repeats of one measurement.
run_point() {
    local kind=$1 mode=$2 conns=$3 rep gen=()
    [ "$mode" = miss ] && gen=(--fresh-clients)
    for rep in $(seq "$REPEATS"); do
        local base=$RUN/results/$kind.$mode.$conns.$rep
        load_window "$base" sample --server "127.0.0.1:$SERVER_PORT" --connections "$conns" \
            --label "$kind $mode c=$conns rep=$rep" --rcpt-min 1 --rcpt-max 1 --seed "$rep" \
            "${gen[@]}"
        echo "  $kind $mode c=$conns rep $rep: $(load_line "$base.json")" >&2
    done
}

# One daemon per connection count (Perl's pool is sized to it), the modes on it in the order
# given (--modes).
bench_kind() {
    local kind=$1 conns mode
    for conns in $CONNS; do
        start_server "$kind" "$conns" || continue
        for mode in $MODES; do run_point "$kind" "$mode" "$conns"; done
        stop_server
    done
}

# ---------------------------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null
{
    echo "# ringpolicyd DNS chain benchmark (the shipped mtpolicyd.conf), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    setup_lines "$ROOT" "$BUILD"
    echo "- config: $SHIPPED as shipped (log_level $(awk -F= '/^log_level/ {print $2}' "$SHIPPED")), port, memcached, SQLite path and Perl pool substituted; ringpolicyd: dns_servers = nsd, shards=$SHARDS (0 = one per CPU)"
    echo "- DNS: $(/usr/sbin/nsd -v 2>&1 | head -1) on 127.0.0.1:$NSD_PORT, zones by bench/dnschain/zones.sh (positive TTL 300 s, negative 60 s)"
    echo "- load: ringpolicyd-load, closed loop, one RCPT + END-OF-MESSAGE per mail (one session per mail); $DURATION s measured after $WARMUP s warm-up, $REPEATS repeat(s) per point, medians shown; modes: realistic = 65,536 clients, 256 of them send half; miss = a new client every mail"
    echo "- Perl mtpolicyd $(perl -MMail::MtPolicyd -e 'print $Mail::MtPolicyd::VERSION' 2>/dev/null || echo '?'): restarted for each connection count N with min_servers=N+2, max_spare_servers=N+4, max_servers=N+8, all forked before measuring"
    echo "- command: $0 ${ARGS[*]}"
    echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$REPORT"
cat "$REPORT" >&2

if wants ours; then
    if [ -x "$OURS" ]; then echo "ringpolicyd ..." >&2; bench_kind ours; else skip "ours: $OURS is not built"; fi
fi
if wants perl; then
    if [ -x "$PERL" ]; then echo "Perl mtpolicyd ..." >&2; bench_kind perl; else skip "perl: $PERL is not installed"; fi
fi

python3 - "$RUN" "$CONNS" "$MODES" >>"$REPORT" <<'PY'
import glob, json, os, statistics, sys

run, conns, modes = sys.argv[1], [int(c) for c in sys.argv[2].split()], sys.argv[3].split()

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
    kind, mode, c, _rep, _ = os.path.basename(path).rsplit(".", 4)
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
    q = delta("dns_queries")
    d["dns_per_req"] = q / n if q is not None else None
    cpu = delta("cpu_daemon")
    d["cpu_us"] = cpu * 1e6 / n if cpu is not None else None
    points.setdefault((kind, mode, int(c)), []).append(d)

def med(key, get):
    v = [get(d) for d in points.get(key, [])]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None

def fmt(v, spec="%.0f"):
    return spec % v if v is not None else "-"

print("## Throughput, latency and DNS queries (medians)\n")
print("| mode | server | conns | rps | p50 us | p99 us | p99.9 us | errors | rps vs Perl | p99 vs Perl | DNS queries / request | daemon CPU us/req |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for mode in modes:
    for kind in ["ours", "perl"]:
        for c in conns:
            key = (kind, mode, c)
            if key not in points:
                continue
            r = med(key, lambda d: d["rps"])
            p99 = med(key, lambda d: d["latency_us"]["p99"])
            vs = p99vs = ""
            if kind == "ours" and ("perl", mode, c) in points:
                pr = med(("perl", mode, c), lambda d: d["rps"])
                pp = med(("perl", mode, c), lambda d: d["latency_us"]["p99"])
                vs = "%.1fx" % (r / pr) if pr else "-"
                p99vs = "%.1fx lower" % (pp / p99) if p99 else "-"
            errors = sum(d["errors"] for d in points[key])
            print(f"| {mode} | {kind} | {c} | {r:.0f} | {fmt(med(key, lambda d: d['latency_us']['p50']))} | "
                  f"{fmt(p99)} | {fmt(med(key, lambda d: d['latency_us'].get('p999')))} | {errors} | {vs} | {p99vs} | "
                  f"{fmt(med(key, lambda d: d['dns_per_req']), '%.2f')} | {fmt(med(key, lambda d: d['cpu_us']), '%.0f')} |")

print("\nActions answered (all runs, share of replies):\n")
for mode in modes:
    for kind in ["ours", "perl"]:
        totals = {}
        for (k, m, _c), runs in points.items():
            if k == kind and m == mode:
                for d in runs:
                    for a, n in d["actions"].items():
                        totals[a] = totals.get(a, 0) + n
        if totals:
            all_ = sum(totals.values())
            print(f"- {mode}, {kind}: " + ", ".join(f"{a} {100.0 * n / all_:.1f}%" for a, n in
                                                  sorted(totals.items(), key=lambda x: -x[1])[:6]))
print("""
DNS queries are counted by nsd over each run's measured window (nsd-control stats) and divided
by the replies in it; a request is one of a mail's two (RCPT, END-OF-MESSAGE), and both daemons
look a mail's names up once (its session), so the per-mail figure is twice the one shown.""")
PY

note "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the box skews absolute numbers; compare the ratios)"
report_tail

cat "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT"
exit 0
