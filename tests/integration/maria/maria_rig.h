/*
 * maria_rig.h: what the MariaDB integration tests share (tests/integration/maria): the seed's
 * how-to statements exactly as it writes them for MySQL, the Sql connection block of a
 * database on the test's MariaDB, and reading tables back with libmariadb. Requests, counts
 * and buckets are the accounting tests' (tests/integration/acct/acct_rig.h).
 *
 * The MariaDB server is tests/unit/sql/maria_server.h's (one per test program, on a free
 * loopback port, gone when the program ends however it ends; SKIP or, with CI=1, FAIL when
 * MariaDB is not installed).
 */
#ifndef ITEST_MARIA_RIG_H
#define ITEST_MARIA_RIG_H

#include "../acct/acct_rig.h"
#include "../../unit/sql/maria_server.h"

namespace mariait
{

using namespace itest;
using namespace acctit;

/* The seed's HowtoAccountingQuota statements for MySQL, verbatim (mtpolicyd-cookbook). */
inline const char *howto_mysql()
{
    return "  CREATE TABLE `relay_policies` (\n"
           "    `id` int(11) NOT NULL auto_increment,\n"
           "    `desc` VARCHAR(64) NOT NULL,\n"
           "    `config` TEXT NOT NULL,\n"
           "    PRIMARY KEY  (`id`)\n"
           "  ) ENGINE=InnoDB;\n"
           "\n"
           "  INSERT INTO relay_policies VALUES(1, 'standard relay host', "
           "'{\"quota_count\":\"10000\"}');\n"
           "  INSERT INTO relay_policies VALUES(2, 'premium relay host', "
           "'{\"quota_count\":\"100000\"}');\n"
           "\n"
           "  CREATE TABLE `relay_hosts` (\n"
           "    `id` int(11) NOT NULL auto_increment,\n"
           "    `client_address` VARCHAR(64) NOT NULL,\n"
           "    `relay_policy` int(11) NOT NULL,\n"
           "    PRIMARY KEY  (`id`),\n"
           "    KEY `relay_policy` (`relay_policy`),\n"
           "    CONSTRAINT `relay_hosts_ibfk_1` FOREIGN KEY (`relay_policy`) REFERENCES "
           "`relay_policies` (`id`)\n"
           "  ) ENGINE=InnoDB;\n"
           "\n"
           "  INSERT INTO relay_hosts VALUES(NULL, '2604:8d00:0:1::3', 1);\n"
           "  INSERT INTO relay_hosts VALUES(NULL, '2604:8d00:0:1::4', 2);\n";
}

inline rpdtest::MariaServer &my()
{
    return rpdtest::maria_server();
}

/* A database of its own on the shared server (dropped first), granted to policyd. */
inline void my_fresh_db(const std::string &db)
{
    my().exec("DROP DATABASE IF EXISTS `" + db + "`");
    my().exec("CREATE DATABASE `" + db + "`");
    my().exec("GRANT ALL ON `" + db + "`.* TO 'policyd'@'%'");
}

/* The <Connection NAME> block for database db as user policyd. */
inline std::string my_connection(const std::string &db = "policyd", const std::string &name = "db")
{
    return "<Connection " + name + ">\n  module = \"Sql\"\n  dsn = \"dbi:mysql:database=" + db +
           ";host=127.0.0.1;port=" + std::to_string(my().port()) +
           "\"\n  user = \"policyd\"\n  password = \"policyd\"\n</Connection>\n";
}

/* Runs a script of statements (as root, on db); rows of the last one as "a|b|c" ("NULL").
 * FAILs on an error. */
inline std::vector<std::string> my_rows(const std::string &sql, const std::string &db = "policyd")
{
    MYSQL *c = mysql_init(nullptr);
    REQUIRE(mysql_real_connect(c, "127.0.0.1", "root", nullptr, db.c_str(),
                               (unsigned)my().port(), nullptr, CLIENT_MULTI_STATEMENTS) != nullptr);
    int rc = mysql_query(c, sql.c_str());
    INFO(sql << ": " << mysql_error(c));
    REQUIRE(rc == 0);
    std::vector<std::string> rows;
    do {
        MYSQL_RES *r = mysql_store_result(c);
        if (!r)
            continue;
        rows.clear();
        unsigned n = mysql_num_fields(r);
        for (MYSQL_ROW row; (row = mysql_fetch_row(r)) != nullptr;) {
            std::string s;
            for (unsigned j = 0; j < n; j++)
                s += (j ? "|" : "") + std::string(row[j] ? row[j] : "NULL");
            rows.push_back(s);
        }
        mysql_free_result(r);
    } while ((rc = mysql_next_result(c)) == 0);
    INFO(sql << ": " << mysql_error(c));
    REQUIRE(rc == -1);
    mysql_close(c);
    return rows;
}

/* SELECT of an acct_ table's rows as "key|time|count|count_rcpt|size|size_rcpt", by key. */
inline std::string my_acct_select(const std::string &table)
{
    return "SELECT `key`, `time`, `count`, `count_rcpt`, `size`, `size_rcpt` FROM `" + table +
           "` ORDER BY `key`, `time`";
}

} // namespace mariait

#endif
