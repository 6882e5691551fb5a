/*
 * bench_assert.h: BENCH_ASSERT for the benchmark tools and ringpolicyd-client.
 *
 * The same contract as ENG_ASSERT (eng/assert.h): always on, for programmer errors only, prints
 * the expression and file:line and aborts. It exists because the tools in bench/ and
 * policy/client/ do not link the engine (eng_assert_fail asks the engine for the current shard),
 * and a client must not pull a whole runtime in to report a broken invariant.
 */
#ifndef BENCH_ASSERT_H
#define BENCH_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

__attribute__((noreturn, cold)) static inline void bench_assert_fail(const char *expr,
                                                                     const char *file, int line)
{
    fprintf(stderr, "assertion failed: %s at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}

#define BENCH_ASSERT(x) ((x) ? (void)0 : bench_assert_fail(#x, __FILE__, __LINE__))

#ifdef __cplusplus
}
#endif

#endif
