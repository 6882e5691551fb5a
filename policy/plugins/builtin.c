/*
 * builtin.c: the list of plugin types compiled into ringpolicyd (builtin.h). The config loader
 * looks a `module = "..."` name up here before trying PLUGIN_DIR/NAME.so. Read-only data.
 */
#include "plugins/builtin.h"

#include "plugins/common.h"

/* DNS blocklists (owner: dns), in rbl.c, rblaction.c, dbl.c. */
extern const struct pol_plugin_type pol_type_DBL;
extern const struct pol_plugin_type pol_type_RBL;
extern const struct pol_plugin_type pol_type_RBLAction;

const struct pol_plugin_type *const pol_builtin_types[] = {
    &pol_type_Action,      &pol_type_AddScoreHeader,
    &pol_type_ClearFields, &pol_type_Condition,
    &pol_type_Eval,        &pol_type_RegexList,
    &pol_type_ScoreAction, &pol_type_SetField,
    &pol_type_Stress,      &pol_type_DBL,
    &pol_type_RBL,         &pol_type_RBLAction,
    NULL,
};
