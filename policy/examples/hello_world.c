/*
 * hello_world.c: HelloWorld, the example plugin of docs/writing-a-plugin.md, built as the
 * shared object HelloWorld.so. It is mtpolicyd's BasicModule and ExtendedModule cookbook pages
 * written in C: it answers `reject TEXT` (TEXT defaults to "Hello World!"), aborting the chain.
 *
 * Options: `text`; `enabled` (user-configurable, `off` disables it); `score`, added once per
 * mail; `header_name`, which switches to "PREPEND HEADER: TEXT" once per mail (then `dunno`).
 * The greeting is "looked up" once per mail and cached in the session under `NAME-result`:
 * from the nested <Plugin> chain when the block has one (its actions joined by ", ", `text`
 * when it has none), else after `lookup_delay_ms` of asynchronous waiting (an engine timer
 * stands in for a DNS or database query), else at once from `text`. Its cron task logs
 * "i am a weekly task" at level 3 when `weekly` is among the tasks.
 *
 * Owns nothing but its per-request state (a timer, inside req_state). The step runs on the
 * request's shard and never blocks; it fails only when the request arena or session is full.
 * Snippets of this file are quoted verbatim by docs/writing-a-plugin.md (a unit test checks).
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <eng/log.h>
#include <pol/plugin.h>

/* The longest lookup_delay_ms accepted: well inside Postfix's policy timeout (100 s) and
 * ringpolicyd's request deadline, so the request always outlives its timer. */
#define HELLO_LOOKUP_DELAY_MS_MAX 10000

/* Option indexes: the order of hello_opts[]. */
enum {
    OPT_TEXT,
    OPT_ENABLED,
    OPT_SCORE,
    OPT_HEADER_NAME,
    OPT_LOOKUP_DELAY_MS,
    OPT_COUNT,
};

static const struct pol_opt_def hello_opts[] = {
    [OPT_TEXT] = {"text", POL_OPT_STRING, "Hello World!", 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_HEADER_NAME] = {"header_name", POL_OPT_STRING, NULL, 0},
    [OPT_LOOKUP_DELAY_MS] = {"lookup_delay_ms", POL_OPT_INT, "0", 0},
};
_Static_assert(sizeof hello_opts / sizeof hello_opts[0] == OPT_COUNT, "one def per option");

/* Per-request state: survives POL_WAIT, zeroed before the first step of each request. */
struct hello_state {
    struct eng_timer timer; /* the pretend lookup */
    struct pol_req *r;      /* whom to resume when it is done */
    bool waited;            /* the lookup ran: store its result now */
};

static int hello_create(struct pol_plugin *p, char *err, size_t err_len)
{
    long long delay_ms = pol_opt(p, OPT_LOOKUP_DELAY_MS)->i;
    if (delay_ms < 0 || delay_ms > HELLO_LOOKUP_DELAY_MS_MAX) {
        snprintf(err, err_len, "lookup_delay_ms must be between 0 and %d",
                 HELLO_LOOKUP_DELAY_MS_MAX);
        return -1;
    }
    return 0;
}

/* The lookup's completion: on the request's shard, from the loop, never inside step. */
static void hello_lookup_done(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct hello_state *st =
        (struct hello_state *)((char *)t - offsetof(struct hello_state, timer));
    pol_req_resume(st->r);
}

/* Starts the lookup; step runs again after hello_lookup_done resumed the request. */
static enum pol_step hello_lookup(struct pol_req *r, struct hello_state *st, long long delay_ms)
{
    st->r = r;
    st->waited = true;
    eng_timer_init(&st->timer, hello_lookup_done);
    eng_timer_arm(pol_req_shard(r), &st->timer, (uint64_t)delay_ms);
    return POL_WAIT;
}

/* The greeting for this mail: cached in the session under NAME-result. Returns it, or NULL
 * with *step set (POL_SUBCHAIN or POL_WAIT while the lookup runs, POL_FAIL when the session is
 * full). */
