/*
 * eng/engine.h: the shard-per-core runtime. Public API; knows nothing about Postfix or policy.
 *
 * One thread and one io_uring (or, where io_uring is blocked, one epoll instance) per shard.
 * Each shard owns its listening sockets (SO_REUSEPORT, one per shard per TCP address; a Unix
 * socket is one socket that every shard accepts from), its connection pool, its provided-buffer
 * ring, its timers and its end of the cross-shard rings. Everything a shard allocates is allocated
 * at shard start; the data path (reaping a completion, calling the application, submitting the next
 * operation) does not call malloc.
 *
 * Threads: every callback in eng_app_ops except on_signal runs on the shard's own thread. A
 * function taking a struct eng_shard * or struct eng_conn * may only be called on that shard's
 * thread (asserted). The exceptions are eng_stop() and eng_run_on_shards(), callable from any
 * thread.
 *
 * Return convention: 0 or a count on success, -errno on failure (as liburing and the kernel).
 */
#ifndef ENG_ENGINE_H
#define ENG_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#ifdef __cplusplus
extern "C" {
#endif

struct eng;       /* the runtime: every shard */
struct eng_shard; /* one thread, one ring */
struct eng_conn;  /* one accepted connection */

/* ---------------------------------------------------------------------------------------------
 * Listening addresses
 */

enum eng_listen_kind {
    ENG_LISTEN_TCP,  /* IPv4 or IPv6, from addr/addr_len */
    ENG_LISTEN_UNIX, /* path */
};

struct eng_listen {
    enum eng_listen_kind kind;
    struct sockaddr_storage addr; /* TCP: bind address (AF_INET or AF_INET6) */
    socklen_t addr_len;
    bool v6only;                                            /* TCP over AF_INET6: set IPV6_V6ONLY */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* UNIX: socket path */
    uint32_t unix_mode; /* UNIX: chmod after bind; 0 keeps the umask's result */
    uint32_t tag;       /* application's id for this listener (e.g. vhost index) */
};

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

enum eng_backend {
    ENG_BACKEND_AUTO,  /* io_uring when the start-up probe passes, else epoll (logged) */
    ENG_BACKEND_URING, /* io_uring or fail at start-up with a message naming what is missing */
    ENG_BACKEND_EPOLL, /* epoll, e.g. under a seccomp profile that blocks io_uring */
};

enum eng_close_reason {
    ENG_CLOSE_PEER,     /* peer closed (EOF) */
    ENG_CLOSE_RESET,    /* ECONNRESET, EPIPE, ETIMEDOUT from the socket */
    ENG_CLOSE_APP,      /* eng_conn_close() */
    ENG_CLOSE_OVERSIZE, /* unconsumed input exceeded limits.stage_bytes_max */
    ENG_CLOSE_NOMEM,    /* no staging or send buffer left in the shard's pools */
    ENG_CLOSE_SHUTDOWN, /* the runtime is stopping */
    ENG_CLOSE_ERROR,    /* any other socket error (counted) */
    ENG_CLOSE_REASON_COUNT
};

/* Limits: each has a default (eng_config_defaults), a counter of hits (struct eng_stats) and
 * tests at N and N+1. */
struct eng_limits {
    uint32_t conns_per_shard_max;  /* accepted connections open at once per shard; at the limit
                                      the shard stops arming accept (backpressure) and re-arms
                                      when a connection closes. Default 16384. */
    uint32_t stage_bytes_max;      /* unconsumed input held for one connection (an incomplete or
                                      paused request). Default 65536 + 1024. Held means left
                                      after on_bytes returned (or arrived while paused), however
                                      the input was split into reads: N bytes held are fine, N+1
                                      close the connection with ENG_CLOSE_OVERSIZE. */
    uint32_t send_bytes_max;       /* bytes queued for sending on one connection. Default 65536. */
    uint32_t recv_buf_bytes;       /* size of each provided receive buffer. Default 4096. */
    uint32_t recv_buf_count;       /* provided buffers per shard, power of two. Default 1024. */
    uint32_t stage_bufs_per_shard; /* staging buffers per shard (partial requests). Default 4096. */
    uint32_t turn_warn_ms;         /* log a warning when one loop turn takes longer. Default 500. */
    /* Added by the engine (after the fields above, so existing initialisers keep working): */
    uint32_t send_bufs_per_shard;       /* send buffers per shard (connections with output queued or
                                           in flight; a buffer goes back as soon as its output is
                                           sent). Default 1024 (64 MiB of address space per shard at
                                           the default send_bytes_max). */
    uint32_t polls_per_shard_max;       /* eng_poll registrations per shard. Default 1024. */
    uint32_t stage_bytes_per_shard_max; /* staging budget per shard: the bytes of all staging
                                           buffers held (by size class: 512 B, 4 KiB, 32 KiB, ...,
                                           stage_bytes_max + recv_buf_bytes). Past 1/2 of it the
                                           connections holding large buffers (32 KiB and up) stop
                                           being read (backpressure, counted in stage_throttled)
                                           until the total is back under 3/8; such a connection
                                           does not see its peer leave meanwhile (the
                                           application's timeouts close it). Each size class has
                                           a pool of this many bytes (and at most
                                           stage_bufs_per_shard buffers): a connection that finds
                                           its class empty is closed (ENG_CLOSE_NOMEM,
                                           stage_full). Staging memory per shard is thus at most
                                           this times the number of classes (4 at the defaults).
                                           At least 4 x (stage_bytes_max + recv_buf_bytes).
                                           Default 0: 64 MiB, or that minimum when larger. */
};

struct eng_app_ops {
    /* On the shard's thread, before it accepts. Returns 0 or -errno (start-up fails, eng_run
     * returns it). *shard_app is passed to every other callback of this shard. */
    int (*shard_start)(struct eng_shard *sh, void *app_global, void **shard_app);
    /* On the shard's thread after its last connection closed, once every shard has drained
     * (the shards stop together, so messages between them are delivered until then). */
    void (*shard_stop)(struct eng_shard *sh, void *shard_app);
    /* Optional. While stopping, on the shard's thread: true while the application still has
     * work of its own in progress that no connection of this shard stands for (e.g. requests
     * executing on other shards). The shards stop when none has a connection or is busy, or,
     * for a shard whose drain_timeout_ms passed, without asking this again. */
    bool (*shard_busy)(void *shard_app);

    /* A connection was accepted. eng_conn_app(c) is zeroed. Return 0 to keep it, < 0 to close
     * it at once (on_close is not called then). */
    int (*on_open)(void *shard_app, struct eng_conn *c);

    /* Input. buf starts with the oldest unconsumed byte of the connection (staged bytes first,
     * then the new data, always contiguous). Return how many bytes were consumed (0..len). The
     * unconsumed rest is staged and presented again, with the next data appended, on the next
     * call. If the application paused the connection (eng_conn_pause) it is not called again
     * until eng_conn_resume. May call eng_conn_send and eng_conn_close. */
    size_t (*on_bytes)(void *shard_app, struct eng_conn *c, const char *buf, size_t len);

    /* The connection is gone; after this call c is dead. Not called for connections refused by
     * on_open. */
    void (*on_close)(void *shard_app, struct eng_conn *c, enum eng_close_reason reason);

    /* Optional. Once per loop turn after completions were dispatched and timers run, before the
     * turn's single submit: flush work batched during the turn. */
    void (*on_turn_end)(void *shard_app);

    /* Optional. On the thread that called eng_run, for SIGHUP, SIGUSR1, SIGUSR2. SIGTERM, SIGINT
     * and SIGQUIT always start a graceful stop (eng_stop); SIGPIPE is ignored. */
    void (*on_signal)(void *app_global, struct eng *e, int signo);
};

struct eng_config {
    unsigned shard_count; /* 0: one per online CPU */
    enum eng_backend backend;
    const struct eng_listen *listens; /* copied by eng_create */
    size_t listen_count;
    int backlog;               /* listen(2) backlog. Default 4096. */
    size_t app_conn_bytes;     /* size of eng_conn_app(c). Default 0. */
    uint32_t drain_timeout_ms; /* graceful stop: wait this long for busy connections.
                                  Default 10000. */
    struct eng_limits limits;
    const struct eng_app_ops *ops;
    void *app_global; /* passed to shard_start and on_signal */
};

/* Fills every field with its default; listens, ops and app_global become NULL. */
void eng_config_defaults(struct eng_config *cfg);

/* ---------------------------------------------------------------------------------------------
 * Lifecycle (main thread)
 *
 * eng_create probes the backend (an io_uring NOP round trip with the setup flags the shards
 * will use), creates and binds every listening socket and returns. No thread is started, so a
 * daemon can bind, then fork/detach, write its pid file and drop privileges, then eng_run.
 * On failure it returns -errno and writes one actionable sentence to err (e.g. "io_uring is
 * disabled by kernel.io_uring_disabled=2", "cannot bind 127.0.0.1:12345: Address already in
 * use").
 */
int eng_create(const struct eng_config *cfg, struct eng **out, char *err, size_t err_len);

/* Starts the shard threads and runs until a graceful stop completes. The calling thread
 * handles signals (see on_signal). Returns 0, or -errno if a shard failed to start; once per
 * engine (a second call returns -EALREADY). */
int eng_run(struct eng *e);

/* Graceful stop, from any thread or a signal handler: stop accepting, close idle connections,
 * let busy ones finish (a connection is busy while paused or while output is queued) for at
 * most drain_timeout_ms, then close the rest. Input not yet begun (staged, or arriving after
 * the stop) is not presented: a connection closes as soon as its work in progress is done.
 * Idempotent. */
void eng_stop(struct eng *e);

/* Frees everything; only after eng_run returned (or instead of it). Closes listening sockets
 * and removes Unix socket files the engine created. */
void eng_destroy(struct eng *e);

/* Which backend eng_create chose ("io_uring" or "epoll") and the io_uring setup flags in use. */
const char *eng_backend_name(const struct eng *e);
unsigned eng_shard_count_of(const struct eng *e);
/* One line describing the backend and why it was chosen, e.g. "io_uring (SINGLE_ISSUER|
 * DEFER_TASKRUN, MSG_RING)" or "epoll (io_uring is disabled by kernel.io_uring_disabled=2)". */
const char *eng_backend_desc(const struct eng *e);

/* The address listener listen_idx (index into cfg.listens) is bound to, e.g. to learn the port
 * the kernel chose for port 0. Returns 0 or -EINVAL for a bad index. */
int eng_listen_bound(const struct eng *e, size_t listen_idx, struct sockaddr_storage *addr,
                     socklen_t *addr_len);

/* Listeners added and removed while running (e.g. a configuration reload). Each call runs on a
 * non-shard thread while eng_run runs and waits for every shard (eng_run_on_shards).
 *
 * eng_listen_add binds l as eng_create would (per TCP address one SO_REUSEPORT socket per
 * shard, a Unix path once) and gives every shard the listener, not accepting yet; it returns
 * the new listener's index (cfg.listens' indexes come first, then added ones in order), or
 * -errno with one sentence in err (the bind failure, or -ENOSPC past ENG_LISTEN_ADDED_MAX
 * additions over the engine's life: indexes are never reused). eng_listen_start makes every
 * shard accept from it. eng_listen_remove makes every shard stop accepting from listener idx
 * (from cfg.listens or added); each shard closes its socket once its accept has completed (a
 * Unix socket: the last shard, which also removes the file the engine created). Connections
 * accepted from it stay open, keep their eng_conn_listener_tag and close as usual. Both return
 * 0, -EINVAL for a bad or removed index, or -ESRCH when shards are stopping. */
#define ENG_LISTEN_ADDED_MAX 64u
int eng_listen_add(struct eng *e, const struct eng_listen *l, char *err, size_t err_len);
int eng_listen_start(struct eng *e, size_t idx);
int eng_listen_remove(struct eng *e, size_t idx);

/* Formats an address as "127.0.0.1:10040", "[::1]:10040" or "unix:/path" (always
 * NUL-terminated, truncated to fit). */
void eng_addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len);

