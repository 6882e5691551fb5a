// it_maria_name.cpp: a Sql (MySQL) connection whose host is a name that does not resolve yet (a
// Kubernetes Service created after the daemon). ringpolicyd starts anyway (2.05 refuses:
// DBI->connect at start-up), answers degraded (the SqlList lookup fails, error_action answers),
// logs the failed lookup once per failure streak, and recovers without a restart once the name
// resolves: the list is read from MariaDB and the log says the connection is back. The name is
// made to appear as in acct/it_pg_name (private_hosts.h: the daemon's own /etc/hosts, rewritten
// in place). Needs root and unshare(1); without them SKIP, or FAIL in CI.
#include "private_hosts.h"

#include "maria_rig.h"

#include <thread>

using namespace itest;
using namespace mariait;

namespace
{

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

} // namespace

TEST_CASE("a MySQL host name that resolves only later: start, degraded service, recovery "
          "without restart",
          "[it_maria_name]")
{
    my_fresh_db("mname");
    my_rows("CREATE TABLE wl (ip VARCHAR(64)); INSERT INTO wl VALUES ('192.0.2.9')", "mname");
    uint16_t p = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p) +
        "\"\nerror_action = \"defer database unavailable\"\n<Connection db>\n  module = \"Sql\"\n"
        "  dsn = \"dbi:mysql:database=mname;host=mysql-later.test;port=" +
        std::to_string(my().port()) +
        "\"\n  user = \"policyd\"\n  password = \"policyd\"\n</Connection>\n" +
        vhost_block(std::to_string(p), "wl",
                    "  <Plugin wl>\n    module = \"SqlList\"\n"
                    "    sql_query = \"SELECT 1 FROM wl WHERE ip=?\"\n"
                    "    match_action = \"reject listed\"\n  </Plugin>\n" +
                        action_plugin("pass", "dunno"));
    Daemon d(Impl::Ring, config);
    std::string hosts = start_with_private_hosts(d, Endpoint::tcp(p), "127.0.0.1 localhost\n");

    auto ask_wl = [&](const std::string &ip) {
        return first(ask(Endpoint::tcp(p),
                         postfix_request({{"client_address", ip}, {"instance", "mn-" + ip}}),
                         10000));
    };
    CHECK(d.wait_log("cannot resolve MySQL host mysql-later.test", 5000));
    for (int i = 0; i < 5; i++)
        CHECK(ask_wl("192.0.2.9") == "defer database unavailable");
    // Logged once per failure streak and connection, though the attempts go on.
    size_t lines = log_lines_with(d, "cannot resolve MySQL host mysql-later.test");
    CHECK(lines >= 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(log_lines_with(d, "cannot resolve MySQL host mysql-later.test") == lines);

    // The name appears: within the reconnect backoff (at most 5 s) the list is read.
    write_hosts(hosts, "127.0.0.1 localhost\n127.0.0.1 mysql-later.test\n");
    CHECK(d.wait_log("connected again", 15000));
    std::string a;
    for (int i = 0; i < 100; i++) {
        a = ask_wl("192.0.2.9");
        if (a == "reject listed")
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(a == "reject listed");
    CHECK(ask_wl("192.0.2.10") == "dunno");
    CHECK(d.stop() == 0);
}
