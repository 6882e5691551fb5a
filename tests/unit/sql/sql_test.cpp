// sql_test.cpp: the Sql connection (policy/sql.c, sql_sqlite.c) as plugins use it, built from
// configuration text like the daemon does: start-up errors naming file and line (drivers,
// options, unreachable paths; host names that do not resolve yet load), lookup, and pol_sql_query / pol_sql_exec_sync on
// SQLite (a file, and :memory: as one database for the whole process) and on a real
// PostgreSQL started by the test, with values of every kind, `?` placeholders, errors,
// deadlines, queue_max at N and N+1, completion on the right shard with 2 shards, the server
// stopped and started again, and shard stop completing what is out.
#include "pg_server.h"
#include "sql_rig.h"

TEST_CASE("start-up errors name the file and line", "[sql]")
{
    pol_server *s = nullptr;
    CHECK(load("\n\n" + conn_block("x", "DBI:Oracle:x"), &s) ==
          "test.conf:3: could not open connection x: unsupported DBI driver 'Oracle' (supported "
          "drivers: SQLite, Pg, mysql, MariaDB)");
    CHECK(load("<Connection db>\n module = \"Sql\"\n</Connection>", &s) ==
          "test.conf:1: could not open connection db: no dsn defined for connection db");
    CHECK(load(conn_block("db", "dbi:SQLite::memory:", " connections = 0\n"), &s) ==
          "test.conf:1: could not open connection db: test.conf:4: connections must be a whole "
          "number from 1 to 16");
    CHECK(load(conn_block("db", "dbi:SQLite::memory:", " query_timeout_ms = 5s\n"), &s) ==
          "test.conf:1: could not open connection db: test.conf:4: query_timeout_ms must be a "
          "whole number from 1 to 3600000");
    CHECK(load(conn_block("db", "dbi:SQLite:dbname=/nonexistent/dir/x.db"), &s) ==
          "test.conf:1: could not open connection db: cannot open SQLite database "
          "/nonexistent/dir/x.db: unable to open database file");
    // A host name is resolved when connecting (engine/pg), not at start-up: a name that does
    // not resolve yet (a Kubernetes Service created later) does not refuse start.
    CHECK(load(conn_block("db", "dbi:Pg:dbname=x;host=nonexistent.invalid"), &s) == "");
    pol_server_free(s);
    s = nullptr;
    CHECK(load(conn_block("db", "dbi:Pg:dbname=x;sslmode=sometimes"), &s) == "");
    pol_server_free(s); // libpq checks sslmode's value only when connecting
    s = nullptr;
    CHECK(load(conn_block("db", "dbi:Pg:dbname=x;frobnicate=1"), &s) ==
          "test.conf:1: could not open connection db: invalid connection option \"frobnicate\"");
}

TEST_CASE("lookup finds Sql connections by name", "[sql]")
{
    REQUIRE(load(conn_block("db", "dbi:SQLite::memory:") + "\n" +
                     conn_block("pg", "dbi:Pg:dbname=policyd;host=127.0.0.1;port=1") +
                     "\n<Connection mc>\n module = \"Memcached\"\n</Connection>",
                 &g_srv) == "");
    std::string err;
    pol_sql *db = lookup("db");
    REQUIRE(db != nullptr);
    CHECK(pol_sql_driver_of(db) == POL_SQL_SQLITE);
    CHECK(std::string(pol_sql_name(db)) == "db");
    pol_sql *pg = lookup("pg");
    REQUIRE(pg != nullptr);
    CHECK(pol_sql_driver_of(pg) == POL_SQL_PG);
    CHECK(lookup("nope", &err) == nullptr);
    CHECK(err == "no connection nope configured!");
    CHECK(lookup("mc", &err) == nullptr);
    CHECK(err == "connection mc is not a Sql connection");
    char q[32];
    CHECK(pol_sql_quote_ident(db, "acct_\"x", q, sizeof(q)) == 10);
    CHECK(std::string(q) == "\"acct_\"\"x\"");
    CHECK(pol_sql_quote_ident(db, "abc", q, 5) == 0);
    pol_server_free(g_srv);
    g_srv = nullptr;
}

