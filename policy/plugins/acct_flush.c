/*
 * acct_flush.c: what a shard does with its accounting rows (see acct_store.h): flush the dirty
 * ones every flush_interval, fetch stored values for quota checks, answer those checks, spill
 * to and replay from the shard's file, and the final synchronous flush at exit.
 *
 * Per table and shard one statement is out at a time (acct_part.busy): quota fetches go first
 * (a request waits for them), but a due flush slice gets every other turn. Statement texts,
 * parameter arrays and number texts are allocated at shard start for the largest statement;
 * a flush's parameters point
 * into the rows themselves, which stay put (INFLIGHT and FETCH rows are never evicted) until
 * the statement's done runs. Nothing here runs inside a plugin's step: steps only queue work
 * and arm the shard's work timer.
 *
 * Tables (PostgreSQL, MySQL): each part has a DDL gate (acct_ddl.h) started with the shard's
 * timers; flushes wait until it is ready, fetches while its check is out. The final flush
 * creates a table no shard could check before it writes (acct_final.c).
 *
 * Failure: a refused flush gives the counts back to the rows (and, with a spill_dir, writes
 * them to the spill file); the next interval retries. A refused fetch fails its quota checks
 * (a plugin failure, as 2.05 fails on any SQL error). The first failure is logged, then at
 * most one line a minute per table, and the recovery.
 *
 * Exactly once (PostgreSQL). A flush is one autocommitted statement; the server commits it
 * before it sends the answer, and the answer can be lost after the commit: the connection
 * breaks between the commit and the answer reaching libpq (backend terminated, server
 * restarted, TCP reset); the statement outlives its deadline (query_timeout_ms) and commits
 * anyway (engine/pg.c resets the connection, the backend only notices when it writes the
 * answer); or the flush sat in the pipeline behind such a statement. Resending its counts
 * would then count them twice. So each flush carries a batch id (consecutive per part from a
 * random start) that the statement itself records (acct_sql.h, pol_acct_sql_upsert_pg: the
 * upsert only runs when the id is new). A failed flush stays apart (pt->uncertain: its rows
 * keep the counts in flight, newer counts collect in delta) until a claim of its id settles
 * it before anything else of the part runs: a row back means the statement never committed
 * and now never will (its counts go back to the rows, sent under a new id); none means it
 * committed. A claim that fails is retried at the next interval (quota checks waiting on the
 * part fail meanwhile, as a failed fetch fails them); the exit path claims synchronously
 * (acct_final.c). Shard 0 purges ids older than a day once an hour.
 * The exit path's own synchronous writes carry ids too. Still at least once: MySQL (no
 * data-modifying CTE; a flush whose answer is lost after the commit is written again, at most
 * one batch per table and shard per such event), and a lost answer at exit while the claim
 * itself fails. SQLite runs in-process (its result always arrives); spill-file replay goes
 * through the flushes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "plugins/acct_int.h"

#define DOWN_LOG_INTERVAL_MS 60000u
/* Records read back from a spill file per step (they go to the rows, then to a flush). */
#define REPLAY_BATCH 64u
/* Records written to a spill file per write. */
#define SPILL_BATCH 64u
/* How often shard 0 purges batch ids older than a day (PostgreSQL). */
#define ACCT_PURGE_INTERVAL_MS 3600000u

static bool spill_enabled(const struct acct_shard *as)
{
    return as->st->spill_dir[0] != '\0';
}

/* ---------------------------------------------------------------------------------------------
 * Tables of a shard
 */

static void part_ddl_done(void *ctx, bool ok);

