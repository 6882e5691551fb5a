/*
 * exec.c: per-shard policy state and the processing of one request (see exec.h).
 *
 * Owns, per shard: the request pool and the arena pool (home side), this shard's part of the
 * Memory session cache, the serialisation scratch buffer and the per-plugin shard data. All of
 * it is allocated in pol_shard_init; processing a request allocates nothing outside the
 * request's arena.
 *
 * Sizing (per shard; requests_max = max_connections + a reserve for timed-out requests whose
 * operation has not come back yet):
 *   requests     requests_max x sizeof(struct pol_req) (~1.2 KiB)
 *   small arenas requests_max x small class: a typical request (<= 4 KiB of attributes)
 *                + POL_REQ_HEADROOM_BYTES + session_bytes_max (Memory cache), power of two
 *   big arenas   requests_max / 16 (at least 4) x big class: max_request_bytes + the index of
 *                max_attributes + headroom + session_bytes_max
 * The arenas are MAP_NORESERVE mappings, so only what requests actually touch is resident.
 *
 * Requests of one session are serialised by the session cache (sstore.c); a request handed the
 * session by its predecessor is put on the ready queue and run from pol_exec_drain, so that
 * finishing one request never recurses into the next.
 */
#include "exec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "chain.h"
#include "eng/assert.h"
#include "eng/log.h"
#include "regex.h"
#include "server.h"

#define SMALL_ATTR_BYTES 4096u

uint64_t pol_exec_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 4096;
    while (p < n)
        p <<= 1;
    return p;
}

/* Bytes of arena a request needs besides its attributes. */
static size_t arena_extra_bytes(const struct pol_server *s)
{
    size_t frames = sizeof(struct pol_frame) * (s->depth_max + 1);
    /* Memcached: the decoded session and its encoding for the store, both in the arena. */
    bool ext = s->scache.kind == POL_SCACHE_MEMCACHED || s->scache.kind == POL_SCACHE_REDIS;
    size_t sess = s->scache.kind == POL_SCACHE_MEMORY ? s->scache.session_bytes_max
                  : ext                               ? 2 * (size_t)s->scache.session_bytes_max
                                                      : 0;
    return POL_REQ_HEADROOM_BYTES + frames + sess;
}

static int pools_init(struct pol_shard *ps, uint32_t requests_max)
{
    const struct pol_server *s = ps->srv;
    size_t extra = arena_extra_bytes(s);
    size_t small = pow2_at_least(SMALL_ATTR_BYTES + extra);
    size_t big = (size_t)s->g.max_request_bytes + extra +
                 (size_t)s->g.max_attributes *
                     (sizeof(struct pol_attr) + 4 * POL_ARENA_ALIGN + 4 * sizeof(uint16_t));
    struct pol_arena_class cls[2] = {{small, requests_max},
                                     {big, requests_max / 16 > 4 ? requests_max / 16 : 4}};
    int rc = pol_arena_pool_init(&ps->arenas, cls, big > small ? 2 : 1);
    if (rc != 0)
        return rc;
    ps->reqs = calloc(requests_max, sizeof(struct pol_req));
    if (!ps->reqs)
        return -ENOMEM;
    ps->req_count = requests_max;
    for (uint32_t i = requests_max; i-- > 0;) {
        ps->reqs[i].home = ps;
        ps->reqs[i].next = ps->free_reqs;
        ps->free_reqs = &ps->reqs[i];
    }
    ps->free_req_count = requests_max;
    return 0;
}

static int sessions_init(struct pol_shard *ps)
{
    const struct pol_scache_config *c = &ps->srv->scache;
    if (c->kind != POL_SCACHE_MEMORY)
        return 0;
    /* The daemon-wide limits are split evenly: instances hash uniformly over the shards. */
    struct pol_sstore_config sc = {
        .sessions_max = (c->sessions_max + ps->count - 1) / ps->count,
        .memory_bytes = (c->memory_bytes + ps->count - 1) / ps->count,
        .session_bytes_max = c->session_bytes_max,
        /* expire = 0 means "never" for memcached, and so here (LRU still bounds the cache). */
        .expire_ms = c->expire_s ? (uint64_t)c->expire_s * 1000u : UINT64_MAX / 4,
    };
    int rc = pol_sstore_create(&sc, &ps->sessions);
    if (rc != 0)
        return rc;
    ps->sess_scratch_bytes = c->session_bytes_max;
    ps->sess_scratch = malloc(ps->sess_scratch_bytes);
    return ps->sess_scratch ? 0 : -ENOMEM;
}

