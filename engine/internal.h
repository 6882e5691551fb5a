/*
 * internal.h: the engine's private types, shared by its .c files and by the engine's own unit
 * tests (which may include it to inspect pools and inject faults). Nothing outside engine/ and
 * tests/unit/engine/ includes it.
 *
 * Layout of one shard: struct eng_shard (below) owns a ring (ring.h), a connection pool, the
 * provided receive buffers, staging and send buffer pools, the timer wheel, its poll slots and
 * the consumer end of its incoming cross-shard rings. Everything is allocated by shard_init on
 * the shard's own thread and freed by eng_destroy after the thread ended.
 */
#ifndef ENG_INTERNAL_H
#define ENG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng/assert.h"
#include "eng/engine.h"
#include "pool.h"
#include "ring.h"
#include "testhooks.h"

/* ---------------------------------------------------------------------------------------------
 * user_data: op kind (8 bits) | generation (24 bits) | pool index (32 bits). Decoding asserts
 * the kind and, for pooled objects, that the generation matches the slot's: a slot is reused
 * only after its last operation completed, so a mismatch is a bug (a stale completion).
 */
enum eng_op {
    ENG_OP_NONE = 0,
    ENG_OP_ACCEPT, /* idx: shard listener index */
    ENG_OP_RECV,   /* idx: connection */
    ENG_OP_SEND,   /* idx: connection */
    ENG_OP_CANCEL, /* completion ignored */
    ENG_OP_POLL,   /* idx: poll slot */
    ENG_OP_EVFD,   /* the shard's eventfd */
    ENG_OP_WAKE,   /* MSG_RING from another shard (or its failure on the sender) */
    ENG_OP_MC,     /* idx: memcached connection slot x 4 + kind (mc.c) */
    ENG_OP_COUNT
};

#define ENG_UD_GEN_MASK 0xffffffu

static inline uint64_t eng_ud(enum eng_op op, uint32_t idx, uint32_t gen)
{
    ENG_ASSERT(op > ENG_OP_NONE);
    ENG_ASSERT(op < ENG_OP_COUNT);
    return (uint64_t)op << 56 | (uint64_t)(gen & ENG_UD_GEN_MASK) << 32 | idx;
}
static inline enum eng_op eng_ud_op(uint64_t ud)
{
    enum eng_op op = (enum eng_op)(ud >> 56);
    ENG_ASSERT(op > ENG_OP_NONE);
    ENG_ASSERT(op < ENG_OP_COUNT);
    return op;
}
static inline uint32_t eng_ud_idx(uint64_t ud)
{
    return (uint32_t)ud;
}
static inline uint32_t eng_ud_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32) & ENG_UD_GEN_MASK;
}

/* The xshard wake handshake is Dekker-style: each side publishes, then a seq_cst fence, then
 * looks at the other side. ThreadSanitizer does not model fences, so its builds make those
 * accesses seq_cst themselves instead (same guarantee, slower). */
#ifdef __SANITIZE_THREAD__
#define ENG_DEKKER_FENCE() ((void)0)
#define ENG_DEKKER_STORE memory_order_seq_cst
#define ENG_DEKKER_LOAD memory_order_seq_cst
#else
#define ENG_DEKKER_FENCE() atomic_thread_fence(memory_order_seq_cst)
#define ENG_DEKKER_STORE memory_order_release
#define ENG_DEKKER_LOAD memory_order_acquire
#endif

/* Counters are written by their shard only and read by eng_stats_sum from any thread: relaxed
 * atomic stores of a plain increment (a plain mov on x86, no lock prefix). */
#define ENG_STAT_ADD(sh, field, n)                                                                 \
    __atomic_store_n(&(sh)->stats.field, (sh)->stats.field + (n), __ATOMIC_RELAXED)
#define ENG_STAT_INC(sh, field) ENG_STAT_ADD(sh, field, 1)

/* ---------------------------------------------------------------------------------------------
 * Connections (conn.c)
 */
