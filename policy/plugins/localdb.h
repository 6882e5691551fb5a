/*
 * localdb.h: the local-database plugins (GeoIPLookup, GeoIPAction, PostfixMap, SaAwlLookup,
 * SaAwlAction; spec 13.10, 13.11, 13.15, 13.23, 13.24): their types, listed by builtin.c, and
 * what PostfixMap and SaAwlLookup share around a key/value file (ldb_map.h): the file checked
 * and opened at start-up, one handle per shard, and the wait while postmap rewrites it.
 *
 * Threads: create/destroy on the main thread; the shard helpers on the shard they are given;
 * ldb_plugin_begin inside a step. Internal to policy/plugins/.
 */
#ifndef POL_PLUGINS_LOCALDB_H
#define POL_PLUGINS_LOCALDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pol/plugin.h"
#include "plugins/ldb_map.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const struct pol_plugin_type pol_type_GeoIPAction;
extern const struct pol_plugin_type pol_type_GeoIPLookup;
extern const struct pol_plugin_type pol_type_PostfixMap;
extern const struct pol_plugin_type pol_type_SaAwlAction;
extern const struct pol_plugin_type pol_type_SaAwlLookup;

/* How long a lookup waits, in steps of LDB_BUSY_RETRY_MS on an engine timer (the shard goes
 * on meanwhile), for postmap to finish rewriting a hash: file before the plugin fails. Well
 * inside the default request_timeout (20 s); a large map rewrites in about a second. */
#define LDB_BUSY_WAIT_MS_MAX 3000u
#define LDB_BUSY_RETRY_MS 20u

/* Per-request state of a plugin reading a map: the retry timer. Zeroed by the chain. */
struct ldb_wait {
    struct eng_timer timer;
    struct pol_req *r;
    uint32_t waited_ms;
};

/* Per-shard data: the shard's handle and a buffer for the values it returns. */
struct ldb_shard {
    struct ldb_map *map;
    char val[LDB_VALUE_BYTES_MAX + 1];
};

/* create: parses option db_idx into a spec (ldb_map_spec_parse), opens the file once to refuse
 * a bad one at start-up, and keeps the spec as the plugin's data. 0, or -1 with err. */
int ldb_plugin_map_create(struct pol_plugin *p, unsigned db_idx, bool prefixes, char *err,
                          size_t err_len);
void ldb_plugin_map_destroy(struct pol_plugin *p);
/* shard_start / shard_stop of such a plugin. */
int ldb_plugin_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                           size_t err_len);
void ldb_plugin_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data);

/* Starts the lookups of one step (ldb_map_begin). Returns the shard's data ready to use (call
 * ldb_map_end(sd->map) when done), or NULL with the step to return in *step: POL_WAIT while a
 * writer holds the file (a timer resumes the request; at most LDB_BUSY_WAIT_MS_MAX in all, and
 * never in the testkit, which has no timers), else POL_FAIL with the reason. */
struct ldb_shard *ldb_plugin_begin(struct pol_plugin *p, struct pol_req *r, struct ldb_wait *w,
                                   enum pol_step *step);

/* The `mode` of GeoIPAction and SaAwlAction (spec 12.8): the effective value of option
 * mode_idx "reject" → "reject MESSAGE" (option msg_idx's template expanded with vars);
 * "accept" or "dunno" → "dunno"; anything else (passive) nothing. Both results abort. */
enum pol_step ldb_plugin_mode_result(struct pol_plugin *p, struct pol_req *r, unsigned mode_idx,
                                     unsigned msg_idx, const struct pol_tvar *vars,
                                     size_t var_count);

#ifdef __cplusplus
}
#endif

#endif
