/*
 * ldb_keys.c: lookup keys and value tests of PostfixMap and SaAwlLookup (ldb_keys.h). Pure.
 *
 * Perl details kept: \d is ASCII digits only (the request is a byte string); `$` also matches
 * before one final LF; an unescaped `.` matches any byte but LF. IPv6 addresses for the AWL
 * key are parsed with inet_pton, which accepts and refuses what NetAddr::IP->new6 does for
 * the texts Postfix sends (checked against 2.05: "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4",
 * upper case; "fe80::1%eth0", "1::2::3", "01234::" refused). NetAddr::IP also reads bracketed
 * forms ("[::1]") that Postfix never sends; those give no key here.
 */
#include "plugins/ldb_keys.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Perl's `$` at position i: the end, or a final LF. */
static bool perl_end(const char *s, size_t i, size_t len)
{
    return i == len || (i + 1 == len && s[i] == '\n');
}

/* Digits from i; returns the index after them. */
static size_t skip_digits(const char *s, size_t i, size_t len)
{
    while (i < len && is_digit(s[i]))
        i++;
    return i;
}

/* /^\d+\.\d+\.\d+\.\d+$/ */
static bool is_dotted_quad(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t end = skip_digits(s, i, len);
        if (end == i)
            return false;
        i = end;
        if (part < 3) {
            if (i == len || s[i] != '.')
                return false;
            i++;
        }
    }
    return perl_end(s, i, len);
}

enum ldb_pfm_class ldb_pfm_classify(const char *ip, size_t len)
{
    ENG_ASSERT(ip != NULL || len == 0);
    if (is_dotted_quad(ip, len))
        return LDB_PFM_IPV4;
    size_t i = 0;
    while (i < len && (ip[i] == ':' || is_digit(ip[i]) || (ip[i] >= 'a' && ip[i] <= 'f')))
        i++;
    return i > 0 && perl_end(ip, i, len) ? LDB_PFM_IPV6 : LDB_PFM_OTHER;
}

size_t ldb_pfm_parent_len(enum ldb_pfm_class cls, const char *key, size_t len)
{
    ENG_ASSERT(cls != LDB_PFM_OTHER);
    char sep = cls == LDB_PFM_IPV4 ? '.' : ':';
    const char *last = memrchr(key, sep, len);
    if (last == NULL)
        return 0;
    size_t cut = (size_t)(last - key);
    if (cls == LDB_PFM_IPV4)
        return cut;
    if (cut + 1 == len) { /* ends in ':': drop the colons only */
        while (cut > 0 && key[cut - 1] == ':')
            cut--;
        return cut;
    }
    while (cut > 0 && key[cut - 1] == ':')
        cut--;
    return cut;
}

bool ldb_perl_true(const char *s, size_t len)
{
    return !(len == 0 || (len == 1 && s[0] == '0'));
}

bool ldb_pfm_value_counts(enum ldb_pfm_class cls, const char *val, size_t len)
{
    return cls == LDB_PFM_IPV4 || ldb_perl_true(val, len);
}

bool ldb_pfm_value_matches(const char *val, size_t len)
{
    if (len == 2 && memcmp(val, "OK", 2) == 0)
        return true;
    size_t end = skip_digits(val, 0, len);
    return end > 0 && perl_end(val, end, len);
}

/* /^(\d+\.\d+).\d+.\d+$/: the length of the capture, or 0. The first \d+ cannot give back
 * (a '.' must follow it); the second tries its longest run first, as Perl's backtracking does,
 * and the capture is the first that lets the rest (any byte, digits, any byte, digits, end)
 * match. */
static size_t awl_v4_key_len(const char *s, size_t len)
{
    size_t a = skip_digits(s, 0, len);
    if (a == 0 || a == len || s[a] != '.')
        return 0;
    size_t b_start = a + 1, b_end = skip_digits(s, b_start, len);
    for (size_t g = b_end; g > b_start; g--) {
        /* s[g] is the unescaped '.', then \d+ . \d+ $ from g + 1 */
        if (g >= len || s[g] == '\n')
            continue;
        for (size_t j = g + 2; j < len; j++) { /* s[j] is the second unescaped '.' */
            if (!is_digit(s[j - 1]))
                break; /* the digits run from g + 1 to j - 1 */
            if (s[j] == '\n')
                continue;
            size_t end = skip_digits(s, j + 1, len);
            if (end > j + 1 && perl_end(s, end, len))
                return g;
        }
    }
    return 0;
}

/* The /48 of an IPv6 address as full6 with the first run of :0000 made "::". */
static size_t awl_v6_key(const char *ip, size_t len, char *out)
{
    char text[INET6_ADDRSTRLEN + 1];
    if (len >= sizeof text || memchr(ip, '\0', len) != NULL)
        return 0;
    memcpy(text, ip, len);
    text[len] = '\0';
    unsigned char a[16];
    if (inet_pton(AF_INET6, text, a) != 1)
        return 0;
    char full[8 * 5];
    size_t n = 0;
    for (int g = 0; g < 8; g++) {
        unsigned v = g < 3 ? (unsigned)a[2 * g] << 8 | a[2 * g + 1] : 0u;
        n += (size_t)snprintf(full + n, sizeof full - n, g ? ":%04X" : "%04X", v);
    }
    /* the first ":0000" and the run of them that follows it */
    const char *run = strstr(full, ":0000");
    if (run == NULL) {
        memcpy(out, full, n + 1);
        return n;
    }
    size_t at = (size_t)(run - full), end = at;
    while (end + 5 <= n && memcmp(full + end, ":0000", 5) == 0)
        end += 5;
    int w = snprintf(out, LDB_AWL_IP_KEY_BYTES, "%.*s::%s", (int)at, full, full + end);
    ENG_ASSERT(w > 0 && (size_t)w < LDB_AWL_IP_KEY_BYTES);
    return (size_t)w;
}

const char *ldb_awl_ip_key(const char *ip, size_t len, char *out, size_t *key_len)
{
    ENG_ASSERT(ip != NULL || len == 0);
    ENG_ASSERT(out != NULL);
    ENG_ASSERT(key_len != NULL);
    *key_len = memchr(ip, ':', len) != NULL ? awl_v6_key(ip, len, out) : awl_v4_key_len(ip, len);
    if (*key_len == 0)
        return NULL;
    return memchr(ip, ':', len) != NULL ? out : ip;
}

bool ldb_awl_result_parse(const char *text, size_t len, double *score, const char **count,
                          size_t *count_len)
{
    const char *space = text != NULL ? memchr(text, ' ', len) : NULL;
    char num[64];
    size_t num_len = space != NULL ? (size_t)(space - text) : 0;
    if (num_len == 0 || num_len >= sizeof num)
        return false;
    memcpy(num, text, num_len);
    num[num_len] = '\0';
    char *end = NULL;
    *score = strtod(num, &end);
    if (end != num + num_len)
        return false;
    *count = space + 1;
    *count_len = len - num_len - 1;
    return true;
}
