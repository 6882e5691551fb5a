/*
 * builtin.c: the list of plugin types compiled into ringpolicyd (builtin.h). The config loader
 * looks a `module = "..."` name up here before trying PLUGIN_DIR/NAME.so. Read-only data.
 */
#include "plugins/builtin.h"

#include "plugins/common.h"

const struct pol_plugin_type *const pol_builtin_types[] = {
    &pol_type_Action,      &pol_type_AddScoreHeader,
    &pol_type_ClearFields, &pol_type_Condition,
    &pol_type_Eval,        &pol_type_RegexList,
    &pol_type_ScoreAction, &pol_type_SetField,
    &pol_type_Stress,      NULL,
};
