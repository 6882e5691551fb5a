// harness.h: shared helpers for the engine's tests: run an engine on a background thread,
// blocking loopback clients with timeouts, and a line-echo application with a few commands.
//
// The echo app answers every complete line with the same line. Commands (whole lines):
//   PAUSE <ms>  pause the connection, answer "RESUMED" after <ms> and resume (input that
//               arrives meanwhile is staged and echoed afterwards, in order)
//   CLOSE       eng_conn_close
//   BIG <n>     send n bytes of 'x' then "\n" in one eng_conn_send ("ENOBUFS\n" if refused)
//   ID          answer the connection's id
//   TAG         answer the listener tag
//   PEER        answer the peer address (eng_addr_format)
//   SHARD       answer the shard index
// Everything the app sees is counted in EchoStats (atomics: the test thread reads them).
#ifndef ENG_TEST_HARNESS_H
#define ENG_TEST_HARNESS_H

extern "C" {
#include "eng/engine.h"
#include "testhooks.h"
}

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

namespace th
{

inline const char *backend_label(eng_backend b)
{
    return b == ENG_BACKEND_URING ? "io_uring" : b == ENG_BACKEND_EPOLL ? "epoll" : "auto";
}

inline eng_listen tcp4_any_port()
{
    eng_listen l;
    memset(&l, 0, sizeof(l));
    l.kind = ENG_LISTEN_TCP;
    sockaddr_in *in = reinterpret_cast<sockaddr_in *>(&l.addr);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in->sin_port = 0;
    l.addr_len = sizeof(sockaddr_in);
    return l;
}

inline eng_listen tcp6_any_port()
{
    eng_listen l;
    memset(&l, 0, sizeof(l));
    l.kind = ENG_LISTEN_TCP;
    sockaddr_in6 *in6 = reinterpret_cast<sockaddr_in6 *>(&l.addr);
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = in6addr_loopback;
    l.addr_len = sizeof(sockaddr_in6);
    l.v6only = true;
    return l;
}

inline eng_listen unix_at(const std::string &path)
{
    eng_listen l;
    memset(&l, 0, sizeof(l));
    l.kind = ENG_LISTEN_UNIX;
    snprintf(l.path, sizeof(l.path), "%s", path.c_str());
    return l;
}

inline bool eventually(const std::function<bool()> &pred, int timeout_ms = 5000);

// Runs eng_run on its own thread.
struct Engine {
    eng *e = nullptr;
    std::thread thread;
    int run_rc = 0;
    std::vector<eng_listen> listens;
    char err[512] = "";
    int create_rc = 0;

    explicit Engine(eng_config cfg, std::vector<eng_listen> ls = {tcp4_any_port()})
        : listens(std::move(ls))
    {
        cfg.listens = listens.data();
        cfg.listen_count = listens.size();
        create_rc = eng_create(&cfg, &e, err, sizeof(err));
        INFO(err);
        REQUIRE(create_rc == 0);
        thread = std::thread([this] { run_rc = eng_run(e); });
        REQUIRE(eventually([this] { return eng_test_started(e) != 0; }));
    }
    ~Engine()
    {
        stop();
        eng_destroy(e);
    }
    void stop()
    {
        if (thread.joinable()) {
            eng_stop(e);
            thread.join();
        }
    }
    sockaddr_storage bound(size_t i = 0) const
    {
        sockaddr_storage a;
        socklen_t len;
        REQUIRE(eng_listen_bound(e, i, &a, &len) == 0);
        return a;
    }
    eng_stats stats() const
    {
        eng_stats st;
        eng_stats_sum(e, &st);
        return st;
    }
};

inline void set_timeouts(int fd, int ms)
{
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

inline int connect_to(const sockaddr_storage &a)
{
    int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    socklen_t len = a.ss_family == AF_INET    ? sizeof(sockaddr_in)
                    : a.ss_family == AF_INET6 ? sizeof(sockaddr_in6)
                                              : sizeof(sockaddr_un);
    int rc = connect(fd, reinterpret_cast<const sockaddr *>(&a), len);
    REQUIRE(rc == 0);
    int one = 1;
    if (a.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_timeouts(fd, 5000);
    return fd;
}

inline bool send_all(int fd, const std::string &s)
{
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        off += size_t(n);
    }
    return true;
}

// Reads until `want` bytes arrived, EOF, or the timeout. Returns what arrived.
inline std::string recv_n(int fd, size_t want, int timeout_ms = 5000)
{
    std::string out;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char buf[65536];
    while (out.size() < want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        until - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0)
            break;
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0)
            break;
        ssize_t n = recv(fd, buf, std::min(sizeof(buf), want - out.size()), 0);
        if (n <= 0)
            break;
        out.append(buf, size_t(n));
    }
    return out;
}

