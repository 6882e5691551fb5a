// exec_test.cpp: processing one request on a shard without the engine: POL_WAIT and resume,
// the deadline while waiting (answer first, release later), requests of one instance
// serialised on its session, the owner shard of an instance, and the result line.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>
#include <xxhash.h>

#include "kit.hpp"

extern "C" {
#include "exec.h"
#include "server.h"
}

namespace
{

struct Outcome {
    pol_req_outcome outcome;
    bool final;
    std::string reply;
    std::string line_1499us, line_1500us; // result lines as if sent that long after the start
};

std::vector<Outcome> outcomes;

void record(pol_req *r)
{
    char a[512], b[512];
    size_t na = pol_exec_result_line(r, r->start_us + 1499, a, sizeof a);
    size_t nb = pol_exec_result_line(r, r->start_us + 1500, b, sizeof b);
    outcomes.push_back({r->outcome, r->final, r->reply ? std::string(r->reply, r->reply_len) : "",
                        std::string(a, na), std::string(b, nb)});
    if (r->final)
        pol_shard_req_free(r);
}

struct Shard {
    pol_server *srv = nullptr;
    pol_shard ps{};
    bool ok = false;
    explicit Shard(const std::string &conf)
    {
        probe_register();
        char err[1024];
        ok = pol_server_from_text("test.conf", conf.c_str(), &srv, err, sizeof err) == 0;
        INFO(err);
        REQUIRE(ok);
        REQUIRE(pol_shard_init(&ps, srv, nullptr, 0, 1, 16, err, sizeof err) == 0);
        outcomes.clear();
    }
    ~Shard()
    {
        pol_shard_fini(&ps);
        pol_server_free(srv);
    }
    // Builds a request from "name=value" lines and starts it.
    pol_req *start(const std::string &text)
    {
        std::string wire = text + "\n";
        pol_proto_attr attrs[64];
        pol_proto_limits lim;
        pol_proto_limits_default(&lim);
        lim.attrs_max = 64;
        pol_proto_parser pp;
        pol_proto_parser_init(&pp, &lim);
        uint32_t count = 0;
        size_t used = 0;
        REQUIRE(pol_proto_parse(&pp, wire.data(), wire.size(), attrs, &count, &used) ==
                POL_PROTO_REQUEST);
        pol_req *r = pol_shard_req_new(&ps, wire.data(), attrs, count);
        REQUIRE(r != nullptr);
        r->vhost = &srv->vhosts[0];
        r->done = record;
        pol_exec_begin(&ps, r);
        return r;
    }
};

const char *rq(const char *inst)
{
    static std::string s;
    s = std::string("request=smtpd_access_policy\ninstance=") + inst + "\n";
    return s.c_str();
}

} // namespace

TEST_CASE("POL_WAIT: the chain goes on after pol_req_resume", "[exec]")
{
    Shard sh(vhost(probe("slow", "wait = 1") + probe("next", "action = after-wait")));
    pol_req *r = sh.start(rq("a"));
    REQUIRE(outcomes.empty());
    CHECK(r->phase == POL_PHASE_PLUGIN_WAIT);
    REQUIRE(probe_waiting == r);
    pol_req_resume(r);
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].final);
    CHECK(outcomes[0].outcome == POL_OUT_REPLY);
    CHECK(outcomes[0].reply == "action=after-wait\n\n");
}

TEST_CASE("POL_WAIT inside a nested sub-chain resumes at the right depth", "[exec]")
{
    Shard sh(vhost("<Plugin outer>\nmodule = Probe\nsub = adopt\n" + probe("slow", "wait = 1") +
                   probe("inner", "action = nested") + "</Plugin>\n"));
    pol_req *r = sh.start(rq("a"));
    REQUIRE(outcomes.empty());
    pol_req_resume(r);
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].reply == "action=nested\n\n");
}

TEST_CASE("deadline while a plugin waits: answer now, release after the resume", "[exec]")
{
    Shard sh(memory_cache() +
             vhost(probe("slow", "wait = 1\nset = touched=yes") + probe("next", "action = never")));
    pol_req *r = sh.start(rq("inst-t"));
    pol_exec_timeout(r);
    REQUIRE(outcomes.size() == 1);
    CHECK_FALSE(outcomes[0].final);
    CHECK(outcomes[0].outcome == POL_OUT_TIMEOUT);
    CHECK(sh.ps.stats.timeouts == 1);
    pol_req_resume(r); // the operation came back: no chain, store, release
    REQUIRE(outcomes.size() == 2);
    CHECK(outcomes[1].final);
    CHECK(outcomes[1].outcome == POL_OUT_TIMEOUT);
    CHECK(sh.ps.free_req_count == sh.ps.req_count);
}

