/*
 * diffcheck.h: the table runner shared by the differential tests (tests/integration/diff_*.cpp).
 *
 * A case names a virtual host of the rig, a request and the expected reply, written as the
 * actions joined with " | " ("reject test", "dunno"), or "<closed>" when the daemon closes the
 * connection without a reply. Each case is sent to the Perl mtpolicyd, whose reply must equal
 * the expectation (this checks the table itself against 2.05), and to ringpolicyd, whose reply
 * must equal the Perl reply. Where ringpolicyd differs from 2.05 by design, the case carries the
 * decision (spec section 16 row, or the task's rule) and the reply ringpolicyd must give instead;
 * the difference is then asserted explicitly rather than tolerated.
 *
 * Failures print the vhost's configuration, the request, what was expected and what came back
 * (Catch2 INFO), so a report to the product owners can be copied from the test log.
 */
#ifndef ITEST_DIFFCHECK_H
#define ITEST_DIFFCHECK_H

#include "harness.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace itest
{

struct DiffCase {
    std::string vhost;
    std::vector<std::string> attrs;
    std::string expect;      /* both daemons (Perl always) */
    std::string ring_expect; /* set only for a difference by design */
    std::string decision;    /* why ringpolicyd differs, e.g. "spec 16 #12" */
};

/* A Postfix-like request with some attributes replaced (see postfix_request). */
inline std::vector<std::string> rq(std::vector<std::pair<std::string, std::string>> o = {})
{
    return postfix_request(o);
}

inline std::string summarize(const Reply &r)
{
    switch (r.status) {
    case Reply::OK: {
        std::string s;
        for (auto &a : r.actions)
            s += (s.empty() ? "" : " | ") + a;
        if (r.actions.empty())
            s = "<reply without action: " + r.raw + ">";
        return s;
    }
    case Reply::CLOSED:
        return r.raw.empty() ? "<closed>" : "<closed after partial reply: " + r.raw + ">";
    case Reply::TIMEOUT:
        return "<timeout>";
    case Reply::ERROR:
        break;
    }
    return "<error: " + r.raw + ">";
}

inline std::string request_text(const std::vector<std::string> &attrs)
{
    std::string s;
    for (auto &a : attrs)
        s += "    " + a + "\n";
    return s;
}

inline const VhostSpec *find_vhost(const std::vector<VhostSpec> &vhosts, const std::string &name)
{
    for (auto &v : vhosts)
        if (v.name == name)
            return &v;
    return nullptr;
}

/* After a reply that did not come: stop the test case when the daemon died, or when it has
 * stopped answering (three in a row), rather than wait out every remaining case. */
inline void check_still_serving(DiffRig &rig, Impl impl, const std::string &reply, int &unanswered)
{
    if (reply != "<timeout>" && reply.compare(0, 7, "<error:") != 0) {
        unanswered = 0;
        return;
    }
    Daemon &d = rig.daemon(impl);
    if (!d.alive())
        FAIL(impl_name(impl) << " died; its log:\n" << d.log());
    if (++unanswered >= 3)
        FAIL(impl_name(impl) << " stopped answering (3 requests in a row); its log:\n" << d.log());
}

/* Runs every case (CHECK, so one failing case does not hide the others). */
inline void run_cases(DiffRig &rig, const std::vector<VhostSpec> &vhosts,
                      const std::vector<DiffCase> &cases, int timeout_ms = 5000)
{
    int perl_unanswered = 0, ring_unanswered = 0;
    for (size_t i = 0; i < cases.size(); i++) {
        const DiffCase &c = cases[i];
        const VhostSpec *v = find_vhost(vhosts, c.vhost);
        REQUIRE(v != nullptr);
        INFO("case #" << i << " on vhost '" << c.vhost << "'\nconfig:\n"
                      << v->body << (v->body.empty() || v->body.back() != '\n' ? "\n" : "")
                      << "request:\n"
                      << request_text(c.attrs));
        std::string perl = summarize(rig.ask(Impl::Perl, c.vhost, c.attrs, timeout_ms));
        check_still_serving(rig, Impl::Perl, perl, perl_unanswered);
        {
            INFO("Perl mtpolicyd 2.05 replied: " << perl << "\nthe table expects: " << c.expect);
            CHECK(perl == c.expect);
        }
        if (!rig.has_ring())
            continue;
        std::string ring = summarize(rig.ask(Impl::Ring, c.vhost, c.attrs, timeout_ms));
        check_still_serving(rig, Impl::Ring, ring, ring_unanswered);
        if (c.decision.empty()) {
            INFO("ringpolicyd replied: " << ring << "\nPerl mtpolicyd replied: " << perl);
            CHECK(ring == perl);
        } else {
            INFO("documented difference (" << c.decision << "): ringpolicyd must reply "
                                           << c.ring_expect << ", Perl replies " << c.expect
                                           << "; ringpolicyd replied: " << ring);
            CHECK(ring == c.ring_expect);
        }
    }
}

/* Starts the rig or fails the test case with the daemon's log. */
#define ITEST_START_RIG(rig)                                                                       \
    do {                                                                                           \
        bool started_ = (rig).start();                                                             \
        INFO((rig).error());                                                                       \
        REQUIRE(started_);                                                                         \
    } while (0)

/* The same, for a rig that runs only the Perl daemon. */
#define ITEST_START_RIG_PERL_ONLY(rig)                                                             \
    do {                                                                                           \
        bool started_ = (rig).start(false);                                                        \
        INFO((rig).error());                                                                       \
        REQUIRE(started_);                                                                         \
    } while (0)

} // namespace itest

#endif
