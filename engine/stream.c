/*
 * stream.c: the outbound stream client (eng/stream.h) on eng_poll and eng_timer.
 *
 * Owns per stream: conns_max connection slots, each with a read buffer of response_bytes_max
 * (allocated at create, so the data path does not allocate), their sockets, and a small
 * graveyard of closed-but-not-yet-released descriptors. Requests are the caller's (intrusive):
 * a FIFO of waiting ones, and at most one per connection.
 *
 * Connection states: CLOSED, CONNECTING (non-blocking connect, POLLOUT, connect timer), BUSY
 * (writing the request with plain non-blocking send, then reading into the read buffer until
 * the framing callback says the reply is complete) and IDLE (POLLIN only: a byte or EOF from an
 * idle peer closes it; idle timer). A request that finds a reused connection already closed by
 * the peer (EOF or reset before any reply byte) is re-sent once on a fresh connection, as
 * HTTP clients do, because a server's idle timeout and our reuse race by nature.
 *
 * Why a graveyard: eng_poll_stop only takes effect at the loop's flush, and the epoll backend
 * registers an fd number once; closing a socket at once would let a socket opened in the same
 * turn (ours, or an accepted connection) get the same number and collide with the stopped poll.
 * So a polled socket is shut down at once (the peer sees the close) and close(2)d on a later
 * turn (a 1 ms timer checks that the shard's turn counter moved).
 *
 * A target given by name is resolved at every connection attempt, off the shard (resolve.c:
 * glibc's getaddrinfo_a thread, polled every STREAM_RESOLVE_POLL_MS), never at start-up: a
 * name that appears later (a Kubernetes Service) or moves is followed. Connections opened
 * while a lookup is out share it (SC_CONNECTING with `resolving`, no socket yet); the connect
 * deadline covers the lookup. A failed lookup is a failed connect (log line, backoff).
 *
 * Known limit: writes are plain send(2) calls from the loop, not ring operations (one request
 * is a few hundred bytes).
 */
#include "eng/stream.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "eng/assert.h"
#include "eng/log.h"

#include "resolve.h"

#define STREAM_CONNS_LIMIT 1024u /* conns_max above this is a config error */
#define GRAVE_PER_CONN 2u
#define STREAM_RESOLVE_POLL_MS 2u

enum sc_state { SC_CLOSED, SC_CONNECTING, SC_BUSY, SC_IDLE };
enum rq_state { RQ_NONE, RQ_QUEUED, RQ_ACTIVE, RQ_DEFERRED };

struct sconn {
    struct eng_stream *s;
    enum sc_state state;
    int fd;
    bool polled;
    bool reused;             /* has carried a reply before */
    bool resolving;          /* SC_CONNECTING, waiting for the target's lookup (no socket) */
    struct eng_poll poll;
    struct eng_timer timer;  /* connect deadline or idle limit */
    struct eng_stream_req *rq;
    size_t sent;
    size_t rlen;
    char *rbuf;
};

struct grave {
    int fd;
    uint64_t turn;
};

struct eng_stream {
    struct eng_shard *sh;
    struct eng_stream_target t;
    struct eng_stream_config cfg;
    struct sconn *conns;
    struct eng_stream_req *q_head, *q_tail;
    uint32_t q_len;
    struct eng_stream_req *deferred; /* failed, reported from the loop (rq_fail_later) */
    uint64_t down_until_ms;
    uint32_t backoff_ms;
    int down_err;
    struct grave *graves;
    uint32_t grave_count, grave_max;
    struct eng_timer grave_timer;
    /* where to connect: the target's address, or its name's last lookup */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct eng_resolve_poll rp;
    struct eng_timer resolve_timer;
    struct eng_stream_stats st;
};

/* ---------------------------------------------------------------------------------------------
 * Targets (start-up)
 */

