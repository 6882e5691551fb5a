/*
 * drive.h: one replay worker thread: an io_uring loop driving a share of the streams (see run.h
 * for what a stream is). Internal to bench/replay; run.c creates, starts and joins the workers.
 *
 * A worker owns its ring, its streams' request buffers and its connection pool; nothing is
 * shared with other workers except the read-only corpus, schedule and options, and a few
 * atomics (progress, stop). drv_init allocates everything and opens every connection (blocking
 * connects, before the clock starts); drv_run does not allocate.
 */
#ifndef RPL_DRIVE_H
#define RPL_DRIVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "run.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read-only for the workers once they run, except the atomics. */
struct drv_shared {
    const struct rpl_run_opts *o;
    uint64_t req_count;        /* corpus requests per copy */
    const int64_t *pace_us;    /* per corpus request: recorded time from the first request,
                                  with gaps over max_gap_us cut to it (the open loop's pace) */
    int64_t copy_pace_us;      /* the same between the starts of two copies */
    uint8_t slot_of[RPL_SERVERS_MAX][RPL_STAGE_COUNT]; /* stage -> connection slot */
    uint8_t slot_count[RPL_SERVERS_MAX];
    _Atomic uint64_t start_ns; /* CLOCK_MONOTONIC of the schedule's time 0; 0 until go */
    uint64_t deadline_ns;      /* no new request after it (0: none); set with start_ns */
};

struct drv_stream;
struct drv_conn;
struct io_uring;

struct drv_worker {
    unsigned idx;
    struct drv_shared *sh;
    struct io_uring *ring;
    struct drv_stream *streams;
    uint32_t stream_count;
    struct drv_conn *conns;
    uint32_t conn_cap, conn_free_head;
    uint32_t *heap; /* idle streams waiting for their scheduled time (open loop) */
    uint32_t heap_len;
    uint32_t *ready; /* FIFO of streams whose next request starts in the next turn */
    uint32_t ready_head, ready_len;
    int error;       /* -errno when the ring could not be set up (drv_run returned at once) */
    uint32_t active;      /* streams with a request outstanding */
    uint32_t open_conns;  /* connections opened by drv_init */
    uint64_t last_done_ns;
    _Atomic uint64_t progress; /* requests completed, for the progress line */
    struct rpl_run_stats stats;
};

/* Streams: items[first[s]..first[s+1]) are stream s's schedule positions (g = copy * R + i).
 * The worker takes the streams with s % threads == idx. Returns 0 or -errno with err set. */
int drv_init(struct drv_worker *w, unsigned idx, struct drv_shared *sh, const uint64_t *items,
             const uint64_t *first, uint32_t stream_total, char *err, size_t err_len);

/* The thread body (arg is a struct drv_worker *): waits for sh->start_ns, then runs until its
 * streams are done or the deadline passed and nothing is outstanding. */
void *drv_run(void *arg);

void drv_fini(struct drv_worker *w);

uint64_t drv_now_ns(void);

/* Recorded time of schedule position g from the schedule's start, gaps cut (see pace_us). */
int64_t drv_recorded_us(const struct drv_shared *sh, uint64_t g);

#ifdef __cplusplus
}
#endif

#endif
