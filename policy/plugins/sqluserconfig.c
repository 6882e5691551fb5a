/*
 * sqluserconfig.c: the SqlUserConfig plugin (spec 13.28): runs sql_query with the value of
 * attribute `field` (default recipient) bound to its `?` and copies the top-level members of
 * the JSON object in the first column of the first row into the session: strings as they are,
 * numbers as Perl prints them, true/false as 1/0, nested arrays and objects as JSON text, null
 * deletes the key (2.05 stores undef, which every reader treats as absent). Never returns a
 * result.
 *
 * As in 2.05, every problem is logged (at the plugin's log_level, "unable to retrieve
 * user-config: ...") and the chain goes on without a change: a blank attribute, no row, a
 * NULL value, invalid JSON, a JSON value that is not an object (2.05 died there; spec 13.28
 * prefers this), and also an SQL error (2.05 catches it in the same eval). The query runs
 * asynchronously (POL_WAIT); the JSON is parsed in the request arena. Owns nothing.
 *
 * cache_per_mail = 1 (ringpolicyd's own; 2.05 queries on every request): the `field` value a
 * mail's config was loaded for is kept in its session (key NAME-ucfg-HASH); a later request of the
 * same mail with the same value skips the query, the members being in the session already.
 * A row not found is remembered the same way; an SQL error is not (the next request retries).
 * Without a session cache the session lives for one request and every request queries.
 */
#include "plugins/acct.h"

#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include <eng/assert.h>

#include "pol/sql.h"

enum {
    OPT_SQL_QUERY,
    OPT_FIELD,
    OPT_DB,
    OPT_MYSQL_ENGINE,
    OPT_CACHE_PER_MAIL,
    OPT_COUNT,
};

static const struct pol_opt_def sqluserconfig_opts[] = {
    [OPT_SQL_QUERY] = {"sql_query", POL_OPT_STRING,
                       "SELECT config FROM user_config WHERE address=?", 0},
    [OPT_FIELD] = {"field", POL_OPT_STRING, "recipient", 0},
    [OPT_DB] = {"db", POL_OPT_STRING, "db", 0},
    [OPT_MYSQL_ENGINE] = {"mysql_engine", POL_OPT_STRING, "MyISAM", 0}, /* accepted, unused */
    [OPT_CACHE_PER_MAIL] = {"cache_per_mail", POL_OPT_BOOL, "0", 0},
};
_Static_assert(sizeof sqluserconfig_opts / sizeof sqluserconfig_opts[0] == OPT_COUNT,
               "one def per option");

enum ucfg_outcome {
    UCFG_NONE, /* not queried yet */
    UCFG_ROW,  /* json holds the value */
    UCFG_NO_ROW,
    UCFG_ERROR,
    UCFG_NOMEM,
};

struct ucfg_req {
    struct pol_req *r;
    const char *param;
    size_t param_len;
    enum ucfg_outcome outcome;
    const char *json; /* in the request arena */
    size_t json_len;
    char error[256];
    bool session_full;
};

static int ucfg_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return pol_acct_db_create(p, OPT_DB, err, err_len);
}

static void ucfg_done(void *ctx, const struct pol_sql_result *res)
{
    struct ucfg_req *st = ctx;
    size_t len = 0;
    const char *v = res->status >= 0 && res->row_count > 0 && res->col_count > 0
                        ? pol_sql_value(res, 0, 0, &len)
                        : NULL;
    if (res->status < 0) {
        st->outcome = UCFG_ERROR;
        snprintf(st->error, sizeof(st->error), "%s", res->error ? res->error : "unknown error");
    } else if (!v) {
        st->outcome = UCFG_NO_ROW;
    } else {
        st->json = pol_req_strndup(st->r, v, len);
        st->json_len = len;
        st->outcome = st->json ? UCFG_ROW : UCFG_NOMEM;
    }
    pol_req_resume(st->r);
}

static void *arena_alloc(void *ctx, size_t bytes)
{
    return pol_req_alloc(ctx, bytes);
}

static void member_set(void *ctx, const char *key, size_t key_len, const char *value,
                       size_t value_len)
{
    struct ucfg_req *st = ctx;
    char *k = pol_req_strndup(st->r, key, key_len);
    if (!k) {
        st->session_full = true;
        return;
    }
    if (!value) {
        pol_session_del(st->r, k);
        return;
    }
    if (pol_session_set(st->r, k, value, value_len) != 0)
        st->session_full = true;
}

