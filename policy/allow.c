/*
 * allow.c: the client address allow-list (allow.h): parsing the `allow` option and matching a
 * peer address against it.
 *
 * Parse on the main thread (start-up, reload); match on any shard, pure. The refusal counter
 * and the time of the last log line are daemon-wide relaxed atomics: several shards may refuse
 * at the same moment, and at most one of them wins the second's log line. No allocation.
 */
#include "allow.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/engine.h"
#include "eng/log.h"
#include "metrics.h"

/* Longest entry: an IPv6 address in full (45 chars with an embedded IPv4) plus "/128". */
#define ALLOW_ENTRY_BYTES_MAX 64u
/* At most one refusal line per this many milliseconds, daemon-wide. */
#define ALLOW_LOG_INTERVAL_MS 1000u

static atomic_uint_fast64_t allow_refused_total;
static atomic_uint_fast64_t allow_logged_ms; /* 0: never logged */

static bool is_sep(char ch)
{
    return ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Clears the bits past prefix. */
static void net_mask(uint8_t addr[16], unsigned prefix)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned bit = i * 8;
        if (bit >= prefix)
            addr[i] = 0;
        else if (prefix - bit < 8)
            addr[i] &= (uint8_t)(0xffu << (8 - (prefix - bit)));
    }
}

/* One entry "ADDR" or "ADDR/PREFIX" (NUL-terminated) into *n. 0 or -1 with why. */
static int entry_parse(const char *e, struct pol_allow_net *n, char *why, size_t why_len)
{
    char addr[ALLOW_ENTRY_BYTES_MAX];
    const char *slash = strchr(e, '/');
    size_t alen = slash ? (size_t)(slash - e) : strlen(e);
    memcpy(addr, e, alen);
    addr[alen] = '\0';
    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, addr, n->addr) == 1) {
        n->v6 = false;
    } else if (inet_pton(AF_INET6, addr, n->addr) == 1) {
        n->v6 = true;
    } else {
        snprintf(why, why_len, "'%s' is not an IPv4 or IPv6 address", addr);
        return -1;
    }
    unsigned max = n->v6 ? 128 : 32, prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3 || strspn(p, "0123456789") != strlen(p) ||
            (prefix = (unsigned)atoi(p)) > max) {
            snprintf(why, why_len, "'%s': the prefix length must be a number from 0 to %u", e,
                     max);
            return -1;
        }
    }
    n->prefix = (uint8_t)prefix;
    net_mask(n->addr, prefix);
    return 0;
}

int pol_allow_parse(const char *text, struct pol_allow *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    const char *p = text ? text : "";
    for (;;) {
        while (*p && is_sep(*p))
            p++;
        if (*p == '\0')
            return 0;
        size_t len = 0;
        while (p[len] && !is_sep(p[len]))
            len++;
        char e[ALLOW_ENTRY_BYTES_MAX];
        if (len >= sizeof(e)) {
            snprintf(why, why_len, "'%.*s...' is not an IPv4 or IPv6 address", 20, p);
            return -1;
        }
        if (out->count == POL_ALLOW_NETS_MAX) {
            snprintf(why, why_len, "more than %u networks", POL_ALLOW_NETS_MAX);
            return -1;
        }
        memcpy(e, p, len);
        e[len] = '\0';
        if (entry_parse(e, &out->nets[out->count], why, why_len) != 0)
            return -1;
        out->count++;
        p += len;
    }
}

/* Whether the first prefix bits of a and b are equal. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t m = (uint8_t)(0xffu << (8 - rest));
    return (a[whole] & m) == (b[whole] & m);
}

bool pol_allow_match(const struct pol_allow *a, const struct sockaddr *sa, socklen_t len)
{
    if (a->count == 0 || !sa)
        return true;
    uint8_t addr[16];
    bool v6;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        v6 = false;
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        v6 = !IN6_IS_ADDR_V4MAPPED(in6);
        if (v6)
            memcpy(addr, in6, 16);
        else
            memcpy(addr, (const uint8_t *)in6 + 12, 4);
    } else {
        return true; /* Unix socket (or no address): not filtered */
    }
    for (uint32_t i = 0; i < a->count; i++)
        if (a->nets[i].v6 == v6 && prefix_equal(a->nets[i].addr, addr, a->nets[i].prefix))
            return true;
    return false;
}

bool pol_allow_refused(const struct pol_allow *a, const struct sockaddr *sa, socklen_t len,
                       const char *port, uint64_t now_ms)
{
    if (pol_allow_match(a, sa, len))
        return false;
    uint64_t n = atomic_fetch_add_explicit(&allow_refused_total, 1, memory_order_relaxed) + 1;
    uint64_t last = atomic_load_explicit(&allow_logged_ms, memory_order_relaxed);
    if ((last == 0 || now_ms - last >= ALLOW_LOG_INTERVAL_MS) &&
        atomic_compare_exchange_strong_explicit(&allow_logged_ms, &last, now_ms ? now_ms : 1,
                                                memory_order_relaxed, memory_order_relaxed)) {
        char peer[INET6_ADDRSTRLEN + 8];
        eng_addr_format(sa, len, peer, sizeof(peer));
        eng_log(ENG_LOG_NOTICE,
                "[%s]: connection from %s refused: not in allow (%llu refused so far)", port,
                peer, (unsigned long long)n);
    }
    return true;
}

uint64_t pol_allow_refused_count(void)
{
    return atomic_load_explicit(&allow_refused_total, memory_order_relaxed);
}

void pol_allow_collect(void *ctx, struct eng_http_body *out)
{
    (void)ctx;
    pol_metrics_write_head(out, "ringpolicyd_connections_refused_total", "counter",
                           "Connections refused at accept: the client is not in allow.");
    pol_metrics_write_value(out, "ringpolicyd_connections_refused_total", "",
                            pol_allow_refused_count());
}