TEST_CASE("SQLite file: values of every kind, from two shards", "[sql]")
{
    std::string dir = tmpdir();
    {
        Rig rig(conn_block("db", "dbi:SQLite:dbname=" + dir + "/t.db"));
        pol_sql *db = lookup("db");
        REQUIRE(sync_err(db, "CREATE TABLE t (k TEXT, v TEXT, n INTEGER, r REAL);"
                             "CREATE INDEX t_k ON t (k)") == "");
        const std::string nul("a\0b", 3);
        const char *vals[] = {"odd",  k_odd.c_str(), "empty", "",
                              "null", nullptr,       "nul",   nul.data()};
        size_t lens[] = {3, k_odd.size(), 5, 0, 4, 0, 3, 3};
        Res ins = rig.run(0, db, "INSERT INTO t (k, v) VALUES (?, ?), (?, ?), (?, ?), (?, ?)",
                          {vals, vals + 8}, lens);
        INFO(ins.error);
        REQUIRE(ins.status == 0);
        CHECK(ins.affected == 4);
        CHECK(ins.shard == 0);
        Res sel = rig.run(1, db, "SELECT k, v, length(v) FROM t ORDER BY k");
        REQUIRE(sel.status == 0);
        CHECK(sel.shard == 1);
        REQUIRE(sel.rows.size() == 4);
        CHECK(sel.rows[0] == std::vector<std::string>{"empty", "", "0"});
        CHECK(sel.rows[1] == std::vector<std::string>{"nul", nul, "1"}); // length stops at NUL
        CHECK(sel.rows[2] == std::vector<std::string>{"null", "\\N", "\\N"});
        CHECK(sel.rows[3][1] == k_odd);
        // Numbers come back as Perl would print them.
        REQUIRE(rig.run(0, db, "UPDATE t SET n = 42, r = 2.5 WHERE k = ?", {"odd"}).affected == 1);
        Res num = rig.run(0, db, "SELECT n, r, r * 2, 1.0 / 3 FROM t WHERE k = ?", {"odd"});
        CHECK(num.rows ==
              std::vector<std::vector<std::string>>{{"42", "2.5", "5", "0.333333333333333"}});
        // Errors are results, not crashes.
        Res bad = rig.run(1, db, "SELEKT 1");
        CHECK(bad.status < 0);
        CHECK(bad.error == "near \"SELEKT\": syntax error");
        Res cnt = rig.run(1, db, "SELECT ? + ?", {"1"});
        CHECK(cnt.status < 0);
        CHECK(cnt.error == "called with 1 bind variables when 2 are needed");
        Res two = rig.run(1, db, "SELECT 1; SELECT 2");
        CHECK(two.error == "only one statement per query");
        CHECK(rig.run(1, db, "SELECT 1;  ").status == 0);
        // The main thread sees the same rows.
        std::vector<std::vector<std::string>> rows;
        CHECK(sync_err(db, "SELECT count(*) FROM t WHERE k <> ?", {"x"}, &rows) == "");
        CHECK(rows == std::vector<std::vector<std::string>>{{"4"}});
        CHECK(sync_err(db, "SELECT nope FROM t") == "no such column: nope");
        pol_sql_stats st;
        pol_sql_stats_get(db, &st);
        CHECK(st.queries == 8);
        CHECK(st.ok == 5);
        CHECK(st.failed == 3);
        CHECK(st.queue_depth == 0);
    }
    REQUIRE(rpdtest::run("rm -rf " + dir) == 0);
}

TEST_CASE("SQLite :memory: is one database for the process", "[sql]")
{
    Rig rig(conn_block("db", "dbi:SQLite::memory:") + "\n" +
            conn_block("other", "dbi:SQLite::memory:"));
    pol_sql *db = lookup("db");
    pol_sql *other = lookup("other");
    REQUIRE(sync_err(db, "CREATE TABLE m (v TEXT)") == "");
    REQUIRE(rig.run(0, db, "INSERT INTO m VALUES (?)", {"from shard 0"}).status == 0);
    Res r = rig.run(1, db, "SELECT v FROM m");
    REQUIRE(r.status == 0);
    CHECK(r.rows == std::vector<std::vector<std::string>>{{"from shard 0"}});
    std::vector<std::vector<std::string>> rows;
    CHECK(sync_err(db, "SELECT count(*) FROM m", {}, &rows) == "");
    CHECK(rows == std::vector<std::vector<std::string>>{{"1"}});
    // Another <Connection> with :memory: is another database.
    Res o = rig.run(0, other, "SELECT v FROM m");
    CHECK(o.status < 0);
    CHECK(o.error == "no such table: m");
}

TEST_CASE("SQLite deadlines and queue_max", "[sql]")
{
    Rig rig(conn_block("db", "dbi:SQLite::memory:", " queue_max = 2\n"), 1);
    pol_sql *db = lookup("db");
    const char *slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                       "SELECT max(x) FROM c";
    auto t0 = std::chrono::steady_clock::now();
    Res r = rig.run(0, db, slow, {}, nullptr, 100);
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    CHECK(r.status == -ETIMEDOUT);
    CHECK(r.error == "query timed out after 100 ms");
    CHECK(ms < 1000);
    // N queries wait; N + 1 is refused.
    static Res q[3];
    int rcs[3];
    rig.on(0, [&](eng_shard *sh) {
        for (int i = 0; i < 3; i++) {
            q[i] = Res();
            rcs[i] = pol_sql_query(sh, db, slow, nullptr, nullptr, 0, 200, on_done, &q[i]);
        }
    });
    CHECK(rcs[0] == 0);
    CHECK(rcs[1] == 0);
    CHECK(rcs[2] == -ENOBUFS);
    REQUIRE(eventually([] { return finished(q[1]); }));
    CHECK(q[0].status == -ETIMEDOUT);
    CHECK(q[1].status == -ETIMEDOUT); // past its deadline before a worker was free
    CHECK(q[2].status == 1);
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.queue_full == 1);
    CHECK(st.timeouts == 3);
    CHECK(st.queue_depth_max == 2);
    // Bad arguments.
    rig.on(0, [&](eng_shard *sh) {
        CHECK(pol_sql_query(sh, db, nullptr, nullptr, nullptr, 0, 0, on_done, nullptr) == -EINVAL);
        CHECK(pol_sql_query(nullptr, db, "SELECT 1", nullptr, nullptr, 0, 0, on_done, nullptr) ==
              -EINVAL);
    });
}

