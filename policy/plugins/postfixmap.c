/*
 * postfixmap.c: the PostfixMap plugin (spec 13.15): the client address in a Postfix table.
 * `db_file` is a Berkeley DB hash as `postmap hash:` writes it (keys and values with a trailing
 * NUL), as in 2.05, or a cdb file as `postmap cdb:` writes it. New in ringpolicyd: a Postfix
 * type prefix picks the format and names the table as main.cf does ("hash:/etc/postfix/white"
 * reads /etc/postfix/white.db, "cdb:/etc/postfix/white" reads white.cdb); a plain path (2.05's
 * form, e.g. "/etc/postfix/white.db") is read in whichever of the two formats its content is.
 *
 * Lookup, cached per mail under NAME-result ("MATCHED KEY VALUE", empty for nothing found):
 * a dotted IPv4 address tries itself and its shorter prefixes (a.b.c, a.b, a), and the first
 * key present decides; a lower-case IPv6 address drops one group at a time and a key counts
 * only when its value is not empty and not "0"; anything else fails the plugin, as in 2.05
 * ("ip is neither a valid ipv4 nor ipv6 address."). Matched means the value is OK or all
 * digits; other values (REJECT, DUNNO...) count as not matched and are never the action.
 * Matched: `score` once per mail (flag NAME-score), then `match_action`; not matched:
 * `not_match_action`. `enabled` is user-configurable.
 *
 * Files: each shard reads its own handle (localdb.h, ldb_map.h), re-opened when postmap
 * replaced or rewrote the file; while postmap holds a hash: file the request waits on a timer.
 * Difference from 2.05: an address ending in "::" made 2.05 loop until the request timed out;
 * here its trailing colons are dropped (ldb_keys.h). A missing or unreadable file is a start-up
 * error (2.05 failed every request).
 */
#include "plugins/common.h"
#include "plugins/ldb_keys.h"
#include "plugins/localdb.h"

#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

enum {
    OPT_DB_FILE,
    OPT_MATCH_ACTION,
    OPT_NOT_MATCH_ACTION,
    OPT_SCORE,
    OPT_ENABLED,
    OPT_COUNT,
};

static const struct pol_opt_def postfixmap_opts[] = {
    [OPT_DB_FILE] = {"db_file", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_MATCH_ACTION] = {"match_action", POL_OPT_STRING, NULL, 0},
    [OPT_NOT_MATCH_ACTION] = {"not_match_action", POL_OPT_STRING, NULL, 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, 0},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
};
_Static_assert(sizeof postfixmap_opts / sizeof postfixmap_opts[0] == OPT_COUNT,
               "one def per option");

static int postfixmap_create(struct pol_plugin *p, char *err, size_t err_len)
{
    return ldb_plugin_map_create(p, OPT_DB_FILE, true, err, err_len);
}

/* The outcome of one lookup, as cached. */
struct outcome {
    bool found, matched;
    const char *key, *value;
    size_t key_len, value_len;
};

/* Looks ip up (2.05's _query_db) and caches the outcome under cache_key. Returns POL_NEXT with
 * the cached text in *text, POL_WAIT (postmap is rewriting the file) or POL_FAIL. */
static enum pol_step lookup(struct pol_plugin *p, struct pol_req *r, struct ldb_wait *w,
                            const char *ip, size_t len, const char *cache_key, const char **text)
{
    enum ldb_pfm_class cls = ldb_pfm_classify(ip, len);
    if (cls == LDB_PFM_OTHER)
        return pol_req_fail(r, "ip is neither a valid ipv4 nor ipv6 address.");
    enum pol_step step = POL_NEXT;
    struct ldb_shard *sd = ldb_plugin_begin(p, r, w, &step);
    if (sd == NULL)
        return step;
    char why[512] = "";
    size_t key_len = len, val_len = 0;
    enum ldb_status st = LDB_MISSING;
    while (key_len > 0) {
        st = ldb_map_get(sd->map, ip, key_len, sd->val, &val_len, why, sizeof why);
        if (st == LDB_ERROR || (st == LDB_OK && ldb_pfm_value_counts(cls, sd->val, val_len)))
            break;
        st = LDB_MISSING;
        key_len = ldb_pfm_parent_len(cls, ip, key_len);
    }
    ldb_map_end(sd->map);
    if (st == LDB_ERROR)
        return pol_req_fail(r, "%s", why);
    const char *stored = "";
    if (st == LDB_OK)
        stored = pol_req_printf(r, "%d %.*s %.*s", ldb_pfm_value_matches(sd->val, val_len),
                                (int)key_len, ip, (int)val_len, sd->val);
    if (stored == NULL || pol_session_set(r, cache_key, stored, strlen(stored)) != 0)
        return pol_req_fail(r, "cannot cache the lookup: out of memory");
    *text = stored;
    return POL_NEXT;
}

/* Reads "MATCHED KEY VALUE" (or "" for nothing found). */
static struct outcome outcome_parse(const char *text, size_t len)
{
    struct outcome o = {0};
    if (len < 3 || text[1] != ' ')
        return o;
    const char *key = text + 2, *space = memchr(key, ' ', len - 2);
    if (space == NULL)
        return o;
    o.found = true;
    o.matched = text[0] == '1';
    o.key = key;
    o.key_len = (size_t)(space - key);
    o.value = space + 1;
    o.value_len = len - 2 - o.key_len - 1;
    return o;
}

static enum pol_step postfixmap_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    if (ip == NULL) {
        pol_log(p, r, "no attribute 'client_address' in request");
        return POL_NEXT;
    }
    const char *cache_key = pol_req_printf(r, "%s-result", pol_plugin_name(p));
    if (cache_key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t text_len = 0;
    const char *text = pol_session_get(r, cache_key, &text_len);
    if (text == NULL) {
        enum pol_step step = lookup(p, r, req_state, ip, ip_len, cache_key, &text);
        if (step != POL_NEXT)
            return step;
        text_len = strlen(text);
    }
    struct outcome o = outcome_parse(text, text_len);
    if (!o.matched) {
        pol_log(p, r, "client_address %.*s did not match %s", (int)ip_len, ip, pol_plugin_name(p));
        const struct pol_opt_value *a = pol_opt(p, OPT_NOT_MATCH_ACTION);
        return a->set ? pol_builtin_result(r, a->text, a->text_len) : POL_NEXT;
    }
    pol_log(p, r, "client_address %.*s matched %s (%.*s %.*s)", (int)ip_len, ip, pol_plugin_name(p),
            (int)o.key_len, o.key, (int)o.value_len, o.value);
    const char *flag = pol_req_printf(r, "%s-score", pol_plugin_name(p));
    if (flag == NULL || pol_builtin_uc_score(p, r, OPT_SCORE, flag) != 0)
        return pol_req_fail(r, "cannot add the score: out of memory");
    const struct pol_opt_value *a = pol_opt(p, OPT_MATCH_ACTION);
    return a->set ? pol_builtin_result(r, a->text, a->text_len) : POL_NEXT;
}

const struct pol_plugin_type pol_type_PostfixMap = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "PostfixMap",
    .opts = postfixmap_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct ldb_wait),
    .create = postfixmap_create,
    .shard_start = ldb_plugin_shard_start,
    .shard_stop = ldb_plugin_shard_stop,
    .step = postfixmap_step,
    .destroy = ldb_plugin_map_destroy,
};
