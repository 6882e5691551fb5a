// client.cpp: see harness.h. Loopback addresses and ports, the policy client (Conn) and the
// differential rig (DiffRig).
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>

namespace itest
{

/* ---------------------------------------------------------------------------------------------
 * Ports and addresses
 */

namespace
{

/* Fills ss from an endpoint; returns the length or 0. */
socklen_t make_sockaddr(const Endpoint &ep, struct sockaddr_storage *ss)
{
    std::memset(ss, 0, sizeof *ss);
    if (!ep.unix_path.empty()) {
        auto *un = reinterpret_cast<struct sockaddr_un *>(ss);
        if (ep.unix_path.size() >= sizeof un->sun_path)
            return 0;
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, ep.unix_path.c_str(), ep.unix_path.size() + 1);
        return sizeof(struct sockaddr_un);
    }
    auto *in4 = reinterpret_cast<struct sockaddr_in *>(ss);
    if (inet_pton(AF_INET, ep.host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(ep.port);
        return sizeof *in4;
    }
    auto *in6 = reinterpret_cast<struct sockaddr_in6 *>(ss);
    if (inet_pton(AF_INET6, ep.host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(ep.port);
        return sizeof *in6;
    }
    return 0;
}

/* Loopback only: the harness refuses to generate traffic to anything else. */
bool is_loopback(const Endpoint &ep)
{
    if (!ep.unix_path.empty())
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, ep.host.c_str(), &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    return inet_pton(AF_INET6, ep.host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

} // namespace

namespace {

/* 0 when port can be bound on the loopback address now. */
bool port_bindable(uint16_t port, bool v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_storage ss;
    socklen_t len = make_sockaddr(Endpoint::tcp(port, v6 ? "::1" : "127.0.0.1"), &ss);
    bool ok = bind(fd, reinterpret_cast<struct sockaddr *>(&ss), len) == 0;
    ::close(fd);
    return ok;
}

/* The lowest port the kernel hands out for outgoing connections (32768 by default). */
uint16_t ephemeral_low()
{
    unsigned lo = 0, hi = 0;
    FILE *f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (std::fscanf(f, "%u %u", &lo, &hi) != 2)
            lo = 0;
        std::fclose(f);
    }
    return lo >= 12000 && lo <= 65535 ? static_cast<uint16_t>(lo) : 32768;
}

} // namespace

/* Ports come from below the ephemeral range, so that the many outgoing connections of
 * parallel tests (which take ephemeral ports) cannot grab a port between this check and the
 * daemon's bind; chosen at random (parallel test processes rarely meet) and never twice in one
 * process. */
uint16_t free_tcp_port(bool v6)
{
    static std::set<uint16_t> given;
    static std::mt19937 rng(static_cast<unsigned>(getpid()) * 2654435761u ^
                            static_cast<unsigned>(now_ms()));
    const uint16_t lo = 10000, hi = static_cast<uint16_t>(ephemeral_low() - 1);
    for (int attempt = 0; attempt < 1000; attempt++) {
        uint16_t port = static_cast<uint16_t>(lo + rng() % (hi - lo + 1u));
        if (given.count(port) || !port_bindable(port, v6))
            continue;
        given.insert(port);
        return port;
    }
    return 0;
}

bool ipv6_loopback_usable()
{
    return free_tcp_port(true) != 0;
}

Endpoint Endpoint::tcp(uint16_t port, const std::string &host)
{
    Endpoint e;
    e.host = host;
    e.port = port;
    return e;
}

Endpoint Endpoint::unix_socket(const std::string &path)
{
    Endpoint e;
    e.unix_path = path;
    return e;
}

std::string Endpoint::str() const
{
    if (!unix_path.empty())
        return unix_path;
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

/* ---------------------------------------------------------------------------------------------
 * Policy client
 */

const char *reply_status_name(Reply::Status s)
{
    switch (s) {
    case Reply::OK:
        return "OK";
    case Reply::CLOSED:
        return "CLOSED (no reply)";
    case Reply::TIMEOUT:
        return "TIMEOUT (no reply)";
    case Reply::ERROR:
        return "ERROR";
    }
    return "?";
}

std::string encode_request(const std::vector<std::string> &attr_lines)
{
    std::string s;
    for (auto &l : attr_lines) {
        s += l;
        s += '\n';
    }
    s += '\n';
    return s;
}

std::vector<std::string>
postfix_request(const std::vector<std::pair<std::string, std::string>> &overrides)
{
    std::vector<std::pair<std::string, std::string>> a = {
        {"request", "smtpd_access_policy"},
        {"protocol_state", "RCPT"},
        {"protocol_name", "ESMTP"},
        {"client_address", "192.0.2.10"},
        {"client_name", "mail.example.org"},
        {"client_port", "50123"},
        {"reverse_client_name", "mail.example.org"},
        {"server_address", "127.0.0.1"},
        {"server_port", "25"},
        {"helo_name", "mail.example.org"},
        {"sender", "alice@example.org"},
        {"recipient", "bob@example.com"},
        {"recipient_count", "0"},
        {"queue_id", ""},
        {"instance", "5f3c.6571a2b3.1d2e3.0"},
        {"size", "0"},
        {"etrn_domain", ""},
        {"stress", ""},
        {"sasl_method", ""},
        {"sasl_username", ""},
        {"sasl_sender", ""},
        {"ccert_subject", ""},
        {"ccert_issuer", ""},
        {"ccert_fingerprint", ""},
        {"ccert_pubkey_fingerprint", ""},
        {"encryption_protocol", ""},
        {"encryption_cipher", ""},
        {"encryption_keysize", "0"},
        {"policy_context", ""},
    };
    for (auto &o : overrides) {
        bool found = false;
        for (auto it = a.begin(); it != a.end(); ++it) {
            if (it->first != o.first)
                continue;
            found = true;
            if (o.second == "\x7f")
                a.erase(it);
            else
                it->second = o.second;
            break;
        }
        if (!found && o.second != "\x7f")
            a.emplace_back(o.first, o.second);
    }
    std::vector<std::string> out;
    for (auto &kv : a)
        out.push_back(kv.first + "=" + kv.second);
    return out;
}

Conn::Conn(const Endpoint &ep, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len = make_sockaddr(ep, &ss);
    if (len == 0 || !is_loopback(ep)) {
        error_ = "not a loopback endpoint: " + ep.str();
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_ = std::string("socket: ") + std::strerror(errno);
        return;
    }
    if (ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = ::connect(fd, reinterpret_cast<struct sockaddr *>(&ss), len);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int soerr = ETIMEDOUT;
        if (poll(&p, 1, timeout_ms) == 1) {
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        }
        rc = soerr == 0 ? 0 : -1;
        errno = soerr;
    }
    if (rc != 0) {
        error_ = "connect " + ep.str() + ": " + std::strerror(errno);
        ::close(fd);
        return;
    }
    fd_ = fd;
}

Conn::~Conn()
{
    close();
}

Conn::Conn(Conn &&o) noexcept
    : fd_(o.fd_), buf_(std::move(o.buf_)), error_(std::move(o.error_)), eof_(o.eof_)
{
    o.fd_ = -1;
}

Conn &Conn::operator=(Conn &&o) noexcept
{
    if (this != &o) {
        close();
        fd_ = o.fd_;
        buf_ = std::move(o.buf_);
        error_ = std::move(o.error_);
        eof_ = o.eof_;
        o.fd_ = -1;
    }
    return *this;
}

void Conn::close()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

void Conn::shutdown_write()
{
    if (fd_ >= 0)
        ::shutdown(fd_, SHUT_WR);
}

bool Conn::send(const std::string &bytes)
{
    size_t off = 0;
    int64_t deadline = now_ms() + 10000;
    while (fd_ >= 0 && off < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR) && now_ms() < deadline) {
            struct pollfd p = {fd_, POLLOUT, 0};
            poll(&p, 1, 100);
            continue;
        }
        error_ = std::string("send: ") + std::strerror(errno);
        return false;
    }
    return fd_ >= 0;
}

int Conn::fill(int timeout_ms)
{
    if (fd_ < 0)
        return -2;
    if (eof_)
        return 0;
    struct pollfd p = {fd_, POLLIN, 0};
    int pr = poll(&p, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr == 0)
        return -1;
    if (pr < 0)
        return errno == EINTR ? -1 : -2;
    char buf[8192];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
        buf_.append(buf, static_cast<size_t>(n));
        return 1;
    }
    if (n == 0 || errno == ECONNRESET || errno == EPIPE) {
        eof_ = true;
        return 0;
    }
    if (errno == EAGAIN || errno == EINTR)
        return -1;
    error_ = std::string("recv: ") + std::strerror(errno);
    return -2;
}

Reply Conn::read_reply(int timeout_ms)
{
    Reply r;
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        /* A reply ends at its first empty line; a lone "\n" first is an empty reply. */
        size_t len = std::string::npos;
        if (!buf_.empty() && buf_[0] == '\n')
            len = 1;
        else if (buf_.find("\n\n") != std::string::npos)
            len = buf_.find("\n\n") + 2;
        if (len != std::string::npos) {
            r.raw = buf_.substr(0, len);
            buf_.erase(0, len);
            for (auto &line : split_lines(r.raw))
                if (line.compare(0, 7, "action=") == 0)
                    r.actions.push_back(line.substr(7));
            r.status = Reply::OK;
            return r;
        }
        int64_t left = deadline - now_ms();
        int f = left > 0 ? fill(static_cast<int>(left)) : -1;
        if (f == 1)
            continue;
        r.raw = buf_;
        r.status = f == 0 ? Reply::CLOSED : f == -1 ? Reply::TIMEOUT : Reply::ERROR;
        return r;
    }
}

