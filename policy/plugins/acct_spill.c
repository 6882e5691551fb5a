/*
 * acct_spill.c: accounting spill files (see acct_spill.h).
 *
 * Record layout (little or big endian as the host: a file never leaves the machine):
 *   0  u32 magic "RPA1"      4  u32 XXH32 of bytes 8..511
 *   8  u16 table_len        10  u16 key_len        12  u16 time_len       14  u16 zero
 *  16  u64 metrics[4]       48  table, key, time bytes; zero padding to 512
 * Owns the descriptor of an open file (open .. close). Not thread-safe: one owner at a time.
 */
#include "plugins/acct_spill.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <eng/assert.h>

#define SPILL_MAGIC 0x31415052u /* "RPA1" read as little-endian bytes */
#define SPILL_DATA_OFFSET 48u

_Static_assert(SPILL_DATA_OFFSET + POL_ACCT_TABLE_BYTES_MAX + POL_ACCT_KEY_BYTES_MAX +
                       POL_ACCT_TIME_BYTES_MAX <=
                   POL_ACCT_SPILL_RECORD_BYTES,
               "a record holds the longest table, key and time");

void pol_acct_spill_rec_set(struct pol_acct_spill_rec *rec, const char *table, size_t table_len,
                            const char *key, size_t key_len, const char *time, size_t time_len,
                            const uint64_t m[POL_ACCT_METRICS])
{
    ENG_ASSERT(table_len <= POL_ACCT_TABLE_BYTES_MAX);
    ENG_ASSERT(key_len <= POL_ACCT_KEY_BYTES_MAX);
    ENG_ASSERT(time_len <= POL_ACCT_TIME_BYTES_MAX);
    memcpy(rec->table, table, table_len);
    rec->table[table_len] = '\0';
    memcpy(rec->key, key, key_len);
    rec->key[key_len] = '\0';
    memcpy(rec->time, time, time_len);
    rec->time[time_len] = '\0';
    rec->table_len = (uint16_t)table_len;
    rec->key_len = (uint16_t)key_len;
    rec->time_len = (uint16_t)time_len;
    memcpy(rec->m, m, sizeof(rec->m));
}

static void put16(unsigned char *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

static uint16_t get16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

void pol_acct_spill_encode(const struct pol_acct_spill_rec *rec,
                           unsigned char out[POL_ACCT_SPILL_RECORD_BYTES])
{
    memset(out, 0, POL_ACCT_SPILL_RECORD_BYTES);
    uint32_t magic = SPILL_MAGIC;
    memcpy(out, &magic, 4);
    put16(out + 8, rec->table_len);
    put16(out + 10, rec->key_len);
    put16(out + 12, rec->time_len);
    memcpy(out + 16, rec->m, sizeof(rec->m));
    unsigned char *d = out + SPILL_DATA_OFFSET;
    memcpy(d, rec->table, rec->table_len);
    memcpy(d + rec->table_len, rec->key, rec->key_len);
    memcpy(d + rec->table_len + rec->key_len, rec->time, rec->time_len);
    uint32_t sum = XXH32(out + 8, POL_ACCT_SPILL_RECORD_BYTES - 8, 0);
    memcpy(out + 4, &sum, 4);
}

int pol_acct_spill_decode(const unsigned char in[POL_ACCT_SPILL_RECORD_BYTES],
                          struct pol_acct_spill_rec *rec)
{
    uint32_t magic, sum;
    memcpy(&magic, in, 4);
    memcpy(&sum, in + 4, 4);
    if (magic != SPILL_MAGIC || sum != XXH32(in + 8, POL_ACCT_SPILL_RECORD_BYTES - 8, 0))
        return -EINVAL;
    uint16_t tl = get16(in + 8), kl = get16(in + 10), ml = get16(in + 12);
    if (tl == 0 || tl > POL_ACCT_TABLE_BYTES_MAX || kl > POL_ACCT_KEY_BYTES_MAX ||
        ml > POL_ACCT_TIME_BYTES_MAX)
        return -EINVAL;
    uint64_t m[POL_ACCT_METRICS];
    memcpy(m, in + 16, sizeof(m));
    const char *d = (const char *)in + SPILL_DATA_OFFSET;
    pol_acct_spill_rec_set(rec, d, tl, d + tl, kl, d + tl + kl, ml, m);
    return 0;
}

void pol_acct_spill_init(struct pol_acct_spill *s)
{
    s->fd = -1;
    s->path[0] = '\0';
    s->records = 0;
}

int pol_acct_spill_path(const char *dir, uint64_t ident, unsigned shard, char *out, size_t out_len)
{
    int n = snprintf(out, out_len, "%s/acct-%016" PRIx64 "-%ld-%u.spill", dir, ident,
                     (long)getpid(), shard);
    return n < 0 || (size_t)n >= out_len ? -ENAMETOOLONG : 0;
}

/* Opens and locks; counts whole records and cuts a torn tail. */
static int spill_open_fd(struct pol_acct_spill *s, int fd)
{
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    off_t whole = st.st_size - st.st_size % POL_ACCT_SPILL_RECORD_BYTES;
    if (whole != st.st_size && ftruncate(fd, whole) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    s->fd = fd;
    s->records = (uint64_t)whole / POL_ACCT_SPILL_RECORD_BYTES;
    return 0;
}

int pol_acct_spill_open(struct pol_acct_spill *s, const char *path)
{
    ENG_ASSERT(s->fd < 0);
    size_t len = strlen(path);
    if (len >= sizeof(s->path))
        return -ENAMETOOLONG;
    if (s->path != path)
        memcpy(s->path, path, len + 1);
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    return spill_open_fd(s, fd);
}

void pol_acct_spill_close(struct pol_acct_spill *s)
{
    if (s->fd >= 0)
        close(s->fd); /* releases the flock */
    s->fd = -1;
}

int pol_acct_spill_append(struct pol_acct_spill *s, const struct pol_acct_spill_rec *recs, size_t n)
{
    if (s->fd < 0) {
        int rc = pol_acct_spill_open(s, s->path);
        if (rc != 0)
            return rc;
    }
    unsigned char buf[16 * POL_ACCT_SPILL_RECORD_BYTES];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < 16 ? n - done : 16;
        for (size_t i = 0; i < k; i++)
            pol_acct_spill_encode(&recs[done + i], buf + i * POL_ACCT_SPILL_RECORD_BYTES);
        size_t bytes = k * POL_ACCT_SPILL_RECORD_BYTES;
        ssize_t w;
        do
            w = write(s->fd, buf, bytes);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)bytes) {
            int e = w < 0 ? errno : ENOSPC;
            /* Cut a partial record so the file stays whole records. */
            if (ftruncate(s->fd, (off_t)(s->records * POL_ACCT_SPILL_RECORD_BYTES)) != 0)
                e = errno;
            return -e;
        }
        s->records += k;
        done += k;
    }
    return 0;
}

