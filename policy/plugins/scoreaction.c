/*
 * scoreaction.c: the ScoreAction plugin (spec 13.25): acts when the score reaches
 * `threshold` (user-configurable): with `match = gt` when score >= threshold, with `lt` when
 * score <= threshold; any other `match` fails every request ("unknown value for parameter
 * match."), as 2.05 does. Then it returns `action`, else the nested chain's results, else
 * nothing.
 *
 * `action` placeholders are replaced one after the other, first occurrence only, exactly like
 * 2.05's three `s///`: %IP% (client_address or `unknown`), %SCORE% (the score as the session
 * holds it, 0 when unset), %SCORE_DETAIL% (", DETAILS", or "" without details). Owns nothing;
 * runs on the request's shard and never blocks. Matches Mail::MtPolicyd::Plugin::ScoreAction.
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_THRESHOLD,
    OPT_MATCH,
    OPT_ACTION,
    OPT_COUNT,
};

static const struct pol_opt_def scoreaction_opts[] = {
    [OPT_THRESHOLD] = {"threshold", POL_OPT_NUMBER, NULL, POL_OPT_REQUIRED | POL_OPT_UC},
    [OPT_MATCH] = {"match", POL_OPT_STRING, "gt", 0},
    [OPT_ACTION] = {"action", POL_OPT_TEMPLATE, NULL, 0},
};
_Static_assert(sizeof scoreaction_opts / sizeof scoreaction_opts[0] == OPT_COUNT,
               "one def per option");

/* The action with its placeholders replaced; NULL when the arena is full. */
static const char *expand_action(struct pol_req *r, const char *tmpl, const char *score,
                                 const char *detail)
{
    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    const char *detail_text = detail != NULL ? pol_req_printf(r, ", %s", detail) : "";
    if (detail_text == NULL)
        return NULL;
    const struct pol_tvar vars[] = {
        {"IP", ip != NULL ? ip : "unknown"},
        {"SCORE", score},
        {"SCORE_DETAIL", detail_text},
    };
    return pol_template_expand(r, tmpl, vars, sizeof vars / sizeof vars[0]);
}

static enum pol_step scoreaction_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (pol_builtin_subchain_adopted(r))
        return POL_NEXT;
    size_t score_len = 0;
    const char *score = pol_builtin_score_text(r, p, &score_len);
    double score_num = pol_num_perl(score, score_len);
    bool threshold_set = false;
    double threshold = pol_uc_number(r, p, OPT_THRESHOLD, &threshold_set);
    ENG_ASSERT(threshold_set); /* required */
    /* The comparisons are written as 2.05 writes them, so NaN behaves the same. */
    if (pol_builtin_opt_is(p, OPT_MATCH, "gt")) {
        if (score_num < threshold)
            return POL_NEXT;
    } else if (pol_builtin_opt_is(p, OPT_MATCH, "lt")) {
        if (score_num > threshold)
            return POL_NEXT;
    } else {
        return pol_req_fail(r, "unknown value for parameter match.");
    }

    const struct pol_opt_value *action = pol_opt(p, OPT_ACTION);
    if (!action->set)
        return pol_builtin_act_or_subchain(p, r, NULL, 0);
    const char *score_z = pol_req_strndup(r, score, score_len);
    const char *text =
        score_z != NULL ? expand_action(r, action->text, score_z, pol_score_detail(r, p)) : NULL;
    if (text == NULL)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_act_or_subchain(p, r, text, strlen(text));
}

const struct pol_plugin_type pol_type_ScoreAction = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "ScoreAction",
    .opts = scoreaction_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN | POL_TYPE_SCORING,
    .step = scoreaction_step,
};
