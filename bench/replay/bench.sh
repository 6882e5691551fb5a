#!/usr/bin/env bash
# bench/replay/bench.sh: ringpolicyd-replay's numbers, in one run, as Markdown with the exact
# commands (bench/replay/RESULTS.md is made from its output).
#
#   ceiling  ringpolicyd-load and ringpolicyd-replay, alternately, against ringpolicyd-bare
#            (action=dunno): the replay's own ceiling and its ratio to the load generator's
#            (the quality bar: >= 0.9), medians of --repeats runs, with the client CPU.
#   perl     the Perl mtpolicyd 2.05 with bench/run/chain.conf (the realistic 9-plugin chain):
#            the kdent log (inbound MX, all stages) and the louisitvn log (SASL submission,
#            RCPT and END-OF-MESSAGE), closed loop bounded by --perl-requests, then open loop at
#            half the closed-loop throughput.
#   ours     ringpolicyd with the same chain.conf: both logs multiplied to >= 1M requests,
#            closed loop, then open loop at half the closed-loop throughput (the targets:
#            >= 50,000 requests/s, and p99 <= 2 ms in the open loop).
# A part whose program is missing prints "skipped: ..." and the rest runs. Servers listen on
# free 127.0.0.1 ports, run in their own process groups and are stopped (by group) at exit.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
LOGS=$ROOT/../shared/data/maillogs; [ -d "$LOGS" ] || LOGS=/work/shared/data/maillogs
REPEATS=5
DURATION=5
CONNS="16 64"
THREADS=2
PERL_REQUESTS=20000
ONLY="ceiling,perl,ours"

usage() {
    cat <<EOF
usage: bench/replay/bench.sh [options]
  --build DIR            meson build directory (default $ROOT/build)
  --logs DIR             the shared maillogs (default $LOGS)
  --repeats N            runs per ceiling point, medians reported (default $REPEATS)
  --duration S           seconds per closed-loop run (default $DURATION)
  --connections LIST     ceiling connection counts (default "$CONNS")
  --threads N            client threads of both tools (default $THREADS)
  --perl-requests N      bound of each run against the Perl mtpolicyd (default $PERL_REQUESTS)
  --only LIST            comma list of ceiling,perl,ours (default all)
  --quick                --repeats 1 --duration 2 --perl-requests 3000
EOF
}
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --logs) LOGS=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --perl-requests) PERL_REQUESTS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --quick) REPEATS=1; DURATION=2; PERL_REQUESTS=3000; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

REPLAY=$BUILD/bench/replay/ringpolicyd-replay
LOAD=$BUILD/bench/load/ringpolicyd-load
BARE=$BUILD/bench/responder/ringpolicyd-bare
OURS=$BUILD/policy/ringpolicyd
PERL=/usr/bin/mtpolicyd
CHAIN=$ROOT/bench/run/chain.conf
KDENT=$LOGS/kdent-postfix_log_analysis/mail.log
LOUIS=$LOGS/louisitvn-pflgviewer/mail.log
for f in "$REPLAY" "$KDENT" "$LOUIS"; do
    [ -e "$f" ] || { echo "bench.sh: $f is missing" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "bench.sh: python3 is needed" >&2; exit 2; }
RUN=$(mktemp -d /tmp/ringpolicyd-replay-bench.XXXXXX) || exit 2
chmod 755 "$RUN"

PGIDS=()
cleanup() {
    local g
    for g in "${PGIDS[@]}"; do
        kill -TERM -- "-$g" 2>/dev/null
        for _ in $(seq 50); do pgrep -g "$g" >/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$g" 2>/dev/null
        wait "$g" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wants() { case ",$ONLY," in *,"$1",*) return 0 ;; *) return 1 ;; esac; }
