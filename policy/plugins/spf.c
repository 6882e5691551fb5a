/*
 * spf.c: the SPF plugin (spec 13.22): RFC 7208 checks with our own evaluator (policy/spf/) on
 * the shard's DNS client. Order as in 2.05: disabled, blank client_address or an exempt client
 * (loopback, whitelist) do nothing; with a non-blank helo_name and check_helo not `off` the
 * HELO identity is checked first and its action, if any, is the answer; a null sender then
 * becomes postmaster@HELO; the MAIL FROM identity is checked last. Scores once per mail (flag
 * `NAME-score`, shared by both checks). Decisions of spec 16: #6 temperror_mode and
 * permerror_mode are each honoured for their own result (`passive` nothing, `dunno`/`accept`
 * dunno, `defer` / `reject` that action; any other value keeps 2.05's action for the result:
 * defer for temperror, reject for permerror); #7 a null sender without a HELO check is skipped.
 *
 * Owns per plugin the whitelist and the score flag name (create .. destroy, main thread); per
 * shard a fixed pool of evaluation slots (max_evaluations, each pol_spf_eval_bytes() plus the
 * resolver adapter) and one answer scratch, allocated at shard start. A request holds one slot
 * while it waits for DNS; with none free the request fails (counted) rather than waiting. A
 * client_address that is not an IP address fails the request, as Mail::SPF's exception does.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eng/assert.h>
#include <eng/log.h>
#include <pol/dns.h>

#include "plugins/common.h"
#include "spf/spf.h"
#include "spf/spf_eng.h"
#include "spf/spf_int.h"

enum {
    OPT_ENABLED,
    OPT_PASS_MODE,
    OPT_PASS_SCORE,
    OPT_SOFTFAIL_MODE,
    OPT_SOFTFAIL_SCORE,
    OPT_FAIL_MODE,
    OPT_FAIL_SCORE,
    OPT_TEMPERROR_MODE,
    OPT_TEMPERROR_SCORE,
    OPT_PERMERROR_MODE,
    OPT_PERMERROR_SCORE,
    OPT_REJECT_MESSAGE,
    OPT_DEFAULT_EXPL,
    OPT_HOSTNAME,
    OPT_WHITELIST,
    OPT_CHECK_HELO,
    OPT_MAX_TERMS,
    OPT_MAX_NAMES,
    OPT_MAX_VOIDS,
    OPT_MAX_EVALUATIONS,
    OPT_COUNT,
};

static const struct pol_opt_def spf_opts[] = {
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_PASS_MODE] = {"pass_mode", POL_OPT_STRING, "passive", POL_OPT_UC},
    [OPT_PASS_SCORE] = {"pass_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_SOFTFAIL_MODE] = {"softfail_mode", POL_OPT_STRING, "passive", POL_OPT_UC},
    [OPT_SOFTFAIL_SCORE] = {"softfail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_FAIL_MODE] = {"fail_mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_FAIL_SCORE] = {"fail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_TEMPERROR_MODE] = {"temperror_mode", POL_OPT_STRING, "defer", 0},
    [OPT_TEMPERROR_SCORE] = {"temperror_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_PERMERROR_MODE] = {"permerror_mode", POL_OPT_STRING, "reject", 0},
    [OPT_PERMERROR_SCORE] = {"permerror_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "SPF validation failed: %LOCAL_EXPL%", 0},
    [OPT_DEFAULT_EXPL] = {"default_authority_explanation", POL_OPT_STRING,
                          "See http://www.%{d}/why/id=%{S};ip=%{I};r=%{R}", 0},
    [OPT_HOSTNAME] = {"hostname", POL_OPT_STRING, "", 0},
    [OPT_WHITELIST] = {"whitelist", POL_OPT_STRING, "", 0},
    [OPT_CHECK_HELO] = {"check_helo", POL_OPT_STRING, "on", 0},
    [OPT_MAX_TERMS] = {"max_dns_interactive_terms", POL_OPT_NUMBER, "10", 0},
    [OPT_MAX_NAMES] = {"max_name_lookups_per_term", POL_OPT_NUMBER, "10", 0},
    [OPT_MAX_VOIDS] = {"max_void_dns_lookups", POL_OPT_NUMBER, "2", 0},
    /* ringpolicyd's own: evaluations waiting for DNS at once per shard */
    [OPT_MAX_EVALUATIONS] = {"max_evaluations", POL_OPT_INT, "64", 0},
};
_Static_assert(sizeof spf_opts / sizeof spf_opts[0] == OPT_COUNT, "one def per option");

