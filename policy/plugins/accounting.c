/*
 * accounting.c: the Accounting plugin (spec 13.1): per mail (flag NAME-acct), adds count,
 * count_rcpt, size and size_rcpt to the row (attribute value, time bucket) of the table
 * table_prefix + FIELD for every attribute listed in `fields` that the request carries. Never
 * returns a result.
 *
 * Unlike 2.05, which ran an UPDATE (then an INSERT) per field per mail, the counts go to the
 * connection's accounting store (acct_store.h): aggregated in memory on the key's owner shard
 * and written by one multi-row upsert per table every flush_interval. The step waits only for
 * the owner's acknowledgement (a cross-shard message), never for the database. Options beyond
 * 2.05's: flush_interval (seconds, default 1), buffer_rows (rows per table and shard held
 * unflushed, default 4096), spill_dir (where counts go while the database refuses them,
 * default none). Tables are created when missing (appendix B; PostgreSQL's are ours) with a
 * unique (key, time) index: SQLite's at start-up, PostgreSQL's and MySQL's by each shard
 * before its first flush, retried while the database is down (acct_ddl.h), so neither start
 * nor --check needs the server; counts wait in memory until the table is there.
 *
 * Keys longer than 255 bytes, with a NUL byte, or (PostgreSQL) not valid UTF-8 cannot be
 * stored in the key column: they are skipped and logged (2.05 would have failed the request
 * on MySQL and PostgreSQL, and stored them on SQLite). Owns its plugin data (create ..
 * destroy) and a small per-shard cache of the time bucket.
 */
#include "plugins/acct.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "plugins/acct_spill.h"
#include "plugins/acct_store.h"
#include "pol/sql.h"

/* Fields one Accounting plugin may list. */
#define ACCT_FIELDS_MAX 32u
#define ACCT_FLUSH_INTERVAL_S_MAX 3600.0
#define ACCT_FLUSH_INTERVAL_S_MIN 0.01

enum {
    OPT_FIELDS,
    OPT_TIME_PATTERN,
    OPT_TABLE_PREFIX,
    OPT_ENABLED,
    OPT_DB,
    OPT_MYSQL_ENGINE,
    OPT_FLUSH_INTERVAL,
    OPT_BUFFER_ROWS,
    OPT_SPILL_DIR,
    OPT_COUNT,
};

static const struct pol_opt_def accounting_opts[] = {
    [OPT_FIELDS] = {"fields", POL_OPT_LIST, NULL, POL_OPT_REQUIRED},
    [OPT_TIME_PATTERN] = {"time_pattern", POL_OPT_STRING, "%Y-%m", 0},
    [OPT_TABLE_PREFIX] = {"table_prefix", POL_OPT_STRING, "acct_", 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_DB] = {"db", POL_OPT_STRING, "db", 0},
    [OPT_MYSQL_ENGINE] = {"mysql_engine", POL_OPT_STRING, "MyISAM",
                          0}, /* MySQL: CREATE TABLE's ENGINE */
    [OPT_FLUSH_INTERVAL] = {"flush_interval", POL_OPT_NUMBER, "1", 0},
    [OPT_BUFFER_ROWS] = {"buffer_rows", POL_OPT_INT, "4096", 0},
    [OPT_SPILL_DIR] = {"spill_dir", POL_OPT_STRING, NULL, 0},
};
_Static_assert(sizeof accounting_opts / sizeof accounting_opts[0] == OPT_COUNT,
               "one def per option");

struct acct_plugin {
    struct pol_acct_store *store;
    bool utf8_keys; /* PostgreSQL, MySQL: keys must be valid UTF-8 */
    char *flag;     /* NAME-acct */
    size_t field_count;
    int tables[ACCT_FIELDS_MAX];
};

/* Per shard: the time bucket of the current second. */
struct acct_shard_data {
    time_t sec;
    int len; /* -1: not computed, or the pattern's output is too long */
    char bucket[POL_ACCT_TIME_BYTES_MAX + 1];
};

struct acct_req {
    struct pol_acct_wait wait;
    bool waited;
};