skipped() { echo "skipped: $*"; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# serve NAME PORT CMD...: starts a server in its own process group; returns 1 unless its port
# accepts within 30 s.
serve() {
    local name=$1 port=$2
    shift 2
    setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    local pid=$!
    PGIDS+=("$pid")
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
stop_last() {
    local g=${PGIDS[-1]}
    kill -TERM -- "-$g" 2>/dev/null
    for _ in $(seq 100); do pgrep -g "$g" >/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null
    wait "$g" 2>/dev/null
    unset 'PGIDS[-1]'
}

# chain_conf PORT CONNS DST: bench/run/chain.conf filled in (no per-request logging).
chain_conf() {
    sed -e "s/@PORT@/$1/g" -e "s/@LOG_LEVEL@/0/" -e "s/@MIN_SERVERS@/$(($2 + 2))/" \
        -e "s/@MIN_SPARE@/2/" -e "s/@MAX_SPARE@/4/" -e "s/@MAX_SERVERS@/$(($2 + 8))/" \
        -e "s/@SHARDS@/0/" -e "s/@MAX_CONNECTIONS@/4096/" -e "/@SESSION_CACHE@/d" "$CHAIN" >"$3"
}

# field FILE EXPR: a value from a JSON result, e.g. field r.json 'd["latency_us"]["p99"]'
field() {
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# replay NAME ARGS...: runs the replay with --json into $RUN/NAME.json; echoes the command.
replay() {
    local name=$1
    shift
    "$REPLAY" --json --no-progress "$@" >"$RUN/$name.json" 2>"$RUN/$name.err"
    echo "ringpolicyd-replay $*" | sed -e "s|$LOGS/||g" -e 's/127\.0\.0\.1:[0-9]*/127.0.0.1:PORT/g' \
        >"$RUN/$name.cmd"
}

echo "# ringpolicyd-replay benchmark"
echo
echo "git $(git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null), kernel $(uname -r)," \
    "$(nproc) CPUs \"$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')\", load average" \
    "$(cut -d' ' -f1-3 /proc/loadavg) at the start; raw results in $RUN"

# ---------------------------------------------------------------------------------------------
if wants ceiling; then
    echo
    echo "## Ceiling: against ringpolicyd-bare (action=dunno), replay vs ringpolicyd-load"
    echo
    if [ ! -x "$BARE" ] || [ ! -x "$LOAD" ]; then
        skipped "ringpolicyd-bare or ringpolicyd-load is not built"
    else
        port=$(free_port)
        if serve bare "$port" "$BARE" --listen "127.0.0.1:$port"; then
            echo "| connections | load req/s | replay req/s | replay / load | load p99 us | replay p99 us | replay CPU us/req |"
            echo "|---|---|---|---|---|---|---|"
            for c in $CONNS; do
                lr=""; rr=""; lp=""; rp=""; cpu=""
                for i in $(seq "$REPEATS"); do
                    "$LOAD" --server "127.0.0.1:$port" --connections "$c" --threads "$THREADS" \
                        --duration "$DURATION" --warmup 1 --json >"$RUN/load-$c-$i.json" 2>/dev/null
                    replay "ceil-$c-$i" --server "127.0.0.1:$port" --connections "$c" \
                        --threads "$THREADS" --stages all --multiply 300 --duration "$DURATION" "$KDENT"
                    lr+=" $(field "$RUN/load-$c-$i.json" 'd["rps"]')"
                    lp+=" $(field "$RUN/load-$c-$i.json" 'd["latency_us"]["p99"]')"
                    rr+=" $(field "$RUN/ceil-$c-$i.json" 'd["rps"]')"
                    rp+=" $(field "$RUN/ceil-$c-$i.json" 'd["latency_us"]["p99"]')"
                    cpu+=" $(field "$RUN/ceil-$c-$i.json" 'round(1e6*d["setup"]["client_cpu_s"]/max(d["completed"],1),2)')"
                done
                ml=$(echo "$lr" | median); mr=$(echo "$rr" | median)
                echo "| $c | $ml | $mr | $(python3 -c "print(round($mr/$ml,3))") | $(echo "$lp" | median) | $(echo "$rp" | median) | $(echo "$cpu" | median) |"
                echo "$c: load$lr; replay$rr" >>"$RUN/ceiling-runs.txt"
            done
            echo
            echo "Medians of $REPEATS alternating runs of $DURATION s each; every run (req/s):"
            sed 's/^/- /' "$RUN/ceiling-runs.txt"
            echo
            echo "Commands: \`ringpolicyd-bare --listen 127.0.0.1:PORT\`;" \
                "\`ringpolicyd-load --server 127.0.0.1:PORT --connections C --threads $THREADS --duration $DURATION --warmup 1 --json\`;" \
                "\`$(cat "$RUN/ceil-${CONNS%% *}-1.cmd")\`."
            stop_last
        else
            skipped "ringpolicyd-bare did not start (see $RUN/bare.log)"
        fi
    fi
fi

# server_part WHO PORT BOUND_KDENT BOUND_LOUIS MULTIPLY_KDENT MULTIPLY_LOUIS: for both logs, a
# closed loop, then an open loop at half the closed loop's rate (pauses over 60 s cut).
server_part() {
    local who=$1 port=$2 bound_k=$3 bound_l=$4 mult_k=$5 mult_l=$6 open_conns=$7
    echo "| log | mode | requests | req/s | p50 us | p90 us | p99 us | p99.9 us | max us | errors | client timer lag p50/p99 us | actions |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    local log stages mult bound name rate file
    for log in kdent louis; do
        if [ $log = kdent ]; then
            stages=all; mult=$mult_k; bound=$bound_k; file=$KDENT
        else
            stages=RCPT,END-OF-MESSAGE; mult=$mult_l; bound=$bound_l; file=$LOUIS
        fi
        name=$who-$log-closed
        replay "$name" --server "127.0.0.1:$port" --connections 16 --threads "$THREADS" \
            --stages "$stages" --multiply "$mult" ${bound:+--requests "$bound"} --year 2015 "$file"
        row "$log" closed "$name"
        rate=$(field "$RUN/$name.json" 'int(d["rps"]/2)')
        name=$who-$log-open
        replay "$name" --server "127.0.0.1:$port" --connections "$open_conns" \
            --threads "$THREADS" --stages "$stages" --multiply "$mult" \
            ${bound:+--requests "$bound"} --year 2015 --rate "$rate" --max-gap 60 "$file"
        row "$log" "open at $rate/s" "$name"
    done
    echo
    echo "Commands:"
    for f in "$RUN/$who"-*.cmd; do echo "- \`$(cat "$f")\`"; done
}
row() {
    local j=$RUN/$3.json
    echo "| $1 | $2 | $(field "$j" 'd["completed"]') | $(field "$j" 'd["rps"]') |" \
        "$(field "$j" 'd["latency_us"]["p50"]') | $(field "$j" 'd["latency_us"]["p90"]') |" \
        "$(field "$j" 'd["latency_us"]["p99"]') | $(field "$j" 'd["latency_us"]["p999"]') |" \
        "$(field "$j" 'd["latency_us"]["max"]') | $(field "$j" 'd["errors"]') |" \
        "$(field "$j" '"%d / %d" % (d["timer_lag_us"]["p50"], d["timer_lag_us"]["p99"]) if d["setup"]["mode"] == "open" else "-"') |" \
        "$(field "$j" '", ".join("%s %d" % kv for kv in d["actions"].items())') |"
}

# chain_section WHO TITLE BIN [SERVER_PART ARGS...]: starts BIN -f -c chain.conf and runs
# server_part against it, or says why not.
chain_section() {
    local who=$1 title=$2 bin=$3
    shift 3
    echo
    echo "## $title"
    echo
    if [ ! -x "$bin" ]; then
        skipped "$bin is not built or not installed"
        return
    fi
    local port
    port=$(free_port)
    chain_conf "$port" 64 "$RUN/$who.conf"
    if serve "$who" "$port" "$bin" -f -c "$RUN/$who.conf"; then
        server_part "$who" "$port" "$@"
        stop_last
    else
        skipped "$bin did not start (see $RUN/$who.log)"
    fi
}

if wants perl; then
    chain_section perl "The Perl mtpolicyd 2.05, bench/run/chain.conf" "$PERL" \
        "$PERL_REQUESTS" "$PERL_REQUESTS" 1000 1000 16
fi
if wants ours; then
    # kdent: 2056 requests per copy (all stages); louisitvn: 2844 (RCPT, END-OF-MESSAGE).
    chain_section ours "ringpolicyd, bench/run/chain.conf, >= 1M requests per log" "$OURS" \
        "" "" 500 352 64
fi
