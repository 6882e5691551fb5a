/*
 * acct_agg.c: one shard's bounded table of accounting rows (see acct_agg.h).
 *
 * Layout: rows[] holds the rows; index[] (a power of two, at least twice rows_max, so probes
 * stay short) maps a hash to a row by linear probing. A removed row's slot is filled by the
 * backward-shift deletion of linear probing, so there are no tombstones and lookups never
 * degrade. Free rows are chained through dirty_next. Owns rows and index (init .. fini).
 * Known limit: eviction scans at most POL_ACCT_EVICT_SCAN_MAX rows, so a table full of dirty
 * rows (the database is down) refuses new rows after a short scan instead of searching it all.
 */
#include "plugins/acct_agg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include <eng/assert.h>

_Static_assert(POL_ACCT_KEY_BYTES_MAX <= UINT16_MAX, "key length fits the row");
_Static_assert(POL_ACCT_TIME_BYTES_MAX <= UINT16_MAX, "time length fits the row");
_Static_assert(POL_ACCT_ROWS_MAX <= (UINT32_MAX >> 2), "index size fits 32 bits");

const char *const pol_acct_metric_names[POL_ACCT_METRICS] = {"count", "count_rcpt", "size",
                                                             "size_rcpt"};

int pol_acct_metric_of(const char *name, size_t len)
{
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        if (strlen(pol_acct_metric_names[m]) == len &&
            memcmp(name, pol_acct_metric_names[m], len) == 0)
            return m;
    return -1;
}

int pol_acct_agg_init(struct pol_acct_agg *a, uint32_t rows_max)
{
    memset(a, 0, sizeof(*a));
    if (rows_max == 0 || rows_max > POL_ACCT_ROWS_MAX)
        return -EINVAL;
    uint32_t slots = 2;
    while (slots < 2 * rows_max)
        slots <<= 1;
    a->rows = calloc(rows_max, sizeof(*a->rows));
    a->index = calloc(slots, sizeof(*a->index));
    if (!a->rows || !a->index) {
        pol_acct_agg_fini(a);
        return -ENOMEM;
    }
    a->rows_max = rows_max;
    a->slot_mask = slots - 1;
    return 0;
}

void pol_acct_agg_fini(struct pol_acct_agg *a)
{
    free(a->rows);
    free(a->index);
    memset(a, 0, sizeof(*a));
}

uint64_t pol_acct_agg_hash(const char *key, size_t key_len, const char *time, size_t time_len)
{
    /* The NUL between key and time keeps ("ab", "c") apart from ("a", "bc"). */
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, key, key_len);
    XXH3_64bits_update(&st, "", 1);
    XXH3_64bits_update(&st, time, time_len);
    return XXH3_64bits_digest(&st);
}

uint32_t pol_acct_agg_index_of(const struct pol_acct_agg *a, const struct pol_acct_row *row)
{
    ENG_ASSERT(row >= a->rows);
    ENG_ASSERT(row < a->rows + a->rows_max);
    return (uint32_t)(row - a->rows);
}

struct pol_acct_row *pol_acct_agg_row(struct pol_acct_agg *a, uint32_t idx)
{
    ENG_ASSERT(idx < a->rows_max);
    return &a->rows[idx];
}

const char *pol_acct_row_key(const struct pol_acct_row *row)
{
    return row->text;
}

const char *pol_acct_row_time(const struct pol_acct_row *row)
{
    return row->text + row->key_len + 1;
}

static bool row_is(const struct pol_acct_row *row, uint64_t h, const char *key, size_t key_len,
                   const char *time, size_t time_len)
{
    return row->hash == h && row->key_len == key_len && row->time_len == time_len &&
           memcmp(row->text, key, key_len) == 0 &&
           memcmp(row->text + key_len + 1, time, time_len) == 0;
}

/* The slot holding (key, time), or the empty slot where it would go. */
static uint32_t slot_find(const struct pol_acct_agg *a, uint64_t h, const char *key, size_t key_len,
                          const char *time, size_t time_len)
{
    uint32_t s = (uint32_t)h & a->slot_mask;
    for (;;) {
        uint32_t ri = a->index[s];
        if (ri == 0 || row_is(&a->rows[ri - 1], h, key, key_len, time, time_len))
            return s;
        s = (s + 1) & a->slot_mask;
    }
}

struct pol_acct_row *pol_acct_agg_find(struct pol_acct_agg *a, const char *key, size_t key_len,
                                       const char *time, size_t time_len)
{
    ENG_ASSERT(key_len <= POL_ACCT_KEY_BYTES_MAX);
    ENG_ASSERT(time_len <= POL_ACCT_TIME_BYTES_MAX);
    uint64_t h = pol_acct_agg_hash(key, key_len, time, time_len);
    uint32_t ri = a->index[slot_find(a, h, key, key_len, time, time_len)];
    return ri ? &a->rows[ri - 1] : NULL;
}

