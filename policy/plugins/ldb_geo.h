/*
 * ldb_geo.h: country databases for GeoIPLookup (spec 13.11): MaxMind's legacy GeoIP Country
 * format (.dat, IPv4 or IPv6 edition, read with libGeoIP: Debian's geoip-database) and the
 * MaxMind DB format (.mmdb, read with libmaxminddb: GeoLite2/GeoIP2 Country or City, DB-IP and
 * the like). The format is chosen by the file's content, never by its name.
 *
 * A database is opened once, at start-up (read-only, memory-mapped: GEOIP_MMAP_CACHE,
 * MMDB_MODE_MMAP) and then shared by every shard: both libraries' lookups only read the mapping
 * (libGeoIP's _gl functions keep their per-lookup state in the caller's GeoIPLookup; libmaxminddb
 * documents MMDB_s as safe to share once opened). A lookup is a walk of the mapped search tree,
 * a memory lookup that needs no I/O, so it runs synchronously on the shard.
 *
 * A replaced database file is not noticed until the next start or reload (as in 2.05). The
 * file is trusted as configuration: a corrupt legacy file could make libGeoIP read outside its
 * mapping, so the format is checked at open (structure marker and edition, or MaxMind DB
 * metadata) and anything else is refused.
 */
#ifndef POL_PLUGINS_LDB_GEO_H
#define POL_PLUGINS_LDB_GEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A country code and its NUL; a longer code in an .mmdb counts as none. */
#define LDB_GEO_CC_BYTES 16u
/* Longest address text looked up; longer texts are not addresses and find nothing. libGeoIP's
 * own IPv4 parser accepts leading zeros without bound, which Postfix never sends. */
#define LDB_GEO_ADDR_BYTES_MAX 255u

enum ldb_geo_kind {
    LDB_GEO_LEGACY_V4, /* GeoIP Country Edition */
    LDB_GEO_LEGACY_V6, /* GeoIP Country V6 Edition */
    LDB_GEO_MMDB,      /* MaxMind DB (ip_version 4 or 6) */
};

/* The format of a file from its last bytes (up to 128 KiB: the MaxMind DB metadata marker and
 * the legacy structure marker both live there): 0.. an enum ldb_geo_kind (for the legacy
 * format the edition decides V4/V6), or -1 when it is neither a country .dat nor an .mmdb.
 * Pure. */
int ldb_geo_detect(const unsigned char *tail, size_t tail_len);

struct ldb_geo;

/* Opens path. Returns 0 and *out, or -1 with a sentence in err. Main thread. */
int ldb_geo_open(const char *path, struct ldb_geo **out, char *err, size_t err_len);
void ldb_geo_close(struct ldb_geo *g);

enum ldb_geo_kind ldb_geo_kind(const struct ldb_geo *g);
/* It can answer for IPv6 addresses (a V6 edition, or an .mmdb with ip_version 6). */
bool ldb_geo_has_v6(const struct ldb_geo *g);

/* The country code of addr[0..len) into cc (LDB_GEO_CC_BYTES, NUL-terminated): its length, or
 * 0 when the database has none for it or addr is not an address it can look up. IPv4 in a
 * legacy IPv4 database goes through libGeoIP's own parser (2.05's answers, e.g. for leading
 * zeros); everything else through inet_pton. Any thread. */
size_t ldb_geo_country(const struct ldb_geo *g, const char *addr, size_t len, char *cc);

#ifdef __cplusplus
}
#endif

#endif
