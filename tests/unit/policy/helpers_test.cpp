// helpers_test.cpp: scoring (spec 12.4, appendix D #4), user-configurable options (12.5),
// templates (12.7) and plugin logging (5.3), through the testkit and the built-in plugins that
// use them.
#include <catch2/catch.hpp>

#include <string>

#include "kit.hpp"

extern "C" {
#include "server.h"
}

namespace
{

std::string d4_scores()
{
    return probe("ZUMSEL", "score = 5") + probe("BLA", "score = 2.5") +
           probe("BLUB", "score = 2.5");
}

} // namespace

TEST_CASE("D #4: scores add up; details list LABEL=VALUE as configured", "[helpers]")
{
    Kit k(memory_cache() + vhost(d4_scores() + probe("show", "keyvar = s:score")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req("d4")) == "action=10\n\n");
    CHECK(k.session("d4", "score_detail") == "ZUMSEL=5, BLA=2.5, BLUB=2.5");
}

TEST_CASE("D #4: ScoreAction fires at the threshold, not below", "[helpers]")
{
    std::string sa = "<Plugin sa>\nmodule = ScoreAction\nthreshold = 10\n"
                     "action = \"reject sender ip %IP% is blocked (score=%SCORE%%SCORE_DETAIL%)\"\n"
                     "</Plugin>\n";
    Kit below(vhost(probe("BLA", "score = 2.5") + probe("ZUMSEL", "score = 5") + sa));
    CHECK(below.ask(req()) == "action=dunno\n\n");
    Kit at(vhost(d4_scores() + sa));
    CHECK(at.ask("client_address=127.0.0.1\n") ==
          "action=reject sender ip 127.0.0.1 is blocked (score=10, ZUMSEL=5, BLA=2.5, "
          "BLUB=2.5)\n\n");
}

TEST_CASE("D #4: AddScoreHeader once per mail", "[helpers]")
{
    std::string ash = "<Plugin hdr>\nmodule = AddScoreHeader\nspam_score = 5\n</Plugin>\n";
    Kit k(memory_cache() + vhost(d4_scores() + ash));
    REQUIRE(k.err == "");
    CHECK(k.ask(req("h1")) ==
          "action=PREPEND X-MtScore: YES score=10 [ZUMSEL=5, BLA=2.5, BLUB=2.5]\n\n");
    CHECK(k.ask(req("h1")) == "action=dunno\n\n");
    Kit none(vhost(ash));
    CHECK(none.ask(req()) == "action=PREPEND X-MtScore: NO score=0\n\n");
}

TEST_CASE("scores are printed like Perl prints numbers", "[helpers]")
{
    Kit k(vhost(probe("a", "score = 0.1") + probe("b", "score = 0.2") + probe("c", "score = -5e0") +
                probe("show", "keyvar = s:score")));
    CHECK(k.ask(req()) == "action=-4.7\n\n");
    Kit tiny(vhost(probe("a", "score = 1e21") + probe("show", "keyvar = s:score")));
    CHECK(tiny.ask(req()) == "action=1e+21\n\n");
}

TEST_CASE("score_field keeps a separate score", "[helpers]")
{
    Kit k(vhost(probe("a", "score = 3\nscore_field = spam") + probe("b", "score = 1") +
                probe("show", "keyvar = s:spam_detail")));
    CHECK(k.ask(req()) == "action=a=3\n\n");
}

TEST_CASE("uc_: a session value replaces the option for this request", "[helpers]")
{
    std::string conf = vhost("<Plugin cfg>\nmodule = SetField\nkey = user_score\nvalue = 7\n"
                             "</Plugin>\n" +
                             probe("sc", "score = 1\nuc_score = user_score") +
                             probe("off", "action = never\nuc_enabled = off_switch") +
                             probe("show", "keyvar = s:score"));
    Kit k(conf);
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=never\n\n"); // off_switch unset: enabled = on
    Kit k2(vhost("<Plugin sw>\nmodule = SetField\nkey = off_switch\nvalue = off\n</Plugin>\n" +
                 probe("sc", "score = 1\nuc_score = user_score") +
                 probe("off", "action = never\nuc_enabled = off_switch") +
                 probe("show", "keyvar = s:score")));
    CHECK(k2.ask(req()) == "action=1\n\n");
    Kit k3(vhost("<Plugin cfg>\nmodule = SetField\nkey = user_score\nvalue = 7\n</Plugin>\n" +
                 probe("sc", "score = 1\nuc_score = user_score") +
                 probe("show", "keyvar = s:score_detail")));
    CHECK(k3.ask(req()) == "action=sc=7\n\n");
}

TEST_CASE("templates replace the first occurrence of each placeholder only", "[helpers]")
{
    Kit k(vhost(probe("t", "tmpl = \"%IP% and %IP% score %SCORE% %NONE%\"")));
    CHECK(k.ask("client_address=10.1.2.3\n") == "action=10.1.2.3 and %IP% score 0 %NONE%\n\n");
    CHECK(k.ask("request=x\n") == "action= and %IP% score 0 %NONE%\n\n"); // unavailable: empty
}

TEST_CASE("pol_log_bytes logs NUL bytes escaped and percent signs as they are", "[helpers]")
{
    LogCapture log(2);
    pol_log_bytes(1, "x\0y%d%%s\0", 9);
    pol_log_bytes(3, "not at level 3", 14);
    CHECK(log.text() == "x\\0y%d%%s\\0\n");
}

TEST_CASE("plugin messages carry the virtual host and the plugin's log_level", "[helpers]")
{
    LogCapture log(2);
    Kit k(vhost("<Plugin c>\nmodule = Condition\nkey = client_address\nmatch = 192.0.2.1\n"
                "log_level = 2\naction = ok\n</Plugin>\n"
                "<Plugin quiet>\nmodule = Condition\nkey = client_address\nmatch = 192.0.2.1\n"
                "</Plugin>\n"));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=ok\n\n");
    std::string t = log.text();
    CHECK(t.find("test: client_address matched 192.0.2.1\n") != std::string::npos);
}
