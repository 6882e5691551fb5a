/*
 * quota.c: the Quota plugin (spec 13.17, 16 #8): when the Accounting counter `metric` of the
 * row (value of attribute `field`, current time bucket) in table_prefix + field reaches
 * `threshold`, returns `action`; when the block has nested plugins and no action is given
 * (neither in the block nor through uc_action), runs them instead. field, metric, threshold,
 * action and enabled are user-configurable.
 *
 * The value is the database's plus this daemon's counts not yet flushed, from the
 * connection's accounting store (acct_store.h): the owner shard of the key answers from its
 * cache (refreshed when older than cache_ttl seconds, default 1, a ringpolicyd option) so a
 * check costs no database round trip on the hot path. A table no Accounting plugin of this
 * daemon writes (e.g. a field from uc_field) is read directly, one SELECT per check, as 2.05
 * does. A missing table or any SQL error fails the plugin (2.05). Metric names other than the
 * four counters are refused at start-up (2.05 failed every request).
 */
#include "plugins/acct.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <eng/assert.h>

#include "plugins/acct_spill.h"
#include "plugins/acct_sql.h"
#include "plugins/acct_store.h"
#include "plugins/common.h"
#include "pol/sql.h"

#define QUOTA_CACHE_TTL_S_MAX 3600.0

enum {
    OPT_FIELD,
    OPT_METRIC,
    OPT_THRESHOLD,
    OPT_ACTION,
    OPT_TIME_PATTERN,
    OPT_TABLE_PREFIX,
    OPT_ENABLED,
    OPT_DB,
    OPT_MYSQL_ENGINE,
    OPT_CACHE_TTL,
    OPT_COUNT,
};

static const struct pol_opt_def quota_opts[] = {
    [OPT_FIELD] = {"field", POL_OPT_STRING, NULL, POL_OPT_REQUIRED | POL_OPT_UC},
    [OPT_METRIC] = {"metric", POL_OPT_STRING, NULL, POL_OPT_REQUIRED | POL_OPT_UC},
    [OPT_THRESHOLD] = {"threshold", POL_OPT_INT, NULL, POL_OPT_REQUIRED | POL_OPT_UC},
    [OPT_ACTION] = {"action", POL_OPT_STRING, "defer smtp traffic quota has been exceeded",
                    POL_OPT_UC},
    [OPT_TIME_PATTERN] = {"time_pattern", POL_OPT_STRING, "%Y-%m", 0},
    [OPT_TABLE_PREFIX] = {"table_prefix", POL_OPT_STRING, "acct_", 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_DB] = {"db", POL_OPT_STRING, "db", 0},
    [OPT_MYSQL_ENGINE] = {"mysql_engine", POL_OPT_STRING, "MyISAM", 0}, /* accepted, unused */
    [OPT_CACHE_TTL] = {"cache_ttl", POL_OPT_NUMBER, "1", 0},
};
_Static_assert(sizeof quota_opts / sizeof quota_opts[0] == OPT_COUNT, "one def per option");

struct quota_plugin {
    struct pol_sql *db;
    struct pol_acct_store *store;
    uint64_t ttl_ms;
};

enum quota_phase {
    QUOTA_START,
    QUOTA_STORE,  /* waiting for the owner shard */
    QUOTA_DIRECT, /* waiting for a SELECT */
};

struct quota_req {
    struct pol_acct_query q; /* QUOTA_STORE */
    enum quota_phase phase;
    struct pol_req *r;
    bool direct_failed; /* QUOTA_DIRECT results */
    uint64_t direct_value;
    char direct_error[256];
};

static void quota_destroy(struct pol_plugin *p)
{
    struct quota_plugin *q = pol_plugin_data(p);
    if (!q)
        return;
    pol_acct_store_release(q->store);
    free(q);
    pol_plugin_set_data(p, NULL);
}

