/*
 * mc.c: the `Memcached` connection module (spec 9.2) and the plugin API over it (pol/mc.h).
 *
 * open (main thread, start-up) reads the <Connection NAME> block: `servers` (default
 * 127.0.0.1:11211; parsed and resolved once, ketama over them), `namespace` (prepended to every
 * key; refused when memcached keys cannot carry it), `debug` (accepted, unused). shard_start
 * creates this connection's client on each shard (engine/mc.c: the text protocol on the ring,
 * pipelined, with timeouts, reconnects and fail-fast) and a pool of completion trampolines of
 * the client's size, so translating a pol_mc_done_fn callback never allocates. Everything a
 * shard uses is its own slot of the per-shard arrays; nothing is shared between shards after
 * start-up.
 *
 * Who may call: pol_mc_lookup in a plugin's create (main thread); the operations on a shard
 * thread, for a connection started on that shard. Failures: open fails start-up with a sentence
 * (the caller adds file:line); operations report through done (POL_MC_DOWN, POL_MC_TIMEOUT...)
 * or refuse with -errno (see pol/mc.h).
 */
#include "pol/mc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/mc.h"
#include "mc_conn.h"
#include "server.h"

/* As many as the engine allows (ENG_SHARDS_MAX in engine/engine.c). */
#define POL_MC_SHARDS_MAX 1024u
#define POL_MC_SERVERS_DEFAULT "127.0.0.1:11211"

_Static_assert((int)POL_MC_OK == (int)ENG_MC_OK, "status values match");
_Static_assert((int)POL_MC_NOT_FOUND == (int)ENG_MC_NOT_FOUND, "status values match");
_Static_assert((int)POL_MC_NOT_STORED == (int)ENG_MC_NOT_STORED, "status values match");
_Static_assert((int)POL_MC_DOWN == (int)ENG_MC_DOWN, "status values match");
_Static_assert((int)POL_MC_TIMEOUT == (int)ENG_MC_TIMEOUT, "status values match");
_Static_assert((int)POL_MC_ERROR == (int)ENG_MC_ERROR, "status values match");

struct mc_shard;

struct mc_tramp {
    pol_mc_done_fn *done;
    void *ctx;
    struct mc_shard *owner;
    uint32_t next; /* free list: index + 1 */
};

/* One shard's client and its trampolines. */
struct mc_shard {
    struct eng_mc *client;
    struct mc_tramp *tramps;
    uint32_t free_tramp;
    bool stopping; /* inside shard_stop */
};

struct pol_mc {
    char *name;
    char *ns;
    struct eng_mc_servers *servers;
    struct eng_mc_config cfg;
    struct mc_shard shards[POL_MC_SHARDS_MAX];
};

const char *pol_mc_status_text(enum pol_mc_status st)
{
    return eng_mc_status_text((enum eng_mc_status)st);
}

/* ---------------------------------------------------------------------------------------------
 * The connection module (server.h: struct pol_conn_ops)
 */

static const char *opt_text(const struct pol_cfg_node *b, const char *name, const char *dflt)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    return o && o->value ? o->value : dflt;
}

static void mc_free(struct pol_mc *mc)
{
    if (!mc)
        return;
    eng_mc_servers_free(mc->servers);
    free(mc->name);
    free(mc->ns);
    free(mc);
}

static int mc_open(struct pol_server *s, struct pol_conn_def *def, char *err, size_t err_len)
{
    (void)s;
    const char *servers = opt_text(def->block, "servers", POL_MC_SERVERS_DEFAULT);
    const char *ns = opt_text(def->block, "namespace", "");
    if (eng_mc_prefix_check(ns, err, err_len) != 0)
        return -1;
    struct pol_mc *mc = calloc(1, sizeof(*mc));
    if (!mc || !(mc->name = strdup(def->name)) || !(mc->ns = strdup(ns))) {
        snprintf(err, err_len, "out of memory");
        mc_free(mc);
        return -1;
    }
    if (eng_mc_servers_parse(servers, &mc->servers, err, err_len) != 0) {
        mc_free(mc);
        return -1;
    }
    eng_mc_config_defaults(&mc->cfg);
    mc->cfg.name = mc->name;
    mc->cfg.prefix = mc->ns;
    def->impl = mc;
    return 0;
}