Reply Conn::request(const std::vector<std::string> &attr_lines, int timeout_ms)
{
    if (!send(encode_request(attr_lines))) {
        Reply r;
        r.status = eof_ ? Reply::CLOSED : Reply::ERROR;
        return r;
    }
    return read_reply(timeout_ms);
}

bool Conn::reusable()
{
    if (fd_ < 0 || eof_ || !buf_.empty())
        return false;
    struct pollfd p = {fd_, POLLIN, 0};
    if (poll(&p, 1, 0) == 0)
        return true;
    char ch;
    ssize_t n = ::recv(fd_, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK); /* 0: EOF; >0: stray bytes */
}

bool Conn::wait_closed(int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        int f = fill(left > 0 ? static_cast<int>(left) : 0);
        if (f == 0)
            return true;
        if (f == 1)
            continue;
        if (f == -2 || left <= 0)
            return false;
    }
}

Reply ask(const Endpoint &ep, const std::vector<std::string> &attr_lines, int timeout_ms)
{
    Conn c(ep, timeout_ms);
    if (!c.ok()) {
        Reply r;
        r.status = Reply::ERROR;
        r.raw = c.error();
        return r;
    }
    return c.request(attr_lines, timeout_ms);
}

/* ---------------------------------------------------------------------------------------------
 * Differential rig
 */

