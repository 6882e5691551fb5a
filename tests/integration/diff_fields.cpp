// diff_fields.cpp: differential tests of the session-writing plugins SetField (13.26),
// ClearFields (13.4) and Eval (13.8), and of Stress (13.29), Perl mtpolicyd vs ringpolicyd.
// Without a session cache the session lives for one request, so each scenario writes and reads
// the session within one chain.
#include "diffcheck.h"

using namespace itest;

namespace
{

std::string set(const std::string &name, const std::string &key, const std::string &value)
{
    return "\n  <Plugin " + name + ">\n    module = \"SetField\"\n    key = \"" + key +
           "\"\n    value = \"" + value + "\"\n  </Plugin>";
}

/* Condition on a session key: reply "reject KEY=VALUE" when it equals value. */
std::string is(const std::string &name, const std::string &key, const std::string &value)
{
    return "\n  <Plugin " + name + ">\n    module = \"Condition\"\n    key = \"s:" + key +
           "\"\n    match = \"" + value + "\"\n    action = \"reject " + key + "=" + value +
           "\"\n  </Plugin>";
}

std::string fallback()
{
    return "\n  <Plugin fallback>\n    module = \"Action\"\n    action = \"defer fallback\"\n"
           "  </Plugin>";
}

} // namespace

TEST_CASE("SetField and ClearFields", "[diff][fields]")
{
    std::vector<VhostSpec> vhosts = {
        {"set", set("s1", "color", "blue") + is("c", "color", "blue") + fallback(), ""},
        {"set_twice",
         set("s1", "color", "blue") + set("s2", "color", "red") + is("c1", "color", "blue") +
             is("c2", "color", "red") + fallback(),
         ""},
        {"set_empty", set("s1", "color", "") + is("c", "color", "") + fallback(), ""},
        {"set_spaces", set("s1", "my key", " a  b ") + is("c", "my key", " a  b ") + fallback(),
         ""},
        {"clear",
         set("s1", "a", "1") + set("s2", "b", "2") + set("s3", "c", "3") + R"(
  <Plugin clear>
    module = "ClearFields"
    fields = "a ,  c"
  </Plugin>)" +
             is("ca", "a", "1") + is("cc", "c", "3") + is("cb", "b", "2") + fallback(),
         ""},
        {"clear_prefix",
         set("s1", "user_a", "1") + set("s2", "user_b", "2") + set("s3", "other", "3") +
             set("s4", "us.x", "4") + R"(
  <Plugin clear>
    module = "ClearFields"
    fields_prefix = "user_,us."
  </Plugin>)" +
             is("c1", "user_a", "1") + is("c2", "user_b", "2") + is("c4", "us.x", "4") +
             is("c3", "other", "3") + fallback(),
         ""},
        {"clear_prefix_literal",
         set("s1", "ab", "1") + set("s2", "a.b", "2") + R"(
  <Plugin clear>
    module = "ClearFields"
    fields_prefix = "a."
  </Plugin>)" +
             is("c2", "a.b", "2") + is("c1", "ab", "1") + fallback(),
         ""},
        {"clear_score", R"(
  <Plugin scorer>
    module = "Condition"
    key = "sender"
    re_match = "."
    score = 6
  </Plugin>
  <Plugin clear>
    module = "ClearFields"
    fields = "score"
  </Plugin>
  <Plugin header>
    module = "AddScoreHeader"
  </Plugin>)",
         ""},
        {"clear_both",
         set("s1", "keep", "1") + set("s2", "x_1", "2") + set("s3", "y", "3") + R"(
  <Plugin clear>
    module = "ClearFields"
    fields = "y"
    fields_prefix = "x_"
  </Plugin>)" +
             is("c2", "x_1", "2") + is("c3", "y", "3") + is("c1", "keep", "1") + fallback(),
         ""},
        {"clear_nothing",
         set("s1", "a", "1") + R"(
  <Plugin clear>
    module = "ClearFields"
  </Plugin>)" +
             is("c", "a", "1") + fallback(),
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"set", rq(), "reject color=blue", "", ""},
        {"set", {"request=smtpd_access_policy"}, "reject color=blue", "", ""},
        {"set_twice", rq(), "reject color=red", "", ""},
        {"set_empty", rq(), "reject color=", "", ""},
        {"set_spaces", rq(), "reject my key= a  b ", "", ""},
        {"clear", rq(), "reject b=2", "", ""},
        {"clear_prefix", rq(), "reject other=3", "", ""},
        {"clear_prefix_literal", rq(), "reject ab=1", "", ""},
        {"clear_score", rq(), "PREPEND X-MtScore: NO score=0 [scorer=6]", "", ""},
        {"clear_both", rq(), "reject keep=1", "", ""},
        {"clear_nothing", rq(), "reject a=1", "", ""},
    };
    run_cases(rig, vhosts, cases);
}

