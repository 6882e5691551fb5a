/*
 * run.c: builds the schedule, starts the workers, prints progress and merges the results (see
 * run.h). Runs on the main thread; the workers (drive.c) only read what is built here.
 *
 * The schedule is the corpus's time-ordered requests, copy after copy (copy k's recorded times
 * are moved by k copy spans, so the whole schedule stays in time order), cut at max_requests.
 * Position g belongs to smtpd process p of copy k, i.e. to virtual process k * P + p, and that
 * to stream (k * P + p) mod S, where S = min(conn_cap, P x copies): each stream's positions are
 * in time order, which is all a stream needs.
 */
#include "run.h"

#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_assert.h"
#include "drive.h"

#define START_DELAY_NS 5000000ull /* workers see the start time before it comes */

static void slots_compute(const struct rpl_run_opts *o, struct drv_shared *sh)
{
    const struct rpl_corpus *c = o->corpus;
    for (unsigned srv = 0; srv < o->server_count; srv++) {
        sh->slot_count[srv] = 0;
        for (unsigned st = 0; st < RPL_STAGE_COUNT; st++) {
            sh->slot_of[srv][st] = 0;
            if (c->req_count_by_stage[st] == 0)
                continue;
            unsigned same = RPL_STAGE_COUNT;
            for (unsigned prev = 0; prev < st; prev++)
                if (c->req_count_by_stage[prev] > 0 &&
                    strcmp(o->servers[srv][prev].text, o->servers[srv][st].text) == 0)
                    same = prev;
            sh->slot_of[srv][st] = same < RPL_STAGE_COUNT ? sh->slot_of[srv][same]
                                                          : sh->slot_count[srv]++;
        }
    }
}

static uint32_t stream_of(const struct rpl_corpus *c, uint64_t g, uint64_t req_count,
                          uint64_t stream_total)
{
    uint64_t copy = g / req_count;
    const struct rpl_req *r = &c->reqs[g % req_count];
    uint32_t proc = c->conns[c->txns[r->txn_idx].conn_idx].proc_idx;
    return (uint32_t)((copy * c->proc_count + proc) % stream_total);
}

/* items grouped by stream: items[first[s]..first[s+1]). */
static int schedule_build(const struct rpl_corpus *c, uint64_t n, uint32_t stream_total,
                          uint64_t **items_out, uint64_t **first_out)
{
    uint64_t *first = calloc((size_t)stream_total + 1, sizeof(*first));
    uint64_t *items = malloc((size_t)(n ? n : 1) * sizeof(*items));
    uint64_t *fill = calloc((size_t)stream_total, sizeof(*fill));
    if (first == NULL || items == NULL || fill == NULL) {
        free(first);
        free(items);
        free(fill);
        return -ENOMEM;
    }
    for (uint64_t g = 0; g < n; g++)
        first[stream_of(c, g, c->req_count, stream_total) + 1]++;
    for (uint32_t s = 0; s < stream_total; s++)
        first[s + 1] += first[s];
    for (uint64_t g = 0; g < n; g++) {
        uint32_t s = stream_of(c, g, c->req_count, stream_total);
        items[first[s] + fill[s]++] = g;
    }
    free(fill);
    *items_out = items;
    *first_out = first;
    return 0;
}

void rpl_server_stats_init(struct rpl_server_stats *s)
{
    memset(s, 0, sizeof(*s));
    bench_actions_init(&s->actions);
    bench_hist_init(&s->latency);
}

void rpl_server_stats_merge(struct rpl_server_stats *dst, const struct rpl_server_stats *src)
{
    dst->requests += src->requests;
    dst->err_closed += src->err_closed;
    dst->err_malformed += src->err_malformed;
    dst->err_timeout += src->err_timeout;
    dst->err_connect += src->err_connect;
    dst->connects += src->connects;
    bench_actions_merge(&dst->actions, &src->actions);
    bench_hist_merge(&dst->latency, &src->latency);
}

uint64_t rpl_server_stats_errors(const struct rpl_server_stats *s)
{
    return s->err_closed + s->err_malformed + s->err_timeout + s->err_connect;
}

/* Each request's time from the first, with recorded pauses longer than max_gap_us cut to it:
 * a log's quiet night need not be waited for at any speed. */
static int64_t *pace_build(const struct rpl_corpus *c, int64_t max_gap_us, int64_t copy_span_us,
                           int64_t *copy_pace_us)
{
    int64_t *pace = malloc((size_t)c->req_count * sizeof(*pace));
    if (pace == NULL)
        return NULL;
    int64_t gap_max = max_gap_us > 0 ? max_gap_us : INT64_MAX;
    pace[0] = 0;
    for (uint64_t i = 1; i < c->req_count; i++) {
        int64_t gap = c->reqs[i].t_us - c->reqs[i - 1].t_us;
        pace[i] = pace[i - 1] + (gap < gap_max ? gap : gap_max);
    }
    int64_t between = copy_span_us - (c->reqs[c->req_count - 1].t_us - c->reqs[0].t_us);
    *copy_pace_us = pace[c->req_count - 1] + (between < gap_max ? between : gap_max);
    return pace;
}

