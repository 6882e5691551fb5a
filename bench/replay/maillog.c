/*
 * maillog.c: the Postfix syslog line parser and the year logic for classic timestamps.
 *
 * Pure and allocation-free; every result is a slice of the caller's line. The message grammar
 * follows what Postfix 2.x-3.x logs (smtpd.c, cleanup_message.c, qmgr_active.c, the delivery
 * agents' log_adhoc.c) and what the real samples in shared/data/maillogs contain. Where a
 * message is ambiguous (an address containing "> ", an IPv6 address followed by ": "), the
 * parser takes the first reading that ends at a separator; such lines become POSTFIX_OTHER or
 * carry a truncated value, never a crash.
 */
#include "maillog.h"

#include <string.h>

#include "bench_assert.h"

/* ---------------------------------------------------------------------------------------------
 * Small scanners over [p, end).
 */

static struct rpl_slice slice(const char *p, const char *end)
{
    BENCH_ASSERT(end >= p);
    struct rpl_slice s = {p, (uint32_t)(end - p)};
    return s;
}

static bool has_prefix(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0;
}

static bool slice_is(struct rpl_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly n digits. */
static bool digits(const char *p, const char *end, unsigned n, uint32_t *out)
{
    if ((size_t)(end - p) < n)
        return false;
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        v = v * 10u + (uint32_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

static const char *find(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - p) < n)
        return NULL;
    return memmem(p, (size_t)(end - p), lit, n);
}

/* The last occurrence of lit in [p, end). */
static const char *find_last(const char *p, const char *end, const char *lit)
{
    const char *last = NULL;
    for (const char *q = find(p, end, lit); q != NULL; q = find(q + 1, end, lit))
        last = q;
    return last;
}

/* ---------------------------------------------------------------------------------------------
 * Timestamps
 */

static const char month_names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

static bool time_of_day(const char *p, const char *end, uint32_t *sec, const char **after)
{
    uint32_t h, m, s;
    if (!digits(p, end, 2, &h) || end - p < 8 || p[2] != ':' || !digits(p + 3, end, 2, &m) ||
        p[5] != ':' || !digits(p + 6, end, 2, &s))
        return false;
    if (h > 23 || m > 59 || s > 60)
        return false;
    *sec = h * 3600u + m * 60u + (s == 60 ? 59u : s);
    *after = p + 8;
    return true;
}

/* Optional ".ffffff": up to six digits are kept, further ones skipped. */
static const char *fraction(const char *p, const char *end, uint32_t *usec)
{
    *usec = 0;
    if (p >= end || *p != '.' || p + 1 >= end || !is_digit(p[1]))
        return p;
    p++;
    uint32_t scale = 100000;
    while (p < end && is_digit(*p)) {
        *usec += (uint32_t)(*p - '0') * scale;
        scale /= 10;
        p++;
    }
    return p;
}

static size_t classic_time(const char *s, const char *end, struct rpl_ltime *t)
{
    if (end - s < 15)
        return 0;
    const char *m = NULL;
    for (unsigned i = 0; i < 12; i++)
        if (memcmp(s, month_names + 3 * i, 3) == 0)
            m = month_names + 3 * i;
    if (m == NULL || s[3] != ' ')
        return 0;
    const char *p = s + 4;
    if (*p == ' ')
        p++; /* "Oct  2" */
    uint32_t day = 0;
    while (p < end && is_digit(*p) && day < 100)
        day = day * 10u + (uint32_t)(*p++ - '0');
    if (day < 1 || day > 31 || p >= end || *p != ' ')
        return 0;
    if (!time_of_day(p + 1, end, &t->sec_of_day, &p))
        return 0;
    p = fraction(p, end, &t->usec);
    t->kind = RPL_TIME_CLASSIC;
    t->mon = (uint8_t)((m - month_names) / 3 + 1);
    t->day = (uint8_t)day;
    t->epoch_us = 0;
    return (size_t)(p - s);
}

int64_t rpl_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil: exact for the proleptic Gregorian calendar. */
    BENCH_ASSERT(m >= 1 && m <= 12);
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static size_t rfc3339_time(const char *s, const char *end, struct rpl_ltime *t)
{
    uint32_t y, mo, d;
    if (end - s < 20 || !digits(s, end, 4, &y) || s[4] != '-' || !digits(s + 5, end, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, end, 2, &d) || (s[10] != 'T' && s[10] != 't'))
        return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > 31)
        return 0;
    const char *p;
    uint32_t sec;
    if (!time_of_day(s + 11, end, &sec, &p))
        return 0;
    p = fraction(p, end, &t->usec);
    int64_t off_sec = 0;
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (p < end && (*p == '+' || *p == '-')) {
        uint32_t oh, om;
        if (!digits(p + 1, end, 2, &oh) || end - p < 6 || p[3] != ':' ||
            !digits(p + 4, end, 2, &om) || oh > 23 || om > 59)
            return 0;
        off_sec = (int64_t)(oh * 3600u + om * 60u) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return 0;
    }
    t->kind = RPL_TIME_ABS;
    t->mon = (uint8_t)mo;
    t->day = (uint8_t)d;
    t->sec_of_day = sec;
    int64_t epoch = rpl_days_from_civil(y, mo, d) * 86400 + sec - off_sec;
    t->epoch_us = epoch * 1000000 + t->usec;
    return (size_t)(p - s);
}

