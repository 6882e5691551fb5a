/*
 * redis.c: a Redis client per shard on hiredis 0.14's async API (eng/redis.h).
 *
 * One connection per client. hiredis owns the socket and its buffers; its five event hooks are
 * mapped onto one eng_poll (POLLIN once connected, POLLOUT while hiredis has output or the
 * connect is under way), so the shard's loop drives it without blocking. Commands take a slot
 * from a pool allocated at create; the slot is hiredis' privdata and carries the caller's done,
 * a deadline timer and a state:
 *   SENT      in hiredis' reply queue; done runs when the reply (or the connection's end) comes;
 *   ABANDONED its deadline passed and done already ran (TIMEOUT); hiredis still holds the
 *             pointer until the connection is freed, which the timeout does at once;
 *   FAILING   no connection: done runs with DOWN from a 1 ms timer (never inside the call).
 * A connection is in one of: WAIT (none; the backoff timer will start one), CONNECTING (hiredis
 * context exists, connect or AUTH/SELECT under way, guarded by the connect timer) and UP.
 * Commands issued while CONNECTING queue behind AUTH/SELECT. Any failure frees the context
 * (hiredis completes every queued command with a NULL reply: DOWN) and arms the backoff timer;
 * reconnection is never started in the turn that closed the old socket (the epoll backend
 * registers an fd number once per turn; a new socket may get the same number).
 *
 * Host names (of the server, or of sentinels) are resolved at every connection attempt, off
 * the shard (resolve.c: glibc's getaddrinfo_a helper thread, polled from resolve_timer every
 * REDIS_RESOLVE_POLL_MS and bounded by connect_timeout_ms, eng_resolve_poll_step); its IPv4
 * address is used when it has one, else the first address found. A name that does not
 * resolve is a failed attempt (logged once per outage, backoff), so a
 * server whose name appears later (a Kubernetes Service) is connected without a restart, and
 * a name that moves is followed at the next reconnect. Numeric addresses need no lookup.
 *
 * With sentinels configured, an attempt first connects to one sentinel (in turn) and asks
 * `SENTINEL get-master-addr-by-name SERVICE` on that context ("asking": commands fail fast
 * meanwhile, none is ever queued on a sentinel's connection); the answer ends that context and
 * the master's connect starts on the next turn. Any lost or failed master connection forgets
 * the master, so the next attempt asks again and follows a failover.
 *
 * Owns: the hiredis context (and so the socket), the slot array. Thread: the client's shard.
 * Failures are counted and logged once per outage (connect failures) or per event (handshake
 * errors, timeouts).
 */
#include "eng/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "resolve.h"

#define REDIS_NAME_BYTES 64
#define REDIS_NEXT_TURN_MS 1u /* a timer that fires on a later turn, not in this wheel pass */
#define REDIS_RESOLVE_POLL_MS 5u /* how often a shard looks at a lookup in flight */

enum slot_state { S_FREE, S_SENT, S_ABANDONED, S_FAILING };
enum conn_state { C_WAIT, C_CONNECTING, C_UP };

struct redis_slot {
    struct eng_timer timer; /* first: the deadline, or the fail-fast delivery */
    struct eng_redis *owner;
    eng_redis_done_fn *done;
    void *ctx;
    uint32_t next_free; /* index + 1 */
    uint8_t state;
};

struct eng_redis {
    struct eng_shard *sh;
    struct eng_redis_config cfg;
    char name[REDIS_NAME_BYTES];
    char *host, *unix_path, *password;
    redisAsyncContext *ac; /* NULL in C_WAIT */
    enum conn_state state;
    uint32_t handshake_pending; /* AUTH/SELECT replies still to come */
    uint32_t failures;          /* consecutive failed attempts, for the backoff */
    bool polling, stopping, outage_logged;
    uint32_t events;
    struct eng_poll poll;
    struct eng_timer connect_timer; /* CONNECTING: the attempt's deadline */
    struct eng_timer backoff_timer; /* WAIT: start the next attempt */
    struct redis_slot *slots;
    uint32_t free_slot;
    struct eng_redis_stats stats;
    /* Sentinel (sentinel_count 0: none) */
    struct {
        char host[ENG_RESOLVE_HOST_MAX + 1]; /* numeric, or a name resolved per attempt */
        uint16_t port;
    } sentinels[ENG_REDIS_SENTINELS_MAX];
    uint32_t sentinel_count, sentinel_next;
    char *service;
    bool asking;      /* ac is a sentinel's connection, asked for the master */
    bool have_master; /* master_host/master_port hold the last answer */
    char master_host[ENG_REDIS_HOST_BYTES];
    uint16_t master_port;
    char peer[ENG_REDIS_HOST_BYTES + 8]; /* what the current or last master attempt targets */
    /* Host names: one lookup at a time, for the attempt under way */
    struct eng_resolve_poll rp;
    struct eng_timer resolve_timer;
    char resolved[ENG_REDIS_HOST_BYTES]; /* the numeric address of the last lookup */
};

