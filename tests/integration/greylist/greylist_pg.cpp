// greylist_pg.cpp: Greylist's auto-whitelist on PostgreSQL (spec 13.12, 16 #1, appendix B) with
// a real PostgreSQL (tests/unit/sql/pg_server.h, through acct_rig.h's helpers) and a real
// memcached for the tickets (tests/unit/mc/mc_server.h), in a real ringpolicyd, and the Perl
// mtpolicyd 2.05 (DBD::Pg) on the same server:
//   - ringpolicyd creates the autowl table at start-up (columns, the unique (client_ip,
//     sender_domain) key); a valid retry creates the entry with count 1, the next ones
//     increment it; from autowl_threshold on the sender passes without a ticket and each pass
//     refreshes the entry (count + 1, last_seen now); an entry unused for autowl_expire_days
//     counts as none.
//   - against 2.05 on a table made by hand (2.05 has no PostgreSQL definition, and inserts NULL
//     into id, so id must be nullable): with an entry present and autowl_threshold = 1 (where
//     2.05 works) both pass at once and both increment the entry; after a valid retry 2.05
//     creates no entry (16 #1: with a session its count is the number of cached values), while
//     ringpolicyd creates it with count 1 (the documented difference).
// Tickets fall due by rewriting their value in memcached (2.05's wait is always 300 s).
#include "../acct/acct_rig.h"
#include "../../unit/mc/mc_server.h"

using namespace acctit;

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
                                {"instance", "gl" + std::to_string(++g_seq)}}),
               10000);
}

// The connections and one vhost with Greylist (opts inside the plugin) then `dunno`.
std::string config(uint16_t port, const std::string &ns, const std::string &opts)
{
    return "port = \"127.0.0.1:" + std::to_string(port) +
           "\"\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" + mc().addr() +
           "\"\n  namespace = \"" + ns + "\"\n</Connection>\n" + pg_connection() +
           vhost_block(std::to_string(port), "gl",
                       "  <Plugin greylist>\n    module = \"Greylist\"\n" + opts +
                           "  </Plugin>\n" + action_plugin("pass", "dunno"));
}

// Makes the ticket of a triplet due now (its value is the time from which a retry passes).
void ticket_due(const std::string &ns, const std::string &sender, const std::string &ip,
                const std::string &rcpt)
{
    std::string key = ns + sender + "," + ip + "," + rcpt;
    INFO("ticket " << key);
    REQUIRE(mc().raw_get(key) != "(none)");
    REQUIRE(mc().raw_set(key, std::to_string(long(time(nullptr)) - 1), 3600));
}

// "count|last_seen" of the entry, or "" for none.
std::string awl_row(const std::string &table, const std::string &domain, const std::string &ip)
{
    auto rows = pg_rows("SELECT count, last_seen FROM " + table + " WHERE sender_domain = '" +
                        domain + "' AND client_ip = '" + ip + "'");
    REQUIRE(rows.size() <= 1);
    return rows.empty() ? "" : rows[0];
}

long count_of(const std::string &row)
{
    return row.empty() ? -1 : std::stol(row.substr(0, row.find('|')));
}

long last_seen_of(const std::string &row)
{
    return row.empty() ? -1 : std::stol(row.substr(row.find('|') + 1));
}

// A greylisted first attempt, then the valid retry (ticket made due): the retry passes.
void greylist_cycle(uint16_t port, const std::string &ns, const std::string &sender,
                    const std::string &ip, const std::string &rcpt)
{
    CHECK(first(send(port, sender, ip, rcpt)) == "defer greylisting is active");
    ticket_due(ns, sender, ip, rcpt);
    CHECK(first(send(port, sender, ip, rcpt)) == "dunno");
    // The pass deleted the ticket.
    CHECK(mc().raw_get(ns + sender + "," + ip + "," + rcpt) == "(none)");
}

} // namespace

