/*
 * accept.c: listening sockets and accepting connections.
 *
 * eng_listeners_bind (main thread, in eng_create) creates every socket before any thread
 * starts: per TCP address one SO_REUSEPORT socket per shard, so the kernel spreads connections
 * over the shards; per Unix path a single socket that every shard accepts from (the kernel
 * hands each connection to one of the waiting accepts). Before the per-shard sockets a probe
 * socket without SO_REUSEPORT is bound, so that a port already held by another process fails
 * with EADDRINUSE instead of silently joining its reuseport group, and port 0 is resolved once.
 * A stale Unix socket file (nobody accepting) is replaced; a live one is an error.
 * TCP_NODELAY is set on the listening socket, and Linux copies it to every accepted socket
 * (checked by a test), so accepting costs no extra system call.
 *
 * Per shard, accept is multishot while at least ENG_ACCEPT_MULTISHOT_MARGIN connection slots
 * are free, single shot (one per free slot) below that, and stopped at conns_per_shard_max
 * (backpressure: connections wait in the listen backlog) until a connection closes. A multishot
 * accept can still complete a burst past the limit before its cancel lands; those connections
 * are closed at once and counted (accept_overflow). Accept errors such as EMFILE pause the
 * listener for ENG_ACCEPT_RETRY_MS and are counted (accept_errors).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define ENG_ACCEPT_MULTISHOT_MARGIN 64u
#define ENG_ACCEPT_RETRY_MS 100u

void eng_addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (out_len == 0)
        return;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, out_len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, out_len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        snprintf(out, out_len, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else {
        snprintf(out, out_len, "(address family %d)", sa->sa_family);
    }
}

static int sock_opt(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

/* One TCP socket bound to addr; reuseport for the per-shard sockets, not for the probe. */
static int tcp_socket(const struct eng_listen *l, const struct sockaddr *addr, socklen_t len,
                      bool reuseport, bool do_listen, int backlog)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = sock_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (rc == 0 && reuseport)
        rc = sock_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (rc == 0 && addr->sa_family == AF_INET6)
        rc = sock_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, l->v6only ? 1 : 0);
    if (rc == 0)
        rc = sock_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (rc == 0 && bind(fd, addr, len) < 0)
        rc = -errno;
    if (rc == 0 && do_listen && listen(fd, backlog) < 0)
        rc = -errno;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static int bind_tcp(struct eng *e, size_t i, char *err, size_t err_len)
{
    const struct eng_listen *l = &e->listens[i];
    struct sockaddr_storage addr = l->addr;
    socklen_t len = l->addr_len;
    char name[128];
    eng_addr_format((const struct sockaddr *)&addr, len, name, sizeof(name));
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) {
        snprintf(err, err_len, "cannot listen on %s: not an IPv4 or IPv6 address", name);
        return -EAFNOSUPPORT;
    }
    int probe = tcp_socket(l, (const struct sockaddr *)&addr, len, false, false, 0);
    if (probe < 0) {
        snprintf(err, err_len, "cannot bind %s: %s", name, strerror(-probe));
        return probe;
    }
    /* Port 0: every shard's socket must share the port the kernel chose for the probe. */
    socklen_t blen = sizeof(addr);
    getsockname(probe, (struct sockaddr *)&addr, &blen);
    len = blen;
    close(probe);
    for (unsigned s = 0; s < e->shard_count; s++) {
        int fd = tcp_socket(l, (const struct sockaddr *)&addr, len, true, true, e->cfg.backlog);
        if (fd < 0) {
            eng_addr_format((const struct sockaddr *)&addr, len, name, sizeof(name));
            snprintf(err, err_len, "cannot bind %s: %s", name, strerror(-fd));
            return fd;
        }
        e->listen_fds[i * e->shard_count + s] = fd;
    }
    return 0;
}

/* A stale socket file (connect refused) is removed; a live one means another daemon. */
static int unix_clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, path, strlen(path));
    int rc = connect(fd, (struct sockaddr *)&un, sizeof(un));
    int saved = errno;
    close(fd);
    if (rc == 0)
        return -EADDRINUSE;
    if (saved != ECONNREFUSED)
        return -saved;
    return unlink(path) < 0 ? -errno : 0;
}