// Reads one line (without its newline).
inline std::string recv_line(int fd, int timeout_ms = 5000)
{
    std::string out;
    while (out.empty() || out.back() != '\n') {
        std::string c = recv_n(fd, 1, timeout_ms);
        if (c.empty())
            return out;
        out += c;
    }
    out.pop_back();
    return out;
}

// True if the peer closed (EOF or reset) within the timeout.
inline bool wait_eof(int fd, int timeout_ms = 5000)
{
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char buf[4096];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        until - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0)
            return false;
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0)
            return false;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return true;
    }
}

// Waits until pred() holds (polling every ms); false on timeout.
inline bool eventually(const std::function<bool()> &pred, int timeout_ms)
{
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
        if (pred())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
}

// ---------------------------------------------------------------------------------------------
// The echo application

struct EchoStats {
    std::atomic<uint64_t> opens{0};
    std::atomic<uint64_t> closes{0};
    std::atomic<uint64_t> close_reason[ENG_CLOSE_REASON_COUNT]{};
    std::atomic<uint64_t> lines{0};
    std::atomic<uint64_t> shard_starts{0}, shard_stops{0};
    std::atomic<int> nodelay{-1};
    std::atomic<int> open_result{0}; // what on_open returns
    std::atomic<uint64_t> last_id{0};
    std::atomic<uint64_t> last_closed_id{0};
    std::atomic<uint64_t> hops_arrived{0}, hops_done{0};
};

inline EchoStats g_echo;

struct EchoHop;

struct EchoConn {
    eng_timer timer;
    eng_conn *c;
    uint32_t pause_ms;
    EchoHop *hop; // a HOP out on another shard
};

// "HOP ms": the connection pauses, a message goes to the next shard, which waits ms on its own
// timer and sends a message home; home answers "HOPPED" and resumes. Work of one shard's
// connection executing on another, as the policy layer does with sessions.
struct EchoHop {
    eng_xmsg go;   // home -> other
    eng_xmsg back; // other -> home
    eng_timer timer; // on the other shard
    eng_conn *c;     // nullptr once the connection closed
    unsigned home;
    uint32_t ms;
};

inline void echo_reset()
{
    g_echo.opens = 0;
    g_echo.closes = 0;
    for (auto &r : g_echo.close_reason)
        r = 0;
    g_echo.lines = 0;
    g_echo.shard_starts = 0;
    g_echo.shard_stops = 0;
    g_echo.nodelay = -1;
    g_echo.open_result = 0;
    g_echo.hops_arrived = 0;
    g_echo.hops_done = 0;
}

inline void echo_resume(eng_shard *sh, eng_timer *t)
{
    (void)sh;
    EchoConn *ec = reinterpret_cast<EchoConn *>(t); // timer is the first member
    eng_conn_send(ec->c, "RESUMED\n", 8);
    eng_conn_resume(ec->c);
}

inline int echo_shard_start(eng_shard *, void *, void **app)
{
    g_echo.shard_starts++;
    *app = nullptr;
    return 0;
}

inline void echo_shard_stop(eng_shard *, void *)
{
    g_echo.shard_stops++;
}

inline int echo_on_open(void *, eng_conn *c)
{
    EchoConn *ec = static_cast<EchoConn *>(eng_conn_app(c));
    ec->c = c;
    eng_timer_init(&ec->timer, echo_resume);
    int fd = eng_test_conn_fd(c);
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0)
        g_echo.nodelay = v;
    g_echo.last_id = eng_conn_id(c);
    g_echo.opens++;
    return g_echo.open_result.load();
}

inline void echo_hop_back(eng_shard *, eng_xmsg *m)
{
    EchoHop *h = reinterpret_cast<EchoHop *>(reinterpret_cast<char *>(m) - offsetof(EchoHop, back));
    if (h->c) {
        static_cast<EchoConn *>(eng_conn_app(h->c))->hop = nullptr;
        eng_conn_send(h->c, "HOPPED\n", 7);
        eng_conn_resume(h->c);
    }
    delete h;
}

inline void echo_hop_timer(eng_shard *sh, eng_timer *t)
{
    EchoHop *h = reinterpret_cast<EchoHop *>(reinterpret_cast<char *>(t) - offsetof(EchoHop, timer));
    g_echo.hops_done++;
    eng_xshard_send(sh, h->home, &h->back);
}

inline void echo_hop_go(eng_shard *sh, eng_xmsg *m)
{
    EchoHop *h = reinterpret_cast<EchoHop *>(reinterpret_cast<char *>(m) - offsetof(EchoHop, go));
    g_echo.hops_arrived++;
    eng_timer_init(&h->timer, echo_hop_timer);
    eng_timer_arm(sh, &h->timer, h->ms);
}

