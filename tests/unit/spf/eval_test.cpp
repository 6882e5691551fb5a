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
