// session_test.cpp: the working copy of a session (set, get, delete, prefixes, serialisation)
// and the session caches seen from requests: None (a fresh session per request, as 2.05) and
// Memory (one session per instance across requests and ports), once-per-mail flags, score
// summing, and the throw-away session of a request without instance (spec 10, 12.3).
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "kit.hpp"

extern "C" {
#include "session.h"
}

TEST_CASE("working copy: set, replace, delete, prefixes", "[session]")
{
    alignas(8) static char mem[4096];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    REQUIRE(pol_sess_set(&s, &a, "k1", 2, "v1", 2) == 0);
    REQUIRE(pol_sess_set(&s, &a, "rbl-x-result", 12, "127.0.0.2", 9) == 0);
    REQUIRE(pol_sess_set(&s, &a, "rbl-x-score", 11, "1", 1) == 0);
    const pol_sess_ent *e = pol_sess_find(&s, "k1", 2);
    REQUIRE(e != nullptr);
    const char *old = e->val;
    REQUIRE(pol_sess_set(&s, &a, "k1", 2, "v2", 2) == 0);
    CHECK(std::string(pol_sess_find(&s, "k1", 2)->val) == "v2");
    CHECK(std::string(old) == "v1"); // still readable until the request ends
    CHECK(s.live_count == 3);
    CHECK(pol_sess_del_prefix(&s, "rbl-", 4) == 2);
    CHECK(pol_sess_find(&s, "rbl-x-score", 11) == nullptr);
    CHECK(pol_sess_del(&s, "k1", 2));
    CHECK_FALSE(pol_sess_del(&s, "k1", 2));
    CHECK(s.live_count == 0);
    CHECK(pol_sess_serialized_bytes(&s) == 0);
}

TEST_CASE("working copy: serialise and load again, binary values included", "[session]")
{
    alignas(8) static char mem[4096];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    const char bin[] = {'a', '\0', 'b', '\n'};
    REQUIRE(pol_sess_set(&s, &a, "bin", 3, bin, sizeof bin) == 0);
    REQUIRE(pol_sess_set(&s, &a, "empty", 5, "", 0) == 0);
    REQUIRE(pol_sess_set(&s, &a, "gone", 4, "x", 1) == 0);
    pol_sess_del(&s, "gone", 4);
    size_t n = pol_sess_serialized_bytes(&s);
    char *blob = static_cast<char *>(pol_arena_alloc(&a, n));
    pol_sess_serialize(&s, blob);
    pol_session t;
    pol_sess_init(&t);
    REQUIRE(pol_sess_load(&t, &a, blob, n) == 0);
    CHECK(t.live_count == 2);
    CHECK_FALSE(t.dirty);
    const pol_sess_ent *e = pol_sess_find(&t, "bin", 3);
    REQUIRE(e != nullptr);
    CHECK(std::string(e->val, e->val_len) == std::string(bin, sizeof bin));
    CHECK(pol_sess_find(&t, "empty", 5)->val_len == 0);
    CHECK(pol_sess_find(&t, "gone", 4) == nullptr);
    CHECK(pol_sess_load(&t, &a, blob, n - 1) == -EINVAL); // truncated
}

TEST_CASE("working copy: a full arena is reported, not a crash", "[session]")
{
    alignas(8) static char mem[128];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    std::string big(200, 'x');
    CHECK(pol_sess_set(&s, &a, "k", 1, big.data(), big.size()) == -ENOMEM);
    CHECK(s.live_count == 0);
}

TEST_CASE("None: every request gets a fresh session (2.05)", "[session]")
{
    Kit k(vhost(probe("flag", "once = greylist-score\nnoabort = 1") + probe("sc", "score = 5") +
                probe("show", "keyvar = s:score")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req("m1")) == "action=new\naction=5\n\n");
    CHECK(k.ask(req("m1")) == "action=new\naction=5\n\n"); // nothing kept for the instance
    CHECK(k.session("m1", "score") == "<none>");
}

TEST_CASE("Memory: one session per instance, across requests and ports", "[session]")
{
    std::string plugins = probe("flag", "once = greylist-score\nnoabort = 1") +
                          probe("sc", "score = 2.5") + probe("show", "keyvar = s:score");
    Kit k(memory_cache() + "port = \"127.0.0.1:12345,127.0.0.1:12346\"\n" + vhost(plugins) +
          "<VirtualHost 12346>\nname = eom\n" + plugins + "</VirtualHost>\n");
    REQUIRE(k.err == "");
    CHECK(k.ask(req("m1")) == "action=new\naction=2.5\n\n");
    CHECK(k.ask(req("m1"), "12346") == "action=done\naction=5\n\n");
    CHECK(k.ask(req("m2")) == "action=new\naction=2.5\n\n"); // another mail
    CHECK(k.ask(req("m1")) == "action=done\naction=7.5\n\n");
    CHECK(k.session("m1", "score") == "7.5");
    CHECK(k.session("m1", "score_detail") == "sc=2.5, sc=2.5, sc=2.5");
    CHECK(k.session("m1", "_instance") == "m1");
    CHECK(k.session("m1", "greylist-score") == "1");
    CHECK(k.session("m3", "score") == "<none>");
}

TEST_CASE("Memory: a request without instance gets a throw-away session", "[session]")
{
    Kit k(memory_cache() + vhost(probe("set", "set = k=v") + probe("show", "keyvar = s:k") +
                                 probe("flag", "once = f")));
    CHECK(k.ask("request=smtpd_access_policy\n") == "action=v\n\n");
    CHECK(k.ask("request=smtpd_access_policy\n") == "action=v\n\n");
    CHECK(k.ask("request=smtpd_access_policy\ninstance=\n") == "action=v\n\n"); // empty
    CHECK(k.session("", "k") == "<none>");
}

TEST_CASE("Memory: deletions persist", "[session]")
{
    Kit k(memory_cache() +
          vhost("<Plugin s>\nmodule = Probe\nset = a-1=x\n</Plugin>\n"
                "<Plugin clear>\nmodule = ClearFields\nfields_prefix = a-\n</Plugin>\n"));
    REQUIRE(k.err == "");
    k.ask(req("d1"));
    CHECK(k.session("d1", "a-1") == "<none>");
    CHECK(k.session("d1", "_instance") == "d1");
}
