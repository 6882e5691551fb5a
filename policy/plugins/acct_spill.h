/*
 * acct_spill.h: accounting counts written to local files while the database cannot take them
 * (internal to policy/plugins/), read back when it can.
 *
 * A spill file holds fixed-size records (table, key, time bucket, four metrics) with a magic
 * number and a checksum each; a torn record at the end (a crash while appending) is dropped
 * when the file is read. Records are appended at the end and taken back from the end, the file
 * being truncated past what was taken, so a record is either in the file or in the caller's
 * hands, never both. A file is named acct-IDENT-PID-SHARD.spill (IDENT: hex hash of the
 * database's identity, so daemons with different databases can share a directory) and held
 * with an exclusive flock while its owner runs; files of dead processes are found by
 * pol_acct_spill_orphans and replayed at start-up.
 *
 * I/O is synchronous (local disk); callers use it only when the database is unreachable, at
 * start-up and at exit. Every function returns 0 or a count, or -errno.
 */
#ifndef POL_PLUGINS_ACCT_SPILL_H
#define POL_PLUGINS_ACCT_SPILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugins/acct_agg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POL_ACCT_SPILL_RECORD_BYTES 512u
/* Table names are prefix + field; they must fit a record. */
#define POL_ACCT_TABLE_BYTES_MAX 127u
#define POL_ACCT_SPILL_PATH_MAX 4096u

struct pol_acct_spill_rec {
    char table[POL_ACCT_TABLE_BYTES_MAX + 1];
    char key[POL_ACCT_KEY_BYTES_MAX + 1];
    char time[POL_ACCT_TIME_BYTES_MAX + 1];
    uint16_t table_len, key_len, time_len;
    uint64_t m[POL_ACCT_METRICS];
};

/* Fills a record (lengths checked by the caller: asserted). */
void pol_acct_spill_rec_set(struct pol_acct_spill_rec *rec, const char *table, size_t table_len,
                            const char *key, size_t key_len, const char *time, size_t time_len,
                            const uint64_t m[POL_ACCT_METRICS]);
void pol_acct_spill_encode(const struct pol_acct_spill_rec *rec,
                           unsigned char out[POL_ACCT_SPILL_RECORD_BYTES]);
/* 0, or -EINVAL for a bad magic number, checksum or length. */
int pol_acct_spill_decode(const unsigned char in[POL_ACCT_SPILL_RECORD_BYTES],
                          struct pol_acct_spill_rec *rec);

struct pol_acct_spill {
    int fd; /* -1: not open */
    char path[POL_ACCT_SPILL_PATH_MAX];
    uint64_t records; /* whole records in the file */
};

void pol_acct_spill_init(struct pol_acct_spill *s);

/* The name of this process's file for (ident, shard) under dir. 0 or -ENAMETOOLONG. */
int pol_acct_spill_path(const char *dir, uint64_t ident, unsigned shard, char *out, size_t out_len);

/* Opens (creating, mode 0600) and locks path; counts its whole records and cuts a torn tail.
 * -EWOULDBLOCK when another live process holds it. */
int pol_acct_spill_open(struct pol_acct_spill *s, const char *path);
void pol_acct_spill_close(struct pol_acct_spill *s);

/* Appends n records (one write). On a short write the file is cut back to where it was.
 * Opens the file first when it is not open (path must be set). */
int pol_acct_spill_append(struct pol_acct_spill *s, const struct pol_acct_spill_rec *recs,
                          size_t n);

/* Takes up to max records from the end of the file into out (last record first) and truncates
 * the file before them. With same_table, stops at the first record whose table differs from
 * the last record's. Records that fail their checksum are skipped (counted in *bad when not
 * NULL). Returns how many were taken (0 when the file is empty). */
int pol_acct_spill_pop(struct pol_acct_spill *s, struct pol_acct_spill_rec *out, size_t max,
                       bool same_table, uint64_t *bad);

/* Removes the file when it holds no record. */
void pol_acct_spill_remove_if_empty(struct pol_acct_spill *s);

/* Calls fn for every file acct-IDENT-*.spill in dir, except this process's own (its pid), that
 * no live process holds, opened and locked; the callback copies *s and owns the descriptor
 * from then on (it must close it).
 * Returns how many were found, or -errno when dir cannot be read (a missing dir: 0). */
typedef void pol_acct_spill_found_fn(void *ctx, struct pol_acct_spill *s);
int pol_acct_spill_orphans(const char *dir, uint64_t ident, pol_acct_spill_found_fn *fn, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
