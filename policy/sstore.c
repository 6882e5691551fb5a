/*
 * sstore.c: the Memory session cache of one shard (see sstore.h for the model and sizing).
 *
 * Owns three mappings made at create (entries, hash buckets, blocks + their links); nothing is
 * allocated afterwards. Single-threaded: only the owning shard calls in. Sessions held by a
 * running request are off the LRU list, so eviction never touches them. Expiry is exact and
 * cheap: every session gets the same lifetime from its last store, so the LRU order is also the
 * expiry order and expired sessions are always found at the LRU tail.
 *
 * Limits: a full store (every entry held) refuses new sessions (counted as `full`); a session
 * larger than session_bytes_max keeps its previous stored version (counted as `too_big`).
 */
#include "sstore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "eng/assert.h"

#define NO_BLOCK UINT32_MAX
/* Expired sessions removed per acquire: bounds the work one request does for the others. */
#define EXPIRE_SWEEP_MAX 16u

struct pol_sstore_ent {
    uint64_t hash;
    struct pol_sstore_ent *hnext; /* hash chain, or free list */
    struct pol_sstore_ent *lru_prev, *lru_next;
    uint32_t key_len;
    uint32_t blob_len;
    uint32_t first_block;
    uint32_t block_count;
    uint64_t expires_ms;
    bool in_use;
    bool busy;   /* held by a request: off the LRU list */
    bool stored; /* a blob was stored at least once */
    struct pol_sstore_waiter *wait_head, *wait_tail;
};

struct pol_sstore {
    struct pol_sstore_config cfg;
    struct pol_sstore_ent *ents;
    struct pol_sstore_ent *free_ents;
    struct pol_sstore_ent **buckets;
    uint32_t bucket_mask;
    struct pol_sstore_ent lru; /* sentinel: lru.lru_next most recent, lru.lru_prev oldest */
    unsigned char *blocks;
    uint32_t *block_next;
    uint32_t block_count;
    uint32_t free_block;
    uint32_t free_blocks;
    size_t map_bytes[3];
    struct pol_sstore_stats stats;
};

