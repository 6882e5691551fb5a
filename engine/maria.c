/*
 * maria.c: a MySQL/MariaDB client per shard on libmariadb's non-blocking API (eng/maria.h).
 *
 * Each connection is a MYSQL handle with MYSQL_OPT_NONBLOCK. Every libmariadb call is a
 * _start/_cont pair: when it returns a MYSQL_WAIT_* mask, the connection waits for its socket
 * with eng_poll (POLLIN for READ, POLLOUT for WRITE) and for mysql_get_timeout_value_ms with
 * an eng_timer, then resumes the call with what happened. A connection goes CONNECTING
 * (mysql_real_connect) -> IDLE -> QUERY (mysql_real_query) -> STORE (mysql_store_result, which
 * reads the whole result) -> IDLE. An idle connection keeps POLLIN armed: readable while idle
 * means the server closed it. The protocol has no pipelining, so queries wait in a FIFO
 * (pending) for the next idle connection.
 *
 * Values are quoted in the way DBD::mysql does by default (client-side placeholders): each `?`
 * becomes 'value' escaped with mysql_real_escape_string on the connection that sends it (its
 * charset utf8mb4, so the escaping matches what the server parses), or NULL. DBD::mysql sets
 * CLIENT_FOUND_ROWS; so does this client, so rows_affected counts matched rows as 2.05 sees.
 *
 * A completion found inside eng_maria_query (a send that failed at once) is delivered from the
 * query's timer on a later turn. A query past its deadline fails with -ETIMEDOUT; if it was on
 * a connection, that connection is closed (shutdown(2) first, so mysql_close never waits) and
 * reopened, since the server's answer can no longer be told apart. Failed connection
 * attempts back off exponentially; while no connection is open and the last attempt failed,
 * queries fail fast with -ENOTCONN. A host given by name (other than "localhost", the Unix
 * socket) is resolved at every attempt off the shard (resolve.c, getaddrinfo_a, polled every
 * MARIA_RESOLVE_POLL_MS, bounded by connect_timeout_ms), because libmariadb would resolve it
 * inside mysql_real_connect_start and block; a name that does not resolve is a failed attempt.
 *
 * Owns: the MYSQL handles and their sockets, query slots (queries_max, allocated at create), a
 * copy of each query's statement and values (one malloc per query, freed at its done), one
 * statement buffer per connection (grown as needed up to statement_bytes_max), the row tables
 * handed to done. libmariadb allocates results. Thread: the client's shard only.
 */
#include "eng/maria.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mysql.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "resolve.h"

#define MARIA_ERR_BYTES 256
#define MARIA_NAME_BYTES 64
/* A timer armed from a timer callback must not fire in the current pass of the wheel, and a
 * closed socket's poll must be retired before its number is polled again (see pg.c). */
#define MARIA_RESOLVE_POLL_MS 5u /* how often a connection looks at its host lookup */
#define MARIA_NEXT_TURN_MS 1u
#define MARIA_CR_MIN 2000u /* client-side error numbers (CR_*): the connection is unusable */
#define MARIA_CR_MAX 2999u

#define MARIA_STAT_ADD(m, field, n)                                                                \
    __atomic_store_n(&(m)->stats.field, (m)->stats.field + (n), __ATOMIC_RELAXED)
#define MARIA_STAT_INC(m, field) MARIA_STAT_ADD(m, field, 1)

/* PENDING: waiting for a connection; RUNNING: on a connection; DONE: its outcome is stored and
 * its timer delivers it next turn. */
enum q_state { Q_FREE, Q_PENDING, Q_RUNNING, Q_DONE };

/* WAIT: an attempt starts when the timer fires; CONNECTING, IDLE, QUERY, STORE as above. */
enum c_state { C_WAIT, C_CONNECTING, C_IDLE, C_QUERY, C_STORE };

struct maria_query;

struct maria_conn {
    struct eng_maria *m;
    MYSQL my;
    bool open; /* my is initialised */
    int fd;
    bool polling;
    uint32_t events;
    struct eng_poll poll;
    struct eng_timer timer; /* C_WAIT: start an attempt; else libmariadb's own timeout */
    enum c_state state;
    bool failing; /* the last attempt failed */
    uint32_t backoff_ms;
    struct maria_query *q; /* QUERY, STORE */
    char *stmt;            /* the statement with its values, as sent */
    size_t stmt_cap;
    char last_err[MARIA_ERR_BYTES];
    struct eng_resolve *resolve; /* a lookup of the host name in flight */
    uint64_t resolve_started_ms;
    char resolved[64];           /* its numeric address */
};

struct maria_query {
    struct eng_timer timer; /* deadline; then the delivery of a stored outcome */
    struct eng_maria *m;
    eng_maria_done_fn *done;
    void *ctx;
    enum q_state state;
    struct maria_query *next; /* free or pending list */
    struct maria_conn *conn;
    /* blob: size_t offs[n], long lens[n] (-1: NULL), then sql, then the values */
    char *blob;
    size_t param_count;
    size_t sql_len;
    /* outcome */
    int status;
    MYSQL_RES *res;
    uint64_t affected;
    char sqlstate[6];
    char err[MARIA_ERR_BYTES];
};

