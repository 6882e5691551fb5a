/*
 * hist.c: the log-linear latency histogram (see hist.h for the layout and its error bound).
 *
 * Pure and allocation-free; every function runs in O(1) except percentile and merge, which walk
 * the 3,776 buckets once.
 */
#include "hist.h"

#include <string.h>

#include "bench_assert.h"

_Static_assert(BENCH_HIST_EXACT_COUNT == 2u * BENCH_HIST_SUB_COUNT,
               "the exact range must end where the first sub-bucketed octave begins");
_Static_assert(BENCH_HIST_BUCKET_COUNT == 3776u, "128 exact + 57 octaves of 64");

/* log2 of BENCH_HIST_SUB_COUNT: a value with msb m falls in octave k = m - 6. */
#define SUB_BITS 6u

void bench_hist_init(struct bench_hist *h)
{
    BENCH_ASSERT(h != NULL);
    memset(h, 0, sizeof(*h));
    h->min_us = UINT64_MAX;
}

uint32_t bench_hist_bucket_idx(uint64_t value_us)
{
    if (value_us < BENCH_HIST_EXACT_COUNT)
        return (uint32_t)value_us;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(value_us); /* 7..63 */
    uint32_t shift = msb - SUB_BITS;                          /* 1..57 */
    uint32_t top = (uint32_t)(value_us >> shift);             /* 64..127 */
    uint32_t idx =
        BENCH_HIST_EXACT_COUNT + (shift - 1u) * BENCH_HIST_SUB_COUNT + (top - BENCH_HIST_SUB_COUNT);
    BENCH_ASSERT(idx < BENCH_HIST_BUCKET_COUNT);
    return idx;
}

uint64_t bench_hist_bucket_lo(uint32_t idx)
{
    BENCH_ASSERT(idx < BENCH_HIST_BUCKET_COUNT);
    if (idx < BENCH_HIST_EXACT_COUNT)
        return idx;
    uint32_t j = idx - BENCH_HIST_EXACT_COUNT;
    uint32_t shift = j / BENCH_HIST_SUB_COUNT + 1u;
    uint64_t top = BENCH_HIST_SUB_COUNT + j % BENCH_HIST_SUB_COUNT;
    return top << shift;
}

uint64_t bench_hist_bucket_hi(uint32_t idx)
{
    BENCH_ASSERT(idx < BENCH_HIST_BUCKET_COUNT);
    if (idx < BENCH_HIST_EXACT_COUNT)
        return idx;
    uint32_t shift = (idx - BENCH_HIST_EXACT_COUNT) / BENCH_HIST_SUB_COUNT + 1u;
    return bench_hist_bucket_lo(idx) + ((UINT64_C(1) << shift) - 1u);
}

void bench_hist_add_n(struct bench_hist *h, uint64_t value_us, uint64_t n)
{
    if (n == 0)
        return;
    h->buckets[bench_hist_bucket_idx(value_us)] += n;
    h->count += n;
    h->sum_us += value_us * n;
    if (value_us < h->min_us)
        h->min_us = value_us;
    if (value_us > h->max_us)
        h->max_us = value_us;
}

void bench_hist_add(struct bench_hist *h, uint64_t value_us)
{
    bench_hist_add_n(h, value_us, 1);
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    BENCH_ASSERT(dst != NULL);
    BENCH_ASSERT(src != NULL);
    if (src->count == 0)
        return;
    /* Read src's scalars first: dst may be src. */
    uint64_t src_min = src->min_us, src_max = src->max_us;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKET_COUNT; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum_us += src->sum_us;
    if (src_min < dst->min_us)
        dst->min_us = src_min;
    if (src_max > dst->max_us)
        dst->max_us = src_max;
}

/* The nearest rank (1-based) of percentile p among count samples: ceil(p/100 * count), kept
 * within [1, count]. The tolerance absorbs the binary rounding of e.g. 99.9/100 * 1000. */
static uint64_t percentile_rank(double p, uint64_t count)
{
    double r = p / 100.0 * (double)count;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r - 1e-9 * r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return rank;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (!(p > 0.0)) /* also catches NaN */
        return h->min_us;
    if (p >= 100.0)
        return h->max_us;
    uint64_t rank = percentile_rank(p, h->count);
    uint64_t seen = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKET_COUNT; i++) {
        seen += h->buckets[i];
        if (seen < rank)
            continue;
        uint64_t lo = bench_hist_bucket_lo(i);
        uint64_t mid = lo + (bench_hist_bucket_hi(i) - lo) / 2u;
        if (mid < h->min_us)
            mid = h->min_us;
        if (mid > h->max_us)
            mid = h->max_us;
        return mid;
    }
    BENCH_ASSERT(!"bucket counts do not add up to count");
    return h->max_us;
}

uint64_t bench_hist_count(const struct bench_hist *h)
{
    return h->count;
}

uint64_t bench_hist_max(const struct bench_hist *h)
{
    return h->count ? h->max_us : 0;
}

uint64_t bench_hist_min(const struct bench_hist *h)
{
    return h->count ? h->min_us : 0;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count ? (double)h->sum_us / (double)h->count : 0.0;
}
