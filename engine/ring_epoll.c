/*
 * ring_epoll.c: the epoll backend of ring.h, for hosts where io_uring is blocked (seccomp,
 * kernel.io_uring_disabled) or too old. It emulates the io_uring completions the loop expects
 * with non-blocking system calls on level-triggered epoll readiness, so the loop, connections
 * and listeners run unchanged (redis ae_epoll.c style underneath).
 *
 * State is one struct efd per file descriptor number (a table sized by RLIMIT_NOFILE, mapped
 * MAP_NORESERVE so unused entries cost nothing): the read-side op (accept, multishot recv or
 * poll) and the write-side op (one send). prep_* change that state at once and put the fd on a
 * change list; submit_wait then tries the new sends, brings epoll's interest set in line with
 * the change list (one epoll_ctl per fd whose wanted events differ, none for an op re-armed in
 * the same turn), and calls epoll_wait. Readiness produces completions into a completion ring:
 * a multishot accept accepts up to ENG_EPOLL_ACCEPT_BATCH connections, a recv reads once into a
 * provided buffer (or completes with -ENOBUFS when none is free, ending the "multishot" op as
 * io_uring does), a poll reports once, a blocked send retries.
 *
 * Listening sockets are registered with EPOLLEXCLUSIVE, so a Unix socket shared by every shard
 * wakes one shard per connection. Owner: one shard thread. Limits: fds at or above the table size
 * fail with -EMFILE; when the completion ring is nearly full, readiness is left for the next
 * turn (level-triggered, nothing is lost).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "ring.h"

#define ENG_EPOLL_EVENTS 512u
#define ENG_EPOLL_CQ_CAP 65536u /* completions waiting to be reaped (1 MiB, touched as used) */
#define ENG_EPOLL_ACCEPT_BATCH 64u
#define ENG_EPOLL_FDS_MAX (1u << 22)
_Static_assert((ENG_EPOLL_CQ_CAP & (ENG_EPOLL_CQ_CAP - 1)) == 0, "cq size is a power of two");

enum rd_kind { RD_NONE, RD_ACCEPT_MULTI, RD_ACCEPT_ONE, RD_RECV, RD_POLL };

struct efd {
    uint64_t rd_ud;
    uint64_t wr_ud;
    const char *wr_buf;
    uint32_t wr_len;
    uint32_t poll_events;
    uint32_t reg_events; /* as registered with epoll; 0: not registered */
    int32_t chg_next;    /* change list: next fd + 1 */
    int32_t send_next;   /* sends to try at submit: next fd + 1 */
    uint8_t rd_kind;
    bool wr_pending; /* a send is in flight */
    bool wr_blocked; /* ... and waits for EPOLLOUT */
    bool listener;
    bool doomed; /* cancel_fd: the fd is about to be closed, skip EPOLL_CTL_DEL */
    bool on_chg, on_send;
};

struct ring_epoll {
    struct eng_ring base;
    int epfd;
    struct efd *fds;
    size_t fds_cap;
    size_t fds_map_bytes;
    int32_t chg_head; /* fd + 1 */
    int32_t send_head, send_tail;
    struct eng_cqe *cq;
    uint32_t cq_head, cq_tail; /* free-running */
    uint16_t *free_bufs;
    uint32_t free_count;
    struct epoll_event events[ENG_EPOLL_EVENTS];
};

static struct ring_epoll *E(struct eng_ring *r)
{
    return (struct ring_epoll *)r;
}

static uint32_t cq_room(const struct ring_epoll *p)
{
    return ENG_EPOLL_CQ_CAP - (p->cq_tail - p->cq_head);
}

static void cq_push(struct ring_epoll *p, uint64_t ud, int32_t res, uint32_t flags)
{
    ENG_ASSERT(cq_room(p) > 0);
    struct eng_cqe *c = &p->cq[p->cq_tail++ & (ENG_EPOLL_CQ_CAP - 1)];
    c->user_data = ud;
    c->res = res;
    c->flags = flags;
}

