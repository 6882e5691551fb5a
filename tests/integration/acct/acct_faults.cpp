// acct_faults.cpp: no count is lost, through the real ringpolicyd on PostgreSQL: the server
// restarted in the middle of a run (counts kept in memory, flushed when it returns: the sum
// in the table equals the mails accounted, exactly); a long outage with a small buffer (the
// spill file is written, then read back and removed); SIGTERM writes what was not flushed;
// counts spilled at exit are replayed by the next start; kill -9 after a flush interval has
// lost nothing. And none twice: flushes that outlive query_timeout_ms (blocked by another
// session's locks) are settled by their batch ids, old ids are purged.
#include "acct_rig.h"

#include <signal.h>
#include <sys/stat.h>

#include <dirent.h>

#include <atomic>
#include <memory>
#include <thread>

using namespace itest;
using namespace acctit;

namespace
{

std::string acct_config(uint16_t port, const std::string &acct_extra,
                        const std::string &globals = "shards = 2\n")
{
    return "port = \"127.0.0.1:" + std::to_string(port) + "\"\n" + globals + pg_connection() +
           vhost_block(std::to_string(port), "acct",
                       "  <Plugin acct>\n    module = \"Accounting\"\n"
                       "    fields = \"client_address\"\n" +
                           acct_extra + "  </Plugin>\n");
}

/* The sum of count over the table (0 when it is empty). */
uint64_t count_sum()
{
    auto rows = pg_rows("SELECT COALESCE(SUM(\"count\"), 0) FROM acct_client_address");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

void fresh_table()
{
    pg_up();
    pg_rows("DROP TABLE IF EXISTS acct_client_address");
}

/* Sends one mail from client (of a pool of 20) on c; true when it was answered "dunno". */
bool send_mail(Conn &c, int i, const std::string &tag)
{
    std::string client = "198.51.100." + std::to_string(i % 20);
    return action_of(c.request(eom(tag + std::to_string(i), client, 1000, 1))) == "dunno";
}

/* Files in dir, with their sizes. */
std::map<std::string, off_t> files_in(const std::string &dir)
{
    std::map<std::string, off_t> m;
    DIR *d = opendir(dir.c_str());
    for (struct dirent *e; d && (e = readdir(d)) != nullptr;) {
        if (e->d_name[0] == '.')
            continue;
        struct stat st;
        if (stat((dir + "/" + e->d_name).c_str(), &st) == 0)
            m[e->d_name] = st.st_size;
    }
    if (d)
        closedir(d);
    return m;
}

} // namespace

TEST_CASE("PostgreSQL restarted during a run: the table's sum equals the mails accounted",
          "[faults]")
{
    fresh_table();
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port, "    flush_interval = 0.1\n"), Endpoint::tcp(port));
    std::vector<Conn> conns;
    for (int i = 0; i < 4; i++)
        conns.emplace_back(Endpoint::tcp(port));
    uint64_t answered = 0;
    int i = 0;
    int64_t t0 = now_ms();
    bool stopped = false, restarted = false;
    while (now_ms() - t0 < 4000) {
        int64_t t = now_ms() - t0;
        if (t > 1000 && !stopped) {
            pg().stop("fast");
            stopped = true;
        }
        if (t > 2200 && !restarted) {
            REQUIRE(pg().start());
            restarted = true;
        }
        for (Conn &c : conns)
            if (send_mail(c, i++, "restart."))
                answered++;
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

TEST_CASE("a long outage with a small buffer: spilled to disk, read back when it returns",
          "[faults]")
{
    fresh_table();
    TempDir spill;
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port,
                                    "    flush_interval = 0.1\n    buffer_rows = 16\n"
                                    "    spill_dir = \"" +
                                        spill.path() + "\"\n",
                                    "shards = 1\n"),
                        Endpoint::tcp(port));
    pg().stop("fast");
    Conn c(Endpoint::tcp(port));
    const int mails = 300;
    for (int i = 0; i < mails; i++) {
        std::string client = "203.0.113." + std::to_string(i % 60); /* 60 rows > 16 */
        REQUIRE(action_of(c.request(eom("outage." + std::to_string(i), client, 10, 2))) == "dunno");
        if (i % 50 == 0)
            sleep_ms(150); /* a few failed flushes on the way */
    }
    sleep_ms(300);
    auto during = files_in(spill.path());
    REQUIRE(pg().start());
    uint64_t sum = wait_for([] { return count_sum(); }, (uint64_t)mails, 20000);
    INFO("log:\n" << d->log() << "\nspill files during the outage: " << during.size());
    REQUIRE(during.size() == 1);
    CHECK(during.begin()->second > 0);
    CHECK(sum == (uint64_t)mails);
    auto rows = pg_rows("SELECT SUM(\"count_rcpt\"), SUM(\"size\"), SUM(\"size_rcpt\"), COUNT(*) "
                        "FROM acct_client_address");
    CHECK(rows ==
          std::vector<std::string>{std::to_string(2 * mails) + "|" + std::to_string(10 * mails) +
                                   "|" + std::to_string(20 * mails) + "|60"});
    CHECK(wait_for([&] { return files_in(spill.path()).size(); }, (size_t)0) == 0);
    CHECK(d->stop() == 0);
    CHECK(count_sum() == (uint64_t)mails);
}

