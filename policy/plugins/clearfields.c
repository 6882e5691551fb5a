/*
 * clearfields.c: the ClearFields plugin (spec 13.4): deletes the session keys listed in
 * `fields` and every session key starting with one of the literal prefixes in
 * `fields_prefix`. Returns nothing.
 *
 * Owns nothing. Runs on the request's shard; the work is bounded by the session's size.
 * Cannot fail. Logs "clearing fields A, B" and "clearing fields with prefixes: A, B" at the
 * plugin's log_level, as Mail::MtPolicyd::Plugin::ClearFields 2.05 does (also for an empty
 * list, where the message ends after the space).
 */
#include "plugins/common.h"

#include <string.h>

#include <eng/assert.h>
#include <eng/log.h>

enum {
    OPT_FIELDS,
    OPT_FIELDS_PREFIX,
    OPT_COUNT,
};

static const struct pol_opt_def clearfields_opts[] = {
    [OPT_FIELDS] = {"fields", POL_OPT_LIST, NULL, 0},
    [OPT_FIELDS_PREFIX] = {"fields_prefix", POL_OPT_LIST, NULL, 0},
};
_Static_assert(sizeof clearfields_opts / sizeof clearfields_opts[0] == OPT_COUNT,
               "one def per option");

/* Perl's join(', ', @list), in the request arena; "" when the arena is full (it only feeds a
 * log line). */
static const char *join_list(struct pol_req *r, const struct pol_list *list)
{
    size_t bytes = 1;
    for (size_t i = 0; i < list->count; i++)
        bytes += strlen(list->items[i]) + 2;
    char *out = pol_req_alloc(r, bytes);
    if (out == NULL)
        return "";
    size_t at = 0;
    for (size_t i = 0; i < list->count; i++) {
        size_t len = strlen(list->items[i]);
        if (i > 0) {
            memcpy(out + at, ", ", 2);
            at += 2;
        }
        memcpy(out + at, list->items[i], len);
        at += len;
    }
    ENG_ASSERT(at < bytes);
    out[at] = '\0';
    return out;
}

static void log_list(const struct pol_plugin *p, struct pol_req *r, const char *what,
                     const struct pol_list *list)
{
    if (eng_log_enabled(pol_plugin_log_level(p)))
        pol_log(p, r, "%s%s", what, join_list(r, list));
}

static enum pol_step clearfields_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    const struct pol_opt_value *fields = pol_opt(p, OPT_FIELDS);
    const struct pol_opt_value *prefixes = pol_opt(p, OPT_FIELDS_PREFIX);
    if (fields->set) {
        log_list(p, r, "clearing fields ", &fields->list);
        for (size_t i = 0; i < fields->list.count; i++)
            pol_session_del(r, fields->list.items[i]);
    }
    if (prefixes->set) {
        log_list(p, r, "clearing fields with prefixes: ", &prefixes->list);
        for (size_t i = 0; i < prefixes->list.count; i++)
            pol_session_del_prefix(r, prefixes->list.items[i]);
    }
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_ClearFields = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "ClearFields",
    .opts = clearfields_opts,
    .opt_count = OPT_COUNT,
    .step = clearfields_step,
};
