// it_ops.cpp: the HTTP listener of http_port on a real ringpolicyd: /metrics counters move with
// policy traffic (requests and replies by vhost and action word, latency and plugin-step
// histograms, connections, protocol errors), /healthz, /readyz going from 503 to 200 while the
// shards start, refusals of bad HTTP (400, 405, 431, 404) that close only that connection and
// never disturb policy connections, and a configuration error naming http_port's line.
#include "opscommon.h"

using namespace itest;

namespace
{

std::string ops_config(uint16_t port, uint16_t http, const std::string &extra = "")
{
    return simple_config(port,
                         match_plugin("blocker", "sender", "bad@example.com") +
                             action_plugin("fallback", "dunno"),
                         "http_port = \"127.0.0.1:" + std::to_string(http) + "\"\nshards = 2\n" +
                             extra);
}

} // namespace

TEST_CASE("/metrics counters move with policy traffic", "[ops]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(ops_config(port, http), Endpoint::tcp(port));
    HttpResponse before = http_get(http, "/metrics");
    REQUIRE(before.status == 200);
    CHECK(contains(before.head, "Content-Type: text/plain; version=0.0.4"));
    CHECK(metric(before.body, "ringpolicyd_requests_total{vhost=\"test\"}") == 0);

    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    for (int i = 0; i < 7; i++)
        REQUIRE(c.request(postfix_request({{"sender", "bad@example.com"}})).actions ==
                std::vector<std::string>{"reject sender=bad@example.com"});
    for (int i = 0; i < 5; i++)
        REQUIRE(c.request(postfix_request()).actions == std::vector<std::string>{"dunno"});
    /* A malformed request: a protocol error, that connection closed. */
    Conn bad(Endpoint::tcp(port));
    REQUIRE(bad.send("no equals sign here\n\n"));
    CHECK(bad.wait_closed(5000));

    HttpResponse after = http_get(http, "/metrics");
    REQUIRE(after.status == 200);
    const std::string &p = after.body;
    INFO(p);
    CHECK(metric(p, "ringpolicyd_requests_total{vhost=\"test\"}") == 12);
    CHECK(metric(p, "ringpolicyd_replies_total{vhost=\"test\",action=\"reject\"}") == 7);
    CHECK(metric(p, "ringpolicyd_replies_total{vhost=\"test\",action=\"dunno\"}") == 5);
    CHECK(metric(p, "ringpolicyd_request_duration_seconds_count{vhost=\"test\"}") == 12);
    CHECK(metric(p, "ringpolicyd_request_duration_seconds_bucket{vhost=\"test\",le=\"+Inf\"}") ==
          12);
    CHECK(metric(p, "ringpolicyd_request_duration_seconds_sum{vhost=\"test\"}") > 0);
    /* blocker steps for every request; its reject ends the chain, so fallback only for 5. */
    CHECK(metric(p, "ringpolicyd_plugin_step_duration_seconds_count{vhost=\"test\","
                    "plugin=\"blocker\"}") == 12);
    CHECK(metric(p, "ringpolicyd_plugin_step_duration_seconds_count{vhost=\"test\","
                    "plugin=\"fallback\"}") == 5);
    CHECK(metric(p, "ringpolicyd_protocol_errors_total") == 1);
    CHECK(metric(p, "ringpolicyd_connections_accepted_total") >=
          metric(before.body, "ringpolicyd_connections_accepted_total") + 3);
    CHECK(metric(p, "ringpolicyd_connections_open") >= 2); /* c and this scrape */
    CHECK(metric(p, "ringpolicyd_shard_turns_total{shard=\"0\"}") > 0);
    CHECK(metric(p, "ringpolicyd_shard_turns_total{shard=\"1\"}") > 0);
    CHECK(metric(p, "ringpolicyd_http_responses_total{code=\"2xx\"}") >= 1);
    /* Snapshots of per-shard plain counters arrive within a second. */
    sleep_ms(1200);
    HttpResponse later = http_get(http, "/metrics");
    CHECK(metric(later.body, "ringpolicyd_requests_shed_total") == 0);
    CHECK(metric(later.body, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 0);
    d->stop();
}

TEST_CASE("session cache size and hits reach /metrics within a second", "[ops]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(ops_config(port, http,
                                   "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n"),
                        Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    for (int mail = 0; mail < 3; mail++)
        for (int rcpt = 0; rcpt < 4; rcpt++)
            REQUIRE(c.request(postfix_request({{"instance", "mail" + std::to_string(mail)}}))
                        .ok());
    sleep_ms(1300); /* shards copy their session cache counters once a second */
    HttpResponse m = http_get(http, "/metrics");
    INFO(m.body);
    CHECK(metric(m.body, "ringpolicyd_session_cache_sessions") == 3);
    CHECK(metric(m.body, "ringpolicyd_session_cache_misses_total") == 3);
    CHECK(metric(m.body, "ringpolicyd_session_cache_hits_total") == 9);
    CHECK(metric(m.body, "ringpolicyd_session_cache_bytes") > 0);
    d->stop();
}

