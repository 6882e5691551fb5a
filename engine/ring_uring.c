/*
 * ring_uring.c: the io_uring backend of ring.h, and the start-up probe.
 *
 * One io_uring per shard, created on the shard's thread so that SINGLE_ISSUER|DEFER_TASKRUN
 * bind it to that thread. Owns the ring, its registered ring fd and the provided-buffer ring
 * (group 0) over the shard's receive buffers. Returned buffers are added to the buffer ring at
 * once and published with one tail store per submit. When the SQ is full, prep_* flush it with
 * io_uring_submit and retry once (tigerbeetle's enqueue, liburing's get_sqe); if that fails the
 * caller retries on its next turn. Completions are copied out in a batch with
 * io_uring_for_each_cqe and consumed with a single io_uring_cq_advance.
 *
 * Limits: the SQ has ENG_URING_SQ_ENTRIES entries, the CQ ENG_URING_CQ_ENTRIES (the kernel keeps
 * overflowed CQEs, IORING_FEAT_NODROP, so a burst is slow but loses nothing).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "bufring.h"
#include "internal.h"
#include "ring.h"

/* 2048 SQEs (128 KiB): a turn that prepares more flushes early, costing one extra enter.
 * 16384 CQEs (256 KiB): multishot accept and recv can post many completions per submitted SQE. */
#define ENG_URING_SQ_ENTRIES 2048u
#define ENG_URING_CQ_ENTRIES 16384u
#define ENG_URING_BGID 0

struct ring_uring {
    struct eng_ring base;
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    unsigned br_mask;
    unsigned br_added; /* buffers added since the last publish */
    bool msg_ring;
    bool ring_fd_registered;
};

static struct ring_uring *U(struct eng_ring *r)
{
    return (struct ring_uring *)r;
}

static struct io_uring_sqe *get_sqe(struct ring_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe)
        return sqe;
    /* SQ full: publish the buffers we owe the kernel, flush, and try once more. */
    if (u->br_added) {
        io_uring_buf_ring_advance(u->br, (int)u->br_added);
        u->br_added = 0;
    }
    io_uring_submit(&u->ring);
    return io_uring_get_sqe(&u->ring);
}

static int u_prep_accept(struct eng_ring *r, int fd, bool multishot, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    /* No peer address: a multishot accept would overwrite one shared buffer. eng_conn_peer asks
     * getpeername lazily instead. */
    if (multishot)
        io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    else
        io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int u_prep_recv(struct eng_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    /* Multishot recv, buffer chosen by the kernel from group 0 (IOSQE_BUFFER_SELECT): an idle
     * connection holds no buffer. */
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = ENG_URING_BGID;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int u_prep_send(struct eng_ring *r, int fd, const void *buf, uint32_t len, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int u_prep_poll(struct eng_ring *r, int fd, uint32_t events, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    /* Single shot: the kernel checks readiness when the poll is armed, so re-arming after each
     * completion gives level-triggered behaviour. */
    io_uring_prep_poll_add(sqe, fd, events);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

static int u_prep_cancel_ud(struct eng_ring *r, int fd, uint64_t target_ud, uint64_t ud)
{
    (void)fd;
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, target_ud, 0);
    io_uring_sqe_set_data64(sqe, ud);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    return 0;
}

static int u_prep_cancel_fd(struct eng_ring *r, int fd, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(U(r));
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ud);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    return 0;
}

static int u_prep_wake(struct eng_ring *r, struct eng_ring *dst, uint64_t ud)
{
    struct ring_uring *u = U(r);
    if (!u->msg_ring || dst->ops != r->ops) {
        uint64_t one = 1;
        ssize_t n = write(dst->wake_fd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is saturated, the target is awake anyway */
        return 0;
    }
    struct io_uring_sqe *sqe = get_sqe(u);
    if (!sqe)
        return -EBUSY;
    /* MSG_RING posts a CQE with user_data ud on the target ring; ours is skipped on success. */
    io_uring_prep_msg_ring(sqe, U(dst)->ring.ring_fd, 0, ud, 0);
    io_uring_sqe_set_data64(sqe, ud);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    return 0;
}

static void u_buf_return(struct eng_ring *r, uint16_t bid)
{
    struct ring_uring *u = U(r);
    ENG_ASSERT(bid < r->buf_count);
    io_uring_buf_ring_add(u->br, eng_ring_buf(r, bid), r->buf_bytes, bid, (int)u->br_mask,
                          (int)u->br_added);
    u->br_added++;
}

static int u_submit_wait(struct eng_ring *r, uint32_t timeout_ms)
{
    struct ring_uring *u = U(r);
    if (u->br_added) {
        io_uring_buf_ring_advance(u->br, (int)u->br_added);
        u->br_added = 0;
    }
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec ts = {
        .tv_sec = timeout_ms / 1000,
        .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
    };
    int rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1,
                                              timeout_ms == UINT32_MAX ? NULL : &ts, NULL);
    return rc < 0 ? rc : 0;
}

static unsigned u_reap(struct eng_ring *r, struct eng_cqe *out, unsigned max)
{
    struct ring_uring *u = U(r);
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        if (n == max)
            break;
        out[n].user_data = cqe->user_data;
        out[n].res = cqe->res;
        out[n].flags = cqe->flags;
        n++;
    }
    if (n)
        io_uring_cq_advance(&u->ring, n);
    return n;
}

static void u_fd_closed(struct eng_ring *r, int fd)
{
    (void)r;
    (void)fd;
}

static void u_thread_exit(struct eng_ring *r)
{
    struct ring_uring *u = U(r);
    /* The registered ring fd lives in this thread's io_uring context; drop it here, not from
     * the main thread in io_uring_queue_exit. */
    if (u->ring_fd_registered)
        io_uring_unregister_ring_fd(&u->ring);
    u->ring_fd_registered = false;
}

static void u_destroy(struct eng_ring *r)
{
    struct ring_uring *u = U(r);
    if (u->br)
        eng_bufring_free(&u->ring, u->br, r->buf_count, ENG_URING_BGID);
    io_uring_queue_exit(&u->ring);
    free(u);
}

static const struct eng_ring_ops uring_ops = {
    .name = "io_uring",
    .prep_accept = u_prep_accept,
    .prep_recv = u_prep_recv,
    .prep_send = u_prep_send,
    .prep_poll = u_prep_poll,
    .prep_cancel_ud = u_prep_cancel_ud,
    .prep_cancel_fd = u_prep_cancel_fd,
    .prep_wake = u_prep_wake,
    .buf_return = u_buf_return,
    .submit_wait = u_submit_wait,
    .reap = u_reap,
    .fd_closed = u_fd_closed,
    .thread_exit = u_thread_exit,
    .destroy = u_destroy,
};

static int ring_init(struct io_uring *ring, unsigned entries, unsigned flags)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /* CQSIZE: a larger completion queue than submission queue, for multishot bursts. */
    p.flags = flags | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 8;
    return io_uring_queue_init_params(entries, ring, &p);
}

