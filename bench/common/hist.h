/*
 * hist.h: a fixed-size log-linear latency histogram (values in microseconds).
 *
 * Values below 128 are counted exactly. Above that, each power of two [2^m, 2^(m+1)) is split
 * into 64 equal buckets (the layout of HdrHistogram with 2 significant digits), so a bucket is
 * at most 1/64 of its lower bound wide and a reported percentile, the bucket's midpoint clamped
 * to the observed min and max, is within 0.8% of the true sample. The whole uint64_t range is
 * covered, so nothing is clamped (100 s = 1e8 us is nowhere near the top).
 *
 * The struct is plain data (about 30 KiB): no malloc, copyable with memcpy, one per thread, and
 * merged at the end (bench_hist_merge). Not thread-safe: each thread adds to its own.
 * Percentile definition: the smallest recorded value v such that at least p% of the samples
 * are <= v (the nearest-rank method), so p=100 is the max and p=0 the min.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_HIST_EXACT_COUNT 128u /* values 0..127 have one bucket each */
#define BENCH_HIST_SUB_COUNT 64u    /* buckets per power of two above that */
/* 128 exact buckets, then 64 per octave for msb 7..63 (57 octaves). */
#define BENCH_HIST_BUCKET_COUNT (BENCH_HIST_EXACT_COUNT + 57u * BENCH_HIST_SUB_COUNT)

struct bench_hist {
    uint64_t count;
    uint64_t sum_us; /* wraps only after 584,000 years of summed latency */
    uint64_t min_us; /* UINT64_MAX while empty */
    uint64_t max_us;
    uint64_t buckets[BENCH_HIST_BUCKET_COUNT];
};

/* Empties h. */
void bench_hist_init(struct bench_hist *h);

/* Records one value. */
void bench_hist_add(struct bench_hist *h, uint64_t value_us);

/* Records the same value n times (n may be 0). */
void bench_hist_add_n(struct bench_hist *h, uint64_t value_us, uint64_t n);

/* Adds every sample of src to dst. src is unchanged; dst == src is allowed (doubles it). */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);

/* The p-th percentile, p in [0, 100] (clamped), e.g. 50, 90, 99, 99.9. 0 when empty. */
uint64_t bench_hist_percentile(const struct bench_hist *h, double p);

uint64_t bench_hist_count(const struct bench_hist *h);
uint64_t bench_hist_max(const struct bench_hist *h); /* 0 when empty */
uint64_t bench_hist_min(const struct bench_hist *h); /* 0 when empty */
double bench_hist_mean(const struct bench_hist *h);  /* 0 when empty */

/* Bucket arithmetic, exported for the tests: index of a value, and the bucket's bounds
 * [lo, hi] (inclusive). */
uint32_t bench_hist_bucket_idx(uint64_t value_us);
uint64_t bench_hist_bucket_lo(uint32_t idx);
uint64_t bench_hist_bucket_hi(uint32_t idx);

#ifdef __cplusplus
}
#endif

#endif
