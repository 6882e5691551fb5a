/*
 * acct_final.c: the end of an accounting store (see acct_int.h): on the main thread, after
 * every shard thread has ended, whatever the shards could not hand to the database is written
 * with pol_sql_exec_sync: rows still dirty, statements whose result never came (written again:
 * at least once, as acct_flush.c), deltas sent to an owner shard that had already stopped.
 * A PostgreSQL or MySQL table no shard could check is created first (pol_acct_table_ensure_sync).
 * When the database refuses, the counts go to the spill files (replayed by the next start),
 * or, without a spill_dir, are logged as lost with their totals. Spill files are then replayed
 * while the database answers. May block (it is the exit path; the engine is gone).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "plugins/acct_int.h"

/* Records read back per statement when replaying a file at exit. */
#define FINAL_REPLAY_BATCH 1000u

struct sync_buf {
    int64_t batch_id; /* PostgreSQL: the next write's batch id */
    uint32_t rows_max;
    uint32_t *batch;
    const char **params;
    char (*nums)[ACCT_NUM_BYTES];
    char *sql;
    size_t sql_bytes;
};

static void sync_buf_fini(struct sync_buf *b)
{
    free(b->batch);
    free(b->params);
    free(b->nums);
    free(b->sql);
    memset(b, 0, sizeof(*b));
}

static int sync_buf_init(struct sync_buf *b, uint32_t rows_max)
{
    memset(b, 0, sizeof(*b));
    b->rows_max = rows_max;
    b->batch = calloc(rows_max, sizeof(*b->batch));
    b->params = calloc((size_t)rows_max * 6 + 1, sizeof(*b->params));
    b->nums = calloc((size_t)rows_max * POL_ACCT_METRICS, sizeof(*b->nums));
    b->sql_bytes = pol_acct_sql_upsert_bytes(rows_max, POL_ACCT_IDENT_BYTES_MAX) + 256;
    b->batch_id = pol_acct_batch_id_start(b);
    b->sql = malloc(b->sql_bytes);
    if (!b->batch || !b->params || !b->nums || !b->sql) {
        sync_buf_fini(b);
        return -1;
    }
    return 0;
}

static void count_row(void *ctx, const struct pol_sql_result *res, size_t row)
{
    (void)res;
    (void)row;
    ++*(size_t *)ctx;
}

/* PostgreSQL: whether the flush of batch id committed, by claiming the id (acct_sql.h): 1 it
 * did, 0 it did not (and now never will), -1 unknown (the claim failed; reason in err). */
static int claim_sync(struct pol_acct_store *st, int64_t id, char *err, size_t err_len)
{
    char text[ACCT_NUM_BYTES];
    snprintf(text, sizeof(text), "%lld", (long long)id);
    const char *params[1] = {text};
    size_t rows = 0;
    if (pol_sql_exec_sync(st->db, POL_ACCT_SQL_BATCH_CLAIM, params, 1, count_row, &rows, err,
                          err_len) != 0)
        return -1;
    return rows == 0 ? 1 : 0;
}

/* Writes every dirty row of agg into table_q, slice by slice (PostgreSQL: each with a batch id,
 * and a write that fails is claimed: written once whatever became of its answer). 0, or -1
 * with the driver's message in err (the rows of the failed slice are dirty again). */
static int sync_flush_rows(struct pol_acct_store *st, const char *table_q, struct pol_acct_agg *agg,
                           struct sync_buf *b, char *err, size_t err_len)
{
    bool pg = st->driver == POL_SQL_PG;
    enum pol_acct_dialect d = pg ? POL_ACCT_PG : POL_ACCT_SQLITE;
    for (;;) {
        uint32_t n = pol_acct_agg_take_dirty(agg, b->rows_max, b->batch);
        if (n == 0)
            return 0;
        char id[ACCT_NUM_BYTES];
        snprintf(id, sizeof(id), "%lld", (long long)b->batch_id);
        size_t first = pg ? 1 : 0; /* PostgreSQL: the batch id first */
        if (pg)
            b->params[0] = id;
        for (uint32_t i = 0; i < n; i++) {
            const struct pol_acct_row *row = pol_acct_agg_row(agg, b->batch[i]);
            const char **p = &b->params[first + 6 * (size_t)i];
            p[0] = pol_acct_row_key(row);
            p[1] = pol_acct_row_time(row);
            for (int m = 0; m < POL_ACCT_METRICS; m++) {
                char *num = b->nums[(size_t)i * POL_ACCT_METRICS + (size_t)m];
                snprintf(num, ACCT_NUM_BYTES, "%llu", (unsigned long long)row->inflight[m]);
                p[2 + m] = num;
            }
        }
        int rc = -1;
        size_t len = pg ? pol_acct_sql_upsert_values_pg(table_q, n, b->sql, b->sql_bytes)
                        : pol_acct_sql_upsert(d, table_q, n, b->sql, b->sql_bytes);
        if (len > 0)
            rc = pol_sql_exec_sync(st->db, b->sql, b->params, first + 6 * (size_t)n, NULL, NULL,
                                   err, err_len);
        else
            snprintf(err, err_len, "statement too long");
        if (rc != 0 && pg && len > 0) {
            char why[256];
            int committed = claim_sync(st, b->batch_id, why, sizeof(why));
            if (committed == 1)
                rc = 0;
            else if (committed < 0)
                eng_log(ENG_LOG_WARNING,
                        "accounting: a write at exit failed (%s) and its batch id could not be "
                        "claimed (%s): written again later, it may count twice",
                        err, why);
        }
        b->batch_id = (b->batch_id + 1) & INT64_MAX;
        pol_acct_agg_flush_done(agg, b->batch, n, rc == 0);
        if (rc != 0)
            return -1;
    }
}

