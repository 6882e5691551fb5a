// it_greylist.cpp: the Greylist plugin (spec 13.12, 16 #1-#4) in a real ringpolicyd (two shards)
// with a real memcached for tickets and SQLite for the auto-whitelist: the appendix D #6 cycle
// (defer, defer with "(Ns left)", pass after min_retry_wait, the ticket gone afterwards); the
// auto-whitelist after autowl_threshold passes and its table created at start-up; mode = accept
// sends dunno; two Greylist plugins sharing the session keys as in the shipped configuration;
// IPv4 /24 aggregation; cron hourly expiring old autowl rows; start-up errors.
#include "itcommon.h"

#include "../../unit/mc/mc_server.h"

#include <sqlite3.h>

using namespace itest;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

int g_ns = 0;

// The connections: memcached with a namespace of its own per daemon set, SQLite in dir.
std::string conns(const std::string &db_path)
{
    return "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" + mc().addr() +
           "\"\n  namespace = \"gl-" + std::to_string(getpid()) + "-" + std::to_string(++g_ns) +
           "-\"\n</Connection>\n<Connection db>\n  module = \"Sql\"\n  dsn = \"dbi:SQLite:dbname=" +
           db_path + "\"\n</Connection>\n";
}

std::string greylist(const std::string &name, const std::string &opts)
{
    return "  <Plugin " + name + ">\n    module = \"Greylist\"\n" + opts + "  </Plugin>\n";
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

Reply send(uint16_t port, const std::string &sender, const std::string &ip, const std::string &rcpt,
           const std::string &instance = "")
{
    std::vector<std::pair<std::string, std::string>> o = {
        {"sender", sender}, {"client_address", ip}, {"recipient", rcpt}};
    o.push_back({"instance", instance.empty() ? "i" + std::to_string(now_ms()) : instance});
    return ask(Endpoint::tcp(port), postfix_request(o));
}

std::vector<std::vector<std::string>> rows(const std::string &db, const std::string &sql)
{
    sqlite3 *h = nullptr;
    std::vector<std::vector<std::string>> out;
    REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt *st = nullptr;
    REQUIRE(sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        std::vector<std::string> row;
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *t = sqlite3_column_text(st, i);
            row.push_back(t ? reinterpret_cast<const char *>(t) : "NULL");
        }
        out.push_back(row);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return out;
}

struct Rig {
    TempDir dir;
    std::string db = dir.file("gl.sqlite");
    uint16_t port = free_tcp_port();
    std::unique_ptr<Daemon> d;
    explicit Rig(const std::string &body, const std::string &globals = "shards = 2\n")
    {
        d = start_ring(simple_config(port, body, globals + conns(db)), Endpoint::tcp(port));
    }
};

} // namespace

TEST_CASE("the ticket cycle: defer, defer with the wait left, pass after the wait", "[it_greylist]")
{
    Rig rig(greylist("gl", "    min_retry_wait = 2\n    max_retry_wait = 60\n") +
            action_plugin("pass", "dunno"));
    // The autowl table was created at start-up.
    CHECK(rows(rig.db, "SELECT name FROM sqlite_master WHERE name = 'autowl'").size() == 1);
    long t0 = long(time(nullptr));
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) ==
          "defer greylisting is active");
    long t1 = long(time(nullptr));
    std::string early = first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example"));
    long t2 = long(time(nullptr));
    // The ticket holds (first request's clock) + 2 and the retry is told that minus its own
    // clock: the first read in [t0, t1], the second in [t1, t2]. Usually "2s left" or "1s
    // left"; a machine slowed by a sanitizer or load can take longer between the two.
    INFO("early retry: '" << early << "', clock " << t0 << ", " << t1 << ", " << t2);
    CHECK(greylist_early_retry(early, t0 + 2 - t2, 2));
    // Another triplet is greylisted on its own.
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "other@d.example")) ==
          "defer greylisting is active");
    sleep_ms(3100);
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) == "dunno");
    // The pass created the autowl entry (count 1) and removed the ticket: the next mail of
    // the triplet is greylisted again (count 1 < autowl_threshold 3).
    auto r = rows(rig.db, "SELECT sender_domain, client_ip, count FROM autowl");
    REQUIRE(r.size() == 1);
    CHECK(r[0] == std::vector<std::string>{"s.example", "192.0.2.1", "1"});
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) ==
          "defer greylisting is active");
    CHECK(rig.d->wait_log("min_retry_wait 2 s, max_retry_wait 60 s", 1000));
}

