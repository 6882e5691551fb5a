/*
 * shard.c: a shard's thread: start-up, the event loop, and the end of the thread.
 *
 * shard_init allocates everything the shard will use (pools sized from the limits, receive
 * buffers, timer wheel, poll table, cross-shard state), creates the ring on this thread, arms
 * the shard's eventfd, calls the application's shard_start and then seals: from then on the data
 * path does not allocate (the engine's tests interpose malloc to check it).
 *
 * One turn of the loop (STYLE.md 8): reap a batch of completions and dispatch each by its op
 * kind; run cross-shard messages, due timers and the connection work list; on_turn_end; the
 * memcached clients' batched sends (mc.c); flush cross-shard overflow and wakes, accept and poll
 * changes, this thread's log lines; then one submit-and-wait whose timeout is the next timer
 * (0 if work is left). The loop times each turn (histogram, maximum) and warns, at most every
 * ENG_SLOW_WARN_INTERVAL_MS, when a turn took longer than turn_warn_ms.
 *
 * Stopping: when eng->stop is seen the shard drains (stops accepting, closes idle connections,
 * lets busy ones finish for drain_timeout_ms, then closes the rest). A drained shard (no
 * connection, no accept armed, and the application not busy: ops->shard_busy) is quiet, but it
 * keeps running its loop until every shard is quiet: a request of another shard may still be
 * executing here, or be about to send us a message (a session or accounting owner answering
 * home), and a message to a shard that left is never delivered. Then each calls shard_stop and
 * ends its thread. The ring and pools are freed later by eng_destroy.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "eng/log.h"
#include "internal.h"
#include "mc_int.h"

#define ENG_REAP_BATCH 256u
#define ENG_REAP_ROUNDS 16u /* at most 4096 completions per turn; the rest wait a turn */
#define ENG_SLOW_WARN_INTERVAL_MS 10000u
/* A quiet shard waiting for the others to drain looks again this often. */
#define ENG_STOP_POLL_MS 2u

_Thread_local struct eng_shard *eng_tls_shard;

struct eng_shard *eng_shard_self(void)
{
    return eng_tls_shard;
}

unsigned eng_shard_index(const struct eng_shard *sh)
{
    return sh->index;
}

unsigned eng_shard_count(const struct eng_shard *sh)
{
    return sh->eng->shard_count;
}

void *eng_shard_app(const struct eng_shard *sh)
{
    return sh->app;
}

struct eng *eng_shard_engine(const struct eng_shard *sh)
{
    return sh->eng;
}

uint64_t eng_now_ms(const struct eng_shard *sh)
{
    return sh->now_ms;
}

const struct eng_stats *eng_shard_stats(const struct eng_shard *sh)
{
    return &sh->stats;
}

/* ---------------------------------------------------------------------------------------------
 * Start-up
 */

/* The staging classes (internal.h): x8 from 512 B while at most half the largest, then the
 * largest, stage_bytes_max + recv_buf_bytes; then one for a paused connection, whose input that
 * was already received when its reading stopped is kept too: stage_bytes_max plus every
 * provided receive buffer of the shard (conn.c). The small classes have a buffer for every
 * staging buffer (stage_bufs_per_shard); each large one room for the budget in its size (two
 * buffers at least; the paused class a quarter of that), so the mappings are bounded by the budget
 * times the number of large classes, and only what is staged becomes resident. */
