/*
 * ldapuserconfig.c: the LdapUserConfig plugin (spec 13.14): searches the `Ldap` connection
 * named by option `ldap` (default "ldap") under basedn (subtree) with filter, every `%s`
 * replaced by the RFC 4515-escaped value of request attribute filter_field (default
 * sasl_username), and when exactly one entry is found copies the first value of each of
 * config_fields (attribute names compared without case) into the session under the name as
 * configured, skipping empty ones. Never returns a result.
 *
 * As in 2.05: a blank or absent value skips the search; a search error (server error, bad
 * filter, time-out, connection lost while waiting) is logged and ignored; zero or several
 * entries change nothing; but not getting a connection (connect, STARTTLS or bind failed, or
 * the client backing off after such a failure) fails the plugin (on_error decides), as 2.05's
 * connection code dies outside the search's eval. The search is asynchronous (POL_WAIT) on the
 * shard's client of the connection (policy/ldap.c), shared by every LdapUserConfig naming it.
 *
 * The connection's <Connection> block is read here through the registry in ldap_conn.h (the
 * core's connection table has no Ldap module): option errors fail start-up naming the block.
 * Owns: its attribute list and a reference on the connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>

#include "config.h"
#include "ldap_conn.h"
#include "plugins/common.h"
#include "server.h"

enum {
    OPT_BASEDN,
    OPT_FILTER,
    OPT_FILTER_FIELD,
    OPT_CONFIG_FIELDS,
    OPT_LDAP,
    OPT_CONNECTION,
    OPT_CONNECTION_TYPE,
    OPT_COUNT,
};

static const struct pol_opt_def ldapuc_opts[] = {
    [OPT_BASEDN] = {"basedn", POL_OPT_STRING, "", 0},
    [OPT_FILTER] = {"filter", POL_OPT_STRING, NULL, POL_OPT_REQUIRED},
    [OPT_FILTER_FIELD] = {"filter_field", POL_OPT_STRING, "sasl_username", 0},
    [OPT_CONFIG_FIELDS] = {"config_fields", POL_OPT_LIST, NULL, POL_OPT_REQUIRED},
    [OPT_LDAP] = {"ldap", POL_OPT_STRING, "ldap", 0},
    /* 2.05 declares these two and never reads them */
    [OPT_CONNECTION] = {"connection", POL_OPT_STRING, "ldap", 0},
    [OPT_CONNECTION_TYPE] = {"connection_type", POL_OPT_STRING, "Ldap", 0},
};
_Static_assert(sizeof ldapuc_opts / sizeof ldapuc_opts[0] == OPT_COUNT, "one def per option");

struct ldapuc {
    struct pol_ldap_conn *conn;
    const char **attrs; /* non-empty config_fields, NULL-terminated: what the search asks for */
};

struct ldapuc_req {
    struct pol_req *r;
    const struct pol_list *fields; /* config_fields */
    bool searched; /* done ran */
    enum pol_ldap_status st;
    char *error;  /* arena */
    size_t count;
    char *dn;     /* arena */
    char **values; /* arena, one per config_fields item: first value, NULL when none */
    size_t *value_lens;
    bool nomem;
};

static int ldapuc_create(struct pol_plugin *p, char *err, size_t err_len)
{
    const char *name = pol_opt(p, OPT_LDAP)->text;
    const struct pol_conn_def *def = pol_server_conn(p->srv, name);
    if (!def) {
        snprintf(err, err_len, "no connection %s configured!", name);
        return -1;
    }
    if (strcmp(def->module, "Ldap") != 0) {
        snprintf(err, err_len, "connection %s is a %s connection, not Ldap", name, def->module);
        return -1;
    }
    const struct pol_list *fields = &pol_opt(p, OPT_CONFIG_FIELDS)->list;
    struct ldapuc *u = calloc(1, sizeof(*u));
    const char **attrs = calloc(fields->count + 1, sizeof(*attrs));
    if (!u || !attrs) {
        free(u);
        free(attrs);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < fields->count; i++)
        if (fields->items[i][0])
            attrs[n++] = fields->items[i];
    attrs[n] = NULL;
    u->attrs = attrs;
    char why[512] = "";
    u->conn = pol_ldap_conn_get(def, why, sizeof(why));
    if (!u->conn) {
        snprintf(err, err_len, "connection %s (%s:%u): %s", name, def->file, def->line, why);
        free(attrs);
        free(u);
        return -1;
    }
    pol_plugin_set_data(p, u);
    return 0;
}

static int ldapuc_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data,
                              char *err, size_t err_len)
{
    struct ldapuc *u = pol_plugin_data(p);
    if (pol_ldap_conn_shard_start(u->conn, sh, err, err_len) != 0)
        return -1;
    *shard_data = pol_ldap_conn_client(u->conn, sh);
    return 0;
}

static void ldapuc_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    (void)shard_data;
    struct ldapuc *u = pol_plugin_data(p);
    pol_ldap_conn_shard_stop(u->conn, sh);
}

static void ldapuc_destroy(struct pol_plugin *p)
{
    struct ldapuc *u = pol_plugin_data(p);
    if (!u)
        return;
    pol_ldap_conn_put(u->conn);
    free(u->attrs);
    free(u);
}

