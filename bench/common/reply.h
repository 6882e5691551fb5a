/*
 * reply.h: client-side parser for policy server replies (spec 6.2): "name=value" lines ending
 * in LF (a CR before the LF is dropped), closed by an empty line. Pure: no I/O, no allocation.
 *
 * Incremental like policy/proto.h: present the reply's bytes from its first byte, with more
 * appended on each call; lines already scanned are not scanned again. The values of the
 * "action" lines are returned as offsets into the presented buffer (it may move between calls
 * as long as its contents stay), in wire order; at most BENCH_REPLY_ACTIONS_MAX are kept, the
 * rest only counted. A reply with no action line is complete but has action_count 0: the
 * caller decides (Postfix treats it as an error, so do the client and the load generator).
 */
#ifndef BENCH_REPLY_H
#define BENCH_REPLY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_REPLY_ACTIONS_MAX 8u
#define BENCH_REPLY_BYTES_DEFAULT 65536u /* a reply longer than this is malformed */

enum bench_reply_status {
    BENCH_REPLY_NEED_MORE,     /* no empty line yet */
    BENCH_REPLY_DONE,          /* complete: *consumed bytes, including the empty line */
    BENCH_REPLY_ERR_NO_EQUALS, /* a line without '=' (err_off is its offset) */
    BENCH_REPLY_ERR_TOO_BIG,   /* more than bytes_max bytes without an empty line */
};

struct bench_reply {
    uint32_t action_count; /* action lines seen; may exceed BENCH_REPLY_ACTIONS_MAX */
    uint32_t attr_count;   /* all lines but the empty one */
    uint32_t action_off[BENCH_REPLY_ACTIONS_MAX];
    uint32_t action_len[BENCH_REPLY_ACTIONS_MAX];
};

struct bench_reply_parser {
    uint32_t bytes_max; /* limit on one reply, BENCH_REPLY_BYTES_DEFAULT unless changed */
    uint32_t scanned;   /* bytes of complete lines already looked at */
    uint32_t err_off;   /* offset of the offending line after an error */
    enum bench_reply_status error; /* BENCH_REPLY_NEED_MORE while there is none (sticky) */
    struct bench_reply reply;
};

/* bytes_max 0 means BENCH_REPLY_BYTES_DEFAULT. */
void bench_reply_parser_init(struct bench_reply_parser *p, uint32_t bytes_max);

/* Forgets the current reply (after DONE or an error) to start on the next one. */
void bench_reply_parser_reset(struct bench_reply_parser *p);

/* Scans buf[0..len), which starts with the reply's first byte and grows between calls. On DONE
 * *consumed is the reply's length and p->reply describes it; the parser must be reset before
 * the next reply (bytes after *consumed belong to it). On NEED_MORE and errors *consumed is 0.
 * Errors are sticky until reset. */
enum bench_reply_status bench_reply_parse(struct bench_reply_parser *p, const char *buf, size_t len,
                                          size_t *consumed);

const char *bench_reply_status_text(enum bench_reply_status s);

#ifdef __cplusplus
}
#endif

#endif