TEST_CASE("ringpolicyd on PostgreSQL: the autowl table is created, counts passes, whitelists "
          "from autowl_threshold on",
          "[greylist_pg]")
{
    pg_up();
    pg_rows("DROP TABLE IF EXISTS gl_awl");
    uint16_t port = free_tcp_port();
    const std::string ns = "glpg" + std::to_string(getpid()) + "-";
    auto d = start_ring(config(port, ns,
                               "    autowl_threshold = 2\n    autowl_table = \"gl_awl\"\n"
                               "    autowl_expire_days = 1\n"),
                        Endpoint::tcp(port));

    // Created at start-up, with the columns of appendix B and the unique key the upsert of
    // several hosts relies on.
    CHECK(pg_rows("SELECT column_name FROM information_schema.columns WHERE table_name = "
                  "'gl_awl' ORDER BY column_name") ==
          std::vector<std::string>{"client_ip", "count", "id", "last_seen", "sender_domain"});
    CHECK(pg_rows("SELECT count(*) FROM pg_indexes WHERE tablename = 'gl_awl' AND indexdef LIKE "
                  "'%UNIQUE%client_ip, sender_domain%'") == std::vector<std::string>{"1"});

    const std::string ip = "192.0.2.51", domain = "sender.example", s = "alice@" + domain;
    // Pass 1: entry created with count 1.
    long t0 = long(time(nullptr));
    greylist_cycle(port, ns, s, ip, "r1@rcpt.example");
    std::string row = awl_row("gl_awl", domain, ip);
    CHECK(count_of(row) == 1);
    CHECK(std::labs(last_seen_of(row) - t0) <= 5);
    // Below the threshold: a new triplet (another sender of the domain) is still greylisted.
    // Pass 2 increments the entry.
    greylist_cycle(port, ns, "bob@" + domain, ip, "r2@rcpt.example");
    CHECK(count_of(awl_row("gl_awl", domain, ip)) == 2);
    // At the threshold: a new triplet passes at once, creates no ticket, and refreshes the
    // entry; so does the next mail.
    CHECK(first(send(port, "carol@" + domain, ip, "r3@rcpt.example")) == "dunno");
    CHECK(mc().raw_get(ns + "carol@" + domain + "," + ip + ",r3@rcpt.example") == "(none)");
    CHECK(count_of(awl_row("gl_awl", domain, ip)) == 3);
    CHECK(first(send(port, "dave@" + domain, ip, "r4@rcpt.example")) == "dunno");
    CHECK(count_of(awl_row("gl_awl", domain, ip)) == 4);
    // Another client of the same domain has an entry of its own: greylisted.
    CHECK(first(send(port, s, "192.0.2.52", "r1@rcpt.example")) == "defer greylisting is active");
    // An entry unused for autowl_expire_days (1) counts as none: greylisted again, and the
    // valid retry starts it over at count 1 (one row per pair: the unique key).
    pg_rows("UPDATE gl_awl SET last_seen = last_seen - 2 * 86400 WHERE client_ip = '" + ip + "'");
    greylist_cycle(port, ns, "erin@" + domain, ip, "r5@rcpt.example");
    row = awl_row("gl_awl", domain, ip);
    CHECK(count_of(row) == 1);
    CHECK(std::labs(last_seen_of(row) - long(time(nullptr))) <= 5);
    d->stop();
    CHECK(log_lines_with(*d, "autowl") > 0);
}

TEST_CASE("Perl 2.05 and ringpolicyd on a hand-made PostgreSQL autowl table", "[greylist_pg]")
{
    need_perl();
    need_ringpolicyd();
    pg_up();
    // 2.05's AWL::Sql always uses the table autowl (its options are not passed to the backend)
    // and inserts VALUES(NULL, ?, ?, 1, now): id nullable. ringpolicyd gets the same layout
    // under another name.
    for (const char *t : {"autowl", "autowl_ring"})
        pg_rows(std::string("DROP TABLE IF EXISTS ") + t + "; CREATE TABLE " + t +
                " (id BIGINT, sender_domain VARCHAR(255) NOT NULL, client_ip VARCHAR(39) NOT "
                "NULL, count BIGINT NOT NULL, last_seen BIGINT NOT NULL, UNIQUE (client_ip, "
                "sender_domain))");
    struct Side {
        Impl impl;
        std::string table, ns;
        uint16_t port;
        std::unique_ptr<Daemon> d;
    } sides[2] = {{Impl::Perl, "autowl", "glp" + std::to_string(getpid()) + "-", free_tcp_port(),
                   nullptr},
                  {Impl::Ring, "autowl_ring", "glr" + std::to_string(getpid()) + "-",
                   free_tcp_port(), nullptr}};
    for (Side &s : sides) {
        s.d.reset(new Daemon(s.impl, config(s.port, s.ns,
                                            "    autowl_threshold = 1\n    autowl_table = \"" +
                                                s.table + "\"\n")));
        s.d->set_ready(Endpoint::tcp(s.port));
        bool ok = s.d->start();
        INFO(impl_name(s.impl) << ": " << s.d->error() << "\n" << s.d->log());
        REQUIRE(ok);
    }
    const std::string domain = "listed.example", ip = "198.51.100.7";
    long t0 = long(time(nullptr));
    // An entry present (count 5, seen an hour ago) and a threshold of 1: both pass at once and
    // both refresh the entry.
    for (Side &s : sides)
        pg_rows("INSERT INTO " + s.table + " VALUES (NULL, '" + domain + "', '" + ip + "', 5, " +
                std::to_string(t0 - 3600) + ")");
    for (Side &s : sides) {
        INFO(impl_name(s.impl));
        CHECK(first(send(s.port, "x@" + domain, ip, "r@rcpt.example")) == "dunno");
        std::string row = awl_row(s.table, domain, ip);
        CHECK(count_of(row) == 6);
        CHECK(std::labs(last_seen_of(row) - t0) <= 5);
        CHECK(mc().raw_get(s.ns + "x@" + domain + "," + ip + ",r@rcpt.example") == "(none)");
    }
    // No entry: both greylist; the valid retry passes in both, and only ringpolicyd records it
    // (16 #1: 2.05 never creates an entry when a session exists).
    const std::string s2 = "y@new.example", ip2 = "198.51.100.8", r2 = "r2@rcpt.example";
    for (Side &s : sides) {
        INFO(impl_name(s.impl));
        greylist_cycle(s.port, s.ns, s2, ip2, r2);
    }
    CHECK(awl_row("autowl", "new.example", ip2) == "");
    CHECK(count_of(awl_row("autowl_ring", "new.example", ip2)) == 1);
    for (Side &s : sides)
        s.d->stop();
}