/* A flush whose result never came, or whose answer was lost (PostgreSQL: pt->uncertain):
 * settled by a claim on PostgreSQL; otherwise, or when the claim fails, its counts are
 * written again and may count twice. */
static void settle_flush(struct pol_acct_store *st, struct acct_part *pt)
{
    const char *name = st->tables[pt->table].name;
    char why[512] = "";
    int committed = -1;
    if (st->driver == POL_SQL_PG) {
        committed = claim_sync(st, pt->batch_id, why, sizeof(why));
        if (committed >= 0) {
            pol_acct_agg_flush_done(&pt->agg, pt->batch, pt->batch_count, committed == 1);
            return;
        }
    }
    eng_log(ENG_LOG_WARNING,
            "accounting: the result of a flush of %u rows of table %s never came%s%s; writing "
            "them again (they may count twice)",
            pt->batch_count, name, why[0] ? " and its batch id could not be claimed: " : "", why);
    pol_acct_agg_flush_done(&pt->agg, pt->batch, pt->batch_count, false);
}

/* Statements that never completed, fetches whose requests are gone, deltas never delivered. */
static void settle_shard(struct pol_acct_store *st, struct acct_shard *as)
{
    for (unsigned t = 0; t < st->table_count; t++) {
        struct acct_part *pt = &as->parts[t];
        for (uint32_t i = 0; pt->busy && pt->fetching && i < pt->batch_count; i++) {
            struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->batch[i]);
            row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_FETCH);
            row->waiters = row->waiters_tail = NULL;
        }
        /* A flush or the claim of an uncertain one out, or an uncertain one waiting. */
        if (pt->batch_count > 0 && (pt->uncertain || (pt->busy && !pt->fetching)))
            settle_flush(st, pt);
        pt->busy = pt->fetching = pt->uncertain = pt->claiming = pt->purging = false;
        pt->batch_count = 0;
        while (pt->fetch_head) {
            struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->fetch_head - 1);
            pt->fetch_head = row->fetch_next;
            row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_FETCH);
            row->waiters = row->waiters_tail = NULL;
        }
        pt->fetch_tail = 0;
    }
    for (uint32_t i = 0; i < POL_ACCT_MSGS_PER_SHARD; i++) {
        struct acct_msg *msg = &as->msgs[i];
        if (msg->state != ACCT_MSG_SENT)
            continue;
        unsigned owner = pol_acct_store_owner(msg->table, msg->text, msg->key_len, as->count);
        struct acct_shard *os = st->shards[owner] ? st->shards[owner] : as;
        pol_acct_part_apply(&os->parts[msg->table], msg->text, msg->key_len,
                            msg->text + msg->key_len + 1, msg->time_len, msg->m);
        msg->state = ACCT_MSG_FREE;
    }
}

static void log_loss(const struct acct_part *pt, const char *why)
{
    uint64_t rows = 0, sum[POL_ACCT_METRICS] = {0};
    for (uint32_t ri = pt->agg.dirty_head; ri != 0; ri = pt->agg.rows[ri - 1].dirty_next) {
        rows++;
        for (int m = 0; m < POL_ACCT_METRICS; m++)
            sum[m] += pt->agg.rows[ri - 1].delta[m];
    }
    eng_log(ENG_LOG_ERR,
            "accounting: %llu rows of table %s could not be written at exit (%s) and no "
            "spill_dir is set: lost count=%llu count_rcpt=%llu size=%llu size_rcpt=%llu",
            (unsigned long long)rows, pt->as->st->tables[pt->table].name, why,
            (unsigned long long)sum[0], (unsigned long long)sum[1], (unsigned long long)sum[2],
            (unsigned long long)sum[3]);
}

/* A table no shard could check (the database was down all along, or came back just now): its
 * DDL before the first write. 0, or -1 with the reason in err. */
