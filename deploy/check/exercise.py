#!/usr/bin/env python3
"""exercise.py: run a real ringpolicyd the way a deployment does and check that it serves,
for deploy/check.sh (sandboxes, image contents, the config reloader).

  exercise.py --bin RINGPOLICYD [--backend auto|uring|epoll] [--expect-backend io_uring|epoll]
              [--expect-start-failure TEXT] [--wrap "COMMAND PREFIX"] [--log FILE]

Writes a configuration with two listeners on free loopback ports (the layout of the Postfix
snippets: recipient checks on one port, end-of-data accounting on the other) and only
built-in plugins, then, each under the --wrap prefix (split like a shell would, e.g.
"/usr/bin/python3 sandbox_run.py --kill ALLOWFILE --"):
  1. `ringpolicyd --check -c FILE` and `ringpolicyd --cron hourly,daily -c FILE` exit 0;
  2. `ringpolicyd -f -c FILE` starts, logs the expected backend, answers requests on both
     ports over persistent connections, keeps answering after SIGHUP, and exits 0 on
     SIGTERM after draining.
With --expect-start-failure, step 2 instead expects the daemon to exit non-zero at start-up
with TEXT in its output. Prints one line per step; exit status 0 if everything held, 1 if
not (with the daemon's log), 2 on bad usage. Every wait is bounded (10 s).
"""
import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

WAIT_S = 10.0

