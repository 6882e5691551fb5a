// slapd_server.h: a throwaway OpenLDAP slapd for tests (mdb backend under a temp dir, a small
// schema of our own and a test tree loaded with slapadd), listening on 127.0.0.1 on a free
// port, optionally with a self-signed certificate for STARTTLS (made with openssl, CN and SAN
// 127.0.0.1). It can be stopped (SIGSTOP), continued, killed and started again on the same
// port. Reuses mc_server.h's free port, connect and missing-prerequisite helpers; a watchdog
// (a shell blocked reading a pipe this process holds) kills slapd and removes the directory
// when this process ends in any way. Without slapd: SKIP (exit 77), or FAIL when CI=1.
//
// The tree (dc=example,dc=com, ou=users): alice (mail alice@example.com, limit 10, two
// descriptions, title "" is absent), bob (limit 20, no description), two entries sharing mail
// dup@example.com, "st*r (x)\\y" as a mail address to check escaping, and the bind user
// cn=reader,dc=example,dc=com with password "readerpw".
#ifndef RPD_TEST_SLAPD_SERVER_H
#define RPD_TEST_SLAPD_SERVER_H

#include "../mc/mc_server.h"

#include <string>

namespace rpdtest
{

inline const char *slapd_tree_ldif()
{
    return "dn: dc=example,dc=com\n"
           "objectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
           "dn: ou=users,dc=example,dc=com\nobjectClass: organizationalUnit\nou: users\n\n"
           "dn: cn=reader,dc=example,dc=com\nobjectClass: person\ncn: reader\nsn: R\n"
           "userPassword: readerpw\n\n"
           "dn: uid=alice,ou=users,dc=example,dc=com\nobjectClass: inetOrgPerson\n"
           "objectClass: mtpolicydUser\nuid: alice\ncn: Alice\nsn: A\n"
           "mail: alice@example.com\nmtpolicydMailMessageLimit: 10\n"
           "description: first\ndescription: second\n\n"
           "dn: uid=bob,ou=users,dc=example,dc=com\nobjectClass: inetOrgPerson\n"
           "objectClass: mtpolicydUser\nuid: bob\ncn: Bob\nsn: B\n"
           "mail: bob@example.com\nmtpolicydMailMessageLimit: 20\n\n"
           "dn: uid=dup1,ou=users,dc=example,dc=com\nobjectClass: inetOrgPerson\n"
           "objectClass: mtpolicydUser\nuid: dup1\ncn: Dup1\nsn: D\n"
           "mail: dup@example.com\nmtpolicydMailMessageLimit: 1\n\n"
           "dn: uid=dup2,ou=users,dc=example,dc=com\nobjectClass: inetOrgPerson\n"
           "objectClass: mtpolicydUser\nuid: dup2\ncn: Dup2\nsn: D\n"
           "mail: dup@example.com\nmtpolicydMailMessageLimit: 2\n\n"
           "dn: uid=star,ou=users,dc=example,dc=com\nobjectClass: inetOrgPerson\n"
           "objectClass: mtpolicydUser\nuid: star\ncn: Star\nsn: S\n"
           "mail: st*r (x)\\y@example.com\nmtpolicydMailMessageLimit: 30\n\n";
}

class SlapdServer
{
  public:
    explicit SlapdServer(bool tls = false) : tls_(tls)
    {
        if (access("/usr/sbin/slapd", X_OK) != 0 || access("/usr/sbin/slapadd", X_OK) != 0)
            mc_missing("slapd is not installed (apt-get install slapd)");
        if (tls && access("/usr/bin/openssl", X_OK) != 0)
            mc_missing("openssl is not installed");
        char tmpl[] = "/tmp/rpd-slapd-XXXXXX";
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            exit(1);
        }
        dir_ = tmpl;
        mkdir((dir_ + "/db").c_str(), 0700);
        port_ = mc_free_port();
        watchdog();
        if (tls)
            make_cert();
        write_files();
        std::string cmd = "/usr/sbin/slapadd -q -f " + dir_ + "/slapd.conf -l " + dir_ +
                          "/tree.ldif > " + dir_ + "/slapadd.log 2>&1";
        if (system(cmd.c_str()) != 0) {
            fprintf(stderr, "slapadd failed; see %s/slapadd.log\n", dir_.c_str());
            exit(1);
        }
        if (!start()) {
            fprintf(stderr, "slapd did not start on port %d; see %s/slapd.log\n", port_,
                    dir_.c_str());
            exit(1);
        }
    }
    ~SlapdServer()
    {
        kill_now();
        if (watch_fd_ >= 0)
            close(watch_fd_);
        if (watch_pid_ > 0)
            waitpid(watch_pid_, nullptr, 0);
    }
    SlapdServer(const SlapdServer &) = delete;
    SlapdServer &operator=(const SlapdServer &) = delete;

