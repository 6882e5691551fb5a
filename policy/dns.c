/*
 * dns.c: DNS for plugins (pol/dns.h): the shard's shared resolver client, mtpolicyd's
 * blocklist lookup with its per-mail cache, and Net::DNS's and Perl's text rules.
 *
 * Owns, per shard thread, a few slots (one per distinct dns_servers value alive on the shard,
 * normally one) each holding an eng_dns client and how many plugins use it; the first attach
 * creates the client, the last detach logs its counters and destroys it. The slots are
 * thread-local because a shard is one thread and they are touched only at shard start and
 * stop; no lock, no sharing.
 *
 * A lookup (pol_dns_list_lookup) runs inside a step: A query, then TXT query when listed, each
 * completion on the request's shard storing into the request's state and, at the end, resuming
 * the chain; the step that follows stores the outcome in the session (Perl's do_cached stores
 * "not listed" too) and hands it back. The session value is text: "" (not listed), "ADDR"
 * (listed, no TXT) or "ADDR INFO" (listed; INFO may be empty).
 *
 * Net::DNS's TXT presentation is in dns_text.c (pure, fuzzed); pol_dns_reply_expand here
 * copies Perl's print to a handle without layers; tests compare both with Perl itself.
 */
#include "pol/dns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"
#include "eng/log.h"
#include "metrics.h"
#include "server.h"

/* Distinct resolver configurations alive on one shard at once (a reload would add one). */
#define CLIENTS_PER_SHARD_MAX 4u

enum list_phase {
    LIST_IDLE = 0,
    LIST_A,     /* the A query is out */
    LIST_TXT,   /* the TXT query is out */
    LIST_DONE,  /* both came back; the next call stores and returns */
    LIST_NOMEM, /* the request arena could not hold the info text */
};

/* ---------------------------------------------------------------------------------------------
 * The shard's clients
 */

struct client_slot {
    struct eng_shard *sh;
    struct eng_dns *dns;
    unsigned users;
    char servers[1024]; /* "" : the system resolver */
};

static _Thread_local struct client_slot tl_slots[CLIENTS_PER_SHARD_MAX];

/* /metrics: one source per client, labelled by its dns_servers value ("system": the system
 * resolver). */
enum {
    DM_QUERIES,
    DM_SENT,
    DM_CACHE_HITS,
    DM_DEDUP,
    DM_TIMEOUTS,
    DM_ERRORS,
    DM_QUEUE_FULL,
    DM_CACHE_ENTRIES,
    DM_INFLIGHT,
    DM_COUNT
};
static const struct pol_metrics_field dns_fields[DM_COUNT] = {
    [DM_QUERIES] = {"ringpolicyd_dns_queries_total", "DNS queries asked by plugins.", false, false},
    [DM_SENT] = {"ringpolicyd_dns_sent_total",
                 "DNS queries sent to the servers (cache and in-flight joins missed).", false,
                 false},
    [DM_CACHE_HITS] = {"ringpolicyd_dns_cache_hits_total", "DNS queries answered from the cache.",
                       false, false},
    [DM_DEDUP] = {"ringpolicyd_dns_dedup_joins_total",
                  "DNS queries that joined the same query already in flight.", false, false},
    [DM_TIMEOUTS] = {"ringpolicyd_dns_timeouts_total", "DNS queries that timed out.", false, false},
    [DM_ERRORS] = {"ringpolicyd_dns_errors_total",
                   "DNS queries failed (SERVFAIL, REFUSED, bad name, other errors).", false, false},
    [DM_QUEUE_FULL] = {"ringpolicyd_dns_queue_full_total",
                       "DNS queries refused because the client's queue was full.", false, false},
    [DM_CACHE_ENTRIES] = {"ringpolicyd_dns_cache_entries", "DNS answers cached now.", true, false},
    [DM_INFLIGHT] = {"ringpolicyd_dns_inflight", "DNS queries in flight now.", true, false},
};
static const struct pol_metrics_source_desc dns_metrics = {"servers", dns_fields, DM_COUNT};