// Handles one line (without its newline). False if the rest must wait (paused).
inline bool echo_line(eng_conn *c, const char *line, size_t len)
{
    EchoConn *ec = static_cast<EchoConn *>(eng_conn_app(c));
    g_echo.lines++;
    if (len > 6 && memcmp(line, "PAUSE ", 6) == 0) {
        eng_conn_pause(c);
        eng_timer_arm(eng_conn_shard(c), &ec->timer, strtoul(line + 6, nullptr, 10));
        return false;
    }
    if (len > 4 && memcmp(line, "HOP ", 4) == 0) {
        eng_shard *sh = eng_conn_shard(c);
        EchoHop *h = new EchoHop{};
        h->go.fn = echo_hop_go;
        h->back.fn = echo_hop_back;
        h->c = c;
        h->home = eng_shard_index(sh);
        h->ms = uint32_t(strtoul(line + 4, nullptr, 10));
        ec->hop = h;
        eng_conn_pause(c);
        eng_xshard_send(sh, (h->home + 1) % eng_shard_count(sh), &h->go);
        return false;
    }
    if (len == 5 && memcmp(line, "CLOSE", 5) == 0) {
        eng_conn_close(c);
        return false;
    }
    if (len > 4 && memcmp(line, "BIG ", 4) == 0) {
        static char big[1 << 20];
        size_t n = strtoul(line + 4, nullptr, 10);
        if (n + 1 > sizeof(big))
            n = sizeof(big) - 1;
        memset(big, 'x', n);
        big[n] = '\n';
        if (eng_conn_send(c, big, n + 1) < 0)
            eng_conn_send(c, "ENOBUFS\n", 8);
        return true;
    }
    if (len == 2 && memcmp(line, "ID", 2) == 0) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)eng_conn_id(c));
        eng_conn_send(c, buf, size_t(n));
        return true;
    }
    if (len == 3 && memcmp(line, "TAG", 3) == 0) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%u\n", eng_conn_listener_tag(c));
        eng_conn_send(c, buf, size_t(n));
        return true;
    }
    if (len == 4 && memcmp(line, "PEER", 4) == 0) {
        socklen_t plen;
        const sockaddr *sa = eng_conn_peer(c, &plen);
        char buf[200];
        eng_addr_format(sa, plen, buf, sizeof(buf) - 1);
        strcat(buf, "\n");
        eng_conn_send(c, buf, strlen(buf));
        return true;
    }
    if (len == 5 && memcmp(line, "SHARD", 5) == 0) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%u\n", eng_shard_index(eng_conn_shard(c)));
        eng_conn_send(c, buf, size_t(n));
        return true;
    }
    if (eng_conn_send(c, line, len + 1) < 0) { // with its newline
        eng_conn_close(c);                     // no buffer for the answer: give up
        return false;
    }
    return true;
}

inline size_t echo_on_bytes(void *, eng_conn *c, const char *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const char *nl = static_cast<const char *>(memchr(buf + pos, '\n', len - pos));
        if (!nl)
            break;
        size_t l = size_t(nl - (buf + pos));
        bool go_on = echo_line(c, buf + pos, l);
        pos += l + 1;
        if (!go_on)
            break;
    }
    return pos;
}

inline void echo_on_close(void *, eng_conn *c, eng_close_reason reason)
{
    g_echo.close_reason[reason]++;
    g_echo.last_closed_id = eng_conn_id(c);
    EchoConn *ec = static_cast<EchoConn *>(eng_conn_app(c));
    eng_timer_cancel(eng_conn_shard(c), &ec->timer);
    if (ec->hop)
        ec->hop->c = nullptr; // the message still comes home (or the engine ends first)
    g_echo.closes++;
}

inline const eng_app_ops echo_ops = {
    echo_shard_start, echo_shard_stop, nullptr, echo_on_open, echo_on_bytes, echo_on_close, nullptr,
    nullptr,
};

inline eng_config echo_config(eng_backend backend, unsigned shards = 1)
{
    eng_config cfg;
    eng_config_defaults(&cfg);
    cfg.shard_count = shards;
    cfg.backend = backend;
    cfg.ops = &echo_ops;
    cfg.app_conn_bytes = sizeof(EchoConn);
    cfg.limits.conns_per_shard_max = 256;
    cfg.limits.recv_buf_count = 64;
    cfg.limits.stage_bufs_per_shard = 64;
    cfg.limits.send_bufs_per_shard = 64;
    cfg.drain_timeout_ms = 2000;
    echo_reset();
    return cfg;
}

} // namespace th

#define ENG_BACKENDS GENERATE(ENG_BACKEND_URING, ENG_BACKEND_EPOLL)

#endif
