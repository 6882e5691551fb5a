/*
 * eng/pg.h: a PostgreSQL client for one shard, on libpq's non-blocking pipeline mode with its
 * sockets polled by the shard's ring. Public API; generic (a conninfo string, SQL with $n
 * parameters, callbacks on the shard); it knows nothing about policy.
 *
 * A client (struct eng_pg) holds one or a few connections. Each query is sent at once into a
 * connection's pipeline (prepared once per connection and statement text, then executed by
 * name; parameters are text) and followed by its own Sync, so every statement is its own
 * implicit transaction (autocommit) and a failing statement affects no other. Results are
 * matched to queries in order. Each query has a deadline on a ring timer. A connection that
 * breaks fails its queries in flight (status -ECONNRESET) and is reopened at once; while an
 * attempt to connect fails, new queries fail fast (-ENOTCONN) and attempts repeat with
 * exponential backoff, so the client recovers by itself when the server returns.
 *
 * Threads: everything but eng_pg_conninfo_check and eng_pg_exec_sync runs on the client's
 * shard (asserted). done runs on that shard from its loop, never inside eng_pg_query; it may
 * call eng_pg_query again. A result is valid only during done.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_PG_H
#define ENG_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_pg;
struct eng_pg_result;

#define ENG_PG_CONNS_MAX 16u
#define ENG_PG_PARAMS_MAX 65535u /* the protocol's limit */

struct eng_pg_config {
    const char *conninfo;        /* libpq conninfo ("host=... dbname=..."); copied */
    const char *name;            /* for log lines, e.g. the <Connection> name; copied */
    unsigned conn_count;         /* connections per client, 1..ENG_PG_CONNS_MAX. Default 1. */
    uint32_t queries_max;        /* queries pending or in flight per client; one more is
                                    refused with -ENOBUFS (counted). Default 1024. */
    uint32_t timeout_ms;         /* deadline of a query given timeout_ms 0. Default 5000. */
    uint32_t connect_timeout_ms; /* one connection attempt. Default 5000. */
    uint32_t backoff_min_ms;     /* first wait after a failed attempt, doubled per failure up
                                    to backoff_max_ms. Defaults 100, 5000. */
    uint32_t backoff_max_ms;
    uint32_t stmt_cache_max;     /* prepared statements per connection; past it statements run
                                    unprepared (counted). 0: never prepare. Default 256. */
    uint32_t params_bytes_max;   /* parameter bytes of one query. Default 1 MiB. */
};

void eng_pg_config_defaults(struct eng_pg_config *cfg);

/* Any thread: checks conninfo with libpq's parser (unknown keywords, bad quoting). 0, or -1
 * with libpq's message in err. */
int eng_pg_conninfo_check(const char *conninfo, char *err, size_t err_len);

/* On sh's thread (at shard start: it allocates). Starts connecting at once. 0, or -EINVAL /
 * -ENOMEM with a sentence in err. */
int eng_pg_create(struct eng_shard *sh, const struct eng_pg_config *cfg, struct eng_pg **out,
                  char *err, size_t err_len);

/* done receives the result; its status is 0 or one of the -errno values below. */
typedef void eng_pg_done_fn(void *ctx, const struct eng_pg_result *res);

/* Queues sql with params[0..param_count) as text ($1 is params[0]; NULL is SQL NULL;
 * param_lens NULL means strlen, else each length, and a value holding a NUL byte fails the
 * query). sql and params are copied before the call returns. timeout_ms 0: the default.
 * Returns 0 (done runs exactly once, later, from the loop), or -ENOBUFS (queries_max
 * pending: counted; done will not run), -E2BIG (more than ENG_PG_PARAMS_MAX parameters or
 * params_bytes_max bytes), -EINVAL (sql NULL), -ESHUTDOWN (inside eng_pg_destroy). */
