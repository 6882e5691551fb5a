# bench/common/bench_lib.sh: shell functions the benchmark scripts share (bench/run/bench.sh,
# bench/realistic/bench.sh), sourced after the script has set RUN (its run directory, with the
# files skipped and notes) and, for wait_ready, CLIENT (ringpolicyd-client).
#
# Every process started here is recorded (STARTED: single pids, GROUPS_STARTED: process-group
# leaders) and stopped by its pid or group id only, by cleanup (the scripts trap EXIT with it).
# Servers listen on 127.0.0.1 only, on ports picked free at run time.
#
# Provides: find_programs, make_run_dir, wait_perl_pool, load_line, forget, stop_pid, NEWPGRP, stop_group, cleanup, skip, note, free_port, wait_ready,
# server_cpu_s, sleep_until, load_window (one load run with samples around its measured
# window), setup_lines and report_tail (the report's common head and tail lines), rss_kb,
# start_memcached and memcached_stat (memcached for a session cache), and for PostgreSQL:
# start_postgres, pg_sql (psql as the superuser).

# Processes we start, and stopping them (by pid only).
# find_programs BUILD: the programs under the meson build directory BUILD (LOAD, CLIENT, BARE,
# OURS) and the Perl daemon (PERL); exits the script (2) when the load generator or the client is
# not built, or python3 is missing.
find_programs() {
    LOAD=$1/bench/load/ringpolicyd-load
    CLIENT=$1/policy/client/ringpolicyd-client
    BARE=$1/bench/responder/ringpolicyd-bare
    OURS=$1/policy/ringpolicyd
    PERL=/usr/bin/mtpolicyd
    local tool
    for tool in "$LOAD" "$CLIENT"; do
        if [ ! -x "$tool" ]; then
            echo "bench.sh: $tool is not built: ninja -C $1 bench/load/ringpolicyd-load policy/client/ringpolicyd-client" >&2
            exit 2
        fi
    done
    command -v python3 >/dev/null || { echo "bench.sh: python3 is needed" >&2; exit 2; }
}

# make_run_dir PREFIX: the run directory /tmp/PREFIX.XXXXXX (RUN, readable by the postgres user
# and by nobody for memcached) with results/, the report's path (REPORT) and empty skipped and
# notes files.
make_run_dir() {
    RUN=$(mktemp -d "/tmp/$1.XXXXXX") || return 1
    chmod 755 "$RUN"
    mkdir -p "$RUN/results"
    REPORT=$RUN/report.md
    : >"$RUN/skipped"
    : >"$RUN/notes"
}

# wait_perl_pool PID WANT NAME: the Perl mtpolicyd serves one connection per worker; waits until
# WANT workers of master PID are forked (at most 2 minutes), notes it when they were not.
wait_perl_pool() {
    local pid=$1 want=$2 name=$3 have=0
    for _ in $(seq 1200); do
        have=$(pgrep -c -P "$pid" || true)
        [ "$have" -ge "$want" ] && break
        sleep 0.1
    done
    [ "$have" -ge "$want" ] || note "$name: only $have of $want Perl workers forked"
}

# load_line JSON: "N rps, p99 N us, errors N" from a ringpolicyd-load --json result.
load_line() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.0f rps, p99 %d us, errors %d" % (d["rps"], d["latency_us"]["p99"], d["errors"]))' "$1" 2>/dev/null || echo 'no result'
}

STARTED=()
# forget ARRAY PID: drops a stopped pid from the list cleanup works through (a pid number may be
# reused by an unrelated process later).
forget() {
    local -n list=$1
    local keep=() p
    for p in "${list[@]}"; do [ "$p" = "$2" ] || keep+=("$p"); done
    list=("${keep[@]}")
}
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; forget STARTED "$pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    forget STARTED "$pid"
    return 0
}
# Each server leads its own process group (but stays in this script's session): stopping the
# group also stops the Perl workers, which are left running (and spinning) if only their master
# dies. Not setsid: with the scheduler's autogroup, a new session gets its own share of the CPUs
# on a busy machine, and the Perl pool then queues for one share while the load generator has
# another (measured: 590 instead of 2360 rps at 16 connections). In one session, server and load
# generator share the CPU as on a machine of their own.
NEWPGRP=(python3 -c 'import os, sys; os.setpgid(0, 0); os.execvp(sys.argv[1], sys.argv[1:])')
GROUPS_STARTED=()
stop_group() {
    local pgid=$1
    kill -TERM -- "-$pgid" 2>/dev/null
    for _ in $(seq 100); do
        pgrep -g "$pgid" >/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null
    wait "$pgid" 2>/dev/null
    forget GROUPS_STARTED "$pgid"
    return 0
}
cleanup() {
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    for pgid in "${GROUPS_STARTED[@]}"; do stop_group "$pgid"; done
    declare -F stop_postgres >/dev/null && stop_postgres
    return 0
}

