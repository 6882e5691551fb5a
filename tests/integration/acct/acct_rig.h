/*
 * acct_rig.h: what the accounting integration tests share (tests/integration/acct): the
 * seed's how-to tables written for PostgreSQL and SQLite, the Sql connection block of each
 * backend, END-OF-MESSAGE requests, and reading acct_ tables back (libpq, libsqlite3) to
 * compare with what was sent.
 *
 * The PostgreSQL server is tests/unit/sql/pg_server.h's (one per test program, on a free
 * loopback port, gone when the program ends however it ends; SKIP or, with CI=1, FAIL when
 * PostgreSQL is not installed). SQLite databases live in a daemon's private directory.
 */
#ifndef ITEST_ACCT_RIG_H
#define ITEST_ACCT_RIG_H

#include "../itcommon.h"
#include "../../unit/sql/pg_server.h"

#include <sqlite3.h>

#include <array>
#include <ctime>
#include <map>
#include <string>
#include <vector>

namespace acctit
{

using namespace itest;

/* ---------------------------------------------------------------------------------------------
 * The how-to's relay tables (seed: HowtoAccountingQuota), from its MySQL statements
 */

/* PostgreSQL: the MySQL AUTO_INCREMENT ids become SERIAL, `desc` (a keyword) is quoted, the
 * InnoDB foreign key is a REFERENCES clause and KEY an index. */
inline const char *howto_pg_ddl()
{
    return "CREATE TABLE relay_policies (\n"
           "  id SERIAL PRIMARY KEY,\n"
           "  \"desc\" VARCHAR(64) NOT NULL,\n"
           "  config TEXT NOT NULL\n"
           ");\n"
           "CREATE TABLE relay_hosts (\n"
           "  id SERIAL PRIMARY KEY,\n"
           "  client_address VARCHAR(64) NOT NULL,\n"
           "  relay_policy INTEGER NOT NULL REFERENCES relay_policies (id)\n"
           ");\n"
           "CREATE INDEX relay_hosts_relay_policy ON relay_hosts (relay_policy);\n";
}

/* SQLite: the same with INTEGER PRIMARY KEY AUTOINCREMENT. */
inline const char *howto_sqlite_ddl()
{
    return "CREATE TABLE relay_policies (\n"
           "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
           "  \"desc\" VARCHAR(64) NOT NULL,\n"
           "  config TEXT NOT NULL\n"
           ");\n"
           "CREATE TABLE relay_hosts (\n"
           "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
           "  client_address VARCHAR(64) NOT NULL,\n"
           "  relay_policy INTEGER NOT NULL REFERENCES relay_policies (id)\n"
           ");\n"
           "CREATE INDEX relay_hosts_relay_policy ON relay_hosts (relay_policy);\n";
}

/* The how-to's rows, with limits small enough to reach in a test: the standard host may send
 * 10 mails a month, the premium one 25 (the seed has 10000 and 100000). */
inline const char *howto_rows()
{
    return "INSERT INTO relay_policies (id, \"desc\", config) VALUES (1, 'standard relay host', "
           "'{\"quota_count\":\"10\"}');\n"
           "INSERT INTO relay_policies (id, \"desc\", config) VALUES (2, 'premium relay host', "
           "'{\"quota_count\":\"25\"}');\n"
           "INSERT INTO relay_hosts (client_address, relay_policy) VALUES ('2604:8d00:0:1::3', "
           "1);\n"
           "INSERT INTO relay_hosts (client_address, relay_policy) VALUES ('2604:8d00:0:1::4', "
           "2);\n";
}

/* The how-to's SqlUserConfig, Quota and Accounting plugins (Quota before Accounting). extra
 * goes into the Accounting block (ringpolicyd options such as flush_interval). */
inline std::string howto_plugins(const std::string &quota_extra = "",
                                 const std::string &acct_extra = "")
{
    return R"(  <Plugin QuotaPolicyConfig>
    module = "SqlUserConfig"
    sql_query = "SELECT p.config FROM relay_policies p JOIN relay_hosts h ON (h.relay_policy = p.id) WHERE h.client_address=?"
    field = "client_address"
  </Plugin>
  <Plugin QuotaIP>
    module = "Quota"
    field = "client_address"
    metric = "count"
    threshold = 5
    uc_threshold = "quota_count"
    action = "defer you exceeded your monthly limit, please insert coin"
)" + quota_extra +
           R"(  </Plugin>
  <Plugin AcctIP>
    module = "Accounting"
    fields = "client_address"
)" + acct_extra +
           "  </Plugin>\n";
}

inline const char *kCoin = "defer you exceeded your monthly limit, please insert coin";

/* ---------------------------------------------------------------------------------------------
 * Backends
 */

inline rpdtest::PgServer &pg()
{
    return rpdtest::pg_server();
}

/* Starts the shared server again when an earlier test case left it stopped. */
inline void pg_up()
{
    PGconn *c = PQconnectdb(pg().conninfo().c_str());
    bool up = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    if (!up)
        REQUIRE(pg().start());
}

/* The <Connection NAME> block for the shared test PostgreSQL. */
inline std::string pg_connection(const std::string &name = "db")
{
    return "<Connection " + name +
           ">\n  module = \"Sql\"\n  dsn = \"dbi:Pg:dbname=policyd;host=127.0.0.1;port=" +
           std::to_string(pg().port()) +
           "\"\n  user = \"policyd\"\n  password = \"policyd\"\n</Connection>\n";
}

/* The <Connection NAME> block for an SQLite file (may use @DIR@). */
inline std::string sqlite_connection(const std::string &path, const std::string &name = "db")
{
    return "<Connection " + name + ">\n  module = \"Sql\"\n  dsn = \"dbi:SQLite:dbname=" + path +
           "\"\n</Connection>\n";
}

