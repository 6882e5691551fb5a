/*
 * http.c: the HTTP/1.1 GET server for operational endpoints (see eng/http.h).
 *
 * Two halves: eng_http_parse, a pure parser of one request head (haproxy h1.c's split: no I/O,
 * no allocation, a reason for every refusal), and the connection layer, which parses what the
 * engine presents, calls the route's handler with the shard's response buffer and queues head
 * and body with eng_conn_send. One response per request, in order; pipelined requests are
 * answered from the same on_bytes call.
 *
 * Owns, per shard, one response buffer (body_bytes_max, allocated at eng_http_shard_start)
 * and the counters; per connection only the idle timer (in the application's area). A handler
 * runs synchronously; there is no asynchronous response. Limits and their defaults are in
 * eng/http.h; every refusal is counted (bad_requests) and closes the connection after the
 * error response. Known limits: no chunked requests or request bodies at all, no absolute-form
 * targets, no percent-decoding of the path (routes match the raw target).
 */
#include "eng/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eng/assert.h"

#define HTTP_HEAD_RESERVE_BYTES 512u /* status line and our few headers */

_Static_assert(ENG_HTTP_ROUTES_MAX > 0, "routes");

struct eng_http {
    struct eng_http_route routes[ENG_HTTP_ROUTES_MAX];
    size_t route_count;
    struct eng_http_config cfg;
};

struct eng_http_shard {
    const struct eng_http *h;
    struct eng_shard *sh;
    char *body;
    struct eng_http_stats stats;
};

#define HTTP_STAT_INC(hs, f) __atomic_store_n(&(hs)->stats.f, (hs)->stats.f + 1, __ATOMIC_RELAXED)

/* ---------------------------------------------------------------------------------------------
 * Parser
 */

void eng_http_limits_defaults(struct eng_http_limits *lim)
{
    lim->head_bytes_max = 8192;
    lim->uri_bytes_max = 2048;
    lim->header_count_max = 64;
}

