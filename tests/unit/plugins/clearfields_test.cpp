// clearfields_test.cpp: the ClearFields plugin (spec 13.4) through the testkit.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static std::string clear(const std::string &options)
{
    return "  <Plugin clear>\n    module = \"ClearFields\"\n" + options + "  </Plugin>\n";
}

static const std::string four =
    set_field("abc-1", "1") + set_field("abd", "2") + set_field("x.y", "3") + set_field("xzy", "4");

TEST_CASE("ClearFields deletes the listed keys", "[clearfields]")
{
    Kit k(conf(four + clear("    fields = \"abd , nothere,xzy\"\n"), true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=c1\n")) == dunno);
    CHECK(k.session("c1", "abd") == "<absent>");
    CHECK(k.session("c1", "xzy") == "<absent>");
    CHECK(k.session("c1", "abc-1") == "1");
    CHECK(k.session("c1", "x.y") == "3");
}

TEST_CASE("ClearFields deletes keys by literal prefix", "[clearfields]")
{
    Kit k(conf(four + clear("    fields_prefix = \"x., ab\"\n"), true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=c2\n")) == dunno);
    CHECK(k.session("c2", "abc-1") == "<absent>");
    CHECK(k.session("c2", "abd") == "<absent>");
    CHECK(k.session("c2", "x.y") == "<absent>");
    CHECK(k.session("c2", "xzy") == "4"); // "." is not a regex wildcard
}

TEST_CASE("ClearFields applies fields and fields_prefix together", "[clearfields]")
{
    Kit k(conf(four + clear("    fields = \"xzy\"\n    fields_prefix = \"abc\"\n"), true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=c3\n")) == dunno);
    CHECK(k.session("c3", "xzy") == "<absent>");
    CHECK(k.session("c3", "abc-1") == "<absent>");
    CHECK(k.session("c3", "abd") == "2");
    CHECK(k.session("c3", "x.y") == "3");
}

TEST_CASE("ClearFields resets values kept from earlier requests of the mail", "[clearfields]")
{
    // The score of a mail, reset for each request: only the last request's scores count.
    Kit k(conf("  <Plugin reset>\n    module = \"ClearFields\"\n"
               "    fields = \"score,score_detail\"\n  </Plugin>\n"
               "  <Plugin s>\n    module = \"Condition\"\n    key = \"client_address\"\n"
               "    invert = 1\n    score = 3\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\ninstance=c4\n")) == dunno);
    CHECK(k.ask(req("client_address=192.0.2.1\ninstance=c4\n")) == dunno);
    CHECK(k.session("c4", "score") == "3");
    CHECK(k.session("c4", "score_detail") == "s=3");
}

TEST_CASE("ClearFields without options, or with empty ones, changes nothing", "[clearfields]")
{
    Kit k(conf(four + clear("") +
                   "  <Plugin clear2>\n    module = \"ClearFields\"\n"
                   "    fields =\n    fields_prefix =\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=c5\n")) == dunno);
    CHECK(k.session("c5", "abc-1") == "1");
    CHECK(k.session("c5", "abd") == "2");
    CHECK(k.session("c5", "x.y") == "3");
    CHECK(k.session("c5", "xzy") == "4");
}

TEST_CASE("ClearFields logs what it clears", "[clearfields]")
{
    Kit k(conf(four + clear("    fields = \"abd , nothere\"\n    fields_prefix = \"x.,zz\"\n")));
    REQUIRE(k.ok());
    LogCapture log;
    REQUIRE(log.ok());
    CHECK(k.ask(req("")) == dunno);
    // 2.05, same configuration.
    CHECK(log.has_line("test: clearing fields abd, nothere"));
    CHECK(log.has_line("test: clearing fields with prefixes: x., zz"));
}
