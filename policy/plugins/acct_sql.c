/*
 * acct_sql.c: SQL text of the accounting tables (see acct_sql.h). Pure; owns nothing.
 *
 * SQLite gets 2.05's CREATE TABLE text byte for byte (backquoted columns, INT UNSIGNED) so a
 * database created by either daemon is the same; PostgreSQL gets the same columns with BIGINT
 * counters (a month of size_rcpt for a busy host passes 2^31) and a BIGSERIAL id. Both get a
 * unique (key, time) index: the upsert's conflict target, and what keeps concurrent writers
 * (several shards, several hosts) from creating duplicate rows as 2.05's UPDATE-then-INSERT
 * could. Metric parameters are cast to BIGINT so that PostgreSQL types them even when the
 * driver sends every parameter as text. MySQL gets 2.05's MySQL text (with its unique
 * `time_key`, ENGINE from mysql_engine, latin1), backquoted columns and ON DUPLICATE KEY UPDATE
 * (values are quoted literals there, which MySQL converts to the column's type itself).
 */
#include "plugins/acct_sql.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>

#include "plugins/acct_agg.h"

/* A bounded writer: every append checks the room left; overflow makes the result 0. */
struct sqlbuf {
    char *out;
    size_t cap;
    size_t len;
    bool overflow;
};

static void sb_init(struct sqlbuf *b, char *out, size_t cap)
{
    b->out = out;
    b->cap = cap;
    b->len = 0;
    b->overflow = cap == 0;
    if (cap > 0)
        out[0] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sqlbuf *b, const char *fmt, ...)
{
    if (b->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->out + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->overflow = true;
        return;
    }
    b->len += (size_t)n;
}

static size_t sb_done(struct sqlbuf *b)
{
    if (b->overflow) {
        if (b->cap > 0)
            b->out[0] = '\0';
        return 0;
    }
    return b->len;
}

/* Per row "(?,?,CAST(? AS BIGINT),CAST(? AS BIGINT),CAST(? AS BIGINT),CAST(? AS BIGINT))," */
#define UPSERT_ROW_BYTES 90u
#define UPSERT_FIXED_BYTES 512u
#define SELECT_KEY_BYTES 8u

/* The identifier quote of the dialect table_q was quoted for: ` for MySQL, else ". */
static char qc(const char *table_q)
{
    return table_q[0] == '`' ? '`' : '"';
}

size_t pol_acct_sql_upsert_bytes(uint32_t rows, size_t table_q_len)
{
    return UPSERT_FIXED_BYTES + 5 * table_q_len + (size_t)rows * UPSERT_ROW_BYTES;
}

size_t pol_acct_sql_select_bytes(uint32_t keys, size_t table_q_len)
{
    return UPSERT_FIXED_BYTES + table_q_len + (size_t)keys * SELECT_KEY_BYTES;
}

size_t pol_acct_sql_exists(const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "SELECT * FROM %s WHERE 1=0", table_q);
    return sb_done(&b);
}

/* Mail::MtPolicyd::Plugin::Accounting's SQLite definition, as 2.05 has it. */
static const char sqlite_create[] = "CREATE TABLE %s (\n"
                                    "    `id` INTEGER PRIMARY KEY AUTOINCREMENT,\n"
                                    "    `key` VARCHAR(255) NOT NULL,\n"
                                    "    `time` VARCHAR(255) NOT NULL,\n"
                                    "    `count` INT UNSIGNED NOT NULL,\n"
                                    "    `count_rcpt` INT UNSIGNED NOT NULL,\n"
                                    "    `size` INT UNSIGNED NOT NULL,\n"
                                    "    `size_rcpt` INT UNSIGNED NOT NULL\n"
                                    ")";

static const char pg_create[] = "CREATE TABLE %s (\n"
                                "    \"id\" BIGSERIAL PRIMARY KEY,\n"
                                "    \"key\" VARCHAR(255) NOT NULL,\n"
                                "    \"time\" VARCHAR(255) NOT NULL,\n"
                                "    \"count\" BIGINT NOT NULL,\n"
                                "    \"count_rcpt\" BIGINT NOT NULL,\n"
                                "    \"size\" BIGINT NOT NULL,\n"
                                "    \"size_rcpt\" BIGINT NOT NULL\n"
                                ")";