/* Backward-shift deletion: empties slot s and moves later members of its probe run back. */
static void slot_remove(struct pol_acct_agg *a, uint32_t s)
{
    uint32_t hole = s;
    for (uint32_t j = (s + 1) & a->slot_mask;; j = (j + 1) & a->slot_mask) {
        uint32_t ri = a->index[j];
        if (ri == 0)
            break;
        uint32_t home = (uint32_t)a->rows[ri - 1].hash & a->slot_mask;
        /* The entry at j may fill the hole unless its home lies cyclically in (hole, j]. */
        bool home_after_hole = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_after_hole) {
            a->index[hole] = ri;
            hole = j;
        }
    }
    a->index[hole] = 0;
}

/* Whether row may be evicted. Spilled counts keep a row unless spilled_ok (a read-back that
 * found every row holding some). */
static bool row_clean(const struct pol_acct_row *row, bool spilled_ok)
{
    for (int i = 0; i < POL_ACCT_METRICS && !spilled_ok; i++)
        if (row->spilled[i] != 0)
            return false; /* quota checks must keep seeing what waits in the spill file */
    return (row->flags & (POL_ACCT_ROW_DIRTY | POL_ACCT_ROW_INFLIGHT | POL_ACCT_ROW_FETCH)) == 0 &&
           row->waiters == NULL;
}

static void row_release(struct pol_acct_agg *a, struct pol_acct_row *row)
{
    uint32_t s =
        slot_find(a, row->hash, row->text, row->key_len, pol_acct_row_time(row), row->time_len);
    ENG_ASSERT(a->index[s] == pol_acct_agg_index_of(a, row) + 1);
    slot_remove(a, s);
    row->flags = 0;
    row->dirty_next = a->free_head;
    a->free_head = pol_acct_agg_index_of(a, row) + 1;
    a->used--;
    a->stats.evicted++;
}

/* A clean row evicted by the clock hand, or NULL after POL_ACCT_EVICT_SCAN_MAX rows. */
static bool evict_one(struct pol_acct_agg *a, bool spilled_ok)
{
    for (uint32_t n = 0; n < POL_ACCT_EVICT_SCAN_MAX && n < a->rows_max; n++) {
        struct pol_acct_row *row = &a->rows[a->hand];
        a->hand = a->hand + 1 == a->rows_max ? 0 : a->hand + 1;
        if ((row->flags & POL_ACCT_ROW_USED) && row_clean(row, spilled_ok)) {
            if (spilled_ok)
                a->stats.evicted_spilled++;
            row_release(a, row);
            return true;
        }
    }
    return false;
}

static struct pol_acct_row *row_alloc(struct pol_acct_agg *a, bool spilled_ok)
{
    if (a->free_head == 0 && a->next_new == a->rows_max && !evict_one(a, false) &&
        !(spilled_ok && evict_one(a, true)))
        return NULL;
    uint32_t idx;
    if (a->free_head != 0) {
        idx = a->free_head - 1;
        a->free_head = a->rows[idx].dirty_next;
    } else {
        idx = a->next_new++;
    }
    struct pol_acct_row *row = &a->rows[idx];
    memset(row, 0, offsetof(struct pol_acct_row, text));
    a->used++;
    return row;
}

static struct pol_acct_row *agg_get(struct pol_acct_agg *a, const char *key, size_t key_len,
                                    const char *time, size_t time_len, bool spilled_ok)
{
    struct pol_acct_row *row = pol_acct_agg_find(a, key, key_len, time, time_len);
    if (row)
        return row;
    row = row_alloc(a, spilled_ok);
    if (!row) {
        a->stats.full++;
        return NULL;
    }
    row->hash = pol_acct_agg_hash(key, key_len, time, time_len);
    row->key_len = (uint16_t)key_len;
    row->time_len = (uint16_t)time_len;
    memcpy(row->text, key, key_len);
    row->text[key_len] = '\0';
    memcpy(row->text + key_len + 1, time, time_len);
    row->text[key_len + 1 + time_len] = '\0';
    row->flags = POL_ACCT_ROW_USED;
    /* The slot is looked up after the row was allocated: an eviction may have moved slots. */
    uint32_t s = slot_find(a, row->hash, key, key_len, time, time_len);
    ENG_ASSERT(a->index[s] == 0);
    a->index[s] = pol_acct_agg_index_of(a, row) + 1;
    a->stats.rows_added++;
    return row;
}

struct pol_acct_row *pol_acct_agg_get(struct pol_acct_agg *a, const char *key, size_t key_len,
                                      const char *time, size_t time_len)
{
    return agg_get(a, key, key_len, time, time_len, false);
}

struct pol_acct_row *pol_acct_agg_get_replay(struct pol_acct_agg *a, const char *key,
                                             size_t key_len, const char *time, size_t time_len)
{
    return agg_get(a, key, key_len, time, time_len, true);
}

static uint64_t sat_add(uint64_t x, uint64_t y)
{
    return x > UINT64_MAX - y ? UINT64_MAX : x + y;
}

