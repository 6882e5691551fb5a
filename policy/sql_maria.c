/*
 * sql_maria.c: the MySQL/MariaDB side of the Sql connection (dbi:mysql and dbi:MariaDB DSNs),
 * on engine/maria.c. Called by sql.c only (sql_int.h).
 *
 * open (main thread) turns the parsed DSN into an eng_maria_config; a host name is kept as
 * written ("localhost" is the Unix socket, as in DBD::mysql): the engine's client resolves
 * other names at every connection attempt, off the shard, so a server whose name does not
 * resolve yet does not refuse start. shard_start gives each shard its own eng_maria client (connections per shard:
 * the `connections` option, default 2, since MySQL runs one statement per connection at a
 * time). Statements keep DBI's `?` placeholders, which the engine binds as DBD::mysql does
 * (quoted, escaped literals). exec_sync (start-up DDL, cron) connects, runs and disconnects.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "eng/log.h"
#include "eng/maria.h"
#include "sql_int.h"

#define SQL_MARIA_CONNECT_TIMEOUT_MS 5000u
#define SQL_MARIA_SYNC_TIMEOUT_MS 30000u
#define SQL_MARIA_CONNS_DEFAULT 2u

struct pol_sql_maria {
    char host[POL_SQL_DSN_BYTES_MAX]; /* as in the DSN: an address, a name, "localhost" or "" */
    struct eng_maria_config cfg;
};

/* "" -> NULL: libmariadb's defaults. */
static const char *opt_str(const char *s)
{
    return s && *s ? s : NULL;
}

int pol_sql_maria_open(struct pol_sql *db, bool conns_given, char *err, size_t err_len)
{
    const struct pol_sql_dsn *d = db->dsn;
    struct pol_sql_maria *mm = calloc(1, sizeof(*mm));
    if (!mm) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    db->maria = mm;
    snprintf(mm->host, sizeof(mm->host), "%s", d->host);
    struct eng_maria_config *c = &mm->cfg;
    eng_maria_config_defaults(c);
    c->host = opt_str(mm->host);
    c->port = d->port;
    c->unix_socket = opt_str(d->socket);
    c->user = opt_str(d->user);
    c->password = opt_str(d->password);
    c->database = opt_str(d->database);
    c->name = db->name;
    c->conn_count = conns_given ? db->pg_conns : SQL_MARIA_CONNS_DEFAULT;
    c->queries_max = db->queue_max;
    c->timeout_ms = db->timeout_ms;
    c->connect_timeout_ms = SQL_MARIA_CONNECT_TIMEOUT_MS;
    c->statement_bytes_max = POL_SQL_STATEMENT_BYTES_MAX;
    return 0;
}

void pol_sql_maria_close(struct pol_sql *db)
{
    free(db->maria);
    db->maria = NULL;
}

unsigned pol_sql_maria_conns(const struct pol_sql *db)
{
    return db->maria ? db->maria->cfg.conn_count : 0;
}

int pol_sql_maria_shard_start(struct sql_shard *ss, char *err, size_t err_len)
{
    return eng_maria_create(ss->sh, &ss->db->maria->cfg, &ss->maria, err, err_len);
}

static void maria_done(void *ctx, const struct eng_maria_result *r)
{
    struct sql_op *op = ctx;
    struct sql_view v = {.maria = r};
    v.pub.status = eng_maria_result_status(r);
    v.pub.error = eng_maria_result_error(r);
    v.pub.row_count = eng_maria_result_rows(r);
    v.pub.col_count = eng_maria_result_cols(r);
    v.pub.rows_affected = eng_maria_result_affected(r);
    pol_sql_op_finish(op, &v);
}

int pol_sql_maria_query(struct sql_shard *ss, struct sql_op *op, const char *sql,
                        const char *const *params, const size_t *lens, size_t n,
                        uint32_t timeout_ms)
{
    return eng_maria_query(ss->maria, sql, params, lens, n, timeout_ms, maria_done, op);
}

struct sync_rows {
    pol_sql_row_fn *each_row;
    void *ctx;
};

static void sync_rows_fn(void *ctx, const struct eng_maria_result *r)
{
    const struct sync_rows *sr = ctx;
    struct sql_view v = {.maria = r};
    v.pub.row_count = eng_maria_result_rows(r);
    v.pub.col_count = eng_maria_result_cols(r);
    v.pub.rows_affected = eng_maria_result_affected(r);
    for (size_t i = 0; sr->each_row && i < v.pub.row_count; i++)
        sr->each_row(sr->ctx, &v.pub, i);
}

int pol_sql_maria_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                            size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                            size_t err_len)
{
    struct eng_maria_config c = db->maria->cfg;
    c.timeout_ms = SQL_MARIA_SYNC_TIMEOUT_MS;
    struct sync_rows sr = {each_row, ctx};
    return eng_maria_exec_sync(&c, sql, params, param_count, sync_rows_fn, &sr, err, err_len);
}
