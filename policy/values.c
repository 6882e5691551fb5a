/*
 * values.c: option value types (values.h) and Perl's number conversions (pol/plugin.h).
 *
 * pol_num_perl follows perl 5.36's numification, checked row by row against `perl -e` output
 * (tests/unit/parse/values_expect.inc): leading whitespace (space, \t, \n, \v, \f, \r) is
 * skipped, then an optional sign, then either Perl's infinity/NaN spellings ("inf...",
 * "nan...", "snan", "qnan", and the Windows "1.#INF", "1.#IND", "1.#QNAN", "1.#SNAN" forms),
 * or the longest decimal prefix (digits, fraction, exponent); anything else is 0. No hex,
 * octal or underscores, as in Perl. The decimal prefix is rounded once, correctly, by strtod:
 * it is rewritten as "DIGITSeEXP" (no decimal point, so the locale does not matter), keeping
 * 768 significant digits plus a sticky digit, which is enough to round any double correctly.
 *
 * pol_num_format prints a double as Perl prints a value it holds as a double (NV): "%.15g",
 * except that zero (also -0.0) is "0" and the infinities and NaN are "Inf", "-Inf" and "NaN".
 * Known difference: Perl prints a value it holds as an integer (IV) in full, and its + and -
 * yield an IV for integral operands, depending on their history; below 1e15 both print the
 * same, above it Perl may print 1000000000000001 where we print 1e+15.
 *
 * Pure and allocation-free (the number buffer is on the stack); any thread.
 */
#include "values.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>
#include <pol/plugin.h>

/* Significant digits kept when converting; 767 decide the rounding of any double, one more
 * and a sticky digit make the truncation exact for rounding purposes. */
enum { DIGITS_KEPT = 768 };
/* An exponent beyond this makes any value inf or 0 already; saturating keeps int math safe. */
enum { EXP_CLAMP = 100000 };
_Static_assert(DIGITS_KEPT + EXP_CLAMP < INT_MAX / 2, "exponent arithmetic fits in int");

static bool is_perl_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t digits_span(const char *s, size_t len, size_t i)
{
    while (i < len && is_digit(s[i])) {
        i++;
    }
    return i;
}

static bool fold_eq(const char *s, size_t len, size_t i, const char *word)
{
    size_t n = strlen(word);
    if (i > len || len - i < n) {
        return false;
    }
    for (size_t k = 0; k < n; k++) {
        char c = s[i + k];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != word[k]) {
            return false;
        }
    }
    return true;
}

/* Perl's infinity and NaN spellings at s[i..] (after the sign), matched case-insensitively
 * and followed by anything. Returns 1 for infinity, 2 for NaN, 0 for neither. */
static int infnan(const char *s, size_t len, size_t i)
{
    if (fold_eq(s, len, i, "1.#")) {
        i += 3;
        if (fold_eq(s, len, i, "inf")) {
            return 1;
        }
        if (fold_eq(s, len, i, "ind")) {
            return 2;
        }
    } else if (fold_eq(s, len, i, "inf")) {
        return 1;
    }
    if (fold_eq(s, len, i, "s") || fold_eq(s, len, i, "q")) {
        i++;
    }
    return fold_eq(s, len, i, "nan") ? 2 : 0;
}

/* The decimal number at the start of s[i..len): [digits][.digits] with at least one digit,
 * then an optional exponent. */
struct decimal {
    size_t int_start, int_end;   /* integer digits */
    size_t frac_start, frac_end; /* fraction digits (empty when none) */
    long exp;                    /* explicit exponent, saturated at +-EXP_CLAMP */
    size_t end;                  /* first byte after the number */
};

static size_t scan_exponent(const char *s, size_t len, size_t i, long *exp)
{
    *exp = 0;
    if (i >= len || (s[i] != 'e' && s[i] != 'E')) {
        return i;
    }
    size_t j = i + 1;
    bool neg = false;
    if (j < len && (s[j] == '+' || s[j] == '-')) {
        neg = s[j] == '-';
        j++;
    }
    size_t end = digits_span(s, len, j);
    if (end == j) {
        return i; /* "1e", "1e+": the exponent is not part of the number */
    }
    long v = 0;
    for (size_t k = j; k < end; k++) {
        v = v * 10 + (s[k] - '0');
        if (v > EXP_CLAMP) {
            v = EXP_CLAMP;
        }
    }
    *exp = neg ? -v : v;
    return end;
}

