/*
 * conn.c: accepted connections: input staging, output queueing, pause/resume and teardown.
 *
 * A connection is a slot in the shard's connection pool (struct eng_conn, then the application
 * area). It owns its fd, at most one staging buffer (unconsumed input) and at most one send
 * buffer, both taken from the shard's pools only while needed, so an idle connection holds
 * neither. Input arrives from a multishot recv into a provided buffer: when nothing is staged
 * the application reads the provided buffer itself (zero copy) and only its unconsumed rest is
 * copied to staging; the provided buffer goes back to the ring before the turn ends. Staging
 * buffers come in size classes (internal.h): a connection's buffer moves up a class as it has to
 * hold more and back down when little is left, and the shard counts the bytes of the buffers it
 * holds against limits.stage_bytes_per_shard_max. Past half of it, connections holding large
 * buffers stop being read (their multishot recv is cancelled) until the total is back under 3/8,
 * or, when only they hold it, one at a time. A paused connection stops being read too once it
 * holds ENG_PAUSED_STAGE_BYTES, and is read again after its resume, so the peer is held back by
 * the kernel's socket buffer and TCP flow control instead of by a close. Output is
 * copied into a circular send buffer of send_bytes_max bytes; at most one send is in flight,
 * and the rest (after a short send, or queued meanwhile) goes out on the next turn.
 *
 * Everything that must not happen inside an application call (presenting input after
 * eng_conn_resume, tearing down after eng_conn_close, arming recv or send) is done from the
 * shard's work list at the end of the turn, so no callback ever re-enters. Teardown cancels the
 * operations in flight and frees the slot only after their last completion, which is why a
 * completion whose generation does not match its slot is a bug (asserted).
 *
 * Errors (STYLE.md 5): ECONNRESET/EPIPE/ETIMEDOUT close with ENG_CLOSE_RESET, EINTR/EAGAIN
 * retry, ENOBUFS waits for buffers, EBADF/EFAULT assert, anything else closes with
 * ENG_CLOSE_ERROR and is counted (sock_errors).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* A staging or send buffer that held more than this is trimmed back to one page when it
 * returns to its pool, so a rare large request does not keep its pages resident. */
#define ENG_BUF_TRIM_BYTES (16u * 1024u)
/* Passes over the work list per turn; work added by the last pass waits for the next turn. */
#define ENG_WORK_PASSES 4

size_t eng_conn_slot_bytes(size_t app_conn_bytes)
{
    return (ENG_CONN_HDR_BYTES + app_conn_bytes + 15) & ~(size_t)15;
}

struct eng_conn *eng_conn_at(struct eng_shard *sh, uint32_t idx)
{
    return eng_pool_at(&sh->conns, idx);
}

static void work_add(struct eng_shard *sh, struct eng_conn *c)
{
    if (c->flags & CONN_IN_WORK)
        return;
    c->flags |= CONN_IN_WORK;
    c->work_next = 0;
    if (sh->work_tail)
        eng_conn_at(sh, sh->work_tail - 1)->work_next = c->idx + 1;
    else
        sh->work_head = c->idx + 1;
    sh->work_tail = c->idx + 1;
}

static void conn_abort(struct eng_shard *sh, struct eng_conn *c, enum eng_close_reason reason)
{
    if (c->flags & CONN_ABORTING)
        return;
    if (!(c->flags & CONN_CLOSING))
        c->close_reason = (uint8_t)reason;
    c->flags |= CONN_ABORTING;
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT))
        c->flags |= CONN_CANCEL_WANT;
    eng_timer_cancel(sh, &c->close_timer);
    work_add(sh, c);
}

/* A closing connection (eng_conn_close, or the peer's EOF) could not send what it had queued
 * within drain_timeout_ms: give up on it. */
static void close_timer_fire(struct eng_shard *sh, struct eng_timer *t)
{
    struct eng_conn *c = (struct eng_conn *)((char *)t - offsetof(struct eng_conn, close_timer));
    conn_abort(sh, c, (enum eng_close_reason)c->close_reason);
}

