/*
 * acct_sql.h: the SQL text of the accounting tables (internal to policy/plugins/): the table
 * definitions per dialect (appendix B: 2.05's SQLite and MySQL texts, and ours for PostgreSQL), the
 * unique (key, time) index, the multi-row upsert a flush sends and the batched select a quota
 * fetch sends. Every value is a `?` placeholder; only identifiers (already quoted by the
 * caller with pol_sql_quote_ident) are written into the text.
 *
 * Columns are written "key" (SQLite, PostgreSQL) or `key` (MySQL, where KEY is reserved and
 * "..." is a string): the quote of table_q, as pol_sql_quote_ident wrote it, says which; the
 * MySQL upsert is INSERT ... ON DUPLICATE KEY UPDATE.
 *
 * Pure functions writing into the caller's buffer: each returns the length written (the text
 * is NUL-terminated), or 0 when the buffer is too small.
 */
#ifndef POL_PLUGINS_ACCT_SQL_H
#define POL_PLUGINS_ACCT_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pol_acct_dialect {
    POL_ACCT_SQLITE,
    POL_ACCT_PG,
    POL_ACCT_MYSQL,
};

/* Bytes of a quoted identifier (a table name: prefix + field, quotes doubled). */
#define POL_ACCT_IDENT_BYTES_MAX 256u

/* The text of the upsert for rows rows is at most this long (for sizing buffers). */
size_t pol_acct_sql_upsert_bytes(uint32_t rows, size_t table_q_len);
/* ... and of the select for keys keys. */
size_t pol_acct_sql_select_bytes(uint32_t keys, size_t table_q_len);

/* `SELECT * FROM T WHERE 1=0`: fails when the table is missing (2.05's check). */
size_t pol_acct_sql_exists(const char *table_q, char *out, size_t out_len);

/* CREATE TABLE T (...) for the dialect. */
size_t pol_acct_sql_create(enum pol_acct_dialect d, const char *table_q, char *out, size_t out_len);

/* MySQL: 2.05's CREATE TABLE text (with its UNIQUE KEY `time_key`), ENGINE=engine_q (the
 * mysql_engine option, quoted as 2.05 quotes it). */
size_t pol_acct_sql_create_mysql(const char *table_q, const char *engine_q, char *out,
                                 size_t out_len);

/* The DDL shards run (acct_ddl.h): stmt made safe to run concurrently from several shards and
 * hosts. PostgreSQL: DO $rpd$ BEGIN PERFORM pg_advisory_xact_lock(POL_ACCT_DDL_LOCK_KEY); stmt;
 * END $rpd$ (CREATE TABLE IF NOT EXISTS alone races in the catalog: "duplicate key value
 * violates unique constraint pg_type_typname_nsp_index"), with "CREATE TABLE " turned into
 * "CREATE TABLE IF NOT EXISTS " (a table created by another shard in the meantime); MySQL: only
 * the IF NOT EXISTS (its metadata locks serialize DDL). Returns 0 when out is too small or stmt
 * contains the dollar quote. */
#define POL_ACCT_DDL_LOCK_KEY 1919968356 /* "rpdd" */
size_t pol_acct_sql_ddl_shared(bool pg, const char *stmt, char *out, size_t out_len);

/* CREATE UNIQUE INDEX IF NOT EXISTS "<table>_time_key" ON T ("key", "time"). table is the
 * unquoted name (the index name is derived from it and quoted here). MySQL: index names are
 * per table, so the index is 2.05's `time_key` (present in tables 2.05 created). */
size_t pol_acct_sql_unique_index(const char *table, const char *table_q, char *out, size_t out_len);
/* PostgreSQL: a probe that fails (division by zero) unless T has a unique index on exactly
 * ("key", "time"), whatever its name: CREATE INDEX IF NOT EXISTS needs the table's owner even
 * when the index exists, so a role that is not (tables created by an admin) skips it. */
size_t pol_acct_sql_unique_index_probe_pg(const char *table_q, char *out, size_t out_len);

/* INSERT INTO T ("key","time","count","count_rcpt","size","size_rcpt") VALUES (?,?,CAST(? AS
 * BIGINT),...)... ON CONFLICT ("key","time") DO UPDATE SET "count" = T."count" +
 * excluded."count", ... for rows rows (>= 1); parameters per row: key, time, then the four
 * metrics as decimal text. */
size_t pol_acct_sql_upsert(enum pol_acct_dialect d, const char *table_q, uint32_t rows, char *out,
                           size_t out_len);

