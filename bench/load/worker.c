/*
 * worker.c: the load generator's per-thread epoll loop (see worker.h).
 *
 * Each connection is a small state machine: CLOSED -> CONNECTING -> SENDING -> WAITING ->
 * SENDING ... Level-triggered epoll; EPOLLOUT is armed only while connecting or while a request
 * did not fit in the socket buffer (never, in practice: requests are under 2 KiB). The epoll
 * data carries the connection's index and a generation bumped on every close, so an event
 * queued for a connection that was closed and reopened in the same batch is recognised and
 * dropped. Timestamps are taken fresh at each send and each reply (vDSO clock_gettime, ~20 ns),
 * not once per batch, so a long batch does not distort the latencies.
 */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_assert.h"
#include "reply.h"

#define EVENTS_PER_WAIT 512
#define WAIT_MS 10       /* epoll_wait timeout: bounds how late stop and timeouts are seen */
#define SCAN_EVERY_MS 20 /* timeouts and reconnects are checked this often */

enum conn_state { CONN_CLOSED, CONN_CONNECTING, CONN_SENDING, CONN_WAITING };

struct load_conn {
    int fd;
    enum conn_state state;
    uint32_t generation;
    bool want_out; /* EPOLLOUT is armed */
    uint32_t global_idx;
    unsigned server_idx;
    uint64_t t_send_ns; /* when the current request was sent */
    uint64_t retry_at_ns;
    const char *req; /* the request being sent: sbuf or the shared fixed request */
    size_t req_len, req_off;
    size_t rlen;
    struct bench_reply_parser parser;
    struct bench_reqgen gen;
    char sbuf[BENCH_REQGEN_REQUEST_BYTES_MAX];
    char rbuf[LOAD_REPLY_BYTES_MAX];
};

enum err_kind { ERR_CLOSED, ERR_MALFORMED, ERR_TIMEOUT, ERR_CONNECT };

uint64_t load_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool in_window(const struct load_shared *sh, uint64_t now)
{
    return now >= sh->measure_start_ns && now < sh->measure_end_ns;
}

static void count_error(struct load_worker *w, enum err_kind kind, uint64_t now)
{
    struct load_stats *s = &w->stats;
    if (!in_window(w->shared, now)) {
        s->err_warmup++;
        return;
    }
    switch (kind) {
    case ERR_CLOSED:
        s->err_closed++;
        break;
    case ERR_MALFORMED:
        s->err_malformed++;
        break;
    case ERR_TIMEOUT:
        s->err_timeout++;
        break;
    case ERR_CONNECT:
        s->err_connect++;
        break;
    }
}

int load_worker_init(struct load_worker *w, unsigned idx, struct load_shared *shared,
                     uint32_t first_conn_idx, unsigned conn_count)
{
    memset(w, 0, sizeof(*w));
    w->idx = idx;
    w->shared = shared;
    w->first_conn_idx = first_conn_idx;
    w->conn_count = conn_count;
    load_stats_init(&w->stats);
    w->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epoll_fd < 0)
        return -errno;
    w->conns = calloc(conn_count ? conn_count : 1, sizeof(*w->conns));
    if (!w->conns)
        return -ENOMEM;
    for (unsigned i = 0; i < conn_count; i++) {
        struct load_conn *c = &w->conns[i];
        c->fd = -1;
        c->global_idx = first_conn_idx + i;
        c->server_idx = c->global_idx % shared->server_count;
        bench_reply_parser_init(&c->parser, LOAD_REPLY_BYTES_MAX);
        bench_reqgen_init(&c->gen, &shared->gen_opts, shared->seed, c->global_idx);
    }
    return 0;
}

void load_worker_fini(struct load_worker *w)
{
    for (unsigned i = 0; w->conns && i < w->conn_count; i++)
        if (w->conns[i].fd >= 0)
            close(w->conns[i].fd);
    free(w->conns);
    w->conns = NULL;
    if (w->epoll_fd >= 0)
        close(w->epoll_fd);
    w->epoll_fd = -1;
}

