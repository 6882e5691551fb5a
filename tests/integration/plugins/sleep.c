/*
 * sleep.c: the `Sleep` test plugin (Sleep.so), used only by the integration tests.
 *
 * A step arms an engine timer for `ms` milliseconds, returns POL_WAIT, and resumes the request
 * from the timer callback; the chain then goes on with the next plugin. It never returns a
 * result. This makes a request take a known, real amount of time without blocking the shard, so
 * the tests can check request_timeout, the t= field of the result line (real milliseconds, spec
 * 16 #11), SIGTERM with requests in flight, and that one slow request does not delay other
 * connections. tests/integration/perl/Mail/MtPolicyd/Plugin/Sleep.pm is the Perl twin (same
 * option), so one configuration serves both daemons in differential tests.
 *
 * Loaded with `plugin_dir = BUILD/tests/integration` and `module = "Sleep"`, or by path. State
 * lives in the request's req_state (valid until the request is released, which the core delays
 * until a waiting step resumed). Limits: 0 <= ms <= 600000, checked at start-up.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pol/plugin.h"

#define SLEEP_MS_MAX 600000

enum { OPT_MS, OPT_COUNT };

static const struct pol_opt_def sleep_opts[OPT_COUNT] = {
    [OPT_MS] = {"ms", POL_OPT_INT, "1000", 0},
};

struct sleep_state {
    struct eng_timer timer;
    struct pol_req *req;
    bool started;
};

static int sleep_create(struct pol_plugin *p, char *err, size_t err_len)
{
    long long ms = pol_opt(p, OPT_MS)->i;
    if (ms < 0 || ms > SLEEP_MS_MAX) {
        snprintf(err, err_len, "ms must be between 0 and %d, not %lld", SLEEP_MS_MAX, ms);
        return -1;
    }
    return 0;
}

/* The timer fired on the request's shard: continue the chain. */
static void sleep_done(struct eng_shard *sh, struct eng_timer *t)
{
    struct sleep_state *st =
        (struct sleep_state *)(void *)((char *)t - offsetof(struct sleep_state, timer));
    (void)sh;
    pol_req_resume(st->req);
}

static enum pol_step sleep_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct sleep_state *st = req_state;
    long long ms = pol_opt(p, OPT_MS)->i;
    if (st->started || ms == 0)
        return POL_NEXT; /* second call, after the resume */
    st->started = true;
    st->req = r;
    eng_timer_init(&st->timer, sleep_done);
    eng_timer_arm(pol_req_shard(r), &st->timer, (uint64_t)ms);
    pol_log(p, r, "sleeping %lld ms", ms);
    return POL_WAIT;
}

static const struct pol_plugin_type sleep_type = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Sleep",
    .opts = sleep_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct sleep_state),
    .create = sleep_create,
    .step = sleep_step,
};

static const struct pol_plugin_type *const sleep_types[] = {&sleep_type, NULL};

__attribute__((visibility("default"))) const struct pol_plugin_type *const *
POL_PLUGIN_ENTRY(uint32_t host_api_version)
{
    return host_api_version == POL_PLUGIN_API_VERSION ? sleep_types : NULL;
}
