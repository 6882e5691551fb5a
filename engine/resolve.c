/*
 * resolve.c: host name lookups on glibc's getaddrinfo_a thread, polled by shards (resolve.h).
 *
 * state: RES_PENDING until the notification (glibc's thread) sets RES_DONE, or the shard sets
 * RES_ABANDONED (eng_resolve_drop before done); the side that finds the other's mark frees the
 * lookup. The lookup keeps its own copies of the name, service and hints: an abandoned one may
 * outlive whatever it was started from.
 */
#include "resolve.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RES_PENDING, RES_DONE, RES_ABANDONED };

struct eng_resolve {
    struct gaicb cb;
    struct addrinfo hints;
    char host[ENG_RESOLVE_HOST_MAX + 1];
    char service[32];
    _Atomic int state;
};

static void resolve_free(struct eng_resolve *r)
{
    if (r->cb.ar_result)
        freeaddrinfo(r->cb.ar_result);
    free(r);
}

/* glibc's helper thread: the lookup is done. The shard owns it from RES_DONE on; if the shard
 * abandoned it, nobody else will free it. */
static void resolve_notify(union sigval sv)
{
    struct eng_resolve *r = sv.sival_ptr;
    int expect = RES_PENDING;
    if (atomic_compare_exchange_strong(&r->state, &expect, RES_DONE))
        return;
    resolve_free(r);
}

int eng_resolve_start(const char *host, const char *service, const struct addrinfo *hints,
                      struct eng_resolve **out)
{
    *out = NULL;
    if (strlen(host) > ENG_RESOLVE_HOST_MAX || (service && strlen(service) >= 32))
        return EAI_OVERFLOW;
    struct eng_resolve *r = calloc(1, sizeof(*r));
    if (!r)
        return EAI_MEMORY;
    r->hints = (struct addrinfo){.ai_family = hints->ai_family,
                                 .ai_socktype = hints->ai_socktype,
                                 .ai_protocol = hints->ai_protocol,
                                 .ai_flags = hints->ai_flags};
    memcpy(r->host, host, strlen(host) + 1);
    r->cb.ar_name = r->host;
    if (service) {
        memcpy(r->service, service, strlen(service) + 1);
        r->cb.ar_service = r->service;
    }
    r->cb.ar_request = &r->hints;
    atomic_init(&r->state, RES_PENDING);
    struct sigevent sev = {.sigev_notify = SIGEV_THREAD};
    sev.sigev_value.sival_ptr = r;
    sev.sigev_notify_function = resolve_notify;
    struct gaicb *list[1] = {&r->cb};
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
    if (rc != 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

bool eng_resolve_done(const struct eng_resolve *r)
{
    return atomic_load(&r->state) == RES_DONE;
}

int eng_resolve_result(const struct eng_resolve *r, const struct addrinfo **ai)
{
    int rc = gai_error((struct gaicb *)&r->cb);
    *ai = rc == 0 ? r->cb.ar_result : NULL;
    if (rc == 0 && !*ai)
        rc = EAI_NONAME;
    return rc;
}

void eng_resolve_drop(struct eng_resolve *r)
{
    if (!r)
        return;
    int expect = RES_PENDING;
    if (atomic_compare_exchange_strong(&r->state, &expect, RES_ABANDONED))
        return; /* resolve_notify frees it */
    resolve_free(r);
}

void eng_resolve_poll_drop(struct eng_resolve_poll *p)
{
    eng_resolve_drop(p->r);
    p->r = NULL;
}

int eng_resolve_poll_step(struct eng_resolve_poll *p, uint64_t now_ms, uint32_t timeout_ms,
                          const char *host, const char *service, struct sockaddr_storage *out,
                          socklen_t *out_len, char *why, size_t why_len)
{
    if (!p->r) {
        const struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        int rc = eng_resolve_start(host, service, &hints, &p->r);
        if (rc != 0) {
            snprintf(why, why_len, "cannot resolve %.200s: %s", host, gai_strerror(rc));
            return -1;
        }
        p->started_ms = now_ms;
        return 0;
    }
    if (!eng_resolve_done(p->r)) {
        if (now_ms - p->started_ms < timeout_ms)
            return 0;
        eng_resolve_poll_drop(p);
        snprintf(why, why_len, "cannot resolve %.200s: the lookup timed out", host);
        return -1;
    }
    const struct addrinfo *ai = NULL;
    int rc = eng_resolve_result(p->r, &ai);
    const struct addrinfo *pick = ai;
    for (const struct addrinfo *a = ai; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    if (rc == 0 && pick->ai_addrlen <= sizeof(*out)) {
        memcpy(out, pick->ai_addr, pick->ai_addrlen);
        *out_len = pick->ai_addrlen;
    } else if (rc == 0) {
        rc = EAI_FAMILY;
    }
    eng_resolve_poll_drop(p);
    if (rc != 0) {
        snprintf(why, why_len, "cannot resolve %.200s: %s", host, gai_strerror(rc));
        return -1;
    }
    return 1;
}
