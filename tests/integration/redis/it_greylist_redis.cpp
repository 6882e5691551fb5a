// it_greylist_redis.cpp: Greylist with its Redis stores (<Ticket> and <AWL> module = "Redis",
// spec 13.12) in a real ringpolicyd (two shards) against a real redis-server the test starts:
// the ticket cycle with the keys, values and lifetimes 2.05 writes (ticket SENDER,IP,RCPT = the
// Unix time a retry is accepted from, EX max_retry_wait; autowl awl-,DOMAIN,IP = the count, EX
// autowl_expire_days days), the auto-whitelist after autowl_threshold passes (INCR + EXPIRE
// refresh), a Redis ticket store with use_autowl = 0 (no SQL), two daemons sharing one Redis,
// AUTH + SELECT, Redis down (the plugin fails; on_error = continue goes on) and recovery,
// start-up errors.
#include "itcommon.h"

#include "../../unit/redis/redis_server.h"

#include <functional>

using namespace itest;

namespace
{

rpdtest::RedisServer &rs()
{
    static rpdtest::RedisServer s;
    return s;
}

std::string redis_conn(const std::string &extra = "")
{
    return "<Connection redis>\n  module = \"Redis\"\n  server = \"" + rs().addr() + "\"\n" +
           extra + "</Connection>\n";
}

std::string greylist(const std::string &name, const std::string &opts,
                     bool redis_awl = true)
{
    return "  <Plugin " + name + ">\n    module = \"Greylist\"\n" + opts +
           "    <Ticket>\n      module = \"Redis\"\n    </Ticket>\n" +
           (redis_awl ? "    <AWL>\n      module = \"Redis\"\n    </AWL>\n" : "") + "  </Plugin>\n";
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

Reply send(uint16_t port, const std::string &sender, const std::string &ip, const std::string &rcpt)
{
    return ask(Endpoint::tcp(port),
               postfix_request({{"sender", sender},
                                {"client_address", ip},
                                {"recipient", rcpt},
                                {"instance", "i" + std::to_string(now_ms())}}));
}

bool within(int timeout_ms, const std::function<bool()> &pred)
{
    for (long t0 = now_ms(); now_ms() - t0 < timeout_ms; sleep_ms(100))
        if (pred())
            return true;
    return false;
}

long num(const std::string &s)
{
    return s.empty() ? -999 : std::stol(s);
}

struct Rig {
    uint16_t port = free_tcp_port();
    std::unique_ptr<Daemon> d;
    explicit Rig(const std::string &body, const std::string &conn = redis_conn())
    {
        d = start_ring(simple_config(port, body, "shards = 2\n" + conn), Endpoint::tcp(port));
    }
};

} // namespace

TEST_CASE("the ticket cycle and the autowl entry as 2.05 stores them", "[it_greylist_redis]")
{
    REQUIRE(rs().raw("FLUSHALL") == "OK");
    Rig rig(greylist("gl", "    min_retry_wait = 2\n    max_retry_wait = 60\n") +
            action_plugin("pass", "dunno"));
    const std::string tkey = "a@s.example,192.0.2.1,r@d.example";
    long sent = long(time(nullptr));
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) ==
          "defer greylisting is active");
    long t = num(rs().raw("GET " + tkey));
    CHECK(t >= sent + 2);
    CHECK(t <= long(time(nullptr)) + 2);
    long ttl = num(rs().raw("TTL " + tkey));
    CHECK(ttl > 55);
    CHECK(ttl <= 60);
    long from = long(time(nullptr));
    std::string early = first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example"));
    long to = long(time(nullptr));
    INFO("early retry: '" << early << "', ticket " << t << ", clock " << from << ".." << to);
    CHECK(greylist_early_retry(early, t - to, t - from));
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "other@d.example")) ==
          "defer greylisting is active");
    sleep_ms(3100);
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) == "dunno");
    // The pass deleted the ticket and created the autowl entry with count 1 for 60 days.
    CHECK(rs().raw("EXISTS " + tkey) == "0");
    CHECK(rs().raw("GET awl-,s.example,192.0.2.1") == "1");
    long awl_ttl = num(rs().raw("TTL awl-,s.example,192.0.2.1"));
    CHECK(awl_ttl > 60L * 86400 - 30);
    CHECK(awl_ttl <= 60L * 86400);
    CHECK(first(send(rig.port, "a@s.example", "192.0.2.1", "r@d.example")) ==
          "defer greylisting is active");
    CHECK(rig.d->wait_log("tickets in Redis, autowl in Redis", 1000));
}

