/*
 * work.c: worker threads for blocking jobs submitted by shards (see eng/work.h).
 *
 * Submission: one FIFO for the whole pool (intrusive, eng_work.next) under a mutex, bounded by
 * queue_max; idle workers wait on a condition variable. Completion: each attached shard has a
 * lock-free LIFO stack (workers push with a CAS, the shard takes the whole stack with one
 * exchange and reverses it, so dones run in completion order) and an eventfd polled through
 * eng_poll. A worker writes the eventfd only when its push found the stack empty, and the
 * shard reads the eventfd before it takes the stack, so every transition from empty to
 * non-empty is followed by a wake and busy shards are woken once per batch.
 *
 * Owns: the worker threads, the per-shard eventfds and slots. Shard slots are touched by their
 * shard (inflight, poll) and by workers (the stack head and the eventfd write) only.
 * Failures: running out of queue is -ENOBUFS (counted); everything else is start-up time.
 * Limits: ENG_WORK_THREADS_MAX threads, ENG_WORK_SHARDS_MAX shard indexes, queue_max waiting.
 */
#include "eng/work.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "eng/assert.h"
#include "eng/log.h"

struct work_shard {
    struct eng_work_pool *wp;
    struct eng_shard *sh;
    int evfd;
    struct eng_poll poll;
    _Atomic(struct eng_work *) done_head; /* pushed by workers, taken by the shard */
    _Atomic uint32_t pushing;             /* workers inside complete() for this shard */
    uint32_t inflight;                    /* submitted, done not yet run (shard only) */
    bool detaching;
};

struct eng_work_pool {
    struct eng_work_config cfg;
    pthread_mutex_t lock; /* queue, stop, started, thread state */
    pthread_cond_t cond;  /* workers: a job or stop */
    struct eng_work *q_head, *q_tail;
    uint32_t q_count;
    bool stop;
    bool started;
    unsigned threads_running;
    pthread_t threads[ENG_WORK_THREADS_MAX];
    struct work_shard *shards[ENG_WORK_SHARDS_MAX]; /* by shard index; set by attach */

    _Atomic uint64_t submitted, completed, cancelled, queue_full, queue_depth_max, running, wakes,
        run_us_total;
};

struct worker_arg {
    struct eng_work_pool *wp;
    unsigned index;
};

static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

void eng_work_config_defaults(struct eng_work_config *cfg)
{
    cfg->thread_count = 2;
    cfg->queue_max = 1024;
    cfg->name = "work";
}

int eng_work_create(const struct eng_work_config *cfg, struct eng_work_pool **out)
{
    if (cfg->thread_count == 0 || cfg->thread_count > ENG_WORK_THREADS_MAX || cfg->queue_max == 0)
        return -EINVAL;
    struct eng_work_pool *wp = calloc(1, sizeof(*wp));
    if (!wp)
        return -ENOMEM;
    wp->cfg = *cfg;
    if (!wp->cfg.name)
        wp->cfg.name = "work";
    pthread_mutex_init(&wp->lock, NULL);
    pthread_cond_init(&wp->cond, NULL);
    *out = wp;
    return 0;
}

unsigned eng_work_thread_count(const struct eng_work_pool *wp)
{
    return wp->cfg.thread_count;
}

/* ---------------------------------------------------------------------------------------------
 * Workers
 */

static void complete(struct eng_work_pool *wp, struct eng_work *w)
{
    struct work_shard *ws = wp->shards[eng_shard_index(w->shard)];
    ENG_ASSERT(ws != NULL);
    /* Detach frees ws once every done ran; it also waits for pushing to drop to 0, because the
     * shard can run our done before we wrote the eventfd below. */
    atomic_fetch_add_explicit(&ws->pushing, 1, memory_order_acquire);
    struct eng_work *old = atomic_load_explicit(&ws->done_head, memory_order_relaxed);
    do {
        w->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&ws->done_head, &old, w, memory_order_release,
                                                    memory_order_relaxed));
    if (old == NULL) {
        uint64_t one = 1;
        ssize_t n = write(ws->evfd, &one, sizeof(one));
        ENG_ASSERT(n == (ssize_t)sizeof(one)); /* an eventfd write fails only on overflow */
        stat_add(&wp->wakes, 1);
    }
    atomic_fetch_sub_explicit(&ws->pushing, 1, memory_order_release);
}

static uint64_t now_us(void)
{
    return eng_clock_us();
}

