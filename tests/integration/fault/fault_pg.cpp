// fault_pg.cpp: PostgreSQL restarted under a steady load of 64 connections (issue 8):
// Accounting (flush_interval 0.2 s) on the test PostgreSQL (tests/unit/sql/pg_server.h, through
// tests/integration/acct/acct_rig.h) is stopped ("fast") for 3 s and started again. Contract:
// every mail is answered while it is down (Accounting keeps the counts in memory and never fails
// a mail), no count is lost (the table's sum equals the mails answered, exactly, once the load
// stops), and the counts of the outage are in the table within the PostgreSQL client's longest
// reconnect backoff (5 s) + 1 s + a flush interval. The load drains before it stops (MailLoad,
// fault_load.h) so no mail is in flight at its end. Figures: one JSON line.
#include "fault_load.h"
#include "../acct/acct_rig.h"

using namespace itest;
using namespace faultit;
using namespace acctit;

namespace
{

uint64_t count_sum()
{
    auto rows = pg_rows("SELECT COALESCE(SUM(\"count\"), 0) FROM acct_client_address");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

size_t answered_before(const std::vector<Sample> &s, int64_t t)
{
    size_t n = 0;
    for (auto &x : s)
        n += x.outcome == Outcome::Reply && x.start_ms < t;
    return n;
}

} // namespace

TEST_CASE("backends: PostgreSQL restarted under load loses no count", "[fault][postgresql]")
{
    pg_up();
    pg_rows("DROP TABLE IF EXISTS acct_client_address");
    uint16_t port = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" + pg_connection() +
        vhost_block(std::to_string(port), "acct",
                    "  <Plugin acct>\n    module = \"Accounting\"\n    fields = "
                    "\"client_address\"\n    flush_interval = 0.2\n  </Plugin>\n" +
                        action_plugin("a", "dunno"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    MailLoad ml;
    Load load(port, 64, [&ml](uint64_t seq) { return ml.make(seq); });
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    pg().stop("fast");
    sleep_ms(3000);
    int64_t t2 = now_ms();
    REQUIRE(pg().start());
    /* Caught up: every mail started before the restart is in the table. */
    int64_t caught_up = -1;
    while (now_ms() - t2 < 8000) {
        size_t due = answered_before(load.snapshot(), t2);
        if (caught_up < 0 && count_sum() >= due)
            caught_up = now_ms() - t2;
        if (caught_up >= 0 && now_ms() - t2 > 2000)
            break;
        sleep_ms(100);
    }
    int64_t t3 = now_ms();
    /* Drain: the mails in flight get their replies before the load stops, so every mail the
     * daemon counted is one the client saw answered. */
    ml.draining = true;
    sleep_ms(1500);
    load.stop();
    auto s = load.snapshot();
    size_t all_replies = 0;
    for (auto &x : s)
        all_replies += x.outcome == Outcome::Reply;
    size_t replies = ml.mails;
    uint64_t sum = 0;
    for (int i = 0; i < 100 && (sum = count_sum()) < replies; i++)
        sleep_ms(100);
    Window before = Load::window(s, t0, t1), during = Load::window(s, t1, t2),
           after = Load::window(s, t2, t3);
    print_json("postgresql_restart",
               Load::json("before", before) + "," + Load::json("during", during) + "," +
                   Load::json("after", after) + ",\"down_ms\":" + std::to_string(t2 - t1) +
                   ",\"recovery_ms\":" + std::to_string(caught_up) + ",\"client_replies\":" +
                   std::to_string(replies) + ",\"accounted\":" + std::to_string(sum) +
                   ",\"lost_counts\":" +
                   std::to_string(static_cast<int64_t>(replies) - static_cast<int64_t>(sum)));
    INFO(d->log().substr(0, 3000));
    REQUIRE(d->alive());
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(during.actions["dunno"] == during.answered);
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(all_replies == s.size()); /* every request of the run answered, mails included */
    CHECK(sum == replies);
    CHECK(caught_up >= 0);
    CHECK(caught_up <= 6200); /* reconnect backoff max 5 s + 1 s + a flush interval */
    CHECK(d->stop() == 0);
    CHECK(count_sum() == replies); /* nothing twice at exit */
}
