/*
 * engine.c: the runtime's lifecycle: configuration defaults and checks, eng_create (backend
 * probe, listening sockets, cross-shard rings), eng_run (shard threads, signals), eng_stop,
 * eng_destroy, eng_run_on_shards and counter sums.
 *
 * Threads: eng_create/eng_run/eng_destroy run on one main thread; eng_stop is async-signal-safe
 * and callable from any thread; eng_run_on_shards from any non-shard thread while eng_run runs.
 * eng_run blocks SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 and SIGUSR2 before starting the
 * shards (so every shard thread inherits the mask) and reads them from a signalfd; SIGPIPE is
 * ignored for the process. TERM/INT/QUIT start a graceful stop; the others go to on_signal.
 *
 * Start-up failures return -errno with one sentence in err: a bad limit names the field; a
 * blocked io_uring names the cause (ENG_BACKEND_URING) or is logged once while falling back to
 * epoll (ENG_BACKEND_AUTO).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "eng/log.h"
#include "internal.h"

/* The kernel accepts at most 32768 entries in a provided-buffer ring (buffer ids are 16 bits). */
#define ENG_RECV_BUF_COUNT_MAX 32768u
#define ENG_RECV_BUF_BYTES_MIN 64u
#define ENG_SHARDS_MAX 1024u

void eng_config_defaults(struct eng_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->shard_count = 0;
    cfg->backend = ENG_BACKEND_AUTO;
    cfg->backlog = 4096;
    cfg->app_conn_bytes = 0;
    cfg->drain_timeout_ms = 10000;
    cfg->limits.conns_per_shard_max = 16384;
    cfg->limits.stage_bytes_max = 65536 + 1024;
    cfg->limits.send_bytes_max = 65536;
    cfg->limits.recv_buf_bytes = 4096;
    cfg->limits.recv_buf_count = 1024;
    cfg->limits.stage_bufs_per_shard = 4096;
    cfg->limits.turn_warn_ms = 500;
    cfg->limits.send_bufs_per_shard = 1024;
    cfg->limits.polls_per_shard_max = 1024;
    cfg->limits.stage_bytes_per_shard_max = 0; /* 64 MiB, or more for a large stage_bytes_max */
}

uint64_t eng_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t eng_clock_ms(void)
{
    return eng_clock_us() / 1000u;
}

static int config_check(const struct eng_config *cfg, char *err, size_t err_len)
{
    const struct eng_limits *l = &cfg->limits;
    const char *bad = NULL;
    if (!cfg->ops || !cfg->ops->on_bytes)
        bad = "ops and ops->on_bytes must be set";
    else if (l->conns_per_shard_max == 0)
        bad = "limits.conns_per_shard_max must be at least 1";
    else if (l->stage_bytes_max == 0)
        bad = "limits.stage_bytes_max must be at least 1";
    else if (l->send_bytes_max == 0)
        bad = "limits.send_bytes_max must be at least 1";
    else if (l->stage_bufs_per_shard == 0)
        bad = "limits.stage_bufs_per_shard must be at least 1";
    else if (l->recv_buf_count == 0 || l->recv_buf_count > ENG_RECV_BUF_COUNT_MAX ||
             (l->recv_buf_count & (l->recv_buf_count - 1)))
        bad = "limits.recv_buf_count must be a power of two from 1 to 32768";
    else if (l->recv_buf_bytes < ENG_RECV_BUF_BYTES_MIN || l->recv_buf_bytes > (1u << 20))
        bad = "limits.recv_buf_bytes must be from 64 to 1048576";
    else if (l->stage_bufs_per_shard > ENG_STAGE_SLOT_MASK)
        bad = "limits.stage_bufs_per_shard must be at most 16777215";
    else if (l->stage_bytes_max > UINT32_MAX / 4 - l->recv_buf_bytes)
        bad = "limits.stage_bytes_max must be under 1 GiB";
    else if ((uint64_t)l->stage_bytes_max + (uint64_t)l->recv_buf_count * l->recv_buf_bytes >
             UINT32_MAX / 2)
        bad = "limits.stage_bytes_max + recv_buf_count x recv_buf_bytes must be under 2 GiB";
    else if (l->stage_bytes_per_shard_max &&
             l->stage_bytes_per_shard_max / 4 < (uint64_t)l->stage_bytes_max + l->recv_buf_bytes)
        bad = "limits.stage_bytes_per_shard_max must be at least 4 x (stage_bytes_max + "
              "recv_buf_bytes)";
    else if (cfg->listen_count > 65535)
        bad = "at most 65535 listening addresses";
    else if (cfg->listen_count && !cfg->listens)
        bad = "listen_count is set but listens is NULL";
    else if (cfg->shard_count > ENG_SHARDS_MAX)
        bad = "at most 1024 shards";
    else if (cfg->backlog <= 0)
        bad = "backlog must be at least 1";
    if (!bad)
        return 0;
    snprintf(err, err_len, "engine configuration: %s", bad);
    return -EINVAL;
}

