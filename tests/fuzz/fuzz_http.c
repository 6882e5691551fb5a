/*
 * fuzz_http.c: libFuzzer target for engine/http_parse.c (eng_http_parse, the request-head
 * parser of the HTTP listener).
 *
 * The first three input bytes choose small limits (so that each one is reached) and the rest is
 * what a connection sent. The head is parsed whole and then as the engine presents it, growing
 * byte by byte from the start, each prefix copied into a fresh buffer of exactly its size (reads
 * past the end show up under ASan). Every proper prefix of a complete head must need more (or
 * already fail with the same refusal), the complete head must give the same result, slices must
 * lie inside the head, and a refusal carries a reason and a 4xx/5xx status. Build: README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/http.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_http: %s\n", what);
        abort();
    }
}

static enum eng_http_parse_status parse_copy(const uint8_t *data, size_t n,
                                             const struct eng_http_limits *lim,
                                             struct eng_http_req *rq)
{
    char *buf = malloc(n ? n : 1);
    check(buf != NULL, "out of memory");
    memcpy(buf, data, n);
    enum eng_http_parse_status st = eng_http_parse(buf, n, lim, rq);
    if (st == ENG_HTTP_REQUEST) {
        check(rq->head_bytes >= 4 && rq->head_bytes <= n, "head_bytes out of range");
        check(rq->path >= buf && rq->path + rq->path_len <= buf + rq->head_bytes,
              "path outside the head");
        check(rq->path_len >= 1 && rq->path[0] == '/', "path starts with /");
        check(!rq->query || (rq->query >= buf && rq->query + rq->query_len <= buf + n),
              "query outside the head");
        check(rq->why == NULL, "a request has no reason");
    } else if (st != ENG_HTTP_NEED_MORE) {
        int code = eng_http_status_code(st);
        check(rq->why != NULL && code >= 400 && code < 600, "a refusal has a reason and a code");
    }
    free(buf);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    struct eng_http_limits lim;
    eng_http_limits_defaults(&lim);
    lim.head_bytes_max = 16u + data[0] * 4u;
    lim.uri_bytes_max = 1u + data[1];
    lim.header_count_max = data[2] % 16u;
    data += 3;
    size -= 3;
    struct eng_http_req whole, part;
    enum eng_http_parse_status st = parse_copy(data, size, &lim, &whole);
    size_t end = st == ENG_HTTP_REQUEST ? whole.head_bytes : size;
    for (size_t n = 0; n < end; n++) {
        enum eng_http_parse_status p = parse_copy(data, n, &lim, &part);
        check(p != ENG_HTTP_REQUEST, "a proper prefix of a head is not a request");
        if (p != ENG_HTTP_NEED_MORE) {
            /* Refused early (garbage first byte, head over the limit): the whole input too. */
            check(st != ENG_HTTP_REQUEST && st != ENG_HTTP_NEED_MORE, "refused early only");
            return 0;
        }
    }
    if (st == ENG_HTTP_REQUEST) {
        enum eng_http_parse_status again = parse_copy(data, end, &lim, &part);
        check(again == ENG_HTTP_REQUEST && part.head_bytes == whole.head_bytes &&
                  part.path_len == whole.path_len && part.keep_alive == whole.keep_alive &&
                  part.head == whole.head && part.minor == whole.minor,
              "the head alone parses the same");
    }
    return 0;
}
