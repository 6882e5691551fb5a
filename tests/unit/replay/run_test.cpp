// run_test.cpp: the replay loop (bench/replay/run.c, drive.c) against policy servers run inside
// the test on 127.0.0.1: what arrives at the server, per-stream order, actions, differential
// mode, the failures a server can cause (close, garbage, silence, refusal), open-loop timing,
// the port map, bounds, copies and threads. Timing checks only have lower bounds (a loaded
// machine can always be slower); no speed is asserted here.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "corpus.h"
#include "render.h"
#include "run.h"
}

#include "corpus_testutil.h"

namespace {

uint64_t mono_ns()
{
    return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string attr(const std::string &req, const std::string &name)
{
    size_t p = req.find(name + "=");
    while (p != std::string::npos && p != 0 && req[p - 1] != '\n')
        p = req.find(name + "=", p + 1);
    if (p == std::string::npos)
        return "";
    size_t e = req.find('\n', p);
    return req.substr(p + name.size() + 1, e - p - name.size() - 1);
}

// A policy server on 127.0.0.1:0 in its own thread (poll loop). Unlike tests/unit/bench/
// test_server.h it records arrival times, numbers requests per connection and can delay replies. The handler gets each request
// and returns the reply bytes; "" means never answer, "CLOSE" closes the connection.
class stub_server {
  public:
    struct record {
        int conn;
        uint64_t at_ns;
        std::string text;
    };
    using handler = std::function<std::string(const std::string &req, int conn, int nth)>;

    explicit stub_server(handler h, int delay_ms = 0) : h_(std::move(h)), delay_ms_(delay_ms)
    {
        lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(lfd_, (sockaddr *)&a, sizeof(a)) == 0);
        REQUIRE(listen(lfd_, 512) == 0);
        socklen_t len = sizeof(a);
        getsockname(lfd_, (sockaddr *)&a, &len);
        port_ = ntohs(a.sin_port);
        REQUIRE(pipe2(wake_, O_CLOEXEC) == 0);
        th_ = std::thread([this] { loop(); });
    }
    ~stub_server()
    {
        stop_ = true;
        (void)!write(wake_[1], "x", 1);
        th_.join();
        for (auto &c : conns_)
            close(c.fd);
        close(lfd_);
        close(wake_[0]);
        close(wake_[1]);
    }
    stub_server(const stub_server &) = delete;
    stub_server &operator=(const stub_server &) = delete;

    uint16_t port() const { return port_; }
    std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
    std::vector<record> records()
    {
        std::lock_guard<std::mutex> g(mu_);
        return records_;
    }
    int accepted() const { return accepted_; }

  private:
    struct conn {
        int fd, id, nth;
        std::string in;
    };
    handler h_;
    int delay_ms_;
    int lfd_ = -1, wake_[2] = {-1, -1};
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::thread th_;
    std::vector<conn> conns_;
    std::mutex mu_;
    std::vector<record> records_;

    void loop()
    {
        while (!stop_) {
            std::vector<pollfd> p = {{lfd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
            for (auto &c : conns_)
                p.push_back({c.fd, POLLIN, 0});
            if (poll(p.data(), p.size(), 100) <= 0)
                continue;
            if (p[0].revents & POLLIN) {
                int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conns_.push_back({fd, accepted_++, 0, ""});
                }
            }
            std::vector<int> dead;
            for (size_t i = 2; i < p.size(); i++)
                if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) && !serve(conns_[i - 2]))
                    dead.push_back((int)i - 2);
            for (auto it = dead.rbegin(); it != dead.rend(); ++it) {
                close(conns_[*it].fd);
                conns_.erase(conns_.begin() + *it);
            }
        }
    }
    bool serve(conn &c)
    {
        char buf[4096];
        ssize_t n = read(c.fd, buf, sizeof(buf));
        if (n <= 0)
            return false;
        c.in.append(buf, (size_t)n);
        size_t end;
        while ((end = c.in.find("\n\n")) != std::string::npos) {
            std::string req = c.in.substr(0, end + 2);
            c.in.erase(0, end + 2);
            {
                std::lock_guard<std::mutex> g(mu_);
                records_.push_back({c.id, mono_ns(), req});
            }
            if (delay_ms_ > 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
            std::string reply = h_(req, c.id, c.nth++);
            if (reply == "CLOSE")
                return false;
            if (!reply.empty() && write(c.fd, reply.data(), reply.size()) != (ssize_t)reply.size())
                return false;
        }
        return true;
    }
};

std::string dunno(const std::string &, int, int)
{
    return "action=dunno\n\n";
}

// A log of `procs` smtpd processes with `mails` accepted mails each (two recipients), one
// second apart, all processes interleaved.
std::string make_log(int procs, int mails, int gap_s = 1)
{
    std::string log;
    int t = 0;
    char ts[64];
    for (int m = 0; m < mails; m++) {
        for (int p = 0; p < procs; p++, t += gap_s) {
            snprintf(ts, sizeof(ts), "Nov 24 %02d:%02d:%02d mx ", t / 3600, t / 60 % 60, t % 60);
            std::string pid = std::to_string(100 + p), ip = "192.0.2." + std::to_string(1 + p);
            char qid[32];
            snprintf(qid, sizeof(qid), "A%04X%04X", (unsigned)p & 0xffffu, (unsigned)m & 0xffffu);
            log += ts + ("postfix/smtpd[" + pid + "]: connect from c" + pid + "[" + ip + "]\n");
            log += ts + ("postfix/smtpd[" + pid + "]: " + qid + ": client=c" + pid + "[" + ip + "]\n");
            log += ts + ("postfix/qmgr[9]: " + std::string(qid) + ": from=<s@x>, size=100, nrcpt=2 (queue active)\n");
            log += ts + ("postfix/smtp[8]: " + std::string(qid) + ": to=<good" + std::to_string(m) + "@y>, relay=r, status=sent\n");
            log += ts + ("postfix/smtp[8]: " + std::string(qid) + ": to=<bad" + std::to_string(m) + "@y>, relay=r, status=sent\n");
            log += ts + ("postfix/smtpd[" + pid + "]: disconnect from c" + pid + "[" + ip + "]\n");
        }
    }
    return log;
}

struct corpus_t : rpltest::log_corpus {
    corpus_t(const std::string &log, unsigned mask) : log_corpus(log, mask) {}
};

struct run_t {
    rpl_run_opts o{};
    rpl_run_result r{};
    explicit run_t(const rpl_corpus *c)
    {
        o.corpus = c;
        o.render.copy_span_us = rpl_copy_span_us(c);
        o.server_count = 1;
        o.multiply = 1;
        o.conn_cap = 16;
        o.threads = 1;
        o.timeout_ms = 5000;
        o.diff_show_max = 10;
    }
    ~run_t() { rpl_run_result_free(&r); }
    run_t(const run_t &) = delete;
    run_t &operator=(const run_t &) = delete;

