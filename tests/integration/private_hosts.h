// private_hosts.h: starts a daemon under test with a private /etc/hosts, for tests of host
// names that resolve only later (it_mc_name, it_pg_name, it_maria_name, it_proxy). The daemon
// runs in a mount namespace of its own (unshare -m) with a file of the test bind-mounted over
// /etc/hosts (and a resolv.conf naming only 127.0.0.1 over /etc/resolv.conf); the test
// rewrites that file in place (same inode, so the bind mount sees it; glibc reads /etc/hosts
// at every lookup). Needs root and unshare(1): without them the test SKIPs, or FAILs in CI.
#ifndef ITEST_PRIVATE_HOSTS_H
#define ITEST_PRIVATE_HOSTS_H

#include "itcommon.h"

#include <fstream>
#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>

namespace itest
{

inline void write_hosts(const std::string &path, const std::string &text)
{
    std::ofstream f(path, std::ios::trunc); // same inode: the bind mount sees it
    f << text;
}

// Starts d (ready when ready_at accepts) with /etc/hosts replaced by a file holding hosts;
// returns that file's path for write_hosts. REQUIREs the start.
inline std::string start_with_private_hosts(Daemon &d, const Endpoint &ready_at,
                                            const std::string &hosts_text)
{
    need_ringpolicyd();
    if (geteuid() != 0 || system("unshare -m true >/dev/null 2>&1") != 0)
        skip_or_fail("needs root and unshare -m (a private /etc/hosts for the daemon)");
    std::string hosts = d.write_file("hosts", hosts_text);
    /* Names missing from that file are asked of loopback (where nothing answers on port 53),
     * never of the machine's resolver: no query leaves the host. */
    std::string resolv =
        d.write_file("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
    std::string wrap = d.write_file(
        "wrap.sh", "#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$0\" /etc/hosts && mount "
                   "--bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"' " +
                       hosts + " " + resolv + " " + ringpolicyd_bin() + " \"$@\"\n");
    REQUIRE(chmod(wrap.c_str(), 0755) == 0);
    std::string real = ringpolicyd_bin();
    setenv("RINGPOLICYD", wrap.c_str(), 1);
    d.set_ready(ready_at);
    bool ok = d.start();
    setenv("RINGPOLICYD", real.c_str(), 1);
    INFO(d.error() << "\n" << d.log());
    REQUIRE(ok);
    return hosts;
}

} // namespace itest

#endif
