/*
 * smtpverify_proto.c: SMTPVerify's pure parts (smtpverify.h): the SMTP reply parser, the
 * call-out dialogue as a state machine fed one parsed reply at a time, Net::SMTP's address
 * cleaning, and the OPENPGPKEY owner name (SHA2-224 from libnettle).
 *
 * Nothing here does I/O or allocates; every function runs on any thread. The parser rescans
 * the buffer from its start on each call; the buffer is bounded by reply_bytes_max, so a reply
 * that arrives one byte at a time costs O(reply_bytes_max^2) at worst (4 KiB by default).
 */
#include "plugins/smtpverify.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <nettle/sha2.h>

#include <eng/assert.h>

/* ---------------------------------------------------------------------------------------------
 * Replies
 */

/* Is the EHLO line text the keyword kw, alone or followed by parameters? */
static bool ehlo_keyword(const char *t, size_t len, const char *kw)
{
    size_t kl = strlen(kw);
    return len >= kl && strncasecmp(t, kw, kl) == 0 && (len == kl || t[kl] == ' ');
}

/* Checks one line (without its line end): 3 digits 2xx..5xx, then ' ', '-' or nothing. */
static bool line_ok(const char *l, size_t len)
{
    if (len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9')
        return false;
    return len == 3 || l[3] == ' ' || l[3] == '-';
}

static void text_append(char *text, size_t text_cap, size_t *tl, const char *s, size_t len)
{
    if (*tl > 0 && *tl + 1 < text_cap)
        text[(*tl)++] = ' ';
    size_t room = text_cap - 1 - *tl;
    size_t n = len < room ? len : room;
    memcpy(text + *tl, s, n);
    *tl += n;
    text[*tl] = '\0';
}

ssize_t pol_smtpv_reply_parse(const char *buf, size_t len, size_t bytes_max,
                              struct pol_smtpv_reply *out, char *text, size_t text_cap,
                              size_t *err_pos)
{
    ENG_ASSERT(buf != NULL || len == 0);
    ENG_ASSERT(text != NULL && text_cap > 0);
    memset(out, 0, sizeof(*out));
    text[0] = '\0';
    size_t scan = len < bytes_max ? len : bytes_max;
    size_t pos = 0, tl = 0;
    for (unsigned line_idx = 0;; line_idx++) {
        const char *nl = memchr(buf + pos, '\n', scan - pos);
        if (!nl)
            return len >= bytes_max ? -EMSGSIZE : 0;
        size_t end = (size_t)(nl - buf);
        size_t ll = end - pos;
        if (ll > 0 && buf[end - 1] == '\r')
            ll--;
        const char *l = buf + pos;
        if (!line_ok(l, ll)) {
            if (err_pos)
                *err_pos = pos;
            return -EPROTO;
        }
        const char *t = ll > 3 ? l + 4 : l + 3;
        size_t tlen = ll > 3 ? ll - 4 : 0;
        if (line_idx > 0) {
            out->starttls = out->starttls || ehlo_keyword(t, tlen, "STARTTLS");
            out->size = out->size || ehlo_keyword(t, tlen, "SIZE");
        }
        text_append(text, text_cap, &tl, t, tlen);
        pos = end + 1;
        if (ll == 3 || l[3] == ' ') {
            out->code = (unsigned)((l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0'));
            out->text_len = tl;
            return (ssize_t)pos;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * The dialogue
 */

void pol_smtpv_dialog_init(struct pol_smtpv_dialog *d, const char *helo, const char *mail_from,
                           const char *rcpt_to, bool size_known, long long size)
{
    ENG_ASSERT(helo != NULL && mail_from != NULL && rcpt_to != NULL);
    memset(d, 0, sizeof(*d));
    d->phase = POL_SMTPV_GREETING;
    d->helo = helo;
    d->mail_from = mail_from;
    d->rcpt_to = rcpt_to;
    d->size_known = size_known;
    d->size = size;
}

size_t pol_smtpv_dialog_out_bytes(const struct pol_smtpv_dialog *d)
{
    size_t hello = sizeof("EHLO \r\n") + strlen(d->helo);
    size_t mail = sizeof("MAIL FROM:<> SIZE=-9223372036854775808\r\n") + strlen(d->mail_from);
    size_t rcpt = sizeof("RCPT TO:<>\r\n") + strlen(d->rcpt_to);
    size_t m = hello > mail ? hello : mail;
    return m > rcpt ? m : rcpt;
}

static size_t put(char *out, size_t out_cap, const char *fmt, const char *arg)
{
    int n = snprintf(out, out_cap, fmt, arg);
    ENG_ASSERT(n > 0 && (size_t)n < out_cap);
    return (size_t)n;
}

static size_t mail_cmd(struct pol_smtpv_dialog *d, char *out, size_t out_cap)
{
    d->phase = POL_SMTPV_MAIL;
    /* Net::SMTP adds SIZE only when the server announced it (else it carps and sends none). */
    d->size_sent = d->size_known && d->size_ext;
    int n = d->size_sent
                ? snprintf(out, out_cap, "MAIL FROM:<%s> SIZE=%lld\r\n", d->mail_from, d->size)
                : snprintf(out, out_cap, "MAIL FROM:<%s>\r\n", d->mail_from);
    ENG_ASSERT(n > 0 && (size_t)n < out_cap);
    return (size_t)n;
}

static size_t give_up(struct pol_smtpv_dialog *d, const struct pol_smtpv_reply *rep)
{
    d->fail_code = rep->code;
    d->fail_phase = d->phase;
    d->phase = POL_SMTPV_DONE;
    return 0;
}

size_t pol_smtpv_dialog_next(struct pol_smtpv_dialog *d, const struct pol_smtpv_reply *rep,
                             char *out, size_t out_cap)
{
    ENG_ASSERT(out_cap >= pol_smtpv_dialog_out_bytes(d));
    ENG_ASSERT(rep->code >= 200 && rep->code <= 599);
    bool ok = rep->code / 100 == 2;
    switch (d->phase) {
    case POL_SMTPV_GREETING:
        if (!ok)
            return give_up(d, rep);
        d->phase = POL_SMTPV_EHLO;
        return put(out, out_cap, "EHLO %s\r\n", d->helo);
    case POL_SMTPV_EHLO:
        if (!ok) { /* Net::SMTP's hello falls back to HELO */
            d->phase = POL_SMTPV_HELO;
            return put(out, out_cap, "HELO %s\r\n", d->helo);
        }
        d->hello_done = true;
        d->starttls = rep->starttls;
        d->size_ext = rep->size;
        return mail_cmd(d, out, out_cap);
    case POL_SMTPV_HELO:
        if (!ok)
            return give_up(d, rep);
        d->hello_done = true;
        return mail_cmd(d, out, out_cap);
    case POL_SMTPV_MAIL:
        if (ok) {
            d->phase = POL_SMTPV_RCPT;
            return put(out, out_cap, "RCPT TO:<%s>\r\n", d->rcpt_to);
        }
        d->code = rep->code; /* a refused sender answers for the recipient */
        d->code_from = POL_SMTPV_MAIL;
        d->phase = POL_SMTPV_QUIT;
        return put(out, out_cap, "%s\r\n", "QUIT");
    case POL_SMTPV_RCPT:
        d->code = rep->code;
        d->code_from = POL_SMTPV_RCPT;
        d->phase = POL_SMTPV_QUIT;
        return put(out, out_cap, "%s\r\n", "QUIT");
    case POL_SMTPV_QUIT:
        d->phase = POL_SMTPV_DONE;
        return 0;
    case POL_SMTPV_DONE:
        break;
    }
    ENG_ASSERT(!"reply fed to a finished dialogue");
    return 0;
}

const char *pol_smtpv_phase_name(enum pol_smtpv_phase ph)
{
    static const char *const names[] = {
        [POL_SMTPV_GREETING] = "greeting", [POL_SMTPV_EHLO] = "EHLO",    [POL_SMTPV_HELO] = "HELO",
        [POL_SMTPV_MAIL] = "MAIL FROM",    [POL_SMTPV_RCPT] = "RCPT TO", [POL_SMTPV_QUIT] = "QUIT",
        [POL_SMTPV_DONE] = "done",
    };
    ENG_ASSERT((unsigned)ph < sizeof names / sizeof names[0]);
    return names[ph];
}

/* ---------------------------------------------------------------------------------------------
 * Addresses and names
 */

size_t pol_smtpv_addr_clean(const char **s, size_t len)
{
    const char *p = *s;
    /* s/^\s*<?\s*|\s*>?\s*$//sg */
    while (len > 0 && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
        len--;
    }
    if (len > 0 && *p == '<') {
        p++;
        len--;
    }
    while (len > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        len--;
    }
    while (len > 0 &&
           (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r' || p[len - 1] == '\n'))
        len--;
    if (len > 0 && p[len - 1] == '>')
        len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    *s = p;
    return len;
}

bool pol_smtpv_addr_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7F || ch == '<' || ch == '>')
            return false;
    }
    return true;
}

size_t pol_smtpv_openpgp_name(const char *local, size_t local_len, const char *domain,
                              size_t domain_len, char *out, size_t out_cap)
{
    static const char hex[] = "0123456789abcdef";
    static const char mid[] = "._openpgpkey.";
    size_t need = 2 * SHA224_DIGEST_SIZE + sizeof(mid) - 1 + domain_len + 1;
    if (out_cap < need)
        return 0;
    uint8_t dig[SHA224_DIGEST_SIZE];
    struct sha224_ctx ctx;
    sha224_init(&ctx);
    sha224_update(&ctx, local_len, (const uint8_t *)local);
    sha224_digest(&ctx, sizeof dig, dig);
    size_t o = 0;
    for (size_t i = 0; i < sizeof dig; i++) {
        out[o++] = hex[dig[i] >> 4];
        out[o++] = hex[dig[i] & 0x0F];
    }
    memcpy(out + o, mid, sizeof(mid) - 1);
    o += sizeof(mid) - 1;
    memcpy(out + o, domain, domain_len);
    o += domain_len;
    out[o] = '\0';
    ENG_ASSERT(o + 1 == need);
    return o;
}