struct eng_maria {
    struct eng_shard *sh;
    struct eng_maria_config cfg;
    char *strs[5]; /* copies: host, unix_socket, user, password, database */
    char name[MARIA_NAME_BYTES];
    struct maria_conn conns[ENG_MARIA_CONNS_MAX];
    struct maria_query *queries;
    struct maria_query *free_list;
    struct maria_query *pend_head, *pend_tail;
    uint32_t used;
    bool in_query; /* inside eng_maria_query: completions are deferred */
    bool destroying;
    /* the row table handed to done, grown as needed */
    MYSQL_ROW *rowv;
    size_t *lenv;
    size_t rowv_cap, lenv_cap;
    struct eng_maria_stats stats;
};

struct eng_maria_result {
    int status;
    const char *error;
    const char *sqlstate;
    size_t rows, cols;
    MYSQL_ROW *rowv;
    const size_t *lenv;
    uint64_t affected;
};

void eng_maria_config_defaults(struct eng_maria_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->conn_count = 2;
    cfg->queries_max = 1024;
    cfg->timeout_ms = 5000;
    cfg->connect_timeout_ms = 5000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->statement_bytes_max = 1u << 20;
}

/* ---------------------------------------------------------------------------------------------
 * Placeholders and statements (pure but for the escaping, which needs the connection)
 */

/* Index just past the quoted text starting at s[i] (the opening quote q). */
static size_t skip_quote(const char *s, size_t len, size_t i, char q)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\' && q != '`' && i + 1 < len)
            i++;
        else if (s[i] == q)
            return i + 1 < len && s[i + 1] == q ? (i++, i + 0) : i + 1;
    }
    return len;
}

size_t eng_maria_placeholders(const char *sql, size_t len, size_t *offs, size_t offs_max)
{
    size_t n = 0, i = 0;
    while (i < len) {
        char c = sql[i];
        if (c == '\'' || c == '"' || c == '`') {
            i = skip_quote(sql, len, i, c);
        } else if (c == '#' || (c == '-' && i + 2 < len && sql[i + 1] == '-' &&
                                (sql[i + 2] == ' ' || sql[i + 2] == '\t' || sql[i + 2] == '\n'))) {
            while (i < len && sql[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
            const char *end = memmem(sql + i + 2, len - i - 2, "*/", 2);
            i = end ? (size_t)(end - sql) + 2 : len;
        } else {
            if (c == '?') {
                if (n < offs_max)
                    offs[n] = i;
                n++;
            }
            i++;
        }
    }
    return n;
}

/* The statement with each value quoted in, into *buf (grown up to max). Length or -E2BIG. */
static long stmt_build(MYSQL *my, const char *sql, size_t sql_len, const size_t *offs,
                       const long *lens, const char *vals, size_t n, char **buf, size_t *cap,
                       size_t max)
{
    size_t need = sql_len + 1;
    for (size_t i = 0; i < n; i++)
        need += lens[i] < 0 ? 4 : 2 * (size_t)lens[i] + 3;
    if (need > max)
        return -E2BIG;
    if (need > *cap) {
        char *nb = realloc(*buf, need);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = need;
    }
    char *o = *buf;
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, sql + from, offs[i] - from);
        o += offs[i] - from;
        from = offs[i] + 1;
        if (lens[i] < 0) {
            memcpy(o, "NULL", 4);
            o += 4;
            continue;
        }
        *o++ = '\'';
        o += mysql_real_escape_string(my, o, vals, (unsigned long)lens[i]);
        *o++ = '\'';
        vals += lens[i] + 1;
    }
    memcpy(o, sql + from, sql_len - from);
    o += sql_len - from;
    *o = '\0';
    return (long)(o - *buf);
}

/* ---------------------------------------------------------------------------------------------
 * Creating
 */

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    *oom = *oom || !d;
    return d;
}

static void conn_attempt(struct eng_shard *sh, struct eng_timer *t);

