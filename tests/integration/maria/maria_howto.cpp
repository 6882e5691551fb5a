// maria_howto.cpp: the seed's "SMTP level accounting and quotas" how-to end to end through the
// real ringpolicyd on MariaDB, with the how-to's MySQL statements run verbatim (relay_policies
// with quota_count 10000 and 100000, relay_hosts): SqlUserConfig + Quota + Accounting on a
// second port, the Memory session cache, two shards. acct_client_address is created by the
// daemon with 2.05's MySQL layout; rows put there by hand bring each relay host near its
// limit, and each client must be deferred exactly at it; the rows then hold exactly what was
// sent. Then MariaDB is restarted in the middle of a run: no count is lost.
#include "maria_rig.h"

#include <signal.h>

using namespace itest;
using namespace acctit;
using namespace mariait;

namespace
{

std::string two_port_config(uint16_t p1, uint16_t p2, const std::string &vhost2)
{
    return "port = \"127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" + std::to_string(p2) +
           "\"\nshards = 2\n" + my_connection() +
           "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
           vhost_block(std::to_string(p1), "reputation", action_plugin("pass", "dunno")) +
           vhost_block(std::to_string(p2), "accounting", vhost2);
}

std::map<std::string, std::string> month_rows()
{
    return acct_month(my_rows(my_acct_select("acct_client_address")));
}

uint64_t count_sum()
{
    auto rows = my_rows("SELECT COALESCE(SUM(`count`), 0) FROM acct_client_address");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

} // namespace

TEST_CASE("the how-to on MariaDB: its SQL verbatim, deferred exactly at each limit",
          "[maria_howto]")
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    my_rows(howto_mysql());
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    Daemon daemon(Impl::Ring,
                  two_port_config(p1, p2, howto_plugins("", "    flush_interval = 0.2\n")));
    daemon.set_ready(Endpoint::tcp(p2));
    bool started = daemon.start();
    INFO(daemon.error());
    REQUIRE(started);
    /* Created at start-up with 2.05's MySQL definition (MyISAM, latin1, time_key). */
    std::string ddl = my_rows("SHOW CREATE TABLE acct_client_address")[0];
    CHECK(contains(ddl, "`id` int(11) NOT NULL AUTO_INCREMENT"));
    CHECK(contains(ddl, "`count` int(10) unsigned NOT NULL"));
    CHECK(contains(ddl, "UNIQUE KEY `time_key` (`key`,`time`)"));
    CHECK(contains(ddl, "KEY `key` (`key`)"));
    CHECK(contains(ddl, "ENGINE=MyISAM"));
    CHECK(contains(ddl, "DEFAULT CHARSET=latin1"));
    CHECK(log_lines_with(daemon, "created table acct_client_address") == 1);
    /* Earlier counts of this month, as 2.05 would have left them. */
    std::string m = month_bucket();
    my_rows("INSERT INTO acct_client_address (`key`, `time`, `count`, `count_rcpt`, `size`, "
            "`size_rcpt`) VALUES ('2604:8d00:0:1::3', '" + m + "', 9990, 9990, 99900, 99900), "
            "('2604:8d00:0:1::4', '" + m + "', 99994, 99994, 999940, 999940)");

