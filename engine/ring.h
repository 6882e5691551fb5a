/*
 * ring.h: the engine's private I/O interface, a completion-based "ring" with two backends.
 *
 * The loop, connections and listeners speak only to this interface: prepare operations during a
 * turn, submit and wait once per turn, then reap a batch of completions. The io_uring backend
 * (ring_uring.c) maps every call onto an SQE; the epoll backend (ring_epoll.c) emulates the same
 * completions with non-blocking system calls, so that one event loop serves both. A fault
 * wrapper (ring_fault.c) sits between the loop and a real backend in tests and injects the
 * errors real peers cannot produce on demand (ENOBUFS, short sends, resets at step N).
 *
 * Owner: one shard; every call happens on the shard's thread, except destroy (main thread, after
 * the shard thread ended). prep_* return 0 or -EBUSY when the submission queue is full even after
 * a flush; the caller keeps the operation pending and retries on its next turn.
 *
 * Operations and their completions (struct eng_cqe, as io_uring's):
 *   accept  multishot or single shot; res is the new fd (SOCK_NONBLOCK|SOCK_CLOEXEC) or -errno;
 *           ENG_CQE_F_MORE while a multishot accept stays armed.
 *   recv    always multishot into the provided buffers; res > 0 with ENG_CQE_F_BUFFER and the
 *           buffer id in flags >> ENG_CQE_BUF_SHIFT, 0 at EOF, -ENOBUFS when the buffers ran out
 *           (the recv ends: re-arm after returning buffers), other -errno.
 *   send    one send(MSG_NOSIGNAL); res is the count sent (possibly short) or -errno.
 *   poll    single shot; res is the revents mask or -errno. Re-arm for level-triggered use.
 *   cancel_ud / cancel_fd  cancel the op with that user_data / every op on that fd; the target
 *           completes with -ECANCELED (or normally, if it raced); the cancel's own completion
 *           (kind ENG_OP_CANCEL) may or may not be posted and carries nothing of interest.
 *   wake    make another shard's ring return from its wait: its reap yields one completion with
 *           the given user_data (io_uring: IORING_OP_MSG_RING; epoll: the target's eventfd,
 *           which then reports through that shard's own eventfd poll instead).
 */
#ifndef ENG_RING_H
#define ENG_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_CQE_F_MORE (1u << 1)   /* same bit as IORING_CQE_F_MORE */
#define ENG_CQE_F_BUFFER (1u << 0) /* same bit as IORING_CQE_F_BUFFER */
#define ENG_CQE_BUF_SHIFT 16       /* same as IORING_CQE_BUFFER_SHIFT */

struct eng_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

/* What a backend needs to create a ring for one shard. */
struct eng_ring_params {
    unsigned setup_flags; /* io_uring setup flags chosen by the start-up probe */
    bool msg_ring;        /* io_uring: wake with IORING_OP_MSG_RING (else eventfd) */
    char *buf_base;       /* provided receive buffers: buf_count x buf_bytes, owned by the shard */
    uint32_t buf_bytes;
    uint32_t buf_count; /* power of two, <= 32768 */
    int wake_fd;        /* this shard's eventfd (epoll wakes, and io_uring without MSG_RING) */
};

struct eng_ring;

struct eng_ring_ops {
    const char *name;
    int (*prep_accept)(struct eng_ring *r, int fd, bool multishot, uint64_t ud);
    int (*prep_recv)(struct eng_ring *r, int fd, uint64_t ud);
    int (*prep_send)(struct eng_ring *r, int fd, const void *buf, uint32_t len, uint64_t ud);
    int (*prep_poll)(struct eng_ring *r, int fd, uint32_t events, uint64_t ud);
    /* fd: the target's fd (the epoll backend finds the op by it; io_uring ignores it). */
    int (*prep_cancel_ud)(struct eng_ring *r, int fd, uint64_t target_ud, uint64_t ud);
    int (*prep_cancel_fd)(struct eng_ring *r, int fd, uint64_t ud);
    int (*prep_wake)(struct eng_ring *r, struct eng_ring *dst, uint64_t ud);
    /* Gives a provided buffer back (visible to the kernel at the next submit). */
    void (*buf_return)(struct eng_ring *r, uint16_t bid);
    /* Submits everything prepared and waits up to timeout_ms (UINT32_MAX: no limit) for at
     * least one completion. Returns 0 or -errno (-ETIME and -EINTR are normal). */
    int (*submit_wait)(struct eng_ring *r, uint32_t timeout_ms);
    /* Copies up to max completions into out and consumes them. Returns the count. */
    unsigned (*reap)(struct eng_ring *r, struct eng_cqe *out, unsigned max);
    /* The engine is about to close fd (no op on it is in flight). */
    void (*fd_closed)(struct eng_ring *r, int fd);
    /* On the shard thread after its loop ended: release per-thread registrations. */
    void (*thread_exit)(struct eng_ring *r);
    /* Main thread, after the shard thread ended. */
    void (*destroy)(struct eng_ring *r);
};

struct eng_ring {
    const struct eng_ring_ops *ops;
    char *buf_base;
    uint32_t buf_bytes;
    uint32_t buf_count;
    int wake_fd;
};

static inline char *eng_ring_buf(const struct eng_ring *r, uint16_t bid)
{
    return r->buf_base + (size_t)bid * r->buf_bytes;
}

/* Backends. Each returns 0 and a ring in *out, or -errno with a sentence in err. */
int eng_ring_uring_create(const struct eng_ring_params *p, struct eng_ring **out, char *err,
                          size_t err_len);
int eng_ring_epoll_create(const struct eng_ring_params *p, struct eng_ring **out, char *err,
                          size_t err_len);

/* io_uring start-up probe (main thread): finds the setup flags the kernel accepts
 * (SINGLE_ISSUER|DEFER_TASKRUN, else COOP_TASKRUN, else 0), checks a NOP round trip, a
 * provided-buffer ring with a multishot recv, and MSG_RING. Returns 0 or -errno with a sentence
 * naming what is missing in err. */
int eng_ring_uring_probe(unsigned *setup_flags, bool *msg_ring, char *err, size_t err_len);

/* "io_uring (SINGLE_ISSUER|DEFER_TASKRUN, MSG_RING wakes)" and the like. */
void eng_ring_uring_describe(unsigned setup_flags, bool msg_ring, char *out, size_t len);

/* Fault injection (tests): wraps inner; see ring_fault.c for the plan. */
struct eng_fault_plan;
int eng_ring_fault_wrap(struct eng_ring *inner, const struct eng_fault_plan *plan,
                        unsigned shard_index, struct eng_ring **out);

#endif
