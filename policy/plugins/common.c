/*
 * plugins/common.c: helpers shared by the built-in plugins (see common.h).
 *
 * Pure functions of their arguments plus the request arena; they run inside a step on the
 * request's shard and never block. An exhausted arena fails the request with a sentence.
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>

enum pol_step pol_builtin_result(struct pol_req *r, const char *action, size_t len)
{
    ENG_ASSERT(r != NULL);
    ENG_ASSERT(action != NULL);
    if (pol_result(r, action, len, true) != 0)
        return pol_req_fail(r, "no memory left in the request arena for the result");
    return POL_NEXT;
}

enum pol_step pol_builtin_act_or_subchain(struct pol_plugin *p, struct pol_req *r,
                                          const char *action, size_t len)
{
    ENG_ASSERT(p != NULL);
    if (action != NULL)
        return pol_builtin_result(r, action, len);
    if (pol_plugin_has_subchain(p))
        return POL_SUBCHAIN;
    return POL_NEXT;
}

enum pol_step pol_builtin_uc_action(struct pol_plugin *p, struct pol_req *r, unsigned action_idx)
{
    size_t len = 0;
    const char *action = pol_uc(r, p, action_idx, &len);
    return pol_builtin_act_or_subchain(p, r, action, len);
}

int pol_builtin_uc_score(struct pol_plugin *p, struct pol_req *r, unsigned score_idx,
                         const char *once_flag)
{
    size_t len = 0;
    const char *score = pol_uc(r, p, score_idx, &len);
    if (score == NULL)
        return 0;
    if (once_flag != NULL && pol_req_is_already_done(r, once_flag))
        return 0;
    return pol_score_add(r, p, NULL, pol_num_perl(score, len), score) == 0 ? 0 : -1;
}

bool pol_builtin_subchain_adopted(struct pol_req *r)
{
    if (!pol_req_subchain_done(r))
        return false;
    pol_req_adopt_subchain(r);
    return true;
}

bool pol_builtin_opt_is(const struct pol_plugin *p, unsigned idx, const char *literal)
{
    const struct pol_opt_value *v = pol_opt(p, idx);
    size_t len = strlen(literal);
    return v->set && v->text_len == len && memcmp(v->text, literal, len) == 0;
}

const char *pol_builtin_score_text(struct pol_req *r, const struct pol_plugin *p, size_t *len)
{
    const char *score = pol_session_get(r, pol_plugin_score_field(p), len);
    if (score != NULL)
        return score;
    *len = 1;
    return "0";
}