static int plugins_start(struct pol_shard *ps, struct pol_shard_gen *gen, char *err,
                         size_t err_len)
{
    const struct pol_server *s = gen->srv;
    gen->plugin_data = calloc(s->plugin_count ? s->plugin_count : 1, sizeof(void *));
    gen->plugin_started = calloc(s->plugin_count ? s->plugin_count : 1, sizeof(bool));
    if (!gen->plugin_data || !gen->plugin_started) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < s->plugin_count; i++) {
        struct pol_plugin *p = s->plugins[i];
        if (!p->type->shard_start)
            continue;
        char why[512] = "";
        if (p->type->shard_start(p, ps->sh, &gen->plugin_data[i], why, sizeof(why)) != 0) {
            snprintf(err, err_len, "%s:%u: plugin %s failed to start on shard %u: %s", p->file,
                     p->line, p->name, ps->index, why[0] ? why : "shard_start failed");
            return -1;
        }
        gen->plugin_started[i] = true;
    }
    return 0;
}

/* Connections (pol_conn_ops) on an engine shard; the testkit has none. */
static int conns_start(struct pol_shard *ps, struct pol_shard_gen *gen, char *err,
                       size_t err_len)
{
    const struct pol_server *s = gen->srv;
    for (uint32_t i = 0; ps->sh && i < s->conn_count; i++) {
        struct pol_conn_def *d = &s->conns[i];
        if (!d->opened || !d->ops->shard_start)
            continue;
        char why[512] = "";
        if (d->ops->shard_start(d, ps->sh, why, sizeof(why)) != 0) {
            /* As before reloads existed: the ones started before are not stopped (pol_conn_ops
             * does not promise that shard_stop copes with a shard where shard_start never ran). */
            snprintf(err, err_len, "%s:%u: connection %s failed to start on shard %u: %s",
                     d->file, d->line, d->name, ps->index, why[0] ? why : "shard_start failed");
            return -1;
        }
    }
    gen->conns_started = ps->sh != NULL;
    if (ps->sh && s->scache.kind == POL_SCACHE_MEMCACHED &&
        pol_scache_mc_shard_start(s->scache.mc, ps->sh, ps->req_count) != 0) {
        snprintf(err, err_len, "shard %u: out of memory for the session cache", ps->index);
        return -1;
    }
    if (ps->sh && s->scache.kind == POL_SCACHE_REDIS &&
        pol_scache_redis_shard_start(s->scache.redis, ps->sh, ps->req_count) != 0) {
        snprintf(err, err_len, "shard %u: out of memory for the session cache", ps->index);
        return -1;
    }
    return 0;
}

/* Plugins' shard_stop (last first), then the connections'; frees the generation's arrays. */
static void gen_stop(struct pol_shard *ps, struct pol_shard_gen *gen)
{
    const struct pol_server *s = gen->srv;
    for (uint32_t i = s && gen->plugin_started ? s->plugin_count : 0; i-- > 0;) {
        struct pol_plugin *p = s->plugins[i];
        if (gen->plugin_started[i] && p->type->shard_stop)
            p->type->shard_stop(p, ps->sh, gen->plugin_data[i]);
    }
    if (s && gen->conns_started && s->scache.kind == POL_SCACHE_MEMCACHED)
        pol_scache_mc_shard_stop(s->scache.mc, ps->sh);
    if (s && gen->conns_started && s->scache.kind == POL_SCACHE_REDIS)
        pol_scache_redis_shard_stop(s->scache.redis, ps->sh);
    for (uint32_t i = s && gen->conns_started ? s->conn_count : 0; i-- > 0;) {
        struct pol_conn_def *d = &s->conns[i];
        if (d->opened && d->ops->shard_stop)
            d->ops->shard_stop(d, ps->sh);
    }
    free(gen->plugin_data);
    free(gen->plugin_started);
    memset(gen, 0, sizeof(*gen));
}

static int gen_start(struct pol_shard *ps, struct pol_shard_gen *gen,
                     const struct pol_server *srv, char *err, size_t err_len)
{
    memset(gen, 0, sizeof(*gen));
    gen->srv = srv;
    if (conns_start(ps, gen, err, err_len) != 0 || plugins_start(ps, gen, err, err_len) != 0) {
        gen_stop(ps, gen);
        return -1;
    }
    return 0;
}

