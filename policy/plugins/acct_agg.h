/*
 * acct_agg.h: one shard's bounded table of accounting rows for one SQL table (internal to
 * policy/plugins/). A row is identified by (key, time bucket) and carries, per metric, the
 * counts accounted here and not yet sent (delta), the counts of the flush statement being
 * executed (inflight) and the database's value as last fetched plus our flushes since then
 * (stored, for Quota).
 *
 * A row also remembers the counts written to a spill file and not read back yet (spilled), so
 * quota checks still see them. Pure data structure: no I/O, no clock, no allocation after
 * pol_acct_agg_init. Open addressing with linear probing over an index of 2^k slots, rows in a
 * fixed array; when the array is full a clean row (nothing unflushed, nothing in flight, no
 * fetch, no waiter) is evicted, found by a bounded clock scan; when none is found the caller
 * gets NULL and spills. Dirty rows are kept on a FIFO list (first accounted, first flushed).
 * Owner: one shard thread; not thread-safe.
 */
#ifndef POL_PLUGINS_ACCT_AGG_H
#define POL_PLUGINS_ACCT_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The key column is VARCHAR(255) in every dialect; longer keys are refused (and counted) by
 * the caller before they reach a table. */
#define POL_ACCT_KEY_BYTES_MAX 255u
/* A time bucket (strftime of time_pattern). %Y-%m is 7 bytes; 64 leaves room for any sane
 * pattern and is checked at start-up. */
#define POL_ACCT_TIME_BYTES_MAX 64u
/* Rows scanned for an evictable one before giving up (the caller then spills). */
#define POL_ACCT_EVICT_SCAN_MAX 64u
/* Most rows one table of one shard may hold (pol_acct_agg_init refuses more). */
#define POL_ACCT_ROWS_MAX (1u << 22)

enum pol_acct_metric {
    POL_ACCT_COUNT,
    POL_ACCT_COUNT_RCPT,
    POL_ACCT_SIZE,
    POL_ACCT_SIZE_RCPT,
    POL_ACCT_METRICS,
};

/* Column names in metric order. */
extern const char *const pol_acct_metric_names[POL_ACCT_METRICS];
/* The metric named name[0..len), or -1. */
int pol_acct_metric_of(const char *name, size_t len);

/* A quota check waiting for a row's fetch (intrusive; owned by the caller). */
struct pol_acct_waiter {
    struct pol_acct_waiter *next;
};

enum {
    POL_ACCT_ROW_USED = 1u << 0,
    POL_ACCT_ROW_DIRTY = 1u << 1,    /* on the dirty list: delta is not all zero */
    POL_ACCT_ROW_INFLIGHT = 1u << 2, /* inflight belongs to a statement being executed */
    POL_ACCT_ROW_STORED = 1u << 3,   /* stored[] and fetched_ms are valid */
    POL_ACCT_ROW_FETCH = 1u << 4,    /* queued for, or part of, a fetch */
};

struct pol_acct_row {
    uint64_t hash;
    uint64_t delta[POL_ACCT_METRICS];
    uint64_t inflight[POL_ACCT_METRICS];
    uint64_t stored[POL_ACCT_METRICS];
    uint64_t spilled[POL_ACCT_METRICS]; /* in a spill file, not read back yet */
    uint64_t fetched_ms;
    struct pol_acct_waiter *waiters; /* FIFO through ->next; waiters_tail is the last */
    struct pol_acct_waiter *waiters_tail;
    uint32_t dirty_next; /* index + 1 of the next dirty row, 0 at the end */
    uint32_t fetch_next; /* the caller's fetch queue link, same encoding */
    uint16_t key_len;
    uint16_t time_len;
    uint8_t flags;
    /* key, NUL, time, NUL */
    char text[POL_ACCT_KEY_BYTES_MAX + 1 + POL_ACCT_TIME_BYTES_MAX + 1];
};

struct pol_acct_agg_stats {
    uint64_t rows_added;
    uint64_t evicted;
    uint64_t full;            /* pol_acct_agg_get found no room */
    uint64_t evicted_spilled; /* ... of evicted: rows holding spilled counts (read-back) */
};

