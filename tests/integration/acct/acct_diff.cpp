// acct_diff.cpp: the Perl mtpolicyd 2.05 and ringpolicyd on the same SQLite configuration
// (2.05 options only, so ringpolicyd's flush_interval stays at its default): the how-to's
// SqlUserConfig + Quota + Accounting, SqlList allow/deny lists with a score, SqlUserConfig
// values seen by later plugins, and a Quota on a table no Accounting plugin writes (read
// directly, via uc_field). Every reply must be identical (two differences by design are
// asserted as such), and after ringpolicyd flushed (it stops; 2.05 writes at once) both
// databases must hold the same acct_ rows (ids aside: ours are assigned per flush batch).
#include "../diffcheck.h"
#include "acct_rig.h"

using namespace itest;
using namespace acctit;

namespace
{

/* The database both daemons start from (each its own copy): the how-to's relay tables, the
 * lists, user configs, and an acct_helo_name table filled by hand. */
std::string seed_database()
{
    TempDir tmp;
    std::string path = tmp.file("seed.sqlite");
    sqlite_rows(path, std::string(howto_sqlite_ddl()) +
                          "INSERT INTO relay_policies (id, \"desc\", config) VALUES (1, 'small', "
                          "'{\"quota_count\":\"3\"}');\n"
                          "INSERT INTO relay_policies (id, \"desc\", config) VALUES (2, 'large', "
                          "'{\"quota_count\":\"4\"}');\n"
                          "INSERT INTO relay_hosts (client_address, relay_policy) VALUES "
                          "('10.0.0.3', 1), ('2001:db8::4', 2);\n"
                          "CREATE TABLE whitelist (client_ip TEXT);\n"
                          "INSERT INTO whitelist VALUES ('10.1.1.1');\n"
                          "CREATE TABLE blacklist (client_ip TEXT);\n"
                          "INSERT INTO blacklist VALUES ('10.6.6.6'), ('10.6.6.6');\n"
                          "CREATE TABLE scored (sender TEXT);\n"
                          "INSERT INTO scored VALUES ('spam@example.org');\n"
                          "CREATE TABLE user_config (address TEXT, config TEXT);\n"
                          "INSERT INTO user_config VALUES ('a@example.com', '{\"mode\":\"on\"}'),"
                          " ('b@example.com', '{\"mode\":1e2}'), ('c@example.com', "
                          "'{\"mode\":true}'), ('d@example.com', 'not json'), "
                          "('e@example.com', '[\"mode\"]'), ('q@example.com', "
                          "'{\"qf\":\"helo_name\"}');\n"
                          "CREATE TABLE acct_helo_name (`id` INTEGER PRIMARY KEY AUTOINCREMENT, "
                          "`key` VARCHAR(255) NOT NULL, `time` VARCHAR(255) NOT NULL, `count` "
                          "INT UNSIGNED NOT NULL, `count_rcpt` INT UNSIGNED NOT NULL, `size` INT "
                          "UNSIGNED NOT NULL, `size_rcpt` INT UNSIGNED NOT NULL);\n"
                          "INSERT INTO acct_helo_name (key, time, count, count_rcpt, size, "
                          "size_rcpt) VALUES ('busy.example.org', '" +
                          month_bucket() + "', 7, 7, 700, 700);\n");
    return read_file(path);
}

std::string sqllist(const std::string &name, const std::string &body)
{
    return "  <Plugin " + name + ">\n    module = \"SqlList\"\n" + body + "  </Plugin>\n";
}

std::string condition(const std::string &name, const std::string &key, const std::string &value)
{
    return "  <Plugin " + name + ">\n    module = \"Condition\"\n    key = \"" + key +
           "\"\n    match = \"" + value + "\"\n    action = \"reject " + name + "\"\n  </Plugin>\n";
}

std::vector<VhostSpec> vhosts()
{
    return {
        {"howto", howto_plugins(), ""},
        {"lists",
         sqllist("white", "    sql_query = \"SELECT client_ip FROM whitelist WHERE client_ip=?\"\n"
                          "    match_action = \"dunno\"\n") +
             sqllist("black",
                     "    sql_query = \"SELECT client_ip FROM blacklist WHERE client_ip=?\"\n"
                     "    match_action = \"reject you are blacklisted!\"\n") +
             sqllist("scored", "    sql_query = \"SELECT sender FROM scored WHERE sender=?\"\n"
                               "    field = \"sender\"\n    score = 5\n") +
             "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n  </Plugin>\n",
         ""},
        {"notlisted",
         sqllist("known", "    sql_query = \"SELECT client_ip FROM whitelist WHERE client_ip=?\"\n"
                          "    not_match_action = \"reject unknown client\"\n"),
         ""},
        {"userconfig",
         "  <Plugin ucfg>\n    module = \"SqlUserConfig\"\n  </Plugin>\n" +
             condition("mode-on", "s:mode", "on") + condition("mode-100", "s:mode", "100") +
             condition("mode-1", "s:mode", "1"),
         ""},
        {"ucfield",
         "  <Plugin ucfg>\n    module = \"SqlUserConfig\"\n  </Plugin>\n"
         "  <Plugin q>\n    module = \"Quota\"\n    field = \"sender\"\n    uc_field = \"qf\"\n"
         "    metric = \"count\"\n    threshold = 5\n    action = \"defer helo over\"\n"
         "  </Plugin>\n",
         ""},
    };
}

std::vector<std::string> mail(const std::string &inst, const std::string &client, uint64_t size,
                              uint64_t rcpts,
                              std::vector<std::pair<std::string, std::string>> more = {})
{
    return eom(inst, client, size, rcpts, std::move(more));
}

std::vector<DiffCase> cases()
{
    std::vector<DiffCase> c;
    /* The how-to: limits 3 (policy 1), 4 (policy 2) and 5 (no policy); mails past the limit
     * are deferred and not counted. Requests alternate between the clients. */
    const char *clients[] = {"10.0.0.3", "2001:db8::4", "192.0.2.99"};
    int limits[] = {3, 4, 5};
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 3; k++)
            c.push_back({"howto",
                         mail("h" + std::to_string(i) + "-" + std::to_string(k), clients[k],
                              (uint64_t)(100 + 10 * i + k), (uint64_t)(i % 3)),
                         i < limits[k] ? "dunno" : kCoin, "", ""});
    /* A client address that is blank is not accounted (and Quota skips it). */
    c.push_back({"howto", mail("h-blank", " ", 5, 1), "dunno", "", ""});
    /* SqlList: listed, not listed, two rows, score once per mail. */
    c.push_back({"lists", mail("l1", "10.1.1.1", 1, 1), "dunno", "", ""});
    c.push_back({"lists", mail("l2", "10.6.6.6", 1, 1), "reject you are blacklisted!", "", ""});
    c.push_back({"lists", mail("l3", "10.2.2.2", 1, 1, {{"sender", "spam@example.org"}}),
                 "PREPEND X-MtScore: YES score=5 [scored=5]", "", ""});
    c.push_back({"lists", mail("l4", "10.2.2.2", 1, 1, {{"sender", "ham@example.org"}}),
                 "PREPEND X-MtScore: NO score=0", "", ""});
    c.push_back({"notlisted", mail("n1", "10.1.1.1", 1, 1), "dunno", "", ""});
    c.push_back({"notlisted", mail("n2", "10.9.9.9", 1, 1), "reject unknown client", "", ""});
    /* SqlUserConfig: a string, a number as Perl prints it, true as 1; bad JSON and no row
     * are logged and change nothing. */
    auto rcpt = [](const std::string &inst, const std::string &r) {
        return mail(inst, "10.3.3.3", 1, 1, {{"recipient", r}});
    };
    c.push_back({"userconfig", rcpt("u1", "a@example.com"), "reject mode-on", "", ""});
    c.push_back({"userconfig", rcpt("u2", "b@example.com"), "reject mode-100", "", ""});
    c.push_back({"userconfig", rcpt("u3", "c@example.com"), "reject mode-1", "", ""});
    c.push_back({"userconfig", rcpt("u4", "d@example.com"), "dunno", "", ""});
    c.push_back({"userconfig", rcpt("u5", "nobody@example.com"), "dunno", "", ""});
    c.push_back({"userconfig", rcpt("u6", ""), "dunno", "", ""});
    c.push_back({"userconfig", rcpt("u7", "e@example.com"), "<closed>", "dunno",
                 "spec 13.28: a JSON value that is not an object is logged like invalid JSON"});
    /* Quota with uc_field: a table no Accounting plugin writes, read directly. */
    auto helo = [](const std::string &inst, const std::string &h, const std::string &r) {
        return mail(inst, "10.4.4.4", 1, 1, {{"helo_name", h}, {"recipient", r}});
    };
    c.push_back(
        {"ucfield", helo("q1", "busy.example.org", "q@example.com"), "defer helo over", "", ""});
    c.push_back({"ucfield", helo("q2", "quiet.example.org", "q@example.com"), "dunno", "", ""});
    /* Without the user config the field is sender, whose table does not exist: a failure. */
    c.push_back({"ucfield", helo("q3", "busy.example.org", "x@example.com"), "<closed>", "", ""});
    return c;
}