static void dns_snap(void *ctx, uint64_t *v)
{
    const struct client_slot *s = ctx;
    struct eng_dns_stats st;
    if (!s->dns)
        return;
    eng_dns_stats_get(s->dns, &st);
    v[DM_QUERIES] = st.queries;
    v[DM_SENT] = st.sent;
    v[DM_CACHE_HITS] = st.cache_hits;
    v[DM_DEDUP] = st.dedup_hits;
    v[DM_TIMEOUTS] = st.answers[ENG_DNS_TIMEOUT];
    v[DM_ERRORS] = st.answers[ENG_DNS_SERVFAIL] + st.answers[ENG_DNS_REFUSED] +
                   st.answers[ENG_DNS_ERROR] + st.answers[ENG_DNS_BADNAME];
    v[DM_QUEUE_FULL] = st.queue_full;
    v[DM_CACHE_ENTRIES] = st.cache_entries;
    v[DM_INFLIGHT] = st.inflight;
}

static const char *servers_of(const struct pol_plugin *p)
{
    const char *s = p->srv ? p->srv->g.dns_servers : NULL;
    return s ? s : "";
}

int pol_dns_attach(struct pol_plugin *p, struct eng_shard *sh, struct eng_dns **out, char *err,
                   size_t err_len)
{
    ENG_ASSERT(p != NULL);
    *out = NULL;
    if (sh == NULL)
        return 0;
    const char *servers = servers_of(p);
    struct client_slot *free_slot = NULL;
    for (unsigned i = 0; i < CLIENTS_PER_SHARD_MAX; i++) {
        struct client_slot *s = &tl_slots[i];
        if (s->users > 0 && s->sh == sh && strcmp(s->servers, servers) == 0) {
            s->users++;
            *out = s->dns;
            return 0;
        }
        if (s->users == 0 && !free_slot)
            free_slot = s;
    }
    if (!free_slot || strlen(servers) >= sizeof(free_slot->servers)) {
        snprintf(err, err_len, "too many DNS configurations on one shard");
        return -1;
    }
    struct eng_dns_config cfg;
    eng_dns_config_defaults(&cfg);
    cfg.servers = servers;
    if (p->srv) {
        cfg.cache_entries_max = p->srv->g.dns_cache_entries;
        cfg.cache_bytes_max = p->srv->g.dns_cache_bytes;
    }
    if (eng_dns_create(sh, &cfg, &free_slot->dns, err, err_len) != 0)
        return -1;
    free_slot->sh = sh;
    free_slot->users = 1;
    snprintf(free_slot->servers, sizeof(free_slot->servers), "%s", servers);
    if (pol_metrics_source_add(&dns_metrics, servers[0] ? servers : "system", dns_snap,
                               free_slot) != 0)
        eng_log(ENG_LOG_WARNING, "dns: no room for its metrics on shard %u", eng_shard_index(sh));
    *out = free_slot->dns;
    return 0;
}

static void client_log_stats(const struct client_slot *s)
{
    struct eng_dns_stats st;
    eng_dns_stats_get(s->dns, &st);
    eng_log(ENG_LOG_NOTICE,
            "shard %u dns: %llu queries, %llu sent, %llu cache hits, %llu shared in flight, "
            "%llu timeouts, %llu failed, %llu refused (queue full), %llu cached answers "
            "(%llu bytes), %llu evicted",
            eng_shard_index(s->sh), (unsigned long long)st.queries, (unsigned long long)st.sent,
            (unsigned long long)st.cache_hits, (unsigned long long)st.dedup_hits,
            (unsigned long long)st.answers[ENG_DNS_TIMEOUT],
            (unsigned long long)(st.answers[ENG_DNS_SERVFAIL] + st.answers[ENG_DNS_REFUSED] +
                                 st.answers[ENG_DNS_ERROR] + st.answers[ENG_DNS_BADNAME]),
            (unsigned long long)st.queue_full, (unsigned long long)st.cache_entries,
            (unsigned long long)st.cache_bytes, (unsigned long long)st.cache_evictions);
}

