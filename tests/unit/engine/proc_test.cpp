// proc_test.cpp: daemon helpers, each exercised in a forked child where it changes the process:
// pid files (create, refuse a live pid, overwrite a stale one, remove only our own), privilege
// drop (user, one or several groups by name or number, chroot, unknown names) and daemonize
// (the original exits 0; the daemon is in a new session, not its leader, with /dev/null as
// stdin).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

extern "C" {
#include "eng/proc.h"
}

namespace
{

std::string tmp_path(const char *name)
{
    return "/tmp/ringpolicyd-proc-test-" + std::to_string(getpid()) + "-" + name;
}

std::string slurp(const std::string &path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void spit(const std::string &path, const std::string &s)
{
    std::ofstream f(path, std::ios::trunc);
    f << s;
}

// Runs fn in a child; returns its exit status (fn's return value).
int in_child(const std::function<int()> &fn)
{
    fflush(nullptr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(fn());
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

} // namespace

TEST_CASE("pid file: create, refuse a live pid, replace a stale one, remove", "[proc]")
{
    std::string path = tmp_path("pid");
    char err[256] = "";
    unlink(path.c_str());
    REQUIRE(eng_proc_pidfile_create(path.c_str(), err, sizeof(err)) == 0);
    CHECK(slurp(path) == std::to_string(getpid()) + "\n");
    CHECK(eng_proc_pidfile_create(path.c_str(), err, sizeof(err)) == 0); // our own pid

    // A live process (a sleeping child) holds it.
    pid_t live = fork();
    if (live == 0) {
        pause();
        _exit(0);
    }
    spit(path, std::to_string(live) + "\n");
    CHECK(eng_proc_pidfile_create(path.c_str(), err, sizeof(err)) == -EEXIST);
    CHECK(std::string(err).find("running with pid " + std::to_string(live)) != std::string::npos);
    kill(live, SIGKILL);
    waitpid(live, nullptr, 0);

    // Now stale.
    CHECK(eng_proc_pidfile_create(path.c_str(), err, sizeof(err)) == 0);
    CHECK(slurp(path) == std::to_string(getpid()) + "\n");

    // Garbage is stale too.
    spit(path, "not a pid\n");
    CHECK(eng_proc_pidfile_create(path.c_str(), err, sizeof(err)) == 0);

    // Remove only what is ours.
    spit(path, "1\n");
    eng_proc_pidfile_remove(path.c_str());
    CHECK(slurp(path) == "1\n");
    spit(path, std::to_string(getpid()) + "\n");
    eng_proc_pidfile_remove(path.c_str());
    CHECK(access(path.c_str(), F_OK) != 0);

    CHECK(eng_proc_pidfile_create("/nonexistent-dir/x.pid", err, sizeof(err)) == -ENOENT);
    CHECK(std::string(err).find("/nonexistent-dir/x.pid") != std::string::npos);
}

TEST_CASE("privilege drop: user, groups, chroot", "[proc]")
{
    if (geteuid() != 0) {
        WARN("not root: privilege drop not testable here");
        return;
    }
    // getpwnam/getgrnam answer in static buffers: copy before the next call.
    passwd *pw = getpwnam("nobody");
    REQUIRE(pw != nullptr);
    uid_t nobody = pw->pw_uid;
    gid_t nobody_gid = pw->pw_gid;
    group *g = getgrnam("nogroup");
    REQUIRE(g != nullptr);
    gid_t nogroup = g->gr_gid;
    g = getgrnam("daemon");
    REQUIRE(g != nullptr);
    gid_t daemon_gid = g->gr_gid;

    // User only: its primary group and its supplementary groups, none of root's.
    CHECK(in_child([&] {
              char err[256];
              if (eng_proc_drop_privileges("nobody", nullptr, nullptr, err, sizeof(err)) < 0)
                  return 1;
              gid_t gs[64];
              int n = getgroups(64, gs);
              if (getuid() != nobody || geteuid() != nobody || getgid() != nobody_gid)
                  return 2;
              for (int i = 0; i < n; i++)
                  if (gs[i] == 0)
                      return 3;
              return 0;
          }) == 0);

    // Several groups by name and number: the first is primary, all are supplementary.
    std::string groups = "nogroup, " + std::to_string(daemon_gid);
    CHECK(in_child([&] {
              char err[256];
              if (eng_proc_drop_privileges("nobody", groups.c_str(), nullptr, err, sizeof(err)) < 0)
                  return 1;
              gid_t gs[64];
              int n = getgroups(64, gs);
              // The kernel sorts the list.
              bool has_no = n == 2 && (gs[0] == nogroup || gs[1] == nogroup);
              bool has_daemon = n == 2 && (gs[0] == daemon_gid || gs[1] == daemon_gid);
              if (getgid() != nogroup || !has_no || !has_daemon)
                  return 2;
              return 0;
          }) == 0);

    // chroot: "/" is the directory afterwards.
    std::string dir = tmp_path("root");
    mkdir(dir.c_str(), 0755);
    spit(dir + "/marker", "inside");
    CHECK(in_child([&] {
              char err[256];
              if (eng_proc_drop_privileges("nobody", "nogroup", dir.c_str(), err, sizeof(err)) < 0)
                  return 1;
              return access("/marker", F_OK) == 0 && getuid() == nobody ? 0 : 2;
          }) == 0);
    unlink((dir + "/marker").c_str());
    rmdir(dir.c_str());

    char err[256];
    CHECK(eng_proc_drop_privileges("no-such-user-x", nullptr, nullptr, err, sizeof(err)) ==
          -ENOENT);
    CHECK(std::string(err) == "unknown user 'no-such-user-x'");
    CHECK(eng_proc_drop_privileges(nullptr, "nogroup no-such-group-x", nullptr, err, sizeof(err)) ==
          -ENOENT);
    CHECK(std::string(err) == "unknown group 'no-such-group-x'");
    CHECK(getuid() == 0); // the failures changed nothing
    CHECK(eng_proc_drop_privileges(nullptr, nullptr, "/no/such/dir", err, sizeof(err)) == -ENOENT);
    CHECK(std::string(err).find("cannot chroot to /no/such/dir") == 0);
}

TEST_CASE("daemonize: the original exits 0, the daemon runs detached", "[proc]")
{
    std::string out = tmp_path("daemon");
    unlink(out.c_str());
    int status = in_child([&] {
        char err[256];
        if (eng_proc_daemonize(err, sizeof(err)) < 0)
            return 1;
        eng_proc_ready(true, nullptr);
        // The daemon: not a session leader, in a session of its own, stdin on /dev/null.
        struct stat a, b;
        fstat(0, &a);
        stat("/dev/null", &b);
        char cwd[64];
        std::string line = std::to_string(getpid()) + " " + std::to_string(getsid(0)) + " " +
                           std::to_string(getpgrp()) + " " +
                           std::to_string(a.st_rdev == b.st_rdev) + " " +
                           (getcwd(cwd, sizeof(cwd)) ? cwd : "?");
        spit(out + ".tmp", line);
        rename((out + ".tmp").c_str(), out.c_str());
        return 0;
    });
    CHECK(status == 0);
    for (int i = 0; i < 200 && access(out.c_str(), F_OK) != 0; i++)
        usleep(10000);
    std::istringstream in(slurp(out));
    long pid = 0, sid = 0, pgrp = 0;
    int devnull = 0;
    std::string cwd;
    in >> pid >> sid >> pgrp >> devnull >> cwd;
    CHECK(pid > 0);
    CHECK(sid != pid);       // not the session leader
    CHECK(sid != getsid(0)); // but in a new session
    CHECK(devnull == 1);
    CHECK(cwd == "/");
    unlink(out.c_str());
}

TEST_CASE("daemonize: the original waits for the daemon's start-up and reports a failure", "[proc]")
{
    std::string errfile = tmp_path("daemon-err");
    auto original = [&](const std::function<void()> &daemon) {
        unlink(errfile.c_str());
        return in_child([&] {
            int fd = open(errfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(fd, 2);
            close(fd);
            char err[256];
            if (eng_proc_daemonize(err, sizeof(err)) < 0)
                return 2;
            daemon();
            return 0;
        });
    };
    // Start-up failed: the original exits 1 with the daemon's sentence on its stderr.
    CHECK(original([] {
              usleep(50000); // the original really waits
              eng_proc_ready(false, "cannot write pid file /x: Permission denied");
          }) == 1);
    CHECK(slurp(errfile) == "cannot write pid file /x: Permission denied\n");
    // The daemon exited without a word.
    CHECK(original([] {}) == 1);
    CHECK(slurp(errfile) == "the daemon exited during start-up\n");
    // Ready: 0; a second call changes nothing.
    CHECK(original([] {
              eng_proc_ready(true, nullptr);
              eng_proc_ready(false, "too late");
          }) == 0);
    CHECK(slurp(errfile).empty());
    unlink(errfile.c_str());
}

TEST_CASE("drop privileges: already the user and group asked for, without root", "[proc]")
{
    struct passwd *pw = getpwnam("nobody");
    if (!pw || geteuid() != 0) {
        WARN("needs root and a user 'nobody'");
        return;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    CHECK(in_child([&] {
              // As systemd starts it with User=nobody and Group=<its group>.
              if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
                  return 2;
              char err[256] = "";
              std::string g = std::to_string(gid);
              if (eng_proc_drop_privileges("nobody", g.c_str(), nullptr, err, sizeof(err)) != 0)
                  return 3;
              if (eng_proc_drop_privileges("nobody", nullptr, nullptr, err, sizeof(err)) != 0)
                  return 4;
              // Something else still fails with a clear sentence.
              if (eng_proc_drop_privileges("root", nullptr, nullptr, err, sizeof(err)) == 0)
                  return 5;
              return std::string(err).find("cannot switch") == 0 ? 0 : 6;
          }) == 0);
}
