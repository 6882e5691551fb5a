/*
 * builtin.h: the plugin types compiled into ringpolicyd. Each module lives in
 * policy/plugins/<module in lower case>.c and defines `const struct pol_plugin_type
 * pol_type_<Module>` (e.g. pol_type_Action, pol_type_RegexList); builtin.c lists them.
 */
#ifndef POL_PLUGINS_BUILTIN_H
#define POL_PLUGINS_BUILTIN_H

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NULL-terminated. */
extern const struct pol_plugin_type *const pol_builtin_types[];

#ifdef __cplusplus
}
#endif

#endif