#define WHITELIST_MAX 1024u
#define EVALUATIONS_MAX 65536

struct net {
    struct pol_spf_ip ip;
    unsigned prefix;
};

struct spf_data {
    char *score_flag; /* NAME-score */
    char hostname[256];
    struct pol_spf_limits lim;
    size_t net_count;
    struct net nets[]; /* loopback first, then the whitelist */
};

struct spf_slot {
    struct pol_spf_eng res;
    struct pol_req *r;
    struct spf_req *st;
    struct spf_shard *shard;
    struct spf_slot *next_free;
    struct pol_spf_eval *eval;
};

struct spf_shard {
    struct eng_dns *dns;
    struct pol_spf_eng_scratch scratch;
    struct pol_spf_eng_stats stats;
    struct spf_slot *free;
    uint32_t slot_count, in_use;
    uint64_t slots_exhausted; /* requests failed for want of a slot (counted limit) */
    uint64_t results[POL_SPF_PERMERROR + 1];
    struct spf_slot *slots;
    char *evals;
};

enum phase {
    PH_START,
    PH_HELO,  /* HELO evaluation out */
    PH_MFROM, /* MAIL FROM evaluation out */
};

struct spf_req {
    enum phase phase;
    struct spf_slot *slot; /* held only while the evaluation runs */
    struct pol_spf_request rq;
    const char *sender; /* the MAIL FROM identity (request or arena) */
    /* the outcome of the finished check, copied out of the slot */
    bool have_result, result_oom;
    enum pol_spf_result result;
    const char *local_expl, *auth_expl; /* request arena; auth_expl NULL unless fail */
};

/* ---------------------------------------------------------------------------------------------
 * Start-up: whitelist, host name, limits
 */

/* One whitelist entry: ADDRESS, ADDRESS/LEN or IPv4/DOTTED-MASK (NetAddr::IP's usual forms). */
static int net_parse(const char *s, size_t len, struct net *n)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    if (pol_spf_ip_parse(s, alen, &n->ip) != 0)
        return -1;
    unsigned bits = n->ip.family == 4 ? 32u : 128u;
    bool mapped = n->ip.family == 4 && memchr(s, ':', alen) != NULL;
    n->prefix = bits;
    if (!slash)
        return 0;
    const char *m = slash + 1;
    size_t mlen = len - alen - 1;
    struct pol_spf_ip mask;
    if (n->ip.family == 4 && !mapped && memchr(m, '.', mlen) &&
        pol_spf_ip_parse(m, mlen, &mask) == 0 && mask.family == 4) {
        uint32_t v = ((uint32_t)mask.bytes[0] << 24) | ((uint32_t)mask.bytes[1] << 16) |
                     ((uint32_t)mask.bytes[2] << 8) | mask.bytes[3];
        unsigned ones = (unsigned)__builtin_popcount(v);
        if (ones != 32 && (v << ones) != 0)
            return -1; /* not a contiguous mask */
        n->prefix = ones;
        return 0;
    }
    if (mlen == 0 || mlen > 3)
        return -1;
    unsigned p = 0;
    for (size_t i = 0; i < mlen; i++) {
        if (m[i] < '0' || m[i] > '9')
            return -1;
        p = p * 10 + (unsigned)(m[i] - '0');
    }
    if (mapped) { /* ::ffff:a.b.c.d/LEN: the v4 part of an IPv6 prefix */
        if (p < 96 || p > 128)
            return -1;
        p -= 96;
    }
    if (p > bits)
        return -1;
    n->prefix = p;
    return 0;
}

/* 2.05 splits the option at /\s*[, ]\s* / (empty items are skipped here). */
static int whitelist_parse(struct spf_data *d, size_t cap, const char *s, char *err, size_t err_len)
{
    static const char *const loopback[] = {"127.0.0.0/8", "::ffff:127.0.0.0/104", "::1"};
    for (size_t i = 0; i < 3; i++) {
        int rc = net_parse(loopback[i], strlen(loopback[i]), &d->nets[d->net_count++]);
        ENG_ASSERT(rc == 0);
    }
    const char *p = s;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        size_t n = strcspn(p, ", \t\r\n");
        if (n == 0)
            break;
        if (d->net_count == cap) {
            snprintf(err, err_len, "whitelist: more than %u entries", WHITELIST_MAX);
            return -1;
        }
        if (net_parse(p, n, &d->nets[d->net_count]) != 0) {
            snprintf(err, err_len, "whitelist: '%.*s' is not an IP address or CIDR range", (int)n,
                     p);
            return -1;
        }
        d->net_count++;
        p += n;
    }
    return 0;
}