/* ---------------------------------------------------------------------------------------------
 * Plugin
 */

static void acct_destroy(struct pol_plugin *p)
{
    struct acct_plugin *a = pol_plugin_data(p);
    if (!a)
        return;
    pol_acct_store_release(a->store);
    free(a->flag);
    free(a);
    pol_plugin_set_data(p, NULL);
}

static int opts_check(struct pol_plugin *p, struct pol_acct_store_opts *o, char *err,
                      size_t err_len)
{
    double fi = pol_opt(p, OPT_FLUSH_INTERVAL)->num;
    if (!(fi >= ACCT_FLUSH_INTERVAL_S_MIN && fi <= ACCT_FLUSH_INTERVAL_S_MAX)) {
        snprintf(err, err_len, "flush_interval must be between %g and %g seconds",
                 ACCT_FLUSH_INTERVAL_S_MIN, ACCT_FLUSH_INTERVAL_S_MAX);
        return -1;
    }
    long long rows = pol_opt(p, OPT_BUFFER_ROWS)->i;
    if (rows < 16 || rows > POL_ACCT_ROWS_MAX) {
        snprintf(err, err_len, "buffer_rows must be between 16 and %u", POL_ACCT_ROWS_MAX);
        return -1;
    }
    char bucket[POL_ACCT_TIME_BYTES_MAX + 1];
    if (pol_acct_bucket(pol_opt(p, OPT_TIME_PATTERN)->text, time(NULL), bucket) < 0) {
        snprintf(err, err_len, "time_pattern gives more than %u bytes", POL_ACCT_TIME_BYTES_MAX);
        return -1;
    }
    const struct pol_opt_value *sd = pol_opt(p, OPT_SPILL_DIR);
    o->flush_interval_ms = (uint32_t)lround(fi * 1000.0);
    o->buffer_rows = (uint32_t)rows;
    o->spill_dir = sd->set ? sd->text : NULL;
    if (o->spill_dir && o->spill_dir[0] != '/') {
        snprintf(err, err_len, "spill_dir must be an absolute path");
        return -1;
    }
    return 0;
}

static int tables_add(struct pol_plugin *p, struct acct_plugin *a,
                      const struct pol_acct_store_opts *o, char *err, size_t err_len)
{
    const struct pol_list *fields = &pol_opt(p, OPT_FIELDS)->list;
    if (fields->count > ACCT_FIELDS_MAX) {
        snprintf(err, err_len, "at most %u fields", ACCT_FIELDS_MAX);
        return -1;
    }
    const char *prefix = pol_opt(p, OPT_TABLE_PREFIX)->text;
    for (size_t i = 0; i < fields->count; i++) {
        char table[POL_ACCT_TABLE_BYTES_MAX + 2];
        int n = snprintf(table, sizeof(table), "%s%s", prefix, fields->items[i]);
        if (n < 0 || (size_t)n > POL_ACCT_TABLE_BYTES_MAX) {
            snprintf(err, err_len, "table name %s%s is longer than %u bytes", prefix,
                     fields->items[i], POL_ACCT_TABLE_BYTES_MAX);
            return -1;
        }
        a->tables[i] = pol_acct_store_add_table(a->store, table, true, o, err, err_len);
        if (a->tables[i] < 0)
            return -1;
    }
    a->field_count = fields->count;
    return 0;
}

