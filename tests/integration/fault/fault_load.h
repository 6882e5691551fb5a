/*
 * fault_load.h: the steady load of the fault tests (tests/integration/fault): N persistent
 * policy connections driven by one thread with poll, each sending a request as soon as its
 * previous reply arrived (closed loop, like Postfix smtpd processes), recording every request's
 * start time, latency and outcome (the reply's action, or how it failed) so a test can cut the
 * run into windows (before, during, after a fault) and print one JSON line of figures.
 *
 * Only 127.0.0.1 is connected to. A connection that closes or fails is counted and reconnected
 * (after 10 ms when the connect itself fails, so a dead daemon is not spun on). A request with
 * no reply within request_timeout_ms is counted as a timeout and its connection replaced.
 * Thread: start() spawns the loop, stop() joins it; samples are read after stop() (or through
 * snapshot(), which copies under a lock).
 */
#ifndef FAULT_LOAD_H
#define FAULT_LOAD_H

#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace faultit
{

enum class Outcome { Reply, Closed, Timeout, ConnectFailed };

struct Sample {
    int64_t start_ms = 0; /* itest::now_ms() when the request was sent */
    int64_t latency_us = 0;
    Outcome outcome = Outcome::Reply;
    std::string action; /* first action= value of the reply */
};

struct Window {
    size_t sent = 0, answered = 0, closed = 0, timeouts = 0, connect_failed = 0;
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
    std::map<std::string, size_t> actions; /* by first word of the action, lower case */
};

inline int64_t mono_us()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

/* The first word of an action, lower case ("DEFER_IF_PERMIT x" -> "defer_if_permit"). */
inline std::string action_word(const std::string &a)
{
    std::string w = a.substr(0, a.find(' '));
    for (auto &ch : w)
        ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
    return w;
}

class Load
{
  public:
    using MakeRequest = std::function<std::string(uint64_t seq)>;

    Load(uint16_t port, unsigned conns, MakeRequest make, int request_timeout_ms = 30000)
        : port_(port), conns_(conns), make_(std::move(make)), timeout_ms_(request_timeout_ms)
    {
    }
    ~Load()
    {
        stop();
    }
    Load(const Load &) = delete;
    Load &operator=(const Load &) = delete;

    void start()
    {
        running_ = true;
        th_ = std::thread([this] { loop(); });
    }
    void stop()
    {
        running_ = false;
        if (th_.joinable())
            th_.join();
    }
    std::vector<Sample> snapshot()
    {
        std::lock_guard<std::mutex> g(mu_);
        return samples_;
    }
    /* Requests whose outcome is known so far. */
    size_t done()
    {
        std::lock_guard<std::mutex> g(mu_);
        return samples_.size();
    }

    /* Figures of the requests started in [t0, t1). */
    static Window window(const std::vector<Sample> &s, int64_t t0, int64_t t1)
    {
        Window w;
        std::vector<int64_t> lat;
        for (const auto &x : s) {
            if (x.start_ms < t0 || x.start_ms >= t1)
                continue;
            w.sent++;
            switch (x.outcome) {
            case Outcome::Reply:
                w.answered++;
                lat.push_back(x.latency_us);
                w.actions[action_word(x.action)]++;
                break;
            case Outcome::Closed:
                w.closed++;
                break;
            case Outcome::Timeout:
                w.timeouts++;
                break;
            case Outcome::ConnectFailed:
                w.connect_failed++;
                break;
            }
        }
        std::sort(lat.begin(), lat.end());
        auto pct = [&](double p) {
            if (lat.empty())
                return 0.0;
            size_t i = static_cast<size_t>(p * static_cast<double>(lat.size() - 1));
            return static_cast<double>(lat[i]) / 1000.0;
        };
        w.p50_ms = pct(0.50);
        w.p99_ms = pct(0.99);
        w.max_ms = lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0;
        return w;
    }

    /* "name":{...} for a JSON line. */
    static std::string json(const std::string &name, const Window &w)
    {
        std::ostringstream o;
        o.setf(std::ios::fixed);
        o.precision(2);
        o << "\"" << name << "\":{\"sent\":" << w.sent << ",\"answered\":" << w.answered
          << ",\"closed\":" << w.closed << ",\"timeouts\":" << w.timeouts
          << ",\"connect_failed\":" << w.connect_failed << ",\"p50_ms\":" << w.p50_ms
          << ",\"p99_ms\":" << w.p99_ms << ",\"max_ms\":" << w.max_ms << ",\"actions\":{";
        bool first = true;
        for (auto &a : w.actions) {
            o << (first ? "" : ",") << "\"" << a.first << "\":" << a.second;
            first = false;
        }
        o << "}}";
        return o.str();
    }

  private:
    struct C {
        int fd = -1;
        bool waiting = false;
        int64_t sent_us = 0, sent_ms = 0;
        std::string buf;
        std::string out; /* bytes of the request not yet written */
        int64_t retry_at_us = 0;
    };

    uint16_t port_;
    unsigned conns_;
    MakeRequest make_;
    int timeout_ms_;
    std::atomic<bool> running_{false};
    std::thread th_;
    std::mutex mu_;
    std::vector<Sample> samples_;
    uint64_t seq_ = 0;

    void record(const C &c, Outcome o, const std::string &action = "")
    {
        Sample s;
        s.start_ms = c.sent_ms;
        s.latency_us = mono_us() - c.sent_us;
        s.outcome = o;
        s.action = action;
        std::lock_guard<std::mutex> g(mu_);
        samples_.push_back(std::move(s));
    }

    int connect_fd()
    {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
            ::close(fd);
            return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        return fd;
    }

    void drop(C &c)
    {
        if (c.fd >= 0)
            ::close(c.fd);
        c.fd = -1;
        c.waiting = false;
        c.buf.clear();
        c.out.clear();
    }

    /* Sends the next request on c (connecting first when needed). */
    void next(C &c)
    {
        int64_t now = mono_us();
        if (now < c.retry_at_us)
            return;
        c.sent_us = now;
        c.sent_ms = itest::now_ms();
        if (c.fd < 0 && (c.fd = connect_fd()) < 0) {
            record(c, Outcome::ConnectFailed);
            c.retry_at_us = mono_us() + 10000;
            return;
        }
        c.out = make_(seq_++);
        c.waiting = true;
        flush(c);
    }

    void flush(C &c)
    {
        while (!c.out.empty()) {
            ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0) {
                record(c, Outcome::Closed);
                drop(c);
                return;
            }
            c.out.erase(0, static_cast<size_t>(n));
        }
    }

    void readable(C &c)
    {
        char tmp[4096];
        ssize_t n = ::recv(c.fd, tmp, sizeof(tmp), 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (n <= 0) {
            record(c, Outcome::Closed);
            drop(c);
            return;
        }
        c.buf.append(tmp, static_cast<size_t>(n));
        size_t end = c.buf.find("\n\n");
        if (end == std::string::npos)
            return;
        std::string action;
        size_t a = c.buf.find("action=");
        if (a != std::string::npos && a < end)
            action = c.buf.substr(a + 7, c.buf.find('\n', a) - a - 7);
        record(c, Outcome::Reply, action);
        c.buf.erase(0, end + 2);
        c.waiting = false;
    }

    void loop()
    {
        std::vector<C> cs(conns_);
        std::vector<pollfd> pfds(conns_);
        while (running_) {
            for (auto &c : cs)
                if (!c.waiting)
                    next(c);
            int64_t now = mono_us();
            for (unsigned i = 0; i < conns_; i++) {
                C &c = cs[i];
                if (c.waiting && now - c.sent_us > static_cast<int64_t>(timeout_ms_) * 1000) {
                    record(c, Outcome::Timeout);
                    drop(c);
                }
                pfds[i].fd = c.waiting ? c.fd : -1;
                pfds[i].events = static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT));
                pfds[i].revents = 0;
            }
            int pr = poll(pfds.data(), conns_, 10);
            if (pr <= 0)
                continue;
            for (unsigned i = 0; i < conns_; i++) {
                C &c = cs[i];
                if (c.fd < 0 || pfds[i].fd < 0 || !pfds[i].revents)
                    continue;
                if (pfds[i].revents & POLLOUT)
                    flush(c);
                if (c.fd >= 0 && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    readable(c);
            }
        }
        for (auto &c : cs)
            drop(c); /* requests still out are not counted: the run ended, not the daemon */
    }
};

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
inline int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/* Sends every byte on a blocking socket; false on an error (reset, EPIPE). */
inline bool send_all(int fd, const std::string &s)
{
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        off += static_cast<size_t>(n);
    }
    return true;
}

