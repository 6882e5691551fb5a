/*
 * xshard.c: messages between shards over fixed-size lock-free SPSC rings.
 *
 * Every ordered pair (src, dst) has one ring of ENG_XRING_CAP pointers (seastar's
 * smp_message_queue shape): the producer owns tail, the consumer owns head, each on its own
 * cache line; a slot is published by a release store of tail and consumed after an acquire load
 * of it. A message that finds its ring full waits, in order, on the sender's intrusive overflow
 * list for that destination (eng_xmsg.next) and is moved into the ring at the end of a later
 * turn, so eng_xshard_send never fails and never allocates (counted: xmsg_overflow).
 *
 * Waking: a destination publishes `sleeping` before it blocks in the ring wait and then looks at
 * its rings once more; a sender, at the end of its turn, looks at `sleeping` after publishing
 * (both sides with a seq_cst fence, Dekker style), and only then sends a wake: MSG_RING on
 * io_uring, an eventfd write on epoll. Busy shards therefore exchange messages without system
 * calls. Owner: each shard touches only its own ends. Messages to a shard that already stopped
 * are never delivered (its rings are freed with the engine).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int eng_xshard_init(struct eng *e)
{
    size_t n = (size_t)e->shard_count * e->shard_count;
    e->xrings = aligned_alloc(64, n * sizeof(struct eng_xring));
    if (!e->xrings)
        return -ENOMEM;
    memset(e->xrings, 0, n * sizeof(struct eng_xring));
    return 0;
}

void eng_xshard_fini(struct eng *e)
{
    free(e->xrings);
    e->xrings = NULL;
}

int eng_xshard_shard_init(struct eng_shard *sh)
{
    sh->xout = calloc(sh->eng->shard_count, sizeof(*sh->xout));
    return sh->xout ? 0 : -ENOMEM;
}

static struct eng_xring *xring(struct eng *e, unsigned src, unsigned dst)
{
    return &e->xrings[(size_t)src * e->shard_count + dst];
}

/* Producer side: true if m went into the ring. */
static bool ring_push(struct eng_xring *r, struct eng_xmsg *m)
{
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (tail - head == ENG_XRING_CAP)
        return false;
    r->slot[tail & (ENG_XRING_CAP - 1)] = m;
    atomic_store_explicit(&r->tail, tail + 1, ENG_DEKKER_STORE);
    return true;
}

void eng_xshard_send(struct eng_shard *from, unsigned dst_index, struct eng_xmsg *m)
{
    eng_assert_on_shard(from);
    ENG_ASSERT(dst_index < from->eng->shard_count);
    ENG_ASSERT(m->fn != NULL);
    struct eng_xout *o = &from->xout[dst_index];
    m->next = NULL;
    ENG_STAT_INC(from, xmsg_sent);
    /* Order is kept: once anything overflowed, later messages queue behind it. */
    if (o->ovf_head || !ring_push(xring(from->eng, from->index, dst_index), m)) {
        ENG_STAT_INC(from, xmsg_overflow);
        if (o->ovf_tail)
            o->ovf_tail->next = m;
        else
            o->ovf_head = m;
        o->ovf_tail = m;
    }
    o->wake_want = true;
    from->xout_dirty = true;
}

/* Consumer side: runs the messages waiting from every source, at most one ring's worth per
 * source per turn so a flood cannot starve the loop. Returns how many ran. */
unsigned eng_xshard_drain(struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    unsigned ran = 0;
    for (unsigned src = 0; src < e->shard_count; src++) {
        struct eng_xring *r = xring(e, src, sh->index);
        uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        while (head != tail) {
            struct eng_xmsg *m = r->slot[head & (ENG_XRING_CAP - 1)];
            head++;
            /* Free the slot before running m: its handler may answer on the reverse ring. */
            atomic_store_explicit(&r->head, head, memory_order_release);
            ENG_ASSERT(m != NULL);
            m->fn(sh, m);
            ran++;
        }
    }
    if (ran)
        ENG_STAT_ADD(sh, xmsg_received, ran);
    return ran;
}

/* True if any incoming ring holds a message (checked before blocking). */
bool eng_xshard_pending(const struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    for (unsigned src = 0; src < e->shard_count; src++) {
        struct eng_xring *r = xring(e, src, sh->index);
        if (atomic_load_explicit(&r->head, memory_order_relaxed) !=
            atomic_load_explicit(&r->tail, ENG_DEKKER_LOAD))
            return true;
    }
    return false;
}

/* End of turn: move overflowed messages into their rings, then wake sleeping destinations. */
void eng_xshard_flush(struct eng_shard *sh)
{
    if (!sh->xout_dirty)
        return;
    struct eng *e = sh->eng;
    bool still_dirty = false;
    for (unsigned dst = 0; dst < e->shard_count; dst++) {
        struct eng_xout *o = &sh->xout[dst];
        struct eng_xring *r = xring(e, sh->index, dst);
        while (o->ovf_head) {
            struct eng_xmsg *m = o->ovf_head;
            struct eng_xmsg *next = m->next; /* m belongs to the destination once pushed */
            if (!ring_push(r, m))
                break;
            o->ovf_head = next;
            if (!next)
                o->ovf_tail = NULL;
        }
        if (o->ovf_head)
            still_dirty = true; /* the destination will drain its ring and we retry */
        if (!o->wake_want)
            continue;
        ENG_DEKKER_FENCE();
        struct eng_shard *d = &e->shards[dst];
        if (dst != sh->index && atomic_load_explicit(&d->sleeping, ENG_DEKKER_LOAD)) {
            if (sh->ring->ops->prep_wake(sh->ring, d->ring, eng_ud(ENG_OP_WAKE, sh->index, 0)) <
                0) {
                still_dirty = true;
                continue;
            }
            ENG_STAT_INC(sh, wakes_sent);
        }
        o->wake_want = o->ovf_head != NULL;
    }
    sh->xout_dirty = still_dirty;
}