size_t rpl_ltime_parse(const char *s, size_t len, struct rpl_ltime *out)
{
    BENCH_ASSERT(s != NULL || len == 0);
    memset(out, 0, sizeof(*out));
    if (len >= 4 && is_digit(s[0]))
        return rfc3339_time(s, s + len, out);
    return classic_time(s, s + len, out);
}

/* ---------------------------------------------------------------------------------------------
 * Years
 */

void rpl_clock_init(struct rpl_clock *c, int fixed_year, int64_t ref_sec)
{
    memset(c, 0, sizeof(*c));
    c->fixed_year = fixed_year;
    c->ref_sec = ref_sec;
}

void rpl_clock_next_file(struct rpl_clock *c, int64_t ref_sec)
{
    c->ref_sec = ref_sec;
    if (c->fixed_year == 0)
        c->year = 0; /* derive again from this file's reference time */
}

/* Year, month, day and second of day of an epoch second (UTC). */
static void civil_from_sec(int64_t sec, int *y, unsigned *m, unsigned *d, uint32_t *sod)
{
    int64_t days = sec >= 0 ? sec / 86400 : (sec - 86399) / 86400;
    *sod = (uint32_t)(sec - days * 86400);
    /* Hinnant's civil_from_days. */
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int first_year(const struct rpl_clock *c, const struct rpl_ltime *t)
{
    if (c->fixed_year != 0)
        return c->fixed_year;
    int ry;
    unsigned rm, rd;
    uint32_t rsod;
    civil_from_sec(c->ref_sec, &ry, &rm, &rd, &rsod);
    uint64_t line_key = ((uint64_t)t->mon * 32u + t->day) * 86400u + t->sec_of_day;
    uint64_t ref_key = ((uint64_t)rm * 32u + rd) * 86400u + rsod;
    /* One day of slack: a file's mtime and its lines' local times may differ by the zone. */
    return line_key > ref_key + 86400u ? ry - 1 : ry;
}

int64_t rpl_clock_resolve(struct rpl_clock *c, const struct rpl_ltime *t)
{
    if (t->kind == RPL_TIME_ABS)
        return t->epoch_us;
    BENCH_ASSERT(t->mon >= 1 && t->mon <= 12);
    if (c->year == 0) {
        c->year = first_year(c, t);
    } else if ((unsigned)t->mon + 6u < c->last_mon) {
        c->year++;
        c->wrap_count++;
    }
    c->last_mon = t->mon;
    int64_t days = rpl_days_from_civil(c->year, t->mon, t->day);
    return (days * 86400 + t->sec_of_day) * 1000000 + t->usec;
}

/* ---------------------------------------------------------------------------------------------
 * Header: TIME HOST TAG[PID]: MESSAGE
 */

struct daemon_name {
    const char *name;
    enum rpl_daemon daemon;
};

static const struct daemon_name daemon_names[] = {
    {"smtpd", RPL_DAEMON_SMTPD},         {"cleanup", RPL_DAEMON_CLEANUP},
    {"qmgr", RPL_DAEMON_QMGR},           {"nqmgr", RPL_DAEMON_QMGR},
    {"oqmgr", RPL_DAEMON_QMGR},          {"smtp", RPL_DAEMON_DELIVERY},
    {"lmtp", RPL_DAEMON_DELIVERY},       {"local", RPL_DAEMON_DELIVERY},
    {"virtual", RPL_DAEMON_DELIVERY},    {"pipe", RPL_DAEMON_DELIVERY},
    {"error", RPL_DAEMON_DELIVERY},      {"retry", RPL_DAEMON_DELIVERY},
    {"discard", RPL_DAEMON_DELIVERY},    {"anvil", RPL_DAEMON_OTHER},
    {"bounce", RPL_DAEMON_OTHER},        {"defer", RPL_DAEMON_OTHER},
    {"trace", RPL_DAEMON_OTHER},         {"pickup", RPL_DAEMON_OTHER},
    {"postscreen", RPL_DAEMON_OTHER},    {"dnsblog", RPL_DAEMON_OTHER},
    {"tlsmgr", RPL_DAEMON_OTHER},        {"tlsproxy", RPL_DAEMON_OTHER},
    {"scache", RPL_DAEMON_OTHER},        {"verify", RPL_DAEMON_OTHER},
    {"flush", RPL_DAEMON_OTHER},         {"proxymap", RPL_DAEMON_OTHER},
    {"proxywrite", RPL_DAEMON_OTHER},    {"showq", RPL_DAEMON_OTHER},
    {"trivial-rewrite", RPL_DAEMON_OTHER}, {"master", RPL_DAEMON_OTHER},
    {"postfix-script", RPL_DAEMON_OTHER}, {"postsuper", RPL_DAEMON_OTHER},
    {"postqueue", RPL_DAEMON_OTHER},     {"postdrop", RPL_DAEMON_OTHER},
    {"postmap", RPL_DAEMON_OTHER},       {"postalias", RPL_DAEMON_OTHER},
    {"sendmail", RPL_DAEMON_OTHER},      {"postlogd", RPL_DAEMON_OTHER},
    {"spawn", RPL_DAEMON_OTHER},         {"postmulti", RPL_DAEMON_OTHER},
    {"postconf", RPL_DAEMON_OTHER},      {"postlog", RPL_DAEMON_OTHER},
    {"local-script", RPL_DAEMON_OTHER},  {"script", RPL_DAEMON_OTHER},
};

static enum rpl_daemon daemon_of(struct rpl_slice name)
{
    for (size_t i = 0; i < sizeof(daemon_names) / sizeof(daemon_names[0]); i++)
        if (slice_is(name, daemon_names[i].name))
            return daemon_names[i].daemon;
    return RPL_DAEMON_NONE;
}

/* TAG[PID]: at p. On success fills tag fields and returns the message start. */
static const char *parse_tag(const char *p, const char *end, struct rpl_line *out, bool *postfix)
{
    const char *colon = find(p, end, ": ");
    const char *tag_end = colon;
    if (colon == NULL) {
        if (end - p >= 1 && end[-1] == ':')
            tag_end = end - 1; /* "prog[1]:" with an empty message */
        else
            return NULL;
    }
    if (tag_end == p || memchr(p, ' ', (size_t)(tag_end - p)) != NULL)
        return NULL;
    const char *name_end = tag_end;
    out->pid = 0;
    if (tag_end[-1] == ']') {
        const char *open = memchr(p, '[', (size_t)(tag_end - p));
        if (open == NULL)
            return NULL;
        uint64_t pid = 0;
        for (const char *q = open + 1; q < tag_end - 1; q++) {
            if (!is_digit(*q) || pid > 0xffffffffu / 10)
                return NULL;
            pid = pid * 10 + (uint64_t)(*q - '0');
        }
        out->pid = (uint32_t)pid;
        name_end = open;
    }
    const char *slash = NULL;
    for (const char *q = p; q < name_end; q++)
        if (*q == '/')
            slash = q;
    *postfix = false;
    if (slash != NULL && slash > p && out->pid != 0) {
        out->syslog_name = slice(p, slash);
        out->daemon_name = slice(slash + 1, name_end);
        out->daemon = daemon_of(out->daemon_name);
        *postfix = out->daemon != RPL_DAEMON_NONE;
    }
    return colon == NULL ? end : colon + 2;
}

/* ---------------------------------------------------------------------------------------------
 * Message pieces
 */

/* "H[A]" at p: returns the position after ']' or NULL. */
static const char *host_addr(const char *p, const char *end, struct rpl_line *out)
{
    const char *open = NULL;
    for (const char *q = p; q < end && *q != ' ' && *q != ','; q++) {
        if (*q == '[') {
            open = q;
            break;
        }
    }
    if (open == NULL || open == p)
        return NULL;
    const char *close = memchr(open, ']', (size_t)(end - open));
    if (close == NULL || close == open + 1)
        return NULL;
    out->client_name = slice(p, open);
    out->client_addr = slice(open + 1, close);
    return close + 1;
}

/* A queue id ("4104E3D", "48rT2v1hQrz1J0N") or NOQUEUE followed by ": ". Returns the rest. */
static const char *queue_id(const char *p, const char *end, struct rpl_line *out, bool *noqueue)
{
    const char *q = p;
    while (q < end && ((*q >= '0' && *q <= '9') || (*q >= 'A' && *q <= 'Z') ||
                       (*q >= 'a' && *q <= 'z')))
        q++;
    if (q - p < 5 || q - p > 32 || end - q < 2 || q[0] != ':' || q[1] != ' ')
        return NULL;
    *noqueue = (q - p == 7 && memcmp(p, "NOQUEUE", 7) == 0);
    out->queue_id = *noqueue ? slice(p, p) : slice(p, q);
    return q + 2;
}

/* "<value>" at p, where the value ends at the first '>' followed by a space, a comma or the end:
 * returns the position after '>' or NULL. */
static const char *angle(const char *p, const char *end, struct rpl_slice *v)
{
    if (p >= end || *p != '<')
        return NULL;
    for (const char *q = p + 1; q < end; q++) {
        if (*q == '>' && (q + 1 == end || q[1] == ' ' || q[1] == ',')) {
            *v = slice(p + 1, q);
            return q + 1;
        }
    }
    return NULL;
}

/* A value after "key=" up to ", " or the end. */
static struct rpl_slice comma_value(const char *p, const char *end)
{
    const char *q = find(p, end, ", ");
    return slice(p, q != NULL ? q : end);
}

/* "client=H[A][, sasl_method=M][, sasl_username=U][, sasl_sender=S][, ...]" */
static enum rpl_line_kind client_line(const char *p, const char *end, struct rpl_line *out)
{
    const char *q = host_addr(p, end, out);
    if (q == NULL)
        return RPL_LINE_POSTFIX_OTHER;
    while (q < end && has_prefix(q, end, ", ")) {
        q += 2;
        const char *eq = memchr(q, '=', (size_t)(end - q));
        if (eq == NULL)
            break;
        struct rpl_slice key = slice(q, eq);
        struct rpl_slice val = comma_value(eq + 1, end);
        if (slice_is(key, "sasl_method"))
            out->sasl_method = val;
        else if (slice_is(key, "sasl_username"))
            out->sasl_username = val;
        else if (slice_is(key, "sasl_sender"))
            out->sasl_sender = val;
        q = val.ptr + val.len;
    }
    return RPL_LINE_CLIENT;
}

/* "from=<S> to=<R> proto=P helo=<H>" (any subset, in this order in practice). */
static void reject_keyvalues(const char *p, const char *end, struct rpl_line *out)
{
    while (p < end) {
        if (has_prefix(p, end, "from=<")) {
            const char *q = angle(p + 5, end, &out->sender);
            if (q == NULL)
                return;
            out->has_sender = true;
            p = q;
        } else if (has_prefix(p, end, "to=<")) {
            const char *q = angle(p + 3, end, &out->recipient);
            if (q == NULL)
                return;
            out->has_recipient = true;
            p = q;
        } else if (has_prefix(p, end, "proto=")) {
            const char *q = memchr(p, ' ', (size_t)(end - p));
            out->proto = slice(p + 6, q != NULL ? q : end);
            p = q != NULL ? q : end;
        } else if (has_prefix(p, end, "helo=")) {
            out->has_helo = true;
            if (angle(p + 5, end, &out->helo) == NULL) /* "helo=" without brackets */
                out->helo = slice(p + 5, end);
            return; /* helo is last */
        } else {
            const char *q = memchr(p, ' ', (size_t)(end - p));
            p = q != NULL ? q : end;
        }
        while (p < end && *p == ' ')
            p++;
    }
}

/* "ACTION: STAGE from H[A]: TEXT; from=<S> to=<R> proto=P helo=<H>" */
static enum rpl_line_kind reject_line(const char *p, const char *end, struct rpl_line *out)
{
    const char *a = p;
    while (a < end && ((*a >= 'a' && *a <= 'z') || *a == '-' || *a == '_'))
        a++;
    if (a == p || end - a < 2 || a[0] != ':' || a[1] != ' ')
        return RPL_LINE_POSTFIX_OTHER;
    const char *s = a + 2;
    const char *st = s;
    while (st < end && ((*st >= 'A' && *st <= 'Z') || *st == '-'))
        st++;
    if (st == s || !has_prefix(st, end, " from "))
        return RPL_LINE_POSTFIX_OTHER;
    const char *q = host_addr(st + 6, end, out);
    if (q == NULL)
        return RPL_LINE_POSTFIX_OTHER;
    out->action = slice(p, a);
    out->stage = slice(s, st);
    const char *kv = find_last(q, end, "; from=<");
    if (kv == NULL)
        kv = find_last(q, end, "; to=<");
    if (kv != NULL)
        reject_keyvalues(kv + 2, end, out);
    return RPL_LINE_REJECT;
}

/* qmgr "from=<S>, size=N, nrcpt=K (queue active)" */
static enum rpl_line_kind qmgr_from(const char *p, const char *end, struct rpl_line *out)
{
    const char *q = angle(p + 5, end, &out->sender);
    if (q == NULL || !has_prefix(q, end, ", size="))
        return RPL_LINE_POSTFIX_OTHER; /* "from=<>, status=expired, returned to sender" */
    q += 7;
    uint64_t size = 0;
    const char *d = q;
    while (q < end && is_digit(*q) && size < (UINT64_MAX - 9) / 10)
        size = size * 10 + (uint64_t)(*q++ - '0');
    if (q == d || !has_prefix(q, end, ", nrcpt="))
        return RPL_LINE_POSTFIX_OTHER;
    q += 8;
    uint32_t nrcpt = 0;
    d = q;
    while (q < end && is_digit(*q) && nrcpt < 100000000u)
        nrcpt = nrcpt * 10u + (uint32_t)(*q++ - '0');
    if (q == d)
        return RPL_LINE_POSTFIX_OTHER;
    out->has_sender = true;
    out->size = size;
    out->nrcpt = nrcpt;
    return RPL_LINE_QMGR_FROM;
}

/* delivery "to=<R>, orig_to=<O>, relay=..." */
static enum rpl_line_kind delivery(const char *p, const char *end, struct rpl_line *out)
{
    const char *q = angle(p + 3, end, &out->recipient);
    if (q == NULL)
        return RPL_LINE_POSTFIX_OTHER;
    out->has_recipient = true;
    if (has_prefix(q, end, ", orig_to=<") && angle(q + 10, end, &out->orig_recipient) == NULL)
        out->orig_recipient = slice(q, q);
    return RPL_LINE_DELIVERY;
}

/* A value ending at ": " (or the end): an address in a warning. */
static struct rpl_slice upto_colon(const char *p, const char *end)
{
    const char *q = find(p, end, ": ");
    return slice(p, q != NULL ? q : end);
}

static struct rpl_slice word(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && *q != ' ' && *q != ':')
        q++;
    return slice(p, q);
}