int pol_shard_init(struct pol_shard *ps, const struct pol_server *srv, struct eng_shard *sh,
                   unsigned index, unsigned count, uint32_t requests_max, char *err, size_t err_len)
{
    ENG_ASSERT(count >= 1);
    ENG_ASSERT(index < count);
    memset(ps, 0, sizeof(*ps));
    ps->srv = srv;
    ps->sh = sh;
    ps->index = index;
    ps->count = count;
    if (pol_regex_thread_init() != 0 || pools_init(ps, requests_max) != 0) {
        snprintf(err, err_len, "shard %u: out of memory for %u requests", index, requests_max);
        pol_shard_fini(ps);
        return -1;
    }
    if (sessions_init(ps) != 0) {
        snprintf(err, err_len, "shard %u: out of memory for the session cache", index);
        pol_shard_fini(ps);
        return -1;
    }
    if (gen_start(ps, &ps->cur, srv, err, err_len) != 0) {
        pol_shard_fini(ps);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Generations (hot reload)
 */

int pol_shard_gen_prepare(struct pol_shard *ps, const struct pol_server *srv, char *err,
                          size_t err_len)
{
    ENG_ASSERT(ps->next.srv == NULL);
    ENG_ASSERT(srv != ps->cur.srv);
    return gen_start(ps, &ps->next, srv, err, err_len);
}

void pol_shard_gen_drop(struct pol_shard *ps)
{
    if (ps->next.srv)
        gen_stop(ps, &ps->next);
}

int pol_shard_gen_switch(struct pol_shard *ps)
{
    ENG_ASSERT(ps->next.srv != NULL);
    if (ps->old_count >= POL_SHARD_OLD_GENS_MAX)
        return -ENOSPC;
    ps->old[ps->old_count++] = ps->cur;
    ps->cur = ps->next;
    memset(&ps->next, 0, sizeof(ps->next));
    ps->srv = ps->cur.srv;
    return 0;
}

static struct pol_shard_gen *gen_of(struct pol_shard *ps, const struct pol_server *srv)
{
    if (ps->cur.srv == srv)
        return &ps->cur;
    if (ps->next.srv == srv)
        return &ps->next;
    for (uint32_t i = 0; i < ps->old_count; i++)
        if (ps->old[i].srv == srv)
            return &ps->old[i];
    return NULL;
}

uint32_t pol_shard_gen_inflight(const struct pol_shard *ps, const struct pol_server *srv)
{
    const struct pol_shard_gen *g = gen_of((struct pol_shard *)ps, srv);
    return g ? g->inflight : 0;
}

void pol_shard_gen_retire(struct pol_shard *ps, const struct pol_server *srv)
{
    for (uint32_t i = 0; i < ps->old_count; i++) {
        if (ps->old[i].srv != srv)
            continue;
        ENG_ASSERT(ps->old[i].inflight == 0);
        gen_stop(ps, &ps->old[i]);
        ps->old[i] = ps->old[--ps->old_count];
        memset(&ps->old[ps->old_count], 0, sizeof(ps->old[0]));
        return;
    }
}

void pol_shard_log_stats(const struct pol_shard *ps)
{
    const struct pol_shard_stats *q = &ps->stats;
    eng_log(ENG_LOG_NOTICE,
            "shard %u: %llu requests, %llu replies, %llu failed, %llu timed out, %llu shed, "
            "%llu throw-away sessions (cache full), %llu sessions too big for the arena",
            ps->index, (unsigned long long)q->requests, (unsigned long long)q->replies,
            (unsigned long long)q->failed, (unsigned long long)q->timeouts,
            (unsigned long long)q->no_request, (unsigned long long)q->session_full,
            (unsigned long long)q->session_nomem);
    if (!ps->sessions)
        return;
    struct pol_sstore_stats st;
    pol_sstore_get_stats(ps->sessions, &st);
    eng_log(ENG_LOG_NOTICE,
            "shard %u session cache: %llu sessions, %llu bytes (%llu per session), %llu hits, "
            "%llu misses, %llu waits, %llu evicted, %llu expired, %llu too big, %llu failed",
            ps->index, (unsigned long long)st.sessions, (unsigned long long)st.bytes_used,
            (unsigned long long)(st.sessions ? st.bytes_used / st.sessions : 0),
            (unsigned long long)st.hits, (unsigned long long)st.misses,
            (unsigned long long)st.waits, (unsigned long long)st.evicted,
            (unsigned long long)st.expired, (unsigned long long)st.too_big,
            (unsigned long long)st.store_failed);
}

void pol_shard_fini(struct pol_shard *ps)
{
    pol_shard_gen_drop(ps);
    while (ps->old_count > 0)
        gen_stop(ps, &ps->old[--ps->old_count]);
    if (ps->cur.srv)
        gen_stop(ps, &ps->cur);
    if (ps->sh) /* the daemon's shards; tests and the testkit stay quiet */
        pol_shard_log_stats(ps);
    pol_sstore_destroy(ps->sessions);
    free(ps->sess_scratch);
    free(ps->reqs);
    pol_arena_pool_fini(&ps->arenas);
    if (ps->sh)
        pol_regex_thread_fini();
    memset(ps, 0, sizeof(*ps));
}

/* ---------------------------------------------------------------------------------------------
 * Requests (home shard)
 */

struct pol_req *pol_shard_req_new(struct pol_shard *home, const char *buf,
                                  const struct pol_proto_attr *attrs, uint32_t count)
{
    size_t need = pol_req_build_bytes(attrs, count) + arena_extra_bytes(home->srv);
    struct pol_req *r = home->free_reqs;
    uint32_t cls = 0;
    size_t bytes = 0;
    void *mem = r ? pol_arena_pool_get(&home->arenas, need, &cls, &bytes) : NULL;
    if (!mem) {
        home->stats.no_request++;
        return NULL;
    }
    home->free_reqs = r->next;
    home->free_req_count--;
    ENG_ASSERT(r->home == home);
    r->arena_buf = mem;
    r->arena_class = cls;
    pol_arena_init(&r->arena, mem, bytes);
    int rc = pol_req_build(r, buf, attrs, count);
    ENG_ASSERT(rc == 0); /* need covered the attributes */
    r->srv = home->srv;
    home->cur.inflight++;
    r->done = NULL;
    r->host = NULL;
    home->stats.requests++;
    return r;
}

void pol_shard_req_free(struct pol_req *r)
{
    struct pol_shard *home = r->home;
    ENG_ASSERT(home != NULL);
    ENG_ASSERT(r->arena_buf != NULL);
    ENG_ASSERT(home->free_req_count < home->req_count);
    ENG_ASSERT(r->sent == NULL);
    struct pol_shard_gen *gen = gen_of(home, r->srv);
    ENG_ASSERT(gen != NULL); /* a generation retires only when none of its requests is left */
    ENG_ASSERT(gen->inflight > 0);
    gen->inflight--;
    pol_arena_pool_put(&home->arenas, r->arena_buf, r->arena_class);
    r->arena_buf = NULL;
    r->phase = POL_PHASE_NEW;
    r->next = home->free_reqs;
    home->free_reqs = r;
    home->free_req_count++;
}

unsigned pol_exec_owner(const struct pol_server *srv, const struct pol_req *r, unsigned home_index,
                        unsigned shard_count)
{
    size_t len = 0;
    const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &len);
    if (srv->scache.kind != POL_SCACHE_MEMORY || !inst || len == 0 || shard_count <= 1)
        return home_index;
    return (unsigned)(XXH3_64bits(inst, len) % shard_count);
}

/* ---------------------------------------------------------------------------------------------
 * Sessions
 */

static struct pol_req *waiter_req(struct pol_sstore_waiter *w)
{
    return (struct pol_req *)(void *)((char *)w - offsetof(struct pol_req, waiter));
}

static void ready_remove(struct pol_shard *ps, struct pol_req *r)
{
    struct pol_req **pp = &ps->ready_head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = r->next;
    if (ps->ready_tail == r)
        ps->ready_tail = prev;
    r->next = NULL;
}

static void ready_push(struct pol_shard *ps, struct pol_req *r)
{
    r->next = NULL;
    if (ps->ready_tail)
        ps->ready_tail->next = r;
    else
        ps->ready_head = r;
    ps->ready_tail = r;
}

static void start_chain(struct pol_req *r);
static void drain(struct pol_shard *ps);
static void fail(struct pol_req *r);

static void ext_session_done(struct pol_req *r, enum pol_scache_mc_result res, const char *value,
                             size_t len);

/* The Memcached session cache answered (scache_mc.h): the session is locked and read (or new),
 * or the request goes on without a kept session, or it fails as in 2.05. */
static void mc_session_done(void *ctx, struct pol_scache_mc_lock *l, enum pol_scache_mc_result res,
                            const char *value, size_t len)
{
    struct pol_req *r = ctx;
    ENG_ASSERT(r->phase == POL_PHASE_SESSION_WAIT);
    ENG_ASSERT(r->mlock != NULL);
    r->mc_held = res == POL_SCACHE_MC_FOUND || res == POL_SCACHE_MC_NEW;
    ENG_ASSERT(!r->mc_held || l == r->mlock);
    if (!r->mc_held)
        r->mlock = NULL; /* gone: unavailable (no kept session) or lock failed */
    ext_session_done(r, res, value, len);
}

/* The same for the Redis session cache (scache_redis.h). */
static void redis_session_done(void *ctx, struct pol_scache_redis_lock *l,
                               enum pol_scache_mc_result res, const char *value, size_t len)
{
    struct pol_req *r = ctx;
    ENG_ASSERT(r->phase == POL_PHASE_SESSION_WAIT);
    ENG_ASSERT(r->rlock != NULL);
    r->mc_held = res == POL_SCACHE_MC_FOUND || res == POL_SCACHE_MC_NEW;
    ENG_ASSERT(!r->mc_held || l == r->rlock);
    if (!r->mc_held)
        r->rlock = NULL;
    ext_session_done(r, res, value, len);
}

static void ext_session_done(struct pol_req *r, enum pol_scache_mc_result res, const char *value,
                             size_t len)
{
    struct pol_shard *ps = r->ps;
    if (res == POL_SCACHE_MC_FOUND) {
        int rc = pol_scache_mc_decode(&r->sess, &r->arena, value, len);
        if (rc == -ENOMEM)
            r->mc_nomem = true;
        else if (rc != 0) /* not ours (another program's value): a new session */
            pol_sess_init(&r->sess);
    }
    if (res == POL_SCACHE_MC_LOCK_FAILED) {
        size_t il = 0;
        const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &il);
        snprintf(r->detail, sizeof(r->detail), "could not acquire lock for session %.*s",
                 (int)(il > 200 ? 200 : il), inst ? inst : "");
        r->phase = POL_PHASE_RUNNING;
        fail(r);
    } else {
        ready_push(ps, r);
    }
    drain(ps);
}

