/*
 * eng/redis.h: a Redis client for one shard, on hiredis 0.14's asynchronous API driven by the
 * shard's loop (eng_poll for the socket, eng_timer for deadlines, connect timeouts and
 * backoff). Public API; generic (an address, a password, a database number, argv commands,
 * callbacks on the shard); it knows nothing about policy.
 *
 * Why hiredis: its async context never blocks (redisAsyncConnect is a non-blocking connect; the
 * reply parser is incremental) and it lets the caller own the event loop through five hooks
 * (addRead/delRead/addWrite/delWrite/cleanup), mapped here onto one eng_poll per socket. What it
 * lacks in 0.14 is added here: per-command deadlines (hiredis 0.14 has no async timeouts), a
 * connect timeout, reconnection with exponential backoff, fail-fast while down, counters.
 * AUTH and SELECT are queued as the first commands of each connection (before any caller's
 * command, so Redis runs them first); an error reply to either resets the connection (logged).
 *
 * Pipelining: commands issued during one loop turn are appended to hiredis' output buffer and
 * leave in one write when the socket becomes writable; any number are outstanding (up to
 * ops_max); Redis answers in order and hiredis matches replies in order. A command whose
 * deadline passes completes with ENG_REDIS_TIMEOUT at once and the connection is reset (the
 * replies that follow can no longer be trusted to arrive); its other commands complete with
 * ENG_REDIS_DOWN, and a new connection is made after the backoff. While no connection exists
 * (waiting for the backoff), commands fail fast with ENG_REDIS_DOWN from the loop.
 *
 * Memory: command slots (ops_max) are allocated at create; hiredis itself mallocs its buffers
 * and reply objects (a known exception to "no malloc on the data path").
 *
 * Threads: a client is created, used and destroyed on its shard (asserted). done runs on that
 * shard from its loop, never inside the call that queued the command; it may queue new
 * commands. The reply is valid only during done.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_REDIS_H
#define ENG_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_redis; /* one client: one connection, on one shard */

#define ENG_REDIS_ARGS_MAX 16u /* arguments of one command */

enum eng_redis_status {
    ENG_REDIS_OK,      /* a reply that is not nil and not an error (see reply->type) */
    ENG_REDIS_NIL,     /* a nil reply (GET of a missing key, SET NX on an existing one) */
    ENG_REDIS_ERROR,   /* an error reply; reply->str holds Redis' message */
    ENG_REDIS_DOWN,    /* no connection, or it broke before the reply */
    ENG_REDIS_TIMEOUT, /* no reply before the deadline */
    ENG_REDIS_STATUS_COUNT
};

const char *eng_redis_status_text(enum eng_redis_status st);

enum eng_redis_type {
    ENG_REDIS_T_NONE,    /* no reply (DOWN, TIMEOUT) */
    ENG_REDIS_T_STRING,  /* bulk string: str, len */
    ENG_REDIS_T_STATUS,  /* +OK and the like: str, len */
    ENG_REDIS_T_INTEGER, /* integer */
    ENG_REDIS_T_ARRAY,   /* elements (not exposed further) */
    ENG_REDIS_T_NIL,
    ENG_REDIS_T_ERROR, /* str, len */
};

struct eng_redis_reply {
    enum eng_redis_type type;
    const char *str; /* STRING, STATUS, ERROR; valid only during done */
    size_t len;
    long long integer;
    size_t elements;
};

#define ENG_REDIS_SENTINELS_MAX 8u  /* sentinel addresses of one client */
#define ENG_REDIS_HOST_BYTES 64u    /* a numeric address, NUL included */

struct eng_redis_addr {
    const char *host; /* numeric IPv4/IPv6 address, or a name resolved per attempt */
    uint16_t port;
};

