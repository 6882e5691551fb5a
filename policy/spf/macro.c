/*
 * spf/macro.c: SPF macro strings (RFC 7208 7): the syntax check, the domain-spec check, the
 * expansion with transformers, delimiters and URL escaping, and the normalisation of an
 * expanded name for a query. Pure: no I/O, no allocation; output goes into caller buffers of a
 * fixed size.
 *
 * Choices where the RFC is silent, each checked against the openspf suite: the reverse
 * transformer is accepted in either case (ABNF strings are case-insensitive); empty parts are
 * kept when splitting (Perl's split would drop trailing ones); %{i} of an IPv6 address uses
 * upper-case nibbles (the suite's v-macro-ip6 expects them; DNS does not care). %{h} and %{r}
 * without a value give "unknown", as Mail::SPF does.
 *
 * Limits: a right-hand part count is read up to 1000 (more means "all parts"); a domain-spec
 * expansion keeps its last out_cap - 1 bytes (only the last 253 can matter); an explanation
 * longer than its buffer is refused (the caller then uses its default).
 */
#include "spf/spf_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_delim(char c)
{
    return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

/* One %{...}: the letter, the right-hand part count (0: none given), reverse, delimiters. */
struct macro_expr {
    char letter; /* as written */
    unsigned parts;
    bool digits; /* a count was written (possibly 0) */
    bool reverse;
    const char *delims;
    size_t delims_len;
    size_t len; /* bytes from '%' to '}' inclusive */
};

/* Parses "%{" at s[0..len). Returns true with *m filled when the structure is right (the letter
 * may still be unknown). */
static bool parse_expr(const char *s, size_t len, struct macro_expr *m)
{
    ENG_ASSERT(len >= 2 && s[0] == '%' && s[1] == '{');
    memset(m, 0, sizeof *m);
    size_t i = 2;
    if (i >= len || !is_alpha(s[i]))
        return false;
    m->letter = s[i++];
    while (i < len && is_digit(s[i])) {
        m->digits = true;
        if (m->parts <= 1000)
            m->parts = m->parts * 10 + (unsigned)(s[i] - '0');
        i++;
    }
    if (i < len && (s[i] == 'r' || s[i] == 'R')) {
        m->reverse = true;
        i++;
    }
    m->delims = s + i;
    while (i < len && is_delim(s[i]))
        i++;
    m->delims_len = (size_t)(s + i - m->delims);
    if (i >= len || s[i] != '}')
        return false;
    m->len = i + 1;
    return true;
}

static bool letter_known(char c)
{
    return strchr("slodiphcrtv", lower(c)) != NULL;
}

static bool letter_exp_only(char c)
{
    c = lower(c);
    return c == 'c' || c == 'r' || c == 't';
}

bool pol_spf_macro_check(const char *s, size_t len, bool exp, struct pol_spf_macro_diag *diag)
{
    diag->err = POL_SPF_MACRO_OK;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c != '%') {
            /* An explanation-string also has spaces (RFC 7208 6.2). */
            if ((c < 0x21 || c > 0x7e) && !(exp && c == ' '))
                goto invalid;
            i++;
            continue;
        }
        if (i + 1 < len && (s[i + 1] == '%' || s[i + 1] == '_' || s[i + 1] == '-')) {
            i += 2;
            continue;
        }
        struct macro_expr m;
        if (i + 1 >= len || s[i + 1] != '{' || !parse_expr(s + i, len - i, &m))
            goto invalid;
        diag->pos = i;
        diag->letter = m.letter;
        if (!letter_known(m.letter)) {
            diag->err = POL_SPF_MACRO_LETTER;
            return false;
        }
        if (!exp && letter_exp_only(m.letter)) {
            diag->err = POL_SPF_MACRO_EXP_ONLY;
            return false;
        }
        if (m.digits && m.parts == 0) {
            diag->err = POL_SPF_MACRO_ZERO;
            return false;
        }
        i += m.len;
        continue;
    invalid:
        diag->err = POL_SPF_MACRO_INVALID;
        diag->pos = i;
        diag->letter = 0;
        return false;
    }
    return true;
}

