// condition_test.cpp: the Condition plugin (spec 13.5) through the testkit. Answers marked
// "2.05:" were observed on the Perl mtpolicyd 2.05 with the same configuration and request.
#include <catch2/catch.hpp>

#include "plugin_kit.hpp"

using namespace plugkit;

static std::string cond(const std::string &name, const std::string &options)
{
    return "  <Plugin " + name + ">\n    module = \"Condition\"\n" + options + "  </Plugin>\n";
}

static const std::string header = "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n  </Plugin>\n";

TEST_CASE("Condition match compares the whole value as a string", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"client_address\"\n    match = \"127.0.0.1\"\n"
                         "    action = \"reject local\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=127.0.0.1\n")) == reply("reject local"));
    CHECK(k.ask(req("client_address=127.0.0.10\n")) == dunno);
    CHECK(k.ask(req("client_address= 127.0.0.1\n")) == dunno);
    CHECK(k.ask(req("")) == dunno);
}

TEST_CASE("Condition match with an empty text matches an empty value only", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"helo_name\"\n    match = \"\"\n"
                         "    action = \"reject empty helo\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("helo_name=\n")) == reply("reject empty helo"));
    CHECK(k.ask(req("helo_name=x\n")) == dunno);
    CHECK(k.ask(req("")) == dunno);
}

TEST_CASE("Condition re_match is an unanchored, case-sensitive PCRE", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"sender\"\n    re_match = \"@example\\\\.(com|net)$\"\n"
                         "    action = \"reject re\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=bob@example.com\n")) == reply("reject re"));
    CHECK(k.ask(req("sender=bob@sub.example.net\n")) == dunno);
    CHECK(k.ask(req("sender=bob@example.net\n")) == reply("reject re"));
    CHECK(k.ask(req("sender=bob@EXAMPLE.com\n")) == dunno);
    CHECK(k.ask(req("sender=bob@example.org\n")) == dunno);
}

TEST_CASE("Condition gt_match converts the value the Perl way", "[condition]")
{
    // 2.05: 6abc, " 7", 5.5, 1e1 and inf are > 5; 5, "", 0x10 and nan are not.
    Kit k(conf(cond("c", "    key = \"size\"\n    gt_match = 5\n    action = \"reject big\"\n")));
    REQUIRE(k.ok());
    for (const char *big : {"6abc", " 7", "5.5", "1e1", "inf", "6", "127.0.0.1"})
        CHECK(k.ask(req(std::string("size=") + big + "\n")) == reply("reject big"));
    for (const char *small : {"5", "", "0x10", "nan", "abc", "-6", "4.99"})
        CHECK(k.ask(req(std::string("size=") + small + "\n")) == dunno);
}

TEST_CASE("Condition lt_match converts the value the Perl way", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"recipient_count\"\n    lt_match = 0.5\n"
                         "    action = \"reject small\"\n")));
    REQUIRE(k.ok());
    for (const char *small : {"0", "", "abc", "-1", ".4", "0.49x"})
        CHECK(k.ask(req(std::string("recipient_count=") + small + "\n")) == reply("reject small"));
    for (const char *big : {"0.5", "1", "5abc", " 2"})
        CHECK(k.ask(req(std::string("recipient_count=") + big + "\n")) == dunno);
}

TEST_CASE("Condition matches when any of its tests holds", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"size\"\n    match = \"x\"\n    re_match = \"^y\"\n"
                         "    lt_match = -10\n    gt_match = 10\n    action = \"reject any\"\n")));
    REQUIRE(k.ok());
    for (const char *yes : {"x", "yy", "-11", "11"})
        CHECK(k.ask(req(std::string("size=") + yes + "\n")) == reply("reject any"));
    for (const char *no : {"z", "xy", "0", "10", "-10"})
        CHECK(k.ask(req(std::string("size=") + no + "\n")) == dunno);
}

