/*
 * spf/record.c: the SPF record parser (RFC 7208 4.5, 4.6.1, 5, 6, 12) and the address helpers
 * it needs. Pure: no I/O, no allocation; terms are slices of the record.
 *
 * The grammar is RFC 7208's, with the ambiguity of "a:domain/24" resolved as Mail::SPF's
 * regular expressions resolve it: the longest prefix that is a valid domain-spec, then the
 * prefix lengths. Error texts follow Mail::SPF 2.009 ("Junk encountered in mechanism '...'",
 * "Unknown mechanism type 'foo' in 'v=spf1' record", ...), because Postfix users see them in
 * permerror rejects. Mail::SPF finds some errors only when it expands a macro; we find them
 * while parsing, so a record with one is a permerror whatever term would have matched first
 * (the openspf suite asks for that).
 *
 * Limits: a term is at most the record (POL_SPF_RECORD_BYTES_MAX); prefix-length digits are
 * parsed with an overflow guard; the domain-spec split tries at most four cut points.
 */
#include "spf/spf_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

/* ---------------------------------------------------------------------------------------------
 * Addresses
 */

int pol_spf_ip_parse(const char *s, size_t len, struct pol_spf_ip *ip)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(ip, 0, sizeof *ip);
    if (inet_pton(AF_INET, buf, ip->bytes) == 1) {
        ip->family = 4;
        return 0;
    }
    uint8_t v6[16];
    if (inet_pton(AF_INET6, buf, v6) != 1)
        return -1;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(v6, mapped, sizeof mapped) == 0) {
        ip->family = 4;
        memcpy(ip->bytes, v6 + 12, 4);
        return 0;
    }
    ip->family = 6;
    memcpy(ip->bytes, v6, 16);
    return 0;
}

bool pol_spf_ip_in(const struct pol_spf_ip *ip, const uint8_t *net, unsigned prefix)
{
    unsigned bits = ip->family == 4 ? 32u : 128u;
    ENG_ASSERT(prefix <= bits);
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(ip->bytes, net, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (ip->bytes[full] & mask) == (net[full] & mask);
}

size_t pol_spf_ip_format(const struct pol_spf_ip *ip, bool upper, char *out)
{
    if (ip->family == 4)
        return (size_t)sprintf(out, "%u.%u.%u.%u", ip->bytes[0], ip->bytes[1], ip->bytes[2],
                               ip->bytes[3]);
    unsigned g[8];
    for (unsigned i = 0; i < 8; i++)
        g[i] = (unsigned)ip->bytes[2 * i] << 8 | ip->bytes[2 * i + 1];
    /* The longest run of zero groups (two or more), the first one on a tie (RFC 5952 4.2). */
    int best = -1, best_len = 1;
    for (int i = 0; i < 8;) {
        int j = i;
        while (j < 8 && g[j] == 0)
            j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j > i ? j : i + 1;
    }
    size_t n = 0;
    const char *fmt = upper ? "%X" : "%x";
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            n += (size_t)sprintf(out + n, i == 0 ? "::" : ":");
            i += best_len - 1;
            continue;
        }
        n += (size_t)sprintf(out + n, fmt, g[i]);
        if (i < 7)
            out[n++] = ':';
    }
    out[n] = '\0';
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Terms
 */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_name_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '_' || c == '.';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool eq_nocase(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != lit[i])
            return false;
    return true;
}

bool pol_spf_record_is_v1(const char *rec, size_t len)
{
    return len >= 6 && eq_nocase(rec, 6, "v=spf1") && (len == 6 || rec[6] == ' ');
}

/* Error texts. The term is named as written. */
static int term_err(char *err, size_t err_len, const char *what, const struct pol_spf_term *t)
{
    snprintf(err, err_len, "%s '%.*s'", what, (int)t->text_len, t->text);
    return -1;
}

/* "/" 1*DIGIT without a leading zero (RFC 7208 5.6), value <= max. Returns the bytes used (0:
 * no "/DIGIT" here), or -1 when the digits are there but the value is not acceptable. */
static int parse_cidr(const char *s, size_t len, unsigned max, unsigned *out)
{
    if (len < 2 || s[0] != '/' || !is_digit(s[1]))
        return 0;
    size_t i = 1;
    unsigned v = 0;
    bool big = false;
    while (i < len && is_digit(s[i])) {
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > 1000)
            big = true, v = 1000;
        i++;
    }
    if (big || v > max || (s[1] == '0' && i > 2))
        return -1;
    *out = v;
    return (int)i;
}

