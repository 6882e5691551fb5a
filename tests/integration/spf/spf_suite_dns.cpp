// spf_suite_dns.cpp: the openspf RFC 7208 suite through real DNS: each scenario's zonedata is
// served by nsd on loopback (nsd_root.hpp) and every test of the scenario is evaluated on an
// engine shard with the evaluator asking the shard's DNS client (eng_dns: c-ares on the ring)
// through the plugin's adapter (policy/spf/eng.c). Tag [spf_suite_dns].
//
// nsd cannot play the suite's TIMEOUT entries (a server that never answers for some types of
// a name), so a test whose evaluation asks for such an answer (found by running it first on
// the in-process fake resolver of the unit test, which plays them) is counted apart and not
// run here: the unit test (spf_eval) covers it. Every other test must pass.
#include "../../unit/engine/harness.h"
#include "../../unit/spf/fake_dns.hpp"
#include "../../unit/spf/rfc7208_suite.hpp"
#include "nsd_root.hpp"

extern "C" {
#include "eng/dns.h"
#include "spf/spf_eng.h"
}

#include <algorithm>
#include <atomic>
#include <map>
#include <set>

using namespace th;

namespace
{

std::string zone_of(int scenario)
{
    std::string z;
    for (const auto &r : rfc7208::zone()) {
        if (r.scenario != scenario)
            continue;
        std::string t = r.type, line = spfit::zone_name(r.name) + " IN " + t + " ";
        if (t == "TIMEOUT" || t == "SPF")
            continue; // TIMEOUT: not servable (see above); SPF: the evaluator asks TXT only
        if (t == "TXT") {
            if (r.data.empty())
                line += "\"\"";
            for (const auto &d : r.data)
                line += spfit::zone_txt(d) + " ";
        } else if (t == "MX") {
            std::string x = r.data.at(0);
            line += std::to_string(r.pref) + " " +
                    (x.empty() || x == "." ? "." : spfit::zone_name(spftest::FakeDns::lc(x)));
        } else if (t == "PTR" || t == "CNAME") {
            line += spfit::zone_name(spftest::FakeDns::lc(r.data.at(0)));
        } else {
            line += r.data.at(0);
        }
        z += line + "\n";
    }
    return z;
}

// Types answered before a TIMEOUT entry of a name; a name without TIMEOUT is not listed.
std::map<std::string, std::set<std::string>> timeouts_of(int scenario)
{
    std::map<std::string, std::set<std::string>> m;
    std::map<std::string, std::set<std::string>> seen;
    for (const auto &r : rfc7208::zone()) {
        if (r.scenario != scenario)
            continue;
        if (std::string(r.type) == "TIMEOUT")
            m[r.name] = seen[r.name];
        else
            seen[r.name].insert(r.type);
    }
    return m;
}

spftest::Check suite_check(const rfc7208::Test &t)
{
    spftest::Check c;
    c.scope = POL_SPF_SCOPE_MFROM;
    c.identity = t.mailfrom.empty() ? "postmaster@" + t.helo : t.mailfrom;
    c.ip = t.host;
    c.helo = t.helo;
    return c;
}

// Does the test ask (on the fake resolver) for an answer that the suite makes a time-out?
bool needs_timeout(const rfc7208::Test &t)
{
    spftest::FakeDns dns;
    for (const auto &r : rfc7208::zone())
        if (r.scenario == t.scenario)
            dns.add(r.name, r.type, r.data);
    spftest::evaluate(dns, suite_check(t));
    auto to = timeouts_of(t.scenario);
    for (const auto &q : dns.queries) {
        std::string type = q.substr(0, q.find(' ')), name = q.substr(q.find(' ') + 1);
        if (name.rfind("error.", 0) == 0)
            return true;
        auto it = to.find(name);
        if (it != to.end() && !it->second.count(type))
            return true;
    }
    return false;
}

eng_dns *g_dns;

struct ShardEval {
    pol_spf_eng_scratch scratch{};
    pol_spf_eng_stats stats{};
    pol_spf_eng adapter{};
    std::vector<unsigned long long> mem;
    pol_spf_request rq{};
    spftest::Check check;
    std::atomic<bool> done{false};
    spftest::Outcome o;
};

void collect(ShardEval *se)
{
    auto *e = reinterpret_cast<pol_spf_eval *>(se->mem.data());
    se->o.result = pol_spf_result_name(pol_spf_eval_result(e));
    se->o.local = pol_spf_eval_local_expl(e);
    const char *a = pol_spf_eval_auth_expl(e);
    se->o.has_auth = a != nullptr;
    se->o.auth = a ? a : "";
    se->done = true;
}

void on_shard0(eng *e, const std::function<void(eng_shard *)> &fn)
{
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    if (eng_shard_index(sh) == 0)
                        (*static_cast<const std::function<void(eng_shard *)> *>(p))(sh);
                },
                const_cast<std::function<void(eng_shard *)> *>(&fn)) == 0);
}

