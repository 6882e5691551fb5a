/*
 * ldb_geo.c: legacy GeoIP Country (.dat) and MaxMind DB (.mmdb) country lookups (ldb_geo.h).
 *
 * Owns the open database: libGeoIP's GeoIP handle or libmaxminddb's MMDB_s, each with its
 * mapping of the file, from open (main thread, start-up) to close. Lookups allocate nothing
 * and may run on any thread at once.
 *
 * In an .mmdb the country is `country.iso_code`, or `registered_country.iso_code` when the
 * network has no `country` (GeoLite2 leaves it out for some anycast and satellite networks);
 * any other layout gives no country. libmaxminddb is handed a sockaddr made with inet_pton,
 * never a string (MMDB_lookup_string would go through getaddrinfo).
 */
#include "plugins/ldb_geo.h"

#include <GeoIP.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <eng/assert.h>

/* MaxMind DB: the metadata follows this marker within the last 128 KiB of the file. */
static const unsigned char mmdb_marker[] = "\xab\xcd\xefMaxMind.com";
#define MMDB_MARKER_BYTES (sizeof mmdb_marker - 1)
#define MMDB_METADATA_BYTES_MAX (128u * 1024u)
/* Legacy format: 0xFF 0xFF 0xFF then the edition byte, within the last 20 bytes (libGeoIP's
 * STRUCTURE_INFO_MAX_SIZE); editions of 106 and above are stored plus 105. */
#define LEGACY_INFO_BYTES_MAX 20u
#define LEGACY_EDITION_OFFSET 105u

struct ldb_geo {
    enum ldb_geo_kind kind;
    GeoIP *legacy;
    MMDB_s mmdb;
    bool v6;
};

/* The legacy edition byte as libGeoIP's _setup_segments finds it, or -1. */
static int legacy_edition(const unsigned char *tail, size_t len)
{
    for (size_t i = 0; i + 1 < LEGACY_INFO_BYTES_MAX && i + 4 <= len; i++) {
        const unsigned char *p = tail + len - 4 - i; /* delimiter at p, edition at p[3] */
        if (p[0] == 0xff && p[1] == 0xff && p[2] == 0xff) {
            int edition = p[3];
            return edition >= (int)LEGACY_EDITION_OFFSET + 1 ? edition - (int)LEGACY_EDITION_OFFSET
                                                             : edition;
        }
    }
    return -1;
}

int ldb_geo_detect(const unsigned char *tail, size_t tail_len)
{
    ENG_ASSERT(tail != NULL || tail_len == 0);
    if (tail_len >= MMDB_MARKER_BYTES &&
        memmem(tail, tail_len, mmdb_marker, MMDB_MARKER_BYTES) != NULL)
        return LDB_GEO_MMDB;
    switch (legacy_edition(tail, tail_len)) {
    case GEOIP_COUNTRY_EDITION:
        return LDB_GEO_LEGACY_V4;
    case GEOIP_COUNTRY_EDITION_V6:
        return LDB_GEO_LEGACY_V6;
    default:
        return -1;
    }
}

/* Reads up to MMDB_METADATA_BYTES_MAX bytes from the end of path into a malloc'd buffer. */
static unsigned char *read_tail(const char *path, size_t *len, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "cannot open %s: %s", path,
                 fd < 0 || errno != 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t want = (uint64_t)st.st_size < MMDB_METADATA_BYTES_MAX ? (size_t)st.st_size
                                                                 : MMDB_METADATA_BYTES_MAX;
    unsigned char *buf = malloc(want ? want : 1);
    ssize_t got = buf ? pread(fd, buf, want, st.st_size - (off_t)want) : -1;
    int saved = errno;
    close(fd);
    if (got != (ssize_t)want) {
        snprintf(err, err_len, "cannot read %s: %s", path,
                 got < 0 ? strerror(saved) : "short read");
        free(buf);
        return NULL;
    }
    *len = want;
    return buf;
}

static int open_legacy(struct ldb_geo *g, const char *path, char *err, size_t err_len)
{
    g->legacy = GeoIP_open(path, GEOIP_MMAP_CACHE | GEOIP_SILENCE);
    if (g->legacy == NULL) {
        snprintf(err, err_len, "cannot open %s as a GeoIP database", path);
        return -1;
    }
    int edition = GeoIP_database_edition(g->legacy);
    int want = g->kind == LDB_GEO_LEGACY_V6 ? GEOIP_COUNTRY_EDITION_V6 : GEOIP_COUNTRY_EDITION;
    if (edition != want) {
        snprintf(err, err_len, "%s is a GeoIP database of edition %d, not a country database", path,
                 edition);
        GeoIP_delete(g->legacy);
        g->legacy = NULL;
        return -1;
    }
    g->v6 = g->kind == LDB_GEO_LEGACY_V6;
    return 0;
}