static int conn_arm(struct load_worker *w, struct load_conn *c, int op, bool want_out)
{
    uint32_t local_idx = (uint32_t)(c - w->conns);
    struct epoll_event ev = {
        .events =
            want_out ? (c->state == CONN_CONNECTING ? EPOLLOUT : EPOLLIN | EPOLLOUT) : EPOLLIN,
        .data.u64 = (uint64_t)c->generation << 32 | local_idx,
    };
    c->want_out = want_out;
    return epoll_ctl(w->epoll_fd, op, c->fd, &ev) < 0 ? -errno : 0;
}

static void conn_close(struct load_worker *w, struct load_conn *c, uint64_t retry_at_ns)
{
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set: nobody else holds the fd */
    c->fd = -1;
    c->state = CONN_CLOSED;
    c->generation++;
    c->retry_at_ns = retry_at_ns;
    (void)w;
}

static void conn_open(struct load_worker *w, struct load_conn *c, uint64_t now)
{
    c->retry_at_ns = now; /* also the start of the connect deadline */
    BENCH_ASSERT(c->state == CONN_CLOSED);
    const struct bench_addr *a = &w->shared->servers[c->server_idx];
    int fd = bench_addr_connect_start(a, 0);
    if (fd < 0) {
        count_error(w, ERR_CONNECT, now);
        c->retry_at_ns = now + LOAD_RECONNECT_DELAY_MS * 1000000ull;
        return;
    }
    c->fd = fd;
    c->state = CONN_CONNECTING;
    if (conn_arm(w, c, EPOLL_CTL_ADD, true) < 0) {
        count_error(w, ERR_CONNECT, now);
        conn_close(w, c, now + LOAD_RECONNECT_DELAY_MS * 1000000ull);
    }
}

/* After an error on an established connection: a new one at once (a server that closes
 * connections on purpose, e.g. max_keepalive, should cost a reconnect, not a scan period). */
static void conn_reopen(struct load_worker *w, struct load_conn *c, uint64_t now)
{
    conn_close(w, c, now);
    if (!atomic_load_explicit(&w->shared->stop, memory_order_relaxed))
        conn_open(w, c, now);
}

/* Sends what is left of the current request. */
static void conn_flush(struct load_worker *w, struct load_conn *c)
{
    while (c->req_off < c->req_len) {
        ssize_t n =
            send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->req_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->state = CONN_SENDING;
            if (!c->want_out && conn_arm(w, c, EPOLL_CTL_MOD, true) < 0)
                break;
            return;
        }
        break; /* EPIPE, ECONNRESET, ...: the peer is gone */
    }
    if (c->req_off < c->req_len) {
        uint64_t now = load_now_ns();
        count_error(w, ERR_CLOSED, now);
        conn_reopen(w, c, now);
        return;
    }
    c->state = CONN_WAITING;
    if (c->want_out)
        (void)conn_arm(w, c, EPOLL_CTL_MOD, false);
}

static void conn_send_next(struct load_worker *w, struct load_conn *c)
{
    const struct load_shared *sh = w->shared;
    if (sh->fixed_request) {
        c->req = sh->fixed_request;
        c->req_len = sh->fixed_request_len;
    } else {
        c->req = c->sbuf;
        c->req_len = bench_reqgen_next(&c->gen, c->sbuf, sizeof(c->sbuf), NULL);
        BENCH_ASSERT(c->req_len > 0);
    }
    c->req_off = 0;
    c->rlen = 0;
    bench_reply_parser_reset(&c->parser);
    c->t_send_ns = load_now_ns();
    conn_flush(w, c);
}

static void conn_connected(struct load_worker *w, struct load_conn *c, uint64_t now)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr != 0) {
        count_error(w, ERR_CONNECT, now);
        conn_close(w, c, now + LOAD_RECONNECT_DELAY_MS * 1000000ull);
        return;
    }
    w->stats.connects++;
    c->state = CONN_SENDING;
    if (conn_arm(w, c, EPOLL_CTL_MOD, false) < 0) {
        count_error(w, ERR_CONNECT, now);
        conn_close(w, c, now + LOAD_RECONNECT_DELAY_MS * 1000000ull);
        return;
    }
    conn_send_next(w, c);
}