int eng_stream_target_tcp(const char *hostport, struct eng_stream_target *out, char *err,
                          size_t err_len)
{
    memset(out, 0, sizeof(*out));
    char host[ENG_STREAM_HOST_BYTES];
    const char *colon = strrchr(hostport, ':');
    const char *h = hostport;
    size_t hlen = colon ? (size_t)(colon - hostport) : 0;
    if (colon && hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (!colon || hlen == 0 || hlen >= sizeof(host) || colon[1] == '\0') {
        snprintf(err, err_len, "'%s' is not HOST:PORT", hostport);
        return -EINVAL;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) {
        snprintf(err, err_len, "'%s': bad port", hostport);
        return -EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) == 0 && res) {
        ENG_ASSERT(res->ai_addrlen <= sizeof(out->addr));
        memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
        out->addr_len = res->ai_addrlen;
        freeaddrinfo(res);
        eng_addr_format((const struct sockaddr *)&out->addr, out->addr_len, out->name,
                        sizeof(out->name));
        return 0;
    }
    /* A name: looked up at each connection attempt (the stream's resolve_step). */
    if (hlen > ENG_RESOLVE_HOST_MAX || hlen >= sizeof(out->host)) {
        snprintf(err, err_len, "'%s': host name too long", hostport);
        return -EINVAL;
    }
    memcpy(out->host, host, hlen + 1);
    snprintf(out->port, sizeof(out->port), "%ld", port);
    snprintf(out->name, sizeof(out->name), "%s:%ld", host, port);
    return 0;
}

int eng_stream_target_unix(const char *path, struct eng_stream_target *out, char *err,
                           size_t err_len)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_un *un = (struct sockaddr_un *)&out->addr;
    size_t len = strlen(path);
    if (len == 0) {
        snprintf(err, err_len, "empty socket path");
        return -EINVAL;
    }
    if (len >= sizeof(un->sun_path)) {
        snprintf(err, err_len, "socket path too long (%zu bytes, at most %zu): %s", len,
                 sizeof(un->sun_path) - 1, path);
        return -ENAMETOOLONG;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, len + 1);
    out->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    snprintf(out->name, sizeof(out->name), "unix:%s", path);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Create, destroy
 */

void eng_stream_config_defaults(struct eng_stream_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->conns_max = 4;
    cfg->queue_max = 256;
    cfg->connect_timeout_ms = 5000;
    cfg->idle_ms_max = 60000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->response_bytes_max = 65536;
}

static void grave_timer_fired(struct eng_shard *sh, struct eng_timer *t);
static void resolve_timer_fired(struct eng_shard *sh, struct eng_timer *t);

int eng_stream_create(struct eng_shard *sh, const struct eng_stream_target *t,
                      const struct eng_stream_config *cfg, struct eng_stream **out)
{
    ENG_ASSERT(sh != NULL);
    ENG_ASSERT(t != NULL);
    if (!cfg->frame || cfg->conns_max == 0 || cfg->conns_max > STREAM_CONNS_LIMIT ||
        cfg->response_bytes_max == 0 || cfg->connect_timeout_ms == 0 ||
        cfg->backoff_min_ms == 0 || cfg->backoff_max_ms < cfg->backoff_min_ms)
        return -EINVAL;
    struct eng_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->sh = sh;
    s->t = *t;
    s->cfg = *cfg;
    s->grave_max = cfg->conns_max * GRAVE_PER_CONN;
    s->conns = calloc(cfg->conns_max, sizeof(*s->conns));
    s->graves = calloc(s->grave_max, sizeof(*s->graves));
    if (!s->conns || !s->graves)
        goto nomem;
    for (uint32_t i = 0; i < cfg->conns_max; i++) {
        struct sconn *c = &s->conns[i];
        c->s = s;
        c->fd = -1;
        c->rbuf = malloc(cfg->response_bytes_max);
        if (!c->rbuf)
            goto nomem;
    }
    eng_timer_init(&s->grave_timer, grave_timer_fired);
    eng_timer_init(&s->resolve_timer, resolve_timer_fired);
    s->addr = t->addr;
    s->addr_len = t->addr_len;
    *out = s;
    return 0;
nomem:
    if (s->conns)
        for (uint32_t i = 0; i < cfg->conns_max; i++)
            free(s->conns[i].rbuf);
    free(s->conns);
    free(s->graves);
    free(s);
    return -ENOMEM;
}

const char *eng_stream_name(const struct eng_stream *s)
{
    return s->t.name;
}