int pol_acct_spill_pop(struct pol_acct_spill *s, struct pol_acct_spill_rec *out, size_t max,
                       bool same_table, uint64_t *bad)
{
    if (s->fd < 0 || s->records == 0 || max == 0)
        return 0;
    size_t n = 0;
    uint64_t at = s->records; /* records before the cut */
    unsigned char buf[POL_ACCT_SPILL_RECORD_BYTES];
    while (n < max && at > 0) {
        off_t off = (off_t)((at - 1) * POL_ACCT_SPILL_RECORD_BYTES);
        ssize_t r;
        do
            r = pread(s->fd, buf, sizeof(buf), off);
        while (r < 0 && errno == EINTR);
        if (r != (ssize_t)sizeof(buf))
            return r < 0 ? -errno : -EIO;
        struct pol_acct_spill_rec rec;
        if (pol_acct_spill_decode(buf, &rec) != 0) {
            if (bad)
                (*bad)++;
            at--;
            continue;
        }
        if (same_table && n > 0 &&
            (rec.table_len != out[0].table_len || memcmp(rec.table, out[0].table, rec.table_len)))
            break;
        out[n++] = rec;
        at--;
    }
    if (ftruncate(s->fd, (off_t)(at * POL_ACCT_SPILL_RECORD_BYTES)) != 0)
        return -errno;
    s->records = at;
    return (int)n;
}

void pol_acct_spill_remove_if_empty(struct pol_acct_spill *s)
{
    if (s->fd >= 0 && s->records == 0 && s->path[0] != '\0') {
        unlink(s->path);
        pol_acct_spill_close(s);
    }
}

int pol_acct_spill_orphans(const char *dir, uint64_t ident, pol_acct_spill_found_fn *fn, void *ctx)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    char prefix[64], own[96];
    snprintf(prefix, sizeof(prefix), "acct-%016" PRIx64 "-", ident);
    snprintf(own, sizeof(own), "acct-%016" PRIx64 "-%ld-", ident, (long)getpid());
    size_t plen = strlen(prefix), own_len = strlen(own);
    int found = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, prefix, plen) != 0 || len < plen + 6 ||
            strcmp(de->d_name + len - 6, ".spill") != 0 || strncmp(de->d_name, own, own_len) == 0)
            continue;
        struct pol_acct_spill s;
        pol_acct_spill_init(&s);
        int n = snprintf(s.path, sizeof(s.path), "%s/%s", dir, de->d_name);
        if (n < 0 || (size_t)n >= sizeof(s.path))
            continue;
        int fd = open(s.path, O_RDWR | O_APPEND | O_CLOEXEC);
        if (fd < 0 || spill_open_fd(&s, fd) != 0)
            continue; /* held by a live process, or gone */
        found++;
        fn(ctx, &s);
    }
    closedir(d);
    return found;
}
