/*
 * ldb_map.h: read-only key/value files for the local-database plugins (PostfixMap, SaAwlLookup):
 * Berkeley DB hash files (as `postmap hash:` and SpamAssassin's AWL write them) and cdb files
 * (as `postmap cdb:` writes them, read with tinycdb).
 *
 * A struct ldb_map is one open file on one shard: BDB handles opened without DB_THREAD and
 * tinycdb's struct cdb (whose lookups write into it) must not be shared between threads, so
 * each shard opens its own (shard_start) and only that shard's thread uses it. Lookups are
 * synchronous reads of a local file through the page cache (BDB's own small cache, or the
 * mmap for cdb): they are memory lookups, short and bounded, so they run on the shard.
 *
 * Change detection: a session (ldb_map_begin .. ldb_map_end) first stat()s the path, at most
 * once per LDB_MAP_CHECK_MS per shard, and re-opens the file when its device, inode, size or
 * mtime changed (postmap cdb: and SpamAssassin replace or rewrite the file while we read). A
 * failed re-open keeps the old handle (logged, counted) and is retried at the next check.
 * `postmap hash:` rewrites the .db in place under an exclusive flock(); a BDB session takes a
 * shared flock (non-blocking) for its lookups, returns LDB_BUSY while postmap holds the lock,
 * and the caller retries later (the next begin then re-opens without waiting for the check
 * interval). Once it holds the lock, a BDB session also fstat()s its open file: a rewrite in
 * place that happened between two sessions is seen at once (its size or mtime changed) and
 * re-opened before any lookup, so pages libdb cached from the old content are never mixed
 * with the new file's.
 *
 * Errors: open failures are start-up errors with a sentence; lookup failures (a read error, a
 * value longer than LDB_VALUE_BYTES_MAX) are LDB_ERROR with a sentence for the plugin's
 * failure detail. Counters per map, logged by ldb_map_close.
 */
#ifndef POL_PLUGINS_LDB_MAP_H
#define POL_PLUGINS_LDB_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest value a lookup returns; a longer one is an error (no map the plugins read holds more
 * than a short verdict or a number; postmap's values are one line). */
#define LDB_VALUE_BYTES_MAX 4096u
/* Longest key a lookup takes (a sender address plus the AWL suffix; Postfix limits an address
 * to a few hundred bytes). */
#define LDB_KEY_BYTES_MAX 4096u
/* How often a shard looks at the file for a replacement. */
#define LDB_MAP_CHECK_MS 1000u
/* libdb's page cache per open Berkeley DB file (per shard): the file's size and an eighth,
 * within these bounds. With libdb's default (256 KiB) a lookup in a table of a few MiB reads
 * pages from the kernel on almost every call (measured: 14.6 us per lookup in a 5 MiB postmap
 * table, 1.6 us with the whole file cached). Tables over the maximum still work, with lookups
 * that read pages through the kernel's page cache. */
#define LDB_BDB_CACHE_BYTES_MIN (256u * 1024u)
#define LDB_BDB_CACHE_BYTES_MAX (64u * 1024u * 1024u)
/* Longest path, with the suffix a type prefix adds. */
#define LDB_PATH_BYTES_MAX 4096u

enum ldb_map_kind {
    LDB_MAP_HASH, /* Berkeley DB hash */
    LDB_MAP_CDB,  /* cdb (tinycdb) */
};

enum ldb_map_nul {
    LDB_NUL_ONE,  /* keys carry one trailing NUL, as postmap hash: writes them (2.05 reads so) */
    LDB_NUL_NONE, /* keys are the bytes alone (SpamAssassin's AWL) */
    LDB_NUL_BOTH, /* without, then with a NUL (Postfix's own reader does both for cdb:) */
};

/* Which file and how to read it. */
struct ldb_map_spec {
    enum ldb_map_kind kind;
    enum ldb_map_nul nul;
    char path[LDB_PATH_BYTES_MAX];
};

/* From a db_file option. With prefixes: "hash:NAME" reads NAME.db and "cdb:NAME" NAME.cdb, as
 * in Postfix's main.cf; any other text is the file's path and the content says which format it
 * is. Without prefixes (SaAwlLookup) the text is the path of a Berkeley DB hash file. Reads the
 * file's first bytes to detect and check the format. Returns 0, or -1 with a sentence in err. */
int ldb_map_spec_parse(const char *text, bool prefixes, struct ldb_map_spec *out, char *err,
                       size_t err_len);

/* The format of a file from its first bytes (up to 2048) and its size: LDB_MAP_HASH (a BDB hash
 * meta page, either byte order), LDB_MAP_CDB (a consistent cdb header), or -1. Pure. */
int ldb_map_detect(const unsigned char *head, size_t head_len, uint64_t file_bytes);

struct ldb_map;

/* Opens the file for the calling thread. Returns 0 and *out, or -1 with a sentence in err. */
int ldb_map_open(const struct ldb_map_spec *spec, struct ldb_map **out, char *err, size_t err_len);
/* Logs the counters (label names the plugin; NULL: no log line) and closes. m may be NULL. */
void ldb_map_close(struct ldb_map *m, const char *label);

enum ldb_status {
    LDB_OK,      /* begin: ready; get: found */
    LDB_MISSING, /* get: no such key */
    LDB_BUSY,    /* begin: postmap is rewriting the file; try again later */
    LDB_ERROR,   /* a sentence is in err */
};

/* Starts a series of lookups at now_ms (a monotonic clock): checks for a new file (see the top)
 * and takes the shared lock. LDB_OK (then call ldb_map_end), LDB_BUSY or LDB_ERROR. */
enum ldb_status ldb_map_begin(struct ldb_map *m, uint64_t now_ms, char *err, size_t err_len);
/* Looks key[0..key_len) up. LDB_OK: the value (one trailing NUL removed) is in
 * val[0..*val_len) (val holds LDB_VALUE_BYTES_MAX bytes and is NUL-terminated); LDB_MISSING;
 * LDB_ERROR. */
enum ldb_status ldb_map_get(struct ldb_map *m, const char *key, size_t key_len, char *val,
                            size_t *val_len, char *err, size_t err_len);
void ldb_map_end(struct ldb_map *m);

/* Counters (for tests and the close log line). */
struct ldb_map_stats {
    uint64_t lookups;
    uint64_t checks;       /* stat() of the path */
    uint64_t reopens;      /* a changed file opened */
    uint64_t reopen_fails; /* kept the old handle */
    uint64_t busy;         /* lock held by a writer */
    uint64_t errors;       /* read errors and values over LDB_VALUE_BYTES_MAX */
};
void ldb_map_stats(const struct ldb_map *m, struct ldb_map_stats *out);

#ifdef __cplusplus
}
#endif

#endif
