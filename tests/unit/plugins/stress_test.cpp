// stress_test.cpp: the Stress plugin (spec 13.29) through the testkit.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static const std::string end_action =
    "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n  </Plugin>\n";

TEST_CASE("Stress answers its action only when stress=yes", "[stress]")
{
    Kit k(conf("  <Plugin st>\n    module = \"Stress\"\n"
               "    action = \"defer_if_permit under stress\"\n  </Plugin>\n" +
               end_action));
    REQUIRE(k.ok());
    CHECK(k.ask(req("stress=yes\n")) == reply("defer_if_permit under stress"));
    CHECK(k.result_line().find("plugin=st,") != std::string::npos);
    for (const char *other : {"stress=\n", "stress=no\n", "stress=YES\n", "stress=yes \n", ""})
        CHECK(k.ask(req(other)) == reply("reject end"));
}

TEST_CASE("Stress runs its sub-chain under stress when it has no action", "[stress]")
{
    Kit k(conf("  <Plugin st>\n    module = \"Stress\"\n"
               "    <Plugin sa>\n      module = \"ScoreAction\"\n      threshold = 0\n"
               "      match = \"lt\"\n"
               "      action = \"defer ip=%IP% s=%SCORE% d=%SCORE_DETAIL% %IP%\"\n"
               "    </Plugin>\n  </Plugin>\n" +
               end_action));
    REQUIRE(k.ok());
    // 2.05: action=defer ip=unknown s=0 d= %IP%
    CHECK(k.ask(req("stress=yes\n")) == reply("defer ip=unknown s=0 d= %IP%"));
    CHECK(k.result_line().find("plugin=st,") != std::string::npos);
    CHECK(k.ask(req("stress=no\n")) == reply("reject end"));
}

TEST_CASE("Stress without action or sub-chain returns nothing", "[stress]")
{
    Kit k(conf("  <Plugin st>\n    module = \"Stress\"\n  </Plugin>\n" + end_action));
    REQUIRE(k.ok());
    CHECK(k.ask(req("stress=yes\n")) == reply("reject end"));
}

TEST_CASE("Stress action is user-configurable", "[stress]")
{
    const std::string stress = "  <Plugin st>\n    module = \"Stress\"\n"
                               "    action = \"defer configured\"\n"
                               "    uc_action = \"stress_action\"\n  </Plugin>\n";
    Kit with(conf("  <Plugin set>\n    module = \"SetField\"\n    key = \"stress_action\"\n"
                  "    value = \"dunno relaxed\"\n  </Plugin>\n" +
                  stress));
    REQUIRE(with.ok());
    CHECK(with.ask(req("stress=yes\n")) == reply("dunno relaxed"));
    Kit without(conf(stress));
    REQUIRE(without.ok());
    CHECK(without.ask(req("stress=yes\n")) == reply("defer configured"));
}

TEST_CASE("Stress logs when Postfix is under stress", "[stress]")
{
    Kit k(conf(plugin("st", "Stress", "    action = \"defer\"\n")));
    REQUIRE(k.ok());
    LogCapture log;
    REQUIRE(log.ok());
    CHECK(k.ask(req("stress=no\n")) == dunno);
    CHECK(log.text().find("stress feature") == std::string::npos);
    CHECK(k.ask(req("stress=yes\n")) == reply("defer"));
    CHECK(log.has_line("test: MTA has stress feature turned on"));
}
