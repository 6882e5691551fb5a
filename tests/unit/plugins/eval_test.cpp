// eval_test.cpp: the Eval plugin (spec 13.8) through the testkit. Answers marked "2.05:" were
// observed on the Perl mtpolicyd 2.05.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static const std::string end_action =
    "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n  </Plugin>\n";

TEST_CASE("Eval stores the sub-chain's actions and returns nothing", "[eval]")
{
    Kit k(conf("  <Plugin ev>\n    module = \"Eval\"\n    store_in = \"captured\"\n"
               "    <Plugin inner>\n      module = \"Action\"\n      action = \"reject inner\"\n"
               "    </Plugin>\n  </Plugin>\n" +
                   end_action,
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=e1\n")) == reply("reject end"));
    CHECK(k.result_line().find("plugin=end,") != std::string::npos);
    CHECK(k.session("e1", "captured") == "reject inner");
}

TEST_CASE("Eval joins several actions with LF", "[eval]")
{
    register_two_results();
    Kit k(conf("  <Plugin ev>\n    module = \"Eval\"\n    store_in = \"captured\"\n" +
                   plugin("two", "TwoResults") + action("inner-end", "reject inner") +
                   "  </Plugin>\n" + end_action,
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=j1\n")) == reply("reject end"));
    CHECK(k.session("j1", "captured") == "first\nsecond\nreject inner");
}

TEST_CASE("Eval's stored answer can be used later in the chain", "[eval]")
{
    // 2.05: the second request answers "two": c1 (invert, no test) matches, its sub-chain
    // sets k and answers "two", Eval ev2 stores it, and `show` returns it via uc_action.
    Kit k(conf("  <Plugin ev2>\n    module = \"Eval\"\n    store_in = \"captured2\"\n"
               "    <Plugin c1>\n      module = \"Condition\"\n      key = \"client_address\"\n"
               "      invert = 1\n"
               "      <Plugin x1>\n        module = \"SetField\"\n        key = \"k\"\n"
               "        value = \"v\"\n      </Plugin>\n"
               "      <Plugin x2>\n        module = \"Action\"\n        action = \"two\"\n"
               "      </Plugin>\n    </Plugin>\n  </Plugin>\n"
               "  <Plugin show>\n    module = \"Condition\"\n    key = \"s:k\"\n"
               "    match = \"v\"\n    uc_action = \"captured2\"\n  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=1.2.3.4\n")) == reply("two"));
    CHECK(k.result_line().find("plugin=show,") != std::string::npos);
    CHECK(k.ask(req("")) == dunno);
}

TEST_CASE("Eval stores nothing when the sub-chain has no actions", "[eval]")
{
    Kit k(conf("  <Plugin set>\n    module = \"SetField\"\n    key = \"captured\"\n"
               "    value = \"before\"\n  </Plugin>\n"
               "  <Plugin ev>\n    module = \"Eval\"\n    store_in = \"captured\"\n"
               "    <Plugin quiet>\n      module = \"Condition\"\n      key = \"nothing\"\n"
               "      match = \"x\"\n      action = \"reject x\"\n    </Plugin>\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=e2\n")) == dunno);
    CHECK(k.session("e2", "captured") == "before");
    CHECK(k.ask(req("instance=e3\nnothing=x\n")) == dunno);
    CHECK(k.session("e3", "captured") == "reject x");
}

TEST_CASE("Eval stores an empty action as an empty value", "[eval]")
{
    Kit k(conf("  <Plugin ev>\n    module = \"Eval\"\n    store_in = \"captured\"\n"
               "    <Plugin inner>\n      module = \"Action\"\n      action =\n"
               "    </Plugin>\n  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=e4\n")) == dunno);
    CHECK(k.session("e4", "captured") == "");
}

TEST_CASE("Eval without nested plugins does nothing", "[eval]")
{
    Kit k(conf("  <Plugin ev>\n    module = \"Eval\"\n    store_in = \"captured\"\n  </Plugin>\n" +
                   end_action,
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=e5\n")) == reply("reject end"));
    CHECK(k.session("e5", "captured") == "<absent>");
}

TEST_CASE("Eval needs store_in", "[eval]")
{
    Kit k(conf("  <Plugin ev>\n    module = \"Eval\"\n"
               "    <Plugin inner>\n      module = \"Action\"\n      action = \"x\"\n"
               "    </Plugin>\n  </Plugin>\n"));
    CHECK_FALSE(k.ok());
    CHECK(k.error().find("store_in") != std::string::npos);
}
