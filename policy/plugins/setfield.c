/*
 * setfield.c: the SetField plugin (spec 13.26): stores `value` under the session key `key`
 * and returns nothing, so the chain goes on.
 *
 * Owns nothing. Runs on the request's shard and never blocks. Fails the request only when the
 * session cannot take the value (out of memory). Without a persistent session cache the value
 * lives for this request only (spec 10.1, 12.3). Matches Mail::MtPolicyd::Plugin::SetField.
 */
#include "plugins/common.h"

#include <eng/assert.h>

enum {
    OPT_KEY,
    OPT_VALUE,
    OPT_COUNT,
};

static const struct pol_opt_def setfield_opts[] = {
    [OPT_KEY] = {"key", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_VALUE] = {"value", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
};
_Static_assert(sizeof setfield_opts / sizeof setfield_opts[0] == OPT_COUNT, "one def per option");

static enum pol_step setfield_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    const struct pol_opt_value *key = pol_opt(p, OPT_KEY);
    const struct pol_opt_value *value = pol_opt(p, OPT_VALUE);
    ENG_ASSERT(key->set);
    ENG_ASSERT(value->set);
    if (pol_session_set(r, key->text, value->text, value->text_len) != 0)
        return pol_req_fail(r, "cannot store session key %s: out of memory", key->text);
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_SetField = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SetField",
    .opts = setfield_opts,
    .opt_count = OPT_COUNT,
    .step = setfield_step,
};
