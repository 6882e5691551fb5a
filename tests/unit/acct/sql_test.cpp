// sql_test.cpp: the SQL text of the accounting tables (policy/plugins/acct_sql.c): 2.05's
// SQLite definition byte for byte, ours for PostgreSQL, the unique index, the upsert and the
// selects, buffer sizes at N and N-1, Perl's /^\d+$/ for counters; and the statements run on
// an in-memory SQLite (no server needed): created, upserted twice (sums), selected back.
#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "plugins/acct_agg.h"
#include "plugins/acct_sql.h"
}

namespace
{

std::string create(pol_acct_dialect d, const char *t)
{
    char buf[2048];
    REQUIRE(pol_acct_sql_create(d, t, buf, sizeof(buf)) > 0);
    return buf;
}

std::string upsert(uint32_t rows, const char *t = "\"acct_x\"")
{
    std::vector<char> buf(pol_acct_sql_upsert_bytes(rows, strlen(t)));
    REQUIRE(pol_acct_sql_upsert(POL_ACCT_PG, t, rows, buf.data(), buf.size()) > 0);
    return buf.data();
}

std::string select(uint32_t keys, const char *t = "\"acct_x\"")
{
    std::vector<char> buf(pol_acct_sql_select_bytes(keys, strlen(t)));
    REQUIRE(pol_acct_sql_select(t, keys, buf.data(), buf.size()) > 0);
    return buf.data();
}

// An in-memory SQLite database that runs text with bound text parameters.
struct Db {
    sqlite3 *db = nullptr;
    Db()
    {
        REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
    }
    ~Db()
    {
        sqlite3_close(db);
    }
    // Returns rows as "a|b|c" strings; FAILs on an error.
    std::vector<std::string> run(const std::string &sql,
                                 const std::vector<std::string> &params = {})
    {
        sqlite3_stmt *st = nullptr;
        INFO(sql);
        REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        for (size_t i = 0; i < params.size(); i++)
            sqlite3_bind_text(st, (int)i + 1, params[i].data(), (int)params[i].size(),
                              SQLITE_TRANSIENT);
        std::vector<std::string> rows;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            std::string row;
            for (int c = 0; c < sqlite3_column_count(st); c++) {
                const unsigned char *v = sqlite3_column_text(st, c);
                row += (c ? "|" : "") + std::string(v ? (const char *)v : "NULL");
            }
            rows.push_back(row);
        }
        INFO(sqlite3_errmsg(db));
        REQUIRE(rc == SQLITE_DONE);
        sqlite3_finalize(st);
        return rows;
    }
};

} // namespace

TEST_CASE("SQLite table definition is 2.05's", "[sql]")
{
    // Mail::MtPolicyd::Plugin::Accounting, _single_table_create{SQLite}, %TABLE_NAME% replaced.
    CHECK(create(POL_ACCT_SQLITE, "\"acct_client_address\"") ==
          "CREATE TABLE \"acct_client_address\" (\n"
          "    `id` INTEGER PRIMARY KEY AUTOINCREMENT,\n"
          "    `key` VARCHAR(255) NOT NULL,\n"
          "    `time` VARCHAR(255) NOT NULL,\n"
          "    `count` INT UNSIGNED NOT NULL,\n"
          "    `count_rcpt` INT UNSIGNED NOT NULL,\n"
          "    `size` INT UNSIGNED NOT NULL,\n"
          "    `size_rcpt` INT UNSIGNED NOT NULL\n"
          ")");
}

TEST_CASE("PostgreSQL table definition: same columns, BIGINT counters", "[sql]")
{
    std::string s = create(POL_ACCT_PG, "\"acct_sender\"");
    CHECK(s.find("CREATE TABLE \"acct_sender\" (") == 0);
    CHECK(s.find("\"id\" BIGSERIAL PRIMARY KEY") != std::string::npos);
    CHECK(s.find("\"key\" VARCHAR(255) NOT NULL") != std::string::npos);
    CHECK(s.find("\"time\" VARCHAR(255) NOT NULL") != std::string::npos);
    for (const char *m : {"count", "count_rcpt", "size", "size_rcpt"})
        CHECK(s.find("\"" + std::string(m) + "\" BIGINT NOT NULL") != std::string::npos);
}

TEST_CASE("unique index name derives from the table, quotes doubled", "[sql]")
{
    char buf[512];
    REQUIRE(pol_acct_sql_unique_index("acct_x", "\"acct_x\"", buf, sizeof(buf)) > 0);
    CHECK(
        std::string(buf) ==
        "CREATE UNIQUE INDEX IF NOT EXISTS \"acct_x_time_key\" ON \"acct_x\" (\"key\", \"time\")");
    REQUIRE(pol_acct_sql_unique_index("a\"b", "\"a\"\"b\"", buf, sizeof(buf)) > 0);
    CHECK(std::string(buf).find("\"a\"\"b_time_key\" ON \"a\"\"b\"") != std::string::npos);
}

