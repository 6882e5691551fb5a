/*
 * scache_mc.c: the Memcached session cache (scache_mc.h): the lock, read and store steps of
 * spec 10.2 over pol/mc.h, retries on ring timers, the serialisation.
 *
 * A lock handle comes from a per-shard pool allocated at shard start, never from the request:
 * memcached operations and the retry timer refer to it, and a request may go away (deadline)
 * while one is out; the handle then lives on until its last operation came back (and deletes a
 * lock taken meanwhile). States: ADDING (the ADD, maybe with its GET, is out), WAITING (the retry
 * timer is armed), GETTING (the GET alone is out), HELD (done reported FOUND or NEW; the caller
 * owns the lock), and `cancelled` when the caller went away while operations were out.
 *
 * Retry timing: attempt n + 1 is due n x lock_wait us after attempt n was sent (2.05 sleeps
 * that long after the failed ADD returned; the round trip is small against it). Ring timers
 * have millisecond resolution, so the delay is rounded up to whole milliseconds, at least 1:
 * with the defaults (50 us, 49 attempts) 2.05 waits 58.8 ms in total, we wait at most 48 +
 * 58.8 ms; a request never waits for the lock beyond its request_timeout, which the caller's
 * deadline enforces.
 */
#include "scache_mc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "eng/assert.h"
#include "eng/log.h"
#include "mc_conn.h"
#include "server.h"

#define MAGIC "RPDS1"
#define MAGIC_LEN 5u
#define LOCK_PREFIX "lock_"
#define LOCK_PREFIX_LEN 5u
#define KEY_BYTES_MAX (LOCK_PREFIX_LEN + POL_SCACHE_MC_INSTANCE_BYTES_MAX)

enum lk_state { LK_FREE, LK_ADDING, LK_WAITING, LK_GETTING, LK_HELD };
enum lk_pending { PEND_NONE, PEND_LOCK_FAILED, PEND_UNAVAILABLE };

struct pol_scache_mc_lock {
    struct scmc_shard *ss;
    struct eng_timer timer;
    enum lk_state state;
    bool cancelled;
    bool locked;      /* our ADD succeeded: lock_INSTANCE is ours until deleted */
    bool get_along;   /* a GET was sent with the ADD */
    bool get_ignored; /* ... and its answer is not ours to use (the ADD failed) */
    uint8_t inflight; /* operations out */
    uint8_t pending;  /* WAITING with a 0 ms timer: a result to report from the loop */
    uint32_t attempt; /* ADDs sent */
    uint32_t next_free;
    pol_scache_mc_done_fn *done;
    void *ctx;
    size_t inst_len;
    char key[KEY_BYTES_MAX]; /* "lock_" + instance; the instance is key + LOCK_PREFIX_LEN */
};

struct scmc_shard {
    struct pol_scache_mc *c;
    struct eng_shard *sh;
    struct pol_scache_mc_lock *locks;
    uint32_t locks_max;
    uint32_t free_lock; /* index + 1 */
    bool outage;
    bool stopped; /* shard_stop ran with operations still out: freed by the last one */
    struct pol_scache_mc_stats stats;
};

struct pol_scache_mc {
    struct pol_mc *mc;
    struct pol_scache_mc_config cfg;
    char *conn_name;
    struct scmc_shard *shards[POL_SCACHE_MC_SHARDS_MAX];
};

const char *pol_scache_mc_result_text(enum pol_scache_mc_result r)
{
    switch (r) {
    case POL_SCACHE_MC_FOUND:
        return "found";
    case POL_SCACHE_MC_NEW:
        return "new";
    case POL_SCACHE_MC_UNAVAILABLE:
        return "unavailable";
    case POL_SCACHE_MC_LOCK_FAILED:
        return "lock failed";
    }
    return "?";
}

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