    void server(unsigned srv, const std::string &a)
    {
        char err[256];
        for (unsigned st = 0; st < RPL_STAGE_COUNT; st++)
            REQUIRE(bench_addr_parse(a.c_str(), &o.servers[srv][st], err, sizeof(err)) == 0);
        o.server_count = srv + 1;
    }
    int run()
    {
        char err[256] = "";
        int rc = rpl_run(&o, &r, err, sizeof(err));
        INFO(err);
        return rc;
    }
    const rpl_server_stats &s(unsigned srv = 0) const { return r.total.server[srv]; }
    uint64_t action(const char *name, unsigned srv = 0) const
    {
        const bench_actions &a = r.total.server[srv].actions;
        for (uint32_t i = 0; i < a.kind_count; i++)
            if (std::string(a.kinds[i].name) == name)
                return a.kinds[i].count;
        return 0;
    }
};

std::string render(const rpl_corpus *c, uint64_t g, const rpl_render_opts &ro)
{
    char buf[8192];
    size_t n = rpl_render(c, &c->reqs[g % c->req_count], (uint32_t)(g / c->req_count), &ro, buf,
                          sizeof(buf));
    REQUIRE(n > 0);
    return std::string(buf, n);
}

} // namespace

TEST_CASE("closed loop: every request arrives once, in order per stream", "[run]")
{
    corpus_t c(make_log(5, 4), 7u);
    REQUIRE(c.c.req_count == 5 * 4 * 4); // 2 RCPT + DATA + EOM per mail
    stub_server srv(dunno);
    run_t t(&c.c);
    t.server(0, srv.addr());
    REQUIRE(t.run() == 0);
    CHECK(t.r.scheduled == c.c.req_count);
    CHECK(t.r.total.requests == c.c.req_count);
    CHECK(t.s().requests == c.c.req_count);
    CHECK(rpl_server_stats_errors(&t.s()) == 0);
    CHECK(t.action("dunno") == c.c.req_count);
    CHECK(t.r.stream_count == 5);
    CHECK(t.r.conn_count == 5);
    CHECK(srv.accepted() == 5);
    CHECK(t.s().latency.count == c.c.req_count);

    std::vector<stub_server::record> recs = srv.records();
    REQUIRE(recs.size() == c.c.req_count);
    std::multiset<std::string> want, got;
    for (uint64_t g = 0; g < c.c.req_count; g++)
        want.insert(render(&c.c, g, t.o.render));
    std::map<int, std::vector<std::string>> per_conn;
    for (const auto &r : recs) {
        got.insert(r.text);
        per_conn[r.conn].push_back(r.text);
    }
    CHECK(got == want);
    // One smtpd process per connection, its mails in log order, each mail's requests in order.
    for (const auto &kv : per_conn) {
        REQUIRE(kv.second.size() == 16);
        std::set<std::string> clients;
        for (size_t i = 0; i < kv.second.size(); i++) {
            clients.insert(attr(kv.second[i], "client_address"));
            const char *state[] = {"RCPT", "RCPT", "DATA", "END-OF-MESSAGE"};
            CHECK(attr(kv.second[i], "protocol_state") == state[i % 4]);
            if (i % 4 > 0)
                CHECK(attr(kv.second[i], "instance") == attr(kv.second[i - 1], "instance"));
        }
        CHECK(clients.size() == 1);
    }
}

