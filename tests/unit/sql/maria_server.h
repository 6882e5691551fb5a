// maria_server.h: a throwaway MariaDB server for tests (TOOLCHAIN.md 7.3): mariadb-install-db
// in a private temporary directory, mariadbd listening on 127.0.0.1 on a free port (and a
// socket in that directory), binary log off, database "policyd" and user "policyd"@"%"
// (password "policyd") with every privilege on it. Stop and start it again (same port and
// data) for fault tests.
//
// A watchdog process (a shell blocked reading a pipe this process holds) kills the server and
// removes the directory when this process ends in any way, so a crashed or killed test leaves
// nothing running. Without MariaDB binaries: SKIP (exit 77), or FAIL when CI=1. The helpers
// (in_ci, missing, free_port, run) are pg_server.h's.
#ifndef RPD_TEST_MARIA_SERVER_H
#define RPD_TEST_MARIA_SERVER_H

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <mysql.h>

#include "pg_server.h"

namespace rpdtest
{

class MariaServer
{
  public:
    MariaServer()
    {
        if (access("/usr/sbin/mariadbd", X_OK) != 0 || access("/usr/bin/mariadb-install-db", X_OK))
            missing("MariaDB server binaries (mariadb-server) are not installed");
        char tmpl[] = "/tmp/rpd-maria-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
        chmod(dir_.c_str(), 0755); // the mysql user must reach into it
        port_ = free_port();
        bool root = geteuid() == 0;
        user_ = root ? "--user=mysql " : "";
        std::string own = root ? "-o mysql -g mysql " : "";
        // Each server its own tmpdir: bootstraps running at once in the shared /tmp collided
        // on their temporary tables' names ("Could not remove temporary table", then "Unknown
        // table 'mysql.tmp_user_nopasswd'"), which failed a CI run.
        if (run("install -d " + own + dir_ + "/maria " + dir_ + "/maria/tmp") != 0 ||
            run("mariadb-install-db " + user_ + "--datadir=" + dir_ + "/maria/data --tmpdir=" +
                dir_ + "/maria/tmp --auth-root-authentication-method=normal --skip-test-db "
                ">" + dir_ + "/install.log 2>&1") != 0) {
            fprintf(stderr, "mariadb-install-db failed; see %s/install.log\n", dir_.c_str());
            exit(1);
        }
        watchdog();
        if (!start()) {
            fprintf(stderr, "MariaDB did not start; see %s/maria/log\n", dir_.c_str());
            exit(1);
        }
        exec("CREATE DATABASE policyd");
        exec("CREATE USER 'policyd'@'%' IDENTIFIED BY 'policyd'");
        exec("CREATE USER 'policyd'@'localhost' IDENTIFIED BY 'policyd'");
        exec("GRANT ALL ON policyd.* TO 'policyd'@'%'");
        exec("GRANT ALL ON policyd.* TO 'policyd'@'localhost'");
    }
    ~MariaServer()
    {
        stop();
        if (watch_fd_ >= 0)
            close(watch_fd_); // the watchdog removes the directory and exits
        if (watch_pid_ > 0)
            waitpid(watch_pid_, nullptr, 0);
    }
    MariaServer(const MariaServer &) = delete;
    MariaServer &operator=(const MariaServer &) = delete;

    // Starts mariadbd and waits (up to 30 s) until it answers.
    bool start()
    {
        std::string cmd = "setsid /usr/sbin/mariadbd --no-defaults " + user_ + "--datadir=" + dir_ +
                          "/maria/data --tmpdir=" + dir_ + "/maria/tmp --socket=" + dir_ +
                          "/maria/sock --port=" +
                          std::to_string(port_) + " --bind-address=127.0.0.1 --pid-file=" + dir_ +
                          "/maria/pid --skip-log-bin --innodb-flush-log-at-trx-commit=2 "
                          "--innodb-buffer-pool-size=32M --skip-name-resolve >>" + dir_ +
                          "/maria/log 2>&1 </dev/null & echo $! >" + dir_ + "/maria/mpid";
        if (run(cmd) != 0)
            return false;
        FILE *f = fopen((dir_ + "/maria/mpid").c_str(), "r");
        pid_ = 0;
        if (f) {
            if (fscanf(f, "%d", &pid_) != 1)
                pid_ = 0;
            fclose(f);
        }
        for (int i = 0; i < 300 && pid_ > 0; i++) {
            MYSQL *c = connect_root();
            if (c) {
                mysql_close(c);
                running_ = true;
                return true;
            }
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, nullptr);
        }
        return false;
    }
    // SIGTERM (a clean shutdown; clients are disconnected) or SIGKILL (a crash), then waits.
    void stop(int sig = SIGTERM)
    {
        if (!running_ || pid_ <= 0)
            return;
        kill(pid_, sig);
        for (int i = 0; i < 600 && kill(pid_, 0) == 0; i++) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, nullptr);
        }
        running_ = false;
    }

    int port() const { return port_; }
    const std::string &dir() const { return dir_; }
    std::string socket() const { return dir_ + "/maria/sock"; }
    // The DBI DSN of the test database over TCP.
    std::string dsn() const
    {
        return "dbi:mysql:database=policyd;host=127.0.0.1;port=" + std::to_string(port_);
    }
    // Runs sql as root (database db, "" for none); aborts the test program on failure.
    void exec(const std::string &sql, const char *db = "") const
    {
        MYSQL *c = connect_root(db);
        if (!c || mysql_query(c, sql.c_str()) != 0) {
            fprintf(stderr, "%s: %s\n", sql.c_str(), c ? mysql_error(c) : "cannot connect");
            exit(1);
        }
        MYSQL_RES *r = mysql_store_result(c);
        if (r)
            mysql_free_result(r);
        mysql_close(c);
    }
    // The first column of the first row of sql on database policyd, "" for none or NULL.
    std::string scalar(const std::string &sql) const
    {
        MYSQL *c = connect_root("policyd");
        std::string v;
        if (c && mysql_query(c, sql.c_str()) == 0) {
            MYSQL_RES *r = mysql_store_result(c);
            MYSQL_ROW row = r ? mysql_fetch_row(r) : nullptr;
            if (row && row[0])
                v = row[0];
            if (r)
                mysql_free_result(r);
        }
        if (c)
            mysql_close(c);
        return v;
    }

  private:
    MYSQL *connect_root(const char *db = "") const
    {
        MYSQL *c = mysql_init(nullptr);
        unsigned t = 2;
        mysql_options(c, MYSQL_OPT_CONNECT_TIMEOUT, &t);
        if (!mysql_real_connect(c, "127.0.0.1", "root", nullptr, *db ? db : nullptr,
                                (unsigned)port_, nullptr, 0)) {
            mysql_close(c);
            return nullptr;
        }
        return c;
    }

    void watchdog()
    {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            perror("pipe2");
            exit(1);
        }
        std::string script = "read _; p=$(cat " + dir_ + "/maria/mpid 2>/dev/null); [ -n \"$p\" ] " +
                             "&& kill -9 $p 2>/dev/null; sleep 0.2; rm -rf " + dir_;
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

    std::string dir_, user_;
    int port_ = 0;
    int pid_ = 0;
    bool running_ = false;
    int watch_fd_ = -1;
    pid_t watch_pid_ = -1;
};

// One server per test program, started on first use.
inline MariaServer &maria_server()
{
    static MariaServer s;
    return s;
}

} // namespace rpdtest

#endif
