/*
 * ldb_map.c: read-only Berkeley DB hash and cdb files, one handle per shard (ldb_map.h).
 *
 * Owns per map: the BDB handle (its private page cache, sized to hold the whole file up to
 * LDB_BDB_CACHE_BYTES_MAX, allocated by libdb at open) or the cdb's fd and mmap, plus a key buffer.
 * Everything is allocated at open (shard start, or a re-open after the file changed); a lookup
 * allocates nothing of ours (libdb reads pages into the cache it allocated at open, and copies
 * values into the caller's buffer, DB_DBT_USERMEM). Only the opening thread may use a map.
 *
 * Known limits: SpamAssassin updates its AWL in place without a lock we could share, so a
 * lookup that races with its write may read an inconsistent page: libdb then returns an error
 * (the lookup fails, counted), and the next session sees the changed file (fstat) and
 * re-opens. A cdb file truncated in place (not postmap's way, which renames) would fault the
 * mmap.
 */
#include "plugins/ldb_map.h"

#include <cdb.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <eng/assert.h>
#include <eng/log.h>

/* cdb's header: 256 (position, length) pairs of little-endian 32-bit numbers. */
#define CDB_HEADER_BYTES 2048u
/* BDB meta page: magic at byte 12, page type at byte 25 (db_page.h, DBMETA). */
#define BDB_MAGIC_OFFSET 12u
#define BDB_TYPE_OFFSET 25u
#define BDB_P_HASHMETA 8u
/* Bytes read from the start of a file to detect its format. */
#define DETECT_BYTES CDB_HEADER_BYTES

_Static_assert(DETECT_BYTES >= BDB_TYPE_OFFSET + 1, "the meta page fields are read");

struct ldb_map {
    struct ldb_map_spec spec;
    DB *db;               /* LDB_MAP_HASH */
    struct cdb cdb;       /* LDB_MAP_CDB */
    int fd;               /* the file: BDB's own fd (for flock) or the cdb's */
    struct stat st;       /* of the open file, to notice a new one */
    uint32_t cache_bytes; /* libdb's page cache (LDB_MAP_HASH) */
    uint64_t checked_ms;
    bool checked_once;
    bool recheck; /* the last begin was BUSY: look for the new file at once */
    bool locked;
    struct ldb_map_stats stats;
    char key[LDB_KEY_BYTES_MAX + 1]; /* the key and its NUL */
};

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool cdb_header_ok(const unsigned char *head, uint64_t file_bytes)
{
    for (unsigned i = 0; i < 256; i++) {
        uint64_t pos = le32(head + 8 * i);
        uint64_t slots = le32(head + 8 * i + 4);
        if (pos < CDB_HEADER_BYTES || pos > file_bytes || slots * 8 > file_bytes - pos)
            return false;
    }
    return true;
}

int ldb_map_detect(const unsigned char *head, size_t head_len, uint64_t file_bytes)
{
    ENG_ASSERT(head != NULL || head_len == 0);
    if (head_len > BDB_TYPE_OFFSET) {
        uint32_t magic = le32(head + BDB_MAGIC_OFFSET);
        bool hash_magic = magic == DB_HASHMAGIC || __builtin_bswap32(magic) == DB_HASHMAGIC;
        if (hash_magic && head[BDB_TYPE_OFFSET] == BDB_P_HASHMETA)
            return LDB_MAP_HASH;
    }
    if (head_len >= CDB_HEADER_BYTES && file_bytes >= CDB_HEADER_BYTES &&
        cdb_header_ok(head, file_bytes))
        return LDB_MAP_CDB;
    return -1;
}

