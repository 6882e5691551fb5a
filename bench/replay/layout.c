/*
 * layout.c: lays out a loaded corpus as policy requests in time order (rpl_corpus_build).
 *
 * Per transaction: one RCPT request per recipient (rejected and accepted, in the order the
 * corpus keeps them), then, if the client reached DATA, one DATA and one END-OF-MESSAGE request.
 * Times never go back within a transaction (a recipient's recorded time is raised to the
 * previous request's), so sorting all requests by (time, transaction, position) keeps every
 * transaction's order and every process's order of transactions. The array is replaced on each
 * call; memory is malloc'ed here, before any traffic.
 */
#include "corpus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench_assert.h"

static const char *const stage_names[RPL_STAGE_COUNT] = {"RCPT", "DATA", "END-OF-MESSAGE"};

const char *rpl_stage_name(enum rpl_stage s)
{
    BENCH_ASSERT((unsigned)s < RPL_STAGE_COUNT);
    return stage_names[s];
}

int rpl_stage_parse(const char *s, size_t len)
{
    for (int i = 0; i < RPL_STAGE_COUNT; i++)
        if (strlen(stage_names[i]) == len && strncasecmp(s, stage_names[i], len) == 0)
            return i;
    if (len == 3 && strncasecmp(s, "EOM", 3) == 0)
        return RPL_STAGE_EOM;
    return -1;
}

static int req_cmp(const void *a, const void *b)
{
    const struct rpl_req *x = a, *y = b;
    if (x->t_us != y->t_us)
        return x->t_us < y->t_us ? -1 : 1;
    if (x->txn_idx != y->txn_idx)
        return x->txn_idx < y->txn_idx ? -1 : 1;
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    return (x->rcpt_idx > y->rcpt_idx) - (x->rcpt_idx < y->rcpt_idx);
}

static uint64_t count_requests(const struct rpl_corpus *c, unsigned mask)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < c->txn_count; i++) {
        const struct rpl_txn *x = &c->txns[i];
        if (x->flags & RPL_TXN_MERGED)
            continue;
        if (mask & RPL_STAGE_MASK(RPL_STAGE_RCPT))
            n += x->rcpt_count;
        if ((x->flags & RPL_TXN_ACCEPTED) && (x->flags & RPL_TXN_DATA)) {
            n += (mask & RPL_STAGE_MASK(RPL_STAGE_DATA)) != 0;
            n += (mask & RPL_STAGE_MASK(RPL_STAGE_EOM)) != 0;
        }
    }
    return n;
}

static void put(struct rpl_corpus *c, int64_t t, uint32_t txn, uint32_t rcpt, enum rpl_stage s)
{
    struct rpl_req *r = &c->reqs[c->req_count++];
    r->t_us = t;
    r->txn_idx = txn;
    r->rcpt_idx = rcpt;
    r->stage = (uint8_t)s;
    c->req_count_by_stage[s]++;
}

int rpl_corpus_build(struct rpl_corpus *c, unsigned stage_mask)
{
    BENCH_ASSERT(c != NULL && c->load == NULL);
    uint64_t n = count_requests(c, stage_mask);
    free(c->reqs);
    c->reqs = malloc((size_t)(n + 1) * sizeof(*c->reqs));
    c->req_count = 0;
    memset(c->req_count_by_stage, 0, sizeof(c->req_count_by_stage));
    if (c->reqs == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->txn_count; i++) {
        const struct rpl_txn *x = &c->txns[i];
        if (x->flags & RPL_TXN_MERGED)
            continue;
        int64_t t = x->t_start_us;
        for (uint32_t k = 0; k < x->rcpt_count; k++) {
            int64_t rt = c->rcpts[x->rcpt_first + k].t_us;
            t = rt > t ? rt : t;
            if (stage_mask & RPL_STAGE_MASK(RPL_STAGE_RCPT))
                put(c, t, i, k, RPL_STAGE_RCPT);
        }
        if (!(x->flags & RPL_TXN_ACCEPTED) || !(x->flags & RPL_TXN_DATA))
            continue;
        t = x->t_data_us > t ? x->t_data_us : t;
        if (stage_mask & RPL_STAGE_MASK(RPL_STAGE_DATA))
            put(c, t, i, 0, RPL_STAGE_DATA);
        if (stage_mask & RPL_STAGE_MASK(RPL_STAGE_EOM))
            put(c, t, i, 0, RPL_STAGE_EOM);
    }
    BENCH_ASSERT(c->req_count == n);
    qsort(c->reqs, (size_t)n, sizeof(*c->reqs), req_cmp);
    c->t_first_us = n > 0 ? c->reqs[0].t_us : 0;
    c->t_last_us = n > 0 ? c->reqs[n - 1].t_us : 0;
    return 0;
}
