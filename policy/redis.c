/*
 * redis.c: the `Redis` connection module (spec 9.3; redis_conn.h).
 *
 * open (main thread, start-up) reads the <Connection NAME> block: server (a name is resolved by
 * the engine's client at every connection attempt, off the shard), sock, password, db, debug,
 * and sentinels + service (Redis Sentinel: the client asks them, in turn, for the master at
 * every connection attempt; their names are resolved likewise).
 * shard_start creates this connection's client on each shard (engine/redis.c); shard_stop
 * destroys it (what is still out completes with ENG_REDIS_DOWN). Everything a shard uses is its
 * own slot of the per-shard array; nothing is shared between shards after start-up.
 *
 * Failures: open fails start-up with a sentence (the caller adds file:line); commands report
 * through done or refuse with -errno (eng/redis.h).
 */
#include "redis_conn.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "metrics.h"
#include "server.h"

#define POL_REDIS_SHARDS_MAX 1024u /* as many as the engine allows (ENG_SHARDS_MAX) */
#define POL_REDIS_SERVER_DEFAULT "127.0.0.1:6379"
#define POL_REDIS_HOST_BYTES 256
/* How often a shard publishes whether its connection is up (for GET /readyz). */
#define POL_REDIS_READY_PROBE_MS 250u

struct pol_redis;

/* One shard's client. */
struct redis_shard {
    struct eng_redis *client;
    struct pol_redis *rc;
    struct eng_timer probe; /* POL_REDIS_READY_PROBE_MS: up from the client's state */
    bool up;                /* written by the shard (relaxed), read by redis_ready anywhere */
    bool started;           /* written by the shard (relaxed): between shard_start and stop */
};

struct pol_redis {
    char *name;
    char host[POL_REDIS_HOST_BYTES]; /* numeric, or a name resolved per connection attempt */
    char *sock, *password, *service;
    char sentinel_host[ENG_REDIS_SENTINELS_MAX][POL_REDIS_HOST_BYTES]; /* as written */
    struct eng_redis_addr sentinels[ENG_REDIS_SENTINELS_MAX];
    struct eng_redis_config cfg;
    struct redis_shard shards[POL_REDIS_SHARDS_MAX];
};

/* Per-shard metrics (policy/metrics.h), labelled by connection name. */
enum {
    RM_COMMANDS,
    RM_ERRORS,
    RM_DOWN,
    RM_TIMEOUTS,
    RM_RECONNECTS,
    RM_CONNECT_FAILURES,
    RM_QUEUE_DEPTH,
    RM_QUEUE_DEPTH_MAX,
    RM_UP,
    RM_COUNT
};

static const struct pol_metrics_field redis_fields[RM_COUNT] = {
    [RM_COMMANDS] = {"ringpolicyd_redis_commands_total", "Redis commands queued.", false, false},
    [RM_ERRORS] = {"ringpolicyd_redis_errors_total", "Redis commands answered with an error.",
                   false, false},
    [RM_DOWN] = {"ringpolicyd_redis_down_total",
                 "Redis commands failed because the connection was down or broke.", false, false},
    [RM_TIMEOUTS] = {"ringpolicyd_redis_timeouts_total",
                     "Redis commands without a reply before their deadline.", false, false},
    [RM_RECONNECTS] = {"ringpolicyd_redis_reconnects_total",
                       "Redis connections lost (peer closed, error, timeout, AUTH/SELECT).", false,
                       false},
    [RM_CONNECT_FAILURES] = {"ringpolicyd_redis_connect_failures_total",
                             "Redis connection attempts that failed.", false, false},
    [RM_QUEUE_DEPTH] = {"ringpolicyd_redis_queue_depth",
                        "Redis commands queued or in flight now.", true, false},
    [RM_QUEUE_DEPTH_MAX] = {"ringpolicyd_redis_queue_depth_max",
                            "Most Redis commands queued or in flight at once on a shard.", true,
                            true},
    [RM_UP] = {"ringpolicyd_redis_connections_up",
               "Redis connections established now (all shards).", true, false},
};
static const struct pol_metrics_source_desc redis_metrics = {"connection", redis_fields, RM_COUNT};

