/*
 * spf/spf_eng.h: the SPF evaluator's resolver interface (spf.h) on the shard's DNS client
 * (eng/dns.h): one lookup at a time per evaluation, answers turned into the evaluator's form
 * (A/AAAA bytes, MX/PTR names without the trailing dot, TXT strings concatenated), NODATA as
 * an empty OK answer, errors by kind. Internal to policy/ (the SPF plugin and its tests).
 *
 * Owns nothing: the caller provides one struct pol_spf_eng per evaluation (it holds the
 * eng_dns_op, so it must stay put while a lookup is out) and one scratch per shard (answers
 * are converted into it inside the DNS client's done callback, which never nests).
 * Threads: the DNS client's shard only.
 */
#ifndef POL_SPF_SPF_ENG_H
#define POL_SPF_SPF_ENG_H

#include <stdint.h>

#include <eng/dns.h>

#include "spf/spf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TXT bytes of one answer kept; more are cut (a record that long is a permerror anyway). */
#define POL_SPF_ENG_TXT_BYTES 65536u

struct pol_spf_eng_scratch {
    struct pol_spf_rr rrs[ENG_DNS_RRS_MAX];
    char txt[POL_SPF_ENG_TXT_BYTES];
};

struct pol_spf_eng_stats {
    uint64_t lookups; /* handed to the DNS client */
    uint64_t refused; /* the DNS client refused them (-ENOBUFS, ...) */
    uint64_t txt_cut; /* answers whose TXT data did not fit the scratch */
};

struct pol_spf_eng {
    struct eng_dns_op op;
    struct eng_dns *dns;
    struct pol_spf_eng_scratch *scratch;
    struct pol_spf_eng_stats *stats;
    pol_spf_lookup_done_fn *done;
    void *ctx;
    bool busy;
};

/* Prepares a for evaluations on dns (NULL: every lookup fails as a DNS error). */
void pol_spf_eng_init(struct pol_spf_eng *a, struct eng_dns *dns,
                      struct pol_spf_eng_scratch *scratch, struct pol_spf_eng_stats *stats);
/* The resolver interface for pol_spf_eval_start. */
struct pol_spf_resolver pol_spf_eng_resolver(struct pol_spf_eng *a);

#ifdef __cplusplus
}
#endif

#endif