void pol_dns_detach(struct pol_plugin *p, struct eng_shard *sh, struct eng_dns *dns)
{
    (void)p;
    if (dns == NULL)
        return;
    for (unsigned i = 0; i < CLIENTS_PER_SHARD_MAX; i++) {
        struct client_slot *s = &tl_slots[i];
        if (s->users == 0 || s->sh != sh || s->dns != dns)
            continue;
        if (--s->users == 0) {
            pol_metrics_source_remove(s);
            client_log_stats(s);
            eng_dns_destroy(s->dns);
            memset(s, 0, sizeof(*s));
        }
        return;
    }
    ENG_ASSERT(!"pol_dns_detach: client not attached on this shard");
}

int pol_dns_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                        size_t err_len)
{
    struct eng_dns *dns = NULL;
    int rc = pol_dns_attach(p, sh, &dns, err, err_len);
    *shard_data = dns;
    return rc;
}

void pol_dns_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    pol_dns_detach(p, sh, shard_data);
}

/* ---------------------------------------------------------------------------------------------
 * Blocklist lookups
 */

static void list_finish(struct pol_dns_list *l, enum list_phase phase)
{
    l->phase = phase;
    pol_req_resume(l->r);
}

static void list_txt_done(void *ctx, const struct eng_dns_answer *ans)
{
    struct pol_dns_list *l = ctx;
    ENG_ASSERT(l->phase == LIST_TXT);
    if (ans->status != ENG_DNS_OK) { /* Mail::RBL: no TXT record, no info */
        list_finish(l, LIST_DONE);
        return;
    }
    const struct eng_dns_rr *rr = &ans->rrs[0];
    size_t cap = pol_dns_txt_rdstring_bytes(rr->rdata_len);
    char *info = pol_req_alloc(l->r, cap + 1);
    if (!info) {
        list_finish(l, LIST_NOMEM);
        return;
    }
    l->info_len = pol_dns_txt_rdstring(rr->rdata, rr->rdata_len, info, cap);
    info[l->info_len] = '\0';
    l->info = info;
    list_finish(l, LIST_DONE);
}