/* A complete reply of len bytes is in rbuf. */
static void conn_reply(struct load_worker *w, struct load_conn *c, size_t len, uint64_t now)
{
    const struct bench_reply *r = &c->parser.reply;
    if (len != c->rlen || r->action_count == 0) {
        /* Bytes after the reply (we never pipeline) or no action: not a valid answer. */
        count_error(w, ERR_MALFORMED, now);
        conn_reopen(w, c, now);
        return;
    }
    if (in_window(w->shared, now)) {
        w->stats.requests++;
        bench_hist_add(&w->stats.latency, (now - c->t_send_ns + 500) / 1000);
        for (uint32_t i = 0; i < r->action_count && i < BENCH_REPLY_ACTIONS_MAX; i++)
            bench_actions_count(&w->stats.actions, c->rbuf + r->action_off[i], r->action_len[i]);
    }
    conn_send_next(w, c);
}

static void conn_readable(struct load_worker *w, struct load_conn *c)
{
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, MSG_DONTWAIT);
    uint64_t now = load_now_ns();
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        count_error(w, ERR_CLOSED, now);
        conn_reopen(w, c, now);
        return;
    }
    c->rlen += (size_t)n;
    size_t consumed = 0;
    enum bench_reply_status s = bench_reply_parse(&c->parser, c->rbuf, c->rlen, &consumed);
    if (s == BENCH_REPLY_DONE) {
        conn_reply(w, c, consumed, now);
    } else if (s != BENCH_REPLY_NEED_MORE) {
        count_error(w, ERR_MALFORMED, now);
        conn_reopen(w, c, now);
    }
}

static void conn_event(struct load_worker *w, const struct epoll_event *ev)
{
    uint32_t local_idx = (uint32_t)ev->data.u64;
    uint32_t generation = (uint32_t)(ev->data.u64 >> 32);
    BENCH_ASSERT(local_idx < w->conn_count);
    struct load_conn *c = &w->conns[local_idx];
    if (c->generation != generation || c->fd < 0)
        return; /* closed (and maybe reopened) earlier in this batch */
    if (c->state == CONN_CONNECTING) {
        conn_connected(w, c, load_now_ns());
        return;
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_readable(w, c);
    if (c->fd >= 0 && c->generation == generation && c->state == CONN_SENDING &&
        (ev->events & EPOLLOUT))
        conn_flush(w, c);
}

/* Timeouts, and reconnects that are due. */
static void scan(struct load_worker *w, uint64_t now)
{
    uint64_t timeout_ns = (uint64_t)w->shared->timeout_ms * 1000000u;
    for (unsigned i = 0; i < w->conn_count; i++) {
        struct load_conn *c = &w->conns[i];
        bool busy = c->state == CONN_SENDING || c->state == CONN_WAITING;
        if (busy && now - c->t_send_ns > timeout_ns) {
            count_error(w, ERR_TIMEOUT, now);
            conn_reopen(w, c, now);
        } else if (c->state == CONN_CONNECTING && now - c->retry_at_ns > timeout_ns) {
            count_error(w, ERR_CONNECT, now);
            conn_close(w, c, now);
        }
        if (c->state == CONN_CLOSED && now >= c->retry_at_ns)
            conn_open(w, c, now);
    }
}

void *load_worker_run(void *arg)
{
    struct load_worker *w = arg;
    struct epoll_event events[EVENTS_PER_WAIT];
    uint64_t last_scan = 0;
    while (!atomic_load_explicit(&w->shared->stop, memory_order_relaxed)) {
        uint64_t now = load_now_ns();
        if (now - last_scan >= SCAN_EVERY_MS * 1000000ull) {
            scan(w, now);
            last_scan = now;
        }
        int n = epoll_wait(w->epoll_fd, events, EVENTS_PER_WAIT, WAIT_MS);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++)
            conn_event(w, &events[i]);
    }
    return NULL;
}