int eng_http_status_code(enum eng_http_parse_status st)
{
    switch (st) {
    case ENG_HTTP_HEAD_TOO_LARGE:
        return 431;
    case ENG_HTTP_URI_TOO_LONG:
        return 414;
    case ENG_HTTP_HAS_BODY:
        return 413;
    case ENG_HTTP_BAD_METHOD:
        return 405;
    case ENG_HTTP_BAD_VERSION:
        return 505;
    default:
        return 400;
    }
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static enum eng_http_parse_status fail(struct eng_http_req *out, enum eng_http_parse_status st,
                                       const char *why)
{
    out->why = why;
    return st;
}

/* The end of the head (index just past the blank line), 0 when not there yet. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* One line [p, end) of the head without its line ending; *next after it. -1: a bare CR. */
static int line_next(const char *p, const char *end, const char **line_end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    ENG_ASSERT(nl != NULL); /* head_end found the blank line */
    const char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    if (memchr(p, '\r', (size_t)(e - p)))
        return -1;
    *line_end = e;
    *next = nl + 1;
    return 0;
}

static enum eng_http_parse_status request_line(const char *p, const char *e,
                                               const struct eng_http_limits *lim,
                                               struct eng_http_req *out)
{
    const char *sp1 = memchr(p, ' ', (size_t)(e - p));
    if (!sp1 || sp1 == p)
        return fail(out, ENG_HTTP_BAD_REQUEST, "malformed request line");
    for (const char *q = p; q < sp1; q++)
        if (!is_tchar((unsigned char)*q))
            return fail(out, ENG_HTTP_BAD_REQUEST, "malformed method");
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(e - t));
    if (!sp2 || sp2 == t)
        return fail(out, ENG_HTTP_BAD_REQUEST, "malformed request line");
    const char *v = sp2 + 1;
    size_t vl = (size_t)(e - v);
    if (vl != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9')
        return fail(out, ENG_HTTP_BAD_REQUEST, "malformed HTTP version");
    if (v[5] != '1')
        return fail(out, ENG_HTTP_BAD_VERSION, "only HTTP/1.0 and HTTP/1.1 are served");
    out->minor = (unsigned)(v[7] - '0');
    size_t ml = (size_t)(sp1 - p);
    bool get = ml == 3 && memcmp(p, "GET", 3) == 0;
    out->head = ml == 4 && memcmp(p, "HEAD", 4) == 0;
    if (!get && !out->head)
        return fail(out, ENG_HTTP_BAD_METHOD, "only GET and HEAD are served");
    size_t tl = (size_t)(sp2 - t);
    if (tl > lim->uri_bytes_max)
        return fail(out, ENG_HTTP_URI_TOO_LONG, "request target too long");
    if (t[0] != '/')
        return fail(out, ENG_HTTP_BAD_REQUEST, "request target must start with /");
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return fail(out, ENG_HTTP_BAD_REQUEST, "invalid byte in request target");
    const char *qm = memchr(t, '?', tl);
    out->path = t;
    out->path_len = qm ? (size_t)(qm - t) : tl;
    out->query = qm ? qm + 1 : NULL;
    out->query_len = qm ? tl - out->path_len - 1 : 0;
    return ENG_HTTP_REQUEST;
}

static bool name_is(const char *n, size_t nl, const char *want)
{
    return nl == strlen(want) && strncasecmp(n, want, nl) == 0;
}

/* Connection: a comma list of tokens; close wins. */
static void connection_tokens(const char *v, size_t vl, bool *close, bool *keep)
{
    size_t i = 0;
    while (i < vl) {
        while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < vl && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (name_is(v + s, i - s, "close"))
            *close = true;
        else if (name_is(v + s, i - s, "keep-alive"))
            *keep = true;
    }
}

struct head_state {
    bool conn_close, conn_keep, host;
    bool cl_seen;
    unsigned long long cl;
};

static enum eng_http_parse_status header_line(const char *p, const char *e, struct head_state *hs,
                                              struct eng_http_req *out)
{
    if (*p == ' ' || *p == '\t')
        return fail(out, ENG_HTTP_BAD_REQUEST, "folded header line");
    const char *colon = memchr(p, ':', (size_t)(e - p));
    if (!colon || colon == p)
        return fail(out, ENG_HTTP_BAD_REQUEST, "malformed header line");
    for (const char *q = p; q < colon; q++)
        if (!is_tchar((unsigned char)*q))
            return fail(out, ENG_HTTP_BAD_REQUEST, "malformed header name");
    const char *v = colon + 1, *ve = e;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    for (const char *q = v; q < ve; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t')
            return fail(out, ENG_HTTP_BAD_REQUEST, "control character in header value");
    size_t nl = (size_t)(colon - p), vl = (size_t)(ve - v);
    if (name_is(p, nl, "Host")) {
        if (hs->host)
            return fail(out, ENG_HTTP_BAD_REQUEST, "more than one Host header");
        hs->host = true;
    } else if (name_is(p, nl, "Connection")) {
        connection_tokens(v, vl, &hs->conn_close, &hs->conn_keep);
    } else if (name_is(p, nl, "Transfer-Encoding")) {
        return fail(out, ENG_HTTP_HAS_BODY, "request bodies are not accepted");
    } else if (name_is(p, nl, "Content-Length")) {
        unsigned long long n = 0;
        if (vl == 0 || vl > 18)
            return fail(out, ENG_HTTP_BAD_REQUEST, "malformed Content-Length");
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9')
                return fail(out, ENG_HTTP_BAD_REQUEST, "malformed Content-Length");
            n = n * 10 + (unsigned)(v[i] - '0');
        }
        if (hs->cl_seen && hs->cl != n)
            return fail(out, ENG_HTTP_BAD_REQUEST, "conflicting Content-Length headers");
        hs->cl_seen = true;
        hs->cl = n;
    }
    return ENG_HTTP_REQUEST;
}

enum eng_http_parse_status eng_http_parse(const char *buf, size_t len,
                                          const struct eng_http_limits *lim,
                                          struct eng_http_req *out)
{
    memset(out, 0, sizeof(*out));
    size_t end = head_end(buf, len > lim->head_bytes_max ? lim->head_bytes_max : len);
    if (end == 0) {
        if (len >= lim->head_bytes_max)
            return fail(out, ENG_HTTP_HEAD_TOO_LARGE, "request head too large");
        /* Refuse garbage early instead of waiting for a blank line that never comes. */
        if (len > 0 && !is_tchar((unsigned char)buf[0]))
            return fail(out, ENG_HTTP_BAD_REQUEST, "malformed request line");
        return ENG_HTTP_NEED_MORE;
    }
    const char *p = buf, *e = buf + end, *le = NULL, *next = NULL;
    if (line_next(p, e, &le, &next) != 0)
        return fail(out, ENG_HTTP_BAD_REQUEST, "bare CR in request line");
    enum eng_http_parse_status st = request_line(p, le, lim, out);
    if (st != ENG_HTTP_REQUEST)
        return st;
    struct head_state hs = {0};
    uint32_t count = 0;
    for (p = next; p < e; p = next) {
        if (line_next(p, e, &le, &next) != 0)
            return fail(out, ENG_HTTP_BAD_REQUEST, "bare CR in header");
        if (le == p) /* the blank line */
            break;
        if (++count > lim->header_count_max)
            return fail(out, ENG_HTTP_HEAD_TOO_LARGE, "too many header fields");
        if ((st = header_line(p, le, &hs, out)) != ENG_HTTP_REQUEST)
            return st;
    }
    if (hs.cl_seen && hs.cl > 0)
        return fail(out, ENG_HTTP_HAS_BODY, "request bodies are not accepted");
    if (out->minor >= 1 && !hs.host)
        return fail(out, ENG_HTTP_BAD_REQUEST, "HTTP/1.1 request without Host");
    out->keep_alive = out->minor >= 1 ? !hs.conn_close : (hs.conn_keep && !hs.conn_close);
    out->head_bytes = end;
    out->why = NULL;
    return ENG_HTTP_REQUEST;
}

/* ---------------------------------------------------------------------------------------------
 * Bodies
 */

void eng_http_body_append(struct eng_http_body *b, const char *s, size_t len)
{
    size_t room = b->cap - b->len;
    if (len > room) {
        b->overflow = true;
        len = room;
    }
    memcpy(b->buf + b->len, s, len);
    b->len += len;
}

void eng_http_body_printf(struct eng_http_body *b, const char *fmt, ...)
{
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        b->overflow = true;
        return; /* the partial line is not kept: len is unchanged */
    }
    b->len += (size_t)n;
}

