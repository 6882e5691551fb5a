// diff_spf.cpp: the SPF plugin (spec 13.22, appendix D #10), Perl mtpolicyd 2.05 (Mail::SPF on
// Net::DNS) vs ringpolicyd (our evaluator on eng_dns), both asking the same nsd on loopback
// (nsd_root.hpp): Net::DNS through RES_NAMESERVERS / RES_OPTIONS=port:N (it honours both),
// ringpolicyd through the global dns_servers (which 2.05 ignores). Results pass, fail,
// softfail, neutral, none and permerror, HELO then MAIL FROM, the null sender as
// postmaster@HELO, the whitelist and loopback, the modes, scores once per mail, exp= and the
// default authority explanation, mechanisms and limits whose texts users see. Where
// ringpolicyd differs by decision (spec 16 #6 and #7) the case asserts the documented reply.
// Tag [diff_spf].
#include "../diffcheck.h"
#include "nsd_root.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

using namespace itest;

namespace
{

const char *zone()
{
    return R"Z(pass.example.com. IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
fail.example.com. IN TXT "v=spf1 ip4:198.51.100.1 -all"
soft.example.com. IN TXT "v=spf1 ~all"
neutral.example.com. IN TXT "v=spf1 ?all"
perm.example.com. IN TXT "v=spf1 foo -all"
none.example.com. IN A 192.0.2.9
two.example.com. IN TXT "v=spf1 -all"
two.example.com. IN TXT "v=spf1 +all"
exp.example.com. IN TXT "v=spf1 -all exp=explain.example.com"
explain.example.com. IN TXT "%{i} is not one of %{d}'s designated mail servers."
mx.example.com. IN TXT "v=spf1 mx -all"
mx.example.com. IN MX 10 mail.example.com.
mail.example.com. IN A 192.0.2.5
a.example.com. IN TXT "v=spf1 a:mail.example.com/24 -all"
inc.example.com. IN TXT "v=spf1 include:fail.example.com ~all"
incnone.example.com. IN TXT "v=spf1 include:none.example.com -all"
redir.example.com. IN TXT "v=spf1 redirect=fail.example.com"
macro.example.com. IN TXT "v=spf1 exists:%{ir}.%{l1r-}.ok.example.com -all"
5.2.0.192.u.ok.example.com. IN A 127.0.0.2
voids.example.com. IN TXT "v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all"
loop.example.com. IN TXT "v=spf1 include:loop.example.com -all"
syntax.example.com. IN TXT "v=spf1 ip4:192.0.2.300 -all"
mx11.example.com. IN TXT "v=spf1 mx -all"
mx11.example.com. IN MX 0 m0.example.com.
m0.example.com. IN A 198.51.100.1
mx11.example.com. IN MX 1 m1.example.com.
m1.example.com. IN A 198.51.100.2
mx11.example.com. IN MX 2 m2.example.com.
m2.example.com. IN A 198.51.100.3
mx11.example.com. IN MX 3 m3.example.com.
m3.example.com. IN A 198.51.100.4
mx11.example.com. IN MX 4 m4.example.com.
m4.example.com. IN A 198.51.100.5
mx11.example.com. IN MX 5 m5.example.com.
m5.example.com. IN A 198.51.100.6
mx11.example.com. IN MX 6 m6.example.com.
m6.example.com. IN A 198.51.100.7
mx11.example.com. IN MX 7 m7.example.com.
m7.example.com. IN A 198.51.100.8
mx11.example.com. IN MX 8 m8.example.com.
m8.example.com. IN A 198.51.100.9
mx11.example.com. IN MX 9 m9.example.com.
m9.example.com. IN A 198.51.100.10
mx11.example.com. IN MX 10 m10.example.com.
m10.example.com. IN A 198.51.100.11
helo-fail.example.org. IN TXT "v=spf1 -all"
helo-pass.example.org. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
helo-perm.example.org. IN TXT "v=spf1 ip4 -all"
)Z";
}

