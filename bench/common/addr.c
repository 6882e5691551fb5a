/*
 * addr.c: parsing policy server addresses and connecting to them (see addr.h). Used by
 * ringpolicyd-client and ringpolicyd-load; the only blocking code here is getaddrinfo and the
 * bounded wait in bench_addr_connect.
 */
#include "addr.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench_assert.h"

static int addr_unix(const char *path, struct bench_addr *out, char *err, size_t err_len)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss[0];
    size_t path_len = strlen(path);
    if (path_len == 0 || path_len >= sizeof(sun->sun_path)) {
        snprintf(err, err_len, "unix socket path '%s' is empty or longer than %zu bytes", path,
                 sizeof(sun->sun_path) - 1);
        return -EINVAL;
    }
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, path_len + 1);
    out->len[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + 1);
    out->count = 1;
    return 0;
}

/* Splits "host:port" or "[v6]:port" into host and port (both written into buf). */
static int split_host_port(const char *text, char *buf, size_t buf_len, const char **host,
                           const char **port)
{
    if (strlen(text) >= buf_len)
        return -EINVAL;
    strcpy(buf, text);
    char *colon;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        *close = '\0';
        *host = buf + 1;
        colon = close + 1;
    } else {
        colon = strrchr(buf, ':');
        if (!colon || strchr(buf, ':') != colon) /* bare IPv6 needs brackets */
            return -EINVAL;
        *colon = '\0';
        *host = buf;
    }
    *port = colon + 1;
    char *end;
    long n = strtol(*port, &end, 10);
    if (**port == '\0' || *end != '\0' || n < 1 || n > 65535 || **host == '\0')
        return -EINVAL;
    return 0;
}

static int addr_inet(const char *text, struct bench_addr *out, char *err, size_t err_len)
{
    char buf[BENCH_ADDR_TEXT_BYTES];
    const char *host, *port;
    if (split_host_port(text, buf, sizeof(buf), &host, &port) < 0) {
        snprintf(err, err_len,
                 "bad server address '%s': expected HOST:PORT, [IPV6]:PORT or a socket path", text);
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    out->count = 0;
    for (struct addrinfo *ai = res; ai && out->count < BENCH_ADDR_RESOLVED_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out->ss[0]))
            continue;
        memcpy(&out->ss[out->count], ai->ai_addr, ai->ai_addrlen);
        out->len[out->count] = ai->ai_addrlen;
        out->count++;
    }
    freeaddrinfo(res);
    if (out->count == 0) {
        snprintf(err, err_len, "cannot resolve '%s': no usable address", host);
        return -EHOSTUNREACH;
    }
    return 0;
}

int bench_addr_parse(const char *text, struct bench_addr *out, char *err, size_t err_len)
{
    BENCH_ASSERT(text != NULL);
    BENCH_ASSERT(out != NULL);
    memset(out, 0, sizeof(*out));
    if (strlen(text) >= sizeof(out->text)) {
        snprintf(err, err_len, "server address is longer than %zu bytes", sizeof(out->text) - 1);
        return -EINVAL;
    }
    strcpy(out->text, text);
    if (strncmp(text, "unix:", 5) == 0)
        return addr_unix(text + 5, out, err, err_len);
    if (strncmp(text, "inet:", 5) == 0)
        return addr_inet(text + 5, out, err, err_len);
    if (strchr(text, '/'))
        return addr_unix(text, out, err, err_len);
    return addr_inet(text, out, err, err_len);
}

bool bench_addr_is_unix(const struct bench_addr *a)
{
    return a->count > 0 && a->ss[0].ss_family == AF_UNIX;
}

int bench_addr_connect_start(const struct bench_addr *a, unsigned idx)
{
    BENCH_ASSERT(idx < a->count);
    int family = a->ss[idx].ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (family != AF_UNIX) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (connect(fd, (const struct sockaddr *)&a->ss[idx], a->len[idx]) < 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Waits for a started connect to finish. Returns 0 or -errno. */
static int connect_wait(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int n;
    do
        n = poll(&pfd, 1, timeout_ms > 0 ? timeout_ms : -1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ETIMEDOUT;
    int soerr = 0;
    socklen_t soerr_len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) < 0)
        return -errno;
    return -soerr;
}

int bench_addr_connect(const struct bench_addr *a, int timeout_ms, bool nonblock, char *err,
                       size_t err_len)
{
    BENCH_ASSERT(a->count > 0);
    int rc = -EINVAL;
    for (unsigned i = 0; i < a->count; i++) {
        int fd = bench_addr_connect_start(a, i);
        if (fd < 0) {
            rc = fd;
            continue;
        }
        rc = connect_wait(fd, timeout_ms);
        if (rc == 0) {
            if (!nonblock)
                (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            return fd;
        }
        close(fd);
    }
    snprintf(err, err_len, "cannot connect to %s: %s", a->text, strerror(-rc));
    return rc;
}