void pol_spf_macro_diag_text(const struct pol_spf_macro_diag *d, const char *s, size_t len,
                             char *err, size_t err_len)
{
    int n = (int)len;
    switch (d->err) {
    case POL_SPF_MACRO_LETTER:
        snprintf(err, err_len, "Unknown macro character '%c' at pos %zu in macro string '%.*s'",
                 lower(d->letter), d->pos, n, s);
        return;
    case POL_SPF_MACRO_EXP_ONLY:
        snprintf(err, err_len, "Illegal '%c' macro in non-explanation macro string '%.*s'",
                 lower(d->letter), n, s);
        return;
    case POL_SPF_MACRO_ZERO:
        snprintf(err, err_len,
                 "Illegal selection of 0 (zero) right-hand parts at pos %zu in macro string "
                 "'%.*s'",
                 d->pos, n, s);
        return;
    case POL_SPF_MACRO_INVALID:
    case POL_SPF_MACRO_OK:
        break;
    }
    snprintf(err, err_len, "Invalid macro expression at pos %zu in macro string '%.*s'", d->pos, n,
             s);
}

/* toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool toplabel_ok(const char *s, size_t len)
{
    if (len == 0)
        return false;
    bool alpha = false, dash = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-')
            dash = true;
        else if (is_alpha(s[i]))
            alpha = true;
        else if (!is_digit(s[i]))
            return false;
    }
    if (!dash)
        return alpha;
    return is_alnum(s[0]) && is_alnum(s[len - 1]);
}

bool pol_spf_domain_spec_check(const char *s, size_t len, bool exp, struct pol_spf_macro_diag *diag)
{
    if (len == 0 || !pol_spf_macro_check(s, len, exp, diag))
        return false;
    /* domain-end = ( "." toplabel [ "." ] ) / macro-expand. Walk the tokens once, remembering
     * the run of literal alphanumerics and dashes at the end, whether a literal dot came just
     * before it, and the same for the run closed by the last literal dot. */
    bool last_macro = false, last_dot = false, prev_dot = false;
    size_t run = SIZE_MAX, closed = SIZE_MAX, closed_end = 0;
    bool run_dot = false, closed_dot = false;
    for (size_t i = 0; i < len;) {
        size_t tok = 1;
        if (s[i] == '%') {
            struct macro_expr m;
            tok = s[i + 1] == '{' && parse_expr(s + i, len - i, &m) ? m.len : 2;
            last_macro = true;
            last_dot = prev_dot = false;
            run = SIZE_MAX;
        } else if (is_alnum(s[i]) || s[i] == '-') {
            if (run == SIZE_MAX) {
                run = i;
                run_dot = prev_dot;
            }
            last_macro = last_dot = prev_dot = false;
        } else if (s[i] == '.') {
            closed = run;
            closed_end = i;
            closed_dot = run_dot;
            run = SIZE_MAX;
            last_macro = false;
            last_dot = prev_dot = true;
        } else {
            run = SIZE_MAX;
            last_macro = last_dot = prev_dot = false;
        }
        i += tok;
    }
    if (last_macro)
        return true;
    if (last_dot)
        return closed != SIZE_MAX && closed_dot && toplabel_ok(s + closed, closed_end - closed);
    return run != SIZE_MAX && run_dot && toplabel_ok(s + run, len - run);
}

/* ---------------------------------------------------------------------------------------------
 * Expansion
 */

struct out {
    char *buf;
    size_t cap, len;
    bool tail; /* keep the last cap - 1 bytes (domain-spec) instead of failing */
    bool dropped, overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
    size_t room = o->cap - 1;
    if (o->len + n <= room) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        return;
    }
    if (!o->tail) {
        o->overflow = true;
        return;
    }
    o->dropped = true;
    if (n >= room) {
        memcpy(o->buf, s + (n - room), room);
        o->len = room;
        return;
    }
    size_t keep = room - n;
    memmove(o->buf, o->buf + (o->len - keep), keep);
    memcpy(o->buf + keep, s, n);
    o->len = room;
}

static void put_escaped(struct out *o, const char *s, size_t n, bool escape)
{
    if (!escape) {
        put(o, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_alnum((char)c) || c == '-' || c == '.' || c == '_' || c == '~') {
            put(o, (const char *)&c, 1);
        } else {
            char hex[4];
            snprintf(hex, sizeof hex, "%%%02X", c);
            put(o, hex, 3);
        }
    }
}

