/*
 * ctiprep.c: the CtIpRep plugin (spec 13.6): the Commtouch (Cyren) IP reputation of the client
 * address from ctipd over HTTP.
 *
 * Per mail (cached in the session under `NAME-result` as "ACTION" or "ACTION\nREFID"), an
 * HTTP/1.1 POST to `url` with 2.05's body (CRLF lines `x-ctch-request-type: classifyip`,
 * `x-ctch-pver: 1.0`, optionally `x-ctch-key: KEY`, an empty line, `x-ctch-ip: IP`). A status
 * other than 200 fails the plugin; the verdict is the text after `x-ctch-dm-action:` on the
 * first line that starts with it and ends with CR (Perl's /^x-ctch-dm-action:(.*)\r$/m), the
 * reference code likewise after `x-ctch-refid:`; no verdict fails. `accept`: nothing.
 * `permfail`/`tempfail`: the matching score once per mail (flag `NAME-score`; a score of "0" or
 * "" counts as none, as Perl's truth test), then the matching mode (user-configurable):
 * `reject` or `defer` answer `MODE MESSAGE` with %IP% and %REFID% replaced once each,
 * anything else only scores. Any other verdict fails the plugin. A request without
 * client_address fails before `enabled` is looked at, as in 2.05.
 *
 * The HTTP client: the URL must be http://HOST[:PORT][/PATH] (https is refused at start-up:
 * 2.05 needed LWP::Protocol::https for it); HOST is resolved once at start-up. Connections are
 * kept alive and reused (HTTP/1.1) unless ctipd says close; responses are parsed by
 * http_resp.c (Content-Length, chunked or close-delimited, at most 64 KiB). ringpolicyd's own
 * option `timeout_ms` (default 20000) bounds a call (2.05: LWP's 180 s, cut by request_timeout).
 *
 * Owns its target, request head and keys (create .. destroy, main thread) and per shard one
 * stream (netcall.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <eng/assert.h>

#include "plugins/common.h"
#include "plugins/http_resp.h"
#include "plugins/netcall.h"

enum {
    OPT_ENABLED,
    OPT_URL,
    OPT_KEY,
    OPT_REJECT_MESSAGE,
    OPT_DEFER_MESSAGE,
    OPT_PERMFAIL_SCORE,
    OPT_PERMFAIL_MODE,
    OPT_TEMPFAIL_SCORE,
    OPT_TEMPFAIL_MODE,
    OPT_TIMEOUT_MS,
    OPT_COUNT,
};

static const struct pol_opt_def ctip_opts[] = {
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_URL] = {"url", POL_OPT_STRING, "http://localhost:8080/ctipd/iprep", 0},
    [OPT_KEY] = {"key", POL_OPT_STRING, NULL, 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "550 delivery from %IP% is rejected. Check at "
                            "http://www.commtouch.com/Site/Resources/Check_IP_Reputation.asp. "
                            "Reference code: %REFID%",
                            0},
    [OPT_DEFER_MESSAGE] = {"defer_message", POL_OPT_TEMPLATE,
                           "450 delivery from %IP% is deferred,repeatedly. Send again or check "
                           "at http://www.commtouch.com/Site/Resources/Check_IP_Reputation.asp. "
                           "Reference code: %REFID%",
                           0},
    [OPT_PERMFAIL_SCORE] = {"permfail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_PERMFAIL_MODE] = {"permfail_mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_TEMPFAIL_SCORE] = {"tempfail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_TEMPFAIL_MODE] = {"tempfail_mode", POL_OPT_STRING, "defer", POL_OPT_UC},
    [OPT_TIMEOUT_MS] = {"timeout_ms", POL_OPT_INT, "20000", 0},
};
_Static_assert(sizeof ctip_opts / sizeof ctip_opts[0] == OPT_COUNT, "one def per option");

#define CTIP_TIMEOUT_MS_MAX 600000
#define CTIP_RESPONSE_BYTES_MAX 65536

struct ctip_data {
    struct pol_netcall_def def; /* first: netcall.h */
    char *head;                 /* "POST PATH HTTP/1.1\r\nHost: ...\r\n...Content-Length: " */
    char *body_head;            /* the body up to the IP */
    char *result_key, *score_key;
};

static ssize_t ctip_frame(void *arg, const char *buf, size_t len, bool eof, bool *keep)
{
    (void)arg;
    struct pol_http_resp h;
    ssize_t n = pol_http_resp_parse(buf, len, eof, &h, NULL);
    if (n > 0)
        *keep = h.keep;
    return n == -EMSGSIZE ? -EPROTO : n;
}

