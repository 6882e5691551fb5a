/*
 * ldb_keys.h: the pure parts of PostfixMap and SaAwlLookup (spec 13.15, 13.24): which keys an
 * address is looked up under, and how a found value is judged, written to give 2.05's answers
 * byte for byte (its Perl regular expressions, split and NetAddr::IP, rewritten as small
 * scanners). No I/O, no allocation; callable from any thread.
 */
#ifndef POL_PLUGINS_LDB_KEYS_H
#define POL_PLUGINS_LDB_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PostfixMap's address classes: /^\d+\.\d+\.\d+\.\d+$/ (IPv4, tried by dropping octets),
 * /^[:0-9a-f]+$/ (lower-case IPv6, tried by dropping groups), anything else (a failure). */
enum ldb_pfm_class {
    LDB_PFM_IPV4,
    LDB_PFM_IPV6,
    LDB_PFM_OTHER,
};
enum ldb_pfm_class ldb_pfm_classify(const char *ip, size_t len);

/* The next, shorter key to try after key[0..len) for this class, as a length (the keys are
 * prefixes of the address), or 0 when there is none. IPv4: drop the last octet and its dot.
 * IPv6: 2.05's s/:+[^:]+$// (drop the last group and the colons before it). An address
 * ending in a colon ("2001:db8::") has no last group, and 2.05 loops forever on it; here the
 * trailing colons are dropped instead ("2001:db8"). */
size_t ldb_pfm_parent_len(enum ldb_pfm_class cls, const char *key, size_t len);

/* 2.05: an IPv4 key counts when present (any value); an IPv6 key only when its value is Perl-
 * true (not empty, not "0"). */
bool ldb_pfm_value_counts(enum ldb_pfm_class cls, const char *val, size_t len);

/* Matched: the value is `OK` or all digits (Perl's /^\d+$/, so one trailing LF is allowed). */
bool ldb_pfm_value_matches(const char *val, size_t len);

/* Perl's truth of a string: false for "" and "0" only. */
bool ldb_perl_true(const char *s, size_t len);

/* SaAwlLookup's address key: with a ':' the /48 network as eight upper-case 4-digit groups
 * with the first run of ":0000" replaced by "::" (NetAddr::IP's full6 and 2.05's
 * s/(:0000)+/::/), written to out (NUL-terminated; it holds LDB_AWL_IP_KEY_BYTES); otherwise
 * 2.05's /^(\d+\.\d+).\d+.\d+$/ (dots in the second half unescaped: any character), a prefix
 * of ip. Returns the key (out, or ip) and its length in *key_len, or NULL when the address
 * gives no key (then nothing is looked up). */
#define LDB_AWL_IP_KEY_BYTES 48u
const char *ldb_awl_ip_key(const char *ip, size_t len, char *out, size_t *key_len);

/* SaAwlLookup's cached result "SCORE COUNT" (SCORE as "%.17g", COUNT as the file holds it):
 * true and the parts, or false for anything else (the empty "no entry"). */
bool ldb_awl_result_parse(const char *text, size_t len, double *score, const char **count,
                          size_t *count_len);

#ifdef __cplusplus
}
#endif

#endif
