/*
 * pg.c: a PostgreSQL client per shard on libpq 15's non-blocking pipeline mode (eng/pg.h).
 *
 * Each connection is a libpq PGconn in non-blocking pipeline mode whose socket is watched
 * with eng_poll (POLLIN always, POLLOUT while libpq holds unsent output). A query is sent at
 * once: Parse (the first time a connection sees its text), Bind/Execute, Sync. The connection
 * keeps a FIFO of the results it expects (PREPARE, QUERY, SYNC items) and matches what
 * PQgetResult returns against it, so results go to their queries in order. One Sync per
 * query makes every statement its own implicit transaction: a failing statement neither
 * rolls back nor skips another. libpq 15's PQpipelineSync pushes the output out itself, so
 * each query costs one send(2); queries sent in one loop turn still share one round trip,
 * since their answers are read together on a later turn (with libpq 17's
 * PQsendPipelineSync the output would leave in one write at the end of the turn).
 *
 * Queries that cannot be sent (no connection ready) wait in a pending list while a first
 * attempt to (re)connect is under way, and fail fast (-ENOTCONN) once an attempt failed;
 * failed attempts repeat with exponential backoff. A deadline timer per query fails it with
 * -ETIMEDOUT; when the server has not even answered the oldest query in flight by then, the
 * connection is reset (its other queries fail with -ECONNRESET). Every failure reaches done
 * from a timer (0 ms), never inside eng_pg_query.
 *
 * Host names: a single host name (no hostaddr given) is resolved on each connection attempt,
 * off the shard (resolve.c: glibc's getaddrinfo_a thread, polled every PG_RESOLVE_POLL_MS from
 * the connection's timer, bounded by connect_timeout_ms), and the connection is opened with
 * hostaddr set to the addresses found (at most PG_HOSTADDRS_MAX, tried in order) and host kept
 * as given (once per address), so libpq itself never resolves on the shard while TLS
 * verify-full and Kerberos still see the name. An unresolvable name (a Kubernetes Service
 * created later) is a failed attempt like any other: counted in connect_failures, logged
 * once per failure streak, retried with the backoff, queries failing fast meanwhile; a name
 * that appears later, or moves, is followed without a restart. Numeric hosts, socket
 * directories, lists of hosts and a given hostaddr go to libpq unchanged.
 *
 * Owns: the PGconns and their sockets, query slots (queries_max, allocated at create), the
 * result FIFOs, the prepared statement caches (texts malloc'd once per statement). libpq
 * itself allocates PGresults and buffers. Thread: the client's shard only.
 */
#include "eng/pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "resolve.h"

#define PG_ERR_BYTES 256
#define PG_NAME_BYTES 64
#define PG_RESOLVE_POLL_MS 10u /* how often a shard looks at a host name lookup in flight */
#define PG_HOSTADDRS_MAX 8u   /* addresses of a host name handed to libpq per attempt */
#define PG_PVALS_PREALLOC 1024u /* parameter pointers kept ready; more are malloc'd per query */
/* A timer that must not fire in the current pass of the wheel: a 0 ms timer armed from a timer
 * callback can (the wheel walks the milliseconds since its last pass), and the poll on a
 * closed socket must be retired by the end of this turn before its number is polled again
 * (the epoll backend registers a number once; the engine flushes poll changes newest first). */
#define ENG_PG_NEXT_TURN_MS 1u

#define PG_STAT_ADD(pg, field, n)                                                                  \
    __atomic_store_n(&(pg)->stats.field, (pg)->stats.field + (n), __ATOMIC_RELAXED)
#define PG_STAT_INC(pg, field) PG_STAT_ADD(pg, field, 1)

enum item_kind { ITEM_PREPARE = 1, ITEM_QUERY, ITEM_SYNC };

struct pg_item {
    uint8_t kind;
    uint32_t q;    /* query slot (PREPARE, QUERY) */
    uint32_t gen;  /* its generation when queued */
    uint32_t stmt; /* PREPARE: statement cache index */
};

/* PENDING: waiting for a connection; SENT: in a connection's FIFO; ABANDONED: done ran (its
 * deadline passed) but its items are still in the FIFO; FAILING: done is due from a 0 ms
 * timer; DONE: its results are in, done is about to run. */
enum q_state { Q_FREE, Q_PENDING, Q_SENT, Q_ABANDONED, Q_FAILING, Q_DONE };

struct pg_stmt {
    char *sql; /* NULL: empty table slot */
    size_t len;
    uint64_t hash;
    bool prepared;   /* Parse sent on this connection's current session */
    char *parse_err; /* the last Parse failed with this message (malloc'd) */
    char parse_state[6];
    char name[16];
};

/* WAIT: an attempt starts when the timer fires (at once after a break, after the backoff
 * after a failed attempt); CONNECTING: PQconnectPoll under way; READY: pipeline open. */
enum c_state { C_WAIT, C_RESOLVING, C_CONNECTING, C_READY };

struct pg_conn {
    struct eng_pg *pg;
    PGconn *conn;
    int fd;
    uint64_t fd_ino; /* the socket's identity: libpq may reuse the number for a new one */
    bool polling;
    uint32_t events;
    struct eng_poll poll;
    struct eng_timer timer;   /* C_WAIT: start an attempt; C_RESOLVING: look at the lookup;
                                 C_CONNECTING: give up on it */
    struct eng_resolve *resolve; /* C_RESOLVING: the host name's lookup */
    uint64_t resolve_started_ms;
    struct eng_timer rewatch; /* poll a new socket that took the old one's number */
    uint32_t rewatch_events;
    enum c_state state;
    bool failing; /* the last attempt failed: queries fail fast until one succeeds */
    uint32_t backoff_ms;
    struct pg_item *items; /* result FIFO: ring of mask + 1 */
    uint32_t head, tail, mask;
    uint32_t inflight; /* QUERY items in the FIFO */
    struct pg_stmt *stmts;
    uint32_t stmt_mask, stmt_count;
    char last_err[PG_ERR_BYTES];
};

struct pg_query {
    struct eng_timer timer; /* deadline; 0 ms to deliver a failure */
    struct eng_pg *pg;
    eng_pg_done_fn *done;
    void *ctx;
    uint32_t idx, gen;
    enum q_state state;
    int fail_status;
    uint32_t timeout_ms;
    uint64_t deadline_ms;
    PGresult *res;      /* the statement's result */
    PGresult *prep_err; /* its Parse failed */
    struct pg_conn *conn;
    uint32_t stmt; /* cache index + 1 of its prepared statement, 0 for none */
    struct pg_query *prev, *next; /* free list or pending list */
    char *blob;                   /* pending: const char *vals[n], then sql and values */
    size_t param_count;
    char err[PG_ERR_BYTES];
};