static const char *hello_greeting(struct pol_plugin *p, struct pol_req *r, struct hello_state *st,
                                  enum pol_step *step)
{
    const char *key = pol_req_printf(r, "%s-result", pol_plugin_name(p));
    if (key == NULL) {
        *step = pol_req_fail(r, "out of memory");
        return NULL;
    }
    size_t cached_len = 0;
    const char *cached = pol_session_get(r, key, &cached_len);
    if (cached != NULL)
        return cached;

    const char *found = NULL;
    long long delay_ms = pol_opt(p, OPT_LOOKUP_DELAY_MS)->i;
    if (pol_plugin_has_subchain(p)) {
        if (!pol_req_subchain_done(r)) {
            *step = POL_SUBCHAIN; /* step is called again when the nested chain is done */
            return NULL;
        }
        found = pol_req_subchain_actions(r, ", ");
    } else if (delay_ms > 0 && !st->waited) {
        *step = hello_lookup(r, st, delay_ms);
        return NULL;
    }
    if (found == NULL)
        found = pol_opt(p, OPT_TEXT)->text;
    if (pol_session_set(r, key, found, strlen(found)) != 0) {
        *step = pol_req_fail(r, "cannot cache the greeting: out of memory");
        return NULL;
    }
    return found;
}

static enum pol_step hello_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct hello_state *st = req_state;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;

    enum pol_step step = POL_NEXT;
    const char *greeting = hello_greeting(p, r, st, &step);
    if (greeting == NULL)
        return step;

    const struct pol_opt_value *score = pol_opt(p, OPT_SCORE);
    if (score->set) {
        const char *flag = pol_req_printf(r, "%s-score", pol_plugin_name(p));
        if (flag == NULL)
            return pol_req_fail(r, "out of memory");
        if (!pol_req_is_already_done(r, flag) &&
            pol_score_add(r, p, NULL, score->num, score->text) != 0)
            return pol_req_fail(r, "cannot add the score: out of memory");
    }

    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    pol_log(p, r, "saying hello to %s", ip != NULL ? ip : "unknown");

    const struct pol_opt_value *header = pol_opt(p, OPT_HEADER_NAME);
    int rc;
    if (header->set) {
        const char *flag = pol_req_printf(r, "%s-tag", pol_plugin_name(p));
        if (flag == NULL)
            return pol_req_fail(r, "out of memory");
        rc = pol_result_header_once(r, pol_req_is_already_done(r, flag), header->text, greeting);
    } else {
        rc = pol_resultf(r, true, "reject %s", greeting);
    }
    if (rc != 0)
        return pol_req_fail(r, "out of memory");
    return POL_NEXT;
}

static int hello_cron(struct pol_plugin *p, const char *const *tasks, size_t task_count, char *err,
                      size_t err_len)
{
    (void)err;
    (void)err_len;
    for (size_t i = 0; i < task_count; i++) {
        if (strcmp(tasks[i], "weekly") == 0)
            pol_log_at(ENG_LOG_INFO, p, NULL, "i am a weekly task");
    }
    return 0;
}

static const struct pol_plugin_type hello_world_type = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "HelloWorld",
    .opts = hello_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN | POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct hello_state),
    .create = hello_create,
    .step = hello_step,
    .cron = hello_cron,
};

static const struct pol_plugin_type *const hello_types[] = {&hello_world_type, NULL};

/* The one symbol ringpolicyd looks up in this .so. A host older than the API this file was
 * compiled against lacks functions it calls, so refuse it. */
__attribute__((visibility("default"))) pol_plugin_entry_fn POL_PLUGIN_ENTRY;

const struct pol_plugin_type *const *POL_PLUGIN_ENTRY(uint32_t host_api_version)
{
    if (host_api_version < POL_PLUGIN_API_VERSION)
        return NULL;
    return hello_types;
}
