/*
 * honeypot.c: the Honeypot plugin (spec 13.13, section 16 #5): trap clients that write to
 * unused addresses, with the trap store in memcached as 2.05 intended (2.05 itself fails every
 * request: it uses a memcached handle removed in 2.0).
 *
 * A client is trapped when its address is in the store (memcached key `NAME,CLIENT_ADDRESS`,
 * value "1"; a missing client_address gives `NAME,` as Perl's join does) or when the recipient
 * is a trap address: exactly one of `recipients` or matched by one of `recipients_re` (both
 * comma lists, as 2.05 splits them); then the address is stored with lifetime `expire` and the
 * step waits for the store, so the client's next request, on any shard or host, finds it. For
 * a trapped client: `mode = reject` answers `reject MESSAGE` (no score); otherwise the score is
 * added once per mail (flag `NAME-score`) and the sub-chain's results are returned, or nothing.
 *
 * Which memcached: the <Connection> named by `memcached` (ringpolicyd's own option, default
 * "memcached", like the session cache's); its namespace is prepended. When memcached cannot be
 * reached, the store counts as empty (logged at level 2) and the recipient check still works,
 * so trap addresses are rejected even while memcached is down.
 *
 * Owns its compiled recipient patterns (create .. destroy, main thread). Per request: a step
 * that reads the store (POL_WAIT), one that writes it when the recipient is a trap (POL_WAIT),
 * then the verdict, and the sub-chain step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>
#include <pol/mc.h>

#include "plugins/common.h"
#include "regex.h"

enum {
    OPT_ENABLED,
    OPT_SCORE,
    OPT_MODE,
    OPT_RECIPIENTS,
    OPT_RECIPIENTS_RE,
    OPT_REJECT_MESSAGE,
    OPT_EXPIRE,
    OPT_MEMCACHED,
    OPT_COUNT,
};

static const struct pol_opt_def honeypot_opts[] = {
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "reject", 0},
    [OPT_RECIPIENTS] = {"recipients", POL_OPT_LIST, "", 0},
    [OPT_RECIPIENTS_RE] = {"recipients_re", POL_OPT_LIST, "", 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_STRING, "trapped by honeypod", 0},
    [OPT_EXPIRE] = {"expire", POL_OPT_INT, "7200", 0},
    [OPT_MEMCACHED] = {"memcached", POL_OPT_STRING, "memcached", 0},
};
_Static_assert(sizeof honeypot_opts / sizeof honeypot_opts[0] == OPT_COUNT, "one def per option");

struct honeypot {
    struct pol_mc *mc;
    struct pol_regex **re;
    size_t re_count;
    char *score_flag; /* NAME-score */
    char *reject;     /* "reject MESSAGE" */
    uint32_t expire_s;
};

enum hp_phase { HP_START, HP_GETTING, HP_GOT, HP_SETTING, HP_SET, HP_SUBCHAIN };

struct hp_req {
    struct pol_req *r;
    struct pol_plugin *p;
    enum hp_phase phase;
    enum pol_mc_status st;
    bool in_store;
    const char *key;
    size_t key_len;
};

static void honeypot_destroy(struct pol_plugin *p)
{
    struct honeypot *h = pol_plugin_data(p);
    if (!h)
        return;
    for (size_t i = 0; i < h->re_count; i++)
        pol_regex_free(h->re[i]);
    free(h->re);
    free(h->score_flag);
    free(h->reject);
    free(h);
    pol_plugin_set_data(p, NULL);
}

static int honeypot_create(struct pol_plugin *p, char *err, size_t err_len)
{
    struct honeypot *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, h);
    long long expire = pol_opt(p, OPT_EXPIRE)->i;
    if (expire < 0 || expire > UINT32_MAX) {
        snprintf(err, err_len, "expire must be from 0 to %u seconds", UINT32_MAX);
        return -1;
    }
    h->expire_s = (uint32_t)expire;
    const struct pol_list *res = &pol_opt(p, OPT_RECIPIENTS_RE)->list;
    h->re = calloc(res->count ? res->count : 1, sizeof(*h->re));
    if (!h->re || asprintf(&h->score_flag, "%s-score", pol_plugin_name(p)) < 0 ||
        asprintf(&h->reject, "reject %s", pol_opt(p, OPT_REJECT_MESSAGE)->text) < 0) {
        h->score_flag = h->reject = NULL;
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < res->count; i++) {
        char why[512];
        if (!(h->re[i] = pol_regex_compile(res->items[i], why, sizeof(why)))) {
            snprintf(err, err_len, "recipients_re: %s", why);
            return -1;
        }
        h->re_count++;
    }
    const char *conn = pol_opt(p, OPT_MEMCACHED)->text;
    char why[256] = "";
    if (!(h->mc = pol_mc_lookup(p, conn, why, sizeof(why)))) {
        snprintf(err, err_len,
                 "%s (Honeypot keeps its trapped clients in memcached: add a "
                 "<Connection %s> block with module = \"Memcached\")",
                 why, conn);
        return -1;
    }
    return 0;
}