skip() { echo "skipped: $*" | tee -a "$RUN/skipped" >&2; }
note() { echo "$*" >>"$RUN/notes"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until the server on port answers a request (and its process still lives).
wait_ready() {
    local port=$1 pid=$2 timeout_s=$3
    for _ in $(seq $((timeout_s * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        if printf 'client_address=192.0.2.1\n\n' |
            "$CLIENT" -t 2 -h "127.0.0.1:$port" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# CPU seconds used so far by a server: the process (all its threads), its children (Perl's
# workers) and any helper pids given after it (Perl's memcached), from /proc/PID/stat.
CLK_TCK=$(getconf CLK_TCK)
server_cpu_s() {
    local files=() pid
    for pid in "$@" $(pgrep -P "$1"); do files+=("/proc/$pid/stat"); done
    # One awk for every process: on a busy machine a fork per process took seconds and moved
    # the samples out of the window. A process that exited meanwhile is skipped (counts 0).
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%.2f", t / hz }' \
        "${files[@]}" 2>/dev/null
}

# sleep_until EPOCH: sleeps until that time (seconds since 1970, fractions allowed).
sleep_until() {
    local left
    left=$(awk -v t="$1" -v n="$(date +%s.%N)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$left"
}

# load_window BASE SAMPLER LOAD_ARGS...: one run of ringpolicyd-load (LOAD) with LOAD_ARGS plus
# --duration DURATION --warmup WARMUP --json, its result in BASE.json; calls SAMPLER BASE.before
# when the warm-up is over and SAMPLER BASE.after at the end of the measured window (so that
# counters sampled there cover exactly the measured requests), then waits for the load.
load_window() {
    local base=$1 sampler=$2 load_pid t0
    shift 2
    "$LOAD" "$@" --duration "$DURATION" --warmup "$WARMUP" --json >"$base.json" 2>>"$RUN/load.stderr" &
    load_pid=$!
    STARTED+=("$load_pid")
    t0=$(date +%s.%N)
    sleep_until "$(awk -v t="$t0" -v w="$WARMUP" 'BEGIN { printf "%.3f", t + w }')"
    "$sampler" "$base.before"
    sleep_until "$(awk -v t="$t0" -v w="$WARMUP" -v d="$DURATION" 'BEGIN { printf "%.3f", t + w + d }')"
    "$sampler" "$base.after"
    wait "$load_pid"
    forget STARTED "$load_pid"
}

# setup_lines ROOT BUILD: the report's "- git:" and "- machine:" lines.
setup_lines() {
    local sha dirty cpu
    sha=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null | head -1)
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    echo "- git: $sha${dirty:+ (working tree has uncommitted changes)}; build dir: $2"
    echo "- machine: kernel $(uname -r), CPU \"$cpu\" x $(nproc), $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, ulimit -n $(ulimit -n)"
}

# report_tail: the notes, what was skipped and where the raw results are, appended to REPORT.
report_tail() {
    {
        if [ -s "$RUN/notes" ]; then echo; echo "Notes:"; sed 's/^/- /' "$RUN/notes"; fi
        if [ -s "$RUN/skipped" ]; then echo; cat "$RUN/skipped"; fi
        echo
        echo "Raw results, configs and logs: $RUN"
    } >>"$REPORT"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# start_memcached LOG: a memcached on a free loopback port, its own process group; sets
# MEMCACHED_PORT and MEMCACHED_PID. Returns 1 (with a message) when memcached is not installed.
start_memcached() {
    if ! command -v memcached >/dev/null; then
        echo "bench: memcached is needed (apt-get install memcached)" >&2
        return 1
    fi
    MEMCACHED_PORT=$(free_port)
    "${NEWPGRP[@]}" memcached -u nobody -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 256 -c 4096 -t 2 \
        >"$1" 2>&1 </dev/null &
    MEMCACHED_PID=$!
    GROUPS_STARTED+=("$MEMCACHED_PID")
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$MEMCACHED_PORT") 2>/dev/null && break
        sleep 0.1
    done
}

# memcached_stat PORT: memcached's "stats" as NAME VALUE lines, from the server on
# 127.0.0.1:PORT over a connection of its own (which adds 1 to total_connections). Pure bash, no
# fork: on a busy machine a python start-up took seconds.
memcached_stat() {
    local fd tag name value
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'stats\r\n' >&"$fd"
    while IFS=' ' read -r -t 10 -u "$fd" tag name value; do
        value=${value%$'\r'}
        case "$tag" in
        STAT) echo "$name $value" ;;
        *) break ;;
        esac
    done
    exec {fd}>&-
}

# start_postgres DIR: a throwaway PostgreSQL cluster (initdb in DIR, trust authentication,
# fsync off, pg_stat_statements loaded) on a free loopback port, as the postgres user when run
# as root (tests/unit/sql/pg_server.h does the same in C++). Sets PG_PORT, PG_BIN, PG_DATA,
# PG_AS; stop_postgres stops it (cleanup does too). Returns 1 when the server binaries are
# missing or it does not start.
PG_DATA=""
start_postgres() {
    local dir=$1
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        echo "bench: the PostgreSQL server binaries are needed (apt-get install postgresql)" >&2
        return 1
    fi
    PG_AS=()
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        PG_AS=(runuser -u postgres --)
        chown postgres:postgres "$dir"
    fi
    chmod 755 "$dir"
    PG_DATA=$dir/data
    PG_PORT=$(free_port)
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        --no-sync >"$dir/initdb.log" 2>&1 || { echo "bench: initdb failed, see $dir/initdb.log" >&2; PG_DATA=""; return 1; }
    local preload=""
    [ -e "$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "$PG_BIN/../lib")/pg_stat_statements.so" ] &&
        preload="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/log" -w -o \
        "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=600 $preload" \
        start >/dev/null 2>&1 || { echo "bench: PostgreSQL did not start, see $dir/log" >&2; PG_DATA=""; return 1; }
}
stop_postgres() {
    [ -n "$PG_DATA" ] || return 0
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
    PG_DATA=""
}
# pg_sql DB SQL: runs SQL as the superuser on database DB (over TCP, trust authentication);
# unaligned, tuples only.
pg_sql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2"
}
