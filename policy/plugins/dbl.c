/*
 * dbl.c: the DBL plugin (spec 13.7): the sender domain, the reverse client name and the HELO
 * name in a domain blocklist. The three checks run in that order, one lookup at a time, as in
 * 2.05; for each:
 *   1. the request attribute of the check's name must be present (else the plugin fails:
 *      "CHECK not defined in request!");
 *   2. it is skipped when `unknown`, empty, a dotted quad, holding ':' or holding no '.'
 *      (tested on the raw value); for `sender` everything up to the first '@' then goes;
 *   3. HOSTNAME.DOMAIN is looked up (spec 12.9), cached per mail under `NAME-CHECK-result`;
 *   4. listed: the check's score once per mail (flag `NAME-CHECK-score`, label `NAME-CHECK`),
 *      then if the check's mode is `reject` the answer is `reject ` + reject_message with
 *      %CHECK%, %HOSTNAME% and %INFO% (", INFO" when a TXT record came, else nothing) and the
 *      remaining checks do not run. Other modes go on to the next check.
 * `enabled` and the three modes are user-configurable; the scores are not.
 *
 * Owns its per-check session keys (create .. destroy, main thread); per shard it uses the
 * shard's DNS client. A step waits (POL_WAIT) while a lookup is out and resumes at the same
 * check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>
#include <pol/dns.h>

#include "plugins/common.h"
#include "plugins/rbl.h"

enum {
    OPT_DOMAIN,
    OPT_ENABLED,
    OPT_SENDER_MODE,
    OPT_SENDER_SCORE,
    OPT_RCN_MODE,
    OPT_RCN_SCORE,
    OPT_HELO_MODE,
    OPT_HELO_SCORE,
    OPT_REJECT_MESSAGE,
    OPT_COUNT,
};

static const struct pol_opt_def dbl_opts[] = {
    [OPT_DOMAIN] = {"domain", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_SENDER_MODE] = {"sender_mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_SENDER_SCORE] = {"sender_score", POL_OPT_NUMBER, "5", 0},
    [OPT_RCN_MODE] = {"reverse_client_name_mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_RCN_SCORE] = {"reverse_client_name_score", POL_OPT_NUMBER, "2.5", 0},
    [OPT_HELO_MODE] = {"helo_name_mode", POL_OPT_STRING, "passive", POL_OPT_UC},
    [OPT_HELO_SCORE] = {"helo_name_score", POL_OPT_NUMBER, "1", 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "%CHECK% rejected (%HOSTNAME%%INFO%)", 0},
};
_Static_assert(sizeof dbl_opts / sizeof dbl_opts[0] == OPT_COUNT, "one def per option");

#define DBL_CHECKS 3

static const struct {
    const char *name;
    unsigned mode_idx, score_idx;
} dbl_checks[DBL_CHECKS] = {
    {"sender", OPT_SENDER_MODE, OPT_SENDER_SCORE},
    {"reverse_client_name", OPT_RCN_MODE, OPT_RCN_SCORE},
    {"helo_name", OPT_HELO_MODE, OPT_HELO_SCORE},
};

/* Plugin data: per check its session keys and score label. */
struct dbl_keys {
    char *result[DBL_CHECKS]; /* NAME-CHECK-result */
    char *score[DBL_CHECKS];  /* NAME-CHECK-score */
    char *label[DBL_CHECKS];  /* NAME-CHECK */
};

struct dbl_req {
    struct pol_dns_list lookup;
    uint32_t check;       /* the check being done */
    const char *host;     /* its host name (request value or arena) */
    const char *qname;    /* HOST.DOMAIN while its lookup is out, else NULL */
    size_t qname_len;
};

static void keys_free(struct dbl_keys *k)
{
    if (!k)
        return;
    for (int i = 0; i < DBL_CHECKS; i++) {
        free(k->result[i]);
        free(k->score[i]);
        free(k->label[i]);
    }
    free(k);
}

static int dbl_create(struct pol_plugin *p, char *err, size_t err_len)
{
    struct dbl_keys *k = calloc(1, sizeof(*k));
    const char *name = pol_plugin_name(p);
    for (int i = 0; k && i < DBL_CHECKS; i++) {
        const char *c = dbl_checks[i].name;
        if (asprintf(&k->result[i], "%s-%s-result", name, c) < 0 ||
            asprintf(&k->score[i], "%s-%s-score", name, c) < 0 ||
            asprintf(&k->label[i], "%s-%s", name, c) < 0) {
            keys_free(k);
            k = NULL;
        }
    }
    if (!k) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, k);
    return 0;
}

static void dbl_destroy(struct pol_plugin *p)
{
    keys_free(pol_plugin_data(p));
}

