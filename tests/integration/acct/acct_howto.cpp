// acct_howto.cpp: the seed's "SMTP level accounting and quotas" how-to end to end through the
// real ringpolicyd, on PostgreSQL and on SQLite: relay_policies/relay_hosts tables, a second
// virtual host port with SqlUserConfig + Quota + Accounting, the Memory session cache, two
// shards. END-OF-MESSAGE requests are sent until each client is deferred, which must happen
// exactly at its limit (from its relay policy, or the configured threshold for a host without
// one); the acct_client_address rows must then hold exactly what was sent. Also appendix D #5
// (three accounted fields, the quota at 11 and at 1000) and once-per-mail accounting.
#include "acct_rig.h"

using namespace itest;
using namespace acctit;

namespace
{

struct Backend {
    bool pg;
    std::string db_path; /* SQLite: the file, in the daemon's directory */

    std::string connection() const
    {
        return pg ? pg_connection() : sqlite_connection(db_path);
    }
    /* Runs the how-to's DDL and rows (PostgreSQL: dropping what an earlier case left). */
    void prepare(bool relay_tables) const
    {
        if (pg) {
            pg_up();
            pg_rows("DROP TABLE IF EXISTS relay_hosts, relay_policies, acct_client_address, "
                    "acct_sender, acct_recipient CASCADE");
            if (relay_tables) {
                pg_rows(howto_pg_ddl());
                pg_rows(howto_rows());
            }
        } else if (relay_tables) {
            sqlite_rows(db_path, std::string(howto_sqlite_ddl()) + howto_rows());
        }
    }
    std::map<std::string, std::string> month(const std::string &table) const
    {
        return acct_month(pg ? pg_rows(acct_select(table))
                             : sqlite_rows(db_path, acct_select(table)));
    }
};

std::string two_port_config(uint16_t p1, uint16_t p2, const std::string &connection,
                            const std::string &vhost2)
{
    return "port = \"127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" + std::to_string(p2) +
           "\"\nshards = 2\n" + connection +
           "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
           vhost_block(std::to_string(p1), "reputation", action_plugin("pass", "dunno")) +
           vhost_block(std::to_string(p2), "accounting", vhost2);
}

void run_howto(bool use_pg)
{
    need_ringpolicyd();
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    Backend b{use_pg, ""};
    std::string conn = use_pg ? pg_connection() : sqlite_connection("@DIR@/mtpolicyd.sqlite");
    Daemon daemon(Impl::Ring,
                  two_port_config(p1, p2, conn, howto_plugins("", "    flush_interval = 0.2\n")));
    if (!use_pg)
        b.db_path = daemon.dir() + "/mtpolicyd.sqlite";
    b.prepare(true);
    daemon.set_ready(Endpoint::tcp(p2));
    bool started = daemon.start();
    INFO(daemon.error());
    REQUIRE(started);

    struct Host {
        std::string addr;
        int limit;
        int accepted = 0;
        bool deferred = false;
        Counts sent{};
    };
    std::vector<Host> hosts = {{"2604:8d00:0:1::3", 10},
                               {"2604:8d00:0:1::4", 25},
                               {"192.0.2.7", 5}}; /* no relay policy: threshold 5 */
    Conn c(Endpoint::tcp(p2));
    REQUIRE(c.ok());
    int mail = 0;
    for (int round = 0; round < 40; round++) {
        for (Host &h : hosts) {
            if (h.deferred)
                continue;
            std::string inst = "howto." + std::to_string(mail++);
            uint64_t size = 1000 + (uint64_t)round * 7, rcpts = (uint64_t)(round % 3);
            std::string got = action_of(c.request(eom(inst, h.addr, size, rcpts)));
            std::string want = h.accepted < h.limit ? "dunno" : kCoin;
            if (got != want)
                FAIL("host " << h.addr << ", mail " << h.accepted + 1 << ": got " << got
                             << ", want " << want << "\nlog:\n"
                             << daemon.log());
            if (h.accepted < h.limit) {
                h.accepted++;
                add(h.sent, mail_counts(size, rcpts));
                if (h.addr == "192.0.2.7" && h.accepted == 1) {
                    /* the same mail again (its instance): accounted once per mail */
                    REQUIRE(action_of(c.request(eom(inst, h.addr, size, rcpts))) == "dunno");
                }
            } else { /* deferred exactly at the limit */
                h.deferred = true;
                /* and it stays deferred */
                REQUIRE(action_of(c.request(eom(inst + "b", h.addr, size, rcpts))) == kCoin);
            }
        }
    }
    for (Host &h : hosts)
        CHECK(h.deferred);
    std::map<std::string, std::string> want;
    for (Host &h : hosts)
        want[h.addr] = counts_text(h.sent);
    auto got = wait_for([&] { return b.month("acct_client_address"); }, want);
    INFO("log:\n" << daemon.log());
    CHECK(got == want);
    CHECK(daemon.stop() == 0);
    CHECK(b.month("acct_client_address") == want); /* nothing more at exit */
}

void run_d5(bool use_pg)
{
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port(), p3 = free_tcp_port();
    need_ringpolicyd();
    Backend b{use_pg, ""};
    b.prepare(false);
    std::string quota = "    module = \"Quota\"\n    field = \"client_address\"\n"
                        "    metric = \"count\"\n";
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" + std::to_string(p2) +
        ",127.0.0.1:" + std::to_string(p3) + "\"\nshards = 2\n" +
        (use_pg ? pg_connection() : sqlite_connection("@DIR@/d5.sqlite")) +
        vhost_block(std::to_string(p1), "acct",
                    "  <Plugin acct>\n    module = \"Accounting\"\n"
                    "    fields = \"client_address,sender,recipient\"\n"
                    "    flush_interval = 0.1\n  </Plugin>\n") +
        vhost_block(std::to_string(p2), "q11",
                    "  <Plugin q11>\n" + quota + "    threshold = 11\n  </Plugin>\n") +
        vhost_block(std::to_string(p3), "q1000",
                    "  <Plugin q1000>\n" + quota + "    threshold = 1000\n  </Plugin>\n");
    Daemon daemon(Impl::Ring, config);
    if (!use_pg)
        b.db_path = daemon.dir() + "/d5.sqlite";
    daemon.set_ready(Endpoint::tcp(p1));
    bool started = daemon.start();
    INFO(daemon.error());
    REQUIRE(started);
    Conn c(Endpoint::tcp(p1));
    for (int i = 0; i < 11; i++)
        REQUIRE(action_of(c.request(eom(
                    "d5a" + std::to_string(i), "192.168.0.1", 13371, 0,
                    {{"sender", "a@example.org"}, {"recipient", "r@example.com"}}))) == "dunno");
    for (int i = 0; i < 10; i++)
        REQUIRE(action_of(c.request(eom("d5b" + std::to_string(i), "192.168.2.1", 13371, 10,
                                        {{"sender", "b@example.org"}}))) == "dunno");
    std::map<std::string, std::string> want = {{"192.168.0.1", "11|11|147081|147081"},
                                               {"192.168.2.1", "10|100|133710|1337100"}};
    INFO("log:\n" << daemon.log());
    CHECK(wait_for([&] { return b.month("acct_client_address"); }, want) == want);
    std::map<std::string, std::string> senders = {{"a@example.org", "11|11|147081|147081"},
                                                  {"b@example.org", "10|100|133710|1337100"}};
    CHECK(wait_for([&] { return b.month("acct_sender"); }, senders) == senders);
    std::map<std::string, std::string> rcpts = {{"r@example.com", "11|11|147081|147081"}};
    CHECK(wait_for([&] { return b.month("acct_recipient"); }, rcpts) == rcpts);
    /* The quota checks, on other ports (and so maybe other shards) than the accounting. */
    CHECK(action_of(ask(Endpoint::tcp(p2), eom("d5q1", "192.168.0.1", 1, 0))) ==
          "defer smtp traffic quota has been exceeded");
    CHECK(action_of(ask(Endpoint::tcp(p3), eom("d5q2", "192.168.0.1", 1, 0))) == "dunno");
    CHECK(action_of(ask(Endpoint::tcp(p2), eom("d5q3", "192.168.2.1", 1, 0))) == "dunno");
    CHECK(action_of(ask(Endpoint::tcp(p2), eom("d5q4", "192.168.9.9", 1, 0))) == "dunno");
    CHECK(daemon.stop() == 0);
}

} // namespace

