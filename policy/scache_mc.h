/*
 * scache_mc.h: the session cache `module = "Memcached"` (spec 10.2, section 16 #14 and #19),
 * internal to policy/. Sessions shared by several daemons through memcached, never blocking a
 * shard.
 *
 * Per request with an instance (the caller handles "no instance: no session"):
 *   1. acquire: ADD lock_INSTANCE "1" with lifetime lock_timeout. When the key exists (another
 *      request, on this shard, another shard or another host, holds the session), retry on a
 *      ring timer: the n-th retry waits n x lock_wait MICROseconds after the previous attempt
 *      (2.05's real unit, 16 #14: about 60 ms in total with the defaults), and attempts are
 *      made lock_max_retry - 1 times; then done reports POL_SCACHE_MC_LOCK_FAILED (the request
 *      fails with "could not acquire lock for session INSTANCE", as in 2.05).
 *   2. With the lock: GET INSTANCE. Found: done gets the stored value (decode it with
 *      pol_scache_mc_decode); not found: POL_SCACHE_MC_NEW (a session with _instance).
 *      When lock_INSTANCE and INSTANCE live on the same server (always with one server), the
 *      GET is sent with the ADD in one write and its answer used only when the ADD succeeded:
 *      memcached answers a connection's requests in order, so the GET ran after the lock was
 *      taken. Otherwise it is sent once the ADD succeeded.
 *   3. release: SET INSTANCE with lifetime expire, then DELETE lock_INSTANCE, in one write.
 *   Memcached unreachable, timing out or failing (16 #19): done reports
 *   POL_SCACHE_MC_UNAVAILABLE and the request goes on with a session that is not kept; logged
 *   once per outage per shard (and once when it is back), counted.
 *
 * There is no in-process cache in front of memcached: a copy kept by this shard could be stale
 * as soon as the lock is released (another daemon may take it and change the session), and
 * with the lock held the GET costs no extra round trip (it travels with the ADD). So every
 * session read is memcached's current value.
 *
 * Serialisation (ours; 2.05's Perl Storable values cannot be read and are treated as absent,
 * counted in decode_errors): "RPDS1" then per entry the key length and the value length as
 * 32-bit big-endian numbers, the key bytes, the value bytes. Keys and values are byte strings.
 *
 * Threads: parse/open/close on the main thread at start-up and exit; everything else on a shard
 * thread, for a shard started with pol_scache_mc_shard_start. done runs from the shard's loop,
 * never inside the call that started the step.
 */
#ifndef POL_SCACHE_MC_H
#define POL_SCACHE_MC_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "eng/engine.h"
#include "session.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;
struct pol_cfg_node;
struct pol_scache_mc;      /* one <SessionCache> module = "Memcached" */
struct pol_scache_mc_lock; /* one request's hold on its session */

#define POL_SCACHE_MC_INSTANCE_BYTES_MAX 1024u /* longer instances get no persistent session */
#define POL_SCACHE_MC_SHARDS_MAX 1024u

struct pol_scache_mc_config {
    const char *conn;        /* `memcached`: the connection's name. Default "memcached" */
    uint32_t expire_s;       /* `expire`. Default 300 */
    uint32_t lock_wait_us;   /* `lock_wait`. Default 50 */
    uint32_t lock_max_retry; /* `lock_max_retry`. Default 50 */
    uint32_t lock_timeout_s; /* `lock_timeout`. Default 10 */
};

/* The options of a <SessionCache> block (module = "Memcached"): 0, or -1 with a sentence naming
 * the option in err. Strings point into the block. Unknown options are left to the caller. */
int pol_scache_mc_parse(const struct pol_cfg_node *block, struct pol_scache_mc_config *out,
                        char *err, size_t err_len);

/* After the connections were opened: looks the connection up. NULL with "no connection NAME
 * configured!" / "connection NAME is not a Memcached connection" / "out of memory" in err. */
