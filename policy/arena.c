/*
 * arena.c: bounded bump arenas and the per-shard pool of arena buffers (see arena.h).
 *
 * Owns: the pool's mappings (munmap'd by pol_arena_pool_fini) and its free stacks (malloc'd at
 * start-up). Home shard only; nothing here is thread-safe and nothing needs to be. Fails only
 * at start-up (mmap/malloc); on the data path an empty pool is an operational condition
 * reported by a NULL return and a counter.
 */
#include "arena.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "eng/assert.h"

_Static_assert((POL_ARENA_ALIGN & (POL_ARENA_ALIGN - 1)) == 0, "alignment is a power of two");

static size_t align_up(size_t n)
{
    return (n + POL_ARENA_ALIGN - 1) & ~(size_t)(POL_ARENA_ALIGN - 1);
}

void pol_arena_init(struct pol_arena *a, void *mem, size_t cap_bytes)
{
    ENG_ASSERT(mem != NULL || cap_bytes == 0);
    ENG_ASSERT(((uintptr_t)mem & (POL_ARENA_ALIGN - 1)) == 0);
    a->base = mem;
    a->cap_bytes = cap_bytes;
    a->used_bytes = 0;
}

void *pol_arena_alloc(struct pol_arena *a, size_t bytes)
{
    ENG_ASSERT(a->used_bytes <= a->cap_bytes);
    size_t n = align_up(bytes);
    if (n < bytes || n > a->cap_bytes - a->used_bytes)
        return NULL;
    void *p = a->base + a->used_bytes;
    a->used_bytes += n;
    return p;
}

void *pol_arena_calloc(struct pol_arena *a, size_t bytes)
{
    void *p = pol_arena_alloc(a, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

char *pol_arena_strndup(struct pol_arena *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = pol_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void pol_arena_reset(struct pol_arena *a)
{
    a->used_bytes = 0;
}

size_t pol_arena_free_bytes(const struct pol_arena *a)
{
    return a->cap_bytes - a->used_bytes;
}

int pol_arena_pool_init(struct pol_arena_pool *pl, const struct pol_arena_class *classes,
                        uint32_t class_count)
{
    ENG_ASSERT(class_count >= 1);
    ENG_ASSERT(class_count <= POL_ARENA_CLASSES_MAX);
    memset(pl, 0, sizeof(*pl));
    pl->class_count = class_count;
    for (uint32_t i = 0; i < class_count; i++) {
        size_t sz = align_up(classes[i].buf_bytes);
        ENG_ASSERT(sz > 0);
        ENG_ASSERT(i == 0 || sz > pl->cls[i - 1].buf_bytes);
        pl->cls[i].buf_bytes = sz;
        pl->cls[i].count = classes[i].count;
        if (classes[i].count == 0)
            continue;
        size_t bytes = sz * classes[i].count;
        if (bytes / classes[i].count != sz)
            goto nomem;
        /* MAP_NORESERVE: the mapping reserves address space only; a buffer's pages become
         * resident when a request first writes them, so sizing for the worst case is cheap. */
        void *region = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (region == MAP_FAILED)
            goto nomem;
        pl->cls[i].region = region;
        pl->cls[i].region_bytes = bytes;
        pl->cls[i].free = malloc(sizeof(void *) * classes[i].count);
        if (!pl->cls[i].free)
            goto nomem;
        for (uint32_t k = 0; k < classes[i].count; k++)
            pl->cls[i].free[k] = (char *)region + (size_t)(classes[i].count - 1 - k) * sz;
        pl->cls[i].free_count = classes[i].count;
    }
    return 0;
nomem:
    pol_arena_pool_fini(pl);
    return -ENOMEM;
}

void pol_arena_pool_fini(struct pol_arena_pool *pl)
{
    for (uint32_t i = 0; i < pl->class_count; i++) {
        if (pl->cls[i].region)
            munmap(pl->cls[i].region, pl->cls[i].region_bytes);
        free(pl->cls[i].free);
        pl->cls[i].region = NULL;
        pl->cls[i].free = NULL;
        pl->cls[i].free_count = 0;
    }
    pl->class_count = 0;
}

void *pol_arena_pool_get(struct pol_arena_pool *pl, size_t need_bytes, uint32_t *class_idx,
                         size_t *buf_bytes)
{
    for (uint32_t i = 0; i < pl->class_count; i++) {
        if (pl->cls[i].buf_bytes < need_bytes || pl->cls[i].free_count == 0)
            continue;
        void *buf = pl->cls[i].free[--pl->cls[i].free_count];
        *class_idx = i;
        *buf_bytes = pl->cls[i].buf_bytes;
        return buf;
    }
    pl->exhausted++;
    return NULL;
}

void pol_arena_pool_put(struct pol_arena_pool *pl, void *buf, uint32_t class_idx)
{
    ENG_ASSERT(class_idx < pl->class_count);
    ENG_ASSERT((char *)buf >= pl->cls[class_idx].region);
    ENG_ASSERT((char *)buf < pl->cls[class_idx].region + pl->cls[class_idx].region_bytes);
    ENG_ASSERT(pl->cls[class_idx].free_count < pl->cls[class_idx].count);
    pl->cls[class_idx].free[pl->cls[class_idx].free_count++] = buf;
}

size_t pol_arena_pool_max_bytes(const struct pol_arena_pool *pl)
{
    return pl->class_count ? pl->cls[pl->class_count - 1].buf_bytes : 0;
}