static void merge_stats(struct rpl_run_stats *dst, const struct rpl_run_stats *src,
                        unsigned server_count)
{
    for (unsigned srv = 0; srv < server_count; srv++)
        rpl_server_stats_merge(&dst->server[srv], &src->server[srv]);
    dst->requests += src->requests;
    dst->skipped_too_big += src->skipped_too_big;
    dst->late_sends += src->late_sends;
    bench_hist_merge(&dst->timer_lag, &src->timer_lag);
    dst->diff_compared += src->diff_compared;
    dst->diff_count += src->diff_count;
    dst->diff_other += src->diff_other;
    for (uint32_t i = 0; i < src->diff_kind_count; i++) {
        const struct rpl_diff_kind *k = &src->diff_kinds[i];
        uint32_t j = 0;
        while (j < dst->diff_kind_count && strcmp(dst->diff_kinds[j].name, k->name) != 0)
            j++;
        if (j < dst->diff_kind_count)
            dst->diff_kinds[j].count += k->count;
        else if (dst->diff_kind_count < RPL_DIFF_KINDS_MAX)
            dst->diff_kinds[dst->diff_kind_count++] = *k;
        else
            dst->diff_other += k->count;
    }
}

static int sample_cmp(const void *a, const void *b)
{
    const struct rpl_diff_sample *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* All workers' samples, in schedule order, the first diff_show_max of them. */
static int merge_samples(struct rpl_run_result *res, struct drv_worker *ws, unsigned nw,
                         uint32_t show_max)
{
    uint32_t total = 0;
    for (unsigned i = 0; i < nw; i++)
        total += ws[i].stats.sample_count;
    struct rpl_diff_sample *all = calloc(total ? total : 1, sizeof(*all));
    if (all == NULL)
        return -ENOMEM;
    uint32_t n = 0;
    for (unsigned i = 0; i < nw; i++)
        for (uint32_t k = 0; k < ws[i].stats.sample_count; k++)
            all[n++] = ws[i].stats.samples[k];
    qsort(all, n, sizeof(*all), sample_cmp);
    res->total.samples = all;
    res->total.sample_count = n < show_max ? n : show_max;
    return 0;
}

static bool all_joined(pthread_t *th, bool *joined, unsigned n)
{
    bool all = true;
    for (unsigned i = 0; i < n; i++) {
        if (!joined[i])
            joined[i] = pthread_tryjoin_np(th[i], NULL) == 0;
        all &= joined[i];
    }
    return all;
}

static void progress_line(struct drv_worker *ws, unsigned nw, uint64_t total, uint64_t *last,
                          uint64_t *last_ns)
{
    uint64_t done = 0;
    for (unsigned i = 0; i < nw; i++)
        done += atomic_load_explicit(&ws[i].progress, memory_order_relaxed);
    uint64_t now = drv_now_ns();
    double rate = (double)(done - *last) * 1e9 / (double)(now - *last_ns + 1);
    fprintf(stderr, "replay: %llu of %llu requests, %.0f/s\n", (unsigned long long)done,
            (unsigned long long)total, rate);
    *last = done;
    *last_ns = now;
}

/* Runs the workers until all are done, printing progress every second when asked. */
static int run_workers(const struct rpl_run_opts *o, struct drv_shared *sh, struct drv_worker *ws,
                       unsigned nw, uint64_t total, char *err, size_t err_len)
{
    pthread_t th[RPL_THREADS_MAX];
    bool joined[RPL_THREADS_MAX] = {false};
    unsigned started = 0;
    for (; started < nw; started++) {
        int rc = pthread_create(&th[started], NULL, drv_run, &ws[started]);
        if (rc != 0) {
            snprintf(err, err_len, "cannot start a worker thread: %s", strerror(rc));
            break;
        }
    }
    uint64_t start = drv_now_ns() + START_DELAY_NS;
    sh->deadline_ns = o->duration_ms ? start + o->duration_ms * 1000000ull : 0;
    atomic_store(&sh->start_ns, start); /* releases deadline_ns to the workers */
    uint64_t last = 0, last_ns = start, next_print = start + 1000000000ull;
    while (!all_joined(th, joined, started)) {
        struct timespec pause = {0, 20000000};
        nanosleep(&pause, NULL);
        if (o->progress && drv_now_ns() >= next_print) {
            progress_line(ws, started, total, &last, &last_ns);
            next_print += 1000000000ull;
        }
    }
    if (started < nw)
        return -EAGAIN;
    for (unsigned i = 0; i < nw; i++) {
        if (ws[i].error != 0) {
            snprintf(err, err_len, "io_uring setup failed: %s (check kernel.io_uring_disabled "
                     "and seccomp)", strerror(-ws[i].error));
            return ws[i].error;
        }
    }
    return 0;
}

/* The pace of the schedule (pace_build) and, for --rate, the speed that gives that rate on
 * average over it. Returns the pace array, or NULL with err set. */
static int64_t *pace_prepare(struct rpl_run_opts *o, struct drv_shared *sh, uint64_t n,
                             char *err, size_t err_len)
{
    int64_t *pace = pace_build(o->corpus, o->max_gap_us, o->render.copy_span_us,
                               &sh->copy_pace_us);
    if (pace == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    sh->pace_us = pace;
    if (o->open_loop && o->rate > 0) {
        /* Over the schedule's span (one copy step for a schedule of one request). */
        int64_t span = drv_recorded_us(sh, n - 1);
        double span_s = (double)(span > 0 ? span : sh->copy_pace_us) / 1e6;
        o->speed = o->rate * span_s / (double)n;
    }
    if (o->open_loop && !(o->speed > 0)) {
        free(pace);
        snprintf(err, err_len, "open loop needs a speed or a rate above 0");
        return NULL;
    }
    return pace;
}

/* Merges the workers' counts into res, with the run's duration and the kept differences. */
static int collect_results(struct rpl_run_result *res, const struct drv_shared *sh,
                           struct drv_worker *ws, uint64_t n)
{
    const struct rpl_run_opts *o = sh->o;
    for (unsigned srv = 0; srv < RPL_SERVERS_MAX; srv++)
        rpl_server_stats_init(&res->total.server[srv]);
    bench_hist_init(&res->total.timer_lag);
    uint64_t start = atomic_load(&sh->start_ns), last = start;
    for (unsigned i = 0; i < o->threads; i++) {
        merge_stats(&res->total, &ws[i].stats, o->server_count);
        last = ws[i].last_done_ns > last ? ws[i].last_done_ns : last;
    }
    res->seconds = (double)(last - start) / 1e9;
    res->recorded_seconds = (double)drv_recorded_us(sh, n - 1) / 1e6;
    return merge_samples(res, ws, o->threads, o->diff_show_max);
}

int rpl_run(const struct rpl_run_opts *opts, struct rpl_run_result *res, char *err,
            size_t err_len)
{
    BENCH_ASSERT(opts->server_count >= 1 && opts->server_count <= RPL_SERVERS_MAX);
    BENCH_ASSERT(opts->multiply >= 1 && opts->threads >= 1 && opts->threads <= RPL_THREADS_MAX);
    memset(res, 0, sizeof(*res));
    const struct rpl_corpus *c = opts->corpus;
    if (c->req_count == 0) {
        snprintf(err, err_len, "the logs yield no requests for the chosen stages");
        return -EINVAL;
    }
    struct rpl_run_opts o = *opts;
    uint64_t n = c->req_count * o.multiply;
    if (o.max_requests != 0 && o.max_requests < n)
        n = o.max_requests;
    uint64_t procs = (uint64_t)c->proc_count * o.multiply;
    uint32_t stream_total = (uint32_t)(procs < o.conn_cap ? procs : o.conn_cap);
    if (stream_total == 0)
        stream_total = 1;
    if (o.threads > stream_total)
        o.threads = stream_total;

    struct drv_shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.o = &o;
    sh.req_count = c->req_count;
    slots_compute(&o, &sh);
    int64_t *pace = pace_prepare(&o, &sh, n, err, err_len);
    if (pace == NULL)
        return -EINVAL;
    res->speed = o.speed;

    uint64_t *items = NULL, *first = NULL;
    if (schedule_build(c, n, stream_total, &items, &first) != 0) {
        free(pace);
        snprintf(err, err_len, "out of memory for a schedule of %llu requests",
                 (unsigned long long)n);
        return -ENOMEM;
    }
    struct drv_worker *ws = calloc(o.threads, sizeof(*ws));
    int rc = ws == NULL ? -ENOMEM : 0;
    if (rc != 0)
        snprintf(err, err_len, "out of memory");
    unsigned inited = 0;
    for (; rc == 0 && inited < o.threads; inited++)
        rc = drv_init(&ws[inited], inited, &sh, items, first, stream_total, err, err_len);
    if (rc == 0) {
        res->scheduled = n;
        res->stream_count = stream_total;
        for (unsigned i = 0; i < o.threads; i++)
            res->conn_count += ws[i].open_conns;
        rc = run_workers(&o, &sh, ws, o.threads, n, err, err_len);
    }
    if (rc == 0)
        rc = collect_results(res, &sh, ws, n);
    for (unsigned i = 0; ws != NULL && i < inited; i++) {
        drv_fini(&ws[i]);
        free(ws[i].stats.samples);
    }
    free(ws);
    free(items);
    free(first);
    free(pace);
    return rc;
}

void rpl_run_result_free(struct rpl_run_result *res)
{
    free(res->total.samples);
    res->total.samples = NULL;
}
