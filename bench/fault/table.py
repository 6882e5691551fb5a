#!/usr/bin/env python3
"""bench/fault/table.py: the RELIABILITY table (markdown) from the fault tests' JSON lines on
standard input (one object per line, "fault" naming it; the last line of a fault wins)."""
import json
import sys

rows = {}
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        o = json.loads(line)
    except ValueError:
        continue
    rows[o["fault"]] = o


def lat(w):
    return "%.1f / %.1f" % (w["p50_ms"], w["p99_ms"]) if w else "-"


def failed(w):
    return w["closed"] + w["timeouts"] + w["connect_failed"] if w else "-"


def extra(o):
    keys = ["p99_ratio", "rst_sent", "flood_open", "pipelined_bursts", "pipelined_refused",
            "pipelined_partial", "accept_paused", "accept_errors", "served_again_ms",
            "reload_log_lines", "daemon_replies", "exit_ms", "answered_last_1.5s", "answered_last_2.5s",
            "restart_to_answer_ms", "refused", "counted", "log_lines", "large_replied",
            "large_closed", "closed_nomem", "down_ms", "silent_ms", "mails", "accounted", "kept_before",
            "kept_down", "kept_after"]
    out = []
    for k in keys:
        if k in o:
            v = o[k]
            out.append("%s=%s" % (k, ("%.2f" % v).rstrip("0").rstrip(".") if isinstance(v, float) else v))
    return ", ".join(out)


print("| fault | answered during (failed) | p50 / p99 ms before | during | after | "
      "recovery ms | counts lost | other figures |")
print("|---|---|---|---|---|---|---|---|")
order = ["clients", "sighup_storm", "sigterm", "kill9", "memcached_restart", "dns_silent",
         "postgresql_restart", "mariadb_restart", "mariadb_kill9", "redis_restart",
         "redis_scache_restart", "ldap_restart", "ldap_silent", "fd_exhaustion", "staging_budget",
         "allow"]
for name in order + sorted(set(rows) - set(order)):
    o = rows.get(name)
    if not o:
        continue
    during = o.get("during") or o.get("last_second") or o.get("load")
    answered = "%s (%s)" % (during["answered"], failed(during)) if during else "-"
    lost = o.get("lost_counts", "-")
    rec = o.get("recovery_ms", "-")
    note = extra(o)
    if o.get("p99_ratio", 0) > 2:
        note += " **p99 over 2x the no-fault run**"
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        name, answered, lat(o.get("before")), lat(during), lat(o.get("after")), rec, lost, note))
