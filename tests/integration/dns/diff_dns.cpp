// diff_dns.cpp: RBL, RBLAction and DBL (spec 13.18, 13.19, 13.7, 12.9; appendix D #8, #9),
// Perl mtpolicyd 2.05 vs ringpolicyd, both resolving against the same nsd on loopback
// (tests/unit/dns/dns_server.h): ringpolicyd through the global `dns_servers`, Perl's
// Net::DNS through RES_NAMESERVERS / RES_OPTIONS="port:N" in its environment (Net::DNS reads
// them after /etc/resolv.conf; nothing system-wide changes). Every reply is compared byte for
// byte (info texts with Net::DNS's quoting, \DDD escapes, U+FFFD, UTF-8 output when the info
// holds a character above U+00FF, the trailing space when there is no info), then a few
// ringpolicyd-only cases: the opt-in IPv6 lookups (spec 16 #18, a documented difference) and
// a server that never answers (every failure is "not listed").
#include "../diffcheck.h"
#include "../../unit/dns/dns_server.h"
#include "../../unit/mc/mc_server.h"

#include <cstdlib>

using namespace itest;

namespace
{

const char *const kRbl = R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
  </Plugin>)C";

std::vector<VhostSpec> vhosts()
{
    return {
        {"rbl", kRbl, ""},
        {"rbl_msg", R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    reject_message = "%IP% listed: %INFO% - see %IP%"
  </Plugin>)C",
         ""},
        {"rbl_accept", R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    mode = "accept"
  </Plugin>
  <Plugin after>
    module = "Action"
    action = "reject not reached"
  </Plugin>)C",
         ""},
        {"rbl_score", R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    mode = "passive"
    score = 5
  </Plugin>
  <Plugin zen2>
    module = "RBL"
    domain = "zen.example"
    mode = "passive"
    score = 1.5
  </Plugin>
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 1
    action = "reject score %SCORE%"
  </Plugin>)C",
         ""},
        {"rbl_off", R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    enabled = "off"
  </Plugin>)C",
         ""},
        {"rbl_uc", R"C(
  <Plugin set>
    module = "SetField"
    key = "rbl_mode"
    value = "accept"
  </Plugin>
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    uc_mode = "rbl_mode"
  </Plugin>
  <Plugin after>
    module = "Action"
    action = "defer after"
  </Plugin>)C",
         ""},
        // Appendix D #9: one RBL lookup, classified by RBLAction.
        {"rblaction", R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    mode = "passive"
  </Plugin>
  <Plugin zen-two>
    module = "RBLAction"
    result_from = "zen"
    mode = "reject"
    re_match = "^127\.0\.0\.2$"
  </Plugin>
  <Plugin zen-ten>
    module = "RBLAction"
    result_from = "zen"
    mode = "reject"
    re_match = "^127\.0\.0\.1[0-9]$"
    reject_message = "blocked %IP% (code 1x) %INFO%"
  </Plugin>
  <Plugin zen-five>
    module = "RBLAction"
    result_from = "zen"
    mode = "accept"
    re_match = "^127\.0\.0\.5$"
  </Plugin>
  <Plugin zen-xbl>
    module = "RBLAction"
    result_from = "zen"
    mode = "reject"
    re_match = "^127\.0\.0\.[4-7]$"
  </Plugin>
  <Plugin after>
    module = "Action"
    action = "defer after"
  </Plugin>)C",
         ""},
        // D #8 and #9: uc_enabled with the session value "off".
        {"uc_off", R"C(
  <Plugin set>
    module = "SetField"
    key = "lists"
    value = "off"
  </Plugin>
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    uc_enabled = "lists"
  </Plugin>
  <Plugin dbl>
    module = "DBL"
    domain = "dbl.example"
    uc_enabled = "lists"
  </Plugin>
  <Plugin after>
    module = "Action"
    action = "defer after"
  </Plugin>)C",
         ""},
        {"rblaction_nores", R"C(
  <Plugin orphan>
    module = "RBLAction"
    result_from = "nothing"
    re_match = "."
  </Plugin>
  <Plugin after>
    module = "Action"
    action = "defer after"
  </Plugin>)C",
         ""},
        // Appendix D #8: DBL with its defaults.
        {"dbl", R"C(
  <Plugin dbl>
    module = "DBL"
    domain = "dbl.example"
  </Plugin>)C",
         ""},
        {"dbl_helo", R"C(
  <Plugin dbl>
    module = "DBL"
    domain = "dbl.example"
    sender_mode = "passive"
    helo_name_mode = "reject"
    reject_message = "%CHECK%=%HOSTNAME%%INFO%"
  </Plugin>)C",
         ""},
        {"dbl_score", R"C(
  <Plugin dbl>
    module = "DBL"
    domain = "dbl.example"
    sender_mode = "passive"
    reverse_client_name_mode = "passive"
  </Plugin>
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 0
    action = "reject score %SCORE%"
  </Plugin>)C",
         ""},
    };
}

