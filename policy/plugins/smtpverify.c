/*
 * smtpverify.c: the SMTPVerify plugin (spec 13.21): ask the mail server of an address whether
 * it accepts the address (an SMTP call-out), note STARTTLS, optionally look up TLSA for the
 * server and OPENPGPKEY for the address, and score or act on the outcome.
 *
 * Per request (a step that waits, POL_WAIT, for each DNS query and for the dialogue):
 * `enabled` (uc), then once per address and mail (flag `verify-ADDRESS`); the server is `host`
 * (an IP literal is used as it is, a name is resolved A then AAAA on the shard's DNS client),
 * else the lowest-preference MX of the address's domain, else the domain's own A/AAAA records
 * when it has no MX; a domain that resolves to nothing (or whose MX query fails) fails the
 * plugin (on_error decides), while an MX host that does not resolve, a null MX, a refused or
 * timed-out connection leave no reply code, so nothing happens, as in 2.05. The dialogue is
 * smtpverify_io.c's. Scores carry the labels NAME-ADDRESS[-starttls|-tlsa|-openpgp];
 * perm/temp_fail_action answer with %MSG% (first occurrence) = the reply's text.
 *
 * ringpolicyd's own options: helo_name (default: this host's name, as Net::SMTP::Verify),
 * timeout_ms (30000: the connect, as 2.05, and each reply; never past the request's deadline),
 * connections (64: dialogues at once per shard; a check beyond fails the plugin) and
 * reply_bytes_max (4096: one reply; a longer one closes the connection, logged and counted).
 *
 * Owns its definition (create .. destroy, main thread) and per shard a pol_smtpv_shard.
 * Known limits: no STARTTLS is started (2.05 only noted it too); `host` names and MX hosts
 * are resolved through DNS, not /etc/hosts; only the first address of the server is tried.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eng/assert.h>
#include <pol/dns.h>

#include "plugins/common.h"
#include "plugins/smtpverify.h"

enum {
    OPT_ENABLED,
    OPT_HOST,
    OPT_PORT,
    OPT_SENDER,
    OPT_SENDER_FIELD,
    OPT_RECIPIENT_FIELD,
    OPT_SIZE_FIELD,
    OPT_CHECK_TLSA,
    OPT_CHECK_OPENPGP,
    OPT_PERM_FAIL_ACTION,
    OPT_TEMP_FAIL_ACTION,
    OPT_PERM_FAIL_SCORE,
    OPT_TEMP_FAIL_SCORE,
    OPT_HAS_STARTTLS_SCORE,
    OPT_NO_STARTTLS_SCORE,
    OPT_HAS_TLSA_SCORE,
    OPT_NO_TLSA_SCORE,
    OPT_HAS_OPENPGP_SCORE,
    OPT_NO_OPENPGP_SCORE,
    OPT_HELO_NAME,
    OPT_TIMEOUT_MS,
    OPT_CONNECTIONS,
    OPT_REPLY_BYTES_MAX,
    OPT_COUNT,
};

static const struct pol_opt_def sv_opts[] = {
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
    [OPT_HOST] = {"host", POL_OPT_STRING, NULL, 0},
    [OPT_PORT] = {"port", POL_OPT_INT, "25", 0},
    [OPT_SENDER] = {"sender", POL_OPT_STRING, NULL, 0},
    [OPT_SENDER_FIELD] = {"sender_field", POL_OPT_STRING, "recipient", 0},
    [OPT_RECIPIENT_FIELD] = {"recipient_field", POL_OPT_STRING, "sender", 0},
    [OPT_SIZE_FIELD] = {"size_field", POL_OPT_STRING, "size", 0},
    [OPT_CHECK_TLSA] = {"check_tlsa", POL_OPT_STRING, "off", 0},
    [OPT_CHECK_OPENPGP] = {"check_openpgp", POL_OPT_STRING, "off", 0},
    [OPT_PERM_FAIL_ACTION] = {"perm_fail_action", POL_OPT_TEMPLATE, NULL, 0},
    [OPT_TEMP_FAIL_ACTION] = {"temp_fail_action", POL_OPT_TEMPLATE, NULL, 0},
    [OPT_PERM_FAIL_SCORE] = {"perm_fail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_TEMP_FAIL_SCORE] = {"temp_fail_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_HAS_STARTTLS_SCORE] = {"has_starttls_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_NO_STARTTLS_SCORE] = {"no_starttls_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_HAS_TLSA_SCORE] = {"has_tlsa_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_NO_TLSA_SCORE] = {"no_tlsa_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_HAS_OPENPGP_SCORE] = {"has_openpgp_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_NO_OPENPGP_SCORE] = {"no_openpgp_score", POL_OPT_NUMBER, NULL, 0},
    [OPT_HELO_NAME] = {"helo_name", POL_OPT_STRING, NULL, 0},
    [OPT_TIMEOUT_MS] = {"timeout_ms", POL_OPT_INT, "30000", 0},
    [OPT_CONNECTIONS] = {"connections", POL_OPT_INT, "64", 0},
    [OPT_REPLY_BYTES_MAX] = {"reply_bytes_max", POL_OPT_INT, "4096", 0},
};
_Static_assert(sizeof sv_opts / sizeof sv_opts[0] == OPT_COUNT, "one def per option");
_Static_assert(POL_SMTPV_REPLY_BYTES_DEFAULT == 4096u, "the option's default above");

#define SV_TIMEOUT_MS_MAX 600000
#define SV_CONNECTIONS_MAX 4096
#define SV_HELO_BYTES_MAX 255
#define SV_SHARD_BUF_BYTES_MAX (16 * 1024 * 1024) /* read buffers per plugin and shard */