/* filter with every "%s" replaced by the escaped value, in the arena (NULL when full). */
static char *filter_build(struct pol_req *r, const char *filter, const char *value,
                          size_t value_len)
{
    size_t esc_len = pol_ldap_escape(value, value_len, NULL, 0);
    size_t count = 0;
    for (const char *s = strstr(filter, "%s"); s; s = strstr(s + 2, "%s"))
        count++;
    size_t flen = strlen(filter);
    char *out = pol_req_alloc(r, flen - 2 * count + count * esc_len + 1);
    char *esc = pol_req_alloc(r, esc_len + 1);
    if (!out || !esc)
        return NULL;
    pol_ldap_escape(value, value_len, esc, esc_len + 1);
    char *w = out;
    for (const char *s = filter;;) {
        const char *m = strstr(s, "%s");
        size_t k = m ? (size_t)(m - s) : strlen(s);
        memcpy(w, s, k);
        w += k;
        if (!m)
            break;
        memcpy(w, esc, esc_len);
        w += esc_len;
        s = m + 2;
    }
    *w = '\0';
    return out;
}

static char *arena_copy(struct ldapuc_req *st, const char *s, size_t len)
{
    char *c = pol_req_strndup(st->r, s ? s : "", s ? len : 0);
    if (!c)
        st->nomem = true;
    return c;
}

static void ldapuc_done(void *ctx, const struct pol_ldap_result *res)
{
    struct ldapuc_req *st = ctx;
    st->searched = true;
    st->st = pol_ldap_result_status(res);
    st->count = pol_ldap_result_count(res);
    const char *e = pol_ldap_result_error(res);
    st->error = arena_copy(st, e, strlen(e));
    if (st->st == POL_LDAP_OK && st->count == 1) {
        const char *dn = pol_ldap_result_dn(res);
        st->dn = arena_copy(st, dn, dn ? strlen(dn) : 0);
        for (size_t i = 0; i < st->fields->count; i++) {
            const char *v = NULL;
            size_t len = 0;
            if (pol_ldap_result_value(res, st->fields->items[i], 0, &v, &len) == 0 && len > 0) {
                st->values[i] = arena_copy(st, v, len);
                st->value_lens[i] = len;
            }
        }
    }
    pol_req_resume(st->r);
}

static enum pol_step ldapuc_apply(struct pol_plugin *p, struct pol_req *r, struct ldapuc_req *st)
{
    const struct pol_list *fields = &pol_opt(p, OPT_CONFIG_FIELDS)->list;
    if (st->nomem)
        return pol_req_fail(r, "no memory left in the request arena for the ldap result");
    switch (st->st) {
    case POL_LDAP_OK:
        break;
    case POL_LDAP_DOWN:
        return pol_req_fail(r, "%s", st->error);
    default:
        pol_log(p, r, "ldap search failed: %s", st->error);
        return POL_NEXT;
    }
    if (st->count != 1) {
        pol_log(p, r, "ldap search return %zu entries", st->count);
        return POL_NEXT;
    }
    pol_log(p, r, "found in ldap: %s", st->dn);
    for (size_t i = 0; i < fields->count; i++) {
        const char *name = fields->items[i];
        if (!st->values[i] || st->value_lens[i] == 0) {
            pol_log(p, r, "LDAP attribute %s is empty. skipping.", name);
            continue;
        }
        pol_log(p, r, "retrieved ldap attribute: %s=%.*s", name, (int)st->value_lens[i],
                st->values[i]);
        if (pol_session_set(r, name, st->values[i], st->value_lens[i]) != 0)
            return pol_req_fail(r, "no memory left for the ldap attributes in the session");
    }
    return POL_NEXT;
}

static enum pol_step ldapuc_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct ldapuc_req *st = req_state;
    if (st->searched)
        return ldapuc_apply(p, r, st);
    const char *field = pol_opt(p, OPT_FILTER_FIELD)->text;
    if (!field[0]) {
        pol_log(p, r, "no request field configured in filter_field");
        return POL_NEXT;
    }
    size_t len = 0;
    const char *value = pol_req_attr(r, field, &len);
    if (!value || len == 0) {
        pol_log(p, r, "filter_field(%s) is not defined in request. skipping ldap search.",
                field);
        return POL_NEXT;
    }
    char *filter = filter_build(r, pol_opt(p, OPT_FILTER)->text, value, len);
    size_t nfields = pol_opt(p, OPT_CONFIG_FIELDS)->list.count;
    st->values = pol_req_alloc(r, (nfields + 1) * sizeof(*st->values));
    st->value_lens = pol_req_alloc(r, (nfields + 1) * sizeof(*st->value_lens));
    if (!filter || !st->values || !st->value_lens)
        return pol_req_fail(r, "no memory left in the request arena for the ldap filter");
    memset(st->values, 0, (nfields + 1) * sizeof(*st->values));
    memset(st->value_lens, 0, (nfields + 1) * sizeof(*st->value_lens));
    pol_log(p, r, "ldap filter is: %s", filter);
    struct eng_shard *sh = pol_req_shard(r);
    struct pol_ldap_client *c = sh ? pol_plugin_shard_data(p, r) : NULL;
    if (!c)
        return pol_req_fail(r, "LDAP searches need the daemon's shards");
    st->r = r;
    st->fields = &pol_opt(p, OPT_CONFIG_FIELDS)->list;
    struct ldapuc *u = pol_plugin_data(p);
    int rc = pol_ldap_search(c, pol_opt(p, OPT_BASEDN)->text, filter, u->attrs, ldapuc_done, st);
    if (rc < 0) {
        pol_log(p, r, "ldap search failed: %s", strerror(-rc));
        return POL_NEXT;
    }
    return POL_WAIT;
}

const struct pol_plugin_type pol_type_LdapUserConfig = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "LdapUserConfig",
    .opts = ldapuc_opts,
    .opt_count = OPT_COUNT,
    .flags = 0,
    .req_state_bytes = sizeof(struct ldapuc_req),
    .create = ldapuc_create,
    .shard_start = ldapuc_shard_start,
    .shard_stop = ldapuc_shard_stop,
    .step = ldapuc_step,
    .destroy = ldapuc_destroy,
};