/* ---------------------------------------------------------------------------------------------
 * Server (main thread)
 */

void eng_http_config_defaults(struct eng_http_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    eng_http_limits_defaults(&cfg->limits);
    cfg->body_bytes_max = 60u << 10;
    cfg->idle_ms = 30000;
    cfg->requests_per_conn = 1000;
}

int eng_http_create(const struct eng_http_config *cfg, struct eng_http **out)
{
    if (cfg->route_count > ENG_HTTP_ROUTES_MAX || (cfg->route_count && !cfg->routes) ||
        cfg->body_bytes_max == 0)
        return -EINVAL;
    for (size_t i = 0; i < cfg->route_count; i++)
        if (!cfg->routes[i].path || !cfg->routes[i].fn)
            return -EINVAL;
    struct eng_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->cfg = *cfg;
    h->route_count = cfg->route_count;
    if (cfg->route_count)
        memcpy(h->routes, cfg->routes, cfg->route_count * sizeof(*h->routes));
    h->cfg.routes = h->routes;
    *out = h;
    return 0;
}

void eng_http_destroy(struct eng_http *h)
{
    free(h);
}

/* ---------------------------------------------------------------------------------------------
 * Per shard
 */

int eng_http_shard_start(struct eng_http *h, struct eng_shard *sh, struct eng_http_shard **out)
{
    struct eng_http_shard *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return -ENOMEM;
    hs->body = malloc(h->cfg.body_bytes_max);
    if (!hs->body) {
        free(hs);
        return -ENOMEM;
    }
    hs->h = h;
    hs->sh = sh;
    *out = hs;
    return 0;
}

void eng_http_shard_stop(struct eng_http_shard *hs)
{
    if (!hs)
        return;
    free(hs->body);
    free(hs);
}

void eng_http_stats_get(const struct eng_http_shard *hs, struct eng_http_stats *out)
{
    const uint64_t *src = (const uint64_t *)&hs->stats;
    uint64_t *dst = (uint64_t *)out;
    _Static_assert(sizeof(*out) % sizeof(uint64_t) == 0, "all uint64_t");
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

static void idle_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_http_conn *hc = (void *)((char *)t - offsetof(struct eng_http_conn, idle));
    HTTP_STAT_INC(hc->hs, idle_closed);
    hc->closing = true;
    eng_conn_close(hc->c);
}

void eng_http_conn_open(struct eng_http_shard *hs, struct eng_http_conn *hc, struct eng_conn *c)
{
    ENG_ASSERT(eng_conn_shard(c) == hs->sh);
    hc->hs = hs;
    hc->c = c;
    hc->served = 0;
    hc->closing = false;
    eng_timer_init(&hc->idle, idle_fired);
    if (hs->h->cfg.idle_ms)
        eng_timer_arm(hs->sh, &hc->idle, hs->h->cfg.idle_ms);
    HTTP_STAT_INC(hs, conns);
}