TEST_CASE("the how-to on SQLite: deferred exactly at each limit, counters as sent", "[howto]")
{
    run_howto(false);
}

TEST_CASE("the how-to on PostgreSQL: deferred exactly at each limit, counters as sent", "[howto]")
{
    run_howto(true);
}

TEST_CASE("appendix D #5 on SQLite", "[howto]")
{
    run_d5(false);
}

TEST_CASE("appendix D #5 on PostgreSQL", "[howto]")
{
    run_d5(true);
}

TEST_CASE("the shipped etc/ringpolicyd.conf: accounting and the quota on embedded SQLite",
          "[howto]")
{
    std::string conf = read_file(source_root() + "/etc/ringpolicyd.conf");
    REQUIRE(!conf.empty());
    /* Its ports, moved to free ones (the file's own may be taken on a shared box). */
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    REQUIRE(contains(conf, "port = \"127.0.0.1:12345,127.0.0.1:12346\""));
    conf = replace_all(conf, "12345", std::to_string(p1));
    conf = replace_all(conf, "12346", std::to_string(p2));
    auto d = start_ring(conf, Endpoint::tcp(p2));
    Conn c(Endpoint::tcp(p2));
    REQUIRE(c.ok());
    for (int i = 0; i < 1000; i++) {
        std::string got = action_of(c.request(
            eom("conf." + std::to_string(i), "192.0.2.9", 1000, 2, {{"sender", "a@example.org"}})));
        if (got != "dunno")
            FAIL("mail " << i + 1 << ": got " << got << "\nlog:\n" << d->log());
    }
    CHECK(action_of(c.request(eom("conf.over", "192.0.2.9", 1000, 2))) == kCoin);
    CHECK(action_of(c.request(eom("conf.other", "192.0.2.10", 1000, 2))) == "dunno");
    /* The reputation chain still answers on the first port. */
    CHECK(action_of(ask(Endpoint::tcp(p1), eom("conf.rep", "127.0.0.1", 1, 1))) == "dunno");
    INFO("log:\n" << d->log());
    CHECK(log_lines_with(*d, "created table acct_client_address") == 1);
    CHECK(log_lines_with(*d, "created table acct_sender") == 1);
    CHECK(d->stop() == 0);
    /* Each shard logs its SQL counters at stop (SQLite: jobs run on the worker pool; the
     * flushes a stopping shard starts are refused and written by the final flush). */
    INFO("log:\n" << d->log());
    size_t shards = log_lines_with(*d, "sql db shard ");
    CHECK(shards >= 1);
    CHECK(log_lines_with(*d, " cancelled by the stop), 0 refused (queue full), ") == shards);
}

