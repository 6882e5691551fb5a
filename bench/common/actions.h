/*
 * actions.h: counting the actions of policy replies by their first word, lower-cased ("reject",
 * "dunno", "prepend", "defer_if_permit"), for the benchmark tools' reports. A fixed table: the
 * first BENCH_ACTIONS_MAX distinct words get an entry, later ones are counted as "other". Pure,
 * no allocation; one table per thread, merged at the end.
 */
#ifndef BENCH_ACTIONS_H
#define BENCH_ACTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_ACTIONS_MAX 32u       /* distinct words counted; the rest go to "other" */
#define BENCH_ACTION_NAME_BYTES 32u /* a word is cut to 31 bytes */

struct bench_action_count {
    char name[BENCH_ACTION_NAME_BYTES];
    uint64_t count;
};

struct bench_actions {
    uint32_t kind_count; /* used entries of kinds[] */
    uint64_t other;      /* actions that found no free entry */
    struct bench_action_count kinds[BENCH_ACTIONS_MAX];
};

/* Empties a. (A zeroed struct is empty too.) */
void bench_actions_init(struct bench_actions *a);

/* Counts one action value (the text after "action=") under its first word, lower-cased. */
void bench_actions_count(struct bench_actions *a, const char *action, size_t len);

/* Adds src's counts to dst, by name. */
void bench_actions_merge(struct bench_actions *dst, const struct bench_actions *src);

/* " dunno 5, reject 3, (other) 1" or " none". */
void bench_actions_print_text(FILE *out, const struct bench_actions *a);

/* {"dunno":5,"reject":3,"(other)":1} */
void bench_actions_print_json(FILE *out, const struct bench_actions *a);

#ifdef __cplusplus
}
#endif

#endif
