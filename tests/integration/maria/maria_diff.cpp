// maria_diff.cpp: the Perl mtpolicyd 2.05 (DBD::mysql) and ringpolicyd on the same MySQL
// configuration, each on its own database of one MariaDB seeded identically: the seed's
// how-to statements verbatim, with SqlUserConfig + Quota + Accounting (rows put into the
// acct_ table each daemon created bring the relay hosts to their limits), SqlList allow and
// deny lists with a score, and SqlUserConfig values seen by later plugins. Every reply must be
// identical, and after ringpolicyd flushed (it stops; 2.05 writes at once) both databases must
// hold the same acct_client_address rows (ids aside: ours are assigned per flush batch) and
// the same table definition.
#include "maria_rig.h"

using namespace itest;
using namespace acctit;
using namespace mariait;

namespace
{

const char *kSeed = "CREATE TABLE whitelist (client_ip VARCHAR(64));\n"
                    "INSERT INTO whitelist VALUES ('10.1.1.1');\n"
                    "CREATE TABLE blacklist (client_ip VARCHAR(64));\n"
                    "INSERT INTO blacklist VALUES ('10.6.6.6'), ('10.6.6.6');\n"
                    "CREATE TABLE scored (sender VARCHAR(255));\n"
                    "INSERT INTO scored VALUES ('spam@example.org');\n"
                    "CREATE TABLE user_config (address VARCHAR(255), config TEXT);\n"
                    "INSERT INTO user_config VALUES ('a@example.com', '{\"mode\":\"on\"}'),"
                    " ('b@example.com', '{\"mode\":1e2}'), ('c@example.com', '{\"mode\":true}'),"
                    " ('d@example.com', 'not json');\n";

std::string sqllist(const std::string &name, const std::string &body)
{
    return "  <Plugin " + name + ">\n    module = \"SqlList\"\n" + body + "  </Plugin>\n";
}

std::string condition(const std::string &name, const std::string &key, const std::string &value)
{
    return "  <Plugin " + name + ">\n    module = \"Condition\"\n    key = \"" + key +
           "\"\n    match = \"" + value + "\"\n    action = \"reject " + name + "\"\n  </Plugin>\n";
}

struct Vhost {
    std::string name, body;
};

std::vector<Vhost> vhosts()
{
    return {
        {"howto", howto_plugins()},
        {"lists",
         sqllist("white", "    sql_query = \"SELECT client_ip FROM whitelist WHERE client_ip=?\"\n"
                          "    match_action = \"dunno\"\n") +
             sqllist("black",
                     "    sql_query = \"SELECT client_ip FROM blacklist WHERE client_ip=?\"\n"
                     "    match_action = \"reject you are blacklisted!\"\n") +
             sqllist("scored", "    sql_query = \"SELECT sender FROM scored WHERE sender=?\"\n"
                               "    field = \"sender\"\n    score = 5\n") +
             "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n  </Plugin>\n"},
        {"userconfig", "  <Plugin ucfg>\n    module = \"SqlUserConfig\"\n  </Plugin>\n" +
                           condition("mode-on", "s:mode", "on") +
                           condition("mode-100", "s:mode", "100") +
                           condition("mode-1", "s:mode", "1")},
    };
}

struct Side {
    std::string db;
    std::map<std::string, uint16_t> ports;
    std::unique_ptr<Daemon> d;
    std::map<std::string, Conn> conns;

