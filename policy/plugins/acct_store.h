/*
 * acct_store.h: the accounting counters of one Sql connection, shared by every Accounting and
 * Quota plugin that uses it (internal to policy/plugins/).
 *
 * Ownership by key: the row of (table, key) lives on one shard of the daemon, its owner,
 * chosen by hash (pol_acct_store_owner). Accounting, running on the shard that owns the mail's
 * session, sends the mail's counts to the owner (eng_xshard_send) and waits for the owner's
 * acknowledgement before the chain goes on, so by the time the reply leaves, the counts are in
 * the owner's table. Quota asks the owner for stored + unflushed, and the owner answers after
 * the cross-shard messages of its current loop turn were applied; so a quota check sees every
 * mail this daemon accounted before the check's request arrived. Each owner flushes its rows
 * every flush_interval: one multi-row INSERT ... ON CONFLICT DO UPDATE per table (in slices of
 * POL_ACCT_FLUSH_ROWS_MAX rows), one statement at a time per table, fetches for quota checks
 * in between (batched, POL_ACCT_FETCH_KEYS_MAX keys per SELECT).
 *
 * When the database refuses a flush the counts stay in memory (bounded by buffer_rows rows per
 * table and shard) and, with a spill_dir, are appended to this shard's spill file at every
 * failed flush (so a kill -9 loses at most one flush interval); they are read back into memory
 * once a flush succeeds again, and files left by a previous run are replayed at start-up. At
 * exit (shard stop, then the last plugin's destroy on the main thread) everything unflushed is
 * written synchronously, or spilled when the database is down.
 *
 * Threads: acquire/add_table/release on the main thread (create, destroy); shard_start/stop
 * and the step functions on shard threads, each touching only its own shard's state and the
 * messages it receives. Failures are operational (counted, logged rate-limited); nothing here
 * blocks a shard except the spill file I/O described in acct_spill.h.
 */
#ifndef POL_PLUGINS_ACCT_STORE_H
#define POL_PLUGINS_ACCT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugins/acct_agg.h"
#include "pol/plugin.h"
#include "pol/sql.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per flush statement: 6 parameters each, far below PostgreSQL's 65535 and SQLite's
 * 32766 parameters per statement. A shard with more dirty rows sends several statements, one
 * after the other. */
#define POL_ACCT_FLUSH_ROWS_MAX 1000u
/* Keys per quota fetch (SELECT ... WHERE (key, time) IN (...)). */
#define POL_ACCT_FETCH_KEYS_MAX 64u
/* Shards a store can serve. */
#define POL_ACCT_SHARDS_MAX 1024u
/* Defaults of the Accounting options that size the store. */
#define POL_ACCT_FLUSH_INTERVAL_MS_DEFAULT 1000u
#define POL_ACCT_BUFFER_ROWS_DEFAULT 4096u
/* Delta messages one shard may have out to owners at once. Past it a shard accounts a mail in
 * its own table (still counted exactly in the database, but invisible to quota checks on the
 * owner until flushed; counted as acct_local_fallback). */
#define POL_ACCT_MSGS_PER_SHARD 1024u

struct pol_acct_store;

struct pol_acct_store_opts {
    uint32_t flush_interval_ms; /* 1..3600000 */
    uint32_t buffer_rows;       /* rows per table and shard, 16..POL_ACCT_ROWS_MAX */
    const char *spill_dir;      /* NULL or "": no spill files */
};

/* The store of db (created on first use). Main thread. NULL with a sentence in err. */
struct pol_acct_store *pol_acct_store_acquire(struct pol_sql *db, const char *conn_name, char *err,
                                              size_t err_len);
/* Main thread; the last release writes whatever is unflushed and frees the store. */
void pol_acct_store_release(struct pol_acct_store *st);

/* MySQL: the storage engine of the tables created from now on (Accounting's mysql_engine
 * option; 2.05's default MyISAM until set). Main thread. */
void pol_acct_store_mysql_engine(struct pol_acct_store *st, const char *engine);

/* Registers a table (main thread, before any shard starts). A writer (Accounting) makes sure
 * the table and its unique (key, time) index exist (creating them, 2.05's check first: SQLite
 * now, PostgreSQL and MySQL on each shard before its first flush, retried while the database
 * is down) and replays spill files of earlier runs; its options size the store (the largest buffer, the
 * shortest interval win). A reader (Quota) only registers the name. Returns the table's index,
 * or -1 with a sentence in err. */
