// it_proxy.cpp: the Proxy plugin (spec 13.16, 16 #10) in a real ringpolicyd asking real
// upstream policy servers on loopback: another ringpolicyd over TCP (attributes and instance
// forwarded, the upstream's action returned and aborting, keep-alive reusing connections) and
// over a Unix socket; the Perl mtpolicyd 2.05 as upstream; an upstream that is down (plugin
// failure: no reply, or the next plugin with on_error = continue) and one that comes back; a
// slow upstream (timeout_ms); start-up errors.
#include "diffcheck.h"
#include "itcommon.h"
#include "fake_policy.h"
#include "netplug_common.h"
#include "private_hosts.h"

using namespace itest;

namespace
{

// An upstream answering "reject recipient=vN" for recipient vN (N < 4), else "defer upstream
// default", and "reject instance=abc" for that instance.
std::string upstream_body()
{
    return match_plugin("inst", "instance", "abc") + numbered_plugins("recipient", 4) +
           action_plugin("fallback", "defer upstream default");
}

std::string proxy_body(const std::string &target_line, const std::string &extra = "")
{
    return "  <Plugin proxy>\n    module = \"Proxy\"\n    " + target_line + "\n" + extra +
           "  </Plugin>\n" + action_plugin("after", "reject not proxied");
}

Reply ask_rcpt(uint16_t port, const std::string &rcpt, const std::string &instance = "x1")
{
    return ask(Endpoint::tcp(port), postfix_request({{"recipient", rcpt}, {"instance", instance}}));
}

} // namespace

TEST_CASE("ringpolicyd to ringpolicyd over TCP, keep-alive", "[it_proxy]")
{
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(simple_config(up, upstream_body(), "log_level = 4\n"),
                               Endpoint::tcp(up));
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port,
                                      proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"",
                                                 "    keepalive = 1\n"),
                                      "shards = 1\n"),
                        Endpoint::tcp(port));
    size_t closes_before = log_lines_with(*upstream, "closing connection"); // readiness probe
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4; i++) {
            std::string v = "v" + std::to_string(i);
            CHECK(first(ask_rcpt(port, v)) == "reject recipient=" + v);
        }
    CHECK(first(ask_rcpt(port, "other")) == "defer upstream default");
    CHECK(first(ask_rcpt(port, "other", "abc")) == "reject instance=abc");
    // Keep-alive: the upstream saw one connection for the 14 requests (one shard, sequential).
    CHECK(log_lines_with(*upstream, "closing connection") == closes_before);
    upstream->stop();
    // The upstream closed its end: the next request fails (no reply), not a stale answer.
    CHECK(first(ask_rcpt(port, "v1")) == reply_status_name(Reply::CLOSED));
}

TEST_CASE("an upstream host name that resolves only later: degraded, then proxied without a "
          "restart",
          "[it_proxy]")
{
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(simple_config(up, upstream_body()), Endpoint::tcp(up));
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring,
             simple_config(port,
                           proxy_body("host = \"up-later.test:" + std::to_string(up) + "\"",
                                      "    on_error = \"continue\"\n"),
                           "shards = 1\n"));
    std::string hosts = start_with_private_hosts(d, Endpoint::tcp(port), "127.0.0.1 localhost\n");
    // The name does not resolve: the call fails like a failed connect, on_error goes on.
    CHECK(first(ask_rcpt(port, "v1")) == "reject not proxied");
    CHECK(d.wait_log("cannot resolve up-later.test", 5000));
    write_hosts(hosts, "127.0.0.1 localhost\n127.0.0.1 up-later.test\n");
    std::string a;
    for (int i = 0; i < 100 && a != "reject recipient=v1"; i++) { // within the backoff (5 s)
        a = first(ask_rcpt(port, "v1", "later" + std::to_string(i)));
        if (a != "reject recipient=v1")
            sleep_ms(100);
    }
    CHECK(a == "reject recipient=v1");
    CHECK(d.stop() == 0);
}

TEST_CASE("keepalive = 0 closes the upstream connection after each reply (as 2.05)",
          "[it_proxy]")
{
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(simple_config(up, upstream_body(), "log_level = 4\n"),
                               Endpoint::tcp(up));
    uint16_t port = free_tcp_port();
    auto d = start_ring(
        simple_config(port, proxy_body("host = \"localhost:" + std::to_string(up) + "\"")),
        Endpoint::tcp(port));
    size_t closes_before = log_lines_with(*upstream, "closing connection"); // readiness probe
    for (int i = 0; i < 3; i++)
        CHECK(first(ask_rcpt(port, "v2")) == "reject recipient=v2");
    for (int i = 0; i < 50 && log_lines_with(*upstream, "closing connection") < closes_before + 3;
         i++)
        sleep_ms(20);
    CHECK(log_lines_with(*upstream, "closing connection") == closes_before + 3);
}

TEST_CASE("socket_path: a ringpolicyd upstream on a Unix socket", "[it_proxy]")
{
    TempDir tmp;
    std::string sock = tmp.file("up.sock");
    std::string upconf = "port = \"" + sock + "|unix\"\n" + vhost_block(sock, "up", upstream_body());
    auto upstream = start_ring(upconf, Endpoint::unix_socket(sock));
    uint16_t port = free_tcp_port();
    // socket_path wins over host (which points nowhere).
    auto d = start_ring(simple_config(port, proxy_body("socket_path = \"" + sock +
                                                       "\"\n    host = \"127.0.0.1:1\"")),
                        Endpoint::tcp(port));
    CHECK(first(ask_rcpt(port, "v3")) == "reject recipient=v3");
}

TEST_CASE("the Perl mtpolicyd 2.05 as upstream", "[it_proxy]")
{
    need_perl();
    uint16_t up = free_tcp_port();
    std::unique_ptr<Daemon> perl(new Daemon(Impl::Perl, simple_config(up, upstream_body())));
    perl->set_ready(Endpoint::tcp(up));
    bool ok = perl->start();
    INFO(perl->error());
    REQUIRE(ok);
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port,
                                      proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"",
                                                 "    keepalive = 1\n")),
                        Endpoint::tcp(port));
    for (int i = 0; i < 4; i++) {
        std::string v = "v" + std::to_string(i);
        CHECK(first(ask_rcpt(port, v)) == "reject recipient=" + v);
    }
    CHECK(first(ask_rcpt(port, "zz", "abc")) == "reject instance=abc");
}

TEST_CASE("upstream down: plugin failure, on_error = continue, and recovery", "[it_proxy]")
{
    uint16_t up = free_tcp_port();
    uint16_t port = free_tcp_port();
    uint16_t port2 = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(port2) +
        "\"\nlog_level = 4\n" +
        vhost_block(std::to_string(port), "strict",
                    proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"")) +
        vhost_block(std::to_string(port2), "lenient",
                    proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"",
                               "    on_error = \"continue\"\n"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    CHECK(first(ask_rcpt(port, "v1")) == reply_status_name(Reply::CLOSED));
    CHECK(first(ask_rcpt(port2, "v1")) == "reject not proxied");
    CHECK(d->wait_log("could not connect to host: Connection refused", 3000));
    // The upstream comes up: within the client's backoff (at most 5 s) requests reach it.
    auto upstream = start_ring(simple_config(up, upstream_body()), Endpoint::tcp(up));
    bool reached = false;
    for (int i = 0; i < 80 && !reached; i++) {
        reached = first(ask_rcpt(port2, "v1")) == "reject recipient=v1";
        if (!reached)
            sleep_ms(100);
    }
    CHECK(reached);
    CHECK(first(ask_rcpt(port, "v0")) == "reject recipient=v0");
}

TEST_CASE("a slow upstream: timeout_ms ends the call", "[it_proxy]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(
        simple_config(up,
                      "  <Plugin nap>\n    module = \"Sleep\"\n    ms = 1200\n  </Plugin>\n" +
                          action_plugin("late", "reject too late"),
                      "plugin_dir = \"" + itest_build_dir() + "\"\n"),
        Endpoint::tcp(up));
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port,
                                      proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"",
                                                 "    timeout_ms = 300\n    on_error = continue\n"),
                                      "log_level = 4\n"),
                        Endpoint::tcp(port));
    int64_t t0 = now_ms();
    CHECK(first(ask_rcpt(port, "v1")) == "reject not proxied");
    int64_t ms = now_ms() - t0;
    CHECK(ms >= 250);
    CHECK(ms < 1100);
    CHECK(d->wait_log("timed out", 3000));
    sleep_ms(1300); // the upstream's request ends before it stops (see the next test case)
}

TEST_CASE("request_timeout ends a request waiting on a slow upstream", "[it_proxy]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(
        simple_config(up,
                      "  <Plugin nap>\n    module = \"Sleep\"\n    ms = 2500\n  </Plugin>\n" +
                          action_plugin("late", "reject too late"),
                      "plugin_dir = \"" + itest_build_dir() + "\"\n"),
        Endpoint::tcp(up));
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port,
                                      proxy_body("host = \"127.0.0.1:" + std::to_string(up) + "\"",
                                                 "    timeout_ms = 1500\n    on_error = continue\n"),
                                      "request_timeout = 1\n"),
                        Endpoint::tcp(port));
    int64_t t0 = now_ms();
    CHECK(first(ask_rcpt(port, "v1")) == reply_status_name(Reply::CLOSED)); // 2.05: no reply
    int64_t ms = now_ms() - t0;
    CHECK(ms >= 900);
    CHECK(ms < 3500);
    // The daemon still serves: a second request meets the same fate, not a crash.
    CHECK(first(ask_rcpt(port, "v2")) == reply_status_name(Reply::CLOSED));
    CHECK(d->alive());
    // Let the proxy's call (timeout_ms) and the upstream's sleep end before the daemons stop:
    // a shard stopping with a request still waiting keeps its pools to the exit (daemon.c),
    // which the sanitizer build reports as a leak.
    sleep_ms(2800);
}

TEST_CASE("start-up errors: no target, bad host, bad limits", "[it_proxy]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    struct Bad {
        std::string body, message;
    } bad[] = {
        {"  <Plugin p>\n    module = \"Proxy\"\n  </Plugin>\n",
         "no host and no socket_path configured!"},
        {"  <Plugin p>\n    module = \"Proxy\"\n    host = \"127.0.0.1\"\n  </Plugin>\n",
         "is not HOST:PORT"},
        {"  <Plugin p>\n    module = \"Proxy\"\n    host = \"127.0.0.1:1\"\n"
         "    connections = 0\n  </Plugin>\n",
         "connections must be"},
    };
    for (auto &b : bad) {
        Daemon d(Impl::Ring, simple_config(port, b.body));
        RunResult rr = d.run({"--check"});
        INFO(rr.out << rr.err);
        CHECK(rr.status != 0);
        CHECK(contains(rr.out + rr.err, b.message));
    }
}

TEST_CASE("Perl mtpolicyd 2.05's Proxy and ringpolicyd's against the same upstream",
          "[it_proxy][diff]")
{
    uint16_t up = free_tcp_port();
    auto upstream = start_ring(simple_config(up, upstream_body()), Endpoint::tcp(up));
    uint16_t down = free_tcp_port();
    std::string host = "host = \"127.0.0.1:" + std::to_string(up) + "\"";
    std::vector<VhostSpec> vhosts = {
        {"proxy", proxy_body(host), ""},
        {"down", proxy_body("host = \"127.0.0.1:" + std::to_string(down) + "\""), ""},
        {"lenient", proxy_body("host = \"127.0.0.1:" + std::to_string(down) + "\"",
                               "    on_error = \"continue\"\n"),
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases = {
        {"proxy", rq({{"recipient", "v0"}, {"instance", "i1"}}), "reject recipient=v0", "", ""},
        {"proxy", rq({{"recipient", "v3"}, {"instance", "i2"}}), "reject recipient=v3", "", ""},
        {"proxy", rq({{"recipient", "zz"}, {"instance", "abc"}}), "reject instance=abc", "", ""},
        {"proxy", rq({{"recipient", "zz"}, {"instance", "i3"}}), "defer upstream default", "", ""},
        {"proxy", rq({{"recipient", "v1"}, {"instance", "\x7f"}}), "<closed>", "", ""}, // 2.05: instance undef fails a Moose type check,
        {"down", rq({{"instance", "i4"}}), "<closed>", "", ""},
        {"lenient", rq({{"instance", "i5"}}), "reject not proxied", "", ""},
    };
    run_cases(rig, vhosts, cases);
}

TEST_CASE("odd upstream replies: Perl 2.05's Proxy and ringpolicyd's agree", "[it_proxy][diff]")
{
    FakePolicy fake;
    std::vector<VhostSpec> vhosts = {
        {"fake", proxy_body("host = \"127.0.0.1:" + std::to_string(fake.port()) + "\""), ""},
        {"fake_ka",
         proxy_body("host = \"127.0.0.1:" + std::to_string(fake.port()) + "\"",
                    "    keepalive = 1\n    on_error = continue\n"),
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases;
    for (std::string vh : {"fake"}) {
        cases.push_back({vh, rq({{"recipient", "crlf"}}), "reject crlf", "", ""});
        cases.push_back({vh, rq({{"recipient", "twice"}}), "reject second", "", ""});
        cases.push_back({vh, rq({{"recipient", "extra"}}), "dunno", "", ""});
        cases.push_back({vh, rq({{"recipient", "noaction"}}), "<closed>", "", ""});
        cases.push_back({vh, rq({{"recipient", "noequals"}}), "<closed>", "", ""});
        cases.push_back({vh, rq({{"recipient", "other"}}), "reject fake", "", ""});
        cases.push_back({vh, rq({{"recipient", "empty"}}), "", "", ""}); // action= passed on
        // Last: after an upstream that closed without a reply, 2.05's worker keeps the dead
        // socket and fails its next Proxy request too (not replicated; see below).
        cases.push_back({vh, rq({{"recipient", "close"}}), "<closed>", "", ""});
    }
    run_cases(rig, vhosts, cases);
    // ringpolicyd only (2.05's keepalive blocks): the same over one kept connection, failures
    // continuing to the next plugin and the connection replaced after the upstream closed it.
    uint16_t port = rig.endpoint(Impl::Ring, "fake_ka").port;
    for (int round = 0; round < 2; round++) {
        CHECK(first(ask(Endpoint::tcp(port), rq({{"recipient", "crlf"}}))) == "reject crlf");
        CHECK(first(ask(Endpoint::tcp(port), rq({{"recipient", "noaction"}}))) ==
              "reject not proxied");
        CHECK(first(ask(Endpoint::tcp(port), rq({{"recipient", "close"}}))) ==
              "reject not proxied");
        CHECK(first(ask(Endpoint::tcp(port), rq({{"recipient", "twice"}}))) == "reject second");
    }
}
