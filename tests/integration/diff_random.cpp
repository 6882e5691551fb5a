// diff_random.cpp: a seeded random differential test. One chain mixing every plugin of this
// milestone (SetField, ClearFields, Condition with sub-chains, Stress, RegexList inline and
// from a file, numeric Conditions, session-dependent scoring, Eval, ScoreAction gt/lt with
// templates, AddScoreHeader) receives several hundred requests drawn from small pools of
// realistic and odd values (absent attributes included); the Perl mtpolicyd is the oracle and
// ringpolicyd must give the same reply to every request. The seed is printed; set ITEST_SEED to
// replay a run.
#include "diffcheck.h"

#include <cstdlib>
#include <random>

using namespace itest;

namespace
{

const char *kChain = R"C(
  <Plugin set-class>
    module = "SetField"
    key = "user_class"
    value = "standard"
  </Plugin>
  <Plugin vip>
    module = "Condition"
    key = "sasl_username"
    re_match = "^vip"
    <Plugin vip-set>
      module = "SetField"
      key = "user_class"
      value = "vip"
    </Plugin>
  </Plugin>
  <Plugin unclass>
    module = "Condition"
    key = "client_address"
    match = "192.0.2.99"
    <Plugin clear>
      module = "ClearFields"
      fields = "user_class"
    </Plugin>
  </Plugin>
  <Plugin stress>
    module = "Stress"
    action = "defer_if_permit stressed"
  </Plugin>
  <Plugin helo>
    module = "RegexList"
    key = "helo_name"
    regex = "^(localhost|\[?[0-9.]+\]?)$"
    score = 3
  </Plugin>
  <Plugin senders>
    module = "RegexList"
    key = "sender"
    file = "@DIR@/senders"
    score = 2.5
  </Plugin>
  <Plugin dynamic>
    module = "RegexList"
    key = "client_name"
    regex = "(dyn|dsl|pool)"
    score = 1.5
  </Plugin>
  <Plugin unknown-client>
    module = "Condition"
    key = "client_name"
    match = "unknown"
    score = 2
  </Plugin>
  <Plugin big>
    module = "Condition"
    key = "size"
    gt_match = 10000000
    score = 1
  </Plugin>
  <Plugin many>
    module = "Condition"
    key = "recipient_count"
    gt_match = 20
    score = 2
  </Plugin>
  <Plugin vip-bonus>
    module = "Condition"
    key = "s:user_class"
    match = "vip"
    score = -10
  </Plugin>
  <Plugin classless>
    module = "Condition"
    key = "s:user_class"
    invert = 1
    match = "standard"
    action = "defer_if_permit class %s"
  </Plugin>
  <Plugin verdict>
    module = "Eval"
    store_in = "verdict"
    <Plugin would>
      module = "ScoreAction"
      threshold = 6
      action = "reject score %SCORE%"
    </Plugin>
  </Plugin>
  <Plugin show>
    module = "Condition"
    key = "s:verdict"
    re_match = "^reject score [0-9.]+$"
    <Plugin tag>
      module = "AddScoreHeader"
      header_name = "X-Verdict"
      spam_score = 7
    </Plugin>
  </Plugin>
  <Plugin final>
    module = "ScoreAction"
    threshold = 8
    action = "reject %IP% score=%SCORE%%SCORE_DETAIL%"
  </Plugin>
  <Plugin trusted>
    module = "ScoreAction"
    threshold = -5
    match = "lt"
    action = "dunno trusted %SCORE%"
  </Plugin>
  <Plugin header>
    module = "AddScoreHeader"
  </Plugin>
)C";

const char *kSenders = "^spam@\n@bad\\.example$\n(?i)viagra\n^$\n";

struct Pool {
    const char *name;
    std::vector<const char *> values;
};

const std::vector<Pool> kPools = {
    {"helo_name", {"mail.example.org", "localhost", "[192.0.2.1]", "192.0.2.1", "mx.dyn.example"}},
    {"sender",
     {"alice@example.org", "spam@bad.example", "bob@x.test", "", "Viagra@spam.test",
      "MAILER-DAEMON"}},
    {"client_name",
     {"mail.example.org", "unknown", "dyn-1.isp.example", "pool5.dsl.example", "host.example.net"}},
    {"client_address", {"192.0.2.10", "192.0.2.99", "198.51.100.7", "2001:db8::1"}},
    {"size", {"0", "2152", "10000001", "99999999", "abc", "12e7", ""}},
    {"recipient_count", {"0", "1", "21", "100", "20.5", "x"}},
    {"sasl_username", {"", "vip-user", "regular", "VIP"}},
    {"stress", {"", "", "", "yes", "no"}},
};

} // namespace

TEST_CASE("random requests through a chain of every plugin", "[diff][random]")
{
    std::vector<VhostSpec> vhosts = {{"mix", kChain, ""}};
    DiffRig rig(vhosts, "", {{"senders", kSenders}});
    ITEST_START_RIG(rig);

    unsigned seed = 0;
    if (const char *s = std::getenv("ITEST_SEED"))
        seed = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    if (seed == 0)
        seed = std::random_device{}();
    std::fprintf(stderr, "diff_random: seed %u (ITEST_SEED=%u replays it)\n", seed, seed);
    std::mt19937 rng(seed);

    int differ = 0, perl_unanswered = 0, ring_unanswered = 0;
    std::map<std::string, int> replies;
    for (int i = 0; i < 400; i++) {
        std::vector<std::pair<std::string, std::string>> o;
        for (auto &p : kPools) {
            if (rng() % 10 == 0)
                o.emplace_back(p.name, "\x7f"); /* absent */
            else
                o.emplace_back(p.name, p.values[rng() % p.values.size()]);
        }
        o.emplace_back("instance", "random-" + std::to_string(i));
        auto req = postfix_request(o);
        std::string perl = summarize(rig.ask(Impl::Perl, "mix", req));
        check_still_serving(rig, Impl::Perl, perl, perl_unanswered);
        replies[perl]++;
        if (!rig.has_ring())
            continue;
        std::string ring = summarize(rig.ask(Impl::Ring, "mix", req));
        check_still_serving(rig, Impl::Ring, ring, ring_unanswered);
        if (ring != perl && differ++ < 10) {
            INFO("seed " << seed << ", request #" << i << ":\n"
                         << request_text(req) << "Perl: " << perl << "\nringpolicyd: " << ring);
            CHECK(ring == perl);
        }
    }
    CHECK(differ == 0);
    /* the pools reach many different answers, not one path through the chain */
    INFO(replies.size() << " distinct replies");
    CHECK(replies.size() >= 15);
}
