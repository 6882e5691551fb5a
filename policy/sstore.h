/*
 * sstore.h: the Memory session cache of one shard (internal to policy/): sessions keyed by
 * instance, each stored as a serialised blob, with a lock per session, LRU eviction, expiry
 * and a fixed memory budget.
 *
 * Only the shard that owns an instance (XXH3_64bits(instance) % shards) touches its session,
 * so there are no locks between threads; the per-session "lock" serialises requests of one
 * instance on that shard: while one request holds a session, the next ones wait in its list
 * and get it, in arrival order, when the holder releases it.
 *
 * Sizing, all reserved at shard start (mmap MAP_NORESERVE: pages become resident as used):
 *   entries  = sessions_max                       x sizeof(struct pol_sstore_ent) (~112 B)
 *   buckets  = next power of two >= sessions_max  x 8 B
 *   blocks   = memory_bytes / POL_SSTORE_BLOCK_BYTES, each POL_SSTORE_BLOCK_BYTES + 4 B (link)
 * A session occupies ceil((instance length + blob length) / 256) blocks; a typical Postfix
 * session (instance ~30 B, score, details and a handful of flags: 150-400 B) takes 1-2 blocks.
 * When entries or blocks run out, the least recently stored sessions not in use are evicted.
 */
#ifndef POL_SSTORE_H
#define POL_SSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_SSTORE_BLOCK_BYTES 256u

struct pol_sstore_config {
    uint32_t sessions_max;      /* entries of this shard */
    size_t memory_bytes;        /* block memory of this shard */
    uint32_t session_bytes_max; /* instance + blob; larger sessions are not stored */
    uint64_t expire_ms;         /* lifetime after the last store */
};

/* Intrusive link of a request waiting for a session; ent is the session it waits for (and
 * holds once handed over). */
struct pol_sstore_waiter {
    struct pol_sstore_waiter *next;
    struct pol_sstore_ent *ent;
};

struct pol_sstore_ent; /* one session */
struct pol_sstore;

struct pol_sstore_stats {
    uint64_t sessions;    /* stored or held now */
    uint64_t blocks_used; /* now */
    uint64_t bytes_used;  /* blocks_used x block size + sessions x entry size */
    uint64_t blocks_total;
    uint64_t hits, misses;
    uint64_t waits;   /* requests that queued behind another of the same instance */
    uint64_t evicted; /* LRU evictions (entries or blocks ran out) */
    uint64_t expired;
    uint64_t too_big;      /* stores refused: above session_bytes_max */
    uint64_t store_failed; /* stores that found no memory even after evicting */
    uint64_t full;         /* acquires refused: every entry held by a running request */
};

/* Returns 0 or -ENOMEM. Start-up only. */
int pol_sstore_create(const struct pol_sstore_config *cfg, struct pol_sstore **out);
void pol_sstore_destroy(struct pol_sstore *st);

enum pol_sstore_acquire {
    POL_SSTORE_OWNED,  /* *ent is held by the caller; read it, later release it */
    POL_SSTORE_QUEUED, /* another request holds it: w was queued; it is handed over later */
    POL_SSTORE_FULL,   /* no entry could be made (all held, or no memory): no session */
};

enum pol_sstore_acquire pol_sstore_acquire(struct pol_sstore *st, const char *key, size_t key_len,
                                           uint64_t now_ms, struct pol_sstore_waiter *w,
                                           struct pol_sstore_ent **ent);
/* True when the session was just created (nothing stored yet). */
bool pol_sstore_is_new(const struct pol_sstore_ent *ent);
/* The stored blob: its length, and a copy of it into out (blob_bytes long). */
size_t pol_sstore_blob_bytes(const struct pol_sstore_ent *ent);
void pol_sstore_blob_read(const struct pol_sstore *st, const struct pol_sstore_ent *ent, char *out);

/* Stores blob (NULL with blob_len 0: keep what is stored, only renew the expiry; a blob_len
 * above session_bytes_max is counted as too_big and not stored, blob is then not read), then
 * releases the session.
 * If a request is waiting for it, the session stays held and is handed to that request:
 * returned in *next (NULL otherwise); next->ent is the entry it now holds. */
void pol_sstore_release(struct pol_sstore *st, struct pol_sstore_ent *ent, const char *blob,
                        size_t blob_len, uint64_t now_ms, struct pol_sstore_waiter **next);
/* Removes w from the wait list of the session it queued for (a request that timed out). */
void pol_sstore_cancel_wait(struct pol_sstore *st, struct pol_sstore_waiter *w);

/* The stored session of key without taking it (tests, diagnostics): NULL when absent or
 * expired. */
const struct pol_sstore_ent *pol_sstore_peek(const struct pol_sstore *st, const char *key,
                                             size_t key_len, uint64_t now_ms);

void pol_sstore_get_stats(const struct pol_sstore *st, struct pol_sstore_stats *out);

#ifdef __cplusplus
}
#endif

#endif