void eng_stream_get_stats(const struct eng_stream *s, struct eng_stream_stats *out)
{
    *out = s->st;
}

/* ---------------------------------------------------------------------------------------------
 * Closing sockets: the graveyard
 */

static void grave_reap(struct eng_stream *s, bool all)
{
    uint64_t turn = eng_shard_stats(s->sh)->turns;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < s->grave_count; i++) {
        if (all || s->graves[i].turn != turn)
            close(s->graves[i].fd);
        else
            s->graves[kept++] = s->graves[i];
    }
    s->grave_count = kept;
    if (kept > 0 && !all)
        eng_timer_arm(s->sh, &s->grave_timer, 1);
}

static void grave_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_stream *s = (struct eng_stream *)((char *)t - offsetof(struct eng_stream, grave_timer));
    grave_reap(s, false);
}

static void grave_add(struct eng_stream *s, int fd)
{
    if (s->grave_count == s->grave_max)
        grave_reap(s, false);
    /* Each connection closes at most once per turn (a socket opened this turn is only closed
     * from a later callback), so the graveyard cannot be full of this turn's sockets. */
    ENG_ASSERT(s->grave_count < s->grave_max);
    s->graves[s->grave_count].fd = fd;
    s->graves[s->grave_count].turn = eng_shard_stats(s->sh)->turns;
    s->grave_count++;
    if (!eng_timer_armed(&s->grave_timer))
        eng_timer_arm(s->sh, &s->grave_timer, 1);
}

static void conn_close(struct sconn *c)
{
    struct eng_stream *s = c->s;
    if (c->state == SC_CLOSED)
        return;
    eng_timer_cancel(s->sh, &c->timer);
    if (c->polled) {
        eng_poll_stop(s->sh, &c->poll);
        shutdown(c->fd, SHUT_RDWR);
        grave_add(s, c->fd);
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->polled = false;
    c->resolving = false;
    c->state = SC_CLOSED;
    c->rq = NULL;
    c->rlen = 0;
    c->sent = 0;
    c->reused = false;
    ENG_ASSERT(s->st.conns_open > 0);
    s->st.conns_open--;
}

/* ---------------------------------------------------------------------------------------------
 * Requests: queue, completion
 */

static void q_push(struct eng_stream *s, struct eng_stream_req *rq, bool front)
{
    rq->state = RQ_QUEUED;
    rq->next = NULL;
    if (!s->q_head) {
        s->q_head = s->q_tail = rq;
    } else if (front) {
        rq->next = s->q_head;
        s->q_head = rq;
    } else {
        s->q_tail->next = rq;
        s->q_tail = rq;
    }
    s->q_len++;
}

static struct eng_stream_req *q_pop(struct eng_stream *s)
{
    struct eng_stream_req *rq = s->q_head;
    if (!rq)
        return NULL;
    s->q_head = rq->next;
    if (!s->q_head)
        s->q_tail = NULL;
    s->q_len--;
    rq->next = NULL;
    return rq;
}

static void q_remove(struct eng_stream *s, struct eng_stream_req *rq)
{
    struct eng_stream_req **pp = &s->q_head, *prev = NULL;
    while (*pp && *pp != rq) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    ENG_ASSERT(*pp == rq);
    *pp = rq->next;
    if (s->q_tail == rq)
        s->q_tail = prev;
    s->q_len--;
    rq->next = NULL;
}

/* Ends a request that is no longer queued nor on a connection. */
static void rq_finish(struct eng_stream_req *rq, int status, const char *reply, size_t len)
{
    struct eng_stream *s = rq->s;
    eng_timer_cancel(s->sh, &rq->timer);
    if (rq->state == RQ_DEFERRED) {
        struct eng_stream_req **pp = &s->deferred;
        while (*pp != rq)
            pp = &(*pp)->next;
        *pp = rq->next;
        rq->next = NULL;
    }
    rq->state = RQ_NONE;
    rq->conn = NULL;
    if (status == 0)
        s->st.replies++;
    rq->done(rq, status, reply, len);
}

static void rq_deferred_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_stream_req *rq =
        (struct eng_stream_req *)((char *)t - offsetof(struct eng_stream_req, timer));
    ENG_ASSERT(rq->state == RQ_DEFERRED);
    rq_finish(rq, rq->status, NULL, 0);
}