struct sv_def {
    char helo[SV_HELO_BYTES_MAX + 1];
    struct pol_smtpv_limits lim;
    uint16_t port;
    bool host_literal; /* host is an IP address: addr holds it */
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

enum sv_phase {
    PH_START,
    PH_MX,
    PH_A,
    PH_AAAA,
    PH_TLSA,
    PH_OPENPGP,
    PH_CONNECT,
    PH_RESULT,
};

struct sv_req {
    struct eng_dns_op op;
    struct pol_smtpv_conn conn;
    struct pol_req *r;
    enum sv_phase phase;
    bool asked;    /* this phase's query or dialogue is out or done */
    bool answered; /* ... and its result is below */
    enum eng_dns_status dns_status;
    const char *address; /* the RCPT TO field's value as given: flag and labels */
    const char *rcpt, *mail_from;
    const char *local, *domain;
    size_t local_len, domain_len;
    const char *server;    /* host name (or literal) asked for TLSA and named in logs */
    const char *no_server; /* why there is no server to ask (a reason), else NULL */
    bool server_is_domain; /* no MX: a failed address lookup fails the plugin */
    bool size_known;
    long long size;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int8_t tlsa, openpgp; /* -1: not checked; 0/1 */
};

/* ---------------------------------------------------------------------------------------------
 * Start-up
 */

/* Parses an IPv4 or IPv6 literal (optionally in brackets) into out with port. */
static bool ip_literal(const char *s, uint16_t port, struct sockaddr_storage *out,
                       socklen_t *out_len)
{
    char buf[64];
    size_t len = strlen(s);
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *out_len = sizeof(*a4);
        return true;
    }
    if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *out_len = sizeof(*a6);
        return true;
    }
    return false;
}

/* A range check of an int option, naming where it was set. */
static bool int_in(const struct pol_plugin *p, unsigned idx, long long lo, long long hi, char *err,
                   size_t err_len)
{
    const struct pol_opt_value *v = pol_opt(p, idx);
    if (v->i >= lo && v->i <= hi)
        return true;
    snprintf(err, err_len, "%s must be %lld..%lld, not %s (%s:%u)", sv_opts[idx].name, lo, hi,
             v->text, v->file ? v->file : "default", v->line);
    return false;
}

