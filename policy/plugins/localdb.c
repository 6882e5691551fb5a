/*
 * localdb.c: what PostfixMap and SaAwlLookup share (localdb.h): the map's spec as plugin data,
 * a handle per shard, and the bounded wait on an engine timer while postmap holds the file.
 *
 * Owns: the spec (create .. destroy) and each shard's struct ldb_shard (shard_start ..
 * shard_stop). A waiting request keeps only its timer, in its own req_state; the timer always
 * fires (it is never cancelled), and pol_req_resume copes with a request that timed out
 * meanwhile.
 */
#include "plugins/localdb.h"

#include "plugins/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>

int ldb_plugin_map_create(struct pol_plugin *p, unsigned db_idx, bool prefixes, char *err,
                          size_t err_len)
{
    struct ldb_map_spec *spec = malloc(sizeof *spec);
    if (spec == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    struct ldb_map *trial = NULL;
    if (ldb_map_spec_parse(pol_opt(p, db_idx)->text, prefixes, spec, err, err_len) != 0 ||
        ldb_map_open(spec, &trial, err, err_len) != 0) {
        free(spec);
        return -1;
    }
    ldb_map_close(trial, NULL);
    pol_plugin_set_data(p, spec);
    return 0;
}

void ldb_plugin_map_destroy(struct pol_plugin *p)
{
    free(pol_plugin_data(p));
    pol_plugin_set_data(p, NULL);
}

int ldb_plugin_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                           size_t err_len)
{
    (void)sh;
    const struct ldb_map_spec *spec = pol_plugin_data(p);
    ENG_ASSERT(spec != NULL);
    struct ldb_shard *sd = malloc(sizeof *sd);
    if (sd == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (ldb_map_open(spec, &sd->map, err, err_len) != 0) {
        free(sd);
        return -1;
    }
    *shard_data = sd;
    return 0;
}

void ldb_plugin_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    (void)sh;
    struct ldb_shard *sd = shard_data;
    if (sd == NULL)
        return;
    ldb_map_close(sd->map, pol_plugin_name(p));
    free(sd);
}

static void busy_retry_done(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct ldb_wait *w = (struct ldb_wait *)((char *)t - offsetof(struct ldb_wait, timer));
    ENG_ASSERT(w->r != NULL);
    pol_req_resume(w->r);
}

struct ldb_shard *ldb_plugin_begin(struct pol_plugin *p, struct pol_req *r, struct ldb_wait *w,
                                   enum pol_step *step)
{
    struct ldb_shard *sd = pol_plugin_shard_data(p, r);
    ENG_ASSERT(sd != NULL);
    struct eng_shard *sh = pol_req_shard(r);
    uint64_t now_ms = sh != NULL ? eng_now_ms(sh) : eng_clock_ms();
    char why[512] = "";
    enum ldb_status st = ldb_map_begin(sd->map, now_ms, why, sizeof why);
    if (st == LDB_OK)
        return sd;
    if (st == LDB_BUSY && sh != NULL && w->waited_ms < LDB_BUSY_WAIT_MS_MAX) {
        w->r = r;
        w->waited_ms += LDB_BUSY_RETRY_MS;
        eng_timer_init(&w->timer, busy_retry_done);
        eng_timer_arm(sh, &w->timer, LDB_BUSY_RETRY_MS);
        *step = POL_WAIT;
        return NULL;
    }
    if (st == LDB_BUSY)
        *step = pol_req_fail(r, "%s is locked by a writer (postmap?) for more than %u ms",
                             ((const struct ldb_map_spec *)pol_plugin_data(p))->path, w->waited_ms);
    else
        *step = pol_req_fail(r, "%s", why);
    return NULL;
}

static bool text_is(const char *s, size_t len, const char *literal)
{
    return len == strlen(literal) && memcmp(s, literal, len) == 0;
}

enum pol_step ldb_plugin_mode_result(struct pol_plugin *p, struct pol_req *r, unsigned mode_idx,
                                     unsigned msg_idx, const struct pol_tvar *vars,
                                     size_t var_count)
{
    size_t mode_len = 0;
    const char *mode = pol_uc(r, p, mode_idx, &mode_len);
    if (mode == NULL)
        return POL_NEXT;
    if (text_is(mode, mode_len, "reject")) {
        const char *msg = pol_template_expand(r, pol_opt(p, msg_idx)->text, vars, var_count);
        const char *action = msg != NULL ? pol_req_printf(r, "reject %s", msg) : NULL;
        if (action == NULL)
            return pol_req_fail(r, "out of memory");
        return pol_builtin_result(r, action, strlen(action));
    }
    if (text_is(mode, mode_len, "accept") || text_is(mode, mode_len, "dunno"))
        return pol_builtin_result(r, "dunno", 5);
    return POL_NEXT;
}
