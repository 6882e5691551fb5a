/*
 * proxy.c: the Proxy plugin (spec 13.16): ask another policy server and answer with its action.
 *
 * The request goes out as 2.05's Mail::MtPolicyd::Client::Request builds it: `request=TYPE`,
 * `instance=INSTANCE`, then every request attribute but `type` and `instance` (so `request`
 * a second time), in wire order (2.05's order is Perl's hash order, which no server depends
 * on), then the empty line. The reply is read up to its empty line (a line that is empty after
 * removing "\r?\n"); a line without '=' fails ("error parsing response"), a reply without
 * `action` fails ("no action found in response"), a connection closed before the empty line
 * fails ("could not read response"); otherwise the plugin returns the last `action` value,
 * aborting the chain. A request without `instance` fails the plugin, as in 2.05 (whose request
 * object refuses an undefined instance). `socket_path` wins over `host`; with neither, start-up
 * fails (2.05 fails each request). `keepalive = 1` keeps connections between requests and
 * reuses them (spec 16 #10: implemented properly, 2.05 blocked); `keepalive = 0` closes after
 * each reply as 2.05.
 *
 * ringpolicyd's own options: `timeout_ms` (default 20000: a call's deadline; 2.05 waited until
 * request_timeout) and `connections` (default 4: connections per shard, each carrying one
 * request at a time as the protocol requires; more requests wait in a FIFO).
 *
 * Owns its target (create .. destroy, main thread) and per shard one stream (netcall.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <eng/assert.h>

#include "plugins/common.h"
#include "plugins/netcall.h"

enum {
    OPT_HOST,
    OPT_SOCKET_PATH,
    OPT_KEEPALIVE,
    OPT_TIMEOUT_MS,
    OPT_CONNECTIONS,
    OPT_COUNT,
};

static const struct pol_opt_def proxy_opts[] = {
    [OPT_HOST] = {"host", POL_OPT_STRING, NULL, 0},
    [OPT_SOCKET_PATH] = {"socket_path", POL_OPT_STRING, NULL, 0},
    [OPT_KEEPALIVE] = {"keepalive", POL_OPT_BOOL, "0", 0},
    [OPT_TIMEOUT_MS] = {"timeout_ms", POL_OPT_INT, "20000", 0},
    [OPT_CONNECTIONS] = {"connections", POL_OPT_INT, "4", 0},
};
_Static_assert(sizeof proxy_opts / sizeof proxy_opts[0] == OPT_COUNT, "one def per option");

#define PROXY_CONNECTIONS_MAX 256
#define PROXY_TIMEOUT_MS_MAX 600000

/* The stream's framing: the reply ends with its first empty line ("\n" or "\r\n"). */
static ssize_t proxy_frame(void *arg, const char *buf, size_t len, bool eof, bool *keep)
{
    (void)arg;
    (void)eof;
    (void)keep;
    size_t pos = 0;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            return 0;
        size_t end = (size_t)(nl - buf);
        if (end == pos || (end == pos + 1 && buf[pos] == '\r'))
            return (ssize_t)(end + 1);
        pos = end + 1;
    }
}

static int proxy_create(struct pol_plugin *p, char *err, size_t err_len)
{
    const struct pol_opt_value *host = pol_opt(p, OPT_HOST);
    const struct pol_opt_value *path = pol_opt(p, OPT_SOCKET_PATH);
    long long conns = pol_opt(p, OPT_CONNECTIONS)->i;
    long long timeout = pol_opt(p, OPT_TIMEOUT_MS)->i;
    if (!host->set && !path->set) {
        snprintf(err, err_len, "no host and no socket_path configured!");
        return -1;
    }
    if (conns < 1 || conns > PROXY_CONNECTIONS_MAX) {
        snprintf(err, err_len, "connections must be 1..%d", PROXY_CONNECTIONS_MAX);
        return -1;
    }
    if (timeout < 1 || timeout > PROXY_TIMEOUT_MS_MAX) {
        snprintf(err, err_len, "timeout_ms must be 1..%d", PROXY_TIMEOUT_MS_MAX);
        return -1;
    }
    struct pol_netcall_def *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = path->set ? eng_stream_target_unix(path->text, &d->target, err, err_len)
                       : eng_stream_target_tcp(host->text, &d->target, err, err_len);
    if (rc != 0) {
        free(d);
        return -1;
    }
    eng_stream_config_defaults(&d->cfg);
    d->cfg.conns_max = (uint32_t)conns;
    d->cfg.idle_ms_max = pol_opt(p, OPT_KEEPALIVE)->b ? d->cfg.idle_ms_max : 0;
    d->cfg.frame = proxy_frame;
    d->timeout_ms = (uint32_t)timeout;
    pol_plugin_set_data(p, d);
    return 0;
}

