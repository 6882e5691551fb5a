/*
 * main_thread.c: lets the parser fuzz targets link engine/assert.c without the rest of the
 * engine (and liburing), so that they build with a single clang command line.
 *
 * The parsers are pure and run on the main thread, where eng_shard_self() is documented to
 * return NULL; ENG_ASSERT's failure path asks for it. These weak definitions say exactly that,
 * and give way to the engine's real ones whenever the engine's shard code is linked in.
 */
#include <stddef.h>

#include <eng/engine.h>

__attribute__((weak)) struct eng_shard *eng_shard_self(void)
{
    return NULL;
}

__attribute__((weak)) unsigned eng_shard_index(const struct eng_shard *sh)
{
    (void)sh;
    return 0;
}