static void *worker_main(void *arg)
{
    struct worker_arg a = *(struct worker_arg *)arg;
    free(arg);
    struct eng_work_pool *wp = a.wp;
    char name[16];
    snprintf(name, sizeof(name), "%s/%u", wp->cfg.name, a.index);
    pthread_setname_np(pthread_self(), name);
    pthread_mutex_lock(&wp->lock);
    for (;;) {
        while (!wp->q_head && !wp->stop)
            pthread_cond_wait(&wp->cond, &wp->lock);
        if (!wp->q_head)
            break; /* stopping and nothing left */
        struct eng_work *w = wp->q_head;
        wp->q_head = w->next;
        if (!wp->q_head)
            wp->q_tail = NULL;
        wp->q_count--;
        stat_add(&wp->running, 1);
        pthread_mutex_unlock(&wp->lock);
        uint64_t t0 = now_us();
        w->status = 0;
        w->run(w, a.index);
        stat_add(&wp->run_us_total, now_us() - t0);
        atomic_fetch_sub_explicit(&wp->running, 1, memory_order_relaxed);
        complete(wp, w);
        pthread_mutex_lock(&wp->lock);
    }
    wp->threads_running--;
    pthread_mutex_unlock(&wp->lock);
    return NULL;
}

/* With wp->lock held. */
static int start_locked(struct eng_work_pool *wp)
{
    if (wp->started)
        return 0;
    for (unsigned i = 0; i < wp->cfg.thread_count; i++) {
        struct worker_arg *a = malloc(sizeof(*a));
        if (!a)
            return -ENOMEM;
        *a = (struct worker_arg){wp, i};
        int rc = pthread_create(&wp->threads[i], NULL, worker_main, a);
        if (rc != 0) {
            free(a);
            /* The ones already started keep running; destroy joins them. */
            wp->cfg.thread_count = i;
            wp->started = i > 0;
            return -rc;
        }
        wp->threads_running++;
    }
    wp->started = true;
    return 0;
}

