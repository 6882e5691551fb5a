/*
 * reader.c: line reader over plain or gzip maillogs (see reader.h).
 *
 * With zlib (RPL_HAVE_ZLIB) every input goes through gzdopen, which passes plain files through
 * unchanged and also decompresses concatenated gzip members (what logrotate + cat produce).
 * Without zlib, input is read with read(2) and a gzip magic number is an error. The buffer is
 * compacted (memmove of the partial last line) only when the scan reaches its end, so each byte
 * is moved at most once per buffer fill.
 */
#include "reader.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef RPL_HAVE_ZLIB
#include <zlib.h>
#endif

#include "bench_assert.h"

#define READ_CHUNK_BYTES (256u * 1024u)

struct rpl_reader {
    int fd;
    bool own_fd;
#ifdef RPL_HAVE_ZLIB
    gzFile gz;
#endif
    bool eof;
    bool skipping;   /* inside an over-long line: drop bytes up to the next LF */
    bool first_read; /* no bytes read yet (gzip magic check) */
    int gzip;
    uint32_t line_bytes_max;
    char *buf;
    size_t cap, start, fill;
    int64_t ref_sec;
    uint64_t long_line_count, line_count;
    char path[256];
};

int rpl_reader_open(struct rpl_reader **out, const char *path, uint32_t line_bytes_max,
                    char *err, size_t err_len)
{
    BENCH_ASSERT(out != NULL && path != NULL);
    *out = NULL;
    if (line_bytes_max == 0)
        line_bytes_max = RPL_READER_LINE_BYTES_DEFAULT;
    struct rpl_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return snprintf(err, err_len, "out of memory"), -ENOMEM;
    r->line_bytes_max = line_bytes_max;
    r->cap = (size_t)line_bytes_max + READ_CHUNK_BYTES;
    r->buf = malloc(r->cap);
    snprintf(r->path, sizeof(r->path), "%s", strcmp(path, "-") == 0 ? "(stdin)" : path);
    if (r->buf == NULL) {
        free(r);
        return snprintf(err, err_len, "out of memory"), -ENOMEM;
    }
    bool is_stdin = strcmp(path, "-") == 0;
    r->fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    r->own_fd = !is_stdin;
    if (r->fd < 0) {
        int e = errno;
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(e));
        rpl_reader_close(r);
        return -e;
    }
    struct stat st;
    r->ref_sec = (int64_t)time(NULL);
    if (fstat(r->fd, &st) == 0 && S_ISREG(st.st_mode))
        r->ref_sec = (int64_t)st.st_mtime;
    else if (fstat(r->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, err_len, "cannot read %s: it is a directory", path);
        rpl_reader_close(r);
        return -EISDIR;
    }
    r->first_read = true;
#ifdef RPL_HAVE_ZLIB
    int fd2 = dup(r->fd); /* gzclose closes its descriptor; ours is closed separately */
    r->gz = fd2 >= 0 ? gzdopen(fd2, "rb") : NULL;
    if (r->gz == NULL) {
        if (fd2 >= 0)
            close(fd2);
        snprintf(err, err_len, "cannot read %s: zlib could not open it", path);
        rpl_reader_close(r);
        return -ENOMEM;
    }
    gzbuffer(r->gz, READ_CHUNK_BYTES);
#endif
    *out = r;
    return 0;
}

/* Appends up to the free space; returns bytes read, 0 at the end, or -errno. */
static ssize_t fill_more(struct rpl_reader *r, char *err, size_t err_len)
{
    size_t room = r->cap - r->fill;
    BENCH_ASSERT(room > 0);
    if (room > READ_CHUNK_BYTES)
        room = READ_CHUNK_BYTES;
#ifdef RPL_HAVE_ZLIB
    int n = gzread(r->gz, r->buf + r->fill, (unsigned)room);
    if (n < 0) {
        int zerr;
        const char *msg = gzerror(r->gz, &zerr);
        snprintf(err, err_len, "cannot read %s: %s", r->path, msg);
        return -EIO;
    }
    if (r->first_read && n > 0)
        r->gzip = !gzdirect(r->gz);
#else
    ssize_t n;
    do
        n = read(r->fd, r->buf + r->fill, room);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        int e = errno;
        snprintf(err, err_len, "cannot read %s: %s", r->path, strerror(e));
        return -e;
    }
    if (r->first_read && n >= 2 && (unsigned char)r->buf[r->fill] == 0x1f &&
        (unsigned char)r->buf[r->fill + 1] == 0x8b) {
        snprintf(err, err_len, "%s is gzip-compressed, but this build has no zlib: "
                 "pipe it through 'gzip -dc' and read '-'", r->path);
        return -ENOTSUP;
    }
#endif
    if (n > 0)
        r->first_read = false;
    r->fill += (size_t)n;
    return n;
}

int rpl_reader_next(struct rpl_reader *r, const char **line, size_t *len, char *err,
                    size_t err_len)
{
    BENCH_ASSERT(r != NULL);
    for (;;) {
        char *lf = memchr(r->buf + r->start, '\n', r->fill - r->start);
        if (lf != NULL) {
            size_t n = (size_t)(lf - (r->buf + r->start));
            const char *p = r->buf + r->start;
            r->start += n + 1;
            if (r->skipping || n > r->line_bytes_max) {
                r->skipping = false;
                r->long_line_count++;
                continue;
            }
            *line = p;
            *len = n;
            r->line_count++;
            return 1;
        }
        if (r->fill - r->start > r->line_bytes_max) {
            r->skipping = true; /* keep nothing of it, look for its end */
            r->start = r->fill = 0;
        }
        if (r->eof) {
            size_t n = r->fill - r->start;
            if (n == 0 || r->skipping) {
                r->long_line_count += r->skipping;
                r->skipping = false;
                r->start = r->fill = 0;
                return 0;
            }
            *line = r->buf + r->start;
            *len = n; /* last line without LF */
            r->start = r->fill;
            r->line_count++;
            return 1;
        }
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->fill - r->start);
            r->fill -= r->start;
            r->start = 0;
        }
        ssize_t got = fill_more(r, err, err_len);
        if (got < 0)
            return (int)got;
        if (got == 0)
            r->eof = true;
    }
}

int64_t rpl_reader_ref_sec(const struct rpl_reader *r)
{
    return r->ref_sec;
}

uint64_t rpl_reader_long_line_count(const struct rpl_reader *r)
{
    return r->long_line_count;
}

uint64_t rpl_reader_line_count(const struct rpl_reader *r)
{
    return r->line_count;
}

int rpl_reader_is_gzip(const struct rpl_reader *r)
{
    return r->gzip;
}

void rpl_reader_close(struct rpl_reader *r)
{
    if (r == NULL)
        return;
#ifdef RPL_HAVE_ZLIB
    if (r->gz != NULL)
        gzclose(r->gz);
#endif
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r);
}
