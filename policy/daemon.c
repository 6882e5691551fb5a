/*
 * daemon.c: the composition root (see daemon.h): the engine's application callbacks for the
 * policy protocol, and the start-up sequence.
 *
 * Per connection (spec 7.1): wait for a whole request under keepalive_timeout (0: forever),
 * pause the connection, hand the request to the shard owning its session, answer (or close
 * without reply on a failure, as 2.05 does, unless error_action is set), log the result line,
 * resume, until max_keepalive requests were answered. One request at a time per connection;
 * pipelined requests wait staged in the engine.
 *
 * Threads: the callbacks run on shard threads, each with its own struct dshard; requests cross
 * shards only as eng_xmsg messages (to the owner to process, back home to answer and to
 * release), so no data is shared between shard threads. Owns the engine, the configuration and
 * every shard's policy state. Running out of requests or arenas sheds that request (error_action
 * or close), counted and logged at most once a second per shard.
 */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "allow.h"
#include "eng/assert.h"
#include "eng/engine.h"
#include "eng/http.h"
#include "eng/log.h"
#include "eng/proc.h"
#include "exec.h"
#include "listen.h"
#include "metrics.h"
#include "reload.h"
#include "ringpolicyd_config.h"
#include "server.h"

/* HTTP listeners (http_port) carry this bit in their tag; policy listeners carry their index
 * into keys. */
#define DAEMON_HTTP_TAG 0x80000000u
/* Policy listener keys over the process's life (reloads add listeners, never reuse a key slot:
 * connections of a removed listener still name theirs), and listeners the engine holds. */
#define DAEMON_KEYS_CAP (POL_LISTEN_MAX + ENG_LISTEN_ADDED_MAX)
#define DAEMON_LISTENERS_CAP (2u * POL_LISTEN_MAX + ENG_LISTEN_ADDED_MAX)
/* Response buffer of the HTTP listener: the /metrics page must fit it (a scrape that does not
 * gets a 500, counted); the engine's per-connection send queue is raised to hold it. */
#define DAEMON_HTTP_BODY_BYTES (128u << 10)
/* How often a shard copies its plain counters (requests, session cache) for scrapes. */
#define DAEMON_SNAPSHOT_MS 1000u

struct daemon {
    struct pol_server *srv; /* the configuration new requests use (main thread's view) */
    const char *config_path;
    struct eng *eng;
    struct eng_listen *listens; /* at start: policy listeners first, then the HTTP ones */
    char (*keys)[sizeof(((struct eng_listen *)0)->path)]; /* per policy tag: PORT / vhost key;
                                   DAEMON_KEYS_CAP slots, written before the listener exists */
    size_t listen_count;        /* policy listeners at start */
    size_t http_listen_count;   /* HTTP listeners at start */
    size_t keys_count;          /* policy tags given out (main thread) */
    struct dlisten *all;        /* by engine listener index (DAEMON_LISTENERS_CAP) */
    size_t all_count;
    struct eng_http *http;
    struct eng_http_shard *_Atomic *http_shards; /* per shard; freed after eng_run */
    unsigned shard_count;
    atomic_uint shards_started;
    struct pol_server *retiring[POL_SHARD_OLD_GENS_MAX]; /* replaced, still finishing requests */
    uint32_t retiring_count;
    uint32_t requests_max;
    struct pol_proto_limits limits;
    char *error_reply; /* "action=ERROR_ACTION\n\n", NULL: close without reply */
    size_t error_reply_len;
};

/* A listener the engine holds, by its engine index (reload adds and removes them). */
struct dlisten {
    struct eng_listen eng; /* its address and tag */
    bool http;
    bool active; /* not removed */
};

struct dshard {
    struct daemon *d;
    struct eng_shard *sh;
    struct pol_shard ps; /* ps.srv: the configuration this shard gives new requests */
    struct eng_http_shard *hs;
    struct eng_timer snapshot;
    struct pol_proto_attr *attrs; /* parser scratch, max_attributes */
    uint64_t shed_logged_ms;
};

struct dconn {
    struct dshard *ds;
    struct eng_conn *c;
    bool is_http;
    struct eng_http_conn http;
    struct eng_timer keepalive;
    struct pol_proto_parser parser;
    uint32_t served;
    bool busy;    /* a request is being processed: the connection is paused */
    bool closing; /* we close it: no "closed by peer" line */
};

/* ---------------------------------------------------------------------------------------------
 * Connections (home shard)
 */

static const char *port_of(const struct dconn *dc)
{
    uint32_t tag = eng_conn_listener_tag(dc->c);
    ENG_ASSERT(tag < DAEMON_KEYS_CAP);
    return dc->ds->d->keys[tag];
}

static void conn_close(struct dconn *dc)
{
    dc->closing = true;
    eng_conn_close(dc->c);
}

static void keepalive_arm(struct dconn *dc)
{
    uint32_t s = dc->ds->ps.srv->g.keepalive_timeout_s;
    if (s > 0)
        eng_timer_arm(dc->ds->sh, &dc->keepalive, (uint64_t)s * 1000u);
}

static void keepalive_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct dconn *dc = (struct dconn *)(void *)((char *)t - offsetof(struct dconn, keepalive));
    eng_log(ENG_LOG_INFO, "[%s]: keepalive timeout: closing connection", port_of(dc));
    conn_close(dc);
}

static int d_open(void *app, struct eng_conn *c)
{
    struct dshard *ds = app;
    struct dconn *dc = eng_conn_app(c);
    dc->ds = ds;
    dc->c = c;
    if (eng_conn_listener_tag(c) & DAEMON_HTTP_TAG) {
        dc->is_http = true;
        eng_http_conn_open(ds->hs, &dc->http, c);
        return 0;
    }
    socklen_t peer_len = 0;
    const struct sockaddr *peer = eng_conn_peer(c, &peer_len);
    if (pol_allow_refused(&ds->ps.srv->g.allow, peer, peer_len, port_of(dc), eng_now_ms(ds->sh)))
        return -EACCES; /* allow (allow.h): closed at accept, counted, logged once a second */
    pol_proto_parser_init(&dc->parser, &ds->d->limits);
    eng_timer_init(&dc->keepalive, keepalive_fired);
    keepalive_arm(dc);
    if (eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "accepted connection on port %s", port_of(dc));
    return 0;
}

