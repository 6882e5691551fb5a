// diff_action.cpp: differential tests of the Action plugin, chain order and virtual host
// selection (spec 13.2, 11.2, 11.3, 8.1; appendix D #1, #2, #3), Perl mtpolicyd vs ringpolicyd.
#include "diffcheck.h"

using namespace itest;

TEST_CASE("Action texts, chain order and vhosts by port (D #1, #2)", "[diff][action]")
{
    std::vector<VhostSpec> vhosts = {
        {"d1", R"(
  <Plugin a>
    module = "Action"
    action = "reject test"
  </Plugin>)",
         ""},
        {"d2", R"(
  <Plugin first>
    module = "Action"
    action = "reject"
  </Plugin>
  <Plugin second>
    module = "Action"
    action = "defer other"
  </Plugin>)",
         ""},
        {"texts", R"X(
  <Plugin long>
    module = "Action"
    action = "550 5.7.1 <spam@example.org>: rejected; see https://example.org/?a=b&c=d  (twice  spaced)"
  </Plugin>)X",
         ""},
        {"hash", R"(
  <Plugin hash>
    module = "Action"
    action = "reject see #1"
  </Plugin>)",
         ""},
        {"escaped_hash", R"(
  <Plugin hash>
    module = "Action"
    action = reject see \#1
  </Plugin>)",
         ""},
        {"unquoted", R"(
  <Plugin u>
    module = Action
    action     reject   inner  spaces kept   
  </Plugin>)",
         ""},
        {"single_quotes", R"(
  <Plugin q>
    module = "Action"
    action = 'reject quoted'
  </Plugin>)",
         ""},
        {"prepend", R"(
  <Plugin p>
    module = "Action"
    action = "PREPEND X-Test: yes"
  </Plugin>)",
         ""},
        {"continued",
         "\n  <Plugin c>\n    module = \"Action\"\n    action = reject first \\\n"
         "        second\n  </Plugin>\n",
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"d1", rq(), "reject test", "", ""},
        {"d1", {"request=smtpd_access_policy"}, "reject test", "", ""},
        {"d1", rq({{"protocol_state", "END-OF-MESSAGE"}, {"size", "2152"}}), "reject test", "", ""},
        {"d2", rq(), "reject", "", ""},
        {"texts", rq(),
         "550 5.7.1 <spam@example.org>: rejected; see https://example.org/?a=b&c=d  (twice  "
         "spaced)",
         "", ""},
        {"hash", rq(), "\"reject see", "", ""},
        {"escaped_hash", rq(), "reject see #1", "", ""},
        {"unquoted", rq(), "reject   inner  spaces kept", "", ""},
        {"single_quotes", rq(), "'reject quoted'", "", ""},
        {"prepend", rq(), "PREPEND X-Test: yes", "", ""},
        {"continued", rq(), "reject first second", "", ""},
    };
    run_cases(rig, vhosts, cases);
}

TEST_CASE("vhost by policy_context (D #3)", "[diff][action][vhost]")
{
    std::vector<VhostSpec> vhosts = {
        {"fred", R"(
  <Plugin fred-action>
    module = "Action"
    action = "reject fred"
  </Plugin>)",
         ""},
        {"horst", R"(
  <Plugin horst-action>
    module = "Action"
    action = "reject horst"
  </Plugin>)",
         "0"},
        {"other", R"(
  <Plugin other-action>
    module = "Action"
    action = "reject other"
  </Plugin>)",
         ""},
    };
    DiffRig rig(vhosts, "vhost_by_policy_context = 1\n");
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"fred", rq({{"policy_context", "fred"}}), "reject fred", "", ""},
        {"fred", rq({{"policy_context", "horst"}}), "reject horst", "", ""},
        {"fred", rq(), "reject fred", "", ""},
        {"fred", rq({{"policy_context", "\x7f"}}), "reject fred", "", ""},
        {"other", rq({{"policy_context", "fred"}}), "reject fred", "", ""},
        {"other", rq({{"policy_context", "horst"}}), "reject horst", "", ""},
        {"other", rq(), "reject other", "", ""},
    };
    run_cases(rig, vhosts, cases);
}

TEST_CASE("policy_context is ignored without vhost_by_policy_context", "[diff][action][vhost]")
{
    std::vector<VhostSpec> vhosts = {
        {"fred", R"(
  <Plugin a>
    module = "Action"
    action = "reject fred"
  </Plugin>)",
         ""},
        {"horst", R"(
  <Plugin a>
    module = "Action"
    action = "reject horst"
  </Plugin>)",
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"fred", rq({{"policy_context", "horst"}}), "reject fred", "", ""},
        {"horst", rq({{"policy_context", "fred"}}), "reject horst", "", ""},
        {"horst", rq(), "reject horst", "", ""},
    };
    run_cases(rig, vhosts, cases);
}
