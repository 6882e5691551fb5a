// it_vhosts.cpp: virtual hosts of ringpolicyd (spec 11.1, 11.2): by local port, by
// policy_context (appendix D #3), the vhost name in the result line, and a listening socket
// without a virtual host refused at start-up. (Vhosts keyed by a Unix socket path: it_listeners.)
#include "itcommon.h"

using namespace itest;

TEST_CASE("virtual hosts by port", "[vhosts]")
{
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port(), p3 = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p1) + ", 127.0.0.1:" + std::to_string(p2) +
        ",127.0.0.1:" + std::to_string(p3) + "\"\n" +
        vhost_block(std::to_string(p1), "one", action_plugin("a", "reject one")) +
        vhost_block(std::to_string(p2), "two", action_plugin("a", "reject two")) +
        vhost_block(std::to_string(p3), "three",
                    match_plugin("m", "sender", "x") + action_plugin("b", "reject three"));
    auto d = start_ring(config, Endpoint::tcp(p1));
    for (int i = 0; i < 20; i++) {
        CHECK(ask(Endpoint::tcp(p1), postfix_request()).actions ==
              std::vector<std::string>{"reject one"});
        CHECK(ask(Endpoint::tcp(p2), postfix_request()).actions ==
              std::vector<std::string>{"reject two"});
        CHECK(ask(Endpoint::tcp(p3), postfix_request({{"sender", "x"}})).actions ==
              std::vector<std::string>{"reject sender=x"});
    }
    /* policy_context means nothing without vhost_by_policy_context */
    CHECK(ask(Endpoint::tcp(p1), postfix_request({{"policy_context", "two"}})).actions ==
          std::vector<std::string>{"reject one"});
    CHECK(d->wait_log("one: instance=", 2000));
    CHECK(d->wait_log("two: instance=", 2000));
    CHECK(d->wait_log("three: instance=", 2000));
}

TEST_CASE("virtual hosts by policy_context (D #3)", "[vhosts]")
{
    uint16_t p = free_tcp_port(), q = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p) + ",127.0.0.1:" + std::to_string(q) +
        "\"\nvhost_by_policy_context = 1\n" +
        vhost_block(std::to_string(p), "fred", action_plugin("a", "reject fred")) +
        vhost_block("0", "horst", action_plugin("a", "reject horst")) +
        vhost_block(std::to_string(q), "other", action_plugin("a", "reject other"));
    auto d = start_ring(config, Endpoint::tcp(p));
    struct {
        uint16_t port;
        const char *context;
        const char *expect;
    } cases[] = {
        {p, "fred", "reject fred"},   {p, "horst", "reject horst"}, {p, nullptr, "reject fred"},
        {p, "", "reject fred"},       {q, "fred", "reject fred"},   {q, "horst", "reject horst"},
        {q, nullptr, "reject other"}, {q, "", "reject other"},
    };
    for (auto &c : cases) {
        INFO("port " << c.port << " policy_context " << (c.context ? c.context : "(absent)"));
        auto req = postfix_request({{"policy_context", c.context ? c.context : "\x7f"}});
        CHECK(ask(Endpoint::tcp(c.port), req).actions == std::vector<std::string>{c.expect});
    }
    /* one connection, changing context from request to request */
    Conn c(Endpoint::tcp(q));
    REQUIRE(c.ok());
    CHECK(c.request(postfix_request({{"policy_context", "horst"}})).actions ==
          std::vector<std::string>{"reject horst"});
    CHECK(c.request(postfix_request()).actions == std::vector<std::string>{"reject other"});
    CHECK(c.request(postfix_request({{"policy_context", "fred"}})).actions ==
          std::vector<std::string>{"reject fred"});
    CHECK(d->wait_log("horst: instance=", 2000));
}

TEST_CASE("an unknown policy_context falls back to the port's vhost", "[vhosts]")
{
    uint16_t p = free_tcp_port();
    std::string config = "port = \"127.0.0.1:" + std::to_string(p) +
                         "\"\nvhost_by_policy_context = 1\n" +
                         vhost_block(std::to_string(p), "fred", action_plugin("a", "reject fred"));
    auto d = start_ring(config, Endpoint::tcp(p));
    CHECK(ask(Endpoint::tcp(p), postfix_request({{"policy_context", "nobody"}})).actions ==
          std::vector<std::string>{"reject fred"});
}

TEST_CASE("a listening socket without a virtual host is refused at start-up", "[vhosts]")
{
    need_ringpolicyd();
    uint16_t p = free_tcp_port(), q = free_tcp_port();
    std::string config = "port = \"127.0.0.1:" + std::to_string(p) +
                         ",127.0.0.1:" + std::to_string(q) + "\"\n" +
                         vhost_block(std::to_string(p), "fred", action_plugin("a", "reject fred"));
    Daemon d(Impl::Ring, config);
    RunResult check = d.run({"--check"});
    INFO("--check: " << check.status << "\n" << check.out << check.err);
    CHECK(check.status > 0);
    CHECK(contains(check.out + check.err, std::to_string(q)));

    d.set_ready(Endpoint::tcp(p));
    CHECK_FALSE(d.start(3000));
    CHECK(d.wait_exit(5000) > 0);
    CHECK(contains(d.log(), std::to_string(q)));
}

TEST_CASE("no virtual host at all is refused", "[vhosts]")
{
    need_ringpolicyd();
    Daemon d(Impl::Ring, "port = \"127.0.0.1:" + std::to_string(free_tcp_port()) + "\"\n");
    RunResult r = d.run({"--check"});
    INFO(r.out << r.err);
    CHECK(r.status > 0);
    CHECK(r.status != -1);
}
