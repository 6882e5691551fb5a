/*
 * mc.c: the memcached client of one shard (eng/mc.h) on the shard's ring.
 *
 * A client owns one connection per server. A connection owns its socket, an output buffer
 * (requests appended as operations are queued; one send per turn from eng_mc_turn_end, which
 * the loop calls before its submit), a receive buffer (bytes copied out of the provided buffers
 * of a multishot recv, which go straight back to the ring) and the FIFO of its operations, in
 * the order their requests were written, which is the order memcached answers them in.
 * Operations come from a pool of ops_max per client allocated at create, so the data path does
 * not allocate.
 *
 * States of a connection: CONNECTING (non-blocking connect, a POLLOUT poll on the ring; queued
 * operations wait), UP, CLOSING (cancel what the ring still holds, close when it gave everything
 * back) and DOWN (waiting out a backoff; operations fail fast). A peer close or socket error
 * reconnects at once; a failed connect, a timed-out operation (memcached stopped or stuck) and
 * a protocol error go DOWN with exponential backoff first, so a dead server costs callers no
 * waiting. The first successful reply resets the backoff.
 *
 * Server addresses: numeric ones are parsed at start-up; a host name is resolved when its
 * connection connects (each attempt, so a name that appears later, e.g. a Kubernetes Service,
 * or moves is followed), never at start-up and never on the shard: getaddrinfo_a runs the
 * lookup on glibc's helper thread (resolve.c); the shard polls it on the connection's retry
 * timer every MC_RESOLVE_POLL_MS while the connection stays DOWN (operations fail fast). A failed lookup
 * counts as a failed connect (stats.connect_failures), is logged once per failure streak and
 * backs off like one. A client destroyed during a lookup abandons it: whichever side comes
 * last (the shard, or the notification) frees it.
 *
 * user_data of our ring operations: ENG_OP_MC, the connection's slot in this shard's table
 * times 4 plus the kind (recv, send, poll), and the slot's generation (bumped per socket), all
 * asserted on completion. A destroyed client's connections with operations still in the ring
 * stay in the table as zombies until their last completion, then close their socket.
 *
 * Threads: one shard; the per-shard table is thread-local. Known limits: a client must not be
 * destroyed from inside its own done callback; zombies left when a shard's loop ends are
 * reclaimed by the process exit, not before.
 */
#include "eng/mc.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmemcached-1.0/memcached.h>

#include "eng/log.h"
#include "resolve.h"
#include "internal.h"
#include "mc_int.h"

#define MC_SLOTS_MAX 4096u  /* connections (clients x servers) per shard */
#define MC_TURN_ROUNDS 8u   /* turn-end rounds of callbacks queueing more work */
#define MC_KIND_RECV 0u
#define MC_KIND_SEND 1u
#define MC_KIND_POLL 2u
#define MC_RESOLVE_POLL_MS 10u       /* how often a shard looks at a lookup in flight */
#define MC_RESOLVE_MAX_MS 30000u     /* a lookup not done by then counts as failed */
_Static_assert(MC_SLOTS_MAX * 4u < UINT32_MAX, "slot and kind fit the user_data index");

/* ---------------------------------------------------------------------------------------------
 * Types
 */

struct eng_mc_servers {
    unsigned count;
    memcached_st *memc; /* the list and its ketama continuum; each client clones it */
    struct mc_server {
        struct sockaddr_storage addr; /* numeric hosts; names are resolved per connect */
        socklen_t addr_len;
        bool by_name;
        unsigned port;
        char host[256];
        char name[300];
    } srv[];
};

enum mc_state { MC_DOWN, MC_CONNECTING, MC_UP, MC_CLOSING };

struct mc_op {
    uint32_t next; /* FIFO, deferred list or free list: op index + 1; 0 ends */
    uint8_t cmd;
    uint8_t status; /* deferred: what to report */
    bool tail;      /* get: the value is being discarded, END follows */
    bool busy;      /* taken from the pool */
    uint64_t deadline_ms;
    uint64_t key_hash; /* get: the key as sent */
    eng_mc_done_fn *done;
    void *ctx;
};

struct mc_conn {
    struct eng_mc *mc; /* NULL once a zombie */
    struct mc_shard *ms;
    unsigned server;
    uint32_t slot, gen;
    int fd;
    enum mc_state state;
    bool recv_armed, send_inflight, poll_armed, cancel_sent;
    bool dirty, down_logged, reconnect_now;
    uint32_t backoff_ms;
    struct eng_resolve *resolve; /* a lookup in flight (servers given by name) */
    uint64_t resolve_started_ms;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char *wbuf;
    uint32_t w_head, w_sent_end, w_len, w_cap;
    char *rbuf;
    size_t r_head, r_len, r_cap;
    uint64_t discard;
    uint32_t fifo_head, fifo_tail, fifo_count;
    uint64_t timer_at_ms; /* op_timer's expiry, 0 when not armed */
    struct eng_timer op_timer, retry_timer, kick_timer;
    struct mc_conn *dirty_next;
};

struct eng_mc {
    struct eng_shard *sh;
    struct mc_shard *ms;
    struct eng_mc *next; /* the shard's clients */
    const struct eng_mc_servers *servers;
    memcached_st *memc;
    struct eng_mc_config cfg;
    char *name;
    char prefix[ENG_MC_PREFIX_BYTES_MAX + 1];
    size_t prefix_len;
    struct mc_op *ops;
    uint32_t free_op;            /* index + 1 */
    uint32_t def_head, def_tail; /* operations to complete at the end of the turn */
    struct mc_conn **conns;      /* one per server */
    struct eng_mc_stats stats;
};