static int bind_unix(struct eng *e, size_t i, char *err, size_t err_len)
{
    const struct eng_listen *l = &e->listens[i];
    size_t plen = strnlen(l->path, sizeof(l->path));
    if (plen == 0 || plen >= sizeof(l->path)) {
        snprintf(err, err_len, "cannot listen on a Unix socket: the path is empty or too long");
        return -EINVAL;
    }
    int rc = unix_clear_stale(l->path);
    if (rc < 0) {
        snprintf(err, err_len, "cannot bind unix:%s: %s", l->path,
                 rc == -EEXIST       ? "a file that is not a socket is in the way"
                 : rc == -EADDRINUSE ? "another process is accepting on it"
                                     : strerror(-rc));
        return rc;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, err_len, "cannot create a Unix socket: %s", strerror(errno));
        return rc;
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, l->path, plen);
    if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
        (l->unix_mode && chmod(l->path, l->unix_mode) < 0) || listen(fd, e->cfg.backlog) < 0) {
        rc = -errno;
        snprintf(err, err_len, "cannot bind unix:%s: %s", l->path, strerror(errno));
        close(fd);
        return rc;
    }
    e->unix_created[i] = true;
    for (unsigned s = 0; s < e->shard_count; s++)
        e->listen_fds[i * e->shard_count + s] = fd;
    return 0;
}

int eng_listener_bind_one(struct eng *e, size_t i, char *err, size_t err_len)
{
    return e->listens[i].kind == ENG_LISTEN_UNIX ? bind_unix(e, i, err, err_len)
                                                 : bind_tcp(e, i, err, err_len);
}

int eng_listeners_bind(struct eng *e, char *err, size_t err_len)
{
    for (size_t i = 0; i < e->listen_cap * e->shard_count; i++)
        e->listen_fds[i] = -1;
    for (size_t i = 0; i < e->cfg.listen_count; i++) {
        int rc = eng_listener_bind_one(e, i, err, err_len);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Closes what listener i holds (a failed eng_listen_add, or at destroy). */
static void listener_close_fds(struct eng *e, size_t i)
{
    for (unsigned s = 0; s < e->shard_count; s++) {
        int fd = e->listen_fds[i * e->shard_count + s];
        if (fd >= 0 && (e->listens[i].kind == ENG_LISTEN_TCP || s == 0))
            close(fd);
        e->listen_fds[i * e->shard_count + s] = -1;
    }
    if (e->unix_created[i])
        unlink(e->listens[i].path);
    e->unix_created[i] = false;
}

void eng_listeners_close(struct eng *e)
{
    if (!e->listen_fds)
        return;
    for (size_t i = 0; i < e->cfg.listen_count; i++) {
        /* A removed Unix listener's fd is closed (and its file removed) by its last shard;
         * its columns are -1 then, but the file may be another process's by now. */
        if (e->listen_removed && e->listen_removed[i] && e->listens[i].kind == ENG_LISTEN_UNIX &&
            e->listen_fds[i * e->shard_count] < 0)
            continue;
        if (e->unix_created)
            listener_close_fds(e, i);
    }
}

int eng_listen_bound(const struct eng *e, size_t listen_idx, struct sockaddr_storage *addr,
                     socklen_t *addr_len)
{
    if (listen_idx >= e->cfg.listen_count || e->listen_removed[listen_idx])
        return -EINVAL;
    int fd = e->listen_fds[listen_idx * e->shard_count];
    socklen_t len = sizeof(*addr);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)addr, &len) < 0)
        return -EINVAL;
    *addr_len = len;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Per shard
 */

static void listener_init(struct eng_shard *sh, unsigned i)
{
    struct eng *e = sh->eng;
    struct eng_listener *li = &sh->listeners[i];
    li->fd = e->listen_fds[i * e->shard_count + sh->index];
    li->listen_idx = i;
    li->tag = e->listens[i].tag;
    li->tcp = e->listens[i].kind == ENG_LISTEN_TCP;
}

/* A removed listener with no accept in flight: close this shard's socket (a Unix one when the
 * last shard is done with it). */
