/*
 * fuzz_http_resp.c: libFuzzer target for policy/plugins/http_resp.c (pol_http_resp_parse and
 * pol_http_resp_body, the network plugins' HTTP response parser; owner: netplug).
 *
 * The input is what a server sent. It is parsed in a buffer of exactly its size (reads past the
 * end show up under ASan), as still open and as closed. A complete response must lie inside the
 * input, its head inside it, its status be 200..999, and its body decode into a buffer of
 * msg_len bytes no longer than the raw body; every proper prefix of a response framed by length
 * or chunks must need more bytes (the stream client presents growing prefixes, and a prefix
 * refused where the whole parses would fail a good reply). Build: tests/fuzz/build.sh http_resp.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/http_resp.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_http_resp: %s\n", what);
        abort();
    }
}

static ssize_t parse_copy(const uint8_t *data, size_t n, int eof, struct pol_http_resp *h)
{
    char *buf = malloc(n ? n : 1);
    check(buf != NULL, "out of memory");
    memcpy(buf, data, n);
    size_t pos = (size_t)-1;
    ssize_t r = pol_http_resp_parse(buf, n, eof != 0, h, &pos);
    check(r == 0 || r == -EPROTO || r == -EMSGSIZE || (r > 0 && (size_t)r <= n), "result");
    if (r == -EPROTO)
        check(pos <= n, "error position outside the input");
    if (r > 0) {
        check(h->msg_len == (size_t)r, "msg_len");
        check(h->head_len > 0 && h->head_len <= h->msg_len, "head_len");
        check(h->status >= 200 && h->status <= 999, "status");
        check(h->head_len <= POL_HTTP_HEAD_BYTES_MAX, "head limit");
        char *body = malloc(h->msg_len + 1);
        check(body != NULL, "out of memory");
        ssize_t b = pol_http_resp_body(buf, h, body, h->msg_len);
        check(b >= 0 && (size_t)b <= h->msg_len - h->head_len, "body length");
        check(pol_http_resp_body(buf, h, body, h->msg_len - 1) == -ENOBUFS || h->msg_len == 0,
              "body cap");
        free(body);
    }
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pol_http_resp h, h2;
    ssize_t open_r = parse_copy(data, size, 0, &h);
    ssize_t closed_r = parse_copy(data, size, 1, &h2);
    if (open_r > 0) {
        check(closed_r == open_r, "a complete response is complete at close too");
        size_t step = open_r > 512 ? (size_t)open_r / 64 : 1;
        for (size_t len = 0; len < (size_t)open_r; len += step) {
            struct pol_http_resp p;
            check(parse_copy(data, len, 0, &p) == 0, "a proper prefix needs more");
        }
    }
    return 0;
}
