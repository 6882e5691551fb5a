/*
 * chain.c: the chain runner and the plugin API that feeds it: results (pol_result*), failures
 * (pol_req_fail) and sub-chains (pol_req_subchain_*, pol_req_adopt_subchain).
 *
 * Semantics (spec 11.3, mtpolicyd PluginChain.pm): plugins run in file order; a plugin's
 * results are appended to its chain's results and, if it returned any, its name becomes the
 * chain's last match; a result with the abort flag stops the chain. A failing plugin with
 * on_error = continue is logged and treated as having returned nothing; otherwise the failure
 * propagates: inside a sub-chain it becomes the failure of the parent plugin ("plugin OUTER
 * failed: plugin INNER failed: DETAIL", as the nested Perl die does), at the top it fails the
 * request. A sub-chain's results go to its parent plugin, which may adopt or read them.
 *
 * State lives in the request (frames, results in the arena); nothing here allocates elsewhere.
 * Limits: frame depth is fixed at start-up from the deepest nesting; steps per request are
 * capped at POL_REQ_STEPS_MAX.
 */
#include "chain.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "metrics.h"
#include "server.h"

int pol_chain_start(struct pol_req *r, const struct pol_chain *chain, uint32_t depth_max)
{
    ENG_ASSERT(depth_max >= 1);
    /* One frame per nesting level plus the top level. */
    r->frames = pol_arena_calloc(&r->arena, sizeof(struct pol_frame) * (depth_max + 1));
    if (!r->frames)
        return -ENOMEM;
    r->frames[0].chain = chain;
    r->depth = 1;
    r->steps = 0;
    r->detail[0] = '\0';
    return 0;
}

static struct pol_frame *top(const struct pol_req *r)
{
    ENG_ASSERT(r->depth >= 1);
    return &r->frames[r->depth - 1];
}

static void list_append(struct pol_res_list *dst, struct pol_res_list *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    dst->count += src->count;
    memset(src, 0, sizeof(*src));
}

static bool list_aborts(const struct pol_res_list *l)
{
    for (const struct pol_res *x = l->head; x; x = x->next)
        if (x->abort)
            return true;
    return false;
}

/* Moves on to the next plugin of frame f. */
static void frame_next(struct pol_frame *f, bool stop)
{
    f->idx = stop ? f->chain->count : f->idx + 1;
    f->started = false;
    f->sub_done = false;
    f->state = NULL;
    memset(&f->pending, 0, sizeof(f->pending));
    memset(&f->sub, 0, sizeof(f->sub));
}

static void plugin_done(struct pol_frame *f, const struct pol_plugin *p)
{
    bool stop = false;
    if (f->pending.count > 0) {
        f->last_match = p->name;
        stop = list_aborts(&f->pending);
        list_append(&f->results, &f->pending);
    }
    frame_next(f, stop);
}

/* Prefixes r->detail with "plugin NAME failed: ", truncating at the end if needed. */
static void detail_prefix(struct pol_req *r, const char *name)
{
    char pre[POL_REQ_DETAIL_MAX];
    int n = snprintf(pre, sizeof(pre), "plugin %s failed: ", name);
    if (n < 0)
        return;
    size_t pl = (size_t)n < sizeof(pre) ? (size_t)n : sizeof(pre) - 1;
    size_t dl = strnlen(r->detail, sizeof(r->detail) - 1);
    if (pl + dl > sizeof(r->detail) - 1)
        dl = sizeof(r->detail) - 1 - pl;
    memmove(r->detail + pl, r->detail, dl);
    memcpy(r->detail, pre, pl);
    r->detail[pl + dl] = '\0';
}

/* A plugin failed (its raw detail is in r->detail). Returns true when the request fails. */
static bool plugin_failed(struct pol_req *r)
{
    for (;;) {
        struct pol_frame *f = top(r);
        const struct pol_plugin *p = f->chain->plugins[f->idx];
        detail_prefix(r, p->name);
        if (p->on_error_continue) {
            eng_log(ENG_LOG_ERR, "%s", r->detail);
            r->detail[0] = '\0';
            frame_next(f, false);
            return false;
        }
        if (r->depth == 1)
            return true;
        /* Unwind the sub-chain: the failure becomes its parent plugin's. */
        r->depth--;
    }
}

static void frame_pop(struct pol_req *r)
{
    struct pol_frame *child = top(r);
    ENG_ASSERT(r->depth >= 2);
    struct pol_frame *parent = &r->frames[r->depth - 2];
    parent->sub = child->results;
    parent->sub_done = true;
    memset(child, 0, sizeof(*child));
    r->depth--;
}

static bool frame_push(struct pol_req *r, const struct pol_plugin *p)
{
    struct pol_frame *f = &r->frames[r->depth];
    ENG_ASSERT(p->depth == r->depth); /* a plugin at depth d runs its sub-chain at d + 1 */
    memset(f, 0, sizeof(*f));
    f->chain = &p->sub;
    r->depth++;
    return true;
}

/* One step of the plugin at the top of the stack. Returns true to keep running. *tick is the
 * tick clock when the step starts (0: not timing) and is set to when it ended. */