namespace
{

/* Runs lock_sql in a transaction held for hold_ms on another thread; returns once it holds. */
std::thread hold_lock(const std::string &lock_sql, int hold_ms)
{
    auto held = std::make_shared<std::atomic<bool>>(false);
    std::thread t([lock_sql, hold_ms, held] {
        PGconn *pc = PQconnectdb(pg().conninfo().c_str());
        PQclear(PQexec(pc, "BEGIN"));
        PQclear(PQexec(pc, lock_sql.c_str()));
        *held = true;
        sleep_ms(hold_ms);
        PQclear(PQexec(pc, "COMMIT"));
        PQfinish(pc);
    });
    while (!*held)
        sleep_ms(10);
    return t;
}

} // namespace

TEST_CASE("flushes that outlive query_timeout_ms count once, committed or not", "[faults]")
{
    /* A flush blocked by another session's lock past its deadline: the client gives up (and
     * resets the connection) while the server still holds the statement. Its batch id settles
     * it: a table lock blocks the statement before it records the id (the claim wins, the
     * statement then does nothing, its counts are sent again); a row lock blocks it after
     * (the claim waits, the statement commits when the lock goes, nothing is sent again).
     * Without the id the counts of the second case would be written twice. */
    fresh_table();
    uint16_t port = free_tcp_port();
    std::string conf = acct_config(port, "    flush_interval = 0.1\n");
    std::string conn = pg_connection();
    conf.replace(conf.find(conn), conn.size(),
                 conn.substr(0, conn.find("</Connection>")) +
                     "  query_timeout_ms = 300\n</Connection>\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int i = 0; i < 20; i++)
        REQUIRE(send_mail(c, i, "once."));
    REQUIRE(wait_for([] { return count_sum(); }, (uint64_t)20, 15000) == 20);

    std::thread t1 = hold_lock("LOCK TABLE acct_client_address IN EXCLUSIVE MODE", 2000);
    for (int i = 20; i < 60; i++)
        REQUIRE(send_mail(c, i, "once."));
    t1.join();
    uint64_t sum = wait_for([] { return count_sum(); }, (uint64_t)60, 15000);
    sleep_ms(1000); /* a second write would land within a few intervals */
    INFO("log:\n" << d->log());
    CHECK(sum == 60);
    CHECK(count_sum() == 60);
    CHECK(log_lines_with(*d, "had not committed: sent again") >= 1);

    std::thread t2 = hold_lock("SELECT * FROM acct_client_address FOR UPDATE", 2000);
    for (int i = 60; i < 100; i++)
        REQUIRE(send_mail(c, i, "once."));
    t2.join();
    sum = wait_for([] { return count_sum(); }, (uint64_t)100, 15000);
    sleep_ms(1000);
    CHECK(sum == 100);
    CHECK(count_sum() == 100);
    CHECK(log_lines_with(*d, "had committed: not sent again") >= 1);

    /* Stopped while such a flush is out: the exit path claims the id (waiting for the lock). */
    std::thread t3 = hold_lock("SELECT * FROM acct_client_address FOR UPDATE", 1500);
    for (int i = 100; i < 140; i++)
        REQUIRE(send_mail(c, i, "once."));
    sleep_ms(600); /* the flush timed out */
    CHECK(d->stop() == 0);
    t3.join();
    CHECK(count_sum() == 140);
    CHECK(log_lines_with(*d, "may count twice") == 0);
}

TEST_CASE("batch ids older than a day are purged, newer ones kept", "[faults]")
{
    fresh_table();
    pg_rows("CREATE TABLE IF NOT EXISTS ringpolicyd_acct_batches (id BIGINT PRIMARY KEY, at "
            "TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now())");
    pg_rows("DELETE FROM ringpolicyd_acct_batches WHERE id IN (1, 2)");
    pg_rows("INSERT INTO ringpolicyd_acct_batches (id, at) VALUES (1, now() - interval '25 "
            "hours'), (2, now() - interval '23 hours')");
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port, "    flush_interval = 0.1\n"), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int i = 0; i < 5; i++)
        REQUIRE(send_mail(c, i, "purge."));
    auto old_ids = [] {
        return pg_rows("SELECT id FROM ringpolicyd_acct_batches WHERE id IN (1, 2) ORDER BY id");
    };
    INFO("log:\n" << d->log());
    CHECK(wait_for(old_ids, std::vector<std::string>{"2"}) == std::vector<std::string>{"2"});
    CHECK(wait_for([] { return count_sum(); }, (uint64_t)5) == 5);
    /* the flushes recorded their ids */
    CHECK(std::stoull(pg_rows("SELECT count(*) FROM ringpolicyd_acct_batches WHERE at > now() - "
                              "interval '1 minute'")[0]) >= 1);
    CHECK(d->stop() == 0);
}

