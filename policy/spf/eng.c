/*
 * spf/eng.c: the SPF evaluator's resolver interface on eng_dns (see spf_eng.h).
 *
 * The evaluator has at most one lookup out (asserted through busy). Answer statuses map as
 * RFC 7208 wants them: OK and NODATA are answers (NODATA counts as void), NXDOMAIN is
 * NXDOMAIN, SERVFAIL and REFUSED are server failures, a timeout is a timeout, and a bad name,
 * a malformed answer or a cancelled query is a DNS error; all failures become temperror in the
 * evaluator.
 */
#include "spf/spf_eng.h"

#include <errno.h>
#include <string.h>

#include <eng/assert.h>

void pol_spf_eng_init(struct pol_spf_eng *a, struct eng_dns *dns,
                      struct pol_spf_eng_scratch *scratch, struct pol_spf_eng_stats *stats)
{
    ENG_ASSERT(scratch != NULL && stats != NULL);
    memset(a, 0, sizeof *a);
    a->dns = dns;
    a->scratch = scratch;
    a->stats = stats;
}

static uint16_t qtype_of(enum pol_spf_rr_type t)
{
    switch (t) {
    case POL_SPF_RR_A:
        return ENG_DNS_T_A;
    case POL_SPF_RR_AAAA:
        return ENG_DNS_T_AAAA;
    case POL_SPF_RR_MX:
        return ENG_DNS_T_MX;
    case POL_SPF_RR_PTR:
        return ENG_DNS_T_PTR;
    case POL_SPF_RR_TXT:
        return ENG_DNS_T_TXT;
    }
    ENG_ASSERT(!"unknown record type");
    return 0;
}

static enum pol_spf_rcode rcode_of(enum eng_dns_status st)
{
    switch (st) {
    case ENG_DNS_OK:
    case ENG_DNS_NODATA:
        return POL_SPF_DNS_OK;
    case ENG_DNS_NXDOMAIN:
        return POL_SPF_DNS_NXDOMAIN;
    case ENG_DNS_SERVFAIL:
    case ENG_DNS_REFUSED:
        return POL_SPF_DNS_SERVFAIL;
    case ENG_DNS_TIMEOUT:
        return POL_SPF_DNS_TIMEOUT;
    default:
        return POL_SPF_DNS_ERROR;
    }
}

/* A name in presentation form without its trailing dot ("" for the root). */
static void rr_name(struct pol_spf_rr *out, const char *name)
{
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.')
        n--;
    out->data = name;
    out->len = n;
}

/* The records of ans in the evaluator's form, in a->scratch. Returns the count. */
static size_t convert(struct pol_spf_eng *a, const struct eng_dns_answer *ans)
{
    struct pol_spf_eng_scratch *s = a->scratch;
    size_t count = 0, txt_used = 0;
    for (uint32_t i = 0; i < ans->count && count < ENG_DNS_RRS_MAX; i++) {
        const struct eng_dns_rr *rr = &ans->rrs[i];
        struct pol_spf_rr *o = &s->rrs[count];
        switch (rr->type) {
        case ENG_DNS_T_A:
            o->data = (const char *)&rr->u.a;
            o->len = 4;
            break;
        case ENG_DNS_T_AAAA:
            o->data = (const char *)&rr->u.aaaa;
            o->len = 16;
            break;
        case ENG_DNS_T_MX:
            rr_name(o, rr->u.mx.exchange);
            break;
        case ENG_DNS_T_PTR:
            rr_name(o, rr->u.name);
            break;
        case ENG_DNS_T_TXT: {
            size_t pos = 0, len;
            const unsigned char *p;
            o->data = s->txt + txt_used;
            o->len = 0;
            while (eng_dns_txt_next(rr, &pos, &p, &len)) {
                if (len > POL_SPF_ENG_TXT_BYTES - txt_used) {
                    len = POL_SPF_ENG_TXT_BYTES - txt_used;
                    a->stats->txt_cut++;
                }
                memcpy(s->txt + txt_used, p, len);
                txt_used += len;
                o->len += len;
            }
            break;
        }
        default:
            continue; /* not the asked type: eng_dns delivers only that one */
        }
        count++;
    }
    return count;
}

static void eng_done(void *ctx, const struct eng_dns_answer *ans)
{
    struct pol_spf_eng *a = ctx;
    ENG_ASSERT(a->busy);
    a->busy = false;
    struct pol_spf_answer out = {rcode_of(ans->status), NULL, a->scratch->rrs, 0};
    if (out.rcode == POL_SPF_DNS_OK)
        out.count = convert(a, ans);
    else if (out.rcode == POL_SPF_DNS_SERVFAIL || out.rcode == POL_SPF_DNS_ERROR)
        out.rcode_text = eng_dns_status_name(ans->status);
    a->done(a->ctx, &out);
}

static int eng_lookup(void *impl, enum pol_spf_rr_type type, const char *name,
                      pol_spf_lookup_done_fn *done, void *ctx)
{
    struct pol_spf_eng *a = impl;
    ENG_ASSERT(!a->busy);
    if (a->dns == NULL)
        return -ENODEV;
    a->done = done;
    a->ctx = ctx;
    a->busy = true;
    int rc = eng_dns_query(a->dns, &a->op, name, strlen(name), qtype_of(type), eng_done, a);
    if (rc < 0) {
        a->busy = false;
        a->stats->refused++;
        return rc;
    }
    a->stats->lookups++;
    return 0;
}

struct pol_spf_resolver pol_spf_eng_resolver(struct pol_spf_eng *a)
{
    struct pol_spf_resolver r = {eng_lookup, a};
    return r;
}
