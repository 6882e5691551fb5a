/*
 * acct_int.h: the state shared by acct_store.c (registry, shards, messages) and acct_flush.c
 * (flushes, fetches, spill files, the final flush). Private to those two files.
 */
#ifndef POL_PLUGINS_ACCT_INT_H
#define POL_PLUGINS_ACCT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugins/acct_agg.h"
#include "plugins/acct_ddl.h"
#include "plugins/acct_spill.h"
#include "plugins/acct_sql.h"
#include "plugins/acct_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decimal text of a uint64_t, NUL included. */
#define ACCT_NUM_BYTES 21u

/* Bytes of one DDL statement of a table (CREATE TABLE with its columns, the unique index). */
#define ACCT_DDL_BYTES 2048u
/* PostgreSQL, MySQL: 2.05's probe, CREATE TABLE, the unique (key, time) index; PostgreSQL
 * also a probe before the index and the batch log's probe and CREATE TABLE IF NOT EXISTS
 * (POL_ACCT_BATCHES_TABLE): a role that may not create (tables its admin created) only runs
 * probes. Texts: probe, create, index, index probe, batch log create. */
#define ACCT_DDL_STMTS 6u

struct acct_table {
    char name[POL_ACCT_TABLE_BYTES_MAX + 1];
    size_t name_len;
    char quoted[POL_ACCT_IDENT_BYTES_MAX];
    bool writer; /* an Accounting plugin writes it: it is created when missing */
    /* 1 once the table is known to exist: SQLite at create; PostgreSQL and MySQL when a
     * shard's DDL gate (acct_ddl.h) first succeeded, or the exit path created it. Atomic. */
    int created;
    /* PostgreSQL, MySQL: the statements each shard's gate runs (built and checked at create) */
    struct pol_ddl_stmt ddl[ACCT_DDL_STMTS];
    unsigned ddl_count;
    char ddl_text[ACCT_DDL_STMTS][ACCT_DDL_BYTES];
    char ddl_what[POL_ACCT_TABLE_BYTES_MAX + 32]; /* "accounting table NAME" */
};

struct acct_shard;

/* The statement a table part sends (acct_stmt.c). SQLite: one VALUES row (or IN pair) per
 * row, the text built for the row count; PostgreSQL: one array literal per column, so the
 * text is constant per table (a bounded cache of prepared statements per connection). */
struct acct_stmt {
    const char *text; /* the statement to send, with params[0..count) */
    const char **params;
    size_t *lens;
    size_t count;
    char *sql; /* SQLite: built per row count; PostgreSQL: the upsert, built once */
    size_t sql_bytes;
    uint32_t sql_rows; /* SQLite: rows (or keys) sql was built for, 0 none */
    bool sql_is_fetch;
    char *sql_select;                /* PostgreSQL: the select, built once */
    char (*nums)[ACCT_NUM_BYTES];    /* SQLite: metric texts per row */
    char *arr[2 + POL_ACCT_METRICS]; /* PostgreSQL: keys, times, the four metrics */
    size_t arr_cap[2 + POL_ACCT_METRICS];
    size_t arr_len[2 + POL_ACCT_METRICS];
    char id_text[ACCT_NUM_BYTES]; /* PostgreSQL: the flush's batch id */
};

/* One table on one shard. At most one statement of it is out at a time, so a fetch never
 * races with a flush of the same rows (their order on the database is the order here). */
struct acct_part {
    struct acct_shard *as;
    int table;
    struct pol_acct_agg agg;
    bool busy;      /* a statement is out */
    bool fetching;  /* ... and it is a fetch (else a flush) */
    bool fetched_last; /* the last statement sent was a fetch: a due flush goes next */
    bool flush_due; /* the interval passed (or the table fills up): flush the dirty rows */
    uint32_t fetch_head, fetch_tail; /* rows waiting for a fetch (index + 1, via fetch_next) */
    uint32_t batch_count;
    uint32_t *batch;        /* rows of the statement out */
    uint32_t rows_max;      /* POL_ACCT_FLUSH_ROWS_MAX, or the buffer when smaller */
    uint64_t flush_sent_ms; /* when the flush out was sent */
    /* PostgreSQL (pol_acct_sql_upsert_pg): the id of the flush out, or of the batch whose
     * outcome is unknown; ids of a part are consecutive from a random start (63 bits). */
    int64_t batch_id;
    /* PostgreSQL: the flush of the rows in batch failed without saying whether it committed
     * (its counts stay in flight, apart from newer ones) until a claim of its id settles it */
    bool uncertain;
    bool claiming; /* the statement out is that claim */
    bool purging;  /* the statement out purges old batch ids (shard 0, first table) */
    uint64_t purged_ms;
    struct acct_stmt stmt;
    /* PostgreSQL, MySQL: the table's check or creation on this shard; flushes wait for it */
    struct pol_ddl_gate ddl;
    /* database health, for logging */
    bool down;
    uint64_t down_since_ms, down_logged_ms, down_failures;
};

enum acct_msg_state {
    ACCT_MSG_FREE,
    ACCT_MSG_SENT,    /* on its way to the owner (or never delivered: the owner stopped) */
    ACCT_MSG_APPLIED, /* counted by the owner, on its way home */
};

