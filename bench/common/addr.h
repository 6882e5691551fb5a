/*
 * addr.h: policy server addresses for the client tools, and connecting to them.
 *
 * Accepted forms: "HOST:PORT", "[IPV6]:PORT", "inet:HOST:PORT" (Postfix's spelling), a Unix
 * socket path (anything containing '/'), and "unix:PATH". HOST is resolved once, at parse time,
 * with getaddrinfo (IPv4 and IPv6; up to BENCH_ADDR_RESOLVED_MAX results are kept and tried in
 * order on connect, so "localhost" works whether the server listens on 127.0.0.1 or ::1).
 * Parsing may block on the resolver; connecting blocks for at most the timeout given.
 * Errors are returned as -errno with one sentence written to the caller's buffer.
 */
#ifndef BENCH_ADDR_H
#define BENCH_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_ADDR_RESOLVED_MAX 4u
#define BENCH_ADDR_TEXT_BYTES 256u

struct bench_addr {
    char text[BENCH_ADDR_TEXT_BYTES]; /* as given, for messages */
    unsigned count;                   /* resolved addresses, 1..BENCH_ADDR_RESOLVED_MAX */
    struct sockaddr_storage ss[BENCH_ADDR_RESOLVED_MAX];
    socklen_t len[BENCH_ADDR_RESOLVED_MAX];
};

/* Parses and resolves text. Returns 0, or -EINVAL (bad form, bad port, path too long) or
 * -EHOSTUNREACH (the name does not resolve), with a message in err. */
int bench_addr_parse(const char *text, struct bench_addr *out, char *err, size_t err_len);

/* True when the address is a Unix socket. */
bool bench_addr_is_unix(const struct bench_addr *a);

/* Connects to the first resolved address that accepts, waiting at most timeout_ms for each
 * (0: the kernel's own timeout). TCP sockets get TCP_NODELAY: requests and replies are small
 * writes, and Nagle with delayed ACKs would add 40 ms to each (TOOLCHAIN.md 5). The socket is
 * close-on-exec and, when nonblock is true, non-blocking on return. Returns the fd or -errno
 * of the last attempt, with a message in err. */
int bench_addr_connect(const struct bench_addr *a, int timeout_ms, bool nonblock, char *err,
                       size_t err_len);

/* Starts a non-blocking connect to resolved address idx. Returns the fd (the connect may still
 * be in progress: wait for writability, then read SO_ERROR) or -errno. For event loops that
 * connect many sockets at once. */
int bench_addr_connect_start(const struct bench_addr *a, unsigned idx);

#ifdef __cplusplus
}
#endif

#endif