/* SELECT "key","time","count","count_rcpt","size","size_rcpt" FROM T WHERE ("key","time") IN
 * ((?,?),...) for keys keys (>= 1); parameters: key, time per key. */
size_t pol_acct_sql_select(const char *table_q, uint32_t keys, char *out, size_t out_len);

/* PostgreSQL: the same two statements with one array parameter per column, so that their text
 * is one per table whatever the number of rows (the client prepares each text once per
 * connection and keeps a bounded number of them):
 *   [WITH b AS (...)] INSERT INTO T (...) SELECT * FROM unnest(CAST(? AS text[]),
 *       CAST(? AS text[]), CAST(? AS bigint[]) x4) [WHERE EXISTS (SELECT 1 FROM b)]
 *       ON CONFLICT ... (the same DO UPDATE as above; the bracketed parts: below)
 *   SELECT ... FROM T WHERE ("key","time") IN (SELECT * FROM unnest(CAST(? AS text[]),
 *       CAST(? AS text[])))
 * Parameters are array literals built with pol_acct_sql_array_add. */
size_t pol_acct_sql_select_pg(const char *table_q, char *out, size_t out_len);

/* PostgreSQL, exactly once: every flush carries a batch id (a bigint, first parameter) that
 * the same statement records in POL_ACCT_BATCHES_TABLE, and its upsert only runs when the id
 * was new:
 *   WITH b AS (INSERT INTO ringpolicyd_acct_batches (id) VALUES (CAST(? AS bigint))
 *       ON CONFLICT DO NOTHING RETURNING id)
 *   INSERT INTO T (...) SELECT * FROM unnest(...) WHERE EXISTS (SELECT 1 FROM b) ON CONFLICT ...
 * A flush whose answer was lost is settled by POL_ACCT_SQL_BATCH_CLAIM with its id: one row
 * back means the id was free, so the flush did not commit and now never will (send its counts
 * again under a new id); no row means it committed. A flush still running on the server holds
 * the id's row lock, so the claim waits for its end. Ids older than a day are purged
 * (POL_ACCT_SQL_BATCH_PURGE, hourly by shard 0). */
#define POL_ACCT_BATCHES_TABLE "ringpolicyd_acct_batches"
#define POL_ACCT_SQL_BATCHES_PROBE "SELECT * FROM " POL_ACCT_BATCHES_TABLE " WHERE 1=0"
#define POL_ACCT_SQL_BATCHES_CREATE                                                               \
    "CREATE TABLE IF NOT EXISTS " POL_ACCT_BATCHES_TABLE                                          \
    " (id BIGINT PRIMARY KEY, at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now())"
#define POL_ACCT_SQL_BATCH_CLAIM                                                                  \
    "INSERT INTO " POL_ACCT_BATCHES_TABLE " (id) VALUES (CAST(? AS bigint)) ON CONFLICT DO "      \
    "NOTHING RETURNING id"
#define POL_ACCT_SQL_BATCH_PURGE                                                                  \
    "DELETE FROM " POL_ACCT_BATCHES_TABLE " WHERE at < now() - interval '1 day'"
size_t pol_acct_sql_upsert_pg(const char *table_q, char *out, size_t out_len);
/* The same with a VALUES list of rows rows (the exit path's synchronous writes): parameters
 * the batch id, then six per row as in pol_acct_sql_upsert. At most
 * pol_acct_sql_upsert_bytes(rows, ...) + 256 bytes. */
size_t pol_acct_sql_upsert_values_pg(const char *table_q, uint32_t rows, char *out,
                                     size_t out_len);

/* Appends one element to the array literal in buf (*len bytes so far, 0 for a new one):
 * "{" first, then ",", then the element, double-quoted with " and \ escaped when quote (text)
 * or as is (numbers), and keeps a closing "}" after it. Returns false, leaving buf as it was,
 * when cap bytes (NUL included) are not enough. */
bool pol_acct_sql_array_add(char *buf, size_t cap, size_t *len, const char *s, size_t n,
                            bool quote);
/* The most bytes pol_acct_sql_array_add may need for an element of n bytes. */
size_t pol_acct_sql_array_elem_bytes(size_t n);

/* SELECT "METRIC" FROM T WHERE "key"=? AND "time"=? (Quota on a table no Accounting plugin of
 * this daemon writes). metric is one of the four column names. */
size_t pol_acct_sql_select_one(const char *table_q, const char *metric, char *out, size_t out_len);

/* Perl's /^\d+$/ on a column value: the number, or 0 when the text is not all digits (2.05's
 * Quota counts such a value as 0). Saturates at UINT64_MAX. */
uint64_t pol_acct_sql_count_of(const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
