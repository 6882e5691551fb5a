// pg_server.h: a throwaway PostgreSQL server for tests (TOOLCHAIN.md 7.2): initdb in a private
// temporary directory, listening on 127.0.0.1 on a free port, fsync off, role and database
// "policyd" (password "policyd"). Stop and start it again (same port and data) for fault tests.
//
// A watchdog process (a shell blocked reading a pipe this process holds) stops the server and
// removes the directory when this process ends in any way, so a crashed or killed test leaves
// nothing running. Without PostgreSQL binaries: SKIP (exit 77), or FAIL when CI=1.
#ifndef RPD_TEST_PG_SERVER_H
#define RPD_TEST_PG_SERVER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <libpq-fe.h>

namespace rpdtest
{

inline bool in_ci()
{
    const char *ci = getenv("CI");
    return ci && strcmp(ci, "1") == 0;
}

// Exits 77 (skip) or, in CI, 1: a required server is missing.
[[noreturn]] inline void missing(const std::string &what)
{
    fprintf(stderr, "%s: %s\n", in_ci() ? "FAIL (CI=1)" : "SKIP", what.c_str());
    exit(in_ci() ? 1 : 77);
}

// A TCP port on 127.0.0.1 that was free a moment ago.
inline int free_port()
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        perror("free_port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

inline int run(const std::string &cmd)
{
    int rc = system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class PgServer
{
  public:
    PgServer()
    {
        glob_t g{};
        if (glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) != 0 || g.gl_pathc == 0)
            missing("PostgreSQL server binaries (postgresql-15) are not installed");
        bin_ = g.gl_pathv[g.gl_pathc - 1];
        globfree(&g);
        bin_.resize(bin_.size() - strlen("/initdb"));
        char tmpl[] = "/tmp/rpd-pg-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
        chmod(dir_.c_str(), 0755); // the postgres user must reach into it
        port_ = free_port();
        as_ = geteuid() == 0 ? "runuser -u postgres -- " : "";
        std::string own = geteuid() == 0 ? "-o postgres -g postgres " : "";
        if (run("install -d " + own + "-m 700 " + dir_ + "/pg") != 0 ||
            run(as_ + bin_ + "/initdb -D " + dir_ + "/pg/data -A trust -U postgres -E UTF8 " +
                "--locale=C.UTF-8 --no-sync >" + dir_ + "/initdb.log 2>&1") != 0) {
            fprintf(stderr, "initdb failed; see %s/initdb.log\n", dir_.c_str());
            exit(1);
        }
        watchdog();
        if (!start()) {
            fprintf(stderr, "PostgreSQL did not start; see %s/pg/log\n", dir_.c_str());
            exit(1);
        }
        exec("CREATE ROLE policyd LOGIN PASSWORD 'policyd'");
        exec("CREATE DATABASE policyd OWNER policyd");
    }
    ~PgServer()
    {
        stop();
        if (watch_fd_ >= 0)
            close(watch_fd_); // the watchdog removes the directory and exits
        if (watch_pid_ > 0)
            waitpid(watch_pid_, nullptr, 0);
    }
    PgServer(const PgServer &) = delete;
    PgServer &operator=(const PgServer &) = delete;

    bool start()
    {
        std::string opts = "-p " + std::to_string(port_) + " -k " + dir_ +
                           "/pg -c listen_addresses=127.0.0.1 -c fsync=off "
                           "-c synchronous_commit=off -c full_page_writes=off";
        running_ = run(as_ + bin_ + "/pg_ctl -D " + dir_ + "/pg/data -l " + dir_ +
                       "/pg/log -w -o \"" + opts + "\" start >/dev/null 2>&1") == 0;
        return running_;
    }
    // mode: fast (disconnects clients), immediate (like a crash).
    void stop(const char *mode = "fast")
    {
        if (!running_)
            return;
        run(as_ + bin_ + "/pg_ctl -D " + dir_ + "/pg/data -m " + mode +
            " -w stop >/dev/null 2>&1");
        running_ = false;
    }

    int port() const { return port_; }
    const std::string &dir() const { return dir_; }
    // conninfo for the test database as role policyd.
    std::string conninfo(const char *db = "policyd") const
    {
        return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + db +
               " user=policyd password=policyd";
    }
    // Runs sql as the superuser on database db; aborts the test program on failure.
    void exec(const std::string &sql, const char *db = "postgres") const
    {
        std::string ci = "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + db +
                         " user=postgres";
        PGconn *c = PQconnectdb(ci.c_str());
        PGresult *r = PQexec(c, sql.c_str());
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            fprintf(stderr, "%s: %s%s\n", sql.c_str(), PQerrorMessage(c),
                    PQresultErrorMessage(r));
            exit(1);
        }
        PQclear(r);
        PQfinish(c);
    }
    // The first column of the first row of sql (as policyd on its database), "" for none.
    std::string scalar(const std::string &sql) const
    {
        PGconn *c = PQconnectdb(conninfo().c_str());
        PGresult *r = PQexec(c, sql.c_str());
        std::string v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
                            ? std::string(PQgetvalue(r, 0, 0))
                            : std::string();
        PQclear(r);
        PQfinish(c);
        return v;
    }

  private:
    void watchdog()
    {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            perror("pipe2");
            exit(1);
        }
        std::string script = "read _; " + as_ + bin_ + "/pg_ctl -D " + dir_ +
                             "/pg/data -m immediate -w stop >/dev/null 2>&1; rm -rf " + dir_;
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

    std::string bin_, dir_, as_;
    int port_ = 0;
    bool running_ = false;
    int watch_fd_ = -1;
    pid_t watch_pid_ = -1;
};

// One server per test program, started on first use.
inline PgServer &pg_server()
{
    static PgServer s;
    return s;
}

} // namespace rpdtest

#endif