void eng_conn_open(struct eng_shard *sh, uint16_t listener, int fd)
{
    uint32_t idx = eng_pool_get(&sh->conns);
    if (idx == ENG_POOL_NONE) {
        close(fd);
        ENG_STAT_INC(sh, accept_overflow);
        return;
    }
    struct eng_conn *c = eng_conn_at(sh, idx);
    ENG_ASSERT(c->flags == 0); /* a free slot; conn_free cleared it */
    uint32_t gen = c->gen;     /* survives in the slot: ids stay unique */
    memset(c, 0, eng_conn_slot_bytes(sh->eng->cfg.app_conn_bytes));
    c->shard = sh;
    c->fd = fd;
    c->idx = idx;
    c->gen = gen;
    c->flags = CONN_OPEN | CONN_RECV_WANT | (sh->listeners[listener].tcp ? CONN_TCP : 0);
    c->listener = listener;
    c->stage_idx = c->send_idx = ENG_POOL_NONE;
    eng_timer_init(&c->close_timer, close_timer_fire);
    ENG_STAT_INC(sh, accepted);
    ENG_STAT_INC(sh, conns_open);
    const struct eng_app_ops *ops = sh->eng->cfg.ops;
    if (ops->on_open && ops->on_open(sh->app, c) < 0) {
        ENG_STAT_INC(sh, open_refused);
        c->flags |= CONN_REFUSED;
        conn_abort(sh, c, ENG_CLOSE_APP);
        return;
    }
    work_add(sh, c);
}

/* ---------------------------------------------------------------------------------------------
 * Buffers
 */

static struct eng_pool *stage_pool(struct eng_shard *sh, uint32_t ref)
{
    uint32_t k = ref >> ENG_STAGE_CLASS_SHIFT;
    ENG_ASSERT(k < sh->stage_classes);
    return &sh->stage[k];
}

static char *stage_buf(struct eng_shard *sh, const struct eng_conn *c)
{
    return eng_pool_at(stage_pool(sh, c->stage_idx), c->stage_idx & ENG_STAGE_SLOT_MASK);
}

static uint32_t stage_cap(const struct eng_shard *sh, const struct eng_conn *c)
{
    return c->stage_idx == ENG_POOL_NONE
               ? 0
               : sh->stage_class_bytes[c->stage_idx >> ENG_STAGE_CLASS_SHIFT];
}

/* Gives a buffer back: trimmed to one page when it held more than ENG_BUF_TRIM_BYTES, so a
 * rare large request does not keep its pages resident. */
static void stage_put(struct eng_shard *sh, uint32_t ref, uint32_t hwm)
{
    struct eng_pool *p = stage_pool(sh, ref);
    uint32_t slot = ref & ENG_STAGE_SLOT_MASK;
    if (hwm > ENG_BUF_TRIM_BYTES)
        eng_pool_trim(p, slot, 4096, hwm);
    eng_pool_put(p, slot);
    if (ref >> ENG_STAGE_CLASS_SHIFT >= ENG_STAGE_CLASS_LARGE)
        sh->stage_large_now--;
    sh->stage_held -= sh->stage_class_bytes[ref >> ENG_STAGE_CLASS_SHIFT];
    __atomic_store_n(&sh->stats.stage_bytes, sh->stage_held, __ATOMIC_RELAXED);
}

/* c no longer holds a large buffer: it is not one of those to hold back. */
static void throttle_clear(struct eng_shard *sh, struct eng_conn *c)
{
    if (!(c->flags & CONN_THROTTLED))
        return;
    c->flags &= ~(uint32_t)CONN_THROTTLED;
    sh->stage_throttled_now--;
    if (!(c->flags & CONN_ABORTING))
        work_add(sh, c); /* re-arm its recv */
}

static void stage_release(struct eng_shard *sh, struct eng_conn *c)
{
    if (c->stage_idx == ENG_POOL_NONE)
        return;
    if (sh->stage_favoured == c->idx + 1)
        sh->stage_favoured = 0;
    stage_put(sh, c->stage_idx, c->stage_hwm);
    sh->stage_bufs_used--;
    c->stage_idx = ENG_POOL_NONE;
    c->stage_len = c->stage_hwm = 0;
    throttle_clear(sh, c);
}

/* The smallest class holding need bytes. */
static unsigned stage_class_for(const struct eng_shard *sh, size_t need)
{
    unsigned k = 0;
    while (k + 1 < sh->stage_classes && sh->stage_class_bytes[k] < need)
        k++;
    ENG_ASSERT(need <= sh->stage_class_bytes[k]);
    return k;
}

