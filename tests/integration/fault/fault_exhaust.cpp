// fault_exhaust.cpp: running out, under a steady load of 64 connections (issue 8):
//  - file descriptors: the daemon starts with a soft RLIMIT_NOFILE of 160, and a flood of 300
//    connections makes accept fail with EMFILE. Contract: backpressure, not a crash: the
//    failures are counted (ringpolicyd_accept_errors_total) and retried, the load's connections
//    are answered throughout, and once the flood is gone new connections are served again;
//  - staging memory: max_staging_bytes_per_shard at its minimum (1064960 bytes at the default
//    limits) while 48 clients each hold 40 KB of an unfinished request and then finish it.
//    Contract: the daemon stays up and the load is answered; every large client gets either its
//    reply or a close (never a hang). How many were closed for want of a staging buffer
//    (reason nomem: the engine's known weakness, see bench/fault/README.md) is printed.
#include "fault_load.h"
#include "../ops/opscommon.h"

#include <sys/resource.h>

using namespace itest;
using namespace faultit;

namespace
{

/* Waits for a reply or a close: 1 replied, 0 closed, -1 nothing within timeout_ms. */
int await(int fd, int timeout_ms)
{
    std::string in;
    char b[4096];
    pollfd p{fd, POLLIN, 0};
    int64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = ::recv(fd, b, sizeof(b), 0);
        if (n <= 0)
            return 0;
        in.append(b, static_cast<size_t>(n));
        if (in.find("\n\n") != std::string::npos)
            return 1;
    }
    return -1;
}

double closed_reason(const std::string &page, const char *why)
{
    return metric(page, std::string("ringpolicyd_connections_closed_total{reason=\"") + why + "\"}");
}

} // namespace

TEST_CASE("exhaustion: file descriptors", "[fault][fds]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    rlimit old;
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit low{160, old.rlim_max};
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0); /* inherited by the daemon */
    std::unique_ptr<Daemon> d;
    {
        need_ringpolicyd();
        d.reset(new Daemon(Impl::Ring,
                           simple_config(port, action_plugin("a", "dunno"),
                                         "shards = 2\nhttp_port = \"127.0.0.1:" +
                                             std::to_string(http) + "\"\n")));
        d->set_ready(Endpoint::tcp(port));
        bool ok = d->start();
        setrlimit(RLIMIT_NOFILE, &old);
        INFO(d->error());
        REQUIRE(ok);
    }
    Load load(port, 64, [](uint64_t s) { return postfix_req(s); });
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(1500);
    int64_t t1 = now_ms();
    std::vector<int> flood;
    for (int i = 0; i < 300; i++) {
        int fd = connect_loopback(port);
        if (fd >= 0)
            flood.push_back(fd);
    }
    sleep_ms(2000);
    for (int fd : flood)
        ::close(fd);
    int64_t t2 = now_ms();
    /* Served again: a new connection answered (the flood's closes free the fds). */
    int64_t back = -1;
    for (int i = 0; i < 100 && back < 0; i++) {
        Reply r = ask(Endpoint::tcp(port), postfix_request(), 1000);
        if (r.ok())
            back = now_ms() - t2;
        else
            sleep_ms(50);
    }
    sleep_ms(1000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    Window before = Load::window(s, t0, t1), during = Load::window(s, t1, t2),
           after = Load::window(s, t2, t3);
    std::string page = http_get(http, "/metrics").body;
    double errors = metric(page, "ringpolicyd_accept_errors_total");
    print_json("fd_exhaustion", Load::json("before", before) + "," + Load::json("during", during) +
                                    "," + Load::json("after", after) + ",\"nofile\":160" +
                                    ",\"flood\":" + std::to_string(flood.size()) +
                                    ",\"accept_errors\":" + std::to_string(errors) +
                                    ",\"served_again_ms\":" + std::to_string(back));
    INFO(d->log().substr(0, 3000));
    REQUIRE(d->alive());
    CHECK(errors >= 1);
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(back >= 0);
    CHECK(d->stop() == 0);
}

TEST_CASE("exhaustion: the staging budget", "[fault][staging]")
{
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "dunno"),
                                      "shards = 1\nmax_staging_bytes_per_shard = 1064960\n"
                                      "http_port = \"127.0.0.1:" +
                                          std::to_string(http) + "\"\n"),
                        Endpoint::tcp(port));
    Load load(port, 64, [](uint64_t s) { return postfix_req(s); });
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(1500);
    int64_t t1 = now_ms();
    /* 48 requests of ~40 KB (valid: under max_request_bytes 64 KiB, lines under 16 KiB), all
     * but their last line sent at once, held for a second, then finished. */
    std::string body;
    for (int i = 0; i < 4; i++)
        body += "x" + std::to_string(i) + "=" + std::string(10000, 'v') + "\n";
    std::string req = postfix_req(1, "big");
    req.insert(req.size() - 1, body); /* before the empty line */
    std::string head = req.substr(0, req.size() - 1), tail = req.substr(req.size() - 1);
    std::vector<int> big;
    for (int i = 0; i < 48; i++) {
        int fd = connect_loopback(port);
        if (fd >= 0 && send_all(fd, head))
            big.push_back(fd);
        else if (fd >= 0)
            ::close(fd);
    }
    sleep_ms(1000);
    for (int fd : big)
        send_all(fd, tail);
    size_t replied = 0, closed = 0, hung = 0;
    for (int fd : big) {
        int r = await(fd, 5000);
        replied += r == 1;
        closed += r == 0;
        hung += r < 0;
        ::close(fd);
    }
    int64_t t2 = now_ms();
    sleep_ms(1000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    Window before = Load::window(s, t0, t1), during = Load::window(s, t1, t2),
           after = Load::window(s, t2, t3);
    std::string page = http_get(http, "/metrics").body;
    print_json("staging_budget",
               Load::json("before", before) + "," + Load::json("during", during) + "," +
                   Load::json("after", after) + ",\"budget_bytes\":1064960,\"large_clients\":" +
                   std::to_string(big.size()) + ",\"large_replied\":" + std::to_string(replied) +
                   ",\"large_closed\":" + std::to_string(closed) +
                   ",\"large_hung\":" + std::to_string(hung) +
                   ",\"closed_nomem\":" + std::to_string(closed_reason(page, "nomem")));
    INFO(d->log().substr(0, 3000));
    REQUIRE(d->alive());
    CHECK(big.size() == 48);
    CHECK(hung == 0);
    CHECK(replied + closed == big.size());
    CHECK(replied > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(d->stop() == 0);
}
