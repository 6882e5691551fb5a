/*
 * testkit.c: a configuration and its requests without the engine (see testkit.h), for the unit
 * tests of the core and of the plugins, and for the fuzzers.
 *
 * It is the daemon's request path minus the sockets: the same configuration model, the same
 * per-shard state (one shard, no engine shard, so no deadline timer), the same parser, virtual
 * host selection, session cache and chain runner. Owns the server, the shard and a few buffers;
 * single-threaded. A request whose plugin returns POL_WAIT cannot go on without an engine: it is
 * reported as an error and left behind (it still holds its session, so later requests of that
 * instance report that they wait for it).
 */
#include "testkit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/log.h"
#include "exec.h"
#include "server.h"

#define KIT_REQUESTS 64u

struct pol_testkit {
    struct pol_server *srv;
    struct pol_shard ps;
    struct pol_proto_attr *attrs;
    char last_line[ENG_LOG_LINE_MAX];
    /* The request being answered: filled by kit_done. */
    bool done;
    int rc;
    char *out;
    size_t out_len;
    /* pol_testkit_session_get's answer. */
    char *sess_buf;
    size_t sess_buf_len;
};

struct pol_testkit *pol_testkit_new(const char *config_text, char *err, size_t err_len)
{
    struct pol_testkit *k = calloc(1, sizeof(*k));
    if (!k) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (pol_server_from_text("test.conf", config_text, &k->srv, err, err_len) != 0) {
        free(k);
        return NULL;
    }
    k->attrs = calloc(k->srv->g.max_attributes, sizeof(*k->attrs));
    if (!k->attrs || pol_shard_init(&k->ps, k->srv, NULL, 0, 1, KIT_REQUESTS, err, err_len) != 0) {
        if (!k->attrs)
            snprintf(err, err_len, "out of memory");
        free(k->attrs);
        pol_server_free(k->srv);
        free(k);
        return NULL;
    }
    return k;
}

void pol_testkit_free(struct pol_testkit *k)
{
    if (!k)
        return;
    pol_shard_fini(&k->ps);
    pol_server_free(k->srv);
    free(k->attrs);
    free(k->sess_buf);
    free(k);
}

static void put_text(struct pol_testkit *k, const char *s, size_t len)
{
    if (k->out_len == 0)
        return;
    if (len >= k->out_len)
        len = k->out_len - 1;
    memcpy(k->out, s, len);
    k->out[len] = '\0';
}

/* The request's outcome, as the daemon would send or log it. */
static void kit_done(struct pol_req *r)
{
    struct pol_testkit *k = r->host;
    char buf[1024];
    const char *ea = k->srv->g.error_action;
    if (!r->final)
        return; /* only a timed-out waiting request gets here first; the kit has no timer */
    k->done = true;
    if (r->outcome == POL_OUT_REPLY) {
        pol_exec_result_line(r, pol_exec_now_us(), k->last_line, sizeof(k->last_line));
        k->rc = r->reply_len < k->out_len ? 0 : -1;
        if (k->rc == 0)
            put_text(k, r->reply, r->reply_len);
        else
            put_text(k, "reply does not fit the buffer", 29);
    } else if (ea && *ea) {
        int n = snprintf(buf, sizeof(buf), "action=%s\n\n", ea);
        k->rc = 0;
        put_text(k, buf, n > 0 ? (size_t)n : 0);
    } else {
        k->rc = -1;
        put_text(k, r->detail, strlen(r->detail));
    }
    pol_shard_req_free(r);
}

/* The request text as the wire would carry it: LF-terminated lines and the empty line. */
static char *wire_text(const char *request, size_t *len)
{
    size_t n = strlen(request);
    char *buf = malloc(n + 3);
    if (!buf)
        return NULL;
    memcpy(buf, request, n);
    if (n == 0 || buf[n - 1] != '\n')
        buf[n++] = '\n';
    if (n < 2 || buf[n - 2] != '\n')
        buf[n++] = '\n';
    *len = n;
    return buf;
}

