// sql_maria_test.cpp: the Sql connection on MySQL/MariaDB (policy/sql_maria.c over
// engine/maria.c) against a real MariaDB started by the test (maria_server.h): start-up errors,
// `?` bound as DBD::mysql binds it (values of every kind, a NUL byte, `?` inside quotes and
// comments left alone), two shards, server errors, affected rows as CLIENT_FOUND_ROWS counts
// them, exec_sync, a burst larger than the connection pool, deadlines (a running statement
// and one waiting for a connection), queue_max at N and N+1, the server stopped and started
// again (fail fast, then recovery), and shard stop completing what is out.
#include "maria_server.h"
#include "sql_rig.h"

extern "C" {
#include "eng/maria.h"
#include "plugins/acct_sql.h"
}

TEST_CASE("MySQL placeholders: only ? outside quotes and comments", "[sql_maria]")
{
    auto count = [](const std::string &s) {
        size_t offs[16];
        return eng_maria_placeholders(s.data(), s.size(), offs, 16);
    };
    CHECK(count("SELECT ?, ?") == 2);
    CHECK(count("SELECT '?', \"?\", `?`, ? -- ?\n, ? # ?\n /* ? */ FROM t") == 2);
    CHECK(count("SELECT 'it\\'s ?', 'a''?', ?") == 1);
    CHECK(count("SELECT 1 --? not a comment without a blank") == 1);
    CHECK(count("SELECT '?") == 0); // unterminated literal: the server reports it
    size_t offs[4];
    CHECK(eng_maria_placeholders("a?b?", 4, offs, 4) == 2);
    CHECK(offs[0] == 1);
    CHECK(offs[1] == 3);
}

TEST_CASE("MySQL start-up errors name the file and line", "[sql_maria]")
{
    pol_server *s = nullptr;
    // A host name is resolved at each connection attempt, not at start-up.
    CHECK(load(conn_block("db", "dbi:mysql:database=x;host=nonexistent.invalid"), &s) == "");
    pol_server_free(s);
    CHECK(load(conn_block("db", "dbi:mysql:database=x;port=x"), &s) ==
          "test.conf:1: could not open connection db: dbi:mysql: bad port 'x'");
    // Nothing listens there: start-up still succeeds (the server may come later).
    CHECK(load(conn_block("db", "DBI:MariaDB:database=x;host=127.0.0.1;port=1"), &s) == "");
    pol_server_free(s);
}

TEST_CASE("MySQL: ? placeholders, values of every kind, two shards", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    Rig rig(conn_block("db", my.dsn(), " user = \"policyd\"\n password = \"policyd\"\n"));
    pol_sql *db = lookup("db");
    REQUIRE(pol_sql_driver_of(db) == POL_SQL_MYSQL);
    REQUIRE(sync_err(db, "DROP TABLE IF EXISTS t") == "");
    REQUIRE(sync_err(db, "CREATE TABLE t (k varchar(64), v blob, n int)") == "");
    const std::string nul("a\0b", 3);
    const char *vals[] = {"odd", k_odd.c_str(), "1", "empty", "",     "2",
                          "null", nullptr,     nullptr, "nul", nul.data(), "3"};
    size_t lens[] = {3, k_odd.size(), 1, 5, 0, 1, 4, 0, 0, 3, 3, 1};
    Res ins = rig.run(0, db, "INSERT INTO t VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?)",
                      {vals, vals + 12}, lens);
    INFO(ins.error);
    REQUIRE(ins.status == 0);
    CHECK(ins.affected == 4);
    Res sel = rig.run(1, db,
                      "SELECT k, v, n, '?' AS `q?` FROM t WHERE k <> ? /* ? */ ORDER BY k",
                      {"none"});
    INFO(sel.error);
    REQUIRE(sel.status == 0);
    CHECK(sel.shard == 1);
    REQUIRE(sel.rows.size() == 4);
    CHECK(sel.rows[0] == std::vector<std::string>{"empty", "", "2", "?"});
    CHECK(sel.rows[1] == std::vector<std::string>{"nul", nul, "3", "?"});
    CHECK(sel.rows[2] == std::vector<std::string>{"null", "\\N", "\\N", "?"});
    CHECK(sel.rows[3] == std::vector<std::string>{"odd", k_odd, "1", "?"});
    // A value that tries to end the literal stays one value.
    Res inj = rig.run(0, db, "SELECT count(*) FROM t WHERE k = ?", {"x' OR '1'='1"});
    REQUIRE(inj.status == 0);
    CHECK(inj.rows == std::vector<std::vector<std::string>>{{"0"}});
    // Found rows, as DBD::mysql counts them: an UPDATE that changes nothing still matches.
    Res upd = rig.run(0, db, "UPDATE t SET n = n WHERE k = ?", {"odd"});
    REQUIRE(upd.status == 0);
    CHECK(upd.affected == 1);
    Res bad = rig.run(0, db, "SELECT nope FROM t");
    CHECK(bad.status == -EIO);
    CHECK(bad.error.find("Unknown column 'nope' in ") == 0);
    rig.on(0, [&](eng_shard *sh) {
        CHECK(pol_sql_query(sh, db, "SELECT ?, ?", vals, nullptr, 1, 0, on_done, nullptr) ==
              -EINVAL);
    });
    std::vector<std::vector<std::string>> rows;
    CHECK(sync_err(db, "SELECT count(*) FROM t WHERE n > ?", {"0"}, &rows) == "");
    CHECK(rows == std::vector<std::vector<std::string>>{{"3"}});
    CHECK(sync_err(db, "SELECT nope").find("Unknown column 'nope'") == 0);
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.queries == 5);
    CHECK(st.ok == 4);
    CHECK(st.failed == 1);
    CHECK(st.round_trips == 5);
}