/* Returns false when r waits for its session (queued behind another request of its instance,
 * or the Memcached cache's lock and read). */
static bool session_acquire(struct pol_shard *ps, struct pol_req *r)
{
    size_t len = 0;
    const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &len);
    if (r->srv->scache.kind == POL_SCACHE_MEMCACHED) {
        if (!ps->sh || !inst || len == 0)
            return true;
        r->mc_held = false;
        r->mc_nomem = false;
        if (pol_scache_mc_acquire(r->srv->scache.mc, ps->sh, inst, len, mc_session_done, r,
                                  &r->mlock) != 0) {
            r->mlock = NULL;
            ps->stats.session_full++; /* no handle or instance too long: not kept */
            return true;
        }
        r->phase = POL_PHASE_SESSION_WAIT;
        return false;
    }
    if (r->srv->scache.kind == POL_SCACHE_REDIS) {
        if (!ps->sh || !inst || len == 0)
            return true;
        r->mc_held = false;
        r->mc_nomem = false;
        if (pol_scache_redis_acquire(r->srv->scache.redis, ps->sh, inst, len, redis_session_done,
                                     r, &r->rlock) != 0) {
            r->rlock = NULL;
            ps->stats.session_full++; /* no handle or instance too long: not kept */
            return true;
        }
        r->phase = POL_PHASE_SESSION_WAIT;
        return false;
    }
    if (!ps->sessions || !inst || len == 0)
        return true; /* None, or no instance: a throw-away session (spec 10.1, 12.3) */
    struct pol_sstore_ent *ent = NULL;
    switch (
        pol_sstore_acquire(ps->sessions, inst, len, pol_exec_now_us() / 1000, &r->waiter, &ent)) {
    case POL_SSTORE_OWNED:
        r->sent = ent;
        return true;
    case POL_SSTORE_QUEUED:
        r->phase = POL_PHASE_SESSION_WAIT;
        return false;
    case POL_SSTORE_FULL:
        ps->stats.session_full++;
        return true;
    }
    return true;
}