/* A Postfix request (itest::postfix_request) with a distinct instance and sender per seq. */
inline std::string postfix_req(uint64_t seq, const std::string &tag = "f")
{
    std::string n = std::to_string(seq);
    return itest::encode_request(itest::postfix_request(
        {{"instance", tag + n}, {"sender", "s" + n + "@example.org"},
         {"client_address", "192.0.2." + std::to_string(seq % 250 + 1)}}));
}

/* An END-OF-MESSAGE request for one mail (1000 bytes, one recipient) from one of 16 clients,
 * for the Accounting faults. */
inline std::string eom_req(uint64_t seq)
{
    std::string n = std::to_string(seq);
    return itest::encode_request(
        itest::postfix_request({{"protocol_state", "END-OF-MESSAGE"},
                                {"instance", "m" + n},
                                {"client_address", "192.0.2." + std::to_string(seq % 16 + 1)},
                                {"size", "1000"},
                                {"recipient_count", "1"},
                                {"recipient", ""},
                                {"queue_id", "Q" + n}}));
}

/* The load: END-OF-MESSAGE mails (fault_load.h's eom_req) until draining is set, then requests
 * without a client_address, which Accounting, Quota and SqlUserConfig all skip (nothing to
 * count or look up), so the mails still in flight get their replies before the load stops and
 * every mail the daemon counted is one the client saw answered. mails counts the mails sent. */
struct MailLoad {
    std::atomic<bool> draining{false};
    std::atomic<uint64_t> mails{0};
    std::string make(uint64_t seq)
    {
        if (draining)
            return itest::encode_request(itest::postfix_request({{"protocol_state", "END-OF-MESSAGE"},
                                                   {"instance", "z" + std::to_string(seq)},
                                                   {"client_address", ""},
                                                   {"size", "1000"},
                                                   {"recipient_count", "1"}}));
        mails++;
        return eom_req(seq);
    }
};

/* Prints the test's figures as one JSON line on stdout (kept in the meson test log). */
inline void print_json(const std::string &fault, const std::string &body)
{
    std::printf("{\"fault\":\"%s\",%s}\n", fault.c_str(), body.c_str());
    std::fflush(stdout);
}

} // namespace faultit

#endif
