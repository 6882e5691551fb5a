// maria_greylist.cpp: Greylist's auto-whitelist on MySQL (spec 13.12, appendix B) in a real
// ringpolicyd with tickets in a real memcached (tests/unit/mc/mc_server.h) and the autowl
// table on the test's MariaDB: created at start-up with 2.05's MySQL layout (the unique
// domain_ip key, latin1); a valid retry creates the entry with count 1, the next increments
// it; from autowl_threshold on a new triplet passes without a ticket and refreshes the entry;
// an entry unused for autowl_expire_days counts as none (greylisted again, and the valid retry
// restarts the row at count 1). Tickets fall due by rewriting their value in memcached.
#include "maria_rig.h"
#include "../../unit/mc/mc_server.h"

using namespace itest;
using namespace mariait;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

int g_seq = 0;

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

Reply send(uint16_t port, const std::string &sender, const std::string &ip, const std::string &rcpt)
{
    return ask(Endpoint::tcp(port),
               postfix_request({{"sender", sender},
                                {"client_address", ip},
                                {"recipient", rcpt},
                                {"instance", "mgl" + std::to_string(++g_seq)}}),
               10000);
}

void ticket_due(const std::string &ns, const std::string &sender, const std::string &ip,
                const std::string &rcpt)
{
    std::string key = ns + sender + "," + ip + "," + rcpt;
    INFO("ticket " << key);
    REQUIRE(mc().raw_get(key) != "(none)");
    REQUIRE(mc().raw_set(key, std::to_string(long(time(nullptr)) - 1), 3600));
}

void greylist_cycle(uint16_t port, const std::string &ns, const std::string &sender,
                    const std::string &ip, const std::string &rcpt)
{
    CHECK(first(send(port, sender, ip, rcpt)) == "defer greylisting is active");
    ticket_due(ns, sender, ip, rcpt);
    CHECK(first(send(port, sender, ip, rcpt)) == "dunno");
}

// "count|last_seen" of the entry, or "" for none.
std::string awl_row(const std::string &domain, const std::string &ip)
{
    auto rows = my_rows("SELECT count, last_seen FROM gl_awl WHERE sender_domain = '" + domain +
                        "' AND client_ip = '" + ip + "'");
    REQUIRE(rows.size() <= 1);
    return rows.empty() ? "" : rows[0];
}

long count_of_row(const std::string &row)
{
    return row.empty() ? -1 : std::stol(row.substr(0, row.find('|')));
}

} // namespace

TEST_CASE("Greylist on MySQL: the autowl table is created, counts passes, whitelists from "
          "autowl_threshold on",
          "[maria_greylist]")
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    uint16_t port = free_tcp_port();
    const std::string ns = "glmy" + std::to_string(getpid()) + "-";
    auto d = start_ring(
        "port = \"127.0.0.1:" + std::to_string(port) +
            "\"\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" + mc().addr() +
            "\"\n  namespace = \"" + ns + "\"\n</Connection>\n" + my_connection() +
            vhost_block(std::to_string(port), "gl",
                        "  <Plugin greylist>\n    module = \"Greylist\"\n"
                        "    autowl_threshold = 2\n    autowl_table = \"gl_awl\"\n"
                        "    autowl_expire_days = 1\n  </Plugin>\n" +
                            action_plugin("pass", "dunno")),
        Endpoint::tcp(port));
    std::string ddl = my_rows("SHOW CREATE TABLE gl_awl")[0];
    CHECK(contains(ddl, "UNIQUE KEY `domain_ip` (`client_ip`,`sender_domain`)"));
    CHECK(contains(ddl, "`last_seen` int(10) unsigned NOT NULL"));
    CHECK(contains(ddl, "DEFAULT CHARSET=latin1"));
    const std::string ip = "192.0.2.61", domain = "sender.example", s = "alice@" + domain;
    greylist_cycle(port, ns, s, ip, "r1@rcpt.example");
    std::string row = awl_row(domain, ip);
    CHECK(count_of_row(row) == 1);
    greylist_cycle(port, ns, "bob@" + domain, ip, "r2@rcpt.example");
    CHECK(count_of_row(awl_row(domain, ip)) == 2);
    CHECK(first(send(port, "carol@" + domain, ip, "r3@rcpt.example")) == "dunno");
    CHECK(mc().raw_get(ns + "carol@" + domain + "," + ip + ",r3@rcpt.example") == "(none)");
    CHECK(count_of_row(awl_row(domain, ip)) == 3);
    CHECK(first(send(port, s, "192.0.2.62", "r1@rcpt.example")) == "defer greylisting is active");
    /* An entry unused for autowl_expire_days counts as none: greylisted again ... */
    my_rows("UPDATE gl_awl SET last_seen = last_seen - 2 * 86400 WHERE client_ip = '" + ip + "'");
    greylist_cycle(port, ns, "erin@" + domain, ip, "r5@rcpt.example");
    /* ... and its valid retry restarts the row at count 1 (one row per pair: domain_ip). */
    CHECK(count_of_row(awl_row(domain, ip)) == 1);
    INFO("log:\n" << d->log());
    CHECK(d->stop() == 0);
}
