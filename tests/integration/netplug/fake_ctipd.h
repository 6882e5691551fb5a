// fake_ctipd.h: a loopback HTTP server imitating ctipd for the CtIpRep tests (there is no ctipd
// package; the replies follow what CtIpRep.pm parses). One thread per connection, every wait
// bounded, all joined in the destructor. Each request (a POST with a Content-Length body) is
// recorded; the reply depends on the body's `x-ctch-ip:` address:
//   192.0.2.1  200, Content-Length, keep-alive: permfail, refid REF-1
//   192.0.2.2  200, chunked (in two chunks): tempfail, refid REF-2
//   192.0.2.3  HTTP/1.0 200, no length, closed after the body: accept
//   192.0.2.4  500 Internal Server Error
//   192.0.2.5  200 without an action line
//   192.0.2.6  200 with the verdict "weird"
//   192.0.2.7  200 permfail without refid, and a line `x-ctch-dm-action:no-cr` (no CR) first
//   192.0.2.8  answers after 3 s
//   anything else: 200 accept
#ifndef ITEST_FAKE_CTIPD_H
#define ITEST_FAKE_CTIPD_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

class FakeCtipd
{
  public:
    struct Seen {
        std::string head, body;
    };

    FakeCtipd()
    {
        lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(lfd_, reinterpret_cast<sockaddr *>(&in), sizeof(in)) == 0);
        socklen_t len = sizeof(in);
        getsockname(lfd_, reinterpret_cast<sockaddr *>(&in), &len);
        port_ = ntohs(in.sin_port);
        REQUIRE(listen(lfd_, 64) == 0);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~FakeCtipd()
    {
        stop_ = true;
        acceptor_.join();
        std::lock_guard<std::mutex> lk(mu_);
        for (auto &t : conns_)
            t.join();
        close(lfd_);
    }
    int port() const { return port_; }
    std::string url(const std::string &path = "/ctipd/iprep") const
    {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    std::vector<Seen> seen()
    {
        std::lock_guard<std::mutex> lk(mu_);
        return seen_;
    }
    size_t count()
    {
        std::lock_guard<std::mutex> lk(mu_);
        return seen_.size();
    }
    int accepted() const { return accepted_; }

  private:
    void accept_loop()
    {
        while (!stop_) {
            pollfd p{lfd_, POLLIN, 0};
            if (poll(&p, 1, 20) <= 0)
                continue;
            int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            accepted_++;
            std::lock_guard<std::mutex> lk(mu_);
            conns_.emplace_back([this, fd] { serve(fd); });
        }
    }

    static void send_all(int fd, const std::string &s)
    {
        size_t off = 0;
        while (off < s.size()) {
            ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                return;
            off += static_cast<size_t>(n);
        }
    }

    static std::string header(const std::string &head, const std::string &name)
    {
        std::string lower;
        for (char c : head)
            lower += static_cast<char>(tolower(static_cast<unsigned char>(c)));
        size_t p = lower.find("\n" + name + ":");
        if (p == std::string::npos)
            return "";
        size_t s = p + name.size() + 2, e = head.find('\r', s);
        while (s < e && head[s] == ' ')
            s++;
        return head.substr(s, e - s);
    }

    void serve(int fd)
    {
        std::string buf;
        char chunk[4096];
        bool open = true;
        while (open && !stop_) {
            size_t he = buf.find("\r\n\r\n");
            if (he != std::string::npos) {
                std::string head = buf.substr(0, he + 4);
                size_t cl = std::stoul("0" + header(head, "content-length"));
                if (buf.size() >= he + 4 + cl) {
                    std::string body = buf.substr(he + 4, cl);
                    buf.erase(0, he + 4 + cl);
                    {
                        std::lock_guard<std::mutex> lk(mu_);
                        seen_.push_back({head, body});
                    }
                    open = answer(fd, body);
                    continue;
                }
            }
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 20) <= 0)
                continue;
            ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
            if (n <= 0)
                break;
            buf.append(chunk, static_cast<size_t>(n));
        }
        close(fd);
    }

    static std::string ok(const std::string &body)
    {
        return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
    }

    // Sends the reply; false when the connection is to be closed.
    bool answer(int fd, const std::string &body)
    {
        size_t p = body.find("x-ctch-ip: ");
        std::string ip = p == std::string::npos ? "" : body.substr(p + 11);
        ip = ip.substr(0, ip.find('\r'));
        if (ip == "192.0.2.1") {
            send_all(fd, ok("x-ctch-dm-action:permfail\r\nx-ctch-refid:REF-1\r\n"));
        } else if (ip == "192.0.2.2") {
            std::string a = "x-ctch-refid:REF-2\r\nx-ctch-dm-", b = "action:tempfail\r\n";
            char sa[16], sb[16];
            snprintf(sa, sizeof(sa), "%zx", a.size());
            snprintf(sb, sizeof(sb), "%zX", b.size());
            send_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                             std::string(sa) + "\r\n" + a + "\r\n" + std::string(sb) +
                             ";ext=1\r\n" + b + "\r\n0\r\n\r\n");
        } else if (ip == "192.0.2.3") {
            send_all(fd, "HTTP/1.0 200 OK\r\n\r\nx-ctch-dm-action:accept\r\n");
            return false;
        } else if (ip == "192.0.2.4") {
            send_all(fd, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror");
        } else if (ip == "192.0.2.5") {
            send_all(fd, ok("x-ctch-something:else\r\n"));
        } else if (ip == "192.0.2.6") {
            send_all(fd, ok("x-ctch-dm-action:weird\r\nx-ctch-refid:R6\r\n"));
        } else if (ip == "192.0.2.7") {
            send_all(fd, ok("x-ctch-dm-action:no-cr\nx-ctch-dm-action:permfail\r\n"));
        } else if (ip == "192.0.2.8") {
            for (int i = 0; i < 300 && !stop_; i++)
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            send_all(fd, ok("x-ctch-dm-action:permfail\r\nx-ctch-refid:LATE\r\n"));
        } else {
            send_all(fd, ok("x-ctch-dm-action:accept\r\nx-ctch-refid:OK\r\n"));
        }
        return true;
    }

    int lfd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::thread acceptor_;
    std::mutex mu_;
    std::vector<std::thread> conns_;
    std::vector<Seen> seen_;
};

#endif