int eng_pg_query(struct eng_pg *pg, const char *sql, const char *const *params,
                 const size_t *param_lens, size_t param_count, uint32_t timeout_ms,
                 eng_pg_done_fn *done, void *ctx);

/* Shutdown only: blocks the shard (poll(2), not the ring) until no query is pending or
 * timeout_ms passed, running dones as their results arrive and failing the rest with
 * -ETIMEDOUT. Returns how many queries were still pending when it started. */
int eng_pg_drain(struct eng_pg *pg, uint32_t timeout_ms);

/* On the shard: closes every connection; the done of each query still pending runs inside
 * this call with -ESHUTDOWN. NULL is a no-op. */
void eng_pg_destroy(struct eng_pg *pg);

/* True when at least one connection is open and ready. */
bool eng_pg_ready(const struct eng_pg *pg);

/* ---------------------------------------------------------------------------------------------
 * Results. status: 0; -EIO the server refused the statement (message, SQLSTATE); -ETIMEDOUT
 * the deadline passed; -ENOTCONN no connection (fail fast while the server is unreachable);
 * -ECONNRESET the connection broke while the query was in flight; -ESHUTDOWN the client was
 * destroyed; -EINVAL a parameter holds a NUL byte.
 */
int eng_pg_result_status(const struct eng_pg_result *res);
const char *eng_pg_result_error(const struct eng_pg_result *res);    /* NULL when status 0 */
const char *eng_pg_result_sqlstate(const struct eng_pg_result *res); /* "" unless -EIO */
size_t eng_pg_result_rows(const struct eng_pg_result *res);
size_t eng_pg_result_cols(const struct eng_pg_result *res);
/* NULL for SQL NULL (or out of range); *len may be NULL. */
const char *eng_pg_result_value(const struct eng_pg_result *res, size_t row, size_t col,
                                size_t *len);
uint64_t eng_pg_result_affected(const struct eng_pg_result *res); /* INSERT/UPDATE/DELETE */

/* ---------------------------------------------------------------------------------------------
 * Counters (per client; written by its shard, read from any thread with relaxed loads).
 */
struct eng_pg_stats {
    uint64_t queries;         /* accepted by eng_pg_query */
    uint64_t ok;              /* dones with status 0 */
    uint64_t errors;          /* dones with status -EIO (the server refused) */
    uint64_t timeouts;        /* dones with -ETIMEDOUT */
    uint64_t fail_fast;       /* dones with -ENOTCONN */
    uint64_t conn_lost;       /* dones with -ECONNRESET */
    uint64_t queue_full;      /* eng_pg_query refused with -ENOBUFS */
    uint64_t round_trips;     /* a connection went from nothing in flight to in flight */
    uint64_t flushes;         /* output pushed to a socket on POLLOUT */
    uint64_t prepares;        /* statements prepared */
    uint64_t stmt_cache_full; /* queries run unprepared because the cache was full */
    uint64_t connects;        /* connections established */
    uint64_t connect_failures;
    uint64_t disconnects; /* established connections that broke or were reset */
    uint64_t queue_depth;     /* queries pending or in flight now */
    uint64_t queue_depth_max;
};
void eng_pg_stats_get(const struct eng_pg *pg, struct eng_pg_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Blocking use, for start-up and cron on the main thread (never on a shard): connects, runs
 * sql and disconnects. With params (NUL-terminated text, NULL for SQL NULL) it runs one
 * statement; without, sql may be a script of several statements (fn then sees the last
 * one's result). fn (may be NULL) sees the result, with status 0, when the statement
 * succeeded. Returns 0, or -1 with the message in err (connection failure, statement error).
 * timeout_ms bounds the connection attempt (in whole seconds, at least 2) and the statement
 * (statement_timeout).
 */
int eng_pg_exec_sync(const char *conninfo, const char *sql, const char *const *params,
                     size_t param_count, uint32_t timeout_ms, eng_pg_done_fn *fn, void *ctx,
                     char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