spftest::Outcome evaluate_dns(Engine &eng, const rfc7208::Test &t)
{
    auto se = std::make_unique<ShardEval>();
    se->mem.resize(pol_spf_eval_bytes() / 8 + 1);
    se->check = suite_check(t);
    se->rq.scope = se->check.scope;
    se->rq.identity = se->check.identity.c_str();
    se->rq.ip = se->check.ip.c_str();
    se->rq.helo = se->check.helo.c_str();
    se->rq.receiver = se->check.receiver.c_str();
    se->rq.default_expl = se->check.default_expl.c_str();
    se->rq.now_s = 1700000000;
    on_shard0(eng.e, [&](eng_shard *) {
        pol_spf_eng_init(&se->adapter, g_dns, &se->scratch, &se->stats);
        pol_spf_resolver res = pol_spf_eng_resolver(&se->adapter);
        auto *e = reinterpret_cast<pol_spf_eval *>(se->mem.data());
        auto done = [](void *ctx, pol_spf_eval *) { collect(static_cast<ShardEval *>(ctx)); };
        if (pol_spf_eval_start(e, &res, &se->check.limits, &se->rq, done, se.get()) ==
            POL_SPF_EVAL_DONE)
            collect(se.get());
    });
    if (!eventually([&] { return se->done.load(); }, 20000))
        FAIL("evaluation did not finish: " << t.id);
    return se->o;
}

} // namespace

TEST_CASE("the openspf RFC 7208 suite through nsd and the shard's DNS client", "[spf_suite_dns]")
{
    spfit::NsdRoot nsd;
    int passed = 0, failed = 0, timeout_only = 0;
    std::string report, skipped;
    for (size_t sc = 0; sc < rfc7208::scenarios().size(); sc++) {
        bool ok = nsd.serve(zone_of((int)sc));
        INFO("scenario " << sc << ": " << nsd.error());
        REQUIRE(ok);
        Engine eng(echo_config(ENG_BACKEND_URING, 1));
        std::string servers = nsd.servers();
        eng_dns_config c;
        eng_dns_config_defaults(&c);
        c.servers = servers.c_str();
        c.timeout_ms = 1000;
        c.tries = 2;
        int rc = -1;
        char err[256] = "";
        on_shard0(eng.e,
                  [&](eng_shard *sh) { rc = eng_dns_create(sh, &c, &g_dns, err, sizeof err); });
        INFO(err);
        REQUIRE(rc == 0);
        for (const auto &t : rfc7208::tests()) {
            if (t.scenario != (int)sc)
                continue;
            if (needs_timeout(t)) {
                timeout_only++;
                skipped += std::string(" ") + t.id;
                continue;
            }
            spftest::Outcome o = evaluate_dns(eng, t);
            bool good = std::find(t.results.begin(), t.results.end(), o.result) != t.results.end();
            if (good && t.has_explanation)
                good = o.has_auth && o.auth == t.explanation;
            if (good) {
                passed++;
                continue;
            }
            failed++;
            report += std::string(t.id) + " (" + t.spec + "): got " + o.result + " [" + o.local +
                      "] auth [" + o.auth + "], want " + t.results[0] +
                      (t.has_explanation ? " [" + t.explanation + "]" : "") + "\n";
        }
        on_shard0(eng.e, [](eng_shard *) { eng_dns_destroy(g_dns); });
        g_dns = nullptr;
    }
    nsd.stop();
    std::printf("rfc7208 suite through nsd: %d passed, %d failed, %d need a time-out (unit test "
                "only):%s\n",
                passed, failed, timeout_only, skipped.c_str());
    INFO(report);
    CHECK(failed == 0);
    CHECK(passed + failed + timeout_only == (int)rfc7208::tests().size());
}