struct eng_pg {
    struct eng_shard *sh;
    struct eng_pg_config cfg;
    char *conninfo;
    char name[PG_NAME_BYTES];
    /* A host name resolved per attempt: conninfo's other options, then host and hostaddr
     * (set per attempt), NULL-terminated, for PQconnectStartParams. */
    PQconninfoOption *opts;
    const char **keys, **vals;
    size_t host_at; /* index of host in keys; hostaddr follows */
    char host[ENG_RESOLVE_HOST_MAX + 1];
    struct pg_conn conns[ENG_PG_CONNS_MAX];
    struct pg_query *queries;
    struct pg_query *free_list;
    struct pg_query *pend_head, *pend_tail;
    uint32_t used;
    char *pbuf; /* NUL-terminated copies of length-given parameters */
    const char **pvals;
    bool destroying;
    struct eng_pg_stats stats;
};

struct eng_pg_result {
    int status;
    const PGresult *res;
    const char *msg;
    const char *sqlstate;
};

void eng_pg_config_defaults(struct eng_pg_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->conn_count = 1;
    cfg->queries_max = 1024;
    cfg->timeout_ms = 5000;
    cfg->connect_timeout_ms = 5000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->stmt_cache_max = 256;
    cfg->params_bytes_max = 1u << 20;
}

/* Copies a libpq message as one line: its newlines and tabs (libpq indents continuation
 * lines with "\n\t") become single spaces, trailing blanks go. */
