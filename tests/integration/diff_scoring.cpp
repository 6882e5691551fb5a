// diff_scoring.cpp: differential tests of scoring (spec 12.4), AddScoreHeader (13.3) and
// ScoreAction (13.25), including appendix D #4, Perl mtpolicyd vs ringpolicyd. Without a session
// cache every request starts with score 0, so each request is a whole scenario.
#include "diffcheck.h"

using namespace itest;

namespace
{

/* A Condition named label that adds score when the request attribute `key` equals "1". */
std::string scorer(const std::string &label, const std::string &key, const std::string &score,
                   const std::string &extra = "")
{
    return "\n  <Plugin " + label + ">\n    module = \"Condition\"\n    key = \"" + key +
           "\"\n    match = \"1\"\n    score = " + score + "\n" + extra + "  </Plugin>";
}

/* Appendix D #4: ZUMSEL=5, BLA=2.5, BLUB=2.5 (each switched on by a request attribute). */
std::string d4_scorers(const std::string &extra = "")
{
    return scorer("ZUMSEL", "zumsel", "5", extra) + scorer("BLA", "bla", "2.5", extra) +
           scorer("BLUB", "blub", "2.5", extra);
}

} // namespace

TEST_CASE("Scoring, ScoreAction and AddScoreHeader (D #4)", "[diff][scoring]")
{
    std::vector<VhostSpec> vhosts = {
        {"d4_action", d4_scorers() + R"C(
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 10
    action = "reject sender ip %IP% is blocked (score=%SCORE%%SCORE_DETAIL%)"
  </Plugin>
  <Plugin header>
    module = "AddScoreHeader"
  </Plugin>)C",
         ""},
        {"d4_lt", d4_scorers() + R"C(
  <Plugin low>
    module = "ScoreAction"
    threshold = 2.5
    match = "lt"
    action = "dunno score %SCORE% low"
  </Plugin>
  <Plugin fallback>
    module = "Action"
    action = "defer high"
  </Plugin>)C",
         ""},
        {"header_custom", d4_scorers() + R"C(
  <Plugin header>
    module = "AddScoreHeader"
    header_name = "X-Policy-Score"
    spam_score = 7.5
  </Plugin>)C",
         ""},
        {"header_uc",
         R"C(
  <Plugin set>
    module = "SetField"
    key = "my_spam_score"
    value = "2"
  </Plugin>)C" +
             d4_scorers() + R"C(
  <Plugin header>
    module = "AddScoreHeader"
    uc_spam_score = "my_spam_score"
  </Plugin>)C",
         ""},
        {"score_field", d4_scorers("    score_field = \"other\"\n") + R"C(
  <Plugin header_default>
    module = "Condition"
    key = "show_default"
    match = "1"
    <Plugin h1>
      module = "AddScoreHeader"
    </Plugin>
  </Plugin>
  <Plugin header_other>
    module = "AddScoreHeader"
    score_field = "other"
    header_name = "X-Other"
  </Plugin>)C",
         ""},
        {"template_once", d4_scorers() + R"C(
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 0
    action = "reject %IP% %IP% %SCORE% %SCORE% %SCORE_DETAIL%|%SCORE_DETAIL%"
  </Plugin>)C",
         ""},
        {"subchain", d4_scorers() + R"C(
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 5
    <Plugin inner>
      module = "Action"
      action = "reject from subchain"
    </Plugin>
  </Plugin>)C",
         ""},
        {"uc_threshold",
         R"C(
  <Plugin set>
    module = "SetField"
    key = "my_threshold"
    value = "2.5"
  </Plugin>)C" +
             d4_scorers() + R"C(
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 100
    uc_threshold = "my_threshold"
    action = "reject uc threshold %SCORE%"
  </Plugin>)C",
         ""},
        {"bad_match", d4_scorers() + R"C(
  <Plugin threshold>
    module = "ScoreAction"
    threshold = 1
    match = "ge"
    action = "reject never"
  </Plugin>)C",
         ""},
        {"numbers",
         scorer("a", "a", "0.1") + scorer("b", "b", "0.2") + scorer("c", "c", "-5") +
             scorer("d", "d", "1e3") + scorer("e", "e", ".5") + scorer("f", "f", "-2.5") + R"C(
  <Plugin header>
    module = "AddScoreHeader"
  </Plugin>)C",
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    auto on = [](std::vector<std::string> names,
                 std::vector<std::pair<std::string, std::string>> more = {}) {
        for (auto &n : names)
            more.emplace_back(n, "1");
        return postfix_request(more);
    };
    std::vector<DiffCase> cases = {
        {"d4_action", on({"zumsel", "bla", "blub"}),
         "reject sender ip 192.0.2.10 is blocked (score=10, ZUMSEL=5, BLA=2.5, BLUB=2.5)", "", ""},
        {"d4_action", on({"zumsel", "bla"}), "PREPEND X-MtScore: YES score=7.5 [ZUMSEL=5, BLA=2.5]",
         "", ""},
        {"d4_action", on({"bla", "blub"}), "PREPEND X-MtScore: YES score=5 [BLA=2.5, BLUB=2.5]", "",
         ""},
        {"d4_action", on({"blub"}), "PREPEND X-MtScore: NO score=2.5 [BLUB=2.5]", "", ""},
        {"d4_action", rq(), "PREPEND X-MtScore: NO score=0", "", ""},
        {"d4_action", on({"zumsel", "bla", "blub"}, {{"client_address", "\x7f"}}),
         "reject sender ip unknown is blocked (score=10, ZUMSEL=5, BLA=2.5, BLUB=2.5)", "", ""},
        {"d4_action", on({"zumsel", "bla", "blub"}, {{"client_address", ""}}),
         "reject sender ip  is blocked (score=10, ZUMSEL=5, BLA=2.5, BLUB=2.5)", "", ""},
        {"d4_lt", rq(), "dunno score 0 low", "", ""},
        {"d4_lt", on({"bla"}), "dunno score 2.5 low", "", ""},
        {"d4_lt", on({"zumsel"}), "defer high", "", ""},
        {"header_custom", on({"zumsel", "bla"}),
         "PREPEND X-Policy-Score: YES score=7.5 [ZUMSEL=5, BLA=2.5]", "", ""},
        {"header_custom", on({"zumsel", "blub"}),
         "PREPEND X-Policy-Score: YES score=7.5 [ZUMSEL=5, BLUB=2.5]", "", ""},
        {"header_custom", on({"zumsel"}), "PREPEND X-Policy-Score: NO score=5 [ZUMSEL=5]", "", ""},
        {"header_uc", on({"bla"}), "PREPEND X-MtScore: YES score=2.5 [BLA=2.5]", "", ""},
        {"header_uc", rq(), "PREPEND X-MtScore: NO score=0", "", ""},
        {"score_field", on({"zumsel", "bla"}), "PREPEND X-Other: YES score=7.5 [ZUMSEL=5, BLA=2.5]",
         "", ""},
        {"score_field", on({"zumsel", "show_default"}), "PREPEND X-MtScore: NO score=0", "", ""},
        {"template_once", on({"zumsel", "bla"}),
         "reject 192.0.2.10 %IP% 7.5 %SCORE% , ZUMSEL=5, BLA=2.5|%SCORE_DETAIL%", "", ""},
        {"template_once", rq(), "reject 192.0.2.10 %IP% 0 %SCORE% |%SCORE_DETAIL%", "", ""},
        {"subchain", on({"zumsel"}), "reject from subchain", "", ""},
        {"subchain", on({"bla"}), "dunno", "", ""},
        {"uc_threshold", on({"bla"}), "reject uc threshold 2.5", "", ""},
        {"uc_threshold", on({"zumsel"}), "reject uc threshold 5", "", ""},
        {"uc_threshold", rq(), "dunno", "", ""},
        {"bad_match", on({"zumsel"}), "<closed>", "", ""},
        {"bad_match", rq(), "<closed>", "", ""},
        {"numbers", on({"a", "b"}), "PREPEND X-MtScore: NO score=0.3 [a=0.1, b=0.2]", "", ""},
        {"numbers", on({"c", "f"}), "PREPEND X-MtScore: NO score=-7.5 [c=-5, f=-2.5]", "", ""},
        {"numbers", on({"d", "e"}), "PREPEND X-MtScore: YES score=1000.5 [d=1e3, e=.5]", "", ""},
        {"numbers", on({"a", "b", "c", "d", "e", "f"}),
         "PREPEND X-MtScore: YES score=993.3 [a=0.1, b=0.2, c=-5, d=1e3, e=.5, f=-2.5]", "", ""},
    };
    run_cases(rig, vhosts, cases);
}