// A ringpolicyd configuration: globals, one port and its virtual host with plugins.
std::string one_vhost(const std::string &globals, uint16_t port, const std::string &plugins)
{
    std::string p = std::to_string(port);
    return globals + "\nport = \"127.0.0.1:" + p + "\"\n<VirtualHost " + p +
           ">\n  name = \"dns\"\n" + plugins + "\n</VirtualHost>\n";
}

// A request from client_address ip.
std::vector<std::string> from(const std::string &ip,
                              std::vector<std::pair<std::string, std::string>> more = {})
{
    more.insert(more.begin(), {"client_address", ip});
    return rq(more);
}

// DBL request attributes.
std::vector<std::string> dbl(const std::string &sender, const std::string &rcn,
                             const std::string &helo)
{
    return rq({{"sender", sender},
               {"reverse_client_name", rcn},
               {"helo_name", helo},
               {"client_address", "192.0.2.9"}});
}

const std::string kListed2 = "reject delivery from 127.0.0.2 rejected (\"Listed in test zen; see "
                             "http://zen.example/?127.0.0.2\")";

// A case both daemons must answer alike.
struct Case {
    std::string vhost;
    std::vector<std::string> attrs;
    std::string expect;
};

std::vector<DiffCase> diff_cases(const std::vector<Case> &cases)
{
    std::vector<DiffCase> out;
    for (auto &c : cases)
        out.push_back(DiffCase{c.vhost, c.attrs, c.expect, "", ""});
    return out;
}

struct PerlDnsEnv {
    explicit PerlDnsEnv(const dnstest::DnsServer &s)
    {
        setenv("RES_NAMESERVERS", "127.0.0.1", 1);
        setenv("RES_OPTIONS", ("port:" + std::to_string(s.port())).c_str(), 1);
    }
    ~PerlDnsEnv()
    {
        unsetenv("RES_NAMESERVERS");
        unsetenv("RES_OPTIONS");
    }
};

} // namespace