static void d_close(void *app, struct eng_conn *c, enum eng_close_reason reason)
{
    struct dshard *ds = app;
    struct dconn *dc = eng_conn_app(c);
    if (dc->is_http) {
        eng_http_conn_closed(&dc->http);
        return;
    }
    eng_timer_cancel(ds->sh, &dc->keepalive);
    const char *port = port_of(dc);
    if (!dc->closing) {
        switch (reason) {
        case ENG_CLOSE_PEER:
        case ENG_CLOSE_RESET:
            eng_log(ENG_LOG_INFO, "[%s]: connection closed by peer", port);
            break;
        case ENG_CLOSE_OVERSIZE:
            eng_log(ENG_LOG_ERR, "[%s]: error while reading request: request too large", port);
            break;
        case ENG_CLOSE_NOMEM:
            eng_log(ENG_LOG_ERR, "[%s]: error while reading request: out of buffers", port);
            break;
        case ENG_CLOSE_ERROR:
            eng_log(ENG_LOG_ERR, "[%s]: error while reading request: socket error", port);
            break;
        default:
            break;
        }
    }
    eng_log(ENG_LOG_INFO, "[%s]: closing connection", port);
}

/* After an answer was queued: the next request, or the end at max_keepalive. */
static void conn_next(struct dconn *dc)
{
    uint32_t max = dc->ds->ps.srv->g.max_keepalive;
    dc->busy = false;
    dc->served++;
    if (max > 0 && dc->served >= max) {
        conn_close(dc);
        return;
    }
    eng_conn_resume(dc->c);
    keepalive_arm(dc);
}

/* No reply was produced: send error_action, or close without reply (2.05). */
static void conn_error_answer(struct dconn *dc)
{
    const struct daemon *d = dc->ds->d;
    if (d->error_reply && eng_conn_send(dc->c, d->error_reply, d->error_reply_len) == 0) {
        conn_next(dc);
        return;
    }
    conn_close(dc);
}

/* The reply's first action text (after "action="), for the action-word label. */
static const char *first_action(const struct pol_req *r, size_t *len)
{
    const char *a = r->result_text ? r->result_text : "";
    size_t n = r->result_text ? r->result_len : 0;
    const char *comma = memchr(a, ',', n);
    *len = comma ? (size_t)(comma - a) : n;
    return a;
}

static void answer(struct dconn *dc, struct pol_req *r)
{
    /* One clock read per answer, only when someone uses it (metrics or the result line). */
    bool logged = eng_log_enabled(ENG_LOG_WARNING);
    uint64_t now_us = logged || pol_metrics_enabled() ? pol_exec_now_us() : 0;
    uint64_t lat_us = now_us > r->start_us ? now_us - r->start_us : 0;
    if (r->outcome == POL_OUT_REPLY) {
        size_t al = 0;
        const char *a = first_action(r, &al);
        pol_metrics_reply(r->vhost->metrics_slot, a, al, lat_us);
    } else {
        pol_metrics_failure(r->vhost->metrics_slot, r->outcome == POL_OUT_TIMEOUT, lat_us);
    }
    switch (r->outcome) {
    case POL_OUT_REPLY:
        if (eng_conn_send(dc->c, r->reply, r->reply_len) != 0) {
            conn_close(dc);
            return;
        }
        if (logged) {
            char line[ENG_LOG_LINE_MAX];
            size_t n = pol_exec_result_line(r, now_us, line, sizeof(line));
            eng_log_bytes(ENG_LOG_WARNING, NULL, line, n);
        }
        conn_next(dc);
        return;
    case POL_OUT_TIMEOUT:
        eng_log(ENG_LOG_WARNING, "[%s]: request timed out", port_of(dc));
        break;
    default:
        eng_log(ENG_LOG_ERR, "error while processing request: %s", r->detail);
        break;
    }
    conn_error_answer(dc);
}

/* On the home shard: answer r's connection if it is still there. */
static void home_answer(struct dshard *ds, struct pol_req *r)
{
    struct eng_conn *c = eng_conn_find(ds->sh, r->conn_id);
    if (c)
        answer(eng_conn_app(c), r);
}

static struct pol_req *req_of(struct eng_xmsg *m, size_t off)
{
    return (struct pol_req *)(void *)((char *)m - off);
}

static void x_finish(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct pol_req *r = req_of(m, offsetof(struct pol_req, xm_answer));
    home_answer(eng_shard_app(dst), r);
    pol_shard_req_free(r);
}

/* A timed-out request whose operation is still running on the owner: only the fields the
 * owner no longer writes (conn_id, listener) are read here. */
static void x_timeout(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct pol_req *r = req_of(m, offsetof(struct pol_req, xm_answer));
    struct dshard *ds = eng_shard_app(dst);
    struct eng_conn *c = eng_conn_find(ds->sh, r->conn_id);
    if (!c)
        return;
    struct dconn *dc = eng_conn_app(c);
    pol_metrics_failure(r->vhost->metrics_slot, true, 0);
    eng_log(ENG_LOG_WARNING, "[%s]: request timed out", port_of(dc));
    conn_error_answer(dc);
}

static void x_release(struct eng_shard *dst, struct eng_xmsg *m)
{
    (void)dst;
    pol_shard_req_free(req_of(m, offsetof(struct pol_req, xm_release)));
}

/* exec's done callback, on the shard that processed r: the answer and the release go home. */
static void d_done(struct pol_req *r)
{
    if (r->ps != r->home) {
        struct eng_xmsg *m = r->final && r->answered ? &r->xm_release : &r->xm_answer;
        m->fn = !r->final ? x_timeout : r->answered ? x_release : x_finish;
        eng_xshard_send(r->ps->sh, r->home->index, m);
        return;
    }
    /* Processed at home: the same handlers, called directly. */
    if (!r->final)
        x_timeout(r->home->sh, &r->xm_answer);
    else if (r->answered)
        x_release(r->home->sh, &r->xm_release);
    else
        x_finish(r->home->sh, &r->xm_answer);
}