static bool scan_decimal(const char *s, size_t len, size_t i, struct decimal *d)
{
    d->int_start = i;
    d->int_end = digits_span(s, len, i);
    d->frac_start = d->frac_end = d->int_end;
    if (d->int_end < len && s[d->int_end] == '.') {
        d->frac_start = d->int_end + 1;
        d->frac_end = digits_span(s, len, d->frac_start);
    }
    if (d->int_end == d->int_start && d->frac_end == d->frac_start) {
        return false;
    }
    size_t after = d->frac_end > d->int_end ? d->frac_end : d->int_end;
    if (after == d->int_end && d->int_end < len && s[d->int_end] == '.') {
        after = d->int_end + 1; /* "5." takes its dot */
    }
    d->end = scan_exponent(s, len, after, &d->exp);
    return true;
}

/* Rounds a scanned decimal to the nearest double. */
static double decimal_value(const char *s, const struct decimal *d)
{
    char buf[DIGITS_KEPT + 2 + 16];
    size_t n = 0;
    bool sticky = false;
    long dropped = 0; /* integer digits beyond DIGITS_KEPT: each multiplies by 10 */
    long frac_used = 0;
    for (size_t k = d->int_start; k < d->int_end; k++) {
        if (n == 0 && s[k] == '0') {
            continue;
        }
        if (n < DIGITS_KEPT) {
            buf[n++] = s[k];
        } else {
            dropped++;
            sticky = sticky || s[k] != '0';
        }
    }
    for (size_t k = d->frac_start; k < d->frac_end; k++) {
        if (n == 0 && s[k] == '0') {
            frac_used++; /* leading zeros of the fraction only shift the exponent */
            continue;
        }
        if (n < DIGITS_KEPT) {
            buf[n++] = s[k];
            frac_used++;
        } else {
            sticky = sticky || s[k] != '0';
        }
    }
    if (n == 0) {
        return 0.0;
    }
    if (sticky) {
        buf[n++] = '1';
        dropped--; /* the sticky digit sits one place below the last kept one */
    }
    long exp = d->exp + dropped - frac_used;
    int w = snprintf(buf + n, sizeof(buf) - n, "e%ld", exp);
    ENG_ASSERT(w > 0);
    ENG_ASSERT((size_t)w < sizeof(buf) - n);
    return strtod(buf, NULL);
}

double pol_num_perl(const char *s, size_t len)
{
    ENG_ASSERT(s != NULL || len == 0);
    size_t i = 0;
    while (i < len && is_perl_space(s[i])) {
        i++;
    }
    bool neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    switch (infnan(s, len, i)) {
    case 1:
        return neg ? -INFINITY : INFINITY;
    case 2:
        return NAN;
    default:
        break;
    }
    struct decimal d;
    if (!scan_decimal(s, len, i, &d)) {
        return 0.0;
    }
    double v = decimal_value(s, &d);
    return neg ? -v : v;
}

size_t pol_num_format(char *buf, size_t buf_len, double v)
{
    ENG_ASSERT(buf != NULL || buf_len == 0);
    int n;
    if (isnan(v)) {
        n = snprintf(buf, buf_len, "NaN");
    } else if (isinf(v)) {
        n = snprintf(buf, buf_len, "%s", v > 0 ? "Inf" : "-Inf");
    } else if (v == 0.0) {
        n = snprintf(buf, buf_len, "0"); /* also -0.0, as Perl prints it */
    } else {
        n = snprintf(buf, buf_len, "%.15g", v);
    }
    ENG_ASSERT(n > 0);
    ENG_ASSERT(n < POL_NUM_FORMAT_BYTES);
    return (size_t)n;
}

/* ---------------------------------------------------------------------------------------------
 * Option types
 */

/* Writes `"TEXT" WHAT` into err: at most 64 bytes of the text, other than printable ASCII
 * shown as '?', so that a message stays one readable line. */
static void refuse(char *err, size_t err_len, const char *s, size_t len, const char *what)
{
    if (err == NULL || err_len == 0) {
        return;
    }
    char shown[64 + 4];
    size_t n = len < 64 ? len : 64;
    for (size_t k = 0; k < n; k++) {
        shown[k] = s[k] >= 0x20 && s[k] < 0x7f ? s[k] : '?';
    }
    if (len > n) {
        memcpy(shown + n, "...", 3);
        n += 3;
    }
    shown[n] = '\0';
    snprintf(err, err_len, "\"%s\" %s", shown, what);
}