static void msg_copy(char *out, size_t out_len, const char *msg)
{
    if (!msg || !*msg)
        msg = "unknown error";
    size_t o = 0;
    for (; *msg && o + 1 < out_len; msg++) {
        bool blank = *msg == '\n' || *msg == '\t' || *msg == '\r' || *msg == ' ';
        if (blank && (o == 0 || out[o - 1] == ' '))
            continue;
        out[o++] = blank ? ' ' : *msg;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

int eng_pg_conninfo_check(const char *conninfo, char *err, size_t err_len)
{
    char *msg = NULL;
    PQconninfoOption *o = PQconninfoParse(conninfo, &msg);
    if (!o) {
        msg_copy(err, err_len, msg ? msg : "out of memory");
        PQfreemem(msg);
        return -1;
    }
    PQconninfoFree(o);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Query slots and delivery
 */

static void query_timer_fired(struct eng_shard *sh, struct eng_timer *t);

static struct pg_query *slot_get(struct eng_pg *pg)
{
    struct pg_query *q = pg->free_list;
    if (!q)
        return NULL;
    ENG_ASSERT(q->state == Q_FREE);
    pg->free_list = q->next;
    q->next = q->prev = NULL;
    pg->used++;
    PG_STAT_ADD(pg, queue_depth, 1);
    if (pg->stats.queue_depth > pg->stats.queue_depth_max)
        __atomic_store_n(&pg->stats.queue_depth_max, pg->stats.queue_depth, __ATOMIC_RELAXED);
    return q;
}

static void slot_put(struct eng_pg *pg, struct pg_query *q)
{
    ENG_ASSERT(q->state != Q_FREE);
    eng_timer_cancel(pg->sh, &q->timer);
    if (q->res)
        PQclear(q->res);
    if (q->prep_err)
        PQclear(q->prep_err);
    free(q->blob);
    q->res = q->prep_err = NULL;
    q->blob = NULL;
    q->conn = NULL;
    q->state = Q_FREE;
    q->gen++;
    q->next = pg->free_list;
    pg->free_list = q;
    pg->used--;
    PG_STAT_ADD(pg, queue_depth, (uint64_t)-1);
}

static void count_status(struct eng_pg *pg, int status)
{
    switch (status) {
    case 0:
        PG_STAT_INC(pg, ok);
        break;
    case -EIO:
        PG_STAT_INC(pg, errors);
        break;
    case -ETIMEDOUT:
        PG_STAT_INC(pg, timeouts);
        break;
    case -ENOTCONN:
        PG_STAT_INC(pg, fail_fast);
        break;
    case -ECONNRESET:
        PG_STAT_INC(pg, conn_lost);
        break;
    default:
        break;
    }
}

/* Runs q's done with r and frees the slot (unless it stays in a FIFO: see abandon). */
static void deliver(struct pg_query *q, struct eng_pg_result *r)
{
    struct eng_pg *pg = q->pg;
    eng_pg_done_fn *done = q->done;
    void *ctx = q->ctx;
    count_status(pg, r->status);
    eng_timer_cancel(pg->sh, &q->timer);
    if (q->state == Q_SENT) {
        q->state = Q_ABANDONED; /* its items are still in the FIFO; freed when they are read */
        done(ctx, r);
        return;
    }
    done(ctx, r);
    slot_put(pg, q);
}

static void deliver_error(struct pg_query *q, int status, const char *msg)
{
    struct eng_pg_result r = {.status = status, .msg = msg, .sqlstate = ""};
    deliver(q, &r);
}

/* Makes q fail with status/msg from the loop (a 0 ms timer). */
static void fail_later(struct pg_query *q, int status, const char *msg)
{
    q->state = Q_FAILING;
    q->fail_status = status;
    msg_copy(q->err, sizeof(q->err), msg);
    eng_timer_arm(q->pg->sh, &q->timer, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Prepared statements (per connection, by statement text)
 */

static uint64_t text_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* The cache entry for sql, added if there is room; NULL: run it unprepared. */
static struct pg_stmt *stmt_lookup(struct pg_conn *c, const char *sql)
{
    if (!c->stmts)
        return NULL;
    size_t n = strlen(sql);
    uint64_t h = text_hash(sql, n);
    for (uint32_t i = (uint32_t)h;; i++) {
        struct pg_stmt *s = &c->stmts[i & c->stmt_mask];
        if (s->sql && s->hash == h && s->len == n && memcmp(s->sql, sql, n) == 0)
            return s;
        if (s->sql)
            continue;
        /* The table is twice the cache's size, so an empty slot is always found. */
        if (c->stmt_count >= c->pg->cfg.stmt_cache_max || !(s->sql = malloc(n + 1)))
            return NULL;
        memcpy(s->sql, sql, n + 1);
        s->len = n;
        s->hash = h;
        s->prepared = false;
        snprintf(s->name, sizeof(s->name), "rpd_%u", c->stmt_count++);
        return s;
    }
}

static void stmts_forget(struct pg_conn *c)
{
    for (uint32_t i = 0; c->stmts && i <= c->stmt_mask; i++)
        c->stmts[i].prepared = false;
}

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

static void conn_connect(struct pg_conn *c);
static void resolve_poll(struct pg_conn *c);
static void on_poll(struct eng_shard *sh, struct eng_poll *p, uint32_t revents);

static struct pg_conn *conn_of_poll(struct eng_poll *p)
{
    return (struct pg_conn *)(void *)((char *)p - offsetof(struct pg_conn, poll));
}

static struct pg_conn *conn_of_timer(struct eng_timer *t)
{
    return (struct pg_conn *)(void *)((char *)t - offsetof(struct pg_conn, timer));
}

static uint64_t socket_ino(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Watches the connection's current socket for events. 0 or -errno. A new socket under the
 * number of the one just closed (libpq trying another address) is polled from the next turn,
 * once the loop has retired the old poll: the epoll backend registers each number once. */
static int watch(struct pg_conn *c, uint32_t events)
{
    int fd = PQsocket(c->conn);
    if (fd < 0)
        return -EBADF;
    uint64_t ino = socket_ino(fd);
    if (c->polling && (fd != c->fd || ino != c->fd_ino)) {
        eng_poll_stop(c->pg->sh, &c->poll);
        c->polling = false;
        if (fd == c->fd) {
            c->rewatch_events = events;
            eng_timer_arm(c->pg->sh, &c->rewatch, ENG_PG_NEXT_TURN_MS);
            return 0;
        }
    }
    if (eng_timer_armed(&c->rewatch)) {
        c->rewatch_events = events;
        return 0;
    }
    int rc = 0;
    if (!c->polling)
        rc = eng_poll_start(c->pg->sh, &c->poll, fd, events, on_poll);
    else if (events != c->events)
        rc = eng_poll_update(c->pg->sh, &c->poll, events);
    if (rc == 0) {
        c->polling = true;
        c->fd = fd;
        c->fd_ino = ino;
        c->events = events;
    }
    return rc;
}

static void attempt_failed(struct pg_conn *c, const char *why);

static void rewatch_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pg_conn *c = (struct pg_conn *)(void *)((char *)t - offsetof(struct pg_conn, rewatch));
    if (c->conn && watch(c, c->rewatch_events) < 0)
        attempt_failed(c, "cannot poll the socket");
}

static void conn_close(struct pg_conn *c)
{
    if (c->polling)
        eng_poll_stop(c->pg->sh, &c->poll);
    c->polling = false;
    c->fd = -1;
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    eng_resolve_drop(c->resolve);
    c->resolve = NULL;
    eng_timer_cancel(c->pg->sh, &c->timer);
    eng_timer_cancel(c->pg->sh, &c->rewatch);
    stmts_forget(c);
}

static bool any_fresh_attempt(const struct eng_pg *pg)
{
    for (unsigned i = 0; i < pg->cfg.conn_count; i++)
        if (pg->conns[i].state != C_READY && !pg->conns[i].failing)
            return true;
    return false;
}

static struct pg_conn *pick_ready(struct eng_pg *pg)
{
    struct pg_conn *best = NULL;
    for (unsigned i = 0; i < pg->cfg.conn_count; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (c->state == C_READY && (!best || c->inflight < best->inflight))
            best = c;
    }
    return best;
}

/* Pending queries fail fast once no connection is ready or making a first attempt. */
static void pending_fail(struct eng_pg *pg, const char *why)
{
    if (pick_ready(pg) || any_fresh_attempt(pg))
        return;
    char msg[PG_ERR_BYTES + 64];
    snprintf(msg, sizeof(msg), "no connection to PostgreSQL: %s", why);
    while (pg->pend_head) {
        struct pg_query *q = pg->pend_head;
        pg->pend_head = q->next;
        q->next = q->prev = NULL;
        fail_later(q, -ENOTCONN, msg);
    }
    pg->pend_tail = NULL;
}

static void attempt_failed(struct pg_conn *c, const char *why)
{
    struct eng_pg *pg = c->pg;
    bool first = !c->failing;
    msg_copy(c->last_err, sizeof(c->last_err), why);
    conn_close(c);
    c->failing = true;
    c->state = C_WAIT;
    PG_STAT_INC(pg, connect_failures);
    eng_log(first ? ENG_LOG_ERR : ENG_LOG_DEBUG,
            "PostgreSQL %s: connection failed: %s (retrying in %u ms)", pg->name, c->last_err,
            c->backoff_ms);
    eng_timer_arm(pg->sh, &c->timer, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > pg->cfg.backoff_max_ms ? pg->cfg.backoff_max_ms
                                                                 : c->backoff_ms * 2;
    pending_fail(pg, c->last_err);
}

/* A ready connection broke (or was reset): its queries in flight fail, and a first attempt
 * to reconnect starts at once (queries wait for it instead of failing fast). */
static void conn_broken(struct pg_conn *c, const char *why)
{
    struct eng_pg *pg = c->pg;
    char msg[PG_ERR_BYTES + 64];
    msg_copy(c->last_err, sizeof(c->last_err), why);
    snprintf(msg, sizeof(msg), "connection to PostgreSQL lost: %s", c->last_err);
    eng_log(ENG_LOG_ERR, "PostgreSQL %s: %s", pg->name, msg);
    PG_STAT_INC(pg, disconnects);
    for (uint32_t i = c->head; i != c->tail; i++) {
        struct pg_item *it = &c->items[i & c->mask];
        if (it->kind != ITEM_QUERY)
            continue;
        struct pg_query *q = &pg->queries[it->q];
        ENG_ASSERT(q->gen == it->gen);
        if (q->state == Q_ABANDONED)
            slot_put(pg, q);
        else
            fail_later(q, -ECONNRESET, msg);
    }
    c->head = c->tail = 0;
    c->inflight = 0;
    conn_close(c);
    /* Reconnect from the next turn: the loop first retires the poll on the closed socket,
     * whose number the new socket will likely get. */
    c->failing = false;
    c->state = C_WAIT;
    eng_timer_arm(pg->sh, &c->timer, ENG_PG_NEXT_TURN_MS);
}

static void backoff_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pg_conn *c = conn_of_timer(t);
    if (c->state == C_CONNECTING) {
        attempt_failed(c, "timeout while connecting");
        return;
    }
    if (c->state == C_RESOLVING) {
        resolve_poll(c);
        return;
    }
    ENG_ASSERT(c->state == C_WAIT);
    conn_connect(c);
}

static void notice_drop(void *arg, const char *message)
{
    const struct eng_pg *pg = arg;
    if (eng_log_enabled(ENG_LOG_DEBUG)) {
        char m[PG_ERR_BYTES];
        msg_copy(m, sizeof(m), message);
        eng_log(ENG_LOG_DEBUG, "PostgreSQL %s: %s", pg ? pg->name : "(sync)", m);
    }
}

/* Opens the connection: with conninfo as given, or (host name) with keys/vals as set by
 * resolve_poll. */
static void conn_open(struct pg_conn *c)
{
    struct eng_pg *pg = c->pg;
    c->state = C_CONNECTING;
    c->conn = pg->keys ? PQconnectStartParams(pg->keys, pg->vals, 0) : PQconnectStart(pg->conninfo);
    if (!c->conn) {
        attempt_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        attempt_failed(c, PQerrorMessage(c->conn));
        return;
    }
    PQsetNoticeProcessor(c->conn, notice_drop, pg);
    /* Until PQconnectPoll says otherwise, libpq waits for the socket to become writable. */
    int rc = watch(c, POLLOUT);
    if (rc < 0) {
        attempt_failed(c, strerror(-rc));
        return;
    }
    eng_timer_arm(pg->sh, &c->timer, pg->cfg.connect_timeout_ms);
}

/* The addresses of a finished lookup as "a,b" (out) and the name once per address (hosts).
 * Returns how many, 0 when none fits. */
static unsigned addrs_list(const struct eng_pg *pg, const struct addrinfo *ai, char *out,
                           size_t out_len, char *hosts, size_t hosts_len)
{
    unsigned n = 0;
    out[0] = hosts[0] = '\0';
    size_t hl = strlen(pg->host);
    for (; ai && n < PG_HOSTADDRS_MAX; ai = ai->ai_next) {
        char ip[NI_MAXHOST];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST))
            continue;
        size_t l = strlen(ip), have = strlen(out), hhave = strlen(hosts);
        bool seen = false;
        for (const char *p = out; (p = strstr(p, ip)) != NULL; p += l)
            seen = seen || ((p == out || p[-1] == ',') && (p[l] == ',' || p[l] == '\0'));
        if (seen || have + l + 2 > out_len || hhave + hl + 2 > hosts_len)
            continue;
        snprintf(out + have, out_len - have, "%s%s", have ? "," : "", ip);
        snprintf(hosts + hhave, hosts_len - hhave, "%s%s", hhave ? "," : "", pg->host);
        n++;
    }
    return n;
}

/* C_RESOLVING, from the timer: the lookup finished (connect to its addresses, or the attempt
 * failed), took longer than connect_timeout_ms (failed), or is still running (look again). */
static void resolve_poll(struct pg_conn *c)
{
    struct eng_pg *pg = c->pg;
    char why[PG_ERR_BYTES];
    if (!eng_resolve_done(c->resolve)) {
        if (eng_now_ms(pg->sh) - c->resolve_started_ms < pg->cfg.connect_timeout_ms) {
            eng_timer_arm(pg->sh, &c->timer, PG_RESOLVE_POLL_MS);
            return;
        }
        snprintf(why, sizeof(why), "cannot resolve host %.160s: the lookup timed out", pg->host);
        attempt_failed(c, why);
        return;
    }
    const struct addrinfo *ai = NULL;
    int rc = eng_resolve_result(c->resolve, &ai);
    static _Thread_local char addrs[PG_HOSTADDRS_MAX * NI_MAXHOST];
    static _Thread_local char hosts[PG_HOSTADDRS_MAX * (ENG_RESOLVE_HOST_MAX + 2)];
    if (rc != 0 || addrs_list(pg, ai, addrs, sizeof(addrs), hosts, sizeof(hosts)) == 0) {
        snprintf(why, sizeof(why), "cannot resolve host %.160s: %s", pg->host,
                 rc ? gai_strerror(rc) : "no usable address");
        attempt_failed(c, why);
        return;
    }
    eng_resolve_drop(c->resolve);
    c->resolve = NULL;
    pg->vals[pg->host_at] = hosts;
    pg->vals[pg->host_at + 1] = addrs;
    conn_open(c); /* libpq copies the values in PQconnectStartParams */
}

/* Starts an attempt: at once, or after looking the host name up. */
static void conn_connect(struct pg_conn *c)
{
    struct eng_pg *pg = c->pg;
    if (!pg->keys) {
        conn_open(c);
        return;
    }
    const struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
    int rc = eng_resolve_start(pg->host, NULL, &hints, &c->resolve);
    if (rc != 0) {
        char why[PG_ERR_BYTES];
        snprintf(why, sizeof(why), "cannot resolve host %.160s: %s", pg->host, gai_strerror(rc));
        attempt_failed(c, why);
        return;
    }
    c->state = C_RESOLVING;
    c->resolve_started_ms = eng_now_ms(pg->sh);
    eng_timer_arm(pg->sh, &c->timer, PG_RESOLVE_POLL_MS);
}

static void send_query(struct pg_conn *c, struct pg_query *q, const char *sql,
                       const char *const *vals, size_t n);

static void conn_ready(struct pg_conn *c)
{
    struct eng_pg *pg = c->pg;
    eng_timer_cancel(pg->sh, &c->timer);
    if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
        attempt_failed(c, PQerrorMessage(c->conn));
        return;
    }
    if (watch(c, POLLIN) < 0) {
        attempt_failed(c, "cannot poll the socket");
        return;
    }
    if (c->failing)
        eng_log(ENG_LOG_NOTICE, "PostgreSQL %s: connected again", pg->name);
    c->state = C_READY;
    c->failing = false;
    c->backoff_ms = pg->cfg.backoff_min_ms;
    PG_STAT_INC(pg, connects);
    while (pg->pend_head && c->state == C_READY) {
        struct pg_query *q = pg->pend_head;
        pg->pend_head = q->next;
        if (!pg->pend_head)
            pg->pend_tail = NULL;
        q->next = q->prev = NULL;
        const char *const *vals = (const char *const *)(void *)q->blob;
        send_query(c, q, (const char *)(vals + q->param_count), vals, q->param_count);
    }
}

static void connect_step(struct pg_conn *c)
{
    int rc = 0;
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        rc = watch(c, POLLIN);
        break;
    case PGRES_POLLING_WRITING:
        rc = watch(c, POLLOUT);
        break;
    case PGRES_POLLING_OK:
        conn_ready(c);
        return;
    default:
        attempt_failed(c, PQerrorMessage(c->conn));
        return;
    }
    if (rc < 0)
        attempt_failed(c, "cannot poll the socket");
}

/* ---------------------------------------------------------------------------------------------
 * Sending
 */

static void fifo_push(struct pg_conn *c, enum item_kind kind, const struct pg_query *q,
                      const struct pg_stmt *s)
{
    ENG_ASSERT(c->tail - c->head <= c->mask); /* 3 items per query, queries_max queries */
    c->items[c->tail++ & c->mask] = (struct pg_item){
        .kind = (uint8_t)kind,
        .q = q ? q->idx : 0,
        .gen = q ? q->gen : 0,
        .stmt = s ? (uint32_t)(s - c->stmts) : 0,
    };
}

/* Pushes libpq's output; asks for POLLOUT while some is left. */
static void flush_out(struct pg_conn *c)
{
    int f = PQflush(c->conn);
    if (f < 0) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    uint32_t want = f == 1 ? (POLLIN | POLLOUT) : POLLIN;
    if (want != c->events && watch(c, want) < 0)
        conn_broken(c, "cannot poll the socket");
}

static void send_query(struct pg_conn *c, struct pg_query *q, const char *sql,
                       const char *const *vals, size_t n)
{
    struct eng_pg *pg = c->pg;
    struct pg_stmt *s = stmt_lookup(c, sql);
    int ok = 1;
    if (c->inflight == 0)
        PG_STAT_INC(pg, round_trips);
    q->state = Q_SENT;
    q->conn = c;
    q->stmt = s ? (uint32_t)(s - c->stmts) + 1 : 0;
    c->inflight++;
    if (s && !s->prepared) {
        ok = PQsendPrepare(c->conn, s->name, sql, (int)n, NULL);
        if (ok) {
            fifo_push(c, ITEM_PREPARE, q, s);
            s->prepared = true; /* later queries may use it: the pipeline keeps the order */
            PG_STAT_INC(pg, prepares);
        }
    }
    if (ok && s)
        ok = PQsendQueryPrepared(c->conn, s->name, (int)n, vals, NULL, NULL, 0);
    else if (ok) {
        if (pg->cfg.stmt_cache_max)
            PG_STAT_INC(pg, stmt_cache_full);
        ok = PQsendQueryParams(c->conn, sql, (int)n, NULL, vals, NULL, NULL, 0);
    }
    fifo_push(c, ITEM_QUERY, q, NULL); /* even on failure: conn_broken finds q through it */
    if (ok && (ok = PQpipelineSync(c->conn)) != 0)
        fifo_push(c, ITEM_SYNC, NULL, NULL);
    if (!ok) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    flush_out(c);
}

/* ---------------------------------------------------------------------------------------------
 * Receiving
 */

static int result_status(const struct pg_query *q, const char **msg, const char **state)
{
    const PGresult *r = q->prep_err ? q->prep_err : q->res;
    *msg = NULL;
    *state = "";
    if (!r) {
        *msg = "no result from the server";
        return -ECONNRESET;
    }
    switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        return 0;
    case PGRES_PIPELINE_ABORTED:
        *msg = "statement skipped after an earlier error in its pipeline";
        return -EIO;
    default:
        *msg = PQresultErrorMessage(r);
        *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (!*msg || !**msg)
            *msg = PQresStatus(PQresultStatus(r));
        if (!*state)
            *state = "";
        return -EIO;
    }
}

