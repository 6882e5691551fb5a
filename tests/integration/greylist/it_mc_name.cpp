// it_mc_name.cpp: a Memcached connection whose server is given by a host name that does not
// resolve yet (a Kubernetes Service created after the daemon) — here the connection of
// Greylist's tickets and of the session cache. ringpolicyd starts anyway, serves requests
// degraded (no session kept; Greylist fails, error_action answers), logs the failed lookup once
// per failure streak and counts it, and recovers without a restart once the name resolves:
// tickets are stored again and the log says the server is connected.
//
// The name is made to appear by giving the daemon a private /etc/hosts: it runs in a mount
// namespace of its own (unshare -m) with a file of the test bind-mounted over /etc/hosts, which
// the test rewrites in place (glibc reads /etc/hosts at every lookup). Needs root and
// unshare(1); without them SKIP, or FAIL in CI.
#include "private_hosts.h"

#include "../../unit/mc/mc_server.h"

using namespace itest;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

} // namespace

TEST_CASE("a memcached server name that resolves only later: start, degraded service, "
          "recovery without restart",
          "[it_mc_name]")
{
    std::string port = mc().addr().substr(mc().addr().rfind(':') + 1);
    uint16_t p = free_tcp_port();
    const std::string ns = "mcn" + std::to_string(getpid()) + "-";
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p) +
        "\"\nerror_action = \"dunno\"\n<Connection memcached>\n  module = \"Memcached\"\n"
        "  servers = \"memcached-later.test:" +
        port + "\"\n  namespace = \"" + ns +
        "\"\n</Connection>\n<SessionCache>\n  module = \"Memcached\"\n</SessionCache>\n" +
        vhost_block(std::to_string(p), "gl",
                    "  <Plugin greylist>\n    module = \"Greylist\"\n    use_autowl = 0\n"
                    "  </Plugin>\n" +
                        action_plugin("pass", "dunno"));
    Daemon d(Impl::Ring, config);
    std::string hosts = start_with_private_hosts(d, Endpoint::tcp(p), "127.0.0.1 localhost\n");

    auto ask_gl = [&](const std::string &rcpt) {
        return first(ask(Endpoint::tcp(p),
                         postfix_request({{"sender", "a@s.example"},
                                          {"client_address", "192.0.2.9"},
                                          {"recipient", rcpt},
                                          {"instance", "mcn-" + rcpt}}),
                         10000));
    };
    // Degraded: the name does not resolve; the requests are answered (error_action) and
    // nothing reaches memcached.
    for (int i = 0; i < 5; i++)
        CHECK(ask_gl("r" + std::to_string(i) + "@r.example") == "dunno");
    CHECK(mc().raw_get(ns + "a@s.example,192.0.2.9,r0@r.example") == "(none)");
    CHECK(d.wait_log("cannot resolve memcached-later.test:" + port, 5000));
    // Logged once per failure streak and connection (one connection per shard).
    size_t lines = log_lines_with(d, "cannot resolve memcached-later.test");
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(log_lines_with(d, "cannot resolve memcached-later.test") == lines);

    // The name appears: within the reconnect backoff (at most 5 s) the connection is up and
    // greylisting works, without a restart.
    write_hosts(hosts, "127.0.0.1 localhost\n127.0.0.1 memcached-later.test\n");
    CHECK(d.wait_log("connected to memcached-later.test:" + port + " again", 15000));
    std::string a;
    for (int i = 0; i < 100; i++) {
        a = ask_gl("late@r.example");
        if (a == "defer greylisting is active")
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(a == "defer greylisting is active");
    CHECK(mc().raw_get(ns + "a@s.example,192.0.2.9,late@r.example") != "(none)");
    CHECK(d.stop() == 0);
    CHECK(d.alive() == false);
}
