/*
 * metrics.h: ringpolicyd's metrics in the Prometheus text format 0.0.4 (internal to policy/;
 * served on GET /metrics of http_port by daemon.c).
 *
 * Counting is per shard and single-writer: each shard has its own block (struct
 * pol_metrics_shard, allocated at shard start) and bumps its counters with relaxed atomic
 * stores of a plain increment (a plain mov on x86: no lock prefix, no shared cache line with
 * other shards). A scrape, on whichever shard the HTTP connection landed, reads every shard's
 * block with relaxed loads and sums. Values a shard keeps in plain structures (pol_shard_stats,
 * the session cache's counters) are copied into its block once a second by
 * pol_metrics_shard_snapshot, so those lag by up to a second.
 *
 * Series are labelled by virtual host and plugin *names*, so they survive a reload: the main
 * thread gives every vhost and plugin of a newly loaded server a slot (pol_metrics_assign,
 * stored in pol_vhost.metrics_slot / pol_plugin.metrics_slot) in an append-only name table of
 * POL_METRICS_VHOSTS_MAX / POL_METRICS_PLUGINS_MAX entries; names past the table are counted
 * in the series of vhost "_other" / plugin "_other".
 *
 * Registration API for modules and plugins (connection modules, accounting, DNS): a module
 * registers a collector on the main thread (open, create); at every scrape the collector runs
 * on the scraping shard's thread and appends its own families with the pol_metrics_write_*
 * helpers. It must read other shards' data only through single-writer counters read with
 * relaxed loads (or snapshots), never take a lock, never block. A module unregisters on the
 * main thread in its close/destroy; the reload and stop paths run a barrier on every shard
 * (eng_run_on_shards) before anything is freed, so no scrape still uses ctx then.
 */
#ifndef POL_METRICS_H
#define POL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"
#include "eng/http.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;
struct pol_shard_stats;
struct pol_sstore_stats;

#define POL_METRICS_VHOSTS_MAX 64u
#define POL_METRICS_PLUGINS_MAX 512u
#define POL_METRICS_NAME_BYTES 64u /* longer names are cut */
#define POL_METRICS_COLLECTORS_MAX 32u
/* Latency histogram bounds in microseconds (the +Inf bucket comes after them). */
#define POL_METRICS_LAT_BOUNDS 14u

/* Postfix access(5) action words, the label of replies (first word of the first action). */
enum pol_metrics_action {
    POL_MA_OK,
    POL_MA_DUNNO,
    POL_MA_REJECT,
    POL_MA_DEFER,
    POL_MA_DEFER_IF_REJECT,
    POL_MA_DEFER_IF_PERMIT,
    POL_MA_PREPEND,
    POL_MA_HOLD,
    POL_MA_DISCARD,
    POL_MA_FILTER,
    POL_MA_REDIRECT,
    POL_MA_WARN,
    POL_MA_INFO,
    POL_MA_BCC,
    POL_MA_4XX, /* a numeric 4xx code */
    POL_MA_5XX, /* a numeric 5xx code (and 2xx, which Postfix reads as OK: counted here too) */
    POL_MA_OTHER,
    POL_MA_COUNT
};

/* The action word of an action text (e.g. "REJECT blocked" -> POL_MA_REJECT). Pure. */
enum pol_metrics_action pol_metrics_action_of(const char *action, size_t len);
const char *pol_metrics_action_name(enum pol_metrics_action a);

/* Global state (main thread): init before shards start, fini after they stopped. Returns 0 or
 * -ENOMEM. eng may be NULL (tests): then no engine families are written. Calibrates the tick
 * clock (about 20 ms). A shard without pol_metrics_shard_start (the daemon without http_port)
 * counts nothing and times nothing. */
int pol_metrics_init(unsigned shard_count, struct eng *e);
void pol_metrics_fini(void);

/* Main thread: slots for every vhost and plugin of s (before shards use s). */
void pol_metrics_assign(struct pol_server *s);

/* On shard index's thread (shard_start / shard_stop). 0 or -ENOMEM. */
int pol_metrics_shard_start(struct eng_shard *sh, unsigned index);
void pol_metrics_shard_stop(unsigned index);

