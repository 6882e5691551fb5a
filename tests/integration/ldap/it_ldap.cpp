// it_ldap.cpp: LdapUserConfig in a real ringpolicyd against a slapd the test starts
// (tests/unit/ldap/slapd_server.h): the values it loads land in the session and drive later
// Conditions (limit, description, absent title), the first of several values, RFC 4515 escaping
// of the request value (a '*' does not widen the search), every %s replaced, filter_field, zero
// or several entries changing nothing, search errors logged and ignored, an unreachable server
// failing the plugin (on_error = continue goes on; the default closes without a reply, as 2.05),
// concurrent requests on both shards, request_timeout while slapd is stopped, start-up errors
// naming the connection, and STARTTLS with a generated certificate (trusted through
// LDAPTLS_CACERT; a host name it does not carry fails), and the connection's /metrics family and
// /readyz verdict.
#include "common.h"
#include "ops/opscommon.h"

#include <atomic>
#include <thread>

using namespace itest;
using namespace ldaptest;

namespace
{

std::string ask1(uint16_t port, const std::vector<std::pair<std::string, std::string>> &over)
{
    return first_action(ask(Endpoint::tcp(port), postfix_request(over), 10000));
}

} // namespace

TEST_CASE("LdapUserConfig's values drive the rest of the chain", "[it_ldap]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, chain(uc_opts()), "log_level = 4\n" + conn_block(slapd().port())),
                        Endpoint::tcp(port));
    // alice: limit 10, descriptions "first" and "second" (the first one is taken)
    CHECK(ask1(port, {{"sasl_username", "alice@example.com"}}) == "reject description first");
    // bob: limit 20
    CHECK(ask1(port, {{"sasl_username", "bob@example.com"}}) == "reject limit above 15");
    // two entries share the address, none has it: nothing stored
    CHECK(ask1(port, {{"sasl_username", "dup@example.com"}}) == "dunno");
    CHECK(ask1(port, {{"sasl_username", "nobody@example.com"}}) == "dunno");
    // empty or absent value: no search
    CHECK(ask1(port, {{"sasl_username", ""}}) == "dunno");
    CHECK(ask1(port, {{"sasl_username", "\x7f"}}) == "dunno");
    // the value is escaped: '*' matches itself, not anything
    CHECK(ask1(port, {{"sasl_username", "ali*"}}) == "dunno");
    CHECK(ask1(port, {{"sasl_username", "*"}}) == "dunno");
    CHECK(ask1(port, {{"sasl_username", "st*r (x)\\y@example.com"}}) == "reject limit above 15");
    // a value that would break the filter unescaped
    CHECK(ask1(port, {{"sasl_username", "x)(mail=bob@example.com"}}) == "dunno");
    // (the log writes a backslash as two)
    CHECK(log_lines_with(*d, "ldap filter is: (mail=ali\\\\2a)") == 1);
    CHECK(log_lines_with(*d, "found in ldap: uid=alice,ou=users,dc=example,dc=com") == 1);
    CHECK(log_lines_with(*d, "retrieved ldap attribute: mtpolicydMailMessageLimit=10") == 1);
    CHECK(log_lines_with(*d, "LDAP attribute title is empty. skipping.") >= 2);
    CHECK(log_lines_with(*d, "ldap search return 2 entries") == 1);
    d->stop();
}

TEST_CASE("every %s is replaced; filter_field; search errors are logged and ignored",
          "[it_ldap]")
{
    uint16_t port = free_tcp_port();
    std::string body =
        vhost_block(std::to_string(port), "or",
                    chain(uc_opts("(|(mail=%s)(uid=%s))"))) +
        vhost_block(std::to_string(port + 1), "sender",
                    chain(uc_opts("(mail=%s)", "    filter_field = \"sender\"\n"))) +
        vhost_block(std::to_string(port + 2), "badbase",
                    chain("    basedn = \"ou=missing,dc=example,dc=com\"\n    filter = "
                          "\"(mail=%s)\"\n    config_fields = \"mtpolicydMailMessageLimit\"\n"));
    uint16_t p2 = port + 1, p3 = port + 2;
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                      std::to_string(p2) + ",127.0.0.1:" + std::to_string(p3) + "\"\nlog_level = 4\n" +
                      conn_block(slapd().port()) + body;
    auto d = start_ring(cfg, Endpoint::tcp(port));
    CHECK(ask1(port, {{"sasl_username", "bob"}}) == "reject limit above 15");
    CHECK(ask1(port, {{"sasl_username", "alice@example.com"}}) == "reject description first");
    CHECK(log_lines_with(*d, "ldap filter is: (|(mail=bob)(uid=bob))") == 1);
    CHECK(ask1(p2, {{"sender", "bob@example.com"}, {"sasl_username", "alice@example.com"}}) ==
          "reject limit above 15");
    CHECK(ask1(p3, {{"sasl_username", "bob@example.com"}}) == "dunno");
    CHECK(log_lines_with(*d, "ldap search failed: No such object") == 1);
    d->stop();
}

