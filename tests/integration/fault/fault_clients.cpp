// fault_clients.cpp: abusive clients next to a steady load of 64 connections (issue 8): a
// slowloris (one byte a second), half-open connections (connected, silent; and half a request,
// then silence), resets in the middle of a request (SO_LINGER 0), a flood of connections beyond
// max_connections, 10 MB of garbage on one connection, and pipelined bursts of 50 requests.
// Contract: the daemon stays up; every request of the load is answered during the abuse; the
// garbage connection is closed by the daemon (not a request: error parsing request); every
// pipelined burst is answered whole and in order, or (a connection the kernel completed while
// the daemon was at max_connections) closed before any reply, never cut in between; the flood
// is held back by backpressure (accept paused, counted), not crashed on; the load's p99 during
// the abuse stays within 2x of the no-fault run plus 100 ms (a stall fails the test; the strict
// 2x is judged on the matrix run, bench/fault/matrix.sh, not next to the rest of the suite on
// this shared 2-core machine); the figures are printed as one JSON line either way.
#include "fault_load.h"
#include "../ops/opscommon.h"

#include <sys/resource.h>

using namespace itest;
using namespace faultit;

namespace
{

constexpr unsigned kLoadConns = 64;
constexpr unsigned kMaxConnsPerShard = 200; /* 2 shards: 400 in all */

struct Abuse {
    std::atomic<bool> stop{false};
    std::atomic<size_t> rst_sent{0}, flood_open{0}, garbage_bytes{0};
    std::atomic<size_t> pipelined_bursts{0}, pipelined_refused{0}, pipelined_partial{0},
        pipelined_bad{0};
    std::atomic<bool> garbage_closed{false};
    std::mutex mu;
    std::string notes; /* what went wrong with a pipelined burst, for the failure message */
};

void slowloris(uint16_t port, Abuse &ab)
{
    std::vector<int> fds;
    for (int i = 0; i < 10; i++)
        fds.push_back(connect_loopback(port));
    std::string req = postfix_req(1, "slow");
    for (size_t i = 0; i < req.size() && !ab.stop; i++) {
        for (int fd : fds)
            if (fd >= 0)
                ::send(fd, &req[i], 1, MSG_NOSIGNAL);
        for (int t = 0; t < 10 && !ab.stop; t++)
            sleep_ms(100);
    }
    for (int fd : fds)
        if (fd >= 0)
            ::close(fd);
}

void half_open(uint16_t port, Abuse &ab)
{
    std::vector<int> fds;
    std::string half = postfix_req(2, "half").substr(0, 100);
    for (int i = 0; i < 40; i++) {
        int fd = connect_loopback(port);
        if (fd >= 0 && i % 2 == 0)
            send_all(fd, half);
        fds.push_back(fd);
    }
    while (!ab.stop)
        sleep_ms(50);
    for (int fd : fds)
        if (fd >= 0)
            ::close(fd);
}

void resets(uint16_t port, Abuse &ab)
{
    std::string half = postfix_req(3, "rst");
    half.resize(half.size() / 2);
    while (!ab.stop) {
        int fd = connect_loopback(port);
        if (fd >= 0) {
            send_all(fd, half);
            linger l{1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
            ::close(fd); /* RST */
            ab.rst_sent++;
        }
        sleep_ms(20);
    }
}

void flood(uint16_t port, Abuse &ab)
{
    /* More than the daemon may hold (2 x kMaxConnsPerShard) on top of everything else. */
    std::vector<int> fds;
    for (unsigned i = 0; i < 2 * kMaxConnsPerShard + 100 && !ab.stop; i++) {
        int fd = connect_loopback(port); /* the kernel's backlog completes the handshake */
        if (fd >= 0) {
            fds.push_back(fd);
            ab.flood_open++;
        }
    }
    for (int t = 0; t < 20 && !ab.stop; t++)
        sleep_ms(100);
    for (int fd : fds)
        ::close(fd);
}

void garbage(uint16_t port, Abuse &ab)
{
    int fd = connect_loopback(port);
    if (fd < 0)
        return;
    std::string chunk(64 * 1024, 'x');
    for (size_t i = 0; i < chunk.size(); i += 97)
        chunk[i] = '\n'; /* lines, never an empty one: one endless request */
    while (ab.garbage_bytes < (10u << 20) && !ab.stop) {
        ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n <= 0) {
            ab.garbage_closed = true;
            break;
        }
        ab.garbage_bytes += static_cast<size_t>(n);
    }
    if (!ab.garbage_closed) {
        /* All 10 MB went into socket buffers: the close must still come. */
        pollfd p{fd, POLLIN, 0};
        char b[4096];
        for (int t = 0; t < 50 && !ab.garbage_closed; t++)
            if (poll(&p, 1, 100) > 0 && ::recv(fd, b, sizeof(b), 0) <= 0)
                ab.garbage_closed = true;
    }
    ::close(fd);
}

void pipelined(uint16_t port, Abuse &ab)
{
    while (!ab.stop) {
        int fd = connect_loopback(port);
        if (fd < 0) {
            sleep_ms(20);
            continue;
        }
        std::string burst;
        for (int i = 0; i < 50; i++)
            burst += postfix_req(static_cast<uint64_t>(i), "pipe");
        if (!send_all(fd, burst)) {
            ::close(fd);
            continue;
        }
        std::string in;
        char b[65536];
        size_t replies = 0;
        bool reset = false;
        pollfd p{fd, POLLIN, 0};
        while (replies < 50 && poll(&p, 1, 5000) > 0) {
            ssize_t n = ::recv(fd, b, sizeof(b), 0);
            if (n <= 0) {
                reset = true;
                break;
            }
            in.append(b, static_cast<size_t>(n));
            size_t e;
            while ((e = in.find("\n\n")) != std::string::npos) {
                if (in.compare(0, 7, "action=") != 0)
                    ab.pipelined_bad++;
                in.erase(0, e + 2);
                replies++;
            }
        }
        /* A connection the kernel completed while the daemon was at max_connections may be
         * closed unserved (accept_overflow): refused, not lost. Anything in between is a bug. */
        if (replies == 50)
            ab.pipelined_bursts++;
        else if (replies == 0 && reset)
            ab.pipelined_refused++;
        else {
            ab.pipelined_partial++;
            std::lock_guard<std::mutex> g(ab.mu);
            ab.notes += "burst at " + std::to_string(now_ms()) + ": " + std::to_string(replies) +
                        " replies\n";
        }
        ::close(fd);
        sleep_ms(50);
    }
}

} // namespace