/* DBL::_get_hostname: the name to check, or NULL to skip. *len is its length. */
static const char *check_host(const char *v, size_t len, bool sender, size_t *host_len)
{
    if (len == 0 || (len == 7 && memcmp(v, "unknown", 7) == 0) || pol_rbl_dotted_quad(v, len) ||
        memchr(v, ':', len) || !memchr(v, '.', len))
        return NULL;
    if (sender) { /* s/^[^@]*@// */
        const char *at = memchr(v, '@', len);
        if (at) {
            len -= (size_t)(at + 1 - v);
            v = at + 1;
        }
    }
    *host_len = len;
    return v;
}

/* A listed name: score once, then reject (*rejected set) or go on. */
static enum pol_step listed(struct pol_plugin *p, struct pol_req *r, struct dbl_keys *k,
                            uint32_t c, const char *host, const struct pol_dns_list_result *res,
                            bool *rejected)
{
    *rejected = false;
    const struct pol_opt_value *score = pol_opt(p, dbl_checks[c].score_idx);
    if (score->set && !pol_req_is_already_done(r, k->score[c]) &&
        pol_score_add(r, p, k->label[c], score->num, score->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    size_t mode_len = 0;
    const char *mode = pol_uc(r, p, dbl_checks[c].mode_idx, &mode_len);
    if (!mode || mode_len != 6 || memcmp(mode, "reject", 6) != 0)
        return POL_NEXT;
    const char *info = NULL;
    if (res->info && !(info = pol_req_printf(r, ", %s", res->info)))
        return pol_req_fail(r, "no memory left in the request arena for the action");
    const char *tmpl = pol_req_printf(r, "reject %s", pol_opt(p, OPT_REJECT_MESSAGE)->text);
    const struct pol_tvar vars[] = {
        {"CHECK", dbl_checks[c].name}, {"HOSTNAME", host}, {"INFO", info}};
    char *action = tmpl ? pol_dns_reply_expand(r, tmpl, vars, 3, 2) : NULL;
    if (!action)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    *rejected = true;
    return pol_builtin_result(r, action, strlen(action));
}

/* Check c from its start: POL_NEXT with *res when its result is known (cached or skipped:
 * *host NULL), else POL_WAIT / POL_FAIL. */
static enum pol_step check_begin(struct pol_plugin *p, struct pol_req *r, struct dbl_req *st,
                                 struct dbl_keys *k, struct pol_dns_list_result *res)
{
    const char *field = dbl_checks[st->check].name;
    size_t len = 0, host_len = 0;
    const char *v = pol_req_attr(r, field, &len);
    if (!v)
        return pol_req_fail(r, "%s not defined in request!", field);
    const char *host = check_host(v, len, st->check == 0, &host_len);
    st->host = NULL;
    if (!host)
        return POL_NEXT;
    if (!(st->host = pol_req_strndup(r, host, host_len)))
        return pol_req_fail(r, "no memory left in the request arena");
    if (pol_dns_list_cached(r, k->result[st->check], res))
        return POL_NEXT;
    if (host_len == 0) /* "user@": Mail::RBL croaks */
        return pol_req_fail(r, "Must call ->check_rhsbl() with a host to check");
    const char *qname = pol_req_printf(r, "%s.%s", st->host, pol_opt(p, OPT_DOMAIN)->text);
    if (!qname)
        return pol_req_fail(r, "no memory left in the request arena for the DNS name");
    st->qname = qname;
    st->qname_len = strlen(qname);
    return pol_dns_list_lookup(p, r, &st->lookup, k->result[st->check], st->qname,
                               st->qname_len, res);
}

static enum pol_step dbl_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct dbl_req *st = req_state;
    struct dbl_keys *k = pol_plugin_data(p);
    if (!st->qname && st->check == 0 && !pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    const char *domain = pol_opt(p, OPT_DOMAIN)->text;
    for (; st->check < DBL_CHECKS; st->check++) {
        struct pol_dns_list_result res;
        enum pol_step s = st->qname ? pol_dns_list_lookup(p, r, &st->lookup, k->result[st->check],
                                                          st->qname, st->qname_len, &res)
                                    : check_begin(p, r, st, k, &res);
        if (s != POL_NEXT)
            return s;
        st->qname = NULL;
        if (!st->host)
            continue; /* skipped */
        if (!res.listed) {
            pol_log(p, r, "domain %s not on %s blacklist", st->host, domain);
            continue;
        }
        pol_log(p, r, "domain %s is on %s blacklist%s%s%s", st->host, domain,
                res.info ? " (" : "", res.info ? res.info : "", res.info ? ")" : "");
        bool rejected;
        s = listed(p, r, k, st->check, st->host, &res, &rejected);
        if (s != POL_NEXT || rejected)
            return s;
    }
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_DBL = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "DBL",
    .opts = dbl_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct dbl_req),
    .create = dbl_create,
    .shard_start = pol_dns_shard_start,
    .shard_stop = pol_dns_shard_stop,
    .step = dbl_step,
    .destroy = dbl_destroy,
};
