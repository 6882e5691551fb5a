/*
 * listen.c: the `port` and `host` options as listening addresses (listen.h).
 *
 * Each entry goes through Net::Server's parse_info steps in its order, each mirroring one of
 * its regexes: a "|sock_stream" type is dropped; "|IPv4", "|IPv6", "|IPv*" suffixes (two at
 * most) choose the families; a trailing "/tcp" or "|unix" (any separator of ",|:/" or
 * whitespace) is the protocol; "HOST:" (any run of ",|:" or whitespace before the final word)
 * splits off the host; the host may be bracketed. Families: none or "*" given means every
 * address the host resolves to; a ':' in the host means IPv6 only.
 *
 * Differences, where Net::Server accepts something that cannot work or would surprise: only
 * tcp and unix (stream) are served, so udp, ssl and custom protocols are refused; port 0
 * (auto-assigned, whose virtual host key nobody can know) and ports above 65535 are refused;
 * an empty list or entry is refused (Net::Server binds its default port 20203, or port 0); a
 * Unix path is taken whole (Net::Server splits "/tmp/a:b|unix" into host "/tmp/a" and path
 * "b"). For "*" Net::Server binds only "::" when the kernel makes it dual-stack; we bind
 * "0.0.0.0" and "::" with IPV6_V6ONLY, which reaches the same clients on every kernel. An
 * entry that yields both families sets IPV6_V6ONLY on its IPv6 addresses, an IPv6-only
 * entry ("[::]:12345") does not, so "::" also takes IPv4 as on a default Linux system.
 *
 * Main thread, start-up only (getaddrinfo and getservbyname block).
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <eng/assert.h>

#include "values.h"

enum { ENTRY_BYTES_MAX = 255 }; /* one entry of the list, for the working copy */

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* [,|\s:/] and [,|\s:] of Proto.pm */
static bool is_sep(char c)
{
    return c == ',' || c == '|' || c == ':' || c == '/' || is_space(c);
}

static bool is_host_sep(char c)
{
    return c == ',' || c == '|' || c == ':' || is_space(c);
}

/* A working copy of one entry, edited in place as the regexes remove their parts. */
struct text {
    char s[ENTRY_BYTES_MAX + 1];
    size_t n;
};

static void cut(struct text *t, size_t from, size_t to)
{
    memmove(t->s + from, t->s + to, t->n - to);
    t->n -= to - from;
    t->s[t->n] = '\0';
}

/* s{ (?<=[\w*\]]) [,|\s:/]+ WHAT }{}: the first separator run, after a word character, '*'
 * or ']', that is followed by what matches (match returns its length, 0 for none). */
typedef size_t match_fn(const char *s, size_t n);

static bool strip_after_sep(struct text *t, match_fn *match, char *cap, size_t cap_bytes)
{
    for (size_t i = 1; i < t->n; i++) {
        char b = t->s[i - 1];
        if (!is_sep(t->s[i]) || !(is_word(b) || b == '*' || b == ']')) {
            continue;
        }
        size_t r = i;
        while (r < t->n && is_sep(t->s[r])) {
            r++;
        }
        size_t m = match(t->s + r, t->n - r);
        if (m > 0) {
            snprintf(cap, cap_bytes, "%.*s", (int)m, t->s + r);
            cut(t, i, r + m);
            return true;
        }
        i = r;
    }
    return false;
}

/* IPv([*\d]+), case-insensitive; returns the length, the capture is after "IPv". */
static size_t match_ipv(const char *s, size_t n)
{
    if (n < 4 || strncasecmp(s, "ipv", 3) != 0) {
        return 0;
    }
    size_t k = 3;
    while (k < n && (s[k] == '*' || (s[k] >= '0' && s[k] <= '9'))) {
        k++;
    }
    return k > 3 ? k : 0;
}

/* (sock_stream|sock_dgram)\b */
static size_t match_unix_type(const char *s, size_t n)
{
    for (const char *w = "sock_stream"; w != NULL; w = w[5] == 's' ? "sock_dgram" : NULL) {
        size_t len = strlen(w);
        if (n >= len && memcmp(s, w, len) == 0 && (n == len || !is_word(s[len]))) {
            return len;
        }
    }
    return 0;
}