/* c's staged bytes go to slot of class k; its old buffer (if any) goes back. */
static void stage_switch(struct eng_shard *sh, struct eng_conn *c, unsigned k, uint32_t slot)
{
    if (c->stage_idx != ENG_POOL_NONE) {
        memcpy(eng_pool_at(&sh->stage[k], slot), stage_buf(sh, c), c->stage_len);
        stage_put(sh, c->stage_idx, c->stage_hwm);
    }
    c->stage_idx = ENG_STAGE_REF(k, slot);
    c->stage_hwm = c->stage_len;
    if (k >= ENG_STAGE_CLASS_LARGE)
        sh->stage_large_now++;
    sh->stage_held += sh->stage_class_bytes[k];
    __atomic_store_n(&sh->stats.stage_bytes, sh->stage_held, __ATOMIC_RELAXED);
}

/* Moves c's staged bytes into a buffer of class k (a new one when nothing is staged). False if
 * there is none to take (the class pool, or stage_bufs_per_shard, is exhausted): c is then
 * closed (ENG_CLOSE_NOMEM, counted in stage_full), so its input is not lost silently. */
static bool stage_move(struct eng_shard *sh, struct eng_conn *c, unsigned k)
{
    uint32_t old = c->stage_idx;
    uint32_t slot = ENG_POOL_NONE;
    bool hook_fail = false;
    if (old == ENG_POOL_NONE && sh->stage_fail_after) {
        hook_fail = sh->stage_fail_after == 1;
        if (!hook_fail)
            sh->stage_fail_after--;
    }
    /* A class that ran out: the next larger one will do. */
    if (!hook_fail &&
        (old != ENG_POOL_NONE || sh->stage_bufs_used < sh->eng->cfg.limits.stage_bufs_per_shard))
        for (; k < sh->stage_classes && (slot = eng_pool_get(&sh->stage[k])) == ENG_POOL_NONE; k++)
            ;
    if (slot == ENG_POOL_NONE) {
        ENG_STAT_INC(sh, stage_full);
        conn_abort(sh, c, ENG_CLOSE_NOMEM);
        return false;
    }
    if (old == ENG_POOL_NONE)
        sh->stage_bufs_used++;
    stage_switch(sh, c, k, slot);
    if (sh->stage_held > sh->stats.stage_bytes_peak)
        __atomic_store_n(&sh->stats.stage_bytes_peak, sh->stage_held, __ATOMIC_RELAXED);
    /* Backpressure: past half the budget, a connection holding a large buffer is not read
     * until the shard's total is back under 3/8 of it (eng_conn_work_run). */
    if (k >= ENG_STAGE_CLASS_LARGE && !(c->flags & CONN_THROTTLED) &&
        sh->stage_favoured != c->idx + 1 && sh->stage_held > sh->stage_budget / 2) {
        c->flags |= CONN_THROTTLED;
        sh->stage_throttled_now++;
        ENG_STAT_INC(sh, stage_throttled);
        work_add(sh, c); /* cancel its recv */
    }
    return true;
}

static void send_release(struct eng_shard *sh, struct eng_conn *c)
{
    if (c->send_idx == ENG_POOL_NONE)
        return;
    ENG_ASSERT(!(c->flags & CONN_SEND_INFLIGHT));
    if (c->send_hwm > ENG_BUF_TRIM_BYTES)
        eng_pool_trim(&sh->send, c->send_idx, 4096, sh->eng->cfg.limits.send_bytes_max);
    eng_pool_put(&sh->send, c->send_idx);
    c->send_idx = ENG_POOL_NONE;
    c->send_head = c->send_queued = c->send_hwm = 0;
}

/* Appends to the staging buffer, moving to a larger class when needed (the largest holds
 * stage_bytes_max + recv_buf_bytes, so what is held can always be presented together with one
 * more receive buffer). False if the connection was closed instead. */
static bool stage_append(struct eng_shard *sh, struct eng_conn *c, const char *data, size_t n)
{
    size_t need = (size_t)c->stage_len + n;
    if (need > stage_cap(sh, c) && !stage_move(sh, c, stage_class_for(sh, need)))
        return false;
    memcpy(stage_buf(sh, c) + c->stage_len, data, n);
    c->stage_len += (uint32_t)n;
    if (c->stage_len > c->stage_hwm)
        c->stage_hwm = c->stage_len;
    return true;
}

/* After input was consumed: a large buffer holding little moves back down to the class that
 * fits what is left. If no buffer is free there, it stays. */
static void stage_shrink(struct eng_shard *sh, struct eng_conn *c)
{
    unsigned cur = c->stage_idx >> ENG_STAGE_CLASS_SHIFT;
    if (cur < ENG_STAGE_CLASS_LARGE)
        return;
    unsigned k = stage_class_for(sh, c->stage_len);
    if (k >= cur)
        return;
    uint32_t slot = eng_pool_get(&sh->stage[k]);
    if (slot == ENG_POOL_NONE)
        return;
    stage_switch(sh, c, k, slot);
    if (k < ENG_STAGE_CLASS_LARGE) {
        throttle_clear(sh, c);
        if (sh->stage_favoured == c->idx + 1)
            sh->stage_favoured = 0;
    }
}

