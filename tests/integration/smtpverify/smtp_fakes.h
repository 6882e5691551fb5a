// smtp_fakes.h: scripted peers for the SMTPVerify integration tests, all on 127.0.0.1.
//
// FakeSmtp: a small SMTP server written in the test. It greets, answers EHLO (advertising
// STARTTLS and SIZE or not), HELO, MAIL, RCPT and QUIT with scripted replies, and records every
// command line of every connection, so a test checks MAIL FROM, SIZE and RCPT TO exactly. In
// silent mode it accepts and never says a word (the timeout path).
//
// FakeDns: a small DNS responder on UDP. Why a fake and not nsd here: TLSA and OPENPGPKEY count
// only when the resolver validated them, which it reports with the AD bit; an authoritative
// server (nsd) never sets AD, and a validating resolver would need a whole signed DNSSEC chain.
// This responder sets AD on the names the test marks as signed, which real servers cannot be
// made to do on demand without that setup. It also records whether each query asked for AD.
#ifndef ITEST_SMTP_FAKES_H
#define ITEST_SMTP_FAKES_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace svtest
{

inline int bound_socket(int type, uint16_t *port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0)
        return -1;
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    *port = ntohs(a.sin_port);
    return fd;
}

struct SmtpScript {
    std::string greeting = "220 fake.test ESMTP";
    bool starttls = true;
    bool size = true;
    std::string ehlo = "250"; // the EHLO reply's code ("502" refuses EHLO)
    std::string mail = "250 2.1.0 Ok";
    std::string rcpt = "250 2.1.5 Ok";
    bool silent = false;
};

class FakeSmtp
{
  public:
    explicit FakeSmtp(const SmtpScript &s) : script_(s)
    {
        fd_ = bound_socket(SOCK_STREAM, &port_);
        listen(fd_, 64);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~FakeSmtp()
    {
        stop_ = true;
        acceptor_.join();
        for (auto &t : conns_)
            t.join();
        close(fd_);
    }
    FakeSmtp(const FakeSmtp &) = delete;
    FakeSmtp &operator=(const FakeSmtp &) = delete;

    uint16_t port() const
    {
        return port_;
    }
    // The command lines of each connection, without CRLF.
    std::vector<std::vector<std::string>> sessions()
    {
        std::lock_guard<std::mutex> g(mu_);
        return sessions_;
    }
    size_t connections()
    {
        std::lock_guard<std::mutex> g(mu_);
        return sessions_.size();
    }
    // Connections the client has closed.
    size_t closed()
    {
        return closed_;
    }

  private:
    void accept_loop()
    {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0)
                continue;
            int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            size_t idx;
            {
                std::lock_guard<std::mutex> g(mu_);
                idx = sessions_.size();
                sessions_.emplace_back();
            }
            conns_.emplace_back([this, c, idx] { serve(c, idx); });
        }
    }

    static void say(int c, const std::string &s)
    {
        std::string line = s + "\r\n";
        (void)!::send(c, line.data(), line.size(), MSG_NOSIGNAL);
    }

    std::string ehlo_reply() const
    {
        if (script_.ehlo != "250")
            return script_.ehlo + " not here";
        std::string r = "250-fake.test\r\n250-PIPELINING\r\n";
        if (script_.size)
            r += "250-SIZE 10240000\r\n";
        if (script_.starttls)
            r += "250-STARTTLS\r\n";
        return r + "250 8BITMIME";
    }

    void answer(int c, const std::string &line, bool *quit)
    {
        std::string verb = line.substr(0, 4);
        std::transform(verb.begin(), verb.end(), verb.begin(), ::toupper);
        if (verb == "EHLO")
            say(c, ehlo_reply());
        else if (verb == "HELO")
            say(c, "250 fake.test");
        else if (verb == "MAIL")
            say(c, script_.mail);
        else if (verb == "RCPT")
            say(c, script_.rcpt);
        else if (verb == "QUIT") {
            say(c, "221 2.0.0 Bye");
            *quit = true;
        } else
            say(c, "502 5.5.2 what");
    }

    void serve(int c, size_t idx)
    {
        if (!script_.silent)
            say(c, script_.greeting);
        std::string buf;
        bool quit = false;
        while (!stop_ && !quit) {
            pollfd p{c, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0)
                continue;
            char tmp[1024];
            ssize_t n = recv(c, tmp, sizeof tmp, 0);
            if (n <= 0) {
                closed_++;
                break;
            }
            buf.append(tmp, size_t(n));
            size_t nl;
            while ((nl = buf.find('\n')) != std::string::npos) {
                std::string line = buf.substr(0, nl);
                buf.erase(0, nl + 1);
                if (!line.empty() && line.back() == '\r')
                    line.pop_back();
                {
                    std::lock_guard<std::mutex> g(mu_);
                    sessions_[idx].push_back(line);
                }
                if (!script_.silent)
                    answer(c, line, &quit);
            }
        }
        close(c);
    }

    SmtpScript script_;
    int fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> closed_{0};
    std::thread acceptor_;
    std::vector<std::thread> conns_;
    std::mutex mu_;
    std::vector<std::vector<std::string>> sessions_;
};

