// dns_server.h: a throwaway authoritative DNS server for the DNS tests (TOOLCHAIN.md 7.4): nsd
// on 127.0.0.1 on a free port, serving the test zones below from a private temporary directory,
// and a "black hole" (a UDP socket on 127.0.0.1 that reads and drops every query) for the
// timeout paths.
//
// Zones (also used by tests/integration/dns):
//   zen.example  an IP blocklist: A + TXT with every quoting case of Net::DNS's presentation,
//                several A records, A without TXT, TXT without A, an empty TXT string, a TXT
//                that wraps past 80 columns, a UTF-8 euro sign, and a TTL of 1 s (ttl1);
//                SOA minimum 60 (negative answers: 60 s); 2001:db8::2 listed by nibbles
//   dbl.example  a domain blocklist (DBL): example.com, rdns.example.net, helo.example.org
//   rec.example  record types for the client: A/AAAA/MX/PTR/TXT/CNAME
//
// A watchdog process (a shell blocked reading a pipe this process holds) kills nsd and removes
// the directory when this process ends in any way, so a crashed test leaves nothing running.
// Without nsd: SKIP (exit 77), or FAIL when CI=1.
#ifndef RPD_TEST_DNS_SERVER_H
#define RPD_TEST_DNS_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace dnstest
{

inline bool in_ci()
{
    const char *ci = getenv("CI");
    return ci && ci[0] && strcmp(ci, "0") != 0;
}

[[noreturn]] inline void missing(const std::string &what)
{
    fprintf(stderr, "%s: %s\n", in_ci() ? "FAIL (CI=1)" : "SKIP", what.c_str());
    exit(in_ci() ? 1 : 77);
}

// A UDP socket bound to 127.0.0.1 on a free port; its port in *port.
inline int udp_bound(int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        perror("udp_bound");
        exit(1);
    }
    *port = ntohs(a.sin_port);
    return fd;
}

// A port free for both UDP and TCP on 127.0.0.1 a moment ago.
inline int free_port_udp_tcp()
{
    for (int tries = 0; tries < 50; tries++) {
        int port = 0;
        int u = udp_bound(&port);
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(uint16_t(port));
        bool ok = t >= 0 && bind(t, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0;
        close(u);
        if (t >= 0)
            close(t);
        if (ok)
            return port;
    }
    fprintf(stderr, "no free UDP+TCP port\n");
    exit(1);
}

inline const char *zen_zone()
{
    return R"Z($ORIGIN zen.example.
$TTL 300
@ IN SOA ns.zen.example. hostmaster.zen.example. 1 3600 600 86400 60
@ IN NS ns.zen.example.
ns IN A 127.0.0.1
2.0.0.127 IN A 127.0.0.2
2.0.0.127 IN TXT "Listed in test zen; see http://zen.example/?127.0.0.2"
4.0.0.127 IN A 127.0.0.4
5.0.0.127 IN A 127.0.0.5
5.0.0.127 IN A 127.0.0.6
6.0.0.127 IN A 127.0.0.10
6.0.0.127 IN TXT ""
7.0.0.127 IN A 127.0.0.3
7.0.0.127 IN TXT "two words" "one" "(paren)" "semi;colon"
8.0.0.127 IN A 127.0.0.11
8.0.0.127 IN TXT "q\"uote back\\slash tab\009 nl\010 del\127 bin\200\255 utf8 caf\195\169"
9.0.0.127 IN TXT "only txt"
10.0.0.127 IN A 127.0.0.12
10.0.0.127 IN TXT "euro \226\130\172 sign"
11.0.0.127 IN A 127.0.0.13
11.0.0.127 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" "c"
12.0.0.127 IN A 127.0.0.2
12.0.0.127 IN TXT "first record"
12.0.0.127 IN TXT "second record"
13.0.0.127 IN A 127.0.0.2
13.0.0.127 IN TXT "Latin-1 \233t\233"
ttl1 1 IN A 127.0.0.9
2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN A 127.0.0.2
2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN TXT "IPv6 listed"
)Z";
}

inline const char *dbl_zone()
{
    return R"Z($ORIGIN dbl.example.
$TTL 300
@ IN SOA ns.dbl.example. hostmaster.dbl.example. 1 3600 600 86400 60
@ IN NS ns.dbl.example.
ns IN A 127.0.0.1
example.com IN A 127.0.1.2
example.com IN TXT "https://www.example.org/query/dbl?domain=example.com"
rdns.example.net IN A 127.0.1.4
helo.example.org IN A 127.0.1.5
helo.example.org IN TXT "helo listed"
sub.listed.example IN A 127.0.1.2
)Z";
}

inline const char *rec_zone()
{
    return R"Z($ORIGIN rec.example.
$TTL 300
@ IN SOA ns.rec.example. hostmaster.rec.example. 1 3600 600 86400 120
@ IN NS ns.rec.example.
ns IN A 127.0.0.1
host IN A 192.0.2.1
host IN A 192.0.2.2
host IN AAAA 2001:db8::1
host IN TXT "v=spf1 -all"
host IN MX 10 mx1.rec.example.
host IN MX 20 mx2.rec.example.
nullmx IN MX 0 .
alias IN CNAME host.rec.example.
ptr IN PTR host.rec.example.
short 5 IN A 192.0.2.5
big IN TXT "0123456789012345678901234567890123456789012345678901234567890123456789"
)Z";
}

// A zone for DnsServer: its name (no trailing dot) and its zone file text.
struct Zone {
    std::string name, text;
};

