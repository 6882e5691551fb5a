// eval_test.cpp: the SPF evaluator (policy/spf/eval.c) against the openspf RFC 7208 suite with
// the in-process fake resolver, answers delivered both at once and later; then Mail::SPF's
// explanation texts, the limits at N and N+1, and the resolver contract (refused lookups,
// stale memory). Tag [spf_eval].
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include "fake_dns.hpp"
#include "rfc7208_suite.hpp"

using spftest::Check;
using spftest::evaluate;
using spftest::FakeDns;
using spftest::Outcome;

namespace
{

FakeDns scenario_dns(int scenario)
{
    FakeDns d;
    for (const auto &r : rfc7208::zone())
        if (r.scenario == scenario)
            d.add(r.name, r.type, r.data);
    return d;
}

// The suite's driver: a null sender means postmaster@HELO (RFC 7208 2.4).
Check suite_check(const rfc7208::Test &t)
{
    Check c;
    c.scope = POL_SPF_SCOPE_MFROM;
    c.identity = t.mailfrom.empty() ? "postmaster@" + t.helo : t.mailfrom;
    c.ip = t.host;
    c.helo = t.helo;
    return c;
}

struct SuiteRun {
    int passed = 0, failed = 0;
    std::string report;
};

SuiteRun run_suite(bool async)
{
    SuiteRun s;
    for (const auto &t : rfc7208::tests()) {
        FakeDns dns = scenario_dns(t.scenario);
        dns.async = async;
        Outcome o = evaluate(dns, suite_check(t));
        bool ok = std::find(t.results.begin(), t.results.end(), o.result) != t.results.end();
        if (ok && t.has_explanation)
            ok = o.has_auth && o.auth == t.explanation;
        if (ok) {
            s.passed++;
            continue;
        }
        s.failed++;
        s.report += std::string(t.id) + " (" + t.spec + "): got " + o.result + " [" + o.local +
                    "] auth [" + o.auth + "], want " + t.results[0] +
                    (t.has_explanation ? " [" + t.explanation + "]" : "") + "\n";
    }
    return s;
}

} // namespace

TEST_CASE("the openspf RFC 7208 suite passes with answers at once", "[spf_eval]")
{
    SuiteRun s = run_suite(false);
    std::printf("rfc7208 suite, answers at once: %d passed, %d failed of %zu\n", s.passed, s.failed,
                rfc7208::tests().size());
    INFO(s.report);
    CHECK(s.failed == 0);
    CHECK(s.passed == (int)rfc7208::tests().size());
}

TEST_CASE("the openspf RFC 7208 suite passes with answers later", "[spf_eval]")
{
    SuiteRun s = run_suite(true);
    std::printf("rfc7208 suite, answers later: %d passed, %d failed of %zu\n", s.passed, s.failed,
                rfc7208::tests().size());
    INFO(s.report);
    CHECK(s.failed == 0);
}

// ---------------------------------------------------------------------------------------------
// Texts, limits at N and N+1, the resolver contract

namespace
{

Outcome run1(FakeDns &dns, const std::string &identity, const std::string &ip = "192.0.2.1",
             pol_spf_limits lim = {POL_SPF_DNS_TERMS_DEFAULT, POL_SPF_NAMES_PER_TERM_DEFAULT,
                                   POL_SPF_VOID_LOOKUPS_DEFAULT})
{
    Check c;
    c.identity = identity;
    c.ip = ip;
    c.limits = lim;
    return evaluate(dns, c);
}

std::string terms(const std::string &mech, unsigned n)
{
    std::string s;
    for (unsigned i = 0; i < n; i++)
        s += " " + mech;
    return s;
}

} // namespace

TEST_CASE("Mail::SPF's local explanations", "[spf_eval]")
{
    FakeDns dns;
    dns.add("fail.example.com", "TXT", {"v=spf1 -all"});
    dns.add("soft.example.com", "TXT", {"v=spf1 ~all"});
    dns.add("inc.example.com", "TXT", {"v=spf1 include:perm.example.com -all"});
    dns.add("perm.example.com", "TXT", {"v=spf1 foo -all"});
    dns.add("redir.example.com", "TXT", {"v=spf1 redirect=fail.example.com"});
    Outcome o = run1(dns, "u@fail.example.com");
    CHECK(o.result == "fail");
    CHECK(o.local == "fail.example.com: Sender is not authorized by default to use "
                     "'u@fail.example.com' in 'mfrom' identity (mechanism '-all' matched)");
    CHECK(o.mech == "-all");
    CHECK(o.auth == "DEFAULT");
    o = run1(dns, "u@soft.example.com");
    CHECK(o.result == "softfail");
    CHECK(o.local == "soft.example.com: Sender is not authorized by default to use "
                     "'u@soft.example.com' in 'mfrom' identity, however domain is not "
                     "currently prepared for false failures (mechanism '~all' matched)");
    CHECK_FALSE(o.has_auth);
    o = run1(dns, "u@inc.example.com");
    CHECK(o.result == "permerror");
    CHECK(o.local == "inc.example.com ... perm.example.com: Unknown mechanism type 'foo' in "
                     "'v=spf1' record");
    o = run1(dns, "u@redir.example.com");
    CHECK(o.result == "fail");
    CHECK(o.local.rfind("redir.example.com ... fail.example.com: Sender is not authorized", 0) ==
          0);
    o = run1(dns, "u@nothing.example.com");
    CHECK(o.result == "none");
    CHECK(o.local == "nothing.example.com: No applicable sender policy available");
}

