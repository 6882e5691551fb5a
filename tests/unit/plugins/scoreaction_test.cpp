// scoreaction_test.cpp: the ScoreAction plugin (spec 13.25, appendix D #4) through the
// testkit. Answers marked "2.05:" were observed on the Perl mtpolicyd 2.05.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static std::string score_action(const std::string &name, const std::string &options)
{
    return "  <Plugin " + name + ">\n    module = \"ScoreAction\"\n" + options + "  </Plugin>\n";
}

static const std::string blocked =
    "    action = \"reject sender ip %IP% is blocked (score=%SCORE%%SCORE_DETAIL%)\"\n";

TEST_CASE("ScoreAction threshold 10 does not fire at 7.5 and fires at 10 (appendix D #4)",
          "[scoreaction]")
{
    Kit k(conf(scorer("ZUMSEL", "5") + scorer("BLA", "2.5") +
               score_action("at-7.5", "    threshold = 10\n    action = \"reject too early\"\n") +
               scorer("BLUB", "2.5") + score_action("at-10", "    threshold = 10\n" + blocked)));
    REQUIRE(k.ok());
    // 2.05: the same text.
    CHECK(k.ask(req("client_address=127.0.0.1\n")) ==
          reply("reject sender ip 127.0.0.1 is blocked (score=10, ZUMSEL=5, BLA=2.5, BLUB=2.5)"));
    CHECK(k.result_line().find("plugin=at-10,") != std::string::npos);
}

TEST_CASE("ScoreAction match = lt fires at or below the threshold", "[scoreaction]")
{
    Kit k(conf(score_action("low",
                            "    threshold = 0\n    match = \"lt\"\n"
                            "    action = \"defer ip=%IP% s=%SCORE% d=%SCORE_DETAIL% %IP%\"\n") +
               "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    // 2.05: placeholders are replaced once each; no client_address gives "unknown", no
    // details an empty %SCORE_DETAIL%.
    CHECK(k.ask(req("")) == reply("defer ip=unknown s=0 d= %IP%"));
    CHECK(k.ask(req("client_address=192.0.2.7\n")) == reply("defer ip=192.0.2.7 s=0 d= %IP%"));

    Kit above(conf(scorer("plus", "0.5") + score_action("low", "    threshold = 0\n    match = lt\n"
                                                               "    action = \"defer low\"\n")));
    REQUIRE(above.ok());
    CHECK(above.ask(req("client_address=192.0.2.7\n")) == dunno);
    CHECK(above.ask(req("")) == reply("defer low"));

    Kit negative(conf(scorer("minus", "-2") +
                      score_action("low", "    threshold = -1\n    match = lt\n" + blocked)));
    REQUIRE(negative.ok());
    CHECK(negative.ask(req("client_address=192.0.2.7\n")) ==
          reply("reject sender ip 192.0.2.7 is blocked (score=-2, minus=-2)"));
}

TEST_CASE("ScoreAction with another match value fails every request", "[scoreaction]")
{
    Kit k(conf(score_action("sa", "    threshold = 5\n    match = \"ge\"\n"
                                  "    action = \"reject x\"\n")));
    REQUIRE(k.ok());
    std::string answer = k.ask(req(""));
    CHECK(answer.find("FAILED: ") == 0);
    CHECK(answer.find("plugin sa failed: unknown value for parameter match.") != std::string::npos);

    Kit cont(conf(score_action("sa", "    threshold = 5\n    match = \"GT\"\n"
                                     "    on_error = continue\n") +
                  "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
                  "  </Plugin>\n"));
    REQUIRE(cont.ok());
    CHECK(cont.ask(req("")) == reply("reject end"));
}

TEST_CASE("ScoreAction runs its sub-chain when the threshold is reached and there is no action",
          "[scoreaction]")
{
    const std::string inner = "    <Plugin tag>\n      module = \"AddScoreHeader\"\n"
                              "      header_name = \"X-Inner\"\n    </Plugin>\n";
    Kit k(conf(scorer("s", "7") + score_action("sa", "    threshold = 7\n" + inner) +
               "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) == reply("PREPEND X-Inner: YES score=7 [s=7]"));
    CHECK(k.result_line().find("plugin=sa,") != std::string::npos);
    CHECK(k.ask(req("")) == reply("reject end"));
}

TEST_CASE("ScoreAction without action or sub-chain returns nothing", "[scoreaction]")
{
    Kit k(conf(scorer("s", "20") + score_action("sa", "    threshold = 7\n") +
               "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) == reply("reject end"));
}

TEST_CASE("ScoreAction threshold is user-configurable", "[scoreaction]")
{
    const std::string set = "  <Plugin set>\n    module = \"SetField\"\n    key = \"limit\"\n"
                            "    value = \"3\"\n  </Plugin>\n";
    const std::string sa = score_action("sa", "    threshold = 10\n    uc_threshold = \"limit\"\n"
                                              "    action = \"reject over %SCORE%\"\n");
    Kit with(conf(set + scorer("s", "5") + sa));
    REQUIRE(with.ok());
    CHECK(with.ask(req("client_address=192.0.2.1\n")) == reply("reject over 5"));
    Kit without(conf(scorer("s", "5") + sa));
    REQUIRE(without.ok());
    CHECK(without.ask(req("client_address=192.0.2.1\n")) == dunno);
}

TEST_CASE("ScoreAction uses the score as the session holds it", "[scoreaction]")
{
    Kit k(conf("  <Plugin set>\n    module = \"SetField\"\n    key = \"score\"\n"
               "    value = \"5.0\"\n  </Plugin>\n" +
               score_action("sa", "    threshold = 5\n" + blocked)));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) ==
          reply("reject sender ip 192.0.2.1 is blocked (score=5.0)"));
}

TEST_CASE("ScoreAction reads its own score_field", "[scoreaction]")
{
    Kit k(conf(
        "  <Plugin s>\n    module = \"Condition\"\n    key = \"client_address\"\n"
        "    invert = 1\n    score = 4\n    score_field = \"other\"\n  </Plugin>\n" +
        score_action("default-field", "    threshold = 4\n    action = \"reject d\"\n") +
        score_action("other-field", "    threshold = 4\n    score_field = \"other\"\n" + blocked)));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) ==
          reply("reject sender ip 192.0.2.1 is blocked (score=4, s=4)"));
}

TEST_CASE("ScoreAction refuses a missing or non-numeric threshold at start-up", "[scoreaction]")
{
    Kit missing(conf(score_action("sa", "    action = \"reject\"\n")));
    CHECK_FALSE(missing.ok());
    CHECK(missing.error().find("threshold") != std::string::npos);
    CHECK_FALSE(Kit(conf(score_action("sa", "    threshold = ten\n"))).ok());
}
