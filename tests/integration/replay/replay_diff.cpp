// replay_diff.cpp: ringpolicyd-replay in differential mode on the shared maillogs: ringpolicyd
// and the Perl mtpolicyd 2.05, with the same configuration of plugins both implement (Action,
// Condition, RegexList, SetField, AddScoreHeader, ScoreAction), must give the same answer to
// every synthesized request. Until ringpolicyd is built, a second Perl instance stands in for it
// (the run then checks the replay plumbing only, and is reported as a partial SKIP). A control
// run against ringpolicyd-bare (always dunno) shows that differences are found when they exist.
// GCC 12 with -fsanitize=address warns -Wmaybe-uninitialized inside libstdc++'s <regex> (a
// false positive, GCC PR 105616), which -Werror turns into a failed sanitizer build.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "diffcheck.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <regex>

using namespace itest;

namespace {

// Scores from the client's name, SASL and the recipient; a threshold turns them into a reject,
// a HELO that is an address literal into a defer, and every other mail gets its score header.
const char *kRcptChain = R"CFG(
  <Plugin dynamic>
    module = "RegexList"
    key = "client_name"
    regex = "^unknown$"
    score = 5
  </Plugin>
  <Plugin authenticated>
    module = "Condition"
    key = "sasl_username"
    re_match = "."
    score = -10
  </Plugin>
  <Plugin own-domain>
    module = "RegexList"
    key = "recipient"
    regex = "@seaglass\.com$"
    score = 1.5
  </Plugin>
  <Plugin mark>
    module = "SetField"
    key = "seen"
    value = "1"
  </Plugin>
  <Plugin blocked>
    module = "ScoreAction"
    threshold = 6
    action = "reject sender ip %IP% is blocked (score=%SCORE%%SCORE_DETAIL%)"
  </Plugin>
  <Plugin literal-helo>
    module = "Condition"
    key = "helo_name"
    re_match = "^\["
    action = "defer_if_permit address literal as HELO"
  </Plugin>
  <Plugin data-stage>
    module = "Condition"
    key = "protocol_state"
    match = "DATA"
    action = "dunno"
  </Plugin>
  <Plugin score-header>
    module = "AddScoreHeader"
    spam_score = 5
  </Plugin>
)CFG";

// END-OF-MESSAGE on its own port (the accounting how-to's layout): mail from the webmail is
// let through, other big mails score.
const char *kEomChain = R"CFG(
  <Plugin webmail>
    module = "Condition"
    key = "client_address"
    match = "127.0.0.1"
    action = "ok submitted through the webmail"
  </Plugin>
  <Plugin big>
    module = "Condition"
    key = "size"
    gt_match = 20000
    score = 3
  </Plugin>
  <Plugin header>
    module = "AddScoreHeader"
    header_name = "X-Replay-Score"
    spam_score = 4
  </Plugin>
)CFG";

std::string maillog(const std::string &name)
{
    // The shared data sits next to the source tree, or at /work/shared/data on our machines
    // (a clean clone elsewhere, as CI makes, has no sibling directory).
    std::string path = source_root() + "/../shared/data/maillogs/" + name + "/mail.log";
    if (access(path.c_str(), R_OK) != 0)
        path = "/work/shared/data/maillogs/" + name + "/mail.log";
    return path;
}

std::string replay_bin()
{
    return product_root() + "/bench/replay/ringpolicyd-replay";
}

uint64_t json_u64(const std::string &json, const std::string &key, size_t nth = 0)
{
    std::regex re("\"" + key + "\":([0-9]+)");
    auto it = std::sregex_iterator(json.begin(), json.end(), re);
    for (size_t i = 0; i < nth && it != std::sregex_iterator(); i++)
        ++it;
    REQUIRE(it != std::sregex_iterator());
    return std::stoull((*it)[1].str());
}

size_t action_kinds(const std::string &json)
{
    std::smatch m;
    REQUIRE(std::regex_search(json, m, std::regex("\"actions\":\\{([^}]*)\\}")));
    std::string inner = m[1].str();
    return inner.empty() ? 0 : (size_t)std::count(inner.begin(), inner.end(), ',') + 1;
}

struct Sides {
    Endpoint server_rcpt, server_eom, against_rcpt, against_eom;
    std::unique_ptr<Daemon> stand_in; // a second Perl while ringpolicyd is not built
};

// ringpolicyd as --server and Perl as --against; without ringpolicyd, a second Perl on the
// ports ringpolicyd would have had.
void sides_start(DiffRig &rig, Sides &s)
{
    if (!rig.has_ring()) {
        s.stand_in.reset(new Daemon(Impl::Perl, rig.config_text(Impl::Ring)));
        s.stand_in->set_ready(rig.endpoint(Impl::Ring, "rcpt"));
        INFO(s.stand_in->log());
        REQUIRE(s.stand_in->start());
    }
    s.server_rcpt = rig.endpoint(Impl::Ring, "rcpt");
    s.server_eom = rig.endpoint(Impl::Ring, "eom");
    s.against_rcpt = rig.endpoint(Impl::Perl, "rcpt");
    s.against_eom = rig.endpoint(Impl::Perl, "eom");
}