TEST_CASE("RBL, RBLAction and DBL answer as 2.05 (D #8, #9)", "[diff][dns]")
{
    need_perl();
    dnstest::DnsServer &srv = dnstest::dns_server();
    PerlDnsEnv env(srv);
    auto vh = vhosts();
    DiffRig rig(vh, "dns_servers = \"" + srv.servers() + "\"\n");
    ITEST_START_RIG(rig);

    std::vector<Case> cases = {
        // RBL: listed with a TXT record, quoted because it holds spaces.
        {"rbl", from("127.0.0.2"), kListed2},
        {"rbl", from("127.0.0.3"), "dunno"},                                    // NXDOMAIN
        {"rbl", from("127.0.0.4"), "reject delivery from 127.0.0.4 rejected "}, // no TXT
        {"rbl", from("127.0.0.5"), "reject delivery from 127.0.0.5 rejected "}, // two A
        {"rbl", from("127.0.0.6"), "reject delivery from 127.0.0.6 rejected (\"\")"},
        {"rbl", from("127.0.0.7"),
         "reject delivery from 127.0.0.7 rejected (\"two words\" one \"(paren)\" "
         "\"semi;colon\")"},
        {"rbl", from("127.0.0.8"),
         "reject delivery from 127.0.0.8 rejected (\"q\\\"uote back\\\\slash tab\\009 nl\\010 "
         "del\\127 bin\xef\xbf\xbd\\255 utf8 caf\xc3\xa9\")"},
        {"rbl", from("127.0.0.9"), "dunno"}, // TXT but no A: not listed
        {"rbl", from("127.0.0.10"),
         "reject delivery from 127.0.0.10 rejected (\"euro \xe2\x82\xac sign\")"},
        {"rbl", from("127.0.0.12"), "reject delivery from 127.0.0.12 rejected (\"first record\")"},
        {"rbl", from("127.0.0.13"),
         "reject delivery from 127.0.0.13 rejected (\"Latin-1 \xef\xbf\xbdt\xef\xbf\xbd\")"},
        // Not a dotted quad: never listed (IPv6 as 2.05).
        {"rbl", from("2001:db8::2"), "dunno"},
        {"rbl", from("::ffff:127.0.0.2"), "dunno"},
        // The template: %IP% replaced once, %INFO% once.
        {"rbl_msg", from("127.0.0.2"),
         "reject 127.0.0.2 listed: (\"Listed in test zen; see http://zen.example/?127.0.0.2\") - "
         "see %IP%"},
        {"rbl_msg", from("127.0.0.4"), "reject 127.0.0.4 listed:  - see %IP%"},
        {"rbl_accept", from("127.0.0.2"), "dunno"},
        {"rbl_accept", from("127.0.0.3"), "reject not reached"},
        {"rbl_score", from("127.0.0.2"), "reject score 6.5"},
        {"rbl_score", from("127.0.0.3"), "dunno"},
        {"rbl_off", from("127.0.0.2"), "dunno"},
        {"rbl_uc", from("127.0.0.2"), "dunno"},
        {"rbl_uc", from("127.0.0.3"), "defer after"},
        // RBLAction (D #9).
        {"rblaction", from("127.0.0.2"), kListed2},
        {"rblaction", from("127.0.0.6"), "reject blocked 127.0.0.6 (code 1x) (\"\")"},
        {"rblaction", from("127.0.0.10"),
         "reject blocked 127.0.0.10 (code 1x) (\"euro \xe2\x82\xac sign\")"},
        {"rblaction", from("127.0.0.5"), "dunno"},
        {"rblaction", from("127.0.0.4"), "reject delivery from 127.0.0.4 rejected "},
        {"rblaction", from("127.0.0.8"),
         "reject blocked 127.0.0.8 (code 1x) (\"q\\\"uote back\\\\slash tab\\009 nl\\010 "
         "del\\127 bin\xef\xbf\xbd\\255 utf8 caf\xc3\xa9\")"},
        {"uc_off", from("127.0.0.2", {{"sender", "user@example.com"}}), "defer after"},
        {"rblaction", from("127.0.0.3"), "defer after"},
        {"rblaction_nores", from("127.0.0.2"), "defer after"},
        // DBL (D #8): sender, then reverse client name, then HELO (passive by default).
        {"dbl", dbl("user@example.com", "unknown", "helo.example.org"),
         "reject sender rejected (example.com, "
         "https://www.example.org/query/dbl?domain=example.com)"},
        {"dbl", dbl("user@clean.example", "rdns.example.net", "helo.example.org"),
         "reject reverse_client_name rejected (rdns.example.net)"},
        {"dbl", dbl("", "unknown", "helo.example.org"), "dunno"},
        {"dbl", dbl("example.com", "192.0.2.1", "[192.0.2.1]"),
         "reject sender rejected (example.com, "
         "https://www.example.org/query/dbl?domain=example.com)"},
        {"dbl", dbl("user@localhost", "host", "2001:db8::1"), "dunno"}, // skipped: no dot, IPv6
        {"dbl", dbl("a@b@example.com", "x", "y"), "dunno"},             // s/^[^@]*@// leaves b@...
        {"dbl", dbl("user@sub.listed.example", "EXAMPLE.COM", "x"),
         "reject sender rejected (sub.listed.example)"},
        {"dbl_helo", dbl("user@example.com", "unknown", "helo.example.org"),
         "reject helo_name=helo.example.org, \"helo listed\""},
        {"dbl_helo", dbl("user@example.com", "unknown", "clean.example"), "dunno"},
        {"dbl_score", dbl("user@example.com", "rdns.example.net", "helo.example.org"),
         "reject score 8.5"},
        {"dbl_score", dbl("user@clean.example", "unknown", "helo.example.org"), "reject score 1"},
    };
    std::vector<DiffCase> all = diff_cases(cases);
    // A TXT record Net::DNS wraps past 80 columns puts LF TAB into the info text. 2.05 sends
    // the LF as is (the reply's line ends there; Postfix sees a malformed reply), ringpolicyd's
    // reply encoder writes a space for it (policy/proto.c copy_action).
    all.push_back(DiffCase{"rblaction", from("127.0.0.11"),
                           "reject blocked 127.0.0.11 (code 1x) (" + std::string(45, 'a'),
                           "reject blocked 127.0.0.11 (code 1x) (" + std::string(45, 'a') + " \t" +
                               std::string(47, 'b') + " c)",
                           "core: an LF in an action is written as a space"});
    run_cases(rig, vh, all);
}