struct mc_shard {
    struct eng_shard *sh;
    struct mc_conn *slots[MC_SLOTS_MAX];
    uint32_t slots_used;
    struct eng_mc *clients;
    struct mc_conn *dirty_head;
    bool deferred; /* some client has deferred operations */
    struct eng_timer kick;
};

static _Thread_local struct mc_shard *tls_mc;

/* ---------------------------------------------------------------------------------------------
 * Server lists (start-up)
 */

/* A numeric address is parsed now (no lookup); a name is kept for the connections to resolve
 * when they connect. */
static int resolve(struct mc_server *s, const char *host, unsigned port, char *err,
                   size_t err_len)
{
    if (strlen(host) >= sizeof(s->host)) {
        snprintf(err, err_len, "memcached server %.64s...: host name too long", host);
        return -1;
    }
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->port = port;
    snprintf(s->name, sizeof(s->name), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    char ps[16];
    snprintf(ps, sizeof(ps), "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_NUMERICHOST};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
        s->by_name = true;
        return 0;
    }
    memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
    s->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int servers_fill(struct eng_mc_servers *s, char *err, size_t err_len)
{
    for (unsigned i = 0; i < s->count; i++) {
        const memcached_instance_st *in = memcached_server_instance_by_position(s->memc, i);
        const char *host = memcached_server_name(in);
        unsigned port = memcached_server_port(in);
        if (!host || !*host || host[0] == '/') {
            snprintf(err, err_len, "memcached server %s: Unix sockets are not supported",
                     host ? host : "?");
            return -1;
        }
        if (port == 0 || port > 65535) {
            snprintf(err, err_len, "memcached server %s: bad port", host);
            return -1;
        }
        if (resolve(&s->srv[i], host, port, err, err_len) != 0)
            return -1;
    }
    return 0;
}

int eng_mc_servers_parse(const char *list, struct eng_mc_servers **out, char *err,
                         size_t err_len)
{
    memcached_server_list_st sl = list ? memcached_servers_parse(list) : NULL;
    unsigned n = sl ? memcached_server_list_count(sl) : 0;
    if (n == 0 || n > ENG_MC_SERVERS_MAX) {
        if (n == 0)
            snprintf(err, err_len, "no memcached server in '%s'", list ? list : "");
        else
            snprintf(err, err_len, "more than %u memcached servers", ENG_MC_SERVERS_MAX);
        memcached_server_list_free(sl);
        return -1;
    }
    struct eng_mc_servers *s = calloc(1, sizeof(*s) + n * sizeof(s->srv[0]));
    memcached_st *memc = s ? memcached_create(NULL) : NULL;
    if (!memc || memcached_server_push(memc, sl) != MEMCACHED_SUCCESS ||
        memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1) != MEMCACHED_SUCCESS) {
        snprintf(err, err_len, "cannot set up the memcached server list '%s'", list);
        memcached_server_list_free(sl);
        if (memc)
            memcached_free(memc);
        free(s);
        return -1;
    }
    memcached_server_list_free(sl);
    s->memc = memc;
    s->count = memcached_server_count(memc);
    ENG_ASSERT(s->count == n);
    if (servers_fill(s, err, err_len) != 0) {
        eng_mc_servers_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void eng_mc_servers_free(struct eng_mc_servers *s)
{
    if (!s)
        return;
    memcached_free(s->memc);
    free(s);
}

unsigned eng_mc_servers_count(const struct eng_mc_servers *s)
{
    return s->count;
}

const char *eng_mc_servers_name(const struct eng_mc_servers *s, unsigned idx)
{
    ENG_ASSERT(idx < s->count);
    return s->srv[idx].name;
}

void eng_mc_config_defaults(struct eng_mc_config *cfg)
{
    *cfg = (struct eng_mc_config){
        .name = "memcached",
        .prefix = "",
        .ops_max = 4096,
        .timeout_ms = 1000,
        .connect_timeout_ms = 1000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .value_bytes_max = 1u << 20,
        .out_bytes_max = 2u << 20,
    };
}

/* ---------------------------------------------------------------------------------------------
 * Operation pool, deferred completions
 */

static struct mc_op *op_at(struct eng_mc *mc, uint32_t idx1)
{
    ENG_ASSERT(idx1 > 0);
    ENG_ASSERT(idx1 <= mc->cfg.ops_max);
    return &mc->ops[idx1 - 1];
}

static uint32_t op_take(struct eng_mc *mc)
{
    uint32_t i = mc->free_op;
    if (!i)
        return 0;
    struct mc_op *op = op_at(mc, i);
    ENG_ASSERT(!op->busy);
    mc->free_op = op->next;
    memset(op, 0, sizeof(*op));
    op->busy = true;
    mc->stats.queue_depth++;
    if (mc->stats.queue_depth > mc->stats.queue_depth_max)
        mc->stats.queue_depth_max = mc->stats.queue_depth;
    return i;
}

static void op_put(struct eng_mc *mc, uint32_t i)
{
    struct mc_op *op = op_at(mc, i);
    ENG_ASSERT(op->busy);
    op->busy = false;
    op->done = NULL;
    op->next = mc->free_op;
    mc->free_op = i;
    ENG_ASSERT(mc->stats.queue_depth > 0);
    mc->stats.queue_depth--;
}

/* Returns the operation to the pool, then reports (so done may queue again at once). */
static void op_complete(struct eng_mc *mc, uint32_t i, enum eng_mc_status st, const char *v,
                        size_t vl)
{
    struct mc_op *op = op_at(mc, i);
    eng_mc_done_fn *done = op->done;
    void *ctx = op->ctx;
    op_put(mc, i);
    mc->stats.status[st]++;
    done(ctx, st, v, vl);
}

static void defer_op(struct eng_mc *mc, uint32_t i, enum eng_mc_status st)
{
    struct mc_op *op = op_at(mc, i);
    op->status = (uint8_t)st;
    op->next = 0;
    if (mc->def_tail)
        op_at(mc, mc->def_tail)->next = i;
    else
        mc->def_head = i;
    mc->def_tail = i;
    mc->ms->deferred = true;
}

static void run_deferred(struct eng_mc *mc)
{
    uint32_t i = mc->def_head;
    mc->def_head = mc->def_tail = 0;
    while (i) {
        uint32_t next = op_at(mc, i)->next;
        op_complete(mc, i, (enum eng_mc_status)op_at(mc, i)->status, NULL, 0);
        i = next;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Connections: dirty list, close, connect
 */

static void mark_dirty(struct mc_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = c->ms->dirty_head;
    c->ms->dirty_head = c;
}

static const char *conn_name(const struct mc_conn *c)
{
    return c->mc ? c->mc->name : "(closed)";
}

static const char *server_name(const struct mc_conn *c)
{
    return c->mc ? c->mc->servers->srv[c->server].name : "?";
}

static bool conn_busy(const struct mc_conn *c)
{
    return c->recv_armed || c->send_inflight || c->poll_armed;
}

static void resolve_drop(struct mc_conn *c);

static void conn_free(struct mc_conn *c)
{
    struct mc_shard *ms = c->ms;
    resolve_drop(c);
    ENG_ASSERT(ms->slots[c->slot] == c);
    ms->slots[c->slot] = NULL;
    ms->slots_used--;
    eng_timer_cancel(ms->sh, &c->op_timer);
    eng_timer_cancel(ms->sh, &c->retry_timer);
    eng_timer_cancel(ms->sh, &c->kick_timer);
    free(c->wbuf);
    free(c->rbuf);
    free(c);
}

static void connect_start(struct mc_conn *c);

static uint32_t backoff_next(struct mc_conn *c)
{
    const struct eng_mc_config *cfg = &c->mc->cfg;
    uint32_t b = c->backoff_ms ? c->backoff_ms * 2 : cfg->backoff_min_ms;
    c->backoff_ms = b > cfg->backoff_max_ms ? cfg->backoff_max_ms : b;
    return c->backoff_ms;
}

static void go_down(struct mc_conn *c)
{
    c->state = MC_DOWN;
    eng_timer_arm(c->ms->sh, &c->retry_timer, backoff_next(c));
}

/* The socket is gone (or never was): free a zombie, else reconnect or wait. */
static void closed(struct mc_conn *c)
{
    c->fd = -1;
    c->cancel_sent = false;
    c->gen = (c->gen + 1) & ENG_UD_GEN_MASK;
    c->w_head = c->w_sent_end = c->w_len = 0;
    c->r_head = c->r_len = 0;
    c->discard = 0;
    if (!c->mc) {
        conn_free(c);
        return;
    }
    if (c->reconnect_now) {
        c->reconnect_now = false;
        connect_start(c);
    } else {
        go_down(c);
    }
}

/* CLOSING: cancel what the ring holds; close when it gave everything back. */
static void close_progress(struct mc_conn *c)
{
    struct eng_ring *r = c->ms->sh->ring;
    if (conn_busy(c)) {
        if (!c->cancel_sent) {
            if (r->ops->prep_cancel_fd(r, c->fd, eng_ud(ENG_OP_CANCEL, 0, 0)) == 0)
                c->cancel_sent = true;
            else
                eng_timer_arm(c->ms->sh, &c->kick_timer, 1);
        }
        return;
    }
    r->ops->fd_closed(r, c->fd);
    close(c->fd);
    closed(c);
}

/* Fails every operation of the FIFO: those past their deadline with ENG_MC_TIMEOUT when
 * timed_out, the others with ENG_MC_DOWN. Runs callbacks (from the loop). */
static void fifo_fail(struct mc_conn *c, bool timed_out)
{
    struct eng_mc *mc = c->mc;
    uint32_t i = c->fifo_head;
    uint64_t now = eng_now_ms(c->ms->sh);
    c->fifo_head = c->fifo_tail = 0;
    c->fifo_count = 0;
    while (i) {
        struct mc_op *op = op_at(mc, i);
        uint32_t next = op->next;
        bool late = timed_out && op->deadline_ms <= now;
        op_complete(mc, i, late ? ENG_MC_TIMEOUT : ENG_MC_DOWN, NULL, 0);
        i = next;
    }
}

/* Stops the connection's timers, fails its operations and starts closing it; reconnect at once
 * (reconnect) or after a backoff once closed. */
static void conn_close(struct mc_conn *c, bool reconnect, bool timed_out)
{
    eng_timer_cancel(c->ms->sh, &c->op_timer);
    eng_timer_cancel(c->ms->sh, &c->retry_timer);
    c->timer_at_ms = 0;
    c->state = MC_CLOSING;
    c->reconnect_now = reconnect;
    fifo_fail(c, timed_out);
    close_progress(c);
}

/* The connection is unusable: close it, fail its operations, then reconnect at once
 * (reconnect) or after a backoff. */
static void conn_reset(struct mc_conn *c, bool reconnect, bool timed_out, const char *why)
{
    ENG_ASSERT(c->mc != NULL);
    ENG_ASSERT(c->state == MC_UP || c->state == MC_CONNECTING);
    struct eng_mc *mc = c->mc;
    mc->stats.resets++;
    if (!c->down_logged) {
        c->down_logged = true;
        eng_log(ENG_LOG_WARNING, "memcached %s: connection to %s lost: %s", conn_name(c),
                server_name(c), why);
    }
    conn_close(c, reconnect, timed_out);
}

static void connect_failed(struct mc_conn *c, int err)
{
    c->mc->stats.connect_failures++;
    if (!c->down_logged) {
        c->down_logged = true;
        eng_log(ENG_LOG_WARNING,
                "memcached %s: cannot connect to %s: %s (operations on it fail until it is back)",
                conn_name(c), server_name(c), strerror(err));
    }
}

static void conn_up(struct mc_conn *c)
{
    c->state = MC_UP;
    eng_timer_cancel(c->ms->sh, &c->retry_timer);
    c->mc->stats.connects++;
    if (c->down_logged)
        eng_log(ENG_LOG_NOTICE, "memcached %s: connected to %s again", conn_name(c),
                server_name(c));
    c->down_logged = false;
    mark_dirty(c);
}

/* The shard lets go of a lookup in flight (resolve.h frees it when it is safe). */
static void resolve_drop(struct mc_conn *c)
{
    eng_resolve_drop(c->resolve);
    c->resolve = NULL;
}

static void resolve_failed(struct mc_conn *c, const char *why)
{
    c->mc->stats.connect_failures++;
    if (!c->down_logged) {
        c->down_logged = true;
        eng_log(ENG_LOG_WARNING,
                "memcached %s: cannot resolve %s: %s (operations on it fail until it resolves "
                "and connects; retrying with backoff)",
                conn_name(c), server_name(c), why);
    }
    go_down(c);
}

/* A connection to a server given by name: start its lookup, or look at the one in flight.
 * Returns true when c->addr holds a fresh address to connect to. */
static bool resolve_step(struct mc_conn *c)
{
    const struct mc_server *s = &c->mc->servers->srv[c->server];
    uint64_t now = eng_now_ms(c->ms->sh);
    if (!c->resolve) {
        char port[8];
        snprintf(port, sizeof(port), "%u", s->port);
        const struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        int rc = eng_resolve_start(s->host, port, &hints, &c->resolve);
        if (rc != 0) {
            resolve_failed(c, gai_strerror(rc));
            return false;
        }
        c->resolve_started_ms = now;
        c->state = MC_DOWN;
        eng_timer_arm(c->ms->sh, &c->retry_timer, MC_RESOLVE_POLL_MS);
        return false;
    }
    if (!eng_resolve_done(c->resolve)) {
        if (now - c->resolve_started_ms >= MC_RESOLVE_MAX_MS) {
            resolve_drop(c);
            resolve_failed(c, "the lookup timed out");
            return false;
        }
        eng_timer_arm(c->ms->sh, &c->retry_timer, MC_RESOLVE_POLL_MS);
        return false;
    }
    const struct addrinfo *ai = NULL;
    int rc = eng_resolve_result(c->resolve, &ai);
    bool ok = rc == 0 && ai->ai_addrlen <= sizeof(c->addr);
    if (ok) {
        memcpy(&c->addr, ai->ai_addr, ai->ai_addrlen);
        c->addr_len = ai->ai_addrlen;
    }
    resolve_drop(c);
    if (!ok)
        resolve_failed(c, rc ? gai_strerror(rc) : "address too long");
    return ok;
}

static void connect_start(struct mc_conn *c)
{
    const struct mc_server *s = &c->mc->servers->srv[c->server];
    if (s->by_name) {
        if (!resolve_step(c))
            return;
    } else {
        memcpy(&c->addr, &s->addr, s->addr_len);
        c->addr_len = s->addr_len;
    }
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(c, errno);
        go_down(c);
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* small requests */
    int rc = connect(fd, (const struct sockaddr *)&c->addr, c->addr_len);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        connect_failed(c, e);
        go_down(c);
        return;
    }
    c->fd = fd;
    if (rc == 0) {
        conn_up(c);
        return;
    }
    c->state = MC_CONNECTING;
    eng_timer_arm(c->ms->sh, &c->retry_timer, c->mc->cfg.connect_timeout_ms);
    mark_dirty(c);
}

/* A connect that did not complete (refused, unreachable, timed out): close, then back off. */
static void connect_abort(struct mc_conn *c, int err)
{
    ENG_ASSERT(c->state == MC_CONNECTING);
    connect_failed(c, err);
    conn_close(c, false, false);
}

/* ---------------------------------------------------------------------------------------------
 * Timers
 */

#define CONN_OF(t, field) ((struct mc_conn *)(void *)((char *)(t) - offsetof(struct mc_conn, field)))

static void op_timer_arm(struct mc_conn *c, uint64_t deadline_ms)
{
    if (c->timer_at_ms && c->timer_at_ms <= deadline_ms)
        return;
    uint64_t now = eng_now_ms(c->ms->sh);
    c->timer_at_ms = deadline_ms;
    eng_timer_arm(c->ms->sh, &c->op_timer, deadline_ms > now ? deadline_ms - now : 0);
}

/* The earliest deadline passed: if an operation is late, the connection is reset (its reply
 * can no longer be told apart from the next one's); otherwise wait for the next deadline. */
static void op_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    struct mc_conn *c = CONN_OF(t, op_timer);
    uint64_t now = eng_now_ms(sh), min = UINT64_MAX;
    c->timer_at_ms = 0;
    for (uint32_t i = c->fifo_head; i; i = op_at(c->mc, i)->next) {
        uint64_t d = op_at(c->mc, i)->deadline_ms;
        if (d <= now) {
            c->mc->stats.timeouts++;
            if (c->state == MC_CONNECTING)
                connect_abort(c, ETIMEDOUT);
            else
                conn_reset(c, false, true, "an operation timed out");
            return;
        }
        min = d < min ? d : min;
    }
    if (min != UINT64_MAX)
        op_timer_arm(c, min);
}

static void retry_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct mc_conn *c = CONN_OF(t, retry_timer);
    if (c->state == MC_CONNECTING)
        connect_abort(c, ETIMEDOUT);
    else if (c->state == MC_DOWN)
        connect_start(c);
}

static void kick_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    mark_dirty(CONN_OF(t, kick_timer));
}

/* ---------------------------------------------------------------------------------------------
 * Replies
 */

static void protocol_error(struct mc_conn *c, const char *why)
{
    c->mc->stats.protocol_errors++;
    conn_reset(c, false, false, why);
}

/* Matches the replies in the receive buffer to the FIFO. Returns false when the connection was
 * reset. */
static bool replies_run(struct mc_conn *c)
{
    struct eng_mc *mc = c->mc;
    while (c->r_head < c->r_len && c->state == MC_UP) {
        size_t avail = c->r_len - c->r_head;
        if (c->discard) {
            size_t d = avail < c->discard ? avail : (size_t)c->discard;
            c->r_head += d;
            c->discard -= d;
            continue;
        }
        if (!c->fifo_head) {
            protocol_error(c, "a reply nobody asked for");
            return false;
        }
        uint32_t i = c->fifo_head;
        struct mc_op *op = op_at(mc, i);
        enum eng_mc_cmd cmd = op->tail ? ENG_MC_CMD_GET_TAIL : (enum eng_mc_cmd)op->cmd;
        struct eng_mc_reply rep;
        long n = eng_mc_reply_parse(cmd, c->rbuf + c->r_head, avail, mc->cfg.value_bytes_max, &rep);
        if (n == 0)
            break;
        if (n < 0) {
            protocol_error(c, "a malformed reply");
            return false;
        }
        if (cmd == ENG_MC_CMD_GET && rep.value && rep.key_hash != op->key_hash) {
            protocol_error(c, "a reply for another key");
            return false;
        }
        c->r_head += (size_t)n;
        if (rep.discard_bytes) {
            op->tail = true;
            c->discard = rep.discard_bytes;
            continue;
        }
        c->fifo_head = op->next;
        if (!c->fifo_head)
            c->fifo_tail = 0;
        c->fifo_count--;
        mc->stats.replies++;
        c->backoff_ms = 0;
        op_complete(mc, i, rep.st, rep.value, rep.value_len);
    }
    if (c->r_head == c->r_len)
        c->r_head = c->r_len = 0;
    if (!c->fifo_head && c->timer_at_ms) {
        eng_timer_cancel(c->ms->sh, &c->op_timer);
        c->timer_at_ms = 0;
    }
    return true;
}

static void input(struct mc_conn *c, const char *data, size_t n)
{
    c->mc->stats.bytes_in += n;
    if (c->r_cap - c->r_len < n && c->r_head > 0) {
        memmove(c->rbuf, c->rbuf + c->r_head, c->r_len - c->r_head);
        c->r_len -= c->r_head;
        c->r_head = 0;
    }
    /* r_cap holds the largest reply plus one receive buffer, and replies_run leaves less than
     * one reply unparsed, so the new bytes always fit. */
    ENG_ASSERT(c->r_cap - c->r_len >= n);
    memcpy(c->rbuf + c->r_len, data, n);
    c->r_len += n;
    replies_run(c);
}

/* ---------------------------------------------------------------------------------------------
 * Completions (from the loop)
 */

static void recv_done(struct eng_shard *sh, struct mc_conn *c, const struct eng_cqe *cqe)
{
    if (!(cqe->flags & ENG_CQE_F_MORE))
        c->recv_armed = false;
    if (cqe->flags & ENG_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> ENG_CQE_BUF_SHIFT);
        if (cqe->res > 0 && c->state == MC_UP)
            input(c, eng_ring_buf(sh->ring, bid), (size_t)cqe->res);
        sh->ring->ops->buf_return(sh->ring, bid);
    }
    if (c->state != MC_UP)
        return;
    if (cqe->res == 0) {
        conn_reset(c, true, false, "closed by the server");
    } else if (cqe->res == -ENOBUFS) {
        c->mc->stats.recv_enobufs++;
        eng_timer_arm(sh, &c->kick_timer, 1); /* re-arm once buffers came back */
    } else if (cqe->res < 0) {
        conn_reset(c, true, false, strerror(-cqe->res));
    } else if (!c->recv_armed) {
        mark_dirty(c);
    }
}

