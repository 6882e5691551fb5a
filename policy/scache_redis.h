/*
 * scache_redis.h: the session cache `module = "Redis"` (spec 10.3, section 16 #14 and #19),
 * internal to policy/. The same procedure and options as the Memcached one (scache_mc.h), on
 * a Redis connection, with 2.05's commands:
 *   1. acquire: SET lock_INSTANCE 1 EX lock_timeout NX, and in the same write GET INSTANCE
 *      (one connection answers in order, so the GET ran after the lock was taken; its answer is
 *      used only when the SET succeeded). A nil SET (the lock is held elsewhere) retries on a
 *      ring timer, the n-th retry n x lock_wait MICROseconds later (2.05's real unit, 16 #14),
 *      lock_max_retry - 1 attempts in all; then LOCK_FAILED ("could not acquire lock for
 *      session INSTANCE", as in 2.05).
 *   2. FOUND with the stored value (decode with pol_scache_mc_decode: the same serialisation
 *      as the Memcached cache; 2.05's Perl Storable values cannot be read and count as absent)
 *      or NEW.
 *   3. release: SET INSTANCE DATA EX expire, then DEL lock_INSTANCE, in one write.
 *   Redis unreachable, timing out or failing (16 #19): UNAVAILABLE, the request goes on with a
 *   session that is not kept; logged once per outage per shard (and when it is back), counted.
 * There is no in-process copy in front of Redis (it could be stale as soon as the lock is
 * released): every session read is Redis' current value.
 *
 * Options: redis (the connection's name, default "redis"), expire (300), lock_wait (50),
 * lock_max_retry (50), lock_timeout (10).
 *
 * Threads: parse/open/close on the main thread; everything else on a shard thread started with
 * pol_scache_redis_shard_start. done runs from the shard's loop, never inside acquire.
 */
#ifndef POL_SCACHE_REDIS_H
#define POL_SCACHE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"
#include "scache_mc.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;
struct pol_cfg_node;
struct pol_scache_redis;      /* one <SessionCache> module = "Redis" */
struct pol_scache_redis_lock; /* one request's hold on its session */

struct pol_scache_redis_config {
    const char *conn;        /* `redis`. Default "redis" */
    uint32_t expire_s;       /* `expire`. Default 300 */
    uint32_t lock_wait_us;   /* `lock_wait`. Default 50 */
    uint32_t lock_max_retry; /* `lock_max_retry`. Default 50 */
    uint32_t lock_timeout_s; /* `lock_timeout`. Default 10 */
};

/* The options of a <SessionCache> block (module = "Redis"): 0, or -1 with a sentence naming
 * the option (file:line) in err. Strings point into the block. */
int pol_scache_redis_parse(const struct pol_cfg_node *block, struct pol_scache_redis_config *out,
                           char *err, size_t err_len);

/* After the connections were opened. NULL with "no connection NAME configured!" / "connection
 * NAME is not a Redis connection" / "out of memory" in err. */
struct pol_scache_redis *pol_scache_redis_open(const struct pol_server *s,
                                               const struct pol_scache_redis_config *cfg,
                                               char *err, size_t err_len);
void pol_scache_redis_close(struct pol_scache_redis *c);

/* On each shard, after the connection's shard_start / before its shard_stop. 0 or -ENOMEM. */
int pol_scache_redis_shard_start(struct pol_scache_redis *c, struct eng_shard *sh,
                                 uint32_t locks_max);
void pol_scache_redis_shard_stop(struct pol_scache_redis *c, struct eng_shard *sh);

/* The results are the Memcached cache's (enum pol_scache_mc_result). value is valid only
 * during done. With FOUND and NEW the lock is held: release or cancel it exactly once; with
 * UNAVAILABLE and LOCK_FAILED the handle is gone when done returns. */
typedef void pol_scache_redis_done_fn(void *ctx, struct pol_scache_redis_lock *l,
                                      enum pol_scache_mc_result r, const char *value, size_t len);

/* Starts step 1 for inst (copied). 0 and *out (done runs later, exactly once, unless cancelled
 * first), -ENOBUFS (locks_max holds on this shard) or -ENAMETOOLONG (instance longer than
 * POL_SCACHE_MC_INSTANCE_BYTES_MAX): done will not run; counted. */
int pol_scache_redis_acquire(struct pol_scache_redis *c, struct eng_shard *sh, const char *inst,
                             size_t inst_len, pol_scache_redis_done_fn *done, void *ctx,
                             struct pol_scache_redis_lock **out);
/* Step 3 with the lock held: stores value and unlocks. The handle is gone afterwards. */
void pol_scache_redis_release(struct pol_scache_redis_lock *l, const char *value, size_t len);
/* The request went away: before done ran, done will not run (a lock taken meanwhile is
 * deleted); after FOUND or NEW, unlocks without storing. The handle is gone. */
void pol_scache_redis_cancel(struct pol_scache_redis_lock *l);

/* This shard's counters (the Memcached cache's set; round_trips_saved counts GETs sent with
 * their SET NX). On the shard's thread. */
void pol_scache_redis_get_stats(const struct pol_scache_redis *c, struct eng_shard *sh,
                                struct pol_scache_mc_stats *out);

#ifdef __cplusplus
}
#endif

#endif