TEST_CASE("requests of one instance wait for its session and see each other's changes", "[exec]")
{
    Shard sh(memory_cache() +
             vhost(probe("slow", "wait = 1\nscore = 2.5") + probe("show", "keyvar = s:score")));
    pol_req *a = sh.start(rq("same"));
    pol_req *b = sh.start(rq("same"));
    CHECK(b->phase == POL_PHASE_SESSION_WAIT);
    pol_req *c = sh.start(rq("other")); // another instance is not held up
    CHECK(c->phase == POL_PHASE_PLUGIN_WAIT);
    pol_req_resume(a);
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].reply == "action=2.5\n\n");
    // b got the session and is now waiting in its own plugin step.
    REQUIRE(probe_waiting == b);
    pol_req_resume(b);
    REQUIRE(outcomes.size() == 2);
    CHECK(outcomes[1].reply == "action=5\n\n");
    pol_req_resume(c);
    REQUIRE(outcomes.size() == 3);
    CHECK(outcomes[2].reply == "action=2.5\n\n");
}

TEST_CASE("deadline while queued for the session: answered and released at once", "[exec]")
{
    Shard sh(memory_cache() +
             vhost(probe("slow", "wait = 1\nscore = 1") + probe("show", "keyvar = s:score")));
    pol_req *a = sh.start(rq("q"));
    pol_req *b = sh.start(rq("q"));
    REQUIRE(b->phase == POL_PHASE_SESSION_WAIT);
    pol_exec_timeout(b);
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].final);
    CHECK(outcomes[0].outcome == POL_OUT_TIMEOUT);
    pol_req_resume(a);
    REQUIRE(outcomes.size() == 2);
    CHECK(outcomes[1].reply == "action=1\n\n");
    pol_req *c = sh.start(rq("q")); // the session is free again
    pol_req_resume(c);
    CHECK(outcomes.back().reply == "action=2\n\n");
}

TEST_CASE("the owner shard of an instance", "[exec]")
{
    Shard none(vhost(probe("p", "")));
    pol_req *r = none.start(rq("abc"));
    CHECK(pol_exec_owner(none.srv, r, 1, 4) == 1); // None: processed where it arrived
    Shard mem(memory_cache() + vhost(probe("p", "")));
    r = mem.start(rq("abc"));
    CHECK(pol_exec_owner(mem.srv, r, 1, 4) == XXH3_64bits("abc", 3) % 4);
    r = mem.start("request=smtpd_access_policy\n");
    CHECK(pol_exec_owner(mem.srv, r, 3, 4) == 3); // no instance: a throw-away session
}

TEST_CASE("the result line (spec 5.3) with real milliseconds", "[exec]")
{
    Shard sh(vhost(probe("p1", "") + probe("rbl", "action = reject blocked")));
    sh.start("request=smtpd_access_policy\ninstance=8045F2AB23.A1B2C3\n");
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].line_1499us == "test: instance=8045F2AB23.A1B2C3, type=smtpd_access_policy, "
                                     "t=1ms, plugin=rbl, result=reject blocked");
    CHECK(outcomes[0].line_1500us.find(", t=2ms, ") != std::string::npos);
    sh.start("client_address=1.2.3.4\n"); // no request, no instance: empty fields (16 #12)
    REQUIRE(outcomes.size() == 2);
    CHECK(outcomes[1].line_1499us ==
          "test: instance=, type=, t=1ms, plugin=rbl, result=reject blocked");
}

TEST_CASE("the result line keeps NUL bytes of request values", "[exec]")
{
    Shard sh(vhost(probe("p1", "keyvar = instance")));
    static const char rq_nul[] = "request=smtpd_access_policy\ninstance=a\0b\n";
    static const char line[] = "test: instance=a\0b, type=smtpd_access_policy, t=1ms, "
                               "plugin=p1, result=a\0b";
    sh.start(std::string(rq_nul, sizeof rq_nul - 1));
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].line_1499us == std::string(line, sizeof line - 1));
}

TEST_CASE("the testkit keeps the last result line", "[exec]")
{
    Kit k(vhost(probe("p1", "action = ok")));
    k.ask("request=smtpd_access_policy\ninstance=x\n");
    std::string l = k.line();
    CHECK(l.rfind("test: instance=x, type=smtpd_access_policy, t=", 0) == 0);
    const std::string tail = "ms, plugin=p1, result=ok";
    REQUIRE(l.size() > tail.size());
    CHECK(l.compare(l.size() - tail.size(), tail.size(), tail) == 0);
}
