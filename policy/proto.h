/*
 * proto.h: the Postfix policy delegation protocol (spec 6), parsing and encoding. Pure: no I/O,
 * no allocation.
 *
 * Parsing is incremental. The caller presents the bytes of the current request, always
 * starting at the request's first byte, with more bytes appended on each call (the engine
 * stages unconsumed input and presents it again contiguously). The parser remembers how far it
 * has scanned, so a request delivered one byte at a time costs O(n), not O(n^2). Attributes are
 * returned as offsets into the presented buffer (it may move between calls), converted with
 * pol_proto_attr_name/value.
 *
 * Limits (each counted by the caller when hit): request bytes, line bytes, attribute count.
 */
#ifndef POL_PROTO_H
#define POL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_proto_limits {
    uint32_t request_bytes_max; /* default 65536 */
    uint32_t line_bytes_max;    /* default 16384 */
    uint32_t attrs_max;         /* default 256 */
};

#define POL_PROTO_REQUEST_BYTES_DEFAULT 65536u
#define POL_PROTO_LINE_BYTES_DEFAULT 16384u
#define POL_PROTO_ATTRS_DEFAULT 256u

/* One name=value line; offsets into the presented buffer. A CR before the LF is not part of
 * the value; a CR anywhere else is. */
struct pol_proto_attr {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
};

enum pol_proto_status {
    POL_PROTO_NEED_MORE,      /* no complete request yet; present again with more bytes */
    POL_PROTO_REQUEST,        /* a complete request: *consumed bytes, attrs[0..count) */
    POL_PROTO_ERR_NO_EQUALS,  /* a line without '=' (spec 7.2: close without reply) */
    POL_PROTO_ERR_LINE_LONG,  /* a line longer than line_bytes_max */
    POL_PROTO_ERR_ATTRS,      /* more than attrs_max attributes */
    POL_PROTO_ERR_TOO_BIG,    /* the request exceeds request_bytes_max */
};

struct pol_proto_parser {
    struct pol_proto_limits limits;
    uint32_t scanned;    /* bytes of the request already split into lines */
    uint32_t count;      /* attributes found so far */
    uint32_t err_off;    /* offset of the offending line on error */
};

void pol_proto_limits_default(struct pol_proto_limits *l);
void pol_proto_parser_init(struct pol_proto_parser *p, const struct pol_proto_limits *l);
/* Resets for the next request (after POL_PROTO_REQUEST). */
void pol_proto_parser_reset(struct pol_proto_parser *p);

/* attrs must have room for limits.attrs_max entries. It is written only when the call returns
 * POL_PROTO_REQUEST (so one per-shard scratch array can serve every connection, even when a
 * request arrives over several calls): then *consumed is the request's length including its
 * empty line, *count the number of attributes (duplicates included, in wire order), and the
 * parser is reset. A request that arrived in one call is split in one pass; one that arrived
 * over several calls is re-split once at the end (the scan position still makes the search
 * for its end O(n)). */
enum pol_proto_status pol_proto_parse(struct pol_proto_parser *p, const char *buf, size_t len,
                                      struct pol_proto_attr *attrs, uint32_t *count,
                                      size_t *consumed);

const char *pol_proto_status_text(enum pol_proto_status s);

/* Reply encoding (spec 6.2): "action=A\n" per action, then "\n"; no action: "action=dunno\n\n".
 * Returns the length, or 0 if out_len is too small. */
size_t pol_proto_encode_reply(char *out, size_t out_len, const char *const *actions,
                              const size_t *action_lens, size_t action_count);

#ifdef __cplusplus
}
#endif

#endif