void eng_http_conn_closed(struct eng_http_conn *hc)
{
    ENG_ASSERT(hc->hs != NULL);
    eng_timer_cancel(hc->hs->sh, &hc->idle);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

/* Queues one response; false when the engine refused it (the connection is closed then). */
static bool respond(struct eng_http_conn *hc, int code, const char *ctype, const char *body,
                    size_t body_len, bool head_only, bool keep)
{
    struct eng_http_shard *hs = hc->hs;
    char h[HTTP_HEAD_RESERVE_BYTES];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Cache-Control: no-store\r\nConnection: %s\r\n\r\n",
                     code, reason_of(code), ctype, body_len,
                     code == 405 ? "Allow: GET, HEAD\r\n" : "", keep ? "keep-alive" : "close");
    ENG_ASSERT(n > 0 && (size_t)n < sizeof(h));
    if (code >= 500)
        HTTP_STAT_INC(hs, responses_5xx);
    else if (code >= 400)
        HTTP_STAT_INC(hs, responses_4xx);
    else
        HTTP_STAT_INC(hs, responses_2xx);
    if (eng_conn_send(hc->c, h, (size_t)n) != 0 ||
        (!head_only && body_len > 0 && eng_conn_send(hc->c, body, body_len) != 0)) {
        HTTP_STAT_INC(hs, send_failed);
        hc->closing = true;
        eng_conn_close(hc->c);
        return false;
    }
    return true;
}

static const struct eng_http_route *route_find(const struct eng_http *h,
                                               const struct eng_http_req *rq)
{
    for (size_t i = 0; i < h->route_count; i++)
        if (strlen(h->routes[i].path) == rq->path_len &&
            memcmp(h->routes[i].path, rq->path, rq->path_len) == 0)
            return &h->routes[i];
    return NULL;
}

/* Answers one parsed request; false when the connection is closing. */
static bool serve(struct eng_http_conn *hc, const struct eng_http_req *rq)
{
    struct eng_http_shard *hs = hc->hs;
    const struct eng_http *h = hs->h;
    HTTP_STAT_INC(hs, requests);
    hc->served++;
    bool keep = rq->keep_alive && hc->served < h->cfg.requests_per_conn;
    const struct eng_http_route *rt = route_find(h, rq);
    if (!rt) {
        HTTP_STAT_INC(hs, not_found);
        static const char nf[] = "not found\n";
        if (!respond(hc, 404, "text/plain; charset=utf-8", nf, sizeof(nf) - 1, rq->head, keep))
            return false;
    } else {
        struct eng_http_body b = {.buf = hs->body, .cap = h->cfg.body_bytes_max};
        const char *ctype = "text/plain; charset=utf-8";
        int code = rt->fn(rt->ctx, hs->sh, rq, &b, &ctype);
        ENG_ASSERT(code >= 100 && code <= 599);
        ENG_ASSERT(b.len <= b.cap);
        if (b.overflow) {
            HTTP_STAT_INC(hs, body_overflow);
            b.len = (size_t)snprintf(hs->body, h->cfg.body_bytes_max,
                                     "response larger than %zu bytes\n", h->cfg.body_bytes_max);
            code = 500;
            ctype = "text/plain; charset=utf-8";
        }
        if (!respond(hc, code, ctype, hs->body, b.len, rq->head, keep))
            return false;
    }
    if (!keep) {
        hc->closing = true;
        eng_conn_close(hc->c);
        return false;
    }
    return true;
}

size_t eng_http_conn_bytes(struct eng_http_conn *hc, const char *buf, size_t len)
{
    struct eng_http_shard *hs = hc->hs;
    ENG_ASSERT(hs != NULL);
    if (hc->closing)
        return len; /* after our close: whatever still arrives is dropped */
    size_t used = 0;
    while (used < len) {
        struct eng_http_req rq;
        enum eng_http_parse_status st = eng_http_parse(buf + used, len - used, &hs->h->cfg.limits, &rq);
        if (st == ENG_HTTP_NEED_MORE)
            break;
        if (st != ENG_HTTP_REQUEST) {
            HTTP_STAT_INC(hs, bad_requests);
            char msg[128];
            int n = snprintf(msg, sizeof(msg), "%s\n", rq.why ? rq.why : "bad request");
            respond(hc, eng_http_status_code(st), "text/plain; charset=utf-8", msg, (size_t)n,
                    false, false);
            hc->closing = true;
            eng_conn_close(hc->c);
            return len;
        }
        used += rq.head_bytes;
        if (!serve(hc, &rq))
            return len;
    }
    if (used > 0 && hs->h->cfg.idle_ms)
        eng_timer_arm(hs->sh, &hc->idle, hs->h->cfg.idle_ms);
    return used;
}
