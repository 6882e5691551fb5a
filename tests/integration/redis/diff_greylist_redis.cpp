// diff_greylist_redis.cpp: Greylist with both stores on Redis (<Ticket> and <AWL> module =
// "Redis"), the Perl mtpolicyd 2.05 against ringpolicyd on one redis-server the test starts.
//   1. Each daemon in its own database (db 1: Perl, db 2: ringpolicyd), the same requests:
//      identical replies through three ticket cycles (defer, early retry with the wait left
//      within 1 s, another triplet, pass once the ticket is due), the same keys, values and
//      lifetimes in both databases (the ticket SENDER,IP,RCPT = now + 300, EX 7200; the autowl
//      awl-,DOMAIN,IP counting 1, 2, 3, EX 60 days). "Due" is made by rewriting the ticket
//      (2.05 ignores min_retry_wait). Then the documented difference (spec 16 #1): with the
//      count at autowl_threshold (3) ringpolicyd whitelists the pair, 2.05 greylists it again
//      (it compares "an entry exists", 1, with the threshold).
//   2. Both daemons in one database: tickets and autowl entries one writes are understood by
//      the other (a Perl ticket defers ringpolicyd's retry with the wait left, and the pass
//      ringpolicyd grants deletes it for Perl too; and the other way round).
#include "itcommon.h"

#include "../../unit/redis/redis_server.h"


using namespace itest;

