// it_shipped_config.cpp: the Debian package's /etc/mtpolicyd/mtpolicyd.conf (issue 5) served by
// ringpolicyd and by the Perl mtpolicyd 2.05, with nsd on loopback standing in for the public
// lists it names (zen/dbl.spamhaus.org, list.dnswl.org, sorbs, manitu, spamcop, abuse.ch, wpbl,
// barracuda) and for the senders' SPF records, a memcached per daemon started by the test for
// its Memcached connection and session cache, and its SQLite database in a temporary directory.
//
// The file is used as shipped except for what cannot work in a test: the user/group lines
// (the test runs as it is), the port, the memcached address, the SQLite path, and for
// ringpolicyd the global dns_servers (Perl's Net::DNS gets the server from RES_NAMESERVERS and
// RES_OPTIONS). Both run the file's <SessionCache module = "Memcached">, each on its own
// memcached. Every request carries its own instance, so sessions never carry over between
// cases.
#include "../diffcheck.h"
#include "../../unit/dns/dns_server.h"
#include "../../unit/mc/mc_server.h"

#include <cstdlib>

using namespace itest;

namespace
{

const char *const kShipped = "/etc/mtpolicyd/mtpolicyd.conf";

// A blocklist zone: SOA, NS, and "NAME A ADDR" entries.
dnstest::Zone list_zone(const std::string &name, const std::string &entries)
{
    return {name, "$ORIGIN " + name + ".\n$TTL 300\n@ IN SOA ns." + name + ". hostmaster." + name +
                      ". 1 3600 600 86400 60\n@ IN NS ns." + name + ".\nns IN A 127.0.0.1\n" +
                      entries};
}

// Clients are in 192.0.2.0/24 (the SPF plugin skips 127.0.0.0/8): .2 listed nearly everywhere,
// .4 in Spamhaus XBL and spamcop, .10 in the PBL, .20 on dnswl.org, the rest nowhere.
std::vector<dnstest::Zone> zones()
{
    std::string listed = "2.2.0.192 IN A 127.0.0.2\n";
    return {
        list_zone("zen.spamhaus.org",
                  listed + "2.2.0.192 IN TXT \"https://www.spamhaus.org/query/ip/192.0.2.2\"\n"
                           "4.2.0.192 IN A 127.0.0.4\n10.2.0.192 IN A 127.0.0.10\n"),
        list_zone("list.dnswl.org", "20.2.0.192 IN A 127.0.10.0\n"),
        list_zone("dbl.spamhaus.org", "spam.example.net IN A 127.0.1.2\n"),
        list_zone("dnsbl.sorbs.net", listed),
        list_zone("ix.dnsbl.manitu.net", listed),
        list_zone("bl.spamcop.net", listed + "4.2.0.192 IN A 127.0.0.2\n"),
        list_zone("drone.abuse.ch", listed),
        list_zone("db.wpbl.info", listed),
        list_zone("bb.barracudacentral.org", listed),
        list_zone("spf.test", "pass IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"
                              "fail IN TXT \"v=spf1 ip4:198.51.100.0/24 -all\"\n"
                              "soft IN TXT \"v=spf1 ~all\"\n"
                              "helo IN A 192.0.2.1\n"),
        list_zone("example.net", "spam IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"),
    };
}

// The shipped file with the test's substitutions (see the header).
std::string adapt(std::string conf, uint16_t port, const std::string &mc, bool ring,
                  const std::string &dns_servers)
{
    std::string out;
    for (const std::string &line : split_lines(conf)) {
        std::string l = line;
        if (l.rfind("user=", 0) == 0 || l.rfind("group=", 0) == 0)
            continue;
        out += l + "\n";
    }
    std::string p = std::to_string(port);
    out = replace_all(out, "port=\"127.0.0.1:12345\"", "port=\"127.0.0.1:" + p + "\"");
    out = replace_all(out, "<VirtualHost 12345>", "<VirtualHost " + p + ">");
    out = replace_all(out, "servers = \"127.0.0.1:11211\"", "servers = \"" + mc + "\"");
    out = replace_all(out, "dbname=/var/lib/mtpolicyd/mtpolicyd.sqlite",
                      "dbname=@DIR@/mtpolicyd.sqlite");
    if (ring)
        out = "dns_servers = \"" + dns_servers + "\"\n" + out;
    return out;
}

std::vector<std::string> req(int n, const std::string &ip, const std::string &sender,
                             const std::string &extra_key = "", const std::string &extra = "")
{
    std::vector<std::pair<std::string, std::string>> o = {
        {"client_address", ip},
        {"client_name", "unknown"},
        {"reverse_client_name", "unknown"},
        {"helo_name", "helo.spf.test"},
        {"sender", sender},
        {"instance", "ship." + std::to_string(n)},
    };
    if (!extra_key.empty())
        o.push_back({extra_key, extra});
    return postfix_request(o);
}

} // namespace