TEST_CASE("/healthz, HEAD, 404 and keep-alive", "[ops]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(ops_config(port, http), Endpoint::tcp(port));
    HttpResponse h = http_get(http, "/healthz");
    CHECK(h.status == 200);
    CHECK(h.body == "ok\n");
    CHECK(http_get(http, "/nothing").status == 404);
    HttpResponse head =
        http_raw(http, "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(contains(head.head, "Content-Length: 3"));
    CHECK(head.body.empty());
    /* Two pipelined requests on one keep-alive connection, then one that closes. */
    HttpResponse two = http_raw(http, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                      "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CHECK(two.status == 200);
    CHECK(count_of(two.head + two.body, "HTTP/1.1 200 OK") == 2);
    d->stop();
}

TEST_CASE("bad HTTP is refused and closed; policy connections do not notice", "[ops]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(ops_config(port, http), Endpoint::tcp(port));
    Conn policy(Endpoint::tcp(port));
    REQUIRE(policy.request(postfix_request()).actions == std::vector<std::string>{"dunno"});

    CHECK(http_raw(http, "BLAH\r\n\r\n").status == 400);
    CHECK(http_raw(http, "GET /metrics HTTP/1.1\r\n\r\n").status == 400); /* no Host */
    CHECK(http_raw(http, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
              .status == 405);
    CHECK(http_raw(http, "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
              .status == 413);
    CHECK(http_raw(http, "GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n").status == 505);
    std::string huge = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'a');
    CHECK(http_raw(http, huge).status == 431); /* refused before the head ends */
    CHECK(http_raw(http, "GET /" + std::string(3000, 'u') + " HTTP/1.1\r\nHost: x\r\n\r\n")
              .status == 414);
    /* Policy bytes on the HTTP port and HTTP on the policy port: both refused, nothing else. */
    CHECK(http_raw(http, encode_request(postfix_request())).status == 400);
    Conn wrong(Endpoint::tcp(port));
    REQUIRE(wrong.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(wrong.wait_closed(5000));

    CHECK(policy.request(postfix_request({{"sender", "bad@example.com"}})).actions ==
          std::vector<std::string>{"reject sender=bad@example.com"});
    HttpResponse m = http_get(http, "/metrics");
    CHECK(metric(m.body, "ringpolicyd_http_bad_requests_total") == 8);
    CHECK(d->alive());
    d->stop();
}

TEST_CASE("/readyz is 503 while shards start, then 200", "[ops]")
{
    std::string so = itest_build_dir() + "/ops/SlowStart.so";
    need_file(so, "the SlowStart test plugin");
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + "\"\nhttp_port = \"" +
                      std::to_string(http) + "\"\nshards = 2\n" +
                      vhost_block(std::to_string(port), "test",
                                  "  <Plugin slow>\n    module = \"" + so +
                                      "\"\n    ms = 1500\n  </Plugin>\n" +
                                      action_plugin("a", "dunno"));
    need_ringpolicyd();
    Daemon d(Impl::Ring, cfg);
    REQUIRE(d.start(100)); /* no ready endpoint: only checks the process is up */
    /* Shard 0 serves at once; connections the kernel hands to shard 1 wait in its backlog
     * until it started. Ask on new connections until one lands on shard 0. */
    int first = 0;
    int64_t deadline = now_ms() + 1200;
    while (first != 503 && now_ms() < deadline) {
        Conn c(Endpoint::tcp(http), 200);
        if (!c.ok()) {
            sleep_ms(10);
            continue;
        }
        c.send("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if (c.wait_closed(100) && c.pending().compare(0, 12, "HTTP/1.1 503") == 0)
            first = 503;
    }
    INFO(d.log());
    CHECK(first == 503);
    int64_t until = now_ms() + 10000;
    int status = 0;
    while (status != 200 && now_ms() < until) {
        status = http_get(http, "/readyz").status;
        if (status != 200)
            sleep_ms(50);
    }
    CHECK(status == 200);
    CHECK(http_get(http, "/readyz").body == "ready\n");
    d.stop();
}

TEST_CASE("http_port errors name the option's line; --check validates it", "[ops]")
{
    uint16_t port = free_tcp_port();
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) +
                      "\"\nhttp_port = \"/tmp/not-tcp.sock|unix\"\n" +
                      vhost_block(std::to_string(port), "test", action_plugin("a", "dunno"));
    need_ringpolicyd();
    Daemon d(Impl::Ring, cfg);
    RunResult r = d.run({"--check"});
    INFO(r.out << r.err);
    CHECK(r.status == 1);
    CHECK(contains(r.err, ":2: http_port takes TCP addresses only"));
    /* Off by default: nothing listens on an HTTP port unless configured. */
    uint16_t http = free_tcp_port();
    auto d2 = start_ring(simple_config(port, action_plugin("a", "dunno")), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(http), 500);
    CHECK_FALSE(c.ok());
    d2->stop();
}