static int backend_choose(struct eng *e, char *err, size_t err_len)
{
    if (e->cfg.backend == ENG_BACKEND_EPOLL) {
        e->backend = ENG_BACKEND_EPOLL;
        snprintf(e->backend_desc, sizeof(e->backend_desc), "epoll (configured)");
        return 0;
    }
    char why[200];
    int rc = eng_ring_uring_probe(&e->uring_flags, &e->msg_ring, why, sizeof(why));
    if (rc == 0) {
        e->backend = ENG_BACKEND_URING;
        eng_ring_uring_describe(e->uring_flags, e->msg_ring, e->backend_desc,
                                sizeof(e->backend_desc));
        return 0;
    }
    if (e->cfg.backend == ENG_BACKEND_URING) {
        snprintf(err, err_len, "cannot use io_uring: %s", why);
        return rc;
    }
    e->backend = ENG_BACKEND_EPOLL;
    snprintf(e->backend_desc, sizeof(e->backend_desc), "epoll (%s)", why);
    eng_log(ENG_LOG_WARNING, "io_uring is not usable (%s); using the epoll backend", why);
    return 0;
}

static int shards_alloc(struct eng *e)
{
    e->shards = calloc(e->shard_count, sizeof(*e->shards));
    if (!e->shards)
        return -ENOMEM;
    for (unsigned i = 0; i < e->shard_count; i++)
        e->shards[i].evfd = -1;
    for (unsigned i = 0; i < e->shard_count; i++) {
        struct eng_shard *sh = &e->shards[i];
        sh->eng = e;
        sh->index = i;
        /* Created here, not on the shard, so eng_stop can write to it at any time. */
        sh->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (sh->evfd < 0)
            return -errno;
    }
    return 0;
}