/* Fails a request from the loop on a later timer run (never inside eng_stream_request). */
static void rq_fail_later(struct eng_stream_req *rq, int status)
{
    eng_timer_cancel(rq->s->sh, &rq->timer);
    rq->state = RQ_DEFERRED;
    rq->next = rq->s->deferred;
    rq->s->deferred = rq;
    rq->status = status;
    eng_timer_init(&rq->timer, rq_deferred_fired);
    eng_timer_arm(rq->s->sh, &rq->timer, 0);
}

static void pump(struct eng_stream *s);

/* The connection failed its request: close it, end the request, serve the queue. */
static void conn_fail(struct sconn *c, int status)
{
    struct eng_stream *s = c->s;
    struct eng_stream_req *rq = c->rq;
    conn_close(c);
    if (rq) {
        s->st.errors++;
        rq_finish(rq, status, NULL, 0);
    }
    pump(s);
}

/* ---------------------------------------------------------------------------------------------
 * Connecting
 */

static void conn_io(struct eng_shard *sh, struct eng_poll *p, uint32_t revents);

static void conn_timer_fired(struct eng_shard *sh, struct eng_timer *t);

static void connect_failed(struct sconn *c, int err)
{
    struct eng_stream *s = c->s;
    s->st.connect_failures++;
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : s->cfg.backoff_min_ms;
    if (s->backoff_ms > s->cfg.backoff_max_ms)
        s->backoff_ms = s->cfg.backoff_max_ms;
    s->down_until_ms = eng_now_ms(s->sh) + s->backoff_ms;
    s->down_err = err;
    eng_log(ENG_LOG_WARNING, "cannot connect to %s: %s (requests fail for %u ms)", s->t.name,
            strerror(err), s->backoff_ms);
    /* Everything waiting would meet the same fate: fail it now rather than at its deadline
     * (from the loop: this may run inside eng_stream_request). */
    struct eng_stream_req *rq = c->rq;
    conn_close(c);
    if (rq) {
        s->st.fast_failures++;
        rq_fail_later(rq, -err);
    }
    while ((rq = q_pop(s)) != NULL) {
        s->st.fast_failures++;
        rq_fail_later(rq, -err);
    }
}

/* Connects c to s->addr: a new connection, or one whose lookup just ended (its deadline timer
 * is already running). */