TEST_CASE("the shipped mtpolicyd.conf: ringpolicyd's --check on the file as shipped",
          "[dns][shipped]")
{
    need_ringpolicyd();
    need_file(kShipped, "the Debian package's configuration (apt-get install mtpolicyd)");
    RunResult r = run_command({ringpolicyd_bin(), "--check", "-c", kShipped}, 20000);
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK(contains(r.out, "configuration OK"));
}

TEST_CASE("the shipped mtpolicyd.conf answers as 2.05 with local stand-ins", "[dns][shipped]")
{
    need_perl();
    need_ringpolicyd();
    need_file(kShipped, "the Debian package's configuration (apt-get install mtpolicyd)");
    need_file("/usr/share/GeoIP/GeoIP.dat", "the GeoIP database (geoip-database)");
    std::string shipped = read_file(kShipped);
    dnstest::DnsServer dns(zones());
    rpdtest::McServer mc_perl, mc_ring; // one each: they would see each other's tickets

    uint16_t perl_port = free_tcp_port(), ring_port = free_tcp_port();
    Daemon perl(Impl::Perl, adapt(shipped, perl_port, mc_perl.addr(), false, ""));
    perl.set_env("RES_NAMESERVERS", "127.0.0.1");
    perl.set_env("RES_OPTIONS", "port:" + std::to_string(dns.port()));
    perl.set_ready(Endpoint::tcp(perl_port));
    Daemon ring(Impl::Ring, adapt(shipped, ring_port, mc_ring.addr(), true, dns.servers()));
    ring.set_ready(Endpoint::tcp(ring_port));
    {
        bool ok = perl.start(60000);
        INFO(perl.error() << "\n" << perl.log());
        REQUIRE(ok);
    }
    {
        bool ok = ring.start();
        INFO(ring.error() << "\n" << ring.log());
        REQUIRE(ok);
    }

    struct Case {
        std::vector<std::string> attrs;
        const char *why;
    } cases[] = {
        // Listed nearly everywhere, SPF pass (-10): ScoreReject.
        {req(1, "192.0.2.2", "user@pass.spf.test"), "listed, score above 15"},
        // On dnswl.org: RBL accept stops the chain with dunno.
        {req(2, "192.0.2.20", "user@pass.spf.test"), "dnswl accept"},
        // SPF fail: rejected by the SPF plugin.
        {req(3, "192.0.2.3", "user@fail.spf.test"), "spf fail"},
        // SPF pass, listed nowhere: -10, AddScoreHeader.
        {req(4, "192.0.2.3", "user@pass.spf.test"), "spf pass, clean"},
        // No SPF record, softfail, null sender (postmaster@HELO), localhost (skipped).
        {req(5, "192.0.2.3", "user@none.spf.test"), "spf none"},
        {req(6, "192.0.2.3", "user@soft.spf.test"), "spf softfail"},
        {req(7, "192.0.2.3", ""), "null sender"},
        {req(8, "127.0.0.1", "user@fail.spf.test"), "localhost: no SPF check"},
        // XBL + spamcop: 10 points: ScoreGreylist's nested Greylist (autowl in SQL) defers.
        {req(9, "192.0.2.4", "user@none.spf.test"), "xbl + spamcop: greylist"},
        // PBL: 3 points, header.
        {req(10, "192.0.2.10", "user@none.spf.test"), "pbl"},
        // DBL: sender domain listed (passive, 5), SPF pass (-10).
        {req(11, "192.0.2.3", "user@spam.example.net"), "dbl sender"},
        // IPv6 client: no RBL lookups in either.
        {req(12, "2001:db8::1", "user@none.spf.test"), "ipv6"},
    };
    int i = 0;
    for (auto &c : cases) {
        INFO("case " << i++ << " (" << c.why << ")\n" << request_text(c.attrs));
        std::string p = summarize(ask(Endpoint::tcp(perl_port), c.attrs, 30000));
        std::string r = summarize(ask(Endpoint::tcp(ring_port), c.attrs, 30000));
        INFO("Perl: " << p << "\nringpolicyd: " << r);
        CHECK(r == p);
    }
    CHECK(ring.stop() == 0);
    perl.stop(300);
}
