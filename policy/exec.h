/*
 * exec.h: per-shard policy state and the processing of one request (internal to policy/):
 * session lookup, chain, reply, session store (spec 7.1 steps 3-4), with the request deadline.
 *
 * The host (daemon.c on the engine, testkit.c without it) builds a request on its home shard,
 * picks the shard that owns its session (pol_exec_owner), gets it there, and calls
 * pol_exec_begin on that shard. When the outcome is known the request's done callback runs on
 * that shard: once with r->final set (answer and release together), or, when the deadline
 * expired while a plugin was waiting for an asynchronous operation, first with r->final clear
 * (answer now: r->outcome is POL_OUT_TIMEOUT) and again with r->final set when the operation
 * came back and the session was stored. done is never called from inside pol_exec_begin's
 * caller's stack twice for one request, and a request is never touched by exec after the
 * final done.
 *
 * Everything runs on the processing shard's thread; a pol_shard is touched only by its thread.
 */
#ifndef POL_EXEC_H
#define POL_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "request.h"
#include "sstore.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;

/* Plugin headroom in every request arena, beyond its attributes and its session. */
#define POL_REQ_HEADROOM_BYTES 8192u

struct pol_shard_stats {
    uint64_t requests;      /* built */
    uint64_t replies;       /* chains that produced a reply */
    uint64_t failed;        /* chains that failed (error_action, or close) */
    uint64_t timeouts;      /* request_timeout expired */
    uint64_t no_request;    /* request pool or arena pool empty: connection shed */
    uint64_t session_full;  /* Memory cache refused a session: a throw-away one was used */
    uint64_t session_nomem; /* a stored session did not fit the request arena */
};

/* One configuration generation's per-shard state (hot reload, policy/reload.c): the plugins'
 * and connections' shard data of one pol_server, and how many requests homed on this shard
 * still refer to it. */
struct pol_shard_gen {
    const struct pol_server *srv;
    void **plugin_data; /* per plugin index: shard_start's *shard_data */
    bool *plugin_started;
    bool conns_started; /* connections' shard_start ran */
    uint32_t inflight;  /* requests built on this shard with srv, not yet freed */
};

/* Generations kept besides the current one: the next (prepared by a reload, not yet in use)
 * and up to this many retiring ones. */
#define POL_SHARD_OLD_GENS_MAX 4u

struct pol_shard {
    const struct pol_server *srv;
    struct eng_shard *sh; /* NULL in the testkit and unit tests: no deadline timer */
    unsigned index;
    unsigned count;
    struct pol_req *reqs;
    uint32_t req_count;
    struct pol_req *free_reqs;
    uint32_t free_req_count;
    struct pol_arena_pool arenas;
    struct pol_sstore *sessions; /* Memory cache: this shard's instances (kept by reloads) */
    char *sess_scratch;          /* serialising a session for the store */
    size_t sess_scratch_bytes;
    struct pol_shard_gen cur;                          /* srv == cur.srv: new requests use it */
    struct pol_shard_gen next;                         /* prepared by a reload, not in use yet */
    struct pol_shard_gen old[POL_SHARD_OLD_GENS_MAX]; /* replaced, retired when unused */
    uint32_t old_count;
    struct pol_req *ready_head, *ready_tail; /* sessions handed over, to run */
    bool draining;
    struct pol_shard_stats stats;
};

/* Allocates the shard's pools (requests_max requests and arenas), its part of the Memory
 * session cache, and runs every plugin's shard_start. Returns 0, or -1 with a sentence in err.
 * sh may be NULL (tests). */
int pol_shard_init(struct pol_shard *ps, const struct pol_server *srv, struct eng_shard *sh,
                   unsigned index, unsigned count, uint32_t requests_max, char *err,
                   size_t err_len);
/* Logs the shard's counters and its session cache's (sessions, bytes used and per session,
 * hits, waits, evictions...) at level 2. On the shard's thread. */
void pol_shard_log_stats(const struct pol_shard *ps);
/* Runs shard_stop and frees everything (logging the counters first on an engine shard).
 * Every request must have been released. */
void pol_shard_fini(struct pol_shard *ps);

/* Hot reload, on the shard's thread (see reload.h for the sequence). gen_prepare runs the
 * connections' and plugins' shard_start of srv into ps->next: 0, or -1 with a sentence in err
 * (then nothing of srv is left on the shard). gen_drop undoes a prepared one. gen_switch makes
 * next the current generation (new requests use it) and keeps the current one as old: 0, or
 * -ENOSPC when POL_SHARD_OLD_GENS_MAX old ones are still retiring. gen_inflight counts this
 * shard's requests of srv; gen_retire runs shard_stop for an unused old generation. */
int pol_shard_gen_prepare(struct pol_shard *ps, const struct pol_server *srv, char *err,
                          size_t err_len);
void pol_shard_gen_drop(struct pol_shard *ps);
int pol_shard_gen_switch(struct pol_shard *ps);
uint32_t pol_shard_gen_inflight(const struct pol_shard *ps, const struct pol_server *srv);
void pol_shard_gen_retire(struct pol_shard *ps, const struct pol_server *srv);

/* Takes a request and an arena from the home shard's pools and builds it. NULL when a pool is
 * empty (counted in no_request) or the request cannot fit the biggest arena. */
struct pol_req *pol_shard_req_new(struct pol_shard *home, const char *buf,
                                  const struct pol_proto_attr *attrs, uint32_t count);
/* Returns r and its arena to its home pools; on the home shard, after the final done. */
void pol_shard_req_free(struct pol_req *r);

/* The shard owning r's session: XXH3_64bits(instance) % shard_count with the Memory cache and
 * an instance, else r's home shard (home_index). */
unsigned pol_exec_owner(const struct pol_server *srv, const struct pol_req *r, unsigned home_index,
                        unsigned shard_count);
/* On the owning shard: processes r (r->vhost set, r->done set). */
void pol_exec_begin(struct pol_shard *ps, struct pol_req *r);
/* The deadline expired (called by the deadline timer; tests call it directly). */
void pol_exec_timeout(struct pol_req *r);

/* The result line of spec 5.3 with t in real milliseconds from the session lookup to now_us. */
size_t pol_exec_result_line(const struct pol_req *r, uint64_t now_us, char *out, size_t out_len);
/* CLOCK_MONOTONIC in microseconds (what start_us is measured with). */
uint64_t pol_exec_now_us(void);

#ifdef __cplusplus
}
#endif

#endif