TEST_CASE("a steady stream of quota misses does not starve the flushes", "[faults]")
{
    /* Every mail comes from a new client: each Quota check misses and queues a fetch, so the
     * fetch queue is hardly ever empty. If fetches always went first the flushes would wait,
     * the 64-row buffer would fill with dirty rows, and quota checks would fail for want of
     * a row (and counts be dropped). */
    fresh_table();
    uint16_t port = free_tcp_port();
    std::string body = "  <Plugin quota>\n    module = \"Quota\"\n    field = \"client_address\"\n"
                       "    metric = \"count\"\n    threshold = 1000000\n    cache_ttl = 0.01\n"
                       "  </Plugin>\n"
                       "  <Plugin acct>\n    module = \"Accounting\"\n"
                       "    fields = \"client_address\"\n    buffer_rows = 512\n"
                       "    flush_interval = 0.5\n  </Plugin>\n";
    std::string conf = "port = \"127.0.0.1:" + std::to_string(port) + "\"\nshards = 2\n" +
                       pg_connection() + vhost_block(std::to_string(port), "acct", body);
    auto d = start_ring(conf, Endpoint::tcp(port));
    const int threads = 16;
    std::atomic<uint64_t> sent{0}, failed{0};
    std::vector<std::thread> ts;
    int64_t t0 = now_ms();
    for (int t = 0; t < threads; t++)
        ts.emplace_back([&, t] {
            Conn c(Endpoint::tcp(port));
            for (uint64_t i = 0; now_ms() - t0 < 3000; i++) {
                std::string client = "10." + std::to_string(t) + "." + std::to_string(i / 250 % 250) +
                                     "." + std::to_string(i % 250 + 1);
                std::string a = action_of(c.request(eom("s" + std::to_string(t) + "." +
                                                            std::to_string(i), client, 100, 1)));
                sent++;
                if (a != "dunno" && failed++ == 0)
                    fprintf(stderr, "first failure: %s\n", a.c_str());
            }
        });
    for (auto &t : ts)
        t.join();
    INFO("log:\n" << d->log());
    CHECK(failed == 0);
    CHECK(log_lines_with(*d, "no room") == 0);
    CHECK(sent > 1000);
    CHECK(wait_for([] { return count_sum(); }, sent.load(), 15000) == sent.load());
    CHECK(d->stop() == 0);
}

TEST_CASE("a role without CREATE works on tables its admin created", "[faults]")
{
    /* PostgreSQL 15 gives CREATE on schema public to the database owner only: an admin creates
     * the tables (the accounting table with a unique index of its own name and column order,
     * and the batch log) and grants the rest; CREATE INDEX IF NOT EXISTS alone would need the
     * table's owner. */
    fresh_table();
    pg().exec("SET ROLE policyd; "
              "CREATE TABLE IF NOT EXISTS acct_client_address (id SERIAL PRIMARY KEY, "
              "\"key\" VARCHAR(255) NOT NULL, \"time\" VARCHAR(255) NOT NULL, count INT NOT "
              "NULL, count_rcpt INT NOT NULL, size INT NOT NULL, size_rcpt INT NOT NULL); "
              "CREATE UNIQUE INDEX IF NOT EXISTS admins_own_name ON "
              "acct_client_address (\"time\", \"key\"); "
              "CREATE TABLE IF NOT EXISTS ringpolicyd_acct_batches (id BIGINT PRIMARY KEY, at "
              "TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()); "
              "RESET ROLE; DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'acct_nocreate') "
              "THEN CREATE ROLE acct_nocreate LOGIN PASSWORD 'x'; END IF; END $$; "
              "REVOKE CREATE ON SCHEMA public FROM acct_nocreate; "
              "REVOKE CREATE ON SCHEMA public FROM PUBLIC; "
              "GRANT SELECT, INSERT, UPDATE ON acct_client_address, ringpolicyd_acct_batches TO "
              "acct_nocreate; GRANT USAGE ON SEQUENCE acct_client_address_id_seq TO "
              "acct_nocreate",
              "policyd");
    uint16_t port = free_tcp_port();
    std::string conf = acct_config(port, "    flush_interval = 0.1\n");
    std::string conn = pg_connection();
    std::string mine = conn;
    for (auto [from, to] : {std::pair<std::string, std::string>{"user = \"policyd\"",
                                                                "user = \"acct_nocreate\""},
                            {"password = \"policyd\"", "password = \"x\""}})
        mine.replace(mine.find(from), from.size(), to);
    conf.replace(conf.find(conn), conn.size(), mine);
    auto d = start_ring(conf, Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int i = 0; i < 20; i++)
        REQUIRE(send_mail(c, i, "nocreate."));
    INFO("log:\n" << d->log());
    CHECK(wait_for([] { return count_sum(); }, (uint64_t)20, 15000) == 20);
    CHECK(d->stop() == 0);
    CHECK(log_lines_with(*d, "cannot check or create") == 0);
    CHECK(log_lines_with(*d, "not checked at start-up") == 0);
    CHECK(log_lines_with(*d, "failed on shard") == 0);
    CHECK(log_lines_with(*d, "must be owner") == 0);
    pg().exec("DROP TABLE IF EXISTS acct_client_address", "policyd");
}