TEST_CASE("an unreachable server fails the plugin; on_error decides", "[it_ldap]")
{
    uint16_t port = free_tcp_port(), p2 = port + 1;
    int dead = rpdtest::mc_free_port();
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                      std::to_string(p2) + "\"\n" + conn_block(dead) +
                      vhost_block(std::to_string(port), "cont",
                                  chain(uc_opts("(mail=%s)", "    on_error = \"continue\"\n"))) +
                      vhost_block(std::to_string(p2), "abort", chain(uc_opts()));
    auto d = start_ring(cfg, Endpoint::tcp(port));
    CHECK(ask1(port, {{"sasl_username", "bob@example.com"}}) == "dunno");
    CHECK(log_lines_with(*d, "plugin ldap_uc failed: cant connect ldap") >= 1);
    Reply r = ask(Endpoint::tcp(p2), postfix_request({{"sasl_username", "bob@example.com"}}),
                  10000);
    CHECK(r.status == Reply::CLOSED);
    // Without a value there is nothing to search, so no connection is needed.
    CHECK(ask1(p2, {{"sasl_username", ""}}) == "dunno");
    d->stop();
}

TEST_CASE("concurrent requests on every shard share one connection per shard", "[it_ldap]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, chain(uc_opts()),
                                      "shards = 2\n" + conn_block(slapd().port())),
                        Endpoint::tcp(port));
    std::vector<std::thread> ts;
    std::atomic<int> good{0}, bad{0};
    for (int t = 0; t < 8; t++)
        ts.emplace_back([&, t] {
            Conn c(Endpoint::tcp(port), 10000);
            for (int i = 0; i < 25; i++) {
                bool bob = (i + t) % 2 == 0;
                Reply r = c.request(
                    postfix_request({{"sasl_username", bob ? "bob@example.com" : "alice@example.com"}}),
                    10000);
                std::string want = bob ? "reject limit above 15" : "reject description first";
                (first_action(r) == want ? good : bad)++;
            }
        });
    for (auto &t : ts)
        t.join();
    CHECK(good == 200);
    CHECK(bad == 0);
    d->stop();
}

TEST_CASE("request_timeout while slapd is stopped: answered with error_action; the search's "
          "late answer releases the request and the daemon goes on",
          "[it_ldap]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, chain(uc_opts()),
                                      "request_timeout = 1\nerror_action = \"defer_if_permit "
                                      "try later\"\n" +
                                          conn_block(slapd().port(), "  timeout = 3\n")),
                        Endpoint::tcp(port));
    REQUIRE(ask1(port, {{"sasl_username", "bob@example.com"}}) == "reject limit above 15");
    REQUIRE(slapd().pause());
    int64_t t0 = now_ms();
    std::string a = ask1(port, {{"sasl_username", "bob@example.com"}});
    int64_t took = now_ms() - t0;
    REQUIRE(slapd().resume());
    CHECK(a == "defer_if_permit try later");
    CHECK(took < 2500);
    sleep_ms(3000); // slapd answers the waiting search now: the timed-out request is released
    CHECK(d->alive());
    CHECK(ask1(port, {{"sasl_username", "bob@example.com"}}) == "reject limit above 15");
    CHECK(ask1(port, {{"sasl_username", "alice@example.com"}}) == "reject description first");
    // Stopped longer than the search's timeout (3 s): the search is abandoned at its deadline,
    // which releases the request; the answer slapd gives after SIGCONT is dropped.
    REQUIRE(slapd().pause());
    a = ask1(port, {{"sasl_username", "bob@example.com"}});
    sleep_ms(3500);
    REQUIRE(slapd().resume());
    CHECK(a == "defer_if_permit try later");
    CHECK(d->alive());
    CHECK(ask1(port, {{"sasl_username", "bob@example.com"}}) == "reject limit above 15");
    d->stop();
}

TEST_CASE("start-up errors name the connection", "[it_ldap]")
{
    uint16_t port = free_tcp_port();
    Daemon none(Impl::Ring, simple_config(port, chain(uc_opts())));
    RunResult rr = none.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection ldap configured!"));
    Daemon other(Impl::Ring, simple_config(port, chain(uc_opts("(mail=%s)", "    ldap = \"dir\"\n")),
                                           conn_block(slapd().port())));
    rr = other.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection dir configured!"));
    Daemon badport(Impl::Ring, simple_config(port, chain(uc_opts()),
                                             "<Connection ldap>\n  module = \"Ldap\"\n"
                                             "  port = \"x\"\n</Connection>\n"));
    rr = badport.run({"--check"});
    INFO(rr.out << rr.err);
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "option port: 'x' is not an integer"));
    Daemon nofilter(Impl::Ring,
                    simple_config(port,
                                  "  <Plugin u>\n    module = \"LdapUserConfig\"\n"
                                  "    config_fields = \"a\"\n  </Plugin>\n",
                                  conn_block(slapd().port())));
    rr = nofilter.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "filter"));
}

