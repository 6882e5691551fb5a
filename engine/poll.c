/*
 * poll.c: level-triggered readiness of foreign file descriptors (libpq, c-ares sockets).
 *
 * Each started struct eng_poll holds a slot in the shard's poll table (polls_per_shard_max),
 * whose index and generation go into the user_data of its poll operation. The operation is a
 * single-shot poll re-armed after every callback; since the kernel checks readiness when a poll
 * is armed, the callback keeps coming while the fd stays ready (level-triggered), as libpq and
 * c-ares expect. Changing events cancels the poll in flight and re-arms with the new mask. After
 * eng_poll_stop the slot lives on until its last completion arrives, and that completion is
 * dropped (the slot's p is NULL), so fn is never called after stop.
 *
 * Owner: one shard. Callbacks run from the loop and may call eng_poll_update/stop/start on any
 * poll, including their own. An fd the kernel reports as invalid (POLLNVAL or -EBADF) is passed
 * to fn as POLLNVAL once and not polled again until eng_poll_update. An fd carries at most one
 * started poll per shard (-EBUSY), because epoll registers an fd once.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "internal.h"

int eng_polls_init(struct eng_shard *sh, uint32_t cap)
{
    sh->polls = calloc(cap ? cap : 1, sizeof(*sh->polls));
    if (!sh->polls)
        return -ENOMEM;
    sh->polls_cap = cap;
    return 0;
}

static void work_add(struct eng_shard *sh, uint32_t idx)
{
    struct eng_poll_slot *s = &sh->polls[idx];
    if (s->in_work)
        return;
    s->in_work = true;
    s->next = sh->polls_work;
    sh->polls_work = idx + 1;
}

static struct eng_poll_slot *slot_of(struct eng_shard *sh, struct eng_poll *p, uint32_t *idx)
{
    ENG_ASSERT(p->state > 0);
    ENG_ASSERT(p->state <= sh->polls_fresh);
    *idx = p->state - 1;
    struct eng_poll_slot *s = &sh->polls[*idx];
    ENG_ASSERT(s->p == p);
    ENG_ASSERT(s->gen == p->gen);
    return s;
}

int eng_poll_start(struct eng_shard *sh, struct eng_poll *p, int fd, uint32_t events,
                   eng_poll_fn *fn)
{
    eng_assert_on_shard(sh);
    ENG_ASSERT(fn != NULL);
    if (fd < 0)
        return -EBADF;
    if (events == 0 || (events & ~(uint32_t)(POLLIN | POLLOUT)))
        return -EINVAL;
    /* One poll per fd and shard (epoll registers an fd once); a scan, but start is rare. */
    for (uint32_t i = 0; i < sh->polls_fresh; i++)
        if (sh->polls[i].p && sh->polls[i].fd == fd)
            return -EBUSY;
    uint32_t idx;
    if (sh->polls_free) {
        idx = sh->polls_free - 1;
        sh->polls_free = sh->polls[idx].next;
    } else if (sh->polls_fresh < sh->polls_cap) {
        idx = sh->polls_fresh++;
    } else {
        return -ENOSPC;
    }
    struct eng_poll_slot *s = &sh->polls[idx];
    s->p = p;
    s->fd = fd;
    s->armed = s->cancel_want = s->in_work = false;
    s->want = true;
    s->next = 0;
    p->fd = fd;
    p->events = events;
    p->fn = fn;
    p->state = idx + 1;
    p->gen = s->gen;
    work_add(sh, idx);
    return 0;
}

int eng_poll_update(struct eng_shard *sh, struct eng_poll *p, uint32_t events)
{
    eng_assert_on_shard(sh);
    if (events == 0 || (events & ~(uint32_t)(POLLIN | POLLOUT)))
        return -EINVAL;
    uint32_t idx;
    struct eng_poll_slot *s = slot_of(sh, p, &idx);
    bool changed = p->events != events;
    p->events = events;
    if (s->armed && changed)
        s->cancel_want = true;
    if (!s->armed)
        s->want = true;
    work_add(sh, idx);
    return 0;
}

void eng_poll_stop(struct eng_shard *sh, struct eng_poll *p)
{
    eng_assert_on_shard(sh);
    if (p->state == 0)
        return;
    uint32_t idx;
    struct eng_poll_slot *s = slot_of(sh, p, &idx);
    s->p = NULL;
    s->want = false;
    s->cancel_want = s->armed;
    p->state = 0;
    work_add(sh, idx); /* the flush frees the slot once nothing is in flight */
}

void eng_poll_complete(struct eng_shard *sh, const struct eng_cqe *cqe)
{
    uint32_t idx = eng_ud_idx(cqe->user_data);
    ENG_ASSERT(idx < sh->polls_fresh);
    struct eng_poll_slot *s = &sh->polls[idx];
    ENG_ASSERT(s->armed);
    ENG_ASSERT((s->gen & ENG_UD_GEN_MASK) == eng_ud_gen(cqe->user_data));
    s->armed = false;
    struct eng_poll *p = s->p;
    if (!p) {
        work_add(sh, idx); /* stopped: free it */
        return;
    }
    uint32_t revents;
    if (cqe->res >= 0)
        revents = (uint32_t)cqe->res & (p->events | POLLERR | POLLHUP | POLLNVAL);
    else if (cqe->res == -ECANCELED)
        revents = 0; /* eng_poll_update: re-arm with the new events */
    else
        revents = POLLNVAL;
    s->want = !(revents & POLLNVAL);
    work_add(sh, idx);
    if (revents) {
        ENG_STAT_INC(sh, poll_events);
        p->fn(sh, p, revents);
    }
}

/* End of turn: arm, cancel or free what the turn changed. */
void eng_polls_flush(struct eng_shard *sh)
{
    uint32_t next = sh->polls_work;
    uint32_t retry = 0;
    sh->polls_work = 0;
    while (next) {
        uint32_t idx = next - 1;
        struct eng_poll_slot *s = &sh->polls[idx];
        next = s->next;
        s->in_work = false;
        s->next = 0;
        uint64_t ud = eng_ud(ENG_OP_POLL, idx, s->gen);
        bool ok = true;
        if (s->armed && s->cancel_want) {
            ok = sh->ring->ops->prep_cancel_ud(sh->ring, s->fd, ud,
                                               eng_ud(ENG_OP_CANCEL, idx, 0)) == 0;
            s->cancel_want = !ok;
        } else if (!s->p && !s->armed) {
            s->gen++;
            s->next = sh->polls_free;
            sh->polls_free = idx + 1;
            continue;
        } else if (s->p && s->want && !s->armed) {
            ok = sh->ring->ops->prep_poll(sh->ring, s->p->fd, s->p->events, ud) == 0;
            s->armed = ok;
            s->want = !ok;
        }
        if (!ok) {
            ENG_STAT_INC(sh, sq_full);
            s->in_work = true;
            s->next = retry;
            retry = idx + 1;
        }
    }
    sh->polls_work = retry;
}
