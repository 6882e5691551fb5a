// it_metrics2.cpp: the per-shard metric sources of the DNS client (ringpolicyd_dns_*, an RBL
// against nsd on loopback, tests/unit/dns/dns_server.h), Accounting (ringpolicyd_accounting_*,
// on SQLite in a temporary directory) and the network plugins' stream clients
// (ringpolicyd_stream_*, a Proxy to a second ringpolicyd) move with real traffic on a real
// ringpolicyd. Source values are snapshots taken once a second, so the checks poll.
#include "opscommon.h"

#include "../../unit/dns/dns_server.h"

using namespace itest;

namespace
{

std::string http_line(uint16_t http)
{
    return "http_port = \"127.0.0.1:" + std::to_string(http) + "\"\nshards = 2\n";
}

/* An RBL on zen.example (dns_server.h's test zone) resolved by servers, then dunno. */
std::string rbl_config(uint16_t port, uint16_t http, const std::string &servers)
{
    return simple_config(port,
                         "  <Plugin zen>\n    module = \"RBL\"\n    domain = \"zen.example\"\n"
                         "    mode = \"reject\"\n  </Plugin>\n" +
                             action_plugin("after", "dunno"),
                         http_line(http) + "dns_servers = \"" + servers + "\"\n");
}

} // namespace