static void *map(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int pol_sstore_create(const struct pol_sstore_config *cfg, struct pol_sstore **out)
{
    ENG_ASSERT(cfg->sessions_max > 0);
    struct pol_sstore *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->cfg = *cfg;
    uint32_t nb = 1;
    while (nb < cfg->sessions_max && nb < (1u << 30))
        nb <<= 1;
    st->bucket_mask = nb - 1;
    size_t blocks = cfg->memory_bytes / POL_SSTORE_BLOCK_BYTES;
    if (blocks < 1)
        blocks = 1;
    if (blocks > UINT32_MAX - 1)
        blocks = UINT32_MAX - 1;
    st->block_count = (uint32_t)blocks;
    st->map_bytes[0] = sizeof(struct pol_sstore_ent) * cfg->sessions_max;
    st->map_bytes[1] = sizeof(struct pol_sstore_ent *) * nb;
    st->map_bytes[2] = (POL_SSTORE_BLOCK_BYTES + sizeof(uint32_t)) * blocks;
    st->ents = map(st->map_bytes[0]);
    st->buckets = map(st->map_bytes[1]);
    st->blocks = map(st->map_bytes[2]);
    if (!st->ents || !st->buckets || !st->blocks) {
        pol_sstore_destroy(st);
        return -ENOMEM;
    }
    st->block_next = (uint32_t *)(st->blocks + (size_t)POL_SSTORE_BLOCK_BYTES * blocks);
    for (uint32_t i = cfg->sessions_max; i-- > 0;) {
        st->ents[i].hnext = st->free_ents;
        st->free_ents = &st->ents[i];
    }
    /* Block links are built lazily: blocks [free_block_lazy, count) were never used. Writing
     * all links now would make the whole link array resident at start. */
    st->free_block = NO_BLOCK;
    st->free_blocks = st->block_count;
    st->lru.lru_next = st->lru.lru_prev = &st->lru;
    st->stats.blocks_total = st->block_count;
    *out = st;
    return 0;
}

void pol_sstore_destroy(struct pol_sstore *st)
{
    if (!st)
        return;
    if (st->ents)
        munmap(st->ents, st->map_bytes[0] ? st->map_bytes[0] : 1);
    if (st->buckets)
        munmap(st->buckets, st->map_bytes[1] ? st->map_bytes[1] : 1);
    if (st->blocks)
        munmap(st->blocks, st->map_bytes[2] ? st->map_bytes[2] : 1);
    free(st);
}

/* ---------------------------------------------------------------------------------------------
 * Blocks: a free list of returned blocks, then a bump over never-used ones.
 */

static uint32_t block_get(struct pol_sstore *st)
{
    ENG_ASSERT(st->free_blocks > 0);
    uint32_t b;
    if (st->free_block != NO_BLOCK) {
        b = st->free_block;
        st->free_block = st->block_next[b];
    } else {
        /* Never-used blocks are those past the ones handed out or freed so far. */
        b = st->block_count - st->free_blocks;
    }
    st->free_blocks--;
    st->stats.blocks_used++;
    return b;
}

/* Frees count blocks of a chain. Returned blocks go to the free list; the bump region only
 * shrinks, so "never used" stays exactly [count - free_blocks_in_bump, count). To keep that
 * invariant simple, a freed block always goes on the list. */
static void chain_free(struct pol_sstore *st, uint32_t first, uint32_t count)
{
    uint32_t b = first;
    for (uint32_t i = 0; i < count; i++) {
        ENG_ASSERT(b < st->block_count);
        uint32_t nx = st->block_next[b];
        st->block_next[b] = st->free_block;
        st->free_block = b;
        st->free_blocks++;
        st->stats.blocks_used--;
        b = nx;
    }
}

static unsigned char *block_at(const struct pol_sstore *st, uint32_t b)
{
    ENG_ASSERT(b < st->block_count);
    return st->blocks + (size_t)b * POL_SSTORE_BLOCK_BYTES;
}

/* Writing a fresh chain: its blocks are taken and linked first, then filled in order. */
struct chain_writer {
    struct pol_sstore *st;
    uint32_t first;
    uint32_t cur;
    size_t off; /* in cur */
};

static void cw_start(struct chain_writer *w, struct pol_sstore *st, uint32_t count)
{
    ENG_ASSERT(count > 0);
    w->st = st;
    w->first = w->cur = NO_BLOCK;
    w->off = 0;
    for (uint32_t i = 0, prev = NO_BLOCK; i < count; i++) {
        uint32_t b = block_get(st);
        st->block_next[b] = NO_BLOCK;
        if (prev == NO_BLOCK)
            w->first = b;
        else
            st->block_next[prev] = b;
        prev = b;
    }
    w->cur = w->first;
}

static void cw_put(struct chain_writer *w, const char *p, size_t n)
{
    while (n > 0) {
        if (w->off == POL_SSTORE_BLOCK_BYTES) {
            w->cur = w->st->block_next[w->cur];
            w->off = 0;
        }
        ENG_ASSERT(w->cur != NO_BLOCK);
        size_t k = POL_SSTORE_BLOCK_BYTES - w->off;
        if (k > n)
            k = n;
        memcpy(w->st->blocks + (size_t)w->cur * POL_SSTORE_BLOCK_BYTES + w->off, p, k);
        w->off += k;
        p += k;
        n -= k;
    }
}

/* Copies len bytes starting at byte skip of the chain. */
static void chain_read(const struct pol_sstore *st, uint32_t first, size_t skip, char *out,
                       size_t len)
{
    uint32_t b = first;
    while (skip >= POL_SSTORE_BLOCK_BYTES) {
        b = st->block_next[b];
        skip -= POL_SSTORE_BLOCK_BYTES;
    }
    while (len > 0) {
        size_t n = POL_SSTORE_BLOCK_BYTES - skip;
        if (n > len)
            n = len;
        memcpy(out, block_at(st, b) + skip, n);
        out += n;
        len -= n;
        skip = 0;
        b = st->block_next[b];
    }
}

static bool chain_equals(const struct pol_sstore *st, uint32_t first, const char *key, size_t len)
{
    uint32_t b = first;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < POL_SSTORE_BLOCK_BYTES ? len - off : POL_SSTORE_BLOCK_BYTES;
        if (memcmp(block_at(st, b), key + off, n) != 0)
            return false;
        off += n;
        b = st->block_next[b];
    }
    return true;
}

static uint32_t blocks_for(size_t bytes)
{
    return (uint32_t)((bytes + POL_SSTORE_BLOCK_BYTES - 1) / POL_SSTORE_BLOCK_BYTES);
}

/* ---------------------------------------------------------------------------------------------
 * Entries, hash and LRU
 */

static void lru_unlink(struct pol_sstore_ent *e)
{
    e->lru_prev->lru_next = e->lru_next;
    e->lru_next->lru_prev = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct pol_sstore *st, struct pol_sstore_ent *e)
{
    e->lru_next = st->lru.lru_next;
    e->lru_prev = &st->lru;
    st->lru.lru_next->lru_prev = e;
    st->lru.lru_next = e;
}

static void hash_unlink(struct pol_sstore *st, struct pol_sstore_ent *e)
{
    struct pol_sstore_ent **pp = &st->buckets[e->hash & st->bucket_mask];
    while (*pp != e) {
        ENG_ASSERT(*pp != NULL);
        pp = &(*pp)->hnext;
    }
    *pp = e->hnext;
}

