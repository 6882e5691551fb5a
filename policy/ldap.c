/*
 * ldap.c: the `Ldap` connection (spec 9.4): an asynchronous LDAP client per shard on libldap
 * 2.5, and the registry that shares one client per <Connection> block and shard.
 *
 * Connecting (TCP, and STARTTLS with a required valid certificate as 2.05's
 * start_tls(verify => 'require')) is blocking in libldap (ldap_connect, ldap_start_tls_s), so
 * it runs on a one-thread work pool of the client (eng/work.h) while the shard goes on; the
 * connection is not used until that job is done. Everything after is asynchronous on the
 * shard: the simple bind (ldap_sasl_bind, anonymous without binddn, as 2.05) and the searches
 * (ldap_search_ext) are sent with their msgids, the socket (LDAP_OPT_DESC, made non-blocking)
 * is polled with eng_poll, and ldap_result(..., zero timeout) collects what arrived, so many
 * searches are outstanding on one connection at once. Each search has a deadline of
 * timeout_s on a ring timer; at expiry it is abandoned (ldap_abandon_ext) and reported.
 *
 * Failures: a broken connection fails the searches out (POL_LDAP_LOST) and the next search
 * reconnects; a failed connect, STARTTLS or bind fails the searches waiting for it
 * (POL_LDAP_DOWN) and the client backs off (100 ms doubling to 10 s) during which searches
 * fail at once with the last error. Owns: the LDAP handle and its socket, the op table
 * (ops_max, allocated at create), the work pool. Only the owning shard calls in; done
 * callbacks run from the loop (never inside pol_ldap_search) and may search again.
 *
 * Limits: the connect job can block its worker for up to timeout_s per step (network timeout);
 * destroy waits for it. A server that accepts TCP but never answers the TLS handshake holds a
 * connect for that long.
 */
#include "ldap_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config.h"
#include "eng/assert.h"
#include "eng/log.h"
#include "eng/work.h"
#include "metrics.h"
#include "server.h"
#include "values.h"

#define LDAP_BACKOFF_MS_MIN 100u
#define LDAP_BACKOFF_MS_MAX 10000u
/* Messages taken from libldap per poll callback; the rest on the next loop turn. */
#define LDAP_PUMP_MAX 256u
/* Searches sent and unanswered per connection; the rest wait in the queue. slapd closes an
 * anonymous session with more than conn_max_pending (default 100) requests pending, and a
 * bound one past conn_max_pending_auth (1000): stay well under both. */
#define LDAP_IN_FLIGHT_MAX 64u
/* Attribute value arrays a done callback may look at (pol_ldap_result_value). */
#define LDAP_RESULT_ATTRS_MAX 32u
#define LDAP_ERROR_BYTES 256u
#define LDAP_SHARDS_MAX 1024u

/* ---------------------------------------------------------------------------------------------
 * Options
 */

void pol_ldap_config_defaults(struct pol_ldap_config *cfg)
{
    *cfg = (struct pol_ldap_config){
        .port = 389,
        .starttls = true,
        .timeout_s = 120,
        .keepalive = true,
        .ops_max = POL_LDAP_OPS_MAX_DEFAULT,
    };
}

void pol_ldap_config_free(struct pol_ldap_config *cfg)
{
    free(cfg->host);
    free(cfg->binddn);
    free(cfg->password);
    cfg->host = cfg->binddn = cfg->password = NULL;
}

static int opt_int(const struct pol_cfg_node *b, const char *name, long long lo, long long hi,
                   unsigned *out, char *err, size_t err_len)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    if (!o)
        return 0;
    long long v = 0;
    char why[128] = "";
    const char *s = o->value ? o->value : "";
    if (!pol_value_int(s, strlen(s), &v, why, sizeof(why)) || v < lo || v > hi) {
        snprintf(err, err_len, "option %s: '%s' is not an integer from %lld to %lld", name, s,
                 lo, hi);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static int opt_bool(const struct pol_cfg_node *b, const char *name, bool *out, char *err,
                    size_t err_len)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    if (!o)
        return 0;
    char why[128] = "";
    const char *s = o->value ? o->value : "";
    if (!pol_value_bool(s, strlen(s), out, why, sizeof(why))) {
        snprintf(err, err_len, "option %s: '%s' is not a boolean (1, 0 or empty)", name, s);
        return -1;
    }
    return 0;
}

static int opt_str(const struct pol_cfg_node *b, const char *name, const char *dflt, char **out,
                   char *err, size_t err_len)
{
    const struct pol_cfg_node *o = pol_cfg_option(b, name);
    const char *v = o ? (o->value ? o->value : "") : dflt;
    if (!v)
        return 0;
    *out = strdup(v);
    if (!*out) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return 0;
}

int pol_ldap_config_parse(const struct pol_cfg_node *block, struct pol_ldap_config *cfg,
                          char *err, size_t err_len)
{
    pol_ldap_config_defaults(cfg);
    if (opt_str(block, "host", "localhost", &cfg->host, err, err_len) != 0 ||
        opt_str(block, "binddn", NULL, &cfg->binddn, err, err_len) != 0 ||
        opt_str(block, "password", NULL, &cfg->password, err, err_len) != 0)
        return -1;
    if (opt_int(block, "port", 1, 65535, &cfg->port, err, err_len) != 0 ||
        opt_int(block, "timeout", 0, 86400, &cfg->timeout_s, err, err_len) != 0 ||
        opt_bool(block, "starttls", &cfg->starttls, err, err_len) != 0 ||
        opt_bool(block, "keepalive", &cfg->keepalive, err, err_len) != 0)
        return -1;
    if (!cfg->host[0]) {
        snprintf(err, err_len, "option host: empty");
        return -1;
    }
    return 0;
}