static void send_done(struct mc_conn *c, const struct eng_cqe *cqe)
{
    ENG_ASSERT(c->send_inflight);
    c->send_inflight = false;
    if (c->state != MC_UP)
        return;
    if (cqe->res < 0) {
        conn_reset(c, true, false, strerror(-cqe->res));
        return;
    }
    c->mc->stats.bytes_out += (uint64_t)cqe->res;
    c->w_head += (uint32_t)cqe->res;
    ENG_ASSERT(c->w_head <= c->w_sent_end);
    if (c->w_head == c->w_len)
        c->w_head = c->w_sent_end = c->w_len = 0;
    else
        mark_dirty(c); /* the rest of a short send, or what was queued meanwhile */
}

static void poll_done(struct mc_conn *c, const struct eng_cqe *cqe)
{
    c->poll_armed = false;
    if (c->state != MC_CONNECTING)
        return;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (cqe->res < 0)
        soerr = -cqe->res;
    else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    if (soerr == 0 && (cqe->res & POLLOUT))
        conn_up(c);
    else
        connect_abort(c, soerr ? soerr : ECONNREFUSED);
}

void eng_mc_complete(struct eng_shard *sh, const struct eng_cqe *cqe)
{
    struct mc_shard *ms = tls_mc;
    ENG_ASSERT(ms != NULL);
    ENG_ASSERT(ms->sh == sh);
    uint32_t idx = eng_ud_idx(cqe->user_data), slot = idx >> 2, kind = idx & 3;
    ENG_ASSERT(slot < MC_SLOTS_MAX);
    struct mc_conn *c = ms->slots[slot];
    ENG_ASSERT(c != NULL);
    ENG_ASSERT(c->gen == eng_ud_gen(cqe->user_data));
    switch (kind) {
    case MC_KIND_RECV:
        recv_done(sh, c, cqe);
        break;
    case MC_KIND_SEND:
        send_done(c, cqe);
        break;
    case MC_KIND_POLL:
        poll_done(c, cqe);
        break;
    default:
        ENG_ASSERT(!"impossible memcached op kind");
    }
    if (c->state == MC_CLOSING)
        close_progress(c); /* may free c */
}

