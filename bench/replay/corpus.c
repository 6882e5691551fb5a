/*
 * corpus.c: loads maillogs into a corpus of smtpd processes, connections, transactions and
 * recipients (see corpus.h for the joining rules). The layout of requests is in layout.c.
 *
 * Owns all the corpus memory (grown by doubling during the load) and, between init and finish,
 * the load state: the year clock, a queue-id table (queue id -> transaction, entries removed on
 * qmgr's "removed" so that reused ids start afresh), a process table ((syslog_name, pid) ->
 * process) and per-process state (current connection, pending NOQUEUE transaction, the last
 * reverse-name warning). Errors are only -ENOMEM and -E2BIG (the 4 GiB string arena is full);
 * odd lines are counted in c->stats.
 */
#include "corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bench_assert.h"
#include "reader.h"

#define NONE UINT32_MAX
#define SLOT_EMPTY UINT32_MAX
#define SLOT_TOMB (UINT32_MAX - 1u)
#define TAB_CAP_MIN 1024u

_Static_assert((TAB_CAP_MIN & (TAB_CAP_MIN - 1u)) == 0, "table capacity is a power of two");

/* ---------------------------------------------------------------------------------------------
 * Load state
 */

/* Open addressing with linear probing; slots hold indexes into corpus arrays. */
struct tab {
    uint32_t *slots;
    uint32_t cap;  /* power of two */
    uint32_t used; /* live + tombstones */
};

struct proc_state {
    uint32_t conn_idx;        /* current connection or NONE */
    uint32_t conn_seq_next;
    uint32_t txn_seq_next;    /* within the current connection */
    uint32_t pending_noqueue; /* NOQUEUE transaction of the current connection or NONE */
    struct rpl_str rev_name, rev_addr; /* last reverse-name warning */
};

struct rpl_load_state {
    struct rpl_clock clock;
    struct tab qids;  /* -> txn */
    struct tab procs; /* -> proc */
    struct proc_state *ps;
    uint32_t ps_cap;
    uint32_t rcpt_seq;
    uint32_t *rcpt_next; /* per rcpt: next of the same transaction, NONE at the tail */
    uint32_t rcpt_next_cap;
    uint32_t *txn_head, *txn_tail; /* per txn: its recipient list */
    uint32_t txn_head_cap, txn_tail_cap;
};

/* Grows *arr (of elem bytes) so that index n fits. */
static int grow(void **arr, uint32_t *cap, uint32_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    if (*cap >= UINT32_MAX / 2)
        return -E2BIG;
    uint32_t ncap = *cap ? *cap * 2u : 256u;
    while (ncap <= n)
        ncap *= 2u;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (p == NULL)
        return -ENOMEM;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *arr = p;
    *cap = ncap;
    return 0;
}

static int str_put(struct rpl_corpus *c, struct rpl_slice s, struct rpl_str *out)
{
    if (c->strs_len + s.len + 1 > c->strs_cap) {
        size_t ncap = c->strs_cap ? c->strs_cap * 2 : 65536;
        while (ncap < c->strs_len + s.len + 1)
            ncap *= 2;
        if (ncap > UINT32_MAX)
            ncap = UINT32_MAX;
        if (c->strs_len + s.len + 1 > ncap)
            return -E2BIG;
        char *p = realloc(c->strs, ncap);
        if (p == NULL)
            return -ENOMEM;
        c->strs = p;
        c->strs_cap = ncap;
    }
    out->off = (uint32_t)c->strs_len;
    out->len = s.len;
    if (s.len > 0)
        memcpy(c->strs + c->strs_len, s.ptr, s.len);
    c->strs[c->strs_len + s.len] = '\0'; /* NUL-terminated for convenience (printf, tests) */
    c->strs_len += s.len + 1;
    return 0;
}

