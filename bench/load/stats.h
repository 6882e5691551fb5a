/*
 * stats.h: what one load-generator thread counts (requests, errors by kind, actions by their
 * first word, the latency histogram) and merging the threads' counts. Pure and allocation-free;
 * one struct load_stats per thread, merged by the main thread after joining them.
 */
#ifndef BENCH_LOAD_STATS_H
#define BENCH_LOAD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "hist.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOAD_ACTIONS_MAX 32u       /* distinct action words counted; the rest go to "other" */
#define LOAD_ACTION_NAME_BYTES 32u /* action word, lower case, cut to 31 bytes */

struct load_action_count {
    char name[LOAD_ACTION_NAME_BYTES];
    uint64_t count;
};

struct load_stats {
    uint64_t requests;      /* replies received in the window */
    uint64_t err_closed;    /* the server closed or reset a connection with a request out */
    uint64_t err_malformed; /* a reply we could not parse, without action, or too long */
    uint64_t err_timeout;   /* no reply within timeout_ms */
    uint64_t err_connect;   /* connects that failed */
    uint64_t err_warmup;    /* errors of any kind outside the window (not in the above) */
    uint64_t connects;      /* successful connects, warm-up included */
    uint32_t action_kinds;  /* used entries of actions[] */
    uint64_t action_other;  /* actions that found no free entry */
    struct load_action_count actions[LOAD_ACTIONS_MAX];
    struct bench_hist latency; /* microseconds, replies in the window */
};

/* Adds src's counts to dst (actions merged by name). */
void load_stats_merge(struct load_stats *dst, const struct load_stats *src);

/* Counts one action value under its first word, lower-cased. */
void load_stats_count_action(struct load_stats *s, const char *action, size_t len);

uint64_t load_stats_errors(const struct load_stats *s);

#ifdef __cplusplus
}
#endif

#endif
