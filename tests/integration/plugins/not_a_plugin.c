/*
 * not_a_plugin.c: NotAPlugin.so, a shared object without the plugin entry point, and
 * WrongApi.so (built from the same file with -DITEST_WRONG_API), whose entry point refuses the
 * host's API version. The integration tests check that loading either is a start-up error
 * naming the configuration file and line, never a crash.
 */
#include <stddef.h>
#include <stdint.h>

#include "pol/plugin.h"

#ifdef ITEST_WRONG_API
__attribute__((visibility("default"))) const struct pol_plugin_type *const *
POL_PLUGIN_ENTRY(uint32_t host_api_version)
{
    (void)host_api_version;
    return NULL; /* "cannot work with this host" */
}
#else
__attribute__((visibility("default"))) int itest_not_a_plugin(void);
int itest_not_a_plugin(void)
{
    return 42;
}
#endif