TEST_CASE("auto-whitelist after autowl_threshold passes (16 #1); mode = accept sends dunno",
          "[it_greylist]")
{
    Rig rig(greylist("gl", "    min_retry_wait = 1\n    autowl_threshold = 2\n"
                           "    mode = \"accept\"\n    score = -3\n") +
            action_plugin("after", "reject not reached"));
    for (int pass = 0; pass < 2; pass++) {
        std::string rcpt = "r" + std::to_string(pass) + "@d.example";
        CHECK(first(send(rig.port, "x@s2.example", "192.0.2.9", rcpt)) ==
              "defer greylisting is active");
        sleep_ms(2100);
        CHECK(first(send(rig.port, "x@s2.example", "192.0.2.9", rcpt)) == "dunno");
    }
    auto r = rows(rig.db, "SELECT count FROM autowl WHERE sender_domain = 's2.example'");
    REQUIRE(r.size() == 1);
    CHECK(r[0][0] == "2");
    // Whitelisted: any sender of the domain from that client, any recipient, passes at once
    // and refreshes the entry.
    CHECK(first(send(rig.port, "y@s2.example", "192.0.2.9", "new@d.example")) == "dunno");
    CHECK(rows(rig.db, "SELECT count FROM autowl WHERE sender_domain = 's2.example'")[0][0] == "3");
    // Not for another client.
    CHECK(first(send(rig.port, "y@s2.example", "192.0.2.10", "new@d.example")) ==
          "defer greylisting is active");
}

TEST_CASE("two Greylist plugins share the session keys as in the shipped configuration",
          "[it_greylist]")
{
    std::string body = greylist("early", "    mode = \"dunno\"\n    create_ticket = 0\n"
                                         "    query_autowl = 0\n    min_retry_wait = 1\n") +
                       greylist("late", "    min_retry_wait = 1\n") +
                       action_plugin("after", "reject late passed");
    Rig rig(body, "shards = 2\n<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n");
    // First attempt: the early one finds no ticket and creates none; the late one creates it.
    CHECK(first(send(rig.port, "a@s3.example", "192.0.2.20", "r@d.example", "m1")) ==
          "defer greylisting is active");
    sleep_ms(2100);
    // The retry passes in the early plugin, before the rest of the chain.
    CHECK(first(send(rig.port, "a@s3.example", "192.0.2.20", "r@d.example", "m2")) == "dunno");
}

TEST_CASE("IPv4 /24 aggregation: a retry from another address of the pool passes", "[it_greylist]")
{
    Rig rig(greylist("gl", "    min_retry_wait = 1\n    use_autowl = 0\n    ipv4_aggregate = 1\n") +
            action_plugin("pass", "dunno"));
    CHECK(first(send(rig.port, "a@s4.example", "198.51.100.7", "r@d.example")) ==
          "defer greylisting is active");
    sleep_ms(2100);
    CHECK(first(send(rig.port, "a@s4.example", "198.51.100.200", "r@d.example")) == "dunno");
    CHECK(first(send(rig.port, "a@s4.example", "198.51.101.7", "r@d.example")) ==
          "defer greylisting is active");
}

TEST_CASE("IPv6 /64 aggregation", "[it_greylist]")
{
    Rig rig(greylist("gl", "    min_retry_wait = 1\n    use_autowl = 0\n    ipv6_aggregate = 1\n") +
            action_plugin("pass", "dunno"));
    CHECK(first(send(rig.port, "a@s6.example", "2001:db8:1:2::7", "r@d.example")) ==
          "defer greylisting is active");
    // The key carries the network in canonical form.
    sleep_ms(2100);
    CHECK(first(send(rig.port, "a@s6.example", "2001:DB8:1:2:ffff::1", "r@d.example")) == "dunno");
    CHECK(first(send(rig.port, "a@s6.example", "2001:db8:1:3::7", "r@d.example")) ==
          "defer greylisting is active");
    // IPv4 clients are not aggregated by the IPv6 option.
    CHECK(first(send(rig.port, "a@s6.example", "192.0.2.90", "r@d.example")) ==
          "defer greylisting is active");
    sleep_ms(2100);
    CHECK(first(send(rig.port, "a@s6.example", "192.0.2.91", "r@d.example")) ==
          "defer greylisting is active");
}

