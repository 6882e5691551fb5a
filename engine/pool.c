/*
 * pool.c: fixed-size slot pools (see pool.h). Owns one mapping per pool; asserts on double put
 * and on indices out of range, which are programmer errors.
 */
#include "pool.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "eng/assert.h"

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

int eng_pool_init(struct eng_pool *p, size_t slot_bytes, uint32_t cap)
{
    *p = (struct eng_pool){0};
    if (slot_bytes == 0 || cap == 0)
        return -EINVAL;
    /* slots, then the free stack: cap x slot_bytes + cap x 4 bytes, one mapping. */
    size_t slots = page_round(slot_bytes * (size_t)cap);
    size_t stack = page_round(sizeof(uint32_t) * (size_t)cap);
    void *m = mmap(NULL, slots + stack, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    p->base = m;
    p->free_stack = (uint32_t *)(p->base + slots);
    p->slot_bytes = slot_bytes;
    p->map_bytes = slots + stack;
    p->cap = cap;
    return 0;
}

void eng_pool_fini(struct eng_pool *p)
{
    if (p->base)
        munmap(p->base, p->map_bytes);
    *p = (struct eng_pool){0};
}

uint32_t eng_pool_get(struct eng_pool *p)
{
    if (p->fail_after) {
        if (p->fail_after == 1)
            return ENG_POOL_NONE;
        p->fail_after--;
    }
    uint32_t idx;
    if (p->free_count > 0)
        idx = p->free_stack[--p->free_count];
    else if (p->fresh_idx < p->cap)
        idx = p->fresh_idx++;
    else
        return ENG_POOL_NONE;
    p->used++;
    ENG_ASSERT(p->used <= p->cap);
    return idx;
}

void eng_pool_put(struct eng_pool *p, uint32_t idx)
{
    ENG_ASSERT(idx < p->fresh_idx);
    ENG_ASSERT(p->used > 0);
    ENG_ASSERT(p->free_count < p->cap);
#ifdef ENG_DEBUG
    for (uint32_t i = 0; i < p->free_count; i++)
        ENG_DEBUG_ASSERT(p->free_stack[i] != idx); /* double put */
#endif
    p->free_stack[p->free_count++] = idx;
    p->used--;
}

uint32_t eng_pool_index(const struct eng_pool *p, const void *slot)
{
    const char *s = slot;
    ENG_ASSERT(s >= p->base);
    size_t off = (size_t)(s - p->base);
    ENG_ASSERT(off % p->slot_bytes == 0);
    ENG_ASSERT(off / p->slot_bytes < p->cap);
    return (uint32_t)(off / p->slot_bytes);
}

void eng_pool_trim(struct eng_pool *p, uint32_t idx, size_t keep_bytes, size_t used_bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *slot = eng_pool_at(p, idx);
    /* Only whole pages inside the slot; slots of page-multiple size start on a page. */
    uintptr_t from = ((uintptr_t)slot + keep_bytes + page - 1) / page * page;
    uintptr_t to = ((uintptr_t)slot + used_bytes) / page * page;
    if (to > from)
        madvise((void *)from, to - from, MADV_DONTNEED);
}
