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
    Load load(port, 64, triplet_req);
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    rs.kill_now();
    sleep_ms(3000);
    int64_t t2 = now_ms();
    REQUIRE(rs.start());
    sleep_ms(7000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    /* "before" ends 250 ms ahead of the kill: requests in flight when Redis dies fail over to
     * on_error (dunno), as they should, and belong to "during". */
    Window before = Load::window(s, t0, t1 - 250), during = Load::window(s, t1 - 250, t2),
           after = Load::window(s, t2, t3);
    int64_t healthy = -1;
    for (auto &x : s)
        if (x.start_ms >= t2 && x.outcome == Outcome::Reply && action_word(x.action) == "defer" &&
            (healthy < 0 || x.start_ms < healthy))
            healthy = x.start_ms;
    int64_t recovery = healthy < 0 ? -1 : healthy - t2;
    print_json("redis_restart", Load::json("before", before) + "," +
                                    Load::json("during", during) + "," +
                                    Load::json("after", after) + ",\"down_ms\":" +
                                    std::to_string(t2 - t1) + ",\"recovery_ms\":" +
                                    std::to_string(recovery));
    std::string notes;
    for (auto &l : split_lines(d->log()))
        if (l.find("greylisting is active") == std::string::npos && notes.size() < 4000)
            notes += l + "\n";
    INFO(notes);
    REQUIRE(d->alive());
    CHECK(before.answered > 100);
    CHECK(before.actions["defer"] == before.answered);
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(during.actions["defer"] + during.actions["dunno"] == during.answered);
    CHECK(during.actions["dunno"] > 0); /* the degradation was used */
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(after.actions["defer"] + after.actions["dunno"] == after.answered);
    CHECK(recovery >= 0);
    CHECK(recovery <= 6000); /* backoff_max 5 s + 1 s */
    CHECK(d->stop() == 0);
}

namespace
{

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
    Load load(port, 64, [](uint64_t seq) {
        return encode_request(postfix_request({{"instance", "c" + std::to_string(seq / 2)},
                                               {"recipient", "r" + std::to_string(seq % 2) + "@x"}}));
    });
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    rs.kill_now();
    sleep_ms(3000);
    int64_t t2 = now_ms();
    REQUIRE(rs.start());
    sleep_ms(7000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    Window before = Load::window(s, t0, t1 - 250), during = Load::window(s, t1 - 250, t2),
           after = Load::window(s, t2, t3);
    /* Down for sure: from 250 ms after the kill (requests in flight then may still be kept). */
    size_t kept_down = kept_sessions(s, t1 + 250, t2), kept_before = kept_sessions(s, t0, t1 - 250);
    int64_t healthy = -1;
    for (auto &x : s)
        if (x.start_ms >= t2 && x.outcome == Outcome::Reply && x.action == "PREPEND X-Score: 2" &&
            (healthy < 0 || x.start_ms < healthy))
            healthy = x.start_ms;
    int64_t recovery = healthy < 0 ? -1 : healthy - t2;
    print_json("redis_scache_restart",
               Load::json("before", before) + "," + Load::json("during", during) + "," +
                   Load::json("after", after) + ",\"down_ms\":" + std::to_string(t2 - t1) +
                   ",\"recovery_ms\":" + std::to_string(recovery) + ",\"kept_before\":" +
                   std::to_string(kept_before) + ",\"kept_down\":" + std::to_string(kept_down) +
                   ",\"kept_after\":" + std::to_string(kept_sessions(s, t2, t3)));
    INFO(d->log().substr(0, 4000));
    REQUIRE(d->alive());
    CHECK(before.answered > 100);
    CHECK(before.actions["prepend"] == before.answered);
    CHECK(kept_before > 0);
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(during.actions["prepend"] == during.answered);
    CHECK(kept_down == 0); /* the degradation: sessions not kept */
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(recovery >= 0);
    CHECK(recovery <= 6000); /* backoff_max 5 s + 1 s */
    CHECK(log_lines_with(*d, "requests go on with sessions that are not kept") >= 1);
    CHECK(d->stop() == 0);
}