static struct efd *efd_get(struct ring_epoll *p, int fd)
{
    if (fd < 0 || (size_t)fd >= p->fds_cap)
        return NULL;
    return &p->fds[fd];
}

static void chg_add(struct ring_epoll *p, int fd)
{
    struct efd *f = &p->fds[fd];
    if (f->on_chg)
        return;
    f->on_chg = true;
    f->chg_next = p->chg_head;
    p->chg_head = fd + 1;
}

/* An fd outside the table: the op fails at once, as the kernel would with too many files. */
static int fail_op(struct ring_epoll *p, uint64_t ud)
{
    if (cq_room(p) == 0)
        return -EBUSY;
    cq_push(p, ud, -EMFILE, 0);
    return 0;
}

static int rd_arm(struct eng_ring *r, int fd, enum rd_kind kind, uint32_t events, uint64_t ud)
{
    struct ring_epoll *p = E(r);
    struct efd *f = efd_get(p, fd);
    if (!f)
        return fail_op(p, ud);
    ENG_ASSERT(f->rd_kind == RD_NONE);
    f->rd_kind = (uint8_t)kind;
    f->rd_ud = ud;
    f->poll_events = events;
    f->listener = kind == RD_ACCEPT_MULTI || kind == RD_ACCEPT_ONE;
    f->doomed = false;
    chg_add(p, fd);
    return 0;
}

static int e_prep_accept(struct eng_ring *r, int fd, bool multishot, uint64_t ud)
{
    return rd_arm(r, fd, multishot ? RD_ACCEPT_MULTI : RD_ACCEPT_ONE, 0, ud);
}

static int e_prep_recv(struct eng_ring *r, int fd, uint64_t ud)
{
    return rd_arm(r, fd, RD_RECV, 0, ud);
}

static int e_prep_poll(struct eng_ring *r, int fd, uint32_t events, uint64_t ud)
{
    return rd_arm(r, fd, RD_POLL, events, ud);
}

static int e_prep_send(struct eng_ring *r, int fd, const void *buf, uint32_t len, uint64_t ud)
{
    struct ring_epoll *p = E(r);
    struct efd *f = efd_get(p, fd);
    if (!f)
        return fail_op(p, ud);
    ENG_ASSERT(!f->wr_pending);
    f->wr_pending = true;
    f->wr_blocked = false;
    f->wr_buf = buf;
    f->wr_len = len;
    f->wr_ud = ud;
    if (!f->on_send) {
        f->on_send = true;
        f->send_next = 0;
        if (p->send_tail)
            p->fds[p->send_tail - 1].send_next = fd + 1;
        else
            p->send_head = fd + 1;
        p->send_tail = fd + 1;
    }
    return 0;
}

/* Completes the read side (and/or the write side) with -ECANCELED. */
static int cancel_sides(struct ring_epoll *p, int fd, bool rd, bool wr)
{
    struct efd *f = &p->fds[fd];
    if (cq_room(p) < 2)
        return -EBUSY;
    if (rd && f->rd_kind != RD_NONE) {
        cq_push(p, f->rd_ud, -ECANCELED, 0);
        f->rd_kind = RD_NONE;
        chg_add(p, fd);
    }
    if (wr && f->wr_pending) {
        cq_push(p, f->wr_ud, -ECANCELED, 0);
        f->wr_pending = f->wr_blocked = false;
        chg_add(p, fd);
    }
    return 0;
}

static int e_prep_cancel_ud(struct eng_ring *r, int fd, uint64_t target_ud, uint64_t ud)
{
    struct ring_epoll *p = E(r);
    (void)ud;
    struct efd *f = efd_get(p, fd);
    if (!f)
        return 0;
    bool rd = f->rd_kind != RD_NONE && f->rd_ud == target_ud;
    bool wr = f->wr_pending && f->wr_ud == target_ud;
    return cancel_sides(p, fd, rd, wr);
}

