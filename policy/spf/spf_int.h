/*
 * spf/spf_int.h: the pure parts of the SPF evaluator, shared by its modules and exposed to the
 * unit tests and the fuzzer: the record parser (record.c), the macro checker and expander
 * (macro.c) and address helpers (record.c). None of them does I/O or allocates; strings are
 * (pointer, length) slices, output goes into caller buffers, and errors are sentences worded
 * like Mail::SPF's.
 */
#ifndef POL_SPF_SPF_INT_H
#define POL_SPF_SPF_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spf/spf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Addresses
 */

struct pol_spf_ip {
    int family;        /* 4 or 6 */
    uint8_t bytes[16]; /* family 4: bytes[0..4) */
};

/* Parses an address as Postfix writes client_address; IPv4-mapped IPv6 becomes IPv4. Returns
 * 0, or -1 when s is not an address. */
int pol_spf_ip_parse(const char *s, size_t len, struct pol_spf_ip *ip);
/* Does ip lie in net/prefix (both of family)? */
bool pol_spf_ip_in(const struct pol_spf_ip *ip, const uint8_t *net, unsigned prefix);
/* Text forms: IPv4 dotted quad; IPv6 compressed (longest zero run of two or more groups, the
 * first on a tie), upper or lower case hex. Returns the length (out needs 46 bytes). */
size_t pol_spf_ip_format(const struct pol_spf_ip *ip, bool upper, char *out);

/* ---------------------------------------------------------------------------------------------
 * Records
 */

enum pol_spf_term_kind {
    POL_SPF_TERM_MECH,
    POL_SPF_TERM_REDIRECT,
    POL_SPF_TERM_EXP,
    POL_SPF_TERM_UNKNOWN_MOD,
};

enum pol_spf_mech {
    POL_SPF_MECH_ALL,
    POL_SPF_MECH_INCLUDE,
    POL_SPF_MECH_A,
    POL_SPF_MECH_MX,
    POL_SPF_MECH_PTR,
    POL_SPF_MECH_IP4,
    POL_SPF_MECH_IP6,
    POL_SPF_MECH_EXISTS,
};

struct pol_spf_term {
    enum pol_spf_term_kind kind;
    enum pol_spf_mech mech; /* POL_SPF_TERM_MECH */
    char qual;              /* '+', '-', '~' or '?' ('+' when none was written) */
    const char *text;       /* the whole term as written */
    size_t text_len;
    const char *spec; /* the domain-spec, unexpanded; spec_len 0: none (use <domain>) */
    size_t spec_len;
    unsigned cidr4, cidr6; /* a, mx, ip4, ip6: prefix lengths (default 32 and 128) */
    uint8_t net[16];       /* ip4 (first 4 bytes), ip6 */
};

/* Is rec an SPF version 1 record ("v=spf1" in any case, then a space or the end)? */
bool pol_spf_record_is_v1(const char *rec, size_t len);

/* Iterates over the terms of a v=spf1 record: *pos starts at 0 and is advanced past each term.
 * Returns 1 with *t filled (slices into rec), 0 at the end, or -1 with the permerror text in
 * err (e.g. "Unknown mechanism type 'foo' in 'v=spf1' record"). The record text is named in
 * some messages, unsanitised (the caller sanitises the whole explanation). */
int pol_spf_record_next(const char *rec, size_t len, size_t *pos, struct pol_spf_term *t, char *err,
                        size_t err_len);

struct pol_spf_record_info {
    size_t redirect_pos, redirect_len; /* domain-spec of redirect=, len 0: none */
    size_t exp_pos, exp_len;           /* domain-spec of exp=, len 0: none */
    uint32_t term_count;
};

/* Checks a whole record before evaluation (RFC 7208 4.6: a syntax error anywhere is a
 * permerror) and finds its modifiers. Returns 0, or -1 with the text in err. */
int pol_spf_record_check(const char *rec, size_t len, struct pol_spf_record_info *info, char *err,
                         size_t err_len);

/* The term as Mail::SPF prints it in "(mechanism 'X' matched)": the qualifier unless '+', the
 * name in lower case, then its parameters (domain-spec in lower case without trailing dot,
 * prefix lengths unless default, addresses normalised). Returns the length written (cut to
 * out_len - 1, NUL-terminated). */
size_t pol_spf_term_format(const struct pol_spf_term *t, char *out, size_t out_len);