/* ---------------------------------------------------------------------------------------------
 * End of turn: deferred completions, then one send per connection with output
 */

static uint64_t ud_of(const struct mc_conn *c, uint32_t kind)
{
    return eng_ud(ENG_OP_MC, c->slot << 2 | kind, c->gen);
}

/* Returns false when the submission queue was full (retried on a later turn). */
static bool conn_flush(struct mc_conn *c)
{
    struct eng_ring *r = c->ms->sh->ring;
    switch (c->state) {
    case MC_CONNECTING:
        if (!c->poll_armed && r->ops->prep_poll(r, c->fd, POLLOUT, ud_of(c, MC_KIND_POLL)) == 0)
            c->poll_armed = true;
        return c->poll_armed;
    case MC_CLOSING:
        close_progress(c);
        return true;
    case MC_DOWN:
        return true;
    case MC_UP:
        break;
    }
    if (!c->recv_armed && r->ops->prep_recv(r, c->fd, ud_of(c, MC_KIND_RECV)) == 0)
        c->recv_armed = true;
    if (!c->send_inflight && c->w_len > c->w_head) {
        if (c->w_head > 0) {
            memmove(c->wbuf, c->wbuf + c->w_head, c->w_len - c->w_head);
            c->w_len -= c->w_head;
            c->w_head = 0;
        }
        if (r->ops->prep_send(r, c->fd, c->wbuf, c->w_len, ud_of(c, MC_KIND_SEND)) != 0)
            return false;
        c->send_inflight = true;
        c->w_sent_end = c->w_len;
        c->mc->stats.writes++;
    }
    return c->recv_armed;
}