static int sv_create(struct pol_plugin *p, char *err, size_t err_len)
{
    if (!int_in(p, OPT_PORT, 1, 65535, err, err_len) ||
        !int_in(p, OPT_TIMEOUT_MS, 1, SV_TIMEOUT_MS_MAX, err, err_len) ||
        !int_in(p, OPT_CONNECTIONS, 1, SV_CONNECTIONS_MAX, err, err_len) ||
        !int_in(p, OPT_REPLY_BYTES_MAX, POL_SMTPV_REPLY_BYTES_MIN, POL_SMTPV_REPLY_BYTES_MAX, err,
                err_len))
        return -1;
    /* Each shard holds one read buffer per connection (smtpverify_io.c). */
    long long bufs = pol_opt(p, OPT_CONNECTIONS)->i * pol_opt(p, OPT_REPLY_BYTES_MAX)->i;
    if (bufs > SV_SHARD_BUF_BYTES_MAX) {
        snprintf(err, err_len,
                 "connections (%lld) times reply_bytes_max (%lld) must be at most %d (%s:%u)",
                 pol_opt(p, OPT_CONNECTIONS)->i, pol_opt(p, OPT_REPLY_BYTES_MAX)->i,
                 SV_SHARD_BUF_BYTES_MAX,
                 pol_opt(p, OPT_CONNECTIONS)->file ? pol_opt(p, OPT_CONNECTIONS)->file
                                                   : pol_plugin_file(p),
                 pol_opt(p, OPT_CONNECTIONS)->file ? pol_opt(p, OPT_CONNECTIONS)->line
                                                   : pol_plugin_line(p));
        return -1;
    }
    const struct pol_opt_value *helo = pol_opt(p, OPT_HELO_NAME);
    const struct pol_opt_value *host = pol_opt(p, OPT_HOST);
    const struct pol_opt_value *sender = pol_opt(p, OPT_SENDER);
    if (helo->set && (helo->text_len == 0 || helo->text_len > SV_HELO_BYTES_MAX ||
                      !pol_smtpv_addr_ok(helo->text, helo->text_len))) {
        snprintf(err, err_len,
                 "helo_name must be 1..%d printable characters without < or > (%s:%u)",
                 SV_HELO_BYTES_MAX, helo->file, helo->line);
        return -1;
    }
    const char *from = sender->text;
    size_t from_len = pol_smtpv_addr_clean(&from, sender->text_len);
    if (sender->set && !pol_smtpv_addr_ok(from, from_len)) {
        snprintf(err, err_len, "sender must be an address without control characters (%s:%u)",
                 sender->file, sender->line);
        return -1;
    }
    if (host->set && (host->text_len == 0 || !pol_smtpv_addr_ok(host->text, host->text_len))) {
        snprintf(err, err_len, "host must be a host name or an IP address (%s:%u)", host->file,
                 host->line);
        return -1;
    }
    struct sv_def *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (helo->set)
        memcpy(d->helo, helo->text, helo->text_len);
    else if (gethostname(d->helo, sizeof(d->helo) - 1) != 0 || d->helo[0] == '\0')
        snprintf(d->helo, sizeof(d->helo), "localhost");
    d->port = (uint16_t)pol_opt(p, OPT_PORT)->i;
    d->host_literal = host->set && ip_literal(host->text, d->port, &d->addr, &d->addr_len);
    d->lim.timeout_ms = (uint32_t)pol_opt(p, OPT_TIMEOUT_MS)->i;
    d->lim.connections_max = (uint32_t)pol_opt(p, OPT_CONNECTIONS)->i;
    d->lim.reply_bytes_max = (uint32_t)pol_opt(p, OPT_REPLY_BYTES_MAX)->i;
    pol_plugin_set_data(p, d);
    return 0;
}

static void sv_destroy(struct pol_plugin *p)
{
    free(pol_plugin_data(p));
}

