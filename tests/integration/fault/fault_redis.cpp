// fault_redis.cpp: Redis killed and restarted under a steady load of 64 connections (issue 8),
// with a real redis-server on loopback (tests/unit/redis/redis_server.h): Greylist keeps its
// tickets in Redis (<Ticket> module = "Redis", use_autowl = 0) with on_error = continue, so the
// configured degradation is "dunno" while Redis is down. Contract: every request is answered
// during the outage, only with the greylist's defer or the degradation's dunno (no connection
// closed, none timed out); after the restart greylisting is back within the Redis client's
// longest reconnect backoff (5 s, engine/redis.c) + 1 s. Recovery is measured from the restart
// to the first request started after it that got the healthy answer (defer).
// The Redis session cache, killed and restarted the same way: each mail is two RCPT requests of
// one instance that score 1 each, so the second answer of a mail carries "X-Score: 2" while the
// session is kept; with Redis down requests go on with sessions that are not kept (every
// answer "X-Score: 1", logged once per shard), and "X-Score: 2" is back within the backoff
// max + 1 s. Figures: one JSON line per fault (bench/fault/matrix.sh).
#include "fault_load.h"
#include "itcommon.h"
#include "../../unit/redis/redis_server.h"

using namespace itest;
using namespace faultit;

namespace
{

/* Its own triplet (sender) per request: every request is a new ticket, so a healthy answer is
 * always the greylist's defer. */
std::string triplet_req(uint64_t seq)
{
    return postfix_req(seq, "r");
}

/* One run: the load on port for 2.5 s, Redis killed for 3 s, started again, 7 s more. The
 * windows: before ends 250 ms ahead of the kill (requests in flight when Redis dies fail over,
 * as they should, and belong to "during"), during runs to the restart, after from it. */
struct Run {
    std::vector<Sample> s;
    int64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    Window before, during, after;

    /* Start of the first request started after the restart that got a reply with healthy(action)
     * true, minus the restart's time; -1 for none. */
    int64_t recovery_ms(const std::function<bool(const std::string &)> &healthy) const
    {
        int64_t best = -1;
        for (auto &x : s)
            if (x.start_ms >= t2 && x.outcome == Outcome::Reply && healthy(x.action) &&
                (best < 0 || x.start_ms < best))
                best = x.start_ms;
        return best < 0 ? -1 : best - t2;
    }
    std::string json() const
    {
        return Load::json("before", before) + "," + Load::json("during", during) + "," +
               Load::json("after", after) + ",\"down_ms\":" + std::to_string(t2 - t1);
    }
};

Run kill_and_restart(rpdtest::RedisServer &rs, uint16_t port, const Load::MakeRequest &make)
{
    Run r;
    Load load(port, 64, make);
    load.start();
    sleep_ms(500);
    r.t0 = now_ms();
    sleep_ms(2000);
    r.t1 = now_ms();
    rs.kill_now();
    sleep_ms(3000);
    r.t2 = now_ms();
    REQUIRE(rs.start());
    sleep_ms(7000);
    r.t3 = now_ms();
    load.stop();
    r.s = load.snapshot();
    r.before = Load::window(r.s, r.t0, r.t1 - 250);
    r.during = Load::window(r.s, r.t1 - 250, r.t2);
    r.after = Load::window(r.s, r.t2, r.t3);
    return r;
}

/* Answers of the requests started in [t0, t1) that saw their mail's earlier score (kept). */
size_t kept_sessions(const std::vector<Sample> &s, int64_t t0, int64_t t1)
{
    size_t n = 0;
    for (auto &x : s)
        n += x.start_ms >= t0 && x.start_ms < t1 && x.outcome == Outcome::Reply &&
             x.action == "PREPEND X-Score: 2";
    return n;
}

} // namespace