enum {
    CONN_OPEN = 1u << 0, /* slot in use */
    CONN_TCP = 1u << 1,
    CONN_PAUSED = 1u << 2,        /* eng_conn_pause */
    CONN_CLOSING = 1u << 3,       /* close requested: send what is queued, then tear down */
    CONN_ABORTING = 1u << 4,      /* teardown: cancel ops in flight, then free */
    CONN_CANCEL_WANT = 1u << 5,   /* teardown still has to submit its cancel */
    CONN_RECV_ARMED = 1u << 6,    /* a multishot recv is in flight */
    CONN_RECV_WANT = 1u << 7,     /* arm recv at the end of the turn */
    CONN_SEND_INFLIGHT = 1u << 8, /* one send is in flight */
    CONN_IN_WORK = 1u << 9,       /* on the shard's work list */
    CONN_RESUME_WANT = 1u << 10,  /* present staged input from the loop */
    CONN_EOF = 1u << 11,          /* peer closed its side */
    CONN_REFUSED = 1u << 12,      /* on_open refused: no on_close */
    CONN_PEER_CACHED = 1u << 13,  /* peer[] holds getpeername's answer */
    CONN_IN_APP = 1u << 14,       /* inside on_bytes (re-entrancy check) */
    CONN_RECV_CANCEL = 1u << 15,  /* the armed recv is being cancelled (reading stopped) */
    CONN_THROTTLED = 1u << 16,    /* not read: the shard's staging budget is spent */
};

/* Reading stops (the multishot recv is cancelled, so that the socket buffer and TCP flow control
 * push back on the peer) while a paused connection holds at least this many staged bytes, and
 * while it is throttled; it is re-armed when neither holds. */
#define ENG_PAUSED_STAGE_BYTES 4096u

struct eng_conn {
    struct eng_shard *shard;
    int32_t fd;
    uint32_t idx;
    uint32_t gen; /* bumped when the slot is freed; survives in the pool */
    uint32_t flags;
    uint32_t work_next;   /* next connection index + 1 on the work list; 0 ends it */
    uint16_t listener;    /* shard listener index */
    uint8_t close_reason; /* enum eng_close_reason once closing */
    uint8_t peer_len;
    uint32_t stage_idx;     /* staging buffer (ENG_STAGE_REF: class, slot) or ENG_POOL_NONE */
    uint32_t stage_len;     /* bytes staged (unconsumed input) */
    uint32_t stage_hwm;     /* most bytes this staging buffer held (for trimming) */
    uint32_t send_idx;      /* send buffer (circular, send_bytes_max) or ENG_POOL_NONE */
    uint32_t send_head;     /* offset of the oldest unsent byte */
    uint32_t send_queued;   /* bytes not yet sent, including those in flight */
    uint32_t send_inflight; /* bytes of the send in flight */
    uint32_t send_hwm;
    struct eng_timer close_timer;       /* bounds how long a closing connection may drain */
    _Alignas(8) unsigned char peer[28]; /* sockaddr_in6 is the largest TCP peer address */
};

/* Two cache lines at most: 10,000 idle connections must cost under 2 KiB each in all. */
_Static_assert(sizeof(struct eng_conn) <= 128, "struct eng_conn stays small");

/* The application area follows the connection, 16-byte aligned. */
#define ENG_CONN_HDR_BYTES ((sizeof(struct eng_conn) + 15) & ~(size_t)15)

/* ---------------------------------------------------------------------------------------------
 * Staging by size classes (conn.c): 512 B, 4 KiB, 32 KiB, ... (x8, each at most half the
 * largest), then the largest, stage_bytes_max + recv_buf_bytes. A connection's staging buffer
 * moves up a class when it has to hold more and back down when little is left; the shard counts
 * the bytes of the buffers held (stage_held) against limits.stage_bytes_per_shard_max.
 */
#define ENG_STAGE_BUDGET_DEFAULT (64u << 20)
#define ENG_STAGE_CLASSES_MAX 8
#define ENG_STAGE_CLASS_MIN_BYTES 512u
#define ENG_STAGE_CLASS_SHIFT 24 /* stage_idx: class << 24 | slot */
#define ENG_STAGE_SLOT_MASK ((1u << ENG_STAGE_CLASS_SHIFT) - 1)
#define ENG_STAGE_REF(cls, slot) ((uint32_t)(cls) << ENG_STAGE_CLASS_SHIFT | (slot))
/* Classes from this one up hold "large" buffers: only connections holding one are throttled
 * when the budget runs low, and only they move back down. */
#define ENG_STAGE_CLASS_LARGE 2u

/* ---------------------------------------------------------------------------------------------
 * Listeners (accept.c)
 */
struct eng_listener {
    int fd;
    uint32_t listen_idx; /* index into cfg.listens */
    uint32_t tag;
    bool tcp;
    bool armed;     /* an accept is in flight */
    bool multishot; /* ... and it is multishot */
    bool cancel_sent;
    bool retry_later; /* an error asked for a pause before re-arming */
    bool off;         /* eng_listen_add'ed, not started yet, or removed: no accept armed */
    bool removed;     /* eng_listen_remove: the socket closes once no accept is in flight */
};

/* ---------------------------------------------------------------------------------------------
 * Timer wheel (timer.c): 4096 one-millisecond slots, circular lists with sentinels, a bitmap of
 * non-empty slots to find the next deadline.
 */
#define ENG_WHEEL_SLOTS 4096u
_Static_assert((ENG_WHEEL_SLOTS & (ENG_WHEEL_SLOTS - 1)) == 0, "wheel size is a power of two");

struct eng_wheel {
    struct eng_timer slot[ENG_WHEEL_SLOTS];
    uint64_t bitmap[ENG_WHEEL_SLOTS / 64];
    uint64_t next_ms; /* first millisecond not yet processed */
    uint32_t armed_count;
};

/* ---------------------------------------------------------------------------------------------
 * Cross-shard rings (xshard.c)
 */
#define ENG_XRING_CAP 128u
_Static_assert((ENG_XRING_CAP & (ENG_XRING_CAP - 1)) == 0, "xshard ring size is a power of two");

struct eng_xring {
    _Alignas(64) _Atomic uint32_t head; /* consumer */
    _Alignas(64) _Atomic uint32_t tail; /* producer */
    _Alignas(64) struct eng_xmsg *slot[ENG_XRING_CAP];
};

struct eng_xout {                         /* per destination, on the sender */
    struct eng_xmsg *ovf_head, *ovf_tail; /* overflow list, FIFO */
    bool wake_want;
};

/* ---------------------------------------------------------------------------------------------
 * Polls (poll.c)
 */
struct eng_poll_slot {
    struct eng_poll *p; /* NULL once stopped */
    int fd;             /* kept after stop, to cancel the op in flight */
    uint32_t gen;
    bool armed;       /* a poll op is in flight */
    bool want;        /* arm at the end of the turn */
    bool cancel_want; /* events changed or stopped while armed */
    bool in_work;
    uint32_t next; /* free list or work list: slot index + 1; 0 ends it */
};

/* ---------------------------------------------------------------------------------------------
 * The shard
 */
struct eng_shard {
    struct eng *eng;
    unsigned index;
    pthread_t thread;
    bool thread_started;
    void *app;
    struct eng_ring *ring;
    int evfd; /* eng_stop, eng_run_on_shards and epoll wakes */
    bool evfd_armed;
    uint64_t now_ms;
    struct eng_stats stats;

    /* connections */
    struct eng_pool conns;
    uint32_t conns_max;
    uint32_t work_head, work_tail; /* connection index + 1; 0 = empty */
    uint32_t rearm_pending;        /* connections waiting for buffers after -ENOBUFS */

    /* buffers */
    char *recv_bufs;
    size_t recv_map_bytes;
    struct eng_pool stage[ENG_STAGE_CLASSES_MAX];
    uint32_t stage_class_bytes[ENG_STAGE_CLASSES_MAX];
    unsigned stage_classes;
    uint64_t stage_held;          /* bytes of the staging buffers held (their class sizes) */
    uint64_t stage_budget;        /* limits.stage_bytes_per_shard_max */
    uint32_t stage_bufs_used;     /* staging buffers held, at most stage_bufs_per_shard */
    uint32_t stage_fail_after;    /* test hook, as eng_pool's */
    uint32_t stage_throttled_now; /* connections with CONN_THROTTLED */
    uint32_t stage_large_now;     /* connections holding a large staging buffer */
    uint32_t stage_favoured;      /* index + 1 of the one large holder exempt from throttling */
    struct eng_pool send;

    /* listeners */
    struct eng_listener *listeners;
    unsigned listener_count;
    unsigned accepts_single; /* single-shot accepts in flight */
    struct eng_timer accept_retry;
    bool accept_paused;

    /* timers */
    struct eng_wheel *wheel;

    /* cross-shard: this shard's outgoing state, one per destination */
    struct eng_xout *xout;
    bool xout_dirty;

    /* polls */
    struct eng_poll_slot *polls;
    uint32_t polls_cap;
    uint32_t polls_fresh;
    uint32_t polls_free; /* index + 1 of the first free slot; 0 = none below polls_fresh */
    uint32_t polls_work; /* index + 1 of the first slot with work at the end of the turn */

    /* stop */
    bool draining;
    bool drain_forced; /* drain_timeout_ms passed: busy connections were closed */
    bool quiet;        /* drained (counted in eng->quiet_shards); waits for the others */
    bool stop_done;
    struct eng_timer drain_timer;
    _Atomic int sleeping; /* set before blocking in the ring wait (xshard wake protocol) */

