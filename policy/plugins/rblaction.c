/*
 * rblaction.c: the RBLAction plugin (spec 13.19): classifies the answer an RBL plugin cached
 * for this mail (session key `rbl-RESULT_FROM-result`, pol_dns_list_cached). No result (that
 * RBL has not run for this mail): nothing, logged. Not listed: nothing. Listed and the answer
 * address (dotted quad) matches `re_match`: the score once per mail (flag `rbl-NAME-score`),
 * then the mode as RBL's (pol_rbl_verdict). `enabled` and `mode` are user-configurable.
 *
 * It looks nothing up itself, so it never waits. `re_match` is compiled at start-up: a bad
 * pattern refuses the configuration (2.05 failed each request that reached the plugin).
 * Owns its two session keys (create .. destroy, main thread).
 */
#include <string.h>

#include <pol/dns.h>

#include "plugins/common.h"
#include "plugins/rbl.h"

enum {
    OPT_RESULT_FROM,
    OPT_ENABLED,
    OPT_MODE,
    OPT_RE_MATCH,
    OPT_SCORE,
    OPT_REJECT_MESSAGE,
    OPT_COUNT,
};

static const struct pol_opt_def rblaction_opts[] = {
    [OPT_RESULT_FROM] = {"result_from", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_RE_MATCH] = {"re_match", POL_OPT_REGEX, NULL, POL_OPT_REQUIRED},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "delivery from %IP% rejected %INFO%", 0},
};
_Static_assert(sizeof rblaction_opts / sizeof rblaction_opts[0] == OPT_COUNT,
               "one def per option");

static int rblaction_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return pol_rbl_keys_create(p, pol_opt(p, OPT_RESULT_FROM)->text, err, err_len);
}

static enum pol_step rblaction_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    struct pol_rbl_keys *k = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    struct pol_dns_list_result res;
    if (!pol_dns_list_cached(r, k->result, &res)) {
        pol_log(p, r, "no RBL check result for %s found!", pol_plugin_name(p));
        return POL_NEXT;
    }
    if (!res.listed)
        return POL_NEXT;
    const struct pol_opt_value *re = pol_opt(p, OPT_RE_MATCH);
    if (!pol_regex_match(re->re, res.addr, strlen(res.addr))) {
        pol_log(p, r, "%s did not match regex %s", res.addr, re->text);
        return POL_NEXT;
    }
    pol_log(p, r, "%s match regex %s", res.addr, re->text);
    return pol_rbl_verdict(p, r, &res, OPT_MODE, OPT_SCORE, OPT_REJECT_MESSAGE, k->score);
}

const struct pol_plugin_type pol_type_RBLAction = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "RBLAction",
    .opts = rblaction_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = 0,
    .create = rblaction_create,
    .step = rblaction_step,
    .destroy = pol_rbl_keys_destroy,
};
