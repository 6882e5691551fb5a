/*
 * eng/maria.h: a MySQL/MariaDB client for one shard, on libmariadb's non-blocking API with its
 * sockets polled by the shard's ring. Public API; generic (server, credentials, SQL with `?`
 * placeholders, callbacks on the shard); it knows nothing about policy.
 *
 * A client (struct eng_maria) holds a small pool of connections. The MySQL protocol has no
 * pipelining, so each connection carries one statement at a time and further statements wait
 * in the client's FIFO for the next idle connection. Values are bound the way DBD::mysql
 * binds them by default: each `?` outside quotes and comments becomes the value as a quoted
 * string literal, escaped by mysql_real_escape_string on the connection that runs it (its
 * character set is utf8mb4, its sql_mode honoured), or NULL. Every statement runs in
 * autocommit mode. Each query has a deadline on a ring timer; a connection whose statement
 * passed its deadline is closed and reopened. A connection that breaks fails its statement
 * (-ECONNRESET) and is reopened; while attempts to connect fail, new queries fail fast
 * (-ENOTCONN) and attempts repeat with exponential backoff, so the client recovers by itself.
 *
 * Host names are not resolved here (libmariadb would block the shard doing so): give a numeric
 * address or name, "localhost" (the Unix socket) or a socket path.
 *
 * Threads: everything but eng_maria_exec_sync runs on the client's shard (asserted). done runs
 * on that shard from its loop, never inside eng_maria_query; it may call eng_maria_query
 * again. A result is valid only during done.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_MARIA_H
#define ENG_MARIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_maria;
struct eng_maria_result;

#define ENG_MARIA_CONNS_MAX 16u
#define ENG_MARIA_PARAMS_MAX 65535u

struct eng_maria_config {
    const char *host;        /* numeric address, a name (resolved at every connection attempt,
                                off the shard), "localhost" or NULL (Unix socket); copied */
    unsigned port;           /* 0: the default (3306) */
    const char *unix_socket; /* NULL: libmariadb's default; copied */
    const char *user;        /* copied; NULL: none */
    const char *password;    /* copied; NULL: none */
    const char *database;    /* copied; NULL: none */
    const char *name;        /* for log lines, e.g. the <Connection> name; copied */
    unsigned conn_count;     /* connections per client, 1..ENG_MARIA_CONNS_MAX. Default 2. */
    uint32_t queries_max;    /* queries pending or in flight per client; one more is refused
                                with -ENOBUFS (counted). Default 1024. */
    uint32_t timeout_ms;     /* deadline of a query given timeout_ms 0. Default 5000. */
    uint32_t connect_timeout_ms; /* one connection attempt. Default 5000. */
    uint32_t backoff_min_ms;     /* first wait after a failed attempt, doubled per failure up
                                    to backoff_max_ms. Defaults 100, 5000. */
    uint32_t backoff_max_ms;
    uint32_t statement_bytes_max; /* a statement with its values quoted in. Default 1 MiB. */
};

void eng_maria_config_defaults(struct eng_maria_config *cfg);

/* On sh's thread (at shard start: it allocates). Starts connecting at once. 0, or -EINVAL /
 * -ENOMEM with a sentence in err. */
int eng_maria_create(struct eng_shard *sh, const struct eng_maria_config *cfg,
                     struct eng_maria **out, char *err, size_t err_len);

typedef void eng_maria_done_fn(void *ctx, const struct eng_maria_result *res);

/* Queues sql with params[0..param_count) bound to its `?` placeholders in order (NULL is SQL
 * NULL; param_lens NULL means strlen). sql and params are copied before the call returns.
 * timeout_ms 0: the default. Returns 0 (done runs exactly once, later, from the loop), or
 * -ENOBUFS (queries_max pending: counted; done will not run), -E2BIG (statement too long),
 * -EINVAL (sql NULL, or the `?` count differs from param_count), -ESHUTDOWN (destroying). */
int eng_maria_query(struct eng_maria *m, const char *sql, const char *const *params,
                    const size_t *param_lens, size_t param_count, uint32_t timeout_ms,
                    eng_maria_done_fn *done, void *ctx);

/* Shutdown only: blocks the shard (poll(2), not the ring) until no query is pending or
 * timeout_ms passed, running dones as results arrive and failing the rest with
 * -ETIMEDOUT. Returns how many queries were pending when it started. */
int eng_maria_drain(struct eng_maria *m, uint32_t timeout_ms);

/* On the shard: closes every connection; the done of each query still pending runs inside
 * this call with -ESHUTDOWN. NULL is a no-op. */
void eng_maria_destroy(struct eng_maria *m);

/* True when at least one connection is open. */
bool eng_maria_ready(const struct eng_maria *m);

/* ---------------------------------------------------------------------------------------------
 * Results. status: 0; -EIO the server refused the statement (message, SQLSTATE); -ETIMEDOUT
 * the deadline passed; -ENOTCONN no connection (fail fast while the server is unreachable);
 * -ECONNRESET the connection broke while the query was in flight; -ESHUTDOWN the client was
 * destroyed.
 */
int eng_maria_result_status(const struct eng_maria_result *res);
const char *eng_maria_result_error(const struct eng_maria_result *res);    /* NULL when 0 */
const char *eng_maria_result_sqlstate(const struct eng_maria_result *res); /* "" unless -EIO */
size_t eng_maria_result_rows(const struct eng_maria_result *res);
size_t eng_maria_result_cols(const struct eng_maria_result *res);
/* NULL for SQL NULL (or out of range); *len may be NULL. */
const char *eng_maria_result_value(const struct eng_maria_result *res, size_t row, size_t col,
                                   size_t *len);
uint64_t eng_maria_result_affected(const struct eng_maria_result *res);

/* Counters (per client; written by its shard, read from any thread with relaxed loads). */
struct eng_maria_stats {
    uint64_t queries;     /* accepted by eng_maria_query */
    uint64_t ok;          /* dones with status 0 */
    uint64_t errors;      /* dones with -EIO */
    uint64_t timeouts;    /* dones with -ETIMEDOUT */
    uint64_t fail_fast;   /* dones with -ENOTCONN */
    uint64_t conn_lost;   /* dones with -ECONNRESET */
    uint64_t queue_full;  /* eng_maria_query refused with -ENOBUFS */
    uint64_t round_trips; /* statements sent */
    uint64_t connects;    /* connections established */
    uint64_t connect_failures;
    uint64_t disconnects; /* established connections that broke or were reset */
    uint64_t queue_depth; /* queries pending or in flight now */
    uint64_t queue_depth_max;
};
void eng_maria_stats_get(const struct eng_maria *m, struct eng_maria_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Blocking use, for start-up and cron on the main thread (never on a shard): connects (cfg's
 * server and credentials; its connect_timeout_ms and timeout_ms bound the attempt and the
 * statement), runs sql with params bound as above, and disconnects. fn (may be NULL) sees the
 * result, with status 0, when the statement succeeded. 0, or -1 with the message in err.
 */
int eng_maria_exec_sync(const struct eng_maria_config *cfg, const char *sql,
                        const char *const *params, size_t param_count, eng_maria_done_fn *fn,
                        void *ctx, char *err, size_t err_len);

/* Pure: counts the `?` placeholders of sql outside '...', "..." (backslash escapes), `...`,
 * -- and # comments and C comments. Their offsets go to offs (up to offs_max). */
size_t eng_maria_placeholders(const char *sql, size_t len, size_t *offs, size_t offs_max);

#ifdef __cplusplus
}
#endif

#endif