/* Runs fn(sh, ctx) once on every shard's thread and waits until all have run it. From a
 * non-shard thread only (e.g. on_signal). Returns 0 or -errno. Not for the data path. */
typedef void eng_shard_fn(struct eng_shard *sh, void *shard_app, void *ctx);
int eng_run_on_shards(struct eng *e, eng_shard_fn *fn, void *ctx);

/* ---------------------------------------------------------------------------------------------
 * Shards
 */

struct eng_shard *eng_shard_self(void); /* NULL outside shard threads */
unsigned eng_shard_index(const struct eng_shard *sh);
unsigned eng_shard_count(const struct eng_shard *sh);
void *eng_shard_app(const struct eng_shard *sh);
struct eng *eng_shard_engine(const struct eng_shard *sh);

/* Monotonic milliseconds, read once per loop turn (cheap). */
uint64_t eng_now_ms(const struct eng_shard *sh);
/* Same clock, read now (a syscall-free clock_gettime). */
uint64_t eng_clock_ms(void);
uint64_t eng_clock_us(void);

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

/* 0, or -ENOBUFS (send queue would exceed send_bytes_max or no send buffer: the caller should
 * close), -EPIPE (connection closing). buf is copied before the call returns; the bytes go out
 * in this loop turn's submit. */
int eng_conn_send(struct eng_conn *c, const void *buf, size_t len);