static bool is_trap_recipient(const struct pol_plugin *p, const struct honeypot *h,
                              const char *rcpt, size_t len)
{
    const struct pol_list *l = &pol_opt(p, OPT_RECIPIENTS)->list;
    for (size_t i = 0; i < l->count; i++)
        if (strlen(l->items[i]) == len && memcmp(l->items[i], rcpt, len) == 0)
            return true;
    for (size_t i = 0; i < h->re_count; i++)
        if (pol_regex_match(h->re[i], rcpt, len))
            return true;
    return false;
}

static void mc_done(void *ctx, enum pol_mc_status st, const char *v, size_t len)
{
    struct hp_req *s = ctx;
    s->st = st;
    if (s->phase == HP_GETTING) {
        /* Perl: `if (my $ticket = get(...))`: a value that is true in Perl. */
        s->in_store = st == POL_MC_OK && len > 0 && !(len == 1 && v[0] == '0');
        s->phase = HP_GOT;
    } else {
        ENG_ASSERT(s->phase == HP_SETTING);
        s->phase = HP_SET;
    }
    pol_req_resume(s->r);
}

static enum pol_step wait_or_go_on(struct pol_plugin *p, struct pol_req *r, struct hp_req *s,
                                   int rc, enum hp_phase on_error)
{
    if (rc == 0)
        return POL_WAIT;
    pol_log_at(2, p, r, "memcached: cannot queue an operation: %s", strerror(-rc));
    s->st = POL_MC_ERROR;
    s->phase = on_error;
    return POL_NEXT; /* the caller goes on synchronously */
}

/* The verdict for a trapped client. */
static enum pol_step trapped(struct pol_plugin *p, struct pol_req *r, struct hp_req *s,
                             const struct honeypot *h)
{
    if (pol_builtin_opt_is(p, OPT_MODE, "reject"))
        return pol_builtin_result(r, h->reject, strlen(h->reject));
    const struct pol_opt_value *score = pol_opt(p, OPT_SCORE);
    if (score->set && !pol_req_is_already_done(r, h->score_flag) &&
        pol_score_add(r, p, NULL, score->num, score->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    if (!pol_plugin_has_subchain(p))
        return POL_NEXT;
    s->phase = HP_SUBCHAIN;
    return POL_SUBCHAIN;
}

static enum pol_step honeypot_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct hp_req *s = req_state;
    struct honeypot *h = pol_plugin_data(p);
    struct eng_shard *sh = pol_req_shard(r);
    switch (s->phase) {
    case HP_START: {
        if (!pol_uc_enabled(r, p, OPT_ENABLED))
            return POL_NEXT;
        size_t ip_len = 0;
        const char *ip = pol_req_attr(r, "client_address", &ip_len);
        char *key = pol_req_printf(r, "%s,%.*s", pol_plugin_name(p), (int)ip_len, ip ? ip : "");
        if (!key)
            return pol_req_fail(r, "no memory left in the request arena for the key");
        s->r = r;
        s->p = p;
        s->key = key;
        s->key_len = strlen(key);
        s->phase = HP_GETTING;
        if (wait_or_go_on(p, r, s, pol_mc_get(sh, h->mc, s->key, s->key_len, 0, mc_done, s),
                          HP_GOT) == POL_WAIT)
            return POL_WAIT;
        __attribute__((fallthrough)); /* the operation could not be queued */
    }
    case HP_GOT: {
        if (s->st != POL_MC_OK && s->st != POL_MC_NOT_FOUND)
            pol_log_at(2, p, r, "memcached: cannot read %s: %s", s->key, pol_mc_status_text(s->st));
        if (s->in_store) {
            pol_log(p, r, "client %s is trapped", s->key + strlen(pol_plugin_name(p)) + 1);
            return trapped(p, r, s, h);
        }
        size_t rl = 0;
        const char *rcpt = pol_req_attr(r, "recipient", &rl);
        if (!is_trap_recipient(p, h, rcpt ? rcpt : "", rcpt ? rl : 0))
            return POL_NEXT;
        s->phase = HP_SETTING;
        if (wait_or_go_on(
                p, r, s,
                pol_mc_set(sh, h->mc, s->key, s->key_len, "1", 1, h->expire_s, 0, mc_done, s),
                HP_SET) == POL_WAIT)
            return POL_WAIT;
        __attribute__((fallthrough));
    }
    case HP_SET:
        if (s->st != POL_MC_OK)
            pol_log_at(2, p, r, "memcached: cannot store %s: %s", s->key,
                       pol_mc_status_text(s->st));
        pol_log(p, r, "client %s wrote to a trap address: trapped for %u s",
                s->key + strlen(pol_plugin_name(p)) + 1, h->expire_s);
        return trapped(p, r, s, h);
    case HP_SUBCHAIN:
        pol_req_adopt_subchain(r);
        return POL_NEXT;
    case HP_GETTING:
    case HP_SETTING:
        break;
    }
    ENG_ASSERT(!"Honeypot step while an operation is out");
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_Honeypot = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Honeypot",
    .opts = honeypot_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING | POL_TYPE_CHAIN,
    .req_state_bytes = sizeof(struct hp_req),
    .create = honeypot_create,
    .step = honeypot_step,
    .destroy = honeypot_destroy,
};
