// it_lazy_tables.cpp: Accounting (with the how-to's SqlUserConfig and Quota) on a PostgreSQL
// that is down when ringpolicyd starts (issues 3 and 6: a pod started before its database).
// `ringpolicyd --check` accepts the configuration, the daemon starts, answers degraded
// (SqlUserConfig and Quota fail, on_error = continue) and keeps counting in memory; the failed
// table check is logged once per failure streak and shard, not per attempt. Once PostgreSQL is
// up, each shard creates acct_client_address by itself (no restart) and flushes: the rows hold
// exactly what was answered (0 counts lost), and Quota then counts the mails of the outage
// toward the monthly limit (deferred exactly at it).
#include "acct_rig.h"

using namespace itest;
using namespace acctit;

namespace
{

std::string config(uint16_t port)
{
    std::string plugins =
        howto_plugins("    on_error = \"continue\"\n", "    flush_interval = 0.2\n");
    /* SqlUserConfig too fails while PostgreSQL is down: let the chain go on. */
    plugins =
        replace_all(plugins, "    field = \"client_address\"\n  </Plugin>\n  <Plugin QuotaIP>",
                    "    field = \"client_address\"\n    on_error = \"continue\"\n"
                    "  </Plugin>\n  <Plugin QuotaIP>");
    return "port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" + pg_connection() +
           "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
           vhost_block(std::to_string(port), "accounting", plugins);
}

uint64_t count_of(const std::string &client)
{
    auto rows = pg_rows("SELECT COALESCE(SUM(\"count\"), 0) FROM acct_client_address WHERE "
                        "\"key\" = '" +
                        client + "'");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

} // namespace

TEST_CASE("Accounting and Quota with PostgreSQL down at start: --check, degraded service, the "
          "table created later, no count lost",
          "[it_lazy_tables]")
{
    need_ringpolicyd();
    pg_up();
    pg_rows("DROP TABLE IF EXISTS relay_hosts, relay_policies, acct_client_address CASCADE");
    pg_rows(howto_pg_ddl());
    pg_rows(howto_rows());
    pg().stop("fast");

    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring, config(port));
    RunResult check = d.run({"--check"});
    INFO("--check: " << check.out << check.err);
    CHECK(check.status == 0);

    d.set_ready(Endpoint::tcp(port));
    REQUIRE(d.start());
    INFO("log:\n" << d.log());
    CHECK(d.wait_log("table acct_client_address not checked at start-up", 5000));

    // Degraded: the standard relay host (limit 10 a month) sends 4 mails, another host 3; all
    // are answered (no quota without the database) and counted in memory.
    const std::string standard = "2604:8d00:0:1::3", other = "198.51.100.7";
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    int seq = 0;
    for (int i = 0; i < 4; i++)
        CHECK(action_of(c.request(eom("lz" + std::to_string(++seq), standard, 100, 1))) == "dunno");
    for (int i = 0; i < 3; i++)
        CHECK(action_of(c.request(eom("lz" + std::to_string(++seq), other, 100, 2))) == "dunno");
    CHECK(d.wait_log("cannot check or create it on shard", 5000));
    // Several attempts pass with the backoff (100 ms doubled): still one line per shard.
    sleep_ms(1600);
    CHECK(log_lines_with(d, "accounting table acct_client_address: cannot check or create") <= 2);
    CHECK(d.alive());

    // PostgreSQL comes back: the table appears without a restart and every count arrives.
    REQUIRE(pg().start());
    CHECK(wait_for([] { return pg_table_exists("acct_client_address"); }, true, 15000));
    CHECK(wait_for([&] { return count_of(standard); }, (uint64_t)4) == 4);
    CHECK(wait_for([&] { return count_of(other); }, (uint64_t)3) == 3);
    CHECK(d.wait_log("accounting table acct_client_address: ready on shard", 5000));
    // The unique (key, time) index the upserts rely on.
    CHECK(pg_rows("SELECT count(*) FROM pg_indexes WHERE tablename = 'acct_client_address' AND "
                  "indexdef LIKE '%UNIQUE%key%time%'") == std::vector<std::string>{"1"});

    // Quota works again and counts the outage's mails: 6 more pass, the 11th is deferred.
    int passed = 0;
    std::string a;
    for (int i = 0; i < 10; i++) {
        a = action_of(c.request(eom("lz" + std::to_string(++seq), standard, 100, 1)));
        if (a != "dunno")
            break;
        passed++;
    }
    CHECK(passed == 6);
    CHECK(a == kCoin);
    CHECK(d.stop() == 0);
    CHECK(count_of(standard) == 10);
    CHECK(count_of(other) == 3);
}

TEST_CASE("Accounting on a reachable PostgreSQL: the table is there when the daemon accepts",
          "[it_lazy_tables]")
{
    need_ringpolicyd();
    pg_up();
    pg_rows("DROP TABLE IF EXISTS relay_hosts, relay_policies, acct_client_address CASCADE");
    pg_rows(howto_pg_ddl());
    pg_rows(howto_rows());
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring, config(port));
    d.set_ready(Endpoint::tcp(port));
    REQUIRE(d.start());
    INFO("log:\n" << d.log());
    CHECK(pg_table_exists("acct_client_address"));
    CHECK(log_lines_with(d, "not checked at start-up") == 0);
    CHECK(log_lines_with(d, "cannot check or create") == 0);
    CHECK(d.stop() == 0);
}
