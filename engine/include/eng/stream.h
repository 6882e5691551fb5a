/*
 * eng/stream.h: a small outbound stream client for request/response protocols (the policy
 * protocol to another policy server, HTTP/1.x to ctipd, fail2ban's pickle commands).
 *
 * A struct eng_stream is one endpoint (a TCP address or a Unix socket path) on one shard with
 * up to conns_max connections to it, each carrying one request at a time (the protocols it is
 * for are strictly sequential: request, then its whole reply). Requests that find no free
 * connection wait in a FIFO of at most queue_max. A reply is recognised by the caller's framing
 * callback; an idle connection is kept for idle_ms_max and reused. Every request ends exactly
 * once in its done callback: with the reply, or with -ETIMEDOUT (its deadline, which covers
 * queueing, connecting, writing and reading), -ECONNREFUSED and friends (connect failed, or
 * the endpoint is backing off after failures), -ECONNRESET (peer closed before the reply),
 * -EMSGSIZE (reply longer than response_bytes_max), -EPROTO (the framing callback rejected
 * the reply) or -ECANCELED (eng_stream_destroy).
 *
 * Threads: one shard; every function and callback runs on it. done never runs inside
 * eng_stream_request. Return convention: 0 or -errno.
 */
#ifndef ENG_STREAM_H
#define ENG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_stream;

#define ENG_STREAM_HOST_BYTES 256u

/* Where to connect. Filled by eng_stream_target_tcp / _unix at start-up. */
struct eng_stream_target {
    struct sockaddr_storage addr; /* a numeric address or a Unix path (addr_len 0: by name) */
    socklen_t addr_len;
    char host[ENG_STREAM_HOST_BYTES]; /* a name to look up at each connection attempt, or "" */
    char port[8];
    char name[300]; /* "127.0.0.1:10023", "[::1]:80", "mx.example:25", "unix:/path", for logs */
};

/* "HOST:PORT" or "[V6]:PORT". A numeric HOST is used as is; a name is not looked up now but
 * at each connection attempt, off the shard (its IPv4 address first when it has one), so a
 * name that resolves only later, or moves, is followed. Returns 0, or -EINVAL with a
 * sentence in err (not HOST:PORT, a bad port, a name longer than 255 bytes). */
int eng_stream_target_tcp(const char *hostport, struct eng_stream_target *out, char *err,
                          size_t err_len);
/* A Unix stream socket path. Returns 0, or -ENAMETOOLONG / -EINVAL with a sentence in err. */
int eng_stream_target_unix(const char *path, struct eng_stream_target *out, char *err,
                           size_t err_len);

/* Framing: is buf[0..len) (the reply so far) a complete reply? Returns its length (> 0; bytes
 * after it are unsolicited and close the connection), 0 for "need more", or a negative errno
 * (e.g. -EPROTO) for a malformed reply. eof: the peer closed, no more bytes will come (a
 * close-delimited reply is complete now). *keep starts true; set it false when the connection
 * must not be reused after this reply (HTTP "Connection: close"). */
typedef ssize_t eng_stream_frame_fn(void *arg, const char *buf, size_t len, bool eof,
                                    bool *keep);

struct eng_stream_config {
    uint32_t conns_max;          /* connections to the endpoint. Default 4. */
    uint32_t queue_max;          /* requests waiting for a connection. Default 256. */
    uint32_t connect_timeout_ms; /* a connect that takes longer fails. Default 5000. */
    uint32_t idle_ms_max;        /* close a connection idle this long; 0 closes each connection
                                    after its reply. Default 60000. */
    uint32_t backoff_min_ms;     /* after a failed connect, new requests fail at once for this
                                    long, doubling per failure up to backoff_max_ms; a good
                                    connect resets it. Defaults 100 and 5000. */
    uint32_t backoff_max_ms;
    uint32_t response_bytes_max; /* longest reply (the read buffer of each connection). Default
                                    65536. */
    eng_stream_frame_fn *frame;  /* required */
    void *frame_arg;
};

void eng_stream_config_defaults(struct eng_stream_config *cfg);

/* One request. The caller owns it (e.g. inside a plugin's req_state) and keeps it and the
 * bytes it sends alive until done has run. Fields are private. */
struct eng_stream_req;
/* status 0: reply[0..len) is the framed reply, valid only during the call. Otherwise a negative
 * errno (see the top) and reply is NULL. done may start new requests; it must not destroy the
 * stream. */
typedef void eng_stream_done_fn(struct eng_stream_req *rq, int status, const char *reply,
                                size_t len);
struct eng_stream_req {
    struct eng_stream_req *next; /* private */
    struct eng_stream *s;        /* private */
    void *conn;                  /* private */
    const char *out;             /* private */
    size_t out_len;              /* private */
    struct eng_timer timer;      /* private: deadline, or a deferred completion */
    eng_stream_done_fn *done;    /* private */
    int status;                  /* private */
    uint8_t state;               /* private */
    bool retried;                /* private */
    void *ctx;                   /* the caller's, untouched */
};

/* Allocates the connections and their read buffers (start-up or shard start; no connection is
 * opened until the first request). Returns 0, -EINVAL (cfg) or -ENOMEM. */
int eng_stream_create(struct eng_shard *sh, const struct eng_stream_target *t,
                      const struct eng_stream_config *cfg, struct eng_stream **out);
/* Closes every connection; requests still waiting or running end in done with -ECANCELED
 * before this returns. */
void eng_stream_destroy(struct eng_stream *s);

/* Sends buf[0..len) (borrowed: kept alive by the caller until done) as one request, with a
 * deadline timeout_ms from now. Returns 0 (done will run later, from the loop) or -EINVAL
 * (len 0, timeout 0). A full queue or a backing-off endpoint is reported through done. */
int eng_stream_request(struct eng_stream *s, struct eng_stream_req *rq, const void *buf,
                       size_t len, uint32_t timeout_ms, eng_stream_done_fn *done, void *ctx);

struct eng_stream_stats {
    uint64_t requests, replies;
    uint64_t connects, connect_failures;
    uint64_t timeouts;       /* requests that hit their deadline */
    uint64_t errors;         /* requests failed by the peer (reset, oversize, bad framing) */
    uint64_t fast_failures;  /* requests failed at once: backing off or queue full */
    uint64_t queue_full;     /* requests refused because queue_max were waiting */
    uint64_t retries;        /* requests re-sent once on a fresh connection after a reused one
                                turned out closed by the peer before any reply byte */
    uint64_t reuses;         /* requests sent on a kept-alive connection */
    uint64_t idle_closes;    /* idle connections closed (idle_ms_max, peer close, stray bytes) */
    uint64_t bytes_out, bytes_in;
    uint32_t conns_open;     /* gauge */
};
void eng_stream_get_stats(const struct eng_stream *s, struct eng_stream_stats *out);
const char *eng_stream_name(const struct eng_stream *s);

#ifdef __cplusplus
}
#endif

#endif