static void conn_connect(struct sconn *c)
{
    struct eng_stream *s = c->s;
    if (c->resolving) {
        c->resolving = false;
    } else {
        ENG_ASSERT(c->state == SC_CLOSED);
        c->state = SC_CONNECTING;
        c->polled = false;
        s->st.conns_open++;
        eng_timer_init(&c->timer, conn_timer_fired);
    }
    int fam = s->addr.ss_family;
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->fd = fd;
    if (fd < 0) {
        int e = errno;
        struct eng_stream_req *rq = c->rq;
        c->rq = NULL;
        conn_close(c);
        s->st.errors++;
        rq_fail_later(rq, -e);
        return;
    }
    if (fam != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (connect(fd, (const struct sockaddr *)&s->addr, s->addr_len) != 0 &&
        errno != EINPROGRESS) {
        int e = errno; /* a Unix socket with a full backlog says EAGAIN */
        connect_failed(c, e == EAGAIN ? ECONNREFUSED : e);
        return;
    }
    int rc = eng_poll_start(s->sh, &c->poll, fd, POLLOUT, conn_io);
    if (rc != 0) {
        struct eng_stream_req *rq = c->rq;
        c->rq = NULL;
        conn_close(c);
        s->st.errors++;
        rq_fail_later(rq, rc);
        return;
    }
    c->polled = true;
    if (!eng_timer_armed(&c->timer))
        eng_timer_arm(s->sh, &c->timer, s->cfg.connect_timeout_ms);
}

/* The target's lookup: started or looked at; when it ended, the connections waiting for it
 * connect, or fail as a failed connect. */
static void resolve_step(struct eng_stream *s)
{
    bool waiting = false;
    for (uint32_t i = 0; i < s->cfg.conns_max && !waiting; i++)
        waiting = s->conns[i].resolving;
    if (!waiting) {
        eng_resolve_poll_drop(&s->rp);
        return;
    }
    char why[300] = "";
    int rc = eng_resolve_poll_step(&s->rp, eng_now_ms(s->sh), s->cfg.connect_timeout_ms,
                                   s->t.host, s->t.port, &s->addr, &s->addr_len, why,
                                   sizeof(why));
    if (rc == 0) {
        if (!eng_timer_armed(&s->resolve_timer))
            eng_timer_arm(s->sh, &s->resolve_timer, STREAM_RESOLVE_POLL_MS);
        return;
    }
    if (rc < 0)
        eng_log(ENG_LOG_WARNING, "%s", why);
    bool failed_once = false;
    for (uint32_t i = 0; i < s->cfg.conns_max; i++) {
        struct sconn *c = &s->conns[i];
        if (!c->resolving)
            continue;
        if (rc > 0) {
            conn_connect(c);
        } else if (!failed_once) {
            failed_once = true;
            connect_failed(c, EHOSTUNREACH); /* logs, backs off, fails the queue */
        } else {
            struct eng_stream_req *rq = c->rq;
            c->rq = NULL;
            conn_close(c);
            if (rq) {
                s->st.fast_failures++;
                rq_fail_later(rq, -EHOSTUNREACH);
            }
        }
    }
    pump(s);
}

static void resolve_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    resolve_step((struct eng_stream *)((char *)t - offsetof(struct eng_stream, resolve_timer)));
}

/* Opens connection c for request rq (already assigned): connects, or first looks the target's
 * name up. */
static void conn_open(struct sconn *c)
{
    struct eng_stream *s = c->s;
    ENG_ASSERT(c->state == SC_CLOSED);
    if (s->t.host[0] == '\0') {
        conn_connect(c);
        return;
    }
    c->state = SC_CONNECTING;
    c->fd = -1;
    c->polled = false;
    c->resolving = true;
    s->st.conns_open++;
    eng_timer_init(&c->timer, conn_timer_fired);
    eng_timer_arm(s->sh, &c->timer, s->cfg.connect_timeout_ms);
    /* From the loop, never inside eng_stream_request (a failure would end requests there). */
    if (!eng_timer_armed(&s->resolve_timer))
        eng_timer_arm(s->sh, &s->resolve_timer, 0);
}

