/*
 * reply.c: incremental parser for policy replies (see reply.h). Shared by ringpolicyd-client
 * and ringpolicyd-load. Pure; every call costs O(new bytes).
 */
#include "reply.h"

#include <string.h>

#include "bench_assert.h"

void bench_reply_parser_init(struct bench_reply_parser *p, uint32_t bytes_max)
{
    BENCH_ASSERT(p != NULL);
    p->bytes_max = bytes_max ? bytes_max : BENCH_REPLY_BYTES_DEFAULT;
    bench_reply_parser_reset(p);
}

void bench_reply_parser_reset(struct bench_reply_parser *p)
{
    p->scanned = 0;
    p->err_off = 0;
    p->error = BENCH_REPLY_NEED_MORE;
    memset(&p->reply, 0, sizeof(p->reply));
}

/* One complete line [off, off+len), the LF and a CR before it already cut off. */
static enum bench_reply_status reply_line(struct bench_reply_parser *p, const char *buf,
                                          uint32_t off, uint32_t len)
{
    const char *line = buf + off;
    const char *eq = memchr(line, '=', len);
    if (!eq) {
        p->err_off = off;
        return BENCH_REPLY_ERR_NO_EQUALS;
    }
    struct bench_reply *r = &p->reply;
    r->attr_count++;
    uint32_t name_len = (uint32_t)(eq - line);
    if (name_len == 6 && memcmp(line, "action", 6) == 0) {
        if (r->action_count < BENCH_REPLY_ACTIONS_MAX) {
            r->action_off[r->action_count] = off + name_len + 1;
            r->action_len[r->action_count] = len - name_len - 1;
        }
        r->action_count++;
    }
    return BENCH_REPLY_NEED_MORE;
}

enum bench_reply_status bench_reply_parse(struct bench_reply_parser *p, const char *buf, size_t len,
                                          size_t *consumed)
{
    BENCH_ASSERT(p->scanned <= len);
    *consumed = 0;
    if (p->error != BENCH_REPLY_NEED_MORE)
        return p->error;
    size_t limit = len < p->bytes_max ? len : p->bytes_max;
    while (p->scanned < limit) {
        const char *nl = memchr(buf + p->scanned, '\n', limit - p->scanned);
        if (!nl)
            break;
        uint32_t off = p->scanned;
        uint32_t line_len = (uint32_t)(nl - (buf + off));
        p->scanned = off + line_len + 1;
        if (line_len && buf[off + line_len - 1] == '\r')
            line_len--;
        if (line_len == 0) {
            *consumed = p->scanned;
            return BENCH_REPLY_DONE;
        }
        enum bench_reply_status s = reply_line(p, buf, off, line_len);
        if (s != BENCH_REPLY_NEED_MORE) {
            p->error = s;
            return s;
        }
    }
    if (len >= p->bytes_max) {
        p->err_off = p->scanned;
        p->error = BENCH_REPLY_ERR_TOO_BIG;
        return p->error;
    }
    return BENCH_REPLY_NEED_MORE;
}

const char *bench_reply_status_text(enum bench_reply_status s)
{
    switch (s) {
    case BENCH_REPLY_NEED_MORE:
        return "incomplete reply";
    case BENCH_REPLY_DONE:
        return "complete reply";
    case BENCH_REPLY_ERR_NO_EQUALS:
        return "reply line without '='";
    case BENCH_REPLY_ERR_TOO_BIG:
        return "reply too long";
    }
    return "unknown reply status";
}
