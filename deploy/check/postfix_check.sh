#!/bin/bash
# postfix_check.sh [RINGPOLICYD]: deploy/postfix/{main,master}.cf.snippet against a real
# Postfix (TOOLCHAIN.md 7.5: a throwaway instance with its own configuration directory).
#
# 1. postconf accepts both snippets, appended to a minimal main.cf and Debian's stock master.cf:
#    no warning from `postconf -n`, `-M` or `-P` (unknown parameters, bad service lines).
# 2. With RINGPOLICYD given: Postfix runs with the snippets (only the addresses changed to free
#    loopback ports), two ringpolicyd instances answer on the two policy ports, and smtp-source
#    shows what the snippets promise: mail is accepted and both services were asked, with
#    their policy_context; a REJECT from the chain reaches the client; with the accounting
#    service down mail is still accepted (default_action=DUNNO); with the reputation service
#    down the client gets the 451 of smtpd_policy_service_default_action; and smtpd logged no
#    warning about the policy client settings.
# Exit 0 pass, 1 fail (with the logs), 77 skip (no Postfix, or not root). Every wait is bounded.
set -u
RPD=${1:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SNIP=$HERE/../postfix

if ! command -v postconf >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "SKIP: needs Postfix (apt-get install postfix) and root"
    exit 77
fi

# shellcheck source=deploy/check/testlib.sh
. "$HERE/testlib.sh"
testlib_init rpd-postfix
PF=$T/pf
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix:postfix "$PF/data"
testlib_at_exit() { postfix -c "$PF/etc" stop >/dev/null 2>&1; }
fail() {
    echo "FAIL: $*"
    local f
    for f in "$PF/maillog" "$T"/rpd-*.log "$T"/source.out; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }
    done
    exit 1
}
SMTPD=$(free_port) P1=$(free_port) P2=$(free_port) SUB=$(free_port) REINJ=$(free_port)

# main.cf: a minimal instance (paths, logging, no delivery), then the snippet. The test
# client (loopback) is kept out of mynetworks, or permit_mynetworks would skip the policy check.
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $PF/maillog
maillog_file_prefixes = $T
myhostname = mx.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.0/24
relay_domains = example.com
alias_maps =
alias_database =
smtputf8_enable = no
default_transport = discard:policy-test
relay_transport = discard:policy-test
local_transport = discard:policy-test
EOF
cat "$SNIP/main.cf.snippet" >>"$PF/etc/main.cf"
# master.cf: Debian's, without chroot (the instance has no chroot tree), then the snippet.
awk '/^[^#[:space:]]/ && NF >= 8 { $5 = "n" } { print }' /usr/share/postfix/master.cf.dist \
    >"$PF/etc/master.cf"
cat "$SNIP/master.cf.snippet" >>"$PF/etc/master.cf"

for flag in -n -M -P; do
    if ! postconf -c "$PF/etc" $flag >"$T/postconf.out" 2>"$T/postconf.err"; then
        cat "$T/postconf.err"
        fail "postconf $flag refused the snippets"
    fi
    if grep -q . "$T/postconf.err"; then
        cat "$T/postconf.err"
        fail "postconf $flag warned about the snippets"
    fi
done
for p in smtpd_policy_service_timeout smtpd_policy_service_max_idle smtpd_policy_service_max_ttl \
    smtpd_policy_service_request_limit smtpd_policy_service_default_action \
    smtpd_policy_service_try_limit smtpd_policy_service_policy_context; do
    postconf -c "$PF/etc" -n "$p" | grep -q . || fail "the snippet does not set $p"
done
echo "ok   postconf -n/-M/-P accept main.cf.snippet and master.cf.snippet without warnings"

if [ -z "$RPD" ]; then
    echo "SKIP: live run (no ringpolicyd binary given)"
    exit 0
fi

# The live instance: the snippet's policy ports and services moved to free ports.
sed -i "s/127\.0\.0\.1:12345/127.0.0.1:$P1/g; s/127\.0\.0\.1:12346/127.0.0.1:$P2/g" "$PF/etc/main.cf"
sed -E -i "s/^smtp[[:space:]]+inet /127.0.0.1:$SMTPD inet /; s/^submission[[:space:]]+inet /127.0.0.1:$SUB inet /;
        s/^127\.0\.0\.1:10025[[:space:]]+inet /127.0.0.1:$REINJ inet /" "$PF/etc/master.cf"

