/*
 * fuzz_mc_reply.c: libFuzzer target for engine/mc_proto.c (the memcached reply parser, the key
 * encoding, request formatting).
 *
 * Input: byte 0 picks the command the reply answers (mod ENG_MC_CMD_COUNT), byte 1 the largest
 * value taken whole (0..63 bytes, or 1 MiB when >= 64), byte 2 a fragment size (1..16); the
 * rest is the bytes received. The parser checks itself:
 *   - the result is > 0 (spanning at most the input), 0 (more needed) or -EPROTO;
 *   - presented again in fragments, growing from the first byte in exactly sized buffers (the
 *     client's way), every shorter prefix asks for more or is malformed, never completes, and
 *     a malformed prefix stays malformed; the whole input gives the same result, status,
 *     value, flags, key hash and discard count as in one piece;
 *   - a value lies inside the reply; discard_bytes only for get;
 *   - parsing the replies back to back consumes the input without looping.
 * The rest of the input, as a key, is encoded under a short prefix: the result is a valid
 * memcached key (1..250 bytes, no byte <= 0x20 or 0x7f, NUL-terminated), the same every time,
 * and a request formatted with it fits mc_request_bytes.
 * Build: tests/fuzz/build.sh mc_reply OUT (README.md).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/mc.h"
#include "mc_int.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_mc_reply: %s\n", what);
        abort();
    }
}

static long parse_copy(enum eng_mc_cmd cmd, const uint8_t *data, size_t len, size_t vmax,
                       struct eng_mc_reply *rep, char **keep)
{
    char *buf = malloc(len ? len : 1);
    check(buf != NULL, "malloc");
    memcpy(buf, data, len);
    long n = eng_mc_reply_parse(cmd, buf, len, vmax, rep);
    if (keep)
        *keep = buf;
    else
        free(buf);
    return n;
}

static void check_reply(enum eng_mc_cmd cmd, const char *buf, long n,
                        const struct eng_mc_reply *rep)
{
    check(rep->st < ENG_MC_STATUS_COUNT, "status in range");
    if (rep->value) {
        check(rep->value >= buf && rep->value + rep->value_len <= buf + n, "value inside");
    } else {
        check(rep->value_len == 0, "no value, no length");
    }
    if (rep->discard_bytes)
        check(cmd == ENG_MC_CMD_GET && rep->st == ENG_MC_ERROR, "discard only for get");
}

static void keys(const uint8_t *data, size_t len)
{
    static const char prefix[] = "fz:";
    char out[ENG_MC_KEY_BYTES_MAX + 1], again[ENG_MC_KEY_BYTES_MAX + 1];
    size_t n = eng_mc_key_encode(prefix, 3, (const char *)data, len, out);
    check(n >= 4 && n <= ENG_MC_KEY_BYTES_MAX, "key length");
    check(out[n] == '\0', "NUL-terminated");
    check(memcmp(out, prefix, 3) == 0, "prefix kept");
    for (size_t i = 0; i < n; i++)
        check((unsigned char)out[i] > 0x20 && (unsigned char)out[i] != 0x7f, "key bytes");
    check(eng_mc_key_encode(prefix, 3, (const char *)data, len, again) == n &&
              memcmp(out, again, n) == 0,
          "deterministic");
    static const char value[] = "v\r\nEND\r\n";
    size_t cap = mc_request_bytes(ENG_MC_CMD_SET, n, sizeof(value) - 1);
    char *req = malloc(cap);
    check(req != NULL, "malloc");
    size_t w = mc_request_format(req, ENG_MC_CMD_SET, out, n, 60, value, sizeof(value) - 1);
    check(w <= cap, "request fits");
    free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    enum eng_mc_cmd cmd = (enum eng_mc_cmd)(data[0] % ENG_MC_CMD_COUNT);
    size_t vmax = data[1] < 64 ? data[1] : (size_t)1 << 20;
    size_t frag = (size_t)(data[2] % 16) + 1;
    data += 3;
    size -= 3;

    struct eng_mc_reply whole;
    char *wbuf = NULL;
    long n = parse_copy(cmd, data, size, vmax, &whole, &wbuf);
    check(n == 0 || n == -EPROTO || (n > 0 && (size_t)n <= size), "result range");
    if (n > 0)
        check_reply(cmd, wbuf, n, &whole);

    /* In fragments from the first byte, each time in an exactly sized buffer. */
    bool bad = false;
    for (size_t have = frag < size ? frag : size; have < size; have += frag) {
        struct eng_mc_reply rep;
        long m = parse_copy(cmd, data, have, vmax, &rep, NULL);
        if (n > 0 && have >= (size_t)n) {
            check(m == n, "a complete reply parses the same with more bytes behind it");
            continue;
        }
        check(m == 0 || m == -EPROTO, "a prefix never completes");
        if (bad)
            check(m == -EPROTO, "malformed stays malformed");
        bad = m == -EPROTO;
        if (bad)
            check(n == -EPROTO, "a malformed prefix means a malformed whole");
    }
    if (n > 0) {
        struct eng_mc_reply rep;
        char *buf = NULL;
        check(parse_copy(cmd, data, (size_t)n, vmax, &rep, &buf) == n, "the reply alone");
        check(rep.st == whole.st && rep.value_len == whole.value_len &&
                  rep.flags == whole.flags && rep.key_hash == whole.key_hash &&
                  rep.discard_bytes == whole.discard_bytes,
              "same reply");
        if (rep.value)
            check(whole.value && rep.value - buf == whole.value - wbuf &&
                      memcmp(rep.value, whole.value, rep.value_len) == 0,
                  "same value");
        free(buf);
    }
    free(wbuf);

    /* Back to back: each reply consumes bytes. */
    size_t off = 0;
    for (int i = 0; i < 1000 && off < size; i++) {
        struct eng_mc_reply rep;
        long m = eng_mc_reply_parse(cmd, (const char *)data + off, size - off, vmax, &rep);
        if (m <= 0)
            break;
        off += (size_t)m;
    }

    keys(data, size);
    return 0;
}