TEST_CASE("backends: Redis killed and restarted", "[fault][redis]")
{
    rpdtest::RedisServer rs;
    uint16_t port = free_tcp_port();
    std::string conf = simple_config(
        port,
        "  <Plugin greylist>\n    module = \"Greylist\"\n    use_autowl = 0\n"
        "    on_error = \"continue\"\n    <Ticket>\n      module = \"Redis\"\n    </Ticket>\n"
        "  </Plugin>\n" +
            action_plugin("pass", "dunno"),
        "shards = 2\n<Connection redis>\n  module = \"Redis\"\n  server = \"" + rs.addr() +
            "\"\n</Connection>\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    Run r = kill_and_restart(rs, port, triplet_req);
    int64_t recovery =
        r.recovery_ms([](const std::string &a) { return action_word(a) == "defer"; });
    print_json("redis_restart", r.json() + ",\"recovery_ms\":" + std::to_string(recovery));
    std::string notes;
    for (auto &l : split_lines(d->log()))
        if (l.find("greylisting is active") == std::string::npos && notes.size() < 4000)
            notes += l + "\n";
    INFO(notes);
    REQUIRE(d->alive());
    CHECK(r.before.answered > 100);
    CHECK(r.before.actions["defer"] == r.before.answered);
    CHECK(r.during.answered > 0);
    CHECK(r.during.closed + r.during.timeouts + r.during.connect_failed == 0);
    CHECK(r.during.actions["defer"] + r.during.actions["dunno"] == r.during.answered);
    CHECK(r.during.actions["dunno"] > 0); /* the degradation was used */
    CHECK(r.after.closed + r.after.timeouts + r.after.connect_failed == 0);
    CHECK(r.after.actions["defer"] + r.after.actions["dunno"] == r.after.answered);
    CHECK(recovery >= 0);
    CHECK(recovery <= 6000); /* backoff_max 5 s + 1 s */
    CHECK(d->stop() == 0);
}

TEST_CASE("backends: the Redis session cache killed and restarted", "[fault][redis_scache]")
{
    rpdtest::RedisServer rs;
    uint16_t port = free_tcp_port();
    std::string conf = simple_config(
        port,
        "  <Plugin rcpt>\n    module = \"Condition\"\n    key = \"protocol_state\"\n"
        "    match = \"RCPT\"\n    score = 1\n  </Plugin>\n"
        "  <Plugin show>\n    module = \"ScoreAction\"\n    threshold = -1\n"
        "    action = \"PREPEND X-Score: %SCORE%\"\n  </Plugin>\n",
        "shards = 2\n<Connection sessions>\n  module = \"Redis\"\n  server = \"" + rs.addr() +
            "\"\n</Connection>\n<SessionCache>\n  module = \"Redis\"\n  redis = \"sessions\"\n"
            "</SessionCache>\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    Run r = kill_and_restart(rs, port, [](uint64_t seq) {
        return encode_request(
            postfix_request({{"instance", "c" + std::to_string(seq / 2)},
                             {"recipient", "r" + std::to_string(seq % 2) + "@x"}}));
    });
    /* Down for sure: from 250 ms after the kill (requests in flight then may still be kept). */
    size_t kept_down = kept_sessions(r.s, r.t1 + 250, r.t2),
           kept_before = kept_sessions(r.s, r.t0, r.t1 - 250);
    int64_t recovery =
        r.recovery_ms([](const std::string &a) { return a == "PREPEND X-Score: 2"; });
    print_json("redis_scache_restart",
               r.json() + ",\"recovery_ms\":" + std::to_string(recovery) + ",\"kept_before\":" +
                   std::to_string(kept_before) + ",\"kept_down\":" + std::to_string(kept_down) +
                   ",\"kept_after\":" + std::to_string(kept_sessions(r.s, r.t2, r.t3)));
    INFO(d->log().substr(0, 4000));
    REQUIRE(d->alive());
    CHECK(r.before.answered > 100);
    CHECK(r.before.actions["prepend"] == r.before.answered);
    CHECK(kept_before > 0);
    CHECK(r.during.answered > 0);
    CHECK(r.during.closed + r.during.timeouts + r.during.connect_failed == 0);
    CHECK(r.during.actions["prepend"] == r.during.answered);
    CHECK(kept_down == 0); /* the degradation: sessions not kept */
    CHECK(r.after.closed + r.after.timeouts + r.after.connect_failed == 0);
    CHECK(recovery >= 0);
    CHECK(recovery <= 6000); /* backoff_max 5 s + 1 s */
    CHECK(log_lines_with(*d, "requests go on with sessions that are not kept") >= 1);
    CHECK(d->stop() == 0);
}