/* Mail::MtPolicyd::Plugin::Accounting's MySQL definition, as 2.05 has it. */
static const char mysql_create[] = "CREATE TABLE %s (\n"
                                   "    `id` int(11) NOT NULL AUTO_INCREMENT,\n"
                                   "    `key` VARCHAR(255) NOT NULL,\n"
                                   "    `time` VARCHAR(255) NOT NULL,\n"
                                   "    `count` INT UNSIGNED NOT NULL,\n"
                                   "    `count_rcpt` INT UNSIGNED NOT NULL,\n"
                                   "    `size` INT UNSIGNED NOT NULL,\n"
                                   "    `size_rcpt` INT UNSIGNED NOT NULL,\n"
                                   "    PRIMARY KEY (`id`),\n"
                                   "    UNIQUE KEY `time_key` (`key`, `time`),\n"
                                   "    KEY(`key`),\n"
                                   "    KEY(`time`)\n"
                                   "  ) ENGINE=%s  DEFAULT CHARSET=latin1";

size_t pol_acct_sql_create_mysql(const char *table_q, const char *engine_q, char *out,
                                 size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, mysql_create, table_q, engine_q);
    return sb_done(&b);
}

size_t pol_acct_sql_create(enum pol_acct_dialect d, const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    sb_printf(&b, d == POL_ACCT_PG ? pg_create : sqlite_create, table_q);
#pragma GCC diagnostic pop
    return sb_done(&b);
}

size_t pol_acct_sql_unique_index(const char *table, const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    if (qc(table_q) == '`') {
        sb_printf(&b, "CREATE UNIQUE INDEX IF NOT EXISTS `time_key` ON %s (`key`, `time`)",
                  table_q);
        return sb_done(&b);
    }
    sb_printf(&b, "CREATE UNIQUE INDEX IF NOT EXISTS \"");
    /* The index name is TABLE_time_key, quoted like an identifier (double quotes doubled). */
    for (const char *s = table; *s; s++)
        sb_printf(&b, *s == '"' ? "\"\"" : "%c", *s);
    sb_printf(&b, "_time_key\" ON %s (\"key\", \"time\")", table_q);
    return sb_done(&b);
}

/* ON CONFLICT ("key","time") DO UPDATE SET "count" = T."count" + excluded."count", ...
 * MySQL: ON DUPLICATE KEY UPDATE `count` = `count` + VALUES(`count`), ... */
static void sb_on_conflict(struct sqlbuf *b, const char *table_q)
{
    if (qc(table_q) == '`') {
        sb_printf(b, " ON DUPLICATE KEY UPDATE ");
        for (int m = 0; m < POL_ACCT_METRICS; m++)
            sb_printf(b, "%s`%s` = `%s` + VALUES(`%s`)", m ? ", " : "", pol_acct_metric_names[m],
                      pol_acct_metric_names[m], pol_acct_metric_names[m]);
        return;
    }
    sb_printf(b, " ON CONFLICT (\"key\",\"time\") DO UPDATE SET ");
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(b, "%s\"%s\" = %s.\"%s\" + excluded.\"%s\"", m ? ", " : "",
                  pol_acct_metric_names[m], table_q, pol_acct_metric_names[m],
                  pol_acct_metric_names[m]);
}