const char *eng_redis_status_text(enum eng_redis_status st)
{
    static const char *const text[] = {"ok", "nil", "error reply", "down", "timeout"};
    _Static_assert(sizeof text / sizeof text[0] == ENG_REDIS_STATUS_COUNT, "one text per status");
    return (unsigned)st < ENG_REDIS_STATUS_COUNT ? text[st] : "?";
}

void eng_redis_config_defaults(struct eng_redis_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->port = 6379;
    cfg->ops_max = 4096;
    cfg->timeout_ms = 1000;
    cfg->connect_timeout_ms = 1000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
}

/* ---------------------------------------------------------------------------------------------
 * Slots
 */

static struct redis_slot *slot_take(struct eng_redis *r)
{
    uint32_t i = r->free_slot;
    if (!i)
        return NULL;
    struct redis_slot *s = &r->slots[i - 1];
    ENG_ASSERT(s->state == S_FREE);
    r->free_slot = s->next_free;
    s->next_free = 0;
    r->stats.queue_depth++;
    if (r->stats.queue_depth > r->stats.queue_depth_max)
        r->stats.queue_depth_max = r->stats.queue_depth;
    return s;
}

static void slot_put(struct eng_redis *r, struct redis_slot *s)
{
    ENG_ASSERT(s->state != S_FREE);
    ENG_ASSERT(!eng_timer_armed(&s->timer));
    s->state = S_FREE;
    s->done = NULL;
    s->next_free = r->free_slot;
    r->free_slot = (uint32_t)(s - r->slots) + 1;
    ENG_ASSERT(r->stats.queue_depth > 0);
    r->stats.queue_depth--;
}

/* Runs done once; the slot stays taken when hiredis still holds it (keep). */
static void slot_complete(struct eng_redis *r, struct redis_slot *s, enum eng_redis_status st,
                          const struct eng_redis_reply *rep, bool keep)
{
    eng_redis_done_fn *done = s->done;
    void *ctx = s->ctx;
    ENG_ASSERT(done != NULL);
    eng_timer_cancel(r->sh, &s->timer);
    r->stats.status[st]++;
    if (keep) {
        s->state = S_ABANDONED;
        s->done = NULL;
    } else {
        slot_put(r, s);
    }
    static const struct eng_redis_reply none = {.type = ENG_REDIS_T_NONE};
    done(ctx, st, rep ? rep : &none);
}

/* ---------------------------------------------------------------------------------------------
 * The connection
 */

static void conn_reset(struct eng_redis *r, const char *why, bool failure);

static void on_poll(struct eng_shard *sh, struct eng_poll *p, uint32_t revents);

static void ev_set(struct eng_redis *r, uint32_t add, uint32_t del)
{
    uint32_t ev = (r->events | add) & ~del;
    if (ev == r->events && r->polling)
        return;
    r->events = ev;
    if (!r->ac || r->ac->c.fd < 0)
        return;
    uint32_t want = ev ? ev : POLLIN;
    int rc;
    if (r->polling) {
        rc = eng_poll_update(r->sh, &r->poll, want);
    } else {
        rc = eng_poll_start(r->sh, &r->poll, r->ac->c.fd, want, on_poll);
        r->polling = rc == 0;
    }
    if (rc != 0)
        eng_log(ENG_LOG_ERR, "redis %s: cannot poll its socket: %s", r->name, strerror(-rc));
}

