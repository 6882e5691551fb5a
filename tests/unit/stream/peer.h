// peer.h: a scripted loopback server for the stream client's tests (one thread per
// connection, every wait bounded, everything joined in the destructor). Modes:
//   ECHO                   answer each line with itself, keep the connection
//   ECHO_SLOW              the same after 30 ms per line
//   SLOW_READER_TRICKLE    small receive buffer, read slowly; answer "got N\n" (N = line
//                          length with its LF) one byte every 5 ms
//   CLOSE_AFTER_READ       read one line, close without answering
//   SILENT                 read and discard everything, never answer
//   ONE_REPLY_THEN_CLOSE   answer the first line, then close
#ifndef STREAM_TEST_PEER_H
#define STREAM_TEST_PEER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

class Peer
{
  public:
    enum Mode { ECHO, ECHO_SLOW, SLOW_READER_TRICKLE, CLOSE_AFTER_READ, SILENT,
                ONE_REPLY_THEN_CLOSE };

    explicit Peer(Mode mode, int port = 0, const std::string &unix_path = "")
        : mode_(mode), path_(unix_path)
    {
        if (!path_.empty()) {
            unlink(path_.c_str());
            lfd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un un{};
            un.sun_family = AF_UNIX;
            snprintf(un.sun_path, sizeof(un.sun_path), "%s", path_.c_str());
            REQUIRE(bind(lfd_, reinterpret_cast<sockaddr *>(&un), sizeof(un)) == 0);
        } else {
            lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int one = 1;
            setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (mode == SLOW_READER_TRICKLE) {
                int small = 4096;
                setsockopt(lfd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
            }
            sockaddr_in in{};
            in.sin_family = AF_INET;
            in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            in.sin_port = htons(static_cast<uint16_t>(port));
            REQUIRE(bind(lfd_, reinterpret_cast<sockaddr *>(&in), sizeof(in)) == 0);
            socklen_t len = sizeof(in);
            getsockname(lfd_, reinterpret_cast<sockaddr *>(&in), &len);
            port_ = ntohs(in.sin_port);
        }
        REQUIRE(listen(lfd_, 16) == 0);
        acceptor_ = std::thread([this] { accept_loop(); });
    }

    ~Peer()
    {
        stop_ = true;
        acceptor_.join();
        std::lock_guard<std::mutex> lk(mu_);
        for (auto &t : conns_)
            t.join();
        close(lfd_);
        if (!path_.empty())
            unlink(path_.c_str());
    }

    std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
    int accepted() const { return accepted_; }
    int closed() const { return closed_; }

    // A loopback port nothing listens on (bound, then released).
    static int free_port()
    {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&in), sizeof(in)) == 0);
        socklen_t len = sizeof(in);
        getsockname(fd, reinterpret_cast<sockaddr *>(&in), &len);
        close(fd);
        return ntohs(in.sin_port);
    }

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

    // Waits for input at most 20 ms at a time; false once stopping.
    bool wait_in(int fd)
    {
        while (!stop_) {
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 20) > 0)
                return true;
        }
        return false;
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

    void serve(int fd)
    {
        std::string buf;
        char chunk[4096];
        int lines = 0;
        bool open = true;
        while (open && wait_in(fd)) {
            if (mode_ == SLOW_READER_TRICKLE)
                std::this_thread::sleep_for(std::chrono::microseconds(300));
            ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
            if (n <= 0) {
                closed_++;
                break;
            }
            if (mode_ == SILENT)
                continue;
            buf.append(chunk, static_cast<size_t>(n));
            size_t nl;
            while (open && (nl = buf.find('\n')) != std::string::npos) {
                std::string line = buf.substr(0, nl + 1);
                buf.erase(0, nl + 1);
                open = answer(fd, line, ++lines);
            }
        }
        close(fd);
    }

    // Answers one line; false when the connection is to be closed.
    bool answer(int fd, const std::string &line, int nth)
    {
        switch (mode_) {
        case ECHO_SLOW:
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            send_all(fd, line);
            return true;
        case SLOW_READER_TRICKLE: {
            std::string r = "got " + std::to_string(line.size()) + "\n";
            for (char c : r) {
                send_all(fd, std::string(1, c));
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            return true;
        }
        case CLOSE_AFTER_READ:
            return false;
        case ONE_REPLY_THEN_CLOSE:
            send_all(fd, line);
            return nth < 1;
        default:
            send_all(fd, line);
            return true;
        }
    }

    Mode mode_;
    std::string path_;
    int lfd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0}, closed_{0};
    std::thread acceptor_;
    std::mutex mu_;
    std::vector<std::thread> conns_;
};

#endif