int pol_acct_part_init(struct acct_part *pt, struct acct_shard *as, int table, char *err,
                       size_t err_len)
{
    struct pol_acct_store *st = as->st;
    struct acct_table *t = &st->tables[table];
    memset(pt, 0, sizeof(*pt));
    pt->as = as;
    pt->table = table;
    /* A table another shard already checked needs no check here. */
    bool ready = !t->writer || t->ddl_count == 0 || pol_ddl_announced(&t->created);
    pol_ddl_gate_init(&pt->ddl, st->db, t->ddl_what,
                      spill_enabled(as) ? "counts are kept in memory and the spill file"
                                        : "counts are kept in memory",
                      &t->created, t->ddl, t->ddl_count, ready, part_ddl_done, pt);
    if (pol_acct_agg_init(&pt->agg, st->opts.buffer_rows) != 0) {
        snprintf(err, err_len, "out of memory for %u accounting rows", st->opts.buffer_rows);
        return -1;
    }
    pt->batch_id = pol_acct_batch_id_start(pt);
    pt->rows_max = st->opts.buffer_rows < POL_ACCT_FLUSH_ROWS_MAX ? st->opts.buffer_rows
                                                                  : POL_ACCT_FLUSH_ROWS_MAX;
    uint32_t batch_max =
        pt->rows_max > POL_ACCT_FETCH_KEYS_MAX ? pt->rows_max : POL_ACCT_FETCH_KEYS_MAX;
    pt->batch = calloc(batch_max, sizeof(*pt->batch));
    if (!pt->batch) {
        snprintf(err, err_len, "out of memory for accounting statements");
        return -1;
    }
    return pol_acct_stmt_init(pt, err, err_len);
}

void pol_acct_part_fini(struct acct_part *pt)
{
    pol_ddl_gate_fini(&pt->ddl);
    pol_acct_agg_fini(&pt->agg);
    pol_acct_stmt_fini(pt);
    free(pt->batch);
    memset(pt, 0, sizeof(*pt));
}

static const char *table_name(const struct acct_part *pt)
{
    return pt->as->st->tables[pt->table].name;
}

static uint64_t now_ms(const struct acct_shard *as)
{
    return as->sh ? eng_now_ms(as->sh) : eng_clock_ms();
}

/* ---------------------------------------------------------------------------------------------
 * Spill files (synchronous, local disk)
 */

static void rec_of_row(struct pol_acct_spill_rec *rec, const struct acct_part *pt,
                       const struct pol_acct_row *row, const uint64_t m[POL_ACCT_METRICS])
{
    const struct acct_table *t = &pt->as->st->tables[pt->table];
    pol_acct_spill_rec_set(rec, t->name, t->name_len, pol_acct_row_key(row), row->key_len,
                           pol_acct_row_time(row), row->time_len, m);
}

static void spill_error(struct acct_shard *as, int rc)
{
    as->stats.spill_errors++;
    if (as->stats.spill_errors == 1 || as->stats.spill_errors % 1000 == 0)
        eng_log(ENG_LOG_ERR, "accounting: cannot write spill file %s: %s (%llu times)",
                as->spill.path, strerror(-rc), (unsigned long long)as->stats.spill_errors);
}

void pol_acct_part_spill_dirty(struct acct_part *pt)
{
    struct acct_shard *as = pt->as;
    struct pol_acct_spill_rec recs[SPILL_BATCH];
    uint32_t idx[SPILL_BATCH];
    for (;;) {
        uint32_t n = pol_acct_agg_peek_dirty(&pt->agg, SPILL_BATCH, idx);
        if (n == 0)
            return;
        for (uint32_t i = 0; i < n; i++) {
            const struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, idx[i]);
            rec_of_row(&recs[i], pt, row, row->delta);
        }
        int rc = pol_acct_spill_append(&as->spill, recs, n);
        if (rc != 0) {
            spill_error(as, rc);
            return;
        }
        pol_acct_agg_mark_spilled(&pt->agg, idx, n);
        as->stats.spilled += n;
    }
}

/* A delta that found no room in the table: straight to the spill file, or lost. */
static void spill_direct(struct acct_part *pt, const char *key, size_t key_len, const char *time,
                         size_t time_len, const uint64_t m[POL_ACCT_METRICS])
{
    struct acct_shard *as = pt->as;
    const struct acct_table *t = &as->st->tables[pt->table];
    if (spill_enabled(as)) {
        struct pol_acct_spill_rec rec;
        pol_acct_spill_rec_set(&rec, t->name, t->name_len, key, key_len, time, time_len, m);
        int rc = pol_acct_spill_append(&as->spill, &rec, 1);
        if (rc == 0) {
            as->stats.spilled++;
            return;
        }
        spill_error(as, rc);
    }
    as->stats.dropped++;
    if (as->stats.dropped == 1 || as->stats.dropped % 1000 == 0)
        eng_log(ENG_LOG_ERR,
                "accounting: table %s is full on shard %u (%u rows unflushed) and %s: %llu "
                "counts lost so far",
                t->name, as->index, pt->agg.rows_max,
                spill_enabled(as) ? "the spill file cannot be written" : "no spill_dir is set",
                (unsigned long long)as->stats.dropped);
}

