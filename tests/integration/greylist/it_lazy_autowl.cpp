// it_lazy_autowl.cpp: Greylist with its auto-whitelist on PostgreSQL that is down when
// ringpolicyd starts (issues 3 and 6), tickets in a real memcached. `ringpolicyd --check`
// accepts the configuration; the daemon starts; autowl lookups fail like a database outage
// (on_error = continue: the mail passes ungreylisted) and the failed table check is logged once
// per failure streak and shard. Once PostgreSQL is up every shard creates the table by itself
// (no restart), and greylisting and the auto-whitelist work: a valid retry creates the entry,
// and from autowl_threshold on a new triplet passes at once.
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

std::string send(uint16_t port, const std::string &sender, const std::string &ip,
                 const std::string &rcpt)
{
    Reply r = ask(Endpoint::tcp(port),
                  postfix_request({{"sender", sender},
                                   {"client_address", ip},
                                   {"recipient", rcpt},
                                   {"instance", "lazy" + std::to_string(++g_seq)}}),
                  10000);
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

std::string config(uint16_t port, const std::string &ns)
{
    return "port = \"127.0.0.1:" + std::to_string(port) +
           "\"\nshards = 2\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
           mc().addr() + "\"\n  namespace = \"" + ns + "\"\n</Connection>\n" + pg_connection() +
           vhost_block(std::to_string(port), "gl",
                       "  <Plugin greylist>\n    module = \"Greylist\"\n"
                       "    autowl_threshold = 1\n    autowl_table = \"gl_lazy\"\n"
                       "    on_error = \"continue\"\n  </Plugin>\n" +
                           action_plugin("pass", "dunno"));
}

long autowl_count(const std::string &domain, const std::string &ip)
{
    auto rows = pg_rows("SELECT count FROM gl_lazy WHERE sender_domain = '" + domain +
                        "' AND client_ip = '" + ip + "'");
    return rows.empty() ? -1 : std::stol(rows[0]);
}

} // namespace

TEST_CASE("Greylist's SQL autowl with PostgreSQL down at start: --check, degraded service, the "
          "table created later, greylisting and autowl working",
          "[it_lazy_autowl]")
{
    need_ringpolicyd();
    pg_up();
    pg_rows("DROP TABLE IF EXISTS gl_lazy");
    pg().stop("fast");
    uint16_t port = free_tcp_port();
    const std::string ns = "gllazy" + std::to_string(getpid()) + "-";
    Daemon d(Impl::Ring, config(port, ns));
    RunResult check = d.run({"--check"});
    INFO("--check: " << check.out << check.err);
    CHECK(check.status == 0);

    d.set_ready(Endpoint::tcp(port));
    REQUIRE(d.start());
    INFO("log:\n" << d.log());
    CHECK(d.wait_log("not checked at start-up", 5000));

    // Degraded: the lookup fails like an outage, on_error = continue lets the mail pass, and
    // no ticket is made (the autowl lookup comes first).
    const std::string ip = "192.0.2.61", domain = "lazy.example", s = "alice@" + domain;
    for (int i = 0; i < 3; i++)
        CHECK(send(port, s, ip, "r1@rcpt.example") == "dunno");
    CHECK(mc().raw_get(ns + s + "," + ip + ",r1@rcpt.example") == "(none)");
    CHECK(d.wait_log("cannot check or create it on shard", 5000));
    sleep_ms(1600); /* several attempts with the backoff: still one line per shard */
    CHECK(log_lines_with(d, "cannot check or create it on shard") <= 2);
    CHECK(d.alive());

    // PostgreSQL comes back: each shard creates (or finds) the table within its backoff.
    REQUIRE(pg().start());
    CHECK(wait_for([] { return pg_table_exists("gl_lazy"); }, true, 15000));
    CHECK(wait_for([&] { return log_lines_with(d, "ready on shard"); }, (size_t)2, 15000) == 2);
    CHECK(pg_rows("SELECT count(*) FROM pg_indexes WHERE tablename = 'gl_lazy' AND indexdef "
                  "LIKE '%UNIQUE%client_ip, sender_domain%'") == std::vector<std::string>{"1"});

    // Greylisting: deferred, then the retry (ticket made due) passes and creates the entry.
    CHECK(send(port, s, ip, "r1@rcpt.example") == "defer greylisting is active");
    std::string key = ns + s + "," + ip + ",r1@rcpt.example";
    REQUIRE(mc().raw_get(key) != "(none)");
    REQUIRE(mc().raw_set(key, std::to_string(long(time(nullptr)) - 1), 3600));
    CHECK(send(port, s, ip, "r1@rcpt.example") == "dunno");
    CHECK(autowl_count(domain, ip) == 1);
    // autowl_threshold 1: a new triplet of the domain passes at once and refreshes the entry.
    CHECK(send(port, "bob@" + domain, ip, "r2@rcpt.example") == "dunno");
    CHECK(mc().raw_get(ns + "bob@" + domain + "," + ip + ",r2@rcpt.example") == "(none)");
    CHECK(autowl_count(domain, ip) == 2);
    CHECK(d.stop() == 0);
}