int pol_acct_store_add_table(struct pol_acct_store *st, const char *table, bool writer,
                             const struct pol_acct_store_opts *o, char *err, size_t err_len);
/* The index of a registered table, or -1. */
int pol_acct_store_find_table(const struct pol_acct_store *st, const char *table, size_t len);
enum pol_sql_driver pol_acct_store_driver(const struct pol_acct_store *st);

/* Shard threads, from the plugins' shard_start/shard_stop (sh NULL in the testkit: one
 * shard, no timers, counts are kept until the final flush). */
int pol_acct_store_shard_start(struct pol_acct_store *st, struct eng_shard *sh, char *err,
                               size_t err_len);
void pol_acct_store_shard_stop(struct pol_acct_store *st, struct eng_shard *sh);

/* The owner shard of (table, key) among shard_count shards. */
unsigned pol_acct_store_owner(int table, const char *key, size_t key_len, unsigned shard_count);

/* --- Accounting: one mail's counts for several tables ------------------------------------ */

/* Lives in the plugin's req_state while the owners acknowledge. */
struct pol_acct_wait {
    struct pol_req *r;
    uint32_t pending; /* deltas not yet acknowledged */
};

/* Adds m to (table, key, time). Applied at once when this shard owns the key (or there is no
 * engine), else sent to the owner and counted in w->pending; when the last acknowledgement
 * arrives pol_req_resume(w->r) is called. Keys and times are checked by the caller (length,
 * and for PostgreSQL valid UTF-8 without NUL). */
void pol_acct_store_add(struct pol_acct_store *st, struct pol_req *r, struct pol_acct_wait *w,
                        int table, const char *key, size_t key_len, const char *time,
                        size_t time_len, const uint64_t m[POL_ACCT_METRICS]);

/* --- Quota: one value --------------------------------------------------------------------- */

/* Lives in the plugin's req_state while the owner answers. Fields are private except the
 * results. */
struct pol_acct_query {
    struct eng_xmsg xm;
    struct pol_acct_waiter wait;
    struct pol_acct_store *st;
    struct pol_req *r;
    uint64_t ttl_ms;
    uint32_t origin;
    int table;
    int metric;
    uint16_t key_len, time_len;
    char key[POL_ACCT_KEY_BYTES_MAX + 1];
    char time[POL_ACCT_TIME_BYTES_MAX + 1];
    /* results, valid after the resume */
    bool done;
    bool failed;
    uint64_t value;
    char error[256];
};

/* Starts a quota lookup of metric for (table, key, time): stored (fetched when older than
 * ttl_ms) plus this daemon's unflushed counts. Always asynchronous: pol_req_resume(r) follows
 * from the loop. Returns 0, or -1 when it cannot start (no engine: the testkit), with
 * q->error set. */
int pol_acct_store_query(struct pol_acct_store *st, struct pol_req *r, struct pol_acct_query *q,
                         int table, int metric, const char *key, size_t key_len, const char *time,
                         size_t time_len, uint64_t ttl_ms);

/* --- Introspection for tests -------------------------------------------------------------- */

struct pol_acct_store_stats {
    uint64_t accounted;      /* deltas applied to a table */
    uint64_t sent;           /* deltas sent to their owner */
    uint64_t local_fallback; /* deltas kept locally because the message pool was empty */
    uint64_t flushes, flush_rows, flush_failed;
    uint64_t fetches, fetch_keys, fetch_failed;
    uint64_t quota_hits, quota_misses;
    uint64_t spilled, replayed, dropped, spill_errors;
    uint64_t flush_ms; /* time flushes (done and failed) were out, milliseconds */
    /* PostgreSQL: flushes whose answer was lost, settled by claiming their batch id; of those,
     * the ones that had not committed (their counts were sent again) */
    uint64_t claims, claims_resent;
};

/* Sums the shards' counters (exact when they are idle). */
void pol_acct_store_stats(const struct pol_acct_store *st, struct pol_acct_store_stats *out);

#ifdef __cplusplus
}
#endif

#endif