/* Rows of sql as "a|b|c" strings, run as role policyd on its database. FAILs on an error. */
inline std::vector<std::string> pg_rows(const std::string &sql)
{
    PGconn *c = PQconnectdb(pg().conninfo().c_str());
    PQsetNoticeProcessor(
        c, [](void *, const char *) {}, nullptr); /* "does not exist, skipping" */
    PGresult *r = PQexec(c, sql.c_str());
    ExecStatusType st = PQresultStatus(r);
    std::string why = std::string(PQerrorMessage(c)) + PQresultErrorMessage(r);
    std::vector<std::string> rows;
    for (int i = 0; st == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        std::string row;
        for (int j = 0; j < PQnfields(r); j++)
            row +=
                (j ? "|" : "") + std::string(PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
        rows.push_back(row);
    }
    PQclear(r);
    PQfinish(c);
    INFO(sql << ": " << why);
    REQUIRE((st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK));
    return rows;
}

/* Runs statements (several, separated by ';') on an SQLite file. FAILs on an error. */
inline std::vector<std::string> sqlite_rows(const std::string &path, const std::string &sql)
{
    sqlite3 *db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    std::vector<std::string> rows;
    const char *tail = sql.c_str();
    while (*tail) {
        sqlite3_stmt *st = nullptr;
        int rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
        INFO(sql << ": " << sqlite3_errmsg(db));
        REQUIRE(rc == SQLITE_OK);
        if (!st)
            break; /* only blanks left */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            std::string row;
            for (int j = 0; j < sqlite3_column_count(st); j++) {
                const unsigned char *v = sqlite3_column_text(st, j);
                row += (j ? "|" : "") + std::string(v ? (const char *)v : "NULL");
            }
            rows.push_back(row);
        }
        sqlite3_finalize(st);
        INFO(sql << ": " << sqlite3_errmsg(db));
        REQUIRE(rc == SQLITE_DONE);
    }
    sqlite3_close(db);
    return rows;
}

/* Whether a table exists (PostgreSQL: in the policyd database). */
inline bool pg_table_exists(const std::string &table)
{
    return pg_rows("SELECT 1 FROM pg_tables WHERE tablename = '" + table + "'").size() == 1;
}

/* ---------------------------------------------------------------------------------------------
 * Requests and counters
 */

/* An END-OF-MESSAGE request of one mail (Postfix 3.7's attributes, TOOLCHAIN.md 8). */
inline std::vector<std::string> eom(const std::string &instance, const std::string &client,
                                    uint64_t size, uint64_t rcpts,
                                    std::vector<std::pair<std::string, std::string>> more = {})
{
    std::vector<std::pair<std::string, std::string>> o = {
        {"protocol_state", "END-OF-MESSAGE"},
        {"instance", instance},
        {"client_address", client},
        {"size", std::to_string(size)},
        {"recipient_count", std::to_string(rcpts)},
        {"recipient", ""},
        {"queue_id", "4XyZ" + instance}};
    o.insert(o.end(), more.begin(), more.end());
    return postfix_request(o);
}

/* The counters of one row: count, count_rcpt, size, size_rcpt. */
using Counts = std::array<uint64_t, 4>;

inline Counts mail_counts(uint64_t size, uint64_t rcpts)
{
    return {1, rcpts ? rcpts : 1, size, rcpts ? size * rcpts : size};
}

inline void add(Counts &a, const Counts &b)
{
    for (size_t i = 0; i < 4; i++)
        a[i] += b[i];
}

inline std::string counts_text(const Counts &c)
{
    return std::to_string(c[0]) + "|" + std::to_string(c[1]) + "|" + std::to_string(c[2]) + "|" +
           std::to_string(c[3]);
}

/* The current bucket of time_pattern %Y-%m (local time, as the daemons compute it). */
inline std::string month_bucket()
{
    char buf[32];
    time_t now = time(nullptr);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(buf, sizeof(buf), "%Y-%m", &tm);
    return buf;
}

/* SELECT of an acct_ table's rows as "key|time|count|count_rcpt|size|size_rcpt", by key. */
inline std::string acct_select(const std::string &table)
{
    return "SELECT \"key\", \"time\", \"count\", \"count_rcpt\", \"size\", \"size_rcpt\" FROM " +
           table + " ORDER BY \"key\", \"time\"";
}

/* key -> "count|count_rcpt|size|size_rcpt" for the current month. */
inline std::map<std::string, std::string> acct_month(const std::vector<std::string> &rows)
{
    std::map<std::string, std::string> m;
    std::string month = month_bucket();
    for (auto &r : rows) {
        auto parts = split_lines(replace_all(r, "|", "\n"));
        if (parts.size() == 6 && parts[1] == month)
            m[parts[0]] = parts[2] + "|" + parts[3] + "|" + parts[4] + "|" + parts[5];
    }
    return m;
}

/* Polls fetch() until it returns want (the daemon flushes every flush_interval) or timeout_ms
 * passed; returns the last value. */
template <class F> auto wait_for(F fetch, const decltype(fetch()) &want, int timeout_ms = 10000)
{
    int64_t end = now_ms() + timeout_ms;
    auto got = fetch();
    while (got != want && now_ms() < end) {
        sleep_ms(50);
        got = fetch();
    }
    return got;
}

/* The first action of a reply, or what happened instead. */
inline std::string action_of(const Reply &r)
{
    if (!r.ok())
        return reply_status_name(r.status);
    return r.actions.empty() ? "<no action>" : r.actions[0];
}

} // namespace acctit

#endif
