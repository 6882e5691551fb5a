/*
 * log.c: mtpolicyd-compatible logging (spec 5.1, 5.2) to standard error, a file or syslog.
 *
 * A message is formatted (truncated at ENG_LOG_LINE_MAX with "..."), escaped as mtpolicyd does
 * (5.2), and then encoded for its target: file and stderr lines get %HH for every byte that is
 * not printable ASCII (5.1) and a newline; syslog datagrams get "<PRI>Mmm dd hh:mm:ss
 * ident[pid]: " in front (RFC 3164, as glibc's syslog writes them) and go straight to /dev/log
 * over our own socket, so that a batch can leave in one sendmmsg.
 *
 * Threads: the target is shared and protected by a read-write lock (writers: eng_log_open and
 * eng_log_close). Shard threads (eng_log_thread_buffer) append finished records to a per-thread
 * buffer and write them in one writev/sendmmsg when the loop calls eng_log_flush at the end of
 * each turn, or earlier when the buffer fills; other threads write each message at once. Nothing
 * here allocates after eng_log_thread_buffer. Failed writes are counted (eng_log_write_errors),
 * never fatal; a missing syslog socket is retried at most once per second.
 */
#include "eng/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOG_TBUF_BYTES (64u * 1024u)
#define LOG_BATCH 64u /* records per writev / sendmmsg call */
#define LOG_SYSLOG_PATH "/dev/log"
#define LOG_RECONNECT_MS 1000u
/* A finished record: 5.1 encoding can triple the escaped line, plus the syslog header. */
#define LOG_RECORD_MAX (ENG_LOG_LINE_MAX * 3 + 128)

static struct {
    pthread_rwlock_t lock;
    _Atomic int level;
    enum eng_log_target target;
    int fd;        /* ENG_LOG_FILE: our file; ENG_LOG_STDERR: 2 */
    int syslog_fd; /* ENG_LOG_SYSLOG: connected datagram socket or -1 */
    _Atomic uint64_t syslog_retry_ms;
    char ident[64];
    char syslog_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int facility;
    int pid;
    _Atomic uint64_t write_errors;
} g_log = {
    .lock = PTHREAD_RWLOCK_INITIALIZER,
    .level = ENG_LOG_NOTICE,
    .target = ENG_LOG_STDERR,
    .fd = 2,
    .syslog_fd = -1,
    .ident = "ringpolicyd",
    .syslog_path = LOG_SYSLOG_PATH,
    .facility = LOG_MAIL,
};

/* Per-thread buffer of records: [uint32_t length][bytes], back to back. */
struct log_tbuf {
    size_t len;
    char data[LOG_TBUF_BYTES];
};
static _Thread_local struct log_tbuf *tls_tbuf;

/* ---------------------------------------------------------------------------------------------
 * Encoding (pure)
 */

static const char hex_upper[] = "0123456789ABCDEF";