struct pol_scache_mc *pol_scache_mc_open(const struct pol_server *s,
                                         const struct pol_scache_mc_config *cfg, char *err,
                                         size_t err_len);
void pol_scache_mc_close(struct pol_scache_mc *c);

/* On each shard, after the connection's shard_start / before its shard_stop: locks_max holds
 * at once on this shard (a further acquire gets -ENOBUFS). 0 or -ENOMEM. */
int pol_scache_mc_shard_start(struct pol_scache_mc *c, struct eng_shard *sh, uint32_t locks_max);
void pol_scache_mc_shard_stop(struct pol_scache_mc *c, struct eng_shard *sh);

enum pol_scache_mc_result {
    POL_SCACHE_MC_FOUND,       /* locked; value/len: the stored session (pol_scache_mc_decode) */
    POL_SCACHE_MC_NEW,         /* locked; nothing stored: a new session */
    POL_SCACHE_MC_UNAVAILABLE, /* memcached down or failing: go on without a kept session */
    POL_SCACHE_MC_LOCK_FAILED, /* still locked by another holder after every attempt */
};

const char *pol_scache_mc_result_text(enum pol_scache_mc_result r);

/* value is valid only during done. With FOUND and NEW the lock is held: release or cancel it
 * exactly once; with UNAVAILABLE and LOCK_FAILED the lock handle is gone when done returns. */
typedef void pol_scache_mc_done_fn(void *ctx, struct pol_scache_mc_lock *l,
                                   enum pol_scache_mc_result r, const char *value, size_t len);

/* Starts step 1 for inst (copied). Returns 0 and *out (done runs later, exactly once, unless
 * cancelled first), -ENOBUFS (locks_max holds on this shard), -ENAMETOOLONG (instance longer
 * than POL_SCACHE_MC_INSTANCE_BYTES_MAX): then done will not run; both counted, and the caller
 * goes on without a kept session. */
int pol_scache_mc_acquire(struct pol_scache_mc *c, struct eng_shard *sh, const char *inst,
                          size_t inst_len, pol_scache_mc_done_fn *done, void *ctx,
                          struct pol_scache_mc_lock **out);
/* Step 3 with the lock held: stores value (encoded with pol_scache_mc_encode) and unlocks. The
 * handle is gone afterwards. */
void pol_scache_mc_release(struct pol_scache_mc_lock *l, const char *value, size_t len);
/* The request went away: before done ran, done will not run (a lock taken meanwhile is
 * deleted); after done reported FOUND or NEW, unlocks without storing. The handle is gone. */
void pol_scache_mc_cancel(struct pol_scache_mc_lock *l);

/* Serialisation (see the top). encoded_bytes counts live entries only. */
size_t pol_scache_mc_encoded_bytes(const struct pol_session *s);
void pol_scache_mc_encode(const struct pol_session *s, char *out);
/* Adds the entries of value to s (copied into a). 0, -ENOMEM or -EINVAL (not our format). */
int pol_scache_mc_decode(struct pol_session *s, struct pol_arena *a, const char *value, size_t len);

struct pol_scache_mc_stats {
    uint64_t acquires;       /* acquire calls that started */
    uint64_t found, created; /* sessions read / new */
    uint64_t lock_busy;      /* ADDs that found the lock taken */
    uint64_t lock_failed;    /* gave up after lock_max_retry - 1 attempts */
    uint64_t unavailable;    /* memcached down, timed out or failing: no kept session */
    uint64_t outages;        /* times this shard saw memcached become unavailable */
    uint64_t refused;        /* -ENOBUFS or -ENAMETOOLONG */
    uint64_t stores, store_errors;
    uint64_t cancels;
    uint64_t round_trips_saved; /* GETs sent along with their ADD */
    uint64_t locks_held;        /* handles in use now */
};

/* This shard's counters (on the shard's thread). */
void pol_scache_mc_get_stats(const struct pol_scache_mc *c, struct eng_shard *sh,
                             struct pol_scache_mc_stats *out);

#ifdef __cplusplus
}
#endif

#endif
