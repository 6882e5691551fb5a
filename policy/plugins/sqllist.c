/*
 * sqllist.c: the SqlList plugin (spec 13.27): runs sql_query with the value of attribute
 * `field` bound to its `?`; matched means the query returned at least one row (what 2.05 does
 * whenever a session exists). The outcome is cached per mail under NAME-result ("1" or "0").
 * Matched: adds `score` once per mail (flag NAME-score), then returns match_action; not
 * matched: not_match_action. `enabled` is user-configurable. Any SQL error fails the plugin.
 *
 * The query runs asynchronously (pol_sql_query, POL_WAIT, resumed from its done); nothing of
 * the result outlives done but the matched flag. Owns nothing.
 */
#include "plugins/acct.h"

#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

#include "plugins/common.h"
#include "pol/sql.h"

enum {
    OPT_SQL_QUERY,
    OPT_FIELD,
    OPT_MATCH_ACTION,
    OPT_NOT_MATCH_ACTION,
    OPT_SCORE,
    OPT_ENABLED,
    OPT_DB,
    OPT_MYSQL_ENGINE,
    OPT_COUNT,
};

static const struct pol_opt_def sqllist_opts[] = {
    [OPT_SQL_QUERY] = {"sql_query", POL_OPT_STRING,
                       "SELECT client_ip FROM whitelist WHERE client_ip=INET_ATON(?)", 0},
    [OPT_FIELD] = {"field", POL_OPT_STRING, "client_address", 0},
    [OPT_MATCH_ACTION] = {"match_action", POL_OPT_STRING, NULL, 0},
    [OPT_NOT_MATCH_ACTION] = {"not_match_action", POL_OPT_STRING, NULL, 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_DB] = {"db", POL_OPT_STRING, "db", 0},
    [OPT_MYSQL_ENGINE] = {"mysql_engine", POL_OPT_STRING, "MyISAM", 0}, /* accepted, unused */
};
_Static_assert(sizeof sqllist_opts / sizeof sqllist_opts[0] == OPT_COUNT, "one def per option");

struct sqllist_req {
    struct pol_req *r;
    const char *param; /* the attribute's value: valid while the query is out */
    size_t param_len;
    bool queried; /* the query ran; the fields below hold its outcome */
    bool failed;
    bool matched;
    char error[256];
};

int pol_acct_db_create(struct pol_plugin *p, unsigned db_idx, char *err, size_t err_len)
{
    struct pol_sql *db = pol_sql_lookup(p, pol_opt(p, db_idx)->text, err, err_len);
    if (!db)
        return -1;
    pol_plugin_set_data(p, db);
    return 0;
}

static int sqllist_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return pol_acct_db_create(p, OPT_DB, err, err_len);
}

static void sqllist_done(void *ctx, const struct pol_sql_result *res)
{
    struct sqllist_req *st = ctx;
    st->queried = true;
    st->failed = res->status < 0;
    st->matched = res->status >= 0 && res->row_count > 0;
    if (st->failed)
        snprintf(st->error, sizeof(st->error), "%s", res->error ? res->error : "unknown error");
    pol_req_resume(st->r);
}

static enum pol_step sqllist_decide(struct pol_plugin *p, struct pol_req *r, bool matched,
                                    const char *value, size_t len)
{
    const char *field = pol_opt(p, OPT_FIELD)->text;
    if (!matched) {
        pol_log(p, r, "%s %.*s did not match SqlList %s", field, (int)len, value,
                pol_plugin_name(p));
        const struct pol_opt_value *a = pol_opt(p, OPT_NOT_MATCH_ACTION);
        return a->set ? pol_builtin_result(r, a->text, a->text_len) : POL_NEXT;
    }
    pol_log(p, r, "%s %.*s matched SqlList %s", field, (int)len, value, pol_plugin_name(p));
    const struct pol_opt_value *score = pol_opt(p, OPT_SCORE);
    if (score->set) {
        char *flag = pol_req_printf(r, "%s-score", pol_plugin_name(p));
        if (!flag)
            return pol_req_fail(r, "no memory left in the request arena");
        if (!pol_req_is_already_done(r, flag) &&
            pol_score_add(r, p, NULL, score->num, score->text) != 0)
            return pol_req_fail(r, "no memory left for the score");
    }
    const struct pol_opt_value *a = pol_opt(p, OPT_MATCH_ACTION);
    return a->set ? pol_builtin_result(r, a->text, a->text_len) : POL_NEXT;
}

static enum pol_step sqllist_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct sqllist_req *st = req_state;
    size_t len = 0;
    const char *value = pol_req_attr(r, pol_opt(p, OPT_FIELD)->text, &len);
    char *cache_key = pol_req_printf(r, "%s-result", pol_plugin_name(p));
    if (!cache_key)
        return pol_req_fail(r, "no memory left in the request arena");
    if (st->queried) { /* resumed */
        if (st->failed)
            return pol_req_fail(r, "%s", st->error);
        if (pol_session_set(r, cache_key, st->matched ? "1" : "0", 1) != 0)
            return pol_req_fail(r, "no memory left for the session");
        return sqllist_decide(p, r, st->matched, value, len);
    }
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    if (!value) {
        pol_log(p, r, "no attribute '%s' in request", pol_opt(p, OPT_FIELD)->text);
        return POL_NEXT;
    }
    size_t cl = 0;
    const char *cached = pol_session_get(r, cache_key, &cl);
    if (cached)
        return sqllist_decide(p, r, cl == 1 && cached[0] == '1', value, len);
    if (!pol_req_shard(r))
        return pol_req_fail(r, "SQL queries need the daemon's shards");
    st->r = r;
    st->param = value;
    st->param_len = len;
    int rc = pol_sql_query(pol_req_shard(r), pol_plugin_data(p), pol_opt(p, OPT_SQL_QUERY)->text,
                           &st->param, &st->param_len, 1, 0, sqllist_done, st);
    if (rc < 0)
        return pol_req_fail(r, "cannot queue the query: %s", strerror(-rc));
    return POL_WAIT;
}

const struct pol_plugin_type pol_type_SqlList = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SqlList",
    .opts = sqllist_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct sqllist_req),
    .create = sqllist_create,
    .step = sqllist_step,
};