TEST_CASE("MySQL: a burst beyond the pool, deadlines, queue_max", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    Rig rig(conn_block("db", my.dsn(),
                       " user = \"policyd\"\n password = \"policyd\"\n connections = 2\n"
                       " queue_max = 40\n"),
            1);
    pol_sql *db = lookup("db");
    // 40 statements on 2 connections: all answered, in any order, each with its own value.
    std::vector<Res> out(40);
    std::vector<std::string> keys(40);
    rig.on(0, [&](eng_shard *sh) {
        for (size_t i = 0; i < out.size(); i++) {
            keys[i] = std::to_string(i * 7);
            const char *p[] = {keys[i].c_str()};
            REQUIRE(pol_sql_query(sh, db, "SELECT ? + 1", p, nullptr, 1, 0, on_done, &out[i]) ==
                    0);
        }
        // The 41st is refused at once.
        const char *p[] = {"1"};
        CHECK(pol_sql_query(sh, db, "SELECT ?", p, nullptr, 1, 0, on_done, nullptr) ==
              -ENOBUFS);
    });
    REQUIRE(eventually([&] { return finished(out.back()); }, 15000));
    for (size_t i = 0; i < out.size(); i++) {
        REQUIRE(eventually([&] { return finished(out[i]); }, 5000));
        CHECK(out[i].status == 0);
        REQUIRE(out[i].rows.size() == 1);
        CHECK(out[i].rows[0][0] == std::to_string(i * 7 + 1));
    }
    // Deadlines: one running (SLEEP) and one waiting for a connection behind two sleeps.
    Res s1, s2, waiting;
    rig.on(0, [&](eng_shard *sh) {
        REQUIRE(pol_sql_query(sh, db, "SELECT SLEEP(2)", nullptr, nullptr, 0, 300, on_done, &s1) ==
                0);
        REQUIRE(pol_sql_query(sh, db, "SELECT SLEEP(2)", nullptr, nullptr, 0, 1500, on_done,
                              &s2) == 0);
        REQUIRE(pol_sql_query(sh, db, "SELECT 5", nullptr, nullptr, 0, 600, on_done, &waiting) ==
                0);
    });
    REQUIRE(eventually([&] { return finished(s1) && finished(s2) && finished(waiting); }, 10000));
    CHECK(s1.status == -ETIMEDOUT);
    CHECK(s2.status == -ETIMEDOUT);
    // The third got the first connection back after its reset, or timed out in the queue.
    CHECK((waiting.status == 0 || waiting.status == -ETIMEDOUT));
    // The connections come back and work.
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == 0; }, 10000));
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.timeouts >= 2);
    CHECK(st.queue_full == 1);
}

TEST_CASE("MySQL over its Unix socket (host localhost, mysql_socket)", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    Rig rig(conn_block("db", "dbi:mysql:database=policyd;host=localhost;mysql_socket=" +
                                 my.socket(),
                       " user = \"policyd\"\n password = \"policyd\"\n"),
            1);
    pol_sql *db = lookup("db");
    Res r = rig.run(0, db, "SELECT @@socket = ?", {my.socket().c_str()});
    INFO(r.error);
    REQUIRE(r.status == 0);
    CHECK(r.rows == std::vector<std::vector<std::string>>{{"1"}});
}

