/*
 * spf/spf.h: an RFC 7208 SPF evaluator (check_host() for the HELO and MAIL FROM identities)
 * of our own, asynchronous, with the explanation texts of Perl's Mail::SPF 2.009 (the library
 * mtpolicyd 2.05 uses), internal to policy/.
 *
 * The evaluator asks for DNS answers through a small resolver interface (struct
 * pol_spf_resolver) and is driven by their completions, so it runs on a shard's ring with the
 * dns module's resolver, or on an in-process fake resolver in tests. It never blocks, never
 * allocates: all its state, records included, lives in one caller-provided struct
 * pol_spf_eval of pol_spf_eval_bytes() bytes, and every evaluation is bounded by the RFC 7208
 * limits (DNS-interactive terms, names per MX/PTR term, void lookups) plus the local limits
 * below (record bytes, nesting depth, state bytes), each of which ends in a permerror that
 * names it and is reported by pol_spf_eval_limit_hit().
 *
 * Threads: one evaluation runs on one thread (the shard of the request); the resolver's done
 * callback must run on that thread too. An evaluation may be left only when it is done.
 */
#ifndef POL_SPF_SPF_H
#define POL_SPF_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Results
 */

enum pol_spf_result {
    POL_SPF_NONE,
    POL_SPF_NEUTRAL,
    POL_SPF_PASS,
    POL_SPF_FAIL,
    POL_SPF_SOFTFAIL,
    POL_SPF_TEMPERROR,
    POL_SPF_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *pol_spf_result_name(enum pol_spf_result r);

enum pol_spf_scope {
    POL_SPF_SCOPE_HELO,  /* "helo" */
    POL_SPF_SCOPE_MFROM, /* "mfrom" */
};

const char *pol_spf_scope_name(enum pol_spf_scope s);

/* ---------------------------------------------------------------------------------------------
 * The resolver interface
 */

enum pol_spf_rr_type {
    POL_SPF_RR_A,
    POL_SPF_RR_AAAA,
    POL_SPF_RR_MX,
    POL_SPF_RR_PTR,
    POL_SPF_RR_TXT,
};

/* "A", "AAAA", "MX", "PTR", "TXT". */
const char *pol_spf_rr_type_name(enum pol_spf_rr_type t);

enum pol_spf_rcode {
    POL_SPF_DNS_OK,       /* RCODE 0; count 0 is a void answer (NODATA) */
    POL_SPF_DNS_NXDOMAIN, /* RCODE 3 */
    POL_SPF_DNS_SERVFAIL, /* RCODE 2 or any other error RCODE (rcode_text names it) */
    POL_SPF_DNS_TIMEOUT,  /* no answer in time */
    POL_SPF_DNS_ERROR,    /* no query was possible (bad name, resolver shut down, no memory) */
};

/* One resource record of the asked type (CNAMEs are followed by the resolver). */
struct pol_spf_rr {
    const char *data; /* A: 4 bytes; AAAA: 16 bytes (network order); MX, PTR: the host name,
                         presentation form without the trailing dot ("" for the root); TXT: the
                         character strings concatenated (RFC 7208 3.3), any bytes */
    size_t len;
};

struct pol_spf_answer {
    enum pol_spf_rcode rcode;
    const char *rcode_text; /* SERVFAIL/ERROR: "SERVFAIL", "REFUSED", ... or NULL */
    const struct pol_spf_rr *rrs;
    size_t count;
};

typedef void pol_spf_lookup_done_fn(void *ctx, const struct pol_spf_answer *ans);

struct pol_spf_resolver {
    /* Starts a lookup of name (lower case, no trailing dot, 1..253 bytes, labels 1..63 bytes,
     * any byte but '.' in a label). Returns 0: done runs exactly once, on the caller's thread,
     * possibly before lookup returns (an answer from a cache); the answer and everything it
     * points to are valid only during done. Or -errno: done will not run, and the evaluator
     * treats the lookup as a DNS error. */
    int (*lookup)(void *impl, enum pol_spf_rr_type type, const char *name,
                  pol_spf_lookup_done_fn *done, void *ctx);
    void *impl;
};

/* ---------------------------------------------------------------------------------------------
 * Evaluations
 */

/* RFC 7208 4.6.4 limits (the SPF plugin's max_dns_interactive_terms,
 * max_name_lookups_per_term and max_void_dns_lookups). */
struct pol_spf_limits {
    uint32_t dns_terms_max;      /* include, a, mx, ptr, exists, redirect; default 10 */
    uint32_t names_per_term_max; /* MX names (more: permerror), PTR names (more: ignored);
                                    default 10, at most POL_SPF_NAMES_PER_TERM_CAP */
    uint32_t void_lookups_max;   /* NXDOMAIN or empty answers in mechanisms; default 2 */
};

#define POL_SPF_DNS_TERMS_DEFAULT 10u
#define POL_SPF_NAMES_PER_TERM_DEFAULT 10u
#define POL_SPF_VOID_LOOKUPS_DEFAULT 2u
/* Local limits. A record longer than this is a permerror (RFC 7208 3.4 asks publishers to stay
 * under 450 bytes; a record over 4 KiB cannot come in one UDP answer anyway). */
#define POL_SPF_RECORD_BYTES_MAX 4096u
/* Nesting of include/redirect; the DNS-term limit of 10 allows 11 frames. */
#define POL_SPF_FRAMES_MAX 24u
#define POL_SPF_NAMES_PER_TERM_CAP 64u
/* Explanation texts are cut at this many bytes (a Postfix reply line is short anyway). */
#define POL_SPF_EXPL_BYTES 1024u

void pol_spf_limits_default(struct pol_spf_limits *l);

/* What the evaluation checks. Every string must stay valid until the evaluation is done. */
struct pol_spf_request {
    enum pol_spf_scope scope;
    const char *identity;     /* HELO: the HELO name; MAIL FROM: the sender "local@domain" (a null
                                 sender is the caller's business: RFC 7208 2.4 postmaster@HELO) */
    const char *ip;           /* the client address, IPv4 or IPv6 text (IPv4-mapped counts as v4) */
    const char *helo;         /* %{h}; NULL or "" gives "unknown" */
    const char *receiver;     /* %{r}; NULL or "" gives "unknown" */
    const char *default_expl; /* macro string for a fail without usable exp= (%AUTH_EXPL%);
                                 NULL: none */
    int64_t now_s;            /* %{t} */
};

/* Which limit ended an evaluation in permerror (for counters), POL_SPF_LIMIT_NONE otherwise. */
enum pol_spf_limit {
    POL_SPF_LIMIT_NONE,
    POL_SPF_LIMIT_DNS_TERMS,
    POL_SPF_LIMIT_NAMES_PER_TERM,
    POL_SPF_LIMIT_VOID_LOOKUPS,
    POL_SPF_LIMIT_RECORD_BYTES,
    POL_SPF_LIMIT_FRAMES,
    POL_SPF_LIMIT_STATE_BYTES,
};

const char *pol_spf_limit_name(enum pol_spf_limit l);

struct pol_spf_eval;

/* Bytes of a struct pol_spf_eval (about 24 KiB); the memory must be 8-byte aligned. */
size_t pol_spf_eval_bytes(void);

typedef void pol_spf_eval_done_fn(void *ctx, struct pol_spf_eval *e);

enum pol_spf_eval_status {
    POL_SPF_EVAL_DONE, /* the result is there; done will not be called */
    POL_SPF_EVAL_WAIT, /* done(ctx, e) will be called once, from a resolver callback */
};

/* Starts check_host() for rq on the memory e (pol_spf_eval_bytes() bytes; its previous content
 * does not matter). res and lim are copied; rq and its strings must outlive the evaluation.
 * An identity or address the evaluator cannot use gives a result at once: a malformed domain
 * gives none (RFC 7208 4.3), an unparsable ip a permerror. */
enum pol_spf_eval_status pol_spf_eval_start(struct pol_spf_eval *e,
                                            const struct pol_spf_resolver *res,
                                            const struct pol_spf_limits *lim,
                                            const struct pol_spf_request *rq,
                                            pol_spf_eval_done_fn *done, void *ctx);

/* After DONE, or in done: the outcome. The strings live in e. */
enum pol_spf_result pol_spf_eval_result(const struct pol_spf_eval *e);
/* Mail::SPF's local explanation, e.g. "example.com: Sender is not authorized by default to use
 * 'u@example.com' in 'mfrom' identity (mechanism '-all' matched)"; never NULL. */
const char *pol_spf_eval_local_expl(const struct pol_spf_eval *e);
/* fail only: the exp= text of the domain, or default_expl expanded; NULL for other results
 * (and when default_expl was NULL). */
const char *pol_spf_eval_auth_expl(const struct pol_spf_eval *e);
/* The mechanism that matched as Mail::SPF prints it ("-all", "ip4:192.0.2.0/24"), or NULL. */
const char *pol_spf_eval_mechanism(const struct pol_spf_eval *e);
enum pol_spf_limit pol_spf_eval_limit_hit(const struct pol_spf_eval *e);
/* DNS lookups this evaluation started. */
uint32_t pol_spf_eval_lookups(const struct pol_spf_eval *e);

#ifdef __cplusplus
}
#endif

#endif