static int e_prep_cancel_fd(struct eng_ring *r, int fd, uint64_t ud)
{
    struct ring_epoll *p = E(r);
    (void)ud;
    struct efd *f = efd_get(p, fd);
    if (!f)
        return 0;
    int rc = cancel_sides(p, fd, true, true);
    if (rc == 0)
        f->doomed = true;
    return rc;
}

static int e_prep_wake(struct eng_ring *r, struct eng_ring *dst, uint64_t ud)
{
    (void)r;
    (void)ud;
    uint64_t one = 1;
    ssize_t n = write(dst->wake_fd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is saturated, the target is awake anyway */
    return 0;
}

static void e_buf_return(struct eng_ring *r, uint16_t bid)
{
    struct ring_epoll *p = E(r);
    ENG_ASSERT(bid < r->buf_count);
    ENG_ASSERT(p->free_count < r->buf_count);
    p->free_bufs[p->free_count++] = bid;
}

/* ---------------------------------------------------------------------------------------------
 * Doing the work
 */

static void try_send(struct ring_epoll *p, int fd)
{
    struct efd *f = &p->fds[fd];
    if (!f->wr_pending || cq_room(p) == 0)
        return;
    ssize_t n = send(fd, f->wr_buf, f->wr_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!f->wr_blocked) {
            f->wr_blocked = true;
            chg_add(p, fd);
        }
        return;
    }
    cq_push(p, f->wr_ud, n < 0 ? -errno : (int32_t)n, 0);
    f->wr_pending = false;
    if (f->wr_blocked) {
        f->wr_blocked = false;
        chg_add(p, fd);
    }
}

static void sends_run(struct ring_epoll *p)
{
    int32_t next = p->send_head;
    p->send_head = p->send_tail = 0;
    while (next) {
        int fd = next - 1;
        struct efd *f = &p->fds[fd];
        next = f->send_next;
        f->on_send = false;
        if (f->wr_pending && !f->wr_blocked)
            try_send(p, fd);
    }
}

static uint32_t wanted_events(const struct efd *f)
{
    uint32_t ev = 0;
    if (f->rd_kind == RD_POLL)
        ev |= (f->poll_events & POLLIN ? EPOLLIN : 0) | (f->poll_events & POLLOUT ? EPOLLOUT : 0);
    else if (f->rd_kind != RD_NONE)
        ev |= EPOLLIN;
    if (f->wr_pending && f->wr_blocked)
        ev |= EPOLLOUT;
    return ev;
}

/* epoll refused the fd (e.g. a regular file): fail its ops. */
static void reg_failed(struct ring_epoll *p, struct efd *f, int err)
{
    if (f->rd_kind != RD_NONE && cq_room(p)) {
        cq_push(p, f->rd_ud, -err, 0);
        f->rd_kind = RD_NONE;
    }
    if (f->wr_pending && cq_room(p)) {
        cq_push(p, f->wr_ud, -err, 0);
        f->wr_pending = f->wr_blocked = false;
    }
}

