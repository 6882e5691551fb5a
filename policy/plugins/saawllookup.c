/*
 * saawllookup.c: the SaAwlLookup plugin (spec 13.24): the sender's reputation from
 * SpamAssassin's auto-whitelist, a Berkeley DB hash (keys and values without NUL) at `db_file`.
 * For sender S and an address key K (ldb_keys.h: the first two octets of IPv4, the /48 of IPv6
 * as 2.05 writes it) the count is the value of "S|ip=K" and the total score that of
 * "S|ip=K|totscore"; both must exist. The result (count, total / count) is cached per mail
 * under sa-awl-NAME-result as "SCORE COUNT" (SCORE with 17 digits, so the cached double is
 * exactly the computed one; COUNT as stored), empty when there is no entry or no key. Never
 * returns an action. A count of 0 fails the plugin, as Perl's "Illegal division by zero" did.
 *
 * Files: one handle per shard, re-opened when SpamAssassin changed the file (localdb.h,
 * ldb_map.h, which also says what a read racing with SpamAssassin's write can give). The
 * default path keeps 2.05's typo (/var/lib/amamvis/...); a missing file is a start-up error.
 */
#include "plugins/common.h"
#include "plugins/ldb_keys.h"
#include "plugins/localdb.h"

#include <string.h>

#include <eng/assert.h>

enum {
    OPT_DB_FILE,
    OPT_COUNT,
};

static const struct pol_opt_def saawllookup_opts[] = {
    [OPT_DB_FILE] = {"db_file", POL_OPT_STRING, "/var/lib/amamvis/.spamassassin/auto-whitelist", 0},
};
_Static_assert(sizeof saawllookup_opts / sizeof saawllookup_opts[0] == OPT_COUNT,
               "one def per option");

static int saawllookup_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return ldb_plugin_map_create(p, OPT_DB_FILE, false, err, err_len);
}

/* Reads key `count_key` and `count_key|totscore`; sets *text to the value to cache. */
static enum pol_step query_awl(struct pol_req *r, struct ldb_shard *sd, const char *count_key,
                               const char **text)
{
    char why[512] = "";
    size_t len = 0;
    enum ldb_status st =
        ldb_map_get(sd->map, count_key, strlen(count_key), sd->val, &len, why, sizeof why);
    if (st != LDB_OK) {
        *text = "";
        return st == LDB_MISSING ? POL_NEXT : pol_req_fail(r, "%s", why);
    }
    const char *count = pol_req_strndup(r, sd->val, len);
    const char *total_key = pol_req_printf(r, "%s|totscore", count_key);
    if (count == NULL || total_key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t count_len = len;
    st = ldb_map_get(sd->map, total_key, strlen(total_key), sd->val, &len, why, sizeof why);
    if (st != LDB_OK) {
        *text = "";
        return st == LDB_MISSING ? POL_NEXT : pol_req_fail(r, "%s", why);
    }
    double n = pol_num_perl(count, count_len);
    if (n == 0)
        return pol_req_fail(r, "Illegal division by zero");
    *text = pol_req_printf(r, "%.17g %.*s", pol_num_perl(sd->val, len) / n, (int)count_len, count);
    return *text != NULL ? POL_NEXT : pol_req_fail(r, "out of memory");
}

/* The lookup of 2.05's query_awl, cached under cache_key. */
static enum pol_step lookup(struct pol_plugin *p, struct pol_req *r, struct ldb_wait *w,
                            const char *sender, const char *ip, size_t ip_len,
                            const char *cache_key)
{
    char v6[LDB_AWL_IP_KEY_BYTES];
    size_t key_len = 0;
    const char *ip_key = ldb_awl_ip_key(ip, ip_len, v6, &key_len);
    const char *text = "";
    if (ip_key != NULL) {
        const char *count_key = pol_req_printf(r, "%s|ip=%.*s", sender, (int)key_len, ip_key);
        if (count_key == NULL)
            return pol_req_fail(r, "out of memory");
        enum pol_step step = POL_NEXT;
        struct ldb_shard *sd = ldb_plugin_begin(p, r, w, &step);
        if (sd == NULL)
            return step;
        step = query_awl(r, sd, count_key, &text);
        ldb_map_end(sd->map);
        if (step != POL_NEXT)
            return step;
    }
    if (pol_session_set(r, cache_key, text, strlen(text)) != 0)
        return pol_req_fail(r, "cannot cache the lookup: out of memory");
    return POL_NEXT;
}

static enum pol_step saawllookup_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    size_t sender_len = 0, ip_len = 0;
    const char *sender = pol_req_attr(r, "sender", &sender_len);
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    if (sender == NULL || ip == NULL)
        return POL_NEXT;
    const char *cache_key = pol_req_printf(r, "sa-awl-%s-result", pol_plugin_name(p));
    if (cache_key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t len = 0;
    const char *cached = pol_session_get(r, cache_key, &len);
    if (cached == NULL) {
        enum pol_step step = lookup(p, r, req_state, sender, ip, ip_len, cache_key);
        if (step != POL_NEXT)
            return step;
        cached = pol_session_get(r, cache_key, &len);
    }
    double score = 0;
    const char *count = NULL;
    size_t count_len = 0;
    if (!ldb_awl_result_parse(cached, len, &score, &count, &count_len)) {
        pol_log(p, r, "no AWL record for %.*s/%.*s found", (int)sender_len, sender, (int)ip_len,
                ip);
        return POL_NEXT;
    }
    char score_text[64];
    pol_num_format(score_text, sizeof score_text, score);
    pol_log(p, r, "AWL record for %.*s/%.*s count=%.*s, score=%s", (int)sender_len, sender,
            (int)ip_len, ip, (int)count_len, count, score_text);
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_SaAwlLookup = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SaAwlLookup",
    .opts = saawllookup_opts,
    .opt_count = OPT_COUNT,
    .req_state_bytes = sizeof(struct ldb_wait),
    .create = saawllookup_create,
    .shard_start = ldb_plugin_shard_start,
    .shard_stop = ldb_plugin_shard_stop,
    .step = saawllookup_step,
    .destroy = ldb_plugin_map_destroy,
};
