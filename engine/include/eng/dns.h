/*
 * eng/dns.h: a DNS stub resolver for one shard, on c-ares 1.18 driven by the shard's loop.
 * Public API; generic (names, record types, answers, callbacks on the shard); it knows nothing
 * about blocklists, SPF or policy.
 *
 * One client (struct eng_dns) per shard owns one c-ares channel. Its sockets are polled through
 * eng_poll (c-ares' socket-state callback) and its retransmission timeouts run on a ring timer
 * (ares_timeout, then ares_process_fd with no socket on expiry). Servers come from
 * /etc/resolv.conf unless the configuration names them ("127.0.0.1:5353,[::1]:53").
 *
 * Above c-ares the client adds what a policy daemon needs: identical queries asked while one is
 * in flight share it (in-flight de-duplication), and answers are kept in a per-client cache that
 * honours their TTLs (positive answers: the lowest TTL of the answer section; NXDOMAIN and
 * NODATA: the SOA rule of RFC 2308, or neg_ttl_s without a SOA), bounded in entries and bytes,
 * evicting the least recently used. Errors (SERVFAIL, timeouts, ...) are never cached.
 *
 * Answers are parsed here, not by c-ares (whose 1.18 parsers drop TTLs and allocate): the
 * records of the asked type in the answer section, class IN, in message order, so CNAME chains
 * are followed transparently as a stub resolver sees them.
 *
 * Threads: everything runs on the client's shard (asserted) except eng_dns_servers_check and
 * eng_dns_parse (any thread). done runs on that shard from its loop, never inside
 * eng_dns_query, also for cache hits; it may call eng_dns_query again, but not
 * eng_dns_destroy. An answer is valid only during done.
 *
 * Return convention: 0 or a count on success, -errno on failure.
 */
#ifndef ENG_DNS_H
#define ENG_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

struct eng_dns;

/* Longest name accepted, in presentation form, without a trailing dot. A longer name is
 * answered ENG_DNS_BADNAME (RFC 1035 allows 255 octets on the wire, 253 characters written). */
#define ENG_DNS_NAME_BYTES_MAX 255u
/* Records of one answer that are delivered; more are dropped and counted (answer.truncated). */
#define ENG_DNS_RRS_MAX 64u
/* A name in presentation form with every octet escaped as \DDD, plus its NUL. */
#define ENG_DNS_PRES_NAME_BYTES (4u * 255u + 1u)

/* Record types with a parsed form; any other type is delivered as raw rdata. */
enum {
    ENG_DNS_T_A = 1,
    ENG_DNS_T_NS = 2,
    ENG_DNS_T_CNAME = 5,
    ENG_DNS_T_SOA = 6,
    ENG_DNS_T_PTR = 12,
    ENG_DNS_T_MX = 15,
    ENG_DNS_T_TXT = 16,
    ENG_DNS_T_AAAA = 28,
    ENG_DNS_T_SPF = 99,
    /* Delivered as raw rdata; queried with the AD bit set (see eng_dns_answer.ad). */
    ENG_DNS_T_TLSA = 52,
    ENG_DNS_T_OPENPGPKEY = 61,
};

/* What became of a query. The first three are answers from a server (SPF: a "void lookup" is
 * NODATA or NXDOMAIN); the others are failures (SPF: temperror). */
enum eng_dns_status {
    ENG_DNS_OK,        /* NOERROR with at least one record of the asked type */
    ENG_DNS_NODATA,    /* NOERROR, but no record of that type */
    ENG_DNS_NXDOMAIN,  /* the name does not exist */
    ENG_DNS_SERVFAIL,  /* SERVFAIL (c-ares 1.18 reports it as REFUSED, see below) */
    ENG_DNS_REFUSED,   /* SERVFAIL, REFUSED or NOTIMP from every server tried (c-ares 1.18
                          does not tell them apart), or the servers refused the connection */
    ENG_DNS_TIMEOUT,   /* no answer within the configured tries */
    ENG_DNS_BADNAME,   /* not a valid DNS name (empty label, label over 63, too long) */
    ENG_DNS_ERROR,     /* anything else: malformed answer, FORMERR, refused connection, memory */
    ENG_DNS_CANCELLED, /* the client was destroyed first */
    ENG_DNS_STATUS_COUNT
};

