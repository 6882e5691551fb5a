/*
 * scache_redis.c: the Redis session cache (scache_redis.h): spec 10.3's lock, read and store
 * over the Redis connection (redis_conn.h), retries on ring timers. The serialisation is the
 * Memcached cache's (pol_scache_mc_encode/decode).
 *
 * A lock handle comes from a per-shard pool allocated at shard start, never from the request:
 * commands and the retry timer refer to it, and a request may go away (deadline) while one is
 * out; the handle then lives on until its last command came back (and deletes a lock taken
 * meanwhile). States: SETTING (SET NX with its GET out), WAITING (retry timer armed), GETTING
 * (a GET alone: when the GET could not be queued with the SET), HELD (done reported FOUND or
 * NEW; the caller owns the lock), and `cancelled` when the caller went away with commands out.
 *
 * Retry timing as the Memcached cache: attempt n + 1 is due n x lock_wait us after attempt n,
 * rounded up to whole milliseconds (ring timers); a request never waits beyond its
 * request_timeout, which the caller's deadline enforces.
 */
#include "scache_redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "eng/assert.h"
#include "eng/log.h"
#include "redis_conn.h"
#include "server.h"

#define LOCK_PREFIX "lock_"
#define LOCK_PREFIX_LEN 5u
#define KEY_BYTES_MAX (LOCK_PREFIX_LEN + POL_SCACHE_MC_INSTANCE_BYTES_MAX)
#define SCR_SHARDS_MAX POL_SCACHE_MC_SHARDS_MAX

enum lk_state { LK_FREE, LK_SETTING, LK_WAITING, LK_GETTING, LK_HELD };
enum lk_pending { PEND_NONE, PEND_LOCK_FAILED, PEND_UNAVAILABLE };

struct pol_scache_redis_lock {
    struct scr_shard *ss;
    struct eng_timer timer;
    enum lk_state state;
    bool cancelled;
    bool locked;      /* our SET NX succeeded: lock_INSTANCE is ours until deleted */
    bool get_along;   /* a GET was sent with the SET */
    bool get_ignored; /* ... and its answer is not ours to use (the SET did not lock) */
    bool set_failed;  /* ... because the SET failed (not nil): report unavailable from the GET */
    uint8_t inflight; /* commands out */
    uint8_t pending;  /* WAITING with a 0 ms timer: a result to report from the loop */
    uint32_t attempt; /* SETs sent */
    uint32_t next_free;
    pol_scache_redis_done_fn *done;
    void *ctx;
    size_t inst_len;
    char key[KEY_BYTES_MAX]; /* "lock_" + instance; the instance is key + LOCK_PREFIX_LEN */
};

struct scr_shard {
    struct pol_scache_redis *c;
    struct eng_shard *sh;
    struct pol_scache_redis_lock *locks;
    uint32_t locks_max;
    uint32_t free_lock; /* index + 1 */
    bool outage;
    bool stopped; /* shard_stop ran with commands still out: freed by the last one */
    struct pol_scache_mc_stats stats;
};

struct pol_scache_redis {
    struct pol_redis *redis;
    struct pol_scache_redis_config cfg;
    char *conn_name;
    char lock_ttl[16], expire[16]; /* decimal, for the commands */
    struct scr_shard *shards[SCR_SHARDS_MAX];
};

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