void pol_acct_part_apply(struct acct_part *pt, const char *key, size_t key_len, const char *time,
                         size_t time_len, const uint64_t m[POL_ACCT_METRICS])
{
    struct acct_shard *as = pt->as;
    as->stats.accounted++;
    struct pol_acct_row *row = pol_acct_agg_get(&pt->agg, key, key_len, time, time_len);
    if (!row) {
        spill_direct(pt, key, key_len, time, time_len, m);
        return;
    }
    pol_acct_agg_add(&pt->agg, row, m);
    /* Three quarters full: flush now rather than at the end of the interval. */
    if (!pt->flush_due && pt->agg.dirty_count >= pt->agg.rows_max / 4 * 3) {
        pt->flush_due = true;
        pol_acct_shard_work(as);
    }
}

/* The spill file records to read back next: an adopted file of an earlier run first. */
static struct pol_acct_spill *replay_source(struct acct_shard *as)
{
    while (as->adopted_count > 0) {
        struct pol_acct_spill *s = &as->adopted[as->adopted_count - 1];
        if (s->records > 0)
            return s;
        eng_log(ENG_LOG_NOTICE, "accounting: spill file %s replayed", s->path);
        pol_acct_spill_remove_if_empty(s);
        pol_acct_spill_close(s);
        as->adopted_count--;
    }
    return as->spill.records > 0 ? &as->spill : NULL;
}

/* How many records may be read back now: up to REPLAY_BATCH, and no table more than half
 * dirty afterwards. The database's state does not matter: read-back counts are flushed like
 * any others, and while it is still down they go back to the file; so a replay is also what
 * notices that it came back when no new mail arrives. */
static size_t replay_room(const struct acct_shard *as)
{
    size_t room = REPLAY_BATCH;
    for (unsigned t = 0; t < as->st->table_count; t++) {
        const struct acct_part *pt = &as->parts[t];
        uint32_t half = pt->agg.rows_max / 2;
        size_t free_rows = pt->agg.dirty_count < half ? half - pt->agg.dirty_count : 0;
        if (free_rows < room)
            room = free_rows;
    }
    return room;
}

/* Puts one record back into its table's rows; false when there is no room. */
static bool replay_one(struct acct_shard *as, const struct pol_acct_spill_rec *rec)
{
    int t = pol_acct_store_find_table(as->st, rec->table, rec->table_len);
    if (t < 0) {
        /* Written by a configuration that had this table: nobody here writes it now. */
        as->stats.dropped++;
        eng_log(ENG_LOG_ERR, "accounting: spill record for unknown table %s dropped", rec->table);
        return true;
    }
    struct acct_part *pt = &as->parts[t];
    struct pol_acct_row *row =
        pol_acct_agg_get_replay(&pt->agg, rec->key, rec->key_len, rec->time, rec->time_len);
    if (!row)
        return false;
    pol_acct_agg_unspill(&pt->agg, row, rec->m);
    pt->flush_due = true;
    as->stats.replayed++;
    return true;
}

/* Reads one batch back from the spill files into the rows (they are flushed next). */
static void replay_some(struct acct_shard *as)
{
    struct pol_acct_spill *src = replay_source(as);
    size_t room = src && !as->stopped ? replay_room(as) : 0;
    if (room == 0)
        return;
    struct pol_acct_spill_rec recs[REPLAY_BATCH];
    int n = pol_acct_spill_pop(src, recs, room, false, &as->spill_bad);
    if (n < 0) {
        spill_error(as, n);
        return;
    }
    for (int i = 0; i < n; i++)
        if (!replay_one(as, &recs[i])) {
            int rc = pol_acct_spill_append(src, &recs[i], (size_t)(n - i));
            if (rc != 0)
                spill_error(as, rc);
            break;
        }
    if (src == &as->spill)
        pol_acct_spill_remove_if_empty(src);
    pol_acct_shard_work(as);
}

/* Files of earlier runs adopted by shard 0 at once (more wait for the next start). */
#define ADOPT_MAX 64u