/* Close after queued output has been sent (at most drain_timeout_ms). on_close follows, from
 * the loop, never inside this call. Idempotent. */
void eng_conn_close(struct eng_conn *c);

/* Stop / restart calling on_bytes. While paused, arriving input is staged; once 4 KiB are staged
 * the connection is no longer read (the kernel's socket buffer and TCP flow control then hold the
 * peer back), and reading restarts after eng_conn_resume. Input already on its way when reading
 * stops is still staged, up to stage_bytes_max (past it the connection is closed with
 * ENG_CLOSE_OVERSIZE). eng_conn_resume presents staged input from the loop (never inside the
 * call). */
void eng_conn_pause(struct eng_conn *c);
void eng_conn_resume(struct eng_conn *c);

/* A connection id is unique for the life of the runtime (pool index + generation); use it to
 * find a connection again after an asynchronous operation: eng_conn_find returns NULL once
 * that connection has closed (on_close has run for it), even if its slot was reused. A
 * connection that is closing but whose on_close has not run yet is still found; sending on it
 * returns -EPIPE. */
uint64_t eng_conn_id(const struct eng_conn *c);
struct eng_conn *eng_conn_find(struct eng_shard *sh, uint64_t id);

void *eng_conn_app(struct eng_conn *c);                   /* app_conn_bytes, zeroed at open */
uint32_t eng_conn_listener_tag(const struct eng_conn *c); /* eng_listen.tag of its listener */
struct eng_shard *eng_conn_shard(const struct eng_conn *c);
/* Peer address; for Unix sockets family AF_UNIX and an empty path. */
const struct sockaddr *eng_conn_peer(const struct eng_conn *c, socklen_t *len);