static int sv_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                          size_t err_len)
{
    const struct sv_def *d = pol_plugin_data(p);
    *shard_data = NULL;
    if (!sh) /* the testkit: no shard, so no dialogues (a check fails the plugin) */
        return 0;
    struct eng_dns *dns = NULL;
    if (pol_dns_attach(p, sh, &dns, err, err_len) != 0)
        return -1;
    struct pol_smtpv_shard *ss = NULL;
    if (pol_smtpv_shard_create(p, sh, &d->lim, dns, &ss) != 0) {
        pol_dns_detach(p, sh, dns);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    *shard_data = ss;
    return 0;
}

static void sv_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data)
{
    struct pol_smtpv_shard *ss = shard_data;
    if (!ss)
        return;
    struct eng_dns *dns = pol_smtpv_shard_dns(ss);
    pol_smtpv_shard_destroy(ss);
    pol_dns_detach(p, sh, dns);
}

/* ---------------------------------------------------------------------------------------------
 * Requests: addresses
 */

/* A configurable request field (spec 12.6): NULL when the option is empty or the attribute is
 * absent or empty. */
static const char *field(struct pol_req *r, const struct pol_plugin *p, unsigned idx, size_t *len)
{
    const struct pol_opt_value *f = pol_opt(p, idx);
    *len = 0;
    if (f->text_len == 0)
        return NULL;
    const char *v = pol_req_attr(r, f->text, len);
    return v && *len > 0 ? v : NULL;
}

/* Moose's Int (/\A-?[0-9]+\z/), converted as Perl's %d would print it (clamped). */
static bool perl_int(const char *s, size_t len, long long *out)
{
    size_t i = len > 0 && s[0] == '-' ? 1 : 0;
    if (i == len)
        return false;
    long long v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        int dig = s[i] - '0';
        v = v > (INT64_MAX - dig) / 10 ? INT64_MAX : v * 10 + dig;
    }
    *out = s[0] == '-' ? -v : v;
    return true;
}

/* A cleaned address (Net::SMTP's _addr) in the arena, NUL-terminated; NULL with *bad set when
 * it holds control characters or brackets, NULL with *bad clear when the arena is full. */
static const char *clean_addr(struct pol_req *r, const char *s, size_t len, bool *bad)
{
    *bad = false;
    if (!s)
        return "";
    len = pol_smtpv_addr_clean(&s, len);
    if (!pol_smtpv_addr_ok(s, len)) {
        *bad = true;
        return NULL;
    }
    return pol_req_strndup(r, s, len);
}

static void split_addr(struct sv_req *st)
{
    const char *at = strrchr(st->rcpt, '@');
    st->local = st->rcpt;
    st->local_len = at ? (size_t)(at - st->rcpt) : strlen(st->rcpt);
    st->domain = at ? at + 1 : "";
    st->domain_len = strlen(st->domain);
}

static enum sv_phase after_server(struct pol_plugin *p, const struct sv_req *st, bool tlsa_done);

static void go(struct sv_req *st, enum sv_phase ph)
{
    st->phase = ph;
    st->asked = false;
    st->answered = false;
}

/* Phase START: enabled, the addresses, the once flag, where to find the server. Returns true
 * to go on with the next phase; false with *out to return. */
static bool sv_begin(struct pol_plugin *p, struct pol_req *r, struct sv_req *st,
                     const struct sv_def *d, enum pol_step *out)
{
    *out = POL_NEXT;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return false;
    size_t size_len, from_len, to_len;
    const char *size = field(r, p, OPT_SIZE_FIELD, &size_len);
    st->size_known = size && perl_int(size, size_len, &st->size);
    const struct pol_opt_value *fixed = pol_opt(p, OPT_SENDER);
    const char *from = fixed->set ? fixed->text : field(r, p, OPT_SENDER_FIELD, &from_len);
    from_len = fixed->set ? fixed->text_len : from_len;
    const char *to = field(r, p, OPT_RECIPIENT_FIELD, &to_len);
    if (!to) { /* nothing to verify (a null sender with the defaults): 2.05 would go on with
                  an undefined address; checking nothing is what it could mean */
        pol_log(p, r, "no address in %s to verify", pol_opt(p, OPT_RECIPIENT_FIELD)->text);
        return false;
    }
    st->address = pol_req_strndup(r, to, to_len);
    char *flag = pol_req_printf(r, "verify-%.*s", (int)to_len, to);
    if (!st->address || !flag) {
        *out = pol_req_fail(r, "no memory left in the request arena");
        return false;
    }
    if (pol_req_is_already_done(r, flag))
        return false;
    bool bad_from, bad_to;
    st->mail_from = clean_addr(r, from, from_len, &bad_from);
    st->rcpt = clean_addr(r, to, to_len, &bad_to);
    if (bad_from || bad_to) {
        *out = pol_req_fail(r, "%s address holds control characters or brackets",
                            bad_to ? "recipient" : "sender");
        return false;
    }
    if (!st->mail_from || !st->rcpt) {
        *out = pol_req_fail(r, "no memory left in the request arena");
        return false;
    }
    split_addr(st);
    st->tlsa = st->openpgp = -1;
    const struct pol_opt_value *host = pol_opt(p, OPT_HOST);
    if (host->set) {
        st->server = host->text;
        if (d->host_literal) {
            memcpy(&st->addr, &d->addr, d->addr_len);
            st->addr_len = d->addr_len;
        }
        go(st, d->host_literal ? after_server(p, st, false) : PH_A);
        return true;
    }
    if (st->domain_len == 0) {
        *out = pol_req_fail(r, "address %s has no domain to look up", st->rcpt);
        return false;
    }
    go(st, PH_MX);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Requests: DNS
 */

static void mx_pick(struct sv_req *st, const struct eng_dns_answer *ans)
{
    const struct eng_dns_rr *best = NULL;
    for (uint32_t i = 0; i < ans->count; i++)
        if (!best || ans->rrs[i].u.mx.preference < best->u.mx.preference)
            best = &ans->rrs[i];
    ENG_ASSERT(best != NULL);
    if (strcmp(best->u.mx.exchange, ".") == 0) {
        st->server = NULL;
        st->no_server = "null MX (the domain accepts no mail)";
        return;
    }
    st->server = pol_req_strndup(st->r, best->u.mx.exchange, strlen(best->u.mx.exchange));
    if (!st->server)
        st->dns_status = ENG_DNS_STATUS_COUNT; /* the arena is full */
}

static void sv_dns_done(void *ctx, const struct eng_dns_answer *ans)
{
    struct sv_req *st = ctx;
    ENG_ASSERT(st->asked && !st->answered);
    st->dns_status = ans->status;
    bool has = ans->status == ENG_DNS_OK && ans->count > 0;
    switch (st->phase) {
    case PH_MX:
        if (has)
            mx_pick(st, ans);
        break;
    case PH_A:
        if (has) {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&st->addr;
            memset(&st->addr, 0, sizeof(st->addr));
            a4->sin_family = AF_INET;
            a4->sin_addr = ans->rrs[0].u.a;
            st->addr_len = sizeof(*a4);
        }
        break;
    case PH_AAAA:
        if (has) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&st->addr;
            memset(&st->addr, 0, sizeof(st->addr));
            a6->sin6_family = AF_INET6;
            a6->sin6_addr = ans->rrs[0].u.aaaa;
            st->addr_len = sizeof(*a6);
        }
        break;
    case PH_TLSA: /* "has" only when validated: the resolver set AD */
        st->tlsa = has && ans->ad;
        break;
    case PH_OPENPGP:
        st->openpgp = has && ans->ad;
        break;
    default:
        ENG_ASSERT(!"DNS answer in a phase without a query");
    }
    st->answered = true;
    pol_req_resume(st->r);
}

static enum pol_step ask(struct pol_plugin *p, struct pol_req *r, struct sv_req *st,
                         const char *name, uint16_t type)
{
    struct eng_dns *dns = pol_dns_client(p, r);
    if (!dns)
        return pol_req_fail(r, "no DNS client on this shard");
    st->asked = true;
    st->answered = false;
    st->r = r;
    int rc = eng_dns_query(dns, &st->op, name, strlen(name), type, sv_dns_done, st);
    if (rc != 0)
        return pol_req_fail(r, "cannot ask DNS for %s: %s", name, strerror(-rc));
    return POL_WAIT;
}

static bool is_answer(enum eng_dns_status s)
{
    return s == ENG_DNS_NODATA || s == ENG_DNS_NXDOMAIN;
}

/* The phase after the server is known (or known to be missing). */
static enum sv_phase after_server(struct pol_plugin *p, const struct sv_req *st, bool tlsa_done)
{
    if (!tlsa_done && st->server && pol_builtin_opt_is(p, OPT_CHECK_TLSA, "on"))
        return PH_TLSA;
    if (st->domain_len > 0 && pol_builtin_opt_is(p, OPT_CHECK_OPENPGP, "on"))
        return PH_OPENPGP;
    return PH_CONNECT;
}

/* Phase MX: the lowest-preference MX, else the domain itself. */
static bool sv_mx(struct pol_plugin *p, struct pol_req *r, struct sv_req *st, enum pol_step *out)
{
    if (!st->asked) {
        *out = ask(p, r, st, st->domain, ENG_DNS_T_MX);
        return false;
    }
    ENG_ASSERT(st->answered);
    if (st->dns_status == ENG_DNS_STATUS_COUNT) {
        *out = pol_req_fail(r, "no memory left in the request arena");
        return false;
    }
    if (st->dns_status == ENG_DNS_OK) {
        go(st, st->server ? PH_A : after_server(p, st, false));
        return true;
    }
    if (!is_answer(st->dns_status)) {
        *out = pol_req_fail(r, "MX lookup for %s failed: %s", st->domain,
                            eng_dns_status_name(st->dns_status));
        return false;
    }
    st->server = st->domain; /* no MX: the domain's own addresses (RFC 5321 5.1) */
    st->server_is_domain = true;
    go(st, PH_A);
    return true;
}

/* Phases A, AAAA: the server's first address. */
static bool sv_addr(struct pol_plugin *p, struct pol_req *r, struct sv_req *st,
                    const struct sv_def *d, enum pol_step *out)
{
    if (!st->asked) {
        *out = ask(p, r, st, st->server, st->phase == PH_A ? ENG_DNS_T_A : ENG_DNS_T_AAAA);
        return false;
    }
    ENG_ASSERT(st->answered);
    if (st->dns_status == ENG_DNS_OK) {
        if (st->addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&st->addr)->sin_port = htons(d->port);
        else
            ((struct sockaddr_in6 *)&st->addr)->sin6_port = htons(d->port);
        go(st, after_server(p, st, false));
        return true;
    }
    if (st->phase == PH_A && is_answer(st->dns_status)) {
        go(st, PH_AAAA);
        return true;
    }
    if (st->server_is_domain) { /* 2.05: an unresolvable domain fails the plugin */
        *out = pol_req_fail(r, "unable to resolve %s: no MX and no address (%s)", st->server,
                            eng_dns_status_name(st->dns_status));
        return false;
    }
    st->no_server = "its address did not resolve";
    go(st, after_server(p, st, false));
    return true;
}