static void listener_retire(struct eng_shard *sh, struct eng_listener *li)
{
    struct eng *e = sh->eng;
    size_t i = li->listen_idx;
    if (li->fd < 0)
        return;
    if (li->tcp) {
        close(li->fd);
        e->listen_fds[i * e->shard_count + sh->index] = -1;
    } else if (atomic_fetch_sub(&e->unix_open_shards[i], 1) == 1) {
        close(li->fd);
        if (e->unix_created[i])
            unlink(e->listens[i].path);
        e->unix_created[i] = false;
        for (unsigned s = 0; s < e->shard_count; s++)
            e->listen_fds[i * e->shard_count + s] = -1;
    }
    li->fd = -1;
}

static void accept_retry_fire(struct eng_shard *sh, struct eng_timer *t)
{
    (void)t;
    for (unsigned i = 0; i < sh->listener_count; i++)
        sh->listeners[i].retry_later = false;
}

int eng_accept_init(struct eng_shard *sh)
{
    struct eng *e = sh->eng;
    sh->listener_count = (unsigned)e->cfg.listen_count;
    /* Room for eng_listen_add: a running shard allocates nothing. */
    sh->listeners = calloc(e->listen_cap, sizeof(*sh->listeners));
    if (!sh->listeners)
        return -ENOMEM;
    for (unsigned i = 0; i < sh->listener_count; i++)
        listener_init(sh, i);
    eng_timer_init(&sh->accept_retry, accept_retry_fire);
    return 0;
}

void eng_accept_complete(struct eng_shard *sh, const struct eng_cqe *cqe)
{
    uint32_t i = eng_ud_idx(cqe->user_data);
    ENG_ASSERT(i < sh->listener_count);
    struct eng_listener *li = &sh->listeners[i];
    ENG_ASSERT(li->armed);
    if (!(cqe->flags & ENG_CQE_F_MORE)) {
        if (!li->multishot) {
            ENG_ASSERT(sh->accepts_single > 0);
            sh->accepts_single--;
        }
        li->armed = li->multishot = li->cancel_sent = false;
    }
    if (cqe->res >= 0) {
        if (sh->conns.used >= sh->conns_max || sh->draining) {
            close(cqe->res);
            ENG_STAT_INC(sh, accept_overflow);
            return;
        }
        eng_conn_open(sh, (uint16_t)i, cqe->res);
        return;
    }
    switch (-cqe->res) {
    case ECANCELED: /* backpressure, drain or a switch to single shot */
    case EINTR:
    case EAGAIN:
    case ECONNABORTED: /* the peer gave up while queued */
        break;
    case EBADF:
    case EFAULT:
        ENG_ASSERT(!"accept on a bad descriptor");
        break;
    default: /* EMFILE, ENFILE, ENOMEM, ENOBUFS, EPERM...: back off */
        ENG_STAT_INC(sh, accept_errors);
        li->retry_later = true;
        if (!eng_timer_armed(&sh->accept_retry))
            eng_timer_arm(sh, &sh->accept_retry, ENG_ACCEPT_RETRY_MS);
        break;
    }
}

static void accept_cancel(struct eng_shard *sh, struct eng_listener *li, uint32_t i)
{
    if (!li->armed || li->cancel_sent)
        return;
    if (sh->ring->ops->prep_cancel_ud(sh->ring, li->fd, eng_ud(ENG_OP_ACCEPT, i, 0),
                                      eng_ud(ENG_OP_CANCEL, i, 0)) == 0)
        li->cancel_sent = true;
}