/* A delta for the owner of its key. eng_xmsg first: the message is cast back from it. */
struct acct_msg {
    struct eng_xmsg xm;
    struct pol_acct_store *st;
    struct pol_acct_wait *w;
    uint8_t state;
    uint32_t origin;
    int table;
    uint16_t key_len, time_len;
    uint64_t m[POL_ACCT_METRICS];
    char text[POL_ACCT_KEY_BYTES_MAX + 1 + POL_ACCT_TIME_BYTES_MAX + 1];
};

struct acct_shard {
    struct pol_acct_store *st;
    struct eng_shard *sh; /* NULL in the testkit */
    unsigned index, count;
    uint32_t users;          /* plugins started on this shard */
    struct acct_part *parts; /* one per table */
    struct acct_msg *msgs;   /* POL_ACCT_MSGS_PER_SHARD */
    uint32_t *msg_free;      /* stack of free message indexes */
    uint32_t msg_free_count;
    struct pol_acct_waiter *q_head, *q_tail; /* quota checks to answer (pol_acct_query.wait) */
    struct eng_timer flush_timer, work_timer;
    struct pol_acct_spill spill;    /* this shard's file (opened when first needed) */
    struct pol_acct_spill *adopted; /* shard 0: files of earlier runs, replayed first */
    uint32_t adopted_count;
    uint64_t spill_bad;
    bool stopped;
    struct pol_acct_store_stats stats;
};

struct pol_acct_store {
    struct pol_acct_store *next; /* the registry */
    struct pol_sql *db;
    char conn_name[128];
    char mysql_engine[64]; /* MySQL: ENGINE of created tables ("" until set: MyISAM) */
    uint64_t ident;        /* names spill files */
    enum pol_sql_driver driver;
    unsigned refs;
    struct acct_table *tables;
    unsigned table_count;
    struct pol_acct_store_opts opts; /* merged over the writers */
    char spill_dir[POL_ACCT_SPILL_PATH_MAX - 128];
    bool has_writer;
    atomic_bool sealed; /* a shard started: no more tables (set by every shard thread) */
    bool ddl_deferred; /* a synchronous check failed at create: the shards check the rest */
    struct acct_shard *shards[POL_ACCT_SHARDS_MAX];
};

/* acct_stmt.c: where a run of batch ids starts (random, 62 bits: room to count up; ids are
 * kept in 63 bits by (id + 1) & INT64_MAX). salt varies it when getrandom fails. */
int64_t pol_acct_batch_id_start(const void *salt);

/* acct_stmt.c: sizing at part init (start-up), building statements. flush takes dirty rows
 * (up to rows_max, or fewer when PostgreSQL's arrays are full) into pt->batch, moving their
 * counts in flight; fetch takes queued rows. Both return how many rows the statement holds
 * (0: nothing to send) and leave it in pt->stmt. */
int pol_acct_stmt_init(struct acct_part *pt, char *err, size_t err_len);
void pol_acct_stmt_fini(struct acct_part *pt);
uint32_t pol_acct_stmt_flush(struct acct_part *pt);
uint32_t pol_acct_stmt_fetch(struct acct_part *pt);

/* acct_flush.c */
int pol_acct_part_init(struct acct_part *pt, struct acct_shard *as, int table, char *err,
                       size_t err_len);
void pol_acct_part_fini(struct acct_part *pt);
/* Adds m to (key, time) on this shard (its owner), spilling or dropping when full. */
void pol_acct_part_apply(struct acct_part *pt, const char *key, size_t key_len, const char *time,
                         size_t time_len, const uint64_t m[POL_ACCT_METRICS]);
/* Moves every dirty row's delta to the shard's spill file (the rows keep it as spilled, for
 * quota checks). Stops at the first write error (the rest stays in memory). */
void pol_acct_part_spill_dirty(struct acct_part *pt);
void pol_acct_shard_timers_start(struct acct_shard *as);
/* Arms the work timer (0 ms): queued quota checks are answered and tables kicked from the
 * loop, never inside a plugin's step. */
void pol_acct_shard_work(struct acct_shard *as);
void pol_acct_shard_stop(struct acct_shard *as);
/* At shard start with a spill_dir: reopens this shard's file if it exists (a pid reused) and,
 * on shard 0, adopts the files of earlier runs. */
void pol_acct_spill_start(struct acct_shard *as);

/* acct_final.c: at the last release, with every shard thread ended: writes what is unflushed
 * (or spills it) and replays the spill files while the database answers. */
void pol_acct_final_flush(struct pol_acct_store *st);

/* acct_store.c: 2.05's check, the CREATE TABLE when it fails and the unique index, with
 * pol_sql_exec_sync (main thread: SQLite at create, every driver at exit for a table no shard
 * could check). Sets t->created. 0, or -1 with a sentence in err. */
int pol_acct_table_ensure_sync(struct pol_acct_store *st, struct acct_table *t, char *err,
                               size_t err_len);

/* acct_store.c: answers a quota check (on the owner) and sends it home. */
void pol_acct_query_finish(struct acct_shard *as, struct pol_acct_query *q, bool failed,
                           uint64_t value, const char *error);

#ifdef __cplusplus
}
#endif

#endif
