/*
 * assert.c: the failure path of ENG_ASSERT. Prints the expression, where, and the shard, then
 * aborts so that a core is written. Async-signal-unsafe by nature; it only runs on a bug.
 */
#include "eng/assert.h"

#include <stdio.h>
#include <stdlib.h>

#include "eng/engine.h"

void eng_assert_fail(const char *expr, const char *file, int line)
{
    struct eng_shard *sh = eng_shard_self();
    if (sh)
        fprintf(stderr, "assertion failed: %s at %s:%d (shard %u)\n", expr, file, line,
                eng_shard_index(sh));
    else
        fprintf(stderr, "assertion failed: %s at %s:%d (main thread)\n", expr, file, line);
    fflush(stderr);
    abort();
}
