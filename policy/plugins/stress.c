/*
 * stress.c: the Stress plugin (spec 13.29): when Postfix marks the request `stress=yes`
 * (smtpd under load), returns `action` (user-configurable), else the nested chain's results.
 * Otherwise nothing.
 *
 * Owns nothing. Runs on the request's shard and never blocks; a sub-chain makes the step two
 * calls (POL_SUBCHAIN, then adopt). Matches Mail::MtPolicyd::Plugin::Stress 2.05, including
 * its log line "MTA has stress feature turned on".
 */
#include "plugins/common.h"

#include <string.h>

enum {
    OPT_ACTION,
    OPT_COUNT,
};

static const struct pol_opt_def stress_opts[] = {
    [OPT_ACTION] = {"action", POL_OPT_STRING, NULL, POL_OPT_UC},
};
_Static_assert(sizeof stress_opts / sizeof stress_opts[0] == OPT_COUNT, "one def per option");

static enum pol_step stress_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (pol_builtin_subchain_adopted(r))
        return POL_NEXT;
    size_t len = 0;
    const char *stress = pol_req_attr(r, "stress", &len);
    if (stress == NULL || len != 3 || memcmp(stress, "yes", 3) != 0)
        return POL_NEXT;
    pol_log(p, r, "MTA has stress feature turned on");
    return pol_builtin_uc_action(p, r, OPT_ACTION);
}

const struct pol_plugin_type pol_type_Stress = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Stress",
    .opts = stress_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN,
    .step = stress_step,
};
