// it_reload.cpp: SIGHUP hot reload on a real ringpolicyd: a valid reload changes the answers of
// new requests on an open keep-alive connection; a request in flight finishes on the chain it
// started on; a broken configuration logs "reload failed: FILE:LINE: ..." and the old answers
// stay; restart-only options are kept with a notice; listeners (port, http_port) are added and
// removed as the new configuration says, connections on a removed one keep working, a port
// without a vhost or one that cannot be bound refuses the reload; and a load run across 10
// reloads (alternating two valid configurations, one with an extra port, and a broken one)
// loses no request.
#include "opscommon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

using namespace itest;

namespace
{

std::string reload_config(uint16_t port, uint16_t http, const std::string &answer,
                          const std::string &extra_plugins = "", const std::string &globals = "")
{
    return simple_config(port, extra_plugins + action_plugin("answer", answer),
                         "http_port = \"127.0.0.1:" + std::to_string(http) +
                             "\"\nshards = 2\nplugin_dir = \"" + itest_build_dir() + "\"\n" +
                             globals);
}

const char *k_broken = "port = \"127.0.0.1:1\"\n<VirtualHost 1>\n  name = \"x\"\n"
                       "  <Plugin p>\n    module = \"Action\"\n    action = \"dunno\"\n"
                       "  </Plugin>\n</VirtualHost>\n";

/* Sends SIGHUP and waits for the n-th line containing needle. */
bool hup_and_wait(Daemon &d, const std::string &needle, size_t n)
{
    if (d.send_signal(SIGHUP) != 0)
        return false;
    int64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (log_lines_with(d, needle) >= n)
            return true;
        sleep_ms(5);
    }
    return false;
}

std::vector<std::string> one(const std::string &s)
{
    return std::vector<std::string>{s};
}

} // namespace