struct pol_acct_agg {
    struct pol_acct_row *rows;
    uint32_t *index; /* slot -> row index + 1, 0 = empty */
    uint32_t rows_max;
    uint32_t slot_mask;
    uint32_t used;      /* rows in use */
    uint32_t next_new;  /* rows [next_new, rows_max) were never used */
    uint32_t free_head; /* index + 1 of a freed row (chained through dirty_next), 0 none */
    uint32_t hand;      /* clock hand for eviction */
    uint32_t dirty_head, dirty_tail, dirty_count; /* index + 1 encoding */
    struct pol_acct_agg_stats stats;
};

/* Allocates room for rows_max rows (1..POL_ACCT_ROWS_MAX). Start-up only. 0 or -ENOMEM /
 * -EINVAL. */
int pol_acct_agg_init(struct pol_acct_agg *a, uint32_t rows_max);
void pol_acct_agg_fini(struct pol_acct_agg *a);

/* Hash of (key, time): what rows are looked up by. */
uint64_t pol_acct_agg_hash(const char *key, size_t key_len, const char *time, size_t time_len);

/* The row for (key, time), or NULL. key_len <= POL_ACCT_KEY_BYTES_MAX and time_len <=
 * POL_ACCT_TIME_BYTES_MAX (asserted). */
struct pol_acct_row *pol_acct_agg_find(struct pol_acct_agg *a, const char *key, size_t key_len,
                                       const char *time, size_t time_len);
/* The row for (key, time), created (all zero) when missing; NULL when the table is full and no
 * clean row could be evicted. */
struct pol_acct_row *pol_acct_agg_get(struct pol_acct_agg *a, const char *key, size_t key_len,
                                      const char *time, size_t time_len);
/* pol_acct_agg_get for counts read back from a spill file: when no clean row can be evicted,
 * a row holding nothing but spilled counts may be (counted in stats.evicted_spilled). Quota
 * checks then miss that row's spilled counts until they are read back; without it a table
 * whose every row holds spilled counts could never read any back (the file is a stack: the
 * record that found no room would come back first again, forever). */
struct pol_acct_row *pol_acct_agg_get_replay(struct pol_acct_agg *a, const char *key,
                                             size_t key_len, const char *time, size_t time_len);

uint32_t pol_acct_agg_index_of(const struct pol_acct_agg *a, const struct pol_acct_row *row);
struct pol_acct_row *pol_acct_agg_row(struct pol_acct_agg *a, uint32_t idx);
const char *pol_acct_row_key(const struct pol_acct_row *row);
const char *pol_acct_row_time(const struct pol_acct_row *row);

/* delta += m, and the row joins the dirty list (at its end) if it was not on it. Sums
 * saturate at UINT64_MAX. */
void pol_acct_agg_add(struct pol_acct_agg *a, struct pol_acct_row *row,
                      const uint64_t m[POL_ACCT_METRICS]);

/* Takes up to max rows from the head of the dirty list: delta moves to inflight, the row is
 * marked INFLIGHT and its index written to idx_out. Returns how many. */
uint32_t pol_acct_agg_take_dirty(struct pol_acct_agg *a, uint32_t max, uint32_t *idx_out);
/* The statement with rows idx[0..n) finished: ok adds inflight to stored (when STORED) and
 * clears it; !ok gives inflight back to delta (the rows become dirty again, at the end). */
void pol_acct_agg_flush_done(struct pol_acct_agg *a, const uint32_t *idx, uint32_t n, bool ok);

/* The first n (<= max) rows of the dirty list, unchanged (to write them to a spill file). */
uint32_t pol_acct_agg_peek_dirty(const struct pol_acct_agg *a, uint32_t max, uint32_t *idx_out);
/* Those rows were written to a spill file: their delta moves to spilled and they leave the
 * dirty list. idx must be what pol_acct_agg_peek_dirty just returned. */
void pol_acct_agg_mark_spilled(struct pol_acct_agg *a, const uint32_t *idx, uint32_t n);
/* Counts read back from a spill file: spilled -= m (not below 0), delta += m. */
void pol_acct_agg_unspill(struct pol_acct_agg *a, struct pol_acct_row *row,
                          const uint64_t m[POL_ACCT_METRICS]);

/* stored + delta + inflight + spilled of one metric (saturating): what a quota check
 * compares. */
uint64_t pol_acct_row_value(const struct pol_acct_row *row, enum pol_acct_metric m);

/* What the row has not handed to the database or a spill file: delta plus inflight. */
void pol_acct_row_unflushed(const struct pol_acct_row *row, uint64_t out[POL_ACCT_METRICS]);

#ifdef __cplusplus
}
#endif

#endif
