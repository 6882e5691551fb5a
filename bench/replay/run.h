/*
 * run.h: replays a built corpus against one policy server, or two in differential mode.
 *
 * Every smtpd process of the log (times --multiply copies) is a stream: it sends its requests
 * one after another, each on its persistent connection for the request's stage (one connection
 * per distinct policy address, as smtpd keeps one per check_policy_service), and waits for the
 * reply (in differential mode, for both replies) before its next request. Streams are folded
 * onto at most conn_cap streams (several smtpd processes then share one, in time order) and
 * spread over `threads` io_uring worker threads (worker.c). Closed loop: every stream sends its
 * next request as soon as the previous one is answered. Open loop: a request is sent at its
 * recorded time divided by the speed factor (or later, if its stream is still busy), and its
 * latency is measured from that scheduled time, so a slow server cannot hide queueing.
 *
 * Memory: rpl_run allocates the schedule (8 bytes per request) and per-thread pools before the
 * first request; the workers' loops do not allocate. Bounds: max_requests, duration_ms and a
 * per-request timeout_ms (a late reply counts as a timeout and its connection is replaced).
 */
#ifndef RPL_RUN_H
#define RPL_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "actions.h"
#include "addr.h"
#include "corpus.h"
#include "hist.h"
#include "render.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RPL_SERVERS_MAX 2u      /* --server and --against */
#define RPL_DIFF_KINDS_MAX 64u  /* distinct "A -> B" kinds counted; the rest go to "other" */
#define RPL_DIFF_TEXT_BYTES 4096u
#define RPL_REQUEST_BYTES_MAX 8192u /* a rendered request longer than this is skipped (counted) */
#define RPL_REPLY_BYTES_MAX 4096u   /* a longer reply is malformed */
#define RPL_THREADS_MAX 64u

struct rpl_run_opts {
    const struct rpl_corpus *corpus;
    struct rpl_render_opts render;
    /* servers[s][stage]: where server s gets requests of that stage (--port-map). */
    struct bench_addr servers[RPL_SERVERS_MAX][RPL_STAGE_COUNT];
    unsigned server_count; /* 1, or 2 for differential mode */
    uint32_t multiply;     /* >= 1 */
    uint32_t conn_cap;     /* streams at most (connections = streams x distinct addresses) */
    unsigned threads;      /* worker threads, 1..RPL_THREADS_MAX */
    bool open_loop;
    double speed;          /* open loop: recorded pace x speed (when rate is 0) */
    double rate;           /* open loop: requests per second on average over the schedule */
    int64_t max_gap_us;    /* open loop: recorded pauses longer than this are cut to it */
    uint64_t max_requests; /* 0: all */
    uint64_t duration_ms;  /* 0: no limit; no new request is sent after it */
    uint32_t timeout_ms;   /* per request */
    uint32_t diff_show_max;/* differences kept in full */
    bool progress;         /* a line on stderr every second */
};

struct rpl_diff_kind {
    char name[80]; /* "dunno -> reject" (first words of both replies) */
    uint64_t count;
};

struct rpl_diff_sample {
    uint64_t seq;                     /* position in the schedule */
    char text[RPL_DIFF_TEXT_BYTES];   /* request, then both replies */
    uint32_t text_len;
};

/* What one server did, as seen by one thread. */
struct rpl_server_stats {
    uint64_t requests;      /* replies received */
    uint64_t err_closed;    /* the server closed or reset a connection with a request out */
    uint64_t err_malformed; /* a reply without action, unparsable, too long, or unasked bytes */
    uint64_t err_timeout;   /* no reply within timeout_ms */
    uint64_t err_connect;   /* a connection needed but not made */
    uint64_t connects;
    struct bench_actions actions;
    struct bench_hist latency; /* microseconds */
};

void rpl_server_stats_init(struct rpl_server_stats *s);
void rpl_server_stats_merge(struct rpl_server_stats *dst, const struct rpl_server_stats *src);
uint64_t rpl_server_stats_errors(const struct rpl_server_stats *s);

/* One thread's counts; merged into the result. */
struct rpl_run_stats {
    struct rpl_server_stats server[RPL_SERVERS_MAX];
    uint64_t requests;          /* requests completed (answered, failed or timed out) */
    uint64_t skipped_too_big;   /* rendered request over RPL_REQUEST_BYTES_MAX */
    uint64_t late_sends;        /* open loop: sent more than 1 ms after the scheduled time */
    /* Open loop: how late the tool itself sent requests whose stream was idle at their time
     * (its timer and scheduling precision; a busy stream's wait is the server's doing). */
    struct bench_hist timer_lag;
    uint64_t diff_compared;     /* requests answered by both servers */
    uint64_t diff_count;        /* ... whose action lists differ */
    uint64_t diff_other;        /* kinds beyond RPL_DIFF_KINDS_MAX */
    uint32_t diff_kind_count;
    struct rpl_diff_kind diff_kinds[RPL_DIFF_KINDS_MAX];
    uint32_t sample_count;
    struct rpl_diff_sample *samples; /* diff_show_max entries, owned by the run */
};

struct rpl_run_result {
    struct rpl_run_stats total;
    uint64_t scheduled;     /* requests in the schedule (copies included, max_requests applied) */
    uint64_t stream_count;
    uint64_t conn_count;    /* connections opened at the start */
    double seconds;         /* from the first send to the last reply */
    double recorded_seconds;/* span of the schedule at the recorded pace (gaps cut) */
    double speed;           /* the pace factor used (from rate when given) */
};

/* Runs the replay. Returns 0 (even if requests failed: see the counts), or -errno with one
 * sentence in err when it could not start (no memory, io_uring unavailable, threads). The
 * result's samples array is allocated here; free it with rpl_run_result_free. */
int rpl_run(const struct rpl_run_opts *o, struct rpl_run_result *res, char *err, size_t err_len);

void rpl_run_result_free(struct rpl_run_result *res);

#ifdef __cplusplus
}
#endif

#endif
