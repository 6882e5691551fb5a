// it_backends.cpp: the required backends behind GET /readyz and GET /metrics on a real
// ringpolicyd with a real PostgreSQL (tests/unit/sql/pg_server.h, through the accounting rig)
// and a real memcached (tests/unit/mc/mc_server.h): /readyz answers 503 naming the connection
// while PostgreSQL or memcached is down and 200 once it is back, without restarting the daemon;
// the backend families (ringpolicyd_sql_*, ringpolicyd_pg_*, ringpolicyd_mc_*) move with
// traffic and keep counting across a reload.
#include "opscommon.h"

#include "../acct/acct_rig.h"
#include "../../unit/mc/mc_server.h"

#include <chrono>
#include <functional>
#include <thread>

using namespace itest;
using acctit::pg;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

/* The how-to's tables on the shared PostgreSQL, once per program. */
void howto_tables()
{
    static bool done = false;
    if (done)
        return;
    acctit::pg_up();
    acctit::pg_rows("DROP TABLE IF EXISTS relay_hosts; DROP TABLE IF EXISTS relay_policies;");
    acctit::pg_rows(acctit::howto_pg_ddl());
    acctit::pg_rows(acctit::howto_rows());
    done = true;
}

/* The how-to's chain on PostgreSQL, and a Memcached connection holding the sessions. */
std::string config(uint16_t port, uint16_t http)
{
    std::string globals = "http_port = \"127.0.0.1:" + std::to_string(http) +
                          "\"\nshards = 2\n" + acctit::pg_connection() +
                          "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
                          mc().addr() + "\"\n  namespace = \"ops-" + std::to_string(getpid()) +
                          "-\"\n</Connection>\n<SessionCache>\n  module = \"Memcached\"\n"
                          "</SessionCache>\n";
    return simple_config(port, acctit::howto_plugins("", "    flush_interval = 0.2\n"), globals);
}

} // namespace

TEST_CASE("/readyz follows PostgreSQL and memcached without a restart", "[ops][backends]")
{
    howto_tables();
    (void)mc();
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(config(port, http), Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    CHECK(eventually([&] { return http_get(http, "/readyz").status == 200; }, 10000));

    /* PostgreSQL stops: its connections break, /readyz names the connection. */
    pg().stop();
    HttpResponse r;
    CHECK(eventually(
        [&] {
            r = http_get(http, "/readyz");
            return r.status == 503;
        },
        10000));
    CHECK(contains(r.body, "connection db"));
    CHECK(http_get(http, "/healthz").status == 200); /* alive all the same */
    REQUIRE(pg().start());
    /* eng_pg retries with a backoff of at most 5 s */
    CHECK(eventually([&] { return http_get(http, "/readyz").status == 200; }, 15000));

    /* memcached dies (SIGKILL): 503 naming it, 200 after it is started again. */
    mc().kill_now();
    CHECK(eventually(
        [&] {
            r = http_get(http, "/readyz");
            return r.status == 503;
        },
        10000));
    CHECK(contains(r.body, "connection memcached"));
    REQUIRE(mc().start());
    CHECK(eventually([&] { return http_get(http, "/readyz").status == 200; }, 15000));
    CHECK(d->alive());
    CHECK(d->stop() == 0);
}

TEST_CASE("/metrics: the PostgreSQL, Sql and memcached families move with traffic",
          "[ops][backends]")
{
    howto_tables();
    acctit::pg_up();
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(config(port, http), Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    const std::string lab = "{connection=\"db\"}", mlab = "{connection=\"memcached\"}";
    /* Connected on both shards (the sources are snapshot once a second). */
    CHECK(eventually([&] { return scrape(http, "ringpolicyd_pg_connections_up" + lab) == 2; },
                     10000));
    CHECK(eventually([&] { return scrape(http, "ringpolicyd_mc_connections_up" + mlab) == 2; },
                     10000));
    double q0 = scrape(http, "ringpolicyd_sql_queries_total" + lab);
    double rt0 = scrape(http, "ringpolicyd_pg_round_trips_total" + lab);
    double mo0 = scrape(http, "ringpolicyd_mc_operations_total" + mlab);
    REQUIRE(q0 >= 0);
    REQUIRE(rt0 >= 0);
    REQUIRE(mo0 >= 0);

    const int n = 20;
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    for (int i = 0; i < n; i++)
        REQUIRE(acctit::action_of(c.request(acctit::eom("bk" + std::to_string(i),
                                                        "2604:8d00:0:1::4", 1000, 1))) ==
                "dunno");
    /* Every request: a SqlUserConfig lookup and a quota read (PostgreSQL, maybe cached),
     * a session lock, read and store (memcached). */
    CHECK(eventually([&] { return scrape(http, "ringpolicyd_sql_queries_total" + lab) >= q0 + n; },
                     5000));
    CHECK(eventually(
        [&] { return scrape(http, "ringpolicyd_pg_round_trips_total" + lab) >= rt0 + 1; }, 5000));
    CHECK(eventually(
        [&] { return scrape(http, "ringpolicyd_mc_operations_total" + mlab) >= mo0 + 2 * n; },
        5000));
    HttpResponse page = http_get(http, "/metrics");
    REQUIRE(page.status == 200);
    INFO(page.body);
    CHECK(metric(page.body, "ringpolicyd_pg_errors_total" + lab) == 0);
    CHECK(metric(page.body, "ringpolicyd_sql_errors_total" + lab) == 0);
    CHECK(metric(page.body, "ringpolicyd_mc_down_total" + mlab) == 0);
    CHECK(metric(page.body, "ringpolicyd_sql_queue_depth" + lab) == 0);
    CHECK(metric(page.body, "ringpolicyd_mc_round_trips_total" + mlab) > 0);
    CHECK(contains(page.body, "# TYPE ringpolicyd_pg_round_trips_total counter\n"));
    CHECK(contains(page.body, "# TYPE ringpolicyd_mc_queue_depth gauge\n"));

    /* A reload opens new clients; the counters carry over instead of starting again. */
    double q1 = scrape(http, "ringpolicyd_sql_queries_total" + lab);
    double m1 = scrape(http, "ringpolicyd_mc_operations_total" + mlab);
    REQUIRE(d->send_signal(SIGHUP) == 0);
    bool reloaded = eventually(
        [&] { return scrape(http, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 1; },
        10000);
    INFO("log after the reload:\n" << d->log());
    REQUIRE(reloaded);
    REQUIRE(eventually(
        [&] { return scrape(http, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 1; },
        10000));
    CHECK(eventually([&] { return scrape(http, "ringpolicyd_pg_connections_up" + lab) == 2; },
                     10000));
    CHECK(scrape(http, "ringpolicyd_sql_queries_total" + lab) >= q1);
    CHECK(scrape(http, "ringpolicyd_mc_operations_total" + mlab) >= m1);
    CHECK(d->stop() == 0);
}