RunResult replay(const std::vector<std::string> &args)
{
    std::vector<std::string> argv = {replay_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    // Perl mtpolicyd serves one connection per worker (max_servers 25 by default): a few
    // streams keep both daemons' pools from running dry; 60 s per request allows for a loaded
    // CI machine.
    argv.insert(argv.end(), {"--connections", "4", "--timeout-ms", "60000", "--no-progress",
                             "--json", "--year", "2015"});
    return run_command(argv, 240000);
}

void check_no_differences(const RunResult &r, uint64_t want_requests)
{
    INFO("stderr: " << r.err);
    INFO("stdout: " << r.out);
    CHECK(r.status == 0);
    CHECK(json_u64(r.out, "completed") == want_requests);
    CHECK(json_u64(r.out, "errors", 0) == 0); // --server
    CHECK(json_u64(r.out, "errors", 1) == 0); // --against
    CHECK(json_u64(r.out, "timeouts", 0) == 0);
    CHECK(json_u64(r.out, "timeouts", 1) == 0);
    CHECK(json_u64(r.out, "count") == 0); // differences
    CHECK(json_u64(r.out, "compared") == want_requests);
}

// Both daemons (or the stand-in) serving kRcptChain and kEomChain, for the log named.
struct Rig {
    DiffRig rig{{{"rcpt", kRcptChain, ""}, {"eom", kEomChain, ""}}};
    Sides s;
    explicit Rig(const std::string &log)
    {
        need_file(maillog(log), "the " + log + " maillog");
        need_file(replay_bin(), "ringpolicyd-replay");
        ITEST_START_RIG(rig);
        sides_start(rig, s);
    }
};

} // namespace

TEST_CASE("inbound MX log (kdent), all stages: no differences", "[replay][diff]")
{
    Rig rig("kdent-postfix_log_analysis");
    const Sides &s = rig.s;
    RunResult r = replay({"--server", s.server_rcpt.str(), "--against", s.against_rcpt.str(),
                          "--stages", "all", maillog("kdent-postfix_log_analysis")});
    // 1078 RCPT (489 mails' recipients and 589 rejected ones), 489 DATA, 489 END-OF-MESSAGE.
    check_no_differences(r, 2056);
    // The configuration is not vacuous on this log: rejects, defers, headers and dunno.
    CHECK(action_kinds(r.out) >= 4);
}

TEST_CASE("SASL submission log (louisitvn), END-OF-MESSAGE on its own port: no differences",
          "[replay][diff]")
{
    Rig rig("louisitvn-pflgviewer");
    const Sides &s = rig.s;
    RunResult r = replay({"--server", s.server_rcpt.str(), "--against", s.against_rcpt.str(),
                          "--port-map", "END-OF-MESSAGE=" + std::to_string(s.server_eom.port),
                          "--against-port-map",
                          "END-OF-MESSAGE=" + std::to_string(s.against_eom.port), "--stages",
                          "RCPT,END-OF-MESSAGE", maillog("louisitvn-pflgviewer")});
    // 1427 RCPT (1417 mails, 1368 of them with placeholder recipients, and 10 rejected), 1417
    // END-OF-MESSAGE.
    check_no_differences(r, 2844);
    // "ok" comes only from the END-OF-MESSAGE virtual host: the port map was followed.
    CHECK(r.out.find("\"ok\":") != std::string::npos);
    CHECK(action_kinds(r.out) >= 2);
}

TEST_CASE("control: a server that always says dunno differs, and the replay says so",
          "[replay][diff]")
{
    std::string bare = product_root() + "/bench/responder/ringpolicyd-bare";
    need_file(bare, "ringpolicyd-bare");
    Rig rig("kdent-postfix_log_analysis");
    uint16_t port = free_tcp_port();
    std::vector<std::string> argv = {bare, "--listen", "127.0.0.1:" + std::to_string(port),
                                     "--shards", "1"};
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        std::vector<char *> a;
        for (auto &x : argv)
            a.push_back(&x[0]);
        a.push_back(nullptr);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(a[0], a.data());
        _exit(127);
    }
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        up = Conn(Endpoint::tcp(port), 200).ok();
        if (!up)
            sleep_ms(25);
    }
    REQUIRE(up);
    RunResult r = replay({"--server", "127.0.0.1:" + std::to_string(port), "--against",
                          rig.s.against_rcpt.str(), "--requests", "300",
                          "--show-diffs", "1", maillog("kdent-postfix_log_analysis")});
    kill(-pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.status == 3); // differences found
    CHECK(json_u64(r.out, "completed") == 300);
    uint64_t diffs = json_u64(r.out, "count");
    CHECK(diffs > 0);
    CHECK(diffs <= 300);
    CHECK(r.out.find("\"dunno -> reject\":") != std::string::npos);
    CHECK(r.out.find("\"dunno -> prepend\":") != std::string::npos);
    CHECK(r.out.find("-- server replied:\\naction=dunno\\n\\n-- against replied:\\naction=") !=
          std::string::npos);
}
