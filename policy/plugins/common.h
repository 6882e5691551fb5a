/*
 * plugins/common.h: what the built-in plugins share: the declarations of their types (listed
 * by builtin.c) and a few helpers for patterns several mtpolicyd plugins repeat (return an
 * action or run the sub-chain; compare an option's text; read the score as text).
 *
 * Everything here runs on the request's shard inside a step, allocates only from the request
 * arena and fails the request (POL_FAIL with a sentence) when the arena is full. Internal to
 * policy/plugins/: user plugins see pol/plugin.h only.
 */
#ifndef POL_PLUGINS_COMMON_H
#define POL_PLUGINS_COMMON_H

#include <stdbool.h>
#include <stddef.h>

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const struct pol_plugin_type pol_type_Action;
extern const struct pol_plugin_type pol_type_AddScoreHeader;
extern const struct pol_plugin_type pol_type_ClearFields;
extern const struct pol_plugin_type pol_type_Condition;
extern const struct pol_plugin_type pol_type_Eval;
extern const struct pol_plugin_type pol_type_RegexList;
extern const struct pol_plugin_type pol_type_ScoreAction;
extern const struct pol_plugin_type pol_type_SetField;
extern const struct pol_plugin_type pol_type_Stress;

/* Adds one aborting result with this action text. Returns POL_NEXT, or POL_FAIL when the
 * request arena is full. */
enum pol_step pol_builtin_result(struct pol_req *r, const char *action, size_t len);

/* The tail mtpolicyd's chain plugins share (Condition, RegexList, Stress, ScoreAction):
 * return `action` when it is non-NULL, else run the nested chain when the block has one
 * (POL_SUBCHAIN), else nothing (POL_NEXT). */
enum pol_step pol_builtin_act_or_subchain(struct pol_plugin *p, struct pol_req *r,
                                          const char *action, size_t len);

/* act_or_subchain with the effective value of the user-configurable option action_idx. */
enum pol_step pol_builtin_uc_action(struct pol_plugin *p, struct pol_req *r, unsigned action_idx);

/* Adds the effective value of the user-configurable number option score_idx, labelled with the
 * plugin's name, when it is set; with once_flag non-NULL only the first time for this mail
 * (pol_req_is_already_done, checked only when there is a score). Returns 0, or -1 when the
 * request arena or session is full. */
int pol_builtin_uc_score(struct pol_plugin *p, struct pol_req *r, unsigned score_idx,
                         const char *once_flag);

/* The step after a sub-chain ran: its results become this plugin's results. Returns true when
 * this call is that step (the caller then returns POL_NEXT). */
bool pol_builtin_subchain_adopted(struct pol_req *r);

/* Perl's `$text eq $literal` for an option's configured text. */
bool pol_builtin_opt_is(const struct pol_plugin *p, unsigned idx, const char *literal);

/* The score as the session holds it (text, so what Perl would print), "0" when unset. */
const char *pol_builtin_score_text(struct pol_req *r, const struct pol_plugin *p, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