/* (tcp|udp|ssl|ssleay|unix|unixdgram|\w+(?:::\w+)+) $ , case-insensitive */
static size_t match_proto_at_end(const char *s, size_t n)
{
    static const char *const words[] = {"tcp", "udp", "ssl", "ssleay", "unix", "unixdgram"};
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        if (n == strlen(words[w]) && strncasecmp(s, words[w], n) == 0) {
            return n;
        }
    }
    size_t i = 0, parts = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && is_word(s[i])) {
            i++;
        }
        if (i == start) {
            return 0;
        }
        parts++;
        if (i < n) {
            if (n - i < 3 || s[i] != ':' || s[i + 1] != ':') {
                return 0;
            }
            i += 2;
        }
    }
    return parts >= 2 ? n : 0;
}

static bool strip_ipv(struct text *t, char *ipv, size_t ipv_bytes)
{
    char cap[32];
    for (int k = 0; k < 2 && strip_after_sep(t, match_ipv, cap, sizeof(cap)); k++) {
        size_t used = strlen(ipv);
        if (used + strlen(cap + 3) >= ipv_bytes) {
            return false;
        }
        strcat(ipv, cap + 3);
    }
    return true;
}

/* The protocol suffix, or the legacy "/word" at the end; "" when none. */
static void strip_proto(struct text *t, char *proto, size_t proto_bytes)
{
    proto[0] = '\0';
    if (strip_after_sep(t, match_proto_at_end, proto, proto_bytes)) {
        return;
    }
    const char *slash = strrchr(t->s, '/');
    if (slash == NULL || slash[1] == '\0') {
        return;
    }
    for (const char *c = slash + 1; *c != '\0'; c++) {
        if (!is_word(*c)) {
            return;
        }
    }
    snprintf(proto, proto_bytes, "%s", slash + 1);
    cut(t, (size_t)(slash - t->s), t->n);
}

/* s{ ^ (.*?) [,|\s:]+ (?= \w+ $) }{}: the host before the last separator run, when a word
 * ends the entry. Returns false when there is no host part. */
static bool split_host(struct text *t, struct text *host)
{
    size_t w = t->n;
    while (w > 0 && is_word(t->s[w - 1])) {
        w--;
    }
    size_t r = w;
    while (r > 0 && is_host_sep(t->s[r - 1])) {
        r--;
    }
    if (w == t->n || r == w) {
        return false;
    }
    memcpy(host->s, t->s, r);
    host->n = r;
    host->s[r] = '\0';
    cut(t, 0, w);
    return true;
}

static int fail(char *err, size_t err_len, const char *entry, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t err_len, const char *entry, size_t len, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(err, err_len, "port entry \"%.*s\": %s", (int)(len > 100 ? 100 : len), entry, what);
    return -1;
}

/* ^\[([\w/.\-:]+|\*?)\]$ or ^([\w/.\-:]+|\*?)$; "" and "*" mean every address. */
static bool host_text(struct text *h, char *out, size_t out_bytes)
{
    const char *s = h->s;
    size_t n = h->n;
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    bool any = n == 0 || (n == 1 && s[0] == '*');
    for (size_t i = 0; i < n && !any; i++) {
        if (!is_word(s[i]) && strchr("/.-:", s[i]) == NULL) {
            return false;
        }
    }
    snprintf(out, out_bytes, "%.*s", any ? 1 : (int)n, any ? "*" : s);
    return true;
}

static int parse_port(const char *s, const char *entry, size_t len, uint16_t *port, char *err,
                      size_t err_len)
{
    if (s[0] == '\0') {
        return fail(err, err_len, entry, len, "no port");
    }
    if (strspn(s, "0123456789") == strlen(s)) {
        unsigned long v = strlen(s) > 6 ? 70000 : strtoul(s, NULL, 10);
        if (v == 0 || v > 65535) {
            return fail(err, err_len, entry, len,
                        "port %s is not between 1 and 65535 (port 0 is not supported)", s);
        }
        *port = (uint16_t)v;
        return 0;
    }
    struct servent *se = getservbyname(s, "tcp");
    if (se == NULL) {
        return fail(err, err_len, entry, len, "\"%s\" is neither a port number nor a service", s);
    }
    *port = ntohs((uint16_t)se->s_port);
    return 0;
}