static void x_go(struct eng_shard *dst, struct eng_xmsg *m)
{
    struct dshard *ods = eng_shard_app(dst);
    pol_exec_begin(&ods->ps, req_of(m, offsetof(struct pol_req, xm_go)));
}

static void shed(struct dconn *dc)
{
    struct dshard *ds = dc->ds;
    uint64_t now = eng_now_ms(ds->sh);
    if (now - ds->shed_logged_ms >= 1000 || ds->shed_logged_ms == 0) {
        ds->shed_logged_ms = now;
        eng_log(ENG_LOG_ERR,
                "[%s]: no request slot free on shard %u (%llu shed so far): raise "
                "max_connections or max_request_bytes",
                port_of(dc), ds->ps.index, (unsigned long long)ds->ps.stats.no_request);
    }
    conn_error_answer(dc);
}

static void start_request(struct dconn *dc, const char *buf, uint32_t count)
{
    struct dshard *ds = dc->ds;
    eng_timer_cancel(ds->sh, &dc->keepalive);
    dc->busy = true;
    eng_conn_pause(dc->c);
    struct pol_req *r = pol_shard_req_new(&ds->ps, buf, ds->attrs, count);
    if (!r) {
        shed(dc);
        return;
    }
    size_t pcl = 0;
    const char *pc = pol_req_wk(r, POL_WK_POLICY_CONTEXT, &pcl);
    r->vhost = pol_server_select_vhost(r->srv, port_of(dc), pc, pcl);
    if (!r->vhost) {
        pol_metrics_no_vhost();
        eng_log(ENG_LOG_ERR, "error while processing request: no virtual host defined for port %s",
                port_of(dc));
        pol_shard_req_free(r);
        conn_close(dc);
        return;
    }
    pol_metrics_request(r->vhost->metrics_slot);
    r->done = d_done;
    r->conn_id = eng_conn_id(dc->c);
    r->listener = eng_conn_listener_tag(dc->c);
    unsigned owner = pol_exec_owner(r->srv, r, ds->ps.index, ds->ps.count);
    if (owner == ds->ps.index) {
        pol_exec_begin(&ds->ps, r);
        return;
    }
    r->xm_go.fn = x_go;
    eng_xshard_send(ds->sh, owner, &r->xm_go);
}

static const char *proto_error_text(enum pol_proto_status st)
{
    /* 2.05's text for a line without '=' (spec 7.2); ours for the limits it does not have. */
    return st == POL_PROTO_ERR_NO_EQUALS ? "error parsing request" : pol_proto_status_text(st);
}

static size_t d_bytes(void *app, struct eng_conn *c, const char *buf, size_t len)
{
    struct dshard *ds = app;
    struct dconn *dc = eng_conn_app(c);
    if (dc->is_http)
        return eng_http_conn_bytes(&dc->http, buf, len);
    ENG_ASSERT(!dc->busy);
    uint32_t count = 0;
    size_t used = 0;
    enum pol_proto_status st = pol_proto_parse(&dc->parser, buf, len, ds->attrs, &count, &used);
    if (st == POL_PROTO_NEED_MORE)
        return 0;
    if (st != POL_PROTO_REQUEST) {
        pol_metrics_protocol_error();
        eng_log(ENG_LOG_ERR, "[%s]: error while reading request: %s", port_of(dc),
                proto_error_text(st));
        conn_close(dc);
        return len;
    }
    start_request(dc, buf, count);
    return used;
}

/* ---------------------------------------------------------------------------------------------
 * Shards
 */

/* Once a second: the shard's plain counters into its metrics block (for scrapes). */
static void snapshot_fired(struct eng_shard *sh, struct eng_timer *t)
{
    struct dshard *ds = (struct dshard *)(void *)((char *)t - offsetof(struct dshard, snapshot));
    struct pol_sstore_stats st;
    if (ds->ps.sessions)
        pol_sstore_get_stats(ds->ps.sessions, &st);
    pol_metrics_shard_snapshot(&ds->ps.stats, ds->ps.sessions ? &st : NULL);
    eng_timer_arm(sh, t, DAEMON_SNAPSHOT_MS);
}

/* ds->hs stays: scrapes on other shards may read its counters until every shard stopped. */
static void dshard_free(struct dshard *ds)
{
    pol_metrics_shard_stop(ds->ps.index);
    free(ds->attrs);
    free(ds);
}

static int d_shard_start(struct eng_shard *sh, void *app_global, void **shard_app)
{
    struct daemon *d = app_global;
    struct dshard *ds = calloc(1, sizeof(*ds));
    char err[POL_ERR_MAX];
    if (!ds)
        return -ENOMEM;
    ds->d = d;
    ds->sh = sh;
    ds->ps.index = eng_shard_index(sh);
    /* Without http_port nobody reads the metrics: the shard counts and times nothing. */
    if ((d->http && pol_metrics_shard_start(sh, eng_shard_index(sh)) != 0) ||
        (d->http && eng_http_shard_start(d->http, sh, &ds->hs) != 0)) {
        eng_log(ENG_LOG_ERR, "shard %u: out of memory for metrics", eng_shard_index(sh));
        dshard_free(ds);
        return -ENOMEM;
    }
    if (ds->hs)
        atomic_store(&d->http_shards[ds->ps.index], ds->hs);
    ds->attrs = calloc(d->limits.attrs_max, sizeof(*ds->attrs));
    if (!ds->attrs || pol_shard_init(&ds->ps, d->srv, sh, eng_shard_index(sh), eng_shard_count(sh),
                                     d->requests_max, err, sizeof(err)) != 0) {
        eng_log(ENG_LOG_ERR, "%s", ds->attrs ? err : "out of memory");
        ds->ps.index = eng_shard_index(sh);
        dshard_free(ds);
        return -ENOMEM;
    }
    eng_timer_init(&ds->snapshot, snapshot_fired);
    if (d->http)
        eng_timer_arm(sh, &ds->snapshot, DAEMON_SNAPSHOT_MS);
    *shard_app = ds;
    atomic_fetch_add(&d->shards_started, 1);
    return 0;
}