static void ev_add_read(void *p)
{
    ev_set(p, POLLIN, 0);
}
static void ev_del_read(void *p)
{
    ev_set(p, 0, POLLIN);
}
static void ev_add_write(void *p)
{
    ev_set(p, POLLOUT, 0);
}
static void ev_del_write(void *p)
{
    ev_set(p, 0, POLLOUT);
}
static void ev_cleanup(void *p)
{
    struct eng_redis *r = p;
    if (r->polling)
        eng_poll_stop(r->sh, &r->poll);
    r->polling = false;
    r->events = 0;
}

static void on_poll(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct eng_redis *r = (struct eng_redis *)(void *)((char *)p - offsetof(struct eng_redis, poll));
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    /* hiredis may free ac inside either handler (the connection ended): check before the
     * second. While connecting, the write handler completes the connect. */
    if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))
        redisAsyncHandleWrite(ac);
    if (r->ac == ac && (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)))
        redisAsyncHandleRead(ac);
}

/* Connected, AUTH/SELECT accepted: the attempt is over. */
static void conn_ready(struct eng_redis *r)
{
    eng_timer_cancel(r->sh, &r->connect_timer);
    r->failures = 0;
    if (r->outage_logged)
        eng_log(ENG_LOG_NOTICE, "redis %s: connected again", r->name);
    r->outage_logged = false;
}

static void handshake_done(redisAsyncContext *ac, void *reply, void *priv)
{
    struct eng_redis *r = priv;
    redisReply *rep = reply;
    if (r->ac != ac || !rep)
        return; /* the connection is going away; that path counts it */
    if (rep->type == REDIS_REPLY_ERROR) {
        r->stats.handshake_errors++;
        char why[160];
        snprintf(why, sizeof(why), "AUTH/SELECT refused: %.120s", rep->str ? rep->str : "");
        conn_reset(r, why, true);
        return;
    }
    ENG_ASSERT(r->handshake_pending > 0);
    if (--r->handshake_pending == 0 && r->state == C_UP)
        conn_ready(r);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    struct eng_redis *r = cac->data;
    if (r->ac != cac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        char why[160];
        snprintf(why, sizeof(why), "cannot connect: %.120s", cac->errstr);
        r->ac = NULL; /* ev_cleanup runs from hiredis' free and stops the poll */
        conn_reset(r, why, true);
        return;
    }
    if (r->asking)
        return; /* the sentinel's answer ends this connection */
    r->state = C_UP;
    r->stats.connects++;
    if (r->handshake_pending == 0)
        conn_ready(r);
}

/* A sentinel's answer to SENTINEL get-master-addr-by-name: an array of the master's address and
 * port, or nil for an unknown service. */
static void sentinel_done(redisAsyncContext *ac, void *reply, void *priv)
{
    struct eng_redis *r = priv;
    redisReply *rep = reply;
    if (r->ac != ac || !r->asking || !rep)
        return; /* the connection is going away; that path counts it */
    char why[360];
    unsigned char bin[sizeof(struct in6_addr)];
    const uint32_t si = (r->sentinel_next + r->sentinel_count - 1) % r->sentinel_count;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, sizeof(why), "sentinel %s:%u does not name a master for '%.64s'%s%.64s",
                 r->sentinels[si].host, r->sentinels[si].port, r->service,
                 rep->type == REDIS_REPLY_ERROR ? ": " : "",
                 rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "");
        conn_reset(r, why, true);
        return;
    }
    const redisReply *h = rep->element[0], *p = rep->element[1];
    char host[ENG_REDIS_HOST_BYTES] = "";
    char *end = NULL;
    long port = 0;
    if (h->len < sizeof(host)) {
        memcpy(host, h->str, h->len);
        host[h->len] = '\0';
    }
    if (p->len > 0 && p->len < 6)
        port = strtol(p->str, &end, 10);
    if (!host[0] || (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1) ||
        !end || *end || port <= 0 || port > 65535) {
        snprintf(why, sizeof(why),
                 "sentinel %s:%u names master '%.64s' at an address that is not numeric "
                 "(host %.64s, port %.8s)",
                 r->sentinels[si].host, r->sentinels[si].port, r->service, h->str, p->str);
        conn_reset(r, why, true);
        return;
    }
    if (!r->have_master || strcmp(host, r->master_host) != 0 || r->master_port != port)
        eng_log(ENG_LOG_NOTICE, "redis %s: sentinel %s:%u: master '%s' is %s:%ld", r->name,
                r->sentinels[si].host, r->sentinels[si].port, r->service, host, port);
    memcpy(r->master_host, host, sizeof(host));
    r->master_port = (uint16_t)port;
    r->have_master = true;
    /* End the sentinel's connection (hiredis frees it after this callback); the master's
     * connect starts on a later turn (the epoll backend registers an fd number once per turn). */
    r->asking = false;
    r->ac = NULL;
    r->state = C_WAIT;
    eng_timer_cancel(r->sh, &r->connect_timer);
    redisAsyncFree(ac);
    eng_timer_arm(r->sh, &r->backoff_timer, REDIS_NEXT_TURN_MS);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    (void)status;
    struct eng_redis *r = cac->data;
    if (r->ac != cac)
        return; /* we freed it ourselves */
    r->ac = NULL; /* hiredis frees it after this callback */
    conn_reset(r, cac->errstr[0] ? cac->errstr : "connection closed", false);
}

