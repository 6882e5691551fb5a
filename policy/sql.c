/*
 * sql.c: the Sql connection (pol/sql.h, sql_conn.h): built from a <Connection NAME> block at
 * start-up, a client per shard, and the request path of pol_sql_query.
 *
 * open (main thread) parses the DSN (sql_dsn.c) and, for PostgreSQL, checks the conninfo (a
 * host name is resolved by eng_pg off the shard on each connection attempt, never here); for
 * SQLite it opens the database once (a bad path is a start-up error) and creates the worker
 * pool (its threads start with the first shard, after the daemon forked). shard_start gives
 * each shard its pool of query slots and, for PostgreSQL, its own
 * eng_pg client (its own connections) or, for SQLite, its completion path from the workers.
 * shard_stop (after the plugins' shard_stop) completes what is still out, so that done runs
 * for every accepted query: PostgreSQL waits up to the query timeout for answers, SQLite for
 * the running jobs (queued ones fail with "cancelled"). MySQL/MariaDB (sql_maria.c) works as
 * PostgreSQL does, on its own eng_maria client per shard, with `?` kept as it is.
 *
 * The request path allocates nothing: a query takes a slot from the shard's pool (queue_max,
 * -ENOBUFS beyond), PostgreSQL statements are translated from ? to $n into a per-shard buffer
 * and handed to eng_pg (which copies them), SQLite statements and values are copied into the
 * slot (inline up to POL_SQL_OP_INLINE_BYTES, else one malloc) for the worker.
 */
#include "pol/sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "eng/maria.h"
#include "eng/pg.h"
#include "eng/work.h"
#include "config.h"
#include "metrics.h"
#include "sql_int.h"

#define SQL_TIMEOUT_MS_MAX 10000u /* default deadline cap */
#define SQL_PG_CONNECT_TIMEOUT_MS 5000u
#define SQL_SYNC_TIMEOUT_MS 30000u /* exec_sync: connect + statement */

/* ---------------------------------------------------------------------------------------------
 * Options
 */