/* Empty strings compare equal without memcmp: an absent field is the slice {NULL, 0}, and
 * memcmp's pointers must not be NULL even for 0 bytes (UBSan, found by fuzz_maillog:
 * tests/fuzz/corpus/maillog/crash-ubsan-str-eq-null-slice). */
static bool str_eq(const struct rpl_corpus *c, struct rpl_str a, struct rpl_slice b)
{
    return a.len == b.len && (b.len == 0 || memcmp(c->strs + a.off, b.ptr, b.len) == 0);
}

static bool str_eq2(const struct rpl_corpus *c, struct rpl_str a, struct rpl_str b)
{
    return a.len == b.len &&
           (b.len == 0 || memcmp(c->strs + a.off, c->strs + b.off, b.len) == 0);
}

static struct rpl_slice str_slice(const struct rpl_corpus *c, struct rpl_str s)
{
    struct rpl_slice r = {c->strs + s.off, s.len};
    return r;
}

/* ---------------------------------------------------------------------------------------------
 * Tables
 */

typedef bool tab_eq_fn(const struct rpl_corpus *c, uint32_t idx, const void *key);
typedef uint64_t tab_hash_fn(const struct rpl_corpus *c, uint32_t idx);

static int tab_init(struct tab *t)
{
    t->slots = malloc(TAB_CAP_MIN * sizeof(uint32_t));
    if (t->slots == NULL)
        return -ENOMEM;
    memset(t->slots, 0xff, TAB_CAP_MIN * sizeof(uint32_t));
    t->cap = TAB_CAP_MIN;
    t->used = 0;
    return 0;
}

/* The slot holding a matching index, or NONE. */
static uint32_t tab_slot(const struct tab *t, const struct rpl_corpus *c, uint64_t h,
                         tab_eq_fn *eq, const void *key)
{
    uint32_t mask = t->cap - 1u;
    for (uint32_t i = (uint32_t)h & mask, n = 0; n < t->cap; i = (i + 1u) & mask, n++) {
        uint32_t v = t->slots[i];
        if (v == SLOT_EMPTY)
            return NONE;
        if (v != SLOT_TOMB && eq(c, v, key))
            return i;
    }
    return NONE;
}

static uint32_t tab_find(const struct tab *t, const struct rpl_corpus *c, uint64_t h,
                         tab_eq_fn *eq, const void *key)
{
    uint32_t s = tab_slot(t, c, h, eq, key);
    return s == NONE ? NONE : t->slots[s];
}

static void tab_put_raw(struct tab *t, uint64_t h, uint32_t idx)
{
    uint32_t mask = t->cap - 1u;
    uint32_t i = (uint32_t)h & mask;
    while (t->slots[i] != SLOT_EMPTY && t->slots[i] != SLOT_TOMB)
        i = (i + 1u) & mask;
    if (t->slots[i] == SLOT_EMPTY)
        t->used++;
    t->slots[i] = idx;
}

/* Inserts idx (the caller removed any previous entry for the key). */
static int tab_insert(struct tab *t, const struct rpl_corpus *c, uint64_t h, uint32_t idx,
                      tab_hash_fn *hash)
{
    BENCH_ASSERT(idx < SLOT_TOMB);
    if ((uint64_t)(t->used + 1u) * 10u > (uint64_t)t->cap * 7u) {
        uint32_t old_cap = t->cap;
        uint32_t *old = t->slots;
        uint32_t ncap = old_cap * 2u;
        t->slots = malloc((size_t)ncap * sizeof(uint32_t));
        if (t->slots == NULL) {
            t->slots = old;
            return -ENOMEM;
        }
        memset(t->slots, 0xff, (size_t)ncap * sizeof(uint32_t));
        t->cap = ncap;
        t->used = 0;
        for (uint32_t i = 0; i < old_cap; i++)
            if (old[i] != SLOT_EMPTY && old[i] != SLOT_TOMB)
                tab_put_raw(t, hash(c, old[i]), old[i]);
        free(old);
    }
    tab_put_raw(t, h, idx);
    return 0;
}