static int acct_create(struct pol_plugin *p, char *err, size_t err_len)
{
    struct pol_acct_store_opts o;
    if (opts_check(p, &o, err, err_len) != 0)
        return -1;
    const char *db_name = pol_opt(p, OPT_DB)->text;
    struct pol_sql *db = pol_sql_lookup(p, db_name, err, err_len);
    if (!db)
        return -1;
    struct acct_plugin *a = calloc(1, sizeof(*a));
    size_t nl = strlen(pol_plugin_name(p));
    if (a)
        a->flag = malloc(nl + sizeof("-acct"));
    if (!a || !a->flag) {
        free(a);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    memcpy(a->flag, pol_plugin_name(p), nl);
    memcpy(a->flag + nl, "-acct", sizeof("-acct"));
    pol_plugin_set_data(p, a);
    a->store = pol_acct_store_acquire(db, db_name, err, err_len);
    if (a->store)
        pol_acct_store_mysql_engine(a->store, pol_opt(p, OPT_MYSQL_ENGINE)->text);
    if (!a->store || tables_add(p, a, &o, err, err_len) != 0) {
        acct_destroy(p);
        return -1;
    }
    /* PostgreSQL refuses invalid UTF-8, and so does MySQL on its utf8mb4 connection: refuse such
     * a key in its own request instead of failing the whole flush batch it would join. */
    a->utf8_keys = pol_sql_driver_of(db) == POL_SQL_PG || pol_sql_driver_of(db) == POL_SQL_MYSQL;
    return 0;
}

static int acct_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                            char *err, size_t err_len)
{
    struct acct_plugin *a = pol_plugin_data(p);
    struct acct_shard_data *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    d->len = -1;
    if (pol_acct_store_shard_start(a->store, sh, err, err_len) != 0) {
        free(d);
        return -1;
    }
    *shard_data = d;
    return 0;
}

static void acct_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    struct acct_plugin *a = pol_plugin_data(p);
    pol_acct_store_shard_stop(a->store, sh);
    free(shard_data);
}

/* The bucket of now, computed at most once a second per shard. */
static int bucket_now(struct pol_plugin *p, struct acct_shard_data *d, const char **out)
{
    time_t now = time(NULL);
    if (d->sec != now || d->len < 0) {
        d->sec = now;
        d->len = pol_acct_bucket(pol_opt(p, OPT_TIME_PATTERN)->text, now, d->bucket);
    }
    *out = d->bucket;
    return d->len;
}

static enum pol_step acct_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct acct_req *st = req_state;
    if (st->waited)
        return POL_NEXT; /* every owner acknowledged */
    struct acct_plugin *a = pol_plugin_data(p);
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    if (pol_req_is_already_done(r, a->flag)) {
        pol_log(p, r, "accounting already done for this mail, skipping...");
        return POL_NEXT;
    }
    size_t size_len = 0, rcpt_len = 0;
    const char *size = pol_req_attr(r, "size", &size_len);
    const char *rcpt = pol_req_attr(r, "recipient_count", &rcpt_len);
    uint64_t m[POL_ACCT_METRICS];
    pol_acct_metrics_of(size, size_len, rcpt, rcpt_len, m);
    const char *bucket = NULL;
    int blen = bucket_now(p, pol_plugin_shard_data(p, r), &bucket);
    if (blen < 0)
        return pol_req_fail(r, "time_pattern gives more than %u bytes", POL_ACCT_TIME_BYTES_MAX);
    const struct pol_list *fields = &pol_opt(p, OPT_FIELDS)->list;
    for (size_t i = 0; i < a->field_count; i++) {
        const char *field = fields->items[i];
        size_t kl = 0;
        const char *key = pol_req_attr(r, field, &kl);
        if (!key || pol_acct_blank(key, kl)) {
            pol_log(p, r, "%s not defined in request, skipping...", field);
            continue;
        }
        const char *why = pol_acct_key_problem(key, kl, a->utf8_keys);
        if (why) {
            pol_log_at(ENG_LOG_WARNING, p, r, "value of %s %s: not counted", field, why);
            continue;
        }
        pol_log(p, r, "updating accounting info for %s %.*s", field, (int)kl, key);
        pol_acct_store_add(a->store, r, &st->wait, a->tables[i], key, kl, bucket, (size_t)blen, m);
    }
    if (st->wait.pending == 0)
        return POL_NEXT;
    st->waited = true;
    return POL_WAIT;
}

const struct pol_plugin_type pol_type_Accounting = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "Accounting",
    .opts = accounting_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct acct_req),
    .create = acct_create,
    .shard_start = acct_shard_start,
    .shard_stop = acct_shard_stop,
    .step = acct_step,
    .destroy = acct_destroy,
};