/* Fills r->sess from the held entry. 0 or -ENOMEM (does not fit the arena). */
static int session_load(struct pol_req *r)
{
    if ((r->mlock || r->rlock) && r->mc_held) { /* Memcached/Redis: decoded when it arrived */
        if (r->mc_nomem)
            return -ENOMEM;
        if (pol_sess_find(&r->sess, "_instance", 9))
            return 0;
        size_t len = 0;
        const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &len);
        return pol_sess_set(&r->sess, &r->arena, "_instance", 9, inst, len);
    }
    if (!r->sent)
        return 0;
    if (pol_sstore_is_new(r->sent)) {
        size_t len = 0;
        const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &len);
        return pol_sess_set(&r->sess, &r->arena, "_instance", 9, inst, len);
    }
    size_t n = pol_sstore_blob_bytes(r->sent);
    char *blob = pol_arena_alloc(&r->arena, n ? n : 1);
    if (!blob)
        return -ENOMEM;
    pol_sstore_blob_read(r->ps->sessions, r->sent, blob);
    int rc = pol_sess_load(&r->sess, &r->arena, blob, n);
    ENG_ASSERT(rc != -EINVAL); /* we wrote it */
    return rc;
}

/* Stores the session (always, also after a failure or timeout: spec 7.1 step 4) and hands it
 * to the next request waiting for it. */