/* smtpd's reverse-name warnings (smtpd_peer.c):
 *   warning: hostname X does not resolve to address A[: reason]
 *   warning: A: address not listed for hostname X
 *   warning: A: hostname X verification failed: reason */
static enum rpl_line_kind reverse_warning(const char *p, const char *end, struct rpl_line *out)
{
    if (has_prefix(p, end, "hostname ")) {
        const char *x = p + 9;
        const char *q = find(x, end, " does not resolve to address ");
        if (q == NULL)
            return RPL_LINE_POSTFIX_OTHER;
        out->reverse_name = slice(x, q);
        out->client_addr = upto_colon(q + 29, end);
    } else {
        struct rpl_slice a = upto_colon(p, end);
        const char *q = a.ptr + a.len;
        if (has_prefix(q, end, ": address not listed for hostname "))
            out->reverse_name = word(q + 34, end);
        else if (has_prefix(q, end, ": hostname "))
            out->reverse_name = word(q + 11, end);
        else
            return RPL_LINE_POSTFIX_OTHER;
        out->client_addr = a;
    }
    if (out->reverse_name.len == 0 || out->client_addr.len == 0)
        return RPL_LINE_POSTFIX_OTHER;
    return RPL_LINE_REVERSE_NAME;
}

static enum rpl_line_kind smtpd_message(const char *p, const char *end, struct rpl_line *out)
{
    if (has_prefix(p, end, "connect from "))
        return host_addr(p + 13, end, out) ? RPL_LINE_CONNECT : RPL_LINE_POSTFIX_OTHER;
    if (has_prefix(p, end, "disconnect from "))
        return host_addr(p + 16, end, out) ? RPL_LINE_DISCONNECT : RPL_LINE_POSTFIX_OTHER;
    if (has_prefix(p, end, "warning: "))
        return reverse_warning(p + 9, end, out);
    bool noqueue;
    const char *q = queue_id(p, end, out, &noqueue);
    if (q == NULL)
        return RPL_LINE_POSTFIX_OTHER;
    if (!noqueue && has_prefix(q, end, "client="))
        return client_line(q + 7, end, out);
    return reject_line(q, end, out);
}