    /* eng_run_on_shards mailbox (protected by eng->mbox_lock) */
    uint64_t mbox_seen;
    bool exited;

    uint64_t slow_warn_ms; /* last slow-turn warning (rate limit) */
    bool sealed;           /* allocations done; see STYLE.md section 4 */
};

struct eng {
    struct eng_config cfg;
    struct eng_listen *listens;
    int *listen_fds;    /* listen_cap x shard_count (Unix: the same fd in every column); a
                           shard sets its column of a removed listener to -1 when it closes it */
    bool *unix_created; /* per listen: we created the socket file */
    size_t listen_cap;  /* cfg.listen_count at create + ENG_LISTEN_ADDED_MAX */
    bool *listen_removed;          /* per listen (main thread): eng_listen_remove was called */
    atomic_uint *unix_open_shards; /* per Unix listen being removed: shards still holding it */
    unsigned shard_count;
    struct eng_shard *shards;
    struct eng_xring *xrings; /* [src * shard_count + dst] */

    enum eng_backend backend; /* URING or EPOLL after the probe */
    unsigned uring_flags;
    bool msg_ring;
    char backend_desc[256];

    _Atomic bool stop;
    _Atomic bool running;
    bool ran;      /* eng_run was called: a second call returns -EALREADY */
    int main_evfd; /* shards signal their exit here */

    /* start-up handshake */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned started, start_failed;
    int start_err;
    _Atomic bool start_settled; /* every shard reported; `started` is final */

    /* stop barrier: shards leave their loops together (shard.c, "Stopping") */
    atomic_uint quiet_shards;

    /* eng_run_on_shards */
    pthread_mutex_t call_lock; /* one caller at a time */
    pthread_mutex_t mbox_lock;
    pthread_cond_t mbox_cond;
    uint64_t mbox_seq;
    eng_shard_fn *mbox_fn;
    void *mbox_ctx;
    unsigned mbox_remaining;
    unsigned mbox_skipped;
};

extern _Thread_local struct eng_shard *eng_tls_shard;

static inline void eng_assert_on_shard(const struct eng_shard *sh)
{
    ENG_ASSERT(sh != NULL);
    ENG_ASSERT(sh == eng_tls_shard);
}

/* conn.c */
void eng_conn_open(struct eng_shard *sh, uint16_t listener, int fd);
void eng_conn_complete(struct eng_shard *sh, const struct eng_cqe *cqe);
void eng_conn_work_run(struct eng_shard *sh);
void eng_conn_drain_start(struct eng_shard *sh);
void eng_conn_drain_force(struct eng_shard *sh);
struct eng_conn *eng_conn_at(struct eng_shard *sh, uint32_t idx);
size_t eng_conn_slot_bytes(size_t app_conn_bytes);

/* accept.c */
int eng_listeners_bind(struct eng *e, char *err, size_t err_len);
int eng_listener_bind_one(struct eng *e, size_t i, char *err, size_t err_len);
void eng_listeners_close(struct eng *e);
int eng_accept_init(struct eng_shard *sh);
void eng_accept_complete(struct eng_shard *sh, const struct eng_cqe *cqe);
void eng_accept_update(struct eng_shard *sh);

/* timer.c */
int eng_wheel_init(struct eng_shard *sh);
void eng_wheel_run(struct eng_shard *sh);
uint32_t eng_wheel_timeout_ms(const struct eng_shard *sh); /* UINT32_MAX: nothing armed */

/* xshard.c */
int eng_xshard_init(struct eng *e);
void eng_xshard_fini(struct eng *e);
int eng_xshard_shard_init(struct eng_shard *sh);
unsigned eng_xshard_drain(struct eng_shard *sh);
void eng_xshard_flush(struct eng_shard *sh);
bool eng_xshard_pending(const struct eng_shard *sh);

/* poll.c */
int eng_polls_init(struct eng_shard *sh, uint32_t cap);
void eng_poll_complete(struct eng_shard *sh, const struct eng_cqe *cqe);
void eng_polls_flush(struct eng_shard *sh);

/* shard.c */
void *eng_shard_main(void *arg);
void eng_shard_free(struct eng_shard *sh);
void eng_mbox_check(struct eng_shard *sh);

/* log.c: shard threads buffer their lines (flushed by the loop); the pid after a fork. */
int eng_log_thread_buffer(bool on);
void eng_log_after_fork(void);

#endif