TEST_CASE("the DNS-interactive term limit at N and N+1", "[spf_eval]")
{
    FakeDns dns;
    dns.add("host.example.com", "A", {"198.51.100.1"});
    dns.add("n.example.com", "TXT", {"v=spf1" + terms("a:host.example.com", 10) + " -all"});
    dns.add("n1.example.com", "TXT", {"v=spf1" + terms("a:host.example.com", 11) + " -all"});
    Outcome o = run1(dns, "u@n.example.com");
    CHECK(o.result == "fail");
    CHECK(o.limit == POL_SPF_LIMIT_NONE);
    o = run1(dns, "u@n1.example.com");
    CHECK(o.result == "permerror");
    CHECK(o.limit == POL_SPF_LIMIT_DNS_TERMS);
    CHECK(o.local == "n1.example.com: Maximum DNS-interactive terms limit (10) exceeded");
    // configured lower: 3 and 4
    pol_spf_limits lim{3, 10, 2};
    dns.add("three.example.com", "TXT", {"v=spf1" + terms("a:host.example.com", 3) + " -all"});
    dns.add("four.example.com", "TXT", {"v=spf1" + terms("a:host.example.com", 4) + " -all"});
    CHECK(run1(dns, "u@three.example.com", "192.0.2.1", lim).result == "fail");
    CHECK(run1(dns, "u@four.example.com", "192.0.2.1", lim).limit == POL_SPF_LIMIT_DNS_TERMS);
}

TEST_CASE("the void lookup limit at N and N+1", "[spf_eval]")
{
    FakeDns dns;
    dns.add("two.example.com", "TXT", {"v=spf1 a:v1.example.com a:v2.example.com -all"});
    dns.add("three.example.com", "TXT",
            {"v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all"});
    Outcome o = run1(dns, "u@two.example.com");
    CHECK(o.result == "fail");
    o = run1(dns, "u@three.example.com");
    CHECK(o.result == "permerror");
    CHECK(o.limit == POL_SPF_LIMIT_VOID_LOOKUPS);
    CHECK(o.local == "three.example.com: Maximum void DNS look-ups limit (2) exceeded");
}

TEST_CASE("the MX names per term limit at N and N+1", "[spf_eval]")
{
    FakeDns dns;
    for (int i = 0; i < 11; i++) {
        std::string h = "mx" + std::to_string(i) + ".example.com";
        if (i < 10)
            dns.add("ten.example.com", "MX", {h});
        dns.add("eleven.example.com", "MX", {h});
        dns.add(h, "A", {"198.51.100." + std::to_string(i + 1)});
    }
    dns.add("ten.example.com", "TXT", {"v=spf1 mx -all"});
    dns.add("eleven.example.com", "TXT", {"v=spf1 mx -all"});
    Outcome o = run1(dns, "u@ten.example.com", "198.51.100.10");
    CHECK(o.result == "pass");
    o = run1(dns, "u@eleven.example.com", "198.51.100.10");
    CHECK(o.result == "permerror");
    CHECK(o.limit == POL_SPF_LIMIT_NAMES_PER_TERM);
}

TEST_CASE("a resolver that refuses a lookup gives temperror, never a hang", "[spf_eval]")
{
    FakeDns dns;
    dns.add("example.com", "TXT", {"v=spf1 a:host.example.com -all"});
    dns.refuse_after = 0;
    Outcome o = run1(dns, "u@example.com");
    CHECK(o.result == "temperror");
    CHECK(o.done_calls == 0);
    dns.refuse_after = 1; // the record comes, the A lookup is refused
    dns.queries.clear();
    dns.async = true;
    o = run1(dns, "u@example.com");
    CHECK(o.result == "temperror");
    CHECK(o.done_calls == 1);
    CHECK(dns.queries.size() == 2);
}

TEST_CASE("an unusable identity or address ends at once", "[spf_eval]")
{
    FakeDns dns;
    Outcome o = run1(dns, "u@nodots");
    CHECK(o.result == "none");
    CHECK_FALSE(o.waited);
    CHECK(dns.queries.empty());
    o = run1(dns, "u@example.com", "not-an-ip");
    CHECK(o.result == "permerror");
    CHECK(dns.queries.empty());
}