static enum rpl_line_kind postfix_message(const char *p, const char *end, struct rpl_line *out)
{
    if (out->daemon == RPL_DAEMON_SMTPD)
        return smtpd_message(p, end, out);
    bool noqueue;
    const char *q = queue_id(p, end, out, &noqueue);
    if (q == NULL || noqueue)
        return RPL_LINE_POSTFIX_OTHER;
    switch (out->daemon) {
    case RPL_DAEMON_CLEANUP:
        if (has_prefix(q, end, "message-id="))
            return RPL_LINE_MESSAGE_ID;
        return reject_line(q, end, out); /* milter-reject: END-OF-MESSAGE from ... */
    case RPL_DAEMON_QMGR:
        if (has_prefix(q, end, "from=<"))
            return qmgr_from(q, end, out);
        if (end - q == 7 && memcmp(q, "removed", 7) == 0)
            return RPL_LINE_REMOVED;
        return RPL_LINE_POSTFIX_OTHER;
    case RPL_DAEMON_DELIVERY:
        if (has_prefix(q, end, "to=<"))
            return delivery(q, end, out);
        return RPL_LINE_POSTFIX_OTHER;
    default:
        return RPL_LINE_POSTFIX_OTHER;
    }
}

enum rpl_line_kind rpl_line_parse(const char *line, size_t len, struct rpl_line *out)
{
    BENCH_ASSERT(out != NULL);
    BENCH_ASSERT(line != NULL || len == 0);
    memset(out, 0, sizeof(*out));
    const char *end = line + len;
    if (len > 0 && end[-1] == '\r')
        end--;
    size_t n = rpl_ltime_parse(line, (size_t)(end - line), &out->time);
    const char *p = line + n;
    if (n == 0 || p >= end || *p != ' ')
        return out->kind = RPL_LINE_GARBAGE;
    while (p < end && *p == ' ')
        p++;
    const char *host_end = memchr(p, ' ', (size_t)(end - p));
    if (host_end == NULL || host_end == p)
        return out->kind = RPL_LINE_GARBAGE;
    out->host = slice(p, host_end);
    bool postfix;
    const char *msg = parse_tag(host_end + 1, end, out, &postfix);
    if (msg == NULL)
        return out->kind = RPL_LINE_GARBAGE;
    out->message = slice(msg, end);
    if (!postfix)
        return out->kind = RPL_LINE_OTHER_PROGRAM;
    out->kind = postfix_message(msg, end, out);
    return out->kind;
}

const char *rpl_line_kind_name(enum rpl_line_kind k)
{
    static const char *const names[RPL_LINE_KIND_COUNT] = {
        "garbage",  "other_program", "postfix_other", "connect", "disconnect", "client",
        "reject",   "message_id",    "qmgr_from",     "delivery", "removed",   "reverse_name",
    };
    return (unsigned)k < RPL_LINE_KIND_COUNT ? names[k] : "?";
}