static struct pol_req *kit_build(struct pol_testkit *k, const char *buf, size_t len)
{
    struct pol_proto_parser pp;
    struct pol_proto_limits lim = {k->srv->g.max_request_bytes, k->srv->g.max_line_bytes,
                                   k->srv->g.max_attributes};
    char msg[256];
    uint32_t count = 0;
    size_t used = 0;
    pol_proto_parser_init(&pp, &lim);
    enum pol_proto_status st = pol_proto_parse(&pp, buf, len, k->attrs, &count, &used);
    if (st != POL_PROTO_REQUEST) {
        int n = snprintf(msg, sizeof(msg), "error while reading request: %s",
                         pol_proto_status_text(st));
        put_text(k, msg, n > 0 ? (size_t)n : 0);
        return NULL;
    }
    struct pol_req *r = pol_shard_req_new(&k->ps, buf, k->attrs, count);
    if (!r)
        put_text(k, "no request slot free", 20);
    return r;
}

int pol_testkit_request(struct pol_testkit *k, const char *port, const char *request, char *reply,
                        size_t reply_len)
{
    size_t len = 0;
    char *buf = wire_text(request, &len);
    k->out = reply;
    k->out_len = reply_len;
    k->done = false;
    k->rc = -1;
    k->last_line[0] = '\0';
    struct pol_req *r = buf ? kit_build(k, buf, len) : NULL;
    free(buf); /* the request has its own copies now */
    if (!r)
        return -1;
    size_t pcl = 0;
    const char *pc = pol_req_wk(r, POL_WK_POLICY_CONTEXT, &pcl);
    r->vhost = pol_server_select_vhost(k->srv, port, pc, pcl);
    if (!r->vhost) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg), "no virtual host defined for port %s", port);
        put_text(k, msg, n > 0 ? (size_t)n : 0);
        pol_shard_req_free(r);
        return -1;
    }
    r->done = kit_done;
    r->host = k;
    pol_exec_begin(&k->ps, r);
    if (k->done)
        return k->rc;
    /* Still in flight: it cannot be resumed without an engine. */
    char msg[512];
    int n =
        r->phase == POL_PHASE_PLUGIN_WAIT
            ? snprintf(msg, sizeof(msg),
                       "plugin %s returned POL_WAIT: asynchronous steps need the engine and "
                       "are not supported by the testkit",
                       r->frames[r->depth - 1].chain->plugins[r->frames[r->depth - 1].idx]->name)
            : snprintf(msg, sizeof(msg),
                       "the session of this instance is held by a request that is still "
                       "waiting (POL_WAIT is not supported by the testkit)");
    put_text(k, msg, n > 0 ? (size_t)n : 0);
    return -1;
}

const char *pol_testkit_session_get(struct pol_testkit *k, const char *instance, const char *key)
{
    if (!k->ps.sessions)
        return NULL;
    const struct pol_sstore_ent *e =
        pol_sstore_peek(k->ps.sessions, instance, strlen(instance), pol_exec_now_us() / 1000);
    if (!e)
        return NULL;
    size_t n = pol_sstore_blob_bytes(e);
    /* Room for the blob and the entry list parsed out of it. */
    size_t need = n + 64 + (n / 10 + 1) * sizeof(struct pol_sess_ent);
    if (need > k->sess_buf_len) {
        char *b = realloc(k->sess_buf, need);
        if (!b)
            return NULL;
        k->sess_buf = b;
        k->sess_buf_len = need;
    }
    struct pol_arena a;
    pol_arena_init(&a, k->sess_buf, k->sess_buf_len);
    char *blob = pol_arena_alloc(&a, n ? n : 1);
    pol_sstore_blob_read(k->ps.sessions, e, blob);
    struct pol_session s;
    pol_sess_init(&s);
    if (pol_sess_load(&s, &a, blob, n) != 0)
        return NULL;
    const struct pol_sess_ent *v = pol_sess_find(&s, key, strlen(key));
    return v ? v->val : NULL;
}

const char *pol_testkit_last_result_line(const struct pol_testkit *k)
{
    return k->last_line;
}