TEST_CASE("SqlUserConfig cache_per_mail = 1: one query per mail; without it one per request",
          "[howto][userconfig]")
{
    /* Two virtual hosts on one SQLite file: the first caches per mail, the second queries on
     * every request as 2.05 does. Each loads {"mode": ...} for the recipient; Conditions
     * answer with the mode the session holds. The row changes between the requests of one
     * mail: the cached host keeps the mail's first value, the other sees the change; a new
     * mail sees it on both. */
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    auto chain = [](bool cache) {
        return std::string("  <Plugin uc>\n    module = \"SqlUserConfig\"\n") +
               (cache ? "    cache_per_mail = 1\n" : "") +
               "  </Plugin>\n"
               "  <Plugin one>\n    module = \"Condition\"\n    key = \"session:mode\"\n"
               "    match = \"one\"\n    action = \"reject mode one\"\n  </Plugin>\n"
               "  <Plugin two>\n    module = \"Condition\"\n    key = \"session:mode\"\n"
               "    match = \"two\"\n    action = \"reject mode two\"\n  </Plugin>\n"
               "  <Plugin none>\n    module = \"Action\"\n    action = \"dunno\"\n  </Plugin>\n";
    };
    std::string config = "port = \"127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" +
                         std::to_string(p2) + "\"\nshards = 2\n" +
                         sqlite_connection("@DIR@/uc.sqlite") +
                         "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
                         vhost_block(std::to_string(p1), "cached", chain(true)) +
                         vhost_block(std::to_string(p2), "every", chain(false));
    auto d = start_ring(config, Endpoint::tcp(p2));
    std::string db = d->dir() + "/uc.sqlite";
    sqlite_rows(db, "CREATE TABLE user_config (address TEXT PRIMARY KEY, config TEXT);"
                    "INSERT INTO user_config VALUES ('a@example.com', '{\"mode\":\"one\"}')");
    auto req = [](const std::string &inst) {
        return postfix_request({{"recipient", "a@example.com"}, {"instance", inst}});
    };
    auto mode = [&](const std::string &m) {
        sqlite_rows(db, "UPDATE user_config SET config = '{\"mode\":\"" + m +
                            "\"}' WHERE address = 'a@example.com'");
    };
    CHECK(action_of(ask(Endpoint::tcp(p1), req("c1"))) == "reject mode one");
    CHECK(action_of(ask(Endpoint::tcp(p2), req("e1"))) == "reject mode one");
    mode("two");
    /* The same mails again: cached keeps one, every request sees two. */
    CHECK(action_of(ask(Endpoint::tcp(p1), req("c1"))) == "reject mode one");
    CHECK(action_of(ask(Endpoint::tcp(p2), req("e1"))) == "reject mode two");
    /* New mails see the change on both. */
    CHECK(action_of(ask(Endpoint::tcp(p1), req("c2"))) == "reject mode two");
    CHECK(action_of(ask(Endpoint::tcp(p2), req("e2"))) == "reject mode two");
    /* Another recipient in a cached mail is another key: queried (no row: nothing loaded, the
     * mail's earlier members stay). */
    CHECK(action_of(ask(Endpoint::tcp(p1), postfix_request({{"recipient", "b@example.com"},
                                                            {"instance", "c2"}}))) ==
          "reject mode two");
    CHECK(d->stop() == 0);
    INFO("log after the stop:\n" << d->log());
    size_t jobs = 0;
    for (const std::string &l : split_lines(d->log())) {
        auto at = l.find(" jobs, ");
        auto from = l.rfind("refused (queue full), ", at);
        if (at != std::string::npos && from != std::string::npos && l.find("sql db shard ") != std::string::npos)
            jobs += std::stoul(l.substr(from + 22, at - from - 22));
    }
    /* Queries: c1, c2 and b@ in c2 on the cached host, e1 twice and e2 on the other. */
    CHECK(jobs == 6);
}
