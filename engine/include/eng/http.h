/*
 * eng/http.h: a small HTTP/1.1 server for operational endpoints (metrics, health, readiness)
 * on the engine's connections. Public API; knows nothing about policy.
 *
 * Only GET and HEAD without a body are served: enough for Prometheus and Kubernetes probes,
 * small enough to read in one sitting. The application binds the HTTP listeners as ordinary
 * engine listeners (struct eng_listen, tagged so it can tell them apart) and hands their
 * connections to this module: eng_http_conn_open from on_open, eng_http_conn_bytes from
 * on_bytes, eng_http_conn_closed from on_close. The per-connection state (struct
 * eng_http_conn) lives in the application's eng_conn_app area.
 *
 * Requests are parsed in place by eng_http_parse (pure: no I/O, no allocation) with strict
 * limits; a handler fills a body in a per-shard buffer allocated at eng_http_shard_start, and
 * the response goes out through eng_conn_send in the same loop turn. Errors: a malformed
 * request gets 400, an oversized head 431, a URI over the limit 414, a request with a body 413,
 * another method 405, another HTTP version 505; each is answered and the connection closed.
 * Keep-alive follows HTTP/1.1 (Connection: close, HTTP/1.0 without keep-alive), bounded by an
 * idle timeout and a request count per connection.
 *
 * Threads: an eng_http is created on the main thread and read-only afterwards; an
 * eng_http_shard and every eng_http_conn belong to one shard. Handlers run on the shard of the
 * connection, from eng_http_conn_bytes.
 */
#ifndef ENG_HTTP_H
#define ENG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * The parser (pure)
 */

struct eng_http_limits {
    uint32_t head_bytes_max;   /* request line + headers + blank line. Default 8192: N is
                                  accepted, N+1 gets 431. */
    uint32_t uri_bytes_max;    /* request target. Default 2048: N+1 gets 414. */
    uint32_t header_count_max; /* header fields. Default 64: N+1 gets 431. */
};

enum eng_http_parse_status {
    ENG_HTTP_NEED_MORE,   /* no complete head yet (and within the limits so far) */
    ENG_HTTP_REQUEST,     /* a complete head: the request is in *out */
    ENG_HTTP_BAD_REQUEST, /* 400 */
    ENG_HTTP_HEAD_TOO_LARGE, /* 431: head_bytes_max or header_count_max */
    ENG_HTTP_URI_TOO_LONG,   /* 414 */
    ENG_HTTP_HAS_BODY,       /* 413: Content-Length > 0 or Transfer-Encoding */
    ENG_HTTP_BAD_METHOD,     /* 405: only GET and HEAD */
    ENG_HTTP_BAD_VERSION,    /* 505: only HTTP/1.0 and HTTP/1.1 */
};

struct eng_http_req {
    const char *path; /* request target up to '?' (slices into the input) */
    size_t path_len;
    const char *query; /* after '?', NULL when none */
    size_t query_len;
    bool head;         /* HEAD: no body in the response */
    unsigned minor;    /* HTTP/1.minor */
    bool keep_alive;   /* the client allows another request on this connection */
    size_t head_bytes; /* bytes of the head, blank line included (what to consume) */
    const char *why;   /* when not ENG_HTTP_REQUEST / NEED_MORE: a short reason */
};

/* Fills every limit with its default. */
void eng_http_limits_defaults(struct eng_http_limits *lim);

/* Parses the request head at buf[0..len). Returns ENG_HTTP_NEED_MORE while the head is
 * incomplete and no limit is exceeded yet, ENG_HTTP_REQUEST with *out filled, or an error
 * status with out->why set. Lines end in CRLF or a bare LF. Never reads past buf + len. */
enum eng_http_parse_status eng_http_parse(const char *buf, size_t len,
                                          const struct eng_http_limits *lim,
                                          struct eng_http_req *out);

/* The status code an error status is answered with (400, 431, 414, 413, 405, 505). */
int eng_http_status_code(enum eng_http_parse_status st);

/* ---------------------------------------------------------------------------------------------
 * Response bodies
 */

struct eng_http_body {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow; /* something did not fit: the response becomes a 500 */
};

/* Appends; on overflow sets body->overflow and keeps what fitted. */
void eng_http_body_append(struct eng_http_body *b, const char *s, size_t len);
void eng_http_body_printf(struct eng_http_body *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------------------------------------
 * The server
 */

/* Fills body (and may set *content_type, default "text/plain; charset=utf-8") and returns the
 * status code (200, 503...). Runs on the connection's shard; must not block. */
typedef int eng_http_handler_fn(void *ctx, struct eng_shard *sh, const struct eng_http_req *req,
                                struct eng_http_body *body, const char **content_type);

struct eng_http_route {
    const char *path; /* exact match, e.g. "/metrics" */
    eng_http_handler_fn *fn;
    void *ctx;
};

#define ENG_HTTP_ROUTES_MAX 16

struct eng_http_config {
    const struct eng_http_route *routes; /* copied */
    size_t route_count;                  /* at most ENG_HTTP_ROUTES_MAX */
    struct eng_http_limits limits;
    size_t body_bytes_max;      /* per shard response buffer. Default 60 KiB (the body and the
                                   head must fit the engine's send_bytes_max together) */
    uint32_t idle_ms;           /* close an idle connection. Default 30000 */
    uint32_t requests_per_conn; /* then close. Default 1000 */
};

struct eng_http;
struct eng_http_shard;

/* Per connection, in the application's eng_conn_app area. Fields are private. */
struct eng_http_conn {
    struct eng_http_shard *hs;
    struct eng_conn *c;
    struct eng_timer idle;
    uint32_t served;
    bool closing;
};

/* Counters per shard (single writer, relaxed stores; read from any thread). */
struct eng_http_stats {
    uint64_t conns;          /* connections opened */
    uint64_t requests;       /* complete, valid request heads */
    uint64_t responses_2xx, responses_4xx, responses_5xx;
    uint64_t bad_requests;   /* every parse error (answered 4xx/5xx, closed) */
    uint64_t not_found;      /* 404 */
    uint64_t body_overflow;  /* handler output beyond body_bytes_max (500) */
    uint64_t send_failed;    /* eng_conn_send refused the response: closed */
    uint64_t idle_closed;    /* idle_ms expired */
};

/* Defaults for every field; routes NULL. */
void eng_http_config_defaults(struct eng_http_config *cfg);
/* Main thread. Returns 0, -EINVAL (route_count, a NULL path or handler) or -ENOMEM. */
int eng_http_create(const struct eng_http_config *cfg, struct eng_http **out);
void eng_http_destroy(struct eng_http *h);

/* On the shard's thread (shard_start): the shard's response buffer. 0 or -ENOMEM. */
int eng_http_shard_start(struct eng_http *h, struct eng_shard *sh, struct eng_http_shard **out);
/* On the shard's thread after its HTTP connections closed. */
void eng_http_shard_stop(struct eng_http_shard *hs);
/* Relaxed reads of a shard's counters (any thread). */
void eng_http_stats_get(const struct eng_http_shard *hs, struct eng_http_stats *out);

/* From on_open / on_bytes / on_close of a connection on an HTTP listener. conn_bytes follows
 * the on_bytes contract (returns the bytes consumed; may send and close). */
void eng_http_conn_open(struct eng_http_shard *hs, struct eng_http_conn *hc, struct eng_conn *c);
size_t eng_http_conn_bytes(struct eng_http_conn *hc, const char *buf, size_t len);
void eng_http_conn_closed(struct eng_http_conn *hc);

#ifdef __cplusplus
}
#endif

#endif