static bool step_one(struct pol_req *r, enum pol_chain_status *out, uint64_t *tick)
{
    struct pol_frame *f = top(r);
    const struct pol_plugin *p = f->chain->plugins[f->idx];
    const struct pol_plugin_type *t = p->type;
    if (!f->started) {
        f->started = true;
        f->state = NULL;
        if (t->req_state_bytes && !(f->state = pol_arena_calloc(&r->arena, t->req_state_bytes))) {
            snprintf(r->detail, sizeof(r->detail), "out of request memory");
            goto failed;
        }
    }
    enum pol_step st = t->step((struct pol_plugin *)p, r, f->state);
    if (*tick) {
        uint64_t now = pol_metrics_ticks();
        pol_metrics_plugin_step_ticks(p->metrics_slot, now - *tick);
        *tick = now;
    }
    f = top(r); /* unchanged by the step; re-read for clarity */
    f->sub_done = false;
    memset(&f->sub, 0, sizeof(f->sub));
    switch (st) {
    case POL_NEXT:
        plugin_done(f, p);
        return true;
    case POL_WAIT:
        r->phase = POL_PHASE_PLUGIN_WAIT;
        *out = POL_CHAIN_WAITING;
        return false;
    case POL_SUBCHAIN:
        return frame_push(r, p);
    case POL_FAIL:
        if (r->detail[0] == '\0')
            snprintf(r->detail, sizeof(r->detail), "failed without detail");
        goto failed;
    }
    snprintf(r->detail, sizeof(r->detail), "step returned an unknown value %d", (int)st);
failed:
    if (plugin_failed(r)) {
        *out = POL_CHAIN_FAILED;
        return false;
    }
    return true;
}

enum pol_chain_status pol_chain_run(struct pol_req *r)
{
    ENG_ASSERT(r->frames != NULL);
    r->phase = POL_PHASE_RUNNING;
    enum pol_chain_status out = POL_CHAIN_DONE;
    /* Always-on profiling (what 2.05's debug Profiler did) while metrics are served: each step
     * is timed on the cheap tick clock of metrics.c, one read per step (a step's end is the
     * next one's start; the runner's bookkeeping in between is charged to the next step).
     * clock_gettime costs ~100 ns on a KVM guest: two per step were measurable. */
    uint64_t tick = pol_metrics_enabled() ? pol_metrics_ticks() : 0;
    for (;;) {
        struct pol_frame *f = top(r);
        if (f->idx >= f->chain->count) {
            if (r->depth == 1) {
                r->last_match = f->last_match;
                return POL_CHAIN_DONE;
            }
            frame_pop(r);
            continue;
        }
        if (++r->steps > POL_REQ_STEPS_MAX) {
            snprintf(r->detail, sizeof(r->detail), "more than %u steps in one request",
                     POL_REQ_STEPS_MAX);
            if (plugin_failed(r))
                return POL_CHAIN_FAILED;
            continue;
        }
        if (!step_one(r, &out, &tick))
            return out;
    }
}

const struct pol_res_list *pol_chain_results(const struct pol_req *r)
{
    return &r->frames[0].results;
}

/* ---------------------------------------------------------------------------------------------
 * Plugin API (pol/plugin.h)
 */

int pol_result(struct pol_req *r, const char *action, size_t len, bool abort)
{
    ENG_ASSERT(r->depth >= 1);
    struct pol_res *x = pol_arena_alloc(&r->arena, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->next = NULL;
    x->action = NULL;
    x->len = 0;
    x->abort = abort;
    if (action) {
        if (len > UINT32_MAX || !(x->action = pol_arena_strndup(&r->arena, action, len)))
            return -ENOMEM;
        x->len = (uint32_t)len;
    }
    struct pol_res_list *l = &top(r)->pending;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->count++;
    return 0;
}

int pol_resultf(struct pol_req *r, bool abort, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(buf))
        return pol_result(r, buf, (size_t)n, abort);
    /* Longer than the stack buffer: format straight into the arena. */
    char *p = pol_arena_alloc(&r->arena, (size_t)n + 1);
    if (!p)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return pol_result(r, p, (size_t)n, abort);
}

int pol_result_header_once(struct pol_req *r, bool already_done, const char *name,
                           const char *value)
{
    if (already_done)
        return pol_result(r, "dunno", 5, true);
    return pol_resultf(r, true, "PREPEND %s: %s", name, value ? value : "");
}

enum pol_step pol_req_fail(struct pol_req *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
    if (n <= 0)
        snprintf(r->detail, sizeof(r->detail), "failed without detail");
    return POL_FAIL;
}

bool pol_req_subchain_done(const struct pol_req *r)
{
    return top(r)->sub_done;
}

void pol_req_adopt_subchain(struct pol_req *r)
{
    struct pol_frame *f = top(r);
    list_append(&f->pending, &f->sub);
}

char *pol_req_subchain_actions(struct pol_req *r, const char *sep)
{
    struct pol_frame *f = top(r);
    size_t sl = sep ? strlen(sep) : 0, n = 0, k = 0;
    for (const struct pol_res *x = f->sub.head; x; x = x->next)
        if (x->action)
            n += x->len + (k++ ? sl : 0);
    if (k == 0)
        return NULL;
    char *out = pol_arena_alloc(&r->arena, n + 1), *p = out;
    if (!out)
        return NULL;
    k = 0;
    for (const struct pol_res *x = f->sub.head; x; x = x->next) {
        if (!x->action)
            continue;
        if (k++ && sl) {
            memcpy(p, sep, sl);
            p += sl;
        }
        memcpy(p, x->action, x->len);
        p += x->len;
    }
    *p = '\0';
    return out;
}