    struct Host {
        std::string addr;
        int left; /* mails accepted before the defer */
        int accepted = 0;
        bool deferred = false;
        Counts sent{};
    };
    std::vector<Host> hosts = {{"2604:8d00:0:1::3", 10, 0, false, {9990, 9990, 99900, 99900}},
                               {"2604:8d00:0:1::4", 6, 0, false, {99994, 99994, 999940, 999940}},
                               {"192.0.2.7", 5}}; /* no relay policy: threshold 5 */
    Conn c(Endpoint::tcp(p2));
    REQUIRE(c.ok());
    int mail = 0;
    for (int round = 0; round < 14; round++) {
        for (Host &h : hosts) {
            if (h.deferred)
                continue;
            std::string inst = "howto." + std::to_string(mail++);
            uint64_t size = 1000 + (uint64_t)round * 7, rcpts = (uint64_t)(round % 3);
            std::string got = action_of(c.request(eom(inst, h.addr, size, rcpts)));
            std::string want = h.accepted < h.left ? "dunno" : kCoin;
            if (got != want)
                FAIL("host " << h.addr << ", mail " << h.accepted + 1 << ": got " << got
                             << ", want " << want << "\nlog:\n"
                             << daemon.log());
            if (h.accepted < h.left) {
                h.accepted++;
                add(h.sent, mail_counts(size, rcpts));
            } else {
                h.deferred = true;
                REQUIRE(action_of(c.request(eom(inst + "b", h.addr, size, rcpts))) == kCoin);
            }
        }
    }
    std::map<std::string, std::string> want;
    for (Host &h : hosts) {
        CHECK(h.deferred);
        want[h.addr] = counts_text(h.sent);
    }
    auto got = wait_for([&] { return month_rows(); }, want);
    INFO("log:\n" << daemon.log());
    CHECK(got == want);
    CHECK(daemon.stop() == 0);
    CHECK(month_rows() == want); /* nothing more at exit */
}

TEST_CASE("MariaDB restarted during a run: the table's sum equals the mails accounted",
          "[maria_howto]")
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    uint16_t port = free_tcp_port();
    auto d = start_ring("port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" +
                            my_connection() +
                            vhost_block(std::to_string(port), "acct",
                                        "  <Plugin acct>\n    module = \"Accounting\"\n"
                                        "    fields = \"client_address\"\n"
                                        "    flush_interval = 0.1\n  </Plugin>\n"),
                        Endpoint::tcp(port));
    std::vector<Conn> conns;
    for (int i = 0; i < 4; i++)
        conns.emplace_back(Endpoint::tcp(port));
    uint64_t answered = 0;
    int i = 0;
    int64_t t0 = now_ms();
    bool stopped = false, restarted = false;
    while (now_ms() - t0 < 4000 || !restarted) {
        int64_t t = now_ms() - t0;
        if (t > 1000 && !stopped) {
            my().stop(SIGTERM);
            stopped = true;
        }
        if (t > 2200 && !restarted) {
            REQUIRE(my().start());
            restarted = true;
        }
        for (Conn &c : conns) {
            std::string client = "198.51.100." + std::to_string(i % 20);
            if (action_of(c.request(eom("restart." + std::to_string(i++), client, 1000, 1))) ==
                "dunno")
                answered++;
        }
        sleep_ms(2);
    }
    CHECK(answered == (uint64_t)i); /* Accounting never fails a mail */
    uint64_t sum = wait_for([] { return count_sum(); }, answered, 15000);
    INFO("log:\n" << d->log());
    CHECK(sum == answered);
    CHECK(log_lines_with(*d, "counts are kept") >= 1);
    CHECK(log_lines_with(*d, "reachable again") >= 1);
    CHECK(d->stop() == 0);
    CHECK(count_sum() == answered); /* nothing twice at exit */
}

TEST_CASE("Accounting's mysql_engine names the engine of the tables it creates", "[maria_howto]")
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    uint16_t port = free_tcp_port();
    auto d = start_ring("port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" +
                            my_connection() +
                            vhost_block(std::to_string(port), "acct",
                                        "  <Plugin acct>\n    module = \"Accounting\"\n"
                                        "    fields = \"sender\"\n"
                                        "    mysql_engine = \"InnoDB\"\n  </Plugin>\n"),
                        Endpoint::tcp(port));
    std::string ddl = my_rows("SHOW CREATE TABLE acct_sender")[0];
    INFO(ddl);
    CHECK(contains(ddl, "ENGINE=InnoDB"));
    CHECK(contains(ddl, "UNIQUE KEY `time_key` (`key`,`time`)"));
}