TEST_CASE("ringpolicyd_dns_* count an RBL's queries, cache hits and failures", "[ops][metrics2]")
{
    dnstest::DnsServer srv;
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string conf = rbl_config(port, http, srv.servers());
    auto d = start_ring(conf, Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    const std::string lbl = "{servers=\"" + srv.servers() + "\"}";
    CHECK(
        eventually([&] { return scrape(http, "ringpolicyd_dns_queries_total" + lbl) == 0; }, 3000));

    /* Listed (A then TXT) and not listed (A only), each asked three times: the repeats hit the
     * shard's cache or join the query in flight. */
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    for (int i = 0; i < 3; i++) {
        Reply listed = c.request(postfix_request(
            {{"client_address", "127.0.0.2"}, {"instance", "l" + std::to_string(i)}}));
        REQUIRE(listed.actions.size() == 1);
        CHECK(contains(listed.actions[0], "reject"));
        Reply clean = c.request(postfix_request(
            {{"client_address", "127.0.0.99"}, {"instance", "c" + std::to_string(i)}}));
        CHECK(clean.actions == std::vector<std::string>{"dunno"});
    }
    CHECK(
        eventually([&] { return scrape(http, "ringpolicyd_dns_queries_total" + lbl) >= 9; }, 3000));
    HttpResponse r = http_get(http, "/metrics");
    REQUIRE(r.status == 200);
    INFO(r.body);
    double q = metric(r.body, "ringpolicyd_dns_queries_total" + lbl);
    double sent = metric(r.body, "ringpolicyd_dns_sent_total" + lbl);
    double hits = metric(r.body, "ringpolicyd_dns_cache_hits_total" + lbl);
    double joins = metric(r.body, "ringpolicyd_dns_dedup_joins_total" + lbl);
    CHECK(q == 9); /* 3 x (A + TXT) for the listed client, 3 x A for the other */
    CHECK(sent >= 3);
    CHECK(hits + joins >= 5); /* at most 2 per shard per name and type go out */
    CHECK(sent + hits + joins == q);
    CHECK(metric(r.body, "ringpolicyd_dns_timeouts_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_dns_errors_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_dns_inflight" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_dns_cache_entries" + lbl) >= 3);
    d->stop();
}

TEST_CASE("ringpolicyd_dns_timeouts_total counts a server that never answers", "[ops][metrics2]")
{
    dnstest::DnsServer srv;
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string conf = rbl_config(port, http, srv.hole());
    auto d = start_ring(conf, Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    Conn c(Endpoint::tcp(port), 30000);
    REQUIRE(c.ok());
    Reply rep = c.request(postfix_request({{"client_address", "127.0.0.2"}}));
    INFO("actions: " << rep.actions.size());
    const std::string lbl = "{servers=\"" + srv.hole() + "\"}";
    CHECK(eventually([&] { return scrape(http, "ringpolicyd_dns_timeouts_total" + lbl) >= 1; },
                     20000));
    d->stop();
}

TEST_CASE("ringpolicyd_accounting_* count deltas, flushes and buffered rows on SQLite",
          "[ops][metrics2]")
{
    TempDir dir;
    std::string db = dir.path() + "/acct.sqlite";
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string conf = simple_config(port,
                                     "  <Plugin acct>\n    module = \"Accounting\"\n"
                                     "    fields = \"client_address\"\n    flush_interval = 0.2\n"
                                     "  </Plugin>\n" +
                                         action_plugin("a", "dunno"),
                                     http_line(http) +
                                         "<Connection db>\n  module = \"Sql\"\n  dsn = "
                                         "\"dbi:SQLite:dbname=" +
                                         db + "\"\n</Connection>\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    const std::string lbl = "{connection=\"db\"}";
    CHECK(eventually(
        [&] { return scrape(http, "ringpolicyd_accounting_flushes_total" + lbl) == 0; }, 3000));
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    for (int i = 0; i < 10; i++)
        REQUIRE(
            c.request(postfix_request({{"client_address", "192.0.2." + std::to_string(1 + i % 4)}}))
                .actions == std::vector<std::string>{"dunno"});
    CHECK(eventually(
        [&] {
            return scrape(http, "ringpolicyd_accounting_deltas_total" + lbl) == 10 &&
                   scrape(http, "ringpolicyd_accounting_flush_rows_total" + lbl) >= 4 &&
                   scrape(http, "ringpolicyd_accounting_dirty_rows" + lbl) == 0;
        },
        5000));
    HttpResponse r = http_get(http, "/metrics");
    REQUIRE(r.status == 200);
    INFO(r.body);
    CHECK(metric(r.body, "ringpolicyd_accounting_flushes_total" + lbl) >= 1);
    CHECK(metric(r.body, "ringpolicyd_accounting_flush_failures_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_accounting_flush_milliseconds_total" + lbl) >= 0);
    CHECK(metric(r.body, "ringpolicyd_accounting_buffer_rows" + lbl) == 4);
    CHECK(metric(r.body, "ringpolicyd_accounting_spilled_rows_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_accounting_replayed_rows_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_accounting_dropped_total" + lbl) == 0);
    d->stop();
}

TEST_CASE("ringpolicyd_stream_* count a Proxy's requests, connects and failures", "[ops][metrics2]")
{
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(simple_config(up, action_plugin("u", "reject from upstream")),
                               Endpoint::tcp(up));
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string conf = simple_config(
        port,
        "  <Plugin proxy>\n    module = \"Proxy\"\n    host = \"127.0.0.1:" + std::to_string(up) +
            "\"\n  </Plugin>\n" + action_plugin("after", "dunno"),
        http_line(http));
    auto d = start_ring(conf, Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    const std::string lbl = "{plugin=\"proxy\"}";
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    for (int i = 0; i < 5; i++)
        REQUIRE(c.request(postfix_request()).actions ==
                std::vector<std::string>{"reject from upstream"});
    CHECK(eventually(
        [&] {
            return scrape(http, "ringpolicyd_stream_requests_total" + lbl) == 5 &&
                   scrape(http, "ringpolicyd_stream_replies_total" + lbl) == 5;
        },
        3000));
    HttpResponse r = http_get(http, "/metrics");
    REQUIRE(r.status == 200);
    INFO(r.body);
    CHECK(metric(r.body, "ringpolicyd_stream_connects_total" + lbl) >= 1);
    CHECK(metric(r.body, "ringpolicyd_stream_connect_failures_total" + lbl) == 0);
    CHECK(metric(r.body, "ringpolicyd_stream_timeouts_total" + lbl) == 0);

    /* The upstream gone: connections are refused and counted. */
    upstream->stop();
    Reply failed = c.request(postfix_request());
    INFO("after upstream stop: " << failed.actions.size());
    CHECK(eventually(
        [&] {
            return scrape(http, "ringpolicyd_stream_connect_failures_total" + lbl) >= 1 ||
                   scrape(http, "ringpolicyd_stream_errors_total" + lbl) >= 1;
        },
        5000));
    d->stop();
}