TEST_CASE("actions are counted by their first word, lower case", "[run]")
{
    corpus_t c(make_log(3, 3), 1u);
    stub_server srv([](const std::string &req, int, int) {
        return attr(req, "recipient").rfind("bad", 0) == 0 ? "action=REJECT no such user\n\n"
                                                           : "action=DUNNO\n\n";
    });
    run_t t(&c.c);
    t.server(0, srv.addr());
    REQUIRE(t.run() == 0);
    CHECK(t.action("reject") == 9);
    CHECK(t.action("dunno") == 9);
}

TEST_CASE("differential mode: differences counted by kind, the earliest kept in full", "[run]")
{
    corpus_t c(make_log(4, 5), 1u);
    stub_server a(dunno);
    stub_server b([](const std::string &req, int, int) {
        std::string r = attr(req, "recipient");
        return r == "bad1@y" || r == "bad3@y" ? "action=reject 5.1.1 unknown\n\n" : "action=dunno\n\n";
    });
    run_t t(&c.c);
    t.server(0, a.addr());
    t.server(1, b.addr());
    t.o.diff_show_max = 3;
    REQUIRE(t.run() == 0);
    CHECK(t.r.total.requests == 40);
    CHECK(t.r.total.diff_compared == 40);
    CHECK(t.r.total.diff_count == 8); // bad1 and bad3, for 4 processes
    REQUIRE(t.r.total.diff_kind_count == 1);
    CHECK(std::string(t.r.total.diff_kinds[0].name) == "dunno -> reject");
    CHECK(t.r.total.diff_kinds[0].count == 8);
    REQUIRE(t.r.total.sample_count == 3);
    for (uint32_t i = 1; i < 3; i++)
        CHECK(t.r.total.samples[i - 1].seq < t.r.total.samples[i].seq);
    // The three earliest differing positions of the schedule.
    std::vector<uint64_t> want;
    for (uint64_t g = 0; g < c.c.req_count && want.size() < 3; g++) {
        std::string r = attr(render(&c.c, g, t.o.render), "recipient");
        if (r == "bad1@y" || r == "bad3@y")
            want.push_back(g);
    }
    for (uint32_t i = 0; i < 3; i++)
        CHECK(t.r.total.samples[i].seq == want[i]);
    std::string text(t.r.total.samples[0].text, t.r.total.samples[0].text_len);
    CHECK(text.find("recipient=bad1@y\n") != std::string::npos);
    CHECK(text.find("-- server replied:\naction=dunno\n") != std::string::npos);
    CHECK(text.find("-- against replied:\naction=reject 5.1.1 unknown\n") != std::string::npos);

    SECTION("the same answers give no differences")
    {
        stub_server b2(dunno);
        run_t t2(&c.c);
        t2.server(0, a.addr());
        t2.server(1, b2.addr());
        REQUIRE(t2.run() == 0);
        CHECK(t2.r.total.diff_count == 0);
        CHECK(t2.r.total.diff_compared == 40);
    }
}

