/*
 * http_parse.c: the pure half of the HTTP server (eng/http.h): eng_http_parse, one request head
 * parsed in place (no I/O, no allocation, a reason for every refusal, never a read past the
 * input), and the response body helpers. Callable from any thread; used by http.c and by the
 * fuzz target tests/fuzz/fuzz_http.c.
 *
 * Strict on purpose (the clients are Prometheus, kubelet and curl): origin-form targets only,
 * Host required for HTTP/1.1, no obs-fold, no bare CR, no request bodies.
 */
#include "eng/http.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "eng/assert.h"

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