static int quota_create(struct pol_plugin *p, char *err, size_t err_len)
{
    const struct pol_opt_value *metric = pol_opt(p, OPT_METRIC);
    if (pol_acct_metric_of(metric->text, metric->text_len) < 0) {
        snprintf(err, err_len, "metric must be count, count_rcpt, size or size_rcpt, not %s",
                 metric->text);
        return -1;
    }
    double ttl = pol_opt(p, OPT_CACHE_TTL)->num;
    if (!(ttl >= 0 && ttl <= QUOTA_CACHE_TTL_S_MAX)) {
        snprintf(err, err_len, "cache_ttl must be between 0 and %g seconds", QUOTA_CACHE_TTL_S_MAX);
        return -1;
    }
    char bucket[POL_ACCT_TIME_BYTES_MAX + 1];
    if (pol_acct_bucket(pol_opt(p, OPT_TIME_PATTERN)->text, time(NULL), bucket) < 0) {
        snprintf(err, err_len, "time_pattern gives more than %u bytes", POL_ACCT_TIME_BYTES_MAX);
        return -1;
    }
    const char *db_name = pol_opt(p, OPT_DB)->text;
    struct pol_sql *db = pol_sql_lookup(p, db_name, err, err_len);
    if (!db)
        return -1;
    struct quota_plugin *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    q->db = db;
    q->ttl_ms = (uint64_t)(ttl * 1000.0);
    pol_plugin_set_data(p, q);
    /* The configured field's table, so that its checks are served from the store; the table
     * itself belongs to Accounting (2.05's Quota never creates it). */
    char table[POL_ACCT_TABLE_BYTES_MAX + 2];
    int n = snprintf(table, sizeof(table), "%s%s", pol_opt(p, OPT_TABLE_PREFIX)->text,
                     pol_opt(p, OPT_FIELD)->text);
    q->store = pol_acct_store_acquire(db, db_name, err, err_len);
    if (!q->store || (n > 0 && (size_t)n <= POL_ACCT_TABLE_BYTES_MAX &&
                      pol_acct_store_add_table(q->store, table, false, NULL, err, err_len) < 0)) {
        quota_destroy(p);
        return -1;
    }
    return 0;
}

static int quota_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                             char *err, size_t err_len)
{
    struct quota_plugin *q = pol_plugin_data(p);
    *shard_data = NULL;
    return pol_acct_store_shard_start(q->store, sh, err, err_len);
}

static void quota_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    (void)shard_data;
    struct quota_plugin *q = pol_plugin_data(p);
    pol_acct_store_shard_stop(q->store, sh);
}

/* ---------------------------------------------------------------------------------------------
 * A table this daemon does not write: one SELECT, as 2.05
 */

static void direct_done(void *ctx, const struct pol_sql_result *res)
{
    struct quota_req *st = ctx;
    if (res->status < 0) {
        st->direct_failed = true;
        snprintf(st->direct_error, sizeof(st->direct_error), "%s",
                 res->error ? res->error : "unknown error");
    } else if (res->row_count > 0 && res->col_count > 0) {
        size_t len = 0;
        const char *v = pol_sql_value(res, 0, 0, &len);
        st->direct_value = pol_acct_sql_count_of(v, len);
    }
    pol_req_resume(st->r);
}

static enum pol_step direct_start(struct pol_plugin *p, struct pol_req *r, struct quota_req *st,
                                  const char *table, const char *metric, const char *key,
                                  size_t key_len, const char *bucket, size_t bucket_len)
{
    struct quota_plugin *q = pol_plugin_data(p);
    if (!pol_req_shard(r))
        return pol_req_fail(r, "quota checks need the daemon's shards");
    char table_q[POL_ACCT_IDENT_BYTES_MAX];
    if (pol_sql_quote_ident(q->db, table, table_q, sizeof(table_q)) == 0)
        return pol_req_fail(r, "table name %s cannot be quoted", table);
    size_t sql_bytes = 128 + strlen(table_q);
    char *sql = pol_req_alloc(r, sql_bytes);
    const char **params = pol_req_alloc(r, 2 * sizeof(*params));
    size_t *lens = pol_req_alloc(r, 2 * sizeof(*lens));
    const char *bucket_copy = pol_req_strndup(r, bucket, bucket_len);
    if (!sql || !params || !lens || !bucket_copy)
        return pol_req_fail(r, "no memory left in the request arena for the query");
    pol_acct_sql_select_one(table_q, metric, sql, sql_bytes);
    params[0] = key; /* request attributes live as long as the request */
    lens[0] = key_len;
    params[1] = bucket_copy;
    lens[1] = bucket_len;
    st->r = r;
    st->phase = QUOTA_DIRECT;
    int rc = pol_sql_query(pol_req_shard(r), q->db, sql, params, lens, 2, 0, direct_done, st);
    if (rc < 0)
        return pol_req_fail(r, "cannot queue the query: %s", strerror(-rc));
    return POL_WAIT;
}