/* dual-cidr-length (RFC 7208 5.3) at s[0..len), Mail::SPF's reading: "/N4" then "//N6", or
 * "//N6" alone; the whole rest must be used. Returns 0 or -1 (err set). */
static int parse_dual_cidr(const char *s, size_t len, struct pol_spf_term *t, char *err,
                           size_t err_len)
{
    int n = parse_cidr(s, len, 32, &t->cidr4);
    if (n < 0)
        return term_err(err, err_len, "Invalid IPv4 prefix length encountered in", t);
    size_t i = (size_t)n;
    if (i < len && s[i] == '/') {
        i++;
        n = parse_cidr(s + i, len - i, 128, &t->cidr6);
        if (n < 0)
            return term_err(err, err_len, "Invalid IPv6 prefix length encountered in", t);
        if (n == 0)
            return term_err(err, err_len, "Missing required IPv6 prefix length in", t);
        i += (size_t)n;
    }
    if (i != len)
        return term_err(err, err_len, "Junk encountered in mechanism", t);
    return 0;
}

/* The longest prefix of s[0..len) that is a valid domain-spec, cut at the end or before one of
 * the last three '/' (a dual-cidr-length has at most three). Returns its length or 0. */
static size_t spec_prefix(const char *s, size_t len, struct pol_spf_macro_diag *diag)
{
    struct pol_spf_macro_diag d0 = {POL_SPF_MACRO_OK, 0, 0};
    if (pol_spf_domain_spec_check(s, len, false, &d0))
        return len;
    *diag = d0;
    unsigned tries = 0;
    for (size_t k = len; k-- > 0 && tries < 3;) {
        if (s[k] != '/')
            continue;
        tries++;
        struct pol_spf_macro_diag d;
        if (k > 0 && pol_spf_domain_spec_check(s, k, false, &d))
            return k;
    }
    return 0;
}

/* The message for a domain-spec that did not parse: a macro error if the macros are at fault,
 * else Mail::SPF's "Missing required domain-spec" / "Junk encountered in ...". */
static int spec_err(char *err, size_t err_len, const struct pol_spf_term *t, const char *s,
                    size_t len, size_t prefix, const struct pol_spf_macro_diag *diag, bool modifier)
{
    if (diag->err != POL_SPF_MACRO_OK && diag->err != POL_SPF_MACRO_INVALID) {
        pol_spf_macro_diag_text(diag, s, len, err, err_len);
        return -1;
    }
    if (prefix == 0)
        return term_err(err, err_len, "Missing required domain-spec in", t);
    return term_err(err, err_len,
                    modifier ? "Junk encountered in modifier" : "Junk encountered in mechanism", t);
}

/* ":" domain-spec filling the rest (include, exists, ptr with a colon). */
static int parse_spec_only(const char *s, size_t len, struct pol_spf_term *t, char *err,
                           size_t err_len)
{
    if (len < 2 || s[0] != ':')
        return term_err(err, err_len,
                        len == 0 || s[0] == ':' ? "Missing required domain-spec in"
                                                : "Junk encountered in mechanism",
                        t);
    struct pol_spf_macro_diag diag = {POL_SPF_MACRO_OK, 0, 0};
    size_t n = spec_prefix(s + 1, len - 1, &diag);
    if (n != len - 1)
        return spec_err(err, err_len, t, s + 1, len - 1, n, &diag, false);
    t->spec = s + 1;
    t->spec_len = n;
    return 0;
}

/* a, mx: [ ":" domain-spec ] [ dual-cidr-length ]. */
static int parse_spec_cidr(const char *s, size_t len, struct pol_spf_term *t, char *err,
                           size_t err_len)
{
    if (len > 0 && s[0] == ':') {
        struct pol_spf_macro_diag diag = {POL_SPF_MACRO_OK, 0, 0};
        size_t n = len > 1 ? spec_prefix(s + 1, len - 1, &diag) : 0;
        if (n == 0)
            return spec_err(err, err_len, t, s + 1, len - 1, 0, &diag, false);
        t->spec = s + 1;
        t->spec_len = n;
        s += 1 + n;
        len -= 1 + n;
    }
    return parse_dual_cidr(s, len, t, err, err_len);
}

