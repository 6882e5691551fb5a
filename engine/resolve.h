/*
 * resolve.h: host name lookups off the shard (engine-internal; used by mc.c and pg.c).
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
#include <netdb.h>

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

#endif