static int final_ensure(struct pol_acct_store *st, struct acct_table *t, char *err, size_t err_len)
{
    if (!t->writer || pol_ddl_announced(&t->created))
        return 0;
    return pol_acct_table_ensure_sync(st, t, err, err_len);
}

static void flush_shard(struct pol_acct_store *st, struct acct_shard *as, struct sync_buf *b)
{
    for (unsigned t = 0; t < st->table_count; t++) {
        struct acct_part *pt = &as->parts[t];
        char why[512];
        if (pt->agg.dirty_count == 0 ||
            (final_ensure(st, &st->tables[t], why, sizeof(why)) == 0 &&
             sync_flush_rows(st, st->tables[t].quoted, &pt->agg, b, why, sizeof(why)) == 0))
            continue;
        if (st->spill_dir[0]) {
            eng_log(ENG_LOG_ERR, "accounting: writing table %s at exit failed (%s): spilled to %s",
                    st->tables[t].name, why, as->spill.path);
            pol_acct_part_spill_dirty(pt);
        } else {
            log_loss(pt, why);
        }
    }
}

/* Reads a spill file back into the database; the file keeps what could not be written. */
static void replay_file(struct pol_acct_store *st, struct pol_acct_spill *s, struct sync_buf *b,
                        struct pol_acct_spill_rec *recs)
{
    uint64_t done = 0, bad = 0;
    while (s->fd >= 0 && s->records > 0) {
        int n = pol_acct_spill_pop(s, recs, FINAL_REPLAY_BATCH, true, &bad);
        if (n <= 0)
            break;
        struct pol_acct_agg agg;
        char why[512] = "out of memory";
        char table_q[POL_ACCT_IDENT_BYTES_MAX];
        int rc = -1;
        if (pol_acct_agg_init(&agg, FINAL_REPLAY_BATCH) == 0) {
            for (int i = 0; i < n; i++) {
                struct pol_acct_row *row = pol_acct_agg_get(&agg, recs[i].key, recs[i].key_len,
                                                            recs[i].time, recs[i].time_len);
                ENG_ASSERT(row != NULL); /* room for FINAL_REPLAY_BATCH rows */
                pol_acct_agg_add(&agg, row, recs[i].m);
            }
            int t = pol_acct_store_find_table(st, recs[0].table, recs[0].table_len);
            if (t >= 0 && final_ensure(st, &st->tables[t], why, sizeof(why)) != 0)
                rc = -1;
            else if (pol_sql_quote_ident(st->db, recs[0].table, table_q, sizeof(table_q)) > 0)
                rc = sync_flush_rows(st, table_q, &agg, b, why, sizeof(why));
            pol_acct_agg_fini(&agg);
        }
        if (rc != 0) {
            /* Back into the file (at its end: order does not matter) for the next start. */
            if (pol_acct_spill_append(s, recs, (size_t)n) != 0)
                eng_log(ENG_LOG_ERR, "accounting: %d counts of %s lost: cannot write them back", n,
                        s->path);
            eng_log(ENG_LOG_ERR,
                    "accounting: replaying %s failed (%s); %llu records left for "
                    "the next start",
                    s->path, why, (unsigned long long)s->records);
            break;
        }
        done += (uint64_t)n;
    }
    if (done || bad)
        eng_log(ENG_LOG_NOTICE, "accounting: %llu counts replayed from %s (%llu damaged records)",
                (unsigned long long)done, s->path, (unsigned long long)bad);
    pol_acct_spill_remove_if_empty(s);
    pol_acct_spill_close(s);
}

void pol_acct_final_flush(struct pol_acct_store *st)
{
    struct sync_buf b;
    struct pol_acct_spill_rec *recs = calloc(FINAL_REPLAY_BATCH, sizeof(*recs));
    if (!recs || sync_buf_init(&b, POL_ACCT_FLUSH_ROWS_MAX) != 0) {
        free(recs);
        eng_log(ENG_LOG_ERR, "accounting: out of memory at exit: unflushed counts lost");
        return;
    }
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++)
        if (st->shards[i])
            st->shards[i]->stopped = true; /* no timers from here (a shard whose stop was
                                              skipped still has its state) */
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++)
        if (st->shards[i])
            settle_shard(st, st->shards[i]);
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++)
        if (st->shards[i])
            flush_shard(st, st->shards[i], &b);
    for (unsigned i = 0; i < POL_ACCT_SHARDS_MAX; i++) {
        struct acct_shard *as = st->shards[i];
        if (!as)
            continue;
        for (uint32_t k = 0; k < as->adopted_count; k++)
            replay_file(st, &as->adopted[k], &b, recs);
        as->adopted_count = 0;
        replay_file(st, &as->spill, &b, recs);
    }
    sync_buf_fini(&b);
    free(recs);
}
