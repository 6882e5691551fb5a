// it_scache_redis.cpp: the Redis session cache (spec 10.3, 16 #14, #19) with two ringpolicyd
// daemons (two shards each) sharing one redis-server: requests of one instance served
// alternately by the two daemons see each other's session (the score adds up), stored under
// INSTANCE with the lock lock_INSTANCE released; concurrent requests of one instance on both
// daemons lose no update (the lock); `expire` as the key's TTL; a lock held elsewhere beyond
// the retries fails the request as 2.05 does; Redis killed: requests go on with sessions that
// are not kept (logged once per shard), and the cache recovers by itself; start-up errors.
#include "itcommon.h"
#include "ops/opscommon.h" // write_text

#include "../../unit/redis/redis_server.h"

using namespace itest;

namespace
{

rpdtest::RedisServer &rs()
{
    static rpdtest::RedisServer s;
    return s;
}

std::string config(uint16_t port, const std::string &cache_opts, int db)
{
    std::string body = "  <Plugin rcpt>\n    module = \"Condition\"\n    key = \"protocol_state\"\n"
                       "    match = \"RCPT\"\n    score = 1\n  </Plugin>\n"
                       "  <Plugin show>\n    module = \"ScoreAction\"\n    threshold = -1\n"
                       "    action = \"PREPEND X-Score: %SCORE%\"\n  </Plugin>\n";
    std::string globals = "shards = 2\n<Connection sessions>\n  module = \"Redis\"\n"
                          "  server = \"" +
                          rs().addr() + "\"\n  db = " + std::to_string(db) +
                          "\n</Connection>\n<SessionCache>\n  module = \"Redis\"\n"
                          "  redis = \"sessions\"\n" +
                          cache_opts + "</SessionCache>\n";
    return simple_config(port, body, globals);
}

std::vector<std::string> rcpt(const std::string &instance, int n)
{
    return postfix_request({{"instance", instance}, {"recipient", "r" + std::to_string(n) + "@x"}});
}

std::string header(int score)
{
    return "PREPEND X-Score: " + std::to_string(score);
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

struct Pair {
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port();
    std::unique_ptr<Daemon> d1, d2;
    explicit Pair(const std::string &opts = "", int db = 4)
    {
        d1 = start_ring(config(p1, opts, db), Endpoint::tcp(p1));
        d2 = start_ring(config(p2, opts, db), Endpoint::tcp(p2));
    }
    uint16_t port(int i) const
    {
        return i % 2 ? p2 : p1;
    }
};

} // namespace

TEST_CASE("two daemons serving alternate requests of one instance share its session",
          "[it_scache_redis]")
{
    Pair pr;
    std::string inst = "alt" + std::to_string(now_ms());
    for (int i = 0; i < 8; i++) {
        INFO("request " << i << " on daemon " << (i % 2 + 1));
        CHECK(first(ask(Endpoint::tcp(pr.port(i)), rcpt(inst, i))) == header(i + 1));
    }
    CHECK(first(ask(Endpoint::tcp(pr.p2), rcpt(inst + "b", 0))) == header(1));
    // Stored in our format under INSTANCE with expire (300 s by default), lock released.
    CHECK(rs().raw("GETRANGE " + inst + " 0 4", 4) == "RPDS1");
    long ttl = std::stol(rs().raw("TTL " + inst, 4));
    CHECK(ttl > 290);
    CHECK(ttl <= 300);
    CHECK(rs().raw("EXISTS lock_" + inst, 4) == "0");
    // Without an instance: no session at all.
    CHECK(first(ask(Endpoint::tcp(pr.p1), postfix_request({{"instance", "\x7f"}}))) == header(1));
    CHECK(first(ask(Endpoint::tcp(pr.p1), postfix_request({{"instance", "\x7f"}}))) == header(1));
    pr.d1->stop();
    pr.d2->stop();
}

TEST_CASE("concurrent requests of one instance on both daemons lose no update",
          "[it_scache_redis]")
{
    Pair pr(" lock_wait = 2000\n lock_max_retry = 200\n");
    std::string inst = "conc" + std::to_string(now_ms());
    const int conns = 8, rounds = 3;
    std::vector<Conn> cs;
    for (int i = 0; i < conns; i++) {
        cs.emplace_back(Endpoint::tcp(pr.port(i)));
        REQUIRE(cs.back().ok());
    }
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < conns; i++)
            REQUIRE(cs[size_t(i)].send(encode_request(rcpt(inst, round * conns + i))));
        for (int i = 0; i < conns; i++)
            CHECK(cs[size_t(i)].read_reply(20000).ok());
    }
    CHECK(first(ask(Endpoint::tcp(pr.p1), rcpt(inst, 999))) == header(conns * rounds + 1));
    pr.d1->stop();
    pr.d2->stop();
}