TEST_CASE("RBL: a missing client_address and DBL's missing attributes fail as 2.05", "[diff][dns]")
{
    need_perl();
    dnstest::DnsServer &srv = dnstest::dns_server();
    PerlDnsEnv env(srv);
    auto vh = vhosts();
    DiffRig rig(vh, "dns_servers = \"" + srv.servers() + "\"\n");
    ITEST_START_RIG(rig);
    std::vector<Case> cases = {
        {"dbl", rq({{"helo_name", "\x7f"}, {"sender", "user@clean.example"}}), "<closed>"},
        {"rbl", rq({{"client_address", "\x7f"}}), "<closed>"},
        {"rbl", rq({{"client_address", ""}}), "<closed>"},
    };
    run_cases(rig, vh, diff_cases(cases));
}

TEST_CASE("ringpolicyd: RBL ipv6 = 1 looks IPv6 clients up by nibbles (spec 16 #18)", "[dns]")
{
    need_ringpolicyd();
    dnstest::DnsServer &srv = dnstest::dns_server();
    uint16_t port = free_tcp_port();
    Daemon ring(Impl::Ring, one_vhost("dns_servers = \"" + srv.servers() + "\"", port,
                                      "  <Plugin zen6>\n    module = \"RBL\"\n"
                                      "    domain = \"zen.example\"\n    ipv6 = 1\n"
                                      "  </Plugin>\n"));
    Endpoint ep = Endpoint::tcp(port);
    ring.set_ready(ep);
    bool ok = ring.start();
    INFO(ring.error() << "\n" << ring.log());
    REQUIRE(ok);
    Reply r = ask(ep, from("2001:db8::2"));
    CHECK(r.actions == std::vector<std::string>{"reject delivery from 2001:db8::2 rejected "
                                                "(\"IPv6 listed\")"});
    r = ask(ep, from("2001:db8::3"));
    CHECK(r.actions == std::vector<std::string>{"dunno"});
    r = ask(ep, from("127.0.0.2"));
    CHECK(r.actions == std::vector<std::string>{kListed2});
    CHECK(ring.stop() == 0);
}

TEST_CASE("ringpolicyd: a DNS server that never answers means not listed", "[dns]")
{
    need_ringpolicyd();
    dnstest::DnsServer &srv = dnstest::dns_server();
    uint16_t port = free_tcp_port();
    Daemon ring(Impl::Ring,
                one_vhost("dns_servers = \"" + srv.hole() + "\"", port,
                          std::string(kRbl) + "\n  <Plugin dbl>\n    module = \"DBL\"\n"
                                              "    domain = \"dbl.example\"\n  </Plugin>\n"));
    Endpoint ep = Endpoint::tcp(port);
    ring.set_ready(ep);
    bool ok = ring.start();
    INFO(ring.error() << "\n" << ring.log());
    REQUIRE(ok);
    // Two lookups (RBL, DBL sender; the other DBL checks are skipped), each given up after the
    // resolver's tries (2 s + 4 s), well inside request_timeout (20 s).
    int64_t t0 = now_ms();
    Reply r = ask(ep,
                  from("127.0.0.2", {{"sender", "user@example.com"},
                                     {"reverse_client_name", "unknown"},
                                     {"helo_name", "unknown"}}),
                  30000);
    INFO("reply " << reply_status_name(r.status) << " after " << now_ms() - t0 << " ms: " << r.raw
                  << "\nlog:\n"
                  << ring.log());
    CHECK(r.actions == std::vector<std::string>{"dunno"});
    CHECK(ring.stop() == 0);
    CHECK(contains(ring.log(), "timeouts"));
}