static int opt_uint(const struct pol_cfg_node *b, const char *name, uint32_t dflt, uint32_t min,
                    uint32_t max, uint32_t *out, char *err, size_t err_len)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    *out = dflt;
    if (!o)
        return 0;
    const char *v = o->value ? o->value : "";
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *v == '-' || *v == '+' || *end || errno != 0 || n < min || n > max) {
        pol_errf(err, err_len, o->file, o->line,
                 "SessionCache option %s must be a whole number from %u to %u, not '%s'", name, min,
                 max, v);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

int pol_scache_redis_parse(const struct pol_cfg_node *block, struct pol_scache_redis_config *out,
                           char *err, size_t err_len)
{
    out->conn = pol_cfg_value(block, "redis", "redis");
    /* Redis refuses EX 0: expire and lock_timeout start at 1 s. */
    if (opt_uint(block, "expire", 300, 1, INT32_MAX, &out->expire_s, err, err_len) != 0 ||
        opt_uint(block, "lock_wait", 50, 0, 1000000, &out->lock_wait_us, err, err_len) != 0 ||
        opt_uint(block, "lock_max_retry", 50, 0, 100000, &out->lock_max_retry, err, err_len) != 0 ||
        opt_uint(block, "lock_timeout", 10, 1, INT32_MAX, &out->lock_timeout_s, err, err_len) != 0)
        return -1;
    return 0;
}

struct pol_scache_redis *pol_scache_redis_open(const struct pol_server *s,
                                               const struct pol_scache_redis_config *cfg,
                                               char *err, size_t err_len)
{
    if (!pol_server_conn(s, cfg->conn)) {
        snprintf(err, err_len, "no connection %s configured!", cfg->conn);
        return NULL;
    }
    struct pol_redis *rc = pol_redis_of_server(s, cfg->conn);
    if (!rc) {
        snprintf(err, err_len, "connection %s is not a Redis connection", cfg->conn);
        return NULL;
    }
    struct pol_scache_redis *c = calloc(1, sizeof(*c));
    if (!c || !(c->conn_name = strdup(cfg->conn))) {
        free(c);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->redis = rc;
    c->cfg = *cfg;
    c->cfg.conn = c->conn_name;
    snprintf(c->lock_ttl, sizeof(c->lock_ttl), "%u", cfg->lock_timeout_s);
    snprintf(c->expire, sizeof(c->expire), "%u", cfg->expire_s);
    eng_log(ENG_LOG_INFO,
            "session cache: redis connection %s, expire %u s, lock_wait %u us, lock_max_retry %u, "
            "lock_timeout %u s",
            c->conn_name, cfg->expire_s, cfg->lock_wait_us, cfg->lock_max_retry,
            cfg->lock_timeout_s);
    return c;
}

void pol_scache_redis_close(struct pol_scache_redis *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < SCR_SHARDS_MAX; i++)
        ENG_ASSERT(c->shards[i] == NULL); /* every shard stopped */
    free(c->conn_name);
    free(c);
}

/* ---------------------------------------------------------------------------------------------
 * Shards and the handle pool
 */

int pol_scache_redis_shard_start(struct pol_scache_redis *c, struct eng_shard *sh,
                                 uint32_t locks_max)
{
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < SCR_SHARDS_MAX);
    ENG_ASSERT(c->shards[idx] == NULL);
    ENG_ASSERT(locks_max > 0);
    struct scr_shard *ss = calloc(1, sizeof(*ss));
    if (!ss || !(ss->locks = calloc(locks_max, sizeof(*ss->locks)))) {
        free(ss);
        return -ENOMEM;
    }
    ss->c = c;
    ss->sh = sh;
    ss->locks_max = locks_max;
    for (uint32_t i = locks_max; i > 0; i--) {
        ss->locks[i - 1].ss = ss;
        ss->locks[i - 1].next_free = ss->free_lock;
        ss->free_lock = i;
    }
    c->shards[idx] = ss;
    return 0;
}

void pol_scache_redis_shard_stop(struct pol_scache_redis *c, struct eng_shard *sh)
{
    unsigned idx = eng_shard_index(sh);
    struct scr_shard *ss = c->shards[idx];
    if (!ss)
        return;
    c->shards[idx] = NULL;
    /* What is left are handles whose caller went away with commands out (or held ones on a
     * shutdown without releasing): those with commands out free the state when the connection
     * completes them (it does at its own shard_stop, which comes after this). */
    uint32_t out = 0;
    for (uint32_t i = 0; i < ss->locks_max; i++) {
        struct pol_scache_redis_lock *l = &ss->locks[i];
        eng_timer_cancel(sh, &l->timer);
        if (l->state == LK_FREE)
            continue;
        if (l->inflight) {
            out++;
        } else {
            l->state = LK_FREE;
            ss->stats.locks_held--;
        }
    }
    ENG_ASSERT(ss->stats.locks_held == out);
    if (out) {
        ss->stopped = true;
        return;
    }
    free(ss->locks);
    free(ss);
}

static struct pol_scache_redis_lock *lock_take(struct scr_shard *ss)
{
    uint32_t i = ss->free_lock;
    if (!i)
        return NULL;
    struct pol_scache_redis_lock *l = &ss->locks[i - 1];
    ENG_ASSERT(l->state == LK_FREE);
    ss->free_lock = l->next_free;
    ss->stats.locks_held++;
    return l;
}

