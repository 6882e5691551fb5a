// it_signals.cpp: signals (spec 4; the daemon issue): SIGTERM and SIGINT while requests are in
// flight (every in-flight request is answered, idle connections are closed, exit status 0, no
// new connections afterwards), SIGHUP does not stop the daemon, and a peer vanishing before its
// reply (SIGPIPE ignored) does not hurt.
#include "itcommon.h"

#include <signal.h>
#include <sys/socket.h>

using namespace itest;

namespace
{

std::string slow_config(uint16_t port, int ms)
{
    return simple_config(port,
                         "  <Plugin nap>\n    module = \"Sleep\"\n    ms = " + std::to_string(ms) +
                             "\n  </Plugin>\n" + action_plugin("answer", "reject after nap"),
                         "plugin_dir = \"" + itest_build_dir() + "\"\nlog_level = 4\n");
}

void stop_with_requests_in_flight(int signo)
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t port = free_tcp_port();
    auto d = start_ring(slow_config(port, 800), Endpoint::tcp(port));

    const int busy_count = 40;
    std::vector<Conn> busy, idle;
    for (int i = 0; i < busy_count; i++) {
        busy.emplace_back(Endpoint::tcp(port));
        REQUIRE(busy.back().ok());
    }
    for (int i = 0; i < 5; i++) {
        idle.emplace_back(Endpoint::tcp(port));
        REQUIRE(idle.back().ok());
    }
    for (size_t i = 0; i < busy.size(); i++)
        REQUIRE(busy[i].send(
            encode_request(postfix_request({{"instance", "inflight-" + std::to_string(i)}}))));
    /* Wait until every request is sleeping in the chain (the Sleep plugin logs at level 4):
       only then are they all in flight from the daemon's point of view. */
    int64_t deadline = now_ms() + 5000;
    while (count_of(d->log(), "sleeping 800 ms") < static_cast<size_t>(busy_count) &&
           now_ms() < deadline)
        sleep_ms(10);
    REQUIRE(count_of(d->log(), "sleeping 800 ms") == static_cast<size_t>(busy_count));
    REQUIRE(d->send_signal(signo) == 0);

    int answered = 0;
    for (auto &c : busy) {
        Reply r = c.read_reply(10000);
        answered += r.actions == std::vector<std::string>{"reject after nap"};
    }
    {
        INFO("daemon log:\n" << d->log());
        CHECK(answered == busy_count);
    }
    for (auto &c : idle)
        CHECK(c.wait_closed(10000));
    CHECK(d->wait_exit(15000) == 0);
    CHECK_FALSE(Conn(Endpoint::tcp(port), 300).ok());
}

} // namespace

TEST_CASE("SIGTERM with requests in flight: all answered, exit 0", "[signals]")
{
    stop_with_requests_in_flight(SIGTERM);
}

TEST_CASE("SIGINT with requests in flight: all answered, exit 0", "[signals]")
{
    stop_with_requests_in_flight(SIGINT);
}

TEST_CASE("SIGTERM on an idle daemon exits 0 promptly", "[signals]")
{
    uint16_t port = free_tcp_port();
    auto d =
        start_ring(simple_config(port, action_plugin("a", "reject test")), Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).ok());
    int64_t t0 = now_ms();
    REQUIRE(d->send_signal(SIGTERM) == 0);
    CHECK(d->wait_exit(5000) == 0);
    CHECK(now_ms() - t0 < 5000);
}

TEST_CASE("SIGHUP does not stop the daemon", "[signals]")
{
    uint16_t port = free_tcp_port();
    auto d =
        start_ring(simple_config(port, action_plugin("a", "reject test")), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    CHECK(c.request(postfix_request()).ok());
    REQUIRE(d->send_signal(SIGHUP) == 0);
    sleep_ms(500);
    CHECK(d->alive());
    CHECK(c.request(postfix_request()).actions == std::vector<std::string>{"reject test"});
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject test"});
}

TEST_CASE("peers that vanish before their reply do not hurt (SIGPIPE ignored)", "[signals]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t port = free_tcp_port();
    auto d = start_ring(slow_config(port, 100), Endpoint::tcp(port));
    for (int i = 0; i < 30; i++) {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(encode_request(postfix_request())));
        if (i % 2) {
            struct linger lg = {1, 0}; /* reset */
            setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        c.close();
    }
    sleep_ms(500); /* the replies are written to closed sockets */
    CHECK(d->alive());
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject after nap"});
}
