/*
 * eng/mc.h: a memcached client for one shard, speaking the memcached text protocol on the
 * shard's ring. Public API; generic (a server list, a key prefix, byte-string keys and values,
 * callbacks on the shard); it knows nothing about policy.
 *
 * Why not libmemcached on the request path: libmemcached owns its sockets, blocks in its own
 * poll() loop and has no way to hand a partial reply back to a caller, so it cannot be driven
 * by io_uring completions without blocking the shard. It is used here only for what fits:
 * parsing the server list (memcached_servers_parse) and choosing a key's server with ketama
 * consistent hashing (memcached_generate_hash on a memcached_st set to
 * MEMCACHED_BEHAVIOR_KETAMA, one per client so no state is shared between threads).
 *
 * Pipelining: every operation issued during one loop turn is appended to its server
 * connection's output buffer and the buffer leaves in one send at the end of the turn (at most
 * one send per connection per turn); many operations are outstanding per connection and replies
 * are matched to them in order (a FIFO). Each operation has a deadline on a ring timer; a
 * connection whose operation timed out is reset (later replies could no longer be matched), its
 * other operations fail with ENG_MC_DOWN, and it is reconnected after a backoff. While a server
 * cannot be reached, operations for it fail fast with ENG_MC_DOWN (from the loop, not inside the
 * call); connection attempts repeat with exponential backoff, so the client recovers by itself.
 *
 * Keys: the prefix (a <Connection>'s namespace) is prepended; a key the protocol cannot carry
 * (a byte <= 0x20 or 0x7f, longer than fits in 250 bytes with the prefix) or one that starts
 * with '~' is sent encoded: prefix + "~b" + base64url(key) when that fits in 250 bytes, else
 * prefix + "~h" + 32 hex digits of a 128-bit hash (XXH3_128) of the key. Raw keys never start
 * with '~', so an encoded key never equals a raw one (the empty key is encoded too: "~b").
 * Plain keys are sent as they are, so they
 * match the keys other memcached clients (Perl's Cache::Memcached) use.
 *
 * Threads: eng_mc_servers_* on any thread (start-up); a client is created, used and destroyed
 * on its shard (asserted). done runs on that shard from its loop, never inside the call that
 * queued the operation; it may queue new operations. value is valid only during done.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_MC_H
#define ENG_MC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_mc;         /* one client: a connection per server, on one shard */
struct eng_mc_servers; /* a parsed server list, read-only, shared by the shards' clients */

#define ENG_MC_KEY_BYTES_MAX 250u     /* the protocol's limit, prefix included */
#define ENG_MC_PREFIX_BYTES_MAX 128u  /* leaves room for an encoded key after it */
#define ENG_MC_SERVERS_MAX 64u
#define ENG_MC_EXPTIME_RELATIVE_MAX 2592000u /* 30 days: memcached reads larger as a time */

enum eng_mc_status {
    ENG_MC_OK,
    ENG_MC_NOT_FOUND,  /* get/delete/incr/touch: no such key */
    ENG_MC_NOT_STORED, /* add: the key exists */
    ENG_MC_DOWN,       /* no connection to the key's server, or it broke */
    ENG_MC_TIMEOUT,    /* no reply before the deadline */
    ENG_MC_ERROR,      /* ERROR, CLIENT_ERROR, SERVER_ERROR, a value above value_bytes_max */
    ENG_MC_STATUS_COUNT
};

const char *eng_mc_status_text(enum eng_mc_status st);

