/*
 * testhooks.h: test hooks of the engine, for tests/unit/engine only (C and C++). Not part of the
 * public API: a fault plan applied to every ring created afterwards (ring_fault.c), pool usage
 * per shard (to check for leaks), the fd of a connection, and pool failure injection.
 */
#ifndef ENG_TESTHOOKS_H
#define ENG_TESTHOOKS_H

#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plan applies to rings created after the call (set it before eng_create); NULL disables. */
struct eng_fault_plan {
    uint64_t seed;
    uint32_t recv_enobufs_permille; /* a recv arm completes at once with -ENOBUFS */
    uint32_t send_short_permille;   /* a send is cut to a random shorter length */
    uint32_t send_eagain_permille;  /* a send completes at once with -EAGAIN */
    uint64_t reset_at_step;         /* the Nth prepared recv or send fails with -ECONNRESET */
};
void eng_test_set_fault_plan(const struct eng_fault_plan *plan);
const struct eng_fault_plan *eng_test_fault_plan(void);
/* Pool usage of a shard (to check for leaks): connections, staging and send buffers in use. */
void eng_test_pool_usage(struct eng_shard *sh, uint32_t *conns, uint32_t *stage, uint32_t *send);
int eng_test_conn_fd(const struct eng_conn *c);
/* True once every shard thread finished starting (eng_run_on_shards can reach them). */
int eng_test_started(struct eng *e);
void eng_test_stage_fail_after(struct eng_shard *sh, uint32_t n);
void eng_test_send_fail_after(struct eng_shard *sh, uint32_t n);

/* A bare shard with only a timer wheel, bound to the calling thread, with a clock the test
 * moves (pure timer tests). */
struct eng_shard *eng_test_wheel_shard_new(uint64_t now_ms);
void eng_test_wheel_advance(struct eng_shard *sh, uint64_t now_ms); /* sets now, runs timers */
uint32_t eng_test_wheel_timeout(struct eng_shard *sh);              /* UINT32_MAX: none */
void eng_test_wheel_shard_free(struct eng_shard *sh);

/* Where syslog lines go (default /dev/log); NULL restores the default. */
void eng_test_log_syslog_path(const char *path);

#ifdef __cplusplus
}
#endif

#endif