TEST_CASE("ringpolicyd: dns_servers is checked at start-up", "[dns]")
{
    need_ringpolicyd();
    Daemon ring(Impl::Ring, one_vhost("dns_servers = \"127.0.0.1:99999\"", free_tcp_port(), kRbl));
    RunResult res = ring.run({"--check"});
    CHECK(res.status != 0);
    CHECK(contains(res.out + res.err, "dns_servers: bad DNS server '127.0.0.1:99999'"));
}

namespace
{

// The "N queries" of every shard's DNS line at stop, summed.
uint64_t dns_queries_logged(const std::string &log)
{
    uint64_t sum = 0;
    for (const std::string &l : split_lines(log)) {
        size_t at = l.find(" dns: ");
        if (at != std::string::npos)
            sum += strtoull(l.c_str() + at + 6, nullptr, 10);
    }
    return sum;
}

} // namespace

TEST_CASE("per mail (spec 12.3): one lookup per mail, scores once, as 2.05 with a session cache",
          "[diff][dns]")
{
    need_perl();
    need_ringpolicyd();
    dnstest::DnsServer &srv = dnstest::dns_server();
    rpdtest::McServer mc;
    const std::string vhost = R"C(
  <Plugin zen>
    module = "RBL"
    domain = "zen.example"
    mode = "passive"
    score = 5
  </Plugin>
  <Plugin zen-ten>
    module = "RBLAction"
    result_from = "zen"
    mode = "passive"
    re_match = "^127\.0\.0\.1[0-9]$"
    score = 2
  </Plugin>
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 1
    action = "reject score %SCORE%"
  </Plugin>
)C";
    uint16_t perl_port = free_tcp_port(), ring_port = free_tcp_port();
    // Both keep sessions in memcached, each in its own (their session formats differ).
    rpdtest::McServer mc_ring;
    Daemon perl(Impl::Perl, "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
                                mc.addr() +
                                "\"\n</Connection>\n<SessionCache>\n  module = "
                                "\"Memcached\"\n</SessionCache>\n" +
                                one_vhost("", perl_port, vhost));
    perl.set_env("RES_NAMESERVERS", "127.0.0.1");
    perl.set_env("RES_OPTIONS", "port:" + std::to_string(srv.port()));
    perl.set_ready(Endpoint::tcp(perl_port));
    Daemon ring(Impl::Ring,
                "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
                    mc_ring.addr() +
                    "\"\n</Connection>\n<SessionCache>\n  module = "
                    "\"Memcached\"\n</SessionCache>\n" +
                    one_vhost("dns_servers = \"" + srv.servers() + "\"", ring_port, vhost));
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
    struct {
        std::string ip, instance, expect;
    } cases[] = {
        {"127.0.0.2", "m1", "reject score 5"}, // first request of mail m1: one lookup
        {"127.0.0.2", "m1", "reject score 5"}, // the same mail: cached, scored once
        {"127.0.0.2", "m1", "reject score 5"},
        {"127.0.0.10", "m2", "reject score 7"}, // RBL and RBLAction on one answer
        {"127.0.0.10", "m2", "reject score 7"},
        // The cached answer is the mail's, whatever the later requests say.
        {"127.0.0.3", "m2", "reject score 7"},
        {"127.0.0.3", "m3", "dunno"}, // not listed: cached too
        {"127.0.0.3", "m3", "dunno"},
    };
    for (auto &c : cases) {
        auto attrs = from(c.ip, {{"instance", c.instance}});
        std::string p = summarize(ask(Endpoint::tcp(perl_port), attrs, 20000));
        std::string r = summarize(ask(Endpoint::tcp(ring_port), attrs, 20000));
        INFO(c.ip << " instance " << c.instance << "\nPerl: " << p << "\nringpolicyd: " << r);
        CHECK(p == c.expect);
        CHECK(r == p);
    }
    CHECK(ring.stop() == 0);
    perl.stop(300);
    // A lookup per mail: m1 A + TXT, m2 A + TXT, m3 A (NXDOMAIN, no TXT).
    INFO(ring.log());
    CHECK(dns_queries_logged(ring.log()) == 5);
}
