// pg_test.cpp: the PostgreSQL client (engine/pg.c) against a real PostgreSQL started by the
// test (tests/unit/sql/pg_server.h), on both backends: parameters of every kind, prepared
// statement reuse, 100 queries pipelined on one connection in one round trip, a failing
// statement between good ones (autocommit: neither rolls back nor skips the others), deadline
// expiry and the reset it causes, queries_max at N and N+1, the server stopped and started
// again during a run (fail fast, then recovery without a restart), host names resolved per
// attempt (localhost; an unresolvable name fails fast, is counted and retried), several
// connections, drain and destroy at shutdown, and the blocking helpers.
#include "harness.h"

#include "../sql/pg_server.h"

extern "C" {
#include "eng/pg.h"
}

#include <mutex>
#include <set>

using namespace th;

namespace
{

struct Res {
    int status = 1; // 1: done has not run
    std::string error, sqlstate;
    std::vector<std::vector<std::string>> rows; // "\\N" for NULL
    std::vector<std::vector<size_t>> lens;
    uint64_t affected = 0;
    int seq = -1;
    int shard = -1;
};

std::mutex g_mu;
std::atomic<int> g_seq{0};
eng_pg *g_pg;

void on_done(void *ctx, const eng_pg_result *r)
{
    Res *out = static_cast<Res *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    out->status = eng_pg_result_status(r);
    out->error = eng_pg_result_error(r) ? eng_pg_result_error(r) : "";
    out->sqlstate = eng_pg_result_sqlstate(r);
    out->affected = eng_pg_result_affected(r);
    out->rows.clear();
    out->lens.clear();
    for (size_t i = 0; i < eng_pg_result_rows(r); i++) {
        std::vector<std::string> row;
        std::vector<size_t> lens;
        for (size_t j = 0; j < eng_pg_result_cols(r); j++) {
            size_t len = 0;
            const char *v = eng_pg_result_value(r, i, j, &len);
            row.push_back(v ? std::string(v, len) : "\\N");
            lens.push_back(len);
        }
        out->rows.push_back(row);
        out->lens.push_back(lens);
    }
    out->seq = g_seq++;
    eng_shard *self = eng_shard_self();
    out->shard = self ? int(eng_shard_index(self)) : -1;
}

// Runs fn on shard 0's thread and waits for it.
void on_shard0(eng *e, const std::function<void(eng_shard *)> &fn)
{
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    if (eng_shard_index(sh) == 0)
                        (*static_cast<const std::function<void(eng_shard *)> *>(p))(sh);
                },
                const_cast<std::function<void(eng_shard *)> *>(&fn)) == 0);
}

eng_pg_config client_config(const std::string &conninfo)
{
    eng_pg_config c;
    eng_pg_config_defaults(&c);
    static std::string ci;
    ci = conninfo;
    c.conninfo = ci.c_str();
    c.name = "test";
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 200;
    c.connect_timeout_ms = 2000;
    return c;
}

void client_create(eng *e, const eng_pg_config &cfg)
{
    int rc = -1;
    char err[256] = "";
    on_shard0(e, [&](eng_shard *sh) { rc = eng_pg_create(sh, &cfg, &g_pg, err, sizeof(err)); });
    INFO(err);
    REQUIRE(rc == 0);
}

void client_destroy(eng *e)
{
    on_shard0(e, [](eng_shard *) { eng_pg_destroy(g_pg); });
    g_pg = nullptr;
}

eng_pg_stats stats()
{
    eng_pg_stats st;
    eng_pg_stats_get(g_pg, &st);
    return st;
}

bool ready(eng *e)
{
    bool r = false;
    on_shard0(e, [&](eng_shard *) { r = eng_pg_ready(g_pg); });
    return r;
}

int query(eng *e, Res *out, const char *sql, std::vector<const char *> params = {},
          uint32_t timeout_ms = 0, const size_t *lens = nullptr)
{
    int rc = 99;
    on_shard0(e, [&](eng_shard *) {
        rc = eng_pg_query(g_pg, sql, params.data(), lens, params.size(), timeout_ms, on_done, out);
    });
    return rc;
}

bool finished(const Res &r)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return r.status != 1;
}

