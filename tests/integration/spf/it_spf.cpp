// it_spf.cpp: the SPF plugin's own limits and start-up checks in ringpolicyd (no Perl twin):
// max_evaluations (evaluations waiting for DNS at once per shard) at N and N+1 with a DNS
// server that never answers, so evaluations stay out; a request over the limit fails the
// plugin (here on_error = continue, so the chain goes on) and is logged, the others are
// answered when their lookups time out; and the start-up errors for a bad whitelist entry and
// an out-of-range max_evaluations. Tag [it_spf].
#include "../itcommon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace itest;

namespace
{

struct Hole {
    int fd = -1;
    uint16_t port = 0;
    Hole()
    {
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        REQUIRE(fd >= 0);
        REQUIRE(bind(fd, (sockaddr *)&a, sizeof a) == 0);
        REQUIRE(getsockname(fd, (sockaddr *)&a, &len) == 0);
        port = ntohs(a.sin_port);
    }
    ~Hole()
    {
        close(fd);
    }
};

std::string spf_body(const std::string &extra)
{
    return "  <Plugin spf>\n    module = \"SPF\"\n    on_error = \"continue\"\n" + extra +
           "  </Plugin>\n" + action_plugin("after", "dunno after-spf");
}

std::vector<std::string> req(const std::string &instance)
{
    return postfix_request({{"client_address", "192.0.2.5"},
                            {"helo_name", ""},
                            {"sender", "u@" + instance + ".example.com"},
                            {"instance", instance}});
}

const std::string kDefer =
    "defer spf mfrom check failed: a.example.com: Time-out on DNS 'TXT' lookup of "
    "'a.example.com'";

// Sends `count` requests at once on one shard (shards = 1), each on its own connection, and
// returns their replies in order.
std::vector<std::string> concurrent(const Endpoint &ep, int count)
{
    std::vector<Conn> conns;
    for (int i = 0; i < count; i++) {
        conns.emplace_back(ep, 30000);
        REQUIRE(conns.back().ok());
        std::string inst = i == 0 ? "a" : std::string(1, char('a' + i));
        REQUIRE(conns.back().send(encode_request(req(inst))));
        sleep_ms(200); // in this order, so the first ones hold the slots
    }
    std::vector<std::string> out;
    for (auto &c : conns) {
        Reply r = c.read_reply(30000);
        out.push_back(r.ok() && !r.actions.empty()
                          ? r.actions[0]
                          : std::string("<") + reply_status_name(r.status) + ">");
    }
    return out;
}

} // namespace

TEST_CASE("max_evaluations at N and N+1", "[it_spf]")
{
    Hole hole;
    std::string globals =
        "shards = 1\ndns_servers = \"127.0.0.1:" + std::to_string(hole.port) + "\"\n";
    for (int n : {1, 2}) {
        uint16_t port = free_tcp_port();
        std::string conf = simple_config(
            port, spf_body("    max_evaluations = " + std::to_string(n) + "\n"), globals);
        auto d = start_ring(conf, Endpoint::tcp(port));
        std::vector<std::string> replies = concurrent(Endpoint::tcp(port), 2);
        INFO("max_evaluations = " << n << "\nlog:\n" << d->log());
        CHECK(replies[0] == kDefer);
        if (n == 1) {
            CHECK(replies[1] == "dunno after-spf");
            CHECK(log_lines_with(*d, "all 1 SPF evaluation slots of this shard are in use") == 1);
        } else {
            CHECK(replies[1] ==
                  "defer spf mfrom check failed: b.example.com: Time-out on DNS 'TXT' lookup of "
                  "'b.example.com'");
            CHECK(log_lines_with(*d, "SPF evaluation slots") == 0);
        }
        d->stop();
    }
}

TEST_CASE("start-up errors of the SPF plugin", "[it_spf]")
{
    need_ringpolicyd();
    Hole hole; // no lookup may leave loopback
    std::string globals = "dns_servers = \"127.0.0.1:" + std::to_string(hole.port) + "\"\n";
    struct Bad {
        std::string option, message;
    } bad[] = {
        {"whitelist = \"192.0.2.0/24, foo\"",
         "whitelist: 'foo' is not an IP address or CIDR range"},
        {"whitelist = \"192.0.2.0/33\"", "whitelist: '192.0.2.0/33' is not an IP address"},
        {"max_evaluations = 0", "max_evaluations must be 1..65536"},
        {"max_evaluations = 65537", "max_evaluations must be 1..65536"},
    };
    for (const auto &b : bad) {
        uint16_t port = free_tcp_port();
        Daemon d(Impl::Ring, simple_config(port, spf_body("    " + b.option + "\n"), globals));
        d.set_ready(Endpoint::tcp(port));
        bool started = d.start(10000);
        INFO(b.option << "\nlog:\n" << d.log());
        CHECK_FALSE(started);
        CHECK(contains(d.log(), b.message));
    }
    // the accepted forms: addresses, CIDR ranges, dotted masks, IPv6, commas or spaces
    uint16_t port = free_tcp_port();
    auto d =
        start_ring(simple_config(port,
                                 spf_body("    whitelist = \"192.0.2.5 198.51.100.0/255.255.255.0,"
                                          " 2001:db8::/32 ,::ffff:203.0.113.0/120\"\n"),
                                 globals),
                   Endpoint::tcp(port));
    for (const char *ip : {"192.0.2.5", "198.51.100.77", "2001:db8::9", "203.0.113.4"}) {
        Reply r = ask(Endpoint::tcp(port),
                      postfix_request({{"client_address", ip}, {"sender", "u@example.com"}}));
        INFO(ip << "\nlog:\n" << d->log());
        REQUIRE(r.ok());
        CHECK(r.actions == std::vector<std::string>{"dunno after-spf"});
    }
    // (not skipped, each would have met the silent DNS server and answered defer)
}