/* The limit: at most stage_bytes_max unconsumed bytes are held. A paused connection is no
 * longer read once it holds ENG_PAUSED_STAGE_BYTES, but what the kernel had already received
 * for it (at most every provided buffer of the shard) is kept as well. False if it closed c. */
static bool stage_within_limit(struct eng_shard *sh, struct eng_conn *c, size_t held)
{
    const struct eng_limits *lim = &sh->eng->cfg.limits;
    size_t max = lim->stage_bytes_max;
    if (c->flags & CONN_PAUSED)
        max += (size_t)lim->recv_buf_count * lim->recv_buf_bytes;
    if (held <= max)
        return true;
    ENG_STAT_INC(sh, stage_oversize);
    conn_abort(sh, c, ENG_CLOSE_OVERSIZE);
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Input
 */

static size_t app_bytes(struct eng_shard *sh, struct eng_conn *c, const char *buf, size_t len)
{
    ENG_ASSERT(!(c->flags & CONN_IN_APP));
    c->flags |= CONN_IN_APP;
    size_t used = sh->eng->cfg.ops->on_bytes(sh->app, c, buf, len);
    c->flags &= ~(uint32_t)CONN_IN_APP;
    ENG_ASSERT(used <= len);
    return used;
}

static void present_staged(struct eng_shard *sh, struct eng_conn *c)
{
    ENG_ASSERT(c->stage_len > 0);
    char *s = stage_buf(sh, c);
    size_t used = app_bytes(sh, c, s, c->stage_len);
    if (c->flags & CONN_ABORTING)
        return; /* buffers go with the connection */
    if (used == c->stage_len || (c->flags & CONN_CLOSING)) {
        stage_release(sh, c);
        return;
    }
    if (!stage_within_limit(sh, c, c->stage_len - used))
        return;
    if (used == 0)
        return;
    memmove(s, s + used, c->stage_len - used);
    c->stage_len -= (uint32_t)used;
    stage_shrink(sh, c);
}

/* New input: presented in place when nothing is staged (zero copy), else appended to what is
 * staged and presented together; only the unconsumed rest is kept. */
static void conn_input(struct eng_shard *sh, struct eng_conn *c, const char *data, size_t n)
{
    if (c->stage_len == 0 && !(c->flags & CONN_PAUSED)) {
        size_t used = app_bytes(sh, c, data, n);
        if (used < n && !(c->flags & (CONN_ABORTING | CONN_CLOSING)) &&
            stage_within_limit(sh, c, n - used))
            stage_append(sh, c, data + used, n - used);
        return;
    }
    if (c->flags & CONN_PAUSED) {
        if (stage_within_limit(sh, c, (size_t)c->stage_len + n))
            stage_append(sh, c, data, n);
        return;
    }
    if (stage_append(sh, c, data, n))
        present_staged(sh, c);
}

enum err_class { ERR_RETRY, ERR_NOBUFS, ERR_CANCELED, ERR_RESET, ERR_OTHER };

/* Maps a socket errno to what we do about it (STYLE.md 5, tigerbeetle linux.zig). */
static enum err_class err_classify(int err)
{
    switch (err) {
    case EINTR:
    case EAGAIN:
        return ERR_RETRY;
    case ENOBUFS:
        return ERR_NOBUFS;
    case ECANCELED:
        return ERR_CANCELED;
    case ECONNRESET:
    case EPIPE:
    case ETIMEDOUT:
    case ENOTCONN:
    case EHOSTUNREACH:
    case ENETUNREACH:
        return ERR_RESET;
    case EBADF:
    case EFAULT:
        ENG_ASSERT(!"socket operation on a bad descriptor or buffer");
        return ERR_OTHER;
    default:
        return ERR_OTHER;
    }
}

/* A failed recv or send; the operation is no longer in flight. */
static void op_error(struct eng_shard *sh, struct eng_conn *c, int err, bool is_recv)
{
    switch (err_classify(err)) {
    case ERR_NOBUFS:
        if (!is_recv)
            break; /* a send out of kernel memory: retry on the next turn */
        /* The provided buffers ran out; they are all back by the end of this turn, when the
         * work list re-arms the recv. */
        ENG_STAT_INC(sh, recv_enobufs);
        c->flags |= CONN_RECV_WANT;
        break;
    case ERR_RETRY:
        if (is_recv)
            c->flags |= CONN_RECV_WANT;
        break;
    case ERR_CANCELED:
        if (!(c->flags & CONN_ABORTING)) {
            ENG_STAT_INC(sh, sock_errors);
            conn_abort(sh, c, ENG_CLOSE_ERROR);
        }
        break;
    case ERR_RESET:
        conn_abort(sh, c, ENG_CLOSE_RESET);
        break;
    case ERR_OTHER:
        ENG_STAT_INC(sh, sock_errors);
        conn_abort(sh, c, ENG_CLOSE_ERROR);
        break;
    }
}

static void recv_complete(struct eng_shard *sh, struct eng_conn *c, const struct eng_cqe *cqe)
{
    bool more = cqe->flags & ENG_CQE_F_MORE;
    bool stopping = c->flags & CONN_RECV_CANCEL;
    ENG_ASSERT(c->flags & CONN_RECV_ARMED);
    if (!more)
        c->flags &= ~(uint32_t)(CONN_RECV_ARMED | CONN_RECV_CANCEL);
    if (cqe->res > 0) {
        ENG_ASSERT(cqe->flags & ENG_CQE_F_BUFFER);
        uint32_t bid = cqe->flags >> ENG_CQE_BUF_SHIFT;
        ENG_ASSERT(bid < sh->ring->buf_count);
        ENG_ASSERT((uint32_t)cqe->res <= sh->ring->buf_bytes);
        ENG_STAT_ADD(sh, bytes_in, (uint64_t)cqe->res);
        /* While draining, no new input is begun: the connection closes once its request in
         * progress is answered (the peer sees the close and retries elsewhere). */
        if (!(c->flags & (CONN_ABORTING | CONN_CLOSING)) && !sh->draining)
            conn_input(sh, c, eng_ring_buf(sh->ring, (uint16_t)bid), (size_t)cqe->res);
        sh->ring->ops->buf_return(sh->ring, (uint16_t)bid);
        if (!more)
            c->flags |= CONN_RECV_WANT;
    } else if (cqe->res == 0) {
        c->flags |= CONN_EOF;
        c->flags &= ~(uint32_t)CONN_RECV_WANT;
        if (!(c->flags & CONN_CLOSING)) {
            c->close_reason = ENG_CLOSE_PEER;
            /* What is queued may still go out (a half-close), but not forever. */
            if (c->send_queued > 0 && !eng_timer_armed(&c->close_timer))
                eng_timer_arm(sh, &c->close_timer, sh->eng->cfg.drain_timeout_ms);
        }
    } else if (cqe->res == -ECANCELED && stopping && !(c->flags & CONN_ABORTING)) {
        c->flags |= CONN_RECV_WANT; /* we stopped reading; re-armed when allowed again */
    } else {
        ENG_ASSERT(!more);
        op_error(sh, c, -cqe->res, true);
    }
    work_add(sh, c);
}

/* ---------------------------------------------------------------------------------------------
 * Output
 */

int eng_conn_send(struct eng_conn *c, const void *buf, size_t len)
{
    struct eng_shard *sh = c->shard;
    eng_assert_on_shard(sh);
    ENG_ASSERT(c->flags & CONN_OPEN);
    if (c->flags & (CONN_CLOSING | CONN_ABORTING))
        return -EPIPE;
    if (len == 0)
        return 0;
    uint32_t cap = sh->eng->cfg.limits.send_bytes_max;
    if (len > (size_t)(cap - c->send_queued)) {
        ENG_STAT_INC(sh, send_full);
        return -ENOBUFS;
    }
    if (c->send_idx == ENG_POOL_NONE) {
        c->send_idx = eng_pool_get(&sh->send);
        if (c->send_idx == ENG_POOL_NONE) {
            ENG_STAT_INC(sh, send_nomem);
            return -ENOBUFS;
        }
        c->send_head = c->send_queued = 0;
    }
    /* Circular: the in-flight bytes start at send_head and are never overwritten, because
     * queued + len <= cap. */
    char *base = eng_pool_at(&sh->send, c->send_idx);
    uint32_t tail = (c->send_head + c->send_queued) % cap;
    size_t first = len < (size_t)(cap - tail) ? len : (size_t)(cap - tail);
    memcpy(base + tail, buf, first);
    memcpy(base, (const char *)buf + first, len - first);
    c->send_queued += (uint32_t)len;
    if (c->send_queued > c->send_hwm)
        c->send_hwm = c->send_queued;
    work_add(sh, c);
    return 0;
}

static void send_start(struct eng_shard *sh, struct eng_conn *c)
{
    uint32_t cap = sh->eng->cfg.limits.send_bytes_max;
    uint32_t chunk = cap - c->send_head;
    if (chunk > c->send_queued)
        chunk = c->send_queued;
    ENG_ASSERT(chunk > 0);
    const char *buf = (const char *)eng_pool_at(&sh->send, c->send_idx) + c->send_head;
    if (sh->ring->ops->prep_send(sh->ring, c->fd, buf, chunk, eng_ud(ENG_OP_SEND, c->idx, c->gen)) <
        0) {
        ENG_STAT_INC(sh, sq_full);
        work_add(sh, c);
        return;
    }
    c->send_inflight = chunk;
    c->flags |= CONN_SEND_INFLIGHT;
}

static void send_complete(struct eng_shard *sh, struct eng_conn *c, const struct eng_cqe *cqe)
{
    ENG_ASSERT(c->flags & CONN_SEND_INFLIGHT);
    c->flags &= ~(uint32_t)CONN_SEND_INFLIGHT;
    uint32_t inflight = c->send_inflight;
    c->send_inflight = 0;
    if (cqe->res >= 0) {
        ENG_ASSERT((uint32_t)cqe->res <= inflight);
        if ((uint32_t)cqe->res < inflight)
            ENG_STAT_INC(sh, short_sends);
        ENG_STAT_ADD(sh, bytes_out, (uint64_t)cqe->res);
        c->send_head = (c->send_head + (uint32_t)cqe->res) % sh->eng->cfg.limits.send_bytes_max;
        c->send_queued -= (uint32_t)cqe->res;
        if (c->send_queued == 0)
            send_release(sh, c);
    } else {
        op_error(sh, c, -cqe->res, false);
    }
    work_add(sh, c);
}

void eng_conn_complete(struct eng_shard *sh, const struct eng_cqe *cqe)
{
    uint32_t idx = eng_ud_idx(cqe->user_data);
    ENG_ASSERT(idx < sh->conns.fresh_idx);
    struct eng_conn *c = eng_conn_at(sh, idx);
    ENG_ASSERT(c->flags & CONN_OPEN);
    ENG_ASSERT((c->gen & ENG_UD_GEN_MASK) == eng_ud_gen(cqe->user_data));
    if (eng_ud_op(cqe->user_data) == ENG_OP_RECV)
        recv_complete(sh, c, cqe);
    else
        send_complete(sh, c, cqe);
}

/* ---------------------------------------------------------------------------------------------
 * Application calls
 */

void eng_conn_close(struct eng_conn *c)
{
    struct eng_shard *sh = c->shard;
    eng_assert_on_shard(sh);
    ENG_ASSERT(c->flags & CONN_OPEN);
    if (c->flags & (CONN_CLOSING | CONN_ABORTING))
        return;
    c->flags |= CONN_CLOSING;
    c->close_reason = ENG_CLOSE_APP;
    if (c->send_queued > 0)
        eng_timer_arm(sh, &c->close_timer, sh->eng->cfg.drain_timeout_ms);
    work_add(sh, c);
}

void eng_conn_pause(struct eng_conn *c)
{
    eng_assert_on_shard(c->shard);
    ENG_ASSERT(c->flags & CONN_OPEN);
    c->flags |= CONN_PAUSED;
}

void eng_conn_resume(struct eng_conn *c)
{
    struct eng_shard *sh = c->shard;
    eng_assert_on_shard(sh);
    ENG_ASSERT(c->flags & CONN_OPEN);
    if (!(c->flags & CONN_PAUSED))
        return;
    c->flags &= ~(uint32_t)CONN_PAUSED;
    c->flags |= CONN_RESUME_WANT;
    work_add(sh, c);
}

uint64_t eng_conn_id(const struct eng_conn *c)
{
    return (uint64_t)c->gen << 32 | c->idx;
}

struct eng_conn *eng_conn_find(struct eng_shard *sh, uint64_t id)
{
    eng_assert_on_shard(sh);
    uint32_t idx = (uint32_t)id;
    if (idx >= sh->conns.fresh_idx)
        return NULL;
    struct eng_conn *c = eng_conn_at(sh, idx);
    if (!(c->flags & CONN_OPEN) || c->gen != (uint32_t)(id >> 32))
        return NULL;
    return c;
}

void *eng_conn_app(struct eng_conn *c)
{
    return (char *)c + ENG_CONN_HDR_BYTES;
}

uint32_t eng_conn_listener_tag(const struct eng_conn *c)
{
    return c->shard->listeners[c->listener].tag;
}

struct eng_shard *eng_conn_shard(const struct eng_conn *c)
{
    return c->shard;
}

const struct sockaddr *eng_conn_peer(const struct eng_conn *c, socklen_t *len)
{
    struct eng_conn *m = (struct eng_conn *)c; /* the cache is not part of the value */
    _Static_assert(sizeof(m->peer) >= sizeof(struct sockaddr_in6), "peer holds an IPv6 peer");
    if (!(m->flags & CONN_PEER_CACHED)) {
        socklen_t n = sizeof(m->peer);
        memset(m->peer, 0, sizeof(m->peer));
        if (!(m->flags & CONN_TCP) || getpeername(m->fd, (struct sockaddr *)m->peer, &n) < 0) {
            ((struct sockaddr *)m->peer)->sa_family = AF_UNIX;
            n = sizeof(sa_family_t);
        }
        m->peer_len = (uint8_t)n;
        m->flags |= CONN_PEER_CACHED;
    }
    *len = m->peer_len;
    return (const struct sockaddr *)m->peer;
}

/* ---------------------------------------------------------------------------------------------
 * The work list (end of turn)
 */

static void conn_free(struct eng_shard *sh, struct eng_conn *c)
{
    ENG_ASSERT(!(c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT)));
    sh->ring->ops->fd_closed(sh->ring, c->fd);
    close(c->fd);
    c->fd = -1;
    stage_release(sh, c);
    send_release(sh, c);
    eng_timer_cancel(sh, &c->close_timer);
    enum eng_close_reason reason = (enum eng_close_reason)c->close_reason;
    ENG_ASSERT(reason < ENG_CLOSE_REASON_COUNT);
    if (!(c->flags & CONN_REFUSED)) {
        if (sh->eng->cfg.ops->on_close)
            sh->eng->cfg.ops->on_close(sh->app, c, reason);
        ENG_STAT_INC(sh, closed[reason]);
    }
    ENG_STAT_ADD(sh, conns_open, (uint64_t)-1);
    c->gen++;
    c->flags = 0;
    eng_pool_put(&sh->conns, c->idx);
}