/* A non-negative integer option of the block in [min, max], or dflt when absent. */
static int opt_uint(const struct pol_conn_def *def, const char *name, uint32_t dflt, uint32_t min,
                    uint32_t max, uint32_t *out, char *err, size_t err_len)
{
    const struct pol_cfg_node *o = pol_cfg_option(def->block, name);
    *out = dflt;
    if (!o)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long v = o->value && *o->value ? strtoul(o->value, &end, 10) : 0;
    if (!o->value || !*o->value || *end || errno || o->value[0] == '-' || v < min || v > max) {
        snprintf(err, err_len, "%s:%u: %s must be a whole number from %u to %u", o->file, o->line,
                 name, min, max);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int options_read(const struct pol_server *s, const struct pol_conn_def *def,
                        struct pol_sql *db, char *err, size_t err_len)
{
    uint32_t rt = s->g.request_timeout_s;
    uint32_t dflt = rt ? rt * 750u : SQL_TIMEOUT_MS_MAX; /* 3/4 of request_timeout */
    if (dflt > SQL_TIMEOUT_MS_MAX || (rt && rt > SQL_TIMEOUT_MS_MAX))
        dflt = SQL_TIMEOUT_MS_MAX;
    uint32_t conns, workers;
    if (opt_uint(def, "query_timeout_ms", dflt, 1, 3600000, &db->timeout_ms, err, err_len) ||
        opt_uint(def, "queue_max", 1024, 1, 1u << 20, &db->queue_max, err, err_len) ||
        opt_uint(def, "connections", 1, 1, ENG_PG_CONNS_MAX, &conns, err, err_len) ||
        opt_uint(def, "workers", 2, 1, ENG_WORK_THREADS_MAX, &workers, err, err_len) ||
        opt_uint(def, "statement_cache", 256, 0, 65536, &db->stmt_cache, err, err_len))
        return -1;
    db->pg_conns = conns;
    db->workers = workers;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Opening (main thread)
 */

/* PostgreSQL: the DSN's conninfo. A host name is not resolved here: eng_pg resolves it off
 * the shard on each connection attempt (so a name that does not resolve yet, e.g. a
 * Kubernetes Service created later, does not refuse start) and hands libpq the addresses. */
static int pg_conninfo(struct pol_sql *db, char *err, size_t err_len)
{
    db->conninfo = malloc(POL_SQL_CONNINFO_BYTES);
    if (!db->conninfo) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    snprintf(db->conninfo, POL_SQL_CONNINFO_BYTES, "%s", db->dsn->conninfo);
    return eng_pg_conninfo_check(db->conninfo, err, err_len);
}

static int lite_pool(struct pol_sql *db, char *err, size_t err_len)
{
    if (pol_sql_lite_open(db, err, err_len) != 0)
        return -1;
    struct eng_work_config wc;
    eng_work_config_defaults(&wc);
    wc.thread_count = db->workers;
    wc.queue_max = db->queue_max;
    wc.name = "sqlite";
    if (eng_work_create(&wc, &db->pool) != 0) {
        snprintf(err, err_len, "cannot create the SQLite worker pool");
        return -1;
    }
    return 0;
}

static void sql_close(struct pol_conn_def *def);

static int sql_open(struct pol_server *s, struct pol_conn_def *def, char *err, size_t err_len)
{
    struct pol_sql *db = calloc(1, sizeof(*db));
    if (!db || !(db->dsn = malloc(sizeof(*db->dsn)))) {
        free(db);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    def->impl = db;
    db->name = def->name;
    db->file = def->file;
    db->line = def->line;
    const char *dsn = pol_cfg_value(def->block, "dsn", NULL);
    if (!dsn) {
        snprintf(err, err_len, "no dsn defined for connection %s", def->name);
        goto fail;
    }
    if (options_read(s, def, db, err, err_len) != 0 ||
        pol_sql_dsn_parse(dsn, pol_cfg_value(def->block, "user", ""),
                          pol_cfg_value(def->block, "password", ""), db->dsn, err, err_len) != 0)
        goto fail;
    if (db->dsn->warning[0])
        pol_server_warn(s, def->file, def->line, "connection %s: %s", def->name, db->dsn->warning);
    int rc;
    if (db->dsn->driver == POL_SQL_PG)
        rc = pg_conninfo(db, err, err_len);
    else if (db->dsn->driver == POL_SQL_MYSQL)
        rc = pol_sql_maria_open(db, pol_cfg_option(def->block, "connections") != NULL, err,
                                err_len);
    else
        rc = lite_pool(db, err, err_len);
    if (rc != 0)
        goto fail;
    return 0;
fail:
    sql_close(def);
    return -1;
}

static void sql_close(struct pol_conn_def *def)
{
    struct pol_sql *db = def->impl;
    if (!db)
        return;
    eng_work_destroy(db->pool); /* joins the workers before their connections close */
    if (db->dsn && db->dsn->driver == POL_SQL_SQLITE)
        pol_sql_lite_close(db);
    pol_sql_maria_close(db);
    free(db->conninfo);
    free(db->dsn);
    free(db);
    def->impl = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Shards
 */

static void shard_free(struct sql_shard *ss)
{
    free(ss->ops);
    free(ss->xlate);
    free(ss);
}

/* GET /metrics (metrics.h per-shard sources), by connection: ringpolicyd_sql_* for every
 * driver, ringpolicyd_pg_* from each shard's eng_pg client, ringpolicyd_work_* from the SQLite
 * worker pool (shared by the shards: reported by shard 0 alone). */
enum { SQM_QUERIES, SQM_FAILED, SQM_TIMEOUTS, SQM_QUEUE_FULL, SQM_QUEUE_DEPTH, SQM_QUEUE_MAX,
       SQM_COUNT };
static const struct pol_metrics_field sql_fields[SQM_COUNT] = {
    [SQM_QUERIES] = {"ringpolicyd_sql_queries_total", "Sql queries accepted.", false, false},
    [SQM_FAILED] = {"ringpolicyd_sql_errors_total", "Sql queries that failed (any reason).", false,
                    false},
    [SQM_TIMEOUTS] = {"ringpolicyd_sql_timeouts_total", "Sql queries past their deadline.", false,
                      false},
    [SQM_QUEUE_FULL] = {"ringpolicyd_sql_queue_full_total",
                        "Sql queries refused: queue_max queries already out on the shard.", false,
                        false},
    [SQM_QUEUE_DEPTH] = {"ringpolicyd_sql_queue_depth", "Sql queries queued or in flight now.",
                         true, false},
    [SQM_QUEUE_MAX] = {"ringpolicyd_sql_queue_depth_max",
                       "Most Sql queries queued or in flight at once on a shard.", true, true},
};
static const struct pol_metrics_source_desc sql_metrics = {"connection", sql_fields, SQM_COUNT};

enum { PGM_ROUND_TRIPS, PGM_ERRORS, PGM_TIMEOUTS, PGM_CONNECTS, PGM_CONNECT_FAILURES,
       PGM_RECONNECTS, PGM_QUEUE_DEPTH, PGM_UP, PGM_COUNT };
static const struct pol_metrics_field pg_fields[PGM_COUNT] = {
    [PGM_ROUND_TRIPS] = {"ringpolicyd_pg_round_trips_total",
                         "PostgreSQL pipeline round trips (nothing in flight to in flight).",
                         false, false},
    [PGM_ERRORS] = {"ringpolicyd_pg_errors_total",
                    "PostgreSQL queries refused by the server or failed by a lost connection.",
                    false, false},
    [PGM_TIMEOUTS] = {"ringpolicyd_pg_timeouts_total", "PostgreSQL queries past their deadline.",
                      false, false},
    [PGM_CONNECTS] = {"ringpolicyd_pg_connects_total", "PostgreSQL connections established.",
                      false, false},
    [PGM_CONNECT_FAILURES] = {"ringpolicyd_pg_connect_failures_total",
                              "PostgreSQL connection attempts that failed.", false, false},
    [PGM_RECONNECTS] = {"ringpolicyd_pg_disconnects_total",
                        "Established PostgreSQL connections that broke or were reset.", false,
                        false},
    [PGM_QUEUE_DEPTH] = {"ringpolicyd_pg_queue_depth",
                         "PostgreSQL queries pending or in flight now.", true, false},
    [PGM_UP] = {"ringpolicyd_pg_connections_up",
                "PostgreSQL connections established now (all shards).", true, false},
};
static const struct pol_metrics_source_desc pg_metrics = {"connection", pg_fields, PGM_COUNT};

enum { WKM_SUBMITTED, WKM_COMPLETED, WKM_QUEUE_FULL, WKM_QUEUE_DEPTH, WKM_RUNNING, WKM_RUN_US,
       WKM_COUNT };
static const struct pol_metrics_field work_fields[WKM_COUNT] = {
    [WKM_SUBMITTED] = {"ringpolicyd_work_jobs_submitted_total",
                       "Jobs handed to the SQLite worker threads.", false, false},
    [WKM_COMPLETED] = {"ringpolicyd_work_jobs_completed_total",
                       "Jobs the SQLite worker threads completed.", false, false},
    [WKM_QUEUE_FULL] = {"ringpolicyd_work_queue_full_total",
                        "Jobs refused: the worker queue was full.", false, false},
    [WKM_QUEUE_DEPTH] = {"ringpolicyd_work_queue_depth", "Jobs waiting for a worker now.", true,
                         false},
    [WKM_RUNNING] = {"ringpolicyd_work_jobs_running", "Jobs on a worker now.", true, false},
    [WKM_RUN_US] = {"ringpolicyd_work_run_microseconds_total",
                    "Time the workers spent running jobs.", false, false},
};
static const struct pol_metrics_source_desc work_metrics = {"connection", work_fields, WKM_COUNT};

static void sql_snap(void *ctx, uint64_t *v)
{
    const struct pol_sql_stats *st = ctx; /* the shard's: &sql_shard.stats */
    v[SQM_QUERIES] = st->queries;
    v[SQM_FAILED] = st->failed;
    v[SQM_TIMEOUTS] = st->timeouts;
    v[SQM_QUEUE_FULL] = st->queue_full;
    v[SQM_QUEUE_DEPTH] = st->queue_depth;
    v[SQM_QUEUE_MAX] = st->queue_depth_max;
}

static void pg_snap(void *ctx, uint64_t *v)
{
    const struct sql_shard *ss = ctx;
    struct eng_pg_stats ps;
    if (!ss->pg)
        return;
    eng_pg_stats_get(ss->pg, &ps);
    v[PGM_ROUND_TRIPS] = ps.round_trips;
    v[PGM_ERRORS] = ps.errors + ps.conn_lost;
    v[PGM_TIMEOUTS] = ps.timeouts;
    v[PGM_CONNECTS] = ps.connects;
    v[PGM_CONNECT_FAILURES] = ps.connect_failures;
    v[PGM_RECONNECTS] = ps.disconnects;
    v[PGM_QUEUE_DEPTH] = ps.queue_depth;
    v[PGM_UP] = ps.connects > ps.disconnects ? ps.connects - ps.disconnects : 0;
}

static void work_snap(void *ctx, uint64_t *v)
{
    const struct sql_shard *ss = ctx;
    struct eng_work_stats ws;
    eng_work_pool_stats(ss->db->pool, &ws);
    v[WKM_SUBMITTED] = ws.submitted;
    v[WKM_COMPLETED] = ws.completed;
    v[WKM_QUEUE_FULL] = ws.queue_full;
    v[WKM_QUEUE_DEPTH] = ws.queue_depth;
    v[WKM_RUNNING] = ws.running;
    v[WKM_RUN_US] = ws.run_us_total;
}

static void sql_metrics_add(struct sql_shard *ss, unsigned idx)
{
    const struct pol_sql *db = ss->db;
    int rc = pol_metrics_source_add(&sql_metrics, db->name, sql_snap, &ss->stats);
    if (rc == 0 && ss->pg)
        rc = pol_metrics_source_add(&pg_metrics, db->name, pg_snap, ss);
    else if (rc == 0 && db->pool && idx == 0)
        rc = pol_metrics_source_add(&work_metrics, db->name, work_snap, ss);
    if (rc != 0)
        eng_log(ENG_LOG_WARNING, "connection %s: no room for its metrics on shard %u", db->name,
                idx);
}

static int sql_shard_start(struct pol_conn_def *def, struct eng_shard *sh, char *err,
                           size_t err_len)
{
    struct pol_sql *db = def->impl;
    unsigned idx = eng_shard_index(sh);
    if (idx >= POL_SQL_SHARDS_MAX) {
        snprintf(err, err_len, "more than %u shards", POL_SQL_SHARDS_MAX);
        return -1;
    }
    struct sql_shard *ss = calloc(1, sizeof(*ss));
    if (!ss || !(ss->ops = calloc(db->queue_max, sizeof(*ss->ops)))) {
        free(ss);
        snprintf(err, err_len, "out of memory for %u queries", db->queue_max);
        return -1;
    }
    ss->db = db;
    ss->sh = sh;
    for (uint32_t i = db->queue_max; i-- > 0;) {
        ss->ops[i].ss = ss;
        ss->ops[i].next_free = ss->free_ops;
        ss->free_ops = &ss->ops[i];
    }
    int rc;
    if (db->dsn->driver == POL_SQL_PG) {
        struct eng_pg_config pc;
        eng_pg_config_defaults(&pc);
        pc.conninfo = db->conninfo;
        pc.name = db->name;
        pc.conn_count = db->pg_conns;
        pc.queries_max = db->queue_max;
        pc.timeout_ms = db->timeout_ms;
        pc.connect_timeout_ms = SQL_PG_CONNECT_TIMEOUT_MS;
        pc.stmt_cache_max = db->stmt_cache;
        ss->xlate = malloc(POL_SQL_STATEMENT_BYTES_MAX);
        rc = ss->xlate ? eng_pg_create(sh, &pc, &ss->pg, err, err_len) : -ENOMEM;
    } else if (db->dsn->driver == POL_SQL_MYSQL) {
        rc = pol_sql_maria_shard_start(ss, err, err_len);
    } else {
        rc = eng_work_shard_attach(db->pool, sh);
        if (rc < 0)
            snprintf(err, err_len, "cannot attach to the SQLite workers: %s", strerror(-rc));
    }
    if (rc < 0) {
        if (!err[0])
            snprintf(err, err_len, "out of memory");
        shard_free(ss);
        return -1;
    }
    db->shards[idx] = ss;
    sql_metrics_add(ss, idx);
    return 0;
}

/* One line per connection and shard at stop: what ran, and the round trips it took. */
static void shard_log(const struct pol_sql *db, unsigned idx, const struct sql_shard *ss)
{
    struct pol_sql_stats s = ss->stats;
    if (ss->pg) {
        struct eng_pg_stats ps;
        eng_pg_stats_get(ss->pg, &ps);
        s.round_trips += ps.round_trips;
        s.reconnects += ps.connects > db->pg_conns ? ps.connects - db->pg_conns : 0;
    }
    if (ss->maria) {
        struct eng_maria_stats ms;
        eng_maria_stats_get(ss->maria, &ms);
        unsigned conns = pol_sql_maria_conns(db);
        s.round_trips += ms.round_trips;
        s.reconnects += ms.connects > conns ? ms.connects - conns : 0;
    }
    eng_log(ENG_LOG_NOTICE,
            "sql %s shard %u: %llu queries, %llu ok, %llu failed (%llu timed out, %llu cancelled "
            "by the stop), %llu refused (queue full), %llu %s, %llu reconnects, queue depth max "
            "%llu",
            db->name, idx, (unsigned long long)s.queries, (unsigned long long)s.ok,
            (unsigned long long)s.failed, (unsigned long long)s.timeouts,
            (unsigned long long)s.cancelled, (unsigned long long)s.queue_full,
            (unsigned long long)s.round_trips, ss->pg || ss->maria ? "round trips" : "jobs",
            (unsigned long long)s.reconnects, (unsigned long long)s.queue_depth_max);
}

static void sql_shard_stop(struct pol_conn_def *def, struct eng_shard *sh)
{
    struct pol_sql *db = def->impl;
    unsigned idx = eng_shard_index(sh);
    struct sql_shard *ss = db->shards[idx];
    if (!ss)
        return;
    pol_metrics_source_remove(&ss->stats);
    pol_metrics_source_remove(ss);
    if (ss->pg) {
        /* Answers still on their way get their done; the rest fails with -ESHUTDOWN. */
        eng_pg_drain(ss->pg, db->timeout_ms);
        shard_log(db, idx, ss);
        eng_pg_destroy(ss->pg);
        ss->pg = NULL;
    } else if (ss->maria) {
        eng_maria_drain(ss->maria, db->timeout_ms);
        shard_log(db, idx, ss);
        eng_maria_destroy(ss->maria);
        ss->maria = NULL;
    } else {
        eng_work_shard_detach(db->pool, sh);
        shard_log(db, idx, ss);
    }
    db->shards[idx] = NULL;
    shard_free(ss);
}

/* GET /readyz: SQLite is ready once opened (open fails start-up otherwise); PostgreSQL when a
 * running shard has a connection established now (its client's connects minus disconnects,
 * read with relaxed loads: no I/O). Any thread. */
static int sql_ready(const struct pol_conn_def *def, char *why, size_t why_len)
{
    const struct pol_sql *db = def->impl;
    if (db->dsn->driver == POL_SQL_SQLITE)
        return 0;
    unsigned running = 0;
    for (unsigned i = 0; i < POL_SQL_SHARDS_MAX; i++) {
        const struct sql_shard *ss = __atomic_load_n(&db->shards[i], __ATOMIC_ACQUIRE);
        if (!ss || (!ss->pg && !ss->maria))
            continue;
        running++;
        uint64_t up = 0, down = 0;
        if (ss->pg) {
            struct eng_pg_stats ps;
            eng_pg_stats_get(ss->pg, &ps);
            up = ps.connects, down = ps.disconnects;
        } else {
            struct eng_maria_stats ms;
            eng_maria_stats_get(ss->maria, &ms);
            up = ms.connects, down = ms.disconnects;
        }
        if (up > down)
            return 0;
    }
    snprintf(why, why_len, !running ? "not started on any shard"
                           : db->dsn->driver == POL_SQL_PG ? "no PostgreSQL connection established"
                                                           : "no MySQL connection established");
    return -1;
}

const struct pol_conn_ops pol_sql_conn_ops = {
    .module = "Sql",
    .open = sql_open,
    .shard_start = sql_shard_start,
    .shard_stop = sql_shard_stop,
    .close = sql_close,
    .ready = sql_ready,
};

/* ---------------------------------------------------------------------------------------------
 * Lookup and small accessors
 */

struct pol_sql *pol_sql_lookup(struct pol_plugin *p, const char *conn_name, char *err,
                               size_t err_len)
{
    const struct pol_conn_def *def = pol_server_conn(p->srv, conn_name);
    if (!def) {
        snprintf(err, err_len, "no connection %s configured!", conn_name);
        return NULL;
    }
    if (def->ops != &pol_sql_conn_ops || !def->opened) {
        snprintf(err, err_len, "connection %s is not a Sql connection", conn_name);
        return NULL;
    }
    return def->impl;
}

enum pol_sql_driver pol_sql_driver_of(const struct pol_sql *db)
{
    return db->dsn->driver;
}

const char *pol_sql_name(const struct pol_sql *db)
{
    return db->name;
}

size_t pol_sql_quote_ident(const struct pol_sql *db, const char *name, char *out, size_t out_len)
{
    return pol_sql_ident_quote(db->dsn->driver, name, strlen(name), out, out_len);
}

const char *pol_sql_value(const struct pol_sql_result *res, size_t row, size_t col, size_t *len)
{
    const struct sql_view *v = (const struct sql_view *)(const void *)res;
    if (v->pg)
        return eng_pg_result_value(v->pg, row, col, len);
    if (v->maria)
        return eng_maria_result_value(v->maria, row, col, len);
    if (v->rows)
        return pol_sql_rows_value(v->rows, row, col, len);
    if (len)
        *len = 0;
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Queries (shard threads)
 */

#define SQL_STAT_ADD(ss, field, n)                                                                 \
    __atomic_store_n(&(ss)->stats.field, (ss)->stats.field + (n), __ATOMIC_RELAXED)
#define SQL_STAT_INC(ss, field) SQL_STAT_ADD(ss, field, 1)

static struct sql_op *op_get(struct sql_shard *ss)
{
    struct sql_op *op = ss->free_ops;
    if (!op)
        return NULL;
    ss->free_ops = op->next_free;
    op->next_free = NULL;
    SQL_STAT_INC(ss, queue_depth);
    if (ss->stats.queue_depth > ss->stats.queue_depth_max)
        __atomic_store_n(&ss->stats.queue_depth_max, ss->stats.queue_depth, __ATOMIC_RELAXED);
    return op;
}

static void op_put(struct sql_shard *ss, struct sql_op *op)
{
    pol_sql_rows_free(&op->rows);
    free(op->heap);
    op->heap = NULL;
    op->next_free = ss->free_ops;
    ss->free_ops = op;
    SQL_STAT_ADD(ss, queue_depth, (uint64_t)-1);
}

static void op_finish(struct sql_op *op, struct sql_view *v)
{
    struct sql_shard *ss = op->ss;
    if (v->pub.status == 0) {
        SQL_STAT_INC(ss, ok);
    } else {
        SQL_STAT_INC(ss, failed);
        if (v->pub.status == -ETIMEDOUT)
            SQL_STAT_INC(ss, timeouts);
        else if (v->pub.status == -ESHUTDOWN)
            SQL_STAT_INC(ss, cancelled);
    }
    op->done(op->ctx, &v->pub);
    op_put(ss, op);
}

void pol_sql_op_finish(struct sql_op *op, struct sql_view *v)
{
    op_finish(op, v);
}

static void pg_done(void *ctx, const struct eng_pg_result *r)
{
    struct sql_op *op = ctx;
    struct sql_view v = {.pg = r};
    v.pub.status = eng_pg_result_status(r);
    v.pub.error = eng_pg_result_error(r);
    v.pub.row_count = eng_pg_result_rows(r);
    v.pub.col_count = eng_pg_result_cols(r);
    v.pub.rows_affected = eng_pg_result_affected(r);
    op_finish(op, &v);
}

static void lite_done(struct eng_shard *sh, struct eng_work *w)
{
    (void)sh;
    struct sql_op *op = (struct sql_op *)(void *)w;
    struct sql_view v = {.rows = &op->rows};
    if (w->status != 0) { /* never ran: the shard or the pool is stopping */
        op->status = -ESHUTDOWN;
        snprintf(op->err, sizeof(op->err), "cancelled: the SQLite workers are stopping");
    } else {
        SQL_STAT_INC(op->ss, round_trips); /* a job that ran */
    }
    v.pub.status = op->status;
    v.pub.error = op->status ? op->err : NULL;
    v.pub.row_count = op->status ? 0 : op->rows.row_count;
    v.pub.col_count = op->status ? 0 : op->rows.col_count;
    v.pub.rows_affected = op->status ? 0 : op->rows.affected;
    op_finish(op, &v);
}

static int pg_query(struct sql_shard *ss, struct sql_op *op, const char *sql,
                    const char *const *params, const size_t *lens, size_t n, uint32_t timeout_ms)
{
    long taken = pol_sql_placeholders_pg(sql, strlen(sql), ss->xlate, POL_SQL_STATEMENT_BYTES_MAX);
    if (taken == -1)
        return -E2BIG;
    if (taken == -2)
        return -EINVAL;
    return eng_pg_query(ss->pg, ss->xlate, params, lens, n, timeout_ms, pg_done, op);
}

/* Copies the statement and values into the op (inline when they fit). */
static int lite_copy(struct sql_op *op, const char *sql, const char *const *params,
                     const size_t *lens, size_t n)
{
    size_t sql_len = strlen(sql);
    size_t bytes = sql_len + 1 + n * (sizeof(char *) + sizeof(size_t)) + 16;
    for (size_t i = 0; i < n; i++)
        bytes += params[i] ? (lens ? lens[i] : strlen(params[i])) + 1 : 0;
    char *buf = bytes <= sizeof(op->inline_buf) ? op->inline_buf : (op->heap = malloc(bytes));
    if (!buf)
        return -ENOMEM;
    /* Pointer and length arrays first (aligned), then the texts. */
    op->params = (const char **)(void *)buf;
    op->param_lens = (size_t *)(void *)(buf + n * sizeof(char *));
    char *p = buf + n * (sizeof(char *) + sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        op->params[i] = NULL;
        op->param_lens[i] = 0;
        if (!params[i])
            continue;
        size_t l = lens ? lens[i] : strlen(params[i]);
        memcpy(p, params[i], l);
        p[l] = '\0';
        op->params[i] = p;
        op->param_lens[i] = l;
        p += l + 1;
    }
    memcpy(p, sql, sql_len + 1);
    op->sql = p;
    op->sql_len = sql_len;
    op->param_count = n;
    return 0;
}

static int lite_query(struct sql_shard *ss, struct sql_op *op, const char *sql,
                      const char *const *params, const size_t *lens, size_t n)
{
    int rc = lite_copy(op, sql, params, lens, n);
    if (rc < 0)
        return rc;
    op->work.run = pol_sql_lite_run;
    op->work.done = lite_done;
    op->status = -EIO;
    op->err[0] = '\0';
    return eng_work_submit(ss->db->pool, ss->sh, &op->work);
}

int pol_sql_query(struct eng_shard *sh, struct pol_sql *db, const char *sql,
                  const char *const *params, const size_t *param_lens, size_t param_count,
                  uint32_t timeout_ms, pol_sql_done_fn *done, void *ctx)
{
    ENG_ASSERT(done != NULL);
    if (!sh || !db || !sql || (param_count && !params))
        return -EINVAL;
    ENG_ASSERT(sh == eng_shard_self());
    unsigned idx = eng_shard_index(sh);
    struct sql_shard *ss = idx < POL_SQL_SHARDS_MAX ? db->shards[idx] : NULL;
    if (!ss)
        return -ENOTCONN;
    struct sql_op *op = op_get(ss);
    if (!op) {
        SQL_STAT_INC(ss, queue_full);
        return -ENOBUFS;
    }
    op->done = done;
    op->ctx = ctx;
    op->timeout_ms = timeout_ms ? timeout_ms : db->timeout_ms;
    op->deadline_us = eng_clock_us() + (uint64_t)op->timeout_ms * 1000u;
    int rc = ss->pg      ? pg_query(ss, op, sql, params, param_lens, param_count, op->timeout_ms)
             : ss->maria ? pol_sql_maria_query(ss, op, sql, params, param_lens, param_count,
                                               op->timeout_ms)
                         : lite_query(ss, op, sql, params, param_lens, param_count);
    if (rc < 0) {
        if (rc == -ENOBUFS)
            SQL_STAT_INC(ss, queue_full);
        op_put(ss, op);
        return rc;
    }
    SQL_STAT_INC(ss, queries);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Main thread: synchronous statements and counters
 */

struct sync_rows {
    pol_sql_row_fn *each_row;
    void *ctx;
};

static void sync_pg_rows(void *ctx, const struct eng_pg_result *r)
{
    const struct sync_rows *sr = ctx;
    struct sql_view v = {.pg = r};
    v.pub.row_count = eng_pg_result_rows(r);
    v.pub.col_count = eng_pg_result_cols(r);
    v.pub.rows_affected = eng_pg_result_affected(r);
    for (size_t i = 0; sr->each_row && i < v.pub.row_count; i++)
        sr->each_row(sr->ctx, &v.pub, i);
}

int pol_sql_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                      size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                      size_t err_len)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    if (db->dsn->driver == POL_SQL_SQLITE)
        return pol_sql_lite_exec_sync(db, sql, params, param_count, each_row, ctx, err, err_len);
    if (db->dsn->driver == POL_SQL_MYSQL)
        return pol_sql_maria_exec_sync(db, sql, params, param_count, each_row, ctx, err,
                                       err_len);
    char *xlate = malloc(POL_SQL_STATEMENT_BYTES_MAX);
    if (!xlate) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = -1;
    long taken = pol_sql_placeholders_pg(sql, strlen(sql), xlate, POL_SQL_STATEMENT_BYTES_MAX);
    if (taken < 0) {
        snprintf(err, err_len, taken == -1 ? "statement too long" : "statement mixes ? and $n");
    } else {
        struct sync_rows sr = {each_row, ctx};
        rc = eng_pg_exec_sync(db->conninfo, xlate, params, param_count, SQL_SYNC_TIMEOUT_MS,
                              sync_pg_rows, &sr, err, err_len);
    }
    free(xlate);
    return rc;
}

void pol_sql_stats_get(const struct pol_sql *db, struct pol_sql_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < POL_SQL_SHARDS_MAX; i++) {
        const struct sql_shard *ss = __atomic_load_n(&db->shards[i], __ATOMIC_ACQUIRE);
        if (!ss)
            continue;
        const uint64_t *src = (const uint64_t *)(const void *)&ss->stats;
        uint64_t *dst = (uint64_t *)(void *)out;
        for (size_t j = 0; j < sizeof(*out) / sizeof(uint64_t); j++) {
            uint64_t v = __atomic_load_n(&src[j], __ATOMIC_RELAXED);
            bool is_max = &dst[j] == &out->queue_depth_max;
            dst[j] = is_max ? (v > dst[j] ? v : dst[j]) : dst[j] + v;
        }
        if (ss->pg) {
            struct eng_pg_stats ps;
            eng_pg_stats_get(ss->pg, &ps);
            out->round_trips += ps.round_trips;
            out->reconnects += ps.connects > db->pg_conns ? ps.connects - db->pg_conns : 0;
        }
        if (ss->maria) {
            struct eng_maria_stats ms;
            eng_maria_stats_get(ss->maria, &ms);
            unsigned conns = pol_sql_maria_conns(db);
            out->round_trips += ms.round_trips;
            out->reconnects += ms.connects > conns ? ms.connects - conns : 0;
        }
    }
}