int eng_maria_create(struct eng_shard *sh, const struct eng_maria_config *cfg,
                     struct eng_maria **out, char *err, size_t err_len)
{
    ENG_ASSERT(sh == eng_shard_self());
    if (cfg->conn_count < 1 || cfg->conn_count > ENG_MARIA_CONNS_MAX || !cfg->queries_max) {
        snprintf(err, err_len, "MariaDB client: connections must be 1..%u, queries_max > 0",
                 ENG_MARIA_CONNS_MAX);
        return -EINVAL;
    }
    struct eng_maria *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    bool oom = false;
    m->sh = sh;
    m->cfg = *cfg;
    const char *src[5] = {cfg->host, cfg->unix_socket, cfg->user, cfg->password, cfg->database};
    for (int i = 0; i < 5; i++)
        m->strs[i] = dup_opt(src[i], &oom);
    snprintf(m->name, sizeof(m->name), "%s", cfg->name ? cfg->name : "mysql");
    m->queries = calloc(cfg->queries_max, sizeof(*m->queries));
    if (oom || !m->queries) {
        eng_maria_destroy(m);
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t i = cfg->queries_max; i-- > 0;) {
        m->queries[i].m = m;
        m->queries[i].next = m->free_list;
        m->free_list = &m->queries[i];
    }
    for (unsigned i = 0; i < cfg->conn_count; i++) {
        struct maria_conn *c = &m->conns[i];
        c->m = m;
        c->fd = -1;
        c->state = C_WAIT;
        c->backoff_ms = cfg->backoff_min_ms;
        eng_timer_init(&c->timer, conn_attempt);
        eng_timer_arm(sh, &c->timer, 0);
    }
    *out = m;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Delivering outcomes
 */

static void query_free(struct eng_maria *m, struct maria_query *q)
{
    eng_timer_cancel(m->sh, &q->timer);
    if (q->res)
        mysql_free_result(q->res);
    q->res = NULL;
    free(q->blob);
    q->blob = NULL;
    q->state = Q_FREE;
    q->conn = NULL;
    q->next = m->free_list;
    m->free_list = q;
    m->used--;
    MARIA_STAT_ADD(m, queue_depth, (uint64_t)-1);
}

/* Builds the row table of q's result into m's arrays. 0 or -ENOMEM. */
static int rows_table(struct eng_maria *m, MYSQL_RES *res, size_t *rows, size_t *cols)
{
    *rows = res ? (size_t)mysql_num_rows(res) : 0;
    *cols = res ? mysql_num_fields(res) : 0;
    if (*rows > m->rowv_cap) {
        MYSQL_ROW *nr = realloc(m->rowv, *rows * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        m->rowv = nr;
        m->rowv_cap = *rows;
    }
    if (*rows * *cols > m->lenv_cap) {
        size_t *nl = realloc(m->lenv, *rows * *cols * sizeof(*nl));
        if (!nl)
            return -ENOMEM;
        m->lenv = nl;
        m->lenv_cap = *rows * *cols;
    }
    for (size_t r = 0; r < *rows; r++) {
        m->rowv[r] = mysql_fetch_row(res);
        unsigned long *l = mysql_fetch_lengths(res);
        for (size_t c = 0; c < *cols; c++)
            m->lenv[r * *cols + c] = m->rowv[r] && l ? l[c] : 0;
    }
    return 0;
}

static void deliver(struct eng_maria *m, struct maria_query *q)
{
    struct eng_maria_result r = {.status = q->status, .sqlstate = q->sqlstate};
    if (q->status == 0 && rows_table(m, q->res, &r.rows, &r.cols) != 0) {
        r.status = -EIO;
        snprintf(q->err, sizeof(q->err), "out of memory for the result rows");
    }
    r.error = r.status ? q->err : NULL;
    r.rowv = m->rowv;
    r.lenv = m->lenv;
    r.affected = q->affected;
    switch (r.status) {
    case 0: MARIA_STAT_INC(m, ok); break;
    case -EIO: MARIA_STAT_INC(m, errors); break;
    case -ETIMEDOUT: MARIA_STAT_INC(m, timeouts); break;
    case -ENOTCONN: MARIA_STAT_INC(m, fail_fast); break;
    case -ECONNRESET: MARIA_STAT_INC(m, conn_lost); break;
    default: break;
    }
    eng_maria_done_fn *done = q->done;
    void *ctx = q->ctx;
    q->state = Q_DONE;
    done(ctx, &r);
    query_free(m, q);
}

/* Records q's outcome and delivers it now, or next turn when inside eng_maria_query. */
static void complete(struct eng_maria *m, struct maria_query *q, int status, const char *msg)
{
    q->status = status;
    if (status && q->err != msg)
        snprintf(q->err, sizeof(q->err), "%s", msg ? msg : strerror(-status));
    q->conn = NULL;
    q->state = Q_DONE;
    if (m->in_query) {
        eng_timer_arm(m->sh, &q->timer, MARIA_NEXT_TURN_MS);
        return;
    }
    eng_timer_cancel(m->sh, &q->timer);
    deliver(m, q);
}

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

static void conn_poll_fn(struct eng_shard *sh, struct eng_poll *p, uint32_t revents);
static void conn_timeout_fn(struct eng_shard *sh, struct eng_timer *t);
static void dispatch(struct eng_maria *m);

static bool any_open(const struct eng_maria *m)
{
    for (unsigned i = 0; i < m->cfg.conn_count; i++)
        if (m->conns[i].state >= C_IDLE)
            return true;
    return false;
}

/* No connection open, and every one's last attempt failed: queries fail fast. */
static bool all_failing(const struct eng_maria *m)
{
    for (unsigned i = 0; i < m->cfg.conn_count; i++)
        if (m->conns[i].state >= C_IDLE || !m->conns[i].failing)
            return false;
    return true;
}

static void fail_pending(struct eng_maria *m, int status, const char *msg)
{
    while (m->pend_head) {
        struct maria_query *q = m->pend_head;
        m->pend_head = q->next;
        if (!m->pend_head)
            m->pend_tail = NULL;
        q->next = NULL;
        complete(m, q, status, msg);
    }
}

/* Closes the connection without waiting (shutdown(2) first, so COM_QUIT cannot block) and
 * schedules the next attempt after delay_ms. */
static void conn_close(struct maria_conn *c, uint32_t delay_ms)
{
    struct eng_maria *m = c->m;
    if (c->polling)
        eng_poll_stop(m->sh, &c->poll);
    c->polling = false;
    eng_timer_cancel(m->sh, &c->timer);
    if (c->open) {
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
        mysql_close(&c->my);
    }
    c->open = false;
    c->fd = -1;
    c->q = NULL;
    c->state = C_WAIT;
    if (!m->destroying) {
        c->timer.fn = conn_attempt;
        eng_timer_arm(m->sh, &c->timer, delay_ms < MARIA_NEXT_TURN_MS ? MARIA_NEXT_TURN_MS
                                                                     : delay_ms);
    }
}

/* An established connection broke: its query fails with -ECONNRESET; reopen next turn. */
static void conn_break(struct maria_conn *c, const char *why)
{
    struct eng_maria *m = c->m;
    snprintf(c->last_err, sizeof(c->last_err), "%s", why);
    struct maria_query *q = c->q;
    MARIA_STAT_INC(m, disconnects);
    eng_log(ENG_LOG_WARNING, "mysql %s: connection lost: %s", m->name, why);
    conn_close(c, 0);
    if (q) {
        char msg[MARIA_ERR_BYTES];
        snprintf(msg, sizeof(msg), "connection to MySQL lost: %s", why);
        complete(m, q, -ECONNRESET, msg);
    }
    if (!any_open(m) && all_failing(m))
        fail_pending(m, -ENOTCONN, c->last_err);
}

/* Waits for what libmariadb asked (a MYSQL_WAIT_* mask). */
static void conn_wait(struct maria_conn *c, int status)
{
    struct eng_maria *m = c->m;
    uint32_t ev = (status & MYSQL_WAIT_READ ? POLLIN : 0u) |
                  (status & MYSQL_WAIT_WRITE ? POLLOUT : 0u);
    if (!ev)
        ev = POLLIN;
    int fd = (int)mysql_get_socket(&c->my);
    if (c->polling && fd != c->fd) {
        eng_poll_stop(m->sh, &c->poll);
        c->polling = false;
    }
    c->fd = fd;
    int rc = 0;
    if (!c->polling && fd >= 0) {
        rc = eng_poll_start(m->sh, &c->poll, fd, ev, conn_poll_fn);
        c->polling = rc == 0;
    } else if (c->polling && ev != c->events) {
        rc = eng_poll_update(m->sh, &c->poll, ev);
    }
    c->events = ev;
    if (rc < 0)
        eng_log(ENG_LOG_ERR, "mysql %s: cannot poll its socket: %s", m->name, strerror(-rc));
    c->timer.fn = conn_timeout_fn;
    if (status & MYSQL_WAIT_TIMEOUT)
        eng_timer_arm(m->sh, &c->timer, mysql_get_timeout_value_ms(&c->my));
    else
        eng_timer_cancel(m->sh, &c->timer);
}

/* An attempt failed (why: libmariadb's error or the host's lookup): back off and retry. */
static void conn_failed(struct maria_conn *c, const char *why)
{
    struct eng_maria *m = c->m;
    snprintf(c->last_err, sizeof(c->last_err), "connection to MySQL %s failed: %s", m->name,
             why);
    MARIA_STAT_INC(m, connect_failures);
    if (!c->failing)
        eng_log(ENG_LOG_WARNING, "mysql %s: %s", m->name, c->last_err);
    c->failing = true;
    uint32_t wait = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > m->cfg.backoff_max_ms ? m->cfg.backoff_max_ms
                                                               : c->backoff_ms * 2;
    conn_close(c, wait);
    if (!any_open(m) && all_failing(m))
        fail_pending(m, -ENOTCONN, c->last_err);
}

static void conn_connected(struct maria_conn *c, MYSQL *ret)
{
    struct eng_maria *m = c->m;
    if (!ret) {
        conn_failed(c, mysql_error(&c->my));
        return;
    }
    if (c->failing)
        eng_log(ENG_LOG_NOTICE, "mysql %s: connected again", m->name);
    c->failing = false;
    c->backoff_ms = m->cfg.backoff_min_ms;
    c->state = C_IDLE;
    MARIA_STAT_INC(m, connects);
    conn_wait(c, MYSQL_WAIT_READ); /* idle: readable means closed by the server */
    dispatch(m);
}

static void resolve_drop(struct maria_conn *c)
{
    eng_resolve_drop(c->resolve);
    c->resolve = NULL;
}

/* The host is a name: start its lookup (off the shard) or look at the one in flight. Returns
 * the numeric address, or NULL: still looking (c->timer re-armed) or failed (why set). */
static const char *resolve_step(struct maria_conn *c, const char *host, char *why, size_t len)
{
    struct eng_maria *m = c->m;
    uint64_t now = eng_now_ms(m->sh);
    if (!c->resolve) {
        const struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        int rc = eng_resolve_start(host, NULL, &hints, &c->resolve);
        if (rc != 0) {
            snprintf(why, len, "cannot resolve MySQL host %.200s: %s", host, gai_strerror(rc));
            return NULL;
        }
        c->resolve_started_ms = now;
    } else if (eng_resolve_done(c->resolve)) {
        const struct addrinfo *ai = NULL;
        int rc = eng_resolve_result(c->resolve, &ai);
        int nrc = rc == 0 ? getnameinfo(ai->ai_addr, ai->ai_addrlen, c->resolved,
                                        sizeof(c->resolved), NULL, 0, NI_NUMERICHOST)
                          : 0;
        resolve_drop(c);
        if (rc != 0 || nrc != 0) {
            snprintf(why, len, "cannot resolve MySQL host %.200s: %s", host,
                     gai_strerror(rc ? rc : nrc));
            return NULL;
        }
        return c->resolved;
    } else if (now - c->resolve_started_ms >= m->cfg.connect_timeout_ms) {
        resolve_drop(c);
        snprintf(why, len, "cannot resolve MySQL host %.200s: the lookup timed out", host);
        return NULL;
    }
    c->timer.fn = conn_attempt;
    eng_timer_arm(m->sh, &c->timer, MARIA_RESOLVE_POLL_MS);
    return NULL;
}

static bool is_numeric(const char *host)
{
    unsigned char bin[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}

static void conn_attempt(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct maria_conn *c = (struct maria_conn *)(void *)((char *)t - offsetof(struct maria_conn,
                                                                                timer));
    struct eng_maria *m = c->m;
    const char *host = m->strs[0];
    /* A name other than "localhost" (libmariadb's Unix socket) is looked up here, since
     * libmariadb would resolve it inside mysql_real_connect_start and block the shard. */
    if (host && *host && strcmp(host, "localhost") != 0 && !is_numeric(host)) {
        char why[300] = "";
        host = resolve_step(c, host, why, sizeof(why));
        if (!host) {
            if (why[0])
                conn_failed(c, why);
            return;
        }
    }
    if (!mysql_init(&c->my)) {
        conn_connected(c, NULL);
        return;
    }
    c->open = true;
    unsigned ct = (m->cfg.connect_timeout_ms + 999) / 1000;
    my_bool off = 0;
    mysql_options(&c->my, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(&c->my, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(&c->my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(&c->my, MYSQL_OPT_LOCAL_INFILE, &off);
    c->state = C_CONNECTING;
    MYSQL *ret = NULL;
    int st = mysql_real_connect_start(&ret, &c->my, host, m->strs[2], m->strs[3],
                                      m->strs[4], m->cfg.port, m->strs[1], CLIENT_FOUND_ROWS);
    if (st)
        conn_wait(c, st);
    else
        conn_connected(c, ret);
}

/* The statement on c finished (ret as mysql_real_query returned it): store its result. */
static void conn_stored(struct maria_conn *c, MYSQL_RES *res);

static bool is_conn_error(unsigned no)
{
    return no >= MARIA_CR_MIN && no <= MARIA_CR_MAX;
}

/* A statement failed on c: the server refused it (-EIO; c stays), or c broke. */
static void conn_stmt_failed(struct maria_conn *c)
{
    struct eng_maria *m = c->m;
    unsigned no = mysql_errno(&c->my);
    if (is_conn_error(no)) {
        conn_break(c, mysql_error(&c->my));
        return;
    }
    struct maria_query *q = c->q;
    snprintf(q->sqlstate, sizeof(q->sqlstate), "%s", mysql_sqlstate(&c->my));
    snprintf(q->err, sizeof(q->err), "%s", mysql_error(&c->my));
    c->q = NULL;
    c->state = C_IDLE;
    conn_wait(c, MYSQL_WAIT_READ);
    complete(m, q, -EIO, q->err);
    dispatch(m);
}

static void conn_queried(struct maria_conn *c, int ret)
{
    if (ret != 0) {
        conn_stmt_failed(c);
        return;
    }
    c->state = C_STORE;
    MYSQL_RES *res = NULL;
    int st = mysql_store_result_start(&res, &c->my);
    if (st)
        conn_wait(c, st);
    else
        conn_stored(c, res);
}

static void conn_stored(struct maria_conn *c, MYSQL_RES *res)
{
    struct eng_maria *m = c->m;
    if (!res && mysql_field_count(&c->my) != 0) {
        conn_stmt_failed(c);
        return;
    }
    struct maria_query *q = c->q;
    q->res = res;
    q->affected = res ? 0 : (uint64_t)mysql_affected_rows(&c->my);
    c->q = NULL;
    c->state = C_IDLE;
    conn_wait(c, MYSQL_WAIT_READ);
    complete(m, q, 0, NULL);
    dispatch(m);
}

/* Resumes c's call with the events that happened (MYSQL_WAIT_*). */
static void conn_resume(struct maria_conn *c, int ready)
{
    int st = 0;
    switch (c->state) {
    case C_CONNECTING: {
        MYSQL *ret = NULL;
        st = mysql_real_connect_cont(&ret, &c->my, ready);
        if (!st)
            conn_connected(c, ret);
        break;
    }
    case C_QUERY: {
        int ret = 0;
        st = mysql_real_query_cont(&ret, &c->my, ready);
        if (!st)
            conn_queried(c, ret);
        break;
    }
    case C_STORE: {
        MYSQL_RES *res = NULL;
        st = mysql_store_result_cont(&res, &c->my, ready);
        if (!st)
            conn_stored(c, res);
        break;
    }
    case C_IDLE: {
        /* Readiness reported for an idle socket may be stale (the poll saw the last answer
         * before it was read); only EOF or bytes nobody asked for mean the server ended it. */
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_break(c, n == 0 ? "the server closed the connection"
                              : "the server sent data on an idle connection");
        return;
    }
    case C_WAIT:
        return;
    }
    if (st)
        conn_wait(c, st);
}

static void conn_poll_fn(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct maria_conn *c = (struct maria_conn *)(void *)((char *)p - offsetof(struct maria_conn,
                                                                                poll));
    int ready = (revents & (POLLIN | POLLERR | POLLHUP) ? MYSQL_WAIT_READ : 0) |
                (revents & (POLLOUT | POLLERR | POLLHUP) ? MYSQL_WAIT_WRITE : 0);
    if (revents & POLLNVAL) {
        conn_break(c, "socket rejected by the poller");
        return;
    }
    conn_resume(c, ready);
}

static void conn_timeout_fn(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct maria_conn *c = (struct maria_conn *)(void *)((char *)t - offsetof(struct maria_conn,
                                                                                timer));
    conn_resume(c, MYSQL_WAIT_TIMEOUT);
}

/* ---------------------------------------------------------------------------------------------
 * Queries
 */

static struct maria_conn *idle_conn(struct eng_maria *m)
{
    for (unsigned i = 0; i < m->cfg.conn_count; i++)
        if (m->conns[i].state == C_IDLE)
            return &m->conns[i];
    return NULL;
}

/* Sends q on the idle connection c. */
static void send_query(struct maria_conn *c, struct maria_query *q)
{
    struct eng_maria *m = c->m;
    size_t n = q->param_count;
    const size_t *offs = (const size_t *)(void *)q->blob;
    const long *lens = (const long *)(void *)(q->blob + n * sizeof(size_t));
    const char *sql = q->blob + n * (sizeof(size_t) + sizeof(long));
    long len = stmt_build(&c->my, sql, q->sql_len, offs, lens, sql + q->sql_len + 1, n,
                          &c->stmt, &c->stmt_cap, m->cfg.statement_bytes_max);
    if (len < 0) {
        complete(m, q, (int)len, len == -E2BIG ? "statement too long" : "out of memory");
        return;
    }
    q->state = Q_RUNNING;
    q->conn = c;
    c->q = q;
    c->state = C_QUERY;
    MARIA_STAT_INC(m, round_trips);
    int ret = 0;
    int st = mysql_real_query_start(&ret, &c->my, c->stmt, (unsigned long)len);
    if (st)
        conn_wait(c, st);
    else
        conn_queried(c, ret);
}

static void dispatch(struct eng_maria *m)
{
    struct maria_conn *c;
    while (m->pend_head && (c = idle_conn(m)) != NULL) {
        struct maria_query *q = m->pend_head;
        m->pend_head = q->next;
        if (!m->pend_head)
            m->pend_tail = NULL;
        q->next = NULL;
        send_query(c, q);
    }
}

static void query_timer_fn(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct maria_query *q = (struct maria_query *)(void *)t;
    struct eng_maria *m = q->m;
    if (q->state == Q_DONE) {
        deliver(m, q);
        return;
    }
    if (q->state == Q_PENDING) {
        struct maria_query **pp = &m->pend_head, *prev = NULL;
        while (*pp != q) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = q->next;
        if (m->pend_tail == q)
            m->pend_tail = prev;
        q->next = NULL;
        complete(m, q, -ETIMEDOUT, "query timed out waiting for a MySQL connection");
        return;
    }
    /* Running: the connection cannot be told to forget it; close and reopen it. */
    struct maria_conn *c = q->conn;
    c->q = NULL;
    MARIA_STAT_INC(m, disconnects);
    conn_close(c, 0);
    complete(m, q, -ETIMEDOUT, "query timed out");
}

/* Copies sql and the values into one block: offs[n], lens[n], sql, values. */
static char *blob_make(const char *sql, size_t sql_len, const size_t *offs,
                       const char *const *params, const size_t *param_lens, size_t n)
{
    size_t bytes = n * (sizeof(size_t) + sizeof(long)) + sql_len + 1;
    for (size_t i = 0; i < n; i++)
        bytes += params[i] ? (param_lens ? param_lens[i] : strlen(params[i])) + 1 : 0;
    char *b = malloc(bytes);
    if (!b)
        return NULL;
    memcpy(b, offs, n * sizeof(size_t));
    long *lens = (long *)(void *)(b + n * sizeof(size_t));
    char *p = b + n * (sizeof(size_t) + sizeof(long));
    memcpy(p, sql, sql_len);
    p[sql_len] = '\0';
    p += sql_len + 1;
    for (size_t i = 0; i < n; i++) {
        lens[i] = -1;
        if (!params[i])
            continue;
        size_t l = param_lens ? param_lens[i] : strlen(params[i]);
        memcpy(p, params[i], l);
        p[l] = '\0';
        lens[i] = (long)l;
        p += l + 1;
    }
    return b;
}

#define MARIA_OFFS_STACK 256u

int eng_maria_query(struct eng_maria *m, const char *sql, const char *const *params,
                    const size_t *param_lens, size_t param_count, uint32_t timeout_ms,
                    eng_maria_done_fn *done, void *ctx)
{
    ENG_ASSERT(done != NULL);
    ENG_ASSERT(m->sh == eng_shard_self());
    if (m->destroying)
        return -ESHUTDOWN;
    if (!sql || (param_count && !params))
        return -EINVAL;
    if (param_count > ENG_MARIA_PARAMS_MAX)
        return -E2BIG;
    size_t sql_len = strlen(sql);
    size_t offs_stack[MARIA_OFFS_STACK];
    size_t *offs = param_count <= MARIA_OFFS_STACK ? offs_stack
                                                   : malloc(param_count * sizeof(size_t));
    if (!offs)
        return -ENOMEM;
    size_t n = eng_maria_placeholders(sql, sql_len, offs, param_count);
    struct maria_query *q = m->free_list;
    int rc = n != param_count ? -EINVAL : !q ? -ENOBUFS : 0;
    char *blob = rc ? NULL : blob_make(sql, sql_len, offs, params, param_lens, n);
    if (offs != offs_stack)
        free(offs);
    if (!rc && !blob)
        rc = -ENOMEM;
    if (rc) {
        if (rc == -ENOBUFS)
            MARIA_STAT_INC(m, queue_full);
        return rc;
    }
    m->free_list = q->next;
    m->used++;
    MARIA_STAT_INC(m, queries);
    MARIA_STAT_INC(m, queue_depth);
    if (m->stats.queue_depth > m->stats.queue_depth_max)
        __atomic_store_n(&m->stats.queue_depth_max, m->stats.queue_depth, __ATOMIC_RELAXED);
    *q = (struct maria_query){.m = m, .done = done, .ctx = ctx, .state = Q_PENDING,
                              .blob = blob, .param_count = n, .sql_len = sql_len};
    eng_timer_init(&q->timer, query_timer_fn);
    m->in_query = true;
    eng_timer_arm(m->sh, &q->timer, timeout_ms ? timeout_ms : m->cfg.timeout_ms);
    if (!any_open(m) && all_failing(m)) {
        const char *why = m->conns[0].last_err;
        complete(m, q, -ENOTCONN, why[0] ? why : "no connection to MySQL");
    } else {
        if (m->pend_tail)
            m->pend_tail->next = q;
        else
            m->pend_head = q;
        m->pend_tail = q;
        dispatch(m);
    }
    m->in_query = false;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Draining and destroying
 */

int eng_maria_drain(struct eng_maria *m, uint32_t timeout_ms)
{
    ENG_ASSERT(m->sh == eng_shard_self());
    int had = (int)m->used;
    uint64_t end = eng_clock_ms() + timeout_ms;
    for (;;) {
        /* Outcomes waiting for their turn go out now. */
        for (uint32_t i = 0; i < m->cfg.queries_max; i++)
            if (m->queries[i].state == Q_DONE)
                deliver(m, &m->queries[i]);
        struct pollfd pf[ENG_MARIA_CONNS_MAX];
        struct maria_conn *pc[ENG_MARIA_CONNS_MAX];
        nfds_t nf = 0;
        int wait_ms = -1;
        for (unsigned i = 0; i < m->cfg.conn_count; i++) {
            struct maria_conn *c = &m->conns[i];
            if (c->state != C_QUERY && c->state != C_STORE)
                continue;
            pf[nf] = (struct pollfd){.fd = c->fd, .events = (short)c->events};
            pc[nf++] = c;
            if (eng_timer_armed(&c->timer)) {
                int t = (int)mysql_get_timeout_value_ms(&c->my);
                wait_ms = wait_ms < 0 || t < wait_ms ? t : wait_ms;
            }
        }
        uint64_t now = eng_clock_ms();
        if (nf == 0 || now >= end)
            break;
        int left = (int)(end - now);
        int w = wait_ms < 0 || left < wait_ms ? left : wait_ms;
        int rc = poll(pf, nf, w);
        if (rc < 0 && errno != EINTR)
            break;
        for (nfds_t i = 0; i < nf; i++) {
            uint32_t re = (uint32_t)pf[i].revents;
            if (rc == 0 && eng_timer_armed(&pc[i]->timer))
                conn_resume(pc[i], MYSQL_WAIT_TIMEOUT);
            else if (re)
                conn_poll_fn(m->sh, &pc[i]->poll, re);
        }
    }
    for (uint32_t i = 0; i < m->cfg.queries_max; i++) {
        struct maria_query *q = &m->queries[i];
        if (q->state == Q_PENDING || q->state == Q_RUNNING)
            query_timer_fn(m->sh, &q->timer); /* fails it with -ETIMEDOUT */
        if (q->state == Q_DONE)
            deliver(m, q);
    }
    return had;
}

void eng_maria_destroy(struct eng_maria *m)
{
    if (!m)
        return;
    m->destroying = true;
    for (unsigned i = 0; i < ENG_MARIA_CONNS_MAX; i++) {
        struct maria_conn *c = &m->conns[i];
        if (!c->m)
            continue;
        struct maria_query *q = c->q;
        resolve_drop(c);
        conn_close(c, 0);
        if (q)
            complete(m, q, -ESHUTDOWN, "the MySQL client is shutting down");
        free(c->stmt);
    }
    fail_pending(m, -ESHUTDOWN, "the MySQL client is shutting down");
    for (uint32_t i = 0; m->queries && i < m->cfg.queries_max; i++)
        if (m->queries[i].state == Q_DONE)
            deliver(m, &m->queries[i]);
    for (int i = 0; i < 5; i++)
        free(m->strs[i]);
    free(m->queries);
    free(m->rowv);
    free(m->lenv);
    free(m);
}

bool eng_maria_ready(const struct eng_maria *m)
{
    return any_open(m);
}

void eng_maria_stats_get(const struct eng_maria *m, struct eng_maria_stats *out)
{
    const uint64_t *src = (const uint64_t *)(const void *)&m->stats;
    uint64_t *dst = (uint64_t *)(void *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------------------------
 * Results
 */

int eng_maria_result_status(const struct eng_maria_result *res)
{
    return res->status;
}

const char *eng_maria_result_error(const struct eng_maria_result *res)
{
    return res->error;
}

const char *eng_maria_result_sqlstate(const struct eng_maria_result *res)
{
    return res->status == -EIO ? res->sqlstate : "";
}

size_t eng_maria_result_rows(const struct eng_maria_result *res)
{
    return res->rows;
}

size_t eng_maria_result_cols(const struct eng_maria_result *res)
{
    return res->cols;
}

const char *eng_maria_result_value(const struct eng_maria_result *res, size_t row, size_t col,
                                   size_t *len)
{
    if (len)
        *len = 0;
    if (row >= res->rows || col >= res->cols || !res->rowv[row])
        return NULL;
    if (len)
        *len = res->lenv[row * res->cols + col];
    return res->rowv[row][col];
}

uint64_t eng_maria_result_affected(const struct eng_maria_result *res)
{
    return res->affected;
}

/* ---------------------------------------------------------------------------------------------
 * Blocking use (main thread)
 */

int eng_maria_exec_sync(const struct eng_maria_config *cfg, const char *sql,
                        const char *const *params, size_t param_count, eng_maria_done_fn *fn,
                        void *ctx, char *err, size_t err_len)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    MYSQL my;
    if (!mysql_init(&my)) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    unsigned ct = (cfg->connect_timeout_ms + 999) / 1000;
    unsigned rt = (cfg->timeout_ms + 999) / 1000;
    my_bool off = 0;
    mysql_options(&my, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(&my, MYSQL_OPT_READ_TIMEOUT, &rt);
    mysql_options(&my, MYSQL_OPT_WRITE_TIMEOUT, &rt);
    mysql_options(&my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(&my, MYSQL_OPT_LOCAL_INFILE, &off);
    int rc = -1;
    size_t sql_len = strlen(sql);
    size_t *offs = malloc((param_count ? param_count : 1) * sizeof(size_t));
    char *blob = NULL, *stmt = NULL;
    size_t cap = 0;
    if (!offs) {
        snprintf(err, err_len, "out of memory");
    } else if (!mysql_real_connect(&my, cfg->host, cfg->user, cfg->password, cfg->database,
                                   cfg->port, cfg->unix_socket, CLIENT_FOUND_ROWS)) {
        snprintf(err, err_len, "connection to MySQL failed: %s", mysql_error(&my));
    } else if (eng_maria_placeholders(sql, sql_len, offs, param_count) != param_count) {
        snprintf(err, err_len, "the statement's placeholders do not match its %zu values",
                 param_count);
    } else if (!(blob = blob_make(sql, sql_len, offs, params, NULL, param_count))) {
        snprintf(err, err_len, "out of memory");
    } else {
        size_t n = param_count;
        const long *lens = (const long *)(void *)(blob + n * sizeof(size_t));
        const char *s = blob + n * (sizeof(size_t) + sizeof(long));
        long len = stmt_build(&my, s, sql_len, offs, lens, s + sql_len + 1, n, &stmt, &cap,
                              cfg->statement_bytes_max ? cfg->statement_bytes_max : SIZE_MAX);
        MYSQL_RES *res = NULL;
        if (len < 0) {
            snprintf(err, err_len, "%s", len == -E2BIG ? "statement too long" : "out of memory");
        } else if (mysql_real_query(&my, stmt, (unsigned long)len) != 0 ||
                   (!(res = mysql_store_result(&my)) && mysql_field_count(&my) != 0)) {
            snprintf(err, err_len, "%s", mysql_error(&my));
        } else {
            rc = 0;
            struct eng_maria tmp = {0};
            struct eng_maria_result r = {.sqlstate = ""};
            if (fn && rows_table(&tmp, res, &r.rows, &r.cols) == 0) {
                r.rowv = tmp.rowv;
                r.lenv = tmp.lenv;
                r.affected = res ? 0 : (uint64_t)mysql_affected_rows(&my);
                fn(ctx, &r);
            }
            free(tmp.rowv);
            free(tmp.lenv);
        }
        if (res)
            mysql_free_result(res);
    }
    mysql_close(&my);
    free(offs);
    free(blob);
    free(stmt);
    return rc;
}