/* http://HOST[:PORT][/PATH]: the target and the request head. */
static int parse_url(const char *url, struct ctip_data *d, char *err, size_t err_len)
{
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(err, err_len, "url %s: only http:// URLs are supported", url);
        return -1;
    }
    const char *auth = url + 7;
    size_t auth_len = strcspn(auth, "/?#");
    const char *path = auth + auth_len;
    if (auth_len == 0 || auth_len > 255 || *path == '#') {
        snprintf(err, err_len, "url %s: no host", url);
        return -1;
    }
    char hostport[300];
    memcpy(hostport, auth, auth_len);
    hostport[auth_len] = '\0';
    const char *close_br = hostport[0] == '[' ? strchr(hostport, ']') : NULL;
    const char *colon = strrchr(close_br ? close_br : hostport, ':');
    char target[310];
    snprintf(target, sizeof(target), colon ? "%s" : "%s:80", hostport);
    if (eng_stream_target_tcp(target, &d->def.target, err, err_len) != 0)
        return -1;
    size_t path_len = strcspn(path, "#");
    for (size_t i = 0; i < path_len; i++)
        if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f) {
            snprintf(err, err_len, "url %s: spaces or control characters in the path", url);
            return -1;
        }
    /* LWP omits the default port from Host. */
    size_t host_len = colon && strcmp(colon, ":80") == 0 ? (size_t)(colon - hostport) : auth_len;
    if (asprintf(&d->head,
                 "POST %s%.*s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: ringpolicyd/CtIpRep\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
                 path_len ? "" : "/", (int)path_len, path, (int)host_len, hostport) < 0)
        d->head = NULL;
    return 0;
}

static void ctip_destroy(struct pol_plugin *p)
{
    struct ctip_data *d = pol_plugin_data(p);
    if (!d)
        return;
    free(d->head);
    free(d->body_head);
    free(d->result_key);
    free(d->score_key);
    free(d);
}

static int ctip_create(struct pol_plugin *p, char *err, size_t err_len)
{
    long long timeout = pol_opt(p, OPT_TIMEOUT_MS)->i;
    if (timeout < 1 || timeout > CTIP_TIMEOUT_MS_MAX) {
        snprintf(err, err_len, "timeout_ms must be 1..%d", CTIP_TIMEOUT_MS_MAX);
        return -1;
    }
    struct ctip_data *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, d);
    if (parse_url(pol_opt(p, OPT_URL)->text, d, err, err_len) != 0)
        goto fail;
    const struct pol_opt_value *key = pol_opt(p, OPT_KEY);
    if (asprintf(&d->body_head, "x-ctch-request-type: classifyip\r\nx-ctch-pver: 1.0\r\n%s%s%s"
                                "\r\nx-ctch-ip: ",
                 key->set ? "x-ctch-key: " : "", key->set ? key->text : "",
                 key->set ? "\r\n" : "") < 0)
        d->body_head = NULL;
    if (asprintf(&d->result_key, "%s-result", pol_plugin_name(p)) < 0)
        d->result_key = NULL;
    if (asprintf(&d->score_key, "%s-score", pol_plugin_name(p)) < 0)
        d->score_key = NULL;
    if (!d->head || !d->body_head || !d->result_key || !d->score_key) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    eng_stream_config_defaults(&d->def.cfg);
    d->def.cfg.response_bytes_max = CTIP_RESPONSE_BYTES_MAX;
    d->def.cfg.frame = ctip_frame;
    d->def.timeout_ms = (uint32_t)timeout;
    return 0;
fail:
    ctip_destroy(p);
    pol_plugin_set_data(p, NULL);
    return -1;
}

/* Perl's /^PREFIX(.*)\r$/m on the body: the first line starting with prefix whose text ends
 * with CR; the capture without that CR. NULL when no line matches. */
static const char *header_like(const char *body, size_t len, const char *prefix, size_t *out_len)
{
    size_t plen = strlen(prefix), pos = 0;
    while (pos <= len) {
        const char *nl = memchr(body + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - body) : len;
        if (end - pos >= plen + 1 && memcmp(body + pos, prefix, plen) == 0 && body[end - 1] == '\r') {
            *out_len = end - 1 - pos - plen;
            return body + pos + plen;
        }
        if (!nl)
            break;
        pos = end + 1;
    }
    return NULL;
}

/* The call's outcome: the verdict stored in the session as "ACTION[\nREFID]". */
static enum pol_step ctip_answer(struct pol_plugin *p, struct pol_req *r, struct pol_netcall *c)
{
    struct ctip_data *d = pol_plugin_data(p);
    if (c->status != 0)
        return pol_req_fail(r, "error while accessing Commtouch ctipd: %s (%s)",
                            pol_netcall_strerror(c->status), d->def.target.name);
    struct pol_http_resp h;
    ssize_t n = pol_http_resp_parse(c->reply, c->reply_len, true, &h, NULL);
    ENG_ASSERT(n > 0); /* framed by the same parser */
    if (h.status != 200)
        return pol_req_fail(r, "error while accessing Commtouch ctipd: %d %.*s", h.status,
                            (int)h.reason_len, h.reason);
    char *body = pol_req_alloc(r, h.msg_len + 1);
    ssize_t blen = body ? pol_http_resp_body(c->reply, &h, body, h.msg_len + 1) : -ENOMEM;
    if (blen < 0)
        return pol_req_fail(r, "no memory left in the request arena for the response");
    size_t alen = 0, rlen = 0;
    const char *action = header_like(body, (size_t)blen, "x-ctch-dm-action:", &alen);
    const char *refid = header_like(body, (size_t)blen, "x-ctch-refid:", &rlen);
    if (!action)
        return pol_req_fail(r, "could not find action in response: %.*s", (int)blen, body);
    char *val = refid ? pol_req_printf(r, "%.*s\n%.*s", (int)alen, action, (int)rlen, refid)
                      : pol_req_strndup(r, action, alen);
    if (!val || pol_session_set(r, d->result_key, val, strlen(val)) != 0)
        return pol_req_fail(r, "cannot store session key %s: out of memory", d->result_key);
    return POL_NEXT;
}

