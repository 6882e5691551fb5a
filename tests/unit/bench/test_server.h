// test_server.h: a tiny policy server for the bench tests (ringpolicyd-client and
// ringpolicyd-load run against it). One thread, poll over every connection, on 127.0.0.1 with a
// kernel-chosen port or on a Unix socket in a fresh temporary directory. reply_fn maps each
// request to the raw reply bytes: "" closes the connection without a reply, test_server_hang
// sends nothing and leaves the connection open. close_after closes a connection after that
// many replies (like mtpolicyd's max_keepalive). Requests are recorded with their connection.
#ifndef BENCH_TEST_SERVER_H
#define BENCH_TEST_SERVER_H

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *const test_server_hang = "<hang>";

struct test_server_request {
    int conn_idx;
    std::string request;
};

class test_server
{
  public:
    std::function<std::string(const std::string &)> reply_fn = [](const std::string &) {
        return std::string("action=DUNNO\n\n");
    };
    int close_after = 0;

    explicit test_server(bool unix_socket)
    {
        if (unix_socket) {
            char tmpl[] = "/tmp/rpd-bench-test-XXXXXX";
            REQUIRE(mkdtemp(tmpl) != nullptr);
            dir_ = tmpl;
            path_ = dir_ + "/policy.sock";
            listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un sun{};
            sun.sun_family = AF_UNIX;
            std::strncpy(sun.sun_path, path_.c_str(), sizeof(sun.sun_path) - 1);
            REQUIRE(bind(listen_fd_, (sockaddr *)&sun, sizeof(sun)) == 0);
        } else {
            listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            REQUIRE(bind(listen_fd_, (sockaddr *)&sin, sizeof(sin)) == 0);
            socklen_t len = sizeof(sin);
            REQUIRE(getsockname(listen_fd_, (sockaddr *)&sin, &len) == 0);
            port_ = ntohs(sin.sin_port);
        }
        REQUIRE(listen(listen_fd_, 128) == 0);
        REQUIRE(pipe2(stop_pipe_, O_CLOEXEC) == 0);
    }

    ~test_server()
    {
        stop();
        close(listen_fd_);
        close(stop_pipe_[0]);
        close(stop_pipe_[1]);
        if (!path_.empty()) {
            unlink(path_.c_str());
            rmdir(dir_.c_str());
        }
    }

    void start()
    {
        thread_ = std::thread([this] { run(); });
    }

    void stop()
    {
        if (!thread_.joinable())
            return;
        char c = 'x';
        (void)!write(stop_pipe_[1], &c, 1);
        thread_.join();
        for (auto &kv : conns_)
            close(kv.first);
        conns_.clear();
    }

    std::string address() const
    {
        return path_.empty() ? "127.0.0.1:" + std::to_string(port_) : path_;
    }
    const std::string &path() const
    {
        return path_;
    }

    std::vector<test_server_request> requests()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return requests_;
    }
    int connections() const
    {
        return conn_count_.load();
    }

  private:
    struct conn {
        int idx;
        int served;
        bool hanging;
        std::string buf;
    };
    int listen_fd_ = -1;
    int stop_pipe_[2] = {-1, -1};
    int port_ = 0;
    std::string dir_, path_;
    std::thread thread_;
    std::mutex mu_;
    std::vector<test_server_request> requests_;
    std::atomic<int> conn_count_{0};
    std::map<int, conn> conns_; // only touched by the server thread (and stop(), after join)

    void run()
    {
        for (;;) {
            std::vector<pollfd> pfds = {{stop_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
            for (auto &kv : conns_)
                pfds.push_back({kv.first, POLLIN, 0});
            if (poll(pfds.data(), pfds.size(), -1) < 0 && errno == EINTR)
                continue;
            if (pfds[0].revents)
                return;
            if (pfds[1].revents) {
                int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd >= 0)
                    conns_[fd] = conn{conn_count_++, 0, false, {}};
            }
            for (size_t i = 2; i < pfds.size(); i++)
                if (pfds[i].revents && !readable(pfds[i].fd, conns_[pfds[i].fd])) {
                    close(pfds[i].fd);
                    conns_.erase(pfds[i].fd);
                }
        }
    }

    // Returns false when the connection is to be closed.
    bool readable(int fd, conn &c)
    {
        char tmp[8192];
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            return false;
        if (c.hanging)
            return true;
        c.buf.append(tmp, (size_t)n);
        size_t end;
        while ((end = c.buf.find("\n\n")) != std::string::npos) {
            std::string request = c.buf.substr(0, end + 2);
            c.buf.erase(0, end + 2);
            {
                std::lock_guard<std::mutex> lock(mu_);
                requests_.push_back({c.idx, request});
            }
            std::string reply = reply_fn(request);
            if (reply == test_server_hang) {
                c.hanging = true;
                return true;
            }
            if (reply.empty())
                return false;
            if (send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) != (ssize_t)reply.size())
                return false;
            if (close_after && ++c.served == close_after)
                return false;
        }
        return true;
    }
};

#endif
