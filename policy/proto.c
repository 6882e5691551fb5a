/*
 * proto.c: the Postfix policy delegation protocol (spec 6): split a request into name=value
 * attributes, encode a reply. Pure: no I/O, no allocation, no global state; any thread.
 *
 * The parser never copies: attributes are offsets into the bytes the caller presents. It keeps
 * one scan position per request, so bytes already split into lines are never looked at again
 * while the request is incomplete, and a request delivered one byte per call costs O(n). The
 * lines of a request that completes in the call that started it are remembered in a small
 * stack array (LOCAL_ATTRS) and copied out, so the common case is one pass; a request that
 * arrived over several calls, or has more lines than that array holds, is split again once at
 * the end (the contract in proto.h: attrs is written only when a request is returned).
 *
 * Scan state: `scanned` is where the unfinished line starts, `count` the lines before it. The
 * contract header has no field for how far the unfinished line was already searched for its
 * LF, so while the request is incomplete err_off holds that position (it is only meaningful to
 * callers after an error): a long line delivered byte by byte is then searched once, not once
 * per call. TODO: give it a field of its own in proto.h (needs the header owner's agreement).
 *
 * Errors are operational (a bad peer): the status says which limit or rule was broken and
 * err_off where. The parser does not advance past the offending line, so presenting the same
 * bytes again gives the same error.
 *
 * Limits: line_bytes_max counts the bytes of a line before its LF (a CR there included);
 * request_bytes_max counts the whole request including its empty line. Both are checked on
 * the bytes presented so far, so an oversized line or request is refused as soon as it is
 * presented, without waiting for an LF.
 */
#include "proto.h"

#include <string.h>

#include <eng/assert.h>

/* Attributes remembered during the single pass. Postfix 3.7 sends 29; 64 leaves room for
 * later versions and extra attributes, and costs 1 KiB of stack. */
enum { LOCAL_ATTRS = 64 };
_Static_assert(sizeof(struct pol_proto_attr) == 16, "attr is four uint32_t");

static const char DUNNO_REPLY[] = "action=dunno\n\n";
static const char ACTION_PREFIX[] = "action=";

void pol_proto_limits_default(struct pol_proto_limits *l)
{
    ENG_ASSERT(l != NULL);
    l->request_bytes_max = POL_PROTO_REQUEST_BYTES_DEFAULT;
    l->line_bytes_max = POL_PROTO_LINE_BYTES_DEFAULT;
    l->attrs_max = POL_PROTO_ATTRS_DEFAULT;
}

/* l NULL means the defaults. Limits of 0 are a programmer error: the configuration code
 * validates what the administrator wrote before it gets here. */
void pol_proto_parser_init(struct pol_proto_parser *p, const struct pol_proto_limits *l)
{
    ENG_ASSERT(p != NULL);
    if (l != NULL) {
        p->limits = *l;
    } else {
        pol_proto_limits_default(&p->limits);
    }
    ENG_ASSERT(p->limits.request_bytes_max > 0);
    ENG_ASSERT(p->limits.line_bytes_max > 0);
    pol_proto_parser_reset(p);
}

void pol_proto_parser_reset(struct pol_proto_parser *p)
{
    ENG_ASSERT(p != NULL);
    p->scanned = 0;
    p->count = 0;
    p->err_off = 0;
}

/* One line [pos, lf): its length without a CR before the LF, and its attribute when it has
 * an '=' (returns false when it has none). */
static inline uint32_t content_len(const char *buf, uint32_t pos, uint32_t lf)
{
    uint32_t n = lf - pos;
    if (n > 0 && buf[lf - 1] == '\r') {
        n--;
    }
    return n;
}

static inline bool split_line(const char *buf, uint32_t pos, uint32_t n, struct pol_proto_attr *a)
{
    const char *eq = memchr(buf + pos, '=', n);
    if (eq == NULL) {
        return false;
    }
    uint32_t name_len = (uint32_t)(eq - (buf + pos));
    a->name_off = pos;
    a->name_len = name_len;
    a->value_off = pos + name_len + 1;
    a->value_len = n - name_len - 1;
    return true;
}

/* Splits an already validated request [0, end) into attrs; returns the count. */
static uint32_t resplit(const char *buf, uint32_t end, struct pol_proto_attr *attrs)
{
    uint32_t pos = 0;
    uint32_t n = 0;
    for (;;) {
        const char *lf = memchr(buf + pos, '\n', end - pos);
        ENG_ASSERT(lf != NULL);
        uint32_t lf_off = (uint32_t)(lf - buf);
        uint32_t len = content_len(buf, pos, lf_off);
        if (len == 0) {
            ENG_ASSERT(lf_off + 1 == end);
            return n;
        }
        bool ok = split_line(buf, pos, len, &attrs[n]);
        ENG_ASSERT(ok);
        n++;
        pos = lf_off + 1;
    }
}

static enum pol_proto_status fail(struct pol_proto_parser *p, enum pol_proto_status s, uint32_t off)
{
    p->err_off = off;
    return s;
}