void eng_mc_turn_end(struct eng_shard *sh)
{
    struct mc_shard *ms = tls_mc;
    if (!ms)
        return;
    ENG_ASSERT(ms->sh == sh);
    for (unsigned round = 0; round < MC_TURN_ROUNDS; round++) {
        if (ms->deferred) {
            ms->deferred = false;
            for (struct eng_mc *mc = ms->clients; mc; mc = mc->next)
                run_deferred(mc);
        }
        struct mc_conn *c = ms->dirty_head;
        ms->dirty_head = NULL;
        for (struct mc_conn *next; c; c = next) {
            next = c->dirty_next;
            c->dirty = false;
            if (!conn_flush(c))
                eng_timer_arm(sh, &c->kick_timer, 1); /* submission queue full */
        }
        if (!ms->deferred && !ms->dirty_head)
            return;
    }
    eng_timer_arm(sh, &ms->kick, 0); /* callbacks keep queueing: go on next turn */
}

static void shard_kick_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    (void)t; /* the turn end that follows does the work */
}

/* ---------------------------------------------------------------------------------------------
 * Clients
 */

static struct mc_shard *shard_state(struct eng_shard *sh)
{
    if (tls_mc)
        return tls_mc;
    struct mc_shard *ms = calloc(1, sizeof(*ms));
    if (!ms)
        return NULL;
    ms->sh = sh;
    eng_timer_init(&ms->kick, shard_kick_fired);
    tls_mc = ms;
    return ms;
}