static void adopt(void *ctx, struct pol_acct_spill *s)
{
    struct acct_shard *as = ctx;
    if (as->adopted_count == ADOPT_MAX || s->records == 0) {
        if (s->records == 0)
            pol_acct_spill_remove_if_empty(s);
        pol_acct_spill_close(s);
        return;
    }
    eng_log(ENG_LOG_NOTICE, "accounting: replaying %llu counts from spill file %s",
            (unsigned long long)s->records, s->path);
    as->adopted[as->adopted_count++] = *s;
}

void pol_acct_spill_start(struct acct_shard *as)
{
    if (access(as->spill.path, F_OK) == 0) { /* our pid was used by a run that left a file */
        int rc = pol_acct_spill_open(&as->spill, as->spill.path);
        if (rc != 0)
            spill_error(as, rc);
    }
    if (as->index != 0)
        return;
    as->adopted = calloc(ADOPT_MAX, sizeof(*as->adopted));
    if (!as->adopted) {
        eng_log(ENG_LOG_ERR, "accounting: out of memory: spill files of earlier runs are left");
        return;
    }
    /* Files named with our own pid belong to our shards (pol_acct_spill_orphans skips them). */
    int rc = pol_acct_spill_orphans(as->st->spill_dir, as->st->ident, adopt, as);
    if (rc < 0)
        eng_log(ENG_LOG_ERR, "accounting: cannot read spill_dir %s: %s", as->st->spill_dir,
                strerror(-rc));
}

/* ---------------------------------------------------------------------------------------------
 * Database health (logging only)
 */

static void note_failure(struct acct_part *pt, const char *what, const char *error)
{
    struct acct_shard *as = pt->as;
    uint64_t now = now_ms(as);
    pt->down_failures++;
    if (!pt->down) {
        pt->down = true;
        pt->down_since_ms = now;
        pt->down_logged_ms = now;
        eng_log(ENG_LOG_ERR, "accounting: %s table %s failed on shard %u: %s; counts are kept%s",
                what, table_name(pt), as->index, error,
                spill_enabled(as) ? " (and written to the spill file)" : " in memory");
        return;
    }
    if (now - pt->down_logged_ms >= DOWN_LOG_INTERVAL_MS) {
        pt->down_logged_ms = now;
        eng_log(ENG_LOG_ERR, "accounting: table %s still failing on shard %u (%llu attempts): %s",
                table_name(pt), as->index, (unsigned long long)pt->down_failures, error);
    }
}

static void note_success(struct acct_part *pt)
{
    if (!pt->down)
        return;
    eng_log(ENG_LOG_NOTICE,
            "accounting: table %s reachable again on shard %u after %llu failed attempts (%llu s)",
            table_name(pt), pt->as->index, (unsigned long long)pt->down_failures,
            (unsigned long long)((now_ms(pt->as) - pt->down_since_ms) / 1000));
    pt->down = false;
    pt->down_failures = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Statements: fetch, flush
 */

static void part_kick(struct acct_part *pt);

static struct pol_acct_query *query_of(struct pol_acct_waiter *w)
{
    return (struct pol_acct_query *)(void *)((char *)w - offsetof(struct pol_acct_query, wait));
}

/* Answers every quota check waiting on row: its value, or the error when error is set. */
static void answer_waiters(struct acct_shard *as, struct pol_acct_row *row, const char *error)
{
    struct pol_acct_waiter *w = row->waiters;
    row->waiters = row->waiters_tail = NULL;
    while (w) {
        struct pol_acct_waiter *next = w->next;
        struct pol_acct_query *q = query_of(w);
        if (error)
            pol_acct_query_finish(as, q, true, 0, error);
        else
            pol_acct_query_finish(as, q, false, pol_acct_row_value(row, q->metric), NULL);
        w = next;
    }
}

static void fetch_fail(struct acct_part *pt, const char *error)
{
    struct acct_shard *as = pt->as;
    char why[256];
    snprintf(why, sizeof(why), "select from %.128s failed: %.100s", table_name(pt), error);
    for (uint32_t i = 0; i < pt->batch_count; i++) {
        struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->batch[i]);
        row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_FETCH);
        answer_waiters(as, row, why);
    }
    as->stats.fetch_failed++;
    note_failure(pt, "reading", error);
}