static void list_a_done(void *ctx, const struct eng_dns_answer *ans)
{
    struct pol_dns_list *l = ctx;
    ENG_ASSERT(l->phase == LIST_A);
    if (ans->status != ENG_DNS_OK) { /* NXDOMAIN, NODATA, SERVFAIL, timeout...: not listed */
        list_finish(l, LIST_DONE);
        return;
    }
    ENG_ASSERT(ans->count > 0);
    const unsigned char *a = (const unsigned char *)&ans->rrs[0].u.a;
    snprintf(l->addr, sizeof(l->addr), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    l->listed = true;
    l->phase = LIST_TXT;
    if (eng_dns_query(l->dns, &l->op, l->name, l->name_len, ENG_DNS_T_TXT, list_txt_done, l) != 0)
        list_finish(l, LIST_DONE); /* the resolver is full: as a failed TXT query, no info */
}

static struct eng_dns *client_of(const struct pol_plugin *p, const struct eng_shard *sh)
{
    const char *servers = servers_of(p);
    for (unsigned i = 0; sh && i < CLIENTS_PER_SHARD_MAX; i++) {
        const struct client_slot *s = &tl_slots[i];
        if (s->users > 0 && s->sh == sh && strcmp(s->servers, servers) == 0)
            return s->dns;
    }
    return NULL;
}

struct eng_dns *pol_dns_client(const struct pol_plugin *p, const struct pol_req *r)
{
    return client_of(p, pol_req_shard(r));
}

bool pol_dns_list_cached(struct pol_req *r, const char *key, struct pol_dns_list_result *res)
{
    size_t len = 0;
    const char *v = pol_session_get(r, key, &len);
    memset(res, 0, sizeof(*res));
    if (!v)
        return false;
    if (len == 0)
        return true; /* looked up, not listed */
    const char *sp = memchr(v, ' ', len);
    res->listed = true;
    res->addr = sp ? pol_req_strndup(r, v, (size_t)(sp - v)) : v;
    if (!res->addr) /* the arena is full: keep the address only if it stands alone */
        res->addr = "";
    if (sp) {
        res->info = sp + 1;
        res->info_len = len - (size_t)(sp - v) - 1;
    }
    return true;
}

/* Stores the finished lookup under key and fills res. */
static enum pol_step list_store(struct pol_req *r, struct pol_dns_list *l, const char *key,
                                struct pol_dns_list_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!l->listed) {
        if (pol_session_set(r, key, "", 0) != 0)
            return pol_req_fail(r, "cannot store session key %s: out of memory", key);
        return POL_NEXT;
    }
    char *addr = pol_req_strndup(r, l->addr, strlen(l->addr));
    char *v = l->info ? pol_req_printf(r, "%s %s", l->addr, l->info) : addr;
    if (!addr || !v)
        return pol_req_fail(r, "no memory left in the request arena for the DNS answer");
    if (pol_session_set(r, key, v, strlen(v)) != 0)
        return pol_req_fail(r, "cannot store session key %s: out of memory", key);
    res->listed = true;
    res->addr = addr;
    res->info = l->info;
    res->info_len = l->info_len;
    return POL_NEXT;
}

/* ---------------------------------------------------------------------------------------------
 * Net::DNS's reading of a query name (Net::DNS::Domain->new, 1.36, without IDN libraries)
 */

/* Appends s[0..len) to out with every `from` (2 bytes) written as `to` (4 bytes). */
static size_t disguise(const char *s, size_t len, char *out, char second, const char *to)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len && s[i + 1] == second) {
            memcpy(out + o, to, 4);
            o += 4;
            i++;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* Longest name read the Net::DNS way; a longer one is never sent (the DNS refuses it too). */
#define PERL_NAME_MAX (4u * ENG_DNS_NAME_BYTES_MAX)
/* Disguising doubles a name at most twice; Encode's utf8 doubles it once more. */
#define PERL_DISGUISED_MAX (4u * PERL_NAME_MAX)
#define PERL_ENCODED_MAX (2u * PERL_DISGUISED_MAX)

/* One label of the disguised name: Encode's utf8 encoding of a byte string (bytes above 0x7F
 * become two), then the numeric escapes \DDD (a value above 255 vanishes, \092 is two
 * backslashes) and the character escapes \X. Returns the label's length in out (room:
 * PERL_ENCODED_MAX). */
static size_t label_unescape(const char *s, size_t len, unsigned char *out)
{
    unsigned char enc[PERL_ENCODED_MAX];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            enc[n++] = c;
        } else {
            enc[n++] = (unsigned char)(0xC0u | (c >> 6));
            enc[n++] = (unsigned char)(0x80u | (c & 0x3Fu));
        }
    }
    size_t m = 0; /* numeric escapes, in place: the text only shrinks */
    for (size_t i = 0; i < n; i++) {
        bool numeric = enc[i] == '\\' && i + 3 < n && enc[i + 1] >= '0' && enc[i + 1] <= '9' &&
                       enc[i + 2] >= '0' && enc[i + 2] <= '9' && enc[i + 3] >= '0' &&
                       enc[i + 3] <= '9';
        if (!numeric) {
            enc[m++] = enc[i];
            continue;
        }
        unsigned v = (enc[i + 1] - '0') * 100u + (enc[i + 2] - '0') * 10u + (enc[i + 3] - '0');
        i += 3;
        if (v == 92) {
            enc[m++] = '\\';
            enc[m++] = '\\';
        } else if (v <= 255) {
            enc[m++] = (unsigned char)v;
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < m; i++) {
        if (enc[i] == '\\' && i + 1 < m && enc[i + 1] != '\n')
            i++;
        out[o++] = enc[i];
    }
    return o;
}

