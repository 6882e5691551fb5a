/*
 * spf/eval.c: check_host() (RFC 7208 4-6) as a state machine driven by DNS completions (see
 * spf.h for the contract).
 *
 * Owns nothing outside the caller's struct pol_spf_eval: a stack of frames (the root domain,
 * then one per include or redirect being evaluated) whose domains and record texts live in one
 * fixed buffer with stack discipline (a frame's bytes are released when it is popped), plus the
 * names of the MX or PTR term in progress, the %{p} value and the explanation texts. The
 * machine alternates between action states, run by run(), and wait states, left by the
 * resolver's callback; a callback that comes before lookup() returns (a cached answer) is
 * handled in place and run() just goes on. Every step starts a lookup, consumes a term or pops
 * a frame, so an evaluation is bounded by the record sizes and the DNS limits.
 *
 * Where Mail::SPF 2.009 (mtpolicyd 2.05's library) and RFC 7208 differ in results, we follow
 * the RFC and the openspf suite: a malformed <domain> is none without a lookup, more than 10
 * MX names is a permerror (Mail::SPF uses the first 10), a PTR lookup error is a no-match, exp=
 * is looked up for fail only, a syntax error anywhere in a record is a permerror before any
 * term is evaluated. The explanation texts are Mail::SPF's wording, including its
 * "ROOT ... SUBDOMAIN:" prefix for results from included or redirected records.
 */
#include "spf/spf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

#include "spf/spf_int.h"

#define NAME_BYTES 254u      /* a name of at most 253 bytes and its NUL */
#define BUF_BYTES 16384u     /* frames' domains and records, a term's names */
#define XBUF_BYTES 1024u     /* one expanded domain-spec before normalisation */
#define STEPS_MAX (1u << 20) /* no evaluation comes near: each step consumes something */

_Static_assert(BUF_BYTES > POL_SPF_RECORD_BYTES_MAX + 2 * NAME_BYTES, "a record fits");
_Static_assert(XBUF_BYTES > 253 + 64 + 1, "a dropped expansion loses its partial label");

enum frame_kind {
    FRAME_ROOT,
    FRAME_INCLUDE,
    FRAME_REDIRECT,
};

struct frame {
    uint32_t mark;             /* buf_used before this frame's bytes */
    uint32_t dom_off, dom_len; /* <domain> */
    uint32_t rec_off, rec_len; /* the selected record (rec_len 0 until found) */
    uint32_t pos;              /* next term */
    uint32_t term_pos;         /* the term being evaluated */
    struct pol_spf_record_info info;
    enum frame_kind kind;
    bool in_include; /* this frame or an ancestor is an include target: its results are
                        never final, so no explanation is prepared */
};

enum state {
    S_RECORD,       /* look the top frame's record up */
    S_TERM,         /* evaluate the next term of the top frame */
    S_MX_NEXT,      /* address lookup for the next MX name */
    S_PTR_NEXT,     /* address lookup for the next PTR name */
    S_EXP,          /* fail: expand exp= and look it up */
    S_EXP_TEXT,     /* fail: expand the explanation found */
    S_DEFAULT_EXPL, /* fail: expand the default explanation */
    S_FAIL_FINAL,   /* fail: explanations ready, pop to the root */
    S_P_PTR,        /* %{p}: PTR lookup */
    S_P_NEXT,       /* %{p}: address lookup for the next name */
    S_DONE,
    /* waits: the answer handler leaves them */
    W_RECORD,
    W_A,
    W_MX,
    W_MX_ADDR,
    W_PTR,
    W_PTR_ADDR,
    W_EXISTS,
    W_EXP_TXT,
    W_P_PTR,
    W_P_ADDR,
};

struct pol_spf_eval {
    struct pol_spf_resolver res;
    struct pol_spf_limits lim;
    const struct pol_spf_request *rq;
    pol_spf_eval_done_fn *done;
    void *done_ctx;

    struct pol_spf_ip ip;
    const char *local; /* l: the local part (or "postmaster") */
    size_t local_len;
    char domain[NAME_BYTES]; /* o: the identity's domain, lower case */
    size_t domain_len;
    char sender[NAME_BYTES + 16]; /* s when it had to be built ("postmaster@" domain) */
    const char *s;
    size_t s_len;

    enum state state;
    enum state p_return; /* the state that asked for %{p} */
    bool waiting, in_run, async;
    uint32_t steps, lookups, terms, voids;

    uint32_t frame_count;
    struct frame frames[POL_SPF_FRAMES_MAX];
    uint32_t buf_used; /* bytes of buf in use (cleared with the header) */

    /* The term in progress: target name, prefix lengths, MX/PTR names in buf. */
    char target[NAME_BYTES];
    size_t target_len;
    unsigned cidr4, cidr6;
    uint32_t names_off, name_count, name_idx;
    enum pol_spf_rr_type qtype;
    char qname[NAME_BYTES];

    /* %{p} (RFC 7208 7.3), for the domain p_for. */
    char p[NAME_BYTES], p_for[NAME_BYTES];
    size_t p_len;
    bool p_valid;
    uint32_t p_best;
    int p_best_kind; /* 0: none yet, 1: validated, 2: subdomain of <domain> */

    enum pol_spf_result result;
    enum pol_spf_limit limit_hit;
    bool auth_set;
    char expl[POL_SPF_EXPL_BYTES];
    char auth[POL_SPF_EXPL_BYTES];
    char exp_raw[POL_SPF_EXPL_BYTES];
    char mech[POL_SPF_EXPL_BYTES / 2];
    char xbuf[XBUF_BYTES];

    char buf[BUF_BYTES];
};

const char *pol_spf_result_name(enum pol_spf_result r)
{
    static const char *const names[] = {"none",     "neutral",   "pass",     "fail",
                                        "softfail", "temperror", "permerror"};
    ENG_ASSERT((unsigned)r < sizeof names / sizeof names[0]);
    return names[r];
}