TEST_CASE("a server that closes connections: counted, reconnected, the run goes on", "[run]")
{
    corpus_t c(make_log(2, 10), 1u);
    stub_server srv([](const std::string &, int, int nth) {
        return nth == 3 ? std::string("CLOSE") : std::string("action=dunno\n\n");
    });
    run_t t(&c.c);
    t.server(0, srv.addr());
    REQUIRE(t.run() == 0);
    CHECK(t.r.total.requests == 40);
    // Each connection dies at its 4th request: 20 requests per stream = 5 connections.
    CHECK(t.s().err_closed == 10);
    CHECK(t.s().requests == 30);
    CHECK(t.s().connects == 10);
    CHECK(srv.accepted() == 10);
}

TEST_CASE("malformed replies: a line without '=', no action, bytes after the reply", "[run]")
{
    corpus_t c(make_log(1, 6), 1u);
    std::atomic<int> n{0};
    stub_server srv([&n](const std::string &, int, int) {
        switch (n++) {
        case 0: return std::string("garbage\n\n");
        case 1: return std::string("foo=bar\n\n");
        case 2: return std::string("action=dunno\n\naction=dunno\n\n"); // one write
        default: return std::string("action=ok\n\n");
        }
    });
    run_t t(&c.c);
    t.server(0, srv.addr());
    REQUIRE(t.run() == 0);
    CHECK(t.r.total.requests == 12);
    // The first two requests fail; the third is answered, then its connection is out of step.
    CHECK(t.s().err_malformed == 3);
    CHECK(t.s().requests == 10);
    CHECK(t.action("dunno") == 1);
    CHECK(t.action("ok") == 9);
    CHECK(t.s().connects == 4); // each malformed reply cost a connection
}

TEST_CASE("silence: replies later than the timeout are timeouts", "[run]")
{
    corpus_t c(make_log(2, 2), 1u);
    stub_server srv([](const std::string &req, int, int) {
        return attr(req, "recipient") == "bad1@y" ? std::string() : std::string("action=dunno\n\n");
    });
    run_t t(&c.c);
    t.server(0, srv.addr());
    t.o.timeout_ms = 150;
    uint64_t t0 = mono_ns();
    REQUIRE(t.run() == 0);
    CHECK(mono_ns() - t0 >= 150000000ull);
    CHECK(t.r.total.requests == 8);
    CHECK(t.s().err_timeout == 2);
    CHECK(t.s().requests == 6);
}

TEST_CASE("nothing listening: every request fails to connect, the run ends", "[run]")
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (sockaddr *)&a, sizeof(a)) == 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (sockaddr *)&a, &len);
    std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    close(fd); // bound once, now free: connects are refused
    corpus_t c(make_log(2, 3), 1u);
    run_t t(&c.c);
    t.server(0, addr);
    REQUIRE(t.run() == 0);
    CHECK(t.r.total.requests == 12);
    CHECK(t.s().err_connect == 12); // the connections tried ahead at start are not counted
    CHECK(t.s().requests == 0);
}