static void sync_fd(struct ring_epoll *p, int fd)
{
    struct efd *f = &p->fds[fd];
    uint32_t want = wanted_events(f);
    if (want == f->reg_events || (want == 0 && f->doomed))
        return;
    struct epoll_event ev = {.events = want, .data.fd = fd};
    int rc;
    if (f->listener) {
        /* EPOLLEXCLUSIVE cannot be modified, only added and deleted. */
        if (want && f->reg_events)
            return;
        ev.events |= EPOLLEXCLUSIVE;
        rc = epoll_ctl(p->epfd, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
    } else if (want == 0) {
        rc = epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, &ev);
        if (rc < 0 && (errno == ENOENT || errno == EBADF))
            rc = 0; /* the fd was closed (and so removed) behind our back */
    } else {
        rc = epoll_ctl(p->epfd, f->reg_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
        if (rc < 0 && errno == ENOENT)
            rc = epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
        else if (rc < 0 && errno == EEXIST)
            rc = epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    if (rc < 0) {
        f->reg_events = 0;
        if (want)
            reg_failed(p, f, errno);
        return;
    }
    f->reg_events = want;
}

static void changes_sync(struct ring_epoll *p)
{
    int32_t next = p->chg_head;
    p->chg_head = 0;
    while (next) {
        int fd = next - 1;
        struct efd *f = &p->fds[fd];
        next = f->chg_next;
        f->on_chg = false;
        sync_fd(p, fd);
    }
}

static void do_accept(struct ring_epoll *p, int fd, struct efd *f)
{
    unsigned batch = f->rd_kind == RD_ACCEPT_MULTI ? ENG_EPOLL_ACCEPT_BATCH : 1;
    for (unsigned i = 0; i < batch && cq_room(p) > 0; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED))
            return;
        bool ends = c < 0 || f->rd_kind == RD_ACCEPT_ONE;
        cq_push(p, f->rd_ud, c < 0 ? -errno : c, ends ? 0 : ENG_CQE_F_MORE);
        if (ends) {
            f->rd_kind = RD_NONE;
            chg_add(p, fd);
            return;
        }
    }
}

static void do_recv(struct ring_epoll *p, int fd, struct efd *f)
{
    if (p->free_count == 0) {
        cq_push(p, f->rd_ud, -ENOBUFS, 0);
        f->rd_kind = RD_NONE;
        chg_add(p, fd);
        return;
    }
    uint16_t bid = p->free_bufs[--p->free_count];
    ssize_t n = recv(fd, eng_ring_buf(&p->base, bid), p->base.buf_bytes, MSG_DONTWAIT);
    if (n > 0) {
        cq_push(p, f->rd_ud, (int32_t)n,
                ENG_CQE_F_BUFFER | ENG_CQE_F_MORE | (uint32_t)bid << ENG_CQE_BUF_SHIFT);
        return;
    }
    p->free_bufs[p->free_count++] = bid;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    cq_push(p, f->rd_ud, n < 0 ? -errno : 0, 0);
    f->rd_kind = RD_NONE;
    chg_add(p, fd);
}

static void event_handle(struct ring_epoll *p, const struct epoll_event *ev)
{
    int fd = ev->data.fd;
    struct efd *f = &p->fds[fd];
    uint32_t e = ev->events;
    if (cq_room(p) < 2)
        return; /* level-triggered: it will be reported again */
    if (f->rd_kind == RD_POLL) {
        uint32_t revents = (e & EPOLLIN ? POLLIN : 0) | (e & EPOLLOUT ? POLLOUT : 0) |
                           (e & EPOLLERR ? POLLERR : 0) | (e & EPOLLHUP ? POLLHUP : 0);
        revents &= f->poll_events | POLLERR | POLLHUP;
        if (revents) {
            cq_push(p, f->rd_ud, (int32_t)revents, 0);
            f->rd_kind = RD_NONE;
            chg_add(p, fd);
        }
    } else if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (f->rd_kind == RD_RECV)
            do_recv(p, fd, f);
        else if (f->rd_kind == RD_ACCEPT_MULTI || f->rd_kind == RD_ACCEPT_ONE)
            do_accept(p, fd, f);
    }
    if (f->wr_pending && f->wr_blocked && (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        try_send(p, fd);
}

static int e_submit_wait(struct eng_ring *r, uint32_t timeout_ms)
{
    struct ring_epoll *p = E(r);
    sends_run(p);
    changes_sync(p);
    int timeout = p->cq_tail != p->cq_head   ? 0
                  : timeout_ms == UINT32_MAX ? -1
                  : timeout_ms > INT32_MAX   ? INT32_MAX
                                             : (int)timeout_ms;
    int n = epoll_wait(p->epfd, p->events, ENG_EPOLL_EVENTS, timeout);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++)
        event_handle(p, &p->events[i]);
    return 0;
}

