/*
 * reqgen.c: the Postfix 3.7 request generator (see reqgen.h for what it models).
 *
 * Randomness is splitmix64: fast, seedable, and good enough to spread clients and recipients.
 * Per-client properties (address, names, sender domain) are derived from a hash of the client's
 * pool index, so a client keeps its identity from mail to mail the way real senders do.
 */
#include "reqgen.h"

#include <stdio.h>
#include <string.h>

#include "bench_assert.h"

_Static_assert(BENCH_REQGEN_RCPT_MAX >= 1, "a mail has at least one recipient");

static const char *const rcpt_domains[] = {"example.com", "example.net", "example.org"};
static const char *const client_domains[] = {"mail.example", "isp.example", "bulk.example",
                                             "corp.example", "mx.example"};

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rng_next(struct bench_reqgen *g)
{
    g->rng += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(g->rng);
}

/* Uniform in [0, n). n > 0. The modulo bias is irrelevant at these sizes. */
static uint32_t rng_below(struct bench_reqgen *g, uint32_t n)
{
    BENCH_ASSERT(n > 0);
    return (uint32_t)(rng_next(g) % n);
}

void bench_reqgen_opts_default(struct bench_reqgen_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->rcpt_min = 1;
    o->rcpt_max = BENCH_REQGEN_RCPT_MAX;
    o->with_data = false;
    o->client_pool = 65536;
    o->hot_clients = 256;
    o->instance_epoch = 0x6b04e877u;
    o->policy_context = "";
}

void bench_reqgen_init(struct bench_reqgen *g, const struct bench_reqgen_opts *opts, uint64_t seed,
                       uint32_t stream_id)
{
    memset(g, 0, sizeof(*g));
    if (opts)
        g->opts = *opts;
    else
        bench_reqgen_opts_default(&g->opts);
    struct bench_reqgen_opts *o = &g->opts;
    if (o->rcpt_min < 1)
        o->rcpt_min = 1;
    if (o->rcpt_max > BENCH_REQGEN_RCPT_MAX)
        o->rcpt_max = BENCH_REQGEN_RCPT_MAX;
    if (o->rcpt_max < 1)
        o->rcpt_max = 1;
    if (o->rcpt_min > o->rcpt_max)
        o->rcpt_min = o->rcpt_max;
    if (o->client_pool < 1)
        o->client_pool = 1;
    if (o->hot_clients < 1 || o->hot_clients > o->client_pool)
        o->hot_clients = o->client_pool;
    snprintf(g->policy_context, sizeof(g->policy_context), "%s",
             o->policy_context ? o->policy_context : "");
    o->policy_context = NULL; /* the copy is used; the caller's string need not outlive us */
    g->seed = seed;
    g->stream_id = stream_id;
    g->rng = mix64(seed ^ mix64((uint64_t)stream_id + 1));
}

/* The client's address: IPv4 outside 0/8, 10/8, 127/8 and multicast, or (1 in 20 clients) an
 * IPv6 address in 2001:db8::/32. Only ever a value inside requests, never a connect target. */
static void client_address(uint64_t h, uint32_t client_idx, char *out, size_t out_len)
{
    if (client_idx % 20 == 19) {
        snprintf(out, out_len, "2001:db8:%x:%x::%x", (unsigned)(h >> 48),
                 (unsigned)(h >> 32) & 0xffff, (unsigned)h & 0xffff);
        return;
    }
    unsigned a = 1 + (unsigned)(h % 223); /* 1..223 */
    if (a == 10 || a == 127)
        a++;
    snprintf(out, out_len, "%u.%u.%u.%u", a, (unsigned)(h >> 8) & 0xff, (unsigned)(h >> 16) & 0xff,
             1 + (unsigned)((h >> 24) % 254));
}