static void query_finished(struct pg_query *q)
{
    struct eng_pg *pg = q->pg;
    if (q->state == Q_ABANDONED) { /* done already ran (deadline) */
        slot_put(pg, q);
        return;
    }
    ENG_ASSERT(q->state == Q_SENT);
    q->state = Q_DONE;
    char msg[PG_ERR_BYTES];
    const char *m, *st;
    int status = result_status(q, &m, &st);
    const struct pg_stmt *s = q->stmt ? &q->conn->stmts[q->stmt - 1] : NULL;
    if (status == -EIO && strcmp(st, "26000") == 0 && s && s->parse_err) {
        m = s->parse_err; /* sent after a Parse of its text that failed */
        st = s->parse_state;
    }
    if (m)
        msg_copy(msg, sizeof(msg), m);
    struct eng_pg_result r = {status, q->res, m ? msg : NULL, st};
    deliver(q, &r);
}

/* Records r for the item at the FIFO's head. */
static void item_result(struct pg_query *q, const struct pg_item *it, PGresult *r)
{
    if (it->kind == ITEM_PREPARE) {
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            struct pg_stmt *s = &q->conn->stmts[it->stmt];
            free(s->parse_err);
            s->parse_err = NULL;
            PQclear(r);
            return;
        }
        /* Not prepared after all: the next query with this text prepares it again, and the
         * ones already sent with it report this error rather than "does not exist". */
        struct pg_stmt *s = &q->conn->stmts[it->stmt];
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        s->prepared = false;
        free(s->parse_err);
        s->parse_err = strdup(PQresultErrorMessage(r));
        snprintf(s->parse_state, sizeof(s->parse_state), "%s", state ? state : "");
        if (q->prep_err)
            PQclear(q->prep_err);
        q->prep_err = r;
        return;
    }
    if (q->res)
        PQclear(q->res);
    q->res = r;
}