std::string acct_rows(const std::string &db, const std::string &table)
{
    std::string s;
    for (auto &r : sqlite_rows(db, acct_select(table)))
        s += r + "\n";
    return s;
}

} // namespace

TEST_CASE("SQLite: same replies and same acct_ rows as the Perl mtpolicyd", "[acct_diff]")
{
    DiffRig rig(vhosts(), sqlite_connection("@DIR@/policy.sqlite"),
                {{"policy.sqlite", seed_database()}});
    bool started = rig.start();
    INFO(rig.error());
    REQUIRE(started);
    run_cases(rig, vhosts(), cases());
    if (!rig.has_ring())
        return;
    /* ringpolicyd writes its counts at the latest when it stops. */
    CHECK(rig.daemon(Impl::Ring).stop() == 0);
    std::string perl_db = rig.daemon(Impl::Perl).dir() + "/policy.sqlite";
    std::string ring_db = rig.daemon(Impl::Ring).dir() + "/policy.sqlite";
    std::string perl_rows = acct_rows(perl_db, "acct_client_address");
    INFO("ringpolicyd's log:\n" << rig.daemon(Impl::Ring).log());
    CHECK(acct_rows(ring_db, "acct_client_address") == perl_rows);
    CHECK(count_of(perl_rows, "\n") == 3);
    CHECK(acct_rows(ring_db, "acct_helo_name") == acct_rows(perl_db, "acct_helo_name"));
}
