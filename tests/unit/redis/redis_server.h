// redis_server.h: throwaway redis-server instances for tests, like mc_server.h's memcached
// (whose helpers it reuses: free port, connect, SKIP/FAIL when missing): 127.0.0.1 on a free
// port, no persistence (--save '' --appendonly no), an optional password and Unix socket; it
// can be stopped (SIGSTOP), continued, killed and started again on the same port. raw() runs
// one command through redis-cli to look behind the client under test. The second constructor
// starts a Redis Sentinel (redis-server --sentinel) monitoring a master on 127.0.0.1 under a
// service name; raw() then talks to the sentinel (SENTINEL ... commands).
//
// A watchdog process (a shell blocked reading a pipe this process holds) kills the server and
// removes its directory when this process ends in any way. Without redis-server or redis-cli:
// SKIP (exit 77), or FAIL when CI=1.
#ifndef RPD_TEST_REDIS_SERVER_H
#define RPD_TEST_REDIS_SERVER_H

#include "../mc/mc_server.h"

#include <sys/wait.h>

#include <string>
#include <vector>

namespace rpdtest
{

class RedisServer
{
  public:
    explicit RedisServer(const std::string &password = "") : password_(password)
    {
        init();
    }
    // A sentinel monitoring 127.0.0.1:master_port as service (quorum 1).
    RedisServer(int master_port, const std::string &service)
        : sentinel_master_(master_port), service_(service)
    {
        init();
    }
    ~RedisServer()
    {
        kill_now();
        if (watch_fd_ >= 0)
            close(watch_fd_);
        if (watch_pid_ > 0)
            waitpid(watch_pid_, nullptr, 0);
    }
    RedisServer(const RedisServer &) = delete;
    RedisServer &operator=(const RedisServer &) = delete;

    // Starts it (again) on the same port; true once it answers PING.
    bool start()
    {
        std::string log = dir_ + "/redis.log", port = std::to_string(port_);
        std::vector<std::string> args;
        if (sentinel_master_ > 0) {
            // Sentinel rewrites its configuration file: a fresh one in the server's directory.
            std::string conf = dir_ + "/sentinel.conf";
            std::ofstream(conf) << "port " << port_ << "\nbind 127.0.0.1\nprotected-mode no\n"
                                << "dir " << dir_ << "\nsentinel monitor " << service_
                                << " 127.0.0.1 " << sentinel_master_ << " 1\n"
                                << "sentinel down-after-milliseconds " << service_ << " 60000\n";
            args = {"redis-server", conf, "--sentinel"};
        } else {
            args = {"redis-server", "--port",          port,       "--bind", "127.0.0.1",
                    "--save",       "",                "--appendonly", "no", "--dir",
                    dir_,           "--unixsocket",    sock(),     "--unixsocketperm", "777",
                    "--daemonize",  "no",              "--protected-mode", "no"};
        }
        if (!password_.empty()) {
            args.push_back("--requirepass");
            args.push_back(password_);
        }
        std::vector<char *> argv;
        for (std::string &a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            setsid();
            execv("/usr/bin/redis-server", argv.data());
            _exit(127);
        }
        pid_ = pid;
        std::ofstream(dir_ + "/pid") << pid << "\n";
        for (int i = 0; i < 500; i++) {
            if (raw("PING") == "PONG")
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

  private:
    void init()
    {
        if (access("/usr/bin/redis-server", X_OK) != 0 || access("/usr/bin/redis-cli", X_OK) != 0)
            mc_missing("redis-server/redis-cli are not installed (apt-get install redis-server)");
        char tmpl[] = "/tmp/rpd-redis-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
        chmod(dir_.c_str(), 0755);
        port_ = mc_free_port();
        watchdog();
        if (!start()) {
            fprintf(stderr, "redis-server did not start on port %d; see %s/redis.log\n", port_,
                    dir_.c_str());
            exit(1);
        }
    }

  public:
    void kill_now()
    {
        if (pid_ <= 0)
            return;
        kill(pid_, SIGCONT);
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    // SIGSTOP / SIGCONT; redis-server's I/O is one thread, the state of the main one decides.
    bool pause()
    {
        kill(pid_, SIGSTOP);
        return wait_state('T');
    }
    bool resume()
    {
        kill(pid_, SIGCONT);
        for (int i = 0; i < 500; i++) {
            if (raw("PING") == "PONG")
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

    int port() const
    {
        return port_;
    }
    std::string addr() const
    {
        return "127.0.0.1:" + std::to_string(port_);
    }
    std::string sock() const
    {
        return dir_ + "/redis.sock";
    }
    const std::string &dir() const
    {
        return dir_;
    }

    // One command through redis-cli (arguments split on spaces; db selects the database);
    // its output without the trailing newline ("" for nil).
    std::string raw(const std::string &cmd, int db = 0) const
    {
        std::string line = "/usr/bin/redis-cli --no-auth-warning -h 127.0.0.1 -p " +
                           std::to_string(port_) + " -n " + std::to_string(db);
        if (!password_.empty())
            line += " -a '" + password_ + "'";
        line += " " + cmd + " 2>&1";
        FILE *f = popen(line.c_str(), "r");
        if (!f)
            return "(popen failed)";
        std::string out;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            out.append(buf, n);
        pclose(f);
        while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
            out.pop_back();
        return out;
    }

  private:
    bool wait_state(char want) const
    {
        for (int i = 0; i < 500; i++) {
            std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
            std::string line;
            std::getline(f, line);
            size_t rp = line.rfind(')');
            if (rp != std::string::npos && rp + 2 < line.size() && line[rp + 2] == want)
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

    void watchdog()
    {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            perror("pipe2");
            exit(1);
        }
        std::string script = "read _; p=$(cat " + dir_ + "/pid 2>/dev/null); [ -n \"$p\" ] && " +
                             "{ kill -CONT $p; kill -KILL $p; } 2>/dev/null; rm -rf " + dir_;
        pid_t pid = fork();
        if (pid == 0) {
            dup2(p[0], 0);
            setsid();
            execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char *>(nullptr));
            _exit(127);
        }
        close(p[0]);
        watch_fd_ = p[1];
        watch_pid_ = pid;
    }

    std::string password_, dir_;
    int sentinel_master_ = 0;
    std::string service_;
    int port_ = 0;
    pid_t pid_ = -1;
    int watch_fd_ = -1;
    pid_t watch_pid_ = -1;
};

} // namespace rpdtest

#endif