/* Sets the stored values of the batch's rows from the result and answers their waiters. */
static void fetch_apply(struct acct_part *pt, const struct pol_sql_result *res)
{
    struct acct_shard *as = pt->as;
    for (uint32_t i = 0; i < pt->batch_count; i++)
        memset(pol_acct_agg_row(&pt->agg, pt->batch[i])->stored, 0,
               sizeof(((struct pol_acct_row *)0)->stored));
    for (size_t r = 0; res->col_count >= 2 + POL_ACCT_METRICS && r < res->row_count; r++) {
        size_t kl = 0, tl = 0;
        const char *k = pol_sql_value(res, r, 0, &kl);
        const char *t = pol_sql_value(res, r, 1, &tl);
        if (!k || !t || kl > POL_ACCT_KEY_BYTES_MAX || tl > POL_ACCT_TIME_BYTES_MAX)
            continue;
        struct pol_acct_row *row = pol_acct_agg_find(&pt->agg, k, kl, t, tl);
        if (!row || !(row->flags & POL_ACCT_ROW_FETCH))
            continue;
        for (int m = 0; m < POL_ACCT_METRICS; m++) {
            size_t vl = 0;
            const char *v = pol_sql_value(res, r, (size_t)(2 + m), &vl);
            row->stored[m] = pol_acct_sql_count_of(v, vl);
        }
    }
    uint64_t now = now_ms(as);
    for (uint32_t i = 0; i < pt->batch_count; i++) {
        struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->batch[i]);
        row->flags = (uint8_t)((row->flags & ~POL_ACCT_ROW_FETCH) | POL_ACCT_ROW_STORED);
        row->fetched_ms = now;
        answer_waiters(as, row, NULL);
    }
}

static void fetch_done(void *ctx, const struct pol_sql_result *res)
{
    struct acct_part *pt = ctx;
    ENG_ASSERT(pt->busy);
    ENG_ASSERT(pt->fetching);
    if (res->status < 0) {
        fetch_fail(pt, res->error ? res->error : "unknown error");
    } else {
        note_success(pt);
        fetch_apply(pt, res);
    }
    pt->busy = false;
    pt->fetching = false;
    pt->batch_count = 0;
    part_kick(pt);
}

static void fetch_start(struct acct_part *pt)
{
    struct acct_shard *as = pt->as;
    uint32_t n = pol_acct_stmt_fetch(pt);
    ENG_ASSERT(n > 0);
    pt->busy = true;
    pt->fetching = true;
    pt->fetched_last = true;
    pt->batch_count = n;
    as->stats.fetches++;
    as->stats.fetch_keys += n;
    int rc = pol_sql_query(as->sh, as->st->db, pt->stmt.text, pt->stmt.params, pt->stmt.lens,
                           pt->stmt.count, 0, fetch_done, pt);
    if (rc < 0) {
        struct pol_sql_result res = {.status = rc, .error = strerror(-rc)};
        fetch_done(pt, &res);
    }
}

static bool exactly_once(const struct acct_part *pt)
{
    return pt->as->st->driver == POL_SQL_PG;
}

/* A flush or claim that failed: the next interval retries; the dirty rows go to the spill file
 * when there is one. Stopping: the final flush on the main thread takes them. */
static void flush_failed(struct acct_part *pt, const char *error)
{
    struct acct_shard *as = pt->as;
    pt->flush_due = false;
    if (as->stopped)
        return;
    as->stats.flush_failed++;
    note_failure(pt, "writing to", error ? error : "unknown error");
    if (spill_enabled(as))
        pol_acct_part_spill_dirty(pt);
}

/* The batch's flush committed (ok) or certainly did not (!ok: its counts go back to the
 * rows, to be sent under a new id). */
static void batch_settled(struct acct_part *pt, bool ok)
{
    struct acct_shard *as = pt->as;
    pol_acct_agg_flush_done(&pt->agg, pt->batch, pt->batch_count, ok);
    if (ok) {
        as->stats.flushes++;
        as->stats.flush_rows += pt->batch_count;
    }
    pt->uncertain = false;
    pt->batch_count = 0;
    pt->batch_id = (pt->batch_id + 1) & INT64_MAX;
}

