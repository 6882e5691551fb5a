// it_privileges.cpp: `user`/`group` privilege drop after binding and `chroot` (spec 3, 4), as
// the Debian unit runs mtpolicyd: the daemon binds as root, then serves as the configured user
// with the configured groups. Needs root (skipped otherwise, failed in CI).
#include "itcommon.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <sstream>

using namespace itest;

namespace
{

/* The value of a "Name:\t..." line of /proc/PID/status. */
std::string status_field(pid_t pid, const std::string &name)
{
    for (auto &l : split_lines(read_file("/proc/" + std::to_string(pid) + "/status")))
        if (l.compare(0, name.size() + 1, name + ":") == 0) {
            std::string v = l.substr(name.size() + 1);
            while (!v.empty() && (v[0] == '\t' || v[0] == ' '))
                v.erase(0, 1);
            return v;
        }
    return "";
}

/* The first number of a status line (the real id). */
long first_id(const std::string &field)
{
    std::istringstream in(field);
    long v = -1;
    in >> v;
    return v;
}

} // namespace

TEST_CASE("user and group: bind as root, serve as the user", "[privileges]")
{
    need_ringpolicyd();
    if (geteuid() != 0)
        skip_or_fail("the privilege tests need root");
    struct passwd *pw = getpwnam("nobody");
    struct group *gr = getgrnam("nogroup");
    if (!pw || !gr)
        skip_or_fail("no user nobody or group nogroup on this machine");
    uid_t uid = pw->pw_uid;
    gid_t gid = gr->gr_gid;
    struct group *second = getgrnam("mail");
    std::string groups = second ? "nogroup mail" : "nogroup";

    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject unprivileged"),
                                      "user = \"nobody\"\ngroup = \"" + groups + "\"\n"),
                        Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject unprivileged"});
    INFO(read_file("/proc/" + std::to_string(d->pid()) + "/status"));
    CHECK(first_id(status_field(d->pid(), "Uid")) == static_cast<long>(uid));
    CHECK(first_id(status_field(d->pid(), "Gid")) == static_cast<long>(gid));
    std::string supplementary = status_field(d->pid(), "Groups");
    CHECK(contains(" " + supplementary + " ", " " + std::to_string(gid) + " "));
    if (second)
        CHECK(contains(" " + supplementary + " ", " " + std::to_string(second->gr_gid) + " "));
    /* every thread dropped, not only the main one */
    std::string task_dir = "/proc/" + std::to_string(d->pid()) + "/task";
    RunResult ls = run_command({"/bin/ls", task_dir}, 5000);
    for (auto &tid : split_lines(ls.out)) {
        std::string st = read_file(task_dir + "/" + tid + "/status");
        for (auto &l : split_lines(st))
            if (l.compare(0, 4, "Uid:") == 0)
                CHECK(first_id(l.substr(4)) == static_cast<long>(uid));
    }
    CHECK(d->stop() == 0);
}

TEST_CASE("numeric user and group ids", "[privileges]")
{
    need_ringpolicyd();
    if (geteuid() != 0)
        skip_or_fail("the privilege tests need root");
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject numeric"),
                                      "user = \"65534\"\ngroup = \"65534\"\n"),
                        Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject numeric"});
    CHECK(first_id(status_field(d->pid(), "Uid")) == 65534);
}

TEST_CASE("an unknown user is a start-up error", "[privileges]")
{
    need_ringpolicyd();
    if (geteuid() != 0)
        skip_or_fail("the privilege tests need root");
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring,
             simple_config(port, action_plugin("a", "x"), "user = \"no-such-user-here\"\n"));
    RunResult r = d.run({"-f"}, 10000);
    INFO(r.out << r.err);
    CHECK(r.status > 0);
    CHECK(contains(r.out + r.err, "no-such-user-here"));
}

TEST_CASE("chroot after binding", "[privileges]")
{
    need_ringpolicyd();
    if (geteuid() != 0)
        skip_or_fail("the privilege tests need root");
    TempDir jail;
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject jailed"),
                                      "chroot = \"" + jail.path() + "\"\nuser = \"nobody\"\n"),
                        Endpoint::tcp(port));
    for (int i = 0; i < 5; i++)
        CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
              std::vector<std::string>{"reject jailed"});
    char root[4096] = {0};
    ssize_t n =
        readlink(("/proc/" + std::to_string(d->pid()) + "/root").c_str(), root, sizeof root - 1);
    REQUIRE(n > 0);
    CHECK(std::string(root, static_cast<size_t>(n)) == jail.path());
}