start_rpd() { # start_rpd NAME PORT VHOSTNAME PLUGINS
    cat >"$T/$1.conf" <<EOF
port = "127.0.0.1:$2"
shards = 1
keepalive_timeout = 150
request_timeout = 15
<SessionCache>
  module = "Memory"
</SessionCache>
<VirtualHost $2>
  name = "$3"
$4
</VirtualHost>
EOF
    "$RPD" -f -c "$T/$1.conf" >"$T/rpd-$1.log" 2>&1 &
    PIDS+=($!)
    RPD_PID[$1]=$!
}
declare -A RPD_PID=()
# The last two plugins of each chain check that Postfix sent the snippet's policy_context.
context_check() {
    printf '  <Plugin context>\n    module = "Condition"\n    key = "policy_context"\n'
    printf '    re_match = "^%s$"\n    action = "dunno"\n  </Plugin>\n' "$1"
    printf '  <Plugin unexpected-context>\n    module = "Action"\n'
    printf '    action = "reject unexpected policy_context"\n  </Plugin>\n'
}
start_rpd reputation "$P1" reputation '
  <Plugin blocked-sender>
    module = "Condition"
    key = "sender"
    re_match = "@blocked\\.example$"
    action = "reject sender blocked by policy"
  </Plugin>'"
$(context_check recipient)"
start_rpd accounting "$P2" accounting "$(context_check accounting)"

{ wait_port "$P1" && wait_port "$P2"; } || fail "ringpolicyd did not start"
script -qec "postfix -c $PF/etc start" /dev/null >"$T/postfix-start.out" 2>&1 ||
    { cat "$T/postfix-start.out"; fail "postfix did not start"; }
wait_port "$SMTPD" || fail "smtpd not listening on $SMTPD"

source_mail() { # source_mail SENDER COUNT: smtp-source's exit status, output in source.out
    timeout 60 smtp-source -s 1 -m "$2" -f "$1" -t rcpt@example.com -M client.test.example \
        "127.0.0.1:$SMTPD" >"$T/source.out" 2>&1
}
count() { grep -c "$1" "$2" 2>/dev/null; }

source_mail sender@test.example 3 || fail "mail was not accepted: $(cat "$T/source.out")"
[ "$(count 'reputation: .*plugin=context, result=dunno' "$T/rpd-reputation.log")" -ge 3 ] ||
    fail "RCPT checks did not reach port $P1 with policy_context=recipient"
[ "$(count 'accounting: .*plugin=context, result=dunno' "$T/rpd-accounting.log")" -ge 3 ] ||
    fail "END-OF-MESSAGE checks did not reach port $P2 with policy_context=accounting"
echo "ok   3 mails accepted; RCPT asked port 12345's service, END-OF-MESSAGE port 12346's, each with its policy_context"

source_mail someone@blocked.example 1 && fail "a blocked sender was accepted"
grep -q 'sender blocked by policy' "$T/source.out" || fail "the client did not see the REJECT text"
echo "ok   REJECT from the chain reaches the client: $(grep -o '5[0-9][0-9] .*blocked by policy' "$T/source.out" | head -1)"

kill "${RPD_PID[accounting]}"
sleep 0.5
source_mail sender@test.example 1 || fail "with accounting down, mail was refused: $(cat "$T/source.out")"
echo "ok   accounting service down: mail still accepted (default_action=DUNNO)"

kill "${RPD_PID[reputation]}"
sleep 0.5
source_mail sender@test.example 1 && fail "with the reputation service down, mail was accepted"
grep -q '451 4.3.5 .*Policy service unavailable, try again later' "$T/source.out" ||
    fail "wanted smtpd_policy_service_default_action's 451: $(cat "$T/source.out")"
echo "ok   reputation service down: 451 4.3.5 from smtpd_policy_service_default_action"

if grep -E 'warning: .*(policy|attribute|check_policy_service)' "$PF/maillog" |
    grep -vE 'connect to 127\.0\.0\.1:[0-9]+: Connection refused|problem talking to server|service unavailable'; then
    fail "smtpd warned about the policy client settings"
fi
echo "ok   no warnings about the policy client settings in Postfix's log"
echo "PASS postfix"
