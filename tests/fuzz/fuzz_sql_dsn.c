/*
 * fuzz_sql_dsn.c: libFuzzer target for policy/sql_dsn.c (DBI DSNs, libpq conninfo quoting,
 * `?` placeholders, identifier quoting).
 *
 * The first input byte picks the part; the rest is its text (split at the first two NUL bytes
 * into dsn, user and password for the DSN parser). Each result checks itself:
 *   DSN:          on success the driver is SQLite or Pg; a Pg conninfo reads back (with a
 *                 small libpq-style reader) into key/value pairs whose last user and password
 *                 are exactly the ones given; a SQLite path holds no NUL and :memory: is
 *                 flagged; an error has a message.
 *   placeholders: the translation fits a buffer of exactly its length + 1 and not one byte
 *                 less; a second translation of an output without `?` escapes changes nothing
 *                 and counts the same parameters.
 *   identifiers:  the quoted name reads back to the name.
 * Build: see README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_dsn.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sql_dsn: %s\n", what);
        abort();
    }
}

/* Reads conninfo as libpq does for our output (key='value' with \\ and \' escapes), keeping
 * the last user and password. */
static void conninfo_read(const char *ci, char *user, char *password, size_t cap)
{
    const char *p = ci;
    user[0] = password[0] = '\0';
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *eq = strchr(p, '=');
        check(eq != NULL, "conninfo: key without '='");
        size_t klen = (size_t)(eq - p);
        check(eq[1] == '\'', "conninfo: value not quoted");
        char *out = strncmp(p, "user", klen) == 0 && klen == 4           ? user
                    : strncmp(p, "password", klen) == 0 && klen == 8 ? password
                                                                     : NULL;
        size_t o = 0;
        p = eq + 2;
        for (; *p && *p != '\''; p++) {
            if (*p == '\\') {
                p++;
                check(*p == '\\' || *p == '\'', "conninfo: stray backslash");
            }
            if (out && o + 1 < cap)
                out[o++] = *p;
        }
        check(*p == '\'', "conninfo: unterminated value");
        if (out)
            out[o] = '\0';
        p++;
        check(*p == '\0' || *p == ' ', "conninfo: no blank after a value");
    }
}

static void fuzz_dsn(const char *s, size_t n)
{
    /* dsn \0 user \0 password */
    char *buf = malloc(n + 3);
    memcpy(buf, s, n);
    buf[n] = buf[n + 1] = buf[n + 2] = '\0';
    const char *dsn = buf;
    const char *user = buf + strlen(dsn) + 1;
    const char *password = user + strlen(user) + 1;
    if (password > buf + n + 2)
        password = buf + n + 2;
    static struct pol_sql_dsn out;
    char err[256] = "";
    if (pol_sql_dsn_parse(dsn, user, password, &out, err, sizeof(err)) != 0) {
        check(err[0] != '\0', "an error without a message");
        free(buf);
        return;
    }
    if (out.driver == POL_SQL_PG) {
        static char u[POL_SQL_DSN_BYTES_MAX], pw[POL_SQL_DSN_BYTES_MAX];
        conninfo_read(out.conninfo, u, pw, sizeof(u));
        check(!*user || strcmp(u, user) == 0, "user does not read back");
        check(!*password || strcmp(pw, password) == 0, "password does not read back");
    } else if (out.driver == POL_SQL_MYSQL) {
        check(!*user || strcmp(out.user, user) == 0, "mysql user does not read back");
        check(!*password || strcmp(out.password, password) == 0, "mysql password");
        check(out.port <= 65535, "mysql port out of range");
    } else {
        check(out.driver == POL_SQL_SQLITE, "unknown driver accepted");
        check(out.memory == (strcmp(out.path, ":memory:") == 0 || out.path[0] == '\0'),
              "memory flag");
    }
    free(buf);
}

static void fuzz_placeholders(const char *s, size_t n)
{
    n = strnlen(s, n); /* statements are C strings */
    size_t cap = n * 8 + 16;
    char *out = malloc(cap);
    long r = pol_sql_placeholders_pg(s, n, out, cap);
    check(r != -1, "a large enough buffer was refused");
    if (r >= 0) {
        size_t len = strlen(out);
        char *exact = malloc(len + 1);
        check(pol_sql_placeholders_pg(s, n, exact, len + 1) == r, "exact size refused");
        check(strcmp(exact, out) == 0, "exact size gave another text");
        if (len > 0 || n > 0)
            check(pol_sql_placeholders_pg(s, n, exact, len) == -1, "one byte short accepted");
        free(exact);
        /* Without `\?` escapes the output has no `?` left: translating it again must change
         * nothing. */
        if (!memchr(s, '\\', n) && r > 0) {
            char *again = malloc(cap);
            long r2 = pol_sql_placeholders_pg(out, len, again, cap);
            check(r2 == r, "second translation counts differently");
            check(strcmp(again, out) == 0, "second translation changed the text");
            free(again);
        }
    }
    free(out);
}

static void fuzz_ident(const char *s, size_t n, enum pol_sql_driver d)
{
    size_t cap = n * 2 + 3;
    char *out = malloc(cap);
    size_t len = pol_sql_ident_quote(d, s, n, out, cap);
    if (memchr(s, '\0', n)) {
        check(len == 0, "a name with NUL was quoted");
    } else {
        char q = d == POL_SQL_MYSQL ? '`' : '"';
        check(len >= 2 && out[0] == q && out[len - 1] == q, "not quoted");
        size_t o = 0;
        for (size_t i = 1; i + 1 < len; i++, o++) {
            if (out[i] == q) {
                i++;
                check(out[i] == q, "a lone quote inside");
            }
            check(o < n && out[i] == s[o], "does not read back");
        }
        check(o == n, "length does not read back");
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        fuzz_dsn(s, n);
        break;
    case 1:
        fuzz_placeholders(s, n);
        break;
    case 2:
        fuzz_ident(s, n, POL_SQL_PG);
        break;
    default:
        fuzz_ident(s, n, POL_SQL_MYSQL);
        break;
    }
    return 0;
}