/* Removes a session that nobody holds. */
static void ent_remove(struct pol_sstore *st, struct pol_sstore_ent *e)
{
    ENG_ASSERT(e->in_use);
    ENG_ASSERT(e->wait_head == NULL);
    if (e->lru_next)
        lru_unlink(e);
    hash_unlink(st, e);
    chain_free(st, e->first_block, e->block_count);
    e->in_use = false;
    e->hnext = st->free_ents;
    st->free_ents = e;
    st->stats.sessions--;
}

/* Evicts the least recently stored session; false when every session is held. */
static bool evict_one(struct pol_sstore *st)
{
    struct pol_sstore_ent *e = st->lru.lru_prev;
    if (e == &st->lru)
        return false;
    ENG_ASSERT(!e->busy);
    ent_remove(st, e);
    st->stats.evicted++;
    return true;
}

static void expire_sweep(struct pol_sstore *st, uint64_t now_ms)
{
    for (unsigned i = 0; i < EXPIRE_SWEEP_MAX; i++) {
        struct pol_sstore_ent *e = st->lru.lru_prev;
        if (e == &st->lru || e->expires_ms > now_ms)
            return;
        ent_remove(st, e);
        st->stats.expired++;
    }
}

static bool ensure_blocks(struct pol_sstore *st, uint32_t need)
{
    if (need > st->block_count)
        return false;
    while (st->free_blocks < need)
        if (!evict_one(st))
            return false;
    return true;
}

static struct pol_sstore_ent *lookup(const struct pol_sstore *st, uint64_t h, const char *key,
                                     size_t len)
{
    for (struct pol_sstore_ent *e = st->buckets[h & st->bucket_mask]; e; e = e->hnext)
        if (e->hash == h && e->key_len == len && chain_equals(st, e->first_block, key, len))
            return e;
    return NULL;
}

static struct pol_sstore_ent *ent_create(struct pol_sstore *st, uint64_t h, const char *key,
                                         size_t len, uint64_t now_ms)
{
    if (!st->free_ents && !evict_one(st))
        return NULL;
    uint32_t need = blocks_for(len);
    if (!ensure_blocks(st, need))
        return NULL;
    struct pol_sstore_ent *e = st->free_ents;
    ENG_ASSERT(e != NULL);
    st->free_ents = e->hnext;
    memset(e, 0, sizeof(*e));
    e->hash = h;
    e->key_len = (uint32_t)len;
    struct chain_writer w;
    cw_start(&w, st, need);
    cw_put(&w, key, len);
    e->block_count = need;
    e->first_block = w.first;
    e->expires_ms = now_ms + st->cfg.expire_ms;
    e->in_use = true;
    struct pol_sstore_ent **b = &st->buckets[h & st->bucket_mask];
    e->hnext = *b;
    *b = e;
    st->stats.sessions++;
    return e;
}

enum pol_sstore_acquire pol_sstore_acquire(struct pol_sstore *st, const char *key, size_t key_len,
                                           uint64_t now_ms, struct pol_sstore_waiter *w,
                                           struct pol_sstore_ent **ent)
{
    ENG_ASSERT(w != NULL);
    ENG_ASSERT(key_len > 0);
    expire_sweep(st, now_ms);
    uint64_t h = XXH3_64bits(key, key_len);
    struct pol_sstore_ent *e = lookup(st, h, key, key_len);
    if (e && !e->busy && e->expires_ms <= now_ms) {
        ent_remove(st, e);
        st->stats.expired++;
        e = NULL;
    }
    if (e && e->busy) {
        w->next = NULL;
        w->ent = e;
        if (e->wait_tail)
            e->wait_tail->next = w;
        else
            e->wait_head = w;
        e->wait_tail = w;
        st->stats.waits++;
        return POL_SSTORE_QUEUED;
    }
    if (e) {
        st->stats.hits++;
        lru_unlink(e);
    } else {
        if (key_len > st->cfg.session_bytes_max || !(e = ent_create(st, h, key, key_len, now_ms))) {
            st->stats.full++;
            return POL_SSTORE_FULL;
        }
        st->stats.misses++;
    }
    e->busy = true;
    w->ent = e;
    *ent = e;
    return POL_SSTORE_OWNED;
}

bool pol_sstore_is_new(const struct pol_sstore_ent *ent)
{
    return !ent->stored;
}

size_t pol_sstore_blob_bytes(const struct pol_sstore_ent *ent)
{
    return ent->blob_len;
}

