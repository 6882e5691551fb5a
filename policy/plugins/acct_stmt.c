/*
 * acct_stmt.c: the statements of one table on one shard (see acct_int.h, struct acct_stmt):
 * the flush of dirty rows and the fetch of rows a quota check waits for, per dialect.
 *
 * SQLite gets a VALUES list (flush) or an IN list (fetch) with one group of `?` per row,
 * parameters pointing into the rows themselves. PostgreSQL gets one array literal per column
 * in buffers of this part, so the statement text never changes and the client's prepared
 * statement cache (bounded per connection) holds two texts per table; a flush stops early when
 * an array buffer is full, and the next slice follows when the statement is done. Everything
 * is allocated at init (shard start); building a statement does not allocate. The rows in
 * pt->batch stay put until the statement's done runs (INFLIGHT and FETCH rows are never
 * evicted), so parameters that point into them stay valid.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <eng/assert.h>

#include "plugins/acct_int.h"

/* Array literal buffers (PostgreSQL). Keys: enough for 1000 addresses or mail addresses of
 * ordinary length; a flush of longer keys is cut into more statements. */
#define ARR_KEYS_BYTES (128u * 1024u)
#define ARR_NUM_BYTES(rows) ((size_t)(rows) * (ACCT_NUM_BYTES + 1) + 4)

enum { ARR_KEY, ARR_TIME, ARR_METRIC0 };

int64_t pol_acct_batch_id_start(const void *salt)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = ((uint64_t)time(NULL) << 24) ^ ((uint64_t)getpid() << 8) ^ (uint64_t)(uintptr_t)salt;
    return (int64_t)(r >> 2);
}

static bool is_pg(const struct acct_part *pt)
{
    return pt->as->st->driver == POL_SQL_PG;
}

static const char *quoted(const struct acct_part *pt)
{
    return pt->as->st->tables[pt->table].quoted;
}

int pol_acct_stmt_init(struct acct_part *pt, char *err, size_t err_len)
{
    struct acct_stmt *s = &pt->stmt;
    size_t ql = strlen(quoted(pt));
    bool ok;
    if (is_pg(pt)) {
        s->sql_bytes = pol_acct_sql_upsert_bytes(1, ql) + 256;
        s->sql = malloc(s->sql_bytes);
        s->sql_select = malloc(s->sql_bytes);
        /* the batch id, then one array per column */
        s->params = calloc(3 + POL_ACCT_METRICS, sizeof(*s->params));
        s->lens = calloc(3 + POL_ACCT_METRICS, sizeof(*s->lens));
        s->arr_cap[ARR_KEY] = ARR_KEYS_BYTES;
        s->arr_cap[ARR_TIME] =
            (size_t)pt->rows_max * pol_acct_sql_array_elem_bytes(POL_ACCT_TIME_BYTES_MAX) + 4;
        for (int m = 0; m < POL_ACCT_METRICS; m++)
            s->arr_cap[ARR_METRIC0 + m] = ARR_NUM_BYTES(pt->rows_max);
        ok = s->sql && s->sql_select && s->params && s->lens;
        for (int i = 0; ok && i < 2 + POL_ACCT_METRICS; i++)
            ok = (s->arr[i] = malloc(s->arr_cap[i])) != NULL;
        ok = ok && pol_acct_sql_upsert_pg(quoted(pt), s->sql, s->sql_bytes) > 0 &&
             pol_acct_sql_select_pg(quoted(pt), s->sql_select, s->sql_bytes) > 0;
    } else {
        uint32_t batch_max =
            pt->rows_max > POL_ACCT_FETCH_KEYS_MAX ? pt->rows_max : POL_ACCT_FETCH_KEYS_MAX;
        size_t up = pol_acct_sql_upsert_bytes(pt->rows_max, ql);
        size_t sel = pol_acct_sql_select_bytes(POL_ACCT_FETCH_KEYS_MAX, ql);
        s->sql_bytes = up > sel ? up : sel;
        s->sql = malloc(s->sql_bytes);
        s->params = calloc((size_t)batch_max * 6, sizeof(*s->params));
        s->lens = calloc((size_t)batch_max * 6, sizeof(*s->lens));
        s->nums = calloc((size_t)pt->rows_max * POL_ACCT_METRICS, sizeof(*s->nums));
        ok = s->sql && s->params && s->lens && s->nums;
    }
    if (!ok) {
        snprintf(err, err_len, "out of memory for accounting statements");
        return -1;
    }
    return 0;
}