TEST_CASE("Greylist through Redis Sentinel: the master it names holds the tickets",
          "[it_greylist_redis]")
{
    rpdtest::RedisServer master;
    rpdtest::RedisServer sentinel(master.port(), "mymaster");
    Rig rig(greylist("gl", "") + action_plugin("pass", "dunno"),
            "<Connection redis>\n  module = \"Redis\"\n  sentinels = \"127.0.0.1:" +
                std::to_string(sentinel.port()) + "\"\n  service = \"mymaster\"\n" +
                "</Connection>\n");
    CHECK(rig.d->wait_log("master 'mymaster' is 127.0.0.1:" + std::to_string(master.port()),
                          5000));
    CHECK(first(send(rig.port, "s@s.example", "192.0.2.9", "r@d.example")) ==
          "defer greylisting is active");
    CHECK(master.raw("EXISTS s@s.example,192.0.2.9,r@d.example") == "1");
    CHECK(rs().raw("EXISTS s@s.example,192.0.2.9,r@d.example") == "0");
}

TEST_CASE("auto-whitelist after autowl_threshold passes; refresh by INCR and EXPIRE",
          "[it_greylist_redis]")
{
    REQUIRE(rs().raw("FLUSHALL") == "OK");
    Rig rig(greylist("gl", "    min_retry_wait = 1\n    autowl_threshold = 2\n"
                           "    autowl_expire_days = 2\n    mode = \"dunno\"\n") +
            action_plugin("after", "reject not reached"));
    for (int pass = 0; pass < 2; pass++) {
        std::string rcpt = "r" + std::to_string(pass) + "@d.example";
        CHECK(first(send(rig.port, "b@t.example", "198.51.100.7", rcpt)) ==
              "defer greylisting is active");
        sleep_ms(2100);
        CHECK(first(send(rig.port, "b@t.example", "198.51.100.7", rcpt)) == "dunno");
    }
    CHECK(rs().raw("GET awl-,t.example,198.51.100.7") == "2");
    // Whitelisted: a new triplet of the pair passes at once, and the entry is refreshed.
    REQUIRE(rs().raw("EXPIRE awl-,t.example,198.51.100.7 100") == "1");
    CHECK(first(send(rig.port, "c@t.example", "198.51.100.7", "new@d.example")) == "dunno");
    CHECK(rs().raw("GET awl-,t.example,198.51.100.7") == "3");
    long ttl = num(rs().raw("TTL awl-,t.example,198.51.100.7"));
    CHECK(ttl > 2 * 86400 - 30);
    CHECK(rs().raw("EXISTS c@t.example,198.51.100.7,new@d.example") == "0");
}

TEST_CASE("a Redis ticket store without the auto-whitelist needs no SQL; AUTH and SELECT",
          "[it_greylist_redis]")
{
    rpdtest::RedisServer locked("pw-1");
    std::string conn = "<Connection rd>\n  module = \"Redis\"\n  server = \"" + locked.addr() +
                       "\"\n  password = \"pw-1\"\n  db = 5\n</Connection>\n";
    Rig rig(greylist("gl", "    use_autowl = 0\n    redis = \"rd\"\n", false) +
                action_plugin("pass", "dunno"),
            conn);
    CHECK(first(send(rig.port, "d@u.example", "203.0.113.9", "r@d.example")) ==
          "defer greylisting is active");
    CHECK(num(locked.raw("GET d@u.example,203.0.113.9,r@d.example", 5)) > 0);
    CHECK(locked.raw("DBSIZE", 0) == "0");
}