CONFIG = """\
# written by deploy/check/exercise.py
port = "127.0.0.1:{p1},127.0.0.1:{p2}"
log_level = 2
shards = 2
backend = "{backend}"
keepalive_timeout = 60
request_timeout = 20

<SessionCache>
  module = "Memory"
  expire = 300
</SessionCache>

<VirtualHost {p1}>
  name = "reputation"
  <Plugin no-reverse-name>
    module = "RegexList"
    key = "reverse_client_name"
    regex = "^unknown$"
    score = 2
  </Plugin>
  <Plugin blocked-sender>
    module = "Condition"
    key = "sender"
    re_match = "@blocked\\\\.example$"
    action = "reject sender blocked"
  </Plugin>
  <Plugin add-score-header>
    module = "AddScoreHeader"
    spam_score = 5
  </Plugin>
</VirtualHost>

<VirtualHost {p2}>
  name = "accounting"
  <Plugin accept>
    module = "Action"
    action = "dunno"
  </Plugin>
</VirtualHost>
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(instance, sender, state="RCPT"):
    attrs = [
        ("request", "smtpd_access_policy"), ("protocol_state", state),
        ("protocol_name", "ESMTP"), ("client_address", "192.0.2.10"),
        ("client_name", "unknown"), ("reverse_client_name", "unknown"),
        ("helo_name", "client.test.example"), ("sender", sender),
        ("recipient", "rcpt@example.com"), ("recipient_count", "0"),
        ("queue_id", ""), ("instance", instance), ("size", "0"),
    ]
    return "".join(f"{k}={v}\n" for k, v in attrs).encode() + b"\n"


def read_reply(sock):
    buf = b""
    deadline = time.monotonic() + WAIT_S
    while b"\n\n" not in buf:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {buf!r}")
        buf += chunk
    return buf.decode(errors="replace")


def wait_listening(port, proc):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def converse(p1, p2, round_no):
    """Requests on two persistent connections per port; the checks a Postfix would need."""
    conns = [socket.create_connection(("127.0.0.1", p), timeout=WAIT_S)
             for p in (p1, p1, p2, p2)]
    try:
        for i in range(5):
            inst = f"r{round_no}c{i}"
            blocked = "a@blocked.example"
            # The header is added once per mail (the session is shared by both connections,
            # whichever shard owns them); the reject comes every time.
            for n, c in enumerate(conns[:2]):
                c.sendall(request(inst, blocked if i == 4 else "a@test.example"))
                reply = read_reply(c)
                if i == 4:
                    want = "action=reject sender blocked"
                else:
                    want = "action=PREPEND X-MtScore:" if n == 0 else "action=dunno"
                if not reply.startswith(want):
                    raise AssertionError(f"port {p1}: got {reply!r}, wanted {want}...")
            for c in conns[2:]:
                c.sendall(request(inst, "a@test.example", "END-OF-MESSAGE"))
                reply = read_reply(c)
                if reply != "action=dunno\n\n":
                    raise AssertionError(f"port {p2}: got {reply!r}, wanted action=dunno")
    finally:
        for c in conns:
            c.close()


def run_quick(wrap, args, log):
    r = subprocess.run(wrap + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=WAIT_S * 3, check=False)
    log.write(r.stdout)
    return r.returncode


def fail(msg, logpath):
    print(f"  FAIL {msg}")
    try:
        with open(logpath, "rb") as f:
            tail = f.read()[-4000:].decode(errors="replace")
        print("  --- log ---\n" + "".join(f"  | {line}\n" for line in tail.splitlines()))
    except OSError:
        pass
    return 1


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=WAIT_S)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--backend", default="auto", choices=("auto", "uring", "epoll"))
    ap.add_argument("--expect-backend", choices=("io_uring", "epoll"))
    ap.add_argument("--expect-start-failure")
    ap.add_argument("--wrap", default="")
    ap.add_argument("--log")
    a = ap.parse_args()
    a.wrap = shlex.split(a.wrap)
    tmp = tempfile.mkdtemp(prefix="rpd-exercise.")
    os.chmod(tmp, 0o755)
    p1, p2 = free_port(), free_port()
    conf = os.path.join(tmp, "mtpolicyd.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(CONFIG.format(p1=p1, p2=p2, backend=a.backend))
    os.chmod(conf, 0o644)
    logpath = a.log or os.path.join(tmp, "ringpolicyd.log")
    with open(logpath, "wb") as log:
        if run_quick(a.wrap, [a.bin, "--check", "-c", conf], log) != 0:
            return fail("--check refused the configuration", logpath)
        print("  ok   --check")
        if run_quick(a.wrap, [a.bin, "--cron", "hourly,daily", "-c", conf], log) != 0:
            return fail("--cron hourly,daily did not exit 0", logpath)
        print("  ok   --cron hourly,daily")
        log.flush()
        proc = subprocess.Popen(a.wrap + [a.bin, "-f", "-c", conf], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return daemon_steps(a, proc, p1, p2, logpath)
        finally:
            stop(proc)


def daemon_steps(a, proc, p1, p2, logpath):
    if a.expect_start_failure:
        try:
            rc = proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            return fail("the daemon started although start-up should have failed", logpath)
        with open(logpath, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if rc == 0 or a.expect_start_failure not in text:
            return fail(f"exit {rc}; wanted non-zero and {a.expect_start_failure!r}", logpath)
        print(f"  ok   start-up refused (exit {rc}): {a.expect_start_failure}")
        return 0
    if not wait_listening(p1, proc) or not wait_listening(p2, proc):
        return fail(f"not listening on {p1} and {p2} (exit {proc.poll()})", logpath)
    # The sockets are bound before the start-up line is written: wait for it a little.
    deadline = time.monotonic() + WAIT_S
    while True:
        with open(logpath, encoding="utf-8", errors="replace") as f:
            m = re.search(r"starting: \d+ shards, (\S+),", f.read())
        if m or time.monotonic() > deadline or proc.poll() is not None:
            break
        time.sleep(0.05)
    if not m:
        return fail("no start-up line naming the backend", logpath)
    if a.expect_backend and m.group(1) != a.expect_backend:
        return fail(f"backend {m.group(1)}, wanted {a.expect_backend}", logpath)
    print(f"  ok   started, backend {m.group(1)}")
    try:
        converse(p1, p2, 1)
        print("  ok   20 requests on 4 persistent connections, 2 ports")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        if proc.poll() is not None:
            return fail(f"exited ({proc.returncode}) on SIGHUP", logpath)
        converse(p1, p2, 2)
        print("  ok   SIGHUP, still answering")
    except (OSError, AssertionError) as e:
        return fail(f"conversation: {e}", logpath)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=WAIT_S * 2)
    except subprocess.TimeoutExpired:
        return fail("did not stop within 20 s of SIGTERM", logpath)
    if rc != 0:
        why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        return fail(f"stopped with {why} after SIGTERM", logpath)
    print("  ok   SIGTERM, drained, exit 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
