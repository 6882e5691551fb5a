/*
 * regex.h: PCRE2 patterns for POL_OPT_REGEX options (internal to policy/; plugins see struct
 * pol_regex as opaque and call pol_regex_match).
 *
 * Patterns are compiled (and JIT-compiled when the platform allows) at start-up, on the main
 * thread, and are read-only afterwards. Matching needs a match-data block per thread: each
 * shard creates its own at shard start (pol_regex_thread_init), so matching on the data path
 * never allocates. Perl semantics as far as PCRE2 goes: bytes, case sensitive, unanchored.
 */
#ifndef POL_REGEX_H
#define POL_REGEX_H

#include <stdbool.h>
#include <stddef.h>

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Returns NULL with "bad regex PATTERN: REASON at offset N" in err. */
struct pol_regex *pol_regex_compile(const char *pattern, char *err, size_t err_len);
void pol_regex_free(struct pol_regex *re);
/* 0 or -ENOMEM. Idempotent; a thread that never called it gets its block on first match
 * (the main thread and tests). */
int pol_regex_thread_init(void);
void pol_regex_thread_fini(void);
/* Matches on this thread that ended in a PCRE2 error (resource limit) instead of a result. */
unsigned long pol_regex_errors(void);

#ifdef __cplusplus
}
#endif

#endif
