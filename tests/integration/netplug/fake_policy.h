// fake_policy.h: a scripted policy server for the Proxy tests: reads requests up to their empty
// line and answers by the request's `recipient`: "crlf" -> "action=reject crlf\r\n\r\n",
// "twice" -> two action lines (the last must win), "noaction" -> "foo=bar\n\n", "noequals" ->
// "garbage\n\n", "empty" -> "action=\n\n", "close" -> closes without a reply, "extra" ->
// "action=dunno\nother=1\n\n", anything else -> "action=reject fake\n\n". One thread per
// connection, every wait bounded, joined in the destructor.
#ifndef ITEST_FAKE_POLICY_H
#define ITEST_FAKE_POLICY_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

class FakePolicy
{
  public:
    FakePolicy()
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
        acceptor_ = std::thread([this] {
            while (!stop_) {
                pollfd p{lfd_, POLLIN, 0};
                if (poll(&p, 1, 20) <= 0)
                    continue;
                int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                std::lock_guard<std::mutex> lk(mu_);
                conns_.emplace_back([this, fd] { serve(fd); });
            }
        });
    }
    ~FakePolicy()
    {
        stop_ = true;
        acceptor_.join();
        std::lock_guard<std::mutex> lk(mu_);
        for (auto &t : conns_)
            t.join();
        close(lfd_);
    }
    int port() const { return port_; }

  private:
    static std::string reply_for(const std::string &rcpt)
    {
        if (rcpt == "crlf")
            return "action=reject crlf\r\n\r\n";
        if (rcpt == "twice")
            return "action=reject first\naction=reject second\n\n";
        if (rcpt == "noaction")
            return "foo=bar\n\n";
        if (rcpt == "noequals")
            return "garbage\n\n";
        if (rcpt == "empty")
            return "action=\n\n";
        if (rcpt == "extra")
            return "action=dunno\nother=1\n\n";
        return "action=reject fake\n\n";
    }
    void serve(int fd)
    {
        std::string buf;
        char chunk[4096];
        while (!stop_) {
            size_t end = buf.find("\n\n");
            if (end != std::string::npos) {
                std::string req = buf.substr(0, end + 1);
                buf.erase(0, end + 2);
                size_t p = req.find("\nrecipient=");
                std::string rcpt = p == std::string::npos ? "" : req.substr(p + 11);
                rcpt = rcpt.substr(0, rcpt.find('\n'));
                if (rcpt == "close")
                    break;
                std::string r = reply_for(rcpt);
                if (send(fd, r.data(), r.size(), MSG_NOSIGNAL) < 0)
                    break;
                continue;
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

    int lfd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread acceptor_;
    std::mutex mu_;
    std::vector<std::thread> conns_;
};

#endif