TEST_CASE("Eval captures a sub-chain's answer in the session", "[diff][fields][eval]")
{
    std::vector<VhostSpec> vhosts = {
        {"eval",
         R"(
  <Plugin capture>
    module = "Eval"
    store_in = "captured"
    <Plugin inner>
      module = "Condition"
      key = "sender"
      match = "alice@example.org"
      action = "reject alice"
    </Plugin>
  </Plugin>)" +
             is("c", "captured", "reject alice") + fallback(),
         ""},
        {"eval_quiet", R"(
  <Plugin capture>
    module = "Eval"
    store_in = "captured"
    <Plugin inner>
      module = "Action"
      action = "reject never sent"
    </Plugin>
  </Plugin>)",
         ""},
        {"eval_nothing",
         set("s1", "captured", "before") + R"(
  <Plugin capture>
    module = "Eval"
    store_in = "captured"
    <Plugin inner>
      module = "Condition"
      key = "sender"
      match = "nobody"
      action = "reject nobody"
    </Plugin>
  </Plugin>)" +
             is("c", "captured", "before") + fallback(),
         ""},
        {"eval_empty", R"(
  <Plugin capture>
    module = "Eval"
    store_in = "captured"
  </Plugin>)" + fallback(),
         ""},
        {"eval_lastmatch", R"(
  <Plugin capture>
    module = "Eval"
    store_in = "captured"
    <Plugin inner>
      module = "Action"
      action = "reject inner"
    </Plugin>
  </Plugin>
  <Plugin use>
    module = "Condition"
    key = "s:captured"
    re_match = "^reject"
    action = "defer captured %s"
  </Plugin>)",
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"eval", rq(), "reject captured=reject alice", "", ""},
        {"eval", rq({{"sender", "bob@example.org"}}), "defer fallback", "", ""},
        {"eval_quiet", rq(), "dunno", "", ""},
        {"eval_nothing", rq(), "reject captured=before", "", ""},
        {"eval_empty", rq(), "defer fallback", "", ""},
        {"eval_lastmatch", rq(), "defer captured %s", "", ""},
    };
    run_cases(rig, vhosts, cases);
    /* Eval returns nothing, so the result line names the last plugin that answered. */
    CHECK(rig.daemon(Impl::Perl).wait_log("plugin=use, result=defer captured %s", 2000));
    if (rig.has_ring())
        CHECK(rig.daemon(Impl::Ring).wait_log("plugin=use, result=defer captured %s", 2000));
}

TEST_CASE("Stress", "[diff][stress]")
{
    std::vector<VhostSpec> vhosts = {
        {"stress", R"(
  <Plugin stress>
    module = "Stress"
    action = "defer_if_permit under stress"
  </Plugin>)" + fallback(),
         ""},
        {"stress_subchain", R"(
  <Plugin stress>
    module = "Stress"
    <Plugin big>
      module = "Condition"
      key = "size"
      gt_match = 1000000
      action = "defer too big under stress"
    </Plugin>
  </Plugin>)" + fallback(),
         ""},
        {"stress_uc", set("s1", "stress_action", "reject per user stress") + R"(
  <Plugin stress>
    module = "Stress"
    action = "defer_if_permit under stress"
    uc_action = "stress_action"
  </Plugin>)",
         ""},
        {"stress_nothing", R"(
  <Plugin stress>
    module = "Stress"
  </Plugin>)" + fallback(),
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"stress", rq({{"stress", "yes"}}), "defer_if_permit under stress", "", ""},
        {"stress", rq(), "defer fallback", "", ""},
        {"stress", rq({{"stress", "YES"}}), "defer fallback", "", ""},
        {"stress", rq({{"stress", "yes "}}), "defer fallback", "", ""},
        {"stress", rq({{"stress", "\x7f"}}), "defer fallback", "", ""},
        {"stress_subchain", rq({{"stress", "yes"}, {"size", "2000000"}}),
         "defer too big under stress", "", ""},
        {"stress_subchain", rq({{"stress", "yes"}, {"size", "20"}}), "defer fallback", "", ""},
        {"stress_subchain", rq({{"size", "2000000"}}), "defer fallback", "", ""},
        {"stress_uc", rq({{"stress", "yes"}}), "reject per user stress", "", ""},
        {"stress_uc", rq(), "dunno", "", ""},
        {"stress_nothing", rq({{"stress", "yes"}}), "defer fallback", "", ""},
    };
    run_cases(rig, vhosts, cases);
}