TEST_CASE("open loop: requests leave at their scheduled time; latency counts queueing",
          "[run]")
{
    SECTION("one process, mails 1 s apart at speed 10: 100 ms apart")
    {
        corpus_t c(make_log(1, 4), 1u);
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.open_loop = true;
        t.o.speed = 10;
        REQUIRE(t.run() == 0);
        std::vector<stub_server::record> recs = srv.records();
        REQUIRE(recs.size() == 8);
        for (size_t i = 2; i < recs.size(); i += 2) // each mail's first recipient
            CHECK(recs[i].at_ns - recs[0].at_ns >= (uint64_t)(i / 2) * 100000000ull - 20000000ull);
        CHECK(t.r.recorded_seconds == Approx(3.0));
        CHECK(t.r.seconds >= 0.3);
        // The stream was idle before each mail's first request: those measure the tool's
        // own timer (the second recipient of a mail follows its first at once).
        CHECK(t.r.total.timer_lag.count == 3);
    }
    SECTION("a slow server: a request queued behind its stream's previous one waits, and it "
            "shows in the latency")
    {
        corpus_t c(make_log(1, 2), 1u); // two mails, 1 s apart, two recipients each
        stub_server srv(dunno, 60);       // 60 ms per reply
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.open_loop = true;
        t.o.speed = 1000; // 1 ms apart: the stream is always busy
        REQUIRE(t.run() == 0);
        CHECK(t.s().requests == 4);
        // From the schedule, the 4th request waited for three replies before its own.
        CHECK(bench_hist_max(&t.s().latency) >= 4 * 60000 - 5000);
        CHECK(t.r.total.late_sends >= 2);
    }
}

TEST_CASE("open loop pace: --rate sets the speed, --max-gap cuts long pauses", "[run]")
{
    SECTION("rate: 8 requests over 3 s of log at 80 per second take 0.1 s, speed 30")
    {
        corpus_t c(make_log(1, 4), 1u);
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.open_loop = true;
        t.o.rate = 80;
        REQUIRE(t.run() == 0);
        CHECK(t.r.speed == Approx(30.0));
        CHECK(t.r.seconds >= 0.09);
        CHECK(t.r.total.requests == 8);
    }
    SECTION("max_gap: an hour's pause in the log becomes one second")
    {
        std::string log = make_log(1, 1);
        std::string later = make_log(1, 1);
        size_t p;
        while ((p = later.find("Nov 24 00:00:00")) != std::string::npos)
            later.replace(p, 15, "Nov 24 01:00:00");
        while ((p = later.find("A00000000")) != std::string::npos)
            later.replace(p, 9, "B00000000");
        corpus_t c(log + later, 1u);
        REQUIRE(c.c.req_count == 4);
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.open_loop = true;
        t.o.speed = 10;
        t.o.max_gap_us = 1000000;
        REQUIRE(t.run() == 0);
        CHECK(t.r.recorded_seconds == Approx(1.0));
        CHECK(t.r.seconds >= 0.09);
        CHECK(t.r.seconds < 60.0); // not the 360 s the uncut pause would take at speed 10
        std::vector<stub_server::record> recs = srv.records();
        REQUIRE(recs.size() == 4);
        CHECK(recs[2].at_ns - recs[0].at_ns >= 80000000ull);
    }
}

TEST_CASE("port map: END-OF-MESSAGE to its own server", "[run]")
{
    corpus_t c(make_log(3, 2), 7u);
    stub_server rcpt(dunno), eom([](const std::string &, int, int) { return "action=ok\n\n"; });
    run_t t(&c.c);
    t.server(0, rcpt.addr());
    char err[256];
    REQUIRE(bench_addr_parse(eom.addr().c_str(), &t.o.servers[0][RPL_STAGE_EOM], err,
                             sizeof(err)) == 0);
    REQUIRE(t.run() == 0);
    CHECK(t.r.conn_count == 6); // two policy addresses per stream
    for (const auto &r : eom.records())
        CHECK(attr(r.text, "protocol_state") == "END-OF-MESSAGE");
    CHECK(eom.records().size() == 6);
    CHECK(rcpt.records().size() == 18);
    CHECK(t.action("ok") == 6);
    CHECK(t.action("dunno") == 18);
}