/* The lengths a qnum (RFC 7208 5.6: "25[0-5] | 2[0-4]DIGIT | 1DIGIT DIGIT | [1-9]DIGIT | DIGIT")
 * can take at s, in Mail::SPF's regex alternation order (longest first): lens[0..return). */
static size_t qnum_lens(const char *s, size_t len, size_t lens[3])
{
    size_t n = 0;
    if (len >= 3 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) &&
        (s[0] == '1' || (s[0] == '2' && (s[1] < '5' || (s[1] == '5' && s[2] <= '5')))))
        lens[n++] = 3;
    if (len >= 2 && s[0] >= '1' && s[0] <= '9' && is_digit(s[1]))
        lens[n++] = 2;
    if (len >= 1 && is_digit(s[0]))
        lens[n++] = 1;
    return n;
}

/* The dotted quad at s as Mail::SPF's ipv4_address_pattern matches it: the first match the
 * regex engine finds, which may leave digits behind ("192.0.2.300" matches "192.0.2.30", and
 * the "0" left is junk). Returns the bytes used, or 0 when nothing matches. */
static size_t parse_ip4_from(const char *s, size_t len, unsigned part, uint8_t *out)
{
    size_t lens[3], n = qnum_lens(s, len, lens);
    for (size_t k = 0; k < n; k++) {
        unsigned v = 0;
        for (size_t j = 0; j < lens[k]; j++)
            v = v * 10 + (unsigned)(s[j] - '0');
        out[part] = (uint8_t)v;
        if (part == 3)
            return lens[k];
        if (lens[k] < len && s[lens[k]] == '.') {
            size_t rest = parse_ip4_from(s + lens[k] + 1, len - lens[k] - 1, part + 1, out);
            if (rest > 0)
                return lens[k] + 1 + rest;
        }
    }
    return 0;
}

static size_t parse_ip4(const char *s, size_t len, uint8_t *out)
{
    return parse_ip4_from(s, len, 0, out);
}

static int parse_ip4_mech(const char *s, size_t len, struct pol_spf_term *t, char *err,
                          size_t err_len)
{
    size_t n = len > 0 && s[0] == ':' ? parse_ip4(s + 1, len - 1, t->net) : 0;
    if (n == 0)
        return term_err(err, err_len, "Missing required IPv4 address in", t);
    size_t i = 1 + n;
    int c = parse_cidr(s + i, len - i, 32, &t->cidr4);
    if (c < 0)
        return term_err(err, err_len, "Invalid IPv4 prefix length encountered in", t);
    i += (size_t)c;
    if (i != len)
        return term_err(err, err_len, "Junk encountered in mechanism", t);
    return 0;
}

static int parse_ip6_mech(const char *s, size_t len, struct pol_spf_term *t, char *err,
                          size_t err_len)
{
    if (len < 2 || s[0] != ':')
        return term_err(err, err_len, "Missing required IPv6 address in", t);
    const char *slash = memchr(s + 1, '/', len - 1);
    size_t alen = slash ? (size_t)(slash - (s + 1)) : len - 1;
    char buf[64];
    if (alen == 0 || alen >= sizeof buf)
        return term_err(err, err_len, "Missing required IPv6 address in", t);
    memcpy(buf, s + 1, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET6, buf, t->net) != 1)
        return term_err(err, err_len, "Missing required IPv6 address in", t);
    size_t i = 1 + alen;
    int c = parse_cidr(s + i, len - i, 128, &t->cidr6);
    if (c < 0)
        return term_err(err, err_len, "Invalid IPv6 prefix length encountered in", t);
    i += (size_t)c;
    if (i != len)
        return term_err(err, err_len, "Junk encountered in mechanism", t);
    return 0;
}

static const struct {
    const char *name;
    enum pol_spf_mech mech;
} mech_names[] = {
    {"all", POL_SPF_MECH_ALL}, {"include", POL_SPF_MECH_INCLUDE}, {"a", POL_SPF_MECH_A},
    {"mx", POL_SPF_MECH_MX},   {"ptr", POL_SPF_MECH_PTR},         {"ip4", POL_SPF_MECH_IP4},
    {"ip6", POL_SPF_MECH_IP6}, {"exists", POL_SPF_MECH_EXISTS},
};