static unsigned e_reap(struct eng_ring *r, struct eng_cqe *out, unsigned max)
{
    struct ring_epoll *p = E(r);
    unsigned n = 0;
    while (n < max && p->cq_head != p->cq_tail)
        out[n++] = p->cq[p->cq_head++ & (ENG_EPOLL_CQ_CAP - 1)];
    return n;
}

static void e_fd_closed(struct eng_ring *r, int fd)
{
    struct ring_epoll *p = E(r);
    struct efd *f = efd_get(p, fd);
    if (!f)
        return;
    ENG_ASSERT(f->rd_kind == RD_NONE);
    ENG_ASSERT(!f->wr_pending);
    /* close() removes it from the interest set; keep list links, reset the rest. */
    f->reg_events = 0;
    f->doomed = false;
    f->listener = false;
}

static void e_thread_exit(struct eng_ring *r)
{
    (void)r;
}

static void e_destroy(struct eng_ring *r)
{
    struct ring_epoll *p = E(r);
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->fds)
        munmap(p->fds, p->fds_map_bytes);
    if (p->cq)
        munmap(p->cq, ENG_EPOLL_CQ_CAP * sizeof(struct eng_cqe));
    free(p->free_bufs);
    free(p);
}

static const struct eng_ring_ops epoll_ops = {
    .name = "epoll",
    .prep_accept = e_prep_accept,
    .prep_recv = e_prep_recv,
    .prep_send = e_prep_send,
    .prep_poll = e_prep_poll,
    .prep_cancel_ud = e_prep_cancel_ud,
    .prep_cancel_fd = e_prep_cancel_fd,
    .prep_wake = e_prep_wake,
    .buf_return = e_buf_return,
    .submit_wait = e_submit_wait,
    .reap = e_reap,
    .fd_closed = e_fd_closed,
    .thread_exit = e_thread_exit,
    .destroy = e_destroy,
};

static size_t fd_table_size(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > ENG_EPOLL_FDS_MAX)
        return ENG_EPOLL_FDS_MAX;
    return (size_t)rl.rlim_cur;
}

int eng_ring_epoll_create(const struct eng_ring_params *prm, struct eng_ring **out, char *err,
                          size_t err_len)
{
    struct ring_epoll *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, err_len, "out of memory creating the epoll backend");
        return -ENOMEM;
    }
    p->base.ops = &epoll_ops;
    p->base.buf_base = prm->buf_base;
    p->base.buf_bytes = prm->buf_bytes;
    p->base.buf_count = prm->buf_count;
    p->base.wake_fd = prm->wake_fd;
    p->fds_cap = fd_table_size();
    p->fds_map_bytes = p->fds_cap * sizeof(struct efd);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    void *fds = mmap(NULL, p->fds_map_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *cq = mmap(NULL, ENG_EPOLL_CQ_CAP * sizeof(struct eng_cqe), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    p->fds = fds == MAP_FAILED ? NULL : fds;
    p->cq = cq == MAP_FAILED ? NULL : cq;
    p->free_bufs = calloc(prm->buf_count, sizeof(uint16_t));
    if (p->epfd < 0 || !p->fds || !p->cq || !p->free_bufs) {
        int rc = p->epfd < 0 ? -errno : -ENOMEM;
        snprintf(err, err_len, "cannot create the epoll backend: %s", strerror(-rc));
        e_destroy(&p->base);
        return rc;
    }
    /* Lowest ids on top of the stack, so a quiet shard keeps reusing the same few buffers. */
    for (uint32_t i = 0; i < prm->buf_count; i++)
        p->free_bufs[i] = (uint16_t)(prm->buf_count - 1 - i);
    p->free_count = prm->buf_count;
    *out = &p->base;
    return 0;
}