int eng_work_start(struct eng_work_pool *wp)
{
    pthread_mutex_lock(&wp->lock);
    int rc = start_locked(wp);
    pthread_mutex_unlock(&wp->lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Shards
 */

/* Runs the dones waiting on ws's stack, oldest first. Returns how many ran. */
static unsigned drain_done(struct work_shard *ws)
{
    struct eng_work *list = atomic_exchange_explicit(&ws->done_head, NULL, memory_order_acquire);
    struct eng_work *fifo = NULL;
    while (list) { /* reverse the LIFO */
        struct eng_work *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    unsigned n = 0;
    while (fifo) {
        struct eng_work *w = fifo;
        fifo = w->next;
        ENG_ASSERT(ws->inflight > 0);
        ws->inflight--;
        stat_add(w->status == 0 ? &ws->wp->completed : &ws->wp->cancelled, 1);
        w->done(ws->sh, w);
        n++;
    }
    return n;
}

static void evfd_read(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n; /* EAGAIN: nothing was written since the last read */
}

static void on_wake(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)revents;
    struct work_shard *ws = (struct work_shard *)(void *)((char *)p - offsetof(struct work_shard, poll));
    ENG_ASSERT(ws->sh == sh);
    evfd_read(ws->evfd);
    drain_done(ws);
}

int eng_work_shard_attach(struct eng_work_pool *wp, struct eng_shard *sh)
{
    ENG_ASSERT(sh == eng_shard_self());
    unsigned idx = eng_shard_index(sh);
    if (idx >= ENG_WORK_SHARDS_MAX)
        return -E2BIG;
    if (wp->shards[idx])
        return -EALREADY;
    struct work_shard *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return -ENOMEM;
    ws->wp = wp;
    ws->sh = sh;
    ws->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = ws->evfd < 0 ? -errno : eng_poll_start(sh, &ws->poll, ws->evfd, POLLIN, on_wake);
    if (rc < 0) {
        if (ws->evfd >= 0)
            close(ws->evfd);
        free(ws);
        return rc;
    }
    pthread_mutex_lock(&wp->lock);
    wp->shards[idx] = ws;
    rc = start_locked(wp);
    pthread_mutex_unlock(&wp->lock);
    if (rc < 0)
        eng_log(ENG_LOG_ERR, "work pool %s: cannot start its threads: %s", wp->cfg.name,
                strerror(-rc));
    return rc;
}

int eng_work_submit(struct eng_work_pool *wp, struct eng_shard *sh, struct eng_work *w)
{
    ENG_ASSERT(sh == eng_shard_self());
    ENG_ASSERT(w->run != NULL);
    ENG_ASSERT(w->done != NULL);
    unsigned idx = eng_shard_index(sh);
    struct work_shard *ws = idx < ENG_WORK_SHARDS_MAX ? wp->shards[idx] : NULL;
    if (!ws || ws->detaching)
        return -ENOTCONN;
    w->shard = sh;
    w->next = NULL;
    w->status = -EINPROGRESS;
    pthread_mutex_lock(&wp->lock);
    if (wp->stop || wp->cfg.thread_count == 0) {
        pthread_mutex_unlock(&wp->lock);
        return -ESHUTDOWN;
    }
    if (wp->q_count >= wp->cfg.queue_max) {
        pthread_mutex_unlock(&wp->lock);
        stat_add(&wp->queue_full, 1);
        return -ENOBUFS;
    }
    if (wp->q_tail)
        wp->q_tail->next = w;
    else
        wp->q_head = w;
    wp->q_tail = w;
    uint32_t depth = ++wp->q_count;
    pthread_cond_signal(&wp->cond);
    pthread_mutex_unlock(&wp->lock);
    if (depth > atomic_load_explicit(&wp->queue_depth_max, memory_order_relaxed))
        atomic_store_explicit(&wp->queue_depth_max, depth, memory_order_relaxed);
    ws->inflight++;
    stat_add(&wp->submitted, 1);
    return 0;
}

/* Takes sh's jobs out of the queue and pushes them, cancelled, onto its done stack. */
static void cancel_queued(struct eng_work_pool *wp, struct work_shard *ws)
{
    pthread_mutex_lock(&wp->lock);
    struct eng_work **link = &wp->q_head;
    struct eng_work *prev = NULL;
    while (*link) {
        struct eng_work *w = *link;
        if (w->shard != ws->sh) {
            prev = w;
            link = &w->next;
            continue;
        }
        *link = w->next;
        if (wp->q_tail == w)
            wp->q_tail = prev;
        wp->q_count--;
        w->status = -ECANCELED;
        complete(wp, w);
    }
    pthread_mutex_unlock(&wp->lock);
}

void eng_work_shard_detach(struct eng_work_pool *wp, struct eng_shard *sh)
{
    ENG_ASSERT(sh == eng_shard_self());
    unsigned idx = eng_shard_index(sh);
    struct work_shard *ws = idx < ENG_WORK_SHARDS_MAX ? wp->shards[idx] : NULL;
    if (!ws)
        return;
    ws->detaching = true;
    cancel_queued(wp, ws);
    /* Running jobs finish on their own (they are bounded by their own deadlines); wait for
     * each wake without the ring, which no longer runs our loop for this. */
    while (ws->inflight > 0) {
        if (drain_done(ws) > 0)
            continue;
        struct pollfd pfd = {.fd = ws->evfd, .events = POLLIN};
        if (poll(&pfd, 1, 1000) > 0)
            evfd_read(ws->evfd);
    }
    while (atomic_load_explicit(&ws->pushing, memory_order_acquire) > 0)
        sched_yield(); /* a worker is between its push and its eventfd write: a few instructions */
    eng_poll_stop(sh, &ws->poll);
    pthread_mutex_lock(&wp->lock);
    wp->shards[idx] = NULL;
    pthread_mutex_unlock(&wp->lock);
    close(ws->evfd);
    free(ws);
}

void eng_work_destroy(struct eng_work_pool *wp)
{
    if (!wp)
        return;
    pthread_mutex_lock(&wp->lock);
    /* Whatever is still queued belongs to shards that never detached: drop it. */
    for (struct eng_work *w = wp->q_head; w; w = w->next)
        stat_add(&wp->cancelled, 1);
    wp->q_head = wp->q_tail = NULL;
    wp->q_count = 0;
    wp->stop = true;
    pthread_cond_broadcast(&wp->cond);
    unsigned n = wp->started ? wp->cfg.thread_count : 0;
    pthread_mutex_unlock(&wp->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(wp->threads[i], NULL);
    for (unsigned i = 0; i < ENG_WORK_SHARDS_MAX; i++) {
        struct work_shard *ws = wp->shards[i];
        if (!ws)
            continue;
        /* A shard that never detached (its thread is gone): nobody can run its dones. */
        close(ws->evfd);
        free(ws);
    }
    pthread_mutex_destroy(&wp->lock);
    pthread_cond_destroy(&wp->cond);
    free(wp);
}

void eng_work_pool_stats(const struct eng_work_pool *wp, struct eng_work_stats *out)
{
    struct eng_work_pool *m = (struct eng_work_pool *)wp;
    out->submitted = atomic_load_explicit(&m->submitted, memory_order_relaxed);
    out->completed = atomic_load_explicit(&m->completed, memory_order_relaxed);
    out->cancelled = atomic_load_explicit(&m->cancelled, memory_order_relaxed);
    out->queue_full = atomic_load_explicit(&m->queue_full, memory_order_relaxed);
    out->queue_depth_max = atomic_load_explicit(&m->queue_depth_max, memory_order_relaxed);
    out->running = atomic_load_explicit(&m->running, memory_order_relaxed);
    out->wakes = atomic_load_explicit(&m->wakes, memory_order_relaxed);
    out->run_us_total = atomic_load_explicit(&m->run_us_total, memory_order_relaxed);
    pthread_mutex_lock(&m->lock);
    out->queue_depth = m->q_count;
    pthread_mutex_unlock(&m->lock);
}