/* A reply or the end of the connection (reply NULL) for one command. */
static void command_done(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct redis_slot *s = priv;
    struct eng_redis *r = s->owner;
    redisReply *rep = reply;
    if (s->state == S_ABANDONED) {
        slot_put(r, s);
        return;
    }
    ENG_ASSERT(s->state == S_SENT);
    if (!rep) {
        slot_complete(r, s, ENG_REDIS_DOWN, NULL, false);
        return;
    }
    struct eng_redis_reply out = {.integer = rep->integer, .elements = rep->elements};
    enum eng_redis_status st = ENG_REDIS_OK;
    switch (rep->type) {
    case REDIS_REPLY_STRING:
        out.type = ENG_REDIS_T_STRING;
        break;
    case REDIS_REPLY_STATUS:
        out.type = ENG_REDIS_T_STATUS;
        break;
    case REDIS_REPLY_INTEGER:
        out.type = ENG_REDIS_T_INTEGER;
        break;
    case REDIS_REPLY_ARRAY:
        out.type = ENG_REDIS_T_ARRAY;
        break;
    case REDIS_REPLY_NIL:
        out.type = ENG_REDIS_T_NIL;
        st = ENG_REDIS_NIL;
        break;
    default:
        out.type = ENG_REDIS_T_ERROR;
        st = ENG_REDIS_ERROR;
        break;
    }
    if (out.type == ENG_REDIS_T_STRING || out.type == ENG_REDIS_T_STATUS ||
        out.type == ENG_REDIS_T_ERROR) {
        out.str = rep->str ? rep->str : "";
        out.len = rep->str ? rep->len : 0;
    }
    slot_complete(r, s, st, &out, false);
}

static void backoff_fired(struct eng_shard *sh, struct eng_timer *t);

static bool is_numeric(const char *host)
{
    unsigned char bin[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}

static void resolve_drop(struct eng_redis *r)
{
    eng_resolve_poll_drop(&r->rp);
    eng_timer_cancel(r->sh, &r->resolve_timer);
}

/* The attempt's host is a name: start its lookup or look at the one in flight. Returns the
 * numeric address once known (r->resolved), or NULL: the lookup goes on (resolve_timer armed)
 * or failed (*why set). */
static const char *resolve_step(struct eng_redis *r, const char *host, char *why, size_t why_len)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    int rc = eng_resolve_poll_step(&r->rp, eng_now_ms(r->sh), r->cfg.connect_timeout_ms, host,
                                   NULL, &ss, &len, why, why_len);
    if (rc == 0) {
        eng_timer_arm(r->sh, &r->resolve_timer, REDIS_RESOLVE_POLL_MS);
        return NULL;
    }
    if (rc < 0)
        return NULL;
    int nrc = getnameinfo((const struct sockaddr *)&ss, len, r->resolved, sizeof(r->resolved),
                          NULL, 0, NI_NUMERICHOST);
    if (nrc != 0) {
        snprintf(why, why_len, "cannot resolve %.200s: %s", host, gai_strerror(nrc));
        return NULL;
    }
    return r->resolved;
}

static void connect_start(struct eng_redis *r);

static void resolve_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_redis *r =
        (struct eng_redis *)(void *)((char *)t - offsetof(struct eng_redis, resolve_timer));
    if (!r->stopping && r->state == C_WAIT && !r->ac)
        connect_start(r);
}