/* Request path, on the calling shard (no-ops on a thread without a block, e.g. tests). */
bool pol_metrics_enabled(void); /* this thread has a block */
void pol_metrics_request(uint32_t vhost_slot);
void pol_metrics_reply(uint32_t vhost_slot, const char *action, size_t len, uint64_t latency_us);
void pol_metrics_failure(uint32_t vhost_slot, bool timeout, uint64_t latency_us);
void pol_metrics_plugin_step(uint32_t plugin_slot, uint64_t us);
/* A cheap monotonic tick counter for timing plugin steps: the TSC on x86-64 when the CPU says
 * it is invariant (calibrated against CLOCK_MONOTONIC in pol_metrics_init), else microseconds
 * from clock_gettime. plugin_step_ticks converts a difference and records it. */
uint64_t pol_metrics_ticks(void);
void pol_metrics_plugin_step_ticks(uint32_t plugin_slot, uint64_t ticks);
void pol_metrics_protocol_error(void);
void pol_metrics_no_vhost(void);
/* Once a second per shard: copies the shard's plain counters into its block. */
void pol_metrics_shard_snapshot(const struct pol_shard_stats *ps, const struct pol_sstore_stats *ss);

/* Main thread: a reload's outcome (ok: the new generation is in use). */
void pol_metrics_reload(bool ok);

/* Collectors (see the header comment). Register/unregister on the main thread; register
 * returns 0, -ENOSPC (POL_METRICS_COLLECTORS_MAX) or -EINVAL. */
typedef void pol_metrics_collect_fn(void *ctx, struct eng_http_body *out);
int pol_metrics_register(pol_metrics_collect_fn *fn, void *ctx);
void pol_metrics_unregister(pol_metrics_collect_fn *fn, void *ctx);

/* Per-shard sources: backend clients a module keeps on each shard (connections' clients,
 * resolvers, buffers) whose counters are plain fields written by that shard. The module adds
 * a source on the shard's thread when it creates its client there (shard_start) and removes it
 * there before destroying it (shard_stop). Once a second (the daemon's snapshot timer, on the
 * same thread) fn copies the client's counters into values[0..field_count) and they are stored
 * into the shard's block with relaxed stores; a scrape sums every shard's values per family
 * and label value. fn is never called on another thread, nor after remove. Counters survive a
 * reload: a removed source's last counter values are kept and added to the next source of the
 * same desc and label value on that shard (the new generation's client), so the series keeps
 * growing; gauges read 0 once removed.
 *
 * desc must have static storage in the executable (the scrape reads its names on any thread
 * for the life of the process); the label value is copied (cut at POL_METRICS_NAME_BYTES).
 * Both return 0 and do nothing on a thread without a metrics block (no http_port, tests);
 * add returns -ENOSPC past POL_METRICS_SOURCES_MAX entries on the shard, -EINVAL for a bad
 * desc. */
#define POL_METRICS_SOURCES_MAX 64u
#define POL_METRICS_SOURCE_FIELDS_MAX 24u

struct pol_metrics_field {
    const char *name; /* the family, e.g. "ringpolicyd_pg_queries_total" */
    const char *help;
    bool gauge;       /* else a counter */
    bool max;         /* a gauge summed over shards as the largest (e.g. a high-water mark) */
};

struct pol_metrics_source_desc {
    const char *label_key; /* e.g. "connection" */
    const struct pol_metrics_field *fields;
    unsigned field_count; /* 1..POL_METRICS_SOURCE_FIELDS_MAX */
};

typedef void pol_metrics_snap_fn(void *ctx, uint64_t *values);
int pol_metrics_source_add(const struct pol_metrics_source_desc *desc, const char *label_value,
                           pol_metrics_snap_fn *fn, void *ctx);
void pol_metrics_source_remove(void *ctx);

/* Writing families. labels is "" or `name="value",...` already escaped (pol_metrics_label). */
void pol_metrics_write_head(struct eng_http_body *out, const char *name, const char *type,
                            const char *help);
void pol_metrics_write_value(struct eng_http_body *out, const char *name, const char *labels,
                             uint64_t value);
/* Appends `key="value"` (value escaped as the text format wants: \\, \", \n) to buf. */
void pol_metrics_label(char *buf, size_t buf_len, const char *key, const char *value);

/* The whole exposition: our families, the engine's, then every collector's. */
void pol_metrics_write(struct eng_http_body *out);

#ifdef __cplusplus
}
#endif

#endif