size_t pol_acct_sql_upsert(enum pol_acct_dialect d, const char *table_q, uint32_t rows, char *out,
                           size_t out_len)
{
    ENG_ASSERT(rows >= 1);
    (void)d; /* the same statement works on SQLite >= 3.24 and PostgreSQL >= 9.5 */
    char q = qc(table_q);
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "INSERT INTO %s (%ckey%c,%ctime%c", table_q, q, q, q, q);
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(&b, ",%c%s%c", q, pol_acct_metric_names[m], q);
    sb_printf(&b, ") VALUES ");
    for (uint32_t i = 0; i < rows && !b.overflow; i++)
        sb_printf(&b, "%s%s", i ? "," : "",
                  q == '`' ? "(?,?,?,?,?,?)"
                           : "(?,?,CAST(? AS BIGINT),CAST(? AS BIGINT),CAST(? AS BIGINT),"
                             "CAST(? AS BIGINT))");
    sb_on_conflict(&b, table_q);
    return sb_done(&b);
}

size_t pol_acct_sql_upsert_pg(const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "INSERT INTO %s (\"key\",\"time\"", table_q);
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(&b, ",\"%s\"", pol_acct_metric_names[m]);
    sb_printf(&b, ") SELECT * FROM unnest(CAST(? AS text[]),CAST(? AS text[]),CAST(? AS bigint[]),"
                  "CAST(? AS bigint[]),CAST(? AS bigint[]),CAST(? AS bigint[]))");
    sb_on_conflict(&b, table_q);
    return sb_done(&b);
}

size_t pol_acct_sql_select_pg(const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "SELECT \"key\",\"time\"");
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(&b, ",\"%s\"", pol_acct_metric_names[m]);
    sb_printf(&b,
              " FROM %s WHERE (\"key\",\"time\") IN (SELECT * FROM unnest(CAST(? AS text[]),"
              "CAST(? AS text[])))",
              table_q);
    return sb_done(&b);
}

size_t pol_acct_sql_array_elem_bytes(size_t n)
{
    return 2 * n + 4; /* every byte escaped, two quotes, a comma, the closing brace */
}

bool pol_acct_sql_array_add(char *buf, size_t cap, size_t *len, const char *s, size_t n, bool quote)
{
    size_t at = *len == 0 ? 0 : *len - 1;           /* overwrite the closing brace */
    size_t need = at + 1 + (quote ? 2 : 0) + 1 + 1; /* separator, quotes, brace, NUL */
    for (size_t i = 0; i < n; i++)
        need += quote && (s[i] == '"' || s[i] == '\\') ? 2 : 1;
    if (need > cap)
        return false;
    buf[at++] = *len == 0 ? '{' : ',';
    if (quote)
        buf[at++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (quote && (s[i] == '"' || s[i] == '\\'))
            buf[at++] = '\\';
        buf[at++] = s[i];
    }
    if (quote)
        buf[at++] = '"';
    buf[at++] = '}';
    buf[at] = '\0';
    *len = at;
    return true;
}

size_t pol_acct_sql_select(const char *table_q, uint32_t keys, char *out, size_t out_len)
{
    ENG_ASSERT(keys >= 1);
    char q = qc(table_q);
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "SELECT %ckey%c,%ctime%c", q, q, q, q);
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(&b, ",%c%s%c", q, pol_acct_metric_names[m], q);
    sb_printf(&b, " FROM %s WHERE (%ckey%c,%ctime%c) IN (", table_q, q, q, q, q);
    for (uint32_t i = 0; i < keys && !b.overflow; i++)
        sb_printf(&b, "%s(?,?)", i ? "," : "");
    sb_printf(&b, ")");
    return sb_done(&b);
}

size_t pol_acct_sql_select_one(const char *table_q, const char *metric, char *out, size_t out_len)
{
    ENG_ASSERT(pol_acct_metric_of(metric, strlen(metric)) >= 0);
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    char q = qc(table_q);
    sb_printf(&b, "SELECT %c%s%c FROM %s WHERE %ckey%c=? AND %ctime%c=?", q, metric, q, table_q, q,
              q, q, q);
    return sb_done(&b);
}

uint64_t pol_acct_sql_count_of(const char *s, size_t len)
{
    if (s == NULL || len == 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned digit = (unsigned)(s[i] - '0');
        v = v > (UINT64_MAX - digit) / 10 ? UINT64_MAX : v * 10 + digit;
    }
    return v;
}