static int mc_shard_start(struct pol_conn_def *def, struct eng_shard *sh, char *err, size_t err_len)
{
    struct pol_mc *mc = def->impl;
    unsigned idx = eng_shard_index(sh);
    if (idx >= POL_MC_SHARDS_MAX) {
        snprintf(err, err_len, "more than %u shards", POL_MC_SHARDS_MAX);
        return -1;
    }
    struct mc_shard *ms = &mc->shards[idx];
    ENG_ASSERT(ms->client == NULL);
    ms->tramps = calloc(mc->cfg.ops_max, sizeof(*ms->tramps));
    int rc = ms->tramps ? eng_mc_create(sh, mc->servers, &mc->cfg, &ms->client) : -ENOMEM;
    if (rc != 0) {
        free(ms->tramps);
        ms->tramps = NULL;
        snprintf(err, err_len, "cannot create the memcached client: %s", strerror(-rc));
        return -1;
    }
    for (uint32_t i = mc->cfg.ops_max; i > 0; i--) {
        ms->tramps[i - 1].owner = ms;
        ms->tramps[i - 1].next = ms->free_tramp;
        ms->free_tramp = i;
    }
    return 0;
}

static void mc_shard_stop(struct pol_conn_def *def, struct eng_shard *sh)
{
    struct pol_mc *mc = def->impl;
    struct mc_shard *ms = &mc->shards[eng_shard_index(sh)];
    /* Operations still out complete with POL_MC_DOWN; what their done queues meanwhile is
     * refused with -ESHUTDOWN. */
    ms->stopping = true;
    eng_mc_destroy(ms->client);
    ms->client = NULL;
    ms->stopping = false;
    free(ms->tramps);
    ms->tramps = NULL;
    ms->free_tramp = 0;
}

static void mc_close(struct pol_conn_def *def)
{
    mc_free(def->impl);
}

const struct pol_conn_ops pol_conn_Memcached = {
    .module = "Memcached",
    .open = mc_open,
    .shard_start = mc_shard_start,
    .shard_stop = mc_shard_stop,
    .close = mc_close,
};

struct pol_mc *pol_mc_of_server(const struct pol_server *s, const char *name)
{
    const struct pol_conn_def *d = pol_server_conn(s, name);
    return d && strcmp(d->module, "Memcached") == 0 ? d->impl : NULL;
}

struct pol_mc *pol_mc_lookup(struct pol_plugin *p, const char *conn_name, char *err, size_t err_len)
{
    const struct pol_conn_def *d = pol_server_conn(p->srv, conn_name);
    if (!d) {
        snprintf(err, err_len, "no connection %s configured!", conn_name);
        return NULL;
    }
    if (strcmp(d->module, "Memcached") != 0 || !d->impl) {
        snprintf(err, err_len, "connection %s is not a Memcached connection", conn_name);
        return NULL;
    }
    return d->impl;
}

const char *pol_mc_namespace(const struct pol_mc *mc)
{
    return mc->ns;
}

const char *pol_mc_name(const struct pol_mc *mc)
{
    return mc->name;
}

/* ---------------------------------------------------------------------------------------------
 * Operations
 */

static struct mc_shard *shard_of(struct pol_mc *mc, struct eng_shard *sh)
{
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < POL_MC_SHARDS_MAX);
    struct mc_shard *ms = &mc->shards[idx];
    ENG_ASSERT(ms->client != NULL); /* the connection was started on this shard */
    return ms;
}

/* A trampoline for (done, ctx); NULL when every one is out (the client is full too). */
static struct mc_tramp *tramp_take(struct mc_shard *ms, pol_mc_done_fn *done, void *ctx)
{
    uint32_t i = ms->free_tramp;
    if (!i)
        return NULL;
    struct mc_tramp *t = &ms->tramps[i - 1];
    ms->free_tramp = t->next;
    t->done = done;
    t->ctx = ctx;
    t->next = 0;
    return t;
}

static void tramp_put(struct mc_shard *ms, struct mc_tramp *t)
{
    ENG_ASSERT(t->done != NULL);
    t->done = NULL;
    t->next = ms->free_tramp;
    ms->free_tramp = (uint32_t)(t - ms->tramps) + 1;
}

static void tramp_done(void *ctx, enum eng_mc_status st, const char *v, size_t len)
{
    struct mc_tramp *t = ctx;
    pol_mc_done_fn *done = t->done;
    void *dctx = t->ctx;
    tramp_put(t->owner, t); /* first, so done may queue again at once */
    done(dctx, (enum pol_mc_status)st, v, len);
}

