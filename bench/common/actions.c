/*
 * actions.c: the action counts of the benchmark reports (see actions.h).
 */
#include "actions.h"

#include <string.h>

#include "bench_assert.h"
#include "setup.h"

void bench_actions_init(struct bench_actions *a)
{
    memset(a, 0, sizeof(*a));
}

/* The entry for name, created if there is room; NULL when the table is full. */
static struct bench_action_count *entry(struct bench_actions *a, const char *name)
{
    for (uint32_t i = 0; i < a->kind_count; i++)
        if (strcmp(a->kinds[i].name, name) == 0)
            return &a->kinds[i];
    if (a->kind_count == BENCH_ACTIONS_MAX)
        return NULL;
    struct bench_action_count *e = &a->kinds[a->kind_count++];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    return e;
}

void bench_actions_count(struct bench_actions *a, const char *action, size_t len)
{
    char name[BENCH_ACTION_NAME_BYTES];
    size_t n = 0;
    while (n < len && n < sizeof(name) - 1 && action[n] != ' ' && action[n] != '\t') {
        char ch = action[n];
        name[n++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    name[n] = '\0';
    struct bench_action_count *e = entry(a, name);
    if (e)
        e->count++;
    else
        a->other++;
}

void bench_actions_merge(struct bench_actions *dst, const struct bench_actions *src)
{
    BENCH_ASSERT(dst != src);
    dst->other += src->other;
    for (uint32_t i = 0; i < src->kind_count; i++) {
        struct bench_action_count *e = entry(dst, src->kinds[i].name);
        if (e)
            e->count += src->kinds[i].count;
        else
            dst->other += src->kinds[i].count;
    }
}

void bench_actions_print_text(FILE *out, const struct bench_actions *a)
{
    for (uint32_t i = 0; i < a->kind_count; i++)
        fprintf(out, "%s %s %llu", i ? "," : "", a->kinds[i].name,
                (unsigned long long)a->kinds[i].count);
    if (a->other)
        fprintf(out, "%s (other) %llu", a->kind_count ? "," : "", (unsigned long long)a->other);
    if (a->kind_count == 0 && a->other == 0)
        fputs(" none", out);
}

void bench_actions_print_json(FILE *out, const struct bench_actions *a)
{
    fputc('{', out);
    for (uint32_t i = 0; i < a->kind_count; i++) {
        fputs(i ? "," : "", out);
        bench_json_string(out, a->kinds[i].name, strlen(a->kinds[i].name));
        fprintf(out, ":%llu", (unsigned long long)a->kinds[i].count);
    }
    if (a->other)
        fprintf(out, "%s\"(other)\":%llu", a->kind_count ? "," : "", (unsigned long long)a->other);
    fputc('}', out);
}
