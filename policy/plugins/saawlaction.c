/*
 * saawlaction.c: the SaAwlAction plugin (spec 13.23): acts on the AWL reputation SaAwlLookup
 * `result_from` cached (sa-awl-RESULT_FROM-result). Nothing when that entry is missing (logged)
 * or empty, when its count is below `min_count`, or when the score does not match (`match` gt:
 * score >= `threshold`; lt: score <= `threshold`; anything else never). Otherwise, once per
 * mail (flag sa-awl-NAME-score): add `score` when it is Perl-true, else score × `score_factor`
 * when that is; then `mode` reject → "reject MESSAGE" (%IP%, %SENDER%, %SCORE%, first
 * occurrence each, in that order), accept or dunno → "dunno", else nothing. `enabled` and
 * `mode` are user-configurable.
 *
 * Owns nothing; pure session work on the request's shard. Matches
 * Mail::MtPolicyd::Plugin::SaAwlAction 2.05, log texts included.
 */
#include "plugins/common.h"
#include "plugins/ldb_keys.h"
#include "plugins/localdb.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_RESULT_FROM,
    OPT_THRESHOLD,
    OPT_MATCH,
    OPT_MIN_COUNT,
    OPT_SCORE,
    OPT_SCORE_FACTOR,
    OPT_MODE,
    OPT_REJECT_MESSAGE,
    OPT_ENABLED,
    OPT_COUNT,
};

static const struct pol_opt_def saawlaction_opts[] = {
    [OPT_RESULT_FROM] = {"result_from", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_THRESHOLD] = {"threshold", POL_OPT_NUMBER, "5", 0},
    [OPT_MATCH] = {"match", POL_OPT_STRING, "gt", 0},
    [OPT_MIN_COUNT] = {"min_count", POL_OPT_INT, "10", 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_SCORE_FACTOR] = {"score_factor", POL_OPT_NUMBER, NULL, 0},
    [OPT_MODE] = {"mode", POL_OPT_STRING, "reject", POL_OPT_UC},
    [OPT_REJECT_MESSAGE] = {"reject_message", POL_OPT_TEMPLATE,
                            "sender address/ip has bad reputation", 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
};
_Static_assert(sizeof saawlaction_opts / sizeof saawlaction_opts[0] == OPT_COUNT,
               "one def per option");

static bool score_matches(const struct pol_plugin *p, double score)
{
    double threshold = pol_opt(p, OPT_THRESHOLD)->num;
    if (pol_builtin_opt_is(p, OPT_MATCH, "gt"))
        return score >= threshold;
    if (pol_builtin_opt_is(p, OPT_MATCH, "lt"))
        return score <= threshold;
    return false;
}

/* Perl's `if ($self->score)` on an option: set and true as a string. */
static bool opt_true(const struct pol_plugin *p, unsigned idx)
{
    const struct pol_opt_value *v = pol_opt(p, idx);
    return v->set && ldb_perl_true(v->text, v->text_len);
}

/* The score, once per mail. 0, or -1 when the request arena or session is full. */
static int add_score(struct pol_plugin *p, struct pol_req *r, double awl_score)
{
    const char *flag = pol_req_printf(r, "sa-awl-%s-score", pol_plugin_name(p));
    if (flag == NULL)
        return -1;
    if (pol_req_is_already_done(r, flag))
        return 0;
    const struct pol_opt_value *score = pol_opt(p, OPT_SCORE);
    if (opt_true(p, OPT_SCORE))
        return pol_score_add(r, p, NULL, score->num, score->text) == 0 ? 0 : -1;
    if (opt_true(p, OPT_SCORE_FACTOR)) {
        double v = awl_score * pol_opt(p, OPT_SCORE_FACTOR)->num;
        return pol_score_add(r, p, NULL, v, NULL) == 0 ? 0 : -1;
    }
    return 0;
}

static enum pol_step saawlaction_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    const char *from = pol_opt(p, OPT_RESULT_FROM)->text;
    const char *key = pol_req_printf(r, "sa-awl-%s-result", from);
    if (key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t len = 0;
    const char *cached = pol_session_get(r, key, &len);
    if (cached == NULL) {
        pol_log(p, r, "no SaAwlLookup result for %s found!", from);
        return POL_NEXT;
    }
    double awl_score = 0;
    const char *count = NULL;
    size_t count_len = 0;
    if (!ldb_awl_result_parse(cached, len, &awl_score, &count, &count_len))
        return POL_NEXT; /* there was no entry in AWL */
    if (pol_num_perl(count, count_len) < (double)pol_opt(p, OPT_MIN_COUNT)->i) {
        pol_log(p, r, "sender awl reputation below min_count");
        return POL_NEXT;
    }
    if (!score_matches(p, awl_score))
        return POL_NEXT;
    pol_log(p, r, "matched SA AWL threshold action %s", pol_plugin_name(p));
    if (add_score(p, r, awl_score) != 0)
        return pol_req_fail(r, "cannot add the score: out of memory");
    char score_text[64];
    pol_num_format(score_text, sizeof score_text, awl_score);
    const struct pol_tvar vars[] = {
        {"IP", pol_req_attr(r, "client_address", NULL)},
        {"SENDER", pol_req_attr(r, "sender", NULL)},
        {"SCORE", score_text},
    };
    return ldb_plugin_mode_result(p, r, OPT_MODE, OPT_REJECT_MESSAGE, vars, 3);
}

const struct pol_plugin_type pol_type_SaAwlAction = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SaAwlAction",
    .opts = saawlaction_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .step = saawlaction_step,
};