/* Reads name as Net::DNS would (escaped backslashes and dots disguised, split at dots with
 * trailing empty fields dropped, each label unescaped) and writes it for c-ares, which knows
 * only \X escapes: label octets raw, dots and backslashes escaped. Returns the length, or -1
 * with Net::DNS's complaint in err ("empty label in ...", "label too long in ...") when it
 * would croak, or -2 when c-ares cannot carry the name (a NUL octet, too long). */
static int perl_qname(const char *name, size_t len, char *out, size_t out_len, char *err,
                      size_t err_len)
{
    if (len > PERL_NAME_MAX)
        return -2; /* Net::DNS sends it; the server refuses a name that long anyway */
    char d1[2 * PERL_NAME_MAX], d[PERL_DISGUISED_MAX];
    unsigned char label[PERL_ENCODED_MAX];
    size_t n1 = disguise(name, len, d1, '\\', "\\092");
    size_t n = disguise(d1, n1, d, '.', "\\046"), shown = n;
    while (n > 0 && d[n - 1] == '.') /* split drops trailing empty fields */
        n--;
    size_t o = 0, start = 0;
    for (size_t i = 0; i <= n && n > 0; i++) {
        if (i < n && d[i] != '.')
            continue;
        if (i == start) {
            snprintf(err, err_len, "empty label in \"%.*s\"", (int)shown, d);
            return -1;
        }
        size_t l = label_unescape(d + start, i - start, label);
        if (l > 63) {
            snprintf(err, err_len, "label too long in \"%.*s\"", (int)shown, d);
            return -1;
        }
        if (o > 0)
            out[o++] = '.';
        for (size_t k = 0; k < l; k++) {
            if (label[k] == '\0' || o + 3 > out_len)
                return -2;
            if (label[k] == '.' || label[k] == '\\')
                out[o++] = '\\';
            out[o++] = (char)label[k];
        }
        start = i + 1;
    }
    if (o + 1 > out_len)
        return -2;
    out[o] = '\0';
    return (int)o;
}

/* Starts the A query: POL_WAIT; or POL_NEXT with l->phase LIST_DONE and nothing listed when
 * the name cannot be sent at all (a lookup of it fails, so it is not listed); or POL_FAIL. */
static enum pol_step list_start(struct pol_plugin *p, struct pol_req *r, struct pol_dns_list *l,
                                const char *name, size_t name_len)
{
    struct eng_dns *dns = client_of(p, pol_req_shard(r));
    if (!dns)
        return pol_req_fail(r, "DNS lookups need the daemon's shards");
    char why[2 * PERL_NAME_MAX];
    size_t cap = 2 * ENG_DNS_NAME_BYTES_MAX + 2;
    char *qname = pol_req_alloc(r, cap);
    if (!qname)
        return pol_req_fail(r, "no memory left in the request arena for the DNS name");
    int qlen = perl_qname(name, name_len, qname, cap, why, sizeof(why));
    if (qlen == -1)
        return pol_req_fail(r, "%s", why); /* Net::DNS croaks: the plugin fails in 2.05 */
    l->dns = dns;
    l->r = r;
    l->name = qname;
    l->name_len = qlen < 0 ? 0 : (size_t)qlen;
    l->listed = false;
    l->addr[0] = '\0';
    l->info = NULL;
    l->info_len = 0;
    if (qlen < 0) {
        l->phase = LIST_DONE;
        return POL_NEXT;
    }
    l->phase = LIST_A;
    int rc = eng_dns_query(dns, &l->op, l->name, l->name_len, ENG_DNS_T_A, list_a_done, l);
    if (rc != 0) {
        l->phase = LIST_IDLE;
        return pol_req_fail(r, "cannot queue the DNS query for %.*s: %s", (int)name_len, name,
                            strerror(-rc));
    }
    return POL_WAIT;
}