TEST_CASE("limits: request and reply size at N and N+1, difference kinds", "[run]")
{
    SECTION("a request longer than RPL_REQUEST_BYTES_MAX is skipped and counted")
    {
        corpus_t c(make_log(1, 2), 1u);
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        // Find how long request 0 renders, then grow its recipient to hit the limit exactly.
        std::string r0 = render(&c.c, 0, t.o.render);
        std::string good = "good0@y";
        std::string log = make_log(1, 2);
        size_t fill_n = RPL_REQUEST_BYTES_MAX - r0.size(); // request 0 at exactly N bytes
        std::string at_n = std::string(fill_n, 'a') + good;
        std::string log_n = log, log_n1 = log;
        log_n.replace(log_n.find("to=<" + good), 4 + good.size(), "to=<" + at_n);
        log_n1.replace(log_n1.find("to=<" + good), 4 + good.size(), "to=<a" + at_n);
        for (int over = 0; over < 2; over++) {
            corpus_t c2(over ? log_n1 : log_n, 1u);
            stub_server srv2(dunno);
            run_t t2(&c2.c);
            t2.server(0, srv2.addr());
            REQUIRE(t2.run() == 0);
            CHECK(t2.r.total.requests == 4);
            CHECK(t2.r.total.skipped_too_big == (uint64_t)over);
            CHECK(srv2.records().size() == 4u - over);
            if (!over)
                CHECK(srv2.records()[0].text.size() == RPL_REQUEST_BYTES_MAX);
        }
    }
    SECTION("a reply of RPL_REPLY_BYTES_MAX bytes is taken, one byte more is malformed")
    {
        corpus_t c(make_log(1, 1), 1u);
        for (int over = 0; over < 2; over++) {
            std::string reply = "action=dunno " +
                                std::string(RPL_REPLY_BYTES_MAX - 15 + over, 'x') + "\n\n";
            stub_server srv([&reply](const std::string &, int, int) { return reply; });
            run_t t(&c.c);
            t.server(0, srv.addr());
            REQUIRE(t.run() == 0);
            CHECK(t.s().requests == (over ? 0u : 2u));
            CHECK(t.s().err_malformed == (over ? 2u : 0u));
        }
    }
    SECTION("difference kinds beyond RPL_DIFF_KINDS_MAX are counted as other")
    {
        corpus_t c(make_log(1, 40), 1u); // 80 requests
        std::atomic<int> n{0};
        stub_server a(dunno);
        stub_server b([&n](const std::string &, int, int) {
            return "action=w" + std::to_string(n++) + "\n\n";
        });
        run_t t(&c.c);
        t.server(0, a.addr());
        t.server(1, b.addr());
        REQUIRE(t.run() == 0);
        CHECK(t.r.total.diff_count == 80);
        CHECK(t.r.total.diff_kind_count == RPL_DIFF_KINDS_MAX);
        CHECK(t.r.total.diff_other == 80 - RPL_DIFF_KINDS_MAX);
    }
}

TEST_CASE("bounds, copies, stream cap and threads", "[run]")
{
    corpus_t c(make_log(6, 3), 1u);
    SECTION("max_requests")
    {
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.max_requests = 7;
        REQUIRE(t.run() == 0);
        CHECK(t.r.scheduled == 7);
        CHECK(t.r.total.requests == 7);
        CHECK(srv.records().size() == 7);
    }
    SECTION("duration: no request is sent after it")
    {
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.open_loop = true;
        t.o.speed = 20; // 36 requests over 17 s of log: 0.85 s
        t.o.duration_ms = 200;
        REQUIRE(t.run() == 0);
        CHECK(t.r.total.requests < 36);
        CHECK(t.r.total.requests >= 4); // the first mails, 50 ms apart
        CHECK(srv.records().size() == t.r.total.requests);
    }
    SECTION("copies, folded onto fewer streams, on two threads")
    {
        stub_server srv(dunno);
        run_t t(&c.c);
        t.server(0, srv.addr());
        t.o.multiply = 4;
        t.o.conn_cap = 10;
        t.o.threads = 2;
        REQUIRE(t.run() == 0);
        CHECK(t.r.scheduled == 4 * 36);
        CHECK(t.r.total.requests == 4 * 36);
        CHECK(t.r.stream_count == 10);
        CHECK(srv.accepted() == 10);
        std::set<std::string> instances, addrs;
        for (const auto &r : srv.records()) {
            instances.insert(attr(r.text, "instance"));
            addrs.insert(attr(r.text, "client_address"));
        }
        CHECK(instances.size() == 4 * 18); // one per mail and copy
        CHECK(addrs.size() == 4 * 6);      // one per process and copy
        CHECK(rpl_server_stats_errors(&t.s()) == 0);
    }
}
