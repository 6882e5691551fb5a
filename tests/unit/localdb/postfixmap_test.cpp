// postfixmap_test.cpp: the PostfixMap plugin (policy/plugins/postfixmap.c, spec 13.15) through
// the testkit, over tables built by the real postmap: appendix D #7 (the exact test map of
// 2.05's own tests) in hash: and cdb:, actions, the score once per mail, the per-mail cache,
// `enabled` from the session, the failure for addresses of no class, start-up errors.
// Answers marked "2.05:" were observed on the Perl mtpolicyd 2.05 with the same map and
// configuration (also checked by tests/integration/localdb against the running daemon).
#include <catch2/catch.hpp>

#include "../plugins/plugin_kit.hpp"
#include "ldb_testutil.hpp"

using namespace plugkit;
using namespace ldbtest;

namespace
{

// Appendix D #7: 2.05's t/plugin-postfixmap.t map.
const std::string d7_map = "123.123.123.123 OK\n"
                           "123.123.124 OK\n"
                           "123.124 OK\n"
                           "124 OK\n"
                           "fe80::250:56ff:fe85:56f5 OK\n"
                           "fe80::250:56ff:fe84 OK\n"
                           "fe81 OK\n"
                           "111.111.111.111 1\n"
                           "111.111.111.11 DUNNO\n"
                           "111.111.111.1 REJECT\n";

std::string pfm(const std::string &db_file, const std::string &extra = "")
{
    return plugin("pfm", "PostfixMap", "    db_file = \"" + db_file + "\"\n" + extra);
}

std::string ip(const std::string &addr)
{
    return req("client_address=" + addr + "\n");
}

} // namespace

TEST_CASE("appendix D #7 in hash: and cdb: tables", "[postfixmap]")
{
    TempDir dir;
    std::string hash_db = postmap(dir, "hash", "map", d7_map);
    postmap(dir, "cdb", "map", d7_map);
    for (std::string db :
         {hash_db, "hash:" + dir.file("map"), "cdb:" + dir.file("map"), dir.file("map.cdb")}) {
        INFO(db);
        Kit k(conf(pfm(db, "    match_action = \"dunno\"\n    not_match_action = \"reject "
                           "not on whitelist\"\n")));
        REQUIRE(k.ok());
        const std::string no = reply("reject not on whitelist");
        CHECK(k.ask(ip("192.168.0.0")) == no);
        CHECK(k.ask(ip("123.123.123.123")) == dunno);
        CHECK(k.ask(ip("123.123.124.1")) == dunno);
        CHECK(k.ask(ip("123.124.1.1")) == dunno);
        CHECK(k.ask(ip("124.0.0.1")) == dunno);
        CHECK(k.ask(ip("fe80::250:56ff:fe85:56f5")) == dunno);
        CHECK(k.ask(ip("fe81::250:56ff:eeee:ffff")) == dunno);
        CHECK(k.ask(ip("fe80::250:56ff:fe84:1")) == dunno);
        // 2.05: all digits match, other values are found but do not
        CHECK(k.ask(ip("111.111.111.111")) == dunno);
        CHECK(k.ask(ip("111.111.111.11")) == no);
        CHECK(k.ask(ip("111.111.111.1")) == no);
        // 2.05: the first IPv4 key present decides: 111.111.111.1 is REJECT, 111.111 is absent
        CHECK(k.ask(ip("111.111.111.2")) == no);
        CHECK(k.ask(ip("fe80::1")) == no);
    }
}

TEST_CASE("addresses of no class fail the plugin; no address is nothing", "[postfixmap]")
{
    TempDir dir;
    std::string db = postmap(dir, "hash", "map", d7_map);
    Kit k(conf(pfm(db, "    not_match_action = \"reject no\"\n")));
    REQUIRE(k.ok());
    for (const char *bad : {"FE80::1", "::ffff:1.2.3.4", "unknown", "1.2.3", ""}) {
        INFO(bad);
        CHECK(k.ask(ip(bad)) ==
              "FAILED: plugin pfm failed: ip is neither a valid ipv4 nor ipv6 address.");
    }
    CHECK(k.ask(req("")) == dunno);
}

TEST_CASE("score once per mail, the cached result, enabled from the session", "[postfixmap]")
{
    TempDir dir;
    std::string db = postmap(dir, "hash", "map", d7_map);
    Kit k(conf(set_field("pfm_enabled", "on") +
                   pfm(db, "    score = -5\n    uc_enabled = \"pfm_enabled\"\n") +
                   plugin("hdr", "AddScoreHeader"),
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=m1\nclient_address=123.124.9.9\n")) ==
          reply("PREPEND X-MtScore: NO score=-5 [pfm=-5]"));
    CHECK(k.session("m1", "pfm-result") == "1 123.124 OK");
    CHECK(k.session("m1", "pfm-score") == "1");
    // the same mail again: no second score (and AddScoreHeader's header once per mail too)
    CHECK(k.ask(req("instance=m1\nclient_address=123.124.9.9\n")) == dunno);
    CHECK(k.session("m1", "score") == "-5");
    CHECK(k.session("m1", "score_detail") == "pfm=-5");
    // the cached result decides, whatever the address says now
    CHECK(k.ask(req("instance=m1\nclient_address=192.168.0.1\n")) == dunno);
    CHECK(k.session("m1", "pfm-result") == "1 123.124 OK");
    CHECK(k.session("m1", "score") == "-5");
    CHECK(k.ask(req("instance=m2\nclient_address=192.168.0.1\n")) ==
          reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.session("m2", "pfm-result") == "");
    CHECK(k.ask(req("instance=m3\nclient_address=111.111.111.1\n")) ==
          reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.session("m3", "pfm-result") == "0 111.111.111.1 REJECT");

    Kit off(conf(set_field("pfm_enabled", "off") + pfm(db, "    match_action = \"reject matched\"\n"
                                                           "    uc_enabled = \"pfm_enabled\"\n"),
                 true));
    REQUIRE(off.ok());
    CHECK(off.ask(req("instance=m1\nclient_address=123.124.9.9\n")) == dunno);
    CHECK(off.session("m1", "pfm-result") == "<absent>");
}

TEST_CASE("log lines as 2.05 writes them", "[postfixmap]")
{
    TempDir dir;
    std::string db = postmap(dir, "hash", "map", d7_map);
    LogCapture log;
    REQUIRE(log.ok());
    Kit k(conf(pfm(db)));
    REQUIRE(k.ok());
    CHECK(k.ask(ip("123.123.124.7")) == dunno);
    CHECK(k.ask(ip("10.0.0.1")) == dunno);
    std::string text = log.text();
    CHECK(text.find("client_address 123.123.124.7 matched pfm (123.123.124 OK)") !=
          std::string::npos);
    CHECK(text.find("client_address 10.0.0.1 did not match pfm") != std::string::npos);
}

TEST_CASE("start-up refuses a missing or foreign db_file", "[postfixmap]")
{
    TempDir dir;
    Kit missing(conf(pfm(dir.file("nothing.db"))));
    CHECK_FALSE(missing.ok());
    CHECK(missing.error().find("cannot open " + dir.file("nothing.db") +
                               ": No such file or directory") != std::string::npos);
    std::string text = dir.write("plain", d7_map);
    Kit foreign(conf(pfm(text)));
    CHECK_FALSE(foreign.ok());
    CHECK(foreign.error().find(text + " is not a Berkeley DB hash or cdb file") !=
          std::string::npos);
    Kit none(conf(plugin("pfm", "PostfixMap")));
    CHECK_FALSE(none.ok());
}