int eng_ring_uring_create(const struct eng_ring_params *p, struct eng_ring **out, char *err,
                          size_t err_len)
{
    struct ring_uring *u = calloc(1, sizeof(*u));
    if (!u) {
        snprintf(err, err_len, "out of memory creating a ring");
        return -ENOMEM;
    }
    _Static_assert(ENG_URING_CQ_ENTRIES == ENG_URING_SQ_ENTRIES * 8, "ring_init uses 8x");
    int rc = ring_init(&u->ring, ENG_URING_SQ_ENTRIES, p->setup_flags);
    if (rc < 0) {
        snprintf(err, err_len, "io_uring_queue_init: %s", strerror(-rc));
        free(u);
        return rc;
    }
    /* A registered ring fd saves the fd lookup on every io_uring_enter. Optional. */
    u->ring_fd_registered = io_uring_register_ring_fd(&u->ring) == 1;
    u->base.ops = &uring_ops;
    u->base.buf_base = p->buf_base;
    u->base.buf_bytes = p->buf_bytes;
    u->base.buf_count = p->buf_count;
    u->base.wake_fd = p->wake_fd;
    u->msg_ring = p->msg_ring;
    u->br_mask = (unsigned)io_uring_buf_ring_mask(p->buf_count);
    u->br = eng_bufring_setup(&u->ring, p->buf_count, ENG_URING_BGID, &rc);
    if (!u->br) {
        snprintf(err, err_len, "cannot register the provided-buffer ring: %s", strerror(-rc));
        io_uring_queue_exit(&u->ring);
        free(u);
        return rc;
    }
    for (uint32_t i = 0; i < p->buf_count; i++)
        u_buf_return(&u->base, (uint16_t)i);
    io_uring_buf_ring_advance(u->br, (int)u->br_added);
    u->br_added = 0;
    *out = &u->base;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Start-up probe
 */

static void explain_init_failure(int rc, char *err, size_t err_len)
{
    int disabled = -1;
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    if (f) {
        if (fscanf(f, "%d", &disabled) != 1)
            disabled = -1;
        fclose(f);
    }
    if (disabled == 2)
        snprintf(err, err_len, "io_uring is disabled by kernel.io_uring_disabled=2");
    else if (disabled == 1 && rc == -EPERM)
        snprintf(err, err_len,
                 "io_uring is restricted by kernel.io_uring_disabled=1 and this process is not "
                 "in kernel.io_uring_group");
    else if (rc == -ENOSYS)
        snprintf(err, err_len, "this kernel has no io_uring (io_uring_setup: ENOSYS)");
    else if (rc == -EPERM)
        snprintf(err, err_len,
                 "io_uring_setup is blocked (EPERM), probably by a seccomp profile (containers "
                 "often block io_uring)");
    else if (rc == -ENOMEM)
        snprintf(err, err_len,
                 "io_uring_setup failed with ENOMEM: the locked-memory limit (ulimit -l) is "
                 "too low for the rings");
    else
        snprintf(err, err_len, "io_uring_setup failed: %s", strerror(-rc));
}

static int wait_one(struct io_uring *ring, struct io_uring_cqe *out)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 1, .tv_nsec = 0};
    int rc = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
    if (rc < 0)
        return rc;
    *out = *cqe;
    io_uring_cqe_seen(ring, cqe);
    return 0;
}