/* ---------------------------------------------------------------------------------------------
 * Timers: intrusive, never allocate, never fail; O(1) arm and cancel. Callbacks run on the
 * shard, from the loop. Fields are private.
 */

struct eng_timer;
typedef void eng_timer_fn(struct eng_shard *sh, struct eng_timer *t);

struct eng_timer {
    struct eng_timer *next, *prev; /* private */
    uint64_t expires_ms;           /* private */
    eng_timer_fn *fn;              /* private */
};

void eng_timer_init(struct eng_timer *t, eng_timer_fn *fn);
/* Arms (or re-arms) t to fire delay_ms from now. */
void eng_timer_arm(struct eng_shard *sh, struct eng_timer *t, uint64_t delay_ms);
void eng_timer_cancel(struct eng_shard *sh, struct eng_timer *t); /* no-op if not armed */
bool eng_timer_armed(const struct eng_timer *t);

/* ---------------------------------------------------------------------------------------------
 * Cross-shard messages: lock-free single-producer/single-consumer rings between every pair of
 * shards, the destination woken with IORING_OP_MSG_RING (epoll backend: eventfd). A message is
 * an application object embedding struct eng_xmsg; ownership passes to the destination, whose
 * loop calls m->fn(dst, m) on its own thread. Never fails: when a ring is full the message
 * waits on an intrusive overflow list of the sender and goes out on a later turn (counted).
 */

struct eng_xmsg;
typedef void eng_xmsg_fn(struct eng_shard *dst, struct eng_xmsg *m);

struct eng_xmsg {
    struct eng_xmsg *next; /* private */
    eng_xmsg_fn *fn;
};

void eng_xshard_send(struct eng_shard *from, unsigned dst_index, struct eng_xmsg *m);