    bool start()
    {
        std::string log = dir_ + "/slapd.log", conf = dir_ + "/slapd.conf",
                    url = "ldap://127.0.0.1:" + std::to_string(port_) + "/";
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            setsid();
            // -d 0: stay in the foreground (so pid_ is slapd itself), log nothing.
            execl("/usr/sbin/slapd", "slapd", "-h", url.c_str(), "-f", conf.c_str(), "-d", "0",
                  static_cast<char *>(nullptr));
            _exit(127);
        }
        pid_ = pid;
        std::ofstream(dir_ + "/pid") << pid << "\n";
        for (int i = 0; i < 500; i++) {
            int fd = mc_connect(port_, 200);
            if (fd >= 0) {
                close(fd);
                return true;
            }
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
    void kill_now()
    {
        if (pid_ <= 0)
            return;
        kill(pid_, SIGCONT);
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    // SIGKILL without SIGCONT first: a stopped slapd dies without answering anything more.
    void kill_stopped()
    {
        if (pid_ <= 0)
            return;
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    bool pause()
    {
        kill(pid_, SIGSTOP);
        return wait_state(true);
    }
    bool resume()
    {
        kill(pid_, SIGCONT);
        return wait_state(false);
    }
    int port() const
    {
        return port_;
    }
    const std::string &dir() const
    {
        return dir_;
    }
    // The CA file a client must trust for STARTTLS (the self-signed certificate itself).
    std::string cacert() const
    {
        return dir_ + "/cert.pem";
    }

  private:
    bool tls_;
    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
    pid_t watch_pid_ = -1;
    int watch_fd_ = -1;

    void make_cert()
    {
        std::string cmd = "cd " + dir_ +
                          " && /usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
                          "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                          "-keyout key.pem -out cert.pem > openssl.log 2>&1";
        if (system(cmd.c_str()) != 0) {
            fprintf(stderr, "openssl failed; see %s/openssl.log\n", dir_.c_str());
            exit(1);
        }
    }
    void write_files()
    {
        std::ofstream c(dir_ + "/slapd.conf");
        c << "include /etc/ldap/schema/core.schema\n"
             "include /etc/ldap/schema/cosine.schema\n"
             "include /etc/ldap/schema/inetorgperson.schema\n"
             "attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'mtpolicydMailMessageLimit' "
             "EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )\n"
             "objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'mtpolicydUser' AUXILIARY "
             "MAY ( mtpolicydMailMessageLimit ) )\n"
             "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
             "pidfile "
          << dir_ << "/slapd.pid\n";
        if (tls_)
            c << "TLSCertificateFile " << dir_ << "/cert.pem\nTLSCertificateKeyFile " << dir_
              << "/key.pem\n";
        c << "database mdb\nsuffix \"dc=example,dc=com\"\n"
             "rootdn \"cn=admin,dc=example,dc=com\"\nrootpw secret\n"
             "directory "
          << dir_ << "/db\nmaxsize 10485760\n"
          << "access to attrs=userPassword by anonymous auth by * none\n"
             "access to * by * read\n";
        std::ofstream(dir_ + "/tree.ldif") << slapd_tree_ldif();
    }
    void watchdog()
    {
        int p[2];
        if (pipe(p) != 0) {
            perror("pipe");
            exit(1);
        }
        std::string script = "read x; kill -CONT $(cat " + dir_ + "/pid 2>/dev/null) 2>/dev/null; kill -9 $(cat " + dir_ +
                             "/pid 2>/dev/null) 2>/dev/null; rm -rf " + dir_;
        pid_t pid = fork();
        if (pid == 0) {
            dup2(p[0], 0);
            close(p[0]);
            close(p[1]);
            setsid();
            execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char *>(nullptr));
            _exit(127);
        }
        close(p[0]);
        fcntl(p[1], F_SETFD, FD_CLOEXEC);
        watch_fd_ = p[1];
        watch_pid_ = pid;
    }
    // Every thread of slapd in state T (stopped), or none of them (as mc_server.h waits).
    bool threads_stopped(bool want) const
    {
        std::string dir = "/proc/" + std::to_string(pid_) + "/task";
        DIR *d = opendir(dir.c_str());
        if (!d)
            return false;
        bool all = true;
        while (dirent *e = readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            std::ifstream f(dir + "/" + e->d_name + "/stat");
            std::string line;
            std::getline(f, line);
            size_t rp = line.rfind(')');
            if (rp == std::string::npos || rp + 2 >= line.size())
                continue;
            all = all && (line[rp + 2] == 'T') == want;
        }
        closedir(d);
        return all;
    }
    bool wait_state(bool stopped) const
    {
        for (int i = 0; i < 500; i++) {
            if (threads_stopped(stopped))
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }
};

} // namespace rpdtest

#endif