/* Done as far as a graceful stop is concerned: no request in progress (the application pauses
 * a connection while it works on one) and nothing left to send. Staged input (a pipelined or
 * partial request) is not begun once draining: with a peer that sends its next request as soon
 * as it reads a reply, as Postfix does, waiting for it would keep a loaded connection busy until
 * drain_timeout_ms and then cut it off with a request accepted but unanswered. */
static bool conn_idle(const struct eng_conn *c)
{
    return !(c->flags & CONN_PAUSED) && c->send_queued == 0;
}

static void conn_teardown(struct eng_shard *sh, struct eng_conn *c)
{
    if (c->flags & (CONN_RECV_ARMED | CONN_SEND_INFLIGHT)) {
        if (!(c->flags & CONN_CANCEL_WANT))
            return; /* waiting for the cancelled operations to complete */
        if (sh->ring->ops->prep_cancel_fd(sh->ring, c->fd, eng_ud(ENG_OP_CANCEL, c->idx, 0)) < 0) {
            ENG_STAT_INC(sh, sq_full);
            work_add(sh, c);
            return;
        }
        c->flags &= ~(uint32_t)CONN_CANCEL_WANT;
        return;
    }
    conn_free(sh, c);
}

/* Reading stops while a paused connection holds ENG_PAUSED_STAGE_BYTES or more, and while it is
 * throttled (the shard's staging budget is running low). */