const char *pol_spf_scope_name(enum pol_spf_scope s)
{
    return s == POL_SPF_SCOPE_HELO ? "helo" : "mfrom";
}

const char *pol_spf_rr_type_name(enum pol_spf_rr_type t)
{
    static const char *const names[] = {"A", "AAAA", "MX", "PTR", "TXT"};
    ENG_ASSERT((unsigned)t < sizeof names / sizeof names[0]);
    return names[t];
}

const char *pol_spf_limit_name(enum pol_spf_limit l)
{
    static const char *const names[] = {"none",         "dns_terms",    "names_per_term",
                                        "void_lookups", "record_bytes", "frames",
                                        "state_bytes"};
    ENG_ASSERT((unsigned)l < sizeof names / sizeof names[0]);
    return names[l];
}

void pol_spf_limits_default(struct pol_spf_limits *l)
{
    l->dns_terms_max = POL_SPF_DNS_TERMS_DEFAULT;
    l->names_per_term_max = POL_SPF_NAMES_PER_TERM_DEFAULT;
    l->void_lookups_max = POL_SPF_VOID_LOOKUPS_DEFAULT;
}

size_t pol_spf_eval_bytes(void)
{
    return sizeof(struct pol_spf_eval);
}

/* ---------------------------------------------------------------------------------------------
 * Frames and the buffer
 */

static struct frame *top(struct pol_spf_eval *e)
{
    ENG_ASSERT(e->frame_count > 0);
    return &e->frames[e->frame_count - 1];
}

static const char *fdom(const struct pol_spf_eval *e, const struct frame *f)
{
    return e->buf + f->dom_off;
}

static const char *frec(const struct pol_spf_eval *e, const struct frame *f)
{
    return e->buf + f->rec_off;
}

/* Room for n bytes at the end of buf; NULL when full. */
static char *buf_take(struct pol_spf_eval *e, size_t n, uint32_t *off)
{
    if (n > BUF_BYTES - e->buf_used)
        return NULL;
    *off = e->buf_used;
    e->buf_used += (uint32_t)n;
    return e->buf + *off;
}

/* ---------------------------------------------------------------------------------------------
 * Explanations and results
 */

/* Appends s[0..n) to out as Mail::SPF's sanitize_string prints it (control and non-ASCII bytes
 * as \xNN), cut at the buffer's end. */
static size_t put_sanitized(char *out, size_t at, size_t cap, const char *s, size_t n)
{
    for (size_t i = 0; i < n && at + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            out[at++] = (char)c;
        } else if (at + 5 < cap) {
            at += (size_t)snprintf(out + at, cap - at, "\\x%02x", c);
        } else {
            break;
        }
    }
    out[at] = '\0';
    return at;
}

/* The local explanation: "DOMAIN: TEXT", or "ROOT ... DOMAIN: TEXT" for a result that arose in
 * an included or redirected record (Mail::SPF::Result::local_explanation). */
static void expl_set(struct pol_spf_eval *e, const char *text, size_t len)
{
    const struct frame *f = top(e);
    size_t n = 0;
    if (e->frame_count > 1) {
        n = put_sanitized(e->expl, n, sizeof e->expl, fdom(e, &e->frames[0]), e->frames[0].dom_len);
        n = put_sanitized(e->expl, n, sizeof e->expl, " ... ", 5);
    }
    n = put_sanitized(e->expl, n, sizeof e->expl, fdom(e, f), f->dom_len);
    n = put_sanitized(e->expl, n, sizeof e->expl, ": ", 2);
    put_sanitized(e->expl, n, sizeof e->expl, text, len);
}

static void finish(struct pol_spf_eval *e, enum pol_spf_result r)
{
    e->result = r;
    e->state = S_DONE;
}

