/*
 * addscoreheader.c: the AddScoreHeader plugin (spec 13.3): the first time for a mail (flag
 * `score-<score_field>-tag`) answers `PREPEND HEADER: YES|NO score=S [DETAILS]`, on later
 * requests of the same mail `dunno`. Both abort the chain, so it belongs at the end.
 *
 * YES when the score is at or above `spam_score` (user-configurable, default 5). S is the
 * score as the session holds it (0 when unset); " [DETAILS]" follows when the details are
 * true in Perl's sense (not empty and not "0"). Owns nothing; runs on the request's shard and
 * never blocks. Matches Mail::MtPolicyd::Plugin::AddScoreHeader 2.05.
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_SPAM_SCORE,
    OPT_HEADER_NAME,
    OPT_COUNT,
};

static const struct pol_opt_def addscoreheader_opts[] = {
    [OPT_SPAM_SCORE] = {"spam_score", POL_OPT_NUMBER, "5", POL_OPT_UC},
    [OPT_HEADER_NAME] = {"header_name", POL_OPT_STRING, "X-MtScore", 0},
};
_Static_assert(sizeof addscoreheader_opts / sizeof addscoreheader_opts[0] == OPT_COUNT,
               "one def per option");

/* Perl truth of a string: defined, not "" and not "0". */
static bool perl_true(const char *s)
{
    return s != NULL && s[0] != '\0' && strcmp(s, "0") != 0;
}

static enum pol_step addscoreheader_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    size_t score_len = 0;
    const char *score = pol_builtin_score_text(r, p, &score_len);
    bool spam_score_set = false;
    double spam_score = pol_uc_number(r, p, OPT_SPAM_SCORE, &spam_score_set);
    ENG_ASSERT(spam_score_set); /* it has a default */
    const char *verdict = pol_num_perl(score, score_len) >= spam_score ? "YES" : "NO";
    const char *detail = pol_score_detail(r, p);
    const char *value =
        perl_true(detail)
            ? pol_req_printf(r, "%s score=%.*s [%s]", verdict, (int)score_len, score, detail)
            : pol_req_printf(r, "%s score=%.*s", verdict, (int)score_len, score);
    const char *flag = pol_req_printf(r, "score-%s-tag", pol_plugin_score_field(p));
    if (value == NULL || flag == NULL)
        return pol_req_fail(r, "no memory left in the request arena for the header");
    const struct pol_opt_value *header = pol_opt(p, OPT_HEADER_NAME);
    if (pol_result_header_once(r, pol_req_is_already_done(r, flag), header->text, value) != 0)
        return pol_req_fail(r, "no memory left in the request arena for the result");
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_AddScoreHeader = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "AddScoreHeader",
    .opts = addscoreheader_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .step = addscoreheader_step,
};
