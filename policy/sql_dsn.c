/*
 * sql_dsn.c: DBI data source names, libpq conninfo quoting, `?` placeholders, identifier
 * quoting (see sql_dsn.h). Pure functions over caller buffers: no I/O, no allocation, no
 * global state; safe on any thread.
 *
 * Limits: POL_SQL_DSN_BYTES_MAX for the DSN, user and password; POL_SQL_CONNINFO_BYTES for the
 * conninfo built from them. Known gaps: DBD::Pg's other placeholder style (:name) is not
 * translated (PostgreSQL then reports the syntax error), and a `?` that is meant as one of
 * PostgreSQL's jsonb operators must be written \? (as with DBD::Pg's pg_placeholder_escaped).
 */
#include "sql_dsn.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "eng/assert.h"

/* ---------------------------------------------------------------------------------------------
 * Small text helpers
 */

struct span {
    const char *p;
    size_t n;
};

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static struct span trim(struct span s)
{
    while (s.n > 0 && is_space(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_space(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool span_eq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static bool span_ieq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Strips one pair of matching ' or " quotes around a value (DBD::Pg accepts both). */
static struct span unquote(struct span v)
{
    if (v.n >= 2 && (v.p[0] == '\'' || v.p[0] == '"') && v.p[v.n - 1] == v.p[0])
        return (struct span){v.p + 1, v.n - 2};
    return v;
}

/* Splits "key=value" (blanks trimmed). False when there is no '='. */
static bool split_pair(struct span part, struct span *key, struct span *val)
{
    const char *eq = memchr(part.p, '=', part.n);
    if (!eq)
        return false;
    *key = trim((struct span){part.p, (size_t)(eq - part.p)});
    *val = trim((struct span){eq + 1, part.n - (size_t)(eq + 1 - part.p)});
    return true;
}

/* Next ';'-separated part of *rest; false when rest is exhausted. */
static bool next_part(struct span *rest, struct span *part)
{
    if (rest->n == 0)
        return false;
    const char *semi = memchr(rest->p, ';', rest->n);
    size_t n = semi ? (size_t)(semi - rest->p) : rest->n;
    *part = trim((struct span){rest->p, n});
    rest->p += semi ? n + 1 : n;
    rest->n -= semi ? n + 1 : n;
    return true;
}

static int copy_span(char *out, size_t out_len, struct span s)
{
    if (s.n >= out_len || memchr(s.p, '\0', s.n))
        return -1;
    memcpy(out, s.p, s.n);
    out[s.n] = '\0';
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * libpq conninfo
 */

int pol_sql_conninfo_add(char *out, size_t out_len, const char *key, const char *value,
                         size_t value_len)
{
    size_t len = strlen(out);
    ENG_ASSERT(len < out_len);
    size_t need = len + (len ? 1 : 0) + strlen(key) + 2; /* " key='" */
    for (size_t i = 0; i < value_len; i++)
        need += value[i] == '\\' || value[i] == '\'' ? 2 : 1;
    need += 2; /* "'" and the NUL */
    if (need > out_len || memchr(value, '\0', value_len))
        return -1;
    char *p = out + len;
    p += sprintf(p, "%s%s='", len ? " " : "", key);
    for (size_t i = 0; i < value_len; i++) {
        if (value[i] == '\\' || value[i] == '\'')
            *p++ = '\\';
        *p++ = value[i];
    }
    *p++ = '\'';
    *p = '\0';
    ENG_ASSERT((size_t)(p - out) < out_len);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * DSNs
 */

static int fail(char *err, size_t err_len, const char *fmt, const char *arg, size_t arg_len)
{
    char shown[128];
    size_t n = arg_len < sizeof(shown) - 4 ? arg_len : sizeof(shown) - 4;
    memcpy(shown, arg, n);
    strcpy(shown + n, n < arg_len ? "..." : "");
    snprintf(err, err_len, fmt, shown);
    return -1;
}

static int pg_rest(struct span rest, const char *user, const char *password,
                   struct pol_sql_dsn *out, char *err, size_t err_len)
{
    struct span part, key, val;
    out->conninfo[0] = '\0';
    while (next_part(&rest, &part)) {
        if (part.n == 0)
            continue;
        if (!split_pair(part, &key, &val) || key.n == 0)
            return fail(err, err_len, "dbi:Pg: DSN part '%s' is not key=value", part.p, part.n);
        for (size_t i = 0; i < key.n; i++)
            if (!is_word(key.p[i]))
                return fail(err, err_len, "dbi:Pg: bad DSN key '%s'", key.p, key.n);
        val = unquote(val);
        char k[64];
        if (span_eq(key, "db") || span_eq(key, "database"))
            strcpy(k, "dbname");
        else if (copy_span(k, sizeof(k), key) != 0)
            return fail(err, err_len, "dbi:Pg: DSN key '%s' is too long", key.p, key.n);
        if (strcmp(k, "host") == 0 && copy_span(out->host, sizeof(out->host), val) != 0)
            return fail(err, err_len, "dbi:Pg: bad host '%s'", val.p, val.n);
        if (pol_sql_conninfo_add(out->conninfo, sizeof(out->conninfo), k, val.p, val.n) != 0)
            return fail(err, err_len, "dbi:Pg: DSN value of '%s' is too long", k, strlen(k));
    }
    /* The block's user and password come last, so they win over the DSN's (as DBD::Pg). */
    if (user && *user &&
        pol_sql_conninfo_add(out->conninfo, sizeof(out->conninfo), "user", user, strlen(user)))
        return fail(err, err_len, "%suser is too long", "", 0);
    if (password && *password &&
        pol_sql_conninfo_add(out->conninfo, sizeof(out->conninfo), "password", password,
                             strlen(password)))
        return fail(err, err_len, "%spassword is too long", "", 0);
    return 0;
}

static int sqlite_attr(struct span key, struct span val, struct pol_sql_dsn *out, char *err,
                       size_t err_len)
{
    if (span_eq(key, "dbname") || span_eq(key, "db") || span_eq(key, "database") ||
        span_eq(key, "uri")) {
        if (copy_span(out->path, sizeof(out->path), val) != 0)
            return fail(err, err_len, "dbi:SQLite: bad database name '%s'", val.p, val.n);
        out->uri = span_eq(key, "uri");
        return 0;
    }
    if (key.n > 7 && memcmp(key.p, "sqlite_", 7) == 0) {
        char k[64];
        if (copy_span(k, sizeof(k), key) != 0)
            strcpy(k, "sqlite_...");
        snprintf(out->warning, sizeof(out->warning), "DSN attribute %s ignored", k);
        return 0;
    }
    return fail(err, err_len, "dbi:SQLite: unsupported DSN attribute '%s'", key.p, key.n);
}

static int sqlite_rest(struct span rest, struct pol_sql_dsn *out, char *err, size_t err_len)
{
    out->path[0] = '\0';
    if (!memchr(rest.p, '=', rest.n)) {
        /* DBD::SQLite: the whole rest is the file name. */
        if (copy_span(out->path, sizeof(out->path), rest) != 0)
            return fail(err, err_len, "dbi:SQLite: bad database name '%s'", rest.p, rest.n);
    } else {
        struct span part, key, val;
        while (next_part(&rest, &part)) {
            if (part.n == 0)
                continue;
            if (!split_pair(part, &key, &val))
                return fail(err, err_len, "dbi:SQLite: DSN part '%s' is not key=value", part.p,
                            part.n);
            if (sqlite_attr(key, val, out, err, err_len) != 0)
                return -1;
        }
    }
    if (strncmp(out->path, "file:", 5) == 0)
        out->uri = true;
    /* "" is a private temporary database in DBD::SQLite; here it lives in memory too. */
    out->memory = strcmp(out->path, ":memory:") == 0 || out->path[0] == '\0';
    return 0;
}

/* DBD::mysql's _OdbcParse: the next part up to ':' or ';', where "[...]" keeps its colons
 * (the brackets are dropped). False when rest is exhausted. */
static bool my_next_part(struct span *rest, struct span *part, char *buf, size_t buf_len)
{
    if (rest->n == 0)
        return false;
    size_t i = 0;
    bool bracket = false;
    const char *close = NULL;
    const char *open = memchr(rest->p, '[', rest->n);
    if (open)
        close = memchr(open, ']', rest->n - (size_t)(open - rest->p));
    for (; i < rest->n; i++) {
        char c = rest->p[i];
        if (open && close && rest->p + i == open)
            bracket = true;
        if (bracket && rest->p + i == close)
            bracket = false;
        if (!bracket && (c == ':' || c == ';'))
            break;
    }
    size_t o = 0;
    for (size_t j = 0; j < i && o + 1 < buf_len; j++)
        if (rest->p[j] != '[' && rest->p[j] != ']')
            buf[o++] = rest->p[j];
    buf[o] = '\0';
    *part = (struct span){buf, o};
    rest->p += i < rest->n ? i + 1 : i;
    rest->n -= i < rest->n ? i + 1 : i;
    return true;
}

static int my_port(struct span val, struct pol_sql_dsn *out, char *err, size_t err_len)
{
    unsigned long p = 0;
    for (size_t i = 0; i < val.n; i++) {
        if (val.p[i] < '0' || val.p[i] > '9' || (p = p * 10 + (unsigned long)(val.p[i] - '0')) >
                                                       65535)
            return fail(err, err_len, "dbi:mysql: bad port '%s'", val.p, val.n);
    }
    out->port = (unsigned)p;
    return 0;
}

static int my_attr(struct span key, struct span val, struct pol_sql_dsn *out, char *err,
                   size_t err_len)
{
    char *dst = NULL;
    if (span_eq(key, "host") || span_eq(key, "hostname"))
        dst = out->host;
    else if (span_eq(key, "database") || span_eq(key, "db") || span_eq(key, "dbname"))
        dst = out->database;
    else if (span_eq(key, "mysql_socket"))
        dst = out->socket;
    else if (span_eq(key, "user"))
        dst = out->user;
    else if (span_eq(key, "password"))
        dst = out->password;
    else if (span_eq(key, "port"))
        return my_port(val, out, err, err_len);
    if (dst) {
        if (copy_span(dst, POL_SQL_DSN_BYTES_MAX, val) != 0)
            return fail(err, err_len, "dbi:mysql: bad DSN value '%s'", val.p, val.n);
        return 0;
    }
    if (key.n > 6 && memcmp(key.p, "mysql_", 6) == 0) {
        char k[64];
        if (copy_span(k, sizeof(k), key) != 0)
            strcpy(k, "mysql_...");
        snprintf(out->warning, sizeof(out->warning), "DSN attribute %s ignored", k);
        return 0;
    }
    return fail(err, err_len, "dbi:mysql: unsupported DSN attribute '%s'", key.p, key.n);
}

static int mysql_rest(struct span rest, const char *user, const char *password,
                      struct pol_sql_dsn *out, char *err, size_t err_len)
{
    static const char *const positional[] = {"database", "host", "port"};
    char buf[POL_SQL_DSN_BYTES_MAX];
    struct span part, key, val;
    bool given[3] = {false, false, false};
    while (my_next_part(&rest, &part, buf, sizeof(buf))) {
        if (split_pair(part, &key, &val)) {
            if (my_attr(key, val, out, err, err_len) != 0)
                return -1;
            given[0] = given[0] || span_eq(key, "database") || span_eq(key, "db") ||
                       span_eq(key, "dbname");
            given[1] = given[1] || span_eq(key, "host") || span_eq(key, "hostname");
            given[2] = given[2] || span_eq(key, "port");
            continue;
        }
        for (int i = 0; i < 3; i++) {
            if (given[i])
                continue;
            given[i] = true;
            if (my_attr((struct span){positional[i], strlen(positional[i])}, part, out, err,
                        err_len) != 0)
                return -1;
            break;
        }
    }
    if (user && *user)
        snprintf(out->user, sizeof(out->user), "%s", user);
    if (password && *password)
        snprintf(out->password, sizeof(out->password), "%s", password);
    return 0;
}

int pol_sql_dsn_parse(const char *dsn, const char *user, const char *password,
                      struct pol_sql_dsn *out, char *err, size_t err_len)
{
    memset(out, 0, offsetof(struct pol_sql_dsn, path));
    out->path[0] = out->conninfo[0] = out->host[0] = out->warning[0] = '\0';
    out->database[0] = out->socket[0] = out->user[0] = out->password[0] = '\0';
    size_t len = strlen(dsn);
    if (len >= POL_SQL_DSN_BYTES_MAX || (user && strlen(user) >= POL_SQL_DSN_BYTES_MAX) ||
        (password && strlen(password) >= POL_SQL_DSN_BYTES_MAX))
        return fail(err, err_len, "%sdsn, user or password longer than 4095 bytes", "", 0);
    if (len < 4 || strncasecmp(dsn, "dbi:", 4) != 0)
        return fail(err, err_len, "dsn '%s' does not start with dbi:DRIVER:", dsn, len);
    struct span drv = {dsn + 4, 0};
    while (drv.p + drv.n < dsn + len && is_word(drv.p[drv.n]))
        drv.n++;
    const char *after = drv.p + drv.n;
    if (*after == '(')
        return fail(err, err_len, "dsn '%s': DBI attributes in the DSN are not supported", dsn,
                    len);
    if (*after != ':' || drv.n == 0)
        return fail(err, err_len, "dsn '%s' does not start with dbi:DRIVER:", dsn, len);
    struct span rest = {after + 1, len - (size_t)(after + 1 - dsn)};
    if (span_ieq(drv, "Pg")) {
        out->driver = POL_SQL_PG;
        return pg_rest(rest, user, password, out, err, err_len);
    }
    if (span_ieq(drv, "SQLite")) {
        out->driver = POL_SQL_SQLITE;
        return sqlite_rest(rest, out, err, err_len);
    }
    if (span_ieq(drv, "mysql") || span_ieq(drv, "MariaDB")) {
        out->driver = POL_SQL_MYSQL;
        return mysql_rest(rest, user, password, out, err, err_len);
    }
    return fail(err, err_len,
                "unsupported DBI driver '%s' (supported drivers: SQLite, Pg, mysql, MariaDB)",
                drv.p, drv.n);
}

/* ---------------------------------------------------------------------------------------------
 * Placeholders
 */

struct xlate {
    const char *s;
    size_t n, i;
    char *out;
    size_t out_len, o;
    bool overflow;
    unsigned long qmarks;
    unsigned long dollar_max;
};

static void put(struct xlate *x, const char *p, size_t n)
{
    if (x->o + n >= x->out_len) {
        x->overflow = true;
        return;
    }
    memcpy(x->out + x->o, p, n);
    x->o += n;
}

/* Copies through the closing quote q ('' or "" inside continue the literal); with
 * backslashes (E'...'), a backslash escapes the next byte. */
static void skip_quoted(struct xlate *x, char q, bool backslashes)
{
    size_t start = x->i++;
    while (x->i < x->n) {
        char c = x->s[x->i++];
        if (backslashes && c == '\\' && x->i < x->n) {
            x->i++;
        } else if (c == q) {
            if (x->i < x->n && x->s[x->i] == q)
                x->i++;
            else
                break;
        }
    }
    put(x, x->s + start, x->i - start);
}

static void skip_line_comment(struct xlate *x)
{
    size_t start = x->i;
    while (x->i < x->n && x->s[x->i] != '\n')
        x->i++;
    put(x, x->s + start, x->i - start);
}

static void skip_block_comment(struct xlate *x)
{
    size_t start = x->i;
    unsigned depth = 0;
    while (x->i < x->n) {
        if (x->i + 1 < x->n && x->s[x->i] == '/' && x->s[x->i + 1] == '*') {
            depth++;
            x->i += 2;
        } else if (x->i + 1 < x->n && x->s[x->i] == '*' && x->s[x->i + 1] == '/') {
            x->i += 2;
            if (--depth == 0)
                break;
        } else {
            x->i++;
        }
    }
    put(x, x->s + start, x->i - start);
}

/* At '$' not preceded by a word byte: $n (a parameter), $tag$...$tag$ (a dollar-quoted
 * string), or a lone '$'. */
static void dollar(struct xlate *x)
{
    size_t start = x->i, j = x->i + 1;
    if (j < x->n && x->s[j] >= '0' && x->s[j] <= '9') {
        unsigned long v = 0;
        while (j < x->n && x->s[j] >= '0' && x->s[j] <= '9') {
            if (v < 1000000)
                v = v * 10 + (unsigned long)(x->s[j] - '0');
            j++;
        }
        if (v > x->dollar_max)
            x->dollar_max = v;
        x->i = j;
        put(x, x->s + start, j - start);
        return;
    }
    while (j < x->n && is_word(x->s[j]))
        j++;
    if (j >= x->n || x->s[j] != '$') {
        x->i = start + 1;
        put(x, "$", 1);
        return;
    }
    size_t tag_len = j + 1 - start; /* "$tag$" */
    const char *tag = x->s + start;
    size_t k = j + 1;
    while (k + tag_len <= x->n && memcmp(x->s + k, tag, tag_len) != 0)
        k++;
    x->i = k + tag_len <= x->n ? k + tag_len : x->n;
    put(x, x->s + start, x->i - start);
}

/* `?` becomes $n, with a blank on either side where a neighbour would otherwise join it into
 * another token ("a?" is not "a$1", an identifier; "?AND" is not "$1AND", an error). */
static void placeholder(struct xlate *x)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "$%lu", ++x->qmarks);
    if (x->o > 0 && (is_word(x->out[x->o - 1]) || x->out[x->o - 1] == '$'))
        put(x, " ", 1);
    put(x, num, (size_t)n);
    x->i++;
    if (x->i < x->n && (is_word(x->s[x->i]) || x->s[x->i] == '$'))
        put(x, " ", 1);
}

long pol_sql_placeholders_pg(const char *sql, size_t sql_len, char *out, size_t out_len)
{
    struct xlate x = {.s = sql, .n = sql_len, .out = out, .out_len = out_len};
    while (x.i < x.n && !x.overflow) {
        char c = x.s[x.i];
        char next = x.i + 1 < x.n ? x.s[x.i + 1] : '\0';
        bool after_word = x.i > 0 && is_word(x.s[x.i - 1]);
        bool e_string = (c == 'E' || c == 'e') && next == '\'' && !after_word;
        if (c == '\'' || e_string) {
            if (e_string)
                put(&x, &x.s[x.i++], 1);
            skip_quoted(&x, '\'', e_string);
        } else if (c == '"') {
            skip_quoted(&x, '"', false);
        } else if (c == '-' && next == '-') {
            skip_line_comment(&x);
        } else if (c == '/' && next == '*') {
            skip_block_comment(&x);
        } else if (c == '$' && !after_word) {
            dollar(&x);
        } else if (c == '\\' && next == '?') {
            put(&x, "?", 1); /* an escaped question mark: PostgreSQL's own operator */
            x.i += 2;
        } else if (c == '?') {
            placeholder(&x);
        } else {
            /* Copy a run of ordinary bytes at once. */
            size_t start = x.i++;
            while (x.i < x.n && !strchr("'\"-/$\\?eE", x.s[x.i]))
                x.i++;
            put(&x, x.s + start, x.i - start);
        }
    }
    if (x.overflow || out_len == 0)
        return -1;
    out[x.o] = '\0';
    if (x.qmarks && x.dollar_max)
        return -2;
    return (long)(x.qmarks ? x.qmarks : x.dollar_max);
}

/* ---------------------------------------------------------------------------------------------
 * Identifiers
 */

size_t pol_sql_ident_quote(enum pol_sql_driver driver, const char *name, size_t name_len,
                           char *out, size_t out_len)
{
    char q = driver == POL_SQL_MYSQL ? '`' : '"';
    size_t o = 0;
    if (memchr(name, '\0', name_len) || out_len < 3)
        return 0;
    out[o++] = q;
    for (size_t i = 0; i < name_len; i++) {
        if (o + (name[i] == q ? 2 : 1) + 2 > out_len)
            return 0;
        if (name[i] == q)
            out[o++] = q;
        out[o++] = name[i];
    }
    out[o++] = q;
    out[o] = '\0';
    return o;
}