    std::string config() const
    {
        std::string list, c;
        for (auto &v : vhosts()) {
            list += (list.empty() ? "" : ",") + std::string("127.0.0.1:") +
                    std::to_string(ports.at(v.name));
            c += vhost_block(std::to_string(ports.at(v.name)), v.name, v.body);
        }
        return "port = \"" + list + "\"\n" + my_connection(db) + c;
    }
    std::string ask(const std::string &vhost, const std::vector<std::string> &attrs)
    {
        Conn &c = conns[vhost];
        if (!c.ok() || !c.reusable())
            c = Conn(Endpoint::tcp(ports.at(vhost)));
        return action_of(c.request(attrs, 10000));
    }
};

struct Case {
    std::string vhost;
    std::vector<std::string> attrs;
    std::string want;
};

std::vector<Case> cases()
{
    std::vector<Case> c;
    /* The how-to: ::3 has 3 mails left of 10000, ::4 2 of 100000, 192.0.2.99 (no policy) 5. */
    const char *clients[] = {"2604:8d00:0:1::3", "2604:8d00:0:1::4", "192.0.2.99"};
    int left[] = {3, 2, 5};
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 3; k++)
            c.push_back({"howto",
                         eom("h" + std::to_string(i) + "-" + std::to_string(k), clients[k],
                             (uint64_t)(100 + 10 * i + k), (uint64_t)(i % 3)),
                         i < left[k] ? "dunno" : kCoin});
    c.push_back({"howto", eom("h-blank", " ", 5, 1), "dunno"});
    c.push_back({"lists", eom("l1", "10.1.1.1", 1, 1), "dunno"});
    c.push_back({"lists", eom("l2", "10.6.6.6", 1, 1), "reject you are blacklisted!"});
    c.push_back({"lists", eom("l3", "10.2.2.2", 1, 1, {{"sender", "spam@example.org"}}),
                 "PREPEND X-MtScore: YES score=5 [scored=5]"});
    c.push_back({"lists", eom("l4", "10.2.2.2", 1, 1, {{"sender", "ham@example.org"}}),
                 "PREPEND X-MtScore: NO score=0"});
    /* A value that tries to end the SQL literal is one value on both. */
    c.push_back({"lists", eom("l5", "10.1.1.1' OR '1'='1", 1, 1), "PREPEND X-MtScore: NO score=0"});
    auto rcpt = [](const std::string &inst, const std::string &r) {
        return eom(inst, "10.3.3.3", 1, 1, {{"recipient", r}});
    };
    c.push_back({"userconfig", rcpt("u1", "a@example.com"), "reject mode-on"});
    c.push_back({"userconfig", rcpt("u2", "b@example.com"), "reject mode-100"});
    c.push_back({"userconfig", rcpt("u3", "c@example.com"), "reject mode-1"});
    c.push_back({"userconfig", rcpt("u4", "d@example.com"), "dunno"});
    c.push_back({"userconfig", rcpt("u5", "nobody@example.com"), "dunno"});
    return c;
}

std::string acct_rows(const std::string &db)
{
    std::string s;
    for (auto &r : my_rows(my_acct_select("acct_client_address"), db))
        s += r + "\n";
    return s;
}

} // namespace

TEST_CASE("MySQL: same replies and same acct_ rows as the Perl mtpolicyd", "[maria_diff]")
{
    need_perl();
    need_ringpolicyd();
    Side perl{"policyd_perl", {}, {}, {}}, ring{"policyd_ring", {}, {}, {}};
    for (Side *s : {&perl, &ring}) {
        my_fresh_db(s->db);
        my_rows(std::string(howto_mysql()) + kSeed, s->db);
        for (auto &v : vhosts())
            s->ports[v.name] = free_tcp_port();
        s->d.reset(new Daemon(s == &perl ? Impl::Perl : Impl::Ring, s->config()));
        s->d->set_ready(Endpoint::tcp(s->ports.at("howto")));
        bool started = s->d->start();
        INFO(s->db << ": " << s->d->error() << "\n" << s->d->log());
        REQUIRE(started);
    }
    /* Each created acct_client_address the same way (2.05's MySQL definition). */
    std::string ddl_perl = my_rows("SHOW CREATE TABLE acct_client_address", perl.db)[0];
    CHECK(my_rows("SHOW CREATE TABLE acct_client_address", ring.db)[0] == ddl_perl);
    std::string m = month_bucket();
    for (Side *s : {&perl, &ring})
        my_rows("INSERT INTO acct_client_address (`key`, `time`, `count`, `count_rcpt`, `size`, "
                "`size_rcpt`) VALUES ('2604:8d00:0:1::3', '" + m + "', 9997, 9997, 1, 1), "
                "('2604:8d00:0:1::4', '" + m + "', 99998, 99998, 2, 2)",
                s->db);
    int n = 0;
    for (const Case &c : cases()) {
        std::string p = perl.ask(c.vhost, c.attrs), r = ring.ask(c.vhost, c.attrs);
        INFO("case " << n++ << " on " << c.vhost << ": perl " << p << ", ringpolicyd " << r);
        CHECK(p == c.want);
        CHECK(r == p);
    }
    /* ringpolicyd writes its counts at the latest when it stops. */
    CHECK(ring.d->stop() == 0);
    std::string rows = acct_rows(perl.db);
    INFO("ringpolicyd's log:\n" << ring.d->log());
    CHECK(acct_rows(ring.db) == rows);
    CHECK(count_of(rows, "\n") == 3);
}