/* ---------------------------------------------------------------------------------------------
 * Step
 */

/* Over the limit: the action, or the nested chain (16 #8) when there is no explicit one. */
static enum pol_step over_limit(struct pol_plugin *p, struct pol_req *r)
{
    size_t len = 0;
    const char *action = pol_uc(r, p, OPT_ACTION, &len);
    const struct pol_opt_value *configured = pol_opt(p, OPT_ACTION);
    bool explicit_action = configured->file != NULL || action != configured->text;
    if (!explicit_action && pol_plugin_has_subchain(p))
        return POL_SUBCHAIN;
    return pol_builtin_result(r, action, len);
}

static enum pol_step decide(struct pol_plugin *p, struct pol_req *r, uint64_t value)
{
    bool set = false;
    double threshold = pol_uc_number(r, p, OPT_THRESHOLD, &set);
    ENG_ASSERT(set); /* required */
    /* 2.05: `$count >= $threshold`, numerically. */
    if ((double)value >= threshold)
        return over_limit(p, r);
    return POL_NEXT;
}

static enum pol_step quota_begin(struct pol_plugin *p, struct pol_req *r, struct quota_req *st)
{
    struct quota_plugin *q = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    size_t fl = 0, ml = 0, kl = 0;
    const char *field = pol_uc(r, p, OPT_FIELD, &fl);
    const char *metric = pol_uc(r, p, OPT_METRIC, &ml);
    const char *field_z = pol_req_strndup(r, field, fl);
    const char *key = field_z ? pol_req_attr(r, field_z, &kl) : NULL;
    if (!field_z)
        return pol_req_fail(r, "no memory left in the request arena");
    if (!key || pol_acct_blank(key, kl)) {
        pol_log(p, r, "field %s is empty in request. skipping quota check.", field_z);
        return POL_NEXT;
    }
    int m = pol_acct_metric_of(metric, ml);
    if (m < 0)
        return pol_req_fail(r, "unknown metric %.*s (count, count_rcpt, size or size_rcpt)",
                            (int)ml, metric);
    if (pol_acct_key_problem(key, kl, pol_sql_driver_of(q->db) == POL_SQL_PG))
        return decide(p, r, 0); /* such a key is never accounted */
    char bucket[POL_ACCT_TIME_BYTES_MAX + 1];
    int blen = pol_acct_bucket(pol_opt(p, OPT_TIME_PATTERN)->text, time(NULL), bucket);
    char *table = pol_req_printf(r, "%s%s", pol_opt(p, OPT_TABLE_PREFIX)->text, field_z);
    if (blen < 0 || !table)
        return pol_req_fail(r, blen < 0 ? "time_pattern gives too long a bucket"
                                        : "no memory left in the request arena");
    int t = pol_acct_store_find_table(q->store, table, strlen(table));
    if (t < 0)
        return direct_start(p, r, st, table, pol_acct_metric_names[m], key, kl, bucket,
                            (size_t)blen);
    if (pol_acct_store_query(q->store, r, &st->q, t, m, key, kl, bucket, (size_t)blen, q->ttl_ms) !=
        0)
        return pol_req_fail(r, "%s", st->q.error);
    st->phase = QUOTA_STORE;
    return POL_WAIT;
}

static enum pol_step quota_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct quota_req *st = req_state;
    if (pol_builtin_subchain_adopted(r))
        return POL_NEXT;
    switch (st->phase) {
    case QUOTA_START:
        return quota_begin(p, r, st);
    case QUOTA_STORE:
        ENG_ASSERT(st->q.done);
        if (st->q.failed)
            return pol_req_fail(r, "%s", st->q.error);
        return decide(p, r, st->q.value);
    case QUOTA_DIRECT:
        if (st->direct_failed)
            return pol_req_fail(r, "%s", st->direct_error);
        return decide(p, r, st->direct_value);
    }
    ENG_ASSERT(!"unknown quota phase");
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_Quota = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Quota",
    .opts = quota_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN,
    .req_state_bytes = sizeof(struct quota_req),
    .create = quota_create,
    .shard_start = quota_shard_start,
    .shard_stop = quota_shard_stop,
    .step = quota_step,
    .destroy = quota_destroy,
};