static void shard_state_release(struct mc_shard *ms)
{
    if (ms->clients || ms->slots_used)
        return;
    eng_timer_cancel(ms->sh, &ms->kick);
    ENG_ASSERT(tls_mc == ms);
    tls_mc = NULL;
    free(ms);
}

static struct mc_conn *conn_new(struct eng_mc *mc, unsigned server)
{
    struct mc_shard *ms = mc->ms;
    uint32_t slot = 0;
    while (slot < MC_SLOTS_MAX && ms->slots[slot])
        slot++;
    struct mc_conn *c = slot < MC_SLOTS_MAX ? calloc(1, sizeof(*c)) : NULL;
    if (!c)
        return NULL;
    /* Receive: the largest reply (a VALUE line, the value, its CRLF and END) plus one provided
     * buffer, since one completion is appended before parsing. Send: out_bytes_max. */
    c->r_cap = (size_t)mc->cfg.value_bytes_max + ENG_MC_LINE_BYTES_MAX + 16 +
               mc->sh->eng->cfg.limits.recv_buf_bytes;
    c->w_cap = mc->cfg.out_bytes_max;
    c->rbuf = malloc(c->r_cap);
    c->wbuf = malloc(c->w_cap);
    if (!c->rbuf || !c->wbuf) {
        free(c->rbuf);
        free(c->wbuf);
        free(c);
        return NULL;
    }
    c->mc = mc;
    c->ms = ms;
    c->server = server;
    c->slot = slot;
    c->fd = -1;
    c->state = MC_DOWN;
    eng_timer_init(&c->op_timer, op_timer_fired);
    eng_timer_init(&c->retry_timer, retry_timer_fired);
    eng_timer_init(&c->kick_timer, kick_timer_fired);
    ms->slots[slot] = c;
    ms->slots_used++;
    return c;
}