static void lock_put(struct pol_scache_redis_lock *l)
{
    struct scr_shard *ss = l->ss;
    ENG_ASSERT(l->state != LK_FREE);
    ENG_ASSERT(l->inflight == 0);
    eng_timer_cancel(ss->sh, &l->timer);
    l->state = LK_FREE;
    l->done = NULL;
    l->next_free = ss->free_lock;
    ss->free_lock = (uint32_t)(l - ss->locks) + 1;
    ENG_ASSERT(ss->stats.locks_held > 0);
    ss->stats.locks_held--;
}

/* ---------------------------------------------------------------------------------------------
 * Outages (16 #19): logged once when Redis fails, once when it answers again
 */

static void outage_begin(struct scr_shard *ss, const char *what)
{
    ss->stats.unavailable++;
    if (ss->outage)
        return;
    ss->outage = true;
    ss->stats.outages++;
    eng_log(ENG_LOG_WARNING,
            "session cache: redis connection %s %s on shard %u; requests go on with sessions "
            "that are not kept until it answers again",
            ss->c->conn_name, what, eng_shard_index(ss->sh));
}

static void outage_end(struct scr_shard *ss)
{
    if (!ss->outage)
        return;
    ss->outage = false;
    eng_log(ENG_LOG_NOTICE, "session cache: redis connection %s answers again on shard %u",
            ss->c->conn_name, eng_shard_index(ss->sh));
}

/* ---------------------------------------------------------------------------------------------
 * The steps
 */

static void set_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep);
static void get_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep);
static void unlock(struct pol_scache_redis_lock *l);

static const char *inst_of(const struct pol_scache_redis_lock *l)
{
    return l->key + LOCK_PREFIX_LEN;
}

/* Reports r and gives the handle back unless it is now held. */
static void report(struct pol_scache_redis_lock *l, enum pol_scache_mc_result r, const char *v,
                   size_t len)
{
    pol_scache_redis_done_fn *done = l->done;
    void *ctx = l->ctx;
    if (r == POL_SCACHE_MC_FOUND || r == POL_SCACHE_MC_NEW) {
        l->state = LK_HELD;
    } else {
        ENG_ASSERT(!l->locked);
        lock_put(l);
        l = NULL;
    }
    done(ctx, l, r, v, len);
}

static void fail_unavailable(struct pol_scache_redis_lock *l, const char *what)
{
    outage_begin(l->ss, what);
    if (l->locked)
        unlock(l); /* best effort: the lock expires by itself otherwise */
    l->locked = false;
    report(l, POL_SCACHE_MC_UNAVAILABLE, NULL, 0);
}

static bool queued(struct pol_scache_redis_lock *l, int rc)
{
    if (rc == 0) {
        l->inflight++;
        return true;
    }
    return false;
}

static int cmd(struct pol_scache_redis_lock *l, int argc, const char *const *argv,
               const size_t *lens, eng_redis_done_fn *done, void *ctx)
{
    struct scr_shard *ss = l->ss;
    return pol_redis_command(ss->sh, ss->c->redis, argc, argv, lens, 0, done, ctx);
}

static int send_get_cmd(struct pol_scache_redis_lock *l)
{
    const char *argv[] = {"GET", inst_of(l)};
    size_t lens[] = {3, l->inst_len};
    return cmd(l, 2, argv, lens, get_done, l);
}

static bool send_set(struct pol_scache_redis_lock *l)
{
    struct scr_shard *ss = l->ss;
    l->attempt++;
    l->state = LK_SETTING;
    l->get_along = false;
    l->get_ignored = false;
    l->set_failed = false;
    const char *argv[] = {"SET", l->key, "1", "EX", ss->c->lock_ttl, "NX"};
    size_t lens[] = {3, LOCK_PREFIX_LEN + l->inst_len, 1, 2, strlen(ss->c->lock_ttl), 2};
    if (!queued(l, cmd(l, 6, argv, lens, set_done, l)))
        return false;
    /* The GET travels with the SET: one connection, answered in order. */
    if (queued(l, send_get_cmd(l))) {
        l->get_along = true;
        ss->stats.round_trips_saved++;
    }
    return true;
}