TEST_CASE("a valid reload changes answers; an open keep-alive connection keeps working",
          "[reload]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(reload_config(port, http, "reject first"), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.request(postfix_request()).actions == one("reject first"));
    write_text(d->config_path(), reload_config(port, http, "reject second"));
    REQUIRE(hup_and_wait(*d, "reload: configuration " + d->config_path() + " loaded (1 vhosts)", 1));
    CHECK(c.request(postfix_request()).actions == one("reject second"));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject second"));
    HttpResponse m = http_get(http, "/metrics");
    CHECK(metric(m.body, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 1);
    CHECK(metric(m.body, "ringpolicyd_requests_total{vhost=\"test\"}") == 3);
    CHECK(d->alive());
    d->stop();
}

TEST_CASE("a request in flight finishes on the configuration it started with", "[reload]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string nap = "  <Plugin nap>\n    module = \"Sleep\"\n    ms = 700\n  </Plugin>\n";
    auto d = start_ring(reload_config(port, http, "reject old", nap, "log_level = 4\n"),
                        Endpoint::tcp(port));
    Conn slow(Endpoint::tcp(port));
    REQUIRE(slow.send(encode_request(postfix_request({{"instance", "slow1"}}))));
    int64_t deadline = now_ms() + 5000;
    while (log_lines_with(*d, "sleeping 700 ms") < 1 && now_ms() < deadline)
        sleep_ms(5);
    REQUIRE(log_lines_with(*d, "sleeping 700 ms") == 1);
    write_text(d->config_path(), reload_config(port, http, "reject new", "", "log_level = 4\n"));
    REQUIRE(d->send_signal(SIGHUP) == 0);
    /* While the old request sleeps, new requests already get the new chain (the reload waits
     * for the old one's requests in the background of the signal thread, not of the shards). */
    int64_t until = now_ms() + 5000;
    std::vector<std::string> got;
    while (now_ms() < until) {
        got = ask(Endpoint::tcp(port), postfix_request({{"instance", "fast"}})).actions;
        if (got == one("reject new"))
            break;
        sleep_ms(10);
    }
    CHECK(got == one("reject new"));
    Reply r = slow.read_reply(5000);
    INFO(d->log());
    CHECK(r.actions == one("reject old"));
    CHECK(slow.request(postfix_request()).actions == one("reject new"));
    CHECK(hup_and_wait(*d, "loaded (1 vhosts)", 1));
    d->stop();
}

TEST_CASE("a broken configuration logs file:line and keeps the old answers", "[reload]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(reload_config(port, http, "reject kept"), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.request(postfix_request()).actions == one("reject kept"));

    /* A syntax error on line 3. */
    write_text(d->config_path(), "port = \"127.0.0.1:" + std::to_string(port) +
                                     "\"\n<VirtualHost " + std::to_string(port) +
                                     ">\n  </Plugin>\n</VirtualHost>\n");
    REQUIRE(hup_and_wait(*d, "reload failed: ", 1));
    CHECK(log_lines_with(*d, "reload failed: " + d->config_path() + ":3:") == 1);
    CHECK(c.request(postfix_request()).actions == one("reject kept"));

    /* Builds but fails: an unknown module (file:line of its block). */
    write_text(d->config_path(), reload_config(port, http, "reject other",
                                               "  <Plugin p>\n    module = \"NoSuchModule\"\n"
                                               "  </Plugin>\n"));
    REQUIRE(hup_and_wait(*d, "reload failed: ", 2));
    CHECK(log_lines_with(*d, "reload failed: " + d->config_path() + ":") == 2);
    CHECK(c.request(postfix_request()).actions == one("reject kept"));

    /* A listener without a vhost. */
    std::string no_vhost(k_broken);
    no_vhost.replace(0, no_vhost.find('\n'), "port = \"127.0.0.1:" + std::to_string(port) + "\"");
    write_text(d->config_path(), no_vhost);
    REQUIRE(hup_and_wait(*d, "reload failed: ", 3));
    CHECK(contains(d->log(), "port " + std::to_string(port) + " has no <VirtualHost " +
                                 std::to_string(port) + ">"));
    CHECK(c.request(postfix_request()).actions == one("reject kept"));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject kept"));
    HttpResponse m = http_get(http, "/metrics");
    CHECK(metric(m.body, "ringpolicyd_config_reloads_total{result=\"failed\"}") == 3);
    CHECK(metric(m.body, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 0);
    d->stop();
}

TEST_CASE("restart-only options keep their running values, with a notice", "[reload]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(reload_config(port, http, "reject a"), Endpoint::tcp(port));
    std::string cfg = "port = \"127.0.0.1:" + std::to_string(port) + "\"\nhttp_port = \"127.0.0.1:" +
                      std::to_string(http) + "\"\nshards = 1\nmax_connections = 10\n" +
                      vhost_block(std::to_string(port), "test", action_plugin("x", "reject b"));
    write_text(d->config_path(), cfg);
    REQUIRE(hup_and_wait(*d, "loaded (1 vhosts)", 1));
    CHECK(contains(d->log(), "shards changes only with a restart"));
    CHECK(contains(d->log(), "max_connections changes only with a restart"));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject b"));
    CHECK(http_get(http, "/healthz").status == 200);
    d->stop();
}

TEST_CASE("a reload adds a port and an http_port address, then removes them; connections on a "
          "removed port keep working",
          "[reload]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port(), other = free_tcp_port(),
             http2 = free_tcp_port();
    auto d = start_ring(reload_config(port, http, "reject a", "", "log_level = 4\n"),
                        Endpoint::tcp(port));
    INFO("log:\n" << d->log());
    CHECK(!Conn(Endpoint::tcp(other), 500).ok());
    auto two = [&](const std::string &http_list) {
        return "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
               std::to_string(other) + "\"\nhttp_port = \"" + http_list +
               "\"\nshards = 2\nlog_level = 4\n" +
               vhost_block(std::to_string(port), "test", action_plugin("x", "reject b")) +
               vhost_block(std::to_string(other), "other", action_plugin("y", "defer other"));
    };
    write_text(d->config_path(),
               two("127.0.0.1:" + std::to_string(http) + ",127.0.0.1:" + std::to_string(http2)));
    REQUIRE(hup_and_wait(*d, "loaded (2 vhosts)", 1));
    CHECK(contains(d->log(), "reload: listening on 127.0.0.1:" + std::to_string(other)));
    CHECK(ask(Endpoint::tcp(other), postfix_request()).actions == one("defer other"));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject b"));
    CHECK(http_get(http2, "/healthz").status == 200);
    CHECK(http_get(http, "/healthz").status == 200);

    /* A connection on the added port stays open across the reload that removes the port. */
    Conn kept(Endpoint::tcp(other));
    REQUIRE(kept.request(postfix_request()).actions == one("defer other"));
    /* The port leaves the list but its <VirtualHost> stays; http moves to http2 only. */
    std::string back = "port = \"127.0.0.1:" + std::to_string(port) + "\"\nhttp_port = \"127.0.0.1:" +
                       std::to_string(http2) + "\"\nshards = 2\nlog_level = 4\n" +
                       vhost_block(std::to_string(port), "test", action_plugin("x", "reject c")) +
                       vhost_block(std::to_string(other), "other", action_plugin("y", "defer kept"));
    write_text(d->config_path(), back);
    REQUIRE(hup_and_wait(*d, "loaded (2 vhosts)", 2));
    CHECK(contains(d->log(), "reload: no longer listening on 127.0.0.1:" + std::to_string(other)));
    CHECK(!Conn(Endpoint::tcp(other), 500).ok());
    CHECK(!Conn(Endpoint::tcp(http), 500).ok());
    CHECK(kept.request(postfix_request()).actions == one("defer kept"));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject c"));
    CHECK(http_get(http2, "/metrics").status == 200);

    /* A port without a <VirtualHost>, or one that cannot be bound: refused, nothing changes. */
    uint16_t stray = free_tcp_port();
    write_text(d->config_path(), "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                                     std::to_string(stray) + "\"\nlog_level = 4\n" +
                                     vhost_block(std::to_string(port), "test",
                                                 action_plugin("x", "reject d")));
    REQUIRE(hup_and_wait(*d, "reload failed", 1));
    CHECK(contains(d->log(), "port " + std::to_string(stray) + " has no <VirtualHost " +
                                 std::to_string(stray) + ">"));
    /* A port another socket holds. */
    int busy_fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint16_t busy = free_tcp_port();
    sa.sin_port = htons(busy);
    REQUIRE(bind(busy_fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0);
    REQUIRE(listen(busy_fd, 1) == 0);
    write_text(d->config_path(),
               "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(busy) +
                   "\"\nlog_level = 4\n" +
                   vhost_block(std::to_string(port), "test", action_plugin("x", "reject e")) +
                   vhost_block(std::to_string(busy), "busy", action_plugin("y", "dunno")));
    REQUIRE(hup_and_wait(*d, "reload failed", 2));
    CHECK(contains(d->log(), "cannot bind 127.0.0.1:" + std::to_string(busy)));
    close(busy_fd);
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions == one("reject c"));
    CHECK(kept.request(postfix_request()).actions == one("defer kept"));
    CHECK(d->stop() == 0);
}

TEST_CASE("load across 10 reloads (two valid configurations and a broken one): no request lost",
          "[reload]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    /* With the Memory session cache a request is processed on the shard owning its instance,
     * often not the one it arrived on: reloads then meet requests crossing shards that switched
     * at different moments. */
    std::string cache = "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n";
    std::string a = reload_config(port, http, "reject from A", "", cache);
    /* B also listens on a second port: every reload adds or removes a listener under load. */
    uint16_t extra = free_tcp_port();
    std::string b = reload_config(port, http, "defer from B", "", cache);
    b.replace(b.find("\"\n"), 2, ",127.0.0.1:" + std::to_string(extra) + "\"\n");
    b += vhost_block(std::to_string(extra), "extra", action_plugin("e", "dunno"));
    std::string broken = reload_config(port, http, "reject never",
                                       "  <Plugin p>\n    module = \"NoSuchModule\"\n"
                                       "  </Plugin>\n",
                                       cache);
    auto d = start_ring(a, Endpoint::tcp(port));

    std::atomic<bool> stop{false};
    std::atomic<long> ok{0}, failed{0}, reconnects{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; t++)
        clients.emplace_back([&, t] {
            Conn c(Endpoint::tcp(port));
            long n = 0;
            while (!stop.load()) {
                /* Every 50 requests a new connection, so accepts happen during reloads too. */
                if (!c.ok() || ++n % 50 == 0) {
                    c = Conn(Endpoint::tcp(port));
                    reconnects++;
                }
                /* Four recipients per mail: one instance for four requests in a row. */
                Reply r = c.request(postfix_request({{"instance", "load" + std::to_string(t) +
                                                                      "-" + std::to_string(n / 4)}}));
                if (r.ok() && (r.actions == one("reject from A") ||
                               r.actions == one("defer from B")))
                    ok++;
                else
                    failed++;
            }
        });
    int good = 0, bad = 0;
    for (int i = 0; i < 10; i++) {
        sleep_ms(150);
        const std::string &next = i % 3 == 2 ? broken : (i % 2 ? a : b);
        write_text(d->config_path(), next);
        bool is_broken = &next == &broken;
        good += !is_broken;
        bad += is_broken;
        bool seen = hup_and_wait(*d, is_broken ? "reload failed: " : "reload: configuration ",
                                 static_cast<size_t>(is_broken ? bad : good));
        CHECK(seen);
        if (!seen)
            break; /* stop the clients below before failing */
    }
    sleep_ms(150);
    stop = true;
    for (auto &t : clients)
        t.join();
    INFO("ok " << ok << " failed " << failed << " reconnects " << reconnects);
    CHECK(failed == 0);
    CHECK(ok > 100);
    CHECK(good == 7);
    CHECK(bad == 3);
    HttpResponse m = http_get(http, "/metrics");
    CHECK(metric(m.body, "ringpolicyd_config_reloads_total{result=\"ok\"}") == 7);
    CHECK(metric(m.body, "ringpolicyd_config_reloads_total{result=\"failed\"}") == 3);
    CHECK(metric(m.body, "ringpolicyd_requests_total{vhost=\"test\"}") == ok.load());
    CHECK(d->alive());
    CHECK(d->stop() == 0);
}