class DnsServer
{
  public:
    // The test zones above, plus extra ones (e.g. stand-ins for public blocklists).
    explicit DnsServer(const std::vector<Zone> &extra = {})
    {
        if (access("/usr/sbin/nsd", X_OK) != 0)
            missing("nsd is not installed (apt-get install nsd)");
        char tmpl[] = "/tmp/rpd-dns-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
        std::vector<Zone> zones = {
            {"zen.example", zen_zone()}, {"dbl.example", dbl_zone()}, {"rec.example", rec_zone()}};
        zones.insert(zones.end(), extra.begin(), extra.end());
        port_ = free_port_udp_tcp();
        std::string conf = "server:\n  ip-address: 127.0.0.1@" + std::to_string(port_) +
                           "\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n"
                           "  server-count: 1\n  verbosity: 0\n  rrl-ratelimit: 0\n  zonesdir: \"" +
                           dir_ + "\"\n  zonelistfile: \"" + dir_ + "/zone.list\"\n  xfrdfile: \"" +
                           dir_ + "/xfrd.state\"\n  xfrdir: \"" + dir_ + "\"\n  pidfile: \"" +
                           dir_ + "/nsd.pid\"\n  logfile: \"" + dir_ +
                           "/nsd.log\"\nremote-control:\n  control-enable: no\n";
        for (size_t i = 0; i < zones.size(); i++) {
            std::string file = "z" + std::to_string(i) + ".zone";
            write(file, zones[i].text);
            conf += "zone:\n  name: \"" + zones[i].name + "\"\n  zonefile: \"" + file + "\"\n";
        }
        write("nsd.conf", conf);
        start();
        hole_fd_ = udp_bound(&hole_port_);
    }
    ~DnsServer()
    {
        stop();
        if (hole_fd_ >= 0)
            close(hole_fd_);
        if (watch_fd_ >= 0)
            close(watch_fd_); // the watchdog removes the directory and exits
        if (watch_pid_ > 0)
            waitpid(watch_pid_, nullptr, 0);
    }
    DnsServer(const DnsServer &) = delete;
    DnsServer &operator=(const DnsServer &) = delete;

    int port() const
    {
        return port_;
    }
    // A UDP port on 127.0.0.1 where queries go unanswered (read by nobody; the kernel buffers
    // and then drops them).
    int hole_port() const
    {
        return hole_port_;
    }
    std::string servers() const
    {
        return "127.0.0.1:" + std::to_string(port_);
    }
    std::string hole() const
    {
        return "127.0.0.1:" + std::to_string(hole_port_);
    }
    const std::string &dir() const
    {
        return dir_;
    }

    void stop()
    {
        if (pid_ > 0) {
            kill(pid_, SIGTERM);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

  private:
    void write(const std::string &name, const std::string &text)
    {
        FILE *f = fopen((dir_ + "/" + name).c_str(), "w");
        if (!f || fwrite(text.data(), 1, text.size(), f) != text.size() || fclose(f) != 0) {
            perror(name.c_str());
            exit(1);
        }
    }

    // True when nsd answers a query for the SOA of zen.example on the port.
    bool answers() const
    {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(uint16_t(port_));
        static const unsigned char q[] = {0x12, 0x34, 0,   0,   0,   1,   0, 0,   0,   0,
                                          0,    0,    3,   'z', 'e', 'n', 7, 'e', 'x', 'a',
                                          'm',  'p',  'l', 'e', 0,   0,   6, 0,   1};
        timeval tv{0, 200000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        unsigned char buf[512];
        bool ok = sendto(fd, q, sizeof(q), 0, reinterpret_cast<sockaddr *>(&a), sizeof(a)) > 0 &&
                  recv(fd, buf, sizeof(buf), 0) >= 12 && buf[0] == 0x12 && (buf[3] & 0x0F) == 0;
        close(fd);
        return ok;
    }

    void start()
    {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            perror("pipe2");
            exit(1);
        }
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            int devnull = open("/dev/null", O_RDWR);
            dup2(devnull, 0);
            dup2(devnull, 1);
            execl("/usr/sbin/nsd", "nsd", "-d", "-c", (dir_ + "/nsd.conf").c_str(),
                  static_cast<char *>(nullptr));
            _exit(127);
        }
        pid_ = pid;
        // The watchdog: kills nsd's process group and removes the directory once this process
        // is gone (the pipe's write end closes).
        std::string script =
            "read _; kill -KILL -" + std::to_string(pid) + " 2>/dev/null; rm -rf " + dir_;
        pid_t w = fork();
        if (w == 0) {
            dup2(p[0], 0);
            setsid();
            execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char *>(nullptr));
            _exit(127);
        }
        close(p[0]);
        watch_fd_ = p[1];
        watch_pid_ = w;
        for (int i = 0; i < 100; i++) {
            if (answers())
                return;
            int st;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                fprintf(stderr, "nsd exited at start; see %s/nsd.log\n", dir_.c_str());
                exit(1);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        fprintf(stderr, "nsd did not answer within 5 s; see %s/nsd.log\n", dir_.c_str());
        exit(1);
    }

    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
    int hole_fd_ = -1;
    int hole_port_ = 0;
    int watch_fd_ = -1;
    pid_t watch_pid_ = -1;
};

// One server per test program, started on first use.
inline DnsServer &dns_server()
{
    static DnsServer s;
    return s;
}

} // namespace dnstest

#endif