/* End of turn: arm, switch or cancel accepts to match the free connection slots. */
void eng_accept_update(struct eng_shard *sh)
{
    uint32_t used = sh->conns.used;
    uint32_t free_slots = used >= sh->conns_max ? 0 : sh->conns_max - used;
    bool stop = sh->draining || free_slots == 0;
    /* Paused: a listener that would accept has no slot left, either none is free or the free
     * ones are held by single-shot accepts armed on other listeners (the HTTP port's accept can
     * hold a shard's last slot while the policy port waits). Counted once per pause. */
    bool starved = free_slots == 0 && !sh->draining;
    for (uint32_t i = 0; i < sh->listener_count; i++) {
        struct eng_listener *li = &sh->listeners[i];
        bool want_multi = free_slots >= ENG_ACCEPT_MULTISHOT_MARGIN;
        if (li->armed) {
            /* A single-shot accept may stay: it takes at most the slot it was armed for. */
            if (stop || li->off || (li->multishot && !want_multi))
                accept_cancel(sh, li, i);
            continue;
        }
        if (li->removed)
            listener_retire(sh, li);
        if (stop || li->off || li->retry_later)
            continue;
        if (!want_multi && sh->accepts_single >= free_slots) {
            starved = true;
            continue;
        }
        if (sh->ring->ops->prep_accept(sh->ring, li->fd, want_multi, eng_ud(ENG_OP_ACCEPT, i, 0)) <
            0) {
            ENG_STAT_INC(sh, sq_full);
            break;
        }
        li->armed = true;
        li->multishot = want_multi;
        if (!want_multi)
            sh->accepts_single++;
    }
    if (starved && !sh->accept_paused)
        ENG_STAT_INC(sh, accept_paused);
    sh->accept_paused = starved;
}

/* ---------------------------------------------------------------------------------------------
 * Listeners added and removed while running (main thread, through eng_run_on_shards)
 */

static void on_listen_add(struct eng_shard *sh, void *shard_app, void *ctx)
{
    (void)shard_app;
    size_t idx = *(const size_t *)ctx;
    ENG_ASSERT(idx == sh->listener_count && idx < sh->eng->listen_cap);
    listener_init(sh, (unsigned)idx);
    sh->listeners[idx].off = true;
    sh->listener_count++;
}

static void on_listen_start(struct eng_shard *sh, void *shard_app, void *ctx)
{
    (void)shard_app;
    size_t idx = *(const size_t *)ctx;
    ENG_ASSERT(idx < sh->listener_count);
    if (!sh->listeners[idx].removed)
        sh->listeners[idx].off = false; /* armed at the end of this turn */
}

static void on_listen_remove(struct eng_shard *sh, void *shard_app, void *ctx)
{
    (void)shard_app;
    size_t idx = *(const size_t *)ctx;
    ENG_ASSERT(idx < sh->listener_count);
    sh->listeners[idx].off = true;
    sh->listeners[idx].removed = true; /* cancelled, then closed, at the end of turns */
}

int eng_listen_add(struct eng *e, const struct eng_listen *l, char *err, size_t err_len)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    size_t idx = e->cfg.listen_count;
    if (idx >= e->listen_cap) {
        snprintf(err, err_len, "cannot add a listener: %u were added already (restart to add more)",
                 ENG_LISTEN_ADDED_MAX);
        return -ENOSPC;
    }
    e->listens[idx] = *l;
    int rc = eng_listener_bind_one(e, idx, err, err_len);
    if (rc < 0) {
        listener_close_fds(e, idx);
        return rc;
    }
    if (l->kind == ENG_LISTEN_UNIX)
        atomic_store(&e->unix_open_shards[idx], e->shard_count);
    e->cfg.listen_count = idx + 1; /* shards read it under eng_run_on_shards' lock */
    rc = eng_run_on_shards(e, on_listen_add, &idx);
    if (rc < 0) {
        snprintf(err, err_len, "cannot add a listener: the shards are stopping");
        return rc;
    }
    return (int)idx;
}

int eng_listen_start(struct eng *e, size_t idx)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    if (idx >= e->cfg.listen_count || e->listen_removed[idx])
        return -EINVAL;
    return eng_run_on_shards(e, on_listen_start, &idx);
}

int eng_listen_remove(struct eng *e, size_t idx)
{
    ENG_ASSERT(eng_shard_self() == NULL);
    if (idx >= e->cfg.listen_count || e->listen_removed[idx])
        return -EINVAL;
    e->listen_removed[idx] = true;
    if (e->listens[idx].kind == ENG_LISTEN_UNIX && idx < e->cfg.listen_count &&
        atomic_load(&e->unix_open_shards[idx]) == 0)
        atomic_store(&e->unix_open_shards[idx], e->shard_count);
    return eng_run_on_shards(e, on_listen_remove, &idx);
}