static void tab_remove(struct tab *t, const struct rpl_corpus *c, uint64_t h, tab_eq_fn *eq,
                       const void *key)
{
    uint32_t s = tab_slot(t, c, h, eq, key);
    if (s != NONE)
        t->slots[s] = SLOT_TOMB;
}

struct proc_key {
    struct rpl_slice syslog_name;
    uint32_t pid;
};

static uint64_t hash_proc(struct rpl_slice name, uint32_t pid)
{
    return XXH3_64bits_withSeed(name.ptr, name.len, pid);
}

static uint64_t hash_proc_idx(const struct rpl_corpus *c, uint32_t idx)
{
    const struct rpl_proc *p = &c->procs[idx];
    return hash_proc(str_slice(c, p->syslog_name), p->pid);
}

static bool eq_proc(const struct rpl_corpus *c, uint32_t idx, const void *key)
{
    const struct proc_key *k = key;
    return c->procs[idx].pid == k->pid && str_eq(c, c->procs[idx].syslog_name, k->syslog_name);
}

static uint64_t hash_qid(struct rpl_slice q)
{
    return XXH3_64bits(q.ptr, q.len);
}

static uint64_t hash_qid_idx(const struct rpl_corpus *c, uint32_t idx)
{
    return hash_qid(str_slice(c, c->txns[idx].queue_id));
}

