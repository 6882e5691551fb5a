/*
 * rbl.c: the RBL plugin (spec 13.18): the client address in a DNS blocklist. A dotted IPv4
 * client_address A.B.C.D is looked up as D.C.B.A.DOMAIN (spec 12.9, pol_dns_list_lookup) and
 * the outcome cached per mail under `rbl-NAME-result`, where RBLAction finds it. Listed: the
 * score once per mail (flag `rbl-NAME-score`), then by mode: `reject` answers
 * `reject MESSAGE` (%IP% and %INFO% = "(INFO)" or nothing), `accept` answers `dunno`, anything
 * else only scores. `enabled` and `mode` are user-configurable.
 *
 * IPv6 clients are never listed, as in 2.05 (Mail::RBL only reverses dotted quads), unless the
 * ringpolicyd option `ipv6 = 1` is set: then an IPv6 client_address is looked up by its 32
 * nibbles in reverse (RFC 5782 section 2.4), e.g. 2001:db8::1 as
 * 1.0.0.0.[...].8.b.d.0.1.0.0.2.DOMAIN. Any other value (a host name, "unknown") is never
 * looked up and counts as not listed; 2.05 resolved a host name with gethostbyname and
 * checked its addresses, which Postfix never gives it reason to do.
 *
 * Owns per plugin its two session keys (create .. destroy, main thread); per shard it uses the
 * shard's DNS client (pol_dns_shard_start). A step waits (POL_WAIT) while a lookup is out.
 */
#include <arpa/inet.h>
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
    OPT_MODE,
    OPT_SCORE,
    OPT_REJECT_MESSAGE,
    OPT_IPV6,
    OPT_COUNT,
};

static const struct pol_opt_def rbl_opts[] = {
    [OPT_DOMAIN] = {"domain", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "delivery from %IP% rejected %INFO%", 0},
    [OPT_IPV6] = {"ipv6", POL_OPT_BOOL, "0", 0},
};
_Static_assert(sizeof rbl_opts / sizeof rbl_opts[0] == OPT_COUNT, "one def per option");

struct rbl_req {
    struct pol_dns_list lookup;
    const char *name; /* the name being looked up (request arena) */
    size_t name_len;
};

int pol_rbl_keys_create(struct pol_plugin *p, const char *result_of, char *err, size_t err_len)
{
    struct pol_rbl_keys *k = calloc(1, sizeof(*k));
    if (!k || asprintf(&k->result, "rbl-%s-result", result_of) < 0 ||
        asprintf(&k->score, "rbl-%s-score", pol_plugin_name(p)) < 0) {
        if (k)
            free(k->result);
        free(k);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    pol_plugin_set_data(p, k);
    return 0;
}

void pol_rbl_keys_destroy(struct pol_plugin *p)
{
    struct pol_rbl_keys *k = pol_plugin_data(p);
    if (!k)
        return;
    free(k->result);
    free(k->score);
    free(k);
}

bool pol_rbl_dotted_quad(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start || (part < 3 && (i == len || s[i++] != '.')))
            return false;
    }
    return i == len;
}

static int rbl_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return pol_rbl_keys_create(p, pol_plugin_name(p), err, err_len);
}

/* The name to look up for the client address, in the request arena; NULL when the address is
 * not looked up (not listed). *fail is set when the arena is full. */
static char *query_name(struct pol_plugin *p, struct pol_req *r, const char *ip, size_t len,
                        bool *fail)
{
    const char *domain = pol_opt(p, OPT_DOMAIN)->text;
    char *name = NULL;
    *fail = false;
    if (pol_rbl_dotted_quad(ip, len)) {
        /* Mail::RBL: join('.', reverse split(/\./, $host)), the parts as written */
        const char *d1 = memchr(ip, '.', len);
        const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - ip));
        const char *d3 = memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - ip));
        name = pol_req_printf(r, "%.*s.%.*s.%.*s.%.*s.%s", (int)(len - (size_t)(d3 + 1 - ip)),
                              d3 + 1, (int)(d3 - d2 - 1), d2 + 1, (int)(d2 - d1 - 1), d1 + 1,
                              (int)(d1 - ip), ip, domain);
        *fail = name == NULL;
        return name;
    }
    struct in6_addr a6;
    char text[INET6_ADDRSTRLEN + 1];
    if (!pol_opt(p, OPT_IPV6)->b || len >= sizeof(text))
        return NULL;
    memcpy(text, ip, len);
    text[len] = '\0';
    if (inet_pton(AF_INET6, text, &a6) != 1)
        return NULL;
    size_t cap = 64 + strlen(domain) + 1;
    name = pol_req_alloc(r, cap);
    if (!name) {
        *fail = true;
        return NULL;
    }
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 15; i >= 0; i--) {
        name[o++] = hex[a6.s6_addr[i] & 0x0F];
        name[o++] = '.';
        name[o++] = hex[a6.s6_addr[i] >> 4];
        name[o++] = '.';
    }
    snprintf(name + o, cap - o, "%s", domain);
    return name;
}