// Sends sql and waits for its result.
Res run(eng *e, const char *sql, std::vector<const char *> params = {}, uint32_t timeout_ms = 0)
{
    Res r;
    REQUIRE(query(e, &r, sql, params, timeout_ms) == 0);
    REQUIRE(eventually([&] { return finished(r); }, 10000));
    return r;
}

struct Fixture {
    rpdtest::PgServer &pg = rpdtest::pg_server();
    Engine eng;
    explicit Fixture(eng_backend b, const eng_pg_config *cfg = nullptr) : eng(echo_config(b, 2))
    {
        eng_pg_config c = cfg ? *cfg : client_config(pg.conninfo());
        client_create(eng.e, c);
        REQUIRE(eventually([this] { return ready(eng.e); }, 10000));
    }
    ~Fixture()
    {
        if (g_pg)
            client_destroy(eng.e);
    }
};

} // namespace

TEST_CASE("parameters of every kind round-trip", "[pg]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        const char *odd =
            "it's a \"quote\" and a \\backslash\\ \x01\x02\x7f caf\xc3\xa9 \xe2\x82\xac";
        Res r = run(f.eng.e, "SELECT $1::text IS NULL, $2::text, length($2), $3::text, $4::int + 1",
                    {nullptr, "", odd, "41"});
        INFO(r.error);
        REQUIRE(r.status == 0);
        REQUIRE(r.rows.size() == 1);
        CHECK(r.rows[0][0] == "t");
        CHECK(r.rows[0][1] == "");
        CHECK(r.rows[0][2] == "0");
        CHECK(r.rows[0][3] == odd);
        CHECK(r.rows[0][4] == "42");
        CHECK(r.lens[0][3] == strlen(odd));

        // Lengths given: the values need no NUL terminator (copied), a NUL inside fails.
        const char buf[] = "abcXYZ";
        const char *p[] = {buf, buf + 3};
        size_t lens[] = {3, 3};
        Res l;
        REQUIRE(query(f.eng.e, &l, "SELECT $1::text || '-' || $2::text", {p[0], p[1]}, 0, lens) ==
                0);
        REQUIRE(eventually([&] { return finished(l); }));
        REQUIRE(l.status == 0);
        CHECK(l.rows[0][0] == "abc-XYZ");
        const char nul[] = "a\0b";
        size_t nl[] = {3};
        Res n;
        REQUIRE(query(f.eng.e, &n, "SELECT $1::text", {nul}, 0, nl) == 0);
        REQUIRE(eventually([&] { return finished(n); }));
        CHECK(n.status == -EINVAL);
        CHECK(n.error == "parameter 1 holds a NUL byte");

        // Bytes that are not UTF-8: the server refuses them, cleanly.
        Res bad = run(f.eng.e, "SELECT $1::text", {"\xff\xfe"});
        CHECK(bad.status == -EIO);
        CHECK(bad.sqlstate == "22021");

        // SQL NULL in a result; rows affected.
        Res nullr = run(f.eng.e, "SELECT NULL::text, 'x'");
        REQUIRE(nullr.status == 0);
        CHECK(nullr.rows[0][0] == "\\N");
        run(f.eng.e, "CREATE TABLE IF NOT EXISTS pg_params (v text)");
        run(f.eng.e, "DELETE FROM pg_params");
        Res ins = run(f.eng.e, "INSERT INTO pg_params VALUES ($1), ($2), ($3)", {"a", "b", "c"});
        CHECK(ins.status == 0);
        CHECK(ins.affected == 3);
        CHECK(ins.rows.empty());
    }
}

TEST_CASE("a statement is prepared once per connection and reused", "[pg]")
{
    Fixture f(ENG_BACKEND_URING);
    eng_pg_stats before = stats();
    for (int i = 0; i < 10; i++) {
        std::string v = std::to_string(i);
        Res r = run(f.eng.e, "SELECT $1::int * 2", {v.c_str()});
        REQUIRE(r.status == 0);
        CHECK(r.rows[0][0] == std::to_string(i * 2));
    }
    CHECK(stats().prepares - before.prepares == 1);
    run(f.eng.e, "SELECT $1::int * 3", {"1"});
    CHECK(stats().prepares - before.prepares == 2);
    // The server agrees: two named statements on this session.
    Res ps = run(f.eng.e, "SELECT count(*) FROM pg_prepared_statements");
    CHECK(ps.rows[0][0] == "3"); // ...and this one
}