/* "OK", "NODATA", "NXDOMAIN", "SERVFAIL", ... */
const char *eng_dns_status_name(enum eng_dns_status st);

/* One record. rdata points into the answer message; names into the parse buffer. */
struct eng_dns_rr {
    uint16_t type;
    uint32_t ttl_s;
    const unsigned char *rdata; /* raw; for TXT the <length><octets> character strings */
    uint16_t rdata_len;
    union {
        struct in_addr a;     /* A */
        struct in6_addr aaaa; /* AAAA */
        struct {
            uint16_t preference;
            const char *exchange; /* presentation form; "." for the root (null MX) */
        } mx;
        const char *name; /* PTR, CNAME, NS: the target in presentation form */
    } u;
};

struct eng_dns_answer {
    enum eng_dns_status status;
    uint16_t qtype;
    const char *qname; /* the name as asked (lower-cased, no trailing dot) */
    uint8_t rcode;     /* the response's RCODE when a response came, else 0 */
    uint32_t ttl_s;    /* OK: lowest TTL of the answer section; NODATA/NXDOMAIN: the negative
                          TTL; from the cache: what is left of it. Failures: 0 */
    uint32_t count;    /* records in rrs */
    const struct eng_dns_rr *rrs;
    bool truncated; /* the answer held more than ENG_DNS_RRS_MAX records of the type */
    bool from_cache;
    bool ad; /* the response had the AD bit (the resolver validated it with DNSSEC). Queries
                for TLSA and OPENPGPKEY are sent with AD set, which asks a validating
                resolver to report it (RFC 6840 section 5.7); other types are sent as before
                (no AD, no EDNS), so for them a resolver may leave it clear. False on failures */
};

typedef void eng_dns_done_fn(void *ctx, const struct eng_dns_answer *ans);

/* A query in progress: caller-owned storage (e.g. in a plugin's per-request state), untouched
 * by the caller from eng_dns_query until its done has started; done may reuse it at once.
 * Fields are private. */
struct eng_dns_op {
    struct eng_dns_op *next;
    struct eng_dns *dns;
    eng_dns_done_fn *done;
    void *ctx;
    uint64_t hash;
    uint16_t qtype;
    uint16_t name_len;
    uint32_t state;
    char name[ENG_DNS_NAME_BYTES_MAX + 1];
};

struct eng_dns_config {
    const char *servers;        /* NULL or "": /etc/resolv.conf. Else a comma-separated list of
                                   IPv4[:PORT], IPv6 or [IPv6]:PORT (blanks around commas
                                   allowed); copied */
    uint32_t timeout_ms;        /* wait for the first try at a server; c-ares doubles it for each
                                   later round over the servers. Default 2000 */
    uint32_t tries;             /* rounds over the servers. Default 2 (with one server: 2 s, then
                                   4 s, 6 s in all) */
    uint32_t ops_max;           /* queries accepted and not yet done; one more is refused with
                                   -ENOBUFS (counted). Default 8192 */
    uint32_t inflight_max;      /* distinct queries handed to c-ares at once; the others wait in
                                   the client's queue until one finishes (counted). Default 1024 */
    uint32_t cache_entries_max; /* answers kept; 0 disables the cache. Default 8192 */
    uint32_t cache_bytes_max;   /* bytes of names and answer messages kept. Default 4 MiB */
    uint32_t cache_answer_bytes_max; /* a bigger answer message is not cached (counted).
                                        Default 4096 */
    uint32_t ttl_max_s;              /* cap on any cached TTL. Default 86400 */
    uint32_t neg_ttl_s; /* NXDOMAIN/NODATA without a SOA. Default 60; capped by RFC 2308's
                           3 hours for negative answers */
    uint32_t socks_max; /* c-ares sockets polled at once (UDP per server, TCP for
                           truncated answers). A socket beyond it is not polled, so its
                           queries time out (counted). Default 16 */
};

void eng_dns_config_defaults(struct eng_dns_config *cfg);

/* Any thread: checks a servers list (see eng_dns_config.servers). 0, or -EINVAL with a
 * sentence in err naming the bad element. */
int eng_dns_servers_check(const char *servers, char *err, size_t err_len);

/* On sh's thread (at shard start: it allocates everything the client will use, except what
 * c-ares allocates per query). 0, or -EINVAL (a limit or the servers list) / -ENOMEM / -EIO
 * (c-ares refused to initialise) with a sentence in err. */
