// action_test.cpp: the Action plugin (spec 13.2, appendix D #1 and #2) through the testkit.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

TEST_CASE("Action answers its text to any request (appendix D #1)", "[action]")
{
    Kit k(conf("  <Plugin a>\n    module = \"Action\"\n    action = \"reject test\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) == reply("reject test"));
    CHECK(k.ask("request=smtpd_access_policy\n") == reply("reject test"));
    CHECK(k.ask(req("instance=x\nsender=a@b\n")) == reply("reject test"));
    CHECK(k.result_line().find("plugin=a, result=reject test") != std::string::npos);
}

TEST_CASE("Action aborts the chain: the first one wins (appendix D #2)", "[action]")
{
    Kit k(conf("  <Plugin first>\n    module = \"Action\"\n    action = \"reject\"\n"
               "  </Plugin>\n"
               "  <Plugin second>\n    module = \"Action\"\n    action = \"dunno other\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("reject"));
    CHECK(k.result_line().find("plugin=first, result=reject") != std::string::npos);
}

TEST_CASE("Action keeps its text as written, spaces and all", "[action]")
{
    Kit k(conf("  <Plugin a>\n    module = \"Action\"\n"
               "    action = \"defer_if_permit  try again later (code 4.7.1)\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("defer_if_permit  try again later (code 4.7.1)"));
}

TEST_CASE("Action with an empty action sends an empty action, as 2.05 does", "[action]")
{
    // Observed on mtpolicyd 2.05: `action =` answers "action=\n\n" and ends the chain.
    Kit k(conf("  <Plugin a>\n    module = \"Action\"\n    action =\n  </Plugin>\n"
               "  <Plugin b>\n    module = \"Action\"\n    action = \"reject b\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == "action=\n\n");
}

TEST_CASE("Action without its action option is refused at start-up", "[action]")
{
    Kit k(conf("  <Plugin a>\n    module = \"Action\"\n  </Plugin>\n"));
    CHECK_FALSE(k.ok());
    CHECK(k.error().find("test.conf:") == 0);
    CHECK(k.error().find("action") != std::string::npos);
}
