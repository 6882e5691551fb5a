// setfield_test.cpp: the SetField plugin (spec 13.26) through the testkit.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static const std::string set_and_show =
    "  <Plugin set>\n    module = \"SetField\"\n    key = \"greeting\"\n"
    "    value = \"hello world\"\n  </Plugin>\n"
    "  <Plugin show>\n    module = \"Condition\"\n    key = \"s:greeting\"\n"
    "    match = \"hello world\"\n    action = \"reject seen\"\n  </Plugin>\n";

TEST_CASE("SetField stores the value for the next plugins of the same request", "[setfield]")
{
    Kit k(conf(set_and_show));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("reject seen"));
    CHECK(k.result_line().find("plugin=show") != std::string::npos);
}

TEST_CASE("SetField returns nothing: alone in a chain the answer is dunno", "[setfield]")
{
    Kit k(conf("  <Plugin set>\n    module = \"SetField\"\n    key = \"k\"\n"
               "    value = \"v\"\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=i1\n")) == dunno);
    CHECK(k.session("i1", "k") == "v");
    CHECK(k.result_line().find("plugin=, result=") != std::string::npos);
}

TEST_CASE("SetField overwrites and may store an empty value", "[setfield]")
{
    Kit k(conf("  <Plugin one>\n    module = \"SetField\"\n    key = \"k\"\n"
               "    value = \"first\"\n  </Plugin>\n"
               "  <Plugin two>\n    module = \"SetField\"\n    key = \"k\"\n"
               "    value = \"second\"\n  </Plugin>\n"
               "  <Plugin empty>\n    module = \"SetField\"\n    key = \"e\"\n"
               "    value =\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=i2\n")) == dunno);
    CHECK(k.session("i2", "k") == "second");
    CHECK(k.session("i2", "e") == "");
}

TEST_CASE("SetField values persist across the requests of a mail with a session cache",
          "[setfield]")
{
    const std::string plugins =
        "  <Plugin show>\n    module = \"Condition\"\n    key = \"s:greeting\"\n"
        "    match = \"hello world\"\n    action = \"reject seen\"\n  </Plugin>\n" +
        set_and_show.substr(0, set_and_show.find("  <Plugin show>"));
    SECTION("Memory session cache: the second request of the mail sees it")
    {
        Kit k(conf(plugins, true));
        REQUIRE(k.ok());
        CHECK(k.ask(req("instance=m1\n")) == dunno);
        CHECK(k.ask(req("instance=m1\n")) == reply("reject seen"));
        CHECK(k.ask(req("instance=m2\n")) == dunno);
    }
    SECTION("no session cache: every request starts empty")
    {
        Kit k(conf(plugins));
        REQUIRE(k.ok());
        CHECK(k.ask(req("instance=m1\n")) == dunno);
        CHECK(k.ask(req("instance=m1\n")) == dunno);
    }
}

TEST_CASE("SetField needs both key and value", "[setfield]")
{
    Kit no_value(conf("  <Plugin s>\n    module = \"SetField\"\n    key = \"k\"\n  </Plugin>\n"));
    CHECK_FALSE(no_value.ok());
    CHECK(no_value.error().find("value") != std::string::npos);
    Kit no_key(conf("  <Plugin s>\n    module = \"SetField\"\n    value = \"v\"\n  </Plugin>\n"));
    CHECK_FALSE(no_key.ok());
    CHECK(no_key.error().find("key") != std::string::npos);
}