enum pol_step pol_dns_list_lookup(struct pol_plugin *p, struct pol_req *r, struct pol_dns_list *l,
                                  const char *key, const char *name, size_t name_len,
                                  struct pol_dns_list_result *res)
{
    ENG_ASSERT(l != NULL);
    ENG_ASSERT(key != NULL);
    switch ((enum list_phase)l->phase) {
    case LIST_IDLE:
        if (pol_dns_list_cached(r, key, res))
            return POL_NEXT;
        enum pol_step st = list_start(p, r, l, name, name_len);
        if (st != POL_NEXT)
            return st;
        l->phase = LIST_IDLE;
        return list_store(r, l, key, res);
    case LIST_DONE:
        l->phase = LIST_IDLE;
        return list_store(r, l, key, res);
    case LIST_NOMEM:
        l->phase = LIST_IDLE;
        return pol_req_fail(r, "no memory left in the request arena for the DNS answer");
    case LIST_A:
    case LIST_TXT:
        break;
    }
    ENG_ASSERT(!"pol_dns_list_lookup called while its lookup is in flight");
    return POL_FAIL;
}

/* ---------------------------------------------------------------------------------------------
 * What Perl prints
 */

/* A character above U+00FF: in the internal form, a lead byte from 0xC4 on. */
static bool internal_wide(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0xC4)
            return true;
    return false;
}

/* Internal form to one byte per character (every character is below U+0100). */
static char *internal_to_latin1(struct pol_req *r, const char *s)
{
    size_t len = strlen(s);
    char *out = pol_req_alloc(r, len + 1);
    size_t o = 0;
    for (size_t i = 0; out && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c == 0xC2 || c == 0xC3) && i + 1 < len) {
            out[o++] = (char)(((c & 0x1Fu) << 6) | ((unsigned char)s[++i] & 0x3Fu));
        } else {
            out[o++] = (char)c;
        }
    }
    if (out)
        out[o] = '\0';
    return out;
}

/* A byte string as Perl upgrades it: bytes above 0x7F become two-byte UTF-8. */
static char *bytes_to_utf8(struct pol_req *r, const char *s)
{
    size_t len = strlen(s);
    char *out = pol_req_alloc(r, 2 * len + 1);
    size_t o = 0;
    for (size_t i = 0; out && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            out[o++] = (char)c;
        } else {
            out[o++] = (char)(0xC0u | (c >> 6));
            out[o++] = (char)(0x80u | (c & 0x3Fu));
        }
    }
    if (out)
        out[o] = '\0';
    return out;
}

char *pol_dns_reply_expand(struct pol_req *r, const char *tmpl, const struct pol_tvar *vars,
                           size_t var_count, size_t info_idx)
{
    if (info_idx >= var_count || !vars[info_idx].value)
        return pol_template_expand(r, tmpl, vars, var_count);
    struct pol_tvar *v = pol_req_alloc(r, var_count * sizeof(*v));
    if (!v)
        return NULL;
    memcpy(v, vars, var_count * sizeof(*v));
    bool wide = internal_wide(vars[info_idx].value);
    if (!wide) {
        v[info_idx].value = internal_to_latin1(r, vars[info_idx].value);
        if (!v[info_idx].value)
            return NULL;
        return pol_template_expand(r, tmpl, v, var_count);
    }
    tmpl = bytes_to_utf8(r, tmpl);
    for (size_t i = 0; tmpl && i < var_count; i++) {
        if (i == info_idx || !v[i].value)
            continue;
        if (!(v[i].value = bytes_to_utf8(r, v[i].value)))
            return NULL;
    }
    return tmpl ? pol_template_expand(r, tmpl, v, var_count) : NULL;
}