bool pol_value_int(const char *s, size_t len, long long *out, char *err, size_t err_len)
{
    ENG_ASSERT(s != NULL || len == 0);
    ENG_ASSERT(out != NULL);
    size_t i = len > 0 && s[0] == '-' ? 1 : 0;
    if (i == len || digits_span(s, len, i) != len) {
        refuse(err, err_len, s, len, "is not an integer (an optional '-' then digits)");
        return false;
    }
    /* Accumulate towards the sign so that LLONG_MIN fits. */
    long long v = 0;
    for (size_t k = i; k < len; k++) {
        int digit = s[k] - '0';
        if (i == 1 ? v < (LLONG_MIN + digit) / 10 : v > (LLONG_MAX - digit) / 10) {
            refuse(err, err_len, s, len, "is out of range for an integer");
            return false;
        }
        v = i == 1 ? v * 10 - digit : v * 10 + digit;
    }
    *out = v;
    return true;
}

/* Moose's Num: [+-]? then digits, or [+-]? (?=\d|\.\d) \d* (\.\d+)? ([Ee][+-]?\d+)? */
static bool is_number_text(const char *s, size_t len)
{
    size_t i = len > 0 && (s[0] == '+' || s[0] == '-') ? 1 : 0;
    size_t int_end = digits_span(s, len, i);
    size_t end = int_end;
    if (end < len && s[end] == '.') {
        size_t frac_end = digits_span(s, len, end + 1);
        if (frac_end == end + 1) {
            return false; /* "5." and "." */
        }
        end = frac_end;
    }
    if (end == i) {
        return false; /* no digits at all */
    }
    if (end < len && (s[end] == 'e' || s[end] == 'E')) {
        size_t j = end + 1;
        if (j < len && (s[j] == '+' || s[j] == '-')) {
            j++;
        }
        end = digits_span(s, len, j);
        if (end == j) {
            return false;
        }
    }
    return end == len;
}

bool pol_value_number(const char *s, size_t len, double *out, char *err, size_t err_len)
{
    ENG_ASSERT(s != NULL || len == 0);
    ENG_ASSERT(out != NULL);
    if (!is_number_text(s, len)) {
        refuse(err, err_len, s, len,
               "is not a number (digits with an optional sign, fraction and exponent, such as "
               "5, -2.5, .5 or 1e3)");
        return false;
    }
    *out = pol_num_perl(s, len);
    return true;
}

bool pol_value_bool(const char *s, size_t len, bool *out, char *err, size_t err_len)
{
    ENG_ASSERT(s != NULL || len == 0);
    ENG_ASSERT(out != NULL);
    if (len == 0 || (len == 1 && s[0] == '0')) {
        *out = false;
        return true;
    }
    if (len == 1 && s[0] == '1') {
        *out = true;
        return true;
    }
    refuse(err, err_len, s, len, "is not a boolean (1, 0 or empty)");
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * Lists
 */

/* The leftmost separator at or after `from`, as Perl's regex engine finds it: a run of
 * whitespace followed by a comma (then whitespace), or, with spaces allowed, a run of
 * whitespace containing a space. Sets [*sep_start, *sep_end); returns false when none. */
static bool find_separator(const char *s, size_t len, size_t from, enum pol_list_sep sep,
                           size_t *sep_start, size_t *sep_end)
{
    size_t i = from;
    while (i < len) {
        if (s[i] != ',' && !is_perl_space(s[i])) {
            i++;
            continue;
        }
        size_t run_end = i;
        bool has_space = false;
        while (run_end < len && is_perl_space(s[run_end])) {
            has_space = has_space || s[run_end] == ' ';
            run_end++;
        }
        size_t end;
        if (run_end < len && s[run_end] == ',') {
            end = run_end + 1;
        } else if (sep == POL_LIST_COMMA_SPACE && has_space) {
            end = run_end;
        } else {
            i = run_end > i ? run_end : i + 1;
            continue;
        }
        while (end < len && is_perl_space(s[end])) {
            end++;
        }
        *sep_start = i;
        *sep_end = end;
        return true;
    }
    return false;
}

size_t pol_value_list_split(const char *s, size_t len, enum pol_list_sep sep,
                            struct pol_value_slice *items, size_t cap)
{
    ENG_ASSERT(s != NULL || len == 0);
    ENG_ASSERT(items != NULL || cap == 0);
    size_t count = 0;    /* items so far, trailing empty ones included */
    size_t nonempty = 0; /* count up to and including the last non-empty item */
    size_t pos = 0;
    while (pos < len) {
        size_t a, b;
        bool found = find_separator(s, len, pos, sep, &a, &b);
        size_t item_end = found ? a : len;
        if (count < cap) {
            items[count].ptr = s + pos;
            items[count].len = item_end - pos;
        }
        count++;
        if (item_end > pos) {
            nonempty = count;
        }
        if (!found) {
            break;
        }
        pos = b;
    }
    return nonempty;
}