/* Ends the evaluation with temperror or permerror, explained in the top frame's context. */
__attribute__((format(printf, 3, 4))) static void
end_error(struct pol_spf_eval *e, enum pol_spf_result r, const char *fmt, ...)
{
    ENG_ASSERT(r == POL_SPF_TEMPERROR || r == POL_SPF_PERMERROR);
    char text[POL_SPF_EXPL_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    ENG_ASSERT(n >= 0);
    expl_set(e, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
    finish(e, r);
}

static void raise_limit(struct pol_spf_eval *e, enum pol_spf_limit l, const char *fmt, uint32_t max)
{
    e->limit_hit = l;
    char text[160];
    snprintf(text, sizeof text, fmt, max);
    end_error(e, POL_SPF_PERMERROR, "%s", text);
}

static void raise_dns(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    const char *t = pol_spf_rr_type_name(e->qtype);
    if (a->rcode == POL_SPF_DNS_TIMEOUT)
        end_error(e, POL_SPF_TEMPERROR, "Time-out on DNS '%s' lookup of '%s'", t, e->qname);
    else if (a->rcode == POL_SPF_DNS_SERVFAIL)
        end_error(e, POL_SPF_TEMPERROR, "'%s' error on DNS '%s' lookup of '%s'",
                  a->rcode_text ? a->rcode_text : "SERVFAIL", t, e->qname);
    else
        end_error(e, POL_SPF_TEMPERROR, "Unknown error on DNS '%s' lookup of '%s'", t, e->qname);
}

static bool dns_error(const struct pol_spf_answer *a)
{
    return a->rcode != POL_SPF_DNS_OK && a->rcode != POL_SPF_DNS_NXDOMAIN;
}

/* Mail::SPF's explanation templates by mechanism class and result (Mech.pm, All.pm,
 * SenderIPAddrMech.pm). */
static const char *expl_template(enum pol_spf_mech m, enum pol_spf_result r)
{
    static const char *const all[] = {
        "Sender is authorized by default to use '%{s}' in '%{_scope}' identity",
        "Sender is not authorized by default to use '%{s}' in '%{_scope}' identity",
        "Sender is not authorized by default to use '%{s}' in '%{_scope}' identity, however "
        "domain is not currently prepared for false failures",
        "Domain does not state whether sender is authorized to use '%{s}' in '%{_scope}' "
        "identity"};
    static const char *const addr[] = {
        "%{c} is authorized to use '%{s}' in '%{_scope}' identity",
        "%{c} is not authorized to use '%{s}' in '%{_scope}' identity",
        "%{c} is not authorized to use '%{s}' in '%{_scope}' identity, however domain is not "
        "currently prepared for false failures",
        "Domain does not state whether %{c} is authorized to use '%{s}' in '%{_scope}' "
        "identity"};
    static const char *const other[] = {
        "Sender is authorized to use '%{s}' in '%{_scope}' identity",
        "Sender is not authorized to use '%{s}' in '%{_scope}' identity",
        "Sender is not authorized to use '%{s}' in '%{_scope}' identity, however domain is not "
        "currently prepared for false failures",
        "Domain does not state whether sender is authorized to use '%{s}' in '%{_scope}' "
        "identity"};
    unsigned i = r == POL_SPF_PASS ? 0 : r == POL_SPF_FAIL ? 1 : r == POL_SPF_SOFTFAIL ? 2 : 3;
    if (m == POL_SPF_MECH_ALL)
        return all[i];
    if (m == POL_SPF_MECH_INCLUDE || m == POL_SPF_MECH_EXISTS)
        return other[i];
    return addr[i];
}

/* ---------------------------------------------------------------------------------------------
 * Macro contexts
 */

static void macro_ctx(struct pol_spf_eval *e, struct pol_spf_macro_ctx *c)
{
    const struct frame *f = top(e);
    const struct pol_spf_request *rq = e->rq;
    memset(c, 0, sizeof *c);
    c->s = e->s;
    c->s_len = e->s_len;
    c->l = e->local;
    c->l_len = e->local_len;
    c->o = e->domain;
    c->o_len = e->domain_len;
    c->d = fdom(e, f);
    c->d_len = f->dom_len;
    c->h = rq->helo ? rq->helo : "";
    c->h_len = strlen(c->h);
    c->r = rq->receiver ? rq->receiver : "";
    c->r_len = strlen(c->r);
    bool p_ok = e->p_valid && strcmp(e->p_for, c->d) == 0;
    c->p = e->p;
    c->p_len = p_ok ? e->p_len : SIZE_MAX;
    c->ip = &e->ip;
    c->scope = rq->scope;
    c->t = rq->now_s;
}

/* Expands a domain-spec of the top frame into e->target. Returns OK (target_len 0 when the
 * name is malformed) or NEED_P (the caller starts the %{p} lookups and comes back). */
static enum pol_spf_expand_rc expand_target(struct pol_spf_eval *e, const char *spec, size_t len,
                                            enum state again)
{
    if (len == 0) {
        const struct frame *f = top(e);
        memcpy(e->target, fdom(e, f), f->dom_len + 1);
        e->target_len = f->dom_len;
        return POL_SPF_EXPAND_OK;
    }
    struct pol_spf_macro_ctx c;
    macro_ctx(e, &c);
    size_t n = 0;
    bool dropped = false;
    enum pol_spf_expand_rc rc =
        pol_spf_macro_expand(spec, len, &c, false, e->xbuf, sizeof e->xbuf, &n, &dropped);
    if (rc == POL_SPF_EXPAND_NEED_P) {
        e->p_return = again;
        e->state = S_P_PTR;
        return rc;
    }
    ENG_ASSERT(rc == POL_SPF_EXPAND_OK); /* the record was checked */
    e->target_len = pol_spf_name_normalize(e->xbuf, n, dropped, e->target);
    return POL_SPF_EXPAND_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Lookups
 */

static void lookup_done(void *ctx, const struct pol_spf_answer *a);

static void lookup(struct pol_spf_eval *e, enum pol_spf_rr_type type, const char *name,
                   enum state wait)
{
    ENG_ASSERT(!e->waiting);
    ENG_ASSERT(wait >= W_RECORD);
    size_t n = strlen(name);
    ENG_ASSERT(n > 0 && n < NAME_BYTES);
    memcpy(e->qname, name, n + 1);
    e->qtype = type;
    e->state = wait;
    e->waiting = true;
    e->lookups++;
    if (e->res.lookup(e->res.impl, type, e->qname, lookup_done, e) < 0) {
        struct pol_spf_answer a = {POL_SPF_DNS_ERROR, NULL, NULL, 0};
        lookup_done(e, &a);
    }
}

static enum pol_spf_rr_type addr_type(const struct pol_spf_eval *e)
{
    return e->ip.family == 4 ? POL_SPF_RR_A : POL_SPF_RR_AAAA;
}

/* The PTR query name of an address: d.c.b.a.in-addr.arpa or the 32 nibbles under ip6.arpa.
 * out needs 73 bytes. */
static void reverse_name(const struct pol_spf_ip *ip, char *out)
{
    if (ip->family == 4) {
        sprintf(out, "%u.%u.%u.%u.in-addr.arpa", ip->bytes[3], ip->bytes[2], ip->bytes[1],
                ip->bytes[0]);
        return;
    }
    size_t n = 0;
    for (int k = 31; k >= 0; k--) {
        out[n++] = "0123456789abcdef"[(ip->bytes[k / 2] >> (k % 2 ? 0 : 4)) & 0xfu];
        out[n++] = '.';
    }
    memcpy(out + n, "ip6.arpa", 9);
}

/* Counts a DNS-interactive term (RFC 7208 4.6.4); false when the limit ended the evaluation. */
static bool count_term(struct pol_spf_eval *e)
{
    if (++e->terms <= e->lim.dns_terms_max)
        return true;
    raise_limit(e, POL_SPF_LIMIT_DNS_TERMS, "Maximum DNS-interactive terms limit (%u) exceeded",
                e->lim.dns_terms_max);
    return false;
}

/* Counts a void answer; false when the limit ended the evaluation. */
static bool count_void(struct pol_spf_eval *e)
{
    if (++e->voids <= e->lim.void_lookups_max)
        return true;
    raise_limit(e, POL_SPF_LIMIT_VOID_LOOKUPS, "Maximum void DNS look-ups limit (%u) exceeded",
                e->lim.void_lookups_max);
    return false;
}

/* Is the answer void (NXDOMAIN or no records)? Counts it; *stop when that ended the
 * evaluation. */
static bool void_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a, bool *stop)
{
    *stop = false;
    if (a->rcode == POL_SPF_DNS_OK && a->count > 0)
        return false;
    *stop = !count_void(e);
    return true;
}

/* Does an address record hold the client address within the prefix length? exact: the whole
 * address (PTR validation). */
static bool addr_matches(const struct pol_spf_eval *e, const struct pol_spf_rr *rr, bool exact)
{
    size_t want = e->ip.family == 4 ? 4 : 16;
    if (rr->len != want)
        return false;
    unsigned pfx = exact ? (unsigned)want * 8 : e->ip.family == 4 ? e->cidr4 : e->cidr6;
    return pol_spf_ip_in(&e->ip, (const uint8_t *)rr->data, pfx);
}

/* Stores host names from an MX or PTR answer in buf (after the top frame), each as a
 * NUL-terminated lower-case name; filter (PTR) keeps names equal to or under e->target. Returns
 * false when buf is full (the evaluation ended). */
static bool names_store(struct pol_spf_eval *e, const struct pol_spf_answer *a, size_t max,
                        bool filter)
{
    e->names_off = e->buf_used;
    e->name_count = 0;
    e->name_idx = 0;
    for (size_t i = 0; i < a->count && i < max; i++) {
        char name[NAME_BYTES];
        size_t n = pol_spf_name_normalize(a->rrs[i].data, a->rrs[i].len, false, name);
        if (n == 0)
            continue; /* the root (a null MX) or a malformed name: nothing to look up */
        if (filter) {
            size_t t = e->target_len;
            bool same = n == t && memcmp(name, e->target, n) == 0;
            bool under = n > t && name[n - t - 1] == '.' && memcmp(name + n - t, e->target, t) == 0;
            if (!same && !under)
                continue;
        }
        uint32_t off;
        char *dst = buf_take(e, n + 1, &off);
        if (dst == NULL) {
            raise_limit(e, POL_SPF_LIMIT_STATE_BYTES, "Evaluation state limit (%u bytes) exceeded",
                        BUF_BYTES);
            return false;
        }
        memcpy(dst, name, n + 1);
        e->name_count++;
    }
    return true;
}

static const char *name_at(const struct pol_spf_eval *e, uint32_t idx)
{
    const char *p = e->buf + e->names_off;
    for (uint32_t i = 0; i < idx; i++)
        p += strlen(p) + 1;
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * Records and frames
 */

static bool frame_push(struct pol_spf_eval *e, enum frame_kind kind, const char *dom, size_t len)
{
    if (e->frame_count == POL_SPF_FRAMES_MAX) {
        raise_limit(e, POL_SPF_LIMIT_FRAMES, "Maximum include/redirect nesting (%u) exceeded",
                    POL_SPF_FRAMES_MAX);
        return false;
    }
    uint32_t mark = e->buf_used, off;
    char *d = buf_take(e, len + 1, &off);
    if (d == NULL) {
        raise_limit(e, POL_SPF_LIMIT_STATE_BYTES, "Evaluation state limit (%u bytes) exceeded",
                    BUF_BYTES);
        return false;
    }
    memcpy(d, dom, len);
    d[len] = '\0';
    bool in_include = kind == FRAME_INCLUDE || (e->frame_count > 0 && top(e)->in_include);
    struct frame *f = &e->frames[e->frame_count++];
    memset(f, 0, sizeof *f);
    f->mark = mark;
    f->dom_off = off;
    f->dom_len = (uint32_t)len;
    f->kind = kind;
    f->in_include = in_include;
    e->state = S_RECORD;
    return true;
}

static void frame_pop(struct pol_spf_eval *e)
{
    struct frame *f = top(e);
    ENG_ASSERT(f->kind != FRAME_ROOT);
    e->buf_used = f->mark;
    e->frame_count--;
}

static void mech_match(struct pol_spf_eval *e);

/* The top frame produced r (not an error): pass it up through redirects to the root, or to
 * the include term that asked for it. */
static void frame_result(struct pol_spf_eval *e, enum pol_spf_result r)
{
    ENG_ASSERT(r != POL_SPF_TEMPERROR && r != POL_SPF_PERMERROR);
    for (;;) {
        struct frame *f = top(e);
        if (f->kind == FRAME_ROOT) {
            finish(e, r);
            return;
        }
        char dom[NAME_BYTES];
        memcpy(dom, fdom(e, f), f->dom_len + 1);
        enum frame_kind kind = f->kind;
        frame_pop(e);
        if (kind == FRAME_REDIRECT) {
            if (r == POL_SPF_NONE) {
                end_error(e, POL_SPF_PERMERROR,
                          "Redirect domain '%s' has no applicable sender policy", dom);
                return;
            }
            continue;
        }
        /* An include (RFC 7208 5.2): pass matches, fail/softfail/neutral do not, none is a
         * permerror of the including record. */
        if (r == POL_SPF_PASS) {
            mech_match(e);
        } else if (r == POL_SPF_NONE) {
            end_error(e, POL_SPF_PERMERROR, "Included domain '%s' has no applicable sender policy",
                      dom);
        } else {
            e->state = S_TERM;
        }
        return;
    }
}

/* Picks the record from a TXT answer for the top frame (RFC 7208 4.4, 4.5). */
static void record_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    struct frame *f = top(e);
    if (dns_error(a)) {
        raise_dns(e, a);
        return;
    }
    const struct pol_spf_rr *rec = NULL;
    size_t found = 0;
    for (size_t i = 0; i < a->count; i++)
        if (pol_spf_record_is_v1(a->rrs[i].data, a->rrs[i].len)) {
            rec = &a->rrs[i];
            found++;
        }
    if (found == 0) {
        static const char none[] = "No applicable sender policy available";
        expl_set(e, none, sizeof none - 1);
        frame_result(e, POL_SPF_NONE);
        return;
    }
    if (found > 1) {
        end_error(e, POL_SPF_PERMERROR, "Redundant applicable 'v=spf1' sender policies found");
        return;
    }
    if (rec->len > POL_SPF_RECORD_BYTES_MAX) {
        raise_limit(e, POL_SPF_LIMIT_RECORD_BYTES, "SPF record longer than %u bytes",
                    POL_SPF_RECORD_BYTES_MAX);
        return;
    }
    uint32_t off;
    char *dst = buf_take(e, rec->len + 1, &off);
    if (dst == NULL) {
        raise_limit(e, POL_SPF_LIMIT_STATE_BYTES, "Evaluation state limit (%u bytes) exceeded",
                    BUF_BYTES);
        return;
    }
    memcpy(dst, rec->data, rec->len);
    dst[rec->len] = '\0';
    f->rec_off = off;
    f->rec_len = (uint32_t)rec->len;
    char err[POL_SPF_EXPL_BYTES];
    if (pol_spf_record_check(dst, rec->len, &f->info, err, sizeof err) != 0) {
        end_error(e, POL_SPF_PERMERROR, "%s", err);
        return;
    }
    f->pos = 0;
    e->state = S_TERM;
}

/* ---------------------------------------------------------------------------------------------
 * Terms
 */

/* Re-reads the term at the top frame's term_pos (it was checked when the record was). */
static void term_at(struct pol_spf_eval *e, struct pol_spf_term *t, size_t *next)
{
    const struct frame *f = top(e);
    size_t pos = f->term_pos;
    char err[8];
    int rc = pol_spf_record_next(frec(e, f), f->rec_len, &pos, t, err, sizeof err);
    ENG_ASSERT(rc == 1);
    if (next)
        *next = pos;
}

static enum pol_spf_result qual_result(char q)
{
    return q == '-'   ? POL_SPF_FAIL
           : q == '~' ? POL_SPF_SOFTFAIL
           : q == '?' ? POL_SPF_NEUTRAL
                      : POL_SPF_PASS;
}

/* The top frame's current term matched. */
static void mech_match(struct pol_spf_eval *e)
{
    struct pol_spf_term t;
    term_at(e, &t, NULL);
    enum pol_spf_result r = qual_result(t.qual);
    if (top(e)->in_include) {
        frame_result(e, r);
        return;
    }
    pol_spf_term_format(&t, e->mech, sizeof e->mech);
    struct pol_spf_macro_ctx c;
    macro_ctx(e, &c);
    c.s = e->rq->identity; /* Mail::SPF's %{s} is the identity as given */
    c.s_len = strlen(e->rq->identity);
    char text[POL_SPF_EXPL_BYTES];
    size_t n = 0;
    pol_spf_macro_expand_local(expl_template(t.mech, r), &c, text, sizeof text, &n);
    n += (size_t)snprintf(text + n, sizeof text - n, " (mechanism '%s' matched)", e->mech);
    expl_set(e, text, n < sizeof text ? n : sizeof text - 1);
    if (r != POL_SPF_FAIL) {
        frame_result(e, r);
        return;
    }
    e->state = top(e)->info.exp_len > 0 ? S_EXP : S_DEFAULT_EXPL;
}

static void term_next(struct pol_spf_eval *e, bool matched)
{
    if (matched)
        mech_match(e);
    else
        e->state = S_TERM;
}

/* The end of the record: redirect= if there is one (RFC 7208 6.1), else neutral. */
static void record_end(struct pol_spf_eval *e)
{
    struct frame *f = top(e);
    if (f->info.redirect_len == 0) {
        if (!f->in_include) {
            static const char text[] = "Default neutral result due to no mechanism matches";
            expl_set(e, text, sizeof text - 1);
        }
        frame_result(e, POL_SPF_NEUTRAL);
        return;
    }
    if (expand_target(e, frec(e, f) + f->info.redirect_pos, f->info.redirect_len, S_TERM) ==
        POL_SPF_EXPAND_NEED_P)
        return;
    if (!count_term(e))
        return;
    if (e->target_len == 0) {
        end_error(e, POL_SPF_PERMERROR, "Redirect domain '%s' has no applicable sender policy",
                  e->xbuf);
        return;
    }
    frame_push(e, FRAME_REDIRECT, e->target, e->target_len);
}

/* Evaluates the term at the top frame's pos. */
static void step_term(struct pol_spf_eval *e)
{
    struct frame *f = top(e);
    struct pol_spf_term t;
    size_t pos = f->pos;
    char err[8];
    int rc = pol_spf_record_next(frec(e, f), f->rec_len, &pos, &t, err, sizeof err);
    ENG_ASSERT(rc >= 0); /* checked */
    if (rc == 0) {
        record_end(e);
        return;
    }
    f->term_pos = f->pos;
    if (t.kind != POL_SPF_TERM_MECH) {
        f->pos = (uint32_t)pos;
        return; /* modifiers act at the end (redirect) or on fail (exp) */
    }
    switch (t.mech) {
    case POL_SPF_MECH_ALL:
        f->pos = (uint32_t)pos;
        mech_match(e);
        return;
    case POL_SPF_MECH_IP4:
    case POL_SPF_MECH_IP6:
        f->pos = (uint32_t)pos;
        if ((t.mech == POL_SPF_MECH_IP4) != (e->ip.family == 4)) {
            term_next(e, false);
            return;
        }
        term_next(e, pol_spf_ip_in(&e->ip, t.net, e->ip.family == 4 ? t.cidr4 : t.cidr6));
        return;
    default:
        break;
    }
    /* A DNS-interactive term: expand its target (perhaps after the %{p} lookups, which bring
     * us back here with pos unchanged), count it, then look up. */
    if (expand_target(e, t.spec, t.spec_len, S_TERM) == POL_SPF_EXPAND_NEED_P)
        return;
    f->pos = (uint32_t)pos;
    if (!count_term(e))
        return;
    e->cidr4 = t.cidr4;
    e->cidr6 = t.cidr6;
    if (e->target_len == 0) {
        /* A malformed target name (an empty or long label): nothing can exist there. For an
         * include it is a record that does not exist. */
        if (t.mech == POL_SPF_MECH_INCLUDE)
            end_error(e, POL_SPF_PERMERROR, "Included domain '%s' has no applicable sender policy",
                      e->xbuf);
        else
            term_next(e, false);
        return;
    }
    switch (t.mech) {
    case POL_SPF_MECH_INCLUDE:
        frame_push(e, FRAME_INCLUDE, e->target, e->target_len);
        return;
    case POL_SPF_MECH_A:
        lookup(e, addr_type(e), e->target, W_A);
        return;
    case POL_SPF_MECH_MX:
        lookup(e, POL_SPF_RR_MX, e->target, W_MX);
        return;
    case POL_SPF_MECH_EXISTS:
        lookup(e, POL_SPF_RR_A, e->target, W_EXISTS);
        return;
    case POL_SPF_MECH_PTR: {
        char rev[80];
        reverse_name(&e->ip, rev);
        lookup(e, POL_SPF_RR_PTR, rev, W_PTR);
        return;
    }
    default:
        ENG_ASSERT(0);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Answers to the mechanisms' lookups
 */

static void a_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a, bool exists)
{
    bool stop;
    if (dns_error(a)) {
        raise_dns(e, a);
        return;
    }
    if (void_answer(e, a, &stop)) {
        if (!stop)
            term_next(e, false);
        return;
    }
    bool match = exists; /* exists: any A record */
    for (size_t i = 0; i < a->count && !match; i++)
        match = addr_matches(e, &a->rrs[i], false);
    term_next(e, match);
}

static void mx_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    bool stop;
    if (dns_error(a)) {
        raise_dns(e, a);
        return;
    }
    if (void_answer(e, a, &stop)) {
        if (!stop)
            term_next(e, false);
        return;
    }
    /* RFC 7208 4.6.4: more MX names than the limit is a permerror. */
    if (a->count > e->lim.names_per_term_max) {
        raise_limit(e, POL_SPF_LIMIT_NAMES_PER_TERM,
                    "Maximum MX names per 'mx' mechanism limit (%u) exceeded",
                    e->lim.names_per_term_max);
        return;
    }
    if (names_store(e, a, a->count, false))
        e->state = S_MX_NEXT;
}

static void mx_addr_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    bool stop;
    if (dns_error(a)) {
        raise_dns(e, a);
        return;
    }
    if (void_answer(e, a, &stop)) {
        if (!stop) {
            e->name_idx++;
            e->state = S_MX_NEXT;
        }
        return;
    }
    for (size_t i = 0; i < a->count; i++)
        if (addr_matches(e, &a->rrs[i], false)) {
            e->buf_used = e->names_off;
            term_next(e, true);
            return;
        }
    e->name_idx++;
    e->state = S_MX_NEXT;
}

static void ptr_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    bool stop;
    /* RFC 7208 5.5: a DNS error on the PTR lookup makes the mechanism not match. */
    if (dns_error(a)) {
        term_next(e, false);
        return;
    }
    if (void_answer(e, a, &stop)) {
        if (!stop)
            term_next(e, false);
        return;
    }
    /* Names past the limit are ignored (4.6.4); only names in the target domain matter. */
    if (names_store(e, a, e->lim.names_per_term_max, true))
        e->state = S_PTR_NEXT;
}