static void session_store(struct pol_req *r)
{
    struct pol_shard *ps = r->ps;
    if (r->mlock && r->mc_held) { /* Memcached: SET INSTANCE with expire, DELETE the lock */
        size_t n = pol_scache_mc_encoded_bytes(&r->sess);
        char *buf = r->mc_nomem ? NULL : pol_arena_alloc(&r->arena, n);
        if (buf) {
            pol_scache_mc_encode(&r->sess, buf);
            pol_scache_mc_release(r->mlock, buf, n);
        } else {
            ps->stats.session_nomem++;
            pol_scache_mc_cancel(r->mlock); /* unlock, keep what memcached has */
        }
        r->mlock = NULL;
        return;
    }
    if (r->rlock && r->mc_held) { /* Redis: SET INSTANCE EX expire, DEL the lock */
        size_t n = pol_scache_mc_encoded_bytes(&r->sess);
        char *buf = r->mc_nomem ? NULL : pol_arena_alloc(&r->arena, n);
        if (buf) {
            pol_scache_mc_encode(&r->sess, buf);
            pol_scache_redis_release(r->rlock, buf, n);
        } else {
            ps->stats.session_nomem++;
            pol_scache_redis_cancel(r->rlock); /* unlock, keep what Redis has */
        }
        r->rlock = NULL;
        return;
    }
    if (!r->sent)
        return;
    const char *blob = NULL;
    size_t n = 0;
    if (r->sess.dirty) {
        n = pol_sess_serialized_bytes(&r->sess);
        if (n <= ps->sess_scratch_bytes) {
            pol_sess_serialize(&r->sess, ps->sess_scratch);
            blob = ps->sess_scratch;
        }
    }
    struct pol_sstore_waiter *next = NULL;
    pol_sstore_release(ps->sessions, r->sent, blob, n, pol_exec_now_us() / 1000, &next);
    r->sent = NULL;
    if (next) {
        struct pol_req *w = waiter_req(next);
        w->sent = next->ent;
        ready_push(ps, w);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Processing
 */

static void deadline_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    pol_exec_timeout((struct pol_req *)(void *)((char *)t - offsetof(struct pol_req, deadline)));
}

static void finish(struct pol_req *r)
{
    session_store(r);
    if (r->ps->sh)
        eng_timer_cancel(r->ps->sh, &r->deadline);
    r->phase = POL_PHASE_DONE;
    r->final = true;
    r->done(r); /* r may be released by now */
}

static void fail(struct pol_req *r)
{
    r->outcome = POL_OUT_FAILED;
    r->ps->stats.failed++;
    finish(r);
}

/* Encodes the reply and the result line's action list into the arena. */
static int build_reply(struct pol_req *r)
{
    const struct pol_res_list *l = pol_chain_results(r);
    size_t n = 0, bytes = 32, text = 1;
    for (const struct pol_res *x = l->head; x; x = x->next)
        if (x->action) {
            n++;
            bytes += x->len + 8;
            text += x->len + 1;
        }
    const char **acts = pol_arena_alloc(&r->arena, sizeof(char *) * (n ? n : 1));
    size_t *lens = pol_arena_alloc(&r->arena, sizeof(size_t) * (n ? n : 1));
    char *out = pol_arena_alloc(&r->arena, bytes), *t = pol_arena_alloc(&r->arena, text);
    if (!acts || !lens || !out || !t)
        return -ENOMEM;
    size_t i = 0, tl = 0;
    for (const struct pol_res *x = l->head; x; x = x->next) {
        if (!x->action)
            continue;
        acts[i] = x->action;
        lens[i++] = x->len;
        if (tl)
            t[tl++] = ',';
        memcpy(t + tl, x->action, x->len);
        tl += x->len;
    }
    t[tl] = '\0';
    r->result_len = tl;
    r->reply_len = pol_proto_encode_reply(out, bytes, acts, lens, n);
    ENG_ASSERT(r->reply_len > 0);
    r->reply = out;
    r->result_text = t;
    return 0;
}

static void run(struct pol_req *r)
{
    switch (pol_chain_run(r)) {
    case POL_CHAIN_WAITING:
        return;
    case POL_CHAIN_FAILED:
        fail(r);
        return;
    case POL_CHAIN_DONE:
        break;
    }
    if (build_reply(r) != 0) {
        snprintf(r->detail, sizeof(r->detail), "out of request memory for the reply");
        fail(r);
        return;
    }
    r->outcome = POL_OUT_REPLY;
    r->ps->stats.replies++;
    finish(r);
}

static void log_dump(const struct pol_req *r, const char *what)
{
    char line[ENG_LOG_LINE_MAX];
    size_t n = 0;
    bool req = what[0] == 'r';
    const struct pol_sess_ent *e = r->sess.head;
    for (uint32_t i = 0; req ? i < r->attr_count : e != NULL; i++) {
        const char *k = req ? r->attrs[i].name : e->key, *v = req ? r->attrs[i].value : e->val;
        if (!req && !e->live) {
            e = e->next;
            continue;
        }
        int w = snprintf(line + n, sizeof(line) - n, "%s%s=%s", n ? ", " : "", k, v);
        if (w < 0 || (size_t)w >= sizeof(line) - n)
            break;
        n += (size_t)w;
        if (!req)
            e = e->next;
    }
    line[n < sizeof(line) ? n : sizeof(line) - 1] = '\0';
    eng_log(ENG_LOG_DEBUG, "%s: %s", what, line);
}

/* The session is held (or there is none): load it and run the chain. */
static void start_chain(struct pol_req *r)
{
    r->phase = POL_PHASE_RUNNING;
    if (session_load(r) != 0) {
        size_t len = 0;
        const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &len);
        r->ps->stats.session_nomem++;
        snprintf(r->detail, sizeof(r->detail),
                 "session of instance %.*s does not fit the request arena",
                 (int)(len > 200 ? 200 : len), inst ? inst : "");
        fail(r);
        return;
    }
    if (eng_log_enabled(ENG_LOG_DEBUG))
        log_dump(r, "session");
    if (pol_chain_start(r, &r->vhost->chain, r->srv->depth_max) != 0) {
        snprintf(r->detail, sizeof(r->detail), "out of request memory");
        fail(r);
        return;
    }
    run(r);
}

