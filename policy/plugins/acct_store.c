/*
 * acct_store.c: the accounting store of one Sql connection (see acct_store.h): the registry
 * of stores, tables and their start-up DDL, per-shard state, the cross-shard messages of
 * Accounting and Quota. Flushes, fetches and spill files are in acct_flush.c.
 *
 * Tables: SQLite's are checked and created at create, synchronously; PostgreSQL's and
 * MySQL's DDL is only built there and runs on each shard's gate (acct_ddl.h, started with the
 * shard's timers in acct_flush.c), so a database that is down at start no longer refuses it.
 *
 * Owns: the stores (a process-wide list, main thread only, guarded by a mutex because tests
 * may build servers from several threads), each shard's state (allocated by the first plugin's
 * shard_start on that shard, freed by the last release on the main thread after every shard
 * thread ended), the delta messages (a fixed pool per shard; a message belongs to the shard
 * that sent it and comes back to it). A message that never came back (its owner shard stopped
 * first) is found by the final flush and counted then.
 */
#include "plugins/acct_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "metrics.h"
#include "plugins/acct_int.h"
#include "plugins/acct_spill.h"
#include "plugins/acct_sql.h"

/* /metrics: one source per store and shard, labelled by the Sql connection's name. */
enum {
    AM_ACCOUNTED,
    AM_FLUSHES,
    AM_FLUSH_ROWS,
    AM_FLUSH_FAILED,
    AM_FLUSH_MS,
    AM_CLAIMS,
    AM_CLAIMS_RESENT,
    AM_SPILLED,
    AM_REPLAYED,
    AM_DROPPED,
    AM_BUFFER_ROWS,
    AM_DIRTY_ROWS,
    AM_COUNT
};
static const struct pol_metrics_field acct_fields[AM_COUNT] = {
    [AM_ACCOUNTED] = {"ringpolicyd_accounting_deltas_total",
                      "Accounting deltas added to the in-memory tables.", false, false},
    [AM_FLUSHES] = {"ringpolicyd_accounting_flushes_total",
                    "Accounting flushes written to the database.", false, false},
    [AM_FLUSH_ROWS] = {"ringpolicyd_accounting_flush_rows_total",
                       "Accounting rows written by flushes.", false, false},
    [AM_FLUSH_FAILED] = {"ringpolicyd_accounting_flush_failures_total",
                         "Accounting flushes the database failed.", false, false},
    [AM_FLUSH_MS] = {"ringpolicyd_accounting_flush_milliseconds_total",
                     "Time accounting flushes (done and failed) were out, in milliseconds "
                     "(divide by flushes plus failures for the mean).",
                     false, false},
    [AM_CLAIMS] = {"ringpolicyd_accounting_batch_claims_total",
                   "PostgreSQL: accounting flushes whose answer was lost, settled by claiming "
                   "their batch id.",
                   false, false},
    [AM_CLAIMS_RESENT] = {"ringpolicyd_accounting_batch_claims_resent_total",
                          "PostgreSQL: of those, flushes that had not committed (their counts "
                          "were sent again under a new id).",
                          false, false},
    [AM_SPILLED] = {"ringpolicyd_accounting_spilled_rows_total",
                    "Accounting deltas written to the spill file.", false, false},
    [AM_REPLAYED] = {"ringpolicyd_accounting_replayed_rows_total",
                     "Accounting deltas replayed from spill files.", false, false},
    [AM_DROPPED] = {"ringpolicyd_accounting_dropped_total",
                    "Accounting deltas lost (buffer full and no spill).", false, false},
    [AM_BUFFER_ROWS] = {"ringpolicyd_accounting_buffer_rows", "Accounting rows held in memory now.",
                        true, false},
    [AM_DIRTY_ROWS] = {"ringpolicyd_accounting_dirty_rows",
                       "Accounting rows waiting for a flush now.", true, false},
};
static const struct pol_metrics_source_desc acct_metrics = {"connection", acct_fields, AM_COUNT};