TEST_CASE("100 queries in flight on one connection take one round trip", "[pg]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        run(f.eng.e, "SELECT 1"); // warm: prepared, connection idle
        eng_pg_stats before = stats();
        static Res res[100];
        static std::string vals[100];
        int rcs[100];
        g_seq = 0;
        on_shard0(f.eng.e, [&](eng_shard *) {
            for (int i = 0; i < 100; i++) {
                res[i] = Res();
                vals[i] = std::to_string(i);
                const char *p[] = {vals[i].c_str()};
                rcs[i] = eng_pg_query(g_pg, "SELECT $1::int, pg_backend_pid()", p, nullptr, 1, 0,
                                      on_done, &res[i]);
            }
        });
        for (int rc : rcs)
            REQUIRE(rc == 0);
        REQUIRE(eventually([] { return finished(res[99]); }, 10000));
        std::string pid = res[0].rows[0][1];
        for (int i = 0; i < 100; i++) {
            REQUIRE(res[i].status == 0);
            CHECK(res[i].rows[0][0] == std::to_string(i));
            CHECK(res[i].seq == i); // in order
            CHECK(res[i].shard == 0);
            CHECK(res[i].rows[0][1] == pid); // one connection
        }
        eng_pg_stats after = stats();
        CHECK(after.queries - before.queries == 100);
        CHECK(after.round_trips - before.round_trips == 1);
        CHECK(after.prepares - before.prepares == 1);
        CHECK(after.ok - before.ok == 100);
        CHECK(after.queue_depth == 0);
        CHECK(after.queue_depth_max >= 100);
    }
}

TEST_CASE("a failing statement between good ones affects neither", "[pg]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        run(f.eng.e, "CREATE TABLE IF NOT EXISTS pg_fail (v int)");
        run(f.eng.e, "DELETE FROM pg_fail");
        static Res r[6];
        on_shard0(f.eng.e, [&](eng_shard *) {
            for (Res &x : r)
                x = Res();
            eng_pg_query(g_pg, "INSERT INTO pg_fail VALUES (1)", nullptr, nullptr, 0, 0, on_done,
                         &r[0]);
            eng_pg_query(g_pg, "SELECT 1/0", nullptr, nullptr, 0, 0, on_done, &r[1]);
            eng_pg_query(g_pg, "INSERT INTO pg_fail VALUES (2)", nullptr, nullptr, 0, 0, on_done,
                         &r[2]);
            eng_pg_query(g_pg, "SELEKT broken", nullptr, nullptr, 0, 0, on_done, &r[3]);
            eng_pg_query(g_pg, "SELECT count(*) FROM pg_fail", nullptr, nullptr, 0, 0, on_done,
                         &r[4]);
            eng_pg_query(g_pg, "SELEKT broken", nullptr, nullptr, 0, 0, on_done, &r[5]);
        });
        REQUIRE(eventually([] { return finished(r[5]); }));
        CHECK(r[0].status == 0);
        CHECK(r[1].status == -EIO);
        CHECK(r[1].sqlstate == "22012");
        CHECK(r[1].error.find("division by zero") != std::string::npos);
        CHECK(r[2].status == 0);
        CHECK(r[3].status == -EIO); // the Parse failed
        CHECK(r[3].sqlstate == "42601");
        REQUIRE(r[4].status == 0);
        CHECK(r[4].rows[0][0] == "2"); // both inserts committed
        CHECK(r[5].status == -EIO);
        CHECK(r[5].sqlstate == "42601"); // prepared again, refused again
        CHECK(f.pg.scalar("SELECT count(*) FROM pg_fail") == "2");
        CHECK(run(f.eng.e, "SELECT 7").rows[0][0] == "7");
        CHECK(stats().disconnects == 0);
    }
}