struct eng_redis_config {
    const char *name;       /* for log lines (a <Connection> name); copied */
    const char *host;       /* a numeric IPv4/IPv6 address, or a name (at most 255 bytes)
                               resolved off the shard at every connection attempt (hiredis
                               would block in getaddrinfo: it only ever gets numeric ones);
                               copied */
    uint16_t port;          /* default 6379 */
    const char *unix_path;  /* when set, a Unix socket instead of host:port; copied */
    const char *password;   /* when set, AUTH first; copied */
    uint32_t db;            /* when not 0, SELECT db first */
    uint32_t ops_max;       /* commands queued or in flight; one more is refused with
                               -ENOBUFS (counted). Default 4096. */
    uint32_t timeout_ms;    /* deadline of a command given timeout_ms 0. Default 1000. */
    uint32_t connect_timeout_ms; /* one connection attempt (AUTH/SELECT included). Default 1000. */
    uint32_t backoff_min_ms;     /* wait before reconnecting, doubled per consecutive failure
                                    up to backoff_max_ms. Defaults 100, 5000. */
    uint32_t backoff_max_ms;
    /* Redis Sentinel: when sentinel_count > 0 (and service set), every connection attempt
     * first asks a sentinel `SENTINEL get-master-addr-by-name service` and connects to the
     * address it names (host/unix_path are then unused). The sentinels are asked in turn,
     * one per attempt (a failed one costs an attempt of the backoff); the master's address is
     * asked again after every lost or failed master connection, so a failover is followed.
     * Commands fail fast (DOWN) while a sentinel is being asked, as while waiting to
     * reconnect. Copied. */
    const struct eng_redis_addr *sentinels; /* hosts: numeric or names, as host */
    uint32_t sentinel_count; /* at most ENG_REDIS_SENTINELS_MAX */
    const char *service;
};

void eng_redis_config_defaults(struct eng_redis_config *cfg);

/* On the shard: a client; connecting starts at once, commands queued before it is up wait
 * for it (up to their deadline). Returns 0 or -errno (-ENOMEM, -EINVAL for a bad config: no
 * host, no unix_path and no sentinels; sentinels without service or beyond
 * ENG_REDIS_SENTINELS_MAX; a host longer than 255 bytes; ops_max 0). */
int eng_redis_create(struct eng_shard *sh, const struct eng_redis_config *cfg,
                     struct eng_redis **out);
/* On the shard: every command still queued or in flight completes with ENG_REDIS_DOWN (from
 * inside this call, the only exception to "never inside the call"); commands their done
 * queues meanwhile are refused with -ESHUTDOWN; the socket is closed. */
void eng_redis_destroy(struct eng_redis *r);

typedef void eng_redis_done_fn(void *ctx, enum eng_redis_status st,
                               const struct eng_redis_reply *reply);

/* Queues one command (argv[0] is its name; arguments are binary-safe, copied at once).
 * timeout_ms 0: the client's default. Returns 0 (done will run exactly once, later) or -errno
 * (done will not run): -ENOBUFS (ops_max reached), -EINVAL (argc 0 or above
 * ENG_REDIS_ARGS_MAX), -ESHUTDOWN (inside destroy), -ENOMEM (hiredis could not format it). */
int eng_redis_command(struct eng_redis *r, int argc, const char *const *argv,
                      const size_t *argv_len, uint32_t timeout_ms, eng_redis_done_fn *done,
                      void *ctx);

/* Whether the connection is established (AUTH/SELECT sent) now. */
bool eng_redis_up(const struct eng_redis *r);

/* The address connected to or last connected to ("host:port", the Unix path, or "" before
 * the first connection), e.g. the master a sentinel named. */
const char *eng_redis_peer(const struct eng_redis *r);

/* Counters of one client (plain increments on its shard). */
struct eng_redis_stats {
    uint64_t commands;        /* commands queued */
    uint64_t status[ENG_REDIS_STATUS_COUNT]; /* commands completed, by status */
    uint64_t timeouts;        /* connections reset because a command timed out */
    uint64_t resets;          /* connections lost (peer closed, error, timeout, AUTH/SELECT) */
    uint64_t connects;        /* connections established */
    uint64_t connect_failures;
    uint64_t handshake_errors; /* AUTH or SELECT answered with an error */
    uint64_t fail_fast;       /* commands failed with ENG_REDIS_DOWN without being sent */
    uint64_t refused;         /* commands refused (-ENOBUFS, -EINVAL, -ENOMEM) */
    uint64_t sentinel_queries;  /* sentinels asked for the master's address */
    uint64_t sentinel_failures; /* ... that failed (connect, no answer, unknown service) */
    uint64_t queue_depth;     /* commands queued or in flight now */
    uint64_t queue_depth_max;
};

void eng_redis_get_stats(const struct eng_redis *r, struct eng_redis_stats *out);

#ifdef __cplusplus
}
#endif

#endif
