/*
 * sql_int.h: what sql.c (the connection, the request path, PostgreSQL), sql_sqlite.c (the
 * SQLite worker side) and sql_maria.c (MySQL/MariaDB) share. Private to those files.
 *
 * A query in flight is a struct sql_op from its shard's fixed pool (queue_max per shard and
 * connection, allocated at shard start). For SQLite the op is also the worker job: it carries
 * its own copy of the statement and the values (inline when small, else one malloc), and the
 * worker leaves the rows in a struct sql_rows it allocates and the shard frees after done.
 */
#ifndef POL_SQL_INT_H
#define POL_SQL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "eng/work.h"
#include "pol/sql.h"
#include "sql_conn.h"
#include "sql_dsn.h"

#define POL_SQL_SHARDS_MAX ENG_WORK_SHARDS_MAX
#define POL_SQL_OP_INLINE_BYTES 512u /* statement and values copied inline up to this */
#define POL_SQL_ERR_BYTES 256u
#define POL_SQL_STATEMENT_BYTES_MAX (256u * 1024u) /* after ? → $n translation */

struct sqlite3;
struct eng_pg;
struct eng_pg_result;
struct eng_maria;
struct eng_maria_result;
struct pol_sql_maria;

/* Rows built by a worker: cells row-major, each an offset into data and a length (-1: NULL). */
struct sql_rows {
    size_t row_count, col_count;
    uint64_t affected;
    struct sql_cell {
        size_t off;
        long len;
    } *cells;
    char *data;
    size_t data_len, data_cap, cells_cap;
};

/* What done and each_row see: the public part, and the backend's rows behind it. */
struct sql_view {
    struct pol_sql_result pub;
    const struct sql_rows *rows;    /* SQLite */
    const struct eng_pg_result *pg; /* PostgreSQL */
    const struct eng_maria_result *maria; /* MySQL */
};

struct sql_shard;

struct sql_op {
    struct eng_work work; /* SQLite: the job */
    struct sql_shard *ss;
    struct sql_op *next_free;
    pol_sql_done_fn *done;
    void *ctx;
    uint32_t timeout_ms;
    uint64_t deadline_us;
    /* SQLite input: the statement and values, copied */
    const char *sql;
    size_t sql_len;
    size_t param_count;
    const char **params;
    size_t *param_lens;
    char *heap; /* the copy when it does not fit inline */
    /* SQLite output */
    int status;
    char err[POL_SQL_ERR_BYTES];
    struct sql_rows rows;
    _Alignas(16) char inline_buf[POL_SQL_OP_INLINE_BYTES];
};

struct sql_shard {
    struct pol_sql *db;
    struct eng_shard *sh;
    struct eng_pg *pg;
    struct eng_maria *maria;
    struct sql_op *ops;
    struct sql_op *free_ops;
    char *xlate; /* PostgreSQL: the statement with $n, POL_SQL_STATEMENT_BYTES_MAX */
    struct pol_sql_stats stats;
};

/* One SQLite connection and its statement cache (one per worker, or the shared in-memory
 * one). Touched by one thread at a time. */
struct sql_lite_conn;

struct pol_sql {
    const char *name; /* <Connection NAME> */
    const char *file;
    unsigned line;
    struct pol_sql_dsn *dsn;
    uint32_t timeout_ms;
    uint32_t queue_max;
    unsigned pg_conns;
    uint32_t stmt_cache;
    char *conninfo; /* PostgreSQL: the DSN's; eng_pg resolves a host name per attempt */
    struct pol_sql_maria *maria; /* MySQL: the client configuration */
    /* SQLite */
    struct eng_work_pool *pool;
    unsigned workers;
    struct sql_lite_conn **lite;     /* per worker */
    struct sql_lite_conn *lite_mem;  /* :memory: the one connection everyone uses */
    pthread_mutex_t lite_mem_lock;   /* ... one thread at a time */
    struct sql_shard *shards[POL_SQL_SHARDS_MAX];
};

/* sql_sqlite.c */
int pol_sql_lite_open(struct pol_sql *db, char *err, size_t err_len); /* main thread, at open */
void pol_sql_lite_close(struct pol_sql *db);                          /* after the pool ended */
void pol_sql_lite_run(struct eng_work *w, unsigned worker_index);     /* eng_work_run_fn */
int pol_sql_lite_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                           size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                           size_t err_len);
const char *pol_sql_rows_value(const struct sql_rows *r, size_t row, size_t col, size_t *len);
void pol_sql_rows_free(struct sql_rows *r);

/* sql.c: counts the outcome, runs done, frees the slot (any backend's completion). */
void pol_sql_op_finish(struct sql_op *op, struct sql_view *v);

/* sql_maria.c */
int pol_sql_maria_open(struct pol_sql *db, bool conns_given, char *err, size_t err_len);
void pol_sql_maria_close(struct pol_sql *db);
unsigned pol_sql_maria_conns(const struct pol_sql *db);
int pol_sql_maria_shard_start(struct sql_shard *ss, char *err, size_t err_len);
int pol_sql_maria_query(struct sql_shard *ss, struct sql_op *op, const char *sql,
                        const char *const *params, const size_t *lens, size_t n,
                        uint32_t timeout_ms);
int pol_sql_maria_exec_sync(struct pol_sql *db, const char *sql, const char *const *params,
                            size_t param_count, pol_sql_row_fn *each_row, void *ctx, char *err,
                            size_t err_len);

#endif