static void connect_start(struct eng_redis *r)
{
    ENG_ASSERT(r->ac == NULL);
    bool ask = r->sentinel_count > 0 && !r->have_master;
    const char *host = NULL;
    uint16_t port = r->cfg.port;
    if (ask) {
        host = r->sentinels[r->sentinel_next].host;
        port = r->sentinels[r->sentinel_next].port;
    } else if (r->sentinel_count > 0) {
        host = r->master_host;
        port = r->master_port;
    } else if (!r->unix_path) {
        host = r->host;
    }
    if (host && !is_numeric(host)) {
        char why[300] = "";
        const char *addr = resolve_step(r, host, why, sizeof(why));
        if (!addr) {
            if (why[0]) { /* a failed attempt (a sentinel's counts as asking it) */
                if (ask)
                    r->sentinel_next = (r->sentinel_next + 1) % r->sentinel_count;
                r->asking = ask;
                r->stats.sentinel_queries += ask;
                conn_reset(r, why, true);
            }
            return;
        }
        host = addr;
    }
    if (!ask && r->sentinel_count == 0 && !r->unix_path)
        snprintf(r->peer, sizeof(r->peer), "%s:%u", host, port);
    redisAsyncContext *ac;
    if (ask) {
        r->sentinel_next = (r->sentinel_next + 1) % r->sentinel_count;
        r->stats.sentinel_queries++;
        ac = redisAsyncConnect(host, port);
    } else if (r->sentinel_count > 0) {
        snprintf(r->peer, sizeof(r->peer), "%s:%u", r->master_host, r->master_port);
        ac = redisAsyncConnect(host, port);
    } else {
        ac = r->unix_path ? redisAsyncConnectUnix(r->unix_path) : redisAsyncConnect(host, port);
    }
    r->asking = ask;
    if (!ac) {
        r->state = C_WAIT;
        conn_reset(r, "cannot create a hiredis context: out of memory", true);
        return;
    }
    if (ac->err) {
        char why[160];
        snprintf(why, sizeof(why), "cannot connect: %.120s", ac->errstr);
        redisAsyncFree(ac);
        conn_reset(r, why, true);
        return;
    }
    r->ac = ac;
    r->state = C_CONNECTING;
    r->handshake_pending = 0;
    r->events = 0;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    eng_timer_arm(r->sh, &r->connect_timer, r->cfg.connect_timeout_ms);
    if (ask) {
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", r->service};
        size_t len[] = {8, 23, strlen(r->service)};
        if (redisAsyncCommandArgv(ac, sentinel_done, r, 3, argv, len) != REDIS_OK) {
            conn_reset(r, "cannot format the SENTINEL command: out of memory", true);
            return;
        }
        ev_set(r, POLLOUT, 0);
        return;
    }
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        size_t len[] = {4, strlen(r->password)};
        if (redisAsyncCommandArgv(ac, handshake_done, r, 2, argv, len) == REDIS_OK)
            r->handshake_pending++;
    }
    if (r->cfg.db) {
        char db[16];
        int n = snprintf(db, sizeof(db), "%u", r->cfg.db);
        const char *argv[] = {"SELECT", db};
        size_t len[] = {6, (size_t)n};
        if (redisAsyncCommandArgv(ac, handshake_done, r, 2, argv, len) == REDIS_OK)
            r->handshake_pending++;
    }
    ev_set(r, POLLOUT, 0); /* the connect completes when the socket becomes writable */
}

static void backoff_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_redis *r =
        (struct eng_redis *)(void *)((char *)t - offsetof(struct eng_redis, backoff_timer));
    if (!r->stopping && r->state == C_WAIT && !r->ac)
        connect_start(r);
}

static void connect_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_redis *r =
        (struct eng_redis *)(void *)((char *)t - offsetof(struct eng_redis, connect_timer));
    if (r->ac)
        conn_reset(r, r->state == C_UP ? "AUTH/SELECT not answered in time" : "connect timed out",
                   true);
}

/* Ends the current connection (if any): every command in it completes with DOWN (ABANDONED
 * ones are just released), then a new attempt is due after the backoff. */