static void dirty_push(struct pol_acct_agg *a, struct pol_acct_row *row)
{
    ENG_ASSERT(!(row->flags & POL_ACCT_ROW_DIRTY));
    uint32_t ri = pol_acct_agg_index_of(a, row) + 1;
    row->flags |= POL_ACCT_ROW_DIRTY;
    row->dirty_next = 0;
    if (a->dirty_tail)
        a->rows[a->dirty_tail - 1].dirty_next = ri;
    else
        a->dirty_head = ri;
    a->dirty_tail = ri;
    a->dirty_count++;
}

void pol_acct_agg_add(struct pol_acct_agg *a, struct pol_acct_row *row,
                      const uint64_t m[POL_ACCT_METRICS])
{
    ENG_ASSERT(row->flags & POL_ACCT_ROW_USED);
    for (int i = 0; i < POL_ACCT_METRICS; i++)
        row->delta[i] = sat_add(row->delta[i], m[i]);
    if (!(row->flags & POL_ACCT_ROW_DIRTY))
        dirty_push(a, row);
}

uint32_t pol_acct_agg_take_dirty(struct pol_acct_agg *a, uint32_t max, uint32_t *idx_out)
{
    uint32_t n = 0;
    while (n < max && a->dirty_head != 0) {
        uint32_t idx = a->dirty_head - 1;
        struct pol_acct_row *row = &a->rows[idx];
        ENG_ASSERT(row->flags & POL_ACCT_ROW_DIRTY);
        ENG_ASSERT(!(row->flags & POL_ACCT_ROW_INFLIGHT));
        a->dirty_head = row->dirty_next;
        if (a->dirty_head == 0)
            a->dirty_tail = 0;
        a->dirty_count--;
        row->dirty_next = 0;
        row->flags = (uint8_t)((row->flags & ~POL_ACCT_ROW_DIRTY) | POL_ACCT_ROW_INFLIGHT);
        memcpy(row->inflight, row->delta, sizeof(row->inflight));
        memset(row->delta, 0, sizeof(row->delta));
        idx_out[n++] = idx;
    }
    return n;
}

void pol_acct_agg_flush_done(struct pol_acct_agg *a, const uint32_t *idx, uint32_t n, bool ok)
{
    for (uint32_t k = 0; k < n; k++) {
        struct pol_acct_row *row = pol_acct_agg_row(a, idx[k]);
        ENG_ASSERT(row->flags & POL_ACCT_ROW_INFLIGHT);
        row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_INFLIGHT);
        if (ok) {
            if (row->flags & POL_ACCT_ROW_STORED)
                for (int i = 0; i < POL_ACCT_METRICS; i++)
                    row->stored[i] = sat_add(row->stored[i], row->inflight[i]);
        } else {
            for (int i = 0; i < POL_ACCT_METRICS; i++)
                row->delta[i] = sat_add(row->delta[i], row->inflight[i]);
            if (!(row->flags & POL_ACCT_ROW_DIRTY))
                dirty_push(a, row);
        }
        memset(row->inflight, 0, sizeof(row->inflight));
    }
}

uint32_t pol_acct_agg_peek_dirty(const struct pol_acct_agg *a, uint32_t max, uint32_t *idx_out)
{
    uint32_t n = 0;
    for (uint32_t ri = a->dirty_head; ri != 0 && n < max; ri = a->rows[ri - 1].dirty_next)
        idx_out[n++] = ri - 1;
    return n;
}

void pol_acct_agg_mark_spilled(struct pol_acct_agg *a, const uint32_t *idx, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        ENG_ASSERT(a->dirty_head == idx[k] + 1); /* the head of the list, in order */
        struct pol_acct_row *row = &a->rows[idx[k]];
        a->dirty_head = row->dirty_next;
        if (a->dirty_head == 0)
            a->dirty_tail = 0;
        a->dirty_count--;
        row->dirty_next = 0;
        row->flags = (uint8_t)(row->flags & ~POL_ACCT_ROW_DIRTY);
        for (int i = 0; i < POL_ACCT_METRICS; i++)
            row->spilled[i] = sat_add(row->spilled[i], row->delta[i]);
        memset(row->delta, 0, sizeof(row->delta));
    }
}

void pol_acct_agg_unspill(struct pol_acct_agg *a, struct pol_acct_row *row,
                          const uint64_t m[POL_ACCT_METRICS])
{
    for (int i = 0; i < POL_ACCT_METRICS; i++)
        row->spilled[i] = row->spilled[i] > m[i] ? row->spilled[i] - m[i] : 0;
    pol_acct_agg_add(a, row, m);
}

uint64_t pol_acct_row_value(const struct pol_acct_row *row, enum pol_acct_metric m)
{
    ENG_ASSERT(m < POL_ACCT_METRICS);
    return sat_add(sat_add(sat_add(row->stored[m], row->delta[m]), row->inflight[m]),
                   row->spilled[m]);
}

void pol_acct_row_unflushed(const struct pol_acct_row *row, uint64_t out[POL_ACCT_METRICS])
{
    for (int i = 0; i < POL_ACCT_METRICS; i++)
        out[i] = sat_add(row->delta[i], row->inflight[i]);
}