static void redis_snap(void *ctx, uint64_t *v)
{
    const struct redis_shard *rs = ctx;
    struct eng_redis_stats st;
    if (!rs->client)
        return;
    eng_redis_get_stats(rs->client, &st);
    v[RM_COMMANDS] = st.commands;
    v[RM_ERRORS] = st.status[ENG_REDIS_ERROR];
    v[RM_DOWN] = st.status[ENG_REDIS_DOWN];
    v[RM_TIMEOUTS] = st.status[ENG_REDIS_TIMEOUT];
    v[RM_RECONNECTS] = st.resets;
    v[RM_CONNECT_FAILURES] = st.connect_failures;
    v[RM_QUEUE_DEPTH] = st.queue_depth;
    v[RM_QUEUE_DEPTH_MAX] = st.queue_depth_max;
    v[RM_UP] = eng_redis_up(rs->client) ? 1 : 0;
}

static void probe_fired(struct eng_shard *sh, struct eng_timer *t)
{
    struct redis_shard *rs =
        (struct redis_shard *)(void *)((char *)t - offsetof(struct redis_shard, probe));
    __atomic_store_n(&rs->up, rs->client && eng_redis_up(rs->client), __ATOMIC_RELAXED);
    eng_timer_arm(sh, t, POL_REDIS_READY_PROBE_MS);
}

static const char *opt_text(const struct pol_cfg_node *b, const char *name, const char *dflt)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    return o && o->value ? o->value : dflt;
}

/* "host:port", "[v6]:port" or "host" (port dflt_port) → the host as written and a port. 0 or
 * -1 with a sentence. */
static int server_parse(const char *text, char *host, size_t host_len, uint16_t *port,
                        long dflt_port, char *err, size_t err_len)
{
    char h[POL_REDIS_HOST_BYTES];
    const char *p = NULL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (close[1] && close[1] != ':') || (size_t)(close - text - 1) >= sizeof(h)) {
            snprintf(err, err_len, "bad redis server '%s' (host:port)", text);
            return -1;
        }
        memcpy(h, text + 1, (size_t)(close - text - 1));
        h[close - text - 1] = '\0';
        p = close[1] ? close + 2 : NULL;
    } else {
        const char *colon = strrchr(text, ':');
        bool v6 = colon && strchr(text, ':') != colon; /* a bare IPv6 address */
        size_t n = colon && !v6 ? (size_t)(colon - text) : strlen(text);
        if (n >= sizeof(h)) {
            snprintf(err, err_len, "bad redis server '%s' (host:port)", text);
            return -1;
        }
        memcpy(h, text, n);
        h[n] = '\0';
        p = colon && !v6 ? colon + 1 : NULL;
    }
    long pn = dflt_port;
    if (p) {
        char *end = NULL;
        errno = 0;
        pn = strtol(p, &end, 10);
        if (!*p || *end || errno || pn <= 0 || pn > 65535) {
            snprintf(err, err_len, "bad port in redis server '%s'", text);
            return -1;
        }
    }
    if (!h[0]) {
        snprintf(err, err_len, "bad redis server '%s' (host:port)", text);
        return -1;
    }
    /* A name is kept as written: the engine's client resolves it at every connection attempt,
     * off the shard, so a name that does not resolve yet does not refuse start. */
    if (strlen(h) >= host_len || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789.-_:%") != strlen(h)) {
        snprintf(err, err_len, "bad host in redis server '%s'", text);
        return -1;
    }
    memcpy(host, h, strlen(h) + 1);
    *port = (uint16_t)pn;
    return 0;
}

static void redis_free(struct pol_redis *rc)
{
    if (!rc)
        return;
    free(rc->name);
    free(rc->sock);
    free(rc->password);
    free(rc->service);
    free(rc);
}

/* sentinels = "host:port, host:port ..." (2.05 splits only where a space precedes the comma, a
 * defect, spec 9.3; here commas and blanks separate). Each is resolved now to a numeric
 * address (default port 26379). 0 or -1 with a sentence. */
