/*
 * fuzz_maillog.c: libFuzzer target for ringpolicyd-replay's log side (bench/replay): the syslog
 * line parser, the year clock, the corpus that joins lines into mails, the request layout and
 * the renderer. An input is log text; it is split into lines (a CR before the LF stays, as the
 * reader leaves it), fed to a corpus, built for every stage, and every request is rendered for
 * copies 0 and 1 and checked for its framing. Invariants, not just "no crash": the corpus's
 * counts are consistent, requests are in time order, each rendered request has 29 lines and
 * ends with one empty line.
 *
 * Build and run (clang, from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ibench/replay -Ibench/common \
 *     tests/fuzz/fuzz_maillog.c bench/replay/maillog.c bench/replay/reader.c \
 *     bench/replay/corpus.c bench/replay/layout.c bench/replay/render.c -lxxhash -o fuzz_maillog
 *   ./fuzz_maillog -dict=tests/fuzz/maillog.dict -max_len=4096 tests/fuzz/corpus/maillog
 * The same target runs over the committed corpus in the unit tests (replay_fuzz_corpus).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench_assert.h"
#include "corpus.h"
#include "render.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const char *buf, size_t n)
{
    BENCH_ASSERT(n >= 2);
    BENCH_ASSERT(buf[n - 1] == '\n' && buf[n - 2] == '\n');
    size_t lines = 0;
    for (size_t i = 0; i + 1 < n; i++)
        lines += buf[i] == '\n';
    BENCH_ASSERT(lines == 29); /* Postfix 3.7's attributes, each on its line */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rpl_corpus c;
    struct rpl_load_opts lo = {(size & 1) ? 2024 : 0, 0};
    rpl_corpus_init(&c, &lo);
    rpl_corpus_begin_file(&c, 1795478400); /* 2026-11-24 */
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = lf != NULL ? lf : end;
        BENCH_ASSERT(rpl_corpus_feed(&c, p, (size_t)(line_end - p)) == 0);
        p = lf != NULL ? lf + 1 : end;
    }
    BENCH_ASSERT(rpl_corpus_finish(&c) == 0);
    BENCH_ASSERT(rpl_corpus_build(&c, 7u) == 0);
    BENCH_ASSERT(c.stats.mails <= c.txn_count);
    BENCH_ASSERT(c.req_count == c.req_count_by_stage[0] + c.req_count_by_stage[1] +
                                    c.req_count_by_stage[2]);
    struct rpl_render_opts ro = {NULL, 0, NULL, rpl_copy_span_us(&c)};
    static char buf[16384];
    for (uint64_t i = 0; i < c.req_count; i++) {
        BENCH_ASSERT(i == 0 || c.reqs[i - 1].t_us <= c.reqs[i].t_us);
        for (uint32_t copy = 0; copy < 2; copy++) {
            size_t n = rpl_render(&c, &c.reqs[i], copy, &ro, buf, sizeof(buf));
            if (n > 0) /* 0: longer than the buffer, which the replay counts and skips */
                check_request(buf, n);
        }
    }
    rpl_corpus_free(&c);
    return 0;
}
