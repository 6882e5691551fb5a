// it_honeypot.cpp: the Honeypot plugin (spec 13.13, 16 #5) in a real ringpolicyd (two shards)
// with a real memcached: a client writing to a trap address (exact or by pattern) is rejected
// and stays trapped for every recipient, on any connection, until `expire`; other clients are
// not; passive mode scores once per mail and returns the sub-chain's results; `enabled = off`
// (also through uc_enabled) skips it; the trap is shared by two daemons on one memcached; with
// memcached down the trap addresses still reject (the store counts as empty); a start-up error
// without the memcached connection.
#include "itcommon.h"

#include "../../unit/mc/mc_server.h"

using namespace itest;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

std::string conn()
{
    return "<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" + mc().addr() +
           "\"\n  namespace = \"hp-" + std::to_string(getpid()) + "-\"\n</Connection>\n";
}

const std::string kSession = "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n";

std::string honeypot(const std::string &extra = "")
{
    return "  <Plugin trap>\n    module = \"Honeypot\"\n"
           "    recipients = \"spamtrap@example.com, trap2@example.com\"\n"
           "    recipients_re = \"^(tic|tac)@(a|b)\\.example$\"\n" +
           extra + "  </Plugin>\n" + action_plugin("pass", "dunno");
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

Reply send(uint16_t port, const std::string &ip, const std::string &rcpt,
           const std::string &instance = "")
{
    std::vector<std::pair<std::string, std::string>> o = {{"client_address", ip},
                                                          {"recipient", rcpt}};
    if (!instance.empty())
        o.push_back({"instance", instance});
    return ask(Endpoint::tcp(port), postfix_request(o));
}

} // namespace

TEST_CASE("reject mode: trap addresses trap the client until expire", "[it_honeypot]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, honeypot("    expire = 4\n"), "shards = 2\n" + conn()),
                        Endpoint::tcp(port));
    CHECK(first(send(port, "192.0.2.10", "alice@example.com")) == "dunno");
    CHECK(first(send(port, "192.0.2.10", "spamtrap@example.com")) == "reject trapped by honeypod");
    // Trapped now for any recipient, on new connections (either shard).
    for (int i = 0; i < 6; i++)
        CHECK(first(send(port, "192.0.2.10", "alice@example.com")) == "reject trapped by honeypod");
    CHECK(first(send(port, "192.0.2.11", "alice@example.com")) == "dunno");
    // A pattern trap; the pattern is unanchored except where it anchors itself.
    CHECK(first(send(port, "192.0.2.12", "tac@b.example")) == "reject trapped by honeypod");
    CHECK(first(send(port, "192.0.2.13", "xtac@b.example")) == "dunno");
    CHECK(first(send(port, "192.0.2.12", "bob@example.com")) == "reject trapped by honeypod");
    // The key as 2.05 meant it: NAME,CLIENT_ADDRESS (with the connection's namespace).
    CHECK(mc().raw_get("hp-" + std::to_string(getpid()) + "-trap,192.0.2.10") == "1");
    sleep_ms(4100); // memcached's whole seconds: lifetime 4 lives between 3 and 4 seconds
    CHECK(first(send(port, "192.0.2.10", "alice@example.com")) == "dunno");
    d->stop();
}

TEST_CASE("passive mode: the score once per mail, the sub-chain's results", "[it_honeypot]")
{
    uint16_t port = free_tcp_port();
    std::string body = "  <Plugin trap>\n    module = \"Honeypot\"\n    mode = \"passive\"\n"
                       "    score = 5\n    recipients = \"spamtrap@example.com\"\n"
                       "    <Plugin inner>\n      module = \"Action\"\n"
                       "      action = \"PREPEND X-Trap: yes\"\n    </Plugin>\n  </Plugin>\n"
                       "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n  </Plugin>\n";
    auto d = start_ring(simple_config(port, body, "shards = 2\n" + kSession + conn()),
                        Endpoint::tcp(port));
    CHECK(first(send(port, "192.0.2.20", "bob@example.com", "i1")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(first(send(port, "192.0.2.20", "spamtrap@example.com", "i2")) == "PREPEND X-Trap: yes");
    // Same mail, a second recipient: trapped, no second score.
    CHECK(first(send(port, "192.0.2.20", "carol@example.com", "i2")) == "PREPEND X-Trap: yes");
    Conn c(Endpoint::tcp(port));
    Reply r = c.request(postfix_request(
        {{"client_address", "192.0.2.21"}, {"recipient", "dave@example.com"}, {"instance", "i2"}}));
    CHECK(first(r) == "PREPEND X-MtScore: YES score=5 [trap=5]"); // spam_score 5
    d->stop();
}

TEST_CASE("enabled = off and uc_enabled skip it", "[it_honeypot]")
{
    uint16_t port = free_tcp_port();
    std::string body = "  <Plugin uc>\n    module = \"SetField\"\n    key = \"hp_enabled\"\n"
                       "    value = \"off\"\n  </Plugin>\n" +
                       honeypot("    uc_enabled = \"hp_enabled\"\n");
    auto d = start_ring(simple_config(port, body, conn()), Endpoint::tcp(port));
    CHECK(first(send(port, "192.0.2.30", "spamtrap@example.com")) == "dunno");
    d->stop();
    uint16_t port2 = free_tcp_port();
    auto d2 = start_ring(simple_config(port2, honeypot("    enabled = off\n"), conn()),
                         Endpoint::tcp(port2));
    CHECK(first(send(port2, "192.0.2.31", "spamtrap@example.com")) == "dunno");
    d2->stop();
}

TEST_CASE("two daemons share the trap through one memcached", "[it_honeypot]")
{
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    auto d1 = start_ring(simple_config(p1, honeypot(), conn()), Endpoint::tcp(p1));
    auto d2 = start_ring(simple_config(p2, honeypot(), conn()), Endpoint::tcp(p2));
    CHECK(first(send(p2, "192.0.2.40", "erin@example.com")) == "dunno");
    CHECK(first(send(p1, "192.0.2.40", "trap2@example.com")) == "reject trapped by honeypod");
    CHECK(first(send(p2, "192.0.2.40", "erin@example.com")) == "reject trapped by honeypod");
    d1->stop();
    d2->stop();
}

TEST_CASE("memcached down: trap addresses still reject; start-up error without it", "[it_honeypot]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, honeypot(), conn()), Endpoint::tcp(port));
    CHECK(first(send(port, "192.0.2.50", "spamtrap@example.com")) == "reject trapped by honeypod");
    mc().kill_now();
    CHECK(first(send(port, "192.0.2.51", "spamtrap@example.com")) == "reject trapped by honeypod");
    CHECK(first(send(port, "192.0.2.50", "frank@example.com")) == "dunno"); // store unreadable
    REQUIRE(mc().start());
    d->stop();

    uint16_t port2 = free_tcp_port();
    Daemon bad(Impl::Ring, simple_config(port2, honeypot()));
    RunResult rr = bad.run({"--check"});
    INFO(rr.out << rr.err);
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection memcached configured!"));
}