static void ptr_addr_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    bool stop;
    /* 5.5: an error on an address lookup skips that name. */
    if (!dns_error(a)) {
        if (void_answer(e, a, &stop)) {
            if (stop)
                return;
        } else {
            for (size_t i = 0; i < a->count; i++)
                if (addr_matches(e, &a->rrs[i], true)) {
                    e->buf_used = e->names_off;
                    term_next(e, true);
                    return;
                }
        }
    }
    e->name_idx++;
    e->state = S_PTR_NEXT;
}

/* S_MX_NEXT, S_PTR_NEXT */
static void step_names(struct pol_spf_eval *e, enum state wait)
{
    if (e->name_idx == e->name_count) {
        e->buf_used = e->names_off;
        term_next(e, false);
        return;
    }
    lookup(e, addr_type(e), name_at(e, e->name_idx), wait);
}

/* ---------------------------------------------------------------------------------------------
 * Explanations of a fail (RFC 7208 6.2)
 */

static void step_exp(struct pol_spf_eval *e)
{
    const struct frame *f = top(e);
    if (expand_target(e, frec(e, f) + f->info.exp_pos, f->info.exp_len, S_EXP) ==
        POL_SPF_EXPAND_NEED_P)
        return;
    if (e->target_len == 0) {
        e->state = S_DEFAULT_EXPL;
        return;
    }
    lookup(e, POL_SPF_RR_TXT, e->target, W_EXP_TXT);
}