void pol_sstore_blob_read(const struct pol_sstore *st, const struct pol_sstore_ent *ent, char *out)
{
    ENG_ASSERT(ent->in_use);
    if (ent->blob_len)
        chain_read(st, ent->first_block, ent->key_len, out, ent->blob_len);
}

/* Finds the chain's block at position idx. */
static uint32_t chain_at(const struct pol_sstore *st, uint32_t first, uint32_t idx)
{
    uint32_t b = first;
    while (idx-- > 0)
        b = st->block_next[b];
    return b;
}

/* Resizes e's chain to count blocks in place: the key's blocks stay where they are, blocks are
 * added at the end or the surplus is freed. False when no blocks could be found. */
static bool chain_resize(struct pol_sstore *st, struct pol_sstore_ent *e, uint32_t count)
{
    ENG_ASSERT(e->block_count > 0);
    ENG_ASSERT(count > 0);
    if (count > e->block_count && !ensure_blocks(st, count - e->block_count))
        return false;
    uint32_t last =
        chain_at(st, e->first_block, (count < e->block_count ? count : e->block_count) - 1);
    if (count < e->block_count) {
        chain_free(st, st->block_next[last], e->block_count - count);
        st->block_next[last] = NO_BLOCK;
    }
    for (uint32_t i = e->block_count; i < count; i++) {
        uint32_t b = block_get(st);
        st->block_next[b] = NO_BLOCK;
        st->block_next[last] = b;
        last = b;
    }
    e->block_count = count;
    return true;
}

/* Rewrites the blob after the key, in the session's own chain: nothing is allocated, and an
 * existing session needs no more blocks than its new size. False (the old version kept) when
 * it needs more and none can be found even after evicting other sessions. */
static bool store_blob(struct pol_sstore *st, struct pol_sstore_ent *e, const char *blob,
                       size_t blob_len)
{
    if (!chain_resize(st, e, blocks_for((size_t)e->key_len + blob_len)))
        return false;
    struct chain_writer w = {st, e->first_block,
                             chain_at(st, e->first_block, e->key_len / POL_SSTORE_BLOCK_BYTES),
                             e->key_len % POL_SSTORE_BLOCK_BYTES};
    cw_put(&w, blob, blob_len);
    e->blob_len = (uint32_t)blob_len;
    return true;
}

void pol_sstore_release(struct pol_sstore *st, struct pol_sstore_ent *ent, const char *blob,
                        size_t blob_len, uint64_t now_ms, struct pol_sstore_waiter **next)
{
    ENG_ASSERT(ent->in_use);
    ENG_ASSERT(ent->busy);
    bool keep = true;
    if ((size_t)ent->key_len + blob_len > st->cfg.session_bytes_max) {
        st->stats.too_big++; /* blob is not read (it may be NULL) */
    } else if (blob) {
        if (store_blob(st, ent, blob, blob_len)) {
            ent->stored = true;
        } else {
            st->stats.store_failed++;
            keep = ent->stored; /* a new session with nothing stored is dropped */
        }
    }
    ent->expires_ms = now_ms + st->cfg.expire_ms;
    *next = ent->wait_head;
    if (ent->wait_head) {
        /* Hand the session to the first waiter: it stays busy. */
        ent->wait_head = ent->wait_head->next;
        if (!ent->wait_head)
            ent->wait_tail = NULL;
        (*next)->next = NULL;
        return;
    }
    ent->busy = false;
    if (!keep || !ent->stored) {
        ent_remove(st, ent); /* nothing worth keeping */
        return;
    }
    lru_push_front(st, ent);
}

void pol_sstore_cancel_wait(struct pol_sstore *st, struct pol_sstore_waiter *w)
{
    (void)st;
    struct pol_sstore_ent *e = w->ent;
    ENG_ASSERT(e != NULL);
    ENG_ASSERT(e->busy);
    struct pol_sstore_waiter **pp = &e->wait_head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    ENG_ASSERT(*pp == w);
    *pp = w->next;
    if (e->wait_tail == w)
        e->wait_tail = prev;
    w->next = NULL;
    w->ent = NULL;
}

const struct pol_sstore_ent *pol_sstore_peek(const struct pol_sstore *st, const char *key,
                                             size_t key_len, uint64_t now_ms)
{
    const struct pol_sstore_ent *e = lookup(st, XXH3_64bits(key, key_len), key, key_len);
    if (!e || (!e->busy && e->expires_ms <= now_ms) || !e->stored)
        return NULL;
    return e;
}

void pol_sstore_get_stats(const struct pol_sstore *st, struct pol_sstore_stats *out)
{
    *out = st->stats;
    out->bytes_used = st->stats.blocks_used * POL_SSTORE_BLOCK_BYTES +
                      st->stats.sessions * sizeof(struct pol_sstore_ent);
}
