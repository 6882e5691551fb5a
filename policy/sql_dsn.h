/*
 * sql_dsn.h: the pure text work behind the Sql connection (internal to policy/): DBI data
 * source names, libpq conninfo quoting, DBI `?` placeholders to PostgreSQL's $n, identifier
 * quoting. No I/O, no allocation: every output goes into a buffer the caller supplies, so the
 * fuzzer and the unit tests can drive each function on its own.
 *
 * DSNs (spec 9.1): "dbi:DRIVER:REST" with "dbi" in any case and an optional DBI attribute
 * part "dbi:DRIVER(ATTRS):REST" (refused: ringpolicyd sets its own attributes). Drivers:
 *   Pg      REST is "key=value;key=value" as DBD::Pg takes it (db and database mean dbname;
 *           values may be quoted with ' or "), turned into a libpq conninfo string with every
 *           value quoted, plus the block's user and password;
 *   SQLite  REST is PATH, ":memory:", "" (a private temporary database, as DBD::SQLite; here
 *           in memory), or "dbname=PATH" (db, database) / "uri=file:..." with further
 *           DBD::SQLite attributes (sqlite_*) ignored with a warning;
 *   mysql, MariaDB  REST as DBD::mysql parses it: parts split at ':' or ';' (an IPv6 address
 *           in [...]), each "key=value" (host or hostname, database, db or dbname, port,
 *           mysql_socket, user, password; other mysql_* attributes are ignored with a
 *           warning) or a bare value taken in turn as database, host, port. The block's user
 *           and password win over the DSN's;
 *   anything else: an error naming the supported drivers.
 */
#ifndef POL_SQL_DSN_H
#define POL_SQL_DSN_H

#include <stdbool.h>
#include <stddef.h>

#include "pol/sql.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POL_SQL_DSN_BYTES_MAX 4096u   /* longest DSN, user or password accepted */
/* The DSN, user and password each at most double when quoted (a part "k=v;" of n bytes becomes
 * at most 2n - 1), plus " user=''" and " password=''". */
#define POL_SQL_CONNINFO_BYTES (3u * 2u * POL_SQL_DSN_BYTES_MAX + 64u)

struct pol_sql_dsn {
    enum pol_sql_driver driver;
    bool memory;      /* SQLite: in-memory database */
    bool uri;         /* SQLite: path is a file: URI (SQLITE_OPEN_URI) */
    unsigned port;    /* MySQL: 0 for the default */
    char path[POL_SQL_DSN_BYTES_MAX];         /* SQLite: file name or URI */
    char conninfo[POL_SQL_CONNINFO_BYTES];    /* Pg: libpq conninfo */
    char host[POL_SQL_DSN_BYTES_MAX];         /* Pg, MySQL: the host value ("" when none) */
    char database[POL_SQL_DSN_BYTES_MAX];     /* MySQL ("" when none) */
    char socket[POL_SQL_DSN_BYTES_MAX];       /* MySQL: mysql_socket ("" when none) */
    char user[POL_SQL_DSN_BYTES_MAX];         /* MySQL */
    char password[POL_SQL_DSN_BYTES_MAX];     /* MySQL */
    char warning[256]; /* a note for the start-up log ("" when none) */
};

/* Parses dsn with the block's user and password (NULL or "" for none). Returns 0, or -1 with
 * a sentence in err naming the problem (for an unsupported driver: the supported ones). */
int pol_sql_dsn_parse(const char *dsn, const char *user, const char *password,
                      struct pol_sql_dsn *out, char *err, size_t err_len);

/* Appends " key='value'" (libpq quoting: backslash and quote escaped) to out, which holds a
 * NUL-terminated string of capacity out_len. Returns 0, or -1 when it does not fit (out is
 * left as it was). */
int pol_sql_conninfo_add(char *out, size_t out_len, const char *key, const char *value,
                         size_t value_len);

/* Rewrites DBI `?` placeholders as $1, $2, ... (with a blank between one and a neighbouring
 * word or '$', so that no other token forms) outside quoted strings ('...', E'...' with its
 * backslash escapes), quoted identifiers ("..."), dollar-quoted strings ($tag$...$tag$) and
 * comments (-- and nested C style). A statement that uses no `?` is copied as is. Returns the
 * number of parameters the statement takes (the `?` count, or the highest $n when there is
 * no `?`), or -1 when out (out_len bytes, NUL-terminated on success) is too small, or -2 when
 * the statement mixes `?` with $n. */
long pol_sql_placeholders_pg(const char *sql, size_t sql_len, char *out, size_t out_len);

/* "name" with embedded " doubled (SQLite, PostgreSQL), or `name` with ` doubled (MySQL).
 * Returns the length written (NUL-terminated), 0 when out_len is too small or the name holds
 * a NUL byte. */
size_t pol_sql_ident_quote(enum pol_sql_driver driver, const char *name, size_t name_len,
                           char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif
