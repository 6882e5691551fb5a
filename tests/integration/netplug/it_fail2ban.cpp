// it_fail2ban.cpp: the Fail2Ban plugin (spec 13.9) in a real ringpolicyd against a real
// fail2ban-server (f2b_server.h): the client address is banned in the jail before the answer
// goes out (checked with fail2ban-client status), once per mail with a session, not at all with
// enabled = off, a missing socket is a plugin failure (no reply, or the next plugin with
// on_error = continue); and differentially against the Perl mtpolicyd 2.05's Fail2Ban on the
// same fail2ban-server (same replies, each daemon's command bans the address).
#include "diffcheck.h"
#include "f2b_server.h"
#include "itcommon.h"
#include "netplug_common.h"

using namespace itest;

namespace
{

std::string f2b_plugin(const std::string &sock, const std::string &extra = "")
{
    return "  <Plugin ban>\n    module = \"Fail2Ban\"\n    socket = \"" + sock +
           "\"\n    jail = \"postfix\"\n" + extra + "  </Plugin>\n" +
           action_plugin("after", "dunno");
}

} // namespace

TEST_CASE("the client address is banned before the answer; enabled = off", "[it_fail2ban]")
{
    F2bServer f2b;
    uint16_t port = free_tcp_port(), port2 = free_tcp_port();
    std::string conf = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                       std::to_string(port2) + "\"\nlog_level = 4\n" +
                       vhost_block(std::to_string(port), "on", f2b_plugin(f2b.sock())) +
                       vhost_block(std::to_string(port2), "off",
                                   f2b_plugin(f2b.sock(), "    enabled = off\n"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    CHECK(first(send_from(port, "192.0.2.7")) == "dunno");
    CHECK(contains(f2b.banned(), "192.0.2.7"));
    CHECK(d->wait_log("adding ip 192.0.2.7 to fail2ban jail postfix", 2000));
    CHECK(first(send_from(port, "192.0.2.70")) == "dunno"); // the kept connection
    CHECK(contains(f2b.banned(), "192.0.2.70"));
    CHECK(first(send_from(port2, "192.0.2.8")) == "dunno");
    CHECK_FALSE(contains(f2b.banned(), "192.0.2.8"));
}

TEST_CASE("once per mail with a session", "[it_fail2ban]")
{
    F2bServer f2b;
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, f2b_plugin(f2b.sock()),
                                      "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n"),
                        Endpoint::tcp(port));
    CHECK(first(send_from(port, "192.0.2.9", "mail-1")) == "dunno");
    REQUIRE(contains(f2b.banned(), "192.0.2.9"));
    f2b.unban("192.0.2.9");
    REQUIRE_FALSE(contains(f2b.banned(), "192.0.2.9"));
    CHECK(first(send_from(port, "192.0.2.9", "mail-1")) == "dunno"); // same mail: not sent again
    CHECK_FALSE(contains(f2b.banned(), "192.0.2.9"));
    CHECK(first(send_from(port, "192.0.2.9", "mail-2")) == "dunno"); // another mail
    CHECK(contains(f2b.banned(), "192.0.2.9"));
}

TEST_CASE("no fail2ban socket: plugin failure, or the next plugin with on_error = continue",
          "[it_fail2ban]")
{
    TempDir tmp;
    std::string sock = tmp.file("none.sock");
    uint16_t port = free_tcp_port(), port2 = free_tcp_port();
    std::string conf = "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" +
                       std::to_string(port2) + "\"\n" +
                       vhost_block(std::to_string(port), "strict", f2b_plugin(sock)) +
                       vhost_block(std::to_string(port2), "lenient",
                                   f2b_plugin(sock, "    on_error = continue\n"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    CHECK(first(send_from(port, "192.0.2.10")) == reply_status_name(Reply::CLOSED));
    CHECK(first(send_from(port2, "192.0.2.10")) == "dunno");
    CHECK(d->wait_log("cant connect fail2ban socket", 2000));
}

TEST_CASE("Perl mtpolicyd 2.05 and ringpolicyd send fail2ban the same command",
          "[it_fail2ban][diff]")
{
    F2bServer f2b;
    TempDir tmp;
    std::vector<VhostSpec> vhosts = {
        {"ban", f2b_plugin(f2b.sock()), ""},
        {"nosock", f2b_plugin(tmp.file("none.sock")), ""},
        {"off", f2b_plugin(f2b.sock(), "    enabled = \"off\"\n"), ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases = {
        {"ban", rq({{"client_address", "198.51.100.1"}}), "dunno", "", ""},
        {"ban", rq({{"client_address", "2001:db8::5"}}), "dunno", "", ""},
        {"off", rq({{"client_address", "198.51.100.2"}}), "dunno", "", ""},
        {"nosock", rq({{"client_address", "198.51.100.3"}}), "<closed>", "", ""},
    };
    run_cases(rig, vhosts, cases);
    CHECK_FALSE(contains(f2b.banned(), "198.51.100.2"));
    // Each daemon's command on its own: unban, ask one daemon, see the address banned again.
    for (Impl impl : {Impl::Perl, Impl::Ring}) {
        for (std::string ip : {"198.51.100.1", "2001:db8::5"}) {
            INFO(impl_name(impl) << " " << ip);
            f2b.unban(ip);
            REQUIRE_FALSE(contains(f2b.banned(), ip));
            CHECK(summarize(rig.ask(impl, "ban", rq({{"client_address", ip}}))) == "dunno");
            bool banned = false;
            for (int i = 0; i < 100 && !banned; i++) { // Perl does not wait for fail2ban
                banned = contains(f2b.banned(), ip);
                if (!banned)
                    sleep_ms(20);
            }
            CHECK(banned);
        }
    }
}