static void d_shard_stop(struct eng_shard *sh, void *shard_app)
{
    struct dshard *ds = shard_app;
    eng_timer_cancel(sh, &ds->snapshot);
    atomic_fetch_sub(&ds->d->shards_started, 1);
    uint32_t out = ds->ps.req_count - ds->ps.free_req_count;
    if (out > 0) {
        /* A stop after drain_timeout can leave requests of this shard on their session's
         * owner shard (still waiting for an operation). They point into this shard's pools,
         * so the pools stay allocated until the process exits. */
        pol_shard_log_stats(&ds->ps);
        eng_log(ENG_LOG_WARNING, "shard %u stopped with %u requests still being processed",
                ds->ps.index, out);
        return;
    }
    pol_shard_fini(&ds->ps); /* logs the shard's counters */
    ds->ps.index = eng_shard_index(sh);
    dshard_free(ds);
}

/* While stopping: requests of this shard still out (executing here or on their session's
 * owner, or waiting for an accounting owner) hold the stop of every shard, so that their
 * messages are delivered and they are answered. */
static bool d_shard_busy(void *shard_app)
{
    const struct dshard *ds = shard_app;
    return ds->ps.req_count != ds->ps.free_req_count;
}

static void log_stats_on_shard(struct eng_shard *sh, void *shard_app, void *ctx)
{
    (void)sh;
    (void)ctx;
    pol_shard_log_stats(&((struct dshard *)shard_app)->ps);
}

/* ---------------------------------------------------------------------------------------------
 * Reload (SIGHUP, on the engine's signal thread)
 */

static struct pol_shard *shard_policy(void *shard_app)
{
    return &((struct dshard *)shard_app)->ps;
}

/* Requests of a replaced configuration get this long to finish before the reload returns
 * (they keep running after that; the next reload or the exit retires it). */
static uint32_t retire_wait_ms(const struct pol_server *s)
{
    return (s->g.request_timeout_s ? s->g.request_timeout_s : 60) * 1000u + 2000u;
}

/* Frees the replaced configurations whose requests have all finished. */
static void retiring_sweep(struct daemon *d, uint32_t wait_ms)
{
    for (uint32_t i = 0; i < d->retiring_count;) {
        if (pol_reload_retire(d->eng, shard_policy, d->retiring[i], wait_ms) != 0) {
            i++;
            continue;
        }
        pol_server_free(d->retiring[i]);
        d->retiring[i] = d->retiring[--d->retiring_count];
    }
}

static int listeners_parse(const struct pol_server *s, struct pol_listen *specs, int *n, int *h,
                           char *err, size_t err_len);

static bool listen_same(const struct eng_listen *a, const struct eng_listen *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == ENG_LISTEN_UNIX)
        return strcmp(a->path, b->path) == 0;
    return a->addr_len == b->addr_len && a->v6only == b->v6only &&
           memcmp(&a->addr, &b->addr, a->addr_len) == 0;
}

static const char *listen_name(const struct eng_listen *l, char *buf, size_t len)
{
    if (l->kind == ENG_LISTEN_UNIX)
        snprintf(buf, len, "unix:%s", l->path);
    else
        eng_addr_format((const struct sockaddr *)&l->addr, l->addr_len, buf, len);
    return buf;
}

/* What a reload changes in the listeners: the ones to start (bound already) and to remove. */
struct listen_change {
    size_t added[DAEMON_LISTENERS_CAP];
    size_t added_count;
    bool keep[DAEMON_LISTENERS_CAP]; /* by engine index: in the new configuration */
};

static void listen_undo(struct daemon *d, const struct listen_change *lc)
{
    for (size_t i = 0; i < lc->added_count; i++) {
        eng_listen_remove(d->eng, lc->added[i]);
        d->all[lc->added[i]].active = false;
    }
}

/* Binds the listeners of n that the daemon does not have yet (not accepting until
 * listen_commit). 0, or -1 with a sentence in err (nothing bound then). */
static int listen_prepare(struct daemon *d, const struct pol_server *n, struct listen_change *lc,
                          char *err, size_t err_len)
{
    static struct pol_listen specs[2 * POL_LISTEN_MAX]; /* main thread (signal handling) */
    int np, nh;
    char name[160];
    memset(lc, 0, sizeof(*lc));
    if (listeners_parse(n, specs, &np, &nh, err, err_len) != 0)
        return -1;
    const struct pol_cfg_node *root = pol_cfg_root(n->cfg);
    const struct pol_cfg_node *port = pol_cfg_option(root, "port");
    for (int i = 0; i < np; i++)
        if (!pol_server_vhost_by_key(n, specs[i].key)) {
            pol_errf(err, err_len, port ? port->file : root->file, port ? port->line : 0,
                     "port %s has no <VirtualHost %s>", specs[i].key, specs[i].key);
            return -1;
        }
    if (nh > 0 && !d->http) {
        eng_log(ENG_LOG_NOTICE, "reload: http_port: the daemon started without an HTTP "
                                "listener; adding one needs a restart");
        nh = 0;
    }
    for (int i = 0; i < np + nh; i++) {
        bool http = i >= np;
        size_t j = 0;
        while (j < d->all_count && !(d->all[j].active && listen_same(&d->all[j].eng, &specs[i].eng)))
            j++;
        if (j < d->all_count && d->all[j].http == http) {
            lc->keep[j] = true;
            continue;
        }
        if (j < d->all_count) {
            snprintf(err, err_len, "%s moves between port and http_port: that needs a restart",
                     listen_name(&specs[i].eng, name, sizeof(name)));
            listen_undo(d, lc);
            return -1;
        }
        struct eng_listen l = specs[i].eng;
        if (!http && d->keys_count >= DAEMON_KEYS_CAP) {
            snprintf(err, err_len, "cannot add %s: %u listeners were added already (restart to "
                     "add more)", listen_name(&l, name, sizeof(name)), ENG_LISTEN_ADDED_MAX);
            listen_undo(d, lc);
            return -1;
        }
        if (!http)
            snprintf(d->keys[d->keys_count], sizeof(d->keys[0]), "%s", specs[i].key);
        l.tag = http ? DAEMON_HTTP_TAG : (uint32_t)d->keys_count;
        char why[POL_ERR_MAX] = "";
        int idx = eng_listen_add(d->eng, &l, why, sizeof(why));
        if (idx < 0) {
            snprintf(err, err_len, "%s", why[0] ? why : strerror(-idx));
            listen_undo(d, lc);
            return -1;
        }
        ENG_ASSERT((size_t)idx == d->all_count && (size_t)idx < DAEMON_LISTENERS_CAP);
        d->all[idx] = (struct dlisten){.eng = l, .http = http, .active = true};
        d->all_count++;
        if (!http)
            d->keys_count++;
        lc->keep[idx] = true;
        lc->added[lc->added_count++] = (size_t)idx;
    }
    return 0;
}