namespace
{

rpdtest::RedisServer &rs()
{
    static rpdtest::RedisServer s;
    return s;
}

struct Side {
    Impl impl = Impl::Ring;
    int db = 0;
    uint16_t port = free_tcp_port();
    std::unique_ptr<Daemon> d;
};

std::string config(const Side &s)
{
    return "port = \"127.0.0.1:" + std::to_string(s.port) +
           "\"\n<Connection redis>\n  module = \"Redis\"\n  server = \"" + rs().addr() +
           "\"\n  db = " + std::to_string(s.db) + "\n</Connection>\n" +
           vhost_block(std::to_string(s.port), "gl",
                       "  <Plugin greylist>\n    module = \"Greylist\"\n"
                       "    <Ticket>\n      module = \"Redis\"\n    </Ticket>\n"
                       "    <AWL>\n      module = \"Redis\"\n    </AWL>\n  </Plugin>\n" +
                           action_plugin("pass", "dunno"));
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

// "... (298s left)" -> 298; -1 when the text has none. (No <regex>: GCC 12 warns inside
// std::regex under -fsanitize, and warnings are errors.)
long left_of(const std::string &a)
{
    const std::string tail = "s left)";
    size_t open = a.rfind(" (");
    if (open == std::string::npos || a.size() < tail.size() ||
        a.compare(a.size() - tail.size(), tail.size(), tail) != 0)
        return -1;
    std::string n = a.substr(open + 2, a.size() - tail.size() - open - 2);
    if (n.empty() || n.find_first_not_of("-0123456789") != std::string::npos)
        return -1;
    return std::stol(n);
}

std::string without_left(const std::string &a)
{
    return left_of(a) < 0 && a.find("s left)") == std::string::npos
               ? a
               : a.substr(0, a.rfind(" (")) + " (Ns left)";
}

long num(const std::string &s)
{
    return s.empty() ? -999 : std::stol(s);
}

std::string ask1(const Side &s, const std::string &sender, const std::string &ip,
                 const std::string &rcpt)
{
    return first(ask(Endpoint::tcp(s.port),
                     postfix_request({{"sender", sender}, {"client_address", ip}, {"recipient", rcpt}}),
                     10000));
}

void start(Side &s)
{
    s.d.reset(new Daemon(s.impl, config(s)));
    s.d->set_ready(Endpoint::tcp(s.port));
    bool ok = s.d->start();
    INFO(impl_name(s.impl) << ": " << s.d->error() << "\n" << s.d->log());
    REQUIRE(ok);
}

} // namespace

TEST_CASE("Greylist on Redis, each in its own database: identical replies and keys",
          "[diff_greylist_redis]")
{
    need_perl();
    need_ringpolicyd();
    REQUIRE(rs().raw("FLUSHALL") == "OK");
    Side sides[2];
    sides[0].impl = Impl::Perl;
    sides[0].db = 1;
    sides[1].impl = Impl::Ring;
    sides[1].db = 2;
    for (Side &s : sides)
        start(s);
    auto both = [&](const std::string &sender, const std::string &ip, const std::string &rcpt) {
        std::vector<std::string> out;
        for (Side &s : sides)
            out.push_back(ask1(s, sender, ip, rcpt));
        return out;
    };
    const std::string s1 = "alice@sender.example", ip = "192.0.2.77";
    const std::string awl = "awl-,sender.example," + ip;
    for (int cycle = 1; cycle <= 3; cycle++) {
        INFO("cycle " << cycle);
        const std::string r1 = "bob" + std::to_string(cycle) + "@rcpt.example";
        std::vector<std::string> a = both(s1, ip, r1);
        CHECK(a[0] == "defer greylisting is active");
        CHECK(a[1] == a[0]);
        a = both(s1, ip, r1);
        INFO("perl: " << a[0] << " / ring: " << a[1]);
        CHECK(without_left(a[0]) == "defer greylisting is active (Ns left)");
        CHECK(without_left(a[1]) == without_left(a[0]));
        CHECK(std::labs(left_of(a[0]) - left_of(a[1])) <= 1);
        a = both(s1, ip, "carol" + std::to_string(cycle) + "@rcpt.example");
        CHECK(a[0] == "defer greylisting is active");
        CHECK(a[1] == a[0]);
        const std::string key = s1 + "," + ip + "," + r1;
        for (Side &s : sides) {
            INFO(impl_name(s.impl));
            long v = num(rs().raw("GET " + key, s.db));
            CHECK(std::labs(v - long(time(nullptr)) - 300) <= 5);
            long ttl = num(rs().raw("TTL " + key, s.db));
            CHECK(ttl > 7200 - 30);
            CHECK(ttl <= 7200);
            REQUIRE(rs().raw("SET " + key + " " + std::to_string(long(time(nullptr)) - 1) +
                                 " EX 7200",
                             s.db) == "OK");
        }
        a = both(s1, ip, r1);
        CHECK(a[0] == "dunno");
        CHECK(a[1] == a[0]);
        for (Side &s : sides) {
            INFO(impl_name(s.impl));
            CHECK(rs().raw("EXISTS " + key, s.db) == "0");
            CHECK(num(rs().raw("GET " + awl, s.db)) == cycle);
            long ttl = num(rs().raw("TTL " + awl, s.db));
            CHECK(ttl > 60L * 86400 - 30);
            CHECK(ttl <= 60L * 86400);
        }
    }
    // Spec 16 #1, decided: the count reached autowl_threshold; ringpolicyd whitelists (and
    // refreshes the entry), 2.05 greylists forever.
    std::vector<std::string> a = both(s1, ip, "dave@rcpt.example");
    CHECK(a[0] == "defer greylisting is active");
    CHECK(a[1] == "dunno");
    CHECK(rs().raw("GET " + awl, 2) == "4");
    for (Side &s : sides)
        s.d->stop();
}

TEST_CASE("Greylist on Redis, one database: each daemon understands the other's keys",
          "[diff_greylist_redis]")
{
    need_perl();
    need_ringpolicyd();
    REQUIRE(rs().raw("FLUSHALL", 3) == "OK");
    Side perl, ring;
    perl.impl = Impl::Perl;
    perl.db = 3;
    ring.impl = Impl::Ring;
    ring.db = 3;
    start(perl);
    start(ring);
    const std::string s1 = "erin@sender.example", ip = "198.51.100.5";
    // Perl's ticket defers ringpolicyd's retry, with the wait left.
    CHECK(ask1(perl, s1, ip, "r1@rcpt.example") == "defer greylisting is active");
    std::string a = ask1(ring, s1, ip, "r1@rcpt.example");
    CHECK(without_left(a) == "defer greylisting is active (Ns left)");
    CHECK(left_of(a) >= 298);
    // Due: ringpolicyd passes, deletes Perl's ticket and creates the autowl entry...
    const std::string key = s1 + "," + ip + ",r1@rcpt.example";
    REQUIRE(rs().raw("SET " + key + " " + std::to_string(long(time(nullptr)) - 1) + " EX 7200",
                     3) == "OK");
    CHECK(ask1(ring, s1, ip, "r1@rcpt.example") == "dunno");
    CHECK(rs().raw("GET awl-,sender.example," + ip, 3) == "1");
    // ... so Perl greylists the triplet anew, and its next pass increments ringpolicyd's entry.
    CHECK(ask1(perl, s1, ip, "r1@rcpt.example") == "defer greylisting is active");
    REQUIRE(rs().raw("SET " + key + " " + std::to_string(long(time(nullptr)) - 1) + " EX 7200",
                     3) == "OK");
    CHECK(ask1(perl, s1, ip, "r1@rcpt.example") == "dunno");
    CHECK(rs().raw("GET awl-,sender.example," + ip, 3) == "2");
    // ringpolicyd's ticket defers Perl's retry with the wait left.
    CHECK(ask1(ring, s1, ip, "r2@rcpt.example") == "defer greylisting is active");
    a = ask1(perl, s1, ip, "r2@rcpt.example");
    CHECK(without_left(a) == "defer greylisting is active (Ns left)");
    CHECK(left_of(a) >= 298);
    perl.d->stop();
    ring.d->stop();
}