size_t pol_ldap_escape(const char *in, size_t in_len, char *out, size_t out_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < in_len; i++) {
        unsigned char ch = (unsigned char)in[i];
        bool esc = ch < 0x20 || ch == '*' || ch == '(' || ch == ')' || ch == '\\';
        char buf[3] = {(char)ch, 0, 0};
        size_t k = 1;
        if (esc) {
            buf[0] = '\\';
            buf[1] = hex[ch >> 4];
            buf[2] = hex[ch & 15];
            k = 3;
        }
        for (size_t j = 0; j < k; j++, n++)
            if (out_len > 0 && n < out_len - 1)
                out[n] = buf[j];
    }
    if (out_len > 0)
        out[n < out_len ? n : out_len - 1] = '\0';
    return n;
}

const char *pol_ldap_status_text(enum pol_ldap_status st)
{
    switch (st) {
    case POL_LDAP_OK: return "ok";
    case POL_LDAP_ERROR: return "error";
    case POL_LDAP_TIMEOUT: return "timeout";
    case POL_LDAP_LOST: return "connection lost";
    case POL_LDAP_DOWN: return "not connected";
    case POL_LDAP_BUSY: return "too many searches outstanding";
    case POL_LDAP_CANCELLED: return "cancelled";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------------
 * Client types
 */

enum op_where { OP_FREE, OP_QUEUED, OP_OUT, OP_FINISHED };

struct ldap_op {
    struct pol_ldap_client *c;
    struct ldap_op *prev, *next; /* in the list of where */
    enum op_where where;
    pol_ldap_done_fn *done;
    void *ctx;
    const char *base, *filter; /* the caller's, valid until done */
    const char *const *attrs;
    int msgid; /* -1 until sent */
    struct eng_timer deadline;
    LDAPMessage *first; /* first entry */
    size_t count;
    enum pol_ldap_status st; /* OP_FINISHED */
    char error[LDAP_ERROR_BYTES];
};

struct op_list {
    struct ldap_op *head, *tail;
};

enum client_state { C_DOWN, C_CONNECTING, C_BINDING, C_READY, C_BACKOFF };

struct connect_job {
    struct eng_work w;
    struct pol_ldap_client *c;
    LDAP *ld;
    int fd;
    char error[LDAP_ERROR_BYTES];
};

struct pol_ldap_client {
    struct eng_shard *sh;
    const struct pol_ldap_config *cfg;
    enum client_state state;
    LDAP *ld;
    int fd;
    struct eng_poll poll;
    bool polling;
    int bind_msgid;
    struct eng_timer conn_timer; /* bind deadline, or end of backoff */
    struct eng_timer kick;       /* finished ops, and pumping the rest */
    bool pump_more;
    uint32_t backoff_ms;
    char last_error[LDAP_ERROR_BYTES];
    struct eng_work_pool *wp;
    struct connect_job job;
    bool stopping;
    struct ldap_op *ops;
    struct ldap_op *free_ops; /* singly linked through next */
    struct op_list queued, out, finished;
    uint32_t out_count; /* ops in out: at most LDAP_IN_FLIGHT_MAX */
    struct pol_ldap_stats stats;
    uint8_t *health; /* the registry slot's LDAP_HEALTH_*, for /readyz (relaxed stores) */
};

/* A shard's connection as /readyz sees it. */
enum { LDAP_HEALTH_UNTRIED, LDAP_HEALTH_UP, LDAP_HEALTH_FAILING };

static void health_set(struct pol_ldap_client *c, uint8_t h)
{
    if (c->health)
        __atomic_store_n(c->health, h, __ATOMIC_RELAXED);
}

struct pol_ldap_result {
    enum pol_ldap_status st;
    const char *error;
    size_t count;
    LDAP *ld;
    LDAPMessage *first;
    char *dn;
    size_t attr_count;
    const char *attr_names[LDAP_RESULT_ATTRS_MAX];
    struct berval **attr_vals[LDAP_RESULT_ATTRS_MAX];
};

static void list_push(struct op_list *l, struct ldap_op *op, enum op_where where)
{
    ENG_ASSERT(op->where == OP_FREE);
    op->where = where;
    if (where == OP_OUT)
        op->c->out_count++;
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

static struct op_list *list_of(struct pol_ldap_client *c, enum op_where where)
{
    switch (where) {
    case OP_QUEUED: return &c->queued;
    case OP_OUT: return &c->out;
    case OP_FINISHED: return &c->finished;
    default: ENG_ASSERT(!"op in no list"); return NULL;
    }
}

static void list_remove(struct pol_ldap_client *c, struct ldap_op *op)
{
    struct op_list *l = list_of(c, op->where);
    if (op->where == OP_OUT) {
        ENG_ASSERT(c->out_count > 0);
        c->out_count--;
    }
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    op->where = OP_FREE;
}

/* ---------------------------------------------------------------------------------------------
 * Results
 */

enum pol_ldap_status pol_ldap_result_status(const struct pol_ldap_result *res)
{
    return res->st;
}

const char *pol_ldap_result_error(const struct pol_ldap_result *res)
{
    return res->error ? res->error : "";
}

size_t pol_ldap_result_count(const struct pol_ldap_result *res)
{
    return res->count;
}

const char *pol_ldap_result_dn(const struct pol_ldap_result *res)
{
    struct pol_ldap_result *m = (struct pol_ldap_result *)res; /* caches the DN */
    if (!m->first)
        return NULL;
    if (!m->dn)
        m->dn = ldap_get_dn(m->ld, m->first);
    return m->dn;
}

int pol_ldap_result_value(const struct pol_ldap_result *res, const char *attr, size_t idx,
                          const char **v, size_t *len)
{
    struct pol_ldap_result *m = (struct pol_ldap_result *)res; /* caches value arrays */
    if (!m->first)
        return -ENOENT;
    struct berval **vals = NULL;
    size_t i = 0;
    for (; i < m->attr_count; i++)
        if (strcasecmp(m->attr_names[i], attr) == 0)
            break;
    if (i < m->attr_count) {
        vals = m->attr_vals[i];
    } else {
        if (m->attr_count == LDAP_RESULT_ATTRS_MAX)
            return -ENOSPC;
        vals = ldap_get_values_len(m->ld, m->first, attr);
        m->attr_names[m->attr_count] = attr;
        m->attr_vals[m->attr_count++] = vals;
    }
    size_t n = vals ? (size_t)ldap_count_values_len(vals) : 0;
    if (idx >= n)
        return -ENOENT;
    *v = vals[idx]->bv_val;
    *len = vals[idx]->bv_len;
    return 0;
}

/* Runs op's done (from the loop) and frees the op. */
static void op_complete(struct ldap_op *op, enum pol_ldap_status st, const char *error)
{
    struct pol_ldap_client *c = op->c;
    if (op->where != OP_FREE)
        list_remove(c, op);
    eng_timer_cancel(c->sh, &op->deadline);
    /* After the connection closed libldap cannot read a kept entry (it needs the handle). */
    struct pol_ldap_result res = {.st = st,
                                  .error = error,
                                  .count = op->count,
                                  .ld = c->ld,
                                  .first = c->ld ? op->first : NULL};
    switch (st) {
    case POL_LDAP_OK: c->stats.ok++; break;
    case POL_LDAP_ERROR: c->stats.errors++; break;
    case POL_LDAP_TIMEOUT: c->stats.timeouts++; break;
    case POL_LDAP_LOST: c->stats.lost++; break;
    case POL_LDAP_DOWN: c->stats.down++; break;
    case POL_LDAP_BUSY: c->stats.busy++; break;
    case POL_LDAP_CANCELLED: c->stats.cancelled++; break;
    }
    ENG_ASSERT(c->stats.outstanding > 0);
    c->stats.outstanding--;
    pol_ldap_done_fn *done = op->done;
    void *ctx = op->ctx;
    done(ctx, &res);
    for (size_t i = 0; i < res.attr_count; i++)
        if (res.attr_vals[i])
            ldap_value_free_len(res.attr_vals[i]);
    if (res.dn)
        ldap_memfree(res.dn);
    if (op->first)
        ldap_msgfree(op->first);
    op->first = NULL;
    op->done = NULL;
    op->next = c->free_ops;
    c->free_ops = op;
}

/* Completes op later, from the kick timer (for callers that must not see done inside). */
static void op_finish_later(struct ldap_op *op, enum pol_ldap_status st, const char *error)
{
    struct pol_ldap_client *c = op->c;
    if (op->where != OP_FREE)
        list_remove(c, op);
    eng_timer_cancel(c->sh, &op->deadline);
    op->st = st;
    snprintf(op->error, sizeof(op->error), "%s", error ? error : "");
    list_push(&c->finished, op, OP_FINISHED);
    if (!eng_timer_armed(&c->kick))
        eng_timer_arm(c->sh, &c->kick, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Connection
 */

static void conn_close(struct pol_ldap_client *c)
{
    if (c->polling)
        eng_poll_stop(c->sh, &c->poll);
    c->polling = false;
    if (c->ld)
        ldap_unbind_ext(c->ld, NULL, NULL); /* closes the socket */
    c->ld = NULL;
    c->fd = -1;
    c->bind_msgid = -1;
    eng_timer_cancel(c->sh, &c->conn_timer);
}

static void connect_start(struct pol_ldap_client *c);

/* The connection broke (or was given up): fails the searches out with st, and with a failed
 * connect also those waiting for it. */
static void conn_fail(struct pol_ldap_client *c, bool connecting, const char *why)
{
    conn_close(c);
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    if (connecting) {
        c->stats.connect_failures++;
        health_set(c, LDAP_HEALTH_FAILING);
        c->state = C_BACKOFF;
        eng_timer_arm(c->sh, &c->conn_timer, c->backoff_ms);
        c->backoff_ms = c->backoff_ms * 2 > LDAP_BACKOFF_MS_MAX ? LDAP_BACKOFF_MS_MAX
                                                                : c->backoff_ms * 2;
        eng_log(ENG_LOG_ERR, "ldap %s:%u: %s", c->cfg->host, c->cfg->port, why);
    } else {
        c->state = C_DOWN;
        eng_log(ENG_LOG_WARNING, "ldap %s:%u: %s", c->cfg->host, c->cfg->port, why);
    }
    while (c->out.head)
        op_finish_later(c->out.head, POL_LDAP_LOST, why);
    if (connecting)
        while (c->queued.head)
            op_finish_later(c->queued.head, POL_LDAP_DOWN, why);
    else if (c->queued.head) /* held back by LDAP_IN_FLIGHT_MAX: they go on a new connection */
        connect_start(c);
}

static void op_send(struct ldap_op *op)
{
    struct pol_ldap_client *c = op->c;
    ENG_ASSERT(c->state == C_READY);
    int msgid = -1;
    int rc = ldap_search_ext(c->ld, op->base, LDAP_SCOPE_SUBTREE, op->filter,
                             (char **)(uintptr_t)op->attrs, 0, NULL, NULL, NULL, 0, &msgid);
    if (rc == LDAP_SUCCESS) {
        op->msgid = msgid;
        list_push(&c->out, op, OP_OUT);
        return;
    }
    char why[LDAP_ERROR_BYTES];
    snprintf(why, sizeof(why), "search failed: %s", ldap_err2string(rc));
    op_finish_later(op, POL_LDAP_ERROR, why);
    if (rc == LDAP_SERVER_DOWN)
        conn_fail(c, false, why);
}

static void queue_flush(struct pol_ldap_client *c)
{
    while (c->queued.head && c->state == C_READY && c->out_count < LDAP_IN_FLIGHT_MAX) {
        struct ldap_op *op = c->queued.head;
        list_remove(c, op);
        op_send(op);
    }
}

static void conn_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_ldap_client *c =
        (struct pol_ldap_client *)(void *)((char *)t - offsetof(struct pol_ldap_client, conn_timer));
    if (c->state == C_BINDING) {
        char why[LDAP_ERROR_BYTES];
        snprintf(why, sizeof(why), "cant connect ldap: bind timed out after %u s",
                 c->cfg->timeout_s);
        conn_fail(c, true, why);
    } else if (c->state == C_BACKOFF) {
        c->state = C_DOWN;
        if (c->queued.head)
            connect_start(c);
    }
}

static struct ldap_op *op_by_msgid(struct pol_ldap_client *c, int msgid)
{
    for (struct ldap_op *op = c->out.head; op; op = op->next)
        if (op->msgid == msgid)
            return op;
    return NULL;
}

/* The resultCode of a result message (freed here); for anything but success a sentence
 * "TEXT[: DIAGNOSTIC]" in why. */
static int result_code(struct pol_ldap_client *c, LDAPMessage *msg, char *why, size_t why_len)
{
    int code = LDAP_OTHER;
    char *diag = NULL;
    int rc = ldap_parse_result(c->ld, msg, &code, NULL, &diag, NULL, NULL, 1);
    if (rc != LDAP_SUCCESS)
        code = rc;
    if (code != LDAP_SUCCESS)
        snprintf(why, why_len, "%s%s%s", ldap_err2string(code), diag && *diag ? ": " : "",
                 diag ? diag : "");
    ldap_memfree(diag);
    return code;
}

static void bind_result(struct pol_ldap_client *c, LDAPMessage *msg)
{
    char why[LDAP_ERROR_BYTES - 16];
    if (result_code(c, msg, why, sizeof(why)) == LDAP_SUCCESS) {
        eng_timer_cancel(c->sh, &c->conn_timer);
        c->state = C_READY;
        c->backoff_ms = LDAP_BACKOFF_MS_MIN;
        c->stats.connects++;
        health_set(c, LDAP_HEALTH_UP);
        c->last_error[0] = '\0';
        queue_flush(c);
        return;
    }
    char msg_text[LDAP_ERROR_BYTES];
    snprintf(msg_text, sizeof(msg_text), "bind failed: %s", why);
    conn_fail(c, true, msg_text);
}

static void search_result(struct pol_ldap_client *c, struct ldap_op *op, LDAPMessage *msg)
{
    char why[LDAP_ERROR_BYTES];
    int code = result_code(c, msg, why, sizeof(why));
    list_remove(c, op);
    op_complete(op, code == LDAP_SUCCESS ? POL_LDAP_OK : POL_LDAP_ERROR,
                code == LDAP_SUCCESS ? "" : why);
}

/* One message from libldap (ownership passes here). */
static void message(struct pol_ldap_client *c, LDAPMessage *msg)
{
    int msgid = ldap_msgid(msg);
    int type = ldap_msgtype(msg);
    if (c->state == C_BINDING && msgid == c->bind_msgid) {
        bind_result(c, msg); /* frees msg */
        return;
    }
    struct ldap_op *op = op_by_msgid(c, msgid);
    if (!op) { /* abandoned after a timeout, or a referral we do not follow */
        ldap_msgfree(msg);
        return;
    }
    switch (type) {
    case LDAP_RES_SEARCH_ENTRY:
        if (op->count++ == 0)
            op->first = msg;
        else
            ldap_msgfree(msg);
        break;
    case LDAP_RES_SEARCH_RESULT:
        search_result(c, op, msg); /* frees msg */
        queue_flush(c);
        break;
    default: /* search references, intermediate responses */
        ldap_msgfree(msg);
        break;
    }
}

static void pump(struct pol_ldap_client *c)
{
    c->pump_more = false;
    for (unsigned n = 0; c->ld; n++) {
        if (n == LDAP_PUMP_MAX) {
            c->pump_more = true;
            eng_timer_arm(c->sh, &c->kick, 0);
            return;
        }
        struct timeval zero = {0, 0};
        LDAPMessage *msg = NULL;
        int rc = ldap_result(c->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);
        if (rc == 0)
            return;
        if (rc < 0) {
            int err = LDAP_SERVER_DOWN;
            ldap_get_option(c->ld, LDAP_OPT_RESULT_CODE, &err);
            char why[LDAP_ERROR_BYTES];
            snprintf(why, sizeof(why), "connection lost: %s", ldap_err2string(err));
            conn_fail(c, c->state == C_BINDING, why);
            return;
        }
        message(c, msg);
    }
}

static void poll_ready(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    (void)revents; /* errors and hang-ups show up through ldap_result */
    struct pol_ldap_client *c =
        (struct pol_ldap_client *)(void *)((char *)p - offsetof(struct pol_ldap_client, poll));
    pump(c);
}

static void kick_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_ldap_client *c =
        (struct pol_ldap_client *)(void *)((char *)t - offsetof(struct pol_ldap_client, kick));
    /* Only those finished now: a done may finish more, which re-arms the kick. */
    struct ldap_op *last = c->finished.tail;
    while (c->finished.head) {
        struct ldap_op *op = c->finished.head;
        bool was_last = op == last;
        list_remove(c, op);
        op_complete(op, op->st, op->error);
        if (was_last)
            break;
    }
    if (c->pump_more)
        pump(c);
}

/* Worker thread: TCP connect and STARTTLS, blocking (bounded by the network timeout). */
static void connect_run(struct eng_work *w, unsigned worker_index)
{
    (void)worker_index;
    struct connect_job *j = (struct connect_job *)(void *)w;
    const struct pol_ldap_config *cfg = j->c->cfg;
    char uri[1024];
    if (strstr(cfg->host, "://"))
        snprintf(uri, sizeof(uri), "%s", cfg->host);
    else if (strchr(cfg->host, ':'))
        snprintf(uri, sizeof(uri), "ldap://[%s]:%u", cfg->host, cfg->port);
    else
        snprintf(uri, sizeof(uri), "ldap://%s:%u", cfg->host, cfg->port);
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, uri);
    if (rc != LDAP_SUCCESS) {
        snprintf(j->error, sizeof(j->error), "cant connect ldap: %.100s: %s", uri,
                 ldap_err2string(rc));
        return;
    }
    int v3 = LDAP_VERSION3;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    if (cfg->timeout_s > 0) {
        struct timeval tv = {(time_t)cfg->timeout_s, 0};
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
        ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    }
    if (cfg->starttls) {
        /* A new handle keeps none of the global TLS paths (ldap.conf's TLS_CACERT,
         * LDAPTLS_CACERT...), only the global context; a context of its own (needed to demand a
         * valid certificate whatever ldap.conf's TLS_REQCERT says) gets them copied here. */
        static const int paths[] = {LDAP_OPT_X_TLS_CACERTFILE, LDAP_OPT_X_TLS_CACERTDIR,
                                    LDAP_OPT_X_TLS_CERTFILE, LDAP_OPT_X_TLS_KEYFILE};
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
            char *v = NULL;
            if (ldap_get_option(NULL, paths[i], &v) == LDAP_OPT_SUCCESS && v)
                ldap_set_option(ld, paths[i], v);
            ldap_memfree(v);
        }
        int demand = LDAP_OPT_X_TLS_DEMAND, zero = 0;
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
        rc = ldap_start_tls_s(ld, NULL, NULL);
    } else {
        rc = ldap_connect(ld);
    }
    if (rc != LDAP_SUCCESS) {
        char *diag = NULL;
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
        snprintf(j->error, sizeof(j->error), "%s: %s%s%s",
                 cfg->starttls ? "starttls on ldap connection failed" : "cant connect ldap",
                 ldap_err2string(rc), diag && *diag ? ": " : "", diag ? diag : "");
        ldap_memfree(diag);
        ldap_unbind_ext(ld, NULL, NULL);
        return;
    }
    int fd = -1;
    ldap_get_option(ld, LDAP_OPT_DESC, &fd);
    if (fd < 0) {
        snprintf(j->error, sizeof(j->error), "cant connect ldap: no socket after connect");
        ldap_unbind_ext(ld, NULL, NULL);
        return;
    }
    int on = cfg->keepalive ? 1 : 0;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    j->ld = ld;
    j->fd = fd;
}

static void connect_done(struct eng_shard *sh, struct eng_work *w)
{
    (void)sh;
    struct connect_job *j = (struct connect_job *)(void *)w;
    struct pol_ldap_client *c = j->c;
    ENG_ASSERT(c->state == C_CONNECTING);
    LDAP *ld = j->ld;
    j->ld = NULL;
    if (w->status != 0 || c->stopping) {
        if (ld)
            ldap_unbind_ext(ld, NULL, NULL);
        c->state = C_DOWN;
        if (!c->stopping)
            conn_fail(c, true, "cant connect ldap: connect job cancelled");
        return;
    }
    if (!ld) {
        conn_fail(c, true, j->error);
        return;
    }
    c->ld = ld;
    c->fd = j->fd;
    int rc = eng_poll_start(c->sh, &c->poll, c->fd, POLLIN, poll_ready);
    if (rc < 0) {
        char why[LDAP_ERROR_BYTES];
        snprintf(why, sizeof(why), "cant connect ldap: cannot poll the socket: %s",
                 strerror(-rc));
        conn_fail(c, true, why);
        return;
    }
    c->polling = true;
    struct berval cred = {0, (char *)""};
    if (c->cfg->password) {
        cred.bv_val = c->cfg->password;
        cred.bv_len = strlen(c->cfg->password);
    }
    int msgid = -1;
    rc = ldap_sasl_bind(c->ld, c->cfg->binddn ? c->cfg->binddn : "", LDAP_SASL_SIMPLE, &cred,
                        NULL, NULL, &msgid);
    if (rc != LDAP_SUCCESS) {
        char why[LDAP_ERROR_BYTES];
        snprintf(why, sizeof(why), "bind failed: %s", ldap_err2string(rc));
        conn_fail(c, true, why);
        return;
    }
    c->bind_msgid = msgid;
    c->state = C_BINDING;
    if (c->cfg->timeout_s > 0)
        eng_timer_arm(c->sh, &c->conn_timer, (uint64_t)c->cfg->timeout_s * 1000u);
}

static void connect_start(struct pol_ldap_client *c)
{
    ENG_ASSERT(c->state == C_DOWN);
    c->job = (struct connect_job){.c = c, .fd = -1};
    c->job.w.run = connect_run;
    c->job.w.done = connect_done;
    c->state = C_CONNECTING;
    int rc = eng_work_submit(c->wp, c->sh, &c->job.w);
    if (rc < 0) {
        c->state = C_DOWN;
        char why[LDAP_ERROR_BYTES];
        snprintf(why, sizeof(why), "cant connect ldap: cannot start the connect job: %s",
                 strerror(-rc));
        conn_fail(c, true, why);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Client API
 */

static void deadline_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct ldap_op *op = (struct ldap_op *)(void *)((char *)t - offsetof(struct ldap_op, deadline));
    struct pol_ldap_client *c = op->c;
    if (op->where == OP_OUT && c->ld)
        ldap_abandon_ext(c->ld, op->msgid, NULL, NULL);
    char why[LDAP_ERROR_BYTES];
    snprintf(why, sizeof(why), "no answer from ldap %s:%u within %u s", c->cfg->host,
             c->cfg->port, c->cfg->timeout_s);
    op_complete(op, POL_LDAP_TIMEOUT, why);
    if (c->state == C_READY)
        queue_flush(c);
}

int pol_ldap_client_create(struct eng_shard *sh, const struct pol_ldap_config *cfg,
                           struct pol_ldap_client **out, char *err, size_t err_len)
{
    ENG_ASSERT(cfg->ops_max > 0);
    struct pol_ldap_client *c = calloc(1, sizeof(*c));
    struct ldap_op *ops = calloc(cfg->ops_max, sizeof(*ops));
    if (!c || !ops) {
        free(c);
        free(ops);
        snprintf(err, err_len, "out of memory for the ldap client");
        return -ENOMEM;
    }
    c->sh = sh;
    c->cfg = cfg;
    c->fd = -1;
    c->bind_msgid = -1;
    c->backoff_ms = LDAP_BACKOFF_MS_MIN;
    c->ops = ops;
    for (uint32_t i = cfg->ops_max; i-- > 0;) {
        ops[i].c = c;
        eng_timer_init(&ops[i].deadline, deadline_fired);
        ops[i].next = c->free_ops;
        c->free_ops = &ops[i];
    }
    eng_timer_init(&c->conn_timer, conn_timer_fired);
    eng_timer_init(&c->kick, kick_fired);
    struct eng_work_config wc;
    eng_work_config_defaults(&wc);
    wc.thread_count = 1;
    wc.queue_max = 4;
    wc.name = "ldap";
    int rc = eng_work_create(&wc, &c->wp);
    if (rc == 0) {
        rc = eng_work_shard_attach(c->wp, sh);
        if (rc < 0)
            eng_work_destroy(c->wp);
    }
    if (rc < 0) {
        snprintf(err, err_len, "cannot start the ldap connect thread: %s", strerror(-rc));
        free(ops);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void pol_ldap_client_destroy(struct pol_ldap_client *c)
{
    if (!c)
        return;
    ENG_ASSERT(eng_shard_self() == NULL || eng_shard_self() == c->sh);
    c->stopping = true;
    eng_work_shard_detach(c->wp, c->sh); /* a running connect finishes; its handle is closed */
    conn_close(c);
    while (c->queued.head)
        op_complete(c->queued.head, POL_LDAP_CANCELLED, "ldap client stopping");
    while (c->out.head)
        op_complete(c->out.head, POL_LDAP_CANCELLED, "ldap client stopping");
    while (c->finished.head) {
        struct ldap_op *op = c->finished.head;
        op_complete(op, op->st, op->error);
    }
    eng_timer_cancel(c->sh, &c->kick);
    eng_timer_cancel(c->sh, &c->conn_timer);
    eng_work_destroy(c->wp);
    ENG_ASSERT(c->stats.outstanding == 0);
    free(c->ops);
    free(c);
}

int pol_ldap_search(struct pol_ldap_client *c, const char *base, const char *filter,
                    const char *const *attrs, pol_ldap_done_fn *done, void *ctx)
{
    ENG_ASSERT(done != NULL);
    ENG_ASSERT(!c->stopping);
    c->stats.searches++;
    struct ldap_op *op = c->free_ops;
    if (!op) {
        c->stats.busy++;
        return -EBUSY;
    }
    c->free_ops = op->next;
    op->next = op->prev = NULL;
    op->where = OP_FREE;
    op->done = done;
    op->ctx = ctx;
    op->base = base;
    op->filter = filter;
    op->attrs = attrs;
    op->msgid = -1;
    op->first = NULL;
    op->count = 0;
    c->stats.outstanding++;
    if (c->stats.outstanding > c->stats.outstanding_max)
        c->stats.outstanding_max = c->stats.outstanding;
    if (c->cfg->timeout_s > 0)
        eng_timer_arm(c->sh, &op->deadline, (uint64_t)c->cfg->timeout_s * 1000u);
    switch (c->state) {
    case C_READY:
        if (c->out_count < LDAP_IN_FLIGHT_MAX && !c->queued.head)
            op_send(op);
        else
            list_push(&c->queued, op, OP_QUEUED);
        break;
    case C_BACKOFF:
        op_finish_later(op, POL_LDAP_DOWN, c->last_error);
        break;
    case C_DOWN:
        list_push(&c->queued, op, OP_QUEUED);
        connect_start(c);
        break;
    case C_CONNECTING:
    case C_BINDING:
        list_push(&c->queued, op, OP_QUEUED);
        break;
    }
    return 0;
}

void pol_ldap_client_stats(const struct pol_ldap_client *c, struct pol_ldap_stats *out)
{
    *out = c->stats;
}

bool pol_ldap_client_connected(const struct pol_ldap_client *c)
{
    return c->state == C_READY;
}

/* ---------------------------------------------------------------------------------------------
 * Registry
 */

struct ldap_shard_slot {
    struct pol_ldap_client *client;
    unsigned refs;
    uint8_t started; /* a client exists (relaxed; read by /readyz on any thread) */
    uint8_t health;  /* LDAP_HEALTH_* of that client (relaxed) */
};

/* /metrics: one source per shard's client, label connection="NAME". */
enum {
    LM_SEARCHES,
    LM_ERRORS,
    LM_TIMEOUTS,
    LM_DOWN,
    LM_BUSY,
    LM_CONNECTS,
    LM_CONNECT_FAILURES,
    LM_OUTSTANDING,
    LM_OUTSTANDING_MAX,
    LM_UP,
    LM_COUNT
};

static const struct pol_metrics_field ldap_fields[LM_COUNT] = {
    [LM_SEARCHES] = {"ringpolicyd_ldap_searches_total", "LDAP searches asked for.", false, false},
    [LM_ERRORS] = {"ringpolicyd_ldap_errors_total",
                   "LDAP searches answered with an error, or lost with their connection.", false,
                   false},
    [LM_TIMEOUTS] = {"ringpolicyd_ldap_timeouts_total",
                     "LDAP searches without an answer within the connection's timeout.", false,
                     false},
    [LM_DOWN] = {"ringpolicyd_ldap_down_total",
                 "LDAP searches failed at once: no connection (backing off after a failure).",
                 false, false},
    [LM_BUSY] = {"ringpolicyd_ldap_busy_total",
                 "LDAP searches refused: too many outstanding on the shard.", false, false},
    [LM_CONNECTS] = {"ringpolicyd_ldap_connects_total",
                     "LDAP connections established (connect, STARTTLS and bind done).", false,
                     false},
    [LM_CONNECT_FAILURES] = {"ringpolicyd_ldap_connect_failures_total",
                             "LDAP connect, STARTTLS or bind attempts that failed.", false, false},
    [LM_OUTSTANDING] = {"ringpolicyd_ldap_outstanding", "LDAP searches queued or out now.", true,
                        false},
    [LM_OUTSTANDING_MAX] = {"ringpolicyd_ldap_outstanding_max",
                            "Most LDAP searches queued or out at once on a shard.", true, true},
    [LM_UP] = {"ringpolicyd_ldap_connections_up", "LDAP connections established now.", true,
               false},
};
static const struct pol_metrics_source_desc ldap_metrics = {"connection", ldap_fields, LM_COUNT};

static void ldap_snap(void *ctx, uint64_t *v)
{
    const struct ldap_shard_slot *s = ctx;
    if (!s->client)
        return;
    const struct pol_ldap_stats *st = &s->client->stats;
    v[LM_SEARCHES] = st->searches;
    v[LM_ERRORS] = st->errors + st->lost;
    v[LM_TIMEOUTS] = st->timeouts;
    v[LM_DOWN] = st->down;
    v[LM_BUSY] = st->busy;
    v[LM_CONNECTS] = st->connects;
    v[LM_CONNECT_FAILURES] = st->connect_failures;
    v[LM_OUTSTANDING] = st->outstanding;
    v[LM_OUTSTANDING_MAX] = st->outstanding_max;
    v[LM_UP] = s->client->state == C_READY;
}

struct pol_ldap_conn {
    struct pol_ldap_conn *next;
    const struct pol_conn_def *def;
    unsigned refs;
    struct pol_ldap_config cfg;
    struct ldap_shard_slot *shards; /* LDAP_SHARDS_MAX; each touched only by its shard */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pol_ldap_conn *registry;

struct pol_ldap_conn *pol_ldap_conn_get(const struct pol_conn_def *def, char *err,
                                        size_t err_len)
{
    ENG_ASSERT(def != NULL);
    /* libldap initialises its global options on first use, and that first use is not
     * thread-safe (two connect threads racing on ldap_int_global_options: the mutex itself is
     * initialised there; found by ThreadSanitizer with two shards). Do it here, on the main
     * thread, before any shard's connect thread exists. */
    int version = 0;
    (void)ldap_get_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &version);
    pthread_mutex_lock(&registry_lock);
    struct pol_ldap_conn *lc = registry;
    while (lc && lc->def != def)
        lc = lc->next;
    if (lc) {
        lc->refs++;
        pthread_mutex_unlock(&registry_lock);
        return lc;
    }
    lc = calloc(1, sizeof(*lc));
    struct ldap_shard_slot *slots = calloc(LDAP_SHARDS_MAX, sizeof(*slots));
    if (!lc || !slots) {
        pthread_mutex_unlock(&registry_lock);
        free(lc);
        free(slots);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (pol_ldap_config_parse(def->block, &lc->cfg, err, err_len) != 0) {
        pthread_mutex_unlock(&registry_lock);
        pol_ldap_config_free(&lc->cfg);
        free(lc);
        free(slots);
        return NULL;
    }
    lc->def = def;
    lc->refs = 1;
    lc->shards = slots;
    lc->next = registry;
    registry = lc;
    pthread_mutex_unlock(&registry_lock);
    return lc;
}

void pol_ldap_conn_put(struct pol_ldap_conn *lc)
{
    if (!lc)
        return;
    pthread_mutex_lock(&registry_lock);
    ENG_ASSERT(lc->refs > 0);
    if (--lc->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    struct pol_ldap_conn **pp = &registry;
    while (*pp != lc)
        pp = &(*pp)->next;
    *pp = lc->next;
    pthread_mutex_unlock(&registry_lock);
    for (unsigned i = 0; i < LDAP_SHARDS_MAX; i++)
        ENG_ASSERT(lc->shards[i].refs == 0);
    pol_ldap_config_free(&lc->cfg);
    free(lc->shards);
    free(lc);
}

const struct pol_ldap_config *pol_ldap_conn_config(const struct pol_ldap_conn *lc)
{
    return &lc->cfg;
}

int pol_ldap_conn_shard_start(struct pol_ldap_conn *lc, struct eng_shard *sh, char *err,
                              size_t err_len)
{
    unsigned idx = eng_shard_index(sh);
    if (idx >= LDAP_SHARDS_MAX) {
        snprintf(err, err_len, "ldap: shard %u beyond %u", idx, LDAP_SHARDS_MAX);
        return -1;
    }
    struct ldap_shard_slot *s = &lc->shards[idx];
    if (s->refs == 0) {
        if (pol_ldap_client_create(sh, &lc->cfg, &s->client, err, err_len) < 0)
            return -1;
        __atomic_store_n(&s->health, LDAP_HEALTH_UNTRIED, __ATOMIC_RELAXED);
        s->client->health = &s->health;
        __atomic_store_n(&s->started, 1, __ATOMIC_RELAXED);
        if (pol_metrics_source_add(&ldap_metrics, lc->def->name, ldap_snap, s) != 0)
            eng_log(ENG_LOG_WARNING, "connection %s: no room for its metrics on shard %u",
                    lc->def->name, idx);
    }
    s->refs++;
    return 0;
}

void pol_ldap_conn_shard_stop(struct pol_ldap_conn *lc, struct eng_shard *sh)
{
    struct ldap_shard_slot *s = &lc->shards[eng_shard_index(sh)];
    ENG_ASSERT(s->refs > 0);
    if (--s->refs == 0) {
        pol_metrics_source_remove(s);
        __atomic_store_n(&s->started, 0, __ATOMIC_RELAXED);
        pol_ldap_client_destroy(s->client);
        s->client = NULL;
    }
}

struct pol_ldap_client *pol_ldap_conn_client(struct pol_ldap_conn *lc, struct eng_shard *sh)
{
    unsigned idx = eng_shard_index(sh);
    return idx < LDAP_SHARDS_MAX ? lc->shards[idx].client : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * For the core's connection table (server.c conn_modules): open reads and checks the block's
 * options at start-up even when no plugin names it; plugins then share the same entry. The
 * per-shard clients are started by the plugins that use them, so shards without LDAP users
 * open nothing.
 */

static int conn_open(struct pol_server *s, struct pol_conn_def *def, char *err, size_t err_len)
{
    (void)s;
    def->impl = pol_ldap_conn_get(def, err, err_len);
    return def->impl ? 0 : -1;
}

static void conn_close_def(struct pol_conn_def *def)
{
    pol_ldap_conn_put(def->impl);
    def->impl = NULL;
}

/* GET /readyz (any thread, relaxed loads): shards open their connection at their first search,
 * so a connection nobody searched yet counts as ready; not ready while every shard that tried
 * is failing to connect (connect, STARTTLS or bind) and none is connected. */
static int conn_ready(const struct pol_conn_def *def, char *why, size_t why_len)
{
    const struct pol_ldap_conn *lc = def->impl;
    bool failing = false;
    for (unsigned i = 0; i < LDAP_SHARDS_MAX; i++) {
        if (!__atomic_load_n(&lc->shards[i].started, __ATOMIC_RELAXED))
            continue;
        uint8_t h = __atomic_load_n(&lc->shards[i].health, __ATOMIC_RELAXED);
        if (h == LDAP_HEALTH_UP)
            return 0;
        failing |= h == LDAP_HEALTH_FAILING;
    }
    if (!failing)
        return 0;
    snprintf(why, why_len, "LDAP server %s:%u: connect failing", lc->cfg.host, lc->cfg.port);
    return -1;
}

const struct pol_conn_ops pol_conn_Ldap = {
    .module = "Ldap",
    .open = conn_open,
    .close = conn_close_def,
    .ready = conn_ready,
};