static int create_steps(struct eng *e, const struct eng_config *cfg, char *err, size_t err_len)
{
    e->cfg = *cfg;
    /* Added limits: 0 (an initialiser that predates them) means the default. */
    if (e->cfg.limits.send_bufs_per_shard == 0)
        e->cfg.limits.send_bufs_per_shard = 1024;
    if (e->cfg.limits.polls_per_shard_max == 0)
        e->cfg.limits.polls_per_shard_max = 1024;
    if (e->cfg.limits.stage_bytes_per_shard_max == 0) {
        uint64_t need =
            4 * ((uint64_t)e->cfg.limits.stage_bytes_max + e->cfg.limits.recv_buf_bytes);
        e->cfg.limits.stage_bytes_per_shard_max =
            need > ENG_STAGE_BUDGET_DEFAULT ? (uint32_t)need : ENG_STAGE_BUDGET_DEFAULT;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    e->shard_count = cfg->shard_count ? cfg->shard_count : (cpus > 0 ? (unsigned)cpus : 1);
    size_t nl = cfg->listen_count;
    e->listen_cap = nl + ENG_LISTEN_ADDED_MAX; /* room for eng_listen_add */
    e->listens = calloc(e->listen_cap, sizeof(*e->listens));
    e->listen_fds = calloc(e->listen_cap * e->shard_count, sizeof(int));
    e->unix_created = calloc(e->listen_cap, sizeof(bool));
    e->listen_removed = calloc(e->listen_cap, sizeof(bool));
    e->unix_open_shards = calloc(e->listen_cap, sizeof(*e->unix_open_shards));
    if (!e->listens || !e->listen_fds || !e->unix_created || !e->listen_removed ||
        !e->unix_open_shards) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    if (nl)
        memcpy(e->listens, cfg->listens, nl * sizeof(*e->listens));
    e->cfg.listens = e->listens;
    int rc = backend_choose(e, err, err_len);
    if (rc < 0)
        return rc;
    rc = eng_xshard_init(e);
    if (rc == 0)
        rc = shards_alloc(e);
    if (rc == 0) {
        e->main_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        rc = e->main_evfd < 0 ? -errno : 0;
    }
    if (rc < 0) {
        snprintf(err, err_len, "cannot set up the engine: %s", strerror(-rc));
        return rc;
    }
    return eng_listeners_bind(e, err, err_len);
}

int eng_create(const struct eng_config *cfg, struct eng **out, char *err, size_t err_len)
{
    *out = NULL;
    int rc = config_check(cfg, err, err_len);
    if (rc < 0)
        return rc;
    struct eng *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    e->main_evfd = -1;
    pthread_mutex_init(&e->start_lock, NULL);
    pthread_cond_init(&e->start_cond, NULL);
    pthread_mutex_init(&e->call_lock, NULL);
    pthread_mutex_init(&e->mbox_lock, NULL);
    pthread_cond_init(&e->mbox_cond, NULL);
    rc = create_steps(e, cfg, err, err_len);
    if (rc < 0) {
        eng_destroy(e);
        return rc;
    }
    *out = e;
    return 0;
}

const char *eng_backend_name(const struct eng *e)
{
    return e->backend == ENG_BACKEND_URING ? "io_uring" : "epoll";
}

const char *eng_backend_desc(const struct eng *e)
{
    return e->backend_desc;
}

unsigned eng_shard_count_of(const struct eng *e)
{
    return e->shard_count;
}

void eng_stop(struct eng *e)
{
    /* Async-signal-safe: an atomic store and write(2). */
    atomic_store_explicit(&e->stop, true, memory_order_release);
    uint64_t one = 1;
    for (unsigned i = 0; i < e->shard_count; i++) {
        if (e->shards && e->shards[i].evfd >= 0) {
            ssize_t n = write(e->shards[i].evfd, &one, sizeof(one));
            (void)n;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * eng_run
 */

static void signals_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGQUIT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGUSR2);
}

static void signal_handle(struct eng *e, int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int signo = (int)si.ssi_signo;
        if (signo == SIGTERM || signo == SIGINT || signo == SIGQUIT) {
            eng_log(ENG_LOG_NOTICE, "received signal %d, stopping", signo);
            eng_stop(e);
        } else if (e->cfg.ops->on_signal) {
            e->cfg.ops->on_signal(e->cfg.app_global, e, signo);
        }
    }
}

static unsigned threads_start(struct eng *e)
{
    unsigned created = 0;
    for (unsigned i = 0; i < e->shard_count; i++) {
        struct eng_shard *sh = &e->shards[i];
        int rc = pthread_create(&sh->thread, NULL, eng_shard_main, sh);
        if (rc != 0) {
            eng_log(ENG_LOG_ERR, "cannot start shard %u: %s", i, strerror(rc));
            pthread_mutex_lock(&e->start_lock);
            if (!e->start_err)
                e->start_err = -rc;
            pthread_mutex_unlock(&e->start_lock);
            break;
        }
        sh->thread_started = true;
        created++;
    }
    pthread_mutex_lock(&e->start_lock);
    while (e->started + e->start_failed < created)
        pthread_cond_wait(&e->start_cond, &e->start_lock);
    bool failed = e->start_err != 0;
    atomic_store_explicit(&e->start_settled, true, memory_order_release);
    pthread_mutex_unlock(&e->start_lock);
    if (failed)
        eng_stop(e);
    return created;
}

/* Waits for every shard thread to end, handling signals meanwhile. */
static void threads_wait(struct eng *e, unsigned created, int sfd)
{
    unsigned ended = 0;
    while (ended < created) {
        struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN},
                                {.fd = e->main_evfd, .events = POLLIN}};
        int n = poll(pfd, 2, -1); /* a negative fd (no signalfd) is skipped by poll */
        if (n < 0)
            continue;
        if (sfd >= 0 && pfd[0].revents)
            signal_handle(e, sfd);
        if (pfd[1].revents) {
            uint64_t v = 0;
            if (read(e->main_evfd, &v, sizeof(v)) == (ssize_t)sizeof(v))
                ended += (unsigned)v;
        }
    }
}