/* The new configuration is in use: the added listeners accept, the dropped ones close (their
 * connections stay until they end). */
static void listen_commit(struct daemon *d, const struct listen_change *lc)
{
    char name[160];
    for (size_t i = 0; i < lc->added_count; i++) {
        const struct dlisten *dl = &d->all[lc->added[i]];
        if (eng_listen_start(d->eng, lc->added[i]) == 0)
            eng_log(ENG_LOG_NOTICE, "reload: listening on %s%s",
                    listen_name(&dl->eng, name, sizeof(name)), dl->http ? " (HTTP)" : "");
    }
    for (size_t j = 0; j < d->all_count; j++) {
        struct dlisten *dl = &d->all[j];
        if (!dl->active || lc->keep[j])
            continue;
        dl->active = false;
        if (eng_listen_remove(d->eng, j) == 0)
            eng_log(ENG_LOG_NOTICE,
                    "reload: no longer listening on %s%s (its open connections stay)",
                    listen_name(&dl->eng, name, sizeof(name)), dl->http ? " (HTTP)" : "");
    }
}

static void reload(struct daemon *d)
{
    static struct listen_change lc; /* main thread (signal handling) */
    char err[POL_ERR_MAX];
    struct pol_server *n = NULL;
    retiring_sweep(d, 0);
    eng_log(ENG_LOG_NOTICE, "received SIGHUP: reloading %s", d->config_path);
    /* The new configuration's listeners are checked against its vhosts in listen_prepare. */
    if (pol_reload_load(d->config_path, d->srv, NULL, 0, &n, err, sizeof(err)) != 0 ||
        listen_prepare(d, n, &lc, err, sizeof(err)) != 0) {
        pol_metrics_reload(false);
        eng_log(ENG_LOG_ERR, "reload failed: %s (still running the previous configuration)",
                err);
        pol_server_free(n);
        return;
    }
    pol_metrics_assign(n);
    struct pol_server *old = d->srv;
    switch (pol_reload_apply(d->eng, shard_policy, old, n, retire_wait_ms(old), err,
                             sizeof(err))) {
    case POL_RELOAD_FAILED:
        pol_metrics_reload(false);
        eng_log(ENG_LOG_ERR, "reload failed: %s (still running the previous configuration)",
                err);
        listen_undo(d, &lc);
        pol_server_free(n);
        return;
    case POL_RELOAD_RETIRED:
        pol_server_free(old);
        break;
    case POL_RELOAD_PENDING:
        ENG_ASSERT(d->retiring_count < POL_SHARD_OLD_GENS_MAX); /* apply checked for room */
        d->retiring[d->retiring_count++] = old;
        eng_log(ENG_LOG_WARNING,
                "reload: requests of the previous configuration are still running; it is "
                "freed once they end");
        break;
    }
    d->srv = n;
    listen_commit(d, &lc);
    pol_metrics_reload(true);
    eng_log(ENG_LOG_NOTICE, "reload: configuration %s loaded (%u vhosts)", d->config_path,
            n->vhost_count);
}

static void d_signal(void *app_global, struct eng *e, int signo)
{
    struct daemon *d = app_global;
    if (signo == SIGUSR1) /* counters and session cache memory, from every shard */
        eng_run_on_shards(e, log_stats_on_shard, NULL);
    if (signo == SIGHUP)
        reload(d);
}

/* ---------------------------------------------------------------------------------------------
 * HTTP endpoints (on the shard of the HTTP connection)
 */

static int h_metrics(void *ctx, struct eng_shard *sh, const struct eng_http_req *req,
                     struct eng_http_body *body, const char **ctype)
{
    (void)ctx;
    (void)sh;
    (void)req;
    *ctype = "text/plain; version=0.0.4; charset=utf-8";
    pol_metrics_write(body);
    return 200;
}

static int h_healthz(void *ctx, struct eng_shard *sh, const struct eng_http_req *req,
                     struct eng_http_body *body, const char **ctype)
{
    (void)ctx;
    (void)sh;
    (void)req;
    (void)ctype;
    /* Answered by a shard's loop: the process runs its loop. */
    eng_http_body_printf(body, "ok\n");
    return 200;
}

/* Ready: every shard started and every connection module that can tell reports its backend
 * reachable (pol_conn_ops.ready). */
