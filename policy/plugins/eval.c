/*
 * eval.c: the Eval plugin (spec 13.8): runs its nested chain and, when that produced actions,
 * stores them joined by LF in the session under `store_in`. Never returns a result: the
 * sub-chain's answer does not reach Postfix and the outer chain goes on.
 *
 * Owns nothing. Runs on the request's shard; the step is two calls (POL_SUBCHAIN, then
 * collect). Without nested plugins it does nothing. Fails only when the session cannot take
 * the value. Matches Mail::MtPolicyd::Plugin::Eval 2.05.
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_STORE_IN,
    OPT_COUNT,
};

static const struct pol_opt_def eval_opts[] = {
    [OPT_STORE_IN] = {"store_in", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
};
_Static_assert(sizeof eval_opts / sizeof eval_opts[0] == OPT_COUNT, "one def per option");

static enum pol_step eval_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (!pol_plugin_has_subchain(p))
        return POL_NEXT;
    if (!pol_req_subchain_done(r))
        return POL_SUBCHAIN;
    const struct pol_opt_value *store_in = pol_opt(p, OPT_STORE_IN);
    ENG_ASSERT(store_in->set);
    char *actions = pol_req_subchain_actions(r, "\n");
    if (actions == NULL)
        return POL_NEXT;
    if (pol_session_set(r, store_in->text, actions, strlen(actions)) != 0)
        return pol_req_fail(r, "cannot store session key %s: out of memory", store_in->text);
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_Eval = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Eval",
    .opts = eval_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN,
    .step = eval_step,
};
