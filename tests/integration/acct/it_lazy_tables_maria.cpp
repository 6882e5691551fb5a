// it_lazy_tables_maria.cpp: it_lazy_tables and it_lazy_autowl on MySQL (MariaDB): one daemon
// with Accounting on one port and Greylist (autowl on MySQL, tickets in memcached) on another,
// started while MariaDB is down. --check accepts the configuration; the daemon answers
// degraded (Accounting counts in memory, autowl lookups fail like an outage, on_error =
// continue); once MariaDB is up the shards create both tables with 2.05's MySQL definitions,
// the acct_ rows hold exactly what was answered and greylisting with the autowl works.
#include "../maria/maria_rig.h"
#include "../../unit/mc/mc_server.h"

using namespace mariait;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

int g_seq = 0;

std::string gl_send(uint16_t port, const std::string &sender, const std::string &ip,
                    const std::string &rcpt)
{
    Reply r = ask(Endpoint::tcp(port),
                  postfix_request({{"sender", sender},
                                   {"client_address", ip},
                                   {"recipient", rcpt},
                                   {"instance", "lzm" + std::to_string(++g_seq)}}),
                  10000);
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

std::string config(uint16_t p_acct, uint16_t p_gl, const std::string &ns)
{
    return "port = \"127.0.0.1:" + std::to_string(p_acct) + ",127.0.0.1:" + std::to_string(p_gl) +
           "\"\nshards = 2\n<Connection memcached>\n  module = " + "\"Memcached\"\n  servers = \"" +
           mc().addr() + "\"\n  namespace = \"" + ns + "\"\n</Connection>\n" + my_connection() +
           vhost_block(std::to_string(p_acct), "accounting",
                       "  <Plugin AcctIP>\n    module = \"Accounting\"\n"
                       "    fields = \"client_address\"\n    flush_interval = 0.2\n"
                       "  </Plugin>\n" +
                           action_plugin("pass", "dunno")) +
           vhost_block(std::to_string(p_gl), "gl",
                       "  <Plugin greylist>\n    module = \"Greylist\"\n"
                       "    autowl_threshold = 1\n    autowl_table = \"gl_lazy\"\n"
                       "    on_error = \"continue\"\n  </Plugin>\n" +
                           action_plugin("pass", "dunno"));
}

bool my_table_exists(const std::string &t)
{
    return my_rows("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                   "'policyd' AND table_name = '" +
                   t + "'") == std::vector<std::string>{"1"};
}

uint64_t acct_count(const std::string &client)
{
    auto rows = my_rows(
        "SELECT COALESCE(SUM(`count`), 0) FROM acct_client_address WHERE `key` = '" + client + "'");
    return rows.empty() ? 0 : std::stoull(rows[0]);
}

long autowl_count(const std::string &domain, const std::string &ip)
{
    auto rows = my_rows("SELECT count FROM gl_lazy WHERE sender_domain = '" + domain +
                        "' AND client_ip = '" + ip + "'");
    return rows.empty() ? -1 : std::stol(rows[0]);
}

} // namespace

TEST_CASE("Accounting and Greylist's autowl on MySQL down at start: --check, degraded service, "
          "tables created later, nothing lost",
          "[it_lazy_tables_maria]")
{
    need_ringpolicyd();
    my_fresh_db("policyd");
    my().stop();
    uint16_t p_acct = free_tcp_port(), p_gl = free_tcp_port();
    const std::string ns = "lzm" + std::to_string(getpid()) + "-";
    Daemon d(Impl::Ring, config(p_acct, p_gl, ns));
    RunResult check = d.run({"--check"});
    INFO("--check: " << check.out << check.err);
    CHECK(check.status == 0);

    d.set_ready(Endpoint::tcp(p_gl));
    REQUIRE(d.start());
    INFO("log:\n" << d.log());
    CHECK(d.wait_log("not checked at start-up", 5000));

    // Degraded: mails are answered and counted in memory; greylisting is skipped.
    const std::string client = "198.51.100.21";
    Conn c(Endpoint::tcp(p_acct));
    REQUIRE(c.ok());
    for (int i = 0; i < 5; i++)
        CHECK(action_of(c.request(eom("lzma" + std::to_string(i), client, 50, 1))) == "dunno");
    const std::string ip = "192.0.2.71", domain = "lazy-my.example", s = "alice@" + domain;
    CHECK(gl_send(p_gl, s, ip, "r1@rcpt.example") == "dunno");
    CHECK(d.wait_log("cannot check or create it on shard", 5000));

    // MariaDB comes back: the shards create both tables (2.05's MySQL definitions).
    REQUIRE(my().start());
    CHECK(wait_for([] { return my_table_exists("acct_client_address"); }, true, 15000));
    CHECK(wait_for([] { return my_table_exists("gl_lazy"); }, true, 15000));
    CHECK(wait_for([&] { return acct_count(client); }, (uint64_t)5, 15000) == 5);
    std::string ddl = my_rows("SHOW CREATE TABLE acct_client_address")[0];
    CHECK(contains(ddl, "UNIQUE KEY `time_key` (`key`,`time`)"));
    CHECK(contains(ddl, "ENGINE=MyISAM"));
    CHECK(contains(my_rows("SHOW CREATE TABLE gl_lazy")[0],
                   "UNIQUE KEY `domain_ip` (`client_ip`,`sender_domain`)"));
    // Every shard's greylist gate is ready (4 gates: two tables, two shards).
    CHECK(wait_for([&] { return log_lines_with(d, "ready on shard"); }, (size_t)4, 15000) == 4);

    CHECK(gl_send(p_gl, s, ip, "r1@rcpt.example") == "defer greylisting is active");
    std::string key = ns + s + "," + ip + ",r1@rcpt.example";
    REQUIRE(mc().raw_get(key) != "(none)");
    REQUIRE(mc().raw_set(key, std::to_string(long(time(nullptr)) - 1), 3600));
    CHECK(gl_send(p_gl, s, ip, "r1@rcpt.example") == "dunno");
    CHECK(autowl_count(domain, ip) == 1);
    CHECK(gl_send(p_gl, "bob@" + domain, ip, "r2@rcpt.example") == "dunno");
    CHECK(autowl_count(domain, ip) == 2);
    CHECK(d.stop() == 0);
    CHECK(acct_count(client) == 5);
}