std::vector<std::string> req(const std::string &ip, const std::string &helo,
                             const std::string &sender, const std::string &instance)
{
    return rq({{"client_address", ip},
               {"helo_name", helo},
               {"sender", sender},
               {"instance", instance},
               {"client_name", "unknown"},
               {"reverse_client_name", "unknown"}});
}

std::string plugin(const std::string &extra)
{
    return "\n  <Plugin spf>\n    module = \"SPF\"\n    hostname = \"mx.test.example\"\n" + extra +
           "  </Plugin>";
}

const char *header = "\n  <Plugin header>\n    module = \"AddScoreHeader\"\n  </Plugin>";

} // namespace

TEST_CASE("SPF plugin: Perl mtpolicyd 2.05 vs ringpolicyd on one nsd", "[diff_spf]")
{
    spfit::NsdRoot nsd;
    bool ok = nsd.serve(zone());
    INFO(nsd.error());
    REQUIRE(ok);
    // Net::DNS in the Perl daemon (inherited environment); c-ares ignores port: here.
    setenv("RES_NAMESERVERS", "127.0.0.1", 1);
    setenv("RES_OPTIONS", ("port:" + std::to_string(nsd.port())).c_str(), 1);

    std::vector<VhostSpec> vhosts = {
        {"std", plugin("    pass_score = -10\n    fail_score = 5\n") + header, ""},
        {"d10_perm_passive",
         plugin("    permerror_mode = passive\n    permerror_score = 15\n") + header, ""},
        {"modes",
         plugin("    softfail_mode = reject\n    pass_mode = accept\n"
                "    reject_message = \"no: %LOCAL_EXPL% / %AUTH_EXPL%\"\n"),
         ""},
        {"soft_dunno", plugin("    softfail_mode = dunno\n    fail_mode = passive\n"), ""},
        {"auth", plugin("    reject_message = \"%AUTH_EXPL%\"\n"), ""},
        {"white", plugin("    whitelist = \"198.51.100.0/24, 192.0.2.5 2001:db8::/32\"\n"), ""},
        {"nohelo", plugin("    check_helo = off\n"), ""},
        {"perm_defer", plugin("    permerror_mode = defer\n"), ""},
        {"temp_dunno", plugin("    temperror_mode = dunno\n"), ""},
        {"limits", plugin("    max_void_dns_lookups = 3\n"), ""},
        {"off", plugin("    enabled = off\n"), ""},
        {"uc",
         "\n  <Plugin set>\n    module = \"SetField\"\n    key = \"spf_fail\"\n"
         "    value = \"passive\"\n  </Plugin>\n  <Plugin off>\n    module = \"SetField\"\n"
         "    key = \"spf_on\"\n    value = \"off\"\n  </Plugin>" +
             plugin("    uc_fail_mode = spf_fail\n    uc_softfail_mode = spf_none\n"
                    "    softfail_mode = reject\n"),
         ""},
        {"uc_off",
         "\n  <Plugin off>\n    module = \"SetField\"\n    key = \"spf_on\"\n"
         "    value = \"off\"\n  </Plugin>" +
             plugin("    uc_enabled = spf_on\n"),
         ""},
        {"once",
         plugin("    softfail_score = 2\n    fail_score = 5\n    fail_mode = passive\n") + header,
         ""},
    };
    std::string globals = "dns_servers = \"" + nsd.servers() + "\"\n";
    DiffRig rig(vhosts, globals);
    ITEST_START_RIG(rig);

    const std::string ip = "192.0.2.5";
    const std::string fail_text = "reject SPF validation failed: fail.example.com: Sender is not "
                                  "authorized by default to use 'u@fail.example.com' in 'mfrom' "
                                  "identity (mechanism '-all' matched)";
    std::vector<DiffCase> cases = {
        // appendix D #10
        {"std", req(ip, "", "u@pass.example.com", "i1"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req(ip, "", "u@fail.example.com", "i2"), fail_text, "", ""},
        {"std", req(ip, "", "u@soft.example.com", "i3"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"std", req(ip, "", "u@perm.example.com", "i4"),
         "reject spf mfrom check failed: perm.example.com: Unknown mechanism type 'foo' in "
         "'v=spf1' record",
         "", ""},
        {"d10_perm_passive", req(ip, "", "u@perm.example.com", "i5"),
         "PREPEND X-MtScore: YES score=15 [spf=15]", "", ""},
        // the other results
        {"std", req(ip, "", "u@neutral.example.com", "i6"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"std", req(ip, "", "u@none.example.com", "i7"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"std", req(ip, "", "u@nowhere.example.com", "i8"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"std", req(ip, "", "u@two.example.com", "i9"),
         "reject spf mfrom check failed: two.example.com: Redundant applicable 'v=spf1' sender "
         "policies found",
         "", ""},
        {"std", req(ip, "", "u@syntax.example.com", "i10"),
         "reject spf mfrom check failed: syntax.example.com: Junk encountered in mechanism "
         "'ip4:192.0.2.300'",
         "", ""},
        // HELO first, then MAIL FROM; the null sender as postmaster@HELO
        {"std", req(ip, "helo-fail.example.org", "u@pass.example.com", "i11"),
         "reject SPF validation failed: helo-fail.example.org: Sender is not authorized by default "
         "to use 'helo-fail.example.org' in 'helo' identity (mechanism '-all' matched)",
         "", ""},
        {"std", req(ip, "helo-pass.example.org", "u@fail.example.com", "i12"), fail_text, "", ""},
        {"std", req(ip, "helo-pass.example.org", "", "i13"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req("198.51.100.7", "helo-pass.example.org", "", "i14"),
         "reject SPF validation failed: helo-pass.example.org: Sender is not authorized by default "
         "to use 'helo-pass.example.org' in 'helo' identity (mechanism '-all' matched)",
         "", ""},
        {"std", req(ip, "helo-perm.example.org", "u@pass.example.com", "i15"),
         "reject spf helo check failed: helo-perm.example.org: Missing required IPv4 address in "
         "'ip4'",
         "", ""},
        {"std", req(ip, "nohost.example.org", "u@fail.example.com", "i16"), fail_text, "", ""},
        // mechanisms, modifiers, macros
        {"std", req(ip, "", "u@mx.example.com", "i17"), "PREPEND X-MtScore: NO score=-10 [spf=-10]",
         "", ""},
        {"std", req("192.0.2.77", "", "u@a.example.com", "i18"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req("198.51.100.9", "", "u@a.example.com", "i19"),
         "reject SPF validation failed: a.example.com: Sender is not authorized by default to use "
         "'u@a.example.com' in 'mfrom' identity (mechanism '-all' matched)",
         "", ""},
        {"modes", req(ip, "", "u@inc.example.com", "i20"),
         "reject no: inc.example.com: Sender is not authorized by default to use "
         "'u@inc.example.com' in 'mfrom' identity, however domain is not currently prepared for "
         "false failures (mechanism '~all' matched) / ",
         "", ""},
        {"std", req(ip, "", "u@incnone.example.com", "i21"),
         "reject spf mfrom check failed: incnone.example.com: Included domain 'none.example.com' "
         "has no applicable sender policy",
         "", ""},
        {"std", req(ip, "", "u@redir.example.com", "i22"),
         "reject SPF validation failed: redir.example.com ... fail.example.com: Sender is not "
         "authorized by default to use 'u@redir.example.com' in 'mfrom' identity (mechanism '-all' "
         "matched)",
         "", ""},
        {"std", req(ip, "", "u@macro.example.com", "i23"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req(ip, "", "u-x@macro.example.com", "i24"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req(ip, "", "u@voids.example.com", "i25"),
         "reject spf mfrom check failed: voids.example.com: Maximum void DNS look-ups limit (2) "
         "exceeded",
         "", ""},
        {"limits", req(ip, "", "u@voids.example.com", "i26"),
         "reject SPF validation failed: voids.example.com: Sender is not authorized by default to "
         "use 'u@voids.example.com' in 'mfrom' identity (mechanism '-all' matched)",
         "", ""},
        {"std", req(ip, "", "u@loop.example.com", "i27"),
         "reject spf mfrom check failed: loop.example.com ... loop.example.com: Maximum "
         "DNS-interactive terms limit (10) exceeded",
         "", ""},
        {"std", req("2001:db8::5", "", "u@pass.example.com", "i28"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]", "", ""},
        {"std", req("2001:db9::5", "", "u@pass.example.com", "i29"),
         "reject SPF validation failed: pass.example.com: Sender is not authorized by default to "
         "use 'u@pass.example.com' in 'mfrom' identity (mechanism '-all' matched)",
         "", ""},
        // modes and templates
        {"modes", req(ip, "", "u@soft.example.com", "i30"),
         "reject no: soft.example.com: Sender is not authorized by default to use "
         "'u@soft.example.com' in 'mfrom' identity, however domain is not currently prepared for "
         "false failures (mechanism '~all' matched) / ",
         "", ""},
        {"modes", req(ip, "", "u@pass.example.com", "i31"), "dunno", "", ""},
        {"modes", req(ip, "", "u@fail.example.com", "i32"),
         "reject no: fail.example.com: Sender is not authorized by default to use "
         "'u@fail.example.com' in 'mfrom' identity (mechanism '-all' matched) / See "
         "http://www.fail.example.com/why/id=u%40fail.example.com;ip=192.0.2.5;r=mx.test.example",
         "", ""},
        {"soft_dunno", req(ip, "", "u@soft.example.com", "i33"), "dunno", "", ""},
        {"soft_dunno", req(ip, "", "u@fail.example.com", "i34"), "dunno", "", ""},
        {"auth", req(ip, "", "u@exp.example.com", "i35"),
         "reject 192.0.2.5 is not one of exp.example.com's designated mail servers.", "", ""},
        {"auth", req(ip, "", "u@fail.example.com", "i36"),
         "reject See "
         "http://www.fail.example.com/why/id=u%40fail.example.com;ip=192.0.2.5;r=mx.test.example",
         "", ""},
        // exempt clients, disabled
        {"white", req(ip, "", "u@fail.example.com", "i37"), "dunno", "", ""},
        {"white", req("198.51.100.200", "", "u@fail.example.com", "i38"), "dunno", "", ""},
        {"white", req("2001:db8::1", "", "u@fail.example.com", "i39"), "dunno", "", ""},
        {"white", req("192.0.2.6", "", "u@fail.example.com", "i40"),
         "reject SPF validation failed: fail.example.com: Sender is not authorized by default to "
         "use 'u@fail.example.com' in 'mfrom' identity (mechanism '-all' matched)",
         "", ""},
        {"std", req("127.0.0.1", "", "u@fail.example.com", "i41"), "PREPEND X-MtScore: NO score=0",
         "", ""},
        {"std", req("::1", "", "u@fail.example.com", "i42"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"off", req(ip, "", "u@fail.example.com", "i43"), "dunno", "", ""},
        // one SPF score per mail: the HELO check's softfail scores, the MAIL FROM fail not
        {"once", req(ip, "soft.example.com", "u@fail.example.com", "i48"),
         "PREPEND X-MtScore: NO score=2 [spf=2]", "", ""},
        {"once", req(ip, "", "u@fail.example.com", "i49"), "PREPEND X-MtScore: YES score=5 [spf=5]",
         "", ""},
        // user-configurable modes (spec 12.5): a session value replaces the option
        {"uc", req(ip, "", "u@fail.example.com", "i50"), "dunno", "", ""},
        {"uc", req(ip, "", "u@soft.example.com", "i51"),
         "reject SPF validation failed: soft.example.com: Sender is not authorized by default to "
         "use 'u@soft.example.com' in 'mfrom' identity, however domain is not currently prepared "
         "for false failures (mechanism '~all' matched)",
         "", ""},
        {"uc_off", req(ip, "", "u@fail.example.com", "i52"), "dunno", "", ""},
        // RFC 7208 4.6.4 (the suite's arbiter) where Mail::SPF 2.009 differs: more than 10 MX
        // names is a permerror; Mail::SPF looks up the first 10 (so .11 matches the 10th)
        {"std", req("198.51.100.10", "", "u@mx11.example.com", "i53"),
         "PREPEND X-MtScore: NO score=-10 [spf=-10]",
         "reject spf mfrom check failed: mx11.example.com: Maximum MX names per 'mx' mechanism "
         "limit (10) exceeded",
         "RFC 7208 4.6.4 and the openspf suite (mx-limit) over Mail::SPF 2.009"},
        // decisions of spec 16
        {"perm_defer", req(ip, "", "u@perm.example.com", "i44"),
         "reject spf mfrom check failed: perm.example.com: Unknown mechanism type 'foo' in "
         "'v=spf1' record",
         "defer spf mfrom check failed: perm.example.com: Unknown mechanism type 'foo' in "
         "'v=spf1' record",
         "spec 16 #6: permerror_mode honoured"},
        {"temp_dunno", req(ip, "", "u@perm.example.com", "i45"), "dunno",
         "reject spf mfrom check failed: perm.example.com: Unknown mechanism type 'foo' in "
         "'v=spf1' record",
         "spec 16 #6: temperror_mode applies to temperror only"},
        {"nohelo", req(ip, "helo-pass.example.org", "", "i46"), "<closed>", "dunno",
         "spec 16 #7: null sender without HELO check skipped"},
        {"nohelo", req(ip, "helo-fail.example.org", "u@fail.example.com", "i47"), fail_text, "",
         ""},
    };
    run_cases(rig, vhosts, cases, 20000);
    unsetenv("RES_NAMESERVERS");
    unsetenv("RES_OPTIONS");
}

TEST_CASE("SPF plugin: temperror when the DNS server never answers", "[diff_spf]")
{
    // A UDP socket that is never read: every query to it times out.
    int hole = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    REQUIRE(hole >= 0);
    REQUIRE(bind(hole, (sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(hole, (sockaddr *)&a, &alen) == 0);
    std::string port = std::to_string(ntohs(a.sin_port));
    setenv("RES_NAMESERVERS", "127.0.0.1", 1);
    setenv("RES_OPTIONS", ("port:" + port + " retrans:1 retry:1").c_str(), 1);
    std::vector<VhostSpec> vhosts = {
        {"std", plugin("    temperror_score = 3\n") + header, ""},
        {"passive", plugin("    temperror_mode = passive\n    temperror_score = 3\n") + header, ""},
        {"reject", plugin("    temperror_mode = reject\n"), ""},
    };
    DiffRig rig(vhosts, "dns_servers = \"127.0.0.1:" + port + "\"\n");
    ITEST_START_RIG(rig);
    const std::string text =
        "spf mfrom check failed: fail.example.com: Time-out on DNS 'TXT' lookup of "
        "'fail.example.com'";
    std::vector<DiffCase> cases = {
        {"std", req("192.0.2.5", "", "u@fail.example.com", "t1"), "defer " + text, "", ""},
        {"passive", req("192.0.2.5", "", "u@fail.example.com", "t2"),
         "PREPEND X-MtScore: NO score=3 [spf=3]", "", ""},
        {"reject", req("192.0.2.5", "", "u@fail.example.com", "t3"), "defer " + text,
         "reject " + text, "spec 16 #6: temperror_mode honoured"},
    };
    run_cases(rig, vhosts, cases, 30000);
    unsetenv("RES_NAMESERVERS");
    unsetenv("RES_OPTIONS");
    close(hole);
}