static int parse_unix(struct text *t, const char *entry, size_t len, struct pol_listen_spec *out,
                      char *err, size_t err_len)
{
    if (t->n == 0) {
        return fail(err, err_len, entry, len, "no socket path");
    }
    if (t->n >= sizeof(out->path)) {
        return fail(err, err_len, entry, len, "the socket path is too long");
    }
    out->is_unix = true;
    memcpy(out->path, t->s, t->n + 1);
    return 0;
}

/* Families as parse_info chooses them: none or '*' given: whatever the host resolves to;
 * else IPv6 when asked for or when the host has a ':', plus IPv4 when asked for and the host
 * has no ':'. */
static void choose_families(const char *ipv, const char *host, struct pol_listen_spec *out)
{
    bool colon = strchr(host, ':') != NULL;
    if (ipv[0] == '\0' || strchr(ipv, '*') != NULL) {
        out->want4 = out->want6 = true;
    } else if (strchr(ipv, '6') != NULL || colon) {
        out->want6 = true;
        out->want4 = strchr(ipv, '4') != NULL && !colon;
    } else {
        out->want4 = true;
    }
}

int pol_listen_spec_parse(const char *entry, size_t len, const char *host,
                          struct pol_listen_spec *out, char *err, size_t err_len)
{
    ENG_ASSERT(entry != NULL || len == 0);
    ENG_ASSERT(out != NULL);
    memset(out, 0, sizeof(*out));
    if (len == 0) {
        return fail(err, err_len, entry, len, "an empty entry");
    }
    struct text t;
    if (len > ENTRY_BYTES_MAX || memchr(entry, '\0', len) != NULL) {
        return fail(err, err_len, entry, len, "too long or not text");
    }
    memcpy(t.s, entry, len);
    t.n = len;
    t.s[len] = '\0';
    char cap[32], ipv[16] = "", proto[64];
    if (strip_after_sep(&t, match_unix_type, cap, sizeof(cap)) && strcmp(cap, "sock_dgram") == 0) {
        return fail(err, err_len, entry, len, "datagram sockets are not supported");
    }
    if (!strip_ipv(&t, ipv, sizeof(ipv))) {
        return fail(err, err_len, entry, len, "too many IPv suffixes");
    }
    strip_proto(&t, proto, sizeof(proto));
    if (strcasecmp(proto, "unix") == 0) {
        return parse_unix(&t, entry, len, out, err, err_len);
    }
    if (proto[0] != '\0' && strcasecmp(proto, "tcp") != 0) {
        return fail(err, err_len, entry, len,
                    "protocol \"%s\" is not supported (tcp, or unix for a socket path)", proto);
    }
    struct text h;
    if (!split_host(&t, &h)) {
        snprintf(h.s, sizeof(h.s), "%s", host != NULL ? host : POL_LISTEN_HOST_DEFAULT);
        h.n = strlen(h.s);
    }
    if (!strip_ipv(&h, ipv, sizeof(ipv)) || !host_text(&h, out->host, sizeof(out->host))) {
        return fail(err, err_len, entry, len, "cannot tell the host from \"%s\"", h.s);
    }
    if (ipv[0] != '\0' && strpbrk(ipv, "46*") == NULL) {
        return fail(err, err_len, entry, len, "IPv%s: the IP version must be 4, 6 or *", ipv);
    }
    choose_families(ipv, out->host, out);
    return parse_port(t.s, entry, len, &out->port, err, err_len);
}

/* ---------------------------------------------------------------------------------------------
 * Resolution
 */

static bool same_listener(const struct pol_listen *a, const struct pol_listen *b)
{
    if (a->eng.kind != b->eng.kind) {
        return false;
    }
    if (a->eng.kind == ENG_LISTEN_UNIX) {
        return strcmp(a->eng.path, b->eng.path) == 0;
    }
    return a->eng.addr_len == b->eng.addr_len && a->eng.v6only == b->eng.v6only &&
           memcmp(&a->eng.addr, &b->eng.addr, a->eng.addr_len) == 0;
}

enum { ADDED = 0, FAILED = -1, FULL = -2 };

