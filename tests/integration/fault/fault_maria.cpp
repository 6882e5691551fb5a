// fault_maria.cpp: MariaDB restarted under a steady load of 64 connections (issue 8): the
// seed's accounting and quota how-to on MySQL (its statements verbatim, tests/integration/maria/
// maria_rig.h; SqlUserConfig + Quota + Accounting on a `dbi:mysql:` Sql connection, flush
// interval 0.2 s; the load's 16 clients are standard relay hosts, quota_count 10000, far above
// what a run sends) at END-OF-MESSAGE, on the test's private mariadbd on loopback. mariadbd is
// stopped for 3 s, cleanly (SIGTERM) or killed (SIGKILL), and started again. Contract: every
// mail is answered while it is down (SqlUserConfig logs and goes on, 2.05's behaviour; Quota
// runs with on_error = continue; Accounting keeps the counts in memory and never fails a mail),
// no connection is closed, no count is lost (the table's sum equals the mails Accounting ran
// for, the replies "dunno", exactly, once the load stops; and again after the daemon's exit, so
// nothing is counted twice), and the outage's counts are in the table within the MariaDB
// client's longest reconnect backoff (5 s, engine/maria.c) + 1 s + a flush interval. Figures:
// one JSON line per fault.
#include "fault_load.h"
#include "../maria/maria_rig.h"

#include <signal.h>

#include <atomic>
#include <climits>

using namespace itest;
using namespace faultit;
using namespace mariait;

namespace
{

uint64_t count_sum()
{
    auto rows = my_rows("SELECT COALESCE(SUM(`count`), 0) FROM acct_client_address");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

/* Replies of the run with action word w. */
size_t replies_with(const std::vector<Sample> &s, const std::string &w)
{
    size_t n = 0;
    for (auto &x : s)
        n += x.outcome == Outcome::Reply && action_word(x.action) == w;
    return n;
}

/* Mails Accounting ran for among those started before t (answered dunno: Quota's coin defer
 * ends the chain before Accounting). */
size_t accounted_before(const std::vector<Sample> &s, int64_t t)
{
    size_t n = 0;
    for (auto &x : s)
        n += x.outcome == Outcome::Reply && x.start_ms < t && action_word(x.action) == "dunno";
    return n;
}

void run_restart(const std::string &fault, int sig)
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    my_rows(howto_mysql());
    std::string hosts; /* the load's clients: premium relay hosts (quota_count 100000) */
    for (int i = 1; i <= 16; i++)
        hosts += std::string(i > 1 ? "," : "") + "(NULL, '192.0.2." + std::to_string(i) + "', 2)";
    my_rows("INSERT INTO relay_hosts VALUES " + hosts);
    uint16_t port = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" + my_connection() +
        "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
        vhost_block(std::to_string(port), "accounting",
                    howto_plugins("    on_error = \"continue\"\n", "    flush_interval = 0.2\n") +
                        action_plugin("pass", "dunno"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    MailLoad ml;
    Load load(port, 64, [&ml](uint64_t seq) { return ml.make(seq); });
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    my().stop(sig);
    sleep_ms(3000);
    REQUIRE(my().start());
    int64_t t2 = now_ms(); /* MariaDB answers again */
    /* Caught up: every mail accounted before the restart is in the table. */
    int64_t caught_up = -1;
    while (now_ms() - t2 < 10000) {
        size_t due = accounted_before(load.snapshot(), t2);
        if (caught_up < 0 && count_sum() >= due)
            caught_up = now_ms() - t2;
        if (caught_up >= 0 && now_ms() - t2 > 2000)
            break;
        sleep_ms(100);
    }
    int64_t t3 = now_ms();
    ml.draining = true;
    sleep_ms(1500);
    load.stop();
    auto s = load.snapshot();
    Window all = Load::window(s, 0, INT64_MAX), drain = Load::window(s, t3 + 500, INT64_MAX);
    /* Every mail has its reply now; those not deferred by Quota are the ones counted. */
    uint64_t mails = ml.mails, accounted = mails - replies_with(s, "defer");
    uint64_t sum = 0;
    for (int i = 0; i < 100 && (sum = count_sum()) < accounted; i++)
        sleep_ms(100);
    /* "before" ends 250 ms ahead of the stop: a shutdown under way already fails queries. */
    Window before = Load::window(s, t0, t1 - 250), during = Load::window(s, t1 - 250, t2),
           after = Load::window(s, t2, t3);
    print_json(fault,
               Load::json("before", before) + "," + Load::json("during", during) + "," +
                   Load::json("after", after) + ",\"down_ms\":" + std::to_string(t2 - t1) +
                   ",\"recovery_ms\":" + std::to_string(caught_up) +
                   ",\"mails\":" + std::to_string(mails) + ",\"accounted\":" + std::to_string(sum) +
                   ",\"lost_counts\":" +
                   std::to_string(static_cast<int64_t>(accounted) - static_cast<int64_t>(sum)));
    std::string notes;
    for (auto &l : split_lines(d->log()))
        if (l.find("result=") == std::string::npos && notes.size() < 4000)
            notes += l + "\n";
    INFO(notes);
    REQUIRE(d->alive());
    CHECK(before.answered > 100);
    CHECK(before.actions["dunno"] == before.answered);
    CHECK(during.answered > 0);
    CHECK(all.closed + all.timeouts == 0); /* so every mail sent has its reply */
    CHECK(drain.actions["dunno"] == drain.answered);
    CHECK(sum == accounted);
    CHECK(caught_up >= 0);
    CHECK(caught_up <= 6200); /* reconnect backoff max 5 s + 1 s + a flush interval */
    CHECK(d->stop() == 0);
    CHECK(count_sum() == accounted); /* nothing twice at exit */
}

} // namespace

TEST_CASE("backends: MariaDB shut down and restarted under load loses no count", "[fault][maria]")
{
    run_restart("mariadb_restart", SIGTERM);
}

TEST_CASE("backends: MariaDB killed (-9) and restarted under load loses no count",
          "[fault][maria_kill9]")
{
    run_restart("mariadb_kill9", SIGKILL);
}
