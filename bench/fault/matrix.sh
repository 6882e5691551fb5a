#!/bin/sh
# bench/fault/matrix.sh: runs the fault matrix (the `fault` suite of tests/integration/fault,
# one test per fault, each under a steady load of 64 connections) and prints the RELIABILITY
# table from the JSON line each test writes into the meson test log.
#
# Usage: bench/fault/matrix.sh [BUILD_DIR [TEST...]]   (default: build, configured with meson
# already; TEST: test names such as fault_maria fault_redis, default: the whole fault suite)
# Runs the tests one at a time under nice (they measure latency; two at once would measure each
# other). Needs what the tests need: memcached, nsd, PostgreSQL, MariaDB, redis-server, slapd
# (TOOLCHAIN.md 7). Exit status: that of `meson test` (the table is printed either way, from the
# tests that wrote a line).
set -u
BUILD=${1:-build}
[ $# -gt 0 ] && shift
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC" || exit 1
ninja -C "$BUILD" -j2 policy/ringpolicyd >/dev/null || exit 1
if [ $# -gt 0 ]; then
    nice meson test -C "$BUILD" --num-processes 1 --print-errorlogs "$@" >"$BUILD/fault-matrix.out" 2>&1
else
    nice meson test -C "$BUILD" --suite fault --num-processes 1 --print-errorlogs >"$BUILD/fault-matrix.out" 2>&1
fi
status=$?
grep '^{"fault"' "$BUILD/meson-logs/testlog.txt" | python3 "$SRC/bench/fault/table.py"
echo
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); meson test exit $status"
exit $status