/* Appends l unless an equal listener is there. */
static int add(struct pol_listen *out, size_t cap, size_t *count, const struct pol_listen *l)
{
    for (size_t i = 0; i < *count; i++) {
        if (same_listener(&out[i], l)) {
            return ADDED;
        }
    }
    if (*count == cap) {
        return FULL;
    }
    out[(*count)++] = *l;
    return ADDED;
}

static bool ipv6_available(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno != EAFNOSUPPORT;
    }
    close(fd);
    return true;
}

static int resolve_tcp(const struct pol_listen_spec *sp, struct pol_listen *out, size_t cap,
                       size_t *count, const char *entry, size_t len, char *err, size_t err_len)
{
    struct addrinfo hints = {
        .ai_family = sp->want4 && sp->want6 ? AF_UNSPEC
                     : sp->want6            ? AF_INET6
                                            : AF_INET,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)sp->port);
    struct addrinfo *res = NULL;
    bool any = strcmp(sp->host, "*") == 0;
    int rc = getaddrinfo(any ? NULL : sp->host, service, &hints, &res);
    if (rc != 0) {
        return fail(err, err_len, entry, len, "cannot resolve \"%s\": %s", sp->host,
                    gai_strerror(rc));
    }
    bool has4 = false;
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        has4 = has4 || a->ai_family == AF_INET;
    }
    /* Like Net::Server for "*": no IPv6 in this kernel, IPv4 alone. */
    bool skip6 = any && has4 && !ipv6_available();
    rc = 0;
    for (struct addrinfo *a = res; a != NULL && rc == 0; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            (a->ai_family == AF_INET6 && skip6) ||
            a->ai_addrlen > sizeof(struct sockaddr_storage)) {
            continue;
        }
        struct pol_listen l;
        memset(&l, 0, sizeof(l));
        l.eng.kind = ENG_LISTEN_TCP;
        memcpy(&l.eng.addr, a->ai_addr, a->ai_addrlen);
        l.eng.addr_len = a->ai_addrlen;
        l.eng.v6only = a->ai_family == AF_INET6 && has4;
        snprintf(l.key, sizeof(l.key), "%u", (unsigned)sp->port);
        rc = add(out, cap, count, &l);
    }
    freeaddrinfo(res);
    return rc;
}

int pol_listen_parse(const char *port, const char *host, struct pol_listen *out, size_t out_cap,
                     char *err, size_t err_len)
{
    ENG_ASSERT(out != NULL);
    ENG_ASSERT(out_cap > 0);
    if (port == NULL) {
        port = POL_LISTEN_PORT_DEFAULT;
    }
    struct pol_value_slice items[POL_LISTEN_MAX + 1];
    size_t n = pol_value_list_split(port, strlen(port), POL_LIST_COMMA, items, POL_LISTEN_MAX + 1);
    if (n == 0) {
        snprintf(err, err_len, "port is empty: no address to listen on");
        return -1;
    }
    if (n > POL_LISTEN_MAX || n > out_cap) {
        snprintf(err, err_len, "port lists %zu entries, more than the %zu supported", n,
                 out_cap < POL_LISTEN_MAX ? out_cap : (size_t)POL_LISTEN_MAX);
        return -1;
    }
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        struct pol_listen_spec sp;
        const char *e = items[i].ptr;
        size_t len = items[i].len;
        if (pol_listen_spec_parse(e, len, host, &sp, err, err_len) != 0) {
            return -1;
        }
        int rc;
        if (sp.is_unix) {
            struct pol_listen l;
            memset(&l, 0, sizeof(l));
            l.eng.kind = ENG_LISTEN_UNIX;
            memcpy(l.eng.path, sp.path, sizeof(l.eng.path));
            memcpy(l.key, sp.path, sizeof(l.key));
            rc = add(out, out_cap, &count, &l);
        } else {
            rc = resolve_tcp(&sp, out, out_cap, &count, e, len, err, err_len);
        }
        if (rc == FULL) {
            snprintf(err, err_len, "port gives more than %zu listening addresses", out_cap);
        }
        if (rc != ADDED) {
            return -1;
        }
    }
    ENG_ASSERT(count > 0);
    return (int)count;
}
