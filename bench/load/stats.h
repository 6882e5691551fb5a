/*
 * stats.h: what one load-generator thread counts (requests, errors by kind, actions by their
 * first word, the latency histogram) and merging the threads' counts. Pure and allocation-free;
 * one struct load_stats per thread, merged by the main thread after joining them.
 */
#ifndef BENCH_LOAD_STATS_H
#define BENCH_LOAD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "actions.h"
#include "hist.h"

#ifdef __cplusplus
extern "C" {
#endif

struct load_stats {
    uint64_t requests;            /* replies received in the window */
    uint64_t err_closed;          /* the server closed or reset a connection with a request out */
    uint64_t err_malformed;       /* a reply we could not parse, without action, or too long */
    uint64_t err_timeout;         /* no reply within timeout_ms */
    uint64_t err_connect;         /* connects that failed */
    uint64_t err_warmup;          /* errors of any kind outside the window (not in the above) */
    uint64_t connects;            /* successful connects, warm-up included */
    struct bench_actions actions; /* replies in the window, by first word */
    struct bench_hist latency;    /* microseconds, replies in the window */
};

/* Empties s. */
void load_stats_init(struct load_stats *s);

/* Adds src's counts to dst (actions merged by name). */
void load_stats_merge(struct load_stats *dst, const struct load_stats *src);

uint64_t load_stats_errors(const struct load_stats *s);

#ifdef __cplusplus
}
#endif

#endif