/* Address, names and HELO of one client, derived from its pool index. */
static void mail_client(struct bench_reqgen *g, struct bench_mail *m)
{
    uint32_t idx =
        rng_below(g, 2) ? rng_below(g, g->opts.hot_clients) : rng_below(g, g->opts.client_pool);
    uint64_t h = mix64(g->seed ^ ((uint64_t)idx << 20) ^ UINT64_C(0xc1e47));
    if (g->opts.fresh_clients) {
        /* Unique per (stream, mail); idx only names things, so it only has to differ too. */
        h = mix64(g->seed ^ mix64(((uint64_t)g->stream_id << 40) ^ g->mail_count) ^
                  UINT64_C(0xf4e54));
        idx = (uint32_t)(h >> 8); /* 1 in 20 still IPv6 (client_address) */
    }
    client_address(h, idx, m->client_address, sizeof(m->client_address));
    const char *domain = client_domains[(h >> 40) % 5];
    unsigned kind = (unsigned)((h >> 44) % 10); /* 0: no rDNS, 1: not confirmed, else named */
    if (kind == 0)
        snprintf(m->reverse_client_name, sizeof(m->reverse_client_name), "unknown");
    else if (kind == 1)
        snprintf(m->reverse_client_name, sizeof(m->reverse_client_name), "host-%u.dyn.%s", idx,
                 domain);
    else
        snprintf(m->reverse_client_name, sizeof(m->reverse_client_name), "mx%u.%s",
                 g->opts.fresh_clients ? idx : idx % 97, domain);
    snprintf(m->client_name, sizeof(m->client_name), "%s",
             kind <= 1 ? "unknown" : m->reverse_client_name);
    unsigned helo = (unsigned)((h >> 52) % 5);
    if (helo == 0)
        snprintf(m->helo_name, sizeof(m->helo_name), "[%s]", m->client_address);
    else if (helo == 1 || kind <= 1)
        snprintf(m->helo_name, sizeof(m->helo_name), "smtp%u.%s", idx, domain);
    else
        snprintf(m->helo_name, sizeof(m->helo_name), "%s", m->reverse_client_name);
    m->client_port = 1024 + rng_below(g, 64000);
    /* 3% bounces (null sender); otherwise a user at a domain the client sends for. */
    if (rng_below(g, 100) < 3)
        m->sender[0] = '\0';
    else
        snprintf(m->sender, sizeof(m->sender), "u%u@d%u.%s", rng_below(g, 1000),
                 g->opts.fresh_clients ? idx : idx % 5000, domain);
}

/* Everything else: recipients, queue id, TLS, SASL, size. */
static void mail_envelope(struct bench_reqgen *g, struct bench_mail *m)
{
    m->rcpt_count = g->opts.rcpt_min + rng_below(g, g->opts.rcpt_max - g->opts.rcpt_min + 1);
    for (uint32_t i = 0; i < m->rcpt_count; i++)
        snprintf(m->recipient[i], sizeof(m->recipient[i]), "r%u@%s", rng_below(g, 10000),
                 rcpt_domains[rng_below(g, 3)]);
    snprintf(m->queue_id, sizeof(m->queue_id), "%010llX",
             (unsigned long long)(rng_next(g) & UINT64_C(0xffffffffff)));
    snprintf(m->protocol_name, sizeof(m->protocol_name), "%s",
             rng_below(g, 100) < 97 ? "ESMTP" : "SMTP");
    unsigned tls = rng_below(g, 10);
    const char *proto = tls < 7 ? "TLSv1.3" : tls < 8 ? "TLSv1.2" : "";
    const char *cipher = tls < 7   ? "TLS_AES_256_GCM_SHA384"
                         : tls < 8 ? "ECDHE-RSA-AES256-GCM-SHA384"
                                   : "";
    snprintf(m->encryption_protocol, sizeof(m->encryption_protocol), "%s", proto);
    snprintf(m->encryption_cipher, sizeof(m->encryption_cipher), "%s", cipher);
    m->encryption_keysize = tls < 8 ? 256 : 0;
    bool sasl = rng_below(g, 100) < 5;
    snprintf(m->sasl_method, sizeof(m->sasl_method), "%s", sasl ? "PLAIN" : "");
    if (sasl)
        snprintf(m->sasl_username, sizeof(m->sasl_username), "user%u", rng_below(g, 500));
    else
        m->sasl_username[0] = '\0';
    /* Sizes from about 1 KB to 3 MB, most of them small. */
    m->size = ((uint64_t)800 << rng_below(g, 12)) + rng_below(g, 1000);
    m->size_param = rng_below(g, 100) < 40 ? m->size : 0;
}

struct writer {
    char *p;
    size_t left;
    bool overflow;
};

/* name=value\n; w->overflow is sticky, so a request is checked once at the end. */
static void w_attr(struct writer *w, const char *name, const char *value)
{
    size_t name_len = strlen(name), value_len = strlen(value);
    size_t need = name_len + 1 + value_len + 1;
    if (w->overflow || need > w->left) {
        w->overflow = true;
        return;
    }
    memcpy(w->p, name, name_len);
    w->p[name_len] = '=';
    memcpy(w->p + name_len + 1, value, value_len);
    w->p[need - 1] = '\n';
    w->p += need;
    w->left -= need;
}

static void w_attr_u(struct writer *w, const char *name, uint64_t value)
{
    char num[24];
    char *p = num + sizeof(num) - 1;
    *p = '\0';
    do
        *--p = (char)('0' + value % 10);
    while ((value /= 10) != 0);
    w_attr(w, name, p);
}

static void w_raw(struct writer *w, const char *s, size_t len)
{
    if (w->overflow || len > w->left) {
        w->overflow = true;
        return;
    }
    memcpy(w->p, s, len);
    w->p += len;
    w->left -= len;
}