static int h_readyz(void *ctx, struct eng_shard *sh, const struct eng_http_req *req,
                    struct eng_http_body *body, const char **ctype)
{
    struct daemon *d = ctx;
    (void)req;
    (void)ctype;
    unsigned started = atomic_load(&d->shards_started);
    if (started < d->shard_count) {
        eng_http_body_printf(body, "not ready: %u of %u shards running\n", started,
                             d->shard_count);
        return 503;
    }
    const struct pol_server *s = ((struct dshard *)eng_shard_app(sh))->ps.srv;
    for (uint32_t i = 0; i < s->conn_count; i++) {
        const struct pol_conn_def *c = &s->conns[i];
        char why[256] = "";
        if (c->opened && c->ops->ready && c->ops->ready(c, why, sizeof(why)) != 0) {
            eng_http_body_printf(body, "not ready: connection %s: %s\n", c->name,
                                 why[0] ? why : "unreachable");
            return 503;
        }
    }
    eng_http_body_printf(body, "ready\n");
    return 200;
}

/* The HTTP stats of every shard, through the collector API. */
static void http_collect(void *ctx, struct eng_http_body *out)
{
    const struct daemon *d = ctx;
    struct eng_http_stats t = {0}, one;
    for (unsigned i = 0; i < d->shard_count; i++) {
        const struct eng_http_shard *hs = atomic_load(&d->http_shards[i]);
        if (!hs)
            continue;
        eng_http_stats_get(hs, &one);
        t.requests += one.requests;
        t.responses_2xx += one.responses_2xx;
        t.responses_4xx += one.responses_4xx;
        t.responses_5xx += one.responses_5xx;
        t.bad_requests += one.bad_requests;
        t.body_overflow += one.body_overflow;
    }
    pol_metrics_write_head(out, "ringpolicyd_http_responses_total", "counter",
                           "Responses of the HTTP listener (this page included), by class.");
    pol_metrics_write_value(out, "ringpolicyd_http_responses_total", "code=\"2xx\"",
                            t.responses_2xx);
    pol_metrics_write_value(out, "ringpolicyd_http_responses_total", "code=\"4xx\"",
                            t.responses_4xx);
    pol_metrics_write_value(out, "ringpolicyd_http_responses_total", "code=\"5xx\"",
                            t.responses_5xx);
    pol_metrics_write_head(out, "ringpolicyd_http_bad_requests_total", "counter",
                           "Malformed or oversized HTTP requests (answered 4xx/5xx, closed).");
    pol_metrics_write_value(out, "ringpolicyd_http_bad_requests_total", "", t.bad_requests);
    pol_metrics_write_head(out, "ringpolicyd_http_body_overflow_total", "counter",
                           "Responses larger than the HTTP response buffer (answered 500).");
    pol_metrics_write_value(out, "ringpolicyd_http_body_overflow_total", "", t.body_overflow);
}

static const struct eng_app_ops d_ops = {
    .shard_start = d_shard_start,
    .shard_stop = d_shard_stop,
    .shard_busy = d_shard_busy,
    .on_open = d_open,
    .on_bytes = d_bytes,
    .on_close = d_close,
    .on_signal = d_signal,
};

/* ---------------------------------------------------------------------------------------------
 * Start-up (main thread)
 */

static int facility_of(const char *name)
{
    static const struct {
        const char *name;
        int fac;
    } tab[] = {{"mail", LOG_MAIL},
               {"daemon", LOG_DAEMON},
               {"user", LOG_USER},
               {"auth", LOG_AUTH},
               {"authpriv", LOG_AUTHPRIV},
               {"cron", LOG_CRON},
               {"local0", LOG_LOCAL0},
               {"local1", LOG_LOCAL1},
               {"local2", LOG_LOCAL2},
               {"local3", LOG_LOCAL3},
               {"local4", LOG_LOCAL4},
               {"local5", LOG_LOCAL5},
               {"local6", LOG_LOCAL6},
               {"local7", LOG_LOCAL7},
               {"news", LOG_NEWS},
               {"uucp", LOG_UUCP},
               {"lpr", LOG_LPR}};
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (strcmp(tab[i].name, name) == 0)
            return tab[i].fac;
    return -1;
}

/* 2.05's targets: log_file unset means syslog, or standard error with -f; "Sys::Syslog" means
 * syslog; anything else is a file. */
static int log_open(const struct pol_server *s, const struct pol_daemon_opts *o, bool to_stderr)
{
    const struct pol_globals *g = &s->g;
    struct eng_log_config lc = {0};
    char err[256];
    lc.level = o->log_level ? o->log_level : g->log_level;
    lc.ident = g->syslog_ident;
    lc.facility = facility_of(g->syslog_facility);
    if (to_stderr || (!g->log_file && o->foreground))
        lc.target = ENG_LOG_STDERR;
    else if (!g->log_file || strcmp(g->log_file, "Sys::Syslog") == 0)
        lc.target = ENG_LOG_SYSLOG;
    else {
        lc.target = ENG_LOG_FILE;
        lc.path = g->log_file;
    }
    if (lc.facility < 0)
        lc.facility = LOG_MAIL;
    if (eng_log_open(&lc, err, sizeof(err)) != 0) {
        fprintf(stderr, "ringpolicyd: %s\n", err);
        return -1;
    }
    if (facility_of(g->syslog_facility) < 0)
        eng_log(ENG_LOG_WARNING, "unknown syslog_facility %s: using mail", g->syslog_facility);
    for (uint32_t i = 0; i < s->warning_count; i++)
        eng_log(ENG_LOG_NOTICE, "%s", s->warnings[i]);
    return 0;
}

/* The listening addresses of s: its `port` option (with `host` for entries without one), each
 * with its key (the port number or socket path a <VirtualHost> names), in specs[0..*n), then
 * its `http_port` ones in specs[*n..*n + *h). 0, or -1 with "FILE:LINE: ..." in err. */