/* ---------------------------------------------------------------------------------------------
 * File descriptor readiness, for client libraries that own their sockets (libpq, c-ares).
 * Level-triggered: fn runs from the loop while fd is ready for one of the events.
 */

struct eng_poll;
typedef void eng_poll_fn(struct eng_shard *sh, struct eng_poll *p, uint32_t revents);

struct eng_poll {
    int fd;          /* private after start */
    uint32_t events; /* private: POLLIN | POLLOUT */
    uint32_t state;  /* private */
    uint64_t gen;    /* private */
    eng_poll_fn *fn; /* private */
};

/* events: POLLIN, POLLOUT or both. revents passed to fn may also hold POLLERR, POLLHUP, and
 * POLLNVAL once for an fd the kernel rejects (then it is not polled again until
 * eng_poll_update). Returns 0, -EINVAL (events), -EBADF (fd < 0), -EBUSY (this fd already has
 * a started poll on this shard) or -ENOSPC (limits.polls_per_shard_max reached). fn first runs
 * from the loop, never inside this call. */
int eng_poll_start(struct eng_shard *sh, struct eng_poll *p, int fd, uint32_t events,
                   eng_poll_fn *fn);
int eng_poll_update(struct eng_shard *sh, struct eng_poll *p, uint32_t events);
/* After it returns fn is never called again for p; the fd is not closed. */
void eng_poll_stop(struct eng_shard *sh, struct eng_poll *p);

/* ---------------------------------------------------------------------------------------------
 * Counters: per shard, plain (non-atomic) increments on the shard; summed on demand.
 */

#define ENG_TURN_HIST_BUCKETS 24

struct eng_stats {
    uint64_t accepted;
    uint64_t closed[ENG_CLOSE_REASON_COUNT];
    uint64_t conns_open;
    uint64_t accept_paused; /* times a listener was left without a slot (conns_per_shard_max) */
    uint64_t recv_enobufs;  /* provided-buffer ring ran dry */
    uint64_t stage_full;    /* no staging buffer available */
    uint64_t bytes_in, bytes_out;
    uint64_t short_sends;
    uint64_t xmsg_sent, xmsg_overflow;
    uint64_t turns, turns_slow;
    /* Added by the engine: */
    uint64_t accept_overflow; /* accepted past conns_per_shard_max by a multishot burst, closed */
    uint64_t accept_errors;   /* accept failed (EMFILE, ENFILE, ENOMEM...); retried later */
    uint64_t open_refused;    /* on_open returned < 0 */
    uint64_t stage_oversize;  /* input beyond stage_bytes_max (closed ENG_CLOSE_OVERSIZE) */
    uint64_t send_full;       /* eng_conn_send refused: queue would exceed send_bytes_max */
    uint64_t send_nomem;      /* eng_conn_send refused: no send buffer left */
    uint64_t sock_errors;     /* socket errors other than reset (closed ENG_CLOSE_ERROR) */
    uint64_t xmsg_received;
    uint64_t wakes_sent;    /* MSG_RING or eventfd wakes of a sleeping shard */
    uint64_t submit_errors; /* ring submit failed (retried next turn) */
    uint64_t sq_full;       /* an operation waited a turn for room in the submission queue */
    uint64_t poll_events;   /* eng_poll callbacks */
    uint64_t timers_fired;
    uint64_t stage_throttled;  /* a connection stopped being read: staging budget running low */
    uint64_t recv_stops;       /* multishot recvs cancelled (paused with input staged, throttled) */
    uint64_t stage_bytes;      /* gauge: bytes of staging buffers held now */
    uint64_t stage_bytes_peak; /* most bytes of staging buffers held at once (max, not a sum) */
    uint64_t turn_us_max;      /* longest turn (max, not a sum, in eng_stats_sum) */
    uint64_t turn_us_hist[ENG_TURN_HIST_BUCKETS]; /* [i]: turns taking [2^i, 2^(i+1)) us
                                                     ([0]: under 2 us) */
};

/* Sums every shard's counters (relaxed reads; exact once the shards are idle). */
void eng_stats_sum(const struct eng *e, struct eng_stats *out);
const struct eng_stats *eng_shard_stats(const struct eng_shard *sh);

#ifdef __cplusplus
}
#endif

#endif