TEST_CASE("STARTTLS (the default) with the server's certificate trusted through libldap's "
          "LDAPTLS_CACERT",
          "[it_ldap]")
{
    static rpdtest::SlapdServer tls(true);
    need_ringpolicyd();
    uint16_t port = free_tcp_port(), p2 = port + 1;
    std::string tls_conn = "<Connection ldap>\n  module = \"Ldap\"\n  host = \"127.0.0.1\"\n"
                           "  port = " + std::to_string(tls.port()) + "\n</Connection>\n"
                           "<Connection byname>\n  module = \"Ldap\"\n  host = \"localhost\"\n"
                           "  port = " + std::to_string(tls.port()) + "\n</Connection>\n";
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                      std::to_string(p2) + "\"\n" + tls_conn +
                      vhost_block(std::to_string(port), "tls", chain(uc_opts())) +
                      vhost_block(std::to_string(p2), "mismatch",
                                  chain(uc_opts("(mail=%s)", "    ldap = \"byname\"\n"
                                                             "    on_error = \"continue\"\n")));
    Daemon d(Impl::Ring, cfg);
    d.set_env("LDAPTLS_CACERT", tls.cacert());
    d.set_ready(Endpoint::tcp(port));
    bool ok = d.start();
    INFO(d.error() << "\n" << d.log());
    REQUIRE(ok);
    CHECK(ask1(port, {{"sasl_username", "bob@example.com"}}) == "reject limit above 15");
    CHECK(ask1(port, {{"sasl_username", "alice@example.com"}}) == "reject description first");
    // The certificate names 127.0.0.1, not localhost: STARTTLS fails, so does the plugin.
    CHECK(ask1(p2, {{"sasl_username", "bob@example.com"}}) == "dunno");
    CHECK(log_lines_with(d, "starttls on ldap connection failed") >= 1);
    d.stop();
}

TEST_CASE("/metrics counts the searches; /readyz follows the LDAP server", "[it_ldap]")
{
    uint16_t port = free_tcp_port(), p2 = port + 1, http = free_tcp_port();
    int dead = rpdtest::mc_free_port();
    // Two connections: "ldap" on slapd, "gone" on a port nobody listens on (its own vhost).
    std::string gone = conn_block(dead);
    gone.replace(gone.find("<Connection ldap>"), 17, "<Connection gone>");
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                      std::to_string(p2) + "\"\nhttp_port = \"127.0.0.1:" +
                      std::to_string(http) + "\"\nshards = 2\n" + conn_block(slapd().port()) +
                      gone + vhost_block(std::to_string(port), "good", chain(uc_opts())) +
                      vhost_block(std::to_string(p2), "bad",
                                  chain(uc_opts("(mail=%s)", "    ldap = \"gone\"\n"
                                                             "    on_error = \"continue\"\n")));
    auto d = start_ring(cfg, Endpoint::tcp(port));
    // Nothing searched yet: both count as ready (each shard connects at its first search),
    // once both shards run (the first one may accept before the second is up: 503 "1 of 2
    // shards running" meanwhile, seen under ThreadSanitizer's slowdown).
    CHECK(eventually([&] { return http_get(http, "/readyz").status == 200; }, 10000));
    for (int i = 0; i < 6; i++)
        CHECK(ask1(port, {{"sasl_username", "alice@example.com"}}) == "reject description first");
    CHECK(eventually(
        [&] { return scrape(http, "ringpolicyd_ldap_searches_total{connection=\"ldap\"}") == 6; },
        5000));
    CHECK(scrape(http, "ringpolicyd_ldap_connects_total{connection=\"ldap\"}") >= 1);
    CHECK(scrape(http, "ringpolicyd_ldap_connections_up{connection=\"ldap\"}") >= 1);
    CHECK(scrape(http, "ringpolicyd_ldap_errors_total{connection=\"ldap\"}") == 0);
    CHECK(http_get(http, "/readyz").status == 200);
    // The unreachable server: the plugin fails (on_error continue), the connection is not ready.
    CHECK(ask1(p2, {{"sasl_username", "bob@example.com"}}) == "dunno");
    CHECK(eventually(
        [&] {
            return scrape(http, "ringpolicyd_ldap_connect_failures_total{connection=\"gone\"}") >=
                   1;
        },
        5000));
    HttpResponse r = http_get(http, "/readyz");
    CHECK(r.status == 503);
    CHECK(r.body.find("connection gone: LDAP server 127.0.0.1:" + std::to_string(dead) +
                      ": connect failing") != std::string::npos);
    CHECK(d->stop() == 0);
}