DiffRig::DiffRig(std::vector<VhostSpec> vhosts, std::string globals,
                 std::map<std::string, std::string> files)
    : vhosts_(std::move(vhosts)), globals_(std::move(globals)), files_(std::move(files))
{
}

std::string DiffRig::config_text(Impl impl) const
{
    const auto &ports = impl == Impl::Perl ? perl_ports_ : ring_ports_;
    std::string port_list;
    for (auto &v : vhosts_)
        if (v.key.empty())
            port_list += (port_list.empty() ? "" : ",") + std::string("127.0.0.1:") +
                         std::to_string(ports.at(v.name));
    std::string c = "# written by tests/integration/harness.cpp (DiffRig)\n";
    c += "port = \"" + port_list + "\"\n";
    c += globals_;
    if (!globals_.empty() && globals_.back() != '\n')
        c += "\n";
    for (auto &v : vhosts_) {
        c += "<VirtualHost " + (v.key.empty() ? std::to_string(ports.at(v.name)) : v.key) + ">\n";
        c += "  name = \"" + v.name + "\"\n";
        c += v.body;
        if (!v.body.empty() && v.body.back() != '\n')
            c += "\n";
        c += "</VirtualHost>\n";
    }
    return c;
}

bool DiffRig::start(bool with_ring)
{
    need_perl();
    bool ring = with_ring && is_executable(ringpolicyd_bin());
    if (with_ring && !ring)
        note_partial_skip("ringpolicyd is not built (" + ringpolicyd_bin() +
                          "): only the Perl side and the expectations were checked");
    std::string first;
    for (auto &v : vhosts_) {
        if (!v.key.empty())
            continue;
        perl_ports_[v.name] = free_tcp_port();
        ring_ports_[v.name] = free_tcp_port();
        if (first.empty())
            first = v.name;
    }
    if (first.empty()) {
        error_ = "DiffRig: no virtual host with a port of its own";
        return false;
    }
    struct Side {
        Impl impl;
        std::unique_ptr<Daemon> *slot;
    } sides[] = {{Impl::Perl, &perl_}, {Impl::Ring, &ring_}};
    for (auto &s : sides) {
        if (s.impl == Impl::Ring && !ring)
            continue;
        s.slot->reset(new Daemon(s.impl, config_text(s.impl)));
        for (auto &f : files_)
            (*s.slot)->write_file(f.first, f.second);
        (*s.slot)->set_ready(endpoint(s.impl, first));
        if (!(*s.slot)->start()) {
            error_ = (*s.slot)->error() + "\nconfig:\n" + config_text(s.impl);
            return false;
        }
    }
    return true;
}

Daemon &DiffRig::daemon(Impl impl)
{
    return impl == Impl::Perl ? *perl_ : *ring_;
}

Endpoint DiffRig::endpoint(Impl impl, const std::string &vhost_name) const
{
    const auto &ports = impl == Impl::Perl ? perl_ports_ : ring_ports_;
    auto it = ports.find(vhost_name);
    return Endpoint::tcp(it == ports.end() ? 0 : it->second);
}

Reply DiffRig::ask(Impl impl, const std::string &vhost_name, const std::vector<std::string> &attrs,
                   int timeout_ms)
{
    Conn &c = conns_[{impl, vhost_name}];
    bool reused = c.reusable();
    if (!reused)
        c = Conn(endpoint(impl, vhost_name), timeout_ms);
    Reply r = c.request(attrs, timeout_ms);
    if (reused && r.status == Reply::CLOSED && r.raw.empty()) {
        /* closed between our check and the request: once more on a new connection */
        c = Conn(endpoint(impl, vhost_name), timeout_ms);
        r = c.request(attrs, timeout_ms);
    }
    if (!r.ok())
        c.close();
    return r;
}

} // namespace itest
