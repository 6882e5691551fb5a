#!/usr/bin/env bash
# bench/dnschain/zones.sh DIR: writes the zones bench.sh's nsd serves into DIR and prints their
# nsd.conf "zone:" stanzas.
#
# Stand-ins for what the shipped mtpolicyd.conf looks up, shaped for ringpolicyd-load's
# generated clients (bench/common/reqgen.c: IPv4 addresses with a first octet of 1..223, senders
# and HELO names under mail/isp/bulk/corp/mx.example, 1 in 20 clients on IPv6, which no RBL
# looks up):
#   - blocklists list whole first octets by wildcard (*.A.LIST covers every d.c.b.A), so a
#     known share of the clients is listed on each: zen 200-209 SBL (127.0.0.2, with TXT),
#     180-189 XBL (127.0.0.4), 60-79 PBL (127.0.0.10); sorbs 200-215; manitu 205-215; spamcop
#     180-195; abuse.ch 190-193; wpbl 200-203; barracuda 200-220; dnswl.org 1-5 (accept: the
#     chain stops there with dunno);
#   - dbl.spamhaus.org lists every name under bulk.example (sender, HELO and reverse names);
#   - SPF, by wildcard TXT records for every name under each domain: mail.example ip4:0/1
#     (about half pass) ~all; isp.example "a mx ~all" (two more lookups); bulk.example a -all
#     that the generated clients never match (fail: SPF rejects); corp.example an include;
#     mx.example no SPF record at all.
# Positive TTLs are 300 s, negative answers 60 s (the SOA minimum).
set -euo pipefail
DIR=$1
mkdir -p "$DIR"

soa() {
    printf '$ORIGIN %s.\n$TTL 300\n@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 60\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n' \
        "$1" "$1" "$1" "$1"
}

# list NAME FIRST LAST ADDR [TXT]: *.A IN A ADDR for A in FIRST..LAST.
list() {
    local name=$1 first=$2 last=$3 addr=$4 txt=${5:-} a
    for a in $(seq "$first" "$last"); do
        echo "*.$a IN A $addr"
        [ -n "$txt" ] && echo "*.$a IN TXT \"$txt\""
    done
    return 0
}

# zone NAME: the zone file from stdin, and its stanza on stdout (zone runs in a pipeline's
# subshell, so it prints rather than collects).
zone() {
    local name=$1
    local file=${name%.}
    file=${file:-root}.zone
    cat >"$DIR/$file"
    printf 'zone:\n  name: "%s"\n  zonefile: "%s"\n' "$name" "$file"
}

# A root zone: every name outside the zones below gets NXDOMAIN, as from the real DNS (nsd
# would refuse it, and 2.05's SPF defers on a REFUSED lookup of an address-literal HELO such
# as "[192.0.2.1]", where a real resolver answers NXDOMAIN).
printf '$ORIGIN .\n$TTL 300\n@ IN SOA ns.root.test. hostmaster.root.test. 1 3600 600 86400 60\n@ IN NS ns.root.test.\n' | zone .

{ soa zen.spamhaus.org
  list zen.spamhaus.org 200 209 127.0.0.2 "https://www.spamhaus.org/sbl/"
  list zen.spamhaus.org 180 189 127.0.0.4 "https://www.spamhaus.org/xbl/"
  list zen.spamhaus.org 60 79 127.0.0.10 "https://www.spamhaus.org/pbl/"; } | zone zen.spamhaus.org
{ soa list.dnswl.org; list list.dnswl.org 1 5 127.0.10.0; } | zone list.dnswl.org
{ soa dnsbl.sorbs.net; list dnsbl.sorbs.net 200 215 127.0.0.2; } | zone dnsbl.sorbs.net
{ soa ix.dnsbl.manitu.net; list ix.dnsbl.manitu.net 205 215 127.0.0.2; } | zone ix.dnsbl.manitu.net
{ soa bl.spamcop.net; list bl.spamcop.net 180 195 127.0.0.2; } | zone bl.spamcop.net
{ soa drone.abuse.ch; list drone.abuse.ch 190 193 127.0.0.2; } | zone drone.abuse.ch
{ soa db.wpbl.info; list db.wpbl.info 200 203 127.0.0.2; } | zone db.wpbl.info
{ soa bb.barracudacentral.org; list bb.barracudacentral.org 200 220 127.0.0.2; } | zone bb.barracudacentral.org
{ soa dbl.spamhaus.org; echo '*.bulk.example IN A 127.0.1.2'; } | zone dbl.spamhaus.org

{ soa mail.example; echo '* IN TXT "v=spf1 ip4:0.0.0.0/1 ~all"'; } | zone mail.example
{ soa isp.example
  echo '* IN TXT "v=spf1 a mx ~all"'
  echo '* IN A 192.0.2.1'
  echo '* IN MX 10 mx.isp.example.'
  echo 'mx IN A 192.0.2.2'; } | zone isp.example
{ soa bulk.example; echo '* IN TXT "v=spf1 ip4:198.51.100.0/24 -all"'; } | zone bulk.example
{ soa corp.example
  echo '* IN TXT "v=spf1 include:_spf.corp.example ~all"'
  echo '_spf IN TXT "v=spf1 ip4:128.0.0.0/2 ip4:64.0.0.0/3 ?all"'; } | zone corp.example
{ soa mx.example; echo '* IN A 192.0.2.3'; } | zone mx.example