/* Escapes as much of in as fits; *consumed says how much. */
static size_t escape_into(char *out, size_t out_len, const char *in, size_t in_len,
                          size_t *consumed)
{
    size_t o = 0, i;
    for (i = 0; i < in_len; i++) {
        unsigned char b = (unsigned char)in[i];
        char rep[4];
        size_t n;
        if (b == 0 || b == '\r' || b == '\n' || b == '\\') {
            rep[0] = '\\';
            rep[1] = b == 0 ? '0' : b == '\r' ? 'r' : b == '\n' ? 'n' : '\\';
            n = 2;
        } else if ((b < 0x20 && b != '\t') || b == 0x7f) {
            rep[0] = '\\';
            rep[1] = 'x';
            rep[2] = hex_upper[b >> 4];
            rep[3] = hex_upper[b & 15];
            n = 4;
        } else {
            rep[0] = (char)b;
            n = 1;
        }
        if (o + n >= out_len)
            break; /* never split an escape */
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = '\0';
    *consumed = i;
    return o;
}

size_t eng_log_escape(char *out, size_t out_len, const char *in, size_t in_len)
{
    size_t consumed;
    if (out_len == 0)
        return 0;
    return escape_into(out, out_len, in, in_len, &consumed);
}

/* Spec 5.1: every byte that is not printable ASCII (or newline) as %HH. */
static size_t percent_encode(char *out, const char *in, size_t in_len)
{
    size_t o = 0;
    for (size_t i = 0; i < in_len; i++) {
        unsigned char b = (unsigned char)in[i];
        if ((b >= 0x20 && b <= 0x7e) || b == '\n') {
            out[o++] = (char)b;
        } else {
            out[o++] = '%';
            out[o++] = hex_upper[b >> 4];
            out[o++] = hex_upper[b & 15];
        }
    }
    return o;
}

static int syslog_severity(int level)
{
    static const int sev[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};
    return sev[level < 0 ? 0 : level > 4 ? 4 : level];
}

/* Builds the record for the current target (read lock held). Returns its length. */
static size_t record_build(char *out, int level, const char *esc, size_t esc_len)
{
    if (g_log.target != ENG_LOG_SYSLOG) {
        size_t n = percent_encode(out, esc, esc_len);
        out[n++] = '\n';
        return n;
    }
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
    int h = snprintf(out, 128, "<%d>%s %s[%d]: ", g_log.facility | syslog_severity(level), stamp,
                     g_log.ident, g_log.pid);
    if (h < 0)
        h = 0;
    memcpy(out + h, esc, esc_len);
    return (size_t)h + esc_len;
}

/* ---------------------------------------------------------------------------------------------
 * Writing (read lock held)
 */

static void syslog_connect(void)
{
    uint64_t now = eng_clock_ms();
    uint64_t retry = atomic_load(&g_log.syslog_retry_ms);
    if (retry && now < retry)
        return;
    if (!atomic_compare_exchange_strong(&g_log.syslog_retry_ms, &retry, now + LOG_RECONNECT_MS))
        return; /* another thread is at it */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, g_log.syslog_path, sizeof(un.sun_path));
    if (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        close(fd);
        return;
    }
    int expected = -1;
    if (!__atomic_compare_exchange_n(&g_log.syslog_fd, &expected, fd, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        close(fd);
}

static void write_records(struct iovec *iov, unsigned n)
{
    if (g_log.target == ENG_LOG_SYSLOG) {
        int fd = __atomic_load_n(&g_log.syslog_fd, __ATOMIC_ACQUIRE);
        if (fd < 0) {
            syslog_connect();
            fd = __atomic_load_n(&g_log.syslog_fd, __ATOMIC_ACQUIRE);
        }
        if (fd < 0) {
            atomic_fetch_add(&g_log.write_errors, n);
            return;
        }
        struct mmsghdr msgs[LOG_BATCH];
        memset(msgs, 0, sizeof(struct mmsghdr) * n);
        for (unsigned i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = sendmmsg(fd, msgs, n, MSG_NOSIGNAL);
        if (sent < (int)n)
            atomic_fetch_add(&g_log.write_errors, n - (unsigned)(sent < 0 ? 0 : sent));
        return;
    }
    size_t want = 0;
    for (unsigned i = 0; i < n; i++)
        want += iov[i].iov_len;
    ssize_t w = writev(g_log.fd, iov, (int)n);
    if (w < 0 || (size_t)w != want)
        atomic_fetch_add(&g_log.write_errors, 1);
}

static void tbuf_flush(struct log_tbuf *tb)
{
    if (tb->len == 0)
        return;
    struct iovec iov[LOG_BATCH];
    unsigned n = 0;
    pthread_rwlock_rdlock(&g_log.lock);
    for (size_t off = 0; off < tb->len;) {
        uint32_t len;
        memcpy(&len, tb->data + off, sizeof(len));
        iov[n].iov_base = tb->data + off + sizeof(len);
        iov[n].iov_len = len;
        off += sizeof(len) + len;
        if (++n == LOG_BATCH) {
            write_records(iov, n);
            n = 0;
        }
    }
    if (n)
        write_records(iov, n);
    pthread_rwlock_unlock(&g_log.lock);
    tb->len = 0;
}

void eng_log_flush(void)
{
    if (tls_tbuf)
        tbuf_flush(tls_tbuf);
}

int eng_log_thread_buffer(bool on)
{
    if (on && !tls_tbuf) {
        tls_tbuf = malloc(sizeof(*tls_tbuf));
        if (!tls_tbuf)
            return -ENOMEM;
        tls_tbuf->len = 0;
    } else if (!on && tls_tbuf) {
        tbuf_flush(tls_tbuf);
        free(tls_tbuf);
        tls_tbuf = NULL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The API
 */

bool eng_log_enabled(int level)
{
    return level <= atomic_load_explicit(&g_log.level, memory_order_relaxed);
}

int eng_log_level(void)
{
    return atomic_load_explicit(&g_log.level, memory_order_relaxed);
}

/* Escapes msg[0..len) (5.2), builds the record for the target and writes or buffers it.
 * truncated: the message was cut before it reached us (say so with "..."). */
static void log_emit(int level, const char *msg, size_t len, bool truncated)
{
    char esc[ENG_LOG_LINE_MAX];
    size_t consumed;
    size_t esc_len = escape_into(esc, sizeof(esc) - 3, msg, len, &consumed);
    if (truncated || consumed < len) {
        /* Truncated, by formatting or by escaping: say so. */
        memcpy(esc + esc_len, "...", 3);
        esc_len += 3;
    }
    char rec[LOG_RECORD_MAX + sizeof(uint32_t)];
    pthread_rwlock_rdlock(&g_log.lock);
    uint32_t rlen = (uint32_t)record_build(rec + sizeof(uint32_t), level, esc, esc_len);
    struct log_tbuf *tb = tls_tbuf;
    if (!tb) {
        struct iovec iov = {.iov_base = rec + sizeof(uint32_t), .iov_len = rlen};
        write_records(&iov, 1);
        pthread_rwlock_unlock(&g_log.lock);
        return;
    }
    pthread_rwlock_unlock(&g_log.lock);
    if (tb->len + sizeof(rlen) + rlen > sizeof(tb->data))
        tbuf_flush(tb);
    memcpy(rec, &rlen, sizeof(rlen));
    memcpy(tb->data + tb->len, rec, sizeof(rlen) + rlen);
    tb->len += sizeof(rlen) + rlen;
}

void eng_logv(int level, const char *fmt, va_list ap)
{
    if (!eng_log_enabled(level))
        return;
    char msg[ENG_LOG_LINE_MAX];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    log_emit(level, msg, len, (size_t)n >= sizeof(msg));
}

void eng_log_bytes(int level, const char *prefix, const char *bytes, size_t len)
{
    if (!eng_log_enabled(level))
        return;
    char msg[ENG_LOG_LINE_MAX];
    size_t n = prefix ? strnlen(prefix, sizeof(msg) - 1) : 0;
    memcpy(msg, prefix ? prefix : "", n);
    size_t room = sizeof(msg) - 1 - n;
    size_t take = bytes ? (len < room ? len : room) : 0;
    if (take)
        memcpy(msg + n, bytes, take);
    log_emit(level, msg, n + take, bytes && take < len);
}

void eng_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    eng_logv(level, fmt, ap);
    va_end(ap);
}

static void target_close_locked(void)
{
    if (g_log.target == ENG_LOG_FILE && g_log.fd > 2)
        close(g_log.fd);
    if (g_log.syslog_fd >= 0)
        close(g_log.syslog_fd);
    g_log.syslog_fd = -1;
    g_log.fd = 2;
    g_log.target = ENG_LOG_STDERR;
}

int eng_log_open(const struct eng_log_config *cfg, char *err, size_t err_len)
{
    int fd = 2;
    if (cfg->target == ENG_LOG_FILE) {
        if (!cfg->path || !cfg->path[0]) {
            snprintf(err, err_len, "log_file: no path given");
            return -EINVAL;
        }
        fd = open(cfg->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            int rc = -errno;
            snprintf(err, err_len, "cannot open log file %s: %s", cfg->path, strerror(errno));
            return rc;
        }
    }
    /* glibc loads the time zone on first use (and allocates): do it here, not on a shard. */
    tzset();
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    pthread_rwlock_wrlock(&g_log.lock);
    target_close_locked();
    g_log.target = cfg->target;
    g_log.fd = fd;
    snprintf(g_log.ident, sizeof(g_log.ident), "%s",
             cfg->ident && cfg->ident[0] ? cfg->ident : "ringpolicyd");
    /* 0 is LOG_KERN, which no daemon may use: read it as "not set". */
    g_log.facility = cfg->facility ? cfg->facility : LOG_MAIL;
    g_log.pid = (int)getpid();
    atomic_store(&g_log.syslog_retry_ms, 0);
    atomic_store(&g_log.level, cfg->level < 0 ? 0 : cfg->level > 4 ? 4 : cfg->level);
    pthread_rwlock_unlock(&g_log.lock);
    if (cfg->target == ENG_LOG_SYSLOG) {
        pthread_rwlock_rdlock(&g_log.lock);
        syslog_connect();
        pthread_rwlock_unlock(&g_log.lock);
    }
    return 0;
}

void eng_log_close(void)
{
    pthread_rwlock_wrlock(&g_log.lock);
    target_close_locked();
    atomic_store(&g_log.level, ENG_LOG_NOTICE);
    pthread_rwlock_unlock(&g_log.lock);
}

/* After fork (eng_proc_daemonize): syslog lines carry the new pid. */
void eng_log_after_fork(void)
{
    pthread_rwlock_wrlock(&g_log.lock);
    g_log.pid = (int)getpid();
    pthread_rwlock_unlock(&g_log.lock);
}

uint64_t eng_log_write_errors(void)
{
    return atomic_load(&g_log.write_errors);
}

void eng_test_log_syslog_path(const char *path)
{
    pthread_rwlock_wrlock(&g_log.lock);
    snprintf(g_log.syslog_path, sizeof(g_log.syslog_path), "%s", path ? path : LOG_SYSLOG_PATH);
    pthread_rwlock_unlock(&g_log.lock);
}