static void read_results(struct pg_conn *c)
{
    struct eng_pg *pg = c->pg;
    while (c->state == C_READY && c->head != c->tail) {
        if (PQstatus(c->conn) == CONNECTION_BAD) {
            conn_broken(c, PQerrorMessage(c->conn));
            return;
        }
        if (PQisBusy(c->conn))
            return;
        struct pg_item it = c->items[c->head & c->mask];
        PGresult *r = PQgetResult(c->conn);
        if (it.kind == ITEM_SYNC) {
            ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
            PQclear(r);
            if (st != PGRES_PIPELINE_SYNC) {
                conn_broken(c, "results out of step with the pipeline");
                return;
            }
            c->head++;
            continue;
        }
        struct pg_query *q = &pg->queries[it.q];
        ENG_ASSERT(q->gen == it.gen);
        ENG_ASSERT(q->conn == c);
        if (r) {
            item_result(q, &it, r);
            continue;
        }
        c->head++;
        if (it.kind == ITEM_QUERY) {
            c->inflight--;
            query_finished(q);
        }
    }
}

static void on_poll(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct pg_conn *c = conn_of_poll(p);
    if (c->state == C_CONNECTING) {
        connect_step(c);
        return;
    }
    ENG_ASSERT(c->state == C_READY);
    if (revents & POLLNVAL) {
        conn_broken(c, "the socket became invalid");
        return;
    }
    if (revents & POLLOUT) {
        PG_STAT_INC(c->pg, flushes);
        flush_out(c);
        if (c->state != C_READY)
            return;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (!PQconsumeInput(c->conn)) {
            conn_broken(c, PQerrorMessage(c->conn));
            return;
        }
        read_results(c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Deadlines
 */

static struct pg_query *query_of_timer(struct eng_timer *t)
{
    return (struct pg_query *)(void *)((char *)t - offsetof(struct pg_query, timer));
}

/* True when q's first item is the oldest in its connection's FIFO: the server has answered
 * nothing since q was sent. */
static bool at_fifo_head(const struct pg_query *q)
{
    const struct pg_conn *c = q->conn;
    for (uint32_t i = c->head; i != c->tail; i++) {
        const struct pg_item *it = &c->items[i & c->mask];
        if (it->kind != ITEM_SYNC) /* a Sync left from an answered query does not count */
            return it->q == q->idx && it->gen == q->gen;
    }
    return false;
}

static void pending_remove(struct eng_pg *pg, struct pg_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        pg->pend_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        pg->pend_tail = q->prev;
    q->next = q->prev = NULL;
}

static void query_expire(struct pg_query *q)
{
    struct eng_pg *pg = q->pg;
    char msg[96];
    snprintf(msg, sizeof(msg), "query timed out after %u ms", q->timeout_ms);
    if (q->state == Q_PENDING)
        pending_remove(pg, q);
    struct pg_conn *stuck = q->state == Q_SENT && at_fifo_head(q) ? q->conn : NULL;
    deliver_error(q, -ETIMEDOUT, msg);
    /* The server answered nothing since this query was sent: it is stuck or gone. */
    if (stuck && stuck->state == C_READY) {
        snprintf(msg, sizeof(msg), "no answer within %u ms", q->timeout_ms);
        conn_broken(stuck, msg);
    }
}

static void query_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pg_query *q = query_of_timer(t);
    if (q->state == Q_FAILING)
        deliver_error(q, q->fail_status, q->err);
    else
        query_expire(q);
}

/* ---------------------------------------------------------------------------------------------
 * Client
 */

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static int conn_init(struct eng_pg *pg, struct pg_conn *c)
{
    c->pg = pg;
    c->fd = -1;
    c->backoff_ms = pg->cfg.backoff_min_ms;
    eng_timer_init(&c->timer, backoff_fired);
    eng_timer_init(&c->rewatch, rewatch_fired);
    /* At most 3 items (Parse, Execute, Sync) per query, queries_max queries in all. */
    c->mask = pow2_at_least((uint64_t)pg->cfg.queries_max * 3 + 1) - 1;
    c->items = calloc((size_t)c->mask + 1, sizeof(*c->items));
    if (pg->cfg.stmt_cache_max) {
        /* Twice the cache's size, so lookups always find an empty slot quickly. */
        c->stmt_mask = pow2_at_least((uint64_t)pg->cfg.stmt_cache_max * 2) - 1;
        c->stmts = calloc((size_t)c->stmt_mask + 1, sizeof(*c->stmts));
    }
    return c->items && (c->stmts || !pg->cfg.stmt_cache_max) ? 0 : -ENOMEM;
}

static int config_check(const struct eng_pg_config *cfg, char *err, size_t err_len)
{
    const char *bad = !cfg->conninfo                                          ? "conninfo"
                      : cfg->conn_count == 0 || cfg->conn_count > ENG_PG_CONNS_MAX ? "conn_count"
                      : cfg->queries_max == 0 || cfg->queries_max > (1u << 20)     ? "queries_max"
                      : cfg->timeout_ms == 0                                       ? "timeout_ms"
                      : cfg->connect_timeout_ms == 0 ? "connect_timeout_ms"
                      : cfg->backoff_min_ms == 0 || cfg->backoff_max_ms < cfg->backoff_min_ms
                          ? "backoff_min_ms/backoff_max_ms"
                      : cfg->stmt_cache_max > (1u << 20) ? "stmt_cache_max"
                                                         : NULL;
    if (!bad)
        return 0;
    snprintf(err, err_len, "bad PostgreSQL client setting: %s", bad);
    return -EINVAL;
}

/* conninfo names one host by name (no hostaddr, not a socket directory, not a list): keep
 * its other options in keys/vals for the attempts to add host and hostaddr. 0, or -ENOMEM. */
static int host_by_name(struct eng_pg *pg)
{
    pg->opts = PQconninfoParse(pg->conninfo, NULL);
    if (!pg->opts)
        return -ENOMEM;
    const char *host = NULL;
    bool hostaddr = false;
    size_t n = 0;
    for (const PQconninfoOption *o = pg->opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = hostaddr || o->val[0];
        else
            n++;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (!host || !host[0] || host[0] == '/' || host[0] == '@' || strchr(host, ',') || hostaddr ||
        strlen(host) > ENG_RESOLVE_HOST_MAX || getaddrinfo(host, NULL, &hints, &ai) == 0) {
        if (ai)
            freeaddrinfo(ai);
        return 0; /* libpq needs no lookup, or does it itself (off the shard it cannot) */
    }
    snprintf(pg->host, sizeof(pg->host), "%s", host);
    pg->keys = calloc(n + 3, sizeof(*pg->keys));
    pg->vals = calloc(n + 3, sizeof(*pg->vals));
    if (!pg->keys || !pg->vals)
        return -ENOMEM;
    size_t i = 0;
    for (const PQconninfoOption *o = pg->opts; o->keyword; o++) {
        if (o->val && strcmp(o->keyword, "host") != 0 && strcmp(o->keyword, "hostaddr") != 0) {
            pg->keys[i] = o->keyword;
            pg->vals[i++] = o->val;
        }
    }
    pg->host_at = i;
    pg->keys[i] = "host";
    pg->keys[i + 1] = "hostaddr";
    return 0;
}

static int client_alloc(struct eng_pg *pg, const struct eng_pg_config *cfg)
{
    pg->cfg = *cfg;
    snprintf(pg->name, sizeof(pg->name), "%s", cfg->name ? cfg->name : "");
    pg->conninfo = strdup(cfg->conninfo);
    pg->queries = calloc(cfg->queries_max, sizeof(*pg->queries));
    pg->pbuf = malloc((size_t)cfg->params_bytes_max + ENG_PG_PARAMS_MAX);
    pg->pvals = calloc(PG_PVALS_PREALLOC, sizeof(*pg->pvals));
    if (!pg->conninfo || !pg->queries || !pg->pbuf || !pg->pvals || host_by_name(pg) != 0)
        return -ENOMEM;
    for (uint32_t i = cfg->queries_max; i-- > 0;) {
        struct pg_query *q = &pg->queries[i];
        q->pg = pg;
        q->idx = i;
        eng_timer_init(&q->timer, query_timer_fired);
        q->next = pg->free_list;
        pg->free_list = q;
    }
    for (unsigned i = 0; i < cfg->conn_count; i++)
        if (conn_init(pg, &pg->conns[i]) != 0)
            return -ENOMEM;
    return 0;
}

int eng_pg_create(struct eng_shard *sh, const struct eng_pg_config *cfg, struct eng_pg **out,
                  char *err, size_t err_len)
{
    ENG_ASSERT(sh == eng_shard_self());
    int rc = config_check(cfg, err, err_len);
    if (rc < 0)
        return rc;
    if (eng_pg_conninfo_check(cfg->conninfo, err, err_len) != 0)
        return -EINVAL;
    struct eng_pg *pg = calloc(1, sizeof(*pg));
    if (!pg) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    pg->sh = sh;
    if (client_alloc(pg, cfg) != 0) {
        snprintf(err, err_len, "out of memory for %u PostgreSQL queries", cfg->queries_max);
        eng_pg_destroy(pg);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < cfg->conn_count; i++)
        conn_connect(&pg->conns[i]);
    *out = pg;
    return 0;
}

bool eng_pg_ready(const struct eng_pg *pg)
{
    for (unsigned i = 0; i < pg->cfg.conn_count; i++)
        if (pg->conns[i].state == C_READY)
            return true;
    return false;
}

/* Parameter values as libpq wants them: NUL-terminated (copied into pbuf when lengths are
 * given). Returns the array, or NULL (a value holds a NUL byte: *bad is its index + 1; or
 * out of memory for a large count: *bad is 0). */
static const char **params_prepare(struct eng_pg *pg, const char *const *params,
                                   const size_t *lens, size_t n, size_t *bad)
{
    const char **vals = n <= PG_PVALS_PREALLOC ? pg->pvals : malloc(n * sizeof(*vals));
    *bad = 0;
    if (!vals)
        return NULL;
    char *p = pg->pbuf;
    for (size_t i = 0; i < n; i++) {
        if (!params[i] || !lens) {
            vals[i] = params[i];
            continue;
        }
        if (memchr(params[i], '\0', lens[i])) {
            *bad = i + 1;
            if (vals != pg->pvals)
                free(vals);
            return NULL;
        }
        memcpy(p, params[i], lens[i]);
        p[lens[i]] = '\0';
        vals[i] = p;
        p += lens[i] + 1;
    }
    return vals;
}

/* A pending query keeps its own copy: const char *vals[n], then sql, then the values. */
static int pending_add(struct eng_pg *pg, struct pg_query *q, const char *sql,
                       const char *const *vals, size_t n)
{
    size_t bytes = n * sizeof(char *) + strlen(sql) + 1;
    for (size_t i = 0; i < n; i++)
        bytes += vals[i] ? strlen(vals[i]) + 1 : 0;
    q->blob = malloc(bytes);
    if (!q->blob)
        return -ENOMEM;
    const char **cp = (const char **)(void *)q->blob;
    char *p = q->blob + n * sizeof(char *);
    size_t l = strlen(sql) + 1;
    memcpy(p, sql, l);
    p += l;
    for (size_t i = 0; i < n; i++) {
        cp[i] = NULL;
        if (!vals[i])
            continue;
        l = strlen(vals[i]) + 1;
        memcpy(p, vals[i], l);
        cp[i] = p;
        p += l;
    }
    q->param_count = n;
    q->state = Q_PENDING;
    q->prev = pg->pend_tail;
    if (pg->pend_tail)
        pg->pend_tail->next = q;
    else
        pg->pend_head = q;
    pg->pend_tail = q;
    return 0;
}

static size_t params_bytes(const char *const *params, const size_t *lens, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (params[i])
            total += lens ? lens[i] : strlen(params[i]);
    return total;
}

/* Sends q now, queues it for the connection being opened, or fails it fast. */
static void route(struct eng_pg *pg, struct pg_query *q, const char *sql,
                  const char *const *params, const size_t *lens, size_t n)
{
    size_t bad;
    const char **vals = params_prepare(pg, params, lens, n, &bad);
    char msg[PG_ERR_BYTES + 64];
    if (!vals) {
        snprintf(msg, sizeof(msg), bad ? "parameter %zu holds a NUL byte" : "out of memory", bad);
        fail_later(q, bad ? -EINVAL : -ENOMEM, msg);
        return;
    }
    struct pg_conn *c = pick_ready(pg);
    if (c)
        send_query(c, q, sql, vals, n);
    else if (any_fresh_attempt(pg) && pending_add(pg, q, sql, vals, n) == 0)
        ;
    else {
        const char *why = "out of memory";
        for (unsigned i = 0; !any_fresh_attempt(pg) && i < pg->cfg.conn_count; i++)
            if (pg->conns[i].last_err[0])
                why = pg->conns[i].last_err;
        snprintf(msg, sizeof(msg), "no connection to PostgreSQL: %s", why);
        fail_later(q, any_fresh_attempt(pg) ? -ENOMEM : -ENOTCONN, msg);
    }
    if (vals != pg->pvals)
        free(vals);
}

int eng_pg_query(struct eng_pg *pg, const char *sql, const char *const *params,
                 const size_t *param_lens, size_t param_count, uint32_t timeout_ms,
                 eng_pg_done_fn *done, void *ctx)
{
    ENG_ASSERT(pg->sh == eng_shard_self());
    ENG_ASSERT(done != NULL);
    if (!sql || (param_count && !params))
        return -EINVAL;
    if (pg->destroying)
        return -ESHUTDOWN;
    if (param_count > ENG_PG_PARAMS_MAX ||
        params_bytes(params, param_lens, param_count) > pg->cfg.params_bytes_max)
        return -E2BIG;
    struct pg_query *q = slot_get(pg);
    if (!q) {
        PG_STAT_INC(pg, queue_full);
        return -ENOBUFS;
    }
    q->done = done;
    q->ctx = ctx;
    q->timeout_ms = timeout_ms ? timeout_ms : pg->cfg.timeout_ms;
    q->deadline_ms = eng_clock_ms() + q->timeout_ms;
    q->state = Q_PENDING;
    PG_STAT_INC(pg, queries);
    /* The deadline first: route may re-arm the timer at 0 ms to deliver a failure. */
    eng_timer_arm(pg->sh, &q->timer, q->timeout_ms);
    route(pg, q, sql, params, param_lens, param_count);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Shutdown
 */

/* Drain's stand-in for the timer wheel: failures due and deadlines passed. */
static void drain_due(struct eng_pg *pg, uint64_t now)
{
    for (uint32_t i = 0; i < pg->cfg.queries_max; i++) {
        struct pg_query *q = &pg->queries[i];
        if (q->state == Q_FAILING)
            deliver_error(q, q->fail_status, q->err);
        else if ((q->state == Q_PENDING || q->state == Q_SENT) && now >= q->deadline_ms)
            query_expire(q);
    }
}

static bool drain_busy(const struct eng_pg *pg)
{
    for (uint32_t i = 0; i < pg->cfg.queries_max; i++) {
        enum q_state st = pg->queries[i].state;
        if (st == Q_PENDING || st == Q_SENT || st == Q_FAILING)
            return true;
    }
    return false;
}

int eng_pg_drain(struct eng_pg *pg, uint32_t timeout_ms)
{
    ENG_ASSERT(pg->sh == eng_shard_self());
    int pending = (int)pg->used;
    uint64_t end = eng_clock_ms() + timeout_ms;
    while (drain_busy(pg)) {
        uint64_t now = eng_clock_ms();
        drain_due(pg, now);
        if (!drain_busy(pg))
            break;
        if (now >= end) {
            for (uint32_t i = 0; i < pg->cfg.queries_max; i++)
                pg->queries[i].deadline_ms = 0; /* everything left times out now */
            continue;
        }
        struct pollfd fds[ENG_PG_CONNS_MAX];
        struct pg_conn *cs[ENG_PG_CONNS_MAX];
        nfds_t n = 0;
        bool resolving = false;
        for (unsigned i = 0; i < pg->cfg.conn_count; i++) {
            struct pg_conn *c = &pg->conns[i];
            if (c->state == C_RESOLVING)
                resolve_poll(c); /* the ring's timers do not run here */
            resolving = resolving || c->state == C_RESOLVING;
            if (c->polling && (c->state == C_READY || c->state == C_CONNECTING)) {
                fds[n] = (struct pollfd){.fd = c->fd, .events = (short)c->events};
                cs[n++] = c;
            }
        }
        if (n == 0) {
            pending_fail(pg, "no connection while shutting down");
            if (resolving)
                (void)poll(NULL, 0, PG_RESOLVE_POLL_MS);
            continue;
        }
        uint64_t wait = end - now < 50 ? end - now : 50;
        if (poll(fds, n, (int)wait) <= 0)
            continue;
        for (nfds_t i = 0; i < n; i++)
            if (fds[i].revents)
                on_poll(pg->sh, &cs[i]->poll, (uint32_t)fds[i].revents);
    }
    return pending;
}

void eng_pg_destroy(struct eng_pg *pg)
{
    if (!pg)
        return;
    pg->destroying = true;
    for (uint32_t i = 0; pg->queries && i < pg->cfg.queries_max; i++) {
        struct pg_query *q = &pg->queries[i];
        if (q->state == Q_FREE)
            continue;
        if (q->state == Q_ABANDONED) {
            slot_put(pg, q);
            continue;
        }
        q->state = Q_DONE;
        deliver_error(q, -ESHUTDOWN, "the PostgreSQL client is shutting down");
    }
    for (unsigned i = 0; i < pg->cfg.conn_count; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (c->pg)
            conn_close(c);
        for (uint32_t j = 0; c->stmts && j <= c->stmt_mask; j++) {
            free(c->stmts[j].sql);
            free(c->stmts[j].parse_err);
        }
        free(c->stmts);
        free(c->items);
    }
    free(pg->queries);
    free(pg->pbuf);
    free(pg->pvals);
    free(pg->conninfo);
    free(pg->keys);
    free(pg->vals);
    if (pg->opts)
        PQconninfoFree(pg->opts);
    free(pg);
}

/* ---------------------------------------------------------------------------------------------
 * Results and counters
 */

int eng_pg_result_status(const struct eng_pg_result *res)
{
    return res->status;
}

const char *eng_pg_result_error(const struct eng_pg_result *res)
{
    return res->status ? res->msg : NULL;
}

const char *eng_pg_result_sqlstate(const struct eng_pg_result *res)
{
    return res->sqlstate ? res->sqlstate : "";
}

size_t eng_pg_result_rows(const struct eng_pg_result *res)
{
    return res->status == 0 && res->res ? (size_t)PQntuples(res->res) : 0;
}

size_t eng_pg_result_cols(const struct eng_pg_result *res)
{
    return res->status == 0 && res->res ? (size_t)PQnfields(res->res) : 0;
}

const char *eng_pg_result_value(const struct eng_pg_result *res, size_t row, size_t col,
                                size_t *len)
{
    if (len)
        *len = 0;
    if (row >= eng_pg_result_rows(res) || col >= eng_pg_result_cols(res) ||
        PQgetisnull(res->res, (int)row, (int)col))
        return NULL;
    if (len)
        *len = (size_t)PQgetlength(res->res, (int)row, (int)col);
    return PQgetvalue(res->res, (int)row, (int)col);
}

uint64_t eng_pg_result_affected(const struct eng_pg_result *res)
{
    if (res->status != 0 || !res->res)
        return 0;
    const char *t = PQcmdTuples((PGresult *)res->res);
    return t && *t ? strtoull(t, NULL, 10) : 0;
}

void eng_pg_stats_get(const struct eng_pg *pg, struct eng_pg_stats *out)
{
    const uint64_t *src = (const uint64_t *)(const void *)&pg->stats;
    uint64_t *dst = (uint64_t *)(void *)out;
    _Static_assert(sizeof(struct eng_pg_stats) % sizeof(uint64_t) == 0, "counters only");
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------------------------
 * Blocking use (main thread)
 */

static PGconn *sync_connect(const char *conninfo, uint32_t timeout_ms, char *err, size_t err_len)
{
    char secs[16];
    snprintf(secs, sizeof(secs), "%u", timeout_ms / 1000 < 2 ? 2 : timeout_ms / 1000);
    /* expand_dbname: conninfo's keywords come first; connect_timeout after them wins. */
    const char *kw[] = {"dbname", "connect_timeout", NULL};
    const char *val[] = {conninfo, secs, NULL};
    PGconn *conn = PQconnectdbParams(kw, val, 1);
    if (!conn) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        msg_copy(err, err_len, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, notice_drop, NULL);
    char set[64];
    snprintf(set, sizeof(set), "SET statement_timeout = %u", timeout_ms);
    PQclear(PQexec(conn, set));
    return conn;
}

int eng_pg_exec_sync(const char *conninfo, const char *sql, const char *const *params,
                     size_t param_count, uint32_t timeout_ms, eng_pg_done_fn *fn, void *ctx,
                     char *err, size_t err_len)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    PGconn *conn = sync_connect(conninfo, timeout_ms, err, err_len);
    if (!conn)
        return -1;
    /* Without parameters PQexec runs a whole script (several statements); the result is the
     * last statement's. */
    PGresult *r = param_count ? PQexecParams(conn, sql, (int)param_count, NULL, params, NULL,
                                             NULL, 0)
                              : PQexec(conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        struct eng_pg_result res = {.status = 0, .res = r, .sqlstate = ""};
        if (fn)
            fn(ctx, &res);
    } else {
        msg_copy(err, err_len, r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(r);
    PQfinish(conn);
    return rc;
}
