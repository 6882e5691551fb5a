/*
 * netcall.c: the network plugins' shared call (netcall.h). Per plugin and shard it owns one
 * struct eng_stream (shard_start .. shard_stop, on that shard); per call nothing but the
 * caller's req_state and the request arena. The completion copies the reply into the arena and
 * resumes the request; if the request timed out meanwhile, pol_req_resume releases it.
 */
#include "plugins/netcall.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "metrics.h"

/* /metrics: one source per plugin and shard (its stream client), labelled by plugin name. */
enum {
    SM_REQUESTS,
    SM_REPLIES,
    SM_CONNECTS,
    SM_CONNECT_FAILURES,
    SM_TIMEOUTS,
    SM_ERRORS,
    SM_FAST_FAILURES,
    SM_CONNS_OPEN,
    SM_COUNT
};
static const struct pol_metrics_field stream_fields[SM_COUNT] = {
    [SM_REQUESTS] = {"ringpolicyd_stream_requests_total",
                     "Requests a network plugin sent to its server.", false, false},
    [SM_REPLIES] = {"ringpolicyd_stream_replies_total",
                    "Replies a network plugin got from its server.", false, false},
    [SM_CONNECTS] = {"ringpolicyd_stream_connects_total",
                     "Connections a network plugin opened to its server.", false, false},
    [SM_CONNECT_FAILURES] = {"ringpolicyd_stream_connect_failures_total",
                             "Connections a network plugin failed to open.", false, false},
    [SM_TIMEOUTS] = {"ringpolicyd_stream_timeouts_total",
                     "Network plugin requests that hit their deadline.", false, false},
    [SM_ERRORS] = {"ringpolicyd_stream_errors_total",
                   "Network plugin requests failed by the peer (reset, oversize, bad framing).",
                   false, false},
    [SM_FAST_FAILURES] = {"ringpolicyd_stream_fast_failures_total",
                          "Network plugin requests failed at once (backing off, queue full).",
                          false, false},
    [SM_CONNS_OPEN] = {"ringpolicyd_stream_connections_open",
                       "Network plugins' connections open now.", true, false},
};
static const struct pol_metrics_source_desc stream_metrics = {"plugin", stream_fields, SM_COUNT};

static void stream_snap(void *ctx, uint64_t *v)
{
    struct eng_stream_stats st;
    eng_stream_get_stats(ctx, &st);
    v[SM_REQUESTS] = st.requests;
    v[SM_REPLIES] = st.replies;
    v[SM_CONNECTS] = st.connects;
    v[SM_CONNECT_FAILURES] = st.connect_failures;
    v[SM_TIMEOUTS] = st.timeouts;
    v[SM_ERRORS] = st.errors;
    v[SM_FAST_FAILURES] = st.fast_failures;
    v[SM_CONNS_OPEN] = st.conns_open;
}

int pol_netcall_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                            char *err, size_t err_len)
{
    const struct pol_netcall_def *d = pol_plugin_data(p);
    ENG_ASSERT(d != NULL);
    struct eng_stream *s = NULL;
    int rc = eng_stream_create(sh, &d->target, &d->cfg, &s);
    if (rc != 0) {
        snprintf(err, err_len, "cannot set up the client for %s: %s", d->target.name,
                 strerror(-rc));
        return -1;
    }
    *shard_data = s;
    if (pol_metrics_source_add(&stream_metrics, pol_plugin_name(p), stream_snap, s) != 0)
        eng_log(ENG_LOG_WARNING, "plugin %s: no room for its metrics on shard %u",
                pol_plugin_name(p), eng_shard_index(sh));
    return 0;
}

void pol_netcall_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    (void)p;
    (void)sh;
    pol_metrics_source_remove(shard_data);
    eng_stream_destroy(shard_data);
}

static void netcall_done(struct eng_stream_req *rq, int status, const char *reply, size_t len)
{
    struct pol_netcall *c = rq->ctx;
    ENG_ASSERT(c->started);
    ENG_ASSERT(!c->finished);
    c->finished = true;
    c->status = status;
    if (status == 0) {
        char *copy = pol_req_strndup(c->r, reply, len);
        if (copy) {
            c->reply = copy;
            c->reply_len = len;
        } else {
            c->status = -ENOMEM;
        }
    }
    pol_req_resume(c->r);
}

enum pol_step pol_netcall_start(struct pol_plugin *p, struct pol_req *r, struct pol_netcall *c,
                                const char *buf, size_t len)
{
    const struct pol_netcall_def *d = pol_plugin_data(p);
    struct eng_stream *s = pol_plugin_shard_data(p, r);
    ENG_ASSERT(s != NULL);
    ENG_ASSERT(!c->started);
    c->r = r;
    c->started = true;
    int rc = eng_stream_request(s, &c->sr, buf, len, d->timeout_ms, netcall_done, c);
    if (rc != 0) {
        c->started = false;
        return pol_req_fail(r, "cannot send to %s: %s", d->target.name, strerror(-rc));
    }
    return POL_WAIT;
}

bool pol_netcall_connect_error(int status)
{
    switch (-status) {
    case ECONNREFUSED:
    case ENOENT:
    case EACCES:
    case ENOTSOCK:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
        return true;
    default:
        return false;
    }
}

const char *pol_netcall_strerror(int status)
{
    switch (status) {
    case -ETIMEDOUT:
        return "timed out";
    case -ECONNRESET:
        return "connection closed before the reply was complete";
    case -EMSGSIZE:
        return "reply too long";
    case -EPROTO:
        return "malformed reply";
    case -EAGAIN:
        return "too many requests waiting for a connection";
    case -ENOMEM:
        return "no memory left in the request arena for the reply";
    default:
        return strerror(-status);
    }
}