// DNS wire helpers.
inline std::string wire_name(const std::string &name)
{
    std::string w;
    size_t pos = 0;
    while (pos < name.size()) {
        size_t dot = name.find('.', pos);
        if (dot == std::string::npos)
            dot = name.size();
        w += char(dot - pos);
        w += name.substr(pos, dot - pos);
        pos = dot + 1;
    }
    return w + '\0';
}
inline std::string rdata_a(const char *ip)
{
    in_addr a{};
    inet_pton(AF_INET, ip, &a);
    return std::string(reinterpret_cast<const char *>(&a), 4);
}
inline std::string rdata_mx(uint16_t pref, const std::string &host)
{
    return std::string{char(pref >> 8), char(pref & 0xFF)} + wire_name(host);
}

class FakeDns
{
  public:
    FakeDns()
    {
        fd_ = bound_socket(SOCK_DGRAM, &port_);
        thread_ = std::thread([this] { loop(); });
    }
    ~FakeDns()
    {
        stop_ = true;
        thread_.join();
        close(fd_);
    }
    FakeDns(const FakeDns &) = delete;
    FakeDns &operator=(const FakeDns &) = delete;

    std::string servers() const
    {
        return "127.0.0.1:" + std::to_string(port_);
    }
    // Before the first query: a record; ad marks every answer for this name and type signed.
    void add(const std::string &name, uint16_t type, const std::string &rdata, bool ad)
    {
        std::lock_guard<std::mutex> g(mu_);
        rrs_[{name, type}].push_back(rdata);
        ad_[{name, type}] = ad;
    }
    // (name, type, the query had AD set), in arrival order.
    std::vector<std::tuple<std::string, uint16_t, bool>> queries()
    {
        std::lock_guard<std::mutex> g(mu_);
        return queries_;
    }

  private:
    void loop()
    {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0)
                continue;
            unsigned char q[512];
            sockaddr_in from{};
            socklen_t flen = sizeof from;
            ssize_t n = recvfrom(fd_, q, sizeof q, 0, reinterpret_cast<sockaddr *>(&from), &flen);
            if (n < 17)
                continue;
            std::string reply = answer(q, size_t(n));
            if (!reply.empty())
                sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr *>(&from),
                       flen);
        }
    }

    std::string answer(const unsigned char *q, size_t n)
    {
        size_t off = 12;
        std::string name;
        while (off < n && q[off] != 0) {
            size_t l = q[off];
            if (off + 1 + l > n)
                return "";
            if (!name.empty())
                name += '.';
            for (size_t i = 0; i < l; i++)
                name += char(tolower(q[off + 1 + i]));
            off += 1 + l;
        }
        if (off + 5 > n)
            return "";
        uint16_t type = uint16_t(q[off + 1] << 8 | q[off + 2]);
        size_t qend = off + 5;
        std::lock_guard<std::mutex> g(mu_);
        queries_.emplace_back(name, type, (q[3] & 0x20) != 0);
        auto it = rrs_.find({name, type});
        bool exists = false;
        for (auto &kv : rrs_)
            exists = exists || kv.first.first == name;
        bool ad = it != rrs_.end() && ad_[{name, type}];
        std::string r(reinterpret_cast<const char *>(q), qend);
        r[2] = char(0x84 | (q[2] & 0x01));                      // QR, AA, RD as asked
        r[3] = char(0x80 | (ad ? 0x20 : 0) | (exists ? 0 : 3)); // RA, AD, NOERROR/NXDOMAIN
        size_t count = it == rrs_.end() ? 0 : it->second.size();
        r[6] = 0;
        r[7] = char(count);
        r[8] = r[9] = r[10] = r[11] = 0;
        for (size_t i = 0; i < count; i++) {
            const std::string &rd = it->second[i];
            r +=
                std::string{char(0xC0), 12, char(type >> 8),      char(type & 0xFF),     0, 1, 0, 0,
                            0,          60, char(rd.size() >> 8), char(rd.size() & 0xFF)};
            r += rd;
        }
        return r;
    }

    int fd_ = -1;
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mu_;
    std::map<std::pair<std::string, uint16_t>, std::vector<std::string>> rrs_;
    std::map<std::pair<std::string, uint16_t>, bool> ad_;
    std::vector<std::tuple<std::string, uint16_t, bool>> queries_;
};

} // namespace svtest

#endif
