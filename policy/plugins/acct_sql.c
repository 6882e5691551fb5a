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
 *
 * The second half runs such DDL (acct_ddl.h): the per-shard gate that checks or creates a
 * table through pol_sql_query with backoff, for Accounting's store and Greylist's autowl. It
 * lives here, next to the texts it runs, for want of its own file in policy/plugins/meson.build.
 */
#include "plugins/acct_sql.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "plugins/acct_ddl.h"

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
#define UPSERT_ROW_BYTES 112u
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

size_t pol_acct_sql_ddl_shared(bool pg, const char *stmt, char *out, size_t out_len)
{
    static const char create[] = "CREATE TABLE ";
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    if (strstr(stmt, "$rpd$")) /* would end the dollar quote */
        b.overflow = true;
    if (pg)
        sb_printf(&b, "DO $rpd$ BEGIN PERFORM pg_advisory_xact_lock(%d); ", POL_ACCT_DDL_LOCK_KEY);
    if (strncmp(stmt, create, sizeof(create) - 1) == 0 &&
        strncmp(stmt + sizeof(create) - 1, "IF NOT EXISTS ", 14) != 0)
        sb_printf(&b, "CREATE TABLE IF NOT EXISTS %s", stmt + sizeof(create) - 1);
    else
        sb_printf(&b, "%s", stmt);
    if (pg)
        sb_printf(&b, "; END $rpd$");
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

size_t pol_acct_sql_unique_index_probe_pg(const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_printf(&b, "SELECT 1 / count(*) FROM pg_index i WHERE i.indrelid = CAST('");
    for (const char *s = table_q; *s; s++) /* a string literal: single quotes doubled */
        sb_printf(&b, *s == '\'' ? "''" : "%c", *s);
    sb_printf(&b, "' AS regclass) AND i.indisunique AND i.indnkeyatts = 2 AND ARRAY(SELECT "
                  "CAST(a.attname AS text) FROM pg_attribute a WHERE a.attrelid = i.indrelid AND "
                  "a.attnum = ANY (CAST(i.indkey AS int2[])) ORDER BY 1) = ARRAY['key', 'time']");
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

/* PostgreSQL, exactly once: "WITH b AS (record the id) INSERT INTO T (columns) SELECT * FROM ",
 * the row source and its WHERE follow. */
static void sb_once_head(struct sqlbuf *b, const char *table_q)
{
    sb_printf(b,
              "WITH b AS (INSERT INTO " POL_ACCT_BATCHES_TABLE " (id) VALUES (CAST(? AS bigint)) "
              "ON CONFLICT DO NOTHING RETURNING id) INSERT INTO %s (\"key\",\"time\"",
              table_q);
    for (int m = 0; m < POL_ACCT_METRICS; m++)
        sb_printf(b, ",\"%s\"", pol_acct_metric_names[m]);
    sb_printf(b, ") SELECT * FROM ");
}

size_t pol_acct_sql_upsert_values_pg(const char *table_q, uint32_t rows, char *out,
                                     size_t out_len)
{
    ENG_ASSERT(rows >= 1);
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_once_head(&b, table_q);
    sb_printf(&b, "(VALUES ");
    for (uint32_t i = 0; i < rows && !b.overflow; i++)
        sb_printf(&b, "%s(CAST(? AS text),CAST(? AS text),CAST(? AS BIGINT),CAST(? AS BIGINT),"
                      "CAST(? AS BIGINT),CAST(? AS BIGINT))",
                  i ? "," : "");
    sb_printf(&b, ") AS v WHERE EXISTS (SELECT 1 FROM b)");
    sb_on_conflict(&b, table_q);
    return sb_done(&b);
}

size_t pol_acct_sql_upsert_pg(const char *table_q, char *out, size_t out_len)
{
    struct sqlbuf b;
    sb_init(&b, out, out_len);
    sb_once_head(&b, table_q);
    sb_printf(&b, "unnest(CAST(? AS text[]),CAST(? AS text[]),CAST(? AS bigint[]),"
                  "CAST(? AS bigint[]),CAST(? AS bigint[]),CAST(? AS bigint[])) WHERE EXISTS "
                  "(SELECT 1 FROM b)");
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

/* ---------------------------------------------------------------------------------------------
 * The DDL gate (acct_ddl.h)
 */

static void ddl_fired(struct eng_shard *sh, struct eng_timer *t);

void pol_ddl_gate_init(struct pol_ddl_gate *g, struct pol_sql *db, const char *what,
                       const char *meanwhile, int *announced, const struct pol_ddl_stmt *stmts,
                       unsigned stmt_count, bool ready, pol_ddl_done_fn *done, void *done_ctx)
{
    ENG_ASSERT(stmt_count <= POL_DDL_STMTS_MAX);
    ENG_ASSERT(ready || (stmt_count > 0 && db != NULL && announced != NULL));
    memset(g, 0, sizeof(*g));
    eng_timer_init(&g->timer, ddl_fired);
    g->db = db;
    g->what = what;
    g->meanwhile = meanwhile;
    g->announced = announced;
    for (unsigned i = 0; i < stmt_count; i++)
        g->stmts[i] = stmts[i];
    g->stmt_count = stmt_count;
    g->state = ready ? POL_DDL_READY : POL_DDL_IDLE;
    g->backoff_ms = POL_DDL_BACKOFF_MIN_MS;
    g->done = done;
    g->done_ctx = done_ctx;
}

void pol_ddl_gate_start(struct pol_ddl_gate *g, struct eng_shard *sh)
{
    if (g->state != POL_DDL_IDLE || !sh)
        return;
    g->sh = sh;
    g->state = POL_DDL_STARTING;
    eng_timer_arm(sh, &g->timer, 0); /* from the loop: the connection may start after us */
}

void pol_ddl_gate_stop(struct pol_ddl_gate *g)
{
    if (g->sh)
        eng_timer_cancel(g->sh, &g->timer);
    if (g->state != POL_DDL_READY)
        g->state = POL_DDL_STOPPED;
}

void pol_ddl_gate_fini(struct pol_ddl_gate *g)
{
    /* The timer may still be linked into a shard that ended without its stop: that shard's
     * wheel is gone, nothing will fire it. */
    memset(g, 0, sizeof(*g));
}

const char *pol_ddl_gate_error(const struct pol_ddl_gate *g)
{
    if (g->error[0] && g->state != POL_DDL_READY)
        return g->error;
    switch (g->state) {
    case POL_DDL_IDLE:
        return "not checked (no shard)";
    case POL_DDL_STARTING:
    case POL_DDL_RUNNING:
        return "being checked";
    case POL_DDL_BACKOFF:
        return "not checked yet";
    case POL_DDL_STOPPED:
        return "the shard is stopping";
    case POL_DDL_READY:
        break;
    }
    return "ready";
}

void pol_ddl_gate_wait(struct pol_ddl_gate *g, struct pol_ddl_waiter *w)
{
    ENG_ASSERT(pol_ddl_gate_pending(g));
    ENG_ASSERT(w->fn != NULL);
    w->next = NULL;
    if (g->waiters_tail)
        g->waiters_tail->next = w;
    else
        g->waiters = w;
    g->waiters_tail = w;
}

static void ddl_wake(struct pol_ddl_gate *g, bool ok)
{
    struct pol_ddl_waiter *w = g->waiters;
    g->waiters = g->waiters_tail = NULL;
    const char *why = ok ? NULL : pol_ddl_gate_error(g);
    while (w) {
        struct pol_ddl_waiter *next = w->next; /* w may be gone once woken */
        w->fn(w, ok, why);
        w = next;
    }
}

static void ddl_log_failure(struct pol_ddl_gate *g)
{
    if (g->failures++ > 0)
        return; /* once per streak */
    g->streak_since_ms = eng_now_ms(g->sh);
    eng_log(ENG_LOG_ERR,
            "%s: cannot check or create it on shard %u: %s; %s; retrying with "
            "backoff (up to %u ms)",
            g->what, eng_shard_index(g->sh), g->error, g->meanwhile, POL_DDL_BACKOFF_MAX_MS);
}

static void ddl_log_success(struct pol_ddl_gate *g)
{
    bool first = __atomic_exchange_n(g->announced, 1, __ATOMIC_ACQ_REL) == 0;
    if (g->failures > 0)
        eng_log(ENG_LOG_NOTICE, "%s: ready on shard %u after %llu failed attempts (%llu s)",
                g->what, eng_shard_index(g->sh), (unsigned long long)g->failures,
                (unsigned long long)((eng_now_ms(g->sh) - g->streak_since_ms) / 1000));
    else if (first)
        eng_log(ENG_LOG_NOTICE, "%s: checked (created when missing)", g->what);
}

/* The end of an attempt: ready, or the next one after the backoff. */
static void ddl_attempt_end(struct pol_ddl_gate *g, bool ok, const char *error)
{
    g->attempts++;
    if (g->state == POL_DDL_STOPPED) {
        snprintf(g->error, sizeof(g->error), "the shard is stopping");
        ddl_wake(g, false);
        return;
    }
    if (ok) {
        ddl_log_success(g);
        g->state = POL_DDL_READY;
        g->failures = 0;
        g->backoff_ms = POL_DDL_BACKOFF_MIN_MS;
        g->error[0] = '\0';
    } else {
        snprintf(g->error, sizeof(g->error), "%s", error);
        ddl_log_failure(g);
        g->state = POL_DDL_BACKOFF;
        eng_timer_arm(g->sh, &g->timer, g->backoff_ms);
        g->backoff_ms =
            g->backoff_ms * 2 > POL_DDL_BACKOFF_MAX_MS ? POL_DDL_BACKOFF_MAX_MS : g->backoff_ms * 2;
    }
    ddl_wake(g, ok);
    if (g->done)
        g->done(g->done_ctx, ok);
}

static void ddl_send(struct pol_ddl_gate *g);

static void ddl_done(void *ctx, const struct pol_sql_result *res)
{
    struct pol_ddl_gate *g = ctx;
    ENG_ASSERT(g->at < g->stmt_count);
    bool ok = res->status >= 0;
    if (g->state == POL_DDL_STOPPED) {
        ddl_attempt_end(g, false, NULL);
        return;
    }
    ENG_ASSERT(g->state == POL_DDL_RUNNING);
    if (g->stmts[g->at].probe)
        g->at += ok ? 2 : 1;
    else if (ok)
        g->at++;
    else {
        ddl_attempt_end(g, false, res->error ? res->error : "unknown error");
        return;
    }
    if (g->at >= g->stmt_count)
        ddl_attempt_end(g, true, NULL);
    else
        ddl_send(g); /* bounded: at most POL_DDL_STMTS_MAX statements per attempt */
}

static void ddl_send(struct pol_ddl_gate *g)
{
    int rc = pol_sql_query(g->sh, g->db, g->stmts[g->at].sql, NULL, NULL, 0, 0, ddl_done, g);
    if (rc < 0) {
        char why[96];
        snprintf(why, sizeof(why), "cannot queue the statement: %s", strerror(-rc));
        struct pol_sql_result res = {.status = rc, .error = why};
        ddl_done(g, &res);
    }
}

static void ddl_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_ddl_gate *g =
        (struct pol_ddl_gate *)(void *)((char *)t - offsetof(struct pol_ddl_gate, timer));
    if (g->state != POL_DDL_STARTING && g->state != POL_DDL_BACKOFF)
        return;
    g->state = POL_DDL_RUNNING;
    g->at = 0;
    ddl_send(g);
}