/* A NOP round trip, then a multishot recv from a provided-buffer ring over a socketpair. */
static int probe_features(struct io_uring *ring, char *err, size_t err_len)
{
    struct io_uring_cqe c;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, 1);
    int rc = wait_one(ring, &c);
    if (rc < 0 || c.user_data != 1) {
        snprintf(err, err_len, "io_uring NOP round trip failed: %s", strerror(rc ? -rc : EIO));
        return rc ? rc : -EIO;
    }
    struct io_uring_buf_ring *br = eng_bufring_setup(ring, 2, 1, &rc);
    if (!br) {
        snprintf(err, err_len,
                 "this kernel lacks provided-buffer rings (io_uring_register_buf_ring: %s; "
                 "needs Linux 5.19)",
                 strerror(-rc));
        return rc;
    }
    static char bufs[2][64];
    for (int i = 0; i < 2; i++)
        io_uring_buf_ring_add(br, bufs[i], sizeof(bufs[i]), (unsigned short)i,
                              io_uring_buf_ring_mask(2), i);
    io_uring_buf_ring_advance(br, 2);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = -errno;
        snprintf(err, err_len, "socketpair: %s", strerror(errno));
        eng_bufring_free(ring, br, 2, 1);
        return rc;
    }
    sqe = io_uring_get_sqe(ring);
    io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 1;
    io_uring_sqe_set_data64(sqe, 2);
    rc = (int)write(sv[1], "x", 1) == 1 ? 0 : -EIO;
    if (rc == 0)
        rc = wait_one(ring, &c);
    if (rc == 0 && (c.res != 1 || !(c.flags & IORING_CQE_F_MORE)))
        rc = c.res < 0 ? c.res : -EINVAL;
    if (rc < 0)
        snprintf(err, err_len, "this kernel lacks multishot recv (%s; needs Linux 6.0)",
                 strerror(-rc));
    close(sv[1]); /* EOF ends the multishot recv */
    if (rc == 0)
        (void)wait_one(ring, &c);
    close(sv[0]);
    eng_bufring_free(ring, br, 2, 1);
    return rc;
}

/* MSG_RING from one ring to another (both on this thread). False if unsupported. */
static bool probe_msg_ring(struct io_uring *from, unsigned flags)
{
    struct io_uring to;
    if (ring_init(&to, 8, flags) < 0)
        return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(from);
    io_uring_prep_msg_ring(sqe, to.ring_fd, 0, 77, 0);
    io_uring_sqe_set_data64(sqe, 3);
    struct io_uring_cqe c;
    bool ok = wait_one(from, &c) == 0 && c.res == 0 && wait_one(&to, &c) == 0 && c.user_data == 77;
    io_uring_queue_exit(&to);
    return ok;
}

int eng_ring_uring_probe(unsigned *setup_flags, bool *msg_ring, char *err, size_t err_len)
{
    /* Preferred: one issuer thread per ring, completions run only when we wait (DEFER_TASKRUN)
     * so a busy shard is not interrupted. Else COOP_TASKRUN (no IPIs), else plain. */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    struct io_uring ring;
    int rc = -EINVAL;
    unsigned i;
    for (i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        rc = ring_init(&ring, 8, tries[i]);
        if (rc != -EINVAL)
            break;
    }
    if (rc < 0) {
        explain_init_failure(rc, err, err_len);
        return rc;
    }
    rc = probe_features(&ring, err, err_len);
    if (rc == 0) {
        *setup_flags = tries[i];
        *msg_ring = probe_msg_ring(&ring, tries[i]);
    }
    io_uring_queue_exit(&ring);
    return rc;
}

void eng_ring_uring_describe(unsigned setup_flags, bool msg_ring, char *out, size_t len)
{
    snprintf(out, len, "io_uring (%s, %s wakes)",
             (setup_flags & IORING_SETUP_DEFER_TASKRUN)  ? "SINGLE_ISSUER|DEFER_TASKRUN"
             : (setup_flags & IORING_SETUP_COOP_TASKRUN) ? "COOP_TASKRUN"
                                                         : "no setup flags",
             msg_ring ? "MSG_RING" : "eventfd");
}