static bool eq_qid(const struct rpl_corpus *c, uint32_t idx, const void *key)
{
    return str_eq(c, c->txns[idx].queue_id, *(const struct rpl_slice *)key);
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 */

void rpl_corpus_init(struct rpl_corpus *c, const struct rpl_load_opts *o)
{
    BENCH_ASSERT(c != NULL && o != NULL);
    memset(c, 0, sizeof(*c));
    c->load = calloc(1, sizeof(*c->load));
    if (c->load == NULL)
        return; /* rpl_corpus_feed reports -ENOMEM */
    rpl_clock_init(&c->load->clock, o->year, 0);
    if (tab_init(&c->load->qids) != 0 || tab_init(&c->load->procs) != 0) {
        free(c->load->qids.slots);
        free(c->load->procs.slots);
        free(c->load);
        c->load = NULL;
    }
}

void rpl_corpus_begin_file(struct rpl_corpus *c, int64_t ref_sec)
{
    if (c->load == NULL)
        return;
    rpl_clock_next_file(&c->load->clock, ref_sec);
    c->stats.files++;
}

static void load_free(struct rpl_load_state *ls)
{
    if (ls == NULL)
        return;
    free(ls->qids.slots);
    free(ls->procs.slots);
    free(ls->ps);
    free(ls->rcpt_next);
    free(ls->txn_head);
    free(ls->txn_tail);
    free(ls);
}

void rpl_corpus_free(struct rpl_corpus *c)
{
    if (c == NULL)
        return;
    load_free(c->load);
    free(c->strs);
    free(c->procs);
    free(c->conns);
    free(c->txns);
    free(c->rcpts);
    free(c->reqs);
    memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------------------------------------
 * Processes, connections, transactions, recipients
 */

static int proc_get(struct rpl_corpus *c, const struct rpl_line *l, uint32_t *out)
{
    struct rpl_load_state *ls = c->load;
    struct proc_key key = {l->syslog_name, l->pid};
    uint64_t h = hash_proc(l->syslog_name, l->pid);
    uint32_t idx = tab_find(&ls->procs, c, h, eq_proc, &key);
    if (idx != NONE) {
        *out = idx;
        return 0;
    }
    idx = c->proc_count;
    int rc = grow((void **)&c->procs, &c->proc_cap, idx, sizeof(*c->procs));
    if (rc == 0)
        rc = grow((void **)&ls->ps, &ls->ps_cap, idx, sizeof(*ls->ps));
    if (rc == 0)
        rc = str_put(c, l->syslog_name, &c->procs[idx].syslog_name);
    if (rc != 0)
        return rc;
    c->procs[idx].pid = l->pid;
    struct proc_state *ps = &ls->ps[idx];
    memset(ps, 0, sizeof(*ps));
    ps->conn_idx = NONE;
    ps->pending_noqueue = NONE;
    c->proc_count++;
    *out = idx;
    return tab_insert(&ls->procs, c, h, idx, hash_proc_idx);
}

static int conn_new(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l)
{
    struct proc_state *ps = &c->load->ps[proc_idx];
    uint32_t idx = c->conn_count;
    int rc = grow((void **)&c->conns, &c->conn_cap, idx, sizeof(*c->conns));
    if (rc != 0)
        return rc;
    struct rpl_conn *cn = &c->conns[idx];
    memset(cn, 0, sizeof(*cn));
    cn->proc_idx = proc_idx;
    cn->seq = ps->conn_seq_next++;
    if ((rc = str_put(c, l->client_name, &cn->client_name)) != 0 ||
        (rc = str_put(c, l->client_addr, &cn->client_addr)) != 0)
        return rc;
    /* reverse_client_name: the PTR name even when it did not verify (smtpd_peer.c); a warning
     * about this address names it, otherwise it equals client_name ("unknown" when no PTR). */
    if (ps->rev_addr.len > 0 && str_eq(c, ps->rev_addr, l->client_addr))
        cn->reverse_name = ps->rev_name;
    else
        cn->reverse_name = cn->client_name;
    ps->rev_addr.len = 0;
    c->conn_count++;
    ps->conn_idx = idx;
    ps->txn_seq_next = 0;
    ps->pending_noqueue = NONE;
    return 0;
}

/* The process's current connection, or an implicit one when the log lacks its connect line
 * (it started earlier) or the line names another client. */
static int conn_current(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l,
                        uint32_t *out)
{
    struct proc_state *ps = &c->load->ps[proc_idx];
    if (ps->conn_idx == NONE || !str_eq(c, c->conns[ps->conn_idx].client_addr, l->client_addr)) {
        int rc = conn_new(c, proc_idx, l);
        if (rc != 0)
            return rc;
        c->stats.implicit_conns++;
    }
    *out = ps->conn_idx;
    return 0;
}

static int txn_new(struct rpl_corpus *c, uint32_t conn_idx, int64_t t_us, uint32_t *out)
{
    struct rpl_load_state *ls = c->load;
    uint32_t idx = c->txn_count;
    int rc = grow((void **)&c->txns, &c->txn_cap, idx, sizeof(*c->txns));
    if (rc == 0)
        rc = grow((void **)&ls->txn_head, &ls->txn_head_cap, idx, sizeof(uint32_t));
    if (rc == 0)
        rc = grow((void **)&ls->txn_tail, &ls->txn_tail_cap, idx, sizeof(uint32_t));
    if (rc != 0)
        return rc;
    struct rpl_txn *x = &c->txns[idx];
    memset(x, 0, sizeof(*x));
    x->conn_idx = conn_idx;
    x->seq = ls->ps[c->conns[conn_idx].proc_idx].txn_seq_next++;
    x->merge_candidate = NONE;
    x->t_start_us = t_us;
    ls->txn_head[idx] = ls->txn_tail[idx] = NONE;
    c->txn_count++;
    *out = idx;
    return 0;
}

/* Appends a recipient to txn; an accepted one (group 1) already present is not added again. */
static int rcpt_add(struct rpl_corpus *c, uint32_t txn_idx, struct rpl_slice addr, uint8_t group,
                    int64_t t_us)
{
    struct rpl_load_state *ls = c->load;
    struct rpl_txn *x = &c->txns[txn_idx];
    if (group == 1)
        for (uint32_t r = ls->txn_head[txn_idx]; r != NONE; r = ls->rcpt_next[r])
            if (c->rcpts[r].group == 1 && str_eq(c, c->rcpts[r].addr, addr))
                return 0;
    if (x->rcpt_count >= RPL_RCPTS_PER_MAIL_MAX) {
        c->stats.rcpts_dropped++;
        return 0;
    }
    uint32_t idx = c->rcpt_count;
    int rc = grow((void **)&c->rcpts, &c->rcpt_cap, idx, sizeof(*c->rcpts));
    if (rc == 0)
        rc = grow((void **)&ls->rcpt_next, &ls->rcpt_next_cap, idx, sizeof(uint32_t));
    struct rpl_rcpt *r = &c->rcpts[idx];
    if (rc == 0)
        rc = str_put(c, addr, &r->addr);
    if (rc != 0)
        return rc;
    r->txn_idx = txn_idx;
    r->seq = ls->rcpt_seq++;
    r->group = group;
    r->t_us = t_us;
    ls->rcpt_next[idx] = NONE;
    if (ls->txn_tail[txn_idx] == NONE)
        ls->txn_head[txn_idx] = idx;
    else
        ls->rcpt_next[ls->txn_tail[txn_idx]] = idx;
    ls->txn_tail[txn_idx] = idx;
    x->rcpt_count++;
    x->accepted_count += group == 1;
    c->rcpt_count++;
    return 0;
}

static uint32_t txn_by_qid(struct rpl_corpus *c, struct rpl_slice qid)
{
    uint32_t idx = tab_find(&c->load->qids, c, hash_qid(qid), eq_qid, &qid);
    if (idx == NONE)
        c->stats.orphan_lines++;
    return idx;
}

/* ---------------------------------------------------------------------------------------------
 * Line handlers
 */

static int on_client(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l,
                     int64_t t)
{
    struct rpl_load_state *ls = c->load;
    uint32_t conn_idx, txn_idx;
    int rc = conn_current(c, proc_idx, l, &conn_idx);
    if (rc == 0)
        rc = txn_new(c, conn_idx, t, &txn_idx);
    if (rc != 0)
        return rc;
    struct rpl_txn *x = &c->txns[txn_idx];
    x->flags = RPL_TXN_ACCEPTED;
    if ((rc = str_put(c, l->queue_id, &x->queue_id)) != 0 ||
        (rc = str_put(c, l->sasl_method, &x->sasl_method)) != 0 ||
        (rc = str_put(c, l->sasl_username, &x->sasl_username)) != 0 ||
        (rc = str_put(c, l->sasl_sender, &x->sasl_sender)) != 0)
        return rc;
    x->merge_candidate = ls->ps[proc_idx].pending_noqueue;
    ls->ps[proc_idx].pending_noqueue = NONE;
    c->stats.mails++;
    tab_remove(&ls->qids, c, hash_qid(l->queue_id), eq_qid, &l->queue_id);
    return tab_insert(&ls->qids, c, hash_qid(l->queue_id), txn_idx, hash_qid_idx);
}

static int reject_rcpt(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l,
                       int64_t t)
{
    struct proc_state *ps = &c->load->ps[proc_idx];
    int rc;
    if (l->queue_id.len > 0) {
        uint32_t txn_idx = txn_by_qid(c, l->queue_id);
        if (txn_idx == NONE)
            return 0;
        c->stats.rejects_rcpt++;
        if (c->txns[txn_idx].sender.len == 0 && l->has_sender &&
            (rc = str_put(c, l->sender, &c->txns[txn_idx].sender)) != 0)
            return rc;
        return rcpt_add(c, txn_idx, l->recipient, 2, t);
    }
    uint32_t conn_idx;
    if ((rc = conn_current(c, proc_idx, l, &conn_idx)) != 0)
        return rc;
    uint32_t txn_idx = ps->pending_noqueue;
    if (txn_idx == NONE || !str_eq(c, c->txns[txn_idx].sender, l->sender)) {
        if ((rc = txn_new(c, conn_idx, t, &txn_idx)) != 0 ||
            (rc = str_put(c, l->sender, &c->txns[txn_idx].sender)) != 0)
            return rc;
        ps->pending_noqueue = txn_idx;
        c->stats.noqueue_txns++;
    }
    c->stats.rejects_rcpt++;
    return rcpt_add(c, txn_idx, l->recipient, 0, t);
}

static void mark_data(struct rpl_txn *x, int64_t t)
{
    x->flags |= RPL_TXN_DATA;
    if (x->t_data_us == 0)
        x->t_data_us = t;
}

static bool slice_is(struct rpl_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static int on_reject(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l, int64_t t)
{
    bool data = slice_is(l->stage, "DATA") || slice_is(l->stage, "END-OF-MESSAGE");
    if (data && l->queue_id.len > 0) {
        uint32_t txn_idx = txn_by_qid(c, l->queue_id);
        if (txn_idx != NONE)
            mark_data(&c->txns[txn_idx], t);
        return 0;
    }
    if (!slice_is(l->action, "reject") && !slice_is(l->action, "milter-reject"))
        return 0; /* reject_warning, discard, hold, filter, redirect: no extra request */
    if (!slice_is(l->stage, "RCPT") || proc_idx == NONE || !l->has_recipient) {
        c->stats.rejects_other++;
        return 0;
    }
    return reject_rcpt(c, proc_idx, l, t);
}

/* Reject lines tell the connection's HELO name and protocol; the latest one wins. */
static int learn_helo(struct rpl_corpus *c, uint32_t proc_idx, const struct rpl_line *l)
{
    const struct proc_state *ps = &c->load->ps[proc_idx];
    if (ps->conn_idx == NONE || !str_eq(c, c->conns[ps->conn_idx].client_addr, l->client_addr))
        return 0;
    struct rpl_conn *cn = &c->conns[ps->conn_idx];
    int rc = 0;
    if (l->has_helo)
        rc = str_put(c, l->helo, &cn->helo);
    if (rc == 0 && l->proto.len > 0)
        rc = str_put(c, l->proto, &cn->proto);
    return rc;
}

static int on_qmgr_from(struct rpl_corpus *c, const struct rpl_line *l, int64_t t)
{
    uint32_t txn_idx = txn_by_qid(c, l->queue_id);
    if (txn_idx == NONE)
        return 0;
    struct rpl_txn *x = &c->txns[txn_idx];
    if (x->flags & RPL_TXN_QMGR)
        return 0; /* qmgr logs from= again each time a deferred mail becomes active */
    x->flags |= RPL_TXN_QMGR;
    x->size = l->size;
    x->nrcpt = l->nrcpt;
    mark_data(x, t);
    return str_put(c, l->sender, &x->sender);
}

static int on_delivery(struct rpl_corpus *c, const struct rpl_line *l)
{
    uint32_t txn_idx = txn_by_qid(c, l->queue_id);
    if (txn_idx == NONE)
        return 0;
    /* The policy server saw the address before virtual alias expansion: orig_to= when logged. */
    struct rpl_slice addr = l->orig_recipient.len > 0 ? l->orig_recipient : l->recipient;
    return rcpt_add(c, txn_idx, addr, 1, c->txns[txn_idx].t_start_us);
}

static int on_smtpd(struct rpl_corpus *c, const struct rpl_line *l, int64_t t)
{
    uint32_t proc_idx;
    int rc = proc_get(c, l, &proc_idx);
    if (rc != 0)
        return rc;
    struct proc_state *ps = &c->load->ps[proc_idx];
    switch (l->kind) {
    case RPL_LINE_CONNECT:
        return conn_new(c, proc_idx, l);
    case RPL_LINE_DISCONNECT:
        ps->conn_idx = NONE;
        ps->pending_noqueue = NONE;
        return 0;
    case RPL_LINE_CLIENT:
        return on_client(c, proc_idx, l, t);
    case RPL_LINE_REJECT:
        if ((rc = on_reject(c, proc_idx, l, t)) != 0)
            return rc;
        return learn_helo(c, proc_idx, l);
    case RPL_LINE_REVERSE_NAME:
        if ((rc = str_put(c, l->reverse_name, &ps->rev_name)) != 0)
            return rc;
        return str_put(c, l->client_addr, &ps->rev_addr);
    default:
        return 0;
    }
}

int rpl_corpus_feed(struct rpl_corpus *c, const char *line, size_t len)
{
    BENCH_ASSERT(c != NULL);
    if (c->load == NULL)
        return -ENOMEM;
    struct rpl_line l;
    enum rpl_line_kind k = rpl_line_parse(line, len, &l);
    c->stats.lines++;
    c->stats.bytes += len + 1;
    c->stats.kind_count[k]++;
    if (k == RPL_LINE_GARBAGE || k == RPL_LINE_OTHER_PROGRAM || k == RPL_LINE_POSTFIX_OTHER)
        return 0;
    uint32_t wraps = c->load->clock.wrap_count;
    int64_t t = rpl_clock_resolve(&c->load->clock, &l.time);
    c->stats.year_wraps += c->load->clock.wrap_count - wraps;
    if (l.daemon == RPL_DAEMON_SMTPD)
        return on_smtpd(c, &l, t);
    uint32_t txn_idx;
    switch (k) {
    case RPL_LINE_MESSAGE_ID:
        if ((txn_idx = txn_by_qid(c, l.queue_id)) != NONE)
            mark_data(&c->txns[txn_idx], t);
        return 0;
    case RPL_LINE_REJECT: /* cleanup: milter-reject at END-OF-MESSAGE */
        return on_reject(c, NONE, &l, t);
    case RPL_LINE_QMGR_FROM:
        return on_qmgr_from(c, &l, t);
    case RPL_LINE_DELIVERY:
        return on_delivery(c, &l);
    case RPL_LINE_REMOVED:
        tab_remove(&c->load->qids, c, hash_qid(l.queue_id), eq_qid, &l.queue_id);
        return 0;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Finish: merge NOQUEUE transactions, make each transaction's recipients contiguous.
 */

static void merge_noqueue(struct rpl_corpus *c)
{
    for (uint32_t i = 0; i < c->txn_count; i++) {
        struct rpl_txn *a = &c->txns[i];
        uint32_t n = a->merge_candidate;
        if (n == NONE)
            continue;
        struct rpl_txn *q = &c->txns[n];
        bool sender_known = (a->flags & RPL_TXN_QMGR) || a->sender.len > 0;
        if (q->conn_idx != a->conn_idx || !sender_known || !str_eq2(c, q->sender, a->sender) ||
            a->rcpt_count + q->rcpt_count > RPL_RCPTS_PER_MAIL_MAX)
            continue;
        q->flags |= RPL_TXN_MERGED;
        a->t_start_us = q->t_start_us;
        a->seq = q->seq; /* the instance is the one of the MAIL FROM that started it */
        c->stats.merged_txns++;
    }
}

/* Writes txn i's recipients of one group (following merged transactions' lists) into out. */
static uint32_t copy_group(const struct rpl_corpus *c, uint32_t head, uint8_t group,
                           struct rpl_rcpt *out, uint32_t n)
{
    const struct rpl_load_state *ls = c->load;
    for (uint32_t r = head; r != NONE; r = ls->rcpt_next[r])
        if (c->rcpts[r].group == group)
            out[n++] = c->rcpts[r];
    return n;
}

static int relayout_rcpts(struct rpl_corpus *c)
{
    const struct rpl_load_state *ls = c->load;
    struct rpl_rcpt *out = malloc(((size_t)c->rcpt_count + 1) * sizeof(*out));
    if (out == NULL)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->txn_count; i++) {
        struct rpl_txn *x = &c->txns[i];
        uint32_t first = n;
        if (x->flags & RPL_TXN_MERGED) {
            x->rcpt_first = x->rcpt_count = x->accepted_count = 0;
            continue;
        }
        uint32_t m = x->merge_candidate;
        if (m != NONE && (c->txns[m].flags & RPL_TXN_MERGED))
            n = copy_group(c, ls->txn_head[m], 0, out, n);
        for (uint8_t g = 0; g < 3; g++)
            n = copy_group(c, ls->txn_head[i], g, out, n);
        x->rcpt_first = first;
        x->rcpt_count = n - first;
        x->first_accepted_idx = x->rcpt_count;
        for (uint32_t r = first; r < n; r++) {
            out[r].txn_idx = i;
            if (out[r].group == 1 && x->first_accepted_idx == x->rcpt_count)
                x->first_accepted_idx = r - first;
        }
        c->stats.rcpts_accepted += x->accepted_count;
    }
    BENCH_ASSERT(n == c->rcpt_count);
    free(c->rcpts);
    c->rcpts = out;
    c->rcpt_cap = c->rcpt_count + 1;
    return 0;
}

/* An accepted mail whose delivery lines are not in the logs (the log ends first, or it was
 * filtered) still had its recipients checked: qmgr's nrcpt= says how many (1 if qmgr is missing
 * too). Their addresses are unknown, so they get placeholders in the reserved .invalid domain
 * (RFC 2606), counted in stats.rcpts_unlogged. Runs before relayout, on the load lists. */
static int add_unlogged_rcpts(struct rpl_corpus *c)
{
    for (uint32_t i = 0; i < c->txn_count; i++) {
        const struct rpl_txn *x = &c->txns[i];
        if (!(x->flags & RPL_TXN_ACCEPTED) || x->accepted_count > 0)
            continue;
        uint32_t n = x->nrcpt > 0 ? x->nrcpt : 1;
        c->stats.mails_no_rcpt++;
        for (uint32_t k = 0; k < n && x->rcpt_count < RPL_RCPTS_PER_MAIL_MAX; k++) {
            char addr[64];
            int len = snprintf(addr, sizeof(addr), "unlogged%u@recipient.invalid", k + 1);
            struct rpl_slice s = {addr, (uint32_t)len};
            int rc = rcpt_add(c, i, s, 1, x->t_start_us);
            if (rc != 0)
                return rc;
            c->stats.rcpts_unlogged++;
        }
    }
    return 0;
}

int rpl_corpus_finish(struct rpl_corpus *c)
{
    if (c->load == NULL)
        return -ENOMEM;
    merge_noqueue(c);
    int rc = add_unlogged_rcpts(c);
    if (rc == 0)
        rc = relayout_rcpts(c);
    load_free(c->load);
    c->load = NULL;
    return rc;
}

int rpl_corpus_load(struct rpl_corpus *c, const char *const *paths, size_t path_count,
                    const struct rpl_load_opts *o, char *err, size_t err_len)
{
    rpl_corpus_init(c, o);
    if (c->load == NULL)
        return snprintf(err, err_len, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < path_count; i++) {
        struct rpl_reader *r;
        int rc = rpl_reader_open(&r, paths[i], o->line_bytes_max, err, err_len);
        if (rc != 0)
            return rc;
        rpl_corpus_begin_file(c, rpl_reader_ref_sec(r));
        const char *line;
        size_t len;
        while ((rc = rpl_reader_next(r, &line, &len, err, err_len)) == 1) {
            if ((rc = rpl_corpus_feed(c, line, len)) != 0) {
                snprintf(err, err_len, "%s: %s", paths[i],
                         rc == -E2BIG ? "the logs hold more than 4 GiB of strings"
                                      : "out of memory");
                break;
            }
        }
        c->stats.long_lines += rpl_reader_long_line_count(r);
        rpl_reader_close(r);
        if (rc != 0)
            return rc;
    }
    int rc = rpl_corpus_finish(c);
    if (rc != 0)
        snprintf(err, err_len, "out of memory");
    return rc;
}