static int config_check(const struct eng_mc_config *cfg)
{
    if (cfg->ops_max == 0 || cfg->ops_max >= (1u << 30) || cfg->timeout_ms == 0 ||
        cfg->connect_timeout_ms == 0 || cfg->backoff_min_ms == 0 ||
        cfg->backoff_max_ms < cfg->backoff_min_ms || cfg->value_bytes_max == 0 ||
        cfg->out_bytes_max < mc_request_bytes(ENG_MC_CMD_SET, ENG_MC_KEY_BYTES_MAX,
                                               cfg->value_bytes_max))
        return -EINVAL;
    char err[8];
    return eng_mc_prefix_check(cfg->prefix ? cfg->prefix : "", err, sizeof(err)) == 0 ? 0
                                                                                       : -EINVAL;
}

static int client_init(struct eng_mc *mc, const struct eng_mc_servers *servers,
                       const struct eng_mc_config *cfg)
{
    mc->cfg = *cfg;
    mc->servers = servers;
    mc->name = strdup(cfg->name ? cfg->name : "memcached");
    mc->prefix_len = strlen(cfg->prefix ? cfg->prefix : "");
    memcpy(mc->prefix, cfg->prefix ? cfg->prefix : "", mc->prefix_len + 1);
    mc->cfg.name = mc->name;
    mc->cfg.prefix = mc->prefix;
    mc->memc = memcached_clone(NULL, servers->memc);
    mc->ops = calloc(cfg->ops_max, sizeof(*mc->ops));
    mc->conns = calloc(servers->count, sizeof(*mc->conns));
    if (!mc->name || !mc->memc || !mc->ops || !mc->conns)
        return -ENOMEM;
    for (uint32_t i = cfg->ops_max; i > 0; i--) {
        mc->ops[i - 1].next = mc->free_op;
        mc->free_op = i;
    }
    for (unsigned s = 0; s < servers->count; s++)
        if (!(mc->conns[s] = conn_new(mc, s)))
            return -ENOMEM;
    return 0;
}

static void client_free(struct eng_mc *mc)
{
    for (unsigned s = 0; mc->conns && s < mc->servers->count; s++)
        if (mc->conns[s])
            conn_free(mc->conns[s]);
    free(mc->conns);
    free(mc->ops);
    if (mc->memc)
        memcached_free(mc->memc);
    free(mc->name);
    free(mc);
}

int eng_mc_create(struct eng_shard *sh, const struct eng_mc_servers *servers,
                  const struct eng_mc_config *cfg, struct eng_mc **out)
{
    eng_assert_on_shard(sh);
    ENG_ASSERT(servers != NULL);
    if (config_check(cfg) != 0)
        return -EINVAL;
    struct mc_shard *ms = shard_state(sh);
    struct eng_mc *mc = ms ? calloc(1, sizeof(*mc)) : NULL;
    if (!mc) {
        if (ms)
            shard_state_release(ms);
        return -ENOMEM;
    }
    mc->sh = sh;
    mc->ms = ms;
    int rc = client_init(mc, servers, cfg);
    if (rc != 0) {
        client_free(mc);
        shard_state_release(ms);
        return rc;
    }
    mc->next = ms->clients;
    ms->clients = mc;
    for (unsigned s = 0; s < servers->count; s++)
        connect_start(mc->conns[s]);
    *out = mc;
    return 0;
}

/* Detaches a destroyed client's connection: closes it now when the ring holds nothing of it,
 * else leaves it as a zombie that closes on its last completion. */
static void conn_retire(struct mc_conn *c)
{
    resolve_drop(c);
    eng_timer_cancel(c->ms->sh, &c->op_timer);
    eng_timer_cancel(c->ms->sh, &c->retry_timer);
    c->timer_at_ms = 0;
    fifo_fail(c, false);
    c->mc = NULL;
    if (c->fd < 0) {
        conn_free(c);
        return;
    }
    c->state = MC_CLOSING;
    close_progress(c); /* frees c when nothing is in flight */
}

void eng_mc_shard_exit(struct eng_shard *sh)
{
    struct mc_shard *ms = tls_mc;
    if (!ms)
        return;
    ENG_ASSERT(ms->sh == sh);
    for (uint32_t s = 0; s < MC_SLOTS_MAX && ms->slots_used; s++) {
        struct mc_conn *c = ms->slots[s];
        if (!c || c->mc)
            continue;
        if (c->fd >= 0)
            close(c->fd); /* the ring's operations on it end with the ring */
        conn_free(c);
    }
    shard_state_release(ms);
}

void eng_mc_destroy(struct eng_mc *mc)
{
    if (!mc)
        return;
    struct mc_shard *ms = mc->ms;
    eng_assert_on_shard(mc->sh);
    for (struct eng_mc **pp = &ms->clients; *pp; pp = &(*pp)->next) {
        if (*pp == mc) {
            *pp = mc->next;
            break;
        }
    }
    run_deferred(mc);
    for (unsigned s = 0; s < mc->servers->count; s++) {
        struct mc_conn *c = mc->conns[s];
        mc->conns[s] = NULL;
        if (c->dirty) { /* unlink: the dirty list must not keep it */
            struct mc_conn **pp = &ms->dirty_head;
            while (*pp != c)
                pp = &(*pp)->dirty_next;
            *pp = c->dirty_next;
            c->dirty = false;
        }
        conn_retire(c);
    }
    client_free(mc);
    shard_state_release(ms);
}

/* ---------------------------------------------------------------------------------------------
 * Operations
 */

