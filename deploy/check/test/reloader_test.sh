#!/bin/bash
# reloader_test.sh RINGPOLICYD: deploy/container/config-reloader against a real ringpolicyd,
# with the configuration directory laid out and updated the way the kubelet does it (files
# are symlinks into ..data, which is swapped atomically). Checks: a valid change is checked
# and signalled (SIGHUP reaches the daemon, which keeps serving); a broken change is reported
# and not signalled; the next valid change is signalled again; SIGTERM stops the reloader.
#
# Runs inside a new pid namespace (unshare --pid --mount-proc, as root), so the reloader's
# search by process name sees only this test's daemon, as in a pod. Exit 0 pass, 1 fail,
# 77 skip (not root, or no unshare).
set -u
BIN=${1:?usage: reloader_test.sh RINGPOLICYD}
HERE=$(cd "$(dirname "$0")" && pwd)
RELOADER=$HERE/../../container/config-reloader

if [ "${RELOADER_TEST_INSIDE:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
        echo "SKIP: needs root and unshare for a private pid namespace"
        exit 77
    fi
    RELOADER_TEST_INSIDE=1 exec unshare --pid --fork --mount-proc "$0" "$@"
fi

# shellcheck source=deploy/check/testlib.sh
. "$HERE/../testlib.sh"
testlib_init rpd-cfgwatch
fail() {
    echo "FAIL: $*"
    echo "--- daemon log"; cat "$T/daemon.log"
    echo "--- reloader log"; cat "$T/reloader.log"
    exit 1
}

PORT=$(free_port)
version() { # version NAME ACTION: a ConfigMap version directory
    mkdir -p "$T/conf/..$1"
    cat >"$T/conf/..$1/mtpolicyd.conf" <<CONF
port = "127.0.0.1:$PORT"
shards = 1
<SessionCache>
  module = "Memory"
</SessionCache>
<VirtualHost $PORT>
  name = "test"
  <Plugin answer>
    module = "Action"
    action = "$2"
  </Plugin>
</VirtualHost>
CONF
}
publish() { # publish NAME: the kubelet's atomic swap
    ln -sfn "..$1" "$T/conf/..data_tmp"
    mv -T "$T/conf/..data_tmp" "$T/conf/..data"
}
ask() { # the daemon's answer to one request
    python3 - "$PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"request=smtpd_access_policy\ninstance=x\n\n")
buf = b""
while b"\n\n" not in buf:
    c = s.recv(4096)
    if not c:
        break
    buf += c
print(buf.decode().strip())
PY
}
signals() { grep -ciE 'sighup|reloading|reloaded' "$T/daemon.log"; }

version v1 dunno
publish v1
ln -s ..data/mtpolicyd.conf "$T/conf/mtpolicyd.conf"
"$BIN" -f -c "$T/conf/mtpolicyd.conf" >"$T/daemon.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT" || fail "daemon not listening"
[ "$(ask)" = "action=dunno" ] || fail "first answer: $(ask)"

RELOADER_CONFIG=$T/conf/mtpolicyd.conf RELOADER_WATCH=$T/conf RELOADER_INTERVAL=0.2 \
    RELOADER_BIN=$BIN "$RELOADER" >"$T/reloader.log" 2>&1 &
RELOADER_PID=$!
PIDS+=("$RELOADER_PID")
wait_for 5 grep -q watching "$T/reloader.log" || fail "reloader did not start"
sleep 0.5
[ "$(signals)" = 0 ] || fail "signalled without a change"

version v2 "reject changed"
publish v2
wait_for 5 grep -q 'sent SIGHUP' "$T/reloader.log" || fail "valid change not signalled"
wait_for 5 bash -c "[ \$(grep -ciE 'sighup|reloading|reloaded' '$T/daemon.log') -gt 0 ]" ||
    fail "the daemon did not get SIGHUP"
n1=$(signals)
echo "ok   valid change: checked, SIGHUP sent and received"
ask | grep -q '^action=' || fail "daemon stopped answering after SIGHUP"

version v3 dunno
printf '<VirtualHost 99>\n  name = "unclosed"\n' >>"$T/conf/..v3/mtpolicyd.conf"
publish v3
wait_for 5 grep -q 'does not load' "$T/reloader.log" || fail "broken change not reported"
sleep 1
[ "$(signals)" = "$n1" ] || fail "a broken configuration was signalled"
[ "$(grep -c 'does not load' "$T/reloader.log")" = 1 ] || fail "broken change reported more than once"
echo "ok   broken change: reported once, not signalled"

version v4 dunno
publish v4
wait_for 5 bash -c "[ \$(grep -c 'sent SIGHUP' '$T/reloader.log') -ge 2 ]" || fail "second valid change not signalled"
wait_for 5 bash -c "[ \$(grep -ciE 'sighup|reloading|reloaded' '$T/daemon.log') -gt $n1 ]" ||
    fail "the daemon did not get the second SIGHUP"
echo "ok   next valid change: signalled again"

kill -TERM "$RELOADER_PID"
wait_for 5 bash -c "! kill -0 $RELOADER_PID 2>/dev/null" || fail "reloader ignored SIGTERM"
grep -q stopping "$T/reloader.log" || fail "reloader did not log its stop"
echo "ok   SIGTERM stops the reloader"
echo "PASS reloader"