TEST_CASE("cron hourly expires autowl rows unused for autowl_expire_days (16 #3)", "[it_greylist]")
{
    TempDir dir;
    std::string db = dir.file("gl.sqlite");
    uint16_t port = free_tcp_port();
    std::string cfg = simple_config(
        port, greylist("gl", "    autowl_expire_days = 1\n") + action_plugin("pass", "dunno"),
        conns(db));
    {
        auto d = start_ring(cfg, Endpoint::tcp(port)); // creates the table
        d->stop();
    }
    long now = long(time(nullptr));
    rows(db, "INSERT INTO autowl (sender_domain, client_ip, count, last_seen) VALUES "
             "('old.example', '192.0.2.30', 5, " +
                 std::to_string(now - 2 * 86400) + "), ('new.example', '192.0.2.31', 5, " +
                 std::to_string(now - 3600) + ")");
    Daemon cron(Impl::Ring, cfg);
    RunResult rr = cron.run({"--cron=hourly"});
    INFO(rr.out << rr.err);
    CHECK(rr.status == 0);
    auto r = rows(db, "SELECT sender_domain FROM autowl ORDER BY sender_domain");
    REQUIRE(r.size() == 1);
    CHECK(r[0][0] == "new.example");
}

TEST_CASE("start-up errors: missing connections, nested store blocks", "[it_greylist]")
{
    TempDir dir;
    uint16_t port = free_tcp_port();
    Daemon no_mc(Impl::Ring, simple_config(port, greylist("gl", "")));
    RunResult rr = no_mc.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection memcached configured!"));
    std::string only_mc = "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
                          mc().addr() + "\"\n</Connection>\n";
    Daemon no_db(Impl::Ring, simple_config(port, greylist("gl", ""), only_mc));
    rr = no_db.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection db configured!"));
    Daemon no_awl(Impl::Ring, simple_config(port, greylist("gl", "    use_autowl = 0\n"), only_mc));
    rr = no_awl.run({"--check"});
    INFO(rr.out << rr.err);
    CHECK(rr.status == 0);
    Daemon redis(Impl::Ring, simple_config(port,
                                           greylist("gl", "    <Ticket>\n      module = \"Redis\"\n"
                                                          "    </Ticket>\n"),
                                           conns(dir.file("x.sqlite"))));
    rr = redis.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection redis configured!"));
    Daemon other(Impl::Ring,
                 simple_config(port, greylist("gl", "    <Other>\n      a = 1\n    </Other>\n"),
                               conns(dir.file("y.sqlite"))));
    rr = other.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "accepts no <Other> block"));
}

TEST_CASE("<AWL> and <Ticket> blocks: their values win over the plugin-level ones (16 #2)",
          "[it_greylist]")
{
    Rig rig(greylist("gl", "    min_retry_wait = 300\n    autowl_table = \"unused\"\n"
                           "    <Ticket>\n      module = \"Memcached\"\n      min_retry_wait = 1\n"
                           "      max_retry_wait = 60\n    </Ticket>\n"
                           "    <AWL>\n      module = \"Sql\"\n      autowl_table = \"awl2\"\n"
                           "      prefix = \"x\"\n    </AWL>\n") +
            action_plugin("pass", "dunno"));
    CHECK(rows(rig.db, "SELECT name FROM sqlite_master WHERE name = 'awl2'").size() == 1);
    CHECK(rows(rig.db, "SELECT name FROM sqlite_master WHERE name = 'unused'").empty());
    CHECK(first(send(rig.port, "a@s5.example", "192.0.2.60", "r@d.example")) ==
          "defer greylisting is active");
    sleep_ms(2100);
    CHECK(first(send(rig.port, "a@s5.example", "192.0.2.60", "r@d.example")) == "dunno");
    CHECK(rows(rig.db, "SELECT count FROM awl2").size() == 1);
    CHECK(rig.d->wait_log("min_retry_wait 1 s, max_retry_wait 60 s", 1000));
    CHECK(rig.d->wait_log("option prefix in <AWL> ignored", 1000));
}