static void conn_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct sconn *c = (struct sconn *)((char *)t - offsetof(struct sconn, timer));
    if (c->state == SC_CONNECTING) {
        connect_failed(c, ETIMEDOUT);
        pump(c->s);
    } else if (c->state == SC_IDLE) {
        c->s->st.idle_closes++;
        conn_close(c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Writing and reading
 */

/* Sends what is left of the request. Returns 0, or -errno when the connection failed. */
static int conn_write(struct sconn *c)
{
    struct eng_stream_req *rq = c->rq;
    while (c->sent < rq->out_len) {
        ssize_t n = send(c->fd, rq->out + c->sent, rq->out_len - c->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0)
            return -errno;
        c->sent += (size_t)n;
        c->s->st.bytes_out += (uint64_t)n;
    }
    uint32_t ev = c->sent < rq->out_len ? (POLLIN | POLLOUT) : POLLIN;
    if (c->polled && c->poll.events != ev)
        eng_poll_update(c->s->sh, &c->poll, ev);
    return 0;
}

/* Starts rq on connection c (connected, idle). */
static void conn_start(struct sconn *c, struct eng_stream_req *rq)
{
    eng_timer_cancel(c->s->sh, &c->timer);
    c->state = SC_BUSY;
    c->rq = rq;
    c->sent = 0;
    c->rlen = 0;
    rq->conn = c;
    rq->state = RQ_ACTIVE;
    if (c->reused)
        c->s->st.reuses++;
    if (conn_write(c) != 0) /* reported by the poll (the next send fails the same way) */
        eng_poll_update(c->s->sh, &c->poll, POLLIN | POLLOUT);
}

/* The peer closed or reset before the reply: retry once when the connection was a reused one
 * and nothing of the reply came, else fail. */
static void conn_lost(struct sconn *c, int err)
{
    struct eng_stream *s = c->s;
    struct eng_stream_req *rq = c->rq;
    if (rq && c->reused && c->rlen == 0 && !rq->retried) {
        rq->retried = true;
        s->st.retries++;
        c->rq = NULL;
        conn_close(c);
        q_push(s, rq, true);
        pump(s);
        return;
    }
    conn_fail(c, err);
}

static void reply_done(struct sconn *c, size_t len, bool keep)
{
    struct eng_stream *s = c->s;
    struct eng_stream_req *rq = c->rq;
    bool stray = len < c->rlen;
    if (stray)
        s->st.idle_closes++;
    c->rq = NULL;
    c->rlen = 0;
    if (keep && !stray && s->cfg.idle_ms_max > 0) {
        c->state = SC_IDLE;
        c->reused = true;
        eng_poll_update(s->sh, &c->poll, POLLIN);
        eng_timer_arm(s->sh, &c->timer, s->cfg.idle_ms_max);
        rq_finish(rq, 0, c->rbuf, len); /* rbuf is next written by a later poll callback */
    } else {
        /* The bytes stay in rbuf until the slot is opened again, which done cannot cause
         * before it returns (conn_open only connects; reading comes from the loop). */
        conn_close(c);
        rq_finish(rq, 0, c->rbuf, len);
    }
    pump(s);
}

static void conn_read(struct sconn *c)
{
    struct eng_stream *s = c->s;
    for (;;) {
        size_t room = s->cfg.response_bytes_max - c->rlen;
        bool eof = false;
        ssize_t n = 0;
        if (room == 0) {
            conn_fail(c, -EMSGSIZE);
            return;
        }
        n = recv(c->fd, c->rbuf + c->rlen, room, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            conn_lost(c, errno == ECONNRESET || errno == EPIPE ? -ECONNRESET : -errno);
            return;
        }
        if (n == 0)
            eof = true;
        c->rlen += (size_t)n;
        s->st.bytes_in += (uint64_t)n;
        bool keep = true;
        ssize_t m = s->cfg.frame(s->cfg.frame_arg, c->rbuf, c->rlen, eof, &keep);
        if (m > 0) {
            ENG_ASSERT((size_t)m <= c->rlen);
            reply_done(c, (size_t)m, keep && !eof);
            return;
        }
        if (m < 0) {
            conn_fail(c, (int)m);
            return;
        }
        if (eof) {
            conn_lost(c, -ECONNRESET);
            return;
        }
    }
}

static void conn_connected(struct sconn *c)
{
    struct eng_stream *s = c->s;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr != 0) {
        connect_failed(c, soerr);
        pump(s);
        return;
    }
    eng_timer_cancel(s->sh, &c->timer);
    s->st.connects++;
    s->backoff_ms = 0;
    s->down_until_ms = 0;
    struct eng_stream_req *rq = c->rq;
    c->state = SC_IDLE;
    c->rq = NULL;
    if (rq) {
        conn_start(c, rq);
    } else {
        eng_poll_update(s->sh, &c->poll, POLLIN);
        eng_timer_arm(s->sh, &c->timer, s->cfg.idle_ms_max ? s->cfg.idle_ms_max : 1);
        pump(s);
    }
}

static void conn_io(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct sconn *c = (struct sconn *)((char *)p - offsetof(struct sconn, poll));
    ENG_ASSERT(c->polled);
    switch (c->state) {
    case SC_CONNECTING:
        conn_connected(c);
        return;
    case SC_IDLE: /* EOF or stray bytes from an idle peer */
        c->s->st.idle_closes++;
        conn_close(c);
        return;
    case SC_BUSY:
        if (revents & POLLOUT) {
            int rc = conn_write(c);
            if (rc != 0) {
                conn_lost(c, rc == -EPIPE ? -ECONNRESET : rc);
                return;
            }
        }
        if (revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
            conn_read(c);
        return;
    case SC_CLOSED:
        break;
    }
    ENG_ASSERT(!"poll on a closed stream connection");
}

/* ---------------------------------------------------------------------------------------------
 * Dispatch
 */

static struct sconn *conn_find(struct eng_stream *s, enum sc_state st)
{
    for (uint32_t i = 0; i < s->cfg.conns_max; i++)
        if (s->conns[i].state == st)
            return &s->conns[i];
    return NULL;
}

/* Gives waiting requests to idle connections, or opens connections for them. */
static void pump(struct eng_stream *s)
{
    while (s->q_head) {
        struct sconn *c = conn_find(s, SC_IDLE);
        if (c) {
            conn_start(c, q_pop(s));
            continue;
        }
        /* A connection being opened will take the head when it is up. */
        uint32_t connecting = 0;
        for (uint32_t i = 0; i < s->cfg.conns_max; i++)
            connecting += s->conns[i].state == SC_CONNECTING && !s->conns[i].rq;
        if (connecting >= s->q_len)
            return;
        if (s->down_until_ms > eng_now_ms(s->sh)) {
            struct eng_stream_req *rq;
            while ((rq = q_pop(s)) != NULL) {
                s->st.fast_failures++;
                rq_fail_later(rq, -s->down_err);
            }
            return;
        }
        c = conn_find(s, SC_CLOSED);
        if (!c)
            return; /* all busy: the head waits for a reply or its deadline */
        struct eng_stream_req *rq = q_pop(s);
        c->rq = rq;
        rq->conn = c;
        rq->state = RQ_ACTIVE;
        conn_open(c);
    }
}

static void rq_deadline_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_stream_req *rq =
        (struct eng_stream_req *)((char *)t - offsetof(struct eng_stream_req, timer));
    struct eng_stream *s = rq->s;
    s->st.timeouts++;
    if (rq->state == RQ_QUEUED) {
        q_remove(s, rq);
        rq_finish(rq, -ETIMEDOUT, NULL, 0);
        return;
    }
    ENG_ASSERT(rq->state == RQ_ACTIVE);
    struct sconn *c = rq->conn;
    ENG_ASSERT(c->rq == rq);
    c->rq = NULL; /* a late reply must not be taken for the next request's */
    conn_close(c);
    rq_finish(rq, -ETIMEDOUT, NULL, 0);
    pump(s);
}

int eng_stream_request(struct eng_stream *s, struct eng_stream_req *rq, const void *buf,
                       size_t len, uint32_t timeout_ms, eng_stream_done_fn *done, void *ctx)
{
    ENG_ASSERT(done != NULL);
    if (len == 0 || timeout_ms == 0)
        return -EINVAL;
    memset(rq, 0, sizeof(*rq));
    rq->s = s;
    rq->out = buf;
    rq->out_len = len;
    rq->done = done;
    rq->ctx = ctx;
    s->st.requests++;
    if (s->q_len >= s->cfg.queue_max) {
        s->st.queue_full++;
        s->st.fast_failures++;
        rq_fail_later(rq, -EAGAIN);
        return 0;
    }
    eng_timer_init(&rq->timer, rq_deadline_fired);
    eng_timer_arm(s->sh, &rq->timer, timeout_ms);
    q_push(s, rq, false);
    pump(s);
    return 0;
}

void eng_stream_destroy(struct eng_stream *s)
{
    if (!s)
        return;
    struct eng_stream_req *rq;
    while ((rq = q_pop(s)) != NULL)
        rq_finish(rq, -ECANCELED, NULL, 0);
    while (s->deferred)
        rq_finish(s->deferred, -ECANCELED, NULL, 0);
    for (uint32_t i = 0; i < s->cfg.conns_max; i++) {
        struct sconn *c = &s->conns[i];
        rq = c->rq;
        conn_close(c);
        if (rq)
            rq_finish(rq, -ECANCELED, NULL, 0);
        free(c->rbuf);
    }
    eng_timer_cancel(s->sh, &s->grave_timer);
    eng_timer_cancel(s->sh, &s->resolve_timer);
    eng_resolve_poll_drop(&s->rp);
    grave_reap(s, true);
    free(s->conns);
    free(s->graves);
    free(s);
}