TEST_CASE("Condition invert negates, but an absent value never matches", "[condition]")
{
    SECTION("invert with a test")
    {
        Kit k(conf(cond("c", "    key = \"sender\"\n    match = \"a@b\"\n    invert = 1\n"
                             "    action = \"reject not a@b\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=a@b\n")) == dunno);
        CHECK(k.ask(req("sender=c@d\n")) == reply("reject not a@b"));
        CHECK(k.ask(req("sender=\n")) == reply("reject not a@b"));
        CHECK(k.ask(req("")) == dunno);
    }
    SECTION("invert alone matches every present value (2.05: foo= -> reject inverted)")
    {
        Kit k(conf(cond("c", "    key = \"foo\"\n    invert = 1\n"
                             "    action = \"reject inverted\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("foo=\n")) == reply("reject inverted"));
        CHECK(k.ask(req("foo=bar\n")) == reply("reject inverted"));
        CHECK(k.ask(req("")) == dunno);
    }
    SECTION("no test and no invert never matches")
    {
        Kit k(conf(cond("c", "    key = \"foo\"\n    action = \"reject never\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("foo=bar\n")) == dunno);
    }
    SECTION("invert = 0 is the default")
    {
        Kit k(conf(cond("c", "    key = \"foo\"\n    match = \"bar\"\n    invert = 0\n"
                             "    action = \"reject bar\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("foo=bar\n")) == reply("reject bar"));
    }
}

TEST_CASE("Condition reads request attributes and session values by scope", "[condition]")
{
    const std::string set = "  <Plugin set>\n    module = \"SetField\"\n    key = \"flag\"\n"
                            "    value = \"on\"\n  </Plugin>\n";
    for (const char *key : {"s:flag", "session:flag"}) {
        Kit k(conf(set + cond("c", std::string("    key = \"") + key +
                                       "\"\n    match = \"on\"\n    action = \"reject s\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("flag=off\n")) == reply("reject s"));
    }
    for (const char *key : {"flag", "r:flag", "request:flag"}) {
        Kit k(conf(set + cond("c", std::string("    key = \"") + key +
                                       "\"\n    match = \"on\"\n    action = \"reject r\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("flag=off\n")) == dunno);
        CHECK(k.ask(req("flag=on\n")) == reply("reject r"));
    }
}

TEST_CASE("Condition adds its score on every matching request, not once per mail", "[condition]")
{
    Kit k(conf(cond("cond", "    key = \"client_address\"\n    match = \"127.0.0.1\"\n"
                            "    score = 5\n") +
                   header,
               true));
    REQUIRE(k.ok());
    // 2.05 with memcached: the first request of a mail gets the header, the second dunno.
    CHECK(k.ask(req("client_address=127.0.0.1\ninstance=b1\n")) ==
          reply("PREPEND X-MtScore: YES score=5 [cond=5]"));
    CHECK(k.ask(req("client_address=127.0.0.1\ninstance=b1\n")) == dunno);
    CHECK(k.session("b1", "score") == "10");
    CHECK(k.session("b1", "score_detail") == "cond=5, cond=5");
    CHECK(k.ask(req("client_address=10.0.0.1\ninstance=b2\n")) ==
          reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.session("b2", "score") == "<absent>");
}

TEST_CASE("Condition score and action are user-configurable", "[condition]")
{
    const std::string set = "  <Plugin set>\n    module = \"SetField\"\n    key = \"my_score\"\n"
                            "    value = \"3abc\"\n  </Plugin>\n";
    SECTION("uc_score: the session's text is the detail, its numeric prefix the score")
    {
        // 2.05: PREPEND X-MtScore: NO score=3 [gt=3abc]
        Kit k(conf(set +
                   cond("gt", "    key = \"size\"\n    gt_match = 5\n    score = 1\n"
                              "    uc_score = \"my_score\"\n") +
                   header));
        REQUIRE(k.ok());
        CHECK(k.ask(req("size=6\n")) == reply("PREPEND X-MtScore: NO score=3 [gt=3abc]"));
        CHECK(k.ask(req("size=5\n")) == reply("PREPEND X-MtScore: NO score=0"));
    }
    SECTION("uc_score without the session key falls back to score")
    {
        Kit k(conf(cond("gt", "    key = \"size\"\n    gt_match = 5\n    score = 1.50\n"
                              "    uc_score = \"my_score\"\n") +
                   header));
        REQUIRE(k.ok());
        CHECK(k.ask(req("size=6\n")) == reply("PREPEND X-MtScore: NO score=1.5 [gt=1.50]"));
    }
    SECTION("uc_action")
    {
        const std::string set_action = "  <Plugin set>\n    module = \"SetField\"\n"
                                       "    key = \"act\"\n    value = \"reject from session\"\n"
                                       "  </Plugin>\n";
        Kit with(conf(set_action + cond("c", "    key = \"size\"\n    gt_match = 5\n"
                                             "    action = \"reject configured\"\n"
                                             "    uc_action = \"act\"\n")));
        REQUIRE(with.ok());
        CHECK(with.ask(req("size=6\n")) == reply("reject from session"));
        Kit without(conf(cond("c", "    key = \"size\"\n    gt_match = 5\n"
                                   "    action = \"reject configured\"\n"
                                   "    uc_action = \"act\"\n")));
        REQUIRE(without.ok());
        CHECK(without.ask(req("size=6\n")) == reply("reject configured"));
    }
}

TEST_CASE("Condition runs its sub-chain on a match and returns its results", "[condition]")
{
    const std::string inner = "    <Plugin inner-set>\n      module = \"SetField\"\n"
                              "      key = \"inner\"\n      value = \"ran\"\n    </Plugin>\n"
                              "    <Plugin inner-act>\n      module = \"Action\"\n"
                              "      action = \"reject inner\"\n    </Plugin>\n";
    const std::string after = "  <Plugin after>\n    module = \"Action\"\n"
                              "    action = \"reject after\"\n  </Plugin>\n";
    SECTION("matched: the inner answer becomes the condition's, the outer chain stops")
    {
        Kit k(
            conf(cond("ctx", "    key = \"policy_context\"\n    match = \"submission\"\n" + inner) +
                     after,
                 true));
        REQUIRE(k.ok());
        CHECK(k.ask(req("policy_context=submission\ninstance=s1\n")) == reply("reject inner"));
        CHECK(k.result_line().find("plugin=ctx, result=reject inner") != std::string::npos);
        CHECK(k.session("s1", "inner") == "ran");
        CHECK(k.ask(req("policy_context=other\ninstance=s2\n")) == reply("reject after"));
        CHECK(k.session("s2", "inner") == "<absent>");
    }
    SECTION("an action wins over the sub-chain")
    {
        Kit k(conf(cond("ctx", "    key = \"policy_context\"\n    match = \"submission\"\n"
                               "    action = \"reject own\"\n" +
                                   inner),
                   true));
        REQUIRE(k.ok());
        CHECK(k.ask(req("policy_context=submission\ninstance=s3\n")) == reply("reject own"));
        CHECK(k.session("s3", "inner") == "<absent>");
    }
    SECTION("a sub-chain without results lets the outer chain go on")
    {
        Kit k(conf(cond("ctx", "    key = \"policy_context\"\n    match = \"submission\"\n"
                               "    <Plugin only-set>\n      module = \"SetField\"\n"
                               "      key = \"k\"\n      value = \"v\"\n    </Plugin>\n") +
                   after));
        REQUIRE(k.ok());
        CHECK(k.ask(req("policy_context=submission\n")) == reply("reject after"));
        CHECK(k.result_line().find("plugin=after") != std::string::npos);
    }
}

TEST_CASE("Condition returns every result of its sub-chain, aborting or not", "[condition]")
{
    // 2.05 returns the sub-chain's results as they are: results that do not abort let the
    // outer chain go on, and Postfix gets all the actions in order.
    register_two_results();
    Kit k(conf(
        cond("c", "    key = \"client_address\"\n    invert = 1\n" + plugin("two", "TwoResults")) +
        action("end", "reject end")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) ==
          "action=first\naction=second\naction=reject end\n\n");
    CHECK(k.ask(req("")) == reply("reject end"));
}

TEST_CASE("Condition refuses bad options at start-up", "[condition]")
{
    CHECK_FALSE(Kit(conf(cond("c", "    match = \"x\"\n"))).ok()); // no key
    CHECK_FALSE(Kit(conf(cond("c", "    key = \"a\"\n    re_match = \"(\"\n"))).ok());
    CHECK_FALSE(Kit(conf(cond("c", "    key = \"a\"\n    gt_match = \"five\"\n"))).ok());
    CHECK_FALSE(Kit(conf(cond("c", "    key = \"a\"\n    lt_match = \"0x10\"\n"))).ok());
    CHECK_FALSE(Kit(conf(cond("c", "    key = \"a\"\n    invert = yes\n"))).ok());
    CHECK_FALSE(Kit(conf(cond("c", "    key = \"a\"\n    score = \"5.\"\n"))).ok());
    Kit bad_re(conf(cond("c", "    key = \"a\"\n    re_match = \"a(\"\n")));
    CHECK(bad_re.error().find("test.conf:") == 0);
}

TEST_CASE("Condition logs KEY matched VALUE at its log_level", "[condition]")
{
    Kit k(conf(cond("c", "    key = \"r:client_address\"\n    match = \"127.0.0.1\"\n") +
               cond("quiet", "    key = \"client_address\"\n    match = \"127.0.0.1\"\n"
                             "    log_level = 5\n")));
    REQUIRE(k.ok());
    LogCapture log(ENG_LOG_DEBUG);
    REQUIRE(log.ok());
    CHECK(k.ask(req("client_address=127.0.0.1\n")) == dunno);
    // 2.05: "test: client_address matched 127.0.0.1" (the key as configured).
    CHECK(log.has_line("test: r:client_address matched 127.0.0.1"));
    CHECK(log.text().find("test: client_address matched") == std::string::npos);
}

TEST_CASE("Condition key: an empty reference reads nothing, an unknown scope is refused",
          "[condition]")
{
    Kit empty(conf(cond("c", "    key = \"\"\n    invert = 1\n    action = \"reject empty\"\n")));
    REQUIRE(empty.ok());
    CHECK(empty.ask(req("foo=1\n")) == dunno);
    // 2.05 fails every request with "unknown scope x while retrieving variable for x:foo";
    // ringpolicyd refuses the configuration instead.
    Kit unknown(conf(cond("c", "    key = \"x:foo\"\n    match = \"1\"\n")));
    CHECK_FALSE(unknown.ok());
    CHECK(unknown.error().find("unknown scope x") != std::string::npos);
    // A colon after a scope belongs to the name.
    Kit colon(conf(cond("c", "    key = \"r:x:foo\"\n    match = \"1\"\n"
                             "    action = \"reject colon\"\n")));
    REQUIRE(colon.ok());
    CHECK(colon.ask(req("x:foo=1\n")) == reply("reject colon"));
}
