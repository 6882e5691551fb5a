/*
 * eng/work.h: a small pool of worker threads for blocking work (SQLite, file I/O) submitted by
 * shards. Public API; knows nothing about what the work is.
 *
 * A job is an application object embedding struct eng_work. A shard submits it; a worker
 * thread runs w->run(w, worker_index); the submitting shard then runs w->done(sh, w) on its
 * own thread, from its loop (never inside eng_work_submit). Completions travel through a
 * lock-free stack per shard and wake the shard through an eventfd polled on its ring, so the
 * shard's data path takes no lock except the short one around the submission queue.
 *
 * Lifecycle: eng_work_create on any thread starts no thread (a daemon may fork after it); the
 * workers start with the first eng_work_shard_attach (or eng_work_start). Each shard that
 * submits attaches at its start and detaches at its stop: detach cancels its jobs still
 * queued (status -ECANCELED), waits for the ones running, and runs every outstanding done on
 * the shard before it returns. eng_work_destroy (after every shard detached) lets the workers
 * finish and joins them.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_WORK_H
#define ENG_WORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_work_pool;
struct eng_work;

/* On a worker thread. worker_index is 0..thread_count-1 (per-worker state, e.g. one database
 * connection each). May block (that is what the pool is for), but should be bounded. */
typedef void eng_work_run_fn(struct eng_work *w, unsigned worker_index);
/* On the submitting shard, from its loop (or inside eng_work_shard_detach). */
typedef void eng_work_done_fn(struct eng_shard *sh, struct eng_work *w);

struct eng_work {
    struct eng_work *next;  /* private */
    struct eng_shard *shard; /* private */
    eng_work_run_fn *run;
    eng_work_done_fn *done;
    int status; /* set before done: 0 it ran, -ECANCELED it never ran (shard or pool stopping) */
};

#define ENG_WORK_THREADS_MAX 64u
#define ENG_WORK_SHARDS_MAX 1024u

struct eng_work_config {
    unsigned thread_count; /* 1..ENG_WORK_THREADS_MAX. Default 2. */
    uint32_t queue_max;    /* jobs waiting for a worker (not yet running), whole pool; one more
                              is refused with -ENOBUFS and counted. Default 1024. */
    const char *name;      /* worker thread names "NAME/N" (cut to 15 bytes). Default "work". */
};

void eng_work_config_defaults(struct eng_work_config *cfg);

/* Returns 0 or -EINVAL (thread_count, queue_max) / -ENOMEM. No thread is started. */
int eng_work_create(const struct eng_work_config *cfg, struct eng_work_pool **out);

/* Starts the workers if they are not running yet; any thread. 0 or -errno (pthread_create). */
int eng_work_start(struct eng_work_pool *wp);

/* On sh's thread, at shard start (it allocates): prepares sh's completion path and starts the
 * workers if needed. 0, -EALREADY (attached), -E2BIG (shard index >= ENG_WORK_SHARDS_MAX),
 * -ENOMEM, -ENOSPC (polls_per_shard_max), or pthread_create's error. */
int eng_work_shard_attach(struct eng_work_pool *wp, struct eng_shard *sh);

/* On sh's thread. Queues w (run, done set by the caller; the pool owns w until done). Returns
 * 0 (done will run exactly once, on sh, later), -ENOBUFS (queue_max jobs waiting: counted),
 * -ENOTCONN (sh is not attached or is detaching), -ESHUTDOWN (the pool is stopping). */
int eng_work_submit(struct eng_work_pool *wp, struct eng_shard *sh, struct eng_work *w);

/* On sh's thread, at shard stop. Cancels sh's queued jobs, waits for its running ones and
 * runs every outstanding done (status 0 or -ECANCELED) before returning. A done may submit
 * again: that returns -ENOTCONN. No-op if sh is not attached. */
void eng_work_shard_detach(struct eng_work_pool *wp, struct eng_shard *sh);

/* Main thread, after every shard detached (or never started). Jobs still queued then belong to
 * no running shard: they are dropped without their done (counted as cancelled). Lets running
 * jobs finish, joins the workers and frees the pool. NULL is a no-op. */
void eng_work_destroy(struct eng_work_pool *wp);

struct eng_work_stats {
    uint64_t submitted;
    uint64_t completed;       /* done ran with status 0 */
    uint64_t cancelled;       /* done ran (or was dropped) with -ECANCELED */
    uint64_t queue_full;      /* submissions refused with -ENOBUFS */
    uint64_t queue_depth;     /* jobs waiting now */
    uint64_t queue_depth_max; /* most jobs ever waiting at once */
    uint64_t running;         /* jobs on a worker now */
    uint64_t wakes;           /* eventfd writes to wake a shard */
    uint64_t run_us_total;    /* time spent in run, all workers */
};

/* Any thread; relaxed reads (exact once the pool is idle). */
void eng_work_pool_stats(const struct eng_work_pool *wp, struct eng_work_stats *out);
unsigned eng_work_thread_count(const struct eng_work_pool *wp);

#ifdef __cplusplus
}
#endif

#endif
