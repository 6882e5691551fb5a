// chain_test.cpp: the chain runner (spec 11.3, 11.4) through the testkit: file order, results
// appended, abort, last match, on_error, nested sub-chains at several depths, error_action.
#include <catch2/catch.hpp>

#include "kit.hpp"

TEST_CASE("D #1: one Action plugin answers every request", "[chain]")
{
    Kit k(vhost("<Plugin a>\nmodule = Action\naction = \"reject test\"\n</Plugin>\n"));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=reject test\n\n");
    CHECK(k.ask("") == "action=reject test\n\n"); // an empty request is processed too
}

TEST_CASE("D #2: the first plugin with a result ends the chain", "[chain]")
{
    Kit k(vhost("<Plugin first>\nmodule = Action\naction = reject\n</Plugin>\n"
                "<Plugin second>\nmodule = Action\naction = other\n</Plugin>\n"));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=reject\n\n");
    CHECK(k.line().find("plugin=first, result=reject") != std::string::npos);
}

TEST_CASE("results without abort accumulate in order; the last plugin with one is the match",
          "[chain]")
{
    Kit k(vhost(probe("p1", "action = a\nnoabort = 1") + probe("p2", "") +
                probe("p3", "action = b\nnoabort = 1") + probe("p4", "action = c") +
                probe("p5", "action = never")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=a\naction=b\naction=c\n\n");
    CHECK(k.line().find("plugin=p4, result=a,b,c") != std::string::npos);
}

TEST_CASE("a result without action counts as a match but the reply is dunno", "[chain]")
{
    Kit k(vhost(probe("quiet", "empty = 1") + probe("after", "action = never")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=dunno\n\n");
    CHECK(k.line().find("plugin=quiet, result=") != std::string::npos);
}

TEST_CASE("no result at all: dunno and an empty last match", "[chain]")
{
    Kit k(vhost(probe("a", "") + probe("b", "")));
    CHECK(k.ask(req()) == "action=dunno\n\n");
    CHECK(k.line().find("plugin=, result=") != std::string::npos);
}

TEST_CASE("on_error = continue logs the failure and goes on", "[chain]")
{
    LogCapture log;
    Kit k(vhost(probe("broken", "fail = boom\non_error = continue\naction = lost") +
                probe("next", "action = ok")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=ok\n\n");
    CHECK(log.text().find("plugin broken failed: boom\n") != std::string::npos);
    CHECK(k.line().find("plugin=next") != std::string::npos);
}

TEST_CASE("a failure without on_error = continue fails the request", "[chain]")
{
    SECTION("no error_action: closed without reply (2.05)")
    {
        Kit k(vhost(probe("broken", "fail = boom\non_error = stop") + probe("next", "action = x")));
        CHECK(k.ask(req()) == "ERR plugin broken failed: boom");
    }
    SECTION("error_action: that action is sent instead")
    {
        Kit k(vhost(probe("broken", "fail = boom"), "error_action = defer_if_permit busy\n"));
        CHECK(k.ask(req()) == "action=defer_if_permit busy\n\n");
    }
}

TEST_CASE("a sub-chain's results become the parent's", "[chain]")
{
    Kit k(vhost("<Plugin outer>\nmodule = Probe\nsub = adopt\n" + probe("inner1", "") +
                probe("inner2", "action = inner") + probe("inner3", "action = never") +
                "</Plugin>\n" + probe("after", "action = x")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=inner\n\n");
    CHECK(k.line().find("plugin=outer, result=inner") != std::string::npos);
}

TEST_CASE("a non-aborting sub-chain result lets the outer chain go on", "[chain]")
{
    Kit k(vhost("<Plugin outer>\nmodule = Probe\nsub = adopt\n" +
                probe("inner", "action = soft\nnoabort = 1") + "</Plugin>\n" +
                probe("after", "action = hard")));
    CHECK(k.ask(req()) == "action=soft\naction=hard\n\n");
    CHECK(k.line().find("plugin=after") != std::string::npos);
}

TEST_CASE("sub-chains nest to any depth", "[chain]")
{
    std::string inner = probe("leaf", "action = deep");
    for (int i = 0; i < 6; i++)
        inner = "<Plugin level" + std::to_string(i) + ">\nmodule = Probe\nsub = adopt\n" + inner +
                "</Plugin>\n";
    Kit k(vhost(inner));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=deep\n\n");
    CHECK(k.line().find("plugin=level5, result=deep") != std::string::npos);
}

TEST_CASE("a failure inside a sub-chain fails its parent", "[chain]")
{
    std::string nested = "<Plugin outer>\nmodule = Probe\nsub = adopt\n%s" +
                         probe("inner", "fail = deep") + "</Plugin>\n" +
                         probe("after", "action = x");
    SECTION("the request fails with both names")
    {
        std::string c = nested;
        c.replace(c.find("%s"), 2, "");
        Kit k(vhost(c));
        CHECK(k.ask(req()) == "ERR plugin outer failed: plugin inner failed: deep");
    }
    SECTION("on_error = continue on the parent skips it")
    {
        LogCapture log;
        std::string c = nested;
        c.replace(c.find("%s"), 2, "on_error = continue\n");
        Kit k(vhost(c));
        CHECK(k.ask(req()) == "action=x\n\n");
        CHECK(log.text().find("plugin outer failed: plugin inner failed: deep") !=
              std::string::npos);
    }
    SECTION("on_error = continue on the inner plugin keeps the sub-chain going")
    {
        Kit k(vhost("<Plugin outer>\nmodule = Probe\nsub = adopt\n" +
                    probe("inner", "fail = deep\non_error = continue") +
                    probe("inner2", "action = fine") + "</Plugin>\n"));
        CHECK(k.ask(req()) == "action=fine\n\n");
    }
}

TEST_CASE("a parent may read its sub-chain's actions instead of adopting them", "[chain]")
{
    Kit k(vhost("<Plugin ev>\nmodule = Probe\nsub = eval:captured\n" +
                probe("a", "action = one\nnoabort = 1") + probe("b", "action = two") +
                "</Plugin>\n" + probe("show", "keyvar = s:captured")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=one,two\n\n");
}

TEST_CASE("built-in chain plugins run their nested chain", "[chain]")
{
    Kit k(vhost("<Plugin cond>\nmodule = Condition\nkey = client_address\nmatch = 192.0.2.1\n" +
                probe("inner", "action = matched") + "</Plugin>\n"));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=matched\n\n");
    CHECK(k.ask("client_address=198.51.100.7\n") == "action=dunno\n\n");
}

TEST_CASE("POL_WAIT is refused by the testkit with a sentence", "[chain]")
{
    Kit k(vhost(probe("slow", "wait = 1")));
    CHECK(k.ask(req("w1")).find("ERR plugin slow returned POL_WAIT") == 0);
}