static void send_get(struct pol_scache_redis_lock *l)
{
    l->state = LK_GETTING;
    if (!queued(l, send_get_cmd(l)))
        fail_unavailable(l, "refused a command");
}

static void retry_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_scache_redis_lock *l =
        (struct pol_scache_redis_lock *)(void *)((char *)t -
                                                 offsetof(struct pol_scache_redis_lock, timer));
    ENG_ASSERT(l->state == LK_WAITING);
    if (l->pending == PEND_LOCK_FAILED)
        report(l, POL_SCACHE_MC_LOCK_FAILED, NULL, 0);
    else if (l->pending == PEND_UNAVAILABLE || !send_set(l))
        fail_unavailable(l, "refused a command");
}

/* The SET NX found the lock taken: wait and retry, or give up (2.05's loop). */
static void lock_busy(struct pol_scache_redis_lock *l)
{
    struct scr_shard *ss = l->ss;
    const struct pol_scache_redis_config *cfg = &ss->c->cfg;
    ss->stats.lock_busy++;
    if (cfg->lock_max_retry <= 1 || l->attempt + 1 >= cfg->lock_max_retry) {
        ss->stats.lock_failed++;
        report(l, POL_SCACHE_MC_LOCK_FAILED, NULL, 0);
        return;
    }
    uint64_t wait_us = (uint64_t)cfg->lock_wait_us * l->attempt;
    l->state = LK_WAITING;
    l->pending = PEND_NONE;
    eng_timer_arm(ss->sh, &l->timer, wait_us ? (wait_us + 999) / 1000 : 0);
}

static void cancelled_settle(struct pol_scache_redis_lock *l)
{
    if (l->inflight)
        return;
    if (l->locked)
        unlock(l);
    lock_put(l);
}

/* After shard_stop: nothing more is sent; the last handle frees the shard's state. */
static bool after_stop(struct pol_scache_redis_lock *l)
{
    struct scr_shard *ss = l->ss;
    if (!ss->stopped)
        return false;
    if (l->inflight == 0) {
        l->state = LK_FREE;
        if (--ss->stats.locks_held == 0) {
            free(ss->locks);
            free(ss);
        }
    }
    return true;
}

static void set_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep)
{
    (void)rep;
    struct pol_scache_redis_lock *l = ctx;
    struct scr_shard *ss = l->ss;
    ENG_ASSERT(l->inflight > 0);
    l->inflight--;
    if (after_stop(l))
        return;
    if (st == ENG_REDIS_OK)
        l->locked = true;
    if (l->cancelled) {
        l->get_ignored = true;
        cancelled_settle(l);
        return;
    }
    switch (st) {
    case ENG_REDIS_OK:
        outage_end(ss);
        if (!l->get_along)
            send_get(l);
        return; /* else the GET's answer follows */
    case ENG_REDIS_NIL:
        outage_end(ss);
        if (l->get_along) {
            l->get_ignored = true; /* read without the lock: wait for it, then retry */
            return;
        }
        lock_busy(l);
        return;
    default:
        if (l->get_along) { /* report once, from the GET */
            l->get_ignored = true;
            l->set_failed = true;
            return;
        }
        fail_unavailable(l, eng_redis_status_text(st));
        return;
    }
}

static void get_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep)
{
    struct pol_scache_redis_lock *l = ctx;
    struct scr_shard *ss = l->ss;
    ENG_ASSERT(l->inflight > 0);
    l->inflight--;
    if (after_stop(l))
        return;
    if (l->cancelled) {
        cancelled_settle(l);
        return;
    }
    if (l->get_ignored) {
        ENG_ASSERT(!l->locked);
        if (l->set_failed)
            fail_unavailable(l, st == ENG_REDIS_OK || st == ENG_REDIS_NIL
                                    ? "failed"
                                    : eng_redis_status_text(st));
        else
            lock_busy(l);
        return;
    }
    ENG_ASSERT(l->locked);
    if (st == ENG_REDIS_OK && rep->type == ENG_REDIS_T_STRING) {
        ss->stats.found++;
        report(l, POL_SCACHE_MC_FOUND, rep->str, rep->len);
    } else if (st == ENG_REDIS_NIL) {
        ss->stats.created++;
        report(l, POL_SCACHE_MC_NEW, NULL, 0);
    } else {
        fail_unavailable(l, eng_redis_status_text(st));
    }
}