int pol_scache_mc_parse(const struct pol_cfg_node *block, struct pol_scache_mc_config *out,
                        char *err, size_t err_len)
{
    out->conn = pol_cfg_value(block, "memcached", "memcached");
    if (opt_uint(block, "expire", 300, 0, UINT32_MAX, &out->expire_s, err, err_len) != 0 ||
        opt_uint(block, "lock_wait", 50, 0, 1000000, &out->lock_wait_us, err, err_len) != 0 ||
        opt_uint(block, "lock_max_retry", 50, 0, 100000, &out->lock_max_retry, err, err_len) != 0 ||
        opt_uint(block, "lock_timeout", 10, 1, ENG_MC_EXPTIME_RELATIVE_MAX, &out->lock_timeout_s,
                 err, err_len) != 0)
        return -1;
    return 0;
}

struct pol_scache_mc *pol_scache_mc_open(const struct pol_server *s,
                                         const struct pol_scache_mc_config *cfg, char *err,
                                         size_t err_len)
{
    const struct pol_conn_def *d = pol_server_conn(s, cfg->conn);
    if (!d) {
        snprintf(err, err_len, "no connection %s configured!", cfg->conn);
        return NULL;
    }
    struct pol_mc *mc = pol_mc_of_server(s, cfg->conn);
    if (!mc) {
        snprintf(err, err_len, "connection %s is not a Memcached connection", cfg->conn);
        return NULL;
    }
    struct pol_scache_mc *c = calloc(1, sizeof(*c));
    if (!c || !(c->conn_name = strdup(cfg->conn))) {
        free(c);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->mc = mc;
    c->cfg = *cfg;
    c->cfg.conn = c->conn_name;
    eng_log(ENG_LOG_INFO,
            "session cache: memcached connection %s, expire %u s, lock_wait %u us, "
            "lock_max_retry %u, lock_timeout %u s",
            c->conn_name, cfg->expire_s, cfg->lock_wait_us, cfg->lock_max_retry,
            cfg->lock_timeout_s);
    return c;
}

void pol_scache_mc_close(struct pol_scache_mc *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < POL_SCACHE_MC_SHARDS_MAX; i++)
        ENG_ASSERT(c->shards[i] == NULL); /* every shard stopped */
    free(c->conn_name);
    free(c);
}

/* ---------------------------------------------------------------------------------------------
 * Shards and the handle pool
 */

int pol_scache_mc_shard_start(struct pol_scache_mc *c, struct eng_shard *sh, uint32_t locks_max)
{
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < POL_SCACHE_MC_SHARDS_MAX);
    ENG_ASSERT(c->shards[idx] == NULL);
    ENG_ASSERT(locks_max > 0);
    struct scmc_shard *ss = calloc(1, sizeof(*ss));
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