static int parse_mechanism(const char *rec, size_t rec_len, struct pol_spf_term *t, char *err,
                           size_t err_len)
{
    const char *s = t->text;
    size_t len = t->text_len, i = 0;
    if (s[0] == '+' || s[0] == '-' || s[0] == '~' || s[0] == '?')
        t->qual = s[i++];
    size_t name = i;
    if (i < len && is_alpha(s[i]))
        while (i < len && is_name_char(s[i]))
            i++;
    if (i == name || (i < len && s[i] != ':' && s[i] != '/')) {
        snprintf(err, err_len, "Junk encountered in record '%.*s'", (int)rec_len, rec);
        return -1;
    }
    size_t k = 0;
    while (k < sizeof mech_names / sizeof mech_names[0] &&
           !eq_nocase(s + name, i - name, mech_names[k].name))
        k++;
    if (k == sizeof mech_names / sizeof mech_names[0]) {
        char lc[64];
        size_t n = i - name < sizeof lc ? i - name : sizeof lc - 1;
        for (size_t j = 0; j < n; j++)
            lc[j] = lower(s[name + j]);
        snprintf(err, err_len, "Unknown mechanism type '%.*s' in 'v=spf1' record", (int)n, lc);
        return -1;
    }
    t->mech = mech_names[k].mech;
    const char *p = s + i;
    size_t plen = len - i;
    switch (t->mech) {
    case POL_SPF_MECH_ALL:
        return plen == 0 ? 0 : term_err(err, err_len, "Junk encountered in mechanism", t);
    case POL_SPF_MECH_INCLUDE:
    case POL_SPF_MECH_EXISTS:
        return parse_spec_only(p, plen, t, err, err_len);
    case POL_SPF_MECH_PTR:
        return plen == 0 ? 0 : parse_spec_only(p, plen, t, err, err_len);
    case POL_SPF_MECH_A:
    case POL_SPF_MECH_MX:
        return parse_spec_cidr(p, plen, t, err, err_len);
    case POL_SPF_MECH_IP4:
        return parse_ip4_mech(p, plen, t, err, err_len);
    case POL_SPF_MECH_IP6:
        return parse_ip6_mech(p, plen, t, err, err_len);
    }
    ENG_ASSERT(0);
    return -1;
}

/* name "=" value: redirect and exp take a domain-spec, others a macro-string. */
static int parse_modifier(struct pol_spf_term *t, size_t name_len, char *err, size_t err_len)
{
    const char *v = t->text + name_len + 1;
    size_t vlen = t->text_len - name_len - 1;
    bool redirect = eq_nocase(t->text, name_len, "redirect");
    bool exp = eq_nocase(t->text, name_len, "exp");
    if (!redirect && !exp) {
        struct pol_spf_macro_diag diag;
        t->kind = POL_SPF_TERM_UNKNOWN_MOD;
        if (!pol_spf_macro_check(v, vlen, true, &diag))
            return term_err(err, err_len, "Invalid macro string encountered in", t);
        return 0;
    }
    t->kind = redirect ? POL_SPF_TERM_REDIRECT : POL_SPF_TERM_EXP;
    struct pol_spf_macro_diag diag = {POL_SPF_MACRO_OK, 0, 0};
    size_t n = vlen > 0 ? spec_prefix(v, vlen, &diag) : 0;
    if (n != vlen || n == 0)
        return spec_err(err, err_len, t, v, vlen, n, &diag, true);
    t->spec = v;
    t->spec_len = vlen;
    return 0;
}