int eng_dns_create(struct eng_shard *sh, const struct eng_dns_config *cfg, struct eng_dns **out,
                   char *err, size_t err_len);

/* Queries name (presentation form; case and one trailing dot do not matter) for records of
 * qtype (1..65535). Returns 0: done(ctx, answer) runs exactly once, later, from the loop (a
 * cache hit on this turn, otherwise when the answer or the failure is known). Or -EINVAL (qtype
 * 0, name NULL, op still in use), -ENOBUFS (ops_max queries not done: counted), -ESHUTDOWN
 * (inside eng_dns_destroy); done will not run then. A name longer than ENG_DNS_NAME_BYTES_MAX
 * is accepted and answered ENG_DNS_BADNAME. */
int eng_dns_query(struct eng_dns *d, struct eng_dns_op *op, const char *name, size_t name_len,
                  uint16_t qtype, eng_dns_done_fn *done, void *ctx);

/* On the shard: every query not done yet is answered ENG_DNS_CANCELLED inside this call, then
 * the channel, its sockets and the cache are freed. NULL is a no-op. */
void eng_dns_destroy(struct eng_dns *d);

/* Forgets every cached answer (e.g. after the servers' data changed). */
void eng_dns_cache_clear(struct eng_dns *d);

struct eng_dns_stats {
    uint64_t queries;                       /* accepted by eng_dns_query */
    uint64_t sent;                          /* handed to c-ares (cache and de-duplication missed) */
    uint64_t cache_hits;                    /* answered from the cache */
    uint64_t dedup_hits;                    /* joined a query already in flight */
    uint64_t answers[ENG_DNS_STATUS_COUNT]; /* done calls by status, all sources */
    uint64_t queue_full;                    /* refused with -ENOBUFS */
    uint64_t queued;                        /* waited for an in-flight slot (inflight_max) */
    uint64_t rrs_truncated;                 /* answers with more than ENG_DNS_RRS_MAX records */
    uint64_t socks_full; /* sockets that could not be polled (socks_max, poll table) */
    uint64_t cache_inserts;
    uint64_t cache_evictions; /* removed to make room (LRU) */
    uint64_t cache_expired;   /* removed when found past their TTL */
    uint64_t cache_too_big;   /* answers over cache_answer_bytes_max, not cached */
    uint64_t cache_entries;   /* now */
    uint64_t cache_bytes;     /* now */
    uint64_t inflight;        /* now */
    uint64_t inflight_max_seen;
};

void eng_dns_stats_get(const struct eng_dns *d, struct eng_dns_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Answer messages (pure; any thread). The client uses these for every answer, fresh or cached;
 * they are exported for tests, fuzzers and callers that fetch messages another way.
 */

/* Where eng_dns_parse puts the records and the names it expands. */
struct eng_dns_parse_buf {
    struct eng_dns_rr rrs[ENG_DNS_RRS_MAX];
    char names[ENG_DNS_RRS_MAX][ENG_DNS_PRES_NAME_BYTES];
};

/* Parses a DNS response message: the status from its RCODE and its answer section, the records
 * of type qtype and class IN in the answer section (at most ENG_DNS_RRS_MAX, in order), and the
 * TTL (see eng_dns_answer.ttl_s; negative answers take min(SOA TTL, SOA MINIMUM) from the
 * authority section, else neg_ttl_s). ans->qname is left NULL. Returns 0, or -EBADMSG for a
 * malformed message (truncated header or record, bad name compression, rdata of the wrong size
 * for A/AAAA/MX, TXT strings that do not fill their rdata): ans->status is then ENG_DNS_ERROR
 * and ans->count 0. ans points into msg and buf. */
int eng_dns_parse(const unsigned char *msg, size_t len, uint16_t qtype, uint32_t neg_ttl_s,
                  struct eng_dns_parse_buf *buf, struct eng_dns_answer *ans);

/* The character strings of a TXT (or SPF) record, one per call: *pos starts at 0. Returns true
 * with *s and *len set, false after the last one. */
bool eng_dns_txt_next(const struct eng_dns_rr *rr, size_t *pos, const unsigned char **s,
                      size_t *len);

#ifdef __cplusplus
}
#endif

#endif