static void conn_reset(struct eng_redis *r, const char *why, bool failure)
{
    redisAsyncContext *ac = r->ac;
    bool was_up = r->state == C_UP;
    char named[400];
    if (r->asking) {
        r->stats.sentinel_failures++;
        failure = true; /* the next attempt asks the next sentinel */
        if (strncmp(why, "sentinel ", 9) != 0) {
            uint32_t si = (r->sentinel_next + r->sentinel_count - 1) % r->sentinel_count;
            snprintf(named, sizeof(named), "sentinel %s:%u: %s", r->sentinels[si].host,
                     r->sentinels[si].port, why);
            why = named;
        }
    } else {
        r->have_master = false; /* ask the sentinels again: the master may have moved */
    }
    r->asking = false;
    r->ac = NULL;
    r->state = C_WAIT;
    r->handshake_pending = 0;
    eng_timer_cancel(r->sh, &r->connect_timer);
    if (failure) {
        r->stats.connect_failures += !was_up;
        r->failures++;
    }
    r->stats.resets += was_up;
    if (!r->outage_logged && !r->stopping) {
        eng_log(ENG_LOG_WARNING, "redis %s: %s; commands fail until it is back", r->name, why);
        r->outage_logged = true;
    }
    if (ac)
        redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
    if (r->stopping)
        return;
    uint64_t delay = r->cfg.backoff_min_ms;
    for (uint32_t i = 1; i < r->failures && delay < r->cfg.backoff_max_ms; i++)
        delay *= 2;
    if (delay > r->cfg.backoff_max_ms)
        delay = r->cfg.backoff_max_ms;
    if (delay < REDIS_NEXT_TURN_MS)
        delay = REDIS_NEXT_TURN_MS;
    eng_timer_arm(r->sh, &r->backoff_timer, delay);
}

/* ---------------------------------------------------------------------------------------------
 * Public API
 */

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s || !*s)
        return NULL;
    char *d = strdup(s);
    *oom = *oom || !d;
    return d;
}

static void slot_timer_fired(struct eng_shard *sh, struct eng_timer *t);

int eng_redis_create(struct eng_shard *sh, const struct eng_redis_config *cfg,
                     struct eng_redis **out)
{
    ENG_ASSERT(sh == eng_shard_self());
    if ((!cfg->host || !*cfg->host) && (!cfg->unix_path || !*cfg->unix_path) &&
        cfg->sentinel_count == 0)
        return -EINVAL;
    if (cfg->sentinel_count > ENG_REDIS_SENTINELS_MAX ||
        (cfg->sentinel_count > 0 && (!cfg->service || !*cfg->service || !cfg->sentinels)))
        return -EINVAL;
    for (uint32_t i = 0; i < cfg->sentinel_count; i++) {
        const char *h = cfg->sentinels[i].host;
        if (!h || !*h || strlen(h) > ENG_RESOLVE_HOST_MAX || cfg->sentinels[i].port == 0)
            return -EINVAL;
    }
    if (cfg->host && strlen(cfg->host) > ENG_RESOLVE_HOST_MAX)
        return -EINVAL;
    if (cfg->ops_max == 0 || cfg->timeout_ms == 0 || cfg->connect_timeout_ms == 0)
        return -EINVAL;
    struct eng_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    bool oom = false;
    r->sh = sh;
    r->cfg = *cfg;
    snprintf(r->name, sizeof(r->name), "%s", cfg->name ? cfg->name : "redis");
    r->host = dup_or_null(cfg->host, &oom);
    r->unix_path = dup_or_null(cfg->unix_path, &oom);
    r->password = dup_or_null(cfg->password, &oom);
    r->service = dup_or_null(cfg->sentinel_count ? cfg->service : NULL, &oom);
    r->slots = calloc(cfg->ops_max, sizeof(*r->slots));
    if (oom || !r->slots) {
        free(r->host);
        free(r->unix_path);
        free(r->password);
        free(r->service);
        free(r->slots);
        free(r);
        return -ENOMEM;
    }
    r->cfg.name = r->name;
    r->cfg.host = r->host;
    r->cfg.unix_path = r->unix_path;
    r->cfg.password = r->password;
    r->sentinel_count = cfg->sentinel_count;
    for (uint32_t i = 0; i < cfg->sentinel_count; i++) {
        snprintf(r->sentinels[i].host, sizeof(r->sentinels[i].host), "%s",
                 cfg->sentinels[i].host);
        r->sentinels[i].port = cfg->sentinels[i].port;
    }
    r->cfg.sentinels = NULL; /* copied above */
    r->cfg.service = r->service;
    if (r->sentinel_count == 0 && r->unix_path)
        snprintf(r->peer, sizeof(r->peer), "%s", r->unix_path);
    eng_timer_init(&r->resolve_timer, resolve_fired);
    for (uint32_t i = cfg->ops_max; i > 0; i--) {
        struct redis_slot *s = &r->slots[i - 1];
        eng_timer_init(&s->timer, slot_timer_fired);
        s->owner = r;
        s->next_free = r->free_slot;
        r->free_slot = i;
    }
    eng_timer_init(&r->connect_timer, connect_timer_fired);
    eng_timer_init(&r->backoff_timer, backoff_fired);
    r->state = C_WAIT;
    connect_start(r);
    *out = r;
    return 0;
}