static void drain(struct pol_shard *ps)
{
    if (ps->draining)
        return;
    ps->draining = true;
    while (ps->ready_head) {
        struct pol_req *r = ps->ready_head;
        ps->ready_head = r->next;
        if (!ps->ready_head)
            ps->ready_tail = NULL;
        r->next = NULL;
        start_chain(r);
    }
    ps->draining = false;
}

void pol_exec_begin(struct pol_shard *ps, struct pol_req *r)
{
    ENG_ASSERT(r->vhost != NULL);
    ENG_ASSERT(r->done != NULL);
    ENG_ASSERT(r->phase == POL_PHASE_NEW);
    r->ps = ps;
    r->start_us = pol_exec_now_us();
    if (eng_log_enabled(ENG_LOG_DEBUG))
        log_dump(r, "request");
    uint32_t timeout_s = r->srv->g.request_timeout_s;
    if (ps->sh && timeout_s > 0) {
        eng_timer_init(&r->deadline, deadline_fired);
        eng_timer_arm(ps->sh, &r->deadline, (uint64_t)timeout_s * 1000u);
    }
    if (session_acquire(ps, r))
        start_chain(r);
    drain(ps);
}

void pol_req_resume(struct pol_req *r)
{
    ENG_ASSERT(r->phase == POL_PHASE_PLUGIN_WAIT);
    ENG_ASSERT(r->ps != NULL);
    ENG_ASSERT(r->ps->sh == NULL || r->ps->sh == eng_shard_self());
    struct pol_shard *ps = r->ps;
    if (r->timed_out) {
        finish(r); /* answered already: store the session and release */
    } else {
        run(r);
    }
    drain(ps);
}

