// it_sessions.cpp: sessions across connections, ports and shards (spec 10; the daemon issue's
// Memory session cache). Two shards; connections to an RCPT vhost and to an END-OF-MESSAGE vhost
// on another port carry the same instances: a score added per RCPT request must be seen, summed,
// by AddScoreHeader in the other vhost, whichever shard accepted either connection and whichever
// shard owns the instance. Many instances, so both shards own some; concurrent requests for one
// instance must not lose updates. Also: no session cache means a fresh session per request (2.05),
// `expire`, and `max_sessions` eviction.
#include "itcommon.h"

#include <memory>

using namespace itest;

namespace
{

struct Ports {
    uint16_t rcpt = free_tcp_port();
    uint16_t eom = free_tcp_port();
};

std::string session_config(const Ports &p, const std::string &cache_block,
                           const std::string &globals = "shards = 2\n")
{
    return "port = \"127.0.0.1:" + std::to_string(p.rcpt) + ",127.0.0.1:" + std::to_string(p.eom) +
           "\"\n" + globals + cache_block +
           vhost_block(std::to_string(p.rcpt), "rcpt", R"(  <Plugin mark>
    module = "SetField"
    key = "seen_rcpt"
    value = "yes"
  </Plugin>
  <Plugin rcpt-score>
    module = "Condition"
    key = "recipient"
    re_match = "."
    score = 1
  </Plugin>
)") + vhost_block(std::to_string(p.eom), "eom", R"(  <Plugin header>
    module = "AddScoreHeader"
    spam_score = 1000
  </Plugin>
)");
}

const std::string kMemory = "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n";

std::vector<std::string> rcpt(const std::string &instance, int n)
{
    return postfix_request({{"instance", instance}, {"recipient", "r" + std::to_string(n) + "@x"}});
}

std::vector<std::string> eom(const std::string &instance)
{
    return postfix_request({{"instance", instance},
                            {"protocol_state", "END-OF-MESSAGE"},
                            {"recipient", ""},
                            {"size", "2152"}});
}

std::string header_for(int rcpts)
{
    if (rcpts == 0)
        return "PREPEND X-MtScore: NO score=0";
    std::string details;
    for (int i = 0; i < rcpts; i++)
        details += (i ? ", " : "") + std::string("rcpt-score=1");
    return "PREPEND X-MtScore: NO score=" + std::to_string(rcpts) + " [" + details + "]";
}

std::string first_action(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

std::vector<Conn> open_conns(uint16_t port, int n)
{
    std::vector<Conn> v;
    for (int i = 0; i < n; i++) {
        v.emplace_back(Endpoint::tcp(port));
        REQUIRE(v.back().ok());
    }
    return v;
}

} // namespace

TEST_CASE("Memory sessions are shared across connections, vhosts and shards", "[sessions]")
{
    Ports p;
    auto d = start_ring(session_config(p, kMemory), Endpoint::tcp(p.rcpt));
    auto rc = open_conns(p.rcpt, 8);
    auto ec = open_conns(p.eom, 8);

    const int instances = 400;
    int wrong = 0;
    for (int i = 0; i < instances; i++) {
        std::string inst = "shared-" + std::to_string(i);
        int rcpts = i % 4; /* 0..3 recipients, each on another connection */
        for (int k = 0; k < rcpts; k++) {
            Reply r = rc[static_cast<size_t>((i + k) % 8)].request(rcpt(inst, k));
            if (first_action(r) != "dunno" && wrong++ < 5)
                FAIL_CHECK("RCPT for " << inst << ": " << first_action(r));
            if (!r.ok())
                FAIL("no reply; daemon log:\n" << d->log());
        }
        Reply first = ec[static_cast<size_t>((i * 3) % 8)].request(eom(inst));
        if (!first.ok())
            FAIL("no reply; daemon log:\n" << d->log());
        std::string got = first_action(first);
        if (got != header_for(rcpts) && wrong++ < 5)
            FAIL_CHECK(inst << " after " << rcpts << " RCPT requests: expected '"
                            << header_for(rcpts) << "', got '" << got << "'");
        /* the header flag is once per mail: the next END-OF-MESSAGE request gets dunno */
        got = first_action(ec[static_cast<size_t>((i * 5 + 1) % 8)].request(eom(inst)));
        if (got != "dunno" && wrong++ < 5)
            FAIL_CHECK(inst << " second END-OF-MESSAGE: expected dunno, got '" << got << "'");
    }
    CHECK(wrong == 0);
    CHECK(d->alive());
}

TEST_CASE("concurrent requests for one instance lose no update", "[sessions]")
{
    Ports p;
    auto d = start_ring(session_config(p, kMemory), Endpoint::tcp(p.rcpt));
    auto rc = open_conns(p.rcpt, 16);
    for (int round = 0; round < 20; round++) {
        std::string inst = "race-" + std::to_string(round);
        /* every connection sends 3 RCPT requests at once, then all replies are read */
        for (auto &c : rc) {
            std::string batch;
            for (int k = 0; k < 3; k++)
                batch += encode_request(rcpt(inst, k));
            REQUIRE(c.send(batch));
        }
        for (auto &c : rc)
            for (int k = 0; k < 3; k++)
                CHECK(first_action(c.read_reply()) == "dunno");
        CHECK(first_action(ask(Endpoint::tcp(p.eom), eom(inst))) == header_for(48));
    }
}

TEST_CASE("without a session cache every request gets a fresh session (2.05)", "[sessions]")
{
    for (const std::string &block :
         {std::string(""), std::string("<SessionCache>\n  module = \"None\"\n</SessionCache>\n")}) {
        INFO("session cache block: " << (block.empty() ? "(none)" : block));
        Ports p;
        auto d = start_ring(session_config(p, block), Endpoint::tcp(p.rcpt));
        Conn r(Endpoint::tcp(p.rcpt)), e(Endpoint::tcp(p.eom));
        REQUIRE(r.ok());
        REQUIRE(e.ok());
        for (int i = 0; i < 20; i++) {
            std::string inst = "fresh-" + std::to_string(i);
            CHECK(first_action(r.request(rcpt(inst, 0))) == "dunno");
            CHECK(first_action(r.request(rcpt(inst, 1))) == "dunno");
            CHECK(first_action(e.request(eom(inst))) == header_for(0));
            CHECK(first_action(e.request(eom(inst))) == header_for(0));
        }
    }
}

TEST_CASE("Memory session expire", "[sessions]")
{
    Ports p;
    auto d = start_ring(
        session_config(p, "<SessionCache>\n  module = \"Memory\"\n  expire = 1\n</SessionCache>\n"),
        Endpoint::tcp(p.rcpt));
    CHECK(first_action(ask(Endpoint::tcp(p.rcpt), rcpt("exp-a", 0))) == "dunno");
    CHECK(first_action(ask(Endpoint::tcp(p.rcpt), rcpt("exp-b", 0))) == "dunno");
    CHECK(first_action(ask(Endpoint::tcp(p.eom), eom("exp-a"))) == header_for(1));
    sleep_ms(2600);
    CHECK(first_action(ask(Endpoint::tcp(p.eom), eom("exp-b"))) == header_for(0));
}

TEST_CASE("Memory session cache bounded by max_sessions", "[sessions]")
{
    Ports p;
    auto d = start_ring(session_config(p,
                                       "<SessionCache>\n  module = \"Memory\"\n"
                                       "  max_sessions = 16\n</SessionCache>\n",
                                       "shards = 1\n"),
                        Endpoint::tcp(p.rcpt));
    Conn r(Endpoint::tcp(p.rcpt));
    REQUIRE(r.ok());
    for (int i = 0; i < 200; i++)
        CHECK(first_action(r.request(rcpt("evict-" + std::to_string(i), 0))) == "dunno");
    /* the oldest sessions were evicted, the newest kept */
    CHECK(first_action(ask(Endpoint::tcp(p.eom), eom("evict-0"))) == header_for(0));
    CHECK(first_action(ask(Endpoint::tcp(p.eom), eom("evict-199"))) == header_for(1));
    CHECK(d->alive());
}
