/*
 * http_resp.c: the HTTP/1.x response parser (http_resp.h). Pure and re-entrant: every call
 * parses the bytes received so far from the start (responses are small; the head is at most
 * POL_HTTP_HEAD_BYTES_MAX), so no state survives between calls. Fuzzed by
 * tests/fuzz/fuzz_http_resp.c when present.
 */
#include "plugins/http_resp.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define CHUNK_SIZE_DIGITS_MAX 8 /* 4 GiB - 1: far beyond any response we accept */

/* One line of buf from pos: its end without "\r?\n" and the start of the next line. False
 * when no LF follows within len. */
static bool line_at(const char *buf, size_t len, size_t pos, size_t *end, size_t *next)
{
    const char *nl = memchr(buf + pos, '\n', len - pos);
    if (!nl)
        return false;
    *next = (size_t)(nl - buf) + 1;
    *end = (size_t)(nl - buf);
    if (*end > pos && buf[*end - 1] == '\r')
        (*end)--;
    return true;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static ssize_t fail(size_t *err_pos, size_t pos)
{
    if (err_pos)
        *err_pos = pos;
    return -EPROTO;
}

/* "HTTP/1.x DDD[ reason]" in buf[0..end). */
static ssize_t status_line(const char *b, size_t end, struct pol_http_resp *h, size_t *err_pos)
{
    if (end < 12 || memcmp(b, "HTTP/1.", 7) != 0)
        return fail(err_pos, 0);
    if (b[7] != '0' && b[7] != '1')
        return fail(err_pos, 7);
    if (b[8] != ' ')
        return fail(err_pos, 8);
    if (!is_digit(b[9]) || !is_digit(b[10]) || !is_digit(b[11]) || b[9] == '0')
        return fail(err_pos, 9);
    if (end > 12 && b[12] != ' ')
        return fail(err_pos, 12);
    for (size_t i = 13; i < end; i++)
        if ((unsigned char)b[i] < 0x20 && b[i] != '\t')
            return fail(err_pos, i);
    h->minor = b[7] - '0';
    h->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    h->reason = end > 12 ? b + 13 : b + end;
    h->reason_len = end > 12 ? end - 13 : 0;
    h->keep = h->minor == 1;
    return 0;
}

static bool value_is(const char *v, size_t len, const char *lit)
{
    return len == strlen(lit) && strncasecmp(v, lit, len) == 0;
}

/* Connection: a comma list of tokens; close and keep-alive matter. */
static void connection_header(const char *v, size_t len, struct pol_http_resp *h)
{
    size_t i = 0;
    while (i < len) {
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (value_is(v + s, e - s, "close"))
            h->keep = false;
        else if (value_is(v + s, e - s, "keep-alive") && h->minor == 0)
            h->keep = true;
        i++;
    }
}

static ssize_t header_line(const char *b, size_t pos, size_t end, struct pol_http_resp *h,
                           size_t *err_pos)
{
    size_t n = pos;
    while (n < end && is_tchar((unsigned char)b[n]))
        n++;
    if (n == pos || n == end || b[n] != ':')
        return fail(err_pos, n);
    size_t vs = n + 1, ve = end;
    while (vs < ve && (b[vs] == ' ' || b[vs] == '\t'))
        vs++;
    while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
        ve--;
    for (size_t i = vs; i < ve; i++)
        if ((unsigned char)b[i] < 0x20 && b[i] != '\t')
            return fail(err_pos, i);
    const char *name = b + pos, *v = b + vs;
    size_t name_len = n - pos, vlen = ve - vs;
    if (value_is(name, name_len, "content-length")) {
        if (vlen == 0 || vlen > 10)
            return fail(err_pos, vs);
        uint64_t x = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (!is_digit(v[i]))
                return fail(err_pos, vs + i);
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        if (x > POL_HTTP_CONTENT_LENGTH_MAX || (h->has_length && h->content_length != x))
            return fail(err_pos, vs);
        h->has_length = true;
        h->content_length = (size_t)x;
    } else if (value_is(name, name_len, "transfer-encoding")) {
        if (!value_is(v, vlen, "chunked"))
            return fail(err_pos, vs);
        h->chunked = true;
    } else if (value_is(name, name_len, "connection")) {
        connection_header(v, vlen, h);
    }
    return 0;
}

/* The head: status line, headers, empty line. Returns its length, 0 or an error. */
static ssize_t parse_head(const char *b, size_t len, bool eof, struct pol_http_resp *h,
                          size_t *err_pos)
{
    size_t end, next;
    size_t limit = len < POL_HTTP_HEAD_BYTES_MAX ? len : POL_HTTP_HEAD_BYTES_MAX;
    if (!line_at(b, limit, 0, &end, &next))
        goto incomplete;
    ssize_t rc = status_line(b, end, h, err_pos);
    if (rc < 0)
        return rc;
    for (;;) {
        size_t pos = next;
        if (!line_at(b, limit, pos, &end, &next))
            goto incomplete;
        if (end == pos)
            return (ssize_t)next;
        if (b[pos] == ' ' || b[pos] == '\t') /* obsolete line folding */
            return fail(err_pos, pos);
        rc = header_line(b, pos, end, h, err_pos);
        if (rc < 0)
            return rc;
    }
incomplete:
    if (len >= POL_HTTP_HEAD_BYTES_MAX)
        return -EMSGSIZE;
    return eof ? fail(err_pos, len) : 0;
}

/* Walks a chunked body from pos; copies the data into out when out is not NULL. Returns the
 * end of the body (after the trailers' empty line), 0 when incomplete, or an error. */
static ssize_t chunks_walk(const char *b, size_t len, size_t pos, char *out, size_t *out_len,
                           size_t *err_pos)
{
    size_t o = 0;
    for (;;) {
        size_t end, next, i = pos;
        uint64_t size = 0;
        if (!line_at(b, len, pos, &end, &next))
            return 0;
        while (i < end && i - pos < CHUNK_SIZE_DIGITS_MAX + 1) {
            char c = b[i];
            int d = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
            if (d < 0)
                break;
            size = size * 16 + (uint64_t)d;
            i++;
        }
        if (i == pos || i - pos > CHUNK_SIZE_DIGITS_MAX || (i < end && b[i] != ';' && b[i] != ' '))
            return fail(err_pos, i);
        if (size == 0) { /* last chunk, then trailers up to an empty line */
            for (;;) {
                size_t tpos = next;
                if (!line_at(b, len, tpos, &end, &next))
                    return 0;
                if (end == tpos)
                    break;
            }
            if (out_len)
                *out_len = o;
            return (ssize_t)next;
        }
        if (size > len || next + size > len)
            return 0;
        if (out)
            memcpy(out + o, b + next, size);
        o += size;
        pos = next + size;
        if (pos < len && b[pos] == '\n')
            pos++;
        else if (pos + 1 < len && b[pos] == '\r' && b[pos + 1] == '\n')
            pos += 2;
        else if (pos + 1 < len || (pos < len && b[pos] != '\r'))
            return fail(err_pos, pos);
        else
            return 0;
    }
}

ssize_t pol_http_resp_parse(const char *buf, size_t len, bool eof, struct pol_http_resp *out,
                            size_t *err_pos)
{
    memset(out, 0, sizeof(*out));
    ssize_t head = parse_head(buf, len, eof, out, err_pos);
    if (head <= 0)
        return head;
    if (out->status < 200)
        return fail(err_pos, 9);
    out->head_len = (size_t)head;
    size_t msg;
    if (out->status == 204 || out->status == 304) {
        msg = out->head_len;
    } else if (out->chunked) {
        if (out->has_length)
            out->keep = false; /* RFC 9112 6.3: both is a smuggling sign; do not reuse */
        ssize_t r = chunks_walk(buf, len, out->head_len, NULL, NULL, err_pos);
        if (r < 0)
            return r;
        if (r == 0)
            return eof ? fail(err_pos, len) : 0;
        msg = (size_t)r;
    } else if (out->has_length) {
        if (len - out->head_len < out->content_length)
            return eof ? fail(err_pos, len) : 0;
        msg = out->head_len + out->content_length;
    } else {
        if (!eof)
            return 0;
        out->keep = false;
        msg = len;
    }
    out->msg_len = msg;
    return (ssize_t)msg;
}

ssize_t pol_http_resp_body(const char *msg, const struct pol_http_resp *h, char *out, size_t cap)
{
    if (h->msg_len > cap)
        return -ENOBUFS;
    if (!h->chunked || h->status == 204 || h->status == 304) {
        size_t n = h->msg_len - h->head_len;
        memcpy(out, msg + h->head_len, n);
        return (ssize_t)n;
    }
    size_t n = 0;
    ssize_t r = chunks_walk(msg, h->msg_len, h->head_len, out, &n, NULL);
    return r > 0 ? (ssize_t)n : -EPROTO;
}