unsigned eng_mc_server_of(const struct eng_mc *mc, const char *key, size_t key_len)
{
    char ek[ENG_MC_KEY_BYTES_MAX + 1];
    size_t n = eng_mc_key_encode(mc->prefix, mc->prefix_len, key, key_len, ek);
    if (mc->servers->count == 1)
        return 0;
    uint32_t s = memcached_generate_hash(mc->memc, ek, n);
    ENG_ASSERT(s < mc->servers->count);
    return s;
}

bool eng_mc_server_up(const struct eng_mc *mc, unsigned idx)
{
    ENG_ASSERT(idx < mc->servers->count);
    return mc->conns[idx]->state == MC_UP;
}

static uint64_t exptime_wire(uint32_t exptime_s)
{
    if (exptime_s <= ENG_MC_EXPTIME_RELATIVE_MAX)
        return exptime_s;
    return (uint64_t)time(NULL) + exptime_s; /* memcached reads large values as Unix times */
}

static void fifo_push(struct mc_conn *c, uint32_t i)
{
    op_at(c->mc, i)->next = 0;
    if (c->fifo_tail)
        op_at(c->mc, c->fifo_tail)->next = i;
    else
        c->fifo_head = i;
    c->fifo_tail = i;
    c->fifo_count++;
}

/* Room for need bytes at the end of the output buffer, compacting when no send reads it. */
static bool out_room(struct mc_conn *c, size_t need)
{
    if (c->w_cap - c->w_len >= need)
        return true;
    if (c->send_inflight || c->w_head == 0)
        return false;
    memmove(c->wbuf, c->wbuf + c->w_head, c->w_len - c->w_head);
    c->w_len -= c->w_head;
    c->w_head = 0;
    return c->w_cap - c->w_len >= need;
}

static int op_queue(struct eng_mc *mc, enum eng_mc_cmd cmd, const char *key, size_t key_len,
                    uint64_t num, const void *value, size_t value_len, uint32_t timeout_ms,
                    eng_mc_done_fn *done, void *ctx)
{
    eng_assert_on_shard(mc->sh);
    ENG_ASSERT(done != NULL);
    if (value_len > mc->cfg.value_bytes_max) {
        mc->stats.refused++;
        return -E2BIG;
    }
    char ek[ENG_MC_KEY_BYTES_MAX + 1];
    size_t ekl = eng_mc_key_encode(mc->prefix, mc->prefix_len, key, key_len, ek);
    struct mc_conn *c =
        mc->conns[mc->servers->count == 1 ? 0 : memcached_generate_hash(mc->memc, ek, ekl)];
    size_t need = mc_request_bytes(cmd, ekl, value_len);
    bool down = c->state == MC_DOWN || c->state == MC_CLOSING;
    uint32_t i = (down || out_room(c, need)) ? op_take(mc) : 0;
    if (!i) {
        mc->stats.refused++;
        return -ENOBUFS;
    }
    struct mc_op *op = op_at(mc, i);
    op->cmd = (uint8_t)cmd;
    op->done = done;
    op->ctx = ctx;
    mc->stats.ops++;
    if (down) {
        mc->stats.fail_fast++;
        defer_op(mc, i, ENG_MC_DOWN);
        return 0;
    }
    op->key_hash = cmd == ENG_MC_CMD_GET ? eng_mc_key_hash(ek, ekl) : 0;
    op->deadline_ms = eng_now_ms(mc->sh) + (timeout_ms ? timeout_ms : mc->cfg.timeout_ms);
    c->w_len += (uint32_t)mc_request_format(c->wbuf + c->w_len, cmd, ek, ekl, num, value,
                                            value_len);
    ENG_ASSERT(c->w_len <= c->w_cap);
    fifo_push(c, i);
    op_timer_arm(c, op->deadline_ms);
    if (c->state == MC_UP)
        mark_dirty(c);
    return 0;
}

int eng_mc_get(struct eng_mc *mc, const char *key, size_t key_len, uint32_t timeout_ms,
               eng_mc_done_fn *done, void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_GET, key, key_len, 0, NULL, 0, timeout_ms, done, ctx);
}

int eng_mc_set(struct eng_mc *mc, const char *key, size_t key_len, const void *value,
               size_t value_len, uint32_t exptime_s, uint32_t timeout_ms, eng_mc_done_fn *done,
               void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_SET, key, key_len, exptime_wire(exptime_s), value, value_len,
                    timeout_ms, done, ctx);
}

int eng_mc_add(struct eng_mc *mc, const char *key, size_t key_len, const void *value,
               size_t value_len, uint32_t exptime_s, uint32_t timeout_ms, eng_mc_done_fn *done,
               void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_ADD, key, key_len, exptime_wire(exptime_s), value, value_len,
                    timeout_ms, done, ctx);
}

int eng_mc_delete(struct eng_mc *mc, const char *key, size_t key_len, uint32_t timeout_ms,
                  eng_mc_done_fn *done, void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_DELETE, key, key_len, 0, NULL, 0, timeout_ms, done, ctx);
}

int eng_mc_incr(struct eng_mc *mc, const char *key, size_t key_len, uint64_t delta,
                uint32_t timeout_ms, eng_mc_done_fn *done, void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_INCR, key, key_len, delta, NULL, 0, timeout_ms, done, ctx);
}

int eng_mc_touch(struct eng_mc *mc, const char *key, size_t key_len, uint32_t exptime_s,
                 uint32_t timeout_ms, eng_mc_done_fn *done, void *ctx)
{
    return op_queue(mc, ENG_MC_CMD_TOUCH, key, key_len, exptime_wire(exptime_s), NULL, 0,
                    timeout_ms, done, ctx);
}

void eng_mc_get_stats(const struct eng_mc *mc, struct eng_mc_stats *out)
{
    *out = mc->stats;
}