/* Any DNS trouble, not exactly one TXT record, or a text that is not an explanation-string:
 * proceed as if there were no exp= (6.2). Not a void lookup either (the suite's exp-void). */
static void exp_txt_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    e->state = S_DEFAULT_EXPL;
    if (a->rcode != POL_SPF_DNS_OK || a->count != 1)
        return;
    const struct pol_spf_rr *rr = &a->rrs[0];
    struct pol_spf_macro_diag diag;
    if (rr->len >= sizeof e->exp_raw || !pol_spf_macro_check(rr->data, rr->len, true, &diag))
        return;
    memcpy(e->exp_raw, rr->data, rr->len);
    e->exp_raw[rr->len] = '\0';
    e->state = S_EXP_TEXT;
}

/* Expands an explanation string into e->auth. Returns false when it needs %{p} first (the
 * lookups are started and come back to `again`). */
static bool expand_expl(struct pol_spf_eval *e, const char *s, enum state again, bool *ok)
{
    struct pol_spf_macro_ctx c;
    macro_ctx(e, &c);
    size_t n = 0;
    enum pol_spf_expand_rc rc =
        pol_spf_macro_expand(s, strlen(s), &c, true, e->auth, sizeof e->auth, &n, NULL);
    if (rc == POL_SPF_EXPAND_NEED_P) {
        e->p_return = again;
        e->state = S_P_PTR;
        return false;
    }
    *ok = rc == POL_SPF_EXPAND_OK;
    if (*ok) {
        /* Not sanitised like the local explanation (Mail::SPF leaves it alone), but a control
         * character would break the reply line. */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)e->auth[i] < 0x20 || e->auth[i] == 0x7f)
                e->auth[i] = '?';
    }
    return true;
}