void pol_exec_timeout(struct pol_req *r)
{
    struct pol_shard *ps = r->ps;
    ps->stats.timeouts++;
    r->outcome = POL_OUT_TIMEOUT;
    switch (r->phase) {
    case POL_PHASE_SESSION_WAIT:
        if (r->srv->scache.kind == POL_SCACHE_MEMCACHED) {
            if (r->mlock) { /* still waiting, or held and queued to start: not started */
                if (r->mc_held)
                    ready_remove(ps, r);
                pol_scache_mc_cancel(r->mlock); /* done will not run; a lock held is deleted */
                r->mlock = NULL;
            }
        } else if (r->srv->scache.kind == POL_SCACHE_REDIS) {
            if (r->rlock) {
                if (r->mc_held)
                    ready_remove(ps, r);
                pol_scache_redis_cancel(r->rlock);
                r->rlock = NULL;
            }
        } else if (r->sent) { /* handed the session, not started yet: pass it on untouched */
            session_store(r);
        } else {
            pol_sstore_cancel_wait(ps->sessions, &r->waiter);
        }
        r->phase = POL_PHASE_DONE;
        r->final = true;
        r->done(r);
        break;
    case POL_PHASE_PLUGIN_WAIT:
        /* The operation still refers to r: answer now, release when it comes back. */
        r->timed_out = true;
        r->answered = true;
        r->final = false;
        r->done(r);
        break;
    default:
        ENG_ASSERT(!"deadline while running synchronously");
    }
    drain(ps);
}

void *pol_plugin_shard_data(const struct pol_plugin *p, const struct pol_req *r)
{
    ENG_ASSERT(r->ps != NULL);
    ENG_ASSERT(p->index < r->srv->plugin_count);
    /* The request's generation: the processing shard may have switched to a newer one (or
     * not yet: it prepared the request's generation before any shard switched). */
    const struct pol_shard_gen *g =
        r->ps->cur.srv == r->srv ? &r->ps->cur : gen_of(r->ps, r->srv);
    ENG_ASSERT(g != NULL);
    return g->plugin_data[p->index];
}

/* Appends bytes (NUL included) to a line, truncating at its end. */
static void line_put(char *out, size_t out_len, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= out_len)
        return;
    if (len > out_len - 1 - *n)
        len = out_len - 1 - *n;
    memcpy(out + *n, s, len);
    *n += len;
}

static void line_puts(char *out, size_t out_len, size_t *n, const char *s)
{
    line_put(out, out_len, n, s, strlen(s));
}

size_t pol_exec_result_line(const struct pol_req *r, uint64_t now_us, char *out, size_t out_len)
{
    ENG_ASSERT(out_len > 0);
    size_t il = 0, tl = 0, n = 0;
    const char *inst = pol_req_wk(r, POL_WK_INSTANCE, &il);
    const char *type = pol_req_wk(r, POL_WK_REQUEST, &tl);
    char ms[32];
    snprintf(ms, sizeof(ms), "%llu",
             (unsigned long long)(now_us > r->start_us ? (now_us - r->start_us + 500) / 1000 : 0));
    /* Request values are bytes: instance and type are copied as they are, NUL included. */
    line_puts(out, out_len, &n, r->vhost ? r->vhost->name : "");
    line_puts(out, out_len, &n, ": instance=");
    line_put(out, out_len, &n, inst ? inst : "", il);
    line_puts(out, out_len, &n, ", type=");
    line_put(out, out_len, &n, type ? type : "", tl);
    line_puts(out, out_len, &n, ", t=");
    line_puts(out, out_len, &n, ms);
    line_puts(out, out_len, &n, "ms, plugin=");
    line_puts(out, out_len, &n, r->last_match ? r->last_match : "");
    line_puts(out, out_len, &n, ", result=");
    line_put(out, out_len, &n, r->result_text ? r->result_text : "", r->result_len);
    out[n] = '\0';
    return n;
}