static void acct_snap(void *ctx, uint64_t *v)
{
    const struct acct_shard *as = ctx;
    const struct pol_acct_store_stats *s = &as->stats;
    v[AM_ACCOUNTED] = s->accounted;
    v[AM_FLUSHES] = s->flushes;
    v[AM_FLUSH_ROWS] = s->flush_rows;
    v[AM_FLUSH_FAILED] = s->flush_failed;
    v[AM_FLUSH_MS] = s->flush_ms;
    v[AM_CLAIMS] = s->claims;
    v[AM_CLAIMS_RESENT] = s->claims_resent;
    v[AM_SPILLED] = s->spilled;
    v[AM_REPLAYED] = s->replayed;
    v[AM_DROPPED] = s->dropped;
    for (unsigned i = 0; i < as->st->table_count; i++) {
        v[AM_BUFFER_ROWS] += as->parts[i].agg.used;
        v[AM_DIRTY_ROWS] += as->parts[i].agg.dirty_count;
    }
}

static pthread_mutex_t stores_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pol_acct_store *stores;

/* ---------------------------------------------------------------------------------------------
 * Stores and tables (main thread)
 */

struct pol_acct_store *pol_acct_store_acquire(struct pol_sql *db, const char *conn_name, char *err,
                                              size_t err_len)
{
    ENG_ASSERT(db != NULL);
    pthread_mutex_lock(&stores_lock);
    struct pol_acct_store *st = stores;
    while (st && st->db != db)
        st = st->next;
    if (!st) {
        enum pol_sql_driver drv = pol_sql_driver_of(db);
        ENG_ASSERT(drv == POL_SQL_SQLITE || drv == POL_SQL_PG || drv == POL_SQL_MYSQL);
        st = calloc(1, sizeof(*st));
        if (!st) {
            pthread_mutex_unlock(&stores_lock);
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
        st->db = db;
        st->driver = drv;
        snprintf(st->conn_name, sizeof(st->conn_name), "%s", conn_name);
        st->ident = XXH3_64bits(conn_name, strlen(conn_name));
        st->opts.flush_interval_ms = POL_ACCT_FLUSH_INTERVAL_MS_DEFAULT;
        st->opts.buffer_rows = POL_ACCT_BUFFER_ROWS_DEFAULT;
        st->next = stores;
        stores = st;
    }
    st->refs++;
    pthread_mutex_unlock(&stores_lock);
    return st;
}

enum pol_sql_driver pol_acct_store_driver(const struct pol_acct_store *st)
{
    return st->driver;
}

int pol_acct_store_find_table(const struct pol_acct_store *st, const char *table, size_t len)
{
    for (unsigned i = 0; i < st->table_count; i++)
        if (st->tables[i].name_len == len && memcmp(st->tables[i].name, table, len) == 0)
            return (int)i;
    return -1;
}

void pol_acct_store_mysql_engine(struct pol_acct_store *st, const char *engine)
{
    snprintf(st->mysql_engine, sizeof(st->mysql_engine), "%s", engine ? engine : "");
}

/* CREATE TABLE for the store's dialect (MySQL: ENGINE quoted as 2.05 quotes it). */
static size_t table_create_sql(const struct pol_acct_store *st, const struct acct_table *t,
                               char *sql, size_t sql_len)
{
    if (st->driver == POL_SQL_MYSQL) {
        char engine_q[sizeof(st->mysql_engine) * 2 + 3];
        const char *e = st->mysql_engine[0] ? st->mysql_engine : "MyISAM";
        if (pol_sql_quote_ident(st->db, e, engine_q, sizeof(engine_q)) == 0)
            return 0;
        return pol_acct_sql_create_mysql(t->quoted, engine_q, sql, sql_len);
    }
    enum pol_acct_dialect d = st->driver == POL_SQL_PG ? POL_ACCT_PG : POL_ACCT_SQLITE;
    return pol_acct_sql_create(d, t->quoted, sql, sql_len);
}

/* Runs one statement of the synchronous DDL. 0, or -1 with "...: DRIVER MESSAGE" in err. */
static int ddl_exec(struct pol_acct_store *st, const char *sql, const char *what, char *err,
                    size_t err_len)
{
    char why[512];
    if (pol_sql_exec_sync(st->db, sql, NULL, 0, NULL, NULL, why, sizeof(why)) == 0)
        return 0;
    snprintf(err, err_len, "%s: %s", what, why);
    return -1;
}

/* 2.05's check_sql_tables, plus the unique (key, time) index every dialect needs now. */
int pol_acct_table_ensure_sync(struct pol_acct_store *st, struct acct_table *t, char *err,
                               size_t err_len)
{
    char sql[2048], why[512];
    pol_acct_sql_exists(t->quoted, sql, sizeof(sql));
    if (pol_sql_exec_sync(st->db, sql, NULL, 0, NULL, NULL, why, sizeof(why)) != 0) {
        if (table_create_sql(st, t, sql, sizeof(sql)) == 0) {
            snprintf(err, err_len, "table name %s is too long", t->name);
            return -1;
        }
        char what[POL_ACCT_TABLE_BYTES_MAX + 64];
        snprintf(what, sizeof(what), "sql table %s does not exist and creating it failed", t->name);
        if (ddl_exec(st, sql, what, err, err_len) != 0)
            return -1;
        eng_log(ENG_LOG_NOTICE, "accounting: created table %s", t->name);
    }
    bool pg = st->driver == POL_SQL_PG;
    if (pg && pol_acct_sql_unique_index_probe_pg(t->quoted, sql, sizeof(sql)) > 0 &&
        pol_sql_exec_sync(st->db, sql, NULL, 0, NULL, NULL, why, sizeof(why)) == 0)
        goto batches; /* the index is there */
    if (pol_acct_sql_unique_index(t->name, t->quoted, sql, sizeof(sql)) == 0) {
        snprintf(err, err_len, "table name %s is too long", t->name);
        return -1;
    }
    char what[POL_ACCT_TABLE_BYTES_MAX + 160];
    snprintf(what, sizeof(what),
             "cannot create the unique (key, time) index of table %s (duplicate rows left by "
             "2.05? merge them first)",
             t->name);
    if (ddl_exec(st, sql, what, err, err_len) != 0)
        return -1;
batches:
    if (pg &&
        pol_sql_exec_sync(st->db, POL_ACCT_SQL_BATCHES_PROBE, NULL, 0, NULL, NULL, why,
                          sizeof(why)) != 0 &&
        (pol_acct_sql_ddl_shared(true, POL_ACCT_SQL_BATCHES_CREATE, sql, sizeof(sql)) == 0 ||
         ddl_exec(st, sql, "cannot create table " POL_ACCT_BATCHES_TABLE, err, err_len) != 0))
        return -1;
    pol_ddl_announce(&t->created);
    return 0;
}

/* PostgreSQL, MySQL: the same three statements for the shards' gates (acct_ddl.h), built now
 * so that a name or text that cannot work is still a start-up error; nothing connects. */
static int table_ddl_build(struct pol_acct_store *st, struct acct_table *t, char *err,
                           size_t err_len)
{
    char create[ACCT_DDL_BYTES], index[ACCT_DDL_BYTES];
    bool pg = st->driver == POL_SQL_PG;
    if (pol_acct_sql_exists(t->quoted, t->ddl_text[0], ACCT_DDL_BYTES) == 0 ||
        table_create_sql(st, t, create, sizeof(create)) == 0 ||
        pol_acct_sql_unique_index(t->name, t->quoted, index, sizeof(index)) == 0 ||
        pol_acct_sql_ddl_shared(pg, create, t->ddl_text[1], ACCT_DDL_BYTES) == 0 ||
        pol_acct_sql_ddl_shared(pg, index, t->ddl_text[2], ACCT_DDL_BYTES) == 0) {
        snprintf(err, err_len, "table name %s is too long or contains $rpd$", t->name);
        return -1;
    }
    t->ddl[0] = (struct pol_ddl_stmt){t->ddl_text[0], true};
    t->ddl[1] = (struct pol_ddl_stmt){t->ddl_text[1], false};
    if (!pg) {
        t->ddl[2] = (struct pol_ddl_stmt){t->ddl_text[2], false};
        t->ddl_count = 3;
    } else {
        /* each CREATE after a probe that skips it when its object is there */
        if (pol_acct_sql_unique_index_probe_pg(t->quoted, t->ddl_text[3], ACCT_DDL_BYTES) == 0 ||
            pol_acct_sql_ddl_shared(true, POL_ACCT_SQL_BATCHES_CREATE, t->ddl_text[4],
                                    ACCT_DDL_BYTES) == 0) {
            snprintf(err, err_len, "table name %s is too long", t->name);
            return -1;
        }
        t->ddl[2] = (struct pol_ddl_stmt){t->ddl_text[3], true};
        t->ddl[3] = (struct pol_ddl_stmt){t->ddl_text[2], false};
        t->ddl[4] = (struct pol_ddl_stmt){POL_ACCT_SQL_BATCHES_PROBE, true};
        t->ddl[5] = (struct pol_ddl_stmt){t->ddl_text[4], false};
        t->ddl_count = 6;
    }
    snprintf(t->ddl_what, sizeof(t->ddl_what), "accounting table %s", t->name);
    return 0;
}

/* PostgreSQL, MySQL: one synchronous check now while the server answers, so that a daemon
 * started next to a working database has its tables when it accepts (as 2.05 and the earlier
 * releases did). Any failure is no start-up error: the shards' gates check the table before
 * their first flush and retry; after one failure the connection's other tables are left to
 * the gates too (start-up waits for at most one failed connection attempt). */
static void table_first_check(struct pol_acct_store *st, struct acct_table *t)
{
    char why[512];
    if (st->ddl_deferred)
        return;
    /* A round trip first: a server that does not answer costs one attempt, not the probe's
     * and then the CREATE's. */
    if (pol_sql_exec_sync(st->db, "SELECT 1", NULL, 0, NULL, NULL, why, sizeof(why)) == 0 &&
        pol_acct_table_ensure_sync(st, t, why, sizeof(why)) == 0)
        return;
    st->ddl_deferred = true;
    eng_log(ENG_LOG_WARNING,
            "accounting: table %s not checked at start-up (%s); each shard checks it before "
            "its first flush, retrying while it fails, counts are kept meanwhile",
            t->name, why);
}

static int opts_merge(struct pol_acct_store *st, const struct pol_acct_store_opts *o, char *err,
                      size_t err_len)
{
    const char *dir = o->spill_dir ? o->spill_dir : "";
    if (st->has_writer) {
        if (strcmp(dir, st->spill_dir) != 0) {
            snprintf(err, err_len,
                     "every Accounting plugin on connection %s must use the same spill_dir "
                     "(\"%s\" here, \"%s\" before)",
                     st->conn_name, dir, st->spill_dir);
            return -1;
        }
        if (o->flush_interval_ms < st->opts.flush_interval_ms)
            st->opts.flush_interval_ms = o->flush_interval_ms;
        if (o->buffer_rows > st->opts.buffer_rows)
            st->opts.buffer_rows = o->buffer_rows;
        return 0;
    }
    if (strlen(dir) >= sizeof(st->spill_dir)) {
        snprintf(err, err_len, "spill_dir is too long");
        return -1;
    }
    snprintf(st->spill_dir, sizeof(st->spill_dir), "%s", dir);
    st->opts.flush_interval_ms = o->flush_interval_ms;
    st->opts.buffer_rows = o->buffer_rows;
    st->has_writer = true;
    return 0;
}

int pol_acct_store_add_table(struct pol_acct_store *st, const char *table, bool writer,
                             const struct pol_acct_store_opts *o, char *err, size_t err_len)
{
    ENG_ASSERT(!atomic_load_explicit(&st->sealed, memory_order_relaxed)); /* tables come first */
    size_t len = strlen(table);
    if (len == 0 || len > POL_ACCT_TABLE_BYTES_MAX) {
        snprintf(err, err_len, "table name %s must have 1 to %u bytes", table,
                 POL_ACCT_TABLE_BYTES_MAX);
        return -1;
    }
    if (writer && opts_merge(st, o, err, err_len) != 0)
        return -1;
    int idx = pol_acct_store_find_table(st, table, len);
    if (idx < 0) {
        struct acct_table *t = realloc(st->tables, (st->table_count + 1) * sizeof(*t));
        if (!t) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        st->tables = t;
        t = &st->tables[st->table_count];
        memset(t, 0, sizeof(*t));
        memcpy(t->name, table, len);
        t->name_len = len;
        if (pol_sql_quote_ident(st->db, table, t->quoted, sizeof(t->quoted)) == 0) {
            snprintf(err, err_len, "table name %s cannot be quoted", table);
            return -1;
        }
        idx = (int)st->table_count++;
    }
    struct acct_table *t = &st->tables[idx];
    if (writer && !t->writer) {
        /* SQLite is a local file: created now (an unwritable path fails start-up). */
        int rc = st->driver == POL_SQL_SQLITE ? pol_acct_table_ensure_sync(st, t, err, err_len)
                                              : table_ddl_build(st, t, err, err_len);
        if (rc != 0)
            return -1;
        t->writer = true;
        if (st->driver != POL_SQL_SQLITE)
            table_first_check(st, t);
    }
    return idx;
}

/* ---------------------------------------------------------------------------------------------
 * Shards (each on its own thread)
 */

static void shard_free(struct acct_shard *as, unsigned table_count)
{
    if (!as)
        return;
    for (unsigned t = 0; as->parts && t < table_count; t++)
        pol_acct_part_fini(&as->parts[t]);
    free(as->parts);
    free(as->msgs);
    free(as->msg_free);
    pol_acct_spill_close(&as->spill);
    for (uint32_t i = 0; i < as->adopted_count; i++)
        pol_acct_spill_close(&as->adopted[i]);
    free(as->adopted);
    free(as);
}

static int shard_alloc(struct pol_acct_store *st, struct eng_shard *sh, unsigned idx,
                       unsigned count, char *err, size_t err_len)
{
    struct acct_shard *as = calloc(1, sizeof(*as));
    if (!as) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    as->st = st;
    as->sh = sh;
    as->index = idx;
    as->count = count;
    pol_acct_spill_init(&as->spill);
    as->parts = calloc(st->table_count ? st->table_count : 1, sizeof(*as->parts));
    as->msgs = calloc(POL_ACCT_MSGS_PER_SHARD, sizeof(*as->msgs));
    as->msg_free = calloc(POL_ACCT_MSGS_PER_SHARD, sizeof(*as->msg_free));
    if (!as->parts || !as->msgs || !as->msg_free) {
        shard_free(as, 0);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < POL_ACCT_MSGS_PER_SHARD; i++)
        as->msg_free[i] = POL_ACCT_MSGS_PER_SHARD - 1 - i;
    as->msg_free_count = POL_ACCT_MSGS_PER_SHARD;
    for (unsigned t = 0; t < st->table_count; t++)
        if (pol_acct_part_init(&as->parts[t], as, (int)t, err, err_len) != 0) {
            shard_free(as, t + 1);
            return -1;
        }
    if (st->spill_dir[0] && pol_acct_spill_path(st->spill_dir, st->ident, idx, as->spill.path,
                                                sizeof(as->spill.path)) != 0) {
        shard_free(as, st->table_count);
        snprintf(err, err_len, "spill_dir %s is too long", st->spill_dir);
        return -1;
    }
    st->shards[idx] = as;
    if (st->spill_dir[0])
        pol_acct_spill_start(as);
    pol_acct_shard_timers_start(as);
    return 0;
}

int pol_acct_store_shard_start(struct pol_acct_store *st, struct eng_shard *sh, char *err,
                               size_t err_len)
{
    unsigned idx = sh ? eng_shard_index(sh) : 0;
    unsigned count = sh ? eng_shard_count(sh) : 1;
    if (idx >= POL_ACCT_SHARDS_MAX) {
        snprintf(err, err_len, "accounting serves at most %u shards", POL_ACCT_SHARDS_MAX);
        return -1;
    }
    /* Every shard's start happens after every create: the table list no longer changes. Each
     * shard thread writes only its own slot; every shard sets the flag, hence an atomic. */
    atomic_store_explicit(&st->sealed, true, memory_order_relaxed);
    if (st->shards[idx]) {
        ENG_ASSERT(st->shards[idx]->sh == sh);
        st->shards[idx]->users++;
        return 0;
    }
    if (shard_alloc(st, sh, idx, count, err, err_len) != 0)
        return -1;
    st->shards[idx]->users = 1;
    if (sh && pol_metrics_source_add(&acct_metrics, st->conn_name, acct_snap, st->shards[idx]) != 0)
        eng_log(ENG_LOG_WARNING, "accounting %s: no room for its metrics on shard %u",
                st->conn_name, idx);
    return 0;
}

void pol_acct_store_shard_stop(struct pol_acct_store *st, struct eng_shard *sh)
{
    unsigned idx = sh ? eng_shard_index(sh) : 0;
    struct acct_shard *as = st->shards[idx];
    ENG_ASSERT(as != NULL);
    ENG_ASSERT(as->users > 0);
    if (--as->users > 0)
        return;
    if (sh)
        pol_metrics_source_remove(as);
    pol_acct_shard_stop(as); /* the final asynchronous flush; freed by the last release */
}

/* ---------------------------------------------------------------------------------------------
 * Accounting: deltas to their owner and acknowledgements back
 */

unsigned pol_acct_store_owner(int table, const char *key, size_t key_len, unsigned shard_count)
{
    ENG_ASSERT(shard_count > 0);
    return (unsigned)(XXH3_64bits_withSeed(key, key_len, (uint64_t)table) % shard_count);
}

static struct acct_shard *shard_of(struct pol_acct_store *st, struct eng_shard *sh)
{
    struct acct_shard *as = st->shards[sh ? eng_shard_index(sh) : 0];
    ENG_ASSERT(as != NULL);
    ENG_ASSERT(as->sh == sh);
    return as;
}

/* Back home: the message is free again; the mail goes on when it was the last one. */
static void x_delta_back(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct acct_msg *msg = (struct acct_msg *)(void *)m;
    struct acct_shard *as = shard_of(msg->st, dst);
    ENG_ASSERT(msg->state == ACCT_MSG_APPLIED);
    ENG_ASSERT(msg >= as->msgs && msg < as->msgs + POL_ACCT_MSGS_PER_SHARD);
    struct pol_acct_wait *w = msg->w;
    msg->state = ACCT_MSG_FREE;
    as->msg_free[as->msg_free_count++] = (uint32_t)(msg - as->msgs);
    ENG_ASSERT(w->pending > 0);
    if (--w->pending == 0)
        pol_req_resume(w->r);
}

/* On the owner: apply, then send the message home. */
static void x_delta(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct acct_msg *msg = (struct acct_msg *)(void *)m;
    struct acct_shard *as = shard_of(msg->st, dst);
    ENG_ASSERT(msg->state == ACCT_MSG_SENT);
    pol_acct_part_apply(&as->parts[msg->table], msg->text, msg->key_len,
                        msg->text + msg->key_len + 1, msg->time_len, msg->m);
    msg->state = ACCT_MSG_APPLIED;
    msg->xm.fn = x_delta_back;
    eng_xshard_send(dst, msg->origin, &msg->xm);
}

void pol_acct_store_add(struct pol_acct_store *st, struct pol_req *r, struct pol_acct_wait *w,
                        int table, const char *key, size_t key_len, const char *time,
                        size_t time_len, const uint64_t m[POL_ACCT_METRICS])
{
    ENG_ASSERT(table >= 0 && (unsigned)table < st->table_count);
    ENG_ASSERT(key_len <= POL_ACCT_KEY_BYTES_MAX);
    ENG_ASSERT(time_len <= POL_ACCT_TIME_BYTES_MAX);
    struct eng_shard *sh = pol_req_shard(r);
    struct acct_shard *as = shard_of(st, sh);
    unsigned owner = pol_acct_store_owner(table, key, key_len, as->count);
    if (owner == as->index || !sh || as->msg_free_count == 0) {
        if (owner != as->index)
            as->stats.local_fallback++;
        pol_acct_part_apply(&as->parts[table], key, key_len, time, time_len, m);
        return;
    }
    struct acct_msg *msg = &as->msgs[as->msg_free[--as->msg_free_count]];
    ENG_ASSERT(msg->state == ACCT_MSG_FREE);
    msg->xm.fn = x_delta;
    msg->st = st;
    msg->w = w;
    msg->origin = as->index;
    msg->table = table;
    msg->key_len = (uint16_t)key_len;
    msg->time_len = (uint16_t)time_len;
    memcpy(msg->text, key, key_len);
    msg->text[key_len] = '\0';
    memcpy(msg->text + key_len + 1, time, time_len);
    msg->text[key_len + 1 + time_len] = '\0';
    memcpy(msg->m, m, sizeof(msg->m));
    msg->state = ACCT_MSG_SENT;
    w->r = r;
    w->pending++;
    as->stats.sent++;
    eng_xshard_send(sh, owner, &msg->xm);
}

/* ---------------------------------------------------------------------------------------------
 * Quota: ask the owner, answer home
 */

static void x_query_back(struct eng_shard *dst, struct eng_xmsg *m)
{
    (void)dst;
    struct pol_acct_query *q = (struct pol_acct_query *)(void *)m;
    ENG_ASSERT(q->done);
    pol_req_resume(q->r);
}

void pol_acct_query_finish(struct acct_shard *as, struct pol_acct_query *q, bool failed,
                           uint64_t value, const char *error)
{
    ENG_ASSERT(!q->done);
    q->done = true;
    q->failed = failed;
    q->value = value;
    if (failed)
        snprintf(q->error, sizeof(q->error), "%s", error);
    if (q->origin == as->index) {
        pol_req_resume(q->r);
        return;
    }
    q->xm.fn = x_query_back;
    eng_xshard_send(as->sh, q->origin, &q->xm);
}

/* Queued on the owner and answered by its work timer, after this turn's cross-shard messages
 * (deltas of earlier mails included) were applied. */
static void query_enqueue(struct acct_shard *as, struct pol_acct_query *q)
{
    q->wait.next = NULL;
    if (as->q_tail)
        as->q_tail->next = &q->wait;
    else
        as->q_head = &q->wait;
    as->q_tail = &q->wait;
    pol_acct_shard_work(as);
}

static void x_query(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct pol_acct_query *q = (struct pol_acct_query *)(void *)m;
    query_enqueue(shard_of(q->st, dst), q);
}

int pol_acct_store_query(struct pol_acct_store *st, struct pol_req *r, struct pol_acct_query *q,
                         int table, int metric, const char *key, size_t key_len, const char *time,
                         size_t time_len, uint64_t ttl_ms)
{
    ENG_ASSERT(table >= 0 && (unsigned)table < st->table_count);
    ENG_ASSERT(metric >= 0 && metric < POL_ACCT_METRICS);
    ENG_ASSERT(key_len <= POL_ACCT_KEY_BYTES_MAX);
    ENG_ASSERT(time_len <= POL_ACCT_TIME_BYTES_MAX);
    struct eng_shard *sh = pol_req_shard(r);
    memset(q, 0, sizeof(*q));
    if (!sh) {
        snprintf(q->error, sizeof(q->error), "quota checks need the daemon's shards");
        return -1;
    }
    struct acct_shard *as = shard_of(st, sh);
    q->st = st;
    q->r = r;
    q->ttl_ms = ttl_ms;
    q->origin = as->index;
    q->table = table;
    q->metric = metric;
    q->key_len = (uint16_t)key_len;
    q->time_len = (uint16_t)time_len;
    memcpy(q->key, key, key_len);
    memcpy(q->time, time, time_len);
    unsigned owner = pol_acct_store_owner(table, key, key_len, as->count);
    if (owner == as->index) {
        query_enqueue(as, q);
        return 0;
    }
    q->xm.fn = x_query;
    eng_xshard_send(sh, owner, &q->xm);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The end (main thread, every shard thread has ended)
 */

void pol_acct_store_stats(const struct pol_acct_store *st, struct pol_acct_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++) {
        const struct acct_shard *as = st->shards[i];
        if (!as)
            continue;
        const uint64_t *src = (const uint64_t *)(const void *)&as->stats;
        uint64_t *dst = (uint64_t *)(void *)out;
        for (size_t k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
            dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    }
}

void pol_acct_store_release(struct pol_acct_store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&stores_lock);
    ENG_ASSERT(st->refs > 0);
    if (--st->refs > 0) {
        pthread_mutex_unlock(&stores_lock);
        return;
    }
    struct pol_acct_store **pp = &stores;
    while (*pp != st)
        pp = &(*pp)->next;
    *pp = st->next;
    pthread_mutex_unlock(&stores_lock);

    pol_acct_final_flush(st);
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++)
        shard_free(st->shards[i], st->table_count);
    free(st->tables);
    free(st);
}
