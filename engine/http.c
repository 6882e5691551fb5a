/*
 * http.c: the HTTP/1.1 GET server for operational endpoints (see eng/http.h).
 *
 * The connection layer: parses what the engine presents with eng_http_parse (http_parse.c, the
 * pure half, as haproxy splits h1.c from mux_h1.c), calls the route's handler with the shard's
 * response buffer and queues head and body with eng_conn_send. One response per request, in order; pipelined requests are
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