/* cache_per_mail: the session key NAME-ucfg-HASH, HASH over the query, field and connection
 * (a mail's session is shared by every virtual host it passes: another SqlUserConfig of the
 * same name with another query must not take this one's marker). In the request arena; NULL
 * when it is full. */
static char *marker_key(const struct pol_plugin *p, struct pol_req *r)
{
    XXH64_hash_t h = 0;
    for (unsigned o = OPT_SQL_QUERY; o <= OPT_DB; o++) {
        const char *t = pol_opt(p, o)->text;
        h = XXH3_64bits_withSeed(t, strlen(t), h);
    }
    const char *name = pol_plugin_name(p);
    size_t n = strlen(name) + sizeof("-ucfg-") + 16;
    char *k = pol_req_alloc(r, n);
    if (k)
        snprintf(k, n, "%s-ucfg-%016llx", name, (unsigned long long)h);
    return k;
}

/* cache_per_mail: this mail's config is now loaded for st->param (best effort: a full session
 * only means the next request queries again). */
static void marker_set(const struct pol_plugin *p, struct pol_req *r, const struct ucfg_req *st)
{
    if (!pol_opt(p, OPT_CACHE_PER_MAIL)->b)
        return;
    char *k = marker_key(p, r);
    if (k)
        (void)pol_session_set(r, k, st->param, st->param_len);
}

static bool marker_matches(const struct pol_plugin *p, struct pol_req *r, const char *value,
                           size_t len)
{
    if (!pol_opt(p, OPT_CACHE_PER_MAIL)->b)
        return false;
    char *k = marker_key(p, r);
    size_t have_len = 0;
    const char *have = k ? pol_session_get(r, k, &have_len) : NULL;
    return have && have_len == len && memcmp(have, value, len) == 0;
}

static enum pol_step ucfg_apply(struct pol_plugin *p, struct pol_req *r, struct ucfg_req *st)
{
    const char *field = pol_opt(p, OPT_FIELD)->text;
    switch (st->outcome) {
    case UCFG_ERROR:
        pol_log(p, r, "unable to retrieve user-config: %s", st->error);
        return POL_NEXT;
    case UCFG_NO_ROW:
        pol_log(p, r, "unable to retrieve user-config: no user-config found for %.*s",
                (int)st->param_len, st->param);
        marker_set(p, r, st);
        return POL_NEXT;
    case UCFG_NOMEM:
        return pol_req_fail(r, "no memory left in the request arena for the user-config");
    default:
        break;
    }
    char why[256];
    int rc = pol_ucjson_members(st->json, st->json_len, arena_alloc, r, member_set, st, why,
                                sizeof(why));
    if (rc == -3)
        return pol_req_fail(r, "no memory left in the request arena for the user-config JSON");
    if (rc != 0) {
        pol_log(p, r, "unable to retrieve user-config: %s (%s %.*s)", why, field,
                (int)st->param_len, st->param);
        return POL_NEXT;
    }
    if (st->session_full)
        return pol_req_fail(r, "no memory left for the user-config in the session");
    marker_set(p, r, st);
    return POL_NEXT;
}

static enum pol_step ucfg_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct ucfg_req *st = req_state;
    if (st->outcome != UCFG_NONE)
        return ucfg_apply(p, r, st);
    const char *field = pol_opt(p, OPT_FIELD)->text;
    size_t len = 0;
    const char *value = pol_req_attr(r, field, &len);
    if (!value || pol_acct_blank(value, len)) {
        pol_log(p, r,
                "unable to retrieve user-config: key field %s not defined or empty in "
                "request",
                field);
        return POL_NEXT;
    }
    if (marker_matches(p, r, value, len))
        return POL_NEXT; /* cache_per_mail: loaded by an earlier request of this mail */
    if (!pol_req_shard(r))
        return pol_req_fail(r, "SQL queries need the daemon's shards");
    st->r = r;
    st->param = value;
    st->param_len = len;
    int rc = pol_sql_query(pol_req_shard(r), pol_plugin_data(p), pol_opt(p, OPT_SQL_QUERY)->text,
                           &st->param, &st->param_len, 1, 0, ucfg_done, st);
    if (rc < 0) {
        pol_log(p, r, "unable to retrieve user-config: cannot queue the query: %s", strerror(-rc));
        return POL_NEXT;
    }
    return POL_WAIT;
}

const struct pol_plugin_type pol_type_SqlUserConfig = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SqlUserConfig",
    .opts = sqluserconfig_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct ucfg_req),
    .create = ucfg_create,
    .step = ucfg_step,
};