static void flush_done(void *ctx, const struct pol_sql_result *res)
{
    struct acct_part *pt = ctx;
    struct acct_shard *as = pt->as;
    ENG_ASSERT(pt->busy);
    ENG_ASSERT(!pt->fetching);
    bool ok = res->status >= 0;
    pt->busy = false;
    as->stats.flush_ms += now_ms(as) - pt->flush_sent_ms;
    if (ok) {
        batch_settled(pt, true);
        note_success(pt);
        replay_some(as);
    } else {
        if (exactly_once(pt)) /* committed or not: a claim of the id says (acct_sql.h) */
            pt->uncertain = true;
        else
            batch_settled(pt, false);
        flush_failed(pt, res->error);
    }
    part_kick(pt);
}

/* Quota checks queued while an uncertain batch could not be settled: they fail as a failed
 * fetch fails them (the database did not answer). */
static void fetch_queue_fail(struct acct_part *pt, const char *error)
{
    char why[256];
    snprintf(why, sizeof(why), "select from %.128s failed: %.100s", table_name(pt), error);
    while (pt->fetch_head != 0) {
        struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->fetch_head - 1);
        pt->fetch_head = row->fetch_next;
        row->fetch_next = 0;
        row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_FETCH);
        answer_waiters(pt->as, row, why);
        pt->as->stats.fetch_failed++;
    }
    pt->fetch_tail = 0;
}

static void claim_done(void *ctx, const struct pol_sql_result *res)
{
    struct acct_part *pt = ctx;
    struct acct_shard *as = pt->as;
    ENG_ASSERT(pt->busy && pt->claiming && pt->uncertain);
    pt->busy = false;
    pt->claiming = false;
    if (res->status < 0) {
        const char *error = res->error ? res->error : "unknown error";
        flush_failed(pt, error);
        if (!as->stopped)
            fetch_queue_fail(pt, error);
    } else {
        /* A row back: the id was free, the flush never committed; none: it did. */
        bool committed = res->row_count == 0;
        as->stats.claims++;
        if (!committed)
            as->stats.claims_resent++;
        eng_log(ENG_LOG_NOTICE,
                "accounting: the flush of %u rows of table %s whose answer was lost (batch %lld) "
                "%s",
                pt->batch_count, table_name(pt), (long long)pt->batch_id,
                committed ? "had committed: not sent again" : "had not committed: sent again");
        batch_settled(pt, committed);
        note_success(pt);
    }
    part_kick(pt);
}

/* Settles the uncertain batch: claims its id. */
static void claim_start(struct acct_part *pt)
{
    struct acct_shard *as = pt->as;
    pt->busy = true;
    pt->claiming = true;
    snprintf(pt->stmt.id_text, sizeof(pt->stmt.id_text), "%lld", (long long)pt->batch_id);
    const char *params[1] = {pt->stmt.id_text};
    int rc = pol_sql_query(as->sh, as->st->db, POL_ACCT_SQL_BATCH_CLAIM, params, NULL, 1, 0,
                           claim_done, pt);
    if (rc < 0) {
        struct pol_sql_result res = {.status = rc, .error = strerror(-rc)};
        claim_done(pt, &res);
    }
}

static void purge_done(void *ctx, const struct pol_sql_result *res)
{
    struct acct_part *pt = ctx;
    ENG_ASSERT(pt->busy && pt->purging);
    pt->busy = false;
    pt->purging = false;
    if (res->status < 0)
        eng_log(ENG_LOG_WARNING, "accounting: purging old ids from %s failed: %s",
                POL_ACCT_BATCHES_TABLE, res->error ? res->error : "unknown error");
    part_kick(pt);
}

/* Shard 0's first writer table deletes batch ids older than a day, once an hour. */
static bool purge_due(struct acct_part *pt)
{
    struct acct_shard *as = pt->as;
    if (!exactly_once(pt) || as->index != 0 || as->stopped || !as->st->tables[pt->table].writer)
        return false;
    for (int t = 0; t < pt->table; t++)
        if (as->st->tables[t].writer)
            return false;
    uint64_t now = now_ms(as);
    if (pt->purged_ms != 0 && now - pt->purged_ms < ACCT_PURGE_INTERVAL_MS)
        return false;
    pt->purged_ms = now;
    return true;
}