void eng_redis_destroy(struct eng_redis *r)
{
    if (!r)
        return;
    ENG_ASSERT(r->sh == eng_shard_self());
    r->stopping = true;
    resolve_drop(r);
    eng_timer_cancel(r->sh, &r->backoff_timer);
    eng_timer_cancel(r->sh, &r->connect_timer);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* SENT: done(DOWN); ABANDONED: released */
    for (uint32_t i = 0; i < r->cfg.ops_max; i++) {
        struct redis_slot *s = &r->slots[i];
        if (s->state == S_FAILING)
            slot_complete(r, s, ENG_REDIS_DOWN, NULL, false);
    }
    ENG_ASSERT(r->stats.queue_depth == 0);
    ENG_ASSERT(!r->polling);
    free(r->host);
    free(r->unix_path);
    free(r->password);
    free(r->service);
    free(r->slots);
    free(r);
}

/* A command's deadline (SENT), or its fail-fast delivery (FAILING). */
static void slot_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct redis_slot *s = (struct redis_slot *)(void *)t; /* timer is the first member */
    struct eng_redis *r = s->owner;
    if (s->state == S_FAILING) {
        s->state = S_SENT; /* for slot_complete's bookkeeping */
        slot_complete(r, s, ENG_REDIS_DOWN, NULL, false);
        return;
    }
    ENG_ASSERT(s->state == S_SENT);
    /* hiredis keeps the slot until the context is freed (below, or already going away). */
    slot_complete(r, s, ENG_REDIS_TIMEOUT, NULL, r->ac != NULL);
    if (r->ac) {
        r->stats.timeouts++;
        eng_log(ENG_LOG_WARNING, "redis %s: a command timed out; resetting the connection",
                r->name);
        r->outage_logged = true; /* the reset line would repeat it */
        conn_reset(r, "a command timed out", true);
    }
}

int eng_redis_command(struct eng_redis *r, int argc, const char *const *argv,
                      const size_t *argv_len, uint32_t timeout_ms, eng_redis_done_fn *done,
                      void *ctx)
{
    ENG_ASSERT(r->sh == eng_shard_self());
    ENG_ASSERT(done != NULL);
    if (r->stopping)
        return -ESHUTDOWN;
    if (argc <= 0 || (unsigned)argc > ENG_REDIS_ARGS_MAX) {
        r->stats.refused++;
        return -EINVAL;
    }
    struct redis_slot *s = slot_take(r);
    if (!s) {
        r->stats.refused++;
        return -ENOBUFS;
    }
    s->done = done;
    s->ctx = ctx;
    r->stats.commands++;
    if (r->ac && !r->asking &&
        redisAsyncCommandArgv(r->ac, command_done, s, argc, (const char **)argv, argv_len) ==
            REDIS_OK) {
        s->state = S_SENT;
        eng_timer_arm(r->sh, &s->timer, timeout_ms ? timeout_ms : r->cfg.timeout_ms);
        return 0;
    }
    /* No connection, or hiredis refused (the context is going away): DOWN from the loop. */
    r->stats.fail_fast++;
    s->state = S_FAILING;
    eng_timer_arm(r->sh, &s->timer, REDIS_NEXT_TURN_MS);
    return 0;
}

bool eng_redis_up(const struct eng_redis *r)
{
    return r->state == C_UP && r->handshake_pending == 0;
}

const char *eng_redis_peer(const struct eng_redis *r)
{
    return r->peer;
}

void eng_redis_get_stats(const struct eng_redis *r, struct eng_redis_stats *out)
{
    *out = r->stats;
}