/* ctx: the pol_scache_redis (the shard's state may be gone when a store completes at stop). */
static void store_done(void *ctx, enum eng_redis_status st, const struct eng_redis_reply *rep)
{
    (void)rep;
    struct pol_scache_redis *c = ctx;
    struct eng_shard *self = eng_shard_self();
    struct scr_shard *ss = self ? c->shards[eng_shard_index(self)] : NULL;
    if (!ss)
        return;
    if (st == ENG_REDIS_OK || st == ENG_REDIS_NIL) {
        outage_end(ss);
    } else {
        ss->stats.store_errors++;
        outage_begin(ss, eng_redis_status_text(st));
    }
}

static void unlock(struct pol_scache_redis_lock *l)
{
    struct scr_shard *ss = l->ss;
    l->locked = false;
    const char *argv[] = {"DEL", l->key};
    size_t lens[] = {3, LOCK_PREFIX_LEN + l->inst_len};
    if (cmd(l, 2, argv, lens, store_done, ss->c) != 0)
        ss->stats.store_errors++; /* the lock expires after lock_timeout */
}

int pol_scache_redis_acquire(struct pol_scache_redis *c, struct eng_shard *sh, const char *inst,
                             size_t inst_len, pol_scache_redis_done_fn *done, void *ctx,
                             struct pol_scache_redis_lock **out)
{
    ENG_ASSERT(done != NULL);
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < SCR_SHARDS_MAX);
    struct scr_shard *ss = c->shards[idx];
    ENG_ASSERT(ss != NULL); /* pol_scache_redis_shard_start ran on this shard */
    if (inst_len > POL_SCACHE_MC_INSTANCE_BYTES_MAX) {
        ss->stats.refused++;
        return -ENAMETOOLONG;
    }
    struct pol_scache_redis_lock *l = lock_take(ss);
    if (!l) {
        ss->stats.refused++;
        return -ENOBUFS;
    }
    eng_timer_init(&l->timer, retry_fired);
    l->cancelled = false;
    l->locked = false;
    l->inflight = 0;
    l->attempt = 0;
    l->done = done;
    l->ctx = ctx;
    l->inst_len = inst_len;
    memcpy(l->key, LOCK_PREFIX, LOCK_PREFIX_LEN);
    memcpy(l->key + LOCK_PREFIX_LEN, inst, inst_len);
    ss->stats.acquires++;
    l->pending = PEND_NONE;
    if (c->cfg.lock_max_retry <= 1) { /* 2.05 makes no attempt at all */
        ss->stats.lock_failed++;
        l->pending = PEND_LOCK_FAILED;
    } else if (!send_set(l)) {
        l->pending = PEND_UNAVAILABLE; /* the client refused: full */
    }
    if (l->pending != PEND_NONE) { /* reported from the loop, like every result */
        l->state = LK_WAITING;
        eng_timer_arm(sh, &l->timer, 0);
    }
    *out = l;
    return 0;
}

void pol_scache_redis_release(struct pol_scache_redis_lock *l, const char *value, size_t len)
{
    ENG_ASSERT(l->state == LK_HELD);
    struct scr_shard *ss = l->ss;
    ss->stats.stores++;
    const char *argv[] = {"SET", inst_of(l), value, "EX", ss->c->expire};
    size_t lens[] = {3, l->inst_len, len, 2, strlen(ss->c->expire)};
    if (cmd(l, 5, argv, lens, store_done, ss->c) != 0)
        ss->stats.store_errors++;
    unlock(l);
    lock_put(l);
}

void pol_scache_redis_cancel(struct pol_scache_redis_lock *l)
{
    ENG_ASSERT(l->state != LK_FREE);
    ENG_ASSERT(!l->cancelled);
    l->ss->stats.cancels++;
    eng_timer_cancel(l->ss->sh, &l->timer);
    l->cancelled = true;
    cancelled_settle(l);
}

void pol_scache_redis_get_stats(const struct pol_scache_redis *c, struct eng_shard *sh,
                                struct pol_scache_mc_stats *out)
{
    const struct scr_shard *ss = c->shards[eng_shard_index(sh)];
    ENG_ASSERT(ss != NULL);
    *out = ss->stats;
}