TEST_CASE("two daemons share tickets and the auto-whitelist through one Redis",
          "[it_greylist_redis]")
{
    REQUIRE(rs().raw("FLUSHALL") == "OK");
    std::string body = greylist("gl", "    min_retry_wait = 1\n") + action_plugin("pass", "dunno");
    Rig a(body), b(body);
    long sent = long(time(nullptr));
    CHECK(first(send(a.port, "e@v.example", "192.0.2.50", "r@d.example")) ==
          "defer greylisting is active");
    long t = num(rs().raw("GET e@v.example,192.0.2.50,r@d.example"));
    CHECK(t >= sent + 1);
    long from = long(time(nullptr));
    std::string early = first(send(b.port, "e@v.example", "192.0.2.50", "r@d.example"));
    long to = long(time(nullptr));
    INFO("b's early retry: '" << early << "', ticket " << t << ", clock " << from << ".." << to);
    CHECK(greylist_early_retry(early, t - to, t - from));
    sleep_ms(2100);
    CHECK(first(send(b.port, "e@v.example", "192.0.2.50", "r@d.example")) == "dunno");
    CHECK(rs().raw("GET awl-,v.example,192.0.2.50") == "1");
    // b deleted the ticket: a greylists the triplet again.
    CHECK(first(send(a.port, "e@v.example", "192.0.2.50", "r@d.example")) ==
          "defer greylisting is active");
}

TEST_CASE("Redis down: the plugin fails (on_error decides), and recovers by itself",
          "[it_greylist_redis]")
{
    rpdtest::RedisServer own;
    std::string conn = "<Connection redis>\n  module = \"Redis\"\n  server = \"" + own.addr() +
                       "\"\n</Connection>\n";
    Rig rig(greylist("gl", "    on_error = \"continue\"\n") + action_plugin("pass", "dunno"), conn);
    CHECK(first(send(rig.port, "f@w.example", "192.0.2.60", "r@d.example")) ==
          "defer greylisting is active");
    own.kill_now();
    CHECK(first(send(rig.port, "f@w.example", "192.0.2.61", "r@d.example")) == "dunno");
    CHECK(rig.d->wait_log("redis redis: ", 3000));
    REQUIRE(own.start());
    // Greylisting through Redis again: the first request that gets through creates the ticket.
    // One whose SET reached Redis but whose reply was lost with the connection leaves the ticket
    // behind, and the next one is deferred with its wait time appended: that is recovery too.
    std::string last;
    bool back = within(15000, [&] {
        last = first(send(rig.port, "f@w.example", "192.0.2.62", "r@d.example"));
        return last.rfind("defer greylisting is active", 0) == 0;
    });
    INFO("last reply: " << last);
    CHECK(back);
    CHECK(own.raw("EXISTS f@w.example,192.0.2.62,r@d.example") == "1");
}

TEST_CASE("start-up errors: missing or wrong connections, Sentinel", "[it_greylist_redis]")
{
    uint16_t port = free_tcp_port();
    Daemon none(Impl::Ring, simple_config(port, greylist("gl", "")));
    RunResult rr = none.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "no connection redis configured!"));
    Daemon wrong(Impl::Ring,
                 simple_config(port, greylist("gl", ""),
                               "<Connection redis>\n  module = \"Memcached\"\n</Connection>\n"));
    rr = wrong.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "connection redis is not a Redis connection"));
    Daemon sentinel(Impl::Ring,
                    simple_config(port, greylist("gl", ""),
                                  "<Connection redis>\n  module = \"Redis\"\n  sentinels = "
                                  "\"127.0.0.1:26379, sentinel.example:0\"\n  service = "
                                  "\"mymaster\"\n</Connection>\n"));
    rr = sentinel.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, ":2: could not open connection redis: bad port in redis "
                                    "server 'sentinel.example:0'"));
    Daemon bad(Impl::Ring,
               simple_config(port,
                             "  <Plugin gl>\n    module = \"Greylist\"\n    <Ticket>\n"
                             "      module = \"Nope\"\n    </Ticket>\n  </Plugin>\n",
                             redis_conn()));
    rr = bad.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "unknown store"));
}
