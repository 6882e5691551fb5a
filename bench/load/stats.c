/*
 * stats.c: counting and merging a load-generator thread's statistics (see stats.h).
 */
#include "stats.h"

#include <string.h>

void load_stats_init(struct load_stats *s)
{
    memset(s, 0, sizeof(*s));
    bench_actions_init(&s->actions);
    bench_hist_init(&s->latency);
}

void load_stats_merge(struct load_stats *dst, const struct load_stats *src)
{
    dst->requests += src->requests;
    dst->err_closed += src->err_closed;
    dst->err_malformed += src->err_malformed;
    dst->err_timeout += src->err_timeout;
    dst->err_connect += src->err_connect;
    dst->err_warmup += src->err_warmup;
    dst->connects += src->connects;
    bench_actions_merge(&dst->actions, &src->actions);
    bench_hist_merge(&dst->latency, &src->latency);
}

uint64_t load_stats_errors(const struct load_stats *s)
{
    return s->err_closed + s->err_malformed + s->err_timeout + s->err_connect;
}
