/*
 * geoipaction.c: the GeoIPAction plugin (spec 13.10): acts on the country code GeoIPLookup
 * `result_from` cached (geoip-RESULT_FROM-result). Nothing when the entry is missing (logged),
 * empty (no country) or not in `country_codes` (compared exactly). Otherwise `score` once per
 * mail (flag geoip-NAME-score), then `mode` reject → "reject MESSAGE" (%IP% then %CC%, first
 * occurrence each), accept or dunno → "dunno", anything else nothing. `enabled` and `mode` are
 * user-configurable.
 *
 * Owns nothing; pure session work on the request's shard. Matches
 * Mail::MtPolicyd::Plugin::GeoIPAction 2.05, log texts included (their missing spaces too).
 */
#include "plugins/common.h"
#include "plugins/localdb.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_RESULT_FROM,
    OPT_COUNTRY_CODES,
    OPT_ENABLED,
    OPT_MODE,
    OPT_SCORE,
    OPT_REJECT_MESSAGE,
    OPT_COUNT,
};

static const struct pol_opt_def geoipaction_opts[] = {
    [OPT_RESULT_FROM] = {"result_from", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_COUNTRY_CODES] = {"country_codes", POL_OPT_LIST, NULL, POL_OPT_REQUIRED},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "delivery from %CC% (%IP%) rejected", 0},
};
_Static_assert(sizeof geoipaction_opts / sizeof geoipaction_opts[0] == OPT_COUNT,
               "one def per option");

static bool listed(const struct pol_plugin *p, const char *cc, size_t len)
{
    const struct pol_list *codes = &pol_opt(p, OPT_COUNTRY_CODES)->list;
    for (size_t i = 0; i < codes->count; i++) {
        if (strlen(codes->items[i]) == len && memcmp(codes->items[i], cc, len) == 0)
            return true;
    }
    return false;
}

static enum pol_step geoipaction_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    const char *key = pol_req_printf(r, "geoip-%s-result", pol_opt(p, OPT_RESULT_FROM)->text);
    if (key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t len = 0;
    const char *cached = pol_session_get(r, key, &len);
    if (cached == NULL) {
        pol_log(p, r, "no GeoIP check result for %s found!", pol_plugin_name(p));
        return POL_NEXT;
    }
    if (len == 0)
        return POL_NEXT;
    const char *cc = pol_req_strndup(r, cached, len);
    if (cc == NULL)
        return pol_req_fail(r, "out of memory");
    if (!listed(p, cc, len)) {
        pol_log(p, r, "country_code %s of IP not in country_code list%s", cc, pol_plugin_name(p));
        return POL_NEXT;
    }
    pol_log(p, r, "country code %s on list%s", cc, pol_plugin_name(p));
    const char *flag = pol_req_printf(r, "geoip-%s-score", pol_plugin_name(p));
    if (flag == NULL || pol_builtin_uc_score(p, r, OPT_SCORE, flag) != 0)
        return pol_req_fail(r, "cannot add the score: out of memory");
    const struct pol_tvar vars[] = {
        {"IP", pol_req_attr(r, "client_address", NULL)},
        {"CC", cc},
    };
    return ldb_plugin_mode_result(p, r, OPT_MODE, OPT_REJECT_MESSAGE, vars, 2);
}

const struct pol_plugin_type pol_type_GeoIPAction = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "GeoIPAction",
    .opts = geoipaction_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .step = geoipaction_step,
};