void pol_acct_stmt_fini(struct acct_part *pt)
{
    struct acct_stmt *s = &pt->stmt;
    free(s->sql);
    free(s->sql_select);
    free(s->params);
    free(s->lens);
    free(s->nums);
    for (int i = 0; i < 2 + POL_ACCT_METRICS; i++)
        free(s->arr[i]);
    memset(s, 0, sizeof(*s));
}

static void num_text(char *out, uint64_t v)
{
    snprintf(out, ACCT_NUM_BYTES, "%llu", (unsigned long long)v);
}

/* ---------------------------------------------------------------------------------------------
 * SQLite: a group of `?` per row
 */

static uint32_t flush_values(struct acct_part *pt)
{
    struct acct_stmt *s = &pt->stmt;
    uint32_t n = pol_acct_agg_take_dirty(&pt->agg, pt->rows_max, pt->batch);
    for (uint32_t i = 0; i < n; i++) {
        const struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, pt->batch[i]);
        const char **p = &s->params[6 * (size_t)i];
        size_t *l = &s->lens[6 * (size_t)i];
        p[0] = pol_acct_row_key(row);
        l[0] = row->key_len;
        p[1] = pol_acct_row_time(row);
        l[1] = row->time_len;
        for (int m = 0; m < POL_ACCT_METRICS; m++) {
            char *num = s->nums[(size_t)i * POL_ACCT_METRICS + (size_t)m];
            num_text(num, row->inflight[m]);
            p[2 + m] = num;
            l[2 + m] = strlen(num);
        }
    }
    if (n > 0 && (s->sql_rows != n || s->sql_is_fetch)) {
        size_t len = pol_acct_sql_upsert(POL_ACCT_SQLITE, quoted(pt), n, s->sql, s->sql_bytes);
        ENG_ASSERT(len > 0); /* sized at init */
        s->sql_rows = n;
        s->sql_is_fetch = false;
    }
    s->text = s->sql;
    s->count = 6 * (size_t)n;
    return n;
}

/* The next row of the fetch queue, taken off it; NULL when empty. */
static struct pol_acct_row *fetch_pop(struct acct_part *pt, uint32_t *idx)
{
    if (pt->fetch_head == 0)
        return NULL;
    *idx = pt->fetch_head - 1;
    struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, *idx);
    pt->fetch_head = row->fetch_next;
    if (pt->fetch_head == 0)
        pt->fetch_tail = 0;
    row->fetch_next = 0;
    return row;
}

