/*
 * mc.c: the `Memcached` connection module (spec 9.2) and the plugin API over it (pol/mc.h).
 *
 * open (main thread, start-up) reads the <Connection NAME> block: `servers` (default
 * 127.0.0.1:11211; parsed once, ketama over them; host names are resolved by each shard's
 * connection when it connects, engine/mc.c, so a name that does not resolve yet starts),
 * `namespace` (prepended to every key; refused when memcached keys cannot carry it), `debug`
 * (accepted, unused). shard_start creates this connection's client on each shard
 * (engine/mc.c: the text protocol on the ring, pipelined, with timeouts, reconnects and
 * fail-fast) and a pool of completion trampolines of the client's size, so translating a
 * pol_mc_done_fn callback never allocates. Everything a shard uses is its own slot of the
 * per-shard arrays; nothing is shared between shards after start-up.
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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "eng/mc.h"
#include "mc_conn.h"
#include "metrics.h"
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

/* How often a shard publishes how many of its servers are connected (for GET /readyz). */
#define MC_READY_PROBE_MS 250u

/* One shard's client and its trampolines. */
struct mc_shard {
    struct eng_mc *client;
    struct mc_tramp *tramps;
    uint32_t free_tramp;
    bool stopping; /* inside shard_stop */
    struct eng_timer probe;  /* MC_READY_PROBE_MS: servers_up from the client's state */
    struct pol_mc *mc;
    unsigned servers_up;     /* written by the shard (relaxed), read by mc_ready anywhere */
    bool started;            /* written by the shard (relaxed): between shard_start and stop */
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

/* GET /metrics: ringpolicyd_mc_* by connection (metrics.h per-shard sources). */
enum {
    MCM_OPS,
    MCM_ROUND_TRIPS,
    MCM_ERRORS,
    MCM_DOWN,
    MCM_TIMEOUTS,
    MCM_RECONNECTS,
    MCM_CONNECT_FAILURES,
    MCM_QUEUE_DEPTH,
    MCM_QUEUE_DEPTH_MAX,
    MCM_SERVERS_UP,
    MCM_COUNT
};
static const struct pol_metrics_field mc_fields[MCM_COUNT] = {
    [MCM_OPS] = {"ringpolicyd_mc_operations_total", "Memcached operations queued.", false, false},
    [MCM_ROUND_TRIPS] = {"ringpolicyd_mc_round_trips_total",
                         "Memcached writes (round trips carrying one or more operations).", false,
                         false},
    [MCM_ERRORS] = {"ringpolicyd_mc_errors_total",
                    "Memcached operations answered with an error (ERROR, CLIENT_ERROR, "
                    "SERVER_ERROR, oversized value).",
                    false, false},
    [MCM_DOWN] = {"ringpolicyd_mc_down_total",
                  "Memcached operations failed because their server was not connected.", false,
                  false},
    [MCM_TIMEOUTS] = {"ringpolicyd_mc_timeouts_total",
                      "Memcached operations without a reply before their deadline.", false, false},
    [MCM_RECONNECTS] = {"ringpolicyd_mc_reconnects_total",
                        "Memcached connections lost (peer closed, error, timeout, protocol).",
                        false, false},
    [MCM_CONNECT_FAILURES] = {"ringpolicyd_mc_connect_failures_total",
                              "Memcached connection attempts that failed.", false, false},
    [MCM_QUEUE_DEPTH] = {"ringpolicyd_mc_queue_depth",
                         "Memcached operations queued or in flight now.", true, false},
    [MCM_QUEUE_DEPTH_MAX] = {"ringpolicyd_mc_queue_depth_max",
                             "Most memcached operations queued or in flight at once on a shard.",
                             true, true},
    [MCM_SERVERS_UP] = {"ringpolicyd_mc_connections_up",
                        "Memcached server connections established now (all shards).", true, false},
};
static const struct pol_metrics_source_desc mc_metrics = {"connection", mc_fields, MCM_COUNT};

static void mc_snap(void *ctx, uint64_t *v)
{
    const struct mc_shard *ms = ctx;
    struct eng_mc_stats st;
    if (!ms->client)
        return;
    eng_mc_get_stats(ms->client, &st);
    v[MCM_OPS] = st.ops;
    v[MCM_ROUND_TRIPS] = st.writes;
    v[MCM_ERRORS] = st.status[ENG_MC_ERROR];
    v[MCM_DOWN] = st.status[ENG_MC_DOWN];
    v[MCM_TIMEOUTS] = st.status[ENG_MC_TIMEOUT];
    v[MCM_RECONNECTS] = st.resets;
    v[MCM_CONNECT_FAILURES] = st.connect_failures;
    v[MCM_QUEUE_DEPTH] = st.queue_depth;
    v[MCM_QUEUE_DEPTH_MAX] = st.queue_depth_max;
    v[MCM_SERVERS_UP] = ms->servers_up;
}

/* Servers of this shard's client connected now, published for mc_ready. */
static void probe_update(struct mc_shard *ms)
{
    unsigned up = 0, n = eng_mc_servers_count(ms->mc->servers);
    for (unsigned i = 0; ms->client && i < n; i++)
        up += eng_mc_server_up(ms->client, i) ? 1u : 0u;
    __atomic_store_n(&ms->servers_up, up, __ATOMIC_RELAXED);
}

static void probe_fired(struct eng_shard *sh, struct eng_timer *t)
{
    struct mc_shard *ms = (struct mc_shard *)(void *)((char *)t - offsetof(struct mc_shard, probe));
    probe_update(ms);
    eng_timer_arm(sh, t, MC_READY_PROBE_MS);
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
    ms->mc = mc;
    eng_timer_init(&ms->probe, probe_fired);
    probe_update(ms);
    eng_timer_arm(sh, &ms->probe, MC_READY_PROBE_MS);
    __atomic_store_n(&ms->started, true, __ATOMIC_RELAXED);
    if (pol_metrics_source_add(&mc_metrics, mc->name, mc_snap, ms) != 0)
        eng_log(ENG_LOG_WARNING, "connection %s: no room for its metrics on shard %u", mc->name,
                idx);
    return 0;
}

static void mc_shard_stop(struct pol_conn_def *def, struct eng_shard *sh)
{
    struct pol_mc *mc = def->impl;
    struct mc_shard *ms = &mc->shards[eng_shard_index(sh)];
    pol_metrics_source_remove(ms);
    __atomic_store_n(&ms->started, false, __ATOMIC_RELAXED);
    __atomic_store_n(&ms->servers_up, 0u, __ATOMIC_RELAXED);
    eng_timer_cancel(sh, &ms->probe);
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

/* GET /readyz: ready when a running shard has at least one server connected (as its probe
 * timer last saw, at most MC_READY_PROBE_MS ago). Any thread; relaxed loads only. */
static int mc_ready(const struct pol_conn_def *def, char *why, size_t why_len)
{
    const struct pol_mc *mc = def->impl;
    unsigned running = 0;
    for (unsigned i = 0; i < POL_MC_SHARDS_MAX; i++) {
        if (!__atomic_load_n(&mc->shards[i].started, __ATOMIC_RELAXED))
            continue;
        running++;
        if (__atomic_load_n(&mc->shards[i].servers_up, __ATOMIC_RELAXED) > 0)
            return 0;
    }
    snprintf(why, why_len, running ? "no memcached server connected (%u configured)"
                                   : "not started on any shard (%u servers configured)",
             eng_mc_servers_count(mc->servers));
    return -1;
}

const struct pol_conn_ops pol_conn_Memcached = {
    .module = "Memcached",
    .open = mc_open,
    .shard_start = mc_shard_start,
    .shard_stop = mc_shard_stop,
    .close = mc_close,
    .ready = mc_ready,
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
