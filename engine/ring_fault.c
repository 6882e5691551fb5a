/*
 * ring_fault.c: a ring that wraps a real backend and injects faults (tests only).
 *
 * The faults are decided when an operation is prepared, so the wrapped ring never sees an op
 * whose completion we fake, and nothing the kernel did is hidden or duplicated:
 *   - a recv arm completes at once with -ENOBUFS (recv_enobufs_permille), as when the provided
 *     buffers run dry; the engine must re-arm and lose no data;
 *   - a send completes at once with -EAGAIN (send_eagain_permille), or goes to the kernel cut to
 *     a random shorter length (send_short_permille): a short send;
 *   - the Nth prepared recv or send (reset_at_step) completes with -ECONNRESET.
 * Decisions come from a xorshift generator seeded with plan.seed and the shard index, so a run
 * is reproducible from its seed. Everything else passes through. Owner: one shard thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "ring.h"

#define ENG_FAULT_PENDING 4096u

struct ring_fault {
    struct eng_ring base;
    struct eng_ring *inner;
    struct eng_fault_plan plan;
    uint64_t rng;
    uint64_t step;
    unsigned pending_len;
    struct eng_cqe pending[ENG_FAULT_PENDING];
};

static struct ring_fault *F(struct eng_ring *r)
{
    return (struct ring_fault *)r;
}

static const struct eng_ring_ops fault_ops;

static uint64_t rnd(struct ring_fault *f)
{
    uint64_t x = f->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static bool chance(struct ring_fault *f, uint32_t permille)
{
    return permille && rnd(f) % 1000 < permille;
}

/* Queues a fake completion; false if the queue is full (then the op passes through). */
static bool inject(struct ring_fault *f, uint64_t ud, int32_t res)
{
    if (f->pending_len == ENG_FAULT_PENDING)
        return false;
    f->pending[f->pending_len++] = (struct eng_cqe){.user_data = ud, .res = res, .flags = 0};
    return true;
}

static int f_prep_accept(struct eng_ring *r, int fd, bool multishot, uint64_t ud)
{
    return F(r)->inner->ops->prep_accept(F(r)->inner, fd, multishot, ud);
}

static int f_prep_recv(struct eng_ring *r, int fd, uint64_t ud)
{
    struct ring_fault *f = F(r);
    f->step++;
    if (f->step == f->plan.reset_at_step && inject(f, ud, -ECONNRESET))
        return 0;
    if (chance(f, f->plan.recv_enobufs_permille) && inject(f, ud, -ENOBUFS))
        return 0;
    return f->inner->ops->prep_recv(f->inner, fd, ud);
}

static int f_prep_send(struct eng_ring *r, int fd, const void *buf, uint32_t len, uint64_t ud)
{
    struct ring_fault *f = F(r);
    f->step++;
    if (f->step == f->plan.reset_at_step && inject(f, ud, -ECONNRESET))
        return 0;
    if (chance(f, f->plan.send_eagain_permille) && inject(f, ud, -EAGAIN))
        return 0;
    if (len > 1 && chance(f, f->plan.send_short_permille))
        len = 1 + (uint32_t)(rnd(f) % (len - 1));
    return f->inner->ops->prep_send(f->inner, fd, buf, len, ud);
}

static int f_prep_poll(struct eng_ring *r, int fd, uint32_t events, uint64_t ud)
{
    return F(r)->inner->ops->prep_poll(F(r)->inner, fd, events, ud);
}

static int f_prep_cancel_ud(struct eng_ring *r, int fd, uint64_t target_ud, uint64_t ud)
{
    return F(r)->inner->ops->prep_cancel_ud(F(r)->inner, fd, target_ud, ud);
}

static int f_prep_cancel_fd(struct eng_ring *r, int fd, uint64_t ud)
{
    return F(r)->inner->ops->prep_cancel_fd(F(r)->inner, fd, ud);
}

static int f_prep_wake(struct eng_ring *r, struct eng_ring *dst, uint64_t ud)
{
    struct eng_ring *d = dst->ops == &fault_ops ? F(dst)->inner : dst;
    return F(r)->inner->ops->prep_wake(F(r)->inner, d, ud);
}

static void f_buf_return(struct eng_ring *r, uint16_t bid)
{
    F(r)->inner->ops->buf_return(F(r)->inner, bid);
}

static int f_submit_wait(struct eng_ring *r, uint32_t timeout_ms)
{
    struct ring_fault *f = F(r);
    return f->inner->ops->submit_wait(f->inner, f->pending_len ? 0 : timeout_ms);
}

static unsigned f_reap(struct eng_ring *r, struct eng_cqe *out, unsigned max)
{
    struct ring_fault *f = F(r);
    unsigned n = 0;
    while (n < max && n < f->pending_len) {
        out[n] = f->pending[n];
        n++;
    }
    for (unsigned i = n; i < f->pending_len; i++)
        f->pending[i - n] = f->pending[i];
    f->pending_len -= n;
    return n + f->inner->ops->reap(f->inner, out + n, max - n);
}

static void f_fd_closed(struct eng_ring *r, int fd)
{
    F(r)->inner->ops->fd_closed(F(r)->inner, fd);
}

static void f_thread_exit(struct eng_ring *r)
{
    F(r)->inner->ops->thread_exit(F(r)->inner);
}

static void f_destroy(struct eng_ring *r)
{
    F(r)->inner->ops->destroy(F(r)->inner);
    free(r);
}

static const struct eng_ring_ops fault_ops = {
    .name = "fault",
    .prep_accept = f_prep_accept,
    .prep_recv = f_prep_recv,
    .prep_send = f_prep_send,
    .prep_poll = f_prep_poll,
    .prep_cancel_ud = f_prep_cancel_ud,
    .prep_cancel_fd = f_prep_cancel_fd,
    .prep_wake = f_prep_wake,
    .buf_return = f_buf_return,
    .submit_wait = f_submit_wait,
    .reap = f_reap,
    .fd_closed = f_fd_closed,
    .thread_exit = f_thread_exit,
    .destroy = f_destroy,
};

int eng_ring_fault_wrap(struct eng_ring *inner, const struct eng_fault_plan *plan,
                        unsigned shard_index, struct eng_ring **out)
{
    struct ring_fault *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->base = *inner;
    f->base.ops = &fault_ops;
    f->inner = inner;
    f->plan = *plan;
    f->rng = (plan->seed ^ (0x9E3779B97F4A7C15ull * (shard_index + 1))) | 1;
    *out = &f->base;
    return 0;
}

/* The plan applies to rings created after the call (tests set it before eng_run). */
static _Atomic(const struct eng_fault_plan *) g_plan;
static struct eng_fault_plan g_plan_copy;

void eng_test_set_fault_plan(const struct eng_fault_plan *plan)
{
    if (plan) {
        g_plan_copy = *plan;
        atomic_store(&g_plan, &g_plan_copy);
    } else {
        atomic_store(&g_plan, NULL);
    }
}

const struct eng_fault_plan *eng_test_fault_plan(void)
{
    return atomic_load(&g_plan);
}