static void purge_start(struct acct_part *pt)
{
    pt->busy = true;
    pt->purging = true;
    int rc = pol_sql_query(pt->as->sh, pt->as->st->db, POL_ACCT_SQL_BATCH_PURGE, NULL, NULL, 0, 0,
                           purge_done, pt);
    if (rc < 0) {
        struct pol_sql_result res = {.status = rc, .error = strerror(-rc)};
        purge_done(pt, &res);
    }
}

/* The table is not checked yet on this shard: its counts wait in memory as they do while the
 * database is down (with a spill_dir they go to the file at each interval, once the first
 * check failed); the gate's end kicks the part, and a ready gate flushes at once. */
static void flush_wait_table(struct acct_part *pt)
{
    if (spill_enabled(pt->as) && !pol_ddl_gate_pending(&pt->ddl)) {
        pol_acct_part_spill_dirty(pt);
        pt->flush_due = false;
    }
}

static void flush_start(struct acct_part *pt)
{
    struct acct_shard *as = pt->as;
    if (!pol_ddl_gate_ready(&pt->ddl)) {
        flush_wait_table(pt);
        return;
    }
    uint32_t n = pol_acct_stmt_flush(pt);
    if (pt->agg.dirty_count == 0)
        pt->flush_due = false;
    if (n == 0)
        return;
    pt->busy = true;
    pt->fetching = false;
    pt->fetched_last = false;
    pt->batch_count = n;
    pt->flush_sent_ms = now_ms(as);
    int rc = pol_sql_query(as->sh, as->st->db, pt->stmt.text, pt->stmt.params, pt->stmt.lens,
                           pt->stmt.count, 0, flush_done, pt);
    if (rc < 0) {
        /* Not even queued: certainly not committed. */
        pt->busy = false;
        batch_settled(pt, false);
        flush_failed(pt, strerror(-rc));
    }
}

static void part_kick(struct acct_part *pt)
{
    /* While the table's check is out, fetches wait for it too (they follow it on the same
     * connection); after a failed one they go on and fail or succeed on their own. */
    if (pt->busy || !pt->as->sh || pol_ddl_gate_pending(&pt->ddl))
        return;
    if (pt->uncertain) {
        /* Settled first: fetches and flushes use pt->batch, and a fetch would read a value
         * that may or may not hold the batch. */
        if (pt->flush_due || (pt->fetch_head != 0 && !pt->as->stopped))
            claim_start(pt);
        return;
    }
    /* Fetches go first (a request waits for them), but a due flush gets every other turn:
     * under a steady stream of quota misses the dirty rows would otherwise wait, fill the
     * table and leave no room for new counts nor quota rows. */
    bool fetch_ready = pt->fetch_head != 0 && !pt->as->stopped;
    if (fetch_ready && !(pt->flush_due && pt->fetched_last)) {
        fetch_start(pt);
        return;
    }
    if (pt->flush_due) {
        flush_start(pt);
        if (pt->busy)
            return;
    }
    if (fetch_ready)
        fetch_start(pt);
    else if (purge_due(pt))
        purge_start(pt);
}

/* ---------------------------------------------------------------------------------------------
 * Quota checks on the owner
 */

static void fetch_queue(struct acct_part *pt, struct pol_acct_row *row)
{
    uint32_t ri = pol_acct_agg_index_of(&pt->agg, row) + 1;
    row->flags |= POL_ACCT_ROW_FETCH;
    row->fetch_next = 0;
    if (pt->fetch_tail)
        pol_acct_agg_row(&pt->agg, pt->fetch_tail - 1)->fetch_next = ri;
    else
        pt->fetch_head = ri;
    pt->fetch_tail = ri;
}

static void query_answer(struct acct_shard *as, struct pol_acct_query *q)
{
    struct acct_part *pt = &as->parts[q->table];
    struct pol_acct_row *row =
        pol_acct_agg_find(&pt->agg, q->key, q->key_len, q->time, q->time_len);
    if (row && (row->flags & POL_ACCT_ROW_STORED) && now_ms(as) - row->fetched_ms < q->ttl_ms) {
        as->stats.quota_hits++;
        pol_acct_query_finish(as, q, false, pol_acct_row_value(row, q->metric), NULL);
        return;
    }
    as->stats.quota_misses++;
    if (!row)
        row = pol_acct_agg_get(&pt->agg, q->key, q->key_len, q->time, q->time_len);
    if (!row) {
        char why[256];
        snprintf(why, sizeof(why), "no room for table %s's row in the accounting buffer",
                 table_name(pt));
        pol_acct_query_finish(as, q, true, 0, why);
        return;
    }
    q->wait.next = NULL;
    if (row->waiters_tail)
        row->waiters_tail->next = &q->wait;
    else
        row->waiters = &q->wait;
    row->waiters_tail = &q->wait;
    if (!(row->flags & POL_ACCT_ROW_FETCH))
        fetch_queue(pt, row);
}

