// it_pg_name.cpp: a Sql (PostgreSQL) connection whose host is a name that does not resolve
// yet (a Kubernetes Service created after the daemon). ringpolicyd starts anyway (2.05 refuses:
// DBI->connect at start-up), answers requests degraded (the SqlList lookup fails, error_action
// answers at once instead of waiting), logs the failed lookup once per failure streak, and
// recovers without a restart once the name resolves: the list is read from the database and
// the log says the connection is back.
//
// The name is made to appear as in greylist/it_mc_name: the daemon runs in a mount namespace
// of its own (unshare -m) with a file of the test bind-mounted over /etc/hosts, rewritten in
// place (glibc reads /etc/hosts at every lookup). Needs root and unshare(1); without them
// SKIP, or FAIL in CI.
#include "private_hosts.h"

#include "../../unit/sql/pg_server.h"

#include <thread>

using namespace itest;

namespace
{

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

} // namespace

TEST_CASE("a PostgreSQL host name that resolves only later: start, degraded service, "
          "recovery without restart",
          "[it_pg_name]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    pg.exec("DROP TABLE IF EXISTS pgname_wl; CREATE TABLE pgname_wl (ip text); "
            "INSERT INTO pgname_wl VALUES ('192.0.2.9'); GRANT SELECT ON pgname_wl TO policyd",
            "policyd");
    uint16_t p = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p) +
        "\"\nerror_action = \"defer database unavailable\"\n<Connection db>\n  module = \"Sql\"\n"
        "  dsn = \"dbi:Pg:dbname=policyd;host=pg-later.test;port=" +
        std::to_string(pg.port()) +
        "\"\n  user = \"policyd\"\n  password = \"policyd\"\n</Connection>\n" +
        vhost_block(std::to_string(p), "wl",
                    "  <Plugin wl>\n    module = \"SqlList\"\n"
                    "    sql_query = \"SELECT 1 FROM pgname_wl WHERE ip=?\"\n"
                    "    match_action = \"reject listed\"\n  </Plugin>\n" +
                        action_plugin("pass", "dunno"));
    Daemon d(Impl::Ring, config);
    std::string hosts = start_with_private_hosts(d, Endpoint::tcp(p), "127.0.0.1 localhost\n");

    auto ask_wl = [&](const std::string &ip) {
        return first(ask(Endpoint::tcp(p),
                         postfix_request({{"client_address", ip}, {"instance", "pgn-" + ip}}),
                         10000));
    };
    // Degraded: the name does not resolve; the lookup fails fast and error_action answers.
    CHECK(d.wait_log("cannot resolve host pg-later.test", 5000));
    for (int i = 0; i < 5; i++) {
        auto t0 = std::chrono::steady_clock::now();
        CHECK(ask_wl("192.0.2.9") == "defer database unavailable");
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    }
    // Logged once per failure streak and connection (one connection per shard), though the
    // attempts go on with the backoff.
    size_t lines = log_lines_with(d, "cannot resolve host pg-later.test");
    CHECK(lines >= 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(log_lines_with(d, "cannot resolve host pg-later.test") == lines);

    // The name appears: within the reconnect backoff (at most 5 s) the connection is up and the
    // list is read, without a restart.
    write_hosts(hosts, "127.0.0.1 localhost\n127.0.0.1 pg-later.test\n");
    CHECK(d.wait_log("connected again", 15000));
    std::string a;
    for (int i = 0; i < 100; i++) {
        a = ask_wl("192.0.2.9");
        if (a == "reject listed")
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(a == "reject listed");
    // Each shard has its own connection and backoff: the other one may reconnect a little later.
    for (int i = 0; i < 100; i++) {
        a = ask_wl("192.0.2.10");
        if (a == "dunno")
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(a == "dunno");
    CHECK(d.stop() == 0);
    CHECK(d.alive() == false);
}
