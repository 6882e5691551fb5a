/*
 * fuzz_proto.c: libFuzzer target for policy/proto.c (the policy delegation protocol parser).
 *
 * The first four input bytes choose small limits (so that every limit is reached) and a
 * fragment size; the rest is the byte stream of one connection. It is parsed twice, as the
 * engine presents it: all at once, and growing by the fragment size (the request is presented
 * again from its first byte, copied to a fresh buffer each time, so stale pointers and reads
 * past the end show up under ASan). Both runs must give the same requests and the same error;
 * every attribute must lie inside its request. A reply is encoded from the attributes too.
 * Build: see README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

enum { OUTCOMES_MAX = 64, ATTRS_CAP = 64 };

struct outcome {
    enum pol_proto_status status;
    size_t consumed;
    uint32_t count, err_off;
    uint64_t digest; /* of the attributes' text */
};

static uint64_t digest(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    }
    return (h ^ n) * 1099511628211ull;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_proto: %s\n", what);
        abort();
    }
}

static struct outcome request_outcome(const char *buf, size_t len,
                                      const struct pol_proto_attr *attrs, uint32_t count,
                                      size_t consumed)
{
    struct outcome o = {POL_PROTO_REQUEST, consumed, count, 0, 14695981039346656037ull};
    check(consumed >= 1 && consumed <= len, "consumed out of range");
    check(buf[consumed - 1] == '\n', "a request ends with LF");
    const char *actions[ATTRS_CAP];
    size_t lens[ATTRS_CAP];
    for (uint32_t i = 0; i < count; i++) {
        const struct pol_proto_attr *a = &attrs[i];
        check((size_t)a->name_off + a->name_len < consumed, "name outside the request");
        check((size_t)a->value_off + a->value_len < consumed, "value outside the request");
        check(a->value_off == a->name_off + a->name_len + 1, "value follows name=");
        check(buf[a->name_off + a->name_len] == '=', "the split is at '='");
        check(memchr(buf + a->name_off, '=', a->name_len) == NULL, "split at the first '='");
        o.digest = digest(o.digest, buf + a->name_off, a->name_len);
        o.digest = digest(o.digest, buf + a->value_off, a->value_len);
        actions[i] = buf + a->value_off;
        lens[i] = a->value_len;
    }
    char reply[4096];
    size_t n = pol_proto_encode_reply(reply, sizeof(reply), actions, lens, count);
    check(n == 0 || (n >= 2 && reply[n - 1] == '\n' && reply[n - 2] == '\n'), "reply framing");
    return o;
}

/* Parses data growing by frag bytes per call (0: all at once); fills out, returns the count. */
static size_t run(const char *data, size_t size, size_t frag, const struct pol_proto_limits *lim,
                  struct outcome *out)
{
    struct pol_proto_parser p;
    struct pol_proto_attr attrs[ATTRS_CAP];
    pol_proto_parser_init(&p, lim);
    size_t n = 0, start = 0, avail = 0;
    while (avail < size && n < OUTCOMES_MAX) {
        avail = frag == 0 || size - avail < frag ? size : avail + frag;
        while (n < OUTCOMES_MAX && start < avail) {
            size_t len = avail - start;
            char *copy = malloc(len ? len : 1); /* a fresh, exactly sized buffer each call */
            memcpy(copy, data + start, len);
            uint32_t count = 0;
            size_t consumed = 0;
            enum pol_proto_status s = pol_proto_parse(&p, copy, len, attrs, &count, &consumed);
            if (s == POL_PROTO_NEED_MORE) {
                free(copy);
                break;
            }
            if (s != POL_PROTO_REQUEST) {
                out[n++] = (struct outcome){s, 0, 0, p.err_off, 0};
                free(copy);
                return n;
            }
            out[n++] = request_outcome(copy, len, attrs, count, consumed);
            free(copy);
            start += consumed;
        }
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return 0;
    }
    struct pol_proto_limits lim = {
        .request_bytes_max = 1 + data[0] * 4u,
        .line_bytes_max = 1 + data[1] % 128u,
        .attrs_max = 1 + data[2] % ATTRS_CAP,
    };
    size_t frag = data[3] % 17;
    const char *in = (const char *)data + 4;
    size_t in_len = size - 4;
    struct outcome whole[OUTCOMES_MAX], parts[OUTCOMES_MAX];
    size_t nw = run(in, in_len, 0, &lim, whole);
    size_t np = run(in, in_len, frag, &lim, parts);
    check(nw == np, "same number of outcomes in one piece and in fragments");
    for (size_t i = 0; i < nw; i++) {
        check(whole[i].status == parts[i].status && whole[i].consumed == parts[i].consumed &&
                  whole[i].count == parts[i].count && whole[i].err_off == parts[i].err_off &&
                  whole[i].digest == parts[i].digest,
              "same outcomes in fragments");
    }
    return 0;
}