static void work_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct acct_shard *as =
        (struct acct_shard *)(void *)((char *)t - offsetof(struct acct_shard, work_timer));
    while (as->q_head) {
        struct pol_acct_waiter *w = as->q_head;
        as->q_head = w->next;
        if (!as->q_head)
            as->q_tail = NULL;
        query_answer(as, query_of(w));
    }
    for (unsigned i = 0; i < as->st->table_count; i++)
        part_kick(&as->parts[i]);
}

void pol_acct_shard_work(struct acct_shard *as)
{
    if (as->sh && !as->stopped && !eng_timer_armed(&as->work_timer))
        eng_timer_arm(as->sh, &as->work_timer, 0);
}

static void flush_fired(struct eng_shard *sh, struct eng_timer *t)
{
    struct acct_shard *as =
        (struct acct_shard *)(void *)((char *)t - offsetof(struct acct_shard, flush_timer));
    for (unsigned i = 0; i < as->st->table_count; i++)
        as->parts[i].flush_due = true;
    replay_some(as);
    pol_acct_shard_work(as);
    eng_timer_arm(sh, &as->flush_timer, as->st->opts.flush_interval_ms);
}

/* The end of a check of the table on this shard: waiting fetches go on. */
static void part_ddl_done(void *ctx, bool ok)
{
    (void)ok; /* what waited is flushed at the next interval, as any count */
    struct acct_part *pt = ctx;
    pol_acct_shard_work(pt->as);
}

void pol_acct_shard_timers_start(struct acct_shard *as)
{
    eng_timer_init(&as->work_timer, work_fired);
    eng_timer_init(&as->flush_timer, flush_fired);
    if (!as->sh)
        return;
    eng_timer_arm(as->sh, &as->flush_timer, as->st->opts.flush_interval_ms);
    for (unsigned i = 0; i < as->st->table_count; i++)
        pol_ddl_gate_start(&as->parts[i].ddl, as->sh);
}

void pol_acct_shard_stop(struct acct_shard *as)
{
    as->stopped = true;
    if (as->sh) {
        eng_timer_cancel(as->sh, &as->work_timer);
        eng_timer_cancel(as->sh, &as->flush_timer);
    }
    for (unsigned i = 0; i < as->st->table_count; i++)
        pol_ddl_gate_stop(&as->parts[i].ddl);
    /* Last asynchronous flush: the Sql connection stops after the plugins and completes what
     * is out; whatever is left is written by the final flush on the main thread. */
    for (unsigned i = 0; i < as->st->table_count; i++) {
        as->parts[i].flush_due = true;
        part_kick(&as->parts[i]);
    }
    const struct pol_acct_store_stats *s = &as->stats;
    eng_log(ENG_LOG_NOTICE,
            "accounting %s shard %u: %llu counted, %llu sent to owners, %llu kept locally, "
            "%llu flushes (%llu rows, %llu failed), %llu fetches (%llu keys, %llu failed), "
            "quota %llu hits %llu misses, %llu spilled, %llu replayed, %llu lost",
            as->st->conn_name, as->index, (unsigned long long)s->accounted,
            (unsigned long long)s->sent, (unsigned long long)s->local_fallback,
            (unsigned long long)s->flushes, (unsigned long long)s->flush_rows,
            (unsigned long long)s->flush_failed, (unsigned long long)s->fetches,
            (unsigned long long)s->fetch_keys, (unsigned long long)s->fetch_failed,
            (unsigned long long)s->quota_hits, (unsigned long long)s->quota_misses,
            (unsigned long long)s->spilled, (unsigned long long)s->replayed,
            (unsigned long long)s->dropped);
}