static int sentinels_parse(struct pol_redis *rc, const char *text, const char *service,
                           char *err, size_t err_len)
{
    char item[POL_REDIS_HOST_BYTES];
    uint32_t n = 0;
    for (const char *p = text; *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (len == 0)
            break;
        if (n == ENG_REDIS_SENTINELS_MAX) {
            snprintf(err, err_len, "more than %u sentinels", ENG_REDIS_SENTINELS_MAX);
            return -1;
        }
        if (len >= sizeof(item)) {
            snprintf(err, err_len, "bad sentinel '%.*s' (host:port)", (int)len, p);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (server_parse(item, rc->sentinel_host[n], sizeof(rc->sentinel_host[n]),
                         &rc->sentinels[n].port, 26379, err, err_len) != 0)
            return -1;
        rc->sentinels[n].host = rc->sentinel_host[n];
        n++;
        p += len;
    }
    if (n == 0) {
        snprintf(err, err_len, "sentinels names no address");
        return -1;
    }
    if (!(rc->service = strdup(service))) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    rc->cfg.sentinels = rc->sentinels;
    rc->cfg.sentinel_count = n;
    rc->cfg.service = rc->service;
    return 0;
}

static int db_parse(const char *text, uint32_t *out, char *err, size_t err_len)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < 0 || v > INT_MAX) {
        snprintf(err, err_len, "db must be a database number (0, 1, ...), not '%s'", text);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int redis_open(struct pol_server *s, struct pol_conn_def *def, char *err, size_t err_len)
{
    (void)s;
    const struct pol_cfg_node *b = def->block;
    struct pol_redis *rc = calloc(1, sizeof(*rc));
    if (!rc || !(rc->name = strdup(def->name))) {
        snprintf(err, err_len, "out of memory");
        redis_free(rc);
        return -1;
    }
    eng_redis_config_defaults(&rc->cfg);
    const char *sock = opt_text(b, "sock", NULL), *pw = opt_text(b, "password", NULL);
    const char *sentinels = opt_text(b, "sentinels", NULL), *service = opt_text(b, "service", "");
    if (sentinels && service[0]) { /* first, as in 2.05: then server and sock are unused */
        if (sentinels_parse(rc, sentinels, service, err, err_len) != 0) {
            redis_free(rc);
            return -1;
        }
        sock = NULL;
    } else if (sock) {
        if (!*sock || strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, err_len, "sock must be a Unix socket path of at most %zu bytes",
                     sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
            redis_free(rc);
            return -1;
        }
    } else if (server_parse(opt_text(b, "server", POL_REDIS_SERVER_DEFAULT), rc->host,
                            sizeof(rc->host), &rc->cfg.port, 6379, err, err_len) != 0) {
        redis_free(rc);
        return -1;
    }
    if (db_parse(opt_text(b, "db", "0"), &rc->cfg.db, err, err_len) != 0) {
        redis_free(rc);
        return -1;
    }
    if ((sock && !(rc->sock = strdup(sock))) || (pw && !(rc->password = strdup(pw)))) {
        snprintf(err, err_len, "out of memory");
        redis_free(rc);
        return -1;
    }
    rc->cfg.name = rc->name;
    rc->cfg.host = rc->sock || rc->cfg.sentinel_count ? NULL : rc->host;
    rc->cfg.unix_path = rc->sock;
    rc->cfg.password = rc->password;
    def->impl = rc;
    return 0;
}

static int redis_shard_start(struct pol_conn_def *def, struct eng_shard *sh, char *err,
                             size_t err_len)
{
    struct pol_redis *rc = def->impl;
    unsigned idx = eng_shard_index(sh);
    if (idx >= POL_REDIS_SHARDS_MAX) {
        snprintf(err, err_len, "more than %u shards", POL_REDIS_SHARDS_MAX);
        return -1;
    }
    struct redis_shard *rs = &rc->shards[idx];
    ENG_ASSERT(rs->client == NULL);
    int r = eng_redis_create(sh, &rc->cfg, &rs->client);
    if (r != 0) {
        snprintf(err, err_len, "cannot create the redis client: %s", strerror(-r));
        return -1;
    }
    rs->rc = rc;
    eng_timer_init(&rs->probe, probe_fired);
    eng_timer_arm(sh, &rs->probe, POL_REDIS_READY_PROBE_MS);
    __atomic_store_n(&rs->started, true, __ATOMIC_RELAXED);
    if (pol_metrics_source_add(&redis_metrics, rc->name, redis_snap, rs) != 0)
        eng_log(ENG_LOG_WARNING, "connection %s: no room for its metrics on shard %u", rc->name,
                idx);
    return 0;
}

static void redis_shard_stop(struct pol_conn_def *def, struct eng_shard *sh)
{
    struct pol_redis *rc = def->impl;
    struct redis_shard *rs = &rc->shards[eng_shard_index(sh)];
    pol_metrics_source_remove(rs);
    __atomic_store_n(&rs->started, false, __ATOMIC_RELAXED);
    __atomic_store_n(&rs->up, false, __ATOMIC_RELAXED);
    eng_timer_cancel(sh, &rs->probe);
    eng_redis_destroy(rs->client);
    rs->client = NULL;
}

static void redis_close(struct pol_conn_def *def)
{
    redis_free(def->impl);
}

/* GET /readyz: ready when a running shard has its connection up (as its probe timer last saw,
 * at most POL_REDIS_READY_PROBE_MS ago). Any thread; relaxed loads only. */
static int redis_ready(const struct pol_conn_def *def, char *why, size_t why_len)
{
    const struct pol_redis *rc = def->impl;
    unsigned running = 0;
    for (unsigned i = 0; i < POL_REDIS_SHARDS_MAX; i++) {
        if (!__atomic_load_n(&rc->shards[i].started, __ATOMIC_RELAXED))
            continue;
        running++;
        if (__atomic_load_n(&rc->shards[i].up, __ATOMIC_RELAXED))
            return 0;
    }
    snprintf(why, why_len, running ? "redis not connected" : "not started on any shard");
    return -1;
}

const struct pol_conn_ops pol_conn_Redis = {
    .module = "Redis",
    .open = redis_open,
    .shard_start = redis_shard_start,
    .shard_stop = redis_shard_stop,
    .close = redis_close,
    .ready = redis_ready,
};

struct pol_redis *pol_redis_of_server(const struct pol_server *s, const char *name)
{
    const struct pol_conn_def *d = pol_server_conn(s, name);
    return d && strcmp(d->module, "Redis") == 0 ? d->impl : NULL;
}

struct pol_redis *pol_redis_lookup(struct pol_plugin *p, const char *name, char *err,
                                   size_t err_len)
{
    const struct pol_conn_def *d = pol_server_conn(p->srv, name);
    if (!d) {
        snprintf(err, err_len, "no connection %s configured!", name);
        return NULL;
    }
    if (strcmp(d->module, "Redis") != 0 || !d->impl) {
        snprintf(err, err_len, "connection %s is not a Redis connection", name);
        return NULL;
    }
    return d->impl;
}

const char *pol_redis_name(const struct pol_redis *rc)
{
    return rc->name;
}

static struct eng_redis *client_of(struct pol_redis *rc, struct eng_shard *sh)
{
    unsigned idx = eng_shard_index(sh);
    ENG_ASSERT(idx < POL_REDIS_SHARDS_MAX);
    return rc->shards[idx].client;
}

int pol_redis_command(struct eng_shard *sh, struct pol_redis *rc, int argc,
                      const char *const *argv, const size_t *argv_len, uint32_t timeout_ms,
                      eng_redis_done_fn *done, void *ctx)
{
    struct eng_redis *c = client_of(rc, sh);
    if (!c)
        return -ESHUTDOWN; /* not started on this shard, or stopped */
    return eng_redis_command(c, argc, argv, argv_len, timeout_ms, done, ctx);
}

void pol_redis_get_stats(struct eng_shard *sh, struct pol_redis *rc, struct eng_redis_stats *out)
{
    struct eng_redis *c = client_of(rc, sh);
    if (c)
        eng_redis_get_stats(c, out);
    else
        memset(out, 0, sizeof(*out));
}