TEST_CASE("clients: slowloris, half-open, RST, flood, garbage, pipelining", "[fault][clients]")
{
    rlimit rl;
    REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl); /* the flood needs more than 1024 fds here */
    }
    uint16_t port = free_tcp_port(), http = free_tcp_port();
    std::string conf = simple_config(
        port, action_plugin("a", "dunno"),
        "shards = 2\nmax_connections = " + std::to_string(kMaxConnsPerShard) +
            "\nhttp_port = \"127.0.0.1:" + std::to_string(http) + "\"\nkeepalive_timeout = 30\n");
    auto d = start_ring(conf, Endpoint::tcp(port));

    Load load(port, kLoadConns, [](uint64_t s) { return postfix_req(s); });
    load.start();
    sleep_ms(500); /* warm-up, not measured */
    int64_t t0 = now_ms();
    sleep_ms(3000);
    int64_t t1 = now_ms();
    Abuse ab;
    std::vector<std::thread> th;
    th.emplace_back(slowloris, port, std::ref(ab));
    th.emplace_back(half_open, port, std::ref(ab));
    th.emplace_back(resets, port, std::ref(ab));
    th.emplace_back(flood, port, std::ref(ab));
    th.emplace_back(garbage, port, std::ref(ab));
    th.emplace_back(pipelined, port, std::ref(ab));
    sleep_ms(4000);
    ab.stop = true;
    for (auto &t : th)
        t.join();
    int64_t t2 = now_ms();
    sleep_ms(2000);
    int64_t t3 = now_ms();
    load.stop();
    std::string page = http_get(http, "/metrics").body;
    bool alive = d->alive();
    auto s = load.snapshot();
    Window before = Load::window(s, t0, t1), during = Load::window(s, t1, t2),
           after = Load::window(s, t2, t3);
    double paused = metric(page, "ringpolicyd_accept_paused_total");
    auto closed = [&](const char *why) {
        return metric(page, std::string("ringpolicyd_connections_closed_total{reason=\"") + why +
                                "\"}");
    };
    print_json("clients",
               Load::json("before", before) + "," + Load::json("during", during) + "," +
                   Load::json("after", after) + ",\"p99_ratio\":" +
                   std::to_string(before.p99_ms > 0 ? during.p99_ms / before.p99_ms : 0) +
                   ",\"rst_sent\":" + std::to_string(ab.rst_sent.load()) +
                   ",\"flood_open\":" + std::to_string(ab.flood_open.load()) +
                   ",\"garbage_bytes\":" + std::to_string(ab.garbage_bytes.load()) +
                   ",\"pipelined_bursts\":" + std::to_string(ab.pipelined_bursts.load()) +
                   ",\"pipelined_refused\":" + std::to_string(ab.pipelined_refused.load()) +
                   ",\"pipelined_partial\":" + std::to_string(ab.pipelined_partial.load()) +
                   ",\"accept_paused\":" + std::to_string(paused) +
                   ",\"closed_app\":" + std::to_string(closed("app")) +
                   ",\"closed_nomem\":" + std::to_string(closed("nomem")));
    INFO(ab.notes << "stop at " << t2);
    REQUIRE(alive);
    CHECK(before.answered > 1000);
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(during.actions["dunno"] == during.answered);
    CHECK(ab.garbage_closed);
    CHECK(ab.pipelined_bursts > 5);
    CHECK(ab.pipelined_partial == 0);
    CHECK(ab.pipelined_bad == 0);
    CHECK(ab.rst_sent > 10);
    CHECK(paused >= 1); /* the flood reached max_connections: backpressure, counted */
    /* The 2x is checked on the quiet-machine matrix run (bench/fault/matrix.sh flags a
     * ratio over 2); here, next to the rest of the suite on 2 shared cores, only a stall (a
     * shard blocked by an abusive client) fails the test. */
    CHECK(during.p99_ms <= 2 * before.p99_ms + 100.0);
    CHECK(d->stop() == 0);
}