int eng_run(struct eng *e)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    if (e->ran)
        return -EALREADY; /* shards, rings and pools serve one run */
    if (atomic_exchange(&e->running, true))
        return -EBUSY;
    e->ran = true;
    sigset_t set, old;
    signals_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        eng_log(ENG_LOG_WARNING, "signalfd: %s; signals are not handled", strerror(errno));
    unsigned created = threads_start(e);
    threads_wait(e, created, sfd);
    for (unsigned i = 0; i < e->shard_count; i++) {
        if (e->shards[i].thread_started)
            pthread_join(e->shards[i].thread, NULL);
        e->shards[i].thread_started = false;
    }
    pthread_mutex_lock(&e->mbox_lock);
    atomic_store(&e->running, false);
    pthread_mutex_unlock(&e->mbox_lock);
    if (sfd >= 0) {
        signal_handle(e, sfd); /* consume what arrived meanwhile before unblocking */
        close(sfd);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    eng_log_flush();
    return e->start_err;
}

int eng_run_on_shards(struct eng *e, eng_shard_fn *fn, void *ctx)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    ENG_ASSERT(fn != NULL);
    pthread_mutex_lock(&e->call_lock);
    pthread_mutex_lock(&e->mbox_lock);
    if (!atomic_load(&e->running)) {
        pthread_mutex_unlock(&e->mbox_lock);
        pthread_mutex_unlock(&e->call_lock);
        return -ESRCH;
    }
    e->mbox_seq++;
    e->mbox_fn = fn;
    e->mbox_ctx = ctx;
    e->mbox_remaining = 0;
    e->mbox_skipped = 0;
    for (unsigned i = 0; i < e->shard_count; i++) {
        if (e->shards[i].exited) {
            e->shards[i].mbox_seen = e->mbox_seq;
            e->mbox_skipped++;
        } else {
            e->mbox_remaining++;
        }
    }
    pthread_mutex_unlock(&e->mbox_lock);
    uint64_t one = 1;
    for (unsigned i = 0; i < e->shard_count; i++) {
        ssize_t n = write(e->shards[i].evfd, &one, sizeof(one));
        (void)n;
    }
    pthread_mutex_lock(&e->mbox_lock);
    while (e->mbox_remaining > 0)
        pthread_cond_wait(&e->mbox_cond, &e->mbox_lock);
    unsigned skipped = e->mbox_skipped;
    pthread_mutex_unlock(&e->mbox_lock);
    pthread_mutex_unlock(&e->call_lock);
    return skipped ? -ESRCH : 0;
}

void eng_destroy(struct eng *e)
{
    if (!e)
        return;
    ENG_ASSERT(!atomic_load(&e->running));
    if (e->shards) {
        for (unsigned i = 0; i < e->shard_count; i++)
            eng_shard_free(&e->shards[i]);
        free(e->shards);
    }
    eng_listeners_close(e);
    eng_xshard_fini(e);
    if (e->main_evfd >= 0)
        close(e->main_evfd);
    free(e->listens);
    free(e->listen_fds);
    free(e->listen_removed);
    free(e->unix_open_shards);
    free(e->unix_created);
    pthread_mutex_destroy(&e->start_lock);
    pthread_cond_destroy(&e->start_cond);
    pthread_mutex_destroy(&e->call_lock);
    pthread_mutex_destroy(&e->mbox_lock);
    pthread_cond_destroy(&e->mbox_cond);
    free(e);
}

void eng_stats_sum(const struct eng *e, struct eng_stats *out)
{
    memset(out, 0, sizeof(*out));
    _Static_assert(sizeof(struct eng_stats) % sizeof(uint64_t) == 0, "stats are all uint64_t");
    const size_t n = sizeof(struct eng_stats) / sizeof(uint64_t);
    const size_t max_i = offsetof(struct eng_stats, turn_us_max) / sizeof(uint64_t);
    const size_t peak_i = offsetof(struct eng_stats, stage_bytes_peak) / sizeof(uint64_t);
    uint64_t *dst = (uint64_t *)out;
    for (unsigned s = 0; s < e->shard_count; s++) {
        const uint64_t *src = (const uint64_t *)&e->shards[s].stats;
        for (size_t i = 0; i < n; i++) {
            uint64_t v = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
            if (i == max_i || i == peak_i)
                dst[i] = v > dst[i] ? v : dst[i];
            else
                dst[i] += v;
        }
    }
}

int eng_test_started(struct eng *e)
{
    pthread_mutex_lock(&e->start_lock);
    int done = e->started == e->shard_count;
    pthread_mutex_unlock(&e->start_lock);
    return done && atomic_load(&e->running);
}
