/*
 * pool.h: fixed-size slot pools for one shard (connections, staging and send buffers).
 *
 * A pool is one anonymous MAP_NORESERVE mapping of cap slots of slot_bytes each, made at shard
 * start. Slots are handed out lowest-untouched-first and then recycled LIFO through a free stack
 * of indices, so memory the kernel never had to fault in costs nothing and a hot pool stays in
 * few pages. get/put never allocate and never fail except "empty" (UINT32_MAX, the caller's
 * operational error). A slot's bytes survive put/get (connections keep their generation there).
 * Owner: one shard thread. Test hook: fail_after makes get fail once that many more gets have
 * succeeded (SQLite test_malloc style); 0 disables it.
 */
#ifndef ENG_POOL_H
#define ENG_POOL_H

#include <stddef.h>
#include <stdint.h>

#define ENG_POOL_NONE UINT32_MAX

struct eng_pool {
    char *base;
    uint32_t *free_stack;
    size_t slot_bytes;
    size_t map_bytes;
    uint32_t cap;
    uint32_t free_count; /* entries on free_stack */
    uint32_t fresh_idx;  /* slots [fresh_idx, cap) were never handed out */
    uint32_t used;       /* slots handed out and not put back */
    uint32_t fail_after; /* test hook, see above */
};

/* Returns 0 or -errno (-ENOMEM from mmap, -EINVAL for a zero size). */
int eng_pool_init(struct eng_pool *p, size_t slot_bytes, uint32_t cap);
void eng_pool_fini(struct eng_pool *p);

uint32_t eng_pool_get(struct eng_pool *p); /* index or ENG_POOL_NONE */
void eng_pool_put(struct eng_pool *p, uint32_t idx);

static inline void *eng_pool_at(const struct eng_pool *p, uint32_t idx)
{
    return p->base + (size_t)idx * p->slot_bytes;
}

/* Index of a slot pointer (asserted to be a slot start). */
uint32_t eng_pool_index(const struct eng_pool *p, const void *slot);

/* Hands the pages of a slot back to the kernel from byte offset keep on (after a rare large
 * use), so that a pool of large buffers does not stay resident after a spike. */
void eng_pool_trim(struct eng_pool *p, uint32_t idx, size_t keep_bytes, size_t used_bytes);

#endif