static void proxy_destroy(struct pol_plugin *p)
{
    free(pol_plugin_data(p));
}

static bool is_name(const char *n, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(n, lit, len) == 0;
}

/* The request as 2.05 sends it, in the request arena; NULL when the arena is full. */
static char *encode_request(struct pol_req *r, size_t *out_len)
{
    size_t tlen = 0, ilen = 0;
    const char *type = pol_req_attr(r, "request", &tlen);
    const char *inst = pol_req_attr(r, "instance", &ilen);
    size_t n = pol_req_attr_count(r);
    size_t cap = sizeof("request=\ninstance=\n\n") + tlen + ilen;
    for (size_t i = 0; i < n; i++) {
        const char *name, *val;
        size_t nl, vl;
        pol_req_attr_at(r, i, &name, &nl, &val, &vl);
        cap += nl + vl + 2;
    }
    char *buf = pol_req_alloc(r, cap);
    if (!buf)
        return NULL;
    int o = snprintf(buf, cap, "request=%.*s\ninstance=%.*s\n", (int)tlen, type ? type : "",
                     (int)ilen, inst ? inst : "");
    ENG_ASSERT(o > 0 && (size_t)o < cap);
    size_t off = (size_t)o;
    for (size_t i = 0; i < n; i++) {
        const char *name, *val;
        size_t nl, vl;
        pol_req_attr_at(r, i, &name, &nl, &val, &vl);
        if (is_name(name, nl, "type") || is_name(name, nl, "instance"))
            continue;
        memcpy(buf + off, name, nl);
        off += nl;
        buf[off++] = '=';
        memcpy(buf + off, val, vl);
        off += vl;
        buf[off++] = '\n';
    }
    buf[off++] = '\n';
    ENG_ASSERT(off < cap);
    *out_len = off;
    return buf;
}

/* Finds the last `action` of a framed reply (Client::Response->new_from_fh). */
static enum pol_step proxy_answer(struct pol_req *r, const char *reply, size_t len)
{
    const char *action = NULL;
    size_t action_len = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(reply + pos, '\n', len - pos);
        ENG_ASSERT(nl != NULL); /* framed: ends with an empty line */
        size_t end = (size_t)(nl - reply);
        size_t line_len = end - pos;
        if (line_len > 0 && reply[end - 1] == '\r')
            line_len--;
        if (line_len == 0)
            break;
        const char *line = reply + pos;
        const char *eq = memchr(line, '=', line_len);
        if (!eq)
            return pol_req_fail(r, "error parsing response");
        if (eq - line == 6 && memcmp(line, "action", 6) == 0) {
            action = eq + 1;
            action_len = line_len - 7;
        }
        pos = end + 1;
    }
    if (!action)
        return pol_req_fail(r, "no action found in response");
    return pol_builtin_result(r, action, action_len);
}

static enum pol_step proxy_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct pol_netcall *c = req_state;
    if (!c->started) {
        /* 2.05 builds its client request with instance => undef, which fails the request
         * object's type check (Str): the plugin fails. Postfix always sends instance. */
        if (!pol_req_attr(r, "instance", NULL))
            return pol_req_fail(r, "no instance attribute in the request: cannot proxy it");
        size_t len = 0;
        char *buf = encode_request(r, &len);
        if (!buf)
            return pol_req_fail(r, "no memory left in the request arena for the request");
        return pol_netcall_start(p, r, c, buf, len);
    }
    ENG_ASSERT(c->finished);
    const struct pol_netcall_def *d = pol_plugin_data(p);
    if (c->status == -ECONNRESET)
        return pol_req_fail(r, "could not read response");
    if (pol_netcall_connect_error(c->status))
        return pol_req_fail(r, "could not connect to %s: %s (%s)",
                            d->target.addr.ss_family == AF_UNIX ? "socket" : "host",
                            pol_netcall_strerror(c->status), d->target.name);
    if (c->status != 0)
        return pol_req_fail(r, "request to %s failed: %s", d->target.name,
                            pol_netcall_strerror(c->status));
    return proxy_answer(r, c->reply, c->reply_len);
}

const struct pol_plugin_type pol_type_Proxy = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Proxy",
    .opts = proxy_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct pol_netcall),
    .create = proxy_create,
    .shard_start = pol_netcall_shard_start,
    .shard_stop = pol_netcall_shard_stop,
    .step = proxy_step,
    .destroy = proxy_destroy,
};