static int stage_classes_init(struct eng_shard *sh)
{
    const struct eng_limits *lim = &sh->eng->cfg.limits;
    uint32_t top = lim->stage_bytes_max + lim->recv_buf_bytes;
    uint64_t paused =
        (uint64_t)lim->stage_bytes_max + (uint64_t)lim->recv_buf_count * lim->recv_buf_bytes;
    unsigned n = 0;
    for (uint64_t b = ENG_STAGE_CLASS_MIN_BYTES; b * 2 <= top && n < ENG_STAGE_CLASSES_MAX - 2;
         b *= 8)
        sh->stage_class_bytes[n++] = (uint32_t)b;
    sh->stage_class_bytes[n++] = top;
    if (paused > top)
        sh->stage_class_bytes[n++] = (uint32_t)paused;
    sh->stage_classes = n;
    sh->stage_budget = lim->stage_bytes_per_shard_max;
    for (unsigned k = 0; k < n; k++) {
        uint64_t cap = sh->stage_budget / sh->stage_class_bytes[k];
        if (k + 1 == n && paused > top)
            cap /= 4; /* only for input already received when reading stopped: rare */
        if (k < ENG_STAGE_CLASS_LARGE || cap > lim->stage_bufs_per_shard)
            cap = lim->stage_bufs_per_shard;
        int rc =
            eng_pool_init(&sh->stage[k], sh->stage_class_bytes[k], cap > 2 ? (uint32_t)cap : 2);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int pools_init(struct eng_shard *sh)
{
    const struct eng_config *cfg = &sh->eng->cfg;
    const struct eng_limits *lim = &cfg->limits;
    sh->conns_max = lim->conns_per_shard_max;
    int rc = eng_pool_init(&sh->conns, eng_conn_slot_bytes(cfg->app_conn_bytes),
                           lim->conns_per_shard_max);
    if (rc == 0)
        rc = stage_classes_init(sh);
    if (rc == 0)
        rc = eng_pool_init(&sh->send, lim->send_bytes_max, lim->send_bufs_per_shard);
    if (rc < 0)
        return rc;
    /* Receive buffers: recv_buf_count x recv_buf_bytes, handed to the kernel at once; they are
     * touched (and become resident) as the kernel cycles through them. */
    sh->recv_map_bytes = (size_t)lim->recv_buf_count * lim->recv_buf_bytes;
    void *m = mmap(NULL, sh->recv_map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        sh->recv_map_bytes = 0;
        return -errno;
    }
    sh->recv_bufs = m;
    return 0;
}

static int ring_create(struct eng_shard *sh, char *err, size_t err_len)
{
    struct eng *e = sh->eng;
    struct eng_ring_params p = {
        .setup_flags = e->uring_flags,
        .msg_ring = e->msg_ring,
        .buf_base = sh->recv_bufs,
        .buf_bytes = e->cfg.limits.recv_buf_bytes,
        .buf_count = e->cfg.limits.recv_buf_count,
        .wake_fd = sh->evfd,
    };
    struct eng_ring *r;
    int rc = e->backend == ENG_BACKEND_URING ? eng_ring_uring_create(&p, &r, err, err_len)
                                             : eng_ring_epoll_create(&p, &r, err, err_len);
    if (rc < 0)
        return rc;
    const struct eng_fault_plan *plan = eng_test_fault_plan();
    if (plan) {
        struct eng_ring *w;
        rc = eng_ring_fault_wrap(r, plan, sh->index, &w);
        if (rc < 0) {
            r->ops->destroy(r);
            return rc;
        }
        r = w;
    }
    sh->ring = r;
    return 0;
}

/* Graceful stop: drain_timeout_ms passed, close whatever is still busy. */
static void drain_timer_fire(struct eng_shard *sh, struct eng_timer *t)
{
    (void)t;
    sh->drain_forced = true;
    eng_conn_drain_force(sh);
}

static int shard_init(struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    char err[256] = "";
    sh->now_ms = eng_clock_ms();
    int rc = pools_init(sh);
    if (rc == 0)
        rc = eng_wheel_init(sh);
    if (rc == 0)
        rc = eng_polls_init(sh, e->cfg.limits.polls_per_shard_max);
    if (rc == 0)
        rc = eng_xshard_shard_init(sh);
    if (rc == 0)
        rc = eng_accept_init(sh);
    if (rc == 0)
        rc = ring_create(sh, err, sizeof(err));
    if (rc < 0) {
        eng_log(ENG_LOG_ERR, "shard %u cannot start: %s", sh->index, err[0] ? err : strerror(-rc));
        return rc;
    }
    eng_timer_init(&sh->drain_timer, drain_timer_fire);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Completions
 */

static void evfd_arm(struct eng_shard *sh)
{
    if (sh->evfd_armed)
        return;
    if (sh->ring->ops->prep_poll(sh->ring, sh->evfd, POLLIN, eng_ud(ENG_OP_EVFD, 0, 0)) == 0)
        sh->evfd_armed = true;
}

static void evfd_complete(struct eng_shard *sh)
{
    uint64_t v;
    ssize_t n = read(sh->evfd, &v, sizeof(v));
    (void)n; /* EAGAIN: another completion already read it */
    sh->evfd_armed = false;
    eng_mbox_check(sh);
}

static void dispatch(struct eng_shard *sh, const struct eng_cqe *cqe)
{
    switch (eng_ud_op(cqe->user_data)) {
    case ENG_OP_ACCEPT:
        eng_accept_complete(sh, cqe);
        break;
    case ENG_OP_RECV:
    case ENG_OP_SEND:
        eng_conn_complete(sh, cqe);
        break;
    case ENG_OP_POLL:
        eng_poll_complete(sh, cqe);
        break;
    case ENG_OP_MC:
        eng_mc_complete(sh, cqe);
        break;
    case ENG_OP_EVFD:
        evfd_complete(sh);
        break;
    case ENG_OP_CANCEL: /* nothing to do: the cancelled op completes on its own */
    case ENG_OP_WAKE:   /* the wake did its job by ending our wait (or failed harmlessly) */
        break;
    case ENG_OP_NONE:
    case ENG_OP_COUNT:
        ENG_ASSERT(!"impossible op kind");
        break;
    }
}

static unsigned reap_all(struct eng_shard *sh)
{
    struct eng_cqe batch[ENG_REAP_BATCH];
    unsigned total = 0;
    for (unsigned round = 0; round < ENG_REAP_ROUNDS; round++) {
        unsigned n = sh->ring->ops->reap(sh->ring, batch, ENG_REAP_BATCH);
        for (unsigned i = 0; i < n; i++)
            dispatch(sh, &batch[i]);
        total += n;
        if (n < ENG_REAP_BATCH)
            break;
    }
    return total;
}

/* ---------------------------------------------------------------------------------------------
 * Stopping
 */

static void drain_check(struct eng_shard *sh)
{
    if (!sh->draining) {
        if (!atomic_load_explicit(&sh->eng->stop, memory_order_acquire))
            return;
        sh->draining = true;
        eng_timer_arm(sh, &sh->drain_timer, sh->eng->cfg.drain_timeout_ms);
        eng_conn_drain_start(sh);
    }
}

static bool accepts_armed(const struct eng_shard *sh)
{
    for (unsigned i = 0; i < sh->listener_count; i++)
        if (sh->listeners[i].armed)
            return true;
    return false;
}

/* Drained: nothing of this shard is left to finish. After drain_timeout_ms the application's
 * own work no longer holds the stop (it is reported by shard_stop). */
static bool shard_drained(struct eng_shard *sh)
{
    const struct eng_app_ops *ops = sh->eng->cfg.ops;
    if (!sh->draining || sh->conns.used != 0 || accepts_armed(sh))
        return false;
    return sh->drain_forced || !ops->shard_busy || !ops->shard_busy(sh->app);
}

/* The stop barrier: true once every shard that runs a loop is quiet. A shard that is quiet
 * stays so: it has no connection left to bring it work of its own. */
static bool stop_ready(struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    if (!sh->quiet) {
        if (!shard_drained(sh))
            return false;
        sh->quiet = true;
        atomic_fetch_add_explicit(&e->quiet_shards, 1, memory_order_acq_rel);
    }
    if (!atomic_load_explicit(&e->start_settled, memory_order_acquire))
        return false;
    return atomic_load_explicit(&e->quiet_shards, memory_order_acquire) >= e->started;
}

/* ---------------------------------------------------------------------------------------------
 * The loop
 */

static void turn_measure(struct eng_shard *sh, uint64_t t0_us)
{
    uint64_t us = eng_clock_us() - t0_us;
    unsigned b = us < 2 ? 0 : (unsigned)(63 - __builtin_clzll(us));
    if (b >= ENG_TURN_HIST_BUCKETS)
        b = ENG_TURN_HIST_BUCKETS - 1;
    ENG_STAT_INC(sh, turns);
    ENG_STAT_INC(sh, turn_us_hist[b]);
    if (us > sh->stats.turn_us_max)
        __atomic_store_n(&sh->stats.turn_us_max, us, __ATOMIC_RELAXED);
    if (us / 1000 <= sh->eng->cfg.limits.turn_warn_ms)
        return;
    ENG_STAT_INC(sh, turns_slow);
    if (sh->slow_warn_ms && sh->now_ms - sh->slow_warn_ms < ENG_SLOW_WARN_INTERVAL_MS)
        return;
    sh->slow_warn_ms = sh->now_ms ? sh->now_ms : 1;
    eng_log(ENG_LOG_WARNING, "shard %u: one loop turn took %llu ms (turn_warn_ms is %u)", sh->index,
            (unsigned long long)(us / 1000), sh->eng->cfg.limits.turn_warn_ms);
}

static uint32_t turn_timeout(struct eng_shard *sh)
{
    if (sh->work_head || sh->polls_work)
        return 0;
    uint32_t t = eng_wheel_timeout_ms(sh);
    if (!sh->evfd_armed && t > 1)
        t = 1; /* the eventfd poll waits for room in the SQ: eng_stop must still reach us */
    if (sh->xout_dirty && t > 1)
        t = 1; /* a destination ring was full: retry soon without spinning */
    return t;
}

static void turn_end(struct eng_shard *sh)
{
    const struct eng_app_ops *ops = sh->eng->cfg.ops;
    eng_conn_work_run(sh);
    if (ops->on_turn_end)
        ops->on_turn_end(sh->app);
    eng_mc_turn_end(sh); /* one send per memcached connection for the turn's operations */
    eng_conn_work_run(sh);
    eng_xshard_flush(sh);
    eng_accept_update(sh);
    eng_polls_flush(sh);
    evfd_arm(sh);
    eng_log_flush();
}

static void wait_once(struct eng_shard *sh, uint32_t timeout)
{
    if (timeout > 0) {
        /* Dekker with eng_xshard_flush: publish that we may sleep, then look once more. */
        atomic_store_explicit(&sh->sleeping, 1, memory_order_seq_cst);
        ENG_DEKKER_FENCE();
        if (eng_xshard_pending(sh))
            timeout = 0;
    }
    int rc = sh->ring->ops->submit_wait(sh->ring, timeout);
    atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        ENG_STAT_INC(sh, submit_errors);
}

static void shard_loop(struct eng_shard *sh)
{
    const struct eng_app_ops *ops = sh->eng->cfg.ops;
    bool stopped_app = false;
    for (;;) {
        uint64_t t0 = eng_clock_us();
        sh->now_ms = t0 / 1000;
        reap_all(sh);
        drain_check(sh);
        eng_xshard_drain(sh);
        eng_wheel_run(sh);
        turn_end(sh);
        if (stop_ready(sh)) {
            if (!stopped_app && ops->shard_stop)
                ops->shard_stop(sh, sh->app);
            stopped_app = true;
            /* shard_stop may have queued last work (poll stops); flush it, then leave. */
            eng_polls_flush(sh);
            sh->ring->ops->submit_wait(sh->ring, 0);
            turn_measure(sh, t0);
            break;
        }
        uint32_t timeout = turn_timeout(sh);
        if (sh->quiet && timeout > ENG_STOP_POLL_MS)
            timeout = ENG_STOP_POLL_MS; /* waiting for the other shards: look again soon */
        turn_measure(sh, t0);
        wait_once(sh, timeout);
    }
}

void *eng_shard_main(void *arg)
{
    struct eng_shard *sh = arg;
    struct eng *e = sh->eng;
    eng_tls_shard = sh;
    eng_log_thread_buffer(true);
    int rc = shard_init(sh);
    if (rc == 0 && e->cfg.ops->shard_start)
        rc = e->cfg.ops->shard_start(sh, e->cfg.app_global, &sh->app);
    if (rc < 0 && !sh->ring)
        eng_log_flush();
    pthread_mutex_lock(&e->start_lock);
    if (rc < 0) {
        e->start_failed++;
        if (!e->start_err)
            e->start_err = rc;
    } else {
        e->started++;
    }
    pthread_cond_broadcast(&e->start_cond);
    pthread_mutex_unlock(&e->start_lock);
    if (rc == 0) {
        sh->sealed = true;
        shard_loop(sh);
        eng_mc_shard_exit(sh);
    }
    if (sh->ring)
        sh->ring->ops->thread_exit(sh->ring);
    pthread_mutex_lock(&e->mbox_lock);
    sh->exited = true;
    if (sh->mbox_seen != e->mbox_seq) { /* a caller waits for us: we will not run it */
        sh->mbox_seen = e->mbox_seq;
        e->mbox_skipped++;
        e->mbox_remaining--;
        pthread_cond_broadcast(&e->mbox_cond);
    }
    pthread_mutex_unlock(&e->mbox_lock);
    eng_log_flush();
    eng_log_thread_buffer(false);
    eng_tls_shard = NULL;
    uint64_t one = 1;
    ssize_t n = write(e->main_evfd, &one, sizeof(one));
    (void)n;
    return NULL;
}

/* Runs a pending eng_run_on_shards request (from the eventfd completion). */
void eng_mbox_check(struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    pthread_mutex_lock(&e->mbox_lock);
    if (sh->mbox_seen == e->mbox_seq) {
        pthread_mutex_unlock(&e->mbox_lock);
        return;
    }
    eng_shard_fn *fn = e->mbox_fn;
    void *ctx = e->mbox_ctx;
    pthread_mutex_unlock(&e->mbox_lock);
    fn(sh, sh->app, ctx);
    pthread_mutex_lock(&e->mbox_lock);
    sh->mbox_seen = e->mbox_seq;
    e->mbox_remaining--;
    pthread_cond_broadcast(&e->mbox_cond);
    pthread_mutex_unlock(&e->mbox_lock);
}

void eng_shard_free(struct eng_shard *sh)
{
    if (sh->ring)
        sh->ring->ops->destroy(sh->ring);
    sh->ring = NULL;
    eng_pool_fini(&sh->conns);
    for (unsigned k = 0; k < ENG_STAGE_CLASSES_MAX; k++)
        eng_pool_fini(&sh->stage[k]);
    eng_pool_fini(&sh->send);
    if (sh->recv_bufs)
        munmap(sh->recv_bufs, sh->recv_map_bytes);
    sh->recv_bufs = NULL;
    free(sh->wheel);
    free(sh->polls);
    free(sh->xout);
    free(sh->listeners);
    sh->wheel = NULL;
    sh->polls = NULL;
    sh->xout = NULL;
    sh->listeners = NULL;
    if (sh->evfd >= 0)
        close(sh->evfd);
    sh->evfd = -1;
}

/* Test hooks */
void eng_test_pool_usage(struct eng_shard *sh, uint32_t *conns, uint32_t *stage, uint32_t *send)
{
    *conns = sh->conns.used;
    *stage = sh->stage_bufs_used;
    *send = sh->send.used;
}

void eng_test_stage_fail_after(struct eng_shard *sh, uint32_t n)
{
    sh->stage_fail_after = n;
}

void eng_test_send_fail_after(struct eng_shard *sh, uint32_t n)
{
    sh->send.fail_after = n;
}