TEST_CASE("a query past its deadline fails; a stuck connection is reset", "[pg]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        run(f.eng.e, "SELECT 1");
        eng_pg_stats before = stats();
        auto t0 = std::chrono::steady_clock::now();
        Res slow = run(f.eng.e, "SELECT pg_sleep(3)", {}, 100);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        CHECK(slow.status == -ETIMEDOUT);
        CHECK(slow.error == "query timed out after 100 ms");
        CHECK(ms < 1500);
        // The shard resets the connection just after the callback: wait for its counter.
        CHECK(eventually([&] { return stats().disconnects - before.disconnects == 1; }));
        eng_pg_stats after = stats();
        CHECK(after.timeouts - before.timeouts == 1);
        CHECK(after.disconnects - before.disconnects == 1); // nothing answered: reset
        // The next query waits for the new connection and succeeds.
        Res next = run(f.eng.e, "SELECT 'again'");
        REQUIRE(next.status == 0);
        CHECK(next.rows[0][0] == "again");
    }
}

TEST_CASE("queries_max pending queries; one more is refused", "[pg]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    eng_pg_config c = client_config(pg.conninfo());
    c.queries_max = 4;
    Fixture f(ENG_BACKEND_URING, &c);
    static Res r[5];
    int rcs[5];
    on_shard0(f.eng.e, [&](eng_shard *) {
        for (int i = 0; i < 5; i++) {
            r[i] = Res();
            rcs[i] =
                eng_pg_query(g_pg, "SELECT pg_sleep(0.05)", nullptr, nullptr, 0, 0, on_done, &r[i]);
        }
    });
    for (int i = 0; i < 4; i++)
        CHECK(rcs[i] == 0);
    CHECK(rcs[4] == -ENOBUFS);
    CHECK(stats().queue_full == 1);
    REQUIRE(eventually([] { return finished(r[3]); }));
    for (int i = 0; i < 4; i++)
        CHECK(r[i].status == 0);
    CHECK(r[4].status == 1); // never ran
    CHECK(stats().queue_depth == 0);
}

TEST_CASE("PostgreSQL stopped and started again during a run", "[pg]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        REQUIRE(run(f.eng.e, "SELECT 1").status == 0);
        f.pg.stop("fast");
        // The first query finds the connection gone, or finds it being reopened and fails
        // when that attempt fails.
        auto t0 = std::chrono::steady_clock::now();
        Res first = run(f.eng.e, "SELECT 1");
        CHECK((first.status == -ECONNRESET || first.status == -ENOTCONN));
        // While it stays down, queries fail fast.
        REQUIRE(eventually([&] { return stats().connect_failures >= 1; }));
        auto t1 = std::chrono::steady_clock::now();
        for (int i = 0; i < 5; i++) {
            Res r = run(f.eng.e, "SELECT 1");
            CHECK(r.status == -ENOTCONN);
            CHECK(r.error.rfind("no connection to PostgreSQL: ", 0) == 0);
        }
        auto fast_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - t1)
                           .count();
        CHECK(fast_ms < 200); // no waiting for timeouts
        (void)t0;
        CHECK(stats().fail_fast >= 5);
        REQUIRE(f.pg.start());
        // Recovers by itself within the backoff (200 ms at most here).
        REQUIRE(eventually([&] { return ready(f.eng.e); }, 5000));
        Res back = run(f.eng.e, "SELECT 'back'");
        REQUIRE(back.status == 0);
        CHECK(back.rows[0][0] == "back");
        CHECK(stats().connects >= 2);
    }
}

TEST_CASE("a server that is not there: fail fast, then connect when it appears", "[pg]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    Engine eng(echo_config(ENG_BACKEND_URING, 1));
    eng_pg_config c = client_config("host=127.0.0.1 port=" + std::to_string(pg.port()) +
                                    " dbname=policyd user=policyd password=policyd");
    pg.stop("fast");
    client_create(eng.e, c);
    REQUIRE(eventually([] { return stats().connect_failures >= 1; }));
    Res r = run(eng.e, "SELECT 1");
    CHECK(r.status == -ENOTCONN);
    CHECK(r.error.find("Connection refused") != std::string::npos);
    REQUIRE(pg.start());
    REQUIRE(eventually([&] { return ready(eng.e); }, 5000));
    CHECK(run(eng.e, "SELECT 1").status == 0);
    client_destroy(eng.e);
}

