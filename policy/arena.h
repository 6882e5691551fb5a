/*
 * arena.h: bounded bump arenas for requests, and the per-shard pool of arena buffers they come
 * from (internal to policy/).
 *
 * An arena hands out 8-byte aligned pieces of one fixed buffer and never grows: when a piece
 * does not fit, the allocation returns NULL (the caller fails the request). Reset is one store.
 *
 * The pool keeps buffers of a few size classes, carved at shard start out of one mapping per
 * class (MAP_NORESERVE: only pages that a request touches become resident). A request takes
 * the smallest class that fits its attributes plus working headroom. A buffer always returns to
 * the pool it came from (its home shard), even when the request was processed on another
 * shard; pool functions are called on the home shard only.
 */
#ifndef POL_ARENA_H
#define POL_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_ARENA_ALIGN 8u

struct pol_arena {
    char *base;
    size_t cap_bytes;
    size_t used_bytes;
};

/* mem must be POL_ARENA_ALIGN-aligned and live as long as the arena is used. */
void pol_arena_init(struct pol_arena *a, void *mem, size_t cap_bytes);
/* bytes rounded up to POL_ARENA_ALIGN; NULL when it does not fit (the arena is unchanged). */
void *pol_arena_alloc(struct pol_arena *a, size_t bytes);
/* Same, zero-filled. */
void *pol_arena_calloc(struct pol_arena *a, size_t bytes);
/* A NUL-terminated copy of s[0..len); NULL when full. */
char *pol_arena_strndup(struct pol_arena *a, const char *s, size_t len);
void pol_arena_reset(struct pol_arena *a);
size_t pol_arena_free_bytes(const struct pol_arena *a);

#define POL_ARENA_CLASSES_MAX 4u

struct pol_arena_class {
    size_t buf_bytes; /* size of each buffer of this class */
    uint32_t count;   /* buffers of this class */
};

struct pol_arena_pool {
    uint32_t class_count;
    struct {
        size_t buf_bytes;
        uint32_t count;
        char *region; /* count * buf_bytes, mmap'd */
        size_t region_bytes;
        void **free; /* stack of free buffers */
        uint32_t free_count;
    } cls[POL_ARENA_CLASSES_MAX];
    uint64_t exhausted; /* gets that found no buffer big enough (counted limit) */
};

/* Classes in increasing buf_bytes order (asserted). Returns 0 or -errno. Start-up only. */
int pol_arena_pool_init(struct pol_arena_pool *pl, const struct pol_arena_class *classes,
                        uint32_t class_count);
void pol_arena_pool_fini(struct pol_arena_pool *pl);
/* A buffer of at least need_bytes from the smallest class that has one free (a bigger class is
 * used when the fitting one is empty). Returns the buffer and writes its class and size, or
 * NULL (counted in exhausted) when none is free or need_bytes exceeds the largest class. */
void *pol_arena_pool_get(struct pol_arena_pool *pl, size_t need_bytes, uint32_t *class_idx,
                         size_t *buf_bytes);
void pol_arena_pool_put(struct pol_arena_pool *pl, void *buf, uint32_t class_idx);
/* Largest class size, the most a single request can ever use. */
size_t pol_arena_pool_max_bytes(const struct pol_arena_pool *pl);

#ifdef __cplusplus
}
#endif

#endif