static int listeners_parse(const struct pol_server *s, struct pol_listen *specs, int *n, int *h,
                           char *err, size_t err_len)
{
    char why[POL_ERR_MAX];
    *n = pol_listen_parse(s->g.port, s->g.host, specs, POL_LISTEN_MAX, why, sizeof(why));
    *h = 0;
    const struct pol_cfg_node *root = pol_cfg_root(s->cfg);
    if (*n < 0) {
        const struct pol_cfg_node *port = pol_cfg_option(root, "port");
        pol_errf(err, err_len, port ? port->file : root->file, port ? port->line : 0, "%s", why);
        return -1;
    }
    const char *hp = s->g.http_port;
    if (hp && *hp) { /* TCP entries like `port`; PORT alone means 127.0.0.1:PORT */
        *h = pol_listen_parse(hp, POL_LISTEN_HOST_DEFAULT, specs + *n, POL_LISTEN_MAX, why,
                              sizeof(why));
        const struct pol_cfg_node *o = pol_cfg_option(root, "http_port");
        for (int i = 0; i < *h && *h > 0; i++)
            if (specs[*n + i].eng.kind != ENG_LISTEN_TCP) {
                snprintf(why, sizeof(why), "http_port takes TCP addresses only, not %s",
                         specs[*n + i].key);
                *h = -1;
            }
        if (*h < 0) {
            pol_errf(err, err_len, o ? o->file : root->file, o ? o->line : 0, "%s", why);
            return -1;
        }
    }
    return 0;
}

/* The listeners of the configuration at start-up. */
static int listeners_build(struct daemon *d, char *err, size_t err_len)
{
    static struct pol_listen specs[2 * POL_LISTEN_MAX]; /* main thread, start-up only */
    int n, h;
    if (listeners_parse(d->srv, specs, &n, &h, err, err_len) != 0)
        return -1;
    d->listens = calloc((size_t)(n + h), sizeof(*d->listens));
    d->keys = calloc(DAEMON_KEYS_CAP, sizeof(*d->keys));
    d->all = calloc(DAEMON_LISTENERS_CAP, sizeof(*d->all));
    if (!d->listens || !d->keys || !d->all) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        d->listens[i] = specs[i].eng;
        d->listens[i].tag = (uint32_t)i; /* the key is found through the tag */
        snprintf(d->keys[i], sizeof(d->keys[i]), "%s", specs[i].key);
    }
    for (int i = 0; i < h; i++) {
        d->listens[n + i] = specs[n + i].eng;
        d->listens[n + i].tag = DAEMON_HTTP_TAG | (uint32_t)i;
    }
    for (int i = 0; i < n + h; i++)
        d->all[i] = (struct dlisten){.eng = d->listens[i], .http = i >= n, .active = true};
    d->listen_count = (size_t)n;
    d->http_listen_count = (size_t)h;
    d->keys_count = (size_t)n;
    d->all_count = (size_t)(n + h);
    return 0;
}

/* Every listener needs a virtual host for its port (spec 11.2: 2.05 kills the worker on the
 * first request; we refuse to start). */
static int listeners_check(const struct daemon *d, char *err, size_t err_len)
{
    const struct pol_cfg_node *root = pol_cfg_root(d->srv->cfg);
    const struct pol_cfg_node *port = pol_cfg_option(root, "port");
    for (size_t i = 0; i < d->listen_count; i++)
        if (!pol_server_vhost_by_key(d->srv, d->keys[i])) {
            pol_errf(err, err_len, port ? port->file : root->file, port ? port->line : 0,
                     "port %s has no <VirtualHost %s> (2.05 would fail every request on it)",
                     d->keys[i], d->keys[i]);
            return -1;
        }
    return 0;
}

static void run_cron(const struct pol_server *s, const char *list)
{
    char buf[1024];
    const char *tasks[64];
    size_t n = 0;
    snprintf(buf, sizeof(buf), "%s", list);
    /* 2.05 splits LIST at commas and drops the blanks around them. */
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < 64;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        size_t l = strlen(t);
        while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t'))
            t[--l] = '\0';
        tasks[n++] = t;
    }
    pol_server_cron(s, tasks, n);
}