TEST_CASE("upsert text: one row and three rows", "[sql]")
{
    const std::string row =
        "(?,?,CAST(? AS BIGINT),CAST(? AS BIGINT),CAST(? AS BIGINT),CAST(? AS BIGINT))";
    const std::string head =
        "INSERT INTO \"acct_x\" (\"key\",\"time\",\"count\",\"count_rcpt\",\"size\",\"size_rcpt\")"
        " VALUES ";
    const std::string tail =
        " ON CONFLICT (\"key\",\"time\") DO UPDATE SET \"count\" = \"acct_x\".\"count\" + "
        "excluded.\"count\", \"count_rcpt\" = \"acct_x\".\"count_rcpt\" + excluded.\"count_rcpt\", "
        "\"size\" = \"acct_x\".\"size\" + excluded.\"size\", \"size_rcpt\" = "
        "\"acct_x\".\"size_rcpt\" + excluded.\"size_rcpt\"";
    CHECK(upsert(1) == head + row + tail);
    CHECK(upsert(3) == head + row + "," + row + "," + row + tail);
}

TEST_CASE("select texts", "[sql]")
{
    CHECK(select(2) == "SELECT \"key\",\"time\",\"count\",\"count_rcpt\",\"size\",\"size_rcpt\" "
                       "FROM \"acct_x\" WHERE (\"key\",\"time\") IN ((?,?),(?,?))");
    char buf[256];
    REQUIRE(pol_acct_sql_select_one("\"acct_x\"", "size_rcpt", buf, sizeof(buf)) > 0);
    CHECK(std::string(buf) ==
          "SELECT \"size_rcpt\" FROM \"acct_x\" WHERE \"key\"=? AND \"time\"=?");
    char ex[64];
    REQUIRE(pol_acct_sql_exists("\"acct_x\"", ex, sizeof(ex)) > 0);
    CHECK(std::string(ex) == "SELECT * FROM \"acct_x\" WHERE 1=0");
}

TEST_CASE("the size bounds hold for the largest statements; one byte short fails", "[sql]")
{
    const char *t = "\"a_rather_long_table_prefix_and_field_name_to_stretch_the_estimate\"";
    for (uint32_t rows : {1u, 7u, 1000u}) {
        size_t cap = pol_acct_sql_upsert_bytes(rows, strlen(t));
        std::vector<char> buf(cap);
        size_t len = pol_acct_sql_upsert(POL_ACCT_PG, t, rows, buf.data(), buf.size());
        REQUIRE(len > 0);
        CHECK(len < cap);
        // Exactly len + 1 bytes is enough, len bytes is not (and gives an empty string).
        std::vector<char> exact(len + 1), short_(len);
        CHECK(pol_acct_sql_upsert(POL_ACCT_PG, t, rows, exact.data(), exact.size()) == len);
        CHECK(pol_acct_sql_upsert(POL_ACCT_PG, t, rows, short_.data(), short_.size()) == 0);
        CHECK(short_[0] == '\0');
    }
    size_t cap = pol_acct_sql_select_bytes(64, strlen(t));
    std::vector<char> buf(cap);
    CHECK(pol_acct_sql_select(t, 64, buf.data(), buf.size()) > 0);
}

TEST_CASE("counter values: only all-digit text counts (2.05's /^\\d+$/)", "[sql]")
{
    CHECK(pol_acct_sql_count_of("0", 1) == 0);
    CHECK(pol_acct_sql_count_of("147081", 6) == 147081);
    CHECK(pol_acct_sql_count_of("18446744073709551615", 20) == UINT64_MAX);
    CHECK(pol_acct_sql_count_of("99999999999999999999", 20) == UINT64_MAX);
    CHECK(pol_acct_sql_count_of("", 0) == 0);
    CHECK(pol_acct_sql_count_of(nullptr, 0) == 0);
    CHECK(pol_acct_sql_count_of("-5", 2) == 0);
    CHECK(pol_acct_sql_count_of("1.5", 3) == 0);
    CHECK(pol_acct_sql_count_of("12abc", 5) == 0);
    CHECK(pol_acct_sql_count_of(" 12", 3) == 0);
}

