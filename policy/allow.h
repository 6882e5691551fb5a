/*
 * allow.h: the client address allow-list of the policy ports (global option `allow`, a
 * ringpolicyd addition: mtpolicyd 2.05 has no such option and answers every client).
 *
 * `allow = "127.0.0.0/8, 10.0.0.0/8, ::1, 2001:db8::/32"`: a comma or blank separated list of
 * IPv4 and IPv6 addresses, each with an optional /PREFIX (default /32 or /128). Empty or absent:
 * every client is accepted. An IPv4-mapped IPv6 peer (::ffff:a.b.c.d, a v4 client of a [::]
 * listener) is matched as its IPv4 address. Unix socket peers are always accepted (the socket's
 * file mode guards them). The HTTP listener (http_port) is not filtered.
 *
 * Parsing runs on the main thread at start-up and reload; the parsed list is read-only and
 * matched on any shard. pol_allow_refused counts refusals in one relaxed atomic shared by the
 * shards (refusals are the abuse path, not the request path) and logs at most one line a second
 * for the whole daemon. Limit: POL_ALLOW_NETS_MAX entries (more is a start-up error).
 */
#ifndef POL_ALLOW_H
#define POL_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_ALLOW_NETS_MAX 64u

struct pol_allow_net {
    uint8_t addr[16]; /* network address, host bits cleared; IPv4 in the first 4 bytes */
    uint8_t prefix;   /* bits */
    bool v6;
};

struct pol_allow {
    uint32_t count; /* 0: no list, every client accepted */
    struct pol_allow_net nets[POL_ALLOW_NETS_MAX];
};

/* Parses text into *out. Returns 0, or -1 with a sentence in why naming the bad entry. */
int pol_allow_parse(const char *text, struct pol_allow *out, char *why, size_t why_len);

/* Whether a peer may connect: true when the list is empty, the peer is not IPv4/IPv6 (Unix
 * socket), or its address is in one of the networks. Pure. */
bool pol_allow_match(const struct pol_allow *a, const struct sockaddr *sa, socklen_t len);

/* Accept path: true when the peer is refused (then it has been counted and, at most once a
 * second daemon-wide, logged at level 2 naming the address and port key). */
bool pol_allow_refused(const struct pol_allow *a, const struct sockaddr *sa, socklen_t len,
                       const char *port, uint64_t now_ms);

/* Connections refused since start (all shards). */
uint64_t pol_allow_refused_count(void);

struct eng_http_body;
/* A metrics collector (pol_metrics_register; ctx unused): ringpolicyd_connections_refused_total,
 * the connections refused by allow. */
void pol_allow_collect(void *ctx, struct eng_http_body *out);

#ifdef __cplusplus
}
#endif

#endif