enum pol_proto_status pol_proto_parse(struct pol_proto_parser *p, const char *buf, size_t len,
                                      struct pol_proto_attr *attrs, uint32_t *count,
                                      size_t *consumed)
{
    ENG_ASSERT(p != NULL);
    ENG_ASSERT(attrs != NULL);
    ENG_ASSERT(count != NULL);
    ENG_ASSERT(consumed != NULL);
    ENG_ASSERT(len >= p->scanned); /* presented again from the request's first byte */
    ENG_ASSERT(buf != NULL || len == 0);

    const struct pol_proto_limits *lim = &p->limits;
    /* Never look past request_bytes_max: bytes beyond it cannot belong to a valid request
     * (they may belong to the next, pipelined one). */
    const uint32_t win = len > lim->request_bytes_max ? lim->request_bytes_max : (uint32_t)len;
    const bool fresh = p->scanned == 0;
    struct pol_proto_attr local[LOCAL_ATTRS];
    uint32_t pos = p->scanned;
    /* While a request is incomplete, err_off holds how far the unfinished line has already
     * been searched for its LF (see the top of this file). */
    uint32_t search = p->err_off > pos ? p->err_off : pos;
    ENG_ASSERT(search <= len); /* the bytes presented before are presented again */

    while (search < win) {
        const char *lf = memchr(buf + search, '\n', win - search);
        if (lf == NULL) {
            break;
        }
        uint32_t lf_off = (uint32_t)(lf - buf);
        if (lf_off - pos > lim->line_bytes_max) {
            return fail(p, POL_PROTO_ERR_LINE_LONG, pos);
        }
        uint32_t n = content_len(buf, pos, lf_off);
        if (n == 0) {
            *consumed = (size_t)lf_off + 1;
            if (fresh && p->count <= LOCAL_ATTRS) {
                memcpy(attrs, local, p->count * sizeof(local[0]));
                *count = p->count;
            } else {
                *count = resplit(buf, lf_off + 1, attrs);
                ENG_ASSERT(*count == p->count);
            }
            pol_proto_parser_reset(p);
            return POL_PROTO_REQUEST;
        }
        struct pol_proto_attr a;
        if (!split_line(buf, pos, n, &a)) {
            return fail(p, POL_PROTO_ERR_NO_EQUALS, pos);
        }
        if (p->count >= lim->attrs_max) {
            return fail(p, POL_PROTO_ERR_ATTRS, pos);
        }
        if (p->count < LOCAL_ATTRS) {
            local[p->count] = a;
        }
        p->count++;
        pos = lf_off + 1;
        search = pos;
        p->scanned = pos;
    }
    /* No end of request in the window: the unfinished line and the request so far. */
    if (win - pos > lim->line_bytes_max) {
        return fail(p, POL_PROTO_ERR_LINE_LONG, pos);
    }
    if (len > lim->request_bytes_max) {
        return fail(p, POL_PROTO_ERR_TOO_BIG, pos);
    }
    p->err_off = win;
    return POL_PROTO_NEED_MORE;
}

const char *pol_proto_status_text(enum pol_proto_status s)
{
    switch (s) {
    case POL_PROTO_NEED_MORE:
        return "incomplete request";
    case POL_PROTO_REQUEST:
        return "complete request";
    case POL_PROTO_ERR_NO_EQUALS:
        return "error parsing request: line without '='";
    case POL_PROTO_ERR_LINE_LONG:
        return "error parsing request: line too long";
    case POL_PROTO_ERR_ATTRS:
        return "error parsing request: too many attributes";
    case POL_PROTO_ERR_TOO_BIG:
        return "error parsing request: request too big";
    }
    return "unknown protocol status";
}

/* An LF inside an action would end the reply line early, and an empty line inside it would
 * end the reply and desynchronise the connection; 2.05 writes it as is (Postfix then reports
 * a malformed reply). We write a space instead: an intentional difference that keeps the
 * framing intact whatever a plugin or template produced. */
static void copy_action(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    for (char *q = memchr(dst, '\n', n); q != NULL; q = memchr(q, '\n', n - (size_t)(q - dst))) {
        *q = ' ';
    }
}

/* action_lens NULL means each action is NUL-terminated. */
size_t pol_proto_encode_reply(char *out, size_t out_len, const char *const *actions,
                              const size_t *action_lens, size_t action_count)
{
    ENG_ASSERT(out != NULL || out_len == 0);
    ENG_ASSERT(actions != NULL || action_count == 0);
    if (action_count == 0) {
        if (out_len < sizeof(DUNNO_REPLY) - 1) {
            return 0;
        }
        memcpy(out, DUNNO_REPLY, sizeof(DUNNO_REPLY) - 1);
        return sizeof(DUNNO_REPLY) - 1;
    }
    const size_t prefix_len = sizeof(ACTION_PREFIX) - 1;
    size_t off = 0;
    for (size_t i = 0; i < action_count; i++) {
        size_t n = action_lens != NULL ? action_lens[i] : strlen(actions[i]);
        if (out_len - off < prefix_len + n + 1) {
            return 0;
        }
        memcpy(out + off, ACTION_PREFIX, prefix_len);
        copy_action(out + off + prefix_len, actions[i], n);
        off += prefix_len + n;
        out[off++] = '\n';
    }
    if (out_len - off < 1) {
        return 0;
    }
    out[off++] = '\n';
    ENG_ASSERT(off >= 2 && out[off - 1] == '\n' && out[off - 2] == '\n');
    return off;
}