TEST_CASE("expire, and a lock held elsewhere fails the request as in 2.05", "[it_scache_redis]")
{
    Pair pr(" expire = 2\n lock_max_retry = 3\n");
    std::string inst = "exp" + std::to_string(now_ms());
    CHECK(first(ask(Endpoint::tcp(pr.p1), rcpt(inst, 0))) == header(1));
    CHECK(first(ask(Endpoint::tcp(pr.p2), rcpt(inst, 1))) == header(2));
    sleep_ms(2200);
    CHECK(first(ask(Endpoint::tcp(pr.p1), rcpt(inst, 2))) == header(1));
    // Another holder's lock (e.g. a host that died holding it) until lock_timeout.
    REQUIRE(rs().raw("SET lock_" + inst + " 1 EX 5", 4) == "OK");
    Reply r = ask(Endpoint::tcp(pr.p2), rcpt(inst, 3));
    CHECK(r.status == Reply::CLOSED); // no reply on errors, as 2.05 (error_action unset)
    CHECK(pr.d2->wait_log("could not acquire lock for session " + inst, 2000));
    pr.d1->stop();
    pr.d2->stop();
}

TEST_CASE("Redis down: sessions not kept, logged once; recovery by itself", "[it_scache_redis]")
{
    rpdtest::RedisServer own;
    uint16_t p1 = free_tcp_port();
    std::string cfg = config(p1, "", 0);
    cfg.replace(cfg.find(rs().addr()), rs().addr().size(), own.addr());
    auto d = start_ring(cfg, Endpoint::tcp(p1));
    std::string inst = "down" + std::to_string(now_ms());
    CHECK(first(ask(Endpoint::tcp(p1), rcpt(inst, 0))) == header(1));
    CHECK(first(ask(Endpoint::tcp(p1), rcpt(inst, 1))) == header(2));
    own.kill_now();
    for (int i = 0; i < 6; i++) // answered, every time with a fresh session
        CHECK(first(ask(Endpoint::tcp(p1), rcpt(inst, i))) == header(1));
    REQUIRE(own.start());
    bool kept = false;
    for (int i = 0; i < 100 && !kept; i++) {
        std::string a = first(ask(Endpoint::tcp(p1), rcpt(inst + "r", 0)));
        std::string b = first(ask(Endpoint::tcp(p1), rcpt(inst + "r", 1)));
        kept = a == header(1) && b == header(2);
        if (!kept) {
            own.raw("DEL " + inst + "r");
            sleep_ms(100);
        }
    }
    CHECK(kept);
    std::string log = d->log();
    size_t outages = count_of(log, "requests go on with sessions that are not kept");
    CHECK(outages >= 1);
    CHECK(outages <= 2); // once per shard at most
    CHECK(contains(log, "answers again"));
    d->stop();
}

TEST_CASE("start-up errors of the Redis session cache", "[it_scache_redis]")
{
    uint16_t port = free_tcp_port();
    std::string body = action_plugin("a", "dunno");
    Daemon none(Impl::Ring,
                simple_config(port, body, "<SessionCache>\n  module = \"Redis\"\n</SessionCache>\n"));
    RunResult rr = none.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, ":2: SessionCache: no connection redis configured!"));
    Daemon wrong(Impl::Ring,
                 simple_config(port, body,
                               "<Connection redis>\n  module = \"Memcached\"\n</Connection>\n"
                               "<SessionCache>\n  module = \"Redis\"\n</SessionCache>\n"));
    rr = wrong.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, "connection redis is not a Redis connection"));
    Daemon bad(Impl::Ring,
               simple_config(port, body,
                             "<Connection redis>\n  module = \"Redis\"\n</Connection>\n"
                             "<SessionCache>\n  module = \"Redis\"\n  expire = 0\n"
                             "</SessionCache>\n"));
    rr = bad.run({"--check"});
    CHECK(rr.status != 0);
    CHECK(contains(rr.out + rr.err, ":7: SessionCache option expire must be a whole number"));
    Daemon ok(Impl::Ring,
              simple_config(port, body,
                            "<Connection redis>\n  module = \"Redis\"\n</Connection>\n"
                            "<SessionCache>\n  module = \"Redis\"\n  lock_wait = 100\n"
                            "</SessionCache>\n"));
    rr = ok.run({"--check"});
    INFO(rr.out << rr.err);
    CHECK(rr.status == 0);
}

TEST_CASE("a reload keeps the Redis session cache working; switching modules is refused",
          "[it_scache_redis]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(config(port, "", 5), Endpoint::tcp(port));
    std::string inst = "hup" + std::to_string(now_ms());
    CHECK(first(ask(Endpoint::tcp(port), rcpt(inst, 0))) == header(1));
    // The same module with other options: the new generation opens its own cache.
    write_text(d->config_path(), config(port, " expire = 100\n", 5));
    REQUIRE(d->send_signal(SIGHUP) == 0);
    CHECK(d->wait_log("reload: configuration " + d->config_path() + " loaded", 10000));
    bool seen = false; // old shards may still answer for a moment
    for (int i = 1; i < 50 && !seen; i++) {
        std::string a = first(ask(Endpoint::tcp(port), rcpt(inst, i)));
        seen = a == header(i + 1) && std::stol(rs().raw("TTL " + inst, 5)) <= 100;
        if (!seen)
            sleep_ms(50);
    }
    CHECK(seen);
    // To the in-process cache: refused, the running configuration stays.
    std::string mem = config(port, "", 5);
    mem.replace(mem.find("module = \"Redis\"\n  redis"), 16, "module = \"Memory\"");
    write_text(d->config_path(), mem);
    REQUIRE(d->send_signal(SIGHUP) == 0);
    bool refused = d->wait_log("changes between Redis and another module only with a restart", 10000);
    INFO(d->log());
    CHECK(refused);
    CHECK(d->alive());
    d->stop();
}