TEST_CASE("SIGTERM writes what was not flushed yet", "[faults]")
{
    fresh_table();
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port, "    flush_interval = 3600\n"), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int i = 0; i < 50; i++)
        REQUIRE(send_mail(c, i, "term."));
    sleep_ms(300);
    CHECK(count_sum() == 0); /* not flushed yet: the interval is an hour */
    INFO("log:\n" << d->log());
    CHECK(d->stop() == 0);
    CHECK(count_sum() == 50);
}

TEST_CASE("counts spilled at exit while the database is down are replayed by the next start",
          "[faults]")
{
    fresh_table();
    TempDir spill;
    std::string extra = "    flush_interval = 0.1\n    spill_dir = \"" + spill.path() + "\"\n";
    uint16_t port = free_tcp_port();
    {
        auto a = start_ring(acct_config(port, extra), Endpoint::tcp(port));
        pg().stop("fast");
        Conn c(Endpoint::tcp(port));
        for (int i = 0; i < 40; i++)
            REQUIRE(send_mail(c, i, "exit."));
        INFO("log:\n" << a->log());
        CHECK(a->stop() == 0);
        auto left = files_in(spill.path());
        REQUIRE(left.size() >= 1);
        off_t bytes = 0;
        for (auto &f : left)
            bytes += f.second;
        CHECK(bytes > 0);
    }
    REQUIRE(pg().start());
    uint16_t port2 = free_tcp_port();
    auto b = start_ring(acct_config(port2, extra), Endpoint::tcp(port2));
    uint64_t sum = wait_for([] { return count_sum(); }, (uint64_t)40, 15000);
    INFO("log:\n" << b->log());
    CHECK(sum == 40);
    CHECK(wait_for([&] { return files_in(spill.path()).size(); }, (size_t)0) == 0);
    CHECK(b->stop() == 0);
    CHECK(count_sum() == 40);
}

TEST_CASE("kill -9 after more than a flush interval has lost nothing", "[faults]")
{
    fresh_table();
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port, "    flush_interval = 0.2\n"), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int i = 0; i < 40; i++)
        REQUIRE(send_mail(c, i, "kill."));
    sleep_ms(600); /* three intervals */
    REQUIRE(d->send_signal(SIGKILL) == 0);
    d->wait_exit(5000);
    CHECK(count_sum() == 40);
}

TEST_CASE("SIGHUP: the replaced configuration's counts are written, none twice", "[faults]")
{
    fresh_table();
    uint16_t port = free_tcp_port();
    auto d = start_ring(acct_config(port, "    flush_interval = 3600\n"), Endpoint::tcp(port));
    {
        Conn c(Endpoint::tcp(port));
        for (int i = 0; i < 30; i++)
            REQUIRE(send_mail(c, i, "hup1."));
    }
    sleep_ms(200);
    CHECK(count_sum() == 0); /* an hour to the next flush */
    REQUIRE(d->send_signal(SIGHUP) == 0);
    INFO("log:\n" << d->log());
    CHECK(wait_for([] { return count_sum(); }, (uint64_t)30, 10000) == 30);
    CHECK(log_lines_with(*d, "received SIGHUP") == 1);
    CHECK(log_lines_with(*d, "reload failed") == 0);
    {
        Conn c(Endpoint::tcp(port));
        for (int i = 0; i < 20; i++)
            REQUIRE(send_mail(c, i, "hup2."));
    }
    CHECK(d->stop() == 0);
    CHECK(count_sum() == 50);
}
