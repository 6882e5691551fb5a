/*
 * action.c: the Action plugin (spec 13.2): always answers with its configured action text,
 * aborting the chain.
 *
 * Owns nothing. The step runs on the request's shard, never blocks and cannot fail except
 * when the request arena is full. Matches Mail::MtPolicyd::Plugin::Action 2.05.
 */
#include "plugins/common.h"

#include <eng/assert.h>

enum {
    OPT_ACTION,
    OPT_COUNT,
};

static const struct pol_opt_def action_opts[] = {
    [OPT_ACTION] = {"action", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
};
_Static_assert(sizeof action_opts / sizeof action_opts[0] == OPT_COUNT, "one def per option");

static enum pol_step action_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    const struct pol_opt_value *action = pol_opt(p, OPT_ACTION);
    ENG_ASSERT(action->set);
    return pol_builtin_result(r, action->text, action->text_len);
}

const struct pol_plugin_type pol_type_Action = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Action",
    .opts = action_opts,
    .opt_count = OPT_COUNT,
    .step = action_step,
};