/* Reads the first bytes and the size of path; -1 with a sentence in err. */
static int read_head(const char *path, unsigned char *head, size_t *head_len, uint64_t *size,
                     char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 ? pread(fd, head, DETECT_BYTES, 0) : -1;
    int saved = errno;
    close(fd);
    if (got < 0) {
        snprintf(err, err_len, "cannot read %s: %s", path, strerror(saved));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%s is not a regular file", path);
        return -1;
    }
    *head_len = (size_t)got;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* "hash:NAME" / "cdb:NAME" → kind and NAME + suffix; else *kind = -1 and the text itself. */
static int spec_path(const char *text, bool prefixes, struct ldb_map_spec *out, int *kind,
                     char *err, size_t err_len)
{
    static const struct {
        const char *prefix, *suffix;
        enum ldb_map_kind kind;
    } types[] = {{"hash:", ".db", LDB_MAP_HASH}, {"cdb:", ".cdb", LDB_MAP_CDB}};
    const char *name = text, *suffix = "";
    *kind = -1;
    for (size_t i = 0; prefixes && i < sizeof types / sizeof types[0]; i++) {
        size_t n = strlen(types[i].prefix);
        if (strncmp(text, types[i].prefix, n) == 0) {
            name = text + n;
            suffix = types[i].suffix;
            *kind = (int)types[i].kind;
        }
    }
    if (name[0] == '\0') {
        snprintf(err, err_len, "db_file \"%s\" is empty", text);
        return -1;
    }
    int n = snprintf(out->path, sizeof out->path, "%s%s", name, suffix);
    if (n < 0 || (size_t)n >= sizeof out->path) {
        /* the text itself may be longer than err: name its start and its length */
        snprintf(err, err_len, "db_file \"%.40s...\" is too long (%zu bytes, at most %u)", text,
                 strlen(text), LDB_PATH_BYTES_MAX - 1 - (unsigned)strlen(suffix));
        return -1;
    }
    return 0;
}

int ldb_map_spec_parse(const char *text, bool prefixes, struct ldb_map_spec *out, char *err,
                       size_t err_len)
{
    ENG_ASSERT(text != NULL);
    ENG_ASSERT(out != NULL);
    memset(out, 0, sizeof *out);
    int want = -1;
    if (spec_path(text, prefixes, out, &want, err, err_len) != 0)
        return -1;
    unsigned char head[DETECT_BYTES];
    size_t head_len = 0;
    uint64_t size = 0;
    if (read_head(out->path, head, &head_len, &size, err, err_len) != 0)
        return -1;
    int got = ldb_map_detect(head, head_len, size);
    if (got < 0 || (!prefixes && got != LDB_MAP_HASH) || (want >= 0 && got != want)) {
        const char *what = want == (int)LDB_MAP_CDB ? "a cdb file"
                           : want >= 0 || !prefixes ? "a Berkeley DB hash file"
                                                    : "a Berkeley DB hash or cdb file";
        snprintf(err, err_len, "%s is not %s", out->path, what);
        return -1;
    }
    out->kind = (enum ldb_map_kind)got;
    /* postmap hash: writes keys with their NUL and 2.05 looks them up so; postmap cdb: writes
       them without, and Postfix's reader tries both. */
    out->nul = !prefixes ? LDB_NUL_NONE : got == LDB_MAP_CDB ? LDB_NUL_BOTH : LDB_NUL_ONE;
    return 0;
}

/* libdb reports through this when set; without it, it may print to stderr. The status codes
 * carry what we report (db_strerror). */
static void bdb_quiet(const DB_ENV *env, const char *prefix, const char *msg)
{
    (void)env;
    (void)prefix;
    (void)msg;
}

/* libdb's page cache for a table of file_bytes: the whole file and an eighth more (libdb's
 * own overhead), within [LDB_BDB_CACHE_BYTES_MIN, LDB_BDB_CACHE_BYTES_MAX]. */
static uint32_t bdb_cache_bytes(uint64_t file_bytes)
{
    uint64_t want = file_bytes + file_bytes / 8;
    if (want < LDB_BDB_CACHE_BYTES_MIN)
        want = LDB_BDB_CACHE_BYTES_MIN;
    return want > LDB_BDB_CACHE_BYTES_MAX ? LDB_BDB_CACHE_BYTES_MAX : (uint32_t)want;
}

static int open_hash(struct ldb_map *m, char *err, size_t err_len)
{
    DB *db = NULL;
    struct stat before;
    int ret = stat(m->spec.path, &before) == 0 ? db_create(&db, NULL, 0) : errno;
    if (ret == 0) {
        db->set_errcall(db, bdb_quiet);
        m->cache_bytes = bdb_cache_bytes((uint64_t)before.st_size);
        ret = db->set_cachesize(db, 0, m->cache_bytes, 1);
    }
    if (ret == 0)
        ret = db->open(db, NULL, m->spec.path, NULL, DB_HASH, DB_RDONLY, 0);
    if (ret == 0)
        ret = db->fd(db, &m->fd);
    if (ret == 0 && fstat(m->fd, &m->st) != 0)
        ret = errno;
    if (ret != 0) {
        snprintf(err, err_len, "cannot open %s as a Berkeley DB hash: %s", m->spec.path,
                 db_strerror(ret));
        if (db != NULL)
            db->close(db, 0);
        return -1;
    }
    m->db = db;
    return 0;
}

static int open_cdb(struct ldb_map *m, char *err, size_t err_len)
{
    m->fd = open(m->spec.path, O_RDONLY | O_CLOEXEC);
    if (m->fd < 0 || fstat(m->fd, &m->st) != 0 || cdb_init(&m->cdb, m->fd) != 0) {
        snprintf(err, err_len, "cannot open %s as a cdb file: %s", m->spec.path, strerror(errno));
        if (m->fd >= 0)
            close(m->fd);
        m->fd = -1;
        return -1;
    }
    return 0;
}

int ldb_map_open(const struct ldb_map_spec *spec, struct ldb_map **out, char *err, size_t err_len)
{
    ENG_ASSERT(spec != NULL);
    ENG_ASSERT(out != NULL);
    struct ldb_map *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    m->spec = *spec;
    m->fd = -1;
    int rc = spec->kind == LDB_MAP_HASH ? open_hash(m, err, err_len) : open_cdb(m, err, err_len);
    if (rc != 0) {
        free(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* Releases the file of m (not m). */
static void map_release(struct ldb_map *m)
{
    if (m->locked)
        flock(m->fd, LOCK_UN);
    m->locked = false;
    if (m->db != NULL) {
        m->db->close(m->db, 0); /* closes its fd too */
        m->db = NULL;
    } else if (m->fd >= 0) {
        cdb_free(&m->cdb);
        close(m->fd);
    }
    m->fd = -1;
}

void ldb_map_close(struct ldb_map *m, const char *label)
{
    if (m == NULL)
        return;
    if (label != NULL)
        eng_log(ENG_LOG_INFO,
                "%s: map %s: lookups=%llu checks=%llu reopens=%llu reopen_fails=%llu busy=%llu "
                "errors=%llu cache_bytes=%u",
                label, m->spec.path, (unsigned long long)m->stats.lookups,
                (unsigned long long)m->stats.checks, (unsigned long long)m->stats.reopens,
                (unsigned long long)m->stats.reopen_fails, (unsigned long long)m->stats.busy,
                (unsigned long long)m->stats.errors, m->cache_bytes);
    map_release(m);
    free(m);
}

/* Takes the shared lock on a BDB file: 0, or LDB_BUSY while a writer holds it. */
static enum ldb_status lock_shared(int fd)
{
    if (flock(fd, LOCK_SH | LOCK_NB) == 0)
        return LDB_OK;
    return errno == EWOULDBLOCK || errno == EINTR ? LDB_BUSY : LDB_ERROR;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* After a stat showed a new file: open it next to the old handle, and swap when it opened
 * (and, for BDB, could be locked). LDB_OK (either handle is usable and locked) or LDB_BUSY. */
static enum ldb_status reopen(struct ldb_map *m)
{
    struct ldb_map *fresh = NULL;
    char why[512];
    if (ldb_map_open(&m->spec, &fresh, why, sizeof why) != 0) {
        m->stats.reopen_fails++;
        eng_log(ENG_LOG_WARNING,
                "map %s changed but cannot be opened again (keeping the old "
                "one): %s",
                m->spec.path, why);
        return LDB_OK;
    }
    if (fresh->db != NULL) {
        enum ldb_status st = lock_shared(fresh->fd);
        if (st != LDB_OK) {
            map_release(fresh);
            free(fresh);
            m->recheck = true;
            return LDB_BUSY;
        }
        fresh->locked = true;
    }
    map_release(m);
    m->db = fresh->db;
    m->cdb = fresh->cdb;
    m->fd = fresh->fd;
    m->st = fresh->st;
    m->locked = fresh->locked;
    free(fresh); /* its handles now belong to m */
    m->stats.reopens++;
    return LDB_OK;
}

enum ldb_status ldb_map_begin(struct ldb_map *m, uint64_t now_ms, char *err, size_t err_len)
{
    ENG_ASSERT(m != NULL);
    ENG_ASSERT(!m->locked);
    if (m->db != NULL) {
        enum ldb_status st = lock_shared(m->fd);
        if (st != LDB_OK) {
            if (st == LDB_BUSY) {
                m->stats.busy++;
                m->recheck = true; /* the writer is rewriting it: re-open once it is done */
            } else {
                snprintf(err, err_len, "cannot lock %s: %s", m->spec.path, strerror(errno));
            }
            return st;
        }
        m->locked = true;
        /* a rewrite in place (postmap hash:, SpamAssassin) shows on our own fd at once */
        struct stat fst;
        if (fstat(m->fd, &fst) == 0 && !same_file(&fst, &m->st))
            m->recheck = true;
    }
    if (!m->recheck && m->checked_once && now_ms - m->checked_ms < LDB_MAP_CHECK_MS)
        return LDB_OK;
    m->checked_ms = now_ms;
    m->checked_once = true;
    m->recheck = false;
    m->stats.checks++;
    struct stat st;
    if (stat(m->spec.path, &st) != 0 || same_file(&st, &m->st))
        return LDB_OK; /* gone (keep what we have) or unchanged */
    enum ldb_status rs = reopen(m);
    if (rs == LDB_BUSY) {
        m->stats.busy++;
        ldb_map_end(m);
    }
    return rs;
}

void ldb_map_end(struct ldb_map *m)
{
    ENG_ASSERT(m != NULL);
    if (m->locked)
        flock(m->fd, LOCK_UN);
    m->locked = false;
}

/* One lookup of m->key[0..len). */
static enum ldb_status get_once(struct ldb_map *m, size_t len, char *val, size_t *val_len,
                                char *err, size_t err_len)
{
    if (m->db != NULL) {
        DBT k, v;
        memset(&k, 0, sizeof k);
        memset(&v, 0, sizeof v);
        k.data = m->key;
        k.size = (u_int32_t)len;
        v.data = val;
        v.ulen = LDB_VALUE_BYTES_MAX;
        v.flags = DB_DBT_USERMEM;
        int ret = m->db->get(m->db, NULL, &k, &v, 0);
        if (ret == DB_NOTFOUND || ret == DB_KEYEMPTY)
            return LDB_MISSING;
        if (ret != 0) {
            snprintf(err, err_len, "cannot read %s: %s", m->spec.path,
                     ret == DB_BUFFER_SMALL ? "value too long" : db_strerror(ret));
            return LDB_ERROR;
        }
        *val_len = v.size;
        return LDB_OK;
    }
    int found = cdb_find(&m->cdb, m->key, (unsigned)len);
    if (found == 0)
        return LDB_MISSING;
    unsigned vlen = cdb_datalen(&m->cdb);
    const void *data = found > 0 ? cdb_get(&m->cdb, vlen, cdb_datapos(&m->cdb)) : NULL;
    if (data == NULL || vlen > LDB_VALUE_BYTES_MAX) {
        snprintf(err, err_len, "cannot read %s: %s", m->spec.path,
                 data == NULL ? "broken cdb file" : "value too long");
        return LDB_ERROR;
    }
    memcpy(val, data, vlen);
    *val_len = vlen;
    return LDB_OK;
}

enum ldb_status ldb_map_get(struct ldb_map *m, const char *key, size_t key_len, char *val,
                            size_t *val_len, char *err, size_t err_len)
{
    ENG_ASSERT(m != NULL);
    ENG_ASSERT(m->locked || m->db == NULL);
    m->stats.lookups++;
    if (key_len > LDB_KEY_BYTES_MAX)
        return LDB_MISSING; /* longer than any key we could have been asked to store */
    memcpy(m->key, key, key_len);
    m->key[key_len] = '\0';
    enum ldb_status st = LDB_MISSING;
    if (m->spec.nul != LDB_NUL_ONE)
        st = get_once(m, key_len, val, val_len, err, err_len);
    if (st == LDB_MISSING && m->spec.nul != LDB_NUL_NONE)
        st = get_once(m, key_len + 1, val, val_len, err, err_len);
    if (st == LDB_ERROR)
        m->stats.errors++;
    if (st != LDB_OK)
        return st;
    if (m->spec.nul != LDB_NUL_NONE && *val_len > 0 && val[*val_len - 1] == '\0')
        (*val_len)--; /* 2.05's filter_fetch_value s/\0$// */
    val[*val_len] = '\0';
    return LDB_OK;
}

void ldb_map_stats(const struct ldb_map *m, struct ldb_map_stats *out)
{
    ENG_ASSERT(m != NULL);
    *out = m->stats;
}