void pol_scache_mc_shard_stop(struct pol_scache_mc *c, struct eng_shard *sh)
{
    unsigned idx = eng_shard_index(sh);
    struct scmc_shard *ss = c->shards[idx];
    if (!ss)
        return;
    c->shards[idx] = NULL;
    /* Requests were released before, so what is left are handles whose caller went away with
     * an operation out (or, on a shutdown without releasing, held ones): no more sends; those
     * with operations out free the state when the connection completes them. */
    uint32_t out = 0;
    for (uint32_t i = 0; i < ss->locks_max; i++) {
        struct pol_scache_mc_lock *l = &ss->locks[i];
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

static struct pol_scache_mc_lock *lock_take(struct scmc_shard *ss)
{
    uint32_t i = ss->free_lock;
    if (!i)
        return NULL;
    struct pol_scache_mc_lock *l = &ss->locks[i - 1];
    ENG_ASSERT(l->state == LK_FREE);
    ss->free_lock = l->next_free;
    ss->stats.locks_held++;
    return l;
}

static void lock_put(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
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
 * Outages (16 #19): logged once when memcached fails, once when it answers again
 */

static void outage_begin(struct scmc_shard *ss, enum pol_mc_status st)
{
    ss->stats.unavailable++;
    if (ss->outage)
        return;
    ss->outage = true;
    ss->stats.outages++;
    eng_log(ENG_LOG_WARNING,
            "session cache: memcached connection %s %s on shard %u; requests go on with sessions "
            "that are not kept until it answers again",
            ss->c->conn_name, pol_mc_status_text(st), eng_shard_index(ss->sh));
}

static void outage_end(struct scmc_shard *ss)
{
    if (!ss->outage)
        return;
    ss->outage = false;
    eng_log(ENG_LOG_NOTICE, "session cache: memcached connection %s answers again on shard %u",
            ss->c->conn_name, eng_shard_index(ss->sh));
}

/* ---------------------------------------------------------------------------------------------
 * The steps
 */

static void add_done(void *ctx, enum pol_mc_status st, const char *v, size_t len);
static void get_done(void *ctx, enum pol_mc_status st, const char *v, size_t len);
static void unlock(struct pol_scache_mc_lock *l);

static const char *inst_of(const struct pol_scache_mc_lock *l)
{
    return l->key + LOCK_PREFIX_LEN;
}

/* Reports r and gives the handle back unless it is now held. */
static void report(struct pol_scache_mc_lock *l, enum pol_scache_mc_result r, const char *v,
                   size_t len)
{
    pol_scache_mc_done_fn *done = l->done;
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

static void fail_unavailable(struct pol_scache_mc_lock *l, enum pol_mc_status st)
{
    outage_begin(l->ss, st);
    if (l->locked)
        unlock(l); /* best effort: the lock expires by itself otherwise */
    l->locked = false;
    report(l, POL_SCACHE_MC_UNAVAILABLE, NULL, 0);
}

/* A queueing failure (-ENOBUFS: the client is full) is handled like memcached failing. */
static bool queued(struct pol_scache_mc_lock *l, int rc)
{
    if (rc == 0) {
        l->inflight++;
        return true;
    }
    return false;
}

static bool send_add(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
    struct pol_scache_mc *c = ss->c;
    l->attempt++;
    l->state = LK_ADDING;
    l->get_along = false;
    l->get_ignored = false;
    if (!queued(l, pol_mc_add(ss->sh, c->mc, l->key, LOCK_PREFIX_LEN + l->inst_len, "1", 1,
                              c->cfg.lock_timeout_s, 0, add_done, l)))
        return false;
    /* The GET travels with the ADD when both keys are on the same server. */
    if (pol_mc_same_server(ss->sh, c->mc, l->key, LOCK_PREFIX_LEN + l->inst_len, inst_of(l),
                           l->inst_len) &&
        queued(l, pol_mc_get(ss->sh, c->mc, inst_of(l), l->inst_len, 0, get_done, l))) {
        l->get_along = true;
        ss->stats.round_trips_saved++;
    }
    return true;
}

static void send_get(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
    l->state = LK_GETTING;
    if (!queued(l, pol_mc_get(ss->sh, ss->c->mc, inst_of(l), l->inst_len, 0, get_done, l)))
        fail_unavailable(l, POL_MC_DOWN);
}

static void retry_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_scache_mc_lock *l =
        (struct pol_scache_mc_lock *)(void *)((char *)t -
                                              offsetof(struct pol_scache_mc_lock, timer));
    ENG_ASSERT(l->state == LK_WAITING);
    if (l->pending == PEND_LOCK_FAILED)
        report(l, POL_SCACHE_MC_LOCK_FAILED, NULL, 0);
    else if (l->pending == PEND_UNAVAILABLE || !send_add(l))
        fail_unavailable(l, POL_MC_DOWN);
}

/* The ADD failed because the lock is taken: wait and retry, or give up. */
static void lock_busy(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
    const struct pol_scache_mc_config *cfg = &ss->c->cfg;
    ss->stats.lock_busy++;
    /* 2.05: for (try = 1; try < lock_max_retry; try++) { add or sleep(lock_wait * try) } */
    if (cfg->lock_max_retry <= 1 || l->attempt + 1 >= cfg->lock_max_retry) {
        ss->stats.lock_failed++;
        report(l, POL_SCACHE_MC_LOCK_FAILED, NULL, 0);
        return;
    }
    uint64_t wait_us = (uint64_t)cfg->lock_wait_us * l->attempt;
    l->state = LK_WAITING;
    eng_timer_arm(ss->sh, &l->timer, wait_us ? (wait_us + 999) / 1000 : 0);
}

/* Every operation came back; the caller is gone: drop the lock if we took it. */
static void cancelled_settle(struct pol_scache_mc_lock *l)
{
    if (l->inflight)
        return;
    if (l->locked)
        unlock(l);
    lock_put(l);
}

/* After shard_stop: nothing more is sent; the last handle frees the shard's state. */
static bool after_stop(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
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

static void add_done(void *ctx, enum pol_mc_status st, const char *v, size_t len)
{
    (void)v;
    (void)len;
    struct pol_scache_mc_lock *l = ctx;
    struct scmc_shard *ss = l->ss;
    ENG_ASSERT(l->inflight > 0);
    l->inflight--;
    if (after_stop(l))
        return;
    if (st == POL_MC_OK)
        l->locked = true;
    if (l->cancelled) {
        l->get_ignored = true;
        cancelled_settle(l);
        return;
    }
    switch (st) {
    case POL_MC_OK:
        outage_end(ss);
        if (!l->get_along)
            send_get(l);
        return; /* else the GET's answer follows on the same connection */
    case POL_MC_NOT_STORED:
        outage_end(ss);
        if (l->get_along) {
            l->get_ignored = true; /* read without the lock: wait for it, then retry */
            return;
        }
        lock_busy(l);
        return;
    default:
        if (l->get_along) {
            /* The GET on the same connection fails the same way; report once, from it. */
            l->get_ignored = true;
            l->state = LK_GETTING;
            return;
        }
        fail_unavailable(l, st);
        return;
    }
}

static void get_done(void *ctx, enum pol_mc_status st, const char *v, size_t len)
{
    struct pol_scache_mc_lock *l = ctx;
    struct scmc_shard *ss = l->ss;
    ENG_ASSERT(l->inflight > 0);
    l->inflight--;
    if (after_stop(l))
        return;
    if (l->cancelled) {
        cancelled_settle(l);
        return;
    }
    if (l->get_ignored) {
        if (l->locked) /* cannot happen: ignored only when the ADD failed */
            unlock(l);
        l->locked = false;
        if (l->state == LK_GETTING)
            fail_unavailable(l, st == POL_MC_OK || st == POL_MC_NOT_FOUND ? POL_MC_ERROR : st);
        else
            lock_busy(l);
        return;
    }
    ENG_ASSERT(l->locked);
    switch (st) {
    case POL_MC_OK:
        ss->stats.found++;
        report(l, POL_SCACHE_MC_FOUND, v, len);
        return;
    case POL_MC_NOT_FOUND:
        ss->stats.created++;
        report(l, POL_SCACHE_MC_NEW, NULL, 0);
        return;
    default:
        fail_unavailable(l, st);
        return;
    }
}

/* ctx: the pol_scache_mc (the shard's state may be gone when a store completes at stop). */
static void store_done(void *ctx, enum pol_mc_status st, const char *v, size_t len)
{
    (void)v;
    (void)len;
    struct pol_scache_mc *c = ctx;
    struct eng_shard *self = eng_shard_self();
    struct scmc_shard *ss = self ? c->shards[eng_shard_index(self)] : NULL;
    if (!ss)
        return;
    if (st == POL_MC_OK || st == POL_MC_NOT_FOUND) {
        outage_end(ss);
    } else {
        ss->stats.store_errors++;
        outage_begin(ss, st);
    }
}

static void unlock(struct pol_scache_mc_lock *l)
{
    struct scmc_shard *ss = l->ss;
    l->locked = false;
    if (pol_mc_delete(ss->sh, ss->c->mc, l->key, LOCK_PREFIX_LEN + l->inst_len, 0, store_done,
                      ss->c) != 0)
        ss->stats.store_errors++; /* the lock expires after lock_timeout */
}

int pol_scache_mc_acquire(struct pol_scache_mc *c, struct eng_shard *sh, const char *inst,
                          size_t inst_len, pol_scache_mc_done_fn *done, void *ctx,
                          struct pol_scache_mc_lock **out)
{
    ENG_ASSERT(done != NULL);
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < POL_SCACHE_MC_SHARDS_MAX);
    struct scmc_shard *ss = c->shards[idx];
    ENG_ASSERT(ss != NULL); /* pol_scache_mc_shard_start ran on this shard */
    if (inst_len > POL_SCACHE_MC_INSTANCE_BYTES_MAX) {
        ss->stats.refused++;
        return -ENAMETOOLONG;
    }
    struct pol_scache_mc_lock *l = lock_take(ss);
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
    } else if (!send_add(l)) {
        l->pending = PEND_UNAVAILABLE; /* the client refused: full */
    }
    if (l->pending != PEND_NONE) { /* reported from the loop, like every result */
        l->state = LK_WAITING;
        eng_timer_arm(sh, &l->timer, 0);
    }
    *out = l;
    return 0;
}

void pol_scache_mc_release(struct pol_scache_mc_lock *l, const char *value, size_t len)
{
    ENG_ASSERT(l->state == LK_HELD);
    struct scmc_shard *ss = l->ss;
    ss->stats.stores++;
    if (pol_mc_set(ss->sh, ss->c->mc, inst_of(l), l->inst_len, value, len, ss->c->cfg.expire_s, 0,
                   store_done, ss->c) != 0)
        ss->stats.store_errors++;
    unlock(l);
    lock_put(l);
}

void pol_scache_mc_cancel(struct pol_scache_mc_lock *l)
{
    ENG_ASSERT(l->state != LK_FREE);
    ENG_ASSERT(!l->cancelled);
    l->ss->stats.cancels++;
    eng_timer_cancel(l->ss->sh, &l->timer);
    l->cancelled = true;
    cancelled_settle(l);
}

void pol_scache_mc_get_stats(const struct pol_scache_mc *c, struct eng_shard *sh,
                             struct pol_scache_mc_stats *out)
{
    const struct scmc_shard *ss = c->shards[eng_shard_index(sh)];
    ENG_ASSERT(ss != NULL);
    *out = ss->stats;
}

/* ---------------------------------------------------------------------------------------------
 * Serialisation
 */

static void put_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t get_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

size_t pol_scache_mc_encoded_bytes(const struct pol_session *s)
{
    size_t n = MAGIC_LEN;
    for (const struct pol_sess_ent *e = s->head; e; e = e->next)
        if (e->live)
            n += 8 + (size_t)e->key_len + e->val_len;
    return n;
}

void pol_scache_mc_encode(const struct pol_session *s, char *out)
{
    memcpy(out, MAGIC, MAGIC_LEN);
    char *p = out + MAGIC_LEN;
    for (const struct pol_sess_ent *e = s->head; e; e = e->next) {
        if (!e->live)
            continue;
        put_be32(p, e->key_len);
        put_be32(p + 4, e->val_len);
        memcpy(p + 8, e->key, e->key_len);
        memcpy(p + 8 + e->key_len, e->val, e->val_len);
        p += 8 + (size_t)e->key_len + e->val_len;
    }
}

int pol_scache_mc_decode(struct pol_session *s, struct pol_arena *a, const char *value, size_t len)
{
    if (len < MAGIC_LEN || memcmp(value, MAGIC, MAGIC_LEN) != 0)
        return -EINVAL;
    /* Check the whole value before adding anything. */
    size_t off = MAGIC_LEN;
    while (off < len) {
        if (len - off < 8)
            return -EINVAL;
        uint64_t kl = get_be32(value + off), vl = get_be32(value + off + 4);
        if (kl + vl > len - off - 8)
            return -EINVAL;
        off += 8 + kl + vl;
    }
    for (off = MAGIC_LEN; off < len;) {
        uint32_t kl = get_be32(value + off), vl = get_be32(value + off + 4);
        int rc = pol_sess_set(s, a, value + off + 8, kl, value + off + 8 + kl, vl);
        if (rc != 0)
            return rc;
        off += 8 + (size_t)kl + vl;
    }
    return 0;
}
