// f2b_server.h: a throwaway fail2ban-server for tests: a configuration directory in a temp
// dir with one jail `postfix` (backend polling on an empty log file, a filter that never
// matches, no actions, so a ban changes nothing on the machine), an in-memory database, its
// socket in the temp dir. Started in the foreground in its own session, killed (SIGTERM, then
// SIGKILL) and reaped in the destructor. status() and banned() ask it through fail2ban-client.
// Without fail2ban-server: SKIP (exit 77), or FAIL when CI=1 (harness need_file).
#ifndef ITEST_F2B_SERVER_H
#define ITEST_F2B_SERVER_H

#include "harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace itest
{

class F2bServer
{
  public:
    F2bServer()
    {
        need_file("/usr/bin/fail2ban-server", "fail2ban-server (package fail2ban)");
        need_file("/usr/bin/fail2ban-client", "fail2ban-client (package fail2ban)");
        std::string d = dir_.path();
        dir_.write("app.log", "");
        run_command({"/bin/mkdir", "-p", d + "/conf/filter.d", d + "/conf/action.d"}, 5000);
        dir_.write("conf/fail2ban.conf", "[Definition]\nloglevel = INFO\nlogtarget = " + d +
                                             "/f2b.log\nsocket = " + sock() + "\npidfile = " + d +
                                             "/f2b.pid\ndbfile = :memory:\n");
        dir_.write("conf/filter.d/none.conf", "[Definition]\nfailregex = ^never matches <HOST>$\n");
        dir_.write("conf/jail.conf", "[DEFAULT]\nbackend = polling\n[postfix]\nenabled = true\n"
                                     "filter = none\nlogpath = " +
                                         d + "/app.log\naction =\n");
        std::string conf = d + "/conf", pidf = d + "/f2b.pid", out = d + "/server.out";
        std::string s = sock();
        pid_ = fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            setsid();
            FILE *f = freopen(out.c_str(), "a", stdout);
            (void)f;
            dup2(1, 2);
            execl("/usr/bin/fail2ban-server", "fail2ban-server", "-f", "-x", "-c", conf.c_str(),
                  "-s", s.c_str(), "-p", pidf.c_str(), static_cast<char *>(nullptr));
            _exit(127);
        }
        bool up = false;
        for (int i = 0; i < 150 && !up; i++) {
            up = contains(status(), "Status for the jail: postfix");
            if (!up)
                sleep_ms(100);
        }
        INFO(read_file(out) << read_file(d + "/f2b.log"));
        REQUIRE(up);
    }
    ~F2bServer()
    {
        if (pid_ <= 0)
            return;
        kill(pid_, SIGTERM);
        for (int i = 0; i < 300; i++) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_)
                return;
            sleep_ms(10);
        }
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    F2bServer(const F2bServer &) = delete;
    F2bServer &operator=(const F2bServer &) = delete;

    std::string sock() const
    {
        return dir_.path() + "/f2b.sock";
    }
    std::string status() const
    {
        RunResult r = run_command({"/usr/bin/fail2ban-client", "-s", sock(), "status", "postfix"},
                                  10000);
        return r.out + r.err;
    }
    // The jail's "Banned IP list" line.
    std::string banned() const
    {
        for (auto &l : split_lines(status()))
            if (contains(l, "Banned IP list:"))
                return l.substr(l.find(':') + 1);
        return "(no status)";
    }
    void unban(const std::string &ip) const
    {
        run_command({"/usr/bin/fail2ban-client", "-s", sock(), "set", "postfix", "unbanip", ip},
                    10000);
    }
    std::string log() const
    {
        return read_file(dir_.path() + "/f2b.log");
    }

  private:
    TempDir dir_;
    pid_t pid_ = -1;
};

} // namespace itest

#endif