static void step_exp_text(struct pol_spf_eval *e)
{
    bool ok = false;
    if (!expand_expl(e, e->exp_raw, S_EXP_TEXT, &ok))
        return;
    e->auth_set = ok;
    e->state = ok ? S_FAIL_FINAL : S_DEFAULT_EXPL;
}

static void step_default_expl(struct pol_spf_eval *e)
{
    bool ok = false;
    if (e->rq->default_expl != NULL && !expand_expl(e, e->rq->default_expl, S_DEFAULT_EXPL, &ok))
        return;
    e->auth_set = ok;
    e->state = S_FAIL_FINAL;
}

/* ---------------------------------------------------------------------------------------------
 * %{p}: the validated domain name of the client address (RFC 7208 7.3, Mail::SPF's
 * valid_domain_for_ip_address with "best match"): a name equal to <domain> wins at once, else
 * the first one under <domain>, else the first validated one, else "unknown". Its lookups are
 * not counted against the limits.
 */

static void p_set(struct pol_spf_eval *e, const char *v)
{
    const struct frame *f = top(e);
    size_t n = strlen(v);
    ENG_ASSERT(n < sizeof e->p);
    memcpy(e->p, v, n + 1);
    e->p_len = n;
    memcpy(e->p_for, fdom(e, f), f->dom_len + 1);
    e->p_valid = true;
    e->buf_used = e->names_off;
    e->state = e->p_return;
}