TEST_CASE("shard stop completes the queries still out", "[sql]")
{
    static Res r[2];
    {
        Rig rig(conn_block("db", "dbi:SQLite::memory:"), 1);
        pol_sql *db = lookup("db");
        rig.on(0, [&](eng_shard *sh) {
            for (Res &x : r) {
                x = Res();
                pol_sql_query(sh, db, "SELECT 'still out'", nullptr, nullptr, 0, 0, on_done, &x);
            }
        });
    } // the engine stops at once
    for (Res &x : r) {
        CHECK(x.status != 1); // done ran, with its rows or "cancelled"
        if (x.status == 0)
            CHECK(x.rows[0][0] == "still out");
        else
            CHECK(x.error == "cancelled: the SQLite workers are stopping");
    }
}

TEST_CASE("PostgreSQL: ? placeholders, values of every kind, two shards", "[sql]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    std::string dsn = "dbi:Pg:dbname=policyd;host=127.0.0.1;port=" + std::to_string(pg.port());
    Rig rig(conn_block("db", dsn, " user = \"policyd\"\n password = \"policyd\"\n"));
    pol_sql *db = lookup("db");
    REQUIRE(sync_err(db, "DROP TABLE IF EXISTS t; CREATE TABLE t (k text, v text, n int)") == "");
    const char *vals[] = {"odd", k_odd.c_str(), "1", "empty", "", "2", "null", nullptr, nullptr};
    Res ins =
        rig.run(0, db, "INSERT INTO t VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)", {vals, vals + 9});
    INFO(ins.error);
    REQUIRE(ins.status == 0);
    CHECK(ins.affected == 3);
    Res sel =
        rig.run(1, db, "SELECT k, v, n, '?' AS \"q?\" FROM t WHERE k <> ? ORDER BY k", {"none"});
    REQUIRE(sel.status == 0);
    CHECK(sel.shard == 1);
    REQUIRE(sel.rows.size() == 3);
    CHECK(sel.rows[0] == std::vector<std::string>{"empty", "", "2", "?"});
    CHECK(sel.rows[1] == std::vector<std::string>{"null", "\\N", "\\N", "?"});
    CHECK(sel.rows[2] == std::vector<std::string>{"odd", k_odd, "1", "?"});
    // A NUL byte cannot be a PostgreSQL text value: a clean error.
    const std::string nul("a\0b", 3);
    const char *p[] = {nul.data()};
    size_t lens[] = {3};
    Res n = rig.run(0, db, "SELECT ?::text", {p, p + 1}, lens);
    CHECK(n.status == -EINVAL);
    CHECK(n.error == "parameter 1 holds a NUL byte");
    Res bad = rig.run(0, db, "SELECT nope FROM t");
    CHECK(bad.status == -EIO);
    CHECK(bad.error.find("column \"nope\" does not exist") != std::string::npos);
    rig.on(0, [&](eng_shard *sh) {
        CHECK(pol_sql_query(sh, db, "SELECT ?, $1", vals, nullptr, 1, 0, on_done, nullptr) ==
              -EINVAL);
    });
    std::vector<std::vector<std::string>> rows;
    CHECK(sync_err(db, "SELECT count(*) FROM t WHERE n > ?", {"0"}, &rows) == "");
    CHECK(rows == std::vector<std::vector<std::string>>{{"2"}});
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.queries == 4);
    CHECK(st.ok == 2);
    CHECK(st.failed == 2);
    CHECK(st.round_trips >= 1);
}

TEST_CASE("PostgreSQL stopped and started again under the Sql connection", "[sql][resolve]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    std::string dsn = "dbi:Pg:dbname=policyd;host=localhost;port=" + std::to_string(pg.port());
    Rig rig(conn_block("db", dsn, " user = \"policyd\"\n password = \"policyd\"\n"), 1);
    pol_sql *db = lookup("db");
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == 0; }, 10000));
    pg.stop("immediate");
    Res down = rig.run(0, db, "SELECT 1");
    CHECK(down.status < 0);
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 1").status == -ENOTCONN; }, 10000));
    REQUIRE(pg.start());
    REQUIRE(eventually([&] { return rig.run(0, db, "SELECT 2").status == 0; }, 15000));
    pol_sql_stats st;
    pol_sql_stats_get(db, &st);
    CHECK(st.reconnects >= 1);
}