TEST_CASE("the statements run on SQLite: create, index, upsert sums, select", "[sql]")
{
    Db db;
    db.run(create(POL_ACCT_SQLITE, "\"acct_client_address\""));
    char buf[512];
    REQUIRE(pol_acct_sql_exists("\"acct_client_address\"", buf, sizeof(buf)) > 0);
    db.run(buf);
    REQUIRE(pol_acct_sql_unique_index("acct_client_address", "\"acct_client_address\"", buf,
                                      sizeof(buf)) > 0);
    db.run(buf);
    db.run(buf); // IF NOT EXISTS: a second start-up is fine
    const char *t = "\"acct_client_address\"";
    std::vector<char> up(pol_acct_sql_upsert_bytes(2, strlen(t)));
    REQUIRE(pol_acct_sql_upsert(POL_ACCT_SQLITE, t, 2, up.data(), up.size()) > 0);
    // Appendix D #5 in two flushes: 5 + 6 mails from .0.1, 4 + 6 from .2.1.
    db.run(up.data(), {"192.168.0.1", "2014-12", "5", "5", "66855", "66855", "192.168.2.1",
                       "2014-12", "4", "40", "53484", "534840"});
    db.run(up.data(), {"192.168.0.1", "2014-12", "6", "6", "80226", "80226", "192.168.2.1",
                       "2014-12", "6", "60", "80226", "802260"});
    CHECK(db.run("SELECT id, key, time, count, count_rcpt, size, size_rcpt, typeof(count) FROM "
                 "acct_client_address ORDER BY id") ==
          std::vector<std::string>{"1|192.168.0.1|2014-12|11|11|147081|147081|integer",
                                   "2|192.168.2.1|2014-12|10|100|133710|1337100|integer"});
    std::string sel = select(2, t);
    CHECK(db.run(sel, {"192.168.2.1", "2014-12", "192.168.9.9", "2014-12"}) ==
          std::vector<std::string>{"192.168.2.1|2014-12|10|100|133710|1337100"});
    REQUIRE(pol_acct_sql_select_one(t, "count", buf, sizeof(buf)) > 0);
    CHECK(db.run(buf, {"192.168.0.1", "2014-12"}) == std::vector<std::string>{"11"});
}

TEST_CASE("PostgreSQL statements take one array per column", "[sql]")
{
    char buf[1024];
    REQUIRE(pol_acct_sql_upsert_pg("\"acct_x\"", buf, sizeof(buf)) > 0);
    CHECK(
        std::string(buf) ==
        "WITH b AS (INSERT INTO ringpolicyd_acct_batches (id) VALUES (CAST(? AS bigint)) ON "
        "CONFLICT DO NOTHING RETURNING id) "
        "INSERT INTO \"acct_x\" (\"key\",\"time\",\"count\",\"count_rcpt\",\"size\",\"size_rcpt\")"
        " SELECT * FROM unnest(CAST(? AS text[]),CAST(? AS text[]),CAST(? AS bigint[]),"
        "CAST(? AS bigint[]),CAST(? AS bigint[]),CAST(? AS bigint[])) WHERE EXISTS (SELECT 1 FROM "
        "b) ON CONFLICT "
        "(\"key\",\"time\") DO UPDATE SET \"count\" = \"acct_x\".\"count\" + excluded.\"count\", "
        "\"count_rcpt\" = \"acct_x\".\"count_rcpt\" + excluded.\"count_rcpt\", \"size\" = "
        "\"acct_x\".\"size\" + excluded.\"size\", \"size_rcpt\" = \"acct_x\".\"size_rcpt\" + "
        "excluded.\"size_rcpt\"");
    REQUIRE(pol_acct_sql_select_pg("\"acct_x\"", buf, sizeof(buf)) > 0);
    CHECK(
        std::string(buf) ==
        "SELECT \"key\",\"time\",\"count\",\"count_rcpt\",\"size\",\"size_rcpt\" FROM \"acct_x\" "
        "WHERE (\"key\",\"time\") IN (SELECT * FROM unnest(CAST(? AS text[]),CAST(? AS text[])))");
}

TEST_CASE("array literals: quoting, escapes, numbers; room at N and N-1", "[sql]")
{
    char buf[64];
    size_t len = 0;
    REQUIRE(pol_acct_sql_array_add(buf, sizeof(buf), &len, "a", 1, true));
    CHECK(std::string(buf) == "{\"a\"}");
    REQUIRE(pol_acct_sql_array_add(buf, sizeof(buf), &len, "b\"c\\d", 5, true));
    REQUIRE(pol_acct_sql_array_add(buf, sizeof(buf), &len, "", 0, true));
    REQUIRE(pol_acct_sql_array_add(buf, sizeof(buf), &len, "{x, NULL}", 9, true));
    CHECK(std::string(buf) == "{\"a\",\"b\\\"c\\\\d\",\"\",\"{x, NULL}\"}");
    CHECK(len == strlen(buf));
    char nums[16];
    size_t nl = 0;
    REQUIRE(pol_acct_sql_array_add(nums, sizeof(nums), &nl, "12", 2, false));
    REQUIRE(pol_acct_sql_array_add(nums, sizeof(nums), &nl, "0", 1, false));
    CHECK(std::string(nums) == "{12,0}");
    // "{12,0,345}" plus NUL is 11 bytes: 11 fit, 10 do not (and leave the text as it was).
    char exact[11], tight[10];
    for (char *b : {exact, tight}) {
        size_t l = 0;
        size_t cap = b == exact ? sizeof(exact) : sizeof(tight);
        REQUIRE(pol_acct_sql_array_add(b, cap, &l, "12", 2, false));
        REQUIRE(pol_acct_sql_array_add(b, cap, &l, "0", 1, false));
        bool ok = pol_acct_sql_array_add(b, cap, &l, "345", 3, false);
        CHECK(ok == (b == exact));
        CHECK(std::string(b) == (ok ? "{12,0,345}" : "{12,0}"));
    }
    CHECK(pol_acct_sql_array_elem_bytes(3) >= strlen(",\"\\\"\\\\\\\"\"}"));
}