int pol_spf_record_next(const char *rec, size_t len, size_t *pos, struct pol_spf_term *t, char *err,
                        size_t err_len)
{
    size_t i = *pos;
    if (i == 0) {
        ENG_ASSERT(pol_spf_record_is_v1(rec, len));
        i = 6;
    }
    while (i < len && rec[i] == ' ')
        i++;
    if (i >= len) {
        *pos = len;
        return 0;
    }
    size_t start = i;
    while (i < len && rec[i] != ' ')
        i++;
    *pos = i;
    memset(t, 0, sizeof *t);
    t->text = rec + start;
    t->text_len = i - start;
    t->qual = '+';
    t->cidr4 = 32;
    t->cidr6 = 128;
    /* A modifier is a name (RFC 7208 12: ALPHA *(ALPHA / DIGIT / "-" / "_" / ".")) then "=";
     * anything else is a directive. */
    size_t n = 0;
    if (is_alpha(t->text[0]))
        while (n < t->text_len && is_name_char(t->text[n]))
            n++;
    if (n > 0 && n < t->text_len && t->text[n] == '=')
        return parse_modifier(t, n, err, err_len) == 0 ? 1 : -1;
    t->kind = POL_SPF_TERM_MECH;
    return parse_mechanism(rec, len, t, err, err_len) == 0 ? 1 : -1;
}

int pol_spf_record_check(const char *rec, size_t len, struct pol_spf_record_info *info, char *err,
                         size_t err_len)
{
    memset(info, 0, sizeof *info);
    size_t pos = 0;
    struct pol_spf_term t;
    int rc;
    while ((rc = pol_spf_record_next(rec, len, &pos, &t, err, err_len)) == 1) {
        info->term_count++;
        if (t.kind != POL_SPF_TERM_REDIRECT && t.kind != POL_SPF_TERM_EXP)
            continue;
        bool redirect = t.kind == POL_SPF_TERM_REDIRECT;
        size_t *spec_len = redirect ? &info->redirect_len : &info->exp_len;
        if (*spec_len != 0) {
            snprintf(err, err_len, "Duplicate global modifier '%s' encountered",
                     redirect ? "redirect" : "exp");
            return -1;
        }
        *(redirect ? &info->redirect_pos : &info->exp_pos) = (size_t)(t.spec - rec);
        *spec_len = t.spec_len;
    }
    return rc;
}

/* The domain-spec in lower case without one trailing dot (Mail::SPF normalises it so). */
static size_t put_spec(const struct pol_spf_term *t, char *out, size_t n, size_t cap)
{
    size_t len = t->spec_len;
    if (len > 1 && t->spec[len - 1] == '.')
        len--;
    for (size_t i = 0; i < len && n + 1 < cap; i++)
        out[n++] = lower(t->spec[i]);
    return n;
}

size_t pol_spf_term_format(const struct pol_spf_term *t, char *out, size_t out_len)
{
    ENG_ASSERT(out_len > 0);
    ENG_ASSERT(t->kind == POL_SPF_TERM_MECH);
    size_t n = 0;
    char tmp[128];
    if (t->qual != '+')
        tmp[n++] = t->qual;
    n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s", mech_names[t->mech].name);
    ENG_ASSERT(mech_names[t->mech].mech == t->mech);
    if (t->mech == POL_SPF_MECH_IP4 || t->mech == POL_SPF_MECH_IP6) {
        struct pol_spf_ip ip = {.family = t->mech == POL_SPF_MECH_IP4 ? 4 : 6};
        memcpy(ip.bytes, t->net, 16);
        tmp[n++] = ':';
        n += pol_spf_ip_format(&ip, true, tmp + n);
        unsigned pfx = ip.family == 4 ? t->cidr4 : t->cidr6;
        if (pfx != (ip.family == 4 ? 32u : 128u))
            n += (size_t)snprintf(tmp + n, sizeof tmp - n, "/%u", pfx);
        snprintf(out, out_len, "%.*s", (int)n, tmp);
        return n < out_len ? n : out_len - 1;
    }
    size_t w = 0;
    for (size_t i = 0; i < n && w + 1 < out_len; i++)
        out[w++] = tmp[i];
    if (t->spec_len > 0 && w + 1 < out_len) {
        out[w++] = ':';
        w = put_spec(t, out, w, out_len);
    }
    char cidr[16] = "";
    if (t->mech == POL_SPF_MECH_A || t->mech == POL_SPF_MECH_MX) {
        size_t c = 0;
        if (t->cidr4 != 32)
            c += (size_t)snprintf(cidr + c, sizeof cidr - c, "/%u", t->cidr4);
        if (t->cidr6 != 128)
            snprintf(cidr + c, sizeof cidr - c, "//%u", t->cidr6);
    }
    for (size_t i = 0; cidr[i] != '\0' && w + 1 < out_len; i++)
        out[w++] = cidr[i];
    out[w] = '\0';
    return w;
}
