/*
 * reload.c: hot reload (see reload.h): load and check a new configuration on the main thread,
 * then prepare, switch and retire generations on the shards with eng_run_on_shards.
 *
 * Owns nothing beyond a call: the servers belong to the caller, the per-shard generations to
 * exec.c. Runs on the engine's signal thread (daemon.c's on_signal), which blocks for the
 * reload's duration, at most wait_ms plus the shards' start/stop work; SIGTERM waits that long.
 * Failures are operational: a configuration that does not load, a plugin or connection that
 * does not start on a shard, or too many generations still retiring; each leaves the running
 * configuration in place with one sentence in err.
 */
#include "reload.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "exec.h"
#include "server.h"

#define RELOAD_POLL_MS 10u

/* ---------------------------------------------------------------------------------------------
 * Loading and checking (main thread)
 */

static bool str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

/* Options only a restart can change: numbers keep the running value in the new server (the
 * shards read some of them); texts are used from the daemon's start-up copies anyway. */
static int restart_only(const struct pol_server *cur, struct pol_server *n, const char *path,
                        char *err, size_t err_len)
{
    const struct pol_globals *o = &cur->g;
    struct pol_globals *g = &n->g;
    static const struct {
        const char *name;
        size_t off;
    } nums[] = {
#define N(f) {#f, offsetof(struct pol_globals, f)}
        N(max_connections), N(max_request_bytes), N(max_line_bytes),  N(max_attributes),
        N(max_pipelined_bytes), N(drain_timeout_s), N(shards), N(dns_cache_entries),
        N(dns_cache_bytes),
#undef N
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        const char *op = (const char *)o + nums[i].off;
        char *np = (char *)g + nums[i].off;
        size_t sz = strcmp(nums[i].name, "shards") == 0 ? sizeof(unsigned) : sizeof(uint32_t);
        if (memcmp(op, np, sz) != 0) {
            eng_log(ENG_LOG_NOTICE, "reload: %s: %s changes only with a restart; keeping the "
                                    "running value",
                    path, nums[i].name);
            memcpy(np, op, sz);
        }
    }
    if (g->backend != o->backend || g->log_level != o->log_level) {
        eng_log(ENG_LOG_NOTICE,
                "reload: %s: backend and log_level change only with a restart; keeping the "
                "running values",
                path);
        g->backend = o->backend;
        g->log_level = o->log_level;
    }
    static const struct {
        const char *name;
        size_t off;
    } texts[] = {
#define T(f) {#f, offsetof(struct pol_globals, f)}
        T(user),            T(group),        T(pid_file),     T(chroot),
        T(log_file),        T(syslog_ident), T(syslog_facility), T(error_action),
        T(dns_servers),
#undef T
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *a = *(const char *const *)((const char *)o + texts[i].off);
        const char *b = *(const char *const *)((const char *)g + texts[i].off);
        if (str_differs(a, b))
            eng_log(ENG_LOG_NOTICE,
                    "reload: %s: %s changes only with a restart; keeping \"%s\"", path,
                    texts[i].name, a ? a : "");
    }
    const struct pol_scache_config *os = &cur->scache;
    struct pol_scache_config *ns = &n->scache;
    if (os->kind == POL_SCACHE_MEMCACHED && ns->kind == POL_SCACHE_MEMCACHED)
        return 0; /* sessions live in memcached: the new generation's cache (opened on its own
                     connections, with its options) takes over; each server closes its own */
    if (os->kind == POL_SCACHE_MEMCACHED || ns->kind == POL_SCACHE_MEMCACHED) {
        pol_errf(err, err_len, ns->file ? ns->file : path, ns->file ? ns->line : 0,
                 "the <SessionCache> module changes between Memcached and %s only with a "
                 "restart",
                 os->kind == POL_SCACHE_MEMCACHED ? "another module" : "Memory or None");
        return -1;
    }
    /* Redis: the same as Memcached (its own cache on the new generation's connections). */
    if (os->kind == POL_SCACHE_REDIS && ns->kind == POL_SCACHE_REDIS)
        return 0;
    if (os->kind == POL_SCACHE_REDIS || ns->kind == POL_SCACHE_REDIS) {
        pol_errf(err, err_len, ns->file ? ns->file : path, ns->file ? ns->line : 0,
                 "the <SessionCache> module changes between Redis and %s only with a restart",
                 os->kind == POL_SCACHE_REDIS ? "another module" : "Memory or None");
        return -1;
    }
    if (os->kind != ns->kind || os->expire_s != ns->expire_s ||
        os->sessions_max != ns->sessions_max || os->session_bytes_max != ns->session_bytes_max ||
        os->memory_bytes != ns->memory_bytes)
        eng_log(ENG_LOG_NOTICE,
                "reload: %s: the <SessionCache> block changes only with a restart; keeping the "
                "running session cache",
                path);
    const char *file = ns->file;
    unsigned line = ns->line;
    *ns = *os;
    ns->file = file; /* texts of the new tree; the old one is freed later */
    ns->line = line;
    return 0;
}