static bool recv_held_back(const struct eng_conn *c)
{
    return (c->flags & CONN_THROTTLED) ||
           ((c->flags & CONN_PAUSED) && c->stage_len >= ENG_PAUSED_STAGE_BYTES);
}

static void conn_work(struct eng_shard *sh, struct eng_conn *c)
{
    if (c->flags & CONN_ABORTING) {
        conn_teardown(sh, c);
        return;
    }
    if (c->flags & CONN_RESUME_WANT && !(c->flags & CONN_PAUSED)) {
        c->flags &= ~(uint32_t)CONN_RESUME_WANT;
        if (c->stage_len > 0 && !sh->draining)
            present_staged(sh, c);
    }
    if (!(c->flags & CONN_ABORTING) && c->send_queued == 0) {
        if (c->flags & CONN_CLOSING)
            conn_abort(sh, c, ENG_CLOSE_APP);
        else if (c->flags & CONN_EOF && !(c->flags & CONN_PAUSED))
            conn_abort(sh, c, ENG_CLOSE_PEER);
        else if (sh->draining && conn_idle(c))
            conn_abort(sh, c, ENG_CLOSE_SHUTDOWN);
    }
    if (c->flags & CONN_ABORTING) {
        work_add(sh, c);
        return;
    }
    if (c->send_queued > 0 && !(c->flags & CONN_SEND_INFLIGHT))
        send_start(sh, c);
    if (recv_held_back(c)) {
        if ((c->flags & (CONN_RECV_ARMED | CONN_RECV_CANCEL)) == CONN_RECV_ARMED) {
            if (sh->ring->ops->prep_cancel_ud(sh->ring, c->fd, eng_ud(ENG_OP_RECV, c->idx, c->gen),
                                              eng_ud(ENG_OP_CANCEL, c->idx, 0)) < 0) {
                ENG_STAT_INC(sh, sq_full);
                work_add(sh, c);
                return;
            }
            c->flags |= CONN_RECV_CANCEL;
            ENG_STAT_INC(sh, recv_stops);
        }
        return;
    }
    if ((c->flags & (CONN_RECV_WANT | CONN_RECV_ARMED | CONN_EOF)) == CONN_RECV_WANT) {
        if (sh->ring->ops->prep_recv(sh->ring, c->fd, eng_ud(ENG_OP_RECV, c->idx, c->gen)) < 0) {
            ENG_STAT_INC(sh, sq_full);
            work_add(sh, c);
            return;
        }
        c->flags &= ~(uint32_t)CONN_RECV_WANT;
        c->flags |= CONN_RECV_ARMED;
    }
}

/* Throttled connections are read again when the shard's staged bytes are back under 3/8 of
 * the budget. When every large holder is throttled and that does not happen (they alone hold
 * that much), the one holding the most is read again and exempt until its buffer is small
 * again, so that some request always makes progress. Rare, so a scan is fine. */
static void throttle_lift(struct eng_shard *sh)
{
    bool all = sh->stage_held <= sh->stage_budget / 8 * 3;
    if (!all && (sh->stage_throttled_now < sh->stage_large_now || sh->stage_favoured))
        return;
    struct eng_conn *most = NULL;
    for (uint32_t i = 0; i < sh->conns.fresh_idx && sh->stage_throttled_now > 0; i++) {
        struct eng_conn *c = eng_conn_at(sh, i);
        if (!(c->flags & CONN_THROTTLED) || (c->flags & CONN_ABORTING))
            continue;
        if (all)
            throttle_clear(sh, c);
        else if (!most || c->stage_len > most->stage_len)
            most = c;
    }
    if (most) {
        sh->stage_favoured = most->idx + 1;
        throttle_clear(sh, most);
    }
}

void eng_conn_work_run(struct eng_shard *sh)
{
    if (sh->stage_throttled_now > 0)
        throttle_lift(sh);
    for (int pass = 0; pass < ENG_WORK_PASSES && sh->work_head; pass++) {
        uint32_t next = sh->work_head;
        sh->work_head = sh->work_tail = 0;
        while (next) {
            struct eng_conn *c = eng_conn_at(sh, next - 1);
            next = c->work_next;
            c->work_next = 0;
            c->flags &= ~(uint32_t)CONN_IN_WORK;
            conn_work(sh, c);
        }
    }
}

void eng_conn_drain_start(struct eng_shard *sh)
{
    for (uint32_t i = 0; i < sh->conns.fresh_idx; i++) {
        struct eng_conn *c = eng_conn_at(sh, i);
        if ((c->flags & (CONN_OPEN | CONN_ABORTING)) == CONN_OPEN)
            work_add(sh, c);
    }
}

void eng_conn_drain_force(struct eng_shard *sh)
{
    for (uint32_t i = 0; i < sh->conns.fresh_idx; i++) {
        struct eng_conn *c = eng_conn_at(sh, i);
        if ((c->flags & (CONN_OPEN | CONN_ABORTING)) == CONN_OPEN)
            conn_abort(sh, c, ENG_CLOSE_SHUTDOWN);
    }
}

/* Test hooks */
int eng_test_conn_fd(const struct eng_conn *c)
{
    return c->fd;
}