static void step_p_ptr(struct pol_spf_eval *e)
{
    char rev[80];
    reverse_name(&e->ip, rev);
    e->names_off = e->buf_used;
    lookup(e, POL_SPF_RR_PTR, rev, W_P_PTR);
}

static void p_ptr_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    if (a->rcode != POL_SPF_DNS_OK || a->count == 0) {
        p_set(e, "unknown");
        return;
    }
    if (!names_store(e, a, e->lim.names_per_term_max, false))
        return;
    e->p_best_kind = 0;
    e->state = S_P_NEXT;
}

static void step_p_next(struct pol_spf_eval *e)
{
    if (e->name_idx < e->name_count) {
        lookup(e, addr_type(e), name_at(e, e->name_idx), W_P_ADDR);
        return;
    }
    char best[NAME_BYTES] = "unknown";
    if (e->p_best_kind > 0)
        snprintf(best, sizeof best, "%s", name_at(e, e->p_best));
    p_set(e, best);
}

static void p_addr_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    bool valid = false;
    for (size_t i = 0; a->rcode == POL_SPF_DNS_OK && i < a->count && !valid; i++)
        valid = addr_matches(e, &a->rrs[i], true);
    e->state = S_P_NEXT;
    uint32_t idx = e->name_idx++;
    if (!valid)
        return;
    const struct frame *f = top(e);
    const char *name = name_at(e, idx), *d = fdom(e, f);
    size_t n = strlen(name), dn = f->dom_len;
    if (n == dn && memcmp(name, d, n) == 0) {
        char copy[NAME_BYTES];
        memcpy(copy, name, n + 1);
        p_set(e, copy);
        return;
    }
    int kind = n > dn && name[n - dn - 1] == '.' && memcmp(name + n - dn, d, dn) == 0 ? 2 : 1;
    if (kind > e->p_best_kind) {
        e->p_best_kind = kind;
        e->p_best = idx;
    }
}

/* ---------------------------------------------------------------------------------------------
 * The machine
 */

static void handle_answer(struct pol_spf_eval *e, const struct pol_spf_answer *a)
{
    switch (e->state) {
    case W_RECORD:
        record_answer(e, a);
        return;
    case W_A:
        a_answer(e, a, false);
        return;
    case W_EXISTS:
        a_answer(e, a, true);
        return;
    case W_MX:
        mx_answer(e, a);
        return;
    case W_MX_ADDR:
        mx_addr_answer(e, a);
        return;
    case W_PTR:
        ptr_answer(e, a);
        return;
    case W_PTR_ADDR:
        ptr_addr_answer(e, a);
        return;
    case W_EXP_TXT:
        exp_txt_answer(e, a);
        return;
    case W_P_PTR:
        p_ptr_answer(e, a);
        return;
    case W_P_ADDR:
        p_addr_answer(e, a);
        return;
    default:
        ENG_ASSERT(0);
    }
}

