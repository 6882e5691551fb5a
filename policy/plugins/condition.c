/*
 * condition.c: the Condition plugin (spec 13.5): tests a request attribute or session value
 * (`key`, spec 12.1) with `match` (equal), `re_match` (PCRE2), `lt_match` / `gt_match`
 * (numeric, Perl conversion); `invert` negates. On a match it adds `score` on every request
 * (not once per mail), then returns `action`, else the nested chain's results, else nothing.
 * An absent value never matches, whatever `invert` says.
 *
 * Owns nothing. Runs on the request's shard; the step is two calls when a sub-chain runs
 * (POL_SUBCHAIN, then adopt). Fails only when the request arena or session is full. Matches
 * Mail::MtPolicyd::Plugin::Condition 2.05, including its log line "KEY matched VALUE".
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_KEY,
    OPT_MATCH,
    OPT_RE_MATCH,
    OPT_LT_MATCH,
    OPT_GT_MATCH,
    OPT_INVERT,
    OPT_SCORE,
    OPT_ACTION,
    OPT_COUNT,
};

static const struct pol_opt_def condition_opts[] = {
    [OPT_KEY] = {"key", POL_OPT_VAR, NULL, POL_OPT_REQUIRED},
    [OPT_MATCH] = {"match", POL_OPT_STRING, NULL, 0},
    [OPT_RE_MATCH] = {"re_match", POL_OPT_REGEX, NULL, 0},
    [OPT_LT_MATCH] = {"lt_match", POL_OPT_NUMBER, NULL, 0},
    [OPT_GT_MATCH] = {"gt_match", POL_OPT_NUMBER, NULL, 0},
    [OPT_INVERT] = {"invert", POL_OPT_BOOL, "0", 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, POL_OPT_UC},
    [OPT_ACTION] = {"action", POL_OPT_STRING, NULL, POL_OPT_UC},
};
_Static_assert(sizeof condition_opts / sizeof condition_opts[0] == OPT_COUNT, "one def per option");

/* The tests in Perl's order; any one holding is a match. No test configured: no match. */
static bool condition_matches(const struct pol_plugin *p, const char *value, size_t len)
{
    const struct pol_opt_value *match = pol_opt(p, OPT_MATCH);
    if (match->set && match->text_len == len && memcmp(match->text, value, len) == 0)
        return true;
    const struct pol_opt_value *re = pol_opt(p, OPT_RE_MATCH);
    if (re->set && pol_regex_match(re->re, value, len))
        return true;
    const struct pol_opt_value *lt = pol_opt(p, OPT_LT_MATCH);
    if (lt->set && pol_num_perl(value, len) < lt->num)
        return true;
    const struct pol_opt_value *gt = pol_opt(p, OPT_GT_MATCH);
    if (gt->set && pol_num_perl(value, len) > gt->num)
        return true;
    return false;
}

static enum pol_step condition_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (pol_builtin_subchain_adopted(r))
        return POL_NEXT;
    const struct pol_opt_value *key = pol_opt(p, OPT_KEY);
    size_t len = 0;
    const char *value = key->var != NULL ? pol_req_var(r, key->var, &len) : NULL;
    if (value == NULL)
        return POL_NEXT;
    bool matched = condition_matches(p, value, len);
    if (pol_opt(p, OPT_INVERT)->b)
        matched = !matched;
    if (!matched)
        return POL_NEXT;

    pol_log(p, r, "%s matched %.*s", key->text, (int)len, value);
    if (pol_builtin_uc_score(p, r, OPT_SCORE, NULL) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    return pol_builtin_uc_action(p, r, OPT_ACTION);
}

const struct pol_plugin_type pol_type_Condition = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Condition",
    .opts = condition_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN | POL_TYPE_SCORING,
    .step = condition_step,
};