int pol_reload_load(const char *path, const struct pol_server *cur, const char *const *keys,
                    size_t key_count, struct pol_server **out, char *err, size_t err_len)
{
    struct pol_server *n = NULL;
    if (pol_server_load(path, &n, err, err_len) != 0)
        return -1;
    for (size_t i = 0; i < key_count; i++) {
        if (pol_server_vhost_by_key(n, keys[i]))
            continue;
        const struct pol_cfg_node *root = pol_cfg_root(n->cfg);
        pol_errf(err, err_len, root->file, 0,
                 "no <VirtualHost %s> for the running listener on port %s (listeners change "
                 "only with a restart)",
                 keys[i], keys[i]);
        pol_server_free(n);
        return -1;
    }
    for (uint32_t i = 0; i < n->warning_count; i++)
        eng_log(ENG_LOG_NOTICE, "%s", n->warnings[i]);
    if (restart_only(cur, n, path, err, err_len) != 0) {
        pol_server_free(n);
        return -1;
    }
    *out = n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Shards (through eng_run_on_shards)
 */

struct step {
    pol_reload_shard_fn *shard_of;
    const struct pol_server *srv;
    atomic_uint failed;
    atomic_ullong inflight;
    pthread_mutex_t lock; /* err */
    char err[POL_ERR_MAX];
};

static void on_prepare(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    struct step *s = ctx;
    char why[POL_ERR_MAX];
    if (pol_shard_gen_prepare(s->shard_of(app), s->srv, why, sizeof(why)) == 0)
        return;
    pthread_mutex_lock(&s->lock);
    if (atomic_fetch_add(&s->failed, 1) == 0)
        snprintf(s->err, sizeof(s->err), "%s", why);
    pthread_mutex_unlock(&s->lock);
}

static void on_drop(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    pol_shard_gen_drop(((struct step *)ctx)->shard_of(app));
}

static void on_switch(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    struct step *s = ctx;
    /* Cannot fail here: apply checked that every shard has room for one more old one. */
    int rc = pol_shard_gen_switch(s->shard_of(app));
    ENG_ASSERT(rc == 0);
}

static void on_count(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    struct step *s = ctx;
    atomic_fetch_add(&s->inflight, pol_shard_gen_inflight(s->shard_of(app), s->srv));
}

static void on_room(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    struct step *s = ctx;
    if (s->shard_of(app)->old_count >= POL_SHARD_OLD_GENS_MAX)
        atomic_fetch_add(&s->failed, 1);
}

static void on_retire(struct eng_shard *sh, void *app, void *ctx)
{
    (void)sh;
    struct step *s = ctx;
    pol_shard_gen_retire(s->shard_of(app), s->srv);
}

static void step_init(struct step *s, pol_reload_shard_fn *shard_of, const struct pol_server *srv)
{
    memset(s, 0, sizeof(*s));
    s->shard_of = shard_of;
    s->srv = srv;
    pthread_mutex_init(&s->lock, NULL);
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int pol_reload_retire(struct eng *e, pol_reload_shard_fn *shard_of, const struct pol_server *old,
                      uint32_t wait_ms)
{
    struct step s;
    step_init(&s, shard_of, old);
    for (uint32_t waited = 0;; waited += RELOAD_POLL_MS) {
        atomic_store(&s.inflight, 0);
        /* A shard that already exited (the daemon is stopping) cannot be asked: keep old, the
         * daemon frees it after every shard ended. */
        int rc = eng_run_on_shards(e, on_count, &s);
        if (rc == 0 && atomic_load(&s.inflight) == 0)
            break;
        if (rc != 0 || waited >= wait_ms) {
            pthread_mutex_destroy(&s.lock);
            return -EBUSY;
        }
        sleep_ms(RELOAD_POLL_MS);
    }
    eng_run_on_shards(e, on_retire, &s);
    pthread_mutex_destroy(&s.lock);
    return 0;
}

enum pol_reload_result pol_reload_apply(struct eng *e, pol_reload_shard_fn *shard_of,
                                        const struct pol_server *old,
                                        const struct pol_server *next, uint32_t wait_ms,
                                        char *err, size_t err_len)
{
    struct step s;
    step_init(&s, shard_of, next);
    eng_run_on_shards(e, on_room, &s);
    if (atomic_load(&s.failed) > 0) {
        snprintf(err, err_len, "%u older configurations are still finishing requests; try "
                               "again later",
                 POL_SHARD_OLD_GENS_MAX);
        pthread_mutex_destroy(&s.lock);
        return POL_RELOAD_FAILED;
    }
    int rc = eng_run_on_shards(e, on_prepare, &s);
    if (rc != 0 || atomic_load(&s.failed) > 0) {
        eng_run_on_shards(e, on_drop, &s);
        snprintf(err, err_len, "%s", rc != 0 ? strerror(-rc) : s.err);
        pthread_mutex_destroy(&s.lock);
        return POL_RELOAD_FAILED;
    }
    rc = eng_run_on_shards(e, on_switch, &s);
    pthread_mutex_destroy(&s.lock);
    if (rc != 0) /* stopping: some shards exited before switching; both stay until the end */
        return POL_RELOAD_PENDING;
    return pol_reload_retire(e, shard_of, old, wait_ms) == 0 ? POL_RELOAD_RETIRED
                                                             : POL_RELOAD_PENDING;
}
