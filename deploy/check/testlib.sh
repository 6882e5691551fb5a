# shellcheck shell=bash
# testlib.sh: helpers shared by deploy/check's shell tests (sourced, not run).
#
#   testlib_init PREFIX    T = a fresh mode-755 directory /tmp/PREFIX.XXXXXX; at exit, every
#                          pid in PIDS is killed and waited for, testlib_at_exit (if defined) runs,
#                          and T is removed
#   free_port              a free loopback TCP port
#   wait_port PORT [S]     0 once 127.0.0.1:PORT accepts, 1 after S seconds (default 10)
#   wait_for S COMMAND...  0 once COMMAND succeeds, polled every 0.1 s, 1 after S seconds

testlib_init() {
    T=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$T"
    PIDS=()
    trap testlib_cleanup EXIT
}

testlib_cleanup() {
    local p
    if declare -F testlib_at_exit >/dev/null; then testlib_at_exit; fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { wait_for "${2:-10}" port_open "$1"; }
