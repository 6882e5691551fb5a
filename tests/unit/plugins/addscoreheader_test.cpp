// addscoreheader_test.cpp: the AddScoreHeader plugin (spec 13.3, appendix D #4) through the
// testkit. Answers marked "2.05:" were observed on the Perl mtpolicyd 2.05.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static std::string header(const std::string &options = "")
{
    return "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n" + options + "  </Plugin>\n";
}

static const std::string zumsel =
    scorer("ZUMSEL", "5") + scorer("BLA", "2.5") + scorer("BLUB", "2.5");

TEST_CASE("AddScoreHeader tags the ZUMSEL/BLA/BLUB mail YES (appendix D #4)", "[addscoreheader]")
{
    Kit k(conf(zumsel + header()));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=127.0.0.1\n")) ==
          reply("PREPEND X-MtScore: YES score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]"));
    CHECK(k.result_line().find("plugin=hdr,") != std::string::npos);
}

TEST_CASE("AddScoreHeader without any score says NO score=0", "[addscoreheader]")
{
    // 2.05: PREPEND X-MtScore: NO score=0
    Kit k(conf(header()));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("PREPEND X-MtScore: NO score=0"));
}

TEST_CASE("AddScoreHeader: YES at or above spam_score, NO below", "[addscoreheader]")
{
    Kit at(conf(scorer("s", "5") + header()));
    REQUIRE(at.ok());
    CHECK(at.ask(req("client_address=192.0.2.1\n")) ==
          reply("PREPEND X-MtScore: YES score=5 [s=5]"));
    Kit below(conf(scorer("s", "4.99") + header()));
    REQUIRE(below.ok());
    CHECK(below.ask(req("client_address=192.0.2.1\n")) ==
          reply("PREPEND X-MtScore: NO score=4.99 [s=4.99]"));
    Kit negative(conf(scorer("s", "-3") + header("    spam_score = -3.5\n")));
    REQUIRE(negative.ok());
    CHECK(negative.ask(req("client_address=192.0.2.1\n")) ==
          reply("PREPEND X-MtScore: YES score=-3 [s=-3]"));
    CHECK(negative.ask(req("")) == reply("PREPEND X-MtScore: YES score=0"));
}

TEST_CASE("AddScoreHeader spam_score is user-configurable", "[addscoreheader]")
{
    Kit k(conf(set_field("threshold", "12") + zumsel +
               header("    uc_spam_score = \"threshold\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=127.0.0.1\n")) ==
          reply("PREPEND X-MtScore: NO score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]"));
    Kit unset(conf(zumsel + header("    uc_spam_score = \"threshold\"\n")));
    REQUIRE(unset.ok());
    CHECK(unset.ask(req("client_address=127.0.0.1\n")) ==
          reply("PREPEND X-MtScore: YES score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]"));
}

TEST_CASE("AddScoreHeader header_name", "[addscoreheader]")
{
    Kit k(conf(header("    header_name = \"X-Spam-Score\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("PREPEND X-Spam-Score: NO score=0"));
}

TEST_CASE("AddScoreHeader answers dunno on the later requests of a mail", "[addscoreheader]")
{
    SECTION("Memory session cache: the flag persists for the mail")
    {
        Kit k(conf(zumsel + header(), true));
        REQUIRE(k.ok());
        CHECK(k.ask(req("client_address=127.0.0.1\ninstance=m1\n")) ==
              reply("PREPEND X-MtScore: YES score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]"));
        CHECK(k.session("m1", "score-score-tag") == "1");
        CHECK(k.ask(req("client_address=127.0.0.1\ninstance=m1\n")) == dunno);
        CHECK(k.result_line().find("plugin=hdr, result=dunno") != std::string::npos);
        CHECK(k.ask(req("instance=m2\n")) == reply("PREPEND X-MtScore: NO score=0"));
        CHECK(k.ask(req("instance=m2\n")) == dunno);
    }
    SECTION("no session cache: every request is a fresh mail")
    {
        Kit k(conf(zumsel + header()));
        REQUIRE(k.ok());
        for (int i = 0; i < 3; i++)
            CHECK(k.ask(req("client_address=127.0.0.1\ninstance=m1\n")) ==
                  reply("PREPEND X-MtScore: YES score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]"));
    }
}

TEST_CASE("AddScoreHeader aborts the chain both times", "[addscoreheader]")
{
    Kit k(conf(header() + "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
                          "  </Plugin>\n",
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=a\n")) == reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.ask(req("instance=a\n")) == dunno);
}

TEST_CASE("AddScoreHeader with its own score_field uses its own flag", "[addscoreheader]")
{
    Kit k(conf("  <Plugin s>\n    module = \"Condition\"\n    key = \"client_address\"\n"
               "    invert = 1\n    score = 6\n    score_field = \"spam\"\n  </Plugin>\n" +
                   header("    score_field = \"spam\"\n"),
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\ninstance=f\n")) ==
          reply("PREPEND X-MtScore: YES score=6 [s=6]"));
    CHECK(k.session("f", "score-spam-tag") == "1");
    CHECK(k.session("f", "score-score-tag") == "<absent>");
    CHECK(k.session("f", "spam_detail") == "s=6");
}

TEST_CASE("AddScoreHeader prints the session's score text and Perl-true details only",
          "[addscoreheader]")
{
    Kit text(conf(set_field("score", "5.0") + header()));
    REQUIRE(text.ok());
    CHECK(text.ask(req("")) == reply("PREPEND X-MtScore: YES score=5.0"));
    Kit zero_detail(conf(set_field("score", "1") + set_field("score_detail", "0") + header()));
    REQUIRE(zero_detail.ok());
    CHECK(zero_detail.ask(req("")) == reply("PREPEND X-MtScore: NO score=1"));
    Kit empty_detail(conf(set_field("score_detail", "") + header()));
    REQUIRE(empty_detail.ok());
    CHECK(empty_detail.ask(req("")) == reply("PREPEND X-MtScore: NO score=0"));
}

TEST_CASE("AddScoreHeader refuses a non-numeric spam_score at start-up", "[addscoreheader]")
{
    Kit k(conf(header("    spam_score = high\n")));
    CHECK_FALSE(k.ok());
    CHECK(k.error().find("spam_score") != std::string::npos);
}
