// fault_ldap.cpp: the LDAP server down under a steady load of 64 connections (issue 8), with a
// real slapd on loopback (tests/integration/ldap/common.h): LdapUserConfig (on_error = continue;
// the Ldap connection's timeout 2 s) loads each user's limit and description, and Conditions
// reject on them ("reject limit above 15" for bob, "reject description first" for alice), so a
// healthy answer is a reject and the degradation is "dunno" (the chain goes on without the
// user's settings). Two faults:
//  - slapd killed for 3 s and started again: searches fail at once (connection lost, then
//    refused while the client backs off), every request is answered (reject or dunno), none
//    closed; rejects are back within the LDAP client's longest backoff (10 s, policy/ldap.c) +
//    1 s of the restart;
//  - slapd silent for 3 s (SIGSTOP: the connection stays open, nobody reads): searches wait out
//    the connection's timeout and are abandoned, every request is answered within it (+ 1 s on a
//    busy box); rejects are back within the timeout + 1 s of SIGCONT.
// Recovery is measured from the server's return to the first request started after it that got
// a reject. Figures: one JSON line per fault.
#include "fault_load.h"
#include "../ldap/common.h"

using namespace itest;
using namespace faultit;
using namespace ldaptest;

namespace
{

constexpr int kTimeoutS = 2; /* the Ldap connection's timeout */

/* bob and alice in turn: both are found, and both are rejected on what LDAP holds for them. */
std::string user_req(uint64_t seq)
{
    return encode_request(
        postfix_request({{"instance", "l" + std::to_string(seq)},
                         {"sasl_username", seq % 2 ? "alice@example.com" : "bob@example.com"}}));
}

/* Runs fn (which starts slapd) without MALLOC_PERTURB_ in the environment, which meson test sets
 * and slapd inherits: OpenLDAP 2.5's slapd with it stops answering a connection that carries
 * some 30 searches at once (searches wait, the connection is closed, new connects time out),
 * while it_ldap's lighter load passes. The daemon keeps running with it. */
void without_perturb(const std::function<void()> &fn)
{
    const char *v = getenv("MALLOC_PERTURB_");
    std::string saved = v ? v : "";
    unsetenv("MALLOC_PERTURB_");
    fn();
    if (v)
        setenv("MALLOC_PERTURB_", saved.c_str(), 1);
}

struct Run {
    Window before, during, after;
    int64_t recovery_ms = -1;
};

/* Runs the load 2.5 s, calls down(), waits 3 s, calls up() (true when the server is back),
 * runs 12 s more, and prints the fault's line. The before window ends 250 ms ahead of down()
 * (requests in flight then belong to the fault). */
Run run_fault(const std::string &fault, const std::function<void()> &down,
              const std::function<bool()> &up)
{
    without_perturb([] { slapd(); });
    uint16_t port = free_tcp_port();
    std::string conf = simple_config(
        port, chain(uc_opts("(mail=%s)", "    on_error = \"continue\"\n")),
        "shards = 2\n" +
            conn_block(slapd().port(), "  timeout = " + std::to_string(kTimeoutS) + "\n"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    Load load(port, 64, user_req);
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    down();
    sleep_ms(3000);
    bool back = up();
    int64_t t2 = now_ms();
    sleep_ms(12000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    Run r;
    r.before = Load::window(s, t0, t1 - 250);
    r.during = Load::window(s, t1 - 250, t2);
    r.after = Load::window(s, t2, t3);
    int64_t healthy = -1;
    for (auto &x : s)
        if (x.start_ms >= t2 && x.outcome == Outcome::Reply && action_word(x.action) == "reject" &&
            (healthy < 0 || x.start_ms < healthy))
            healthy = x.start_ms;
    r.recovery_ms = healthy < 0 ? -1 : healthy - t2;
    print_json(fault, Load::json("before", r.before) + "," + Load::json("during", r.during) + "," +
                          Load::json("after", r.after) + ",\"down_ms\":" + std::to_string(t2 - t1) +
                          ",\"recovery_ms\":" + std::to_string(r.recovery_ms));
    std::string notes;
    for (auto &l : split_lines(d->log()))
        if (l.find("plugin ldap_uc failed") == std::string::npos && notes.size() < 4000)
            notes += l + "\n";
    INFO(notes);
    REQUIRE(back);
    REQUIRE(d->alive());
    CHECK(d->stop() == 0);
    return r;
}

/* What both faults must keep: every request answered, a reject when LDAP answered, dunno when
 * it did not. */
void check_answered(Run r)
{
    CHECK(r.before.answered > 100);
    CHECK(r.before.actions["reject"] == r.before.answered);
    CHECK(r.during.answered > 0);
    CHECK(r.during.closed + r.during.timeouts + r.during.connect_failed == 0);
    CHECK(r.during.actions["reject"] + r.during.actions["dunno"] == r.during.answered);
    CHECK(r.during.actions["dunno"] > 0); /* the degradation was used */
    CHECK(r.after.closed + r.after.timeouts + r.after.connect_failed == 0);
    CHECK(r.after.actions["reject"] + r.after.actions["dunno"] == r.after.answered);
    CHECK(r.recovery_ms >= 0);
}

} // namespace

TEST_CASE("backends: slapd killed and restarted", "[fault][ldap]")
{
    Run r = run_fault(
        "ldap_restart", [] { slapd().kill_now(); },
        [] {
            bool ok = false;
            without_perturb([&ok] { ok = slapd().start(); });
            return ok;
        });
    check_answered(r);
    CHECK(r.recovery_ms <= 11000); /* backoff max 10 s + 1 s */
}

TEST_CASE("backends: slapd silent (SIGSTOP) and continued", "[fault][ldap_silent]")
{
    Run r = run_fault(
        "ldap_silent", [] { REQUIRE(slapd().pause()); }, [] { return slapd().resume(); });
    check_answered(r);
    CHECK(r.during.max_ms < (kTimeoutS + 1) * 1000.0); /* within the search's timeout */
    CHECK(r.recovery_ms <= (kTimeoutS + 1) * 1000);
}
