/*
 * acct_ddl.h: a table's start-up DDL run off the start-up path (issues 3 and 6; internal to
 * policy/plugins/, used by Accounting's store and Greylist's SQL auto-whitelist).
 *
 * A gate belongs to one shard and one table. On PostgreSQL and MySQL the table's statements
 * (checked and built at create, so that a bad name or DDL text is still a start-up error) run
 * on the shard through the normal Sql client path (pol_sql_query), before the first query that
 * needs the table; while an attempt fails the gate retries with the connection's backoff
 * (POL_DDL_BACKOFF_MIN_MS doubled per failure up to POL_DDL_BACKOFF_MAX_MS, the defaults of
 * engine/pg and engine/maria). SQLite keeps its synchronous DDL at create: its gate is ready
 * from the start. Per shard rather than per daemon: each shard has its own connections and
 * their own backoff, the gate needs no cross-shard message, and the cost is one idempotent
 * check per table and shard at start (never per request).
 *
 * Logging: the first failure of a streak (then nothing until it ends), the recovery after a
 * streak, and one line per daemon and table when the table is first found or created (a flag
 * shared by the table's gates, set with an atomic exchange: also what the exit path reads to
 * know that the table exists).
 *
 * Threads and memory: init/fini wherever the owner allocates the gate; start, wait and the
 * callbacks on the gate's shard. fini only once no statement can complete any more (after the
 * shard's Sql connection stopped: main thread, after the shard threads ended). Waiters live in
 * the caller's memory (a request's state) and are woken exactly once.
 */
#ifndef POL_PLUGINS_ACCT_DDL_H
#define POL_PLUGINS_ACCT_DDL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/engine.h>

#include "pol/sql.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POL_DDL_BACKOFF_MIN_MS 100u
#define POL_DDL_BACKOFF_MAX_MS 5000u
/* Statements one gate runs per attempt. */
#define POL_DDL_STMTS_MAX 6u

struct pol_ddl_stmt {
    const char *sql;
    /* A probe (2.05's SELECT * FROM T WHERE 1=0): when it succeeds the next statement is
     * skipped; when it fails the next one runs, and only its failure fails the attempt. */
    bool probe;
};

enum pol_ddl_state {
    POL_DDL_IDLE,     /* not started (no shard: the testkit) */
    POL_DDL_STARTING, /* the first attempt is scheduled */
    POL_DDL_RUNNING,  /* a statement is out */
    POL_DDL_BACKOFF,  /* the last attempt failed; the next one is scheduled */
    POL_DDL_READY,
    POL_DDL_STOPPED, /* the shard stops: no more attempts */
};

struct pol_ddl_waiter;
/* ok: the table is ready; else error says why not (valid during the call). */
typedef void pol_ddl_wake_fn(struct pol_ddl_waiter *w, bool ok, const char *error);
struct pol_ddl_waiter {
    struct pol_ddl_waiter *next; /* private */
    pol_ddl_wake_fn *fn;
};

/* Called on the shard after every attempt (ok or not), after the waiters were woken. */
typedef void pol_ddl_done_fn(void *ctx, bool ok);

struct pol_ddl_gate {
    /* private */
    struct eng_timer timer;
    struct eng_shard *sh;
    struct pol_sql *db;
    const char *what;      /* "accounting table acct_sender", for the log */
    const char *meanwhile; /* what happens while it fails, for the log */
    int *announced;        /* shared by the table's gates: 1 once the table is known to exist */
    struct pol_ddl_stmt stmts[POL_DDL_STMTS_MAX];
    unsigned stmt_count, at;
    enum pol_ddl_state state;
    uint32_t backoff_ms;
    uint64_t attempts, failures; /* failures: of the current streak */
    uint64_t streak_since_ms;
    pol_ddl_done_fn *done;
    void *done_ctx;
    struct pol_ddl_waiter *waiters, *waiters_tail;
    char error[256]; /* of the last failed attempt */
};

/* ready: nothing to run (SQLite, or a table nobody creates). what, meanwhile and the
 * statements' texts must outlive the gate; announced is a flag shared by the table's gates. */
void pol_ddl_gate_init(struct pol_ddl_gate *g, struct pol_sql *db, const char *what,
                       const char *meanwhile, int *announced, const struct pol_ddl_stmt *stmts,
                       unsigned stmt_count, bool ready, pol_ddl_done_fn *done, void *done_ctx);
/* Schedules the first attempt on sh (from shard_start; a no-op when ready or sh is NULL). */
void pol_ddl_gate_start(struct pol_ddl_gate *g, struct eng_shard *sh);
/* Shard stop: no more attempts (a statement out still completes and wakes its waiters). */
void pol_ddl_gate_stop(struct pol_ddl_gate *g);
void pol_ddl_gate_fini(struct pol_ddl_gate *g);

static inline bool pol_ddl_gate_ready(const struct pol_ddl_gate *g)
{
    return g->state == POL_DDL_READY;
}
/* An attempt is scheduled or out: a caller may wait for its end. */
static inline bool pol_ddl_gate_pending(const struct pol_ddl_gate *g)
{
    return g->state == POL_DDL_STARTING || g->state == POL_DDL_RUNNING;
}
/* Why the table is not ready (the last attempt's error, or its state). */
const char *pol_ddl_gate_error(const struct pol_ddl_gate *g);
/* Only while pending: w->fn runs once when the attempt ends. */
void pol_ddl_gate_wait(struct pol_ddl_gate *g, struct pol_ddl_waiter *w);

/* Whether a gate of the table announced it (any thread: an atomic load). */
static inline bool pol_ddl_announced(const int *announced)
{
    return __atomic_load_n(announced, __ATOMIC_ACQUIRE) != 0;
}
/* Marks the table as existing (the exit path created it); any thread. */
static inline void pol_ddl_announce(int *announced)
{
    __atomic_store_n(announced, 1, __ATOMIC_RELEASE);
}

#ifdef __cplusplus
}
#endif

#endif