/* ---------------------------------------------------------------------------------------------
 * Macros (RFC 7208 7)
 */

enum pol_spf_macro_err {
    POL_SPF_MACRO_OK,
    POL_SPF_MACRO_INVALID,  /* "%" not followed by {, %, _ or -, or a malformed %{...} */
    POL_SPF_MACRO_LETTER,   /* unknown macro letter */
    POL_SPF_MACRO_EXP_ONLY, /* c, r or t outside an explanation */
    POL_SPF_MACRO_ZERO,     /* a right-hand part count of 0 */
};

struct pol_spf_macro_diag {
    enum pol_spf_macro_err err;
    size_t pos;  /* offset of the '%' */
    char letter; /* POL_SPF_MACRO_LETTER / EXP_ONLY: the letter as written */
};

/* Checks the macro-string s[0..len): every byte a macro-literal (0x21-0x7e) or part of a valid
 * macro-expand. exp: c, r and t are allowed. Returns true, or false with *diag filled. */
bool pol_spf_macro_check(const char *s, size_t len, bool exp, struct pol_spf_macro_diag *diag);
/* The permerror text for a failed check of s ("Unknown macro character 'a' at pos 0 in macro
 * string '%{a}.example.com'", ...). */
void pol_spf_macro_diag_text(const struct pol_spf_macro_diag *d, const char *s, size_t len,
                             char *err, size_t err_len);

/* Is s[0..len) a domain-spec (RFC 7208 7.1: a macro-string ending in a macro-expand or in
 * "." toplabel ["."])? exp as for pol_spf_macro_check; *diag says why not when the macros are
 * at fault (else diag->err is POL_SPF_MACRO_OK). */
bool pol_spf_domain_spec_check(const char *s, size_t len, bool exp,
                               struct pol_spf_macro_diag *diag);

/* Values for expansion. Slices; p_len SIZE_MAX means "not computed yet". */
struct pol_spf_macro_ctx {
    const char *s, *l, *o, *d, *h, *r, *p;
    size_t s_len, l_len, o_len, d_len, h_len, r_len, p_len;
    const struct pol_spf_ip *ip;
    enum pol_spf_scope scope;
    int64_t t;
};

enum pol_spf_expand_rc {
    POL_SPF_EXPAND_OK,
    POL_SPF_EXPAND_NEED_P, /* %{p} is used and ctx->p is not computed */
    POL_SPF_EXPAND_SYNTAX, /* the string is not a valid macro-string for this use */
    POL_SPF_EXPAND_LONG,   /* (explanations) the text does not fit out */
};

/* Expands s[0..len) into out (out_cap bytes, NUL-terminated). exp: an explanation string (c, r,
 * t allowed; a text longer than out_cap - 1 is POL_SPF_EXPAND_LONG). Otherwise a domain-spec
 * for a query: when the text would not fit, the oldest bytes are dropped (only the rightmost
 * 253 bytes of a name matter, RFC 7208 7.3), and *dropped says so. *out_len gets the length. */
enum pol_spf_expand_rc pol_spf_macro_expand(const char *s, size_t len,
                                            const struct pol_spf_macro_ctx *ctx, bool exp,
                                            char *out, size_t out_cap, size_t *out_len,
                                            bool *dropped);

/* Mail::SPF's explanation templates use %{_scope} besides the RFC letters: expands
 * "%{s}", "%{c}" and "%{_scope}" only (the local explanation). Same contract as above with
 * exp = true. */
enum pol_spf_expand_rc pol_spf_macro_expand_local(const char *tmpl,
                                                  const struct pol_spf_macro_ctx *ctx, char *out,
                                                  size_t out_cap, size_t *out_len);

/* Turns an expanded domain-spec into a query name (RFC 7208 4.8, 7.3): lower case, one trailing
 * dot removed, leading labels dropped while longer than 253 bytes. Returns the length, or 0
 * when the result is not a usable name (empty, an empty label, a label over 63 bytes). name
 * needs 254 bytes. */
size_t pol_spf_name_normalize(const char *s, size_t len, bool dropped, char *name);

/* Is domain (lower case, no trailing dot) an acceptable <domain> for check_host() (RFC 7208
 * 4.3): at least two labels of 1..63 printable bytes, at most 253 bytes, not a domain literal,
 * a top label that is not all digits? */
bool pol_spf_domain_ok(const char *domain, size_t len);

#ifdef __cplusplus
}
#endif

#endif
