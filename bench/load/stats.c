/*
 * stats.c: counting and merging a load-generator thread's statistics (see stats.h).
 */
#include "stats.h"

#include <string.h>

void load_stats_count_action(struct load_stats *s, const char *action, size_t len)
{
    char name[LOAD_ACTION_NAME_BYTES];
    size_t n = 0;
    while (n < len && n < sizeof(name) - 1 && action[n] != ' ' && action[n] != '\t') {
        char ch = action[n];
        name[n++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    name[n] = '\0';
    for (uint32_t i = 0; i < s->action_kinds; i++) {
        if (strcmp(s->actions[i].name, name) == 0) {
            s->actions[i].count++;
            return;
        }
    }
    if (s->action_kinds == LOAD_ACTIONS_MAX) {
        s->action_other++;
        return;
    }
    memcpy(s->actions[s->action_kinds].name, name, n + 1);
    s->actions[s->action_kinds++].count = 1;
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
    dst->action_other += src->action_other;
    for (uint32_t i = 0; i < src->action_kinds; i++) {
        const struct load_action_count *a = &src->actions[i];
        uint32_t j = 0;
        while (j < dst->action_kinds && strcmp(dst->actions[j].name, a->name) != 0)
            j++;
        if (j == dst->action_kinds) {
            if (j == LOAD_ACTIONS_MAX) {
                dst->action_other += a->count;
                continue;
            }
            dst->actions[j] = (struct load_action_count){.count = 0};
            memcpy(dst->actions[j].name, a->name, sizeof(a->name));
            dst->action_kinds++;
        }
        dst->actions[j].count += a->count;
    }
    bench_hist_merge(&dst->latency, &src->latency);
}

uint64_t load_stats_errors(const struct load_stats *s)
{
    return s->err_closed + s->err_malformed + s->err_timeout + s->err_connect;
}