typedef int queue_fn(struct eng_mc *c, struct mc_tramp *t, const void *arg);

/* Takes a trampoline, queues through q, gives it back when the client refused. */
static int op_queue(struct eng_shard *sh, struct pol_mc *mc, pol_mc_done_fn *done, void *ctx,
                    queue_fn *q, const void *arg)
{
    ENG_ASSERT(done != NULL);
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < POL_MC_SHARDS_MAX);
    if (mc->shards[idx].stopping)
        return -ESHUTDOWN;
    struct mc_shard *ms = shard_of(mc, sh);
    struct mc_tramp *t = tramp_take(ms, done, ctx);
    if (!t)
        return -ENOBUFS;
    int rc = q(ms->client, t, arg);
    if (rc != 0)
        tramp_put(ms, t);
    return rc;
}

struct op_args {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    uint64_t num; /* exptime or delta */
    uint32_t timeout_ms;
};

static int q_get(struct eng_mc *c, struct mc_tramp *t, const void *arg)
{
    const struct op_args *a = arg;
    return eng_mc_get(c, a->key, a->key_len, a->timeout_ms, tramp_done, t);
}

static int q_set(struct eng_mc *c, struct mc_tramp *t, const void *arg)
{
    const struct op_args *a = arg;
    return eng_mc_set(c, a->key, a->key_len, a->value, a->value_len, (uint32_t)a->num,
                      a->timeout_ms, tramp_done, t);
}

static int q_add(struct eng_mc *c, struct mc_tramp *t, const void *arg)
{
    const struct op_args *a = arg;
    return eng_mc_add(c, a->key, a->key_len, a->value, a->value_len, (uint32_t)a->num,
                      a->timeout_ms, tramp_done, t);
}

static int q_delete(struct eng_mc *c, struct mc_tramp *t, const void *arg)
{
    const struct op_args *a = arg;
    return eng_mc_delete(c, a->key, a->key_len, a->timeout_ms, tramp_done, t);
}

static int q_incr(struct eng_mc *c, struct mc_tramp *t, const void *arg)
{
    const struct op_args *a = arg;
    return eng_mc_incr(c, a->key, a->key_len, a->num, a->timeout_ms, tramp_done, t);
}

int pol_mc_get(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx)
{
    struct op_args a = {.key = key, .key_len = key_len, .timeout_ms = timeout_ms};
    return op_queue(sh, mc, done, ctx, q_get, &a);
}

int pol_mc_set(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               const char *value, size_t value_len, uint32_t exptime_s, uint32_t timeout_ms,
               pol_mc_done_fn *done, void *ctx)
{
    struct op_args a = {key, key_len, value, value_len, exptime_s, timeout_ms};
    return op_queue(sh, mc, done, ctx, q_set, &a);
}

int pol_mc_add(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
               const char *value, size_t value_len, uint32_t exptime_s, uint32_t timeout_ms,
               pol_mc_done_fn *done, void *ctx)
{
    struct op_args a = {key, key_len, value, value_len, exptime_s, timeout_ms};
    return op_queue(sh, mc, done, ctx, q_add, &a);
}

int pol_mc_delete(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
                  uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx)
{
    struct op_args a = {.key = key, .key_len = key_len, .timeout_ms = timeout_ms};
    return op_queue(sh, mc, done, ctx, q_delete, &a);
}

int pol_mc_incr(struct eng_shard *sh, struct pol_mc *mc, const char *key, size_t key_len,
                uint64_t delta, uint32_t timeout_ms, pol_mc_done_fn *done, void *ctx)
{
    struct op_args a = {.key = key, .key_len = key_len, .num = delta, .timeout_ms = timeout_ms};
    return op_queue(sh, mc, done, ctx, q_incr, &a);
}

void pol_mc_get_stats(struct eng_shard *sh, struct pol_mc *mc, struct eng_mc_stats *out)
{
    eng_mc_get_stats(shard_of(mc, sh)->client, out);
}

bool pol_mc_same_server(struct eng_shard *sh, struct pol_mc *mc, const char *k1, size_t l1,
                        const char *k2, size_t l2)
{
    const struct eng_mc *c = shard_of(mc, sh)->client;
    return eng_mc_server_of(c, k1, l1) == eng_mc_server_of(c, k2, l2);
}