static bool perl_true(const struct pol_opt_value *v)
{
    return v->set && v->text_len > 0 && !(v->text_len == 1 && v->text[0] == '0');
}

static bool text_is(const char *s, size_t len, const char *lit)
{
    return s && len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static enum pol_step ctip_verdict(struct pol_plugin *p, struct pol_req *r, const char *ip,
                                  const char *cached, size_t cached_len)
{
    struct ctip_data *d = pol_plugin_data(p);
    const char *nl = memchr(cached, '\n', cached_len);
    size_t alen = nl ? (size_t)(nl - cached) : cached_len;
    const char *refid = nl ? pol_req_strndup(r, nl + 1, cached_len - alen - 1) : NULL;
    if (nl && !refid)
        return pol_req_fail(r, "no memory left in the request arena");
    if (text_is(cached, alen, "accept")) {
        pol_log(p, r, "CtIpRep: sender IP is ok");
        return POL_NEXT;
    }
    bool perm = text_is(cached, alen, "permfail");
    if (!perm && !text_is(cached, alen, "tempfail"))
        return pol_req_fail(r, "unknown ctiprep action: %.*s", (int)alen, cached);
    const struct pol_opt_value *score = pol_opt(p, perm ? OPT_PERMFAIL_SCORE : OPT_TEMPFAIL_SCORE);
    if (perl_true(score) && !pol_req_is_already_done(r, d->score_key) &&
        pol_score_add(r, p, NULL, score->num, score->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    size_t mlen = 0;
    const char *mode = pol_uc(r, p, perm ? OPT_PERMFAIL_MODE : OPT_TEMPFAIL_MODE, &mlen);
    pol_log(p, r, "CtIpRep: result=%.*s, mode=%.*s", (int)alen, cached, (int)mlen,
            mode ? mode : "");
    bool reject = text_is(mode, mlen, "reject");
    if (!reject && !text_is(mode, mlen, "defer"))
        return POL_NEXT;
    const char *tmpl = pol_opt(p, reject ? OPT_REJECT_MESSAGE : OPT_DEFER_MESSAGE)->text;
    const struct pol_tvar vars[] = {{"IP", ip}, {"REFID", refid}};
    char *msg = pol_template_expand(r, tmpl, vars, 2);
    if (!msg)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_resultf(r, true, "%s %s", reject ? "reject" : "defer", msg) == 0
               ? POL_NEXT
               : pol_req_fail(r, "no memory left in the request arena for the action");
}

static enum pol_step ctip_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct pol_netcall *c = req_state;
    struct ctip_data *d = pol_plugin_data(p);
    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    if (!ip)
        return pol_req_fail(r, "no client_address in request!");
    if (!c->started) {
        if (!pol_uc_enabled(r, p, OPT_ENABLED))
            return POL_NEXT;
        size_t cached_len = 0;
        const char *cached = pol_session_get(r, d->result_key, &cached_len);
        if (cached)
            return ctip_verdict(p, r, ip, cached, cached_len);
        size_t body_len = strlen(d->body_head) + ip_len + 2;
        char *req = pol_req_printf(r, "%s%zu\r\n\r\n%s%s\r\n", d->head, body_len, d->body_head, ip);
        if (!req)
            return pol_req_fail(r, "no memory left in the request arena for the request");
        return pol_netcall_start(p, r, c, req, strlen(req));
    }
    ENG_ASSERT(c->finished);
    enum pol_step s = ctip_answer(p, r, c);
    if (s != POL_NEXT)
        return s;
    size_t cached_len = 0;
    const char *cached = pol_session_get(r, d->result_key, &cached_len);
    ENG_ASSERT(cached != NULL);
    return ctip_verdict(p, r, ip, cached, cached_len);
}

const struct pol_plugin_type pol_type_CtIpRep = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "CtIpRep",
    .opts = ctip_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct pol_netcall),
    .create = ctip_create,
    .shard_start = pol_netcall_shard_start,
    .shard_stop = pol_netcall_shard_stop,
    .step = ctip_step,
    .destroy = ctip_destroy,
};
