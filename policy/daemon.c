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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "eng/assert.h"
#include "eng/engine.h"
#include "eng/log.h"
#include "eng/proc.h"
#include "exec.h"
#include "listen.h"
#include "ringpolicyd_config.h"
#include "server.h"

struct daemon {
    struct pol_server *srv;
    struct eng *eng;
    struct eng_listen *listens;
    char (*keys)[sizeof(((struct eng_listen *)0)->path)]; /* per listener: PORT / vhost key */
    size_t listen_count;
    uint32_t requests_max;
    struct pol_proto_limits limits;
    char *error_reply; /* "action=ERROR_ACTION\n\n", NULL: close without reply */
    size_t error_reply_len;
};

struct dshard {
    struct daemon *d;
    struct eng_shard *sh;
    struct pol_shard ps;
    struct pol_proto_attr *attrs; /* parser scratch, max_attributes */
    uint64_t shed_logged_ms;
};

struct dconn {
    struct dshard *ds;
    struct eng_conn *c;
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
    ENG_ASSERT(tag < dc->ds->d->listen_count);
    return dc->ds->d->keys[tag];
}

static void conn_close(struct dconn *dc)
{
    dc->closing = true;
    eng_conn_close(dc->c);
}

static void keepalive_arm(struct dconn *dc)
{
    uint32_t s = dc->ds->d->srv->g.keepalive_timeout_s;
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
    uint32_t max = dc->ds->d->srv->g.max_keepalive;
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

static void answer(struct dconn *dc, struct pol_req *r)
{
    switch (r->outcome) {
    case POL_OUT_REPLY:
        if (eng_conn_send(dc->c, r->reply, r->reply_len) != 0) {
            conn_close(dc);
            return;
        }
        if (eng_log_enabled(ENG_LOG_WARNING)) {
            char line[ENG_LOG_LINE_MAX];
            size_t n = pol_exec_result_line(r, pol_exec_now_us(), line, sizeof(line));
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
    const struct daemon *d = ds->d;
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
    r->vhost = pol_server_select_vhost(d->srv, port_of(dc), pc, pcl);
    if (!r->vhost) {
        eng_log(ENG_LOG_ERR, "error while processing request: no virtual host defined for port %s",
                port_of(dc));
        pol_shard_req_free(r);
        conn_close(dc);
        return;
    }
    r->done = d_done;
    r->conn_id = eng_conn_id(dc->c);
    r->listener = eng_conn_listener_tag(dc->c);
    unsigned owner = pol_exec_owner(d->srv, r, ds->ps.index, ds->ps.count);
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
    ENG_ASSERT(!dc->busy);
    uint32_t count = 0;
    size_t used = 0;
    enum pol_proto_status st = pol_proto_parse(&dc->parser, buf, len, ds->attrs, &count, &used);
    if (st == POL_PROTO_NEED_MORE)
        return 0;
    if (st != POL_PROTO_REQUEST) {
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

static int d_shard_start(struct eng_shard *sh, void *app_global, void **shard_app)
{
    struct daemon *d = app_global;
    struct dshard *ds = calloc(1, sizeof(*ds));
    char err[POL_ERR_MAX];
    if (!ds)
        return -ENOMEM;
    ds->d = d;
    ds->sh = sh;
    ds->attrs = calloc(d->limits.attrs_max, sizeof(*ds->attrs));
    if (!ds->attrs || pol_shard_init(&ds->ps, d->srv, sh, eng_shard_index(sh), eng_shard_count(sh),
                                     d->requests_max, err, sizeof(err)) != 0) {
        eng_log(ENG_LOG_ERR, "%s", ds->attrs ? err : "out of memory");
        free(ds->attrs);
        free(ds);
        return -ENOMEM;
    }
    *shard_app = ds;
    return 0;
}

static void d_shard_stop(struct eng_shard *sh, void *shard_app)
{
    (void)sh;
    struct dshard *ds = shard_app;
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
    free(ds->attrs);
    free(ds);
}

static void log_stats_on_shard(struct eng_shard *sh, void *shard_app, void *ctx)
{
    (void)sh;
    (void)ctx;
    pol_shard_log_stats(&((struct dshard *)shard_app)->ps);
}

static void d_signal(void *app_global, struct eng *e, int signo)
{
    (void)app_global;
    if (signo == SIGUSR1) /* counters and session cache memory, from every shard */
        eng_run_on_shards(e, log_stats_on_shard, NULL);
    if (signo == SIGHUP)
        eng_log(ENG_LOG_NOTICE, "received SIGHUP: configuration reload is not implemented yet; "
                                "still running with the configuration loaded at start-up");
}

static const struct eng_app_ops d_ops = {
    .shard_start = d_shard_start,
    .shard_stop = d_shard_stop,
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

/* The listening sockets of the `port` option (with `host` for entries without one), and each
 * one's key: the port number or socket path a <VirtualHost> names. */
static int listeners_build(struct daemon *d, char *err, size_t err_len)
{
    struct pol_listen specs[POL_LISTEN_MAX];
    char why[POL_ERR_MAX];
    int n =
        pol_listen_parse(d->srv->g.port, d->srv->g.host, specs, POL_LISTEN_MAX, why, sizeof(why));
    if (n < 0) {
        const struct pol_cfg_node *root = pol_cfg_root(d->srv->cfg);
        const struct pol_cfg_node *port = pol_cfg_option(root, "port");
        pol_errf(err, err_len, port ? port->file : root->file, port ? port->line : 0, "%s", why);
        return -1;
    }
    d->listens = calloc((size_t)n, sizeof(*d->listens));
    d->keys = calloc((size_t)n, sizeof(*d->keys));
    if (!d->listens || !d->keys) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        d->listens[i] = specs[i].eng;
        d->listens[i].tag = (uint32_t)i; /* the key is found through the tag */
        snprintf(d->keys[i], sizeof(d->keys[i]), "%s", specs[i].key);
    }
    d->listen_count = (size_t)n;
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
    free(d->listens);
    free(d->keys);
    free(d->error_reply);
    pol_server_free(d->srv);
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
    cfg.listen_count = d->listen_count;
    cfg.app_conn_bytes = sizeof(struct dconn);
    cfg.drain_timeout_ms = g->drain_timeout_s * 1000u;
    cfg.limits.conns_per_shard_max = g->max_connections;
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
    return eng_create(&cfg, &d->eng, err, err_len);
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
        daemon_free(&d);
        return 255;
    }
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
