/*
 * pol/sql.h: asynchronous SQL for plugins, over a <Connection NAME> module = "Sql" block
 * (spec 9.1). Part of the plugin API (version 1); built-in and user plugins use the same calls.
 *
 * Drivers, chosen by the DBI DSN: dbi:Pg:dbname=...;host=...;port=... (libpq, non-blocking,
 * pipeline mode, polled by the shard's ring), dbi:SQLite:dbname=PATH and dbi:SQLite::memory:
 * (SQLite on a small worker-thread pool; results come back to the calling shard). Any other
 * driver is a start-up error naming the file, line and the supported drivers. Statements use
 * DBI's `?` placeholders on every driver (translated to $1.. for PostgreSQL); values are always
 * bound, never pasted into statement text. Every statement runs in autocommit mode.
 *
 * Threads and ownership: pol_sql_lookup at create time on the main thread; pol_sql_query on a
 * shard thread, its done callback later on the same shard (never inside the call); a result is
 * valid only during done. pol_sql_exec_sync is for create and cron (main thread), never the
 * request path. A backend that is down makes queries fail fast (status < 0, "connection to
 * ... failed: ..."), reconnects by itself with backoff, and never blocks a shard.
 */
#ifndef POL_SQL_H
#define POL_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>
#include <pol/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_sql;

enum pol_sql_driver {
    POL_SQL_SQLITE,
    POL_SQL_PG,
    POL_SQL_MYSQL,
};

/* The Sql connection named conn_name (the value of the plugin's `db` option). NULL with
 * "no connection NAME configured!" (or "... is not a Sql connection") in err. */
struct pol_sql *pol_sql_lookup(struct pol_plugin *p, const char *conn_name, char *err,
                               size_t err_len);
enum pol_sql_driver pol_sql_driver_of(const struct pol_sql *db);

struct pol_sql_result {
    int status;          /* 0, or < 0 on any error (then error is set) */
    const char *error;   /* the driver's message */
    size_t row_count;
    size_t col_count;
    uint64_t rows_affected; /* INSERT/UPDATE/DELETE */
};

/* Value at (row, col); NULL for SQL NULL. *len may be NULL. */
const char *pol_sql_value(const struct pol_sql_result *res, size_t row, size_t col, size_t *len);

typedef void pol_sql_done_fn(void *ctx, const struct pol_sql_result *res);

/* Runs one statement. params are text (NULL = SQL NULL; lens NULL = strlen). timeout_ms 0
 * means the connection's default. Returns 0 (done will run exactly once), or -errno when the
 * statement could not even be queued (-ENOBUFS: per-shard queue full; done will not run). */
int pol_sql_query(struct eng_shard *sh, struct pol_sql *db, const char *sql,
                  const char *const *params, const size_t *param_lens, size_t param_count,
                  uint32_t timeout_ms, pol_sql_done_fn *done, void *ctx);

/* Main thread only: runs sql synchronously; each_row (may be NULL) sees every result row.
 * Returns 0, or -1 with the driver's message in err. */
typedef void pol_sql_row_fn(void *ctx, const struct pol_sql_result *res, size_t row);
int pol_sql_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                      size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                      size_t err_len);

/* Quotes an identifier for the connection's dialect ("name" for SQLite and PostgreSQL,
 * `name` for MySQL). Returns the length, 0 if out_len is too small. */
size_t pol_sql_quote_ident(const struct pol_sql *db, const char *name, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif
