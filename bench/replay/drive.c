/*
 * drive.c: the replay worker's io_uring loop (see drive.h, run.h).
 *
 * Each turn: start the requests that are due (closed loop: a stream's next request starts as
 * soon as its previous one completed; open loop: idle streams wait in a min-heap keyed by their
 * next scheduled time), look for timed-out replies every TIMEOUT_SCAN_NS, then submit and wait
 * once (with a timeout up to the next scheduled send) and handle the completions in one batch.
 * Every open connection keeps one RECV armed, so a server closing an idle connection is seen at
 * once; a request is one SEND per server (the bytes are rendered once per request, into the
 * stream's buffer, and shared by both servers' sends in differential mode).
 *
 * user_data carries the op, the connection's pool index and its generation. A connection that
 * is closed (error, EOF, timeout) is shut down, so its pending ops complete, and returns to the
 * pool only when none is left in the kernel; a new one is connected when the stream needs it
 * again. That reconnect is a blocking connect (bounded by timeout_ms) inside the loop: it only
 * happens after an error, and is counted. Limits: RPL_REPLY_BYTES_MAX per reply,
 * RPL_REQUEST_BYTES_MAX per request, conn pool = 2 x the connections opened at start + 16.
 */
#include "drive.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_assert.h"
#include "reply.h"

#define NONE UINT32_MAX
#define OP_RECV 1u
#define OP_SEND 2u
#define TIMEOUT_SCAN_NS 10000000ull /* look for late replies every 10 ms */
#define SPIN_NS 20000ull            /* a send due sooner than this is not waited for */
#define LATE_NS 1000000ull          /* open loop: a send later than this is counted late */

_Static_assert(RPL_REPLY_BYTES_MAX <= BENCH_REPLY_BYTES_DEFAULT, "reply limit within parser's");

enum conn_state { CONN_FREE, CONN_OPEN, CONN_DRAINING };
enum part_state { PART_NONE, PART_PENDING, PART_OK, PART_FAILED };

struct drv_conn {
    int fd;
    uint32_t gen;
    uint8_t state;
    uint8_t server;
    uint8_t slot;
    uint8_t inflight; /* ops in the kernel: at most one RECV and one SEND */
    bool recv_armed;
    bool busy;        /* a request is waiting for its reply here */
    uint32_t stream_idx;
    uint32_t next_free;
    uint32_t send_off, send_len;
    uint32_t rlen;      /* bytes in rbuf */
    uint32_t reply_len; /* length of the complete reply at the start of rbuf */
    uint64_t deadline_ns;
    struct bench_reply_parser parser;
    char rbuf[RPL_REPLY_BYTES_MAX];
};

struct drv_stream {
    const uint64_t *items;
    uint64_t count, next;
    uint32_t conn[RPL_SERVERS_MAX][RPL_STAGE_COUNT]; /* per slot; NONE when not connected */
    uint32_t pending;                                /* parts outstanding */
    uint8_t part[RPL_SERVERS_MAX];
    uint64_t part_done_ns[RPL_SERVERS_MAX];
    uint32_t part_conn[RPL_SERVERS_MAX];
    uint64_t cur_g, sched_ns, sent_ns;
    uint32_t heap_pos;
    bool waited;    /* the next request waited on the heap: the stream was idle at its time */
    uint32_t req_len;
    uint8_t stage;
    char req[RPL_REQUEST_BYTES_MAX];
};

uint64_t drv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t drv_recorded_us(const struct drv_shared *sh, uint64_t g)
{
    return sh->pace_us[g % sh->req_count] + (int64_t)(g / sh->req_count) * sh->copy_pace_us;
}

static uint64_t sched_ns_of(const struct drv_shared *sh, uint64_t start_ns, uint64_t g)
{
    double rel_us = (double)drv_recorded_us(sh, g) / sh->o->speed;
    return start_ns + (uint64_t)(rel_us * 1000.0);
}

/* ---------------------------------------------------------------------------------------------
 * Connection pool
 */

static uint32_t conn_get(struct drv_worker *w)
{
    uint32_t ci = w->conn_free_head;
    if (ci == NONE)
        return NONE;
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(c->state == CONN_FREE);
    BENCH_ASSERT(c->inflight == 0);
    w->conn_free_head = c->next_free;
    return ci;
}

static void conn_put(struct drv_worker *w, uint32_t ci)
{
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(c->inflight == 0);
    BENCH_ASSERT(c->fd < 0);
    c->state = CONN_FREE;
    c->next_free = w->conn_free_head;
    w->conn_free_head = ci;
}

/* Connects stream s's slot of server srv. Returns the pool index, or NONE (counted in
 * err_connect when a request needed it; the connections opened ahead at start are not). */
static uint32_t conn_open(struct drv_worker *w, uint32_t s, unsigned srv, unsigned slot,
                          bool for_request)
{
    struct rpl_server_stats *st = &w->stats.server[srv];
    uint32_t ci = conn_get(w);
    if (ci == NONE) {
        st->err_connect += for_request;
        return NONE;
    }
    const struct rpl_run_opts *o = w->sh->o;
    unsigned stage = 0;
    while (w->sh->slot_of[srv][stage] != slot)
        stage++;
    char err[256];
    int fd = bench_addr_connect(&o->servers[srv][stage], (int)o->timeout_ms, true, err,
                                sizeof(err));
    if (fd < 0) {
        st->err_connect += for_request;
        conn_put(w, ci);
        return NONE;
    }
    struct drv_conn *c = &w->conns[ci];
    c->fd = fd;
    c->gen++;
    c->state = CONN_OPEN;
    c->server = (uint8_t)srv;
    c->slot = (uint8_t)slot;
    c->busy = false;
    c->recv_armed = false;
    c->stream_idx = s;
    c->rlen = c->reply_len = 0;
    bench_reply_parser_init(&c->parser, RPL_REPLY_BYTES_MAX);
    w->streams[s].conn[srv][slot] = ci;
    st->connects++;
    return ci;
}

static struct io_uring_sqe *sqe_get(struct drv_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(w->ring);
    if (sqe == NULL) {
        /* SQ full: flush it and try once more (the ring is sized for every connection's two
         * ops, so this only happens in bursts). */
        io_uring_submit(w->ring);
        sqe = io_uring_get_sqe(w->ring);
    }
    BENCH_ASSERT(sqe != NULL);
    return sqe;
}

static uint64_t udata(uint32_t op, uint32_t ci, uint32_t gen)
{
    return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffffu) << 32 | ci;
}

static void arm_recv(struct drv_worker *w, uint32_t ci)
{
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(c->state == CONN_OPEN);
    BENCH_ASSERT(!c->recv_armed);
    BENCH_ASSERT(c->rlen < sizeof(c->rbuf));
    struct io_uring_sqe *sqe = sqe_get(w);
    io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
    io_uring_sqe_set_data64(sqe, udata(OP_RECV, ci, c->gen));
    c->inflight++;
    c->recv_armed = true;
}

static void arm_send(struct drv_worker *w, uint32_t ci)
{
    struct drv_conn *c = &w->conns[ci];
    const struct drv_stream *st = &w->streams[c->stream_idx];
    BENCH_ASSERT(c->send_off < c->send_len);
    struct io_uring_sqe *sqe = sqe_get(w);
    io_uring_prep_send(sqe, c->fd, st->req + c->send_off, c->send_len - c->send_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, udata(OP_SEND, ci, c->gen));
    c->inflight++;
}

/* Shuts the connection down (its pending ops complete) and detaches it from its stream. */
static void conn_close(struct drv_worker *w, uint32_t ci)
{
    struct drv_conn *c = &w->conns[ci];
    if (c->state != CONN_OPEN)
        return;
    struct drv_stream *st = &w->streams[c->stream_idx];
    if (st->conn[c->server][c->slot] == ci)
        st->conn[c->server][c->slot] = NONE;
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    c->fd = -1;
    c->busy = false;
    c->gen++;
    c->state = CONN_DRAINING;
    if (c->inflight == 0)
        conn_put(w, ci);
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static void heap_swap(struct drv_worker *w, uint32_t a, uint32_t b)
{
    uint32_t t = w->heap[a];
    w->heap[a] = w->heap[b];
    w->heap[b] = t;
    w->streams[w->heap[a]].heap_pos = a;
    w->streams[w->heap[b]].heap_pos = b;
}

static void heap_push(struct drv_worker *w, uint32_t s)
{
    uint32_t i = w->heap_len++;
    w->heap[i] = s;
    w->streams[s].heap_pos = i;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (w->streams[w->heap[p]].sched_ns <= w->streams[w->heap[i]].sched_ns)
            break;
        heap_swap(w, i, p);
        i = p;
    }
}

static uint32_t heap_pop(struct drv_worker *w)
{
    BENCH_ASSERT(w->heap_len > 0);
    uint32_t top = w->heap[0];
    w->heap_len--;
    if (w->heap_len > 0) {
        heap_swap(w, 0, w->heap_len);
        uint32_t i = 0;
        for (;;) {
            uint32_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < w->heap_len &&
                w->streams[w->heap[l]].sched_ns < w->streams[w->heap[m]].sched_ns)
                m = l;
            if (r < w->heap_len &&
                w->streams[w->heap[r]].sched_ns < w->streams[w->heap[m]].sched_ns)
                m = r;
            if (m == i)
                break;
            heap_swap(w, i, m);
            i = m;
        }
    }
    return top;
}

static void part_fail(struct drv_worker *w, uint32_t s, unsigned srv, uint64_t *counter,
                      uint64_t now);

/* Sends the stream's current request to server srv. */
static void part_start(struct drv_worker *w, uint32_t s, unsigned srv, uint64_t now)
{
    struct drv_stream *st = &w->streams[s];
    unsigned slot = w->sh->slot_of[srv][st->stage];
    uint32_t ci = st->conn[srv][slot];
    st->part[srv] = PART_PENDING;
    st->pending++;
    if (ci == NONE && (ci = conn_open(w, s, srv, slot, true)) != NONE)
        arm_recv(w, ci);
    if (ci == NONE) {
        part_fail(w, s, srv, NULL, now); /* conn_open counted err_connect */
        return;
    }
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(!c->busy);
    c->busy = true;
    c->send_off = 0;
    c->send_len = st->req_len;
    c->deadline_ns = now + (uint64_t)w->sh->o->timeout_ms * 1000000ull;
    st->part_conn[srv] = ci;
    arm_send(w, ci);
}

static void request_finish(struct drv_worker *w, uint32_t s, uint64_t now);

/* Renders and sends stream s's next request. */
static void request_start(struct drv_worker *w, uint32_t s, uint64_t now)
{
    struct drv_stream *st = &w->streams[s];
    const struct drv_shared *sh = w->sh;
    const struct rpl_run_opts *o = sh->o;
    BENCH_ASSERT(st->next < st->count);
    BENCH_ASSERT(st->pending == 0);
    uint64_t g = st->items[st->next];
    const struct rpl_req *r = &o->corpus->reqs[g % sh->req_count];
    st->cur_g = g;
    st->sent_ns = now;
    st->stage = r->stage;
    if (!o->open_loop)
        st->sched_ns = now;
    else if (now > st->sched_ns + LATE_NS)
        w->stats.late_sends++;
    if (st->waited)
        bench_hist_add(&w->stats.timer_lag, now > st->sched_ns ? (now - st->sched_ns) / 1000u : 0);
    st->waited = false;
    size_t n = rpl_render(o->corpus, r, (uint32_t)(g / sh->req_count), &o->render, st->req,
                          sizeof(st->req));
    w->active++;
    if (n == 0) {
        w->stats.skipped_too_big++;
        request_finish(w, s, now);
        return;
    }
    st->req_len = (uint32_t)n;
    for (unsigned srv = 0; srv < o->server_count; srv++)
        part_start(w, s, srv, now);
}

static void ready_push(struct drv_worker *w, uint32_t s)
{
    BENCH_ASSERT(w->ready_len < w->stream_count);
    w->ready[(w->ready_head + w->ready_len++) % w->stream_count] = s;
}

static uint32_t ready_pop(struct drv_worker *w)
{
    BENCH_ASSERT(w->ready_len > 0);
    uint32_t s = w->ready[w->ready_head];
    w->ready_head = (w->ready_head + 1) % w->stream_count;
    w->ready_len--;
    return s;
}

/* Queues stream s's next request: on the ready list (closed loop, or open loop when it is due),
 * which the loop drains at the start of each turn, or on the heap until its time. Never starts
 * it here: a request that fails at once (no connection) would otherwise recurse. */
static void stream_schedule(struct drv_worker *w, uint32_t s, uint64_t now)
{
    struct drv_stream *st = &w->streams[s];
    if (st->next >= st->count)
        return;
    if (!w->sh->o->open_loop) {
        ready_push(w, s);
        return;
    }
    st->sched_ns = sched_ns_of(w->sh, atomic_load(&w->sh->start_ns), st->items[st->next]);
    st->waited = st->sched_ns > now;
    if (st->waited)
        heap_push(w, s);
    else
        ready_push(w, s);
}

/* ---------------------------------------------------------------------------------------------
 * Completing a request: latency, actions, the differential comparison
 */

static size_t first_word(const char *p, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    while (n < len && n + 1 < cap && p[n] != ' ' && p[n] != '\t') {
        char ch = p[n];
        out[n++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    out[n] = '\0';
    return n;
}

static void part_word(const struct drv_worker *w, const struct drv_stream *st, unsigned srv,
                      char *out, size_t cap)
{
    if (st->part[srv] != PART_OK) {
        snprintf(out, cap, "(no reply)");
        return;
    }
    const struct drv_conn *c = &w->conns[st->part_conn[srv]];
    const struct bench_reply *rp = &c->parser.reply;
    if (rp->action_count == 0)
        snprintf(out, cap, "(no action)");
    else
        first_word(c->rbuf + rp->action_off[0], rp->action_len[0], out, cap);
}

static bool replies_equal(const struct drv_worker *w, const struct drv_stream *st)
{
    if (st->part[0] != PART_OK || st->part[1] != PART_OK)
        return st->part[0] == st->part[1];
    const struct drv_conn *a = &w->conns[st->part_conn[0]], *b = &w->conns[st->part_conn[1]];
    const struct bench_reply *ra = &a->parser.reply, *rb = &b->parser.reply;
    if (ra->action_count != rb->action_count)
        return false;
    uint32_t kept = ra->action_count < BENCH_REPLY_ACTIONS_MAX ? ra->action_count
                                                               : BENCH_REPLY_ACTIONS_MAX;
    for (uint32_t i = 0; i < kept; i++)
        if (ra->action_len[i] != rb->action_len[i] ||
            memcmp(a->rbuf + ra->action_off[i], b->rbuf + rb->action_off[i], ra->action_len[i]))
            return false;
    return true;
}

static void diff_count_kind(struct rpl_run_stats *rs, const char *name)
{
    for (uint32_t i = 0; i < rs->diff_kind_count; i++) {
        if (strcmp(rs->diff_kinds[i].name, name) == 0) {
            rs->diff_kinds[i].count++;
            return;
        }
    }
    if (rs->diff_kind_count == RPL_DIFF_KINDS_MAX) {
        rs->diff_other++;
        return;
    }
    struct rpl_diff_kind *k = &rs->diff_kinds[rs->diff_kind_count++];
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->count = 1;
}

/* Keeps the diff_show_max differences earliest in the schedule (the thread sees them in
 * completion order): a new one replaces the latest kept when it comes earlier. */
static void diff_keep_sample(struct drv_worker *w, const struct drv_stream *st)
{
    struct rpl_run_stats *rs = &w->stats;
    uint32_t max = w->sh->o->diff_show_max;
    if (max == 0)
        return;
    struct rpl_diff_sample *d;
    if (rs->sample_count < max) {
        d = &rs->samples[rs->sample_count++];
    } else {
        d = &rs->samples[0];
        for (uint32_t i = 1; i < rs->sample_count; i++)
            if (rs->samples[i].seq > d->seq)
                d = &rs->samples[i];
        if (d->seq < st->cur_g)
            return;
    }
    d->seq = st->cur_g;
    int n = snprintf(d->text, sizeof(d->text), "%.*s", (int)st->req_len, st->req);
    for (unsigned srv = 0; srv < 2 && n >= 0 && (size_t)n < sizeof(d->text); srv++) {
        const struct drv_conn *c = &w->conns[st->part_conn[srv]];
        const char *who = srv == 0 ? "server" : "against";
        if (st->part[srv] == PART_OK)
            n += snprintf(d->text + n, sizeof(d->text) - (size_t)n, "-- %s replied:\n%.*s", who,
                          (int)c->reply_len, c->rbuf);
        else
            n += snprintf(d->text + n, sizeof(d->text) - (size_t)n, "-- %s: no reply\n\n", who);
    }
    d->text_len = n < 0 ? 0 : (uint32_t)((size_t)n < sizeof(d->text) ? (size_t)n
                                                                     : sizeof(d->text) - 1);
}

static void diff_compare(struct drv_worker *w, const struct drv_stream *st)
{
    struct rpl_run_stats *rs = &w->stats;
    if (st->part[0] == PART_OK && st->part[1] == PART_OK)
        rs->diff_compared++;
    if (replies_equal(w, st))
        return;
    char a[32], b[32], kind[80];
    part_word(w, st, 0, a, sizeof(a));
    part_word(w, st, 1, b, sizeof(b));
    snprintf(kind, sizeof(kind), "%s -> %s", a, b);
    rs->diff_count++;
    diff_count_kind(rs, kind);
    diff_keep_sample(w, st);
}

/* Drops the reply just used, ready for the next one. Bytes after it were never asked for: the
 * connection is out of step and is replaced. */
static void conn_reply_consumed(struct drv_worker *w, uint32_t ci)
{
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(c->reply_len > 0);
    BENCH_ASSERT(c->reply_len <= c->rlen);
    bool extra = c->rlen > c->reply_len;
    c->rlen = c->reply_len = 0;
    bench_reply_parser_reset(&c->parser);
    if (extra) {
        w->stats.server[c->server].err_malformed++;
        conn_close(w, ci);
    } else {
        arm_recv(w, ci); /* no RECV was armed while the reply was held */
    }
}

static void request_finish(struct drv_worker *w, uint32_t s, uint64_t now)
{
    struct drv_stream *st = &w->streams[s];
    const struct rpl_run_opts *o = w->sh->o;
    BENCH_ASSERT(st->pending == 0);
    for (unsigned srv = 0; srv < o->server_count; srv++) {
        if (st->part[srv] != PART_OK)
            continue;
        struct rpl_server_stats *ls = &w->stats.server[srv];
        const struct drv_conn *c = &w->conns[st->part_conn[srv]];
        uint64_t base = o->open_loop ? st->sched_ns : st->sent_ns;
        uint64_t done = st->part_done_ns[srv];
        bench_hist_add(&ls->latency, done > base ? (done - base) / 1000u : 0);
        ls->requests++;
        const struct bench_reply *rp = &c->parser.reply;
        bench_actions_count(&ls->actions, c->rbuf + rp->action_off[0], rp->action_len[0]);
    }
    if (o->server_count == 2)
        diff_compare(w, st);
    for (unsigned srv = 0; srv < o->server_count; srv++) {
        if (st->part[srv] == PART_OK && w->conns[st->part_conn[srv]].state == CONN_OPEN)
            conn_reply_consumed(w, st->part_conn[srv]);
        st->part[srv] = PART_NONE;
    }
    st->next++;
    w->stats.requests++;
    w->active--;
    w->last_done_ns = now;
    stream_schedule(w, s, now);
}

/* counter: the error kind to count, or NULL when it was counted already. */
static void part_fail(struct drv_worker *w, uint32_t s, unsigned srv, uint64_t *counter,
                      uint64_t now)
{
    struct drv_stream *st = &w->streams[s];
    BENCH_ASSERT(st->part[srv] == PART_PENDING);
    BENCH_ASSERT(st->pending > 0);
    if (counter != NULL)
        (*counter)++;
    st->part[srv] = PART_FAILED;
    st->part_done_ns[srv] = now;
    if (--st->pending == 0)
        request_finish(w, s, now);
}

static void part_ok(struct drv_worker *w, uint32_t ci, uint64_t now)
{
    struct drv_conn *c = &w->conns[ci];
    struct drv_stream *st = &w->streams[c->stream_idx];
    BENCH_ASSERT(st->part[c->server] == PART_PENDING);
    BENCH_ASSERT(st->part_conn[c->server] == ci);
    c->busy = false;
    st->part[c->server] = PART_OK;
    st->part_done_ns[c->server] = now;
    if (--st->pending == 0)
        request_finish(w, c->stream_idx, now);
}

/* Closes a connection after an error; fails the request waiting on it, if any. */
static void conn_fail(struct drv_worker *w, uint32_t ci, uint64_t *counter, uint64_t now)
{
    struct drv_conn *c = &w->conns[ci];
    bool busy = c->busy;
    uint32_t s = c->stream_idx;
    unsigned srv = c->server;
    conn_close(w, ci);
    if (busy)
        part_fail(w, s, srv, counter, now);
}

/* ---------------------------------------------------------------------------------------------
 * Completions
 */

static void on_recv(struct drv_worker *w, uint32_t ci, int res, uint64_t now)
{
    struct drv_conn *c = &w->conns[ci];
    struct rpl_server_stats *ls = &w->stats.server[c->server];
    if (res == -EINTR || res == -EAGAIN) {
        arm_recv(w, ci);
        return;
    }
    if (res <= 0) {
        /* EOF or a socket error. Idle, it is the server closing a kept-alive connection: the
         * next request reconnects. Busy, the request failed. */
        conn_fail(w, ci, &ls->err_closed, now);
        return;
    }
    c->rlen += (uint32_t)res;
    if (!c->busy) { /* bytes nobody asked for: the connection is out of step */
        ls->err_malformed++;
        conn_close(w, ci);
        return;
    }
    size_t consumed = 0;
    enum bench_reply_status rs = bench_reply_parse(&c->parser, c->rbuf, c->rlen, &consumed);
    if (rs == BENCH_REPLY_NEED_MORE && c->rlen < sizeof(c->rbuf)) {
        arm_recv(w, ci);
        return;
    }
    if (rs != BENCH_REPLY_DONE || c->parser.reply.action_count == 0) {
        conn_fail(w, ci, &ls->err_malformed, now);
        return;
    }
    /* The reply stays at the start of rbuf until the request completes (in differential mode,
     * until the other server answered too); conn_reply_consumed arms the next RECV. */
    c->reply_len = (uint32_t)consumed;
    part_ok(w, ci, now);
}

static void on_send(struct drv_worker *w, uint32_t ci, int res, uint64_t now)
{
    struct drv_conn *c = &w->conns[ci];
    if (res == -EINTR || res == -EAGAIN) {
        arm_send(w, ci);
        return;
    }
    if (res < 0) {
        if (c->busy)
            conn_fail(w, ci, &w->stats.server[c->server].err_closed, now);
        else if (c->reply_len == 0)
            conn_close(w, ci);
        /* else the reply arrived, so the request got through; the next send will tell */
        return;
    }
    c->send_off += (uint32_t)res;
    if (c->send_off < c->send_len && c->busy)
        arm_send(w, ci); /* short send: the rest */
}

static void on_cqe(struct drv_worker *w, const struct io_uring_cqe *cqe, uint64_t now)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    uint32_t op = (uint32_t)(ud >> 56), ci = (uint32_t)ud;
    uint32_t gen = (uint32_t)(ud >> 32) & 0xffffffu;
    BENCH_ASSERT(op == OP_RECV || op == OP_SEND);
    BENCH_ASSERT(ci < w->conn_cap);
    struct drv_conn *c = &w->conns[ci];
    BENCH_ASSERT(c->inflight > 0);
    c->inflight--;
    if (op == OP_RECV)
        c->recv_armed = false;
    if (c->state == CONN_DRAINING) {
        if (c->inflight == 0)
            conn_put(w, ci);
        return;
    }
    BENCH_ASSERT(c->state == CONN_OPEN);
    BENCH_ASSERT(gen == (c->gen & 0xffffffu));
    if (op == OP_RECV)
        on_recv(w, ci, cqe->res, now);
    else
        on_send(w, ci, cqe->res, now);
}

static void scan_timeouts(struct drv_worker *w, uint64_t now)
{
    for (uint32_t ci = 0; ci < w->conn_cap; ci++) {
        struct drv_conn *c = &w->conns[ci];
        if (c->state == CONN_OPEN && c->busy && now > c->deadline_ns)
            conn_fail(w, ci, &w->stats.server[c->server].err_timeout, now);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 */

int drv_init(struct drv_worker *w, unsigned idx, struct drv_shared *sh, const uint64_t *items,
             const uint64_t *first, uint32_t stream_total, char *err, size_t err_len)
{
    const struct rpl_run_opts *o = sh->o;
    memset(w, 0, sizeof(*w));
    w->idx = idx;
    w->sh = sh;
    w->conn_free_head = NONE;
    for (unsigned srv = 0; srv < RPL_SERVERS_MAX; srv++)
        rpl_server_stats_init(&w->stats.server[srv]);
    bench_hist_init(&w->stats.timer_lag);
    w->stream_count = stream_total / o->threads + (idx < stream_total % o->threads);
    uint32_t per_stream = 0;
    for (unsigned srv = 0; srv < o->server_count; srv++)
        per_stream += sh->slot_count[srv];
    /* Every stream's connections at start, as many again for replacements whose old
     * connection is still draining, and a few spare. */
    w->conn_cap = 2u * w->stream_count * per_stream + 16u;
    w->streams = calloc(w->stream_count ? w->stream_count : 1, sizeof(*w->streams));
    w->conns = calloc(w->conn_cap, sizeof(*w->conns));
    w->heap = calloc(w->stream_count ? w->stream_count : 1, sizeof(*w->heap));
    w->ready = calloc(w->stream_count ? w->stream_count : 1, sizeof(*w->ready));
    w->stats.samples = calloc(o->diff_show_max ? o->diff_show_max : 1, sizeof(*w->stats.samples));
    w->ring = calloc(1, sizeof(*w->ring));
    if (!w->streams || !w->conns || !w->heap || !w->ready || !w->stats.samples || !w->ring) {
        snprintf(err, err_len, "out of memory for %u streams", w->stream_count);
        return -ENOMEM;
    }
    for (uint32_t ci = w->conn_cap; ci-- > 0;) {
        w->conns[ci].fd = -1;
        w->conns[ci].state = CONN_FREE;
        w->conns[ci].next_free = w->conn_free_head;
        w->conn_free_head = ci;
    }
    for (uint32_t i = 0; i < w->stream_count; i++) {
        uint32_t s = idx + i * o->threads;
        struct drv_stream *st = &w->streams[i];
        st->items = items + first[s];
        st->count = first[s + 1] - first[s];
        for (unsigned srv = 0; srv < RPL_SERVERS_MAX; srv++)
            for (unsigned k = 0; k < RPL_STAGE_COUNT; k++)
                st->conn[srv][k] = NONE;
        for (unsigned srv = 0; srv < o->server_count; srv++)
            for (unsigned slot = 0; slot < sh->slot_count[srv] && st->count > 0; slot++)
                w->open_conns += conn_open(w, i, srv, slot, false) != NONE;
    }
    return 0;
}

/* Sets up the ring in the worker thread: SINGLE_ISSUER and DEFER_TASKRUN need the submitting
 * thread to be the creator. Falls back to plain flags on kernels without them. */
static int ring_setup(struct drv_worker *w)
{
    unsigned entries = 64;
    while (entries < 2u * w->conn_cap && entries < 32768u)
        entries *= 2;
    struct io_uring_params p;
    unsigned flag_sets[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                            IORING_SETUP_COOP_TASKRUN, 0};
    int rc = -EINVAL;
    for (unsigned i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        memset(&p, 0, sizeof(p));
        /* Room in the CQ for both ops of every connection even if all complete at once. */
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 2u;
        rc = io_uring_queue_init_params(entries, w->ring, &p);
        if (rc == 0)
            return 0;
    }
    return rc;
}

static void loop_turn(struct drv_worker *w, uint64_t *now, bool stopping)
{
    while (!stopping && w->heap_len > 0 && w->streams[w->heap[0]].sched_ns <= *now)
        ready_push(w, heap_pop(w));
    /* Only the streams queued so far: the ones a failing request re-queues wait a turn. */
    for (uint32_t n = w->ready_len; n > 0; n--) {
        uint32_t s = ready_pop(w);
        if (!stopping)
            request_start(w, s, *now);
    }
    struct __kernel_timespec ts = {0, (long long)TIMEOUT_SCAN_NS};
    unsigned wait_nr = 1;
    if (!stopping && w->heap_len > 0) {
        uint64_t due = w->streams[w->heap[0]].sched_ns;
        uint64_t d = due > *now ? due - *now : 0;
        if (d < SPIN_NS)
            wait_nr = 0;
        else if (d < TIMEOUT_SCAN_NS)
            ts.tv_nsec = (long long)d;
    }
    struct io_uring_cqe *cqe;
    if (wait_nr == 0)
        io_uring_submit(w->ring);
    else
        io_uring_submit_and_wait_timeout(w->ring, &cqe, wait_nr, &ts, NULL);
    *now = drv_now_ns();
    unsigned head, n = 0;
    io_uring_for_each_cqe(w->ring, head, cqe)
    {
        on_cqe(w, cqe, *now);
        n++;
    }
    io_uring_cq_advance(w->ring, n);
}

/* Closes every connection and reaps the completions that brings before the ring goes, so the
 * kernel never writes into a freed buffer. On the worker's own thread: with SINGLE_ISSUER and
 * DEFER_TASKRUN only the creator may wait on the ring. */
static void ring_teardown(struct drv_worker *w)
{
    for (uint32_t ci = 0; ci < w->conn_cap; ci++) {
        if (w->conns[ci].state == CONN_OPEN) {
            w->conns[ci].busy = false;
            conn_close(w, ci);
        }
    }
    uint64_t until = drv_now_ns() + 1000000000ull;
    bool left = true;
    while (left && drv_now_ns() < until) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {0, 10000000};
        io_uring_submit_and_wait_timeout(w->ring, &cqe, 1, &ts, NULL);
        unsigned head, n = 0;
        io_uring_for_each_cqe(w->ring, head, cqe)
        {
            on_cqe(w, cqe, 0);
            n++;
        }
        io_uring_cq_advance(w->ring, n);
        left = false;
        for (uint32_t ci = 0; ci < w->conn_cap; ci++)
            left |= w->conns[ci].inflight > 0;
    }
    io_uring_queue_exit(w->ring);
    free(w->ring);
    w->ring = NULL;
}

void *drv_run(void *arg)
{
    struct drv_worker *w = arg;
    struct drv_shared *sh = w->sh;
    /* The open loop sleeps until a request's time: the default 50 us timer slack would be added
     * to every such wake-up, so ask for 1 us (an unprivileged, per-thread setting). */
    (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    w->error = ring_setup(w);
    if (w->error != 0) {
        free(w->ring);
        w->ring = NULL;
        return NULL;
    }
    for (uint32_t ci = 0; ci < w->conn_cap; ci++)
        if (w->conns[ci].state == CONN_OPEN)
            arm_recv(w, ci);
    uint64_t start;
    while ((start = atomic_load(&sh->start_ns)) == 0 || drv_now_ns() < start) {
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    uint64_t now = drv_now_ns(), last_scan = now;
    for (uint32_t s = 0; s < w->stream_count; s++)
        stream_schedule(w, s, now);
    for (;;) {
        bool stopping = sh->deadline_ns != 0 && now >= sh->deadline_ns;
        if (stopping)
            w->heap_len = 0; /* scheduled but never sent: not counted */
        if (w->active == 0 && w->heap_len == 0 && (w->ready_len == 0 || stopping))
            break;
        loop_turn(w, &now, stopping);
        if (now - last_scan >= TIMEOUT_SCAN_NS) {
            scan_timeouts(w, now);
            last_scan = now;
        }
        atomic_store_explicit(&w->progress, w->stats.requests, memory_order_relaxed);
    }
    atomic_store(&w->progress, w->stats.requests);
    ring_teardown(w);
    return NULL;
}

void drv_fini(struct drv_worker *w)
{
    if (w->ring != NULL) { /* drv_run never ran (its thread did not start) */
        BENCH_ASSERT(w->ring->ring_fd <= 0);
        free(w->ring);
        w->ring = NULL;
    }
    for (uint32_t ci = 0; w->conns != NULL && ci < w->conn_cap; ci++)
        if (w->conns[ci].fd >= 0)
            close(w->conns[ci].fd); /* opened by drv_init, never run */
    free(w->streams);
    free(w->conns);
    free(w->heap);
    free(w->ready);
    /* stats.samples moves to the result (run.c) */
}
