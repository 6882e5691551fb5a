/*
 * resolve.h: host name lookups off the shard (engine-internal; used by mc.c, pg.c, maria.c,
 * redis.c and stream.c).
 *
 * A lookup runs on glibc's getaddrinfo_a helper thread, never on a shard; the shard polls
 * eng_resolve_done (e.g. from a retry timer) and, once it is true, reads the result. The
 * notification (on glibc's thread) and the shard hand the lookup over through one atomic
 * state: the side that comes last frees it, so a shard may drop a lookup still in flight
 * (its client destroyed, or it took too long) without waiting.
 *
 * Owns: the lookup (its copy of the name, glibc's result list). Thread: the starting shard,
 * except for the notification.
 */
#ifndef ENG_RESOLVE_H
#define ENG_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netdb.h>
#include <sys/socket.h>

#define ENG_RESOLVE_HOST_MAX 255u /* longest name accepted (a DNS name has at most 253) */

struct eng_resolve;

/* Starts looking up host (service may be NULL) with hints' family, socktype and flags.
 * 0 with *out, or an EAI_* code (EAI_OVERFLOW: host longer than ENG_RESOLVE_HOST_MAX). */
int eng_resolve_start(const char *host, const char *service, const struct addrinfo *hints,
                      struct eng_resolve **out);

/* True once the lookup finished (successfully or not). */
bool eng_resolve_done(const struct eng_resolve *r);

/* After done: 0, or the EAI_* code of the failure; *ai gets the result list (NULL on
 * failure), valid until eng_resolve_drop. gai_strerror gives the reason. */
int eng_resolve_result(const struct eng_resolve *r, const struct addrinfo **ai);

/* Lets go of a lookup: frees it when done, else leaves it to the notification. NULL: no-op. */
void eng_resolve_drop(struct eng_resolve *r);

/* A lookup stepped by a shard until it ends (the clients that resolve at each connection
 * attempt): call eng_resolve_poll_step at each attempt and from a poll timer until it returns
 * something other than 0. Zero-initialised: idle. */
struct eng_resolve_poll {
    struct eng_resolve *r;
    uint64_t started_ms;
};

/* Starts the lookup of host (service: the port, may be NULL; SOCK_STREAM, any family) when
 * none is in flight, else looks at it. Returns 1 with the address in *out (an IPv4 one first
 * when the name has one: 2.05's clients spoke IPv4, and "localhost" must not become ::1 where
 * the server listens on 127.0.0.1), 0 while it goes on (step again later), or -1 when it
 * failed or outlived timeout_ms (a sentence "cannot resolve HOST: ..." in why). */
int eng_resolve_poll_step(struct eng_resolve_poll *p, uint64_t now_ms, uint32_t timeout_ms,
                          const char *host, const char *service, struct sockaddr_storage *out,
                          socklen_t *out_len, char *why, size_t why_len);

/* Abandons the lookup in flight, if any. */
void eng_resolve_poll_drop(struct eng_resolve_poll *p);

#endif