static bool blank(const char *s)
{
    for (; s && *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n')
            return false;
    return true;
}

static void daemon_free(struct daemon *d)
{
    if (d->eng)
        eng_destroy(d->eng);
    for (unsigned i = 0; d->http_shards && i < d->shard_count; i++)
        eng_http_shard_stop(atomic_load(&d->http_shards[i]));
    free(d->http_shards);
    eng_http_destroy(d->http);
    pol_metrics_fini();
    for (uint32_t i = 0; i < d->retiring_count; i++)
        pol_server_free(d->retiring[i]);
    free(d->listens);
    free(d->keys);
    free(d->all);
    free(d->error_reply);
    pol_server_free(d->srv);
}

/* The HTTP server of http_port; the engine's send queue must hold a whole response. */
static int http_create(struct daemon *d, struct eng_config *cfg, char *err, size_t err_len)
{
    const struct eng_http_route routes[] = {
        {"/metrics", h_metrics, d},
        {"/healthz", h_healthz, d},
        {"/readyz", h_readyz, d},
    };
    struct eng_http_config hc;
    eng_http_config_defaults(&hc);
    hc.routes = routes;
    hc.route_count = sizeof(routes) / sizeof(routes[0]);
    hc.body_bytes_max = DAEMON_HTTP_BODY_BYTES;
    /* Send buffers are MAP_NORESERVE pool slots trimmed after use: only bytes queued are
     * resident, so raising the cap for every connection costs address space, not memory. */
    if (cfg->limits.send_bytes_max < DAEMON_HTTP_BODY_BYTES + 1024)
        cfg->limits.send_bytes_max = DAEMON_HTTP_BODY_BYTES + 1024;
    if (eng_http_create(&hc, &d->http) != 0) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

static int engine_create(struct daemon *d, const struct pol_daemon_opts *o, char *err,
                         size_t err_len)
{
    const struct pol_globals *g = &d->srv->g;
    struct eng_config cfg;
    eng_config_defaults(&cfg);
    cfg.shard_count = o->shards ? o->shards : g->shards;
    cfg.backend = g->backend;
    cfg.listens = d->listens;
    cfg.listen_count = d->listen_count + d->http_listen_count;
    cfg.app_conn_bytes = sizeof(struct dconn);
    cfg.drain_timeout_ms = g->drain_timeout_s * 1000u;
    cfg.limits.conns_per_shard_max = g->max_connections;
    cfg.limits.stage_bytes_per_shard_max = g->max_staging_bytes_per_shard; /* 0: 64 MiB */
    /* Input held for a connection: a whole request of the largest size (the parser refuses a
     * bigger one first), or what a client pipelines while its request is answered (the
     * connection is paused then): max_pipelined_bytes. Past it the engine closes the connection
     * (counted as stage_oversize). The staging pool is a MAP_NORESERVE mapping, so only bytes
     * actually staged are resident. */
    cfg.limits.stage_bytes_max = g->max_request_bytes + 1024;
    if (cfg.limits.stage_bytes_max < g->max_pipelined_bytes)
        cfg.limits.stage_bytes_max = g->max_pipelined_bytes;
    cfg.ops = &d_ops;
    cfg.app_global = d;
    /* One request per connection, plus a reserve for timed-out requests whose asynchronous
     * operation has not come back yet (they keep their slot until it does). */
    d->requests_max = g->max_connections + g->max_connections / 8 + 16;
    d->limits =
        (struct pol_proto_limits){g->max_request_bytes, g->max_line_bytes, g->max_attributes};
    if (g->error_action && *g->error_action) {
        size_t n = strlen(g->error_action) + sizeof("action=\n\n");
        if (!(d->error_reply = malloc(n))) {
            snprintf(err, err_len, "out of memory");
            return -ENOMEM;
        }
        d->error_reply_len = (size_t)snprintf(d->error_reply, n, "action=%s\n\n", g->error_action);
    }
    if (d->http_listen_count > 0 && http_create(d, &cfg, err, err_len) != 0)
        return -ENOMEM;
    int rc = eng_create(&cfg, &d->eng, err, err_len);
    if (rc != 0)
        return rc;
    d->shard_count = eng_shard_count_of(d->eng);
    d->http_shards = calloc(d->shard_count, sizeof(*d->http_shards));
    if (!d->http_shards || pol_metrics_init(d->shard_count, d->eng) != 0) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    pol_metrics_assign(d->srv);
    if (d->http && pol_metrics_register(http_collect, d) != 0) {
        snprintf(err, err_len, "no room for the HTTP collector");
        return -ENOSPC;
    }
    if (d->http && pol_metrics_register(pol_allow_collect, NULL) != 0) {
        snprintf(err, err_len, "no room for the allow collector");
        return -ENOSPC;
    }
    return 0;
}

/* Detach, pid file, privileges: in this order, after binding (spec 4). */
static int become_daemon(const struct daemon *d, const struct pol_daemon_opts *o, char *err,
                         size_t err_len)
{
    const struct pol_globals *g = &d->srv->g;
    if (!o->foreground && eng_proc_daemonize(err, err_len) != 0)
        return -1;
    if (g->pid_file && *g->pid_file && eng_proc_pidfile_create(g->pid_file, err, err_len) != 0)
        return -1;
    if (eng_proc_drop_privileges(g->user, g->group, g->chroot, err, err_len) != 0)
        return -1;
    return 0;
}

/* -d, --check, --cron: everything that stops before the engine. Returns -1 to go on. */
static int early_modes(struct daemon *d, const struct pol_daemon_opts *o)
{
    char err[POL_ERR_MAX];
    if (o->dump) {
        pol_server_dump(d->srv, stdout);
        return 0;
    }
    if (o->cron && !blank(o->cron) && !o->check) {
        if (log_open(d->srv, o, false) != 0)
            return 255;
        run_cron(d->srv, o->cron);
        return 0;
    }
    /* The daemon and --check need the listening addresses; -d and --cron do not. */
    if (listeners_build(d, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return o->check ? 1 : 255;
    }
    if (o->check) {
        for (uint32_t i = 0; i < d->srv->warning_count; i++)
            fprintf(stderr, "%s\n", d->srv->warnings[i]);
        if (listeners_check(d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("%s: configuration OK (%u virtual hosts, %u plugins)\n", o->config_path,
               d->srv->vhost_count, d->srv->plugin_count);
        return 0;
    }
    return -1;
}

int pol_daemon_main(const struct pol_daemon_opts *o)
{
    struct daemon d = {0};
    char err[POL_ERR_MAX];
    const char *path = o->config_path ? o->config_path : POL_DAEMON_DEFAULT_CONFIG;
    struct pol_daemon_opts opts = *o;
    opts.config_path = path;
    d.config_path = path;
    int rc = pol_server_load(path, &d.srv, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return rc == -2 || o->check ? 1 : 255;
    }
    int early = early_modes(&d, &opts);
    if (early >= 0) {
        daemon_free(&d);
        return early;
    }
    if (log_open(d.srv, &opts, false) != 0) {
        daemon_free(&d);
        return 255;
    }
    if (listeners_check(&d, err, sizeof(err)) != 0 ||
        engine_create(&d, &opts, err, sizeof(err)) != 0 ||
        become_daemon(&d, &opts, err, sizeof(err)) != 0) {
        if (!(opts.foreground && !d.srv->g.log_file)) /* else the log is standard error */
            fprintf(stderr, "%s\n", err);
        eng_log(ENG_LOG_ERR, "%s", err);
        eng_proc_ready(false, err); /* detached: the original process reports it */
        daemon_free(&d);
        return 255;
    }
    eng_proc_ready(true, NULL);
    eng_log(ENG_LOG_NOTICE, "ringpolicyd %s starting: %u shards, %s, %zu listeners, %s",
            RINGPOLICYD_VERSION, eng_shard_count_of(d.eng), eng_backend_name(d.eng), d.listen_count,
            path);
    rc = eng_run(d.eng);
    eng_log(ENG_LOG_NOTICE, "ringpolicyd stopped%s", rc ? " after a shard failed to start" : "");
    if (d.srv->g.pid_file && *d.srv->g.pid_file)
        eng_proc_pidfile_remove(d.srv->g.pid_file);
    daemon_free(&d);
    eng_log_close();
    return rc ? 255 : 0;
}