TEST_CASE("MySQL stopped and started again under the Sql connection", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    Rig rig(conn_block("db", my.dsn(), " user = \"policyd\"\n password = \"policyd\"\n"), 1);
    pol_sql *db = lookup("db");
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == 0; }, 10000));
    my.stop(SIGKILL);
    Res down = rig.run(0, db, "SELECT 1");
    CHECK(down.status < 0);
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == -ENOTCONN; }, 10000));
    Res ff = rig.run(0, db, "SELECT 1");
    CHECK(ff.error.find("connection to MySQL db failed: ") == 0);
    REQUIRE(my.start());
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 2").status == 0; }, 15000));
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.reconnects >= 1);
}

TEST_CASE("MySQL: shard stop completes the queries still out", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    std::vector<Res> out(6);
    {
        Rig rig(conn_block("db", my.dsn(),
                           " user = \"policyd\"\n password = \"policyd\"\n connections = 1\n"),
                1);
        pol_sql *db = lookup("db");
        REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == 0; }, 10000));
        rig.on(0, [&](eng_shard *sh) {
            for (auto &r : out)
                REQUIRE(pol_sql_query(sh, db, "SELECT SLEEP(0.05)", nullptr, nullptr, 0, 0,
                                      on_done, &r) == 0);
        });
    } // the engine stops: the Sql connection drains
    for (auto &r : out) {
        CHECK(finished(r));
        CHECK((r.status == 0 || r.status == -ETIMEDOUT || r.status == -ESHUTDOWN));
    }
    CHECK(out.front().status == 0);
}

TEST_CASE("MySQL: the accounting statements (2.05's table, upsert sums, select)", "[sql_maria]")
{
    rpdtest::MariaServer &my = rpdtest::maria_server();
    Rig rig(conn_block("db", my.dsn(), " user = \"policyd\"\n password = \"policyd\"\n"), 1);
    pol_sql *db = lookup("db");
    char tq[64], eq[64], sql[4096];
    REQUIRE(pol_sql_quote_ident(db, "acct_t", tq, sizeof(tq)) > 0);
    REQUIRE(pol_sql_quote_ident(db, "InnoDB", eq, sizeof(eq)) > 0);
    CHECK(std::string(tq) == "`acct_t`");
    REQUIRE(sync_err(db, "DROP TABLE IF EXISTS acct_t") == "");
    REQUIRE(pol_acct_sql_create_mysql(tq, eq, sql, sizeof(sql)) > 0);
    REQUIRE(sync_err(db, sql) == "");
    CHECK(my.scalar("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_NAME='acct_t'") ==
          "InnoDB");
    // 2.05's table has its unique time_key: the index statement finds it and adds nothing.
    REQUIRE(pol_acct_sql_unique_index("acct_t", tq, sql, sizeof(sql)) > 0);
    CHECK(std::string(sql) ==
          "CREATE UNIQUE INDEX IF NOT EXISTS `time_key` ON `acct_t` (`key`, `time`)");
    REQUIRE(sync_err(db, sql) == "");
    CHECK(my.scalar("SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS "
                    "WHERE TABLE_NAME='acct_t'") == "4");
    REQUIRE(pol_acct_sql_upsert(POL_ACCT_MYSQL, tq, 2, sql, sizeof(sql)) > 0);
    const char *rows[] = {"a@x", "2026-11", "1", "2", "100", "200",
                          "b@x", "2026-11", "1", "1", "50",  "50"};
    for (int i = 0; i < 3; i++) {
        Res r = rig.run(0, db, sql, {rows, rows + 12});
        INFO(r.error);
        REQUIRE(r.status == 0);
    }
    REQUIRE(pol_acct_sql_select(tq, 2, sql, sizeof(sql)) > 0);
    const char *keys[] = {"a@x", "2026-11", "b@x", "2026-11"};
    Res sel = rig.run(0, db, (std::string(sql) + " ORDER BY `key`").c_str(), {keys, keys + 4});
    REQUIRE(sel.status == 0);
    CHECK(sel.rows == std::vector<std::vector<std::string>>{
                          {"a@x", "2026-11", "3", "6", "300", "600"},
                          {"b@x", "2026-11", "3", "3", "150", "150"}});
    REQUIRE(pol_acct_sql_select_one(tq, "size_rcpt", sql, sizeof(sql)) > 0);
    Res one = rig.run(0, db, sql, {"a@x", "2026-11"});
    REQUIRE(one.status == 0);
    CHECK(one.rows == std::vector<std::vector<std::string>>{{"600"}});
}