static void step(struct pol_spf_eval *e)
{
    switch (e->state) {
    case S_RECORD:
        lookup(e, POL_SPF_RR_TXT, fdom(e, top(e)), W_RECORD);
        return;
    case S_TERM:
        step_term(e);
        return;
    case S_MX_NEXT:
        step_names(e, W_MX_ADDR);
        return;
    case S_PTR_NEXT:
        step_names(e, W_PTR_ADDR);
        return;
    case S_EXP:
        step_exp(e);
        return;
    case S_EXP_TEXT:
        step_exp_text(e);
        return;
    case S_DEFAULT_EXPL:
        step_default_expl(e);
        return;
    case S_FAIL_FINAL:
        frame_result(e, POL_SPF_FAIL);
        return;
    case S_P_PTR:
        step_p_ptr(e);
        return;
    case S_P_NEXT:
        step_p_next(e);
        return;
    default:
        ENG_ASSERT(0);
    }
}

/* Runs action states until the evaluation is done or waits for an answer. */
static void run(struct pol_spf_eval *e)
{
    ENG_ASSERT(!e->in_run);
    e->in_run = true;
    while (e->state != S_DONE && !e->waiting) {
        ENG_ASSERT(++e->steps < STEPS_MAX);
        step(e);
    }
    e->in_run = false;
}

static void lookup_done(void *ctx, const struct pol_spf_answer *a)
{
    struct pol_spf_eval *e = ctx;
    ENG_ASSERT(e->waiting);
    ENG_ASSERT(e->state >= W_RECORD);
    e->waiting = false;
    handle_answer(e, a);
    if (e->in_run)
        return; /* answered inside lookup(): run() goes on */
    run(e);
    if (e->state == S_DONE && e->async)
        e->done(e->done_ctx, e);
}

/* Splits the identity (RFC 7208 4.3): MAIL FROM "local@domain" at the last '@' (the local part
 * may contain one when quoted), an empty local part becoming "postmaster"; HELO is a domain
 * whose sender is postmaster@HELO. Returns false when the domain is not usable. */
static bool identity_split(struct pol_spf_eval *e)
{
    const char *id = e->rq->identity;
    size_t len = strlen(id);
    const char *at = e->rq->scope == POL_SPF_SCOPE_MFROM ? memrchr(id, '@', len) : NULL;
    const char *dom = at ? at + 1 : id;
    size_t dlen = len - (size_t)(dom - id);
    e->local = at && at > id ? id : "postmaster";
    e->local_len = at && at > id ? (size_t)(at - id) : 10;
    if (dlen > 0 && dom[dlen - 1] == '.')
        dlen--;
    size_t keep = dlen < NAME_BYTES - 1 ? dlen : NAME_BYTES - 1;
    for (size_t i = 0; i < keep; i++)
        e->domain[i] = dom[i] >= 'A' && dom[i] <= 'Z' ? (char)(dom[i] - 'A' + 'a') : dom[i];
    e->domain[keep] = '\0';
    e->domain_len = keep;
    if (at && at > id) {
        e->s = id;
        e->s_len = len;
    } else {
        e->s_len = (size_t)snprintf(e->sender, sizeof e->sender, "postmaster@%s", e->domain);
        e->s = e->sender;
    }
    return keep == dlen && pol_spf_domain_ok(e->domain, e->domain_len);
}

enum pol_spf_eval_status pol_spf_eval_start(struct pol_spf_eval *e,
                                            const struct pol_spf_resolver *res,
                                            const struct pol_spf_limits *lim,
                                            const struct pol_spf_request *rq,
                                            pol_spf_eval_done_fn *done, void *ctx)
{
    ENG_ASSERT(res != NULL && res->lookup != NULL);
    ENG_ASSERT(rq != NULL && rq->identity != NULL && rq->ip != NULL);
    /* Only the header needs clearing: every buffer is written before it is read. */
    memset(e, 0, offsetof(struct pol_spf_eval, expl));
    e->expl[0] = e->auth[0] = e->mech[0] = '\0';
    e->res = *res;
    e->lim = *lim;
    if (e->lim.names_per_term_max > POL_SPF_NAMES_PER_TERM_CAP)
        e->lim.names_per_term_max = POL_SPF_NAMES_PER_TERM_CAP;
    e->rq = rq;
    e->done = done;
    e->done_ctx = ctx;
    bool domain_ok = identity_split(e);
    frame_push(e, FRAME_ROOT, e->domain, e->domain_len);
    if (pol_spf_ip_parse(rq->ip, strlen(rq->ip), &e->ip) != 0) {
        e->ip.family = 4; /* so that nothing below trips over it */
        end_error(e, POL_SPF_PERMERROR, "Invalid IP address '%s'", rq->ip);
    } else if (!domain_ok) {
        static const char none[] = "No applicable sender policy available";
        expl_set(e, none, sizeof none - 1);
        finish(e, POL_SPF_NONE);
    }
    run(e);
    if (e->state == S_DONE)
        return POL_SPF_EVAL_DONE;
    e->async = true;
    return POL_SPF_EVAL_WAIT;
}

enum pol_spf_result pol_spf_eval_result(const struct pol_spf_eval *e)
{
    ENG_ASSERT(e->state == S_DONE);
    return e->result;
}

const char *pol_spf_eval_local_expl(const struct pol_spf_eval *e)
{
    ENG_ASSERT(e->state == S_DONE);
    return e->expl;
}

const char *pol_spf_eval_auth_expl(const struct pol_spf_eval *e)
{
    ENG_ASSERT(e->state == S_DONE);
    return e->result == POL_SPF_FAIL && e->auth_set ? e->auth : NULL;
}

const char *pol_spf_eval_mechanism(const struct pol_spf_eval *e)
{
    ENG_ASSERT(e->state == S_DONE);
    return e->mech[0] != '\0' ? e->mech : NULL;
}

enum pol_spf_limit pol_spf_eval_limit_hit(const struct pol_spf_eval *e)
{
    return e->limit_hit;
}

uint32_t pol_spf_eval_lookups(const struct pol_spf_eval *e)
{
    return e->lookups;
}