TEST_CASE("a host name is resolved off the shard and connected to by its address", "[pg][resolve]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    // localhost gives ::1 and 127.0.0.1; the server listens on 127.0.0.1 only: libpq gets
    // both addresses (hostaddr) and the name (host) and goes on to the second.
    eng_pg_config c = client_config("host=localhost port=" + std::to_string(pg.port()) +
                                    " dbname=policyd user=policyd password=policyd");
    for (eng_backend b : {ENG_BACKEND_URING, ENG_BACKEND_EPOLL}) {
        INFO("backend " << b);
        Engine eng(echo_config(b, 1));
        client_create(eng.e, c);
        REQUIRE(eventually([&] { return ready(eng.e); }, 5000));
        Res r = run(eng.e, "SELECT host(inet_server_addr())");
        REQUIRE(r.status == 0);
        CHECK(r.rows.at(0).at(0) == "127.0.0.1");
        CHECK(stats().connects == 1);
        // A new attempt (after the server went away) looks the name up again and connects.
        pg.stop("fast");
        REQUIRE(eventually([] { return stats().connect_failures >= 1; }, 5000));
        REQUIRE(pg.start());
        REQUIRE(eventually([&] { return ready(eng.e); }, 5000));
        CHECK(run(eng.e, "SELECT 1").status == 0);
        client_destroy(eng.e);
    }
}

TEST_CASE("an unresolvable host name: start, fail fast, counted, retried with backoff",
          "[pg][resolve]")
{
    for (eng_backend b : {ENG_BACKEND_URING, ENG_BACKEND_EPOLL}) {
        INFO("backend " << b);
        Engine eng(echo_config(b, 1));
        eng_pg_config c =
            client_config("host=pg-not-yet..invalid port=5432 dbname=x user=x sslmode=disable");
        auto t0 = std::chrono::steady_clock::now();
        client_create(eng.e, c); // creating never waits for the lookup
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
        REQUIRE(eventually([] { return stats().connect_failures >= 1; }, 5000));
        Res r = run(eng.e, "SELECT 1");
        CHECK(r.status == -ENOTCONN);
        CHECK(r.error.find("cannot resolve host pg-not-yet..invalid") != std::string::npos);
        CHECK(stats().fail_fast >= 1);
        // Retried with the backoff (50 ms doubling to 200 ms): more failures come.
        REQUIRE(eventually([] { return stats().connect_failures >= 4; }, 5000));
        CHECK(stats().connects == 0);
        CHECK_FALSE(ready(eng.e));
        client_destroy(eng.e);
        // Destroyed while a lookup may be in flight: the lookup is abandoned, nothing waits.
        client_create(eng.e, c);
        client_destroy(eng.e);
    }
}

TEST_CASE("several connections share the load", "[pg]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    eng_pg_config c = client_config(pg.conninfo());
    c.conn_count = 3;
    Fixture f(ENG_BACKEND_EPOLL, &c);
    REQUIRE(eventually([&] { return stats().connects == 3; }, 5000));
    static Res r[30];
    on_shard0(f.eng.e, [&](eng_shard *) {
        for (Res &x : r) {
            x = Res();
            eng_pg_query(g_pg, "SELECT pg_backend_pid()", nullptr, nullptr, 0, 0, on_done, &x);
        }
    });
    REQUIRE(eventually([] {
        for (Res &x : r)
            if (!finished(x))
                return false;
        return true;
    }));
    std::set<std::string> pids;
    for (Res &x : r) {
        REQUIRE(x.status == 0);
        pids.insert(x.rows[0][0]);
    }
    CHECK(pids.size() == 3);
}

