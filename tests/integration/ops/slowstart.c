/*
 * slowstart.c: the `SlowStart` test plugin (SlowStart.so), used only by tests/integration/ops.
 *
 * Its shard_start blocks for `ms` milliseconds on every shard but shard 0, so that for a moment
 * after start-up one shard serves while the others are still starting: /readyz must say 503
 * then, and 200 once every shard runs. Its step does nothing (POL_NEXT). Blocking in
 * shard_start is acceptable only because this is a test fixture; real plugins never block.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "pol/plugin.h"

enum { OPT_MS, OPT_COUNT };

static const struct pol_opt_def slow_opts[OPT_COUNT] = {
    [OPT_MS] = {"ms", POL_OPT_INT, "1000", 0},
};

static int slow_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                            char *err, size_t err_len)
{
    (void)shard_data;
    long long ms = pol_opt(p, OPT_MS)->i;
    if (ms < 0 || ms > 60000) {
        snprintf(err, err_len, "ms must be between 0 and 60000");
        return -1;
    }
    if (eng_shard_index(sh) != 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static enum pol_step slow_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)p;
    (void)r;
    (void)req_state;
    return POL_NEXT;
}

static const struct pol_plugin_type slow_type = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SlowStart",
    .opts = slow_opts,
    .opt_count = OPT_COUNT,
    .shard_start = slow_shard_start,
    .step = slow_step,
};

static const struct pol_plugin_type *const slow_types[] = {&slow_type, NULL};

__attribute__((visibility("default"))) const struct pol_plugin_type *const *
POL_PLUGIN_ENTRY(uint32_t host_api_version)
{
    return host_api_version == POL_PLUGIN_API_VERSION ? slow_types : NULL;
}
