/*
 * geoiplookup.c: the GeoIPLookup plugin (spec 13.11): the country code of `client_address`,
 * cached per mail under geoip-NAME-result (the code, or empty when there is none), for
 * GeoIPAction. Never returns an action.
 *
 * `database` (default /usr/share/GeoIP/GeoIP.dat, Debian's geoip-database) is a legacy GeoIP
 * Country .dat or a MaxMind DB .mmdb, told apart by content (ldb_geo.h). With 2.05's IPv4 .dat
 * IPv6 clients get no country, as in 2.05. New in ringpolicyd: `database_v6` names a database
 * for IPv6 clients (Debian's /usr/share/GeoIP/GeoIPv6.dat, or an .mmdb); without it, a
 * `database` that covers IPv6 (an .mmdb, a V6 .dat) answers for them too.
 *
 * Owns the open databases (create .. destroy), shared read-only by every shard. Lookups are
 * memory lookups in the mapped files and run synchronously on the shard (ldb_geo.h). Every
 * database is opened at start-up: a missing or unsuitable file refuses the configuration (2.05
 * opened it at the first request and failed that request).
 */
#include "plugins/common.h"
#include "plugins/ldb_geo.h"
#include "plugins/localdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>

enum {
    OPT_DATABASE,
    OPT_DATABASE_V6,
    OPT_COUNT,
};

static const struct pol_opt_def geoiplookup_opts[] = {
    [OPT_DATABASE] = {"database", POL_OPT_STRING, "/usr/share/GeoIP/GeoIP.dat", 0},
    [OPT_DATABASE_V6] = {"database_v6", POL_OPT_STRING, NULL, 0},
};
_Static_assert(sizeof geoiplookup_opts / sizeof geoiplookup_opts[0] == OPT_COUNT,
               "one def per option");

/* Plugin data. */
struct geoip_dbs {
    struct ldb_geo *main; /* `database`: IPv4, and IPv6 when it can and v6 is NULL */
    struct ldb_geo *v6;   /* `database_v6`, or NULL */
};

static void dbs_free(struct geoip_dbs *d)
{
    if (d == NULL)
        return;
    ldb_geo_close(d->main);
    ldb_geo_close(d->v6);
    free(d);
}

static int geoiplookup_create(struct pol_plugin *p, char *err, size_t err_len)
{
    struct geoip_dbs *d = calloc(1, sizeof *d);
    if (d == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    const struct pol_opt_value *v6 = pol_opt(p, OPT_DATABASE_V6);
    int rc = ldb_geo_open(pol_opt(p, OPT_DATABASE)->text, &d->main, err, err_len);
    if (rc == 0 && v6->set)
        rc = ldb_geo_open(v6->text, &d->v6, err, err_len);
    if (rc == 0 && d->v6 != NULL && !ldb_geo_has_v6(d->v6)) {
        snprintf(err, err_len, "database_v6 %s holds IPv4 addresses only", v6->text);
        rc = -1;
    }
    if (rc != 0) {
        dbs_free(d);
        return -1;
    }
    pol_plugin_set_data(p, d);
    return 0;
}

static void geoiplookup_destroy(struct pol_plugin *p)
{
    dbs_free(pol_plugin_data(p));
    pol_plugin_set_data(p, NULL);
}

/* The country of ip into cc; 0 for none. */
static size_t country(const struct geoip_dbs *d, const char *ip, size_t len, char *cc)
{
    if (ip == NULL)
        return 0;
    bool v6 = memchr(ip, ':', len) != NULL;
    const struct ldb_geo *db = v6 && d->v6 != NULL ? d->v6 : d->main;
    return ldb_geo_country(db, ip, len, cc);
}

static enum pol_step geoiplookup_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    size_t ip_len = 0;
    const char *ip = pol_req_attr(r, "client_address", &ip_len);
    const char *key = pol_req_printf(r, "geoip-%s-result", pol_plugin_name(p));
    if (key == NULL)
        return pol_req_fail(r, "out of memory");
    size_t cc_len = 0;
    const char *cached = pol_session_get(r, key, &cc_len);
    if (cached == NULL) {
        char cc[LDB_GEO_CC_BYTES];
        cc_len = country(pol_plugin_data(p), ip, ip_len, cc);
        if (pol_session_set(r, key, cc, cc_len) != 0)
            return pol_req_fail(r, "cannot cache the country: out of memory");
    }
    if (cc_len == 0)
        pol_log(p, r, "no GeoIP record for %.*s found", (int)ip_len, ip != NULL ? ip : "");
    return POL_NEXT;
}

const struct pol_plugin_type pol_type_GeoIPLookup = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "GeoIPLookup",
    .opts = geoiplookup_opts,
    .opt_count = OPT_COUNT,
    .create = geoiplookup_create,
    .step = geoiplookup_step,
    .destroy = geoiplookup_destroy,
};