struct eng_mc_config {
    const char *name;            /* for log lines (a <Connection> name); copied */
    const char *prefix;          /* prepended to every key; copied. Default "" */
    uint32_t ops_max;            /* operations queued or in flight per client; one more is
                                    refused with -ENOBUFS (counted). Default 4096. */
    uint32_t timeout_ms;         /* deadline of an operation given timeout_ms 0. Default 1000. */
    uint32_t connect_timeout_ms; /* one connection attempt. Default 1000. */
    uint32_t backoff_min_ms;     /* first wait after a failure, doubled per consecutive failure
                                    up to backoff_max_ms. Defaults 100, 5000. */
    uint32_t backoff_max_ms;
    uint32_t value_bytes_max;    /* largest value sent or received; a larger one is refused
                                    (-E2BIG) or completes with ENG_MC_ERROR. Default 1 MiB
                                    (memcached's default item size). */
    uint32_t out_bytes_max;      /* output buffered per server connection (one turn's worth,
                                    plus what waits behind a send in flight); an operation that
                                    does not fit is refused with -ENOBUFS. Default 2 MiB. */
};

void eng_mc_config_defaults(struct eng_mc_config *cfg);

/* Start-up (any thread): parses "host:port, host:port" (libmemcached's syntax; port 11211 when
 * left out). Numeric addresses are parsed now; host names are not looked up here: each
 * connection resolves its server's name when it connects (off the shard), so a name that does
 * not resolve yet is not an error. Returns 0 and *out, or -1 with a sentence in err (empty
 * list, bad entry, more than ENG_MC_SERVERS_MAX servers, a Unix socket path). */
int eng_mc_servers_parse(const char *list, struct eng_mc_servers **out, char *err,
                         size_t err_len);
void eng_mc_servers_free(struct eng_mc_servers *s);
unsigned eng_mc_servers_count(const struct eng_mc_servers *s);
/* "127.0.0.1:11211" for server idx. */
const char *eng_mc_servers_name(const struct eng_mc_servers *s, unsigned idx);

/* Checks a prefix (namespace): at most ENG_MC_PREFIX_BYTES_MAX bytes, no byte <= 0x20 or 0x7f.
 * 0, or -1 with a sentence in err. */
int eng_mc_prefix_check(const char *prefix, char *err, size_t err_len);

/* The key as sent: prefix + key, encoded as described at the top. out has room for
 * ENG_MC_KEY_BYTES_MAX + 1 bytes (NUL-terminated). Returns its length. prefix must pass
 * eng_mc_prefix_check. Pure. */
size_t eng_mc_key_encode(const char *prefix, size_t prefix_len, const char *key, size_t key_len,
                         char *out);

/* On the shard: a client with one connection per server (servers stays owned by the caller
 * and must outlive the client). Connecting starts at once; operations queued before the
 * connection is up wait for it (up to their deadline). Returns 0 or -errno (-ENOMEM, -EINVAL
 * for a bad config). */
int eng_mc_create(struct eng_shard *sh, const struct eng_mc_servers *servers,
                  const struct eng_mc_config *cfg, struct eng_mc **out);
/* On the shard: every operation still queued or in flight completes with ENG_MC_DOWN (from
 * inside this call, the only exception to "never inside the call"), then the sockets are
 * closed once the ring has given their operations back. */
void eng_mc_destroy(struct eng_mc *mc);

typedef void eng_mc_done_fn(void *ctx, enum eng_mc_status st, const char *value, size_t len);

/* Operations. Each returns 0 (done will run exactly once, later) or -errno when it could not be
 * queued (done will not run): -ENOBUFS (ops_max reached or the output buffer is full), -E2BIG
 * (value above value_bytes_max). Any key works, the empty one too (it is encoded). exptime_s: 0 never expires; above
 * ENG_MC_EXPTIME_RELATIVE_MAX it is converted to an absolute Unix time (memcached's rule).
 * timeout_ms 0: the client's default.
 * done's value: get → the value; incr → the new value as decimal text; others → NULL, 0. */
int eng_mc_get(struct eng_mc *mc, const char *key, size_t key_len, uint32_t timeout_ms,
               eng_mc_done_fn *done, void *ctx);
int eng_mc_set(struct eng_mc *mc, const char *key, size_t key_len, const void *value,
               size_t value_len, uint32_t exptime_s, uint32_t timeout_ms, eng_mc_done_fn *done,
               void *ctx);