/* Mail::SPF's default host name for %{r}: the canonical name of the system's host name. */
static void default_hostname(char *out, size_t out_len)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
        snprintf(out, out_len, "%s", "");
        return;
    }
    struct addrinfo hints = {.ai_flags = AI_CANONNAME}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) == 0 && ai && ai->ai_canonname)
        snprintf(out, out_len, "%s", ai->ai_canonname);
    else
        snprintf(out, out_len, "%s", host);
    if (ai)
        freeaddrinfo(ai);
}

static uint32_t limit_of(const struct pol_plugin *p, unsigned idx)
{
    double v = pol_opt(p, idx)->num;
    if (!(v > 0))
        return 0;
    return v > 1e6 ? 1000000u : (uint32_t)v;
}

static void spf_destroy(struct pol_plugin *p)
{
    struct spf_data *d = pol_plugin_data(p);
    if (!d)
        return;
    free(d->score_flag);
    free(d);
}

static int spf_create(struct pol_plugin *p, char *err, size_t err_len)
{
    const char *wl = pol_opt(p, OPT_WHITELIST)->text;
    size_t cap = 3 + strlen(wl) / 2 + 1;
    if (cap > WHITELIST_MAX + 3)
        cap = WHITELIST_MAX + 3;
    struct spf_data *d = calloc(1, sizeof *d + cap * sizeof(struct net));
    if (!d || asprintf(&d->score_flag, "%s-score", pol_plugin_name(p)) < 0) {
        free(d);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, d);
    long long evals = pol_opt(p, OPT_MAX_EVALUATIONS)->i;
    if (whitelist_parse(d, cap, wl, err, err_len) != 0 ||
        ((evals < 1 || evals > EVALUATIONS_MAX) &&
         snprintf(err, err_len, "max_evaluations must be 1..%d", EVALUATIONS_MAX) > 0)) {
        /* destroy runs only for a created plugin */
        free(d->score_flag);
        free(d);
        pol_plugin_set_data(p, NULL);
        return -1;
    }
    const char *host = pol_opt(p, OPT_HOSTNAME)->text;
    if (host[0])
        snprintf(d->hostname, sizeof d->hostname, "%s", host);
    else
        default_hostname(d->hostname, sizeof d->hostname);
    d->lim.dns_terms_max = limit_of(p, OPT_MAX_TERMS);
    d->lim.names_per_term_max = limit_of(p, OPT_MAX_NAMES);
    d->lim.void_lookups_max = limit_of(p, OPT_MAX_VOIDS);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Shards: the DNS client and the evaluation slots
 */

static void spf_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    struct spf_shard *s = shard_data;
    if (!s)
        return;
    eng_log(ENG_LOG_INFO,
            "plugin %s: SPF shard counters: lookups=%llu refused=%llu txt_cut=%llu "
            "slots_exhausted=%llu pass=%llu fail=%llu softfail=%llu neutral=%llu none=%llu "
            "temperror=%llu permerror=%llu",
            pol_plugin_name(p), (unsigned long long)s->stats.lookups,
            (unsigned long long)s->stats.refused, (unsigned long long)s->stats.txt_cut,
            (unsigned long long)s->slots_exhausted, (unsigned long long)s->results[POL_SPF_PASS],
            (unsigned long long)s->results[POL_SPF_FAIL],
            (unsigned long long)s->results[POL_SPF_SOFTFAIL],
            (unsigned long long)s->results[POL_SPF_NEUTRAL],
            (unsigned long long)s->results[POL_SPF_NONE],
            (unsigned long long)s->results[POL_SPF_TEMPERROR],
            (unsigned long long)s->results[POL_SPF_PERMERROR]);
    pol_dns_detach(p, sh, s->dns); /* the last detach cancels what is still out */
    if (s->in_use > 0) { /* requests still hold slots: leak them rather than free in use */
        eng_log(ENG_LOG_WARNING, "plugin %s: %u SPF evaluations still running at shard stop",
                pol_plugin_name(p), s->in_use);
        return;
    }
    free(s->evals);
    free(s->slots);
    free(s);
}

