/*
 * values.h: the option value types of spec section 1 as pure functions (int, number, bool,
 * list), used when plugin and global options are checked at start-up. The Perl number
 * conversions pol_num_perl and pol_num_format (declared in pol/plugin.h) live in values.c too.
 *
 * The grammars are those of the Moose type constraints mtpolicyd 2.05 declares its options
 * with (Moose/Util/TypeConstraints/Builtins.pm), and lists split exactly as Perl's split does.
 * Variable references ([scope:]name) are parsed by var.h.
 *
 * Pure: no allocation, no global state; any thread. Inputs are (pointer, length) and need not
 * be NUL-terminated. A refused value gives false and a sentence in the caller's buffer.
 */
#ifndef POL_VALUES_H
#define POL_VALUES_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* pol_num_format never needs more than this (e.g. "-2.22507385850720e-308" is 22). */
#define POL_NUM_FORMAT_BYTES 32

/* int: optional '-' then ASCII digits ("+5", "1.0", "1e3", " 5" are refused). Values outside
 * long long are refused too (2.05 would accept them as imprecise floats). */
bool pol_value_int(const char *s, size_t len, long long *out, char *err, size_t err_len);

/* number: optional sign, then digits with an optional fraction, or a leading-dot fraction,
 * then an optional exponent ("5", "-2.5", ".5", "+1e3"; not "5.", "0x10", "inf", ""). *out is
 * the value Perl gives it (so "1e999" is accepted and is +inf, as in 2.05). */
bool pol_value_number(const char *s, size_t len, double *out, char *err, size_t err_len);

/* bool: exactly "1" (true), "0" or "" (false). */
bool pol_value_bool(const char *s, size_t len, bool *out, char *err, size_t err_len);

/* Lists. POL_LIST_COMMA splits like Perl's split(qr{\s*,\s*}, s), the form mtpolicyd uses for
 * every list option; POL_LIST_COMMA_SPACE like split(qr{\s*[, ]\s*}, s), the form of the SPF
 * whitelist (AddressList.pm), where a space also separates. Perl's rules are kept: whitespace
 * (space, \t, \n, \v, \f, \r) next to a separator is dropped but not at the ends of the whole
 * text, empty items inside and at the start are kept ("a,,b", ",a"), empty items at the end
 * are dropped ("a," has one item, "," and "" none). */
enum pol_list_sep {
    POL_LIST_COMMA,
    POL_LIST_COMMA_SPACE,
};

struct pol_value_slice {
    const char *ptr; /* into the text that was split */
    size_t len;
};

/* Writes the first min(count, cap) items to items (which may be NULL when cap is 0) and
 * returns count, the number of items; call again with a larger array if count > cap. */
size_t pol_value_list_split(const char *s, size_t len, enum pol_list_sep sep,
                            struct pol_value_slice *items, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