static uint32_t fetch_values(struct acct_part *pt)
{
    struct acct_stmt *s = &pt->stmt;
    uint32_t n = 0, idx = 0;
    struct pol_acct_row *row;
    while (n < POL_ACCT_FETCH_KEYS_MAX && (row = fetch_pop(pt, &idx)) != NULL) {
        s->params[2 * n] = pol_acct_row_key(row);
        s->lens[2 * n] = row->key_len;
        s->params[2 * n + 1] = pol_acct_row_time(row);
        s->lens[2 * n + 1] = row->time_len;
        pt->batch[n++] = idx;
    }
    if (n > 0 && (s->sql_rows != n || !s->sql_is_fetch)) {
        size_t len = pol_acct_sql_select(quoted(pt), n, s->sql, s->sql_bytes);
        ENG_ASSERT(len > 0); /* sized at init */
        s->sql_rows = n;
        s->sql_is_fetch = true;
    }
    s->text = s->sql;
    s->count = 2 * (size_t)n;
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * PostgreSQL: one array literal per column
 */

static void arrays_reset(struct acct_stmt *s, int count)
{
    for (int i = 0; i < count; i++) {
        s->arr_len[i] = 0;
        s->arr[i][0] = '\0';
    }
}

static bool arrays_have_room(const struct acct_stmt *s, const struct pol_acct_row *row, int count)
{
    size_t need[2 + POL_ACCT_METRICS] = {pol_acct_sql_array_elem_bytes(row->key_len),
                                         pol_acct_sql_array_elem_bytes(row->time_len)};
    for (int i = ARR_METRIC0; i < count; i++)
        need[i] = ACCT_NUM_BYTES + 4;
    for (int i = 0; i < count; i++)
        if (s->arr_len[i] + need[i] + 1 > s->arr_cap[i])
            return false;
    return true;
}

static void arrays_add_key(struct acct_stmt *s, const struct pol_acct_row *row)
{
    bool ok = pol_acct_sql_array_add(s->arr[ARR_KEY], s->arr_cap[ARR_KEY], &s->arr_len[ARR_KEY],
                                     pol_acct_row_key(row), row->key_len, true) &&
              pol_acct_sql_array_add(s->arr[ARR_TIME], s->arr_cap[ARR_TIME], &s->arr_len[ARR_TIME],
                                     pol_acct_row_time(row), row->time_len, true);
    ENG_ASSERT(ok); /* arrays_have_room said so */
}

/* The statement's parameters: the batch id when id is set (a flush), then count arrays. */
static void arrays_params(struct acct_stmt *s, const char *text, const char *id, int count)
{
    size_t first = 0;
    if (id) {
        s->params[0] = id;
        s->lens[0] = strlen(id);
        first = 1;
    }
    for (int i = 0; i < count; i++) {
        s->params[first + (size_t)i] = s->arr[i];
        s->lens[first + (size_t)i] = s->arr_len[i];
    }
    s->text = text;
    s->count = first + (size_t)count;
}

static uint32_t flush_arrays(struct acct_part *pt)
{
    struct acct_stmt *s = &pt->stmt;
    const int cols = 2 + POL_ACCT_METRICS;
    arrays_reset(s, cols);
    uint32_t n = 0, idx = 0;
    while (n < pt->rows_max && pol_acct_agg_peek_dirty(&pt->agg, 1, &idx) == 1 &&
           arrays_have_room(s, pol_acct_agg_row(&pt->agg, idx), cols)) {
        uint32_t taken = pol_acct_agg_take_dirty(&pt->agg, 1, &pt->batch[n]);
        ENG_ASSERT(taken == 1);
        ENG_ASSERT(pt->batch[n] == idx);
        const struct pol_acct_row *row = pol_acct_agg_row(&pt->agg, idx);
        arrays_add_key(s, row);
        for (int m = 0; m < POL_ACCT_METRICS; m++) {
            char num[ACCT_NUM_BYTES];
            num_text(num, row->inflight[m]);
            bool ok = pol_acct_sql_array_add(s->arr[ARR_METRIC0 + m], s->arr_cap[ARR_METRIC0 + m],
                                             &s->arr_len[ARR_METRIC0 + m], num, strlen(num), false);
            ENG_ASSERT(ok);
        }
        n++;
    }
    snprintf(s->id_text, sizeof(s->id_text), "%lld", (long long)pt->batch_id);
    arrays_params(s, s->sql, s->id_text, cols);
    return n;
}

static uint32_t fetch_arrays(struct acct_part *pt)
{
    struct acct_stmt *s = &pt->stmt;
    arrays_reset(s, 2);
    uint32_t n = 0, idx = 0;
    while (n < POL_ACCT_FETCH_KEYS_MAX && pt->fetch_head != 0 &&
           arrays_have_room(s, pol_acct_agg_row(&pt->agg, pt->fetch_head - 1), 2)) {
        struct pol_acct_row *row = fetch_pop(pt, &idx);
        arrays_add_key(s, row);
        pt->batch[n++] = idx;
    }
    arrays_params(s, s->sql_select, NULL, 2);
    return n;
}

uint32_t pol_acct_stmt_flush(struct acct_part *pt)
{
    return is_pg(pt) ? flush_arrays(pt) : flush_values(pt);
}

uint32_t pol_acct_stmt_fetch(struct acct_part *pt)
{
    return is_pg(pt) ? fetch_arrays(pt) : fetch_values(pt);
}