static int open_mmdb(struct ldb_geo *g, const char *path, char *err, size_t err_len)
{
    int rc = MMDB_open(path, MMDB_MODE_MMAP, &g->mmdb);
    if (rc != MMDB_SUCCESS) {
        snprintf(err, err_len, "cannot open %s as a MaxMind DB: %s", path, MMDB_strerror(rc));
        return -1;
    }
    g->v6 = g->mmdb.metadata.ip_version == 6;
    return 0;
}

int ldb_geo_open(const char *path, struct ldb_geo **out, char *err, size_t err_len)
{
    ENG_ASSERT(path != NULL);
    ENG_ASSERT(out != NULL);
    errno = 0;
    size_t tail_len = 0;
    unsigned char *tail = read_tail(path, &tail_len, err, err_len);
    if (tail == NULL)
        return -1;
    int kind = ldb_geo_detect(tail, tail_len);
    free(tail);
    if (kind < 0) {
        snprintf(err, err_len,
                 "%s is neither a GeoIP Country database (.dat) nor a MaxMind DB (.mmdb)", path);
        return -1;
    }
    struct ldb_geo *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    g->kind = (enum ldb_geo_kind)kind;
    int rc = g->kind == LDB_GEO_MMDB ? open_mmdb(g, path, err, err_len)
                                     : open_legacy(g, path, err, err_len);
    if (rc != 0) {
        free(g);
        return -1;
    }
    *out = g;
    return 0;
}

void ldb_geo_close(struct ldb_geo *g)
{
    if (g == NULL)
        return;
    if (g->legacy != NULL)
        GeoIP_delete(g->legacy);
    if (g->kind == LDB_GEO_MMDB)
        MMDB_close(&g->mmdb);
    free(g);
}

enum ldb_geo_kind ldb_geo_kind(const struct ldb_geo *g)
{
    return g->kind;
}

bool ldb_geo_has_v6(const struct ldb_geo *g)
{
    return g->v6;
}

static size_t copy_cc(const char *s, size_t len, char *cc)
{
    if (s == NULL || len == 0 || len >= LDB_GEO_CC_BYTES)
        return 0;
    memcpy(cc, s, len);
    cc[len] = '\0';
    return len;
}

static size_t mmdb_country(const struct ldb_geo *g, const struct sockaddr *sa, char *cc)
{
    int mmdb_error = MMDB_SUCCESS;
    MMDB_lookup_result_s res = MMDB_lookup_sockaddr(&g->mmdb, sa, &mmdb_error);
    if (mmdb_error != MMDB_SUCCESS || !res.found_entry)
        return 0;
    static const char *const parents[] = {"country", "registered_country"};
    for (size_t i = 0; i < sizeof parents / sizeof parents[0]; i++) {
        MMDB_entry_data_s data;
        if (MMDB_get_value(&res.entry, &data, parents[i], "iso_code", NULL) != MMDB_SUCCESS ||
            !data.has_data)
            continue;
        if (data.type != MMDB_DATA_TYPE_UTF8_STRING)
            return 0;
        return copy_cc(data.utf8_string, data.data_size, cc);
    }
    return 0;
}

/* addr as a 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d); false if it is neither. */
static bool parse_v6(const char *addr, unsigned char a[16], bool *was_v4)
{
    *was_v4 = false;
    if (inet_pton(AF_INET6, addr, a) == 1)
        return true;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (inet_pton(AF_INET, addr, a + 12) != 1)
        return false;
    memcpy(a, mapped, sizeof mapped);
    *was_v4 = true;
    return true;
}

size_t ldb_geo_country(const struct ldb_geo *g, const char *addr, size_t len, char *cc)
{
    ENG_ASSERT(g != NULL);
    ENG_ASSERT(cc != NULL);
    char text[LDB_GEO_ADDR_BYTES_MAX + 1];
    if (len > LDB_GEO_ADDR_BYTES_MAX || memchr(addr, '\0', len) != NULL)
        return 0;
    memcpy(text, addr, len);
    text[len] = '\0';
    GeoIPLookup gl;
    memset(&gl, 0, sizeof gl);
    if (g->kind == LDB_GEO_LEGACY_V4) {
        if (memchr(text, ':', len) != NULL) /* 2.05 hands it to the same parser: no country */
            return 0;
        const char *s = GeoIP_country_code_by_addr_gl(g->legacy, text, &gl);
        return copy_cc(s, s ? strlen(s) : 0, cc);
    }
    unsigned char a[16];
    bool was_v4 = false;
    if (!parse_v6(text, a, &was_v4))
        return 0;
    if (g->kind == LDB_GEO_LEGACY_V6) {
        geoipv6_t ipnum;
        memcpy(&ipnum, a, sizeof a);
        const char *s = GeoIP_country_code_by_ipnum_v6_gl(g->legacy, ipnum, &gl);
        return copy_cc(s, s ? strlen(s) : 0, cc);
    }
    if (was_v4) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        memcpy(&sin.sin_addr, a + 12, 4);
        return mmdb_country(g, (const struct sockaddr *)&sin, cc);
    }
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    memcpy(&sin6.sin6_addr, a, 16);
    return mmdb_country(g, (const struct sockaddr *)&sin6, cc);
}