/* Phases TLSA and OPENPGP: one query each, the result noted by sv_dns_done. */
static bool sv_key(struct pol_plugin *p, struct pol_req *r, struct sv_req *st, enum pol_step *out)
{
    if (st->answered) {
        go(st, st->phase == PH_TLSA ? after_server(p, st, true) : PH_CONNECT);
        return true;
    }
    char *name;
    if (st->phase == PH_TLSA) { /* port 25 whatever `port` says, as 2.05 */
        name = pol_req_printf(r, "_25._tcp.%s", st->server);
    } else {
        size_t cap = 2 * 28 + sizeof("._openpgpkey.") + st->domain_len;
        name = pol_req_alloc(r, cap);
        if (name && pol_smtpv_openpgp_name(st->local, st->local_len, st->domain, st->domain_len,
                                           name, cap) == 0)
            name = NULL;
    }
    if (!name) {
        *out = pol_req_fail(r, "no memory left in the request arena");
        return false;
    }
    *out = ask(p, r, st, name, st->phase == PH_TLSA ? ENG_DNS_T_TLSA : ENG_DNS_T_OPENPGPKEY);
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Requests: the dialogue and its outcome
 */

static bool sv_connect(struct pol_plugin *p, struct pol_req *r, struct sv_req *st,
                       const struct sv_def *d, enum pol_step *out)
{
    if (st->asked || st->no_server || !st->server) {
        ENG_ASSERT(!st->asked || st->conn.finished);
        go(st, PH_RESULT);
        return true;
    }
    struct pol_smtpv_shard *ss = pol_plugin_shard_data(p, r);
    if (!ss) {
        *out = pol_req_fail(r, "SMTP call-outs need a shard (not available here)");
        return false;
    }
    struct pol_smtpv_dialog dlg;
    pol_smtpv_dialog_init(&dlg, d->helo, st->mail_from, st->rcpt, st->size_known, st->size);
    st->asked = true;
    *out = pol_smtpv_conn_start(&st->conn, ss, r, (const struct sockaddr *)&st->addr, st->addr_len,
                                &dlg);
    return false;
}

static bool add_score(struct pol_plugin *p, struct pol_req *r, const struct sv_req *st,
                      unsigned idx, const char *suffix)
{
    const struct pol_opt_value *v = pol_opt(p, idx);
    if (!v->set)
        return true;
    char *label = pol_req_printf(r, "%s-%s%s", pol_plugin_name(p), st->address, suffix);
    return label && pol_score_add(r, p, label, v->num, v->text) == 0;
}

static bool add_key_score(struct pol_plugin *p, struct pol_req *r, const struct sv_req *st,
                          int8_t has, unsigned has_idx, const char *suffix)
{
    if (has < 0)
        return true;
    return add_score(p, r, st, has ? has_idx : has_idx + 1, suffix);
}
_Static_assert(OPT_NO_STARTTLS_SCORE == OPT_HAS_STARTTLS_SCORE + 1, "has_ then no_");
_Static_assert(OPT_NO_TLSA_SCORE == OPT_HAS_TLSA_SCORE + 1, "has_ then no_");
_Static_assert(OPT_NO_OPENPGP_SCORE == OPT_HAS_OPENPGP_SCORE + 1, "has_ then no_");

static const char *yes_no(int8_t v)
{
    return v < 0 ? "-" : v ? "yes" : "no";
}

static void log_outcome(struct pol_plugin *p, struct pol_req *r, const struct sv_req *st,
                        unsigned code, int8_t starttls)
{
    const struct pol_smtpv_conn *c = &st->conn;
    char ip[64] = "-";
    if (st->addr_len > 0)
        eng_addr_format((const struct sockaddr *)&st->addr, st->addr_len, ip, sizeof(ip));
    const char *why = st->no_server    ? st->no_server
                      : c->status != 0 ? pol_smtpv_strerror(c->status)
                      : code == 0      ? "refused in the dialogue"
                                       : "";
    if (code != 0)
        pol_log(p, r, "verify %s: server %s (%s): %u %s (starttls %s, tlsa %s, openpgp %s)",
                st->address, st->server ? st->server : "-", ip, code, c->text ? c->text : "",
                yes_no(starttls), yes_no(st->tlsa), yes_no(st->openpgp));
    else
        pol_log(p, r,
                "verify %s: server %s (%s): no verdict: %s%s%s (starttls %s, tlsa %s, openpgp %s)",
                st->address, st->server ? st->server : "-", ip, why, c->dlg.fail_code ? " in " : "",
                c->dlg.fail_code ? pol_smtpv_phase_name(c->dlg.fail_phase) : "", yes_no(starttls),
                yes_no(st->tlsa), yes_no(st->openpgp));
}

/* Phase RESULT: the scores in 2.05's order (starttls, tlsa, openpgp, then the verdict's),
 * then the action. */
static enum pol_step sv_result(struct pol_plugin *p, struct pol_req *r, struct sv_req *st)
{
    const struct pol_smtpv_conn *c = &st->conn;
    /* Our own limits are not the server's answer: connections_max reached or the arena full
     * fail the plugin (counted), and on_error decides. */
    if (c->status == -EBUSY || c->status == -ENOMEM)
        return pol_req_fail(r, "cannot verify %s: %s", st->address, pol_smtpv_strerror(c->status));
    bool talked = c->ss != NULL; /* a dialogue ran (even if it failed at once) */
    /* A verdict reached before a later failure (no QUIT reply, a reset) stands. */
    unsigned code = talked ? c->dlg.code : 0;
    int8_t starttls = talked && c->dlg.hello_done ? (int8_t)c->dlg.starttls : -1;
    if (talked)
        pol_smtpv_count_verdict(c->ss, code);
    log_outcome(p, r, st, code, starttls);
    if (!add_key_score(p, r, st, starttls, OPT_HAS_STARTTLS_SCORE, "-starttls") ||
        !add_key_score(p, r, st, st->tlsa, OPT_HAS_TLSA_SCORE, "-tlsa") ||
        !add_key_score(p, r, st, st->openpgp, OPT_HAS_OPENPGP_SCORE, "-openpgp"))
        return pol_req_fail(r, "cannot add score: out of memory");
    unsigned cls = code / 100;
    if (cls != 4 && cls != 5)
        return POL_NEXT;
    unsigned action_idx = cls == 5 ? OPT_PERM_FAIL_ACTION : OPT_TEMP_FAIL_ACTION;
    unsigned score_idx = cls == 5 ? OPT_PERM_FAIL_SCORE : OPT_TEMP_FAIL_SCORE;
    if (!add_score(p, r, st, score_idx, ""))
        return pol_req_fail(r, "cannot add score: out of memory");
    const struct pol_opt_value *action = pol_opt(p, action_idx);
    if (!action->set)
        return POL_NEXT;
    const struct pol_tvar vars[] = {{"MSG", c->text}};
    char *text = pol_template_expand(r, action->text, vars, 1);
    if (!text)
        return pol_req_fail(r, "no memory left in the request arena for the action");
    return pol_builtin_result(r, text, strlen(text));
}

static enum pol_step sv_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    struct sv_req *st = req_state;
    const struct sv_def *d = pol_plugin_data(p);
    st->r = r;
    enum pol_step out = POL_NEXT;
    for (unsigned moves = 0;; moves++) {
        ENG_ASSERT(moves < 16); /* each phase moves forward */
        bool more;
        switch (st->phase) {
        case PH_START:
            more = sv_begin(p, r, st, d, &out);
            break;
        case PH_MX:
            more = sv_mx(p, r, st, &out);
            break;
        case PH_A:
        case PH_AAAA:
            more = sv_addr(p, r, st, d, &out);
            break;
        case PH_TLSA:
        case PH_OPENPGP:
            more = sv_key(p, r, st, &out);
            break;
        case PH_CONNECT:
            more = sv_connect(p, r, st, d, &out);
            break;
        case PH_RESULT:
            return sv_result(p, r, st);
        default:
            ENG_ASSERT(!"bad phase");
            return POL_FAIL;
        }
        if (!more)
            return out;
    }
}

const struct pol_plugin_type pol_type_SMTPVerify = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "SMTPVerify",
    .opts = sv_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_SCORING,
    .req_state_bytes = sizeof(struct sv_req),
    .create = sv_create,
    .shard_start = sv_shard_start,
    .shard_stop = sv_shard_stop,
    .step = sv_step,
    .destroy = sv_destroy,
};
