// sql_rig.h: what the Sql connection's tests share (sql_test.cpp, sql_maria_test.cpp): a
// server built from configuration text whose Sql connections run on the shards of a real
// engine (Rig), queries from a chosen shard (run, submit), pol_sql_exec_sync (sync_err), and
// the results as strings (Res; "\\N" for NULL).
#ifndef RPD_TEST_SQL_RIG_H
#define RPD_TEST_SQL_RIG_H

#include "../engine/harness.h"

extern "C" {
#include "pol/sql.h"
#include "server.h"
#include "sql_conn.h"
}

#include <mutex>

using namespace th;

namespace
{

struct Res {
    int status = 1; // 1: done has not run
    std::string error;
    std::vector<std::vector<std::string>> rows; // "\\N" for NULL
    uint64_t affected = 0;
    int shard = -1;
};

std::mutex g_mu;
pol_server *g_srv;

inline void on_done(void *ctx, const pol_sql_result *r)
{
    Res *out = static_cast<Res *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    out->status = r->status;
    out->error = r->error ? r->error : "";
    out->affected = r->rows_affected;
    out->rows.clear();
    for (size_t i = 0; i < r->row_count; i++) {
        std::vector<std::string> row;
        for (size_t j = 0; j < r->col_count; j++) {
            size_t len = 0;
            const char *v = pol_sql_value(r, i, j, &len);
            row.push_back(v ? std::string(v, len) : "\\N");
        }
        out->rows.push_back(row);
    }
    eng_shard *self = eng_shard_self();
    out->shard = self ? int(eng_shard_index(self)) : -1;
}

inline bool finished(const Res &r)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return r.status != 1;
}

// The engine app: each shard starts and stops the server's Sql connections, as exec.c does.
inline int app_start(eng_shard *sh, void *, void **app)
{
    *app = nullptr;
    for (uint32_t i = 0; i < g_srv->conn_count; i++) {
        pol_conn_def *d = &g_srv->conns[i];
        char err[256] = "";
        if (d->opened && d->ops->shard_start && d->ops->shard_start(d, sh, err, sizeof(err))) {
            fprintf(stderr, "shard_start: %s\n", err);
            return -EIO;
        }
    }
    return 0;
}

inline void app_stop(eng_shard *sh, void *)
{
    for (uint32_t i = g_srv->conn_count; i-- > 0;) {
        pol_conn_def *d = &g_srv->conns[i];
        if (d->opened && d->ops->shard_stop)
            d->ops->shard_stop(d, sh);
    }
}

eng_app_ops g_ops;

inline std::string load(const std::string &conns, pol_server **out)
{
    std::string text = conns + "\n<VirtualHost 12345>\n name = test\n <Plugin a>\n"
                               "  module = \"Action\"\n  action = \"dunno\"\n"
                               " </Plugin>\n</VirtualHost>\n";
    char err[1024] = "";
    int rc = pol_server_from_text("test.conf", text.c_str(), out, err, sizeof(err));
    return rc == 0 ? "" : err;
}

inline pol_sql *lookup(const char *name, std::string *err = nullptr)
{
    pol_plugin p{};
    p.srv = g_srv;
    char e[256] = "";
    pol_sql *db = pol_sql_lookup(&p, name, e, sizeof(e));
    if (err)
        *err = e;
    return db;
}

// A server and an engine running its connections on `shards` shards.
struct Rig {
    std::unique_ptr<Engine> eng;
    explicit Rig(const std::string &conns, unsigned shards = 2)
    {
        std::string err = load(conns, &g_srv);
        INFO(err);
        REQUIRE(err.empty());
        eng_config cfg = echo_config(ENG_BACKEND_URING, shards);
        g_ops = echo_ops;
        g_ops.shard_start = app_start;
        g_ops.shard_stop = app_stop;
        cfg.ops = &g_ops;
        eng = std::make_unique<Engine>(cfg);
    }
    ~Rig()
    {
        eng.reset(); // shards stop their connections
        pol_server_free(g_srv);
        g_srv = nullptr;
    }
    // Runs fn on shard `idx`'s thread.
    void on(unsigned idx, const std::function<void(eng_shard *)> &fn)
    {
        struct C {
            unsigned idx;
            const std::function<void(eng_shard *)> *fn;
        } c{idx, &fn};
        REQUIRE(eng_run_on_shards(
                    eng->e,
                    [](eng_shard *sh, void *, void *p) {
                        C *c = static_cast<C *>(p);
                        if (eng_shard_index(sh) == c->idx)
                            (*c->fn)(sh);
                    },
                    &c) == 0);
    }
    int submit(unsigned shard, pol_sql *db, Res *out, const char *sql,
               std::vector<const char *> params = {}, const size_t *lens = nullptr,
               uint32_t timeout_ms = 0)
    {
        int rc = 99;
        on(shard, [&](eng_shard *sh) {
            rc = pol_sql_query(sh, db, sql, params.data(), lens, params.size(), timeout_ms, on_done,
                               out);
        });
        return rc;
    }
    Res run(unsigned shard, pol_sql *db, const char *sql, std::vector<const char *> params = {},
            const size_t *lens = nullptr, uint32_t timeout_ms = 0)
    {
        Res r;
        REQUIRE(submit(shard, db, &r, sql, params, lens, timeout_ms) == 0);
        REQUIRE(eventually([&] { return finished(r); }, 15000));
        return r;
    }
};

inline std::string sync_err(pol_sql *db, const char *sql, std::vector<const char *> params = {},
                     std::vector<std::vector<std::string>> *rows = nullptr)
{
    char err[512] = "";
    auto each = [](void *ctx, const pol_sql_result *r, size_t row) {
        auto *out = static_cast<std::vector<std::vector<std::string>> *>(ctx);
        std::vector<std::string> v;
        for (size_t j = 0; j < r->col_count; j++) {
            const char *s = pol_sql_value(r, row, j, nullptr);
            v.push_back(s ? s : "\\N");
        }
        out->push_back(v);
    };
    int rc = pol_sql_exec_sync(db, sql, params.data(), params.size(), rows ? +each : nullptr, rows,
                               err, sizeof(err));
    return rc == 0 ? "" : (err[0] ? err : "failed");
}

inline std::string tmpdir()
{
    char tmpl[] = "/tmp/rpd-sql-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    return tmpl;
}

inline std::string conn_block(const std::string &name, const std::string &dsn,
                       const std::string &extra = "")
{
    return "<Connection " + name + ">\n module = \"Sql\"\n dsn = \"" + dsn + "\"\n" + extra +
           "</Connection>";
}

// The values every backend must carry unchanged (lengths given; the last holds a NUL byte,
// which only SQLite accepts).
const std::string k_odd = "it's a \"quote\", a \\backslash\\ and \x01\x02\x7f caf\xc3\xa9";

} // namespace

#endif
