/*
 * acct_util.c: the pure helpers of the SQL plugins (acct.h): Accounting's metrics, Perl's blank
 * test, which keys a table can store, and the time bucket. No I/O, no allocation; any thread.
 */
#include "plugins/acct.h"

#include <string.h>
#include <time.h>

static uint64_t perl_count(const char *s, size_t len)
{
    double v = pol_num_perl(s, len);
    if (!(v > 0)) /* negative, zero, NaN */
        return 0;
    return v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

void pol_acct_metrics_of(const char *size, size_t size_len, const char *rcpt, size_t rcpt_len,
                         uint64_t out[POL_ACCT_METRICS])
{
    uint64_t sz = size ? perl_count(size, size_len) : 0;
    /* Perl: $rcpt_cnt = defined $recipient_count ? $recipient_count : 1, then its truth. */
    bool rcpt_true = !rcpt || !(rcpt_len == 0 || (rcpt_len == 1 && rcpt[0] == '0'));
    uint64_t rc = rcpt ? perl_count(rcpt, rcpt_len) : 1;
    out[POL_ACCT_COUNT] = 1;
    out[POL_ACCT_SIZE] = sz;
    out[POL_ACCT_COUNT_RCPT] = rcpt_true ? rc : 1;
    out[POL_ACCT_SIZE_RCPT] = rcpt_true ? sat_mul(sz, rc) : sz;
}

bool pol_acct_blank(const char *s, size_t len)
{
    for (size_t i = 0; s && i < len; i++)
        if (!(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
              s[i] == '\v'))
            return false;
    return true;
}

/* Length of the UTF-8 sequence at s (RFC 3629: no overlongs, surrogates or > U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (n == 0 || n > left || (n == 2 && c < 0xC2) || (n == 4 && c > 0xF4))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)))
        return 0;
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

const char *pol_acct_key_problem(const char *key, size_t len, bool utf8_only)
{
    if (len > POL_ACCT_KEY_BYTES_MAX)
        return "longer than the key column (255 bytes)";
    if (memchr(key, '\0', len))
        return "contains a NUL byte";
    for (size_t i = 0; utf8_only && i < len;) {
        size_t n = utf8_seq((const unsigned char *)key + i, len - i);
        if (n == 0)
            return "is not valid UTF-8 (PostgreSQL refuses it)";
        i += n;
    }
    return NULL;
}

int pol_acct_bucket(const char *pattern, time_t t, char *out)
{
    struct tm tm;
    if (!localtime_r(&t, &tm))
        return -1;
    if (pattern[0] == '\0') {
        out[0] = '\0';
        return 0;
    }
    /* strftime returns 0 both for "did not fit" and for an empty result (e.g. "%p" in some
     * locales): one byte of room more tells them apart. */
    char buf[POL_ACCT_TIME_BYTES_MAX + 2];
    buf[0] = '\x01';
    size_t n = strftime(buf, sizeof(buf), pattern, &tm);
    if (n == 0 && buf[0] != '\0')
        return -1;
    if (n > POL_ACCT_TIME_BYTES_MAX)
        return -1;
    memcpy(out, buf, n + 1);
    return (int)n;
}
