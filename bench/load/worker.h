/*
 * worker.h: one load-generator thread: an epoll loop driving a share of the connections in
 * closed loop (send one request, wait for its reply, record the latency, send the next).
 *
 * Each worker owns its connections, buffers, request generators and statistics; nothing is
 * shared with other workers. The main thread reads the statistics only after joining the
 * worker. All memory is allocated by worker_init; the loop itself does not allocate.
 * Operational errors (refused or failed connects, a peer closing, a malformed reply, a reply
 * later than timeout_ms) are counted, the connection is closed and opened again.
 */
#ifndef BENCH_LOAD_WORKER_H
#define BENCH_LOAD_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "reqgen.h"
#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOAD_REPLY_BYTES_MAX 4096u  /* a longer reply counts as malformed */
#define LOAD_RECONNECT_DELAY_MS 100 /* after a failed connect */

/* What every worker shares, read-only once the workers run (except the atomics). */
struct load_shared {
    const struct bench_addr *servers;
    unsigned server_count;
    const char *fixed_request; /* --request-file contents, or NULL to generate */
    size_t fixed_request_len;
    struct bench_reqgen_opts gen_opts;
    uint64_t seed;
    int timeout_ms;
    uint64_t measure_start_ns; /* CLOCK_MONOTONIC; replies in [start, end) are counted */
    uint64_t measure_end_ns;
    atomic_bool stop;
};

struct load_conn;

struct load_worker {
    unsigned idx;
    struct load_shared *shared;
    int epoll_fd;
    struct load_conn *conns;
    unsigned conn_count;
    uint32_t first_conn_idx; /* global index of conns[0]: seeds, server choice */
    struct load_stats stats;
};

/* Allocates conn_count connections (global indexes first_conn_idx...). Returns 0 or -errno. */
int load_worker_init(struct load_worker *w, unsigned idx, struct load_shared *shared,
                     uint32_t first_conn_idx, unsigned conn_count);

/* The thread body (arg is a struct load_worker *): runs until shared->stop. */
void *load_worker_run(void *arg);

void load_worker_fini(struct load_worker *w);

uint64_t load_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif
