// fault_allow.cpp: the client allow-list (global option allow, policy/allow.h; a ringpolicyd
// addition) in the real daemon, under a steady load of 64 allowed connections: a client from a
// loopback address outside the list (127.0.0.2) hammering the port is closed at accept without
// a byte of reply, counted (ringpolicyd_connections_refused_total) and logged at most once a
// second, while the allowed load is answered throughout; SIGHUP with a new list lets it in;
// IPv6 ::1 by its own entry; a bad entry fails start-up naming file:line.
#include "fault_load.h"
#include "../ops/opscommon.h"

#include <signal.h>

using namespace itest;
using namespace faultit;

namespace
{

/* Connects from source address src to 127.0.0.1:port, sends a request and reads; the reply's
 * bytes ("" when closed without one), or "(connect failed)". */
std::string try_from(const char *src, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in s{}, a{};
    s.sin_family = a.sin_family = AF_INET;
    inet_pton(AF_INET, src, &s.sin_addr);
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&s), sizeof(s)) != 0 ||
        ::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
        if (fd >= 0)
            ::close(fd);
        return "(connect failed)";
    }
    std::string req = postfix_req(7, "allow");
    (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string in;
    char b[4096];
    pollfd p{fd, POLLIN, 0};
    while (in.find("\n\n") == std::string::npos && poll(&p, 1, 3000) > 0) {
        ssize_t n = ::recv(fd, b, sizeof(b), 0);
        if (n <= 0)
            break;
        in.append(b, static_cast<size_t>(n));
    }
    ::close(fd);
    return in;
}

} // namespace

TEST_CASE("allow: refused at accept, counted, rate-limited log, reloaded", "[fault][allow]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string globals = "shards = 2\nhttp_port = \"127.0.0.1:" + std::to_string(http) + "\"\n";
    std::string body = action_plugin("a", "dunno");
    auto d = start_ring(simple_config(port, body, globals + "allow = \"127.0.0.1/32, ::1\"\n"),
                        Endpoint::tcp(port));
    CHECK(try_from("127.0.0.1", port) == "action=dunno\n\n");
    CHECK(try_from("127.0.0.2", port) == "");

    Load load(port, 64, [](uint64_t s) { return postfix_req(s); });
    load.start();
    int64_t t0 = now_ms();
    size_t refused = 0, leaked = 0;
    while (now_ms() - t0 < 3000) {
        std::string r = try_from("127.0.0.2", port);
        refused += r.empty();
        leaked += !r.empty() && r != "(connect failed)";
    }
    int64_t t1 = now_ms();
    load.stop();
    Window w = Load::window(load.snapshot(), t0, t1);
    double counted = metric(http_get(http, "/metrics").body, "ringpolicyd_connections_refused_total");
    size_t lines = log_lines_with(*d, "refused: not in allow");
    print_json("allow", Load::json("load", w) + ",\"refused\":" + std::to_string(refused) +
                            ",\"counted\":" + std::to_string(counted) +
                            ",\"log_lines\":" + std::to_string(lines));
    CHECK(leaked == 0);
    CHECK(refused > 20);
    CHECK(counted == static_cast<double>(refused + 1));
    CHECK(lines >= 1);
    CHECK(lines <= 5); /* one a second over ~3 s, daemon-wide */
    CHECK(w.answered > 1000);
    CHECK(w.closed + w.timeouts + w.connect_failed == 0);
    CHECK(contains(d->log(), "connection from 127.0.0.2:"));

    if (ipv6_loopback_usable()) {
        /* ::1 is listed; the listener is IPv4 only here, so check the entry through a second
         * daemon listening on [::1]. */
        uint16_t p6 = free_tcp_port(true);
        auto d6 = start_ring("port = \"[::1]:" + std::to_string(p6) + "\"\nallow = \"::1\"\n" +
                                 vhost_block(std::to_string(p6), "v6", body),
                             Endpoint::tcp(p6, "::1"));
        Reply r = ask(Endpoint::tcp(p6, "::1"), postfix_request());
        CHECK(r.ok());
        CHECK(d6->stop() == 0);
    }

    /* Reload with 127.0.0.2 let in. */
    write_text(d->config_path(), simple_config(port, body,
                                               globals + "allow = \"127.0.0.0/30\"\n"));
    REQUIRE(d->send_signal(SIGHUP) == 0);
    std::string r;
    for (int i = 0; i < 50 && (r = try_from("127.0.0.2", port)) != "action=dunno\n\n"; i++)
        sleep_ms(100);
    CHECK(r == "action=dunno\n\n");
    CHECK(try_from("127.0.0.5", port) == "");
    CHECK(d->stop() == 0);

    Daemon bad(Impl::Ring, simple_config(port, body, "\n\nallow = \"127.0.0.0/8, localhost\"\n"));
    RunResult rr = bad.run({"--check"});
    INFO(rr.out << rr.err);
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "conf:4: allow: 'localhost' is not an IPv4 or IPv6 address"));
}
