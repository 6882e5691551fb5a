// it_listeners.cpp: the `port` forms of spec 3 on ringpolicyd: HOST:PORT, a bare PORT with
// `host`, HOST:PORT/tcp, [IPV6]:PORT, and Unix sockets (`/path|unix`, vhost keyed by the path),
// several at once, each reaching its own virtual host; the socket file is removed at exit.
#include "itcommon.h"

using namespace itest;

TEST_CASE("TCP forms: HOST:PORT, bare PORT with host, HOST:PORT/tcp", "[listeners]")
{
    uint16_t a = free_tcp_port(), b = free_tcp_port(), c = free_tcp_port();
    std::string config = "host = \"127.0.0.1\"\nport = \"127.0.0.1:" + std::to_string(a) + "," +
                         std::to_string(b) + ",127.0.0.1:" + std::to_string(c) + "/tcp\"\n" +
                         vhost_block(std::to_string(a), "a", action_plugin("x", "reject a")) +
                         vhost_block(std::to_string(b), "b", action_plugin("x", "reject b")) +
                         vhost_block(std::to_string(c), "c", action_plugin("x", "reject c"));
    auto d = start_ring(config, Endpoint::tcp(a));
    CHECK(ask(Endpoint::tcp(a), postfix_request()).actions == std::vector<std::string>{"reject a"});
    CHECK(ask(Endpoint::tcp(b), postfix_request()).actions == std::vector<std::string>{"reject b"});
    CHECK(ask(Endpoint::tcp(c), postfix_request()).actions == std::vector<std::string>{"reject c"});
}

TEST_CASE("IPv6 loopback listener", "[listeners]")
{
    need_ringpolicyd();
    if (!ipv6_loopback_usable())
        skip_or_fail("::1 cannot be bound on this machine (IPv6 disabled)");
    uint16_t p6 = free_tcp_port(true), p4 = free_tcp_port();
    std::string config = "port = \"[::1]:" + std::to_string(p6) +
                         ",127.0.0.1:" + std::to_string(p4) + "\"\n" +
                         vhost_block(std::to_string(p6), "six", action_plugin("x", "reject six")) +
                         vhost_block(std::to_string(p4), "four", action_plugin("x", "reject four"));
    auto d = start_ring(config, Endpoint::tcp(p6, "::1"));
    for (int i = 0; i < 10; i++) {
        CHECK(ask(Endpoint::tcp(p6, "::1"), postfix_request()).actions ==
              std::vector<std::string>{"reject six"});
        CHECK(ask(Endpoint::tcp(p4), postfix_request()).actions ==
              std::vector<std::string>{"reject four"});
    }
    /* the IPv6 listener is not an IPv4 one */
    CHECK_FALSE(Conn(Endpoint::tcp(p6), 300).ok());
}

TEST_CASE("Unix socket listener keyed by its path", "[listeners]")
{
    need_ringpolicyd();
    TempDir t;
    std::string sock = t.file("policy.sock");
    uint16_t p = free_tcp_port();
    std::string config =
        "port = \"" + sock + "|unix,127.0.0.1:" + std::to_string(p) + "\"\n" +
        vhost_block(sock, "unix", action_plugin("x", "reject via unix")) +
        vhost_block(std::to_string(p), "tcp", action_plugin("x", "reject via tcp"));
    auto d = start_ring(config, Endpoint::unix_socket(sock));
    Conn c(Endpoint::unix_socket(sock));
    REQUIRE(c.ok());
    for (int i = 0; i < 50; i++)
        CHECK(c.request(postfix_request()).actions == std::vector<std::string>{"reject via unix"});
    CHECK(ask(Endpoint::tcp(p), postfix_request()).actions ==
          std::vector<std::string>{"reject via tcp"});
    CHECK(d->wait_log("unix: instance=", 2000));
    c.close();
    CHECK(d->stop() == 0);
    CHECK_FALSE(file_exists(sock));
}

TEST_CASE("Unix socket: the same configuration served by the Perl mtpolicyd", "[listeners]")
{
    /* Checks the `/path|unix` form and the path vhost key against 2.05, so the test above uses
       a configuration that existing deployments really have. */
    need_perl();
    TempDir t;
    std::string sock = t.file("perl.sock");
    Daemon perl(Impl::Perl, "port = \"" + sock + "|unix\"\n" +
                                vhost_block(sock, "unix", action_plugin("x", "reject via unix")));
    perl.set_ready(Endpoint::unix_socket(sock));
    bool started = perl.start();
    INFO(perl.error());
    REQUIRE(started);
    CHECK(ask(Endpoint::unix_socket(sock), postfix_request()).actions ==
          std::vector<std::string>{"reject via unix"});
}