/* The result, from the session or by a lookup. POL_NEXT with *res set, or POL_WAIT/FAIL. */
static enum pol_step rbl_result(struct pol_plugin *p, struct pol_req *r, struct rbl_req *st,
                                const char *key, struct pol_dns_list_result *res)
{
    if (st->name) /* resumed: the lookup finished */
        return pol_dns_list_lookup(p, r, &st->lookup, key, st->name, st->name_len, res);
    if (pol_dns_list_cached(r, key, res))
        return POL_NEXT;
    size_t len = 0;
    const char *ip = pol_req_attr(r, "client_address", &len);
    if (!ip || len == 0)
        return pol_req_fail(r, "Must call ->check() with a host to check");
    bool fail;
    char *name = query_name(p, r, ip, len, &fail);
    if (fail)
        return pol_req_fail(r, "no memory left in the request arena for the DNS name");
    if (!name) { /* Mail::RBL checks nothing: cached as not listed */
        memset(res, 0, sizeof(*res));
        if (pol_session_set(r, key, "", 0) != 0)
            return pol_req_fail(r, "cannot store session key %s: out of memory", key);
        return POL_NEXT;
    }
    st->name = name;
    st->name_len = strlen(name);
    return pol_dns_list_lookup(p, r, &st->lookup, key, st->name, st->name_len, res);
}

enum pol_step pol_rbl_verdict(struct pol_plugin *p, struct pol_req *r,
                              const struct pol_dns_list_result *res, unsigned mode_idx,
                              unsigned score_idx, unsigned msg_idx, const char *score_flag)
{
    ENG_ASSERT(res->listed);
    const struct pol_opt_value *score = pol_opt(p, score_idx);
    if (score->set && !pol_req_is_already_done(r, score_flag) &&
        pol_score_add(r, p, NULL, score->num, score->text) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    size_t mode_len = 0;
    const char *mode = pol_uc(r, p, mode_idx, &mode_len);
    if (mode && mode_len == 6 && memcmp(mode, "accept", 6) == 0)
        return pol_builtin_result(r, "dunno", 5);
    if (!mode || mode_len != 6 || memcmp(mode, "reject", 6) != 0)
        return POL_NEXT;
    const char *ip = pol_req_attr(r, "client_address", NULL);
    const char *info = NULL;
    if (res->info && res->info_len > 0) {
        info = pol_req_printf(r, "(%s)", res->info);
        if (!info)
            return pol_req_fail(r, "no memory left in the request arena for the action");
    }
    const char *tmpl = pol_req_printf(r, "reject %s", pol_opt(p, msg_idx)->text);
    const struct pol_tvar vars[] = {{"IP", ip}, {"INFO", info}};
    char *action = tmpl ? pol_dns_reply_expand(r, tmpl, vars, 2, 1) : NULL;
    if (!action)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_result(r, action, strlen(action));
}

static enum pol_step rbl_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct rbl_req *st = req_state;
    struct pol_rbl_keys *k = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    struct pol_dns_list_result res;
    enum pol_step s = rbl_result(p, r, st, k->result, &res);
    if (s != POL_NEXT)
        return s;
    const char *ip = pol_req_attr(r, "client_address", NULL);
    const char *domain = pol_opt(p, OPT_DOMAIN)->text;
    if (!res.listed) {
        pol_log(p, r, "ip %s not on %s blacklist", ip ? ip : "", domain);
        return POL_NEXT;
    }
    pol_log(p, r, "ip %s on %s blacklist%s%s%s", ip ? ip : "", domain, res.info ? " (" : "",
            res.info ? res.info : "", res.info ? ")" : "");
    return pol_rbl_verdict(p, r, &res, OPT_MODE, OPT_SCORE, OPT_REJECT_MESSAGE, k->score);
}

const struct pol_plugin_type pol_type_RBL = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "RBL",
    .opts = rbl_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct rbl_req),
    .create = rbl_create,
    .shard_start = pol_dns_shard_start,
    .shard_stop = pol_dns_shard_stop,
    .step = rbl_step,
    .destroy = pol_rbl_keys_destroy,
};