/* Renders the per-mail constant lines (see struct bench_mail). */
static void mail_render_fixed(const struct bench_reqgen *g, struct bench_mail *m)
{
    struct writer w = {.p = m->fixed_head, .left = sizeof(m->fixed_head), .overflow = false};
    w_attr(&w, "protocol_name", m->protocol_name);
    w_attr(&w, "client_address", m->client_address);
    w_attr(&w, "client_name", m->client_name);
    w_attr_u(&w, "client_port", m->client_port);
    w_attr(&w, "reverse_client_name", m->reverse_client_name);
    w_attr(&w, "server_address", "192.0.2.25");
    w_attr(&w, "server_port", "25");
    w_attr(&w, "helo_name", m->helo_name);
    w_attr(&w, "sender", m->sender);
    BENCH_ASSERT(!w.overflow);
    m->fixed_head_len = (uint32_t)(sizeof(m->fixed_head) - w.left);
    w = (struct writer){.p = m->fixed_tail, .left = sizeof(m->fixed_tail), .overflow = false};
    w_attr(&w, "etrn_domain", "");
    w_attr(&w, "stress", "");
    w_attr(&w, "sasl_method", m->sasl_method);
    w_attr(&w, "sasl_username", m->sasl_username);
    w_attr(&w, "sasl_sender", "");
    w_attr(&w, "ccert_subject", "");
    w_attr(&w, "ccert_issuer", "");
    w_attr(&w, "ccert_fingerprint", "");
    w_attr(&w, "ccert_pubkey_fingerprint", "");
    w_attr(&w, "encryption_protocol", m->encryption_protocol);
    w_attr(&w, "encryption_cipher", m->encryption_cipher);
    w_attr_u(&w, "encryption_keysize", m->encryption_keysize);
    w_attr(&w, "policy_context", g->policy_context);
    BENCH_ASSERT(!w.overflow);
    m->fixed_tail_len = (uint32_t)(sizeof(m->fixed_tail) - w.left);
}

static void mail_new(struct bench_reqgen *g)
{
    struct bench_mail *m = &g->mail;
    memset(m, 0, sizeof(*m));
    mail_client(g, m);
    mail_envelope(g, m);
    /* Postfix: pid.seconds.microseconds.counter, all hex. The stream id stands in for the pid,
     * which keeps instances unique across connections. */
    snprintf(m->instance, sizeof(m->instance), "%x.%llx.%x.%llx", 1000u + g->stream_id,
             (unsigned long long)(g->opts.instance_epoch + g->mail_count / 16), rng_below(g, 1000000),
             (unsigned long long)g->mail_count);
    mail_render_fixed(g, m);
    g->step_count = m->rcpt_count + (g->opts.with_data ? 1u : 0u) + 1u;
    g->step_idx = 0;
    g->mail_count++;
}

static enum bench_stage step_stage(const struct bench_reqgen *g, uint32_t step_idx)
{
    if (step_idx < g->mail.rcpt_count)
        return BENCH_STAGE_RCPT;
    if (g->opts.with_data && step_idx == g->mail.rcpt_count)
        return BENCH_STAGE_DATA;
    return BENCH_STAGE_EOM;
}

static const char *const stage_names[] = {"RCPT", "DATA", "END-OF-MESSAGE"};

/* The request for one step, in Postfix 3.7's attribute order: the lines that change between
 * the requests of a mail around the two pre-rendered blocks. */
static void write_request(const struct bench_reqgen *g, struct writer *w, uint32_t step_idx)
{
    static const char head[] = "request=smtpd_access_policy\n";
    const struct bench_mail *m = &g->mail;
    enum bench_stage stage = step_stage(g, step_idx);
    bool rcpt = stage == BENCH_STAGE_RCPT;
    w_raw(w, head, sizeof(head) - 1);
    w_attr(w, "protocol_state", stage_names[stage]);
    w_raw(w, m->fixed_head, m->fixed_head_len); /* protocol_name .. sender */
    w_attr(w, "recipient", rcpt ? m->recipient[step_idx] : "");
    w_attr_u(w, "recipient_count", rcpt ? 0 : m->rcpt_count);
    w_attr(w, "queue_id", step_idx == 0 ? "" : m->queue_id);
    w_attr(w, "instance", m->instance);
    w_attr_u(w, "size", stage == BENCH_STAGE_EOM ? m->size : m->size_param);
    w_raw(w, m->fixed_tail, m->fixed_tail_len); /* etrn_domain .. policy_context */
    w_raw(w, "\n", 1);
}

size_t bench_reqgen_next(struct bench_reqgen *g, char *buf, size_t cap, struct bench_req_info *info)
{
    BENCH_ASSERT(buf != NULL);
    if (g->step_idx == g->step_count)
        mail_new(g);
    BENCH_ASSERT(g->step_idx < g->step_count);
    struct writer w = {.p = buf, .left = cap, .overflow = false};
    write_request(g, &w, g->step_idx);
    if (w.overflow)
        return 0;
    size_t len = cap - w.left;
    BENCH_ASSERT(len <= BENCH_REQGEN_REQUEST_BYTES_MAX);
    if (info) {
        info->stage = step_stage(g, g->step_idx);
        info->step_idx = g->step_idx;
        info->step_count = g->step_count;
        info->rcpt_count = g->mail.rcpt_count;
        info->mail_idx = g->mail_count - 1;
    }
    g->step_idx++;
    return len;
}