int eng_mc_add(struct eng_mc *mc, const char *key, size_t key_len, const void *value,
               size_t value_len, uint32_t exptime_s, uint32_t timeout_ms, eng_mc_done_fn *done,
               void *ctx);
int eng_mc_delete(struct eng_mc *mc, const char *key, size_t key_len, uint32_t timeout_ms,
                  eng_mc_done_fn *done, void *ctx);
int eng_mc_incr(struct eng_mc *mc, const char *key, size_t key_len, uint64_t delta,
                uint32_t timeout_ms, eng_mc_done_fn *done, void *ctx);
int eng_mc_touch(struct eng_mc *mc, const char *key, size_t key_len, uint32_t exptime_s,
                 uint32_t timeout_ms, eng_mc_done_fn *done, void *ctx);

/* Which server (index into the list) a key goes to. */
unsigned eng_mc_server_of(const struct eng_mc *mc, const char *key, size_t key_len);
/* Whether server idx is connected now. */
bool eng_mc_server_up(const struct eng_mc *mc, unsigned idx);

/* Counters of one client (plain increments on its shard). */
struct eng_mc_stats {
    uint64_t ops;            /* operations queued */
    uint64_t writes;         /* sends: round trips carrying one or more operations */
    uint64_t bytes_out, bytes_in;
    uint64_t replies;        /* replies matched to an operation */
    uint64_t status[ENG_MC_STATUS_COUNT]; /* operations completed, by status */
    uint64_t timeouts;       /* connections reset because an operation timed out */
    uint64_t protocol_errors; /* replies that could not be parsed or matched: reset */
    uint64_t resets;         /* connections lost (peer closed, error, timeout, protocol) */
    uint64_t connects;       /* connections established */
    uint64_t connect_failures;
    uint64_t fail_fast;      /* operations failed with ENG_MC_DOWN without being sent */
    uint64_t refused;        /* operations refused (-ENOBUFS, -E2BIG) */
    uint64_t recv_enobufs;   /* the provided-buffer ring was empty */
    uint64_t queue_depth;    /* operations queued or in flight now */
    uint64_t queue_depth_max;
};

void eng_mc_get_stats(const struct eng_mc *mc, struct eng_mc_stats *out);

/* ---------------------------------------------------------------------------------------------
 * The reply parser (pure; exported for the unit tests and the fuzz target).
 */

enum eng_mc_cmd {
    ENG_MC_CMD_GET,
    ENG_MC_CMD_SET,
    ENG_MC_CMD_ADD,
    ENG_MC_CMD_DELETE,
    ENG_MC_CMD_INCR,
    ENG_MC_CMD_TOUCH,
    ENG_MC_CMD_GET_TAIL, /* internal: "END\r\n" after a discarded oversized value */
    ENG_MC_CMD_COUNT
};

#define ENG_MC_LINE_BYTES_MAX 1024u /* a reply line (not a value) longer than this is an error */

struct eng_mc_reply {
    enum eng_mc_status st;
    const char *value; /* get: points into the parsed buffer; incr: the number's text */
    size_t value_len;
    uint32_t flags;          /* get: the item's flags */
    uint64_t key_hash;       /* get with a value: eng_mc_key_hash of the VALUE line's key */
    uint64_t discard_bytes;  /* get: a value above value_bytes_max: this many bytes (data and
                                its CRLF) follow and must be skipped, then a GET_TAIL reply */
};

/* Parses one reply to cmd at the start of buf. Returns the bytes it spans (> 0), 0 when buf
 * holds only part of it, or -EPROTO when it is malformed (not a reply to cmd, a line over
 * ENG_MC_LINE_BYTES_MAX bytes, bad numbers, data not followed by CRLF). */
long eng_mc_reply_parse(enum eng_mc_cmd cmd, const char *buf, size_t len, size_t value_bytes_max,
                        struct eng_mc_reply *out);
/* FNV-1a 64 of a key as sent (matches a get reply to its request). */
uint64_t eng_mc_key_hash(const char *key, size_t len);

#ifdef __cplusplus
}
#endif

#endif