TEST_CASE("drain waits for answers; destroy fails what is left", "[pg]")
{
    Fixture f(ENG_BACKEND_URING);
    static Res r[3];
    int pending = -1;
    on_shard0(f.eng.e, [&](eng_shard *) {
        for (Res &x : r) {
            x = Res();
            eng_pg_query(g_pg, "SELECT pg_sleep(0.1), 'drained'", nullptr, nullptr, 0, 0, on_done,
                         &x);
        }
        pending = eng_pg_drain(g_pg, 3000);
    });
    CHECK(pending == 3);
    for (Res &x : r) {
        CHECK(x.status == 0); // done ran inside drain
        REQUIRE(x.rows.size() == 1);
        CHECK(x.rows[0][1] == "drained");
    }
    // A drain that runs out of time fails the rest.
    on_shard0(f.eng.e, [&](eng_shard *) {
        r[0] = Res();
        eng_pg_query(g_pg, "SELECT pg_sleep(2)", nullptr, nullptr, 0, 0, on_done, &r[0]);
        eng_pg_drain(g_pg, 100);
    });
    CHECK(r[0].status == -ETIMEDOUT);
    // Destroy runs done for every query still pending.
    on_shard0(f.eng.e, [&](eng_shard *) {
        r[1] = Res();
        eng_pg_query(g_pg, "SELECT 1", nullptr, nullptr, 0, 0, on_done, &r[1]);
        eng_pg_destroy(g_pg);
        g_pg = nullptr;
    });
    CHECK(r[1].status == -ESHUTDOWN);
}

TEST_CASE("blocking helpers: conninfo check and exec_sync", "[pg]")
{
    rpdtest::PgServer &pg = rpdtest::pg_server();
    char err[256] = "";
    CHECK(eng_pg_conninfo_check("host=x dbname='a b'", err, sizeof(err)) == 0);
    CHECK(eng_pg_conninfo_check("hots=x", err, sizeof(err)) == -1);
    CHECK(std::string(err) == "invalid connection option \"hots\"");
    CHECK(eng_pg_conninfo_check("host='x", err, sizeof(err)) == -1);

    std::string ci = pg.conninfo();
    REQUIRE(eng_pg_exec_sync(ci.c_str(),
                             "CREATE TABLE IF NOT EXISTS pg_sync (k text, v int);"
                             "DELETE FROM pg_sync",
                             nullptr, 0, 5000, nullptr, nullptr, err, sizeof(err)) == 0);
    const char *p[] = {"a", "1"};
    REQUIRE(eng_pg_exec_sync(ci.c_str(), "INSERT INTO pg_sync VALUES ($1, $2)", p, 2, 5000, nullptr,
                             nullptr, err, sizeof(err)) == 0);
    Res r;
    REQUIRE(eng_pg_exec_sync(ci.c_str(), "SELECT k, v FROM pg_sync", nullptr, 0, 5000, on_done, &r,
                             err, sizeof(err)) == 0);
    CHECK(r.rows == std::vector<std::vector<std::string>>{{"a", "1"}});
    CHECK(eng_pg_exec_sync(ci.c_str(), "SELECT nope FROM pg_sync", nullptr, 0, 5000, nullptr,
                           nullptr, err, sizeof(err)) == -1);
    CHECK(std::string(err).find("column \"nope\" does not exist") != std::string::npos);
    std::string down = "host=127.0.0.1 port=" + std::to_string(rpdtest::free_port()) + " dbname=x";
    CHECK(eng_pg_exec_sync(down.c_str(), "SELECT 1", nullptr, 0, 2000, nullptr, nullptr, err,
                           sizeof(err)) == -1);
    CHECK(std::string(err).find("Connection refused") != std::string::npos);
}

TEST_CASE("bad client settings are refused", "[pg]")
{
    Engine eng(echo_config(ENG_BACKEND_EPOLL, 1));
    eng_pg_config c = client_config("host=127.0.0.1");
    char err[256] = "";
    int rc = 0;
    eng_pg *pg = nullptr;
    c.conn_count = ENG_PG_CONNS_MAX + 1;
    on_shard0(eng.e, [&](eng_shard *sh) { rc = eng_pg_create(sh, &c, &pg, err, sizeof(err)); });
    CHECK(rc == -EINVAL);
    CHECK(std::string(err) == "bad PostgreSQL client setting: conn_count");
    c = client_config("nonsense");
    on_shard0(eng.e, [&](eng_shard *sh) { rc = eng_pg_create(sh, &c, &pg, err, sizeof(err)); });
    CHECK(rc == -EINVAL);
    CHECK(std::string(err).find("missing \"=\"") != std::string::npos);
}
