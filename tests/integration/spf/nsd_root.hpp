// nsd_root.hpp: a throwaway nsd (TOOLCHAIN.md 7.4) on 127.0.0.1, on a free port, serving one
// zone file for the root zone "." from a private temporary directory, for the SPF integration
// tests: every name the test puts in the zone exists, every other name is NXDOMAIN, exactly
// as an authoritative server answers a stub resolver. Also turns the openspf suite's zonedata
// (rfc7208_suite.hpp) into such a zone.
//
// The server runs in its own process group and is killed (SIGTERM, then SIGKILL) by the
// destructor and by stop(); a test that crashes leaves it to a watchdog child that kills the
// group when the test process's pipe closes. Without nsd: SKIP (exit 77), FAIL when CI=1.
#ifndef SPF_NSD_ROOT_HPP
#define SPF_NSD_ROOT_HPP

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>

namespace spfit
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

// A port free for both UDP and TCP on 127.0.0.1 a moment ago.
inline int free_port()
{
    for (int tries = 0; tries < 50; tries++) {
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(a);
        bool ok = u >= 0 && t >= 0 && bind(u, (sockaddr *)&a, sizeof(a)) == 0 &&
                  getsockname(u, (sockaddr *)&a, &len) == 0 &&
                  bind(t, (sockaddr *)&a, sizeof(a)) == 0;
        int port = ntohs(a.sin_port);
        close(u);
        close(t);
        if (ok)
            return port;
    }
    fprintf(stderr, "no free port\n");
    exit(1);
}

// A DNS name in zone-file form: bytes other than letters, digits, '-', '_' and '.' escaped.
inline std::string zone_name(const std::string &n)
{
    std::string s;
    for (unsigned char c : n) {
        if (isalnum(c) || c == '-' || c == '_' || c == '.') {
            s += (char)c;
        } else {
            char b[8];
            snprintf(b, sizeof b, "\\%03u", c);
            s += b;
        }
    }
    return s + ".";
}

// A TXT character string in zone-file form.
inline std::string zone_txt(const std::string &t)
{
    std::string s = "\"";
    for (unsigned char c : t) {
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            s += (char)c;
        } else {
            char b[8];
            snprintf(b, sizeof b, "\\%03u", c);
            s += b;
        }
    }
    return s + "\"";
}

class NsdRoot
{
  public:
    NsdRoot()
    {
        if (access("/usr/sbin/nsd", X_OK) != 0)
            missing("nsd is not installed (/usr/sbin/nsd)");
        char tmpl[] = "/tmp/spf-nsd-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
    }
    ~NsdRoot()
    {
        stop();
        std::string cmd = "rm -rf '" + dir_ + "'";
        if (system(cmd.c_str()) != 0)
            fprintf(stderr, "could not remove %s\n", dir_.c_str());
    }
    NsdRoot(const NsdRoot &) = delete;
    NsdRoot &operator=(const NsdRoot &) = delete;

    // Serves zone_body (records, one per line, absolute names) as the root zone. Restarts the
    // server when it runs. Returns false (reason in error()) when nsd refused the zone.
    bool serve(const std::string &zone_body)
    {
        stop();
        port_ = free_port();
        std::string zone = "$TTL 300\n. IN SOA ns.test. host.test. 1 3600 600 86400 60\n"
                           ". IN NS ns.test.\nns.test. IN A 127.0.0.1\n" +
                           zone_body;
        write(dir_ + "/root.zone", zone);
        write(dir_ + "/nsd.conf", conf());
        std::string check =
            "nsd-checkzone . '" + dir_ + "/root.zone' > '" + dir_ + "/check.log' 2>&1";
        if (system(check.c_str()) != 0) {
            error_ = "nsd-checkzone refused the zone:\n" + read(dir_ + "/check.log");
            return false;
        }
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) != 0)
            return false;
        const std::string conf_path = dir_ + "/nsd.conf"; // no allocation after fork
        pid_ = fork();
        if (pid_ == 0) {
            setpgid(0, 0);
            int devnull = open("/dev/null", O_RDWR);
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl("/usr/sbin/nsd", "nsd", "-d", "-c", conf_path.c_str(), (char *)0);
            _exit(127);
        }
        setpgid(pid_, pid_);
        // the watchdog: kills nsd's group when this process dies without stop()
        const pid_t group = pid_;
        watchdog_ = fork();
        if (watchdog_ == 0) {
            close(pipefd[1]);
            char b;
            while (::read(pipefd[0], &b, 1) > 0) {
            }
            kill(-group, SIGKILL);
            _exit(0);
        }
        close(pipefd[0]);
        wd_fd_ = pipefd[1];
        return wait_ready();
    }

    void stop()
    {
        if (pid_ > 0) {
            kill(-pid_, SIGTERM);
            for (int i = 0; i < 100; i++) {
                if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                    pid_ = -1;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            if (pid_ > 0) {
                kill(-pid_, SIGKILL);
                waitpid(pid_, nullptr, 0);
            }
            kill(-pid_, SIGKILL); // nsd's own children
            pid_ = -1;
        }
        if (wd_fd_ >= 0) {
            // tell the watchdog nothing is left: it kills an empty group and exits
            close(wd_fd_);
            wd_fd_ = -1;
            waitpid(watchdog_, nullptr, 0);
        }
    }

    int port() const
    {
        return port_;
    }
    std::string servers() const
    {
        return "127.0.0.1:" + std::to_string(port_);
    }
    const std::string &error() const
    {
        return error_;
    }

  private:
    std::string dir_, error_;
    int port_ = 0;
    pid_t pid_ = -1, watchdog_ = -1;
    int wd_fd_ = -1;

    static void write(const std::string &path, const std::string &text)
    {
        std::ofstream f(path, std::ios::binary);
        f << text;
    }
    static std::string read(const std::string &path)
    {
        std::ifstream f(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    }

    std::string conf() const
    {
        return "server:\n    ip-address: 127.0.0.1@" + std::to_string(port_) +
               "\n    do-ip6: no\n    username: \"\"\n    chroot: \"\"\n    database: \"\"\n"
               "    server-count: 1\n    verbosity: 0\n    zonesdir: \"" +
               dir_ + "\"\n    zonelistfile: \"" + dir_ + "/zone.list\"\n    xfrdfile: \"" + dir_ +
               "/xfrd.state\"\n    xfrdir: \"" + dir_ + "\"\n    pidfile: \"" + dir_ +
               "/nsd.pid\"\n    logfile: \"" + dir_ +
               "/nsd.log\"\nremote-control:\n    control-enable: no\n"
               "zone:\n    name: \".\"\n    zonefile: \"root.zone\"\n";
    }

    // A SOA query over UDP answered within 5 s.
    bool wait_ready()
    {
        static const unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0,
                                          0,    0,    0,    0,    0, 6, 0, 1};
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port_);
        timeval tv{0, 50000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        for (int i = 0; i < 100; i++) {
            sendto(fd, q, sizeof q, 0, (sockaddr *)&a, sizeof a);
            unsigned char buf[512];
            if (recv(fd, buf, sizeof buf, 0) > 12) {
                close(fd);
                return true;
            }
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                break;
            }
        }
        close(fd);
        error_ = "nsd did not answer; its log:\n" + read(dir_ + "/nsd.log");
        return false;
    }
};

} // namespace spfit

#endif