static int spf_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                           size_t err_len)
{
    uint32_t n = (uint32_t)pol_opt(p, OPT_MAX_EVALUATIONS)->i;
    size_t eval_bytes = (pol_spf_eval_bytes() + 63) & ~(size_t)63;
    struct spf_shard *s = calloc(1, sizeof *s);
    if (s) {
        s->slots = calloc(n, sizeof *s->slots);
        s->evals = aligned_alloc(64, eval_bytes * n);
    }
    if (!s || !s->slots || !s->evals) {
        if (s) {
            free(s->slots);
            free(s->evals);
        }
        free(s);
        snprintf(err, err_len, "out of memory for %u SPF evaluations", n);
        return -1;
    }
    if (pol_dns_attach(p, sh, &s->dns, err, err_len) != 0) {
        free(s->slots);
        free(s->evals);
        free(s);
        return -1;
    }
    s->slot_count = n;
    for (uint32_t i = n; i-- > 0;) {
        struct spf_slot *sl = &s->slots[i];
        sl->eval = (struct pol_spf_eval *)(void *)(s->evals + (size_t)i * eval_bytes);
        pol_spf_eng_init(&sl->res, s->dns, &s->scratch, &s->stats);
        sl->shard = s;
        sl->next_free = s->free;
        s->free = sl;
    }
    *shard_data = s;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Outcomes (spec 13.22 step 4)
 */

static bool is(const char *s, size_t len, const char *lit)
{
    return s && len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static enum pol_step add_score(struct pol_plugin *p, struct pol_req *r, unsigned idx)
{
    const struct spf_data *d = pol_plugin_data(p);
    const struct pol_opt_value *v = pol_opt(p, idx);
    if (v->set && !pol_req_is_already_done(r, d->score_flag) &&
        pol_score_add(r, p, NULL, v->num, v->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    return POL_NEXT;
}

static enum pol_step reject_with(struct pol_plugin *p, struct pol_req *r, const struct spf_req *st)
{
    const struct pol_tvar vars[] = {{"LOCAL_EXPL", st->local_expl},
                                    {"AUTH_EXPL", st->auth_expl ? st->auth_expl : ""}};
    char *msg = pol_template_expand(r, pol_opt(p, OPT_REJECT_MESSAGE)->text, vars, 2);
    char *action = msg ? pol_req_printf(r, "reject %s", msg) : NULL;
    if (!action)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_result(r, action, strlen(action));
}

/* temperror and permerror: spec 16 #6, each mode for its own result. */
static enum pol_step error_outcome(struct pol_plugin *p, struct pol_req *r,
                                   const struct spf_req *st, const char *scope, unsigned mode_idx,
                                   unsigned score_idx, const char *dflt, bool *acted)
{
    const char *res = pol_spf_result_name(st->result);
    const char *expl = st->local_expl;
    pol_log(p, r, "SPF %s failed with %s %s", scope, res, expl);
    if (add_score(p, r, score_idx) == POL_FAIL)
        return POL_FAIL;
    const struct pol_opt_value *m = pol_opt(p, mode_idx);
    if (is(m->text, m->text_len, "passive"))
        return POL_NEXT;
    *acted = true;
    if (is(m->text, m->text_len, "dunno") || is(m->text, m->text_len, "accept"))
        return pol_builtin_result(r, "dunno", 5);
    const char *act = is(m->text, m->text_len, "defer")    ? "defer"
                      : is(m->text, m->text_len, "reject") ? "reject"
                                                           : dflt;
    char *action = pol_req_printf(r, "%s spf %s check failed: %s", act, scope, expl);
    if (!action)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_result(r, action, strlen(action));
}

/* The outcome of one check. *acted: an action was added (the HELO check then ends it all). */
static enum pol_step outcome(struct pol_plugin *p, struct pol_req *r, const struct spf_req *st,
                             bool helo, bool *acted)
{
    const char *scope = helo ? "helo" : "mfrom";
    const char *expl = st->local_expl;
    size_t len = 0;
    const char *mode;
    *acted = false;
    switch (st->result) {
    case POL_SPF_NEUTRAL:
        pol_log(p, r, "SPF %s status neutral. (no SPF records)", scope);
        return POL_NEXT;
    case POL_SPF_NONE:
        pol_log(p, r, "spf %s check failed: %s", scope, expl);
        return POL_NEXT;
    case POL_SPF_FAIL:
        pol_log(p, r, "SPF %s check failed: %s", scope, expl);
        if (add_score(p, r, OPT_FAIL_SCORE) == POL_FAIL)
            return POL_FAIL;
        mode = pol_uc(r, p, OPT_FAIL_MODE, &len);
        if (is(mode, len, "reject")) {
            *acted = true;
            return reject_with(p, r, st);
        }
        return POL_NEXT;
    case POL_SPF_SOFTFAIL:
        pol_log(p, r, "SPF %s check returned softfail %s", scope, expl);
        if (add_score(p, r, OPT_SOFTFAIL_SCORE) == POL_FAIL)
            return POL_FAIL;
        mode = pol_uc(r, p, OPT_SOFTFAIL_MODE, &len);
        if (is(mode, len, "reject")) {
            *acted = true;
            return reject_with(p, r, st);
        }
        if (is(mode, len, "accept") || is(mode, len, "dunno")) {
            *acted = true;
            return pol_builtin_result(r, "dunno", 5);
        }
        return POL_NEXT;
    case POL_SPF_PASS:
        pol_log(p, r, "SPF %s check passed", scope);
        if (helo)
            return POL_NEXT;
        if (add_score(p, r, OPT_PASS_SCORE) == POL_FAIL)
            return POL_FAIL;
        mode = pol_uc(r, p, OPT_PASS_MODE, &len);
        if (is(mode, len, "accept") || is(mode, len, "dunno")) {
            *acted = true;
            return pol_builtin_result(r, "dunno", 5);
        }
        return POL_NEXT;
    case POL_SPF_TEMPERROR:
        return error_outcome(p, r, st, scope, OPT_TEMPERROR_MODE, OPT_TEMPERROR_SCORE, "defer",
                             acted);
    case POL_SPF_PERMERROR:
        return error_outcome(p, r, st, scope, OPT_PERMERROR_MODE, OPT_PERMERROR_SCORE, "reject",
                             acted);
    }
    ENG_ASSERT(!"unknown SPF result");
    return POL_NEXT;
}

/* ---------------------------------------------------------------------------------------------
 * Evaluations
 */

static void slot_put(struct spf_shard *s, struct spf_slot *sl)
{
    sl->r = NULL;
    sl->st = NULL;
    sl->next_free = s->free;
    s->free = sl;
    s->in_use--;
}

/* The evaluation in st's slot is done: copy its outcome into the request and give the slot
 * back (so a request that timed out meanwhile, whose step is not called again, holds none). */
static void take_result(struct pol_req *r, struct spf_req *st)
{
    struct spf_slot *sl = st->slot;
    const struct pol_spf_eval *e = sl->eval;
    const char *auth = pol_spf_eval_auth_expl(e);
    st->result = pol_spf_eval_result(e);
    st->local_expl =
        pol_req_strndup(r, pol_spf_eval_local_expl(e), strlen(pol_spf_eval_local_expl(e)));
    st->auth_expl = auth ? pol_req_strndup(r, auth, strlen(auth)) : NULL;
    st->result_oom = !st->local_expl || (auth && !st->auth_expl);
    st->have_result = true;
    sl->shard->results[st->result]++;
    slot_put(sl->shard, sl);
    st->slot = NULL;
}

static void eval_done(void *ctx, struct pol_spf_eval *e)
{
    (void)e;
    struct spf_slot *sl = ctx;
    struct pol_req *r = sl->r;
    take_result(r, sl->st);
    pol_req_resume(r);
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f')
            return false;
    return true;
}

/* Starts the check of st->rq. POL_WAIT, or POL_NEXT when it finished at once (the result is
 * in the slot), or POL_FAIL. */
static enum pol_step eval_start(struct pol_plugin *p, struct pol_req *r, struct spf_req *st)
{
    struct spf_shard *s = pol_plugin_shard_data(p, r);
    const struct spf_data *d = pol_plugin_data(p);
    if (!s || !s->dns)
        return pol_req_fail(r, "no DNS resolver on this shard");
    if (!st->slot) {
        if (!s->free) {
            s->slots_exhausted++;
            return pol_req_fail(r,
                                "all %u SPF evaluation slots of this shard are in use "
                                "(max_evaluations)",
                                s->slot_count);
        }
        st->slot = s->free;
        s->free = st->slot->next_free;
        s->in_use++;
    }
    st->slot->r = r;
    st->slot->st = st;
    st->have_result = false;
    struct pol_spf_resolver res = pol_spf_eng_resolver(&st->slot->res);
    if (pol_spf_eval_start(st->slot->eval, &res, &d->lim, &st->rq, eval_done, st->slot) ==
        POL_SPF_EVAL_WAIT)
        return POL_WAIT;
    take_result(r, st);
    return POL_NEXT;
}

/* Sets up st->rq for a check and starts it. */
static enum pol_step check_start(struct pol_plugin *p, struct pol_req *r, struct spf_req *st,
                                 bool helo)
{
    const struct spf_data *d = pol_plugin_data(p);
    const char *h = pol_req_attr(r, "helo_name", NULL);
    memset(&st->rq, 0, sizeof st->rq);
    st->rq.scope = helo ? POL_SPF_SCOPE_HELO : POL_SPF_SCOPE_MFROM;
    st->rq.identity = helo ? h : st->sender;
    st->rq.ip = pol_req_attr(r, "client_address", NULL);
    st->rq.helo = h;
    st->rq.receiver = d->hostname;
    st->rq.default_expl = pol_opt(p, OPT_DEFAULT_EXPL)->text;
    st->rq.now_s = (int64_t)time(NULL);
    st->phase = helo ? PH_HELO : PH_MFROM;
    return eval_start(p, r, st);
}

/* The check st->phase names finished: act on its outcome. */
static enum pol_step check_end(struct pol_plugin *p, struct pol_req *r, struct spf_req *st,
                               bool *acted)
{
    st->have_result = false;
    if (st->result_oom)
        return pol_req_fail(r, "no memory left in the request arena for the SPF result");
    return outcome(p, r, st, st->phase == PH_HELO, acted);
}

/* After the HELO check without an action: the MAIL FROM check, if there is a sender. */
static enum pol_step mfrom_start(struct pol_plugin *p, struct pol_req *r, struct spf_req *st,
                                 bool helo_checked)
{
    size_t len = 0;
    const char *sender = pol_req_attr(r, "sender", &len);
    if (helo_checked && (!sender || blank(sender, len))) {
        const char *h = pol_req_attr(r, "helo_name", NULL);
        sender = pol_req_printf(r, "postmaster@%s", h);
        if (!sender)
            return pol_req_fail(r, "no memory left in the request arena for the sender");
        pol_log(p, r, "null sender, building sender from HELO: %s", sender);
    } else if (!sender || len == 0) {
        /* spec 16 #7: 2.05 failed on a null sender here; we skip */
        pol_log(p, r, "skipping SPF check because of null sender, consider setting check_helo=on");
        return POL_NEXT;
    }
    st->sender = sender;
    return check_start(p, r, st, false);
}

static enum pol_step spf_begin(struct pol_plugin *p, struct pol_req *r, struct spf_req *st)
{
    const struct spf_data *d = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    size_t len = 0;
    const char *ip = pol_req_attr(r, "client_address", &len);
    if (!ip || blank(ip, len)) {
        pol_log(p, r, "cant check SPF without client_address");
        return POL_NEXT;
    }
    struct pol_spf_ip a;
    if (pol_spf_ip_parse(ip, len, &a) != 0)
        return pol_req_fail(r, "Invalid IP address '%s'", ip);
    for (size_t i = 0; i < d->net_count; i++) {
        if (d->nets[i].ip.family == a.family &&
            pol_spf_ip_in(&a, d->nets[i].ip.bytes, d->nets[i].prefix)) {
            pol_log(p, r, "skipping SPF checks for local or whitelisted ip");
            return POL_NEXT;
        }
    }
    const char *h = pol_req_attr(r, "helo_name", &len);
    if (h && !blank(h, len) && !pol_builtin_opt_is(p, OPT_CHECK_HELO, "off"))
        return check_start(p, r, st, true);
    return mfrom_start(p, r, st, false);
}

static enum pol_step spf_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct spf_req *st = req_state;
    enum pol_step rc = st->phase == PH_START ? spf_begin(p, r, st) : POL_NEXT;
    /* a check finished (at once or after POL_WAIT): act on it, maybe start the next */
    while (rc == POL_NEXT && st->have_result) {
        bool helo = st->phase == PH_HELO, acted = false;
        rc = check_end(p, r, st, &acted);
        if (rc != POL_NEXT || !helo || acted)
            break;
        rc = mfrom_start(p, r, st, true);
    }
    ENG_ASSERT(rc == POL_WAIT || st->slot == NULL);
    return rc;
}

const struct pol_plugin_type pol_type_SPF = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SPF",
    .opts = spf_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct spf_req),
    .create = spf_create,
    .shard_start = spf_shard_start,
    .shard_stop = spf_shard_stop,
    .step = spf_step,
    .destroy = spf_destroy,
};
