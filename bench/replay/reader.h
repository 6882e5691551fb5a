/*
 * reader.h: reads a maillog line by line, plain or gzip (detected by content, not by name), from
 * a file or from standard input ("-").
 *
 * Owns one file descriptor (or zlib stream) and one buffer of RPL_READER_BUF_BYTES, allocated at
 * open (this is the tool's load phase, before any traffic). A line longer than line_bytes_max is
 * skipped and counted in long_line_count, never fatal. A CR before the LF is left in the line
 * (the line parser drops it). Built without zlib, gzip input is refused with a clear message.
 * Single-threaded.
 */
#ifndef RPL_READER_H
#define RPL_READER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RPL_READER_LINE_BYTES_DEFAULT 65536u /* syslog lines are < 8 KiB; Postfix caps at 2 KiB */

struct rpl_reader;

/* Opens path ("-" is standard input). Returns 0, or -errno with a sentence in err naming the
 * file. line_bytes_max 0 means the default. */
int rpl_reader_open(struct rpl_reader **out, const char *path, uint32_t line_bytes_max,
                    char *err, size_t err_len);

/* The next line without its LF: 1 with *line and *len set (valid until the next call), 0 at the end,
 * or -errno (err filled) on a read or decompression error. */
int rpl_reader_next(struct rpl_reader *r, const char **line, size_t *len, char *err,
                    size_t err_len);

/* The file's mtime in epoch seconds; for standard input and pipes, the time of opening. */
int64_t rpl_reader_ref_sec(const struct rpl_reader *r);
uint64_t rpl_reader_long_line_count(const struct rpl_reader *r);
uint64_t rpl_reader_line_count(const struct rpl_reader *r); /* lines returned so far */
int rpl_reader_is_gzip(const struct rpl_reader *r);

void rpl_reader_close(struct rpl_reader *r);

#ifdef __cplusplus
}
#endif

#endif