static bool in_set(char c, const char *set, size_t n)
{
    return memchr(set, c, n) != NULL;
}

/* Splits v on the delimiters, reverses, keeps the right-hand parts and joins with '.' (RFC
 * 7208 7.3), escaping when asked. No storage: parts are found by scanning. */
static void put_transformed(struct out *o, const char *v, size_t n, const struct macro_expr *m,
                            bool escape)
{
    const char *set = m->delims_len > 0 ? m->delims : ".";
    size_t set_len = m->delims_len > 0 ? m->delims_len : 1;
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        total += in_set(v[i], set, set_len);
    size_t keep = m->parts > 0 && m->parts < total ? m->parts : total;
    /* Reversed, the kept right-hand parts are the first `keep` original parts, last first;
     * otherwise the last `keep` parts in order. */
    if (!m->reverse) {
        size_t idx = 0, start = 0, first = total - keep;
        bool any = false;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && !in_set(v[i], set, set_len))
                continue;
            if (idx >= first) {
                if (any)
                    put(o, ".", 1);
                put_escaped(o, v + start, i - start, escape);
                any = true;
            }
            idx++;
            start = i + 1;
        }
        return;
    }
    /* Find the end of part keep - 1, then walk back part by part. */
    size_t hi = n;
    for (size_t i = 0, k = 0; i < n; i++)
        if (in_set(v[i], set, set_len) && ++k == keep) {
            hi = i;
            break;
        }
    for (bool any = false;; any = true) {
        size_t lo = hi;
        while (lo > 0 && !in_set(v[lo - 1], set, set_len))
            lo--;
        if (any)
            put(o, ".", 1);
        put_escaped(o, v + lo, hi - lo, escape);
        if (lo == 0)
            break;
        hi = lo - 1;
    }
}

/* The value of a macro letter; NULL when it is %{p} and p is not computed yet. buf holds values
 * computed here (i, c, v, t). */
static const char *letter_value(const struct pol_spf_macro_ctx *c, char letter, char *buf,
                                size_t *len)
{
    switch (lower(letter)) {
    case 's':
        *len = c->s_len;
        return c->s;
    case 'l':
        *len = c->l_len;
        return c->l;
    case 'o':
        *len = c->o_len;
        return c->o;
    case 'd':
        *len = c->d_len;
        return c->d;
    case 'h':
        *len = c->h_len ? c->h_len : 7;
        return c->h_len ? c->h : "unknown";
    case 'r':
        *len = c->r_len ? c->r_len : 7;
        return c->r_len ? c->r : "unknown";
    case 'p':
        *len = c->p_len;
        return c->p_len == SIZE_MAX ? NULL : c->p;
    case 'v':
        *len = c->ip->family == 4 ? 7 : 3;
        return c->ip->family == 4 ? "in-addr" : "ip6";
    case 't':
        *len = (size_t)snprintf(buf, 64, "%" PRId64, c->t);
        return buf;
    case 'c':
        *len = pol_spf_ip_format(c->ip, false, buf);
        return buf;
    case 'i':
        if (c->ip->family == 4) {
            *len = pol_spf_ip_format(c->ip, false, buf);
            return buf;
        }
        for (unsigned k = 0; k < 32; k++) {
            unsigned nib = (c->ip->bytes[k / 2] >> (k % 2 ? 0 : 4)) & 0xfu;
            buf[2 * k] = "0123456789ABCDEF"[nib];
            buf[2 * k + 1] = '.';
        }
        *len = 63;
        return buf;
    }
    ENG_ASSERT(0);
    return NULL;
}

enum pol_spf_expand_rc pol_spf_macro_expand(const char *s, size_t len,
                                            const struct pol_spf_macro_ctx *ctx, bool exp,
                                            char *out, size_t out_cap, size_t *out_len,
                                            bool *dropped)
{
    ENG_ASSERT(out_cap > 0);
    ENG_ASSERT(ctx->ip != NULL);
    struct out o = {out, out_cap, 0, !exp, false, false};
    struct pol_spf_macro_diag diag;
    enum pol_spf_expand_rc rc = POL_SPF_EXPAND_OK;
    if (!pol_spf_macro_check(s, len, exp, &diag)) {
        rc = POL_SPF_EXPAND_SYNTAX;
        goto done;
    }
    for (size_t i = 0; i < len;) {
        if (s[i] != '%') {
            size_t j = i;
            while (j < len && s[j] != '%')
                j++;
            put(&o, s + i, j - i);
            i = j;
            continue;
        }
        char next = s[i + 1];
        if (next != '{') {
            put(&o, next == '%' ? "%" : next == '_' ? " " : "%20", next == '-' ? 3 : 1);
            i += 2;
            continue;
        }
        struct macro_expr m;
        bool ok = parse_expr(s + i, len - i, &m);
        ENG_ASSERT(ok); /* checked above */
        char buf[80];
        size_t vlen = 0;
        const char *v = letter_value(ctx, m.letter, buf, &vlen);
        if (v == NULL) {
            rc = POL_SPF_EXPAND_NEED_P;
            goto done;
        }
        bool escape = m.letter >= 'A' && m.letter <= 'Z';
        if (m.digits || m.reverse || m.delims_len > 0)
            put_transformed(&o, v, vlen, &m, escape);
        else
            put_escaped(&o, v, vlen, escape);
        i += m.len;
    }
    if (o.overflow)
        rc = POL_SPF_EXPAND_LONG;
done:
    out[o.len] = '\0';
    *out_len = o.len;
    if (dropped)
        *dropped = o.dropped;
    return rc;
}

enum pol_spf_expand_rc pol_spf_macro_expand_local(const char *tmpl,
                                                  const struct pol_spf_macro_ctx *ctx, char *out,
                                                  size_t out_cap, size_t *out_len)
{
    ENG_ASSERT(out_cap > 0);
    struct out o = {out, out_cap, 0, false, false, false};
    for (const char *p = tmpl; *p != '\0';) {
        char buf[64];
        if (strncmp(p, "%{s}", 4) == 0) {
            put(&o, ctx->s, ctx->s_len);
            p += 4;
        } else if (strncmp(p, "%{c}", 4) == 0) {
            put(&o, buf, pol_spf_ip_format(ctx->ip, false, buf));
            p += 4;
        } else if (strncmp(p, "%{_scope}", 9) == 0) {
            const char *sc = pol_spf_scope_name(ctx->scope);
            put(&o, sc, strlen(sc));
            p += 9;
        } else {
            put(&o, p, 1);
            p++;
        }
    }
    out[o.len] = '\0';
    *out_len = o.len;
    return o.overflow ? POL_SPF_EXPAND_LONG : POL_SPF_EXPAND_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Names
 */

/* Labels of 1..63 bytes; returns the number of labels, or 0 when one is empty or too long. */
static size_t labels_ok(const char *s, size_t len)
{
    size_t count = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.')
            continue;
        if (i == start || i - start > 63)
            return 0;
        count++;
        start = i + 1;
    }
    return count;
}

size_t pol_spf_name_normalize(const char *s, size_t len, bool dropped, char *name)
{
    if (len > 0 && s[len - 1] == '.')
        len--;
    /* Drop leading labels while longer than 253 (RFC 7208 7.3). A dropped expansion lost its
     * start, so its first label is partial: it has to go too (it always does, the kept tail
     * being longer than 253). */
    size_t start = 0;
    while (len - start > 253 || (dropped && start == 0)) {
        const char *dot = memchr(s + start, '.', len - start);
        if (dot == NULL)
            return 0;
        start = (size_t)(dot - s) + 1;
        dropped = false;
    }
    len -= start;
    if (len == 0 || labels_ok(s + start, len) == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        name[i] = lower(s[start + i]);
    name[len] = '\0';
    return len;
}

bool pol_spf_domain_ok(const char *domain, size_t len)
{
    if (len == 0 || len > 253 || domain[0] == '[')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)domain[i] < 0x21 || (unsigned char)domain[i] > 0x7e)
            return false;
    if (labels_ok(domain, len) < 2)
        return false;
    const char *top = domain + len;
    while (top > domain && top[-1] != '.')
        top--;
    for (const char *p = top; p < domain + len; p++)
        if (!is_digit(*p))
            return true;
    return false;
}
