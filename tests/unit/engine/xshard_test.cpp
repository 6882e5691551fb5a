// xshard_test.cpp: cross-shard messages between 2, 3 and 4 shards on both backends: every
// message arrives once, on the right shard, in order per sender, including far more than one
// ring holds (the overflow list); and a ping-pong of many round trips, which needs the wake of a
// sleeping shard every time.
#include "harness.h"

using namespace th;

namespace
{

struct Msg {
    eng_xmsg x; // first member
    unsigned src, dst;
    uint32_t seq;
};

constexpr unsigned kMaxShards = 4;
constexpr uint32_t kPerPair = 1000; // far beyond one ring (128)

std::vector<Msg> g_msgs;
uint32_t g_next_seq[kMaxShards][kMaxShards]; // [src][dst], touched by dst only
std::atomic<uint64_t> g_delivered{0};
std::atomic<uint64_t> g_misrouted{0};
std::atomic<uint64_t> g_out_of_order{0};
unsigned g_shards;

void on_msg(eng_shard *sh, eng_xmsg *m)
{
    Msg *msg = reinterpret_cast<Msg *>(m);
    if (msg->dst != eng_shard_index(sh))
        g_misrouted++;
    if (msg->seq != g_next_seq[msg->src][msg->dst]++)
        g_out_of_order++;
    g_delivered++;
}

void send_all_msgs(eng_shard *sh, void *, void *)
{
    unsigned src = eng_shard_index(sh);
    for (unsigned dst = 0; dst < g_shards; dst++)
        for (uint32_t i = 0; i < kPerPair; i++) {
            Msg &m = g_msgs[(size_t(src) * g_shards + dst) * kPerPair + i];
            eng_xshard_send(sh, dst, &m.x);
        }
}

} // namespace

TEST_CASE("every message arrives once, in order, across full rings", "[xshard]")
{
    eng_backend backend = ENG_BACKENDS;
    unsigned shards = GENERATE(2u, 3u, 4u);
    DYNAMIC_SECTION(backend_label(backend) << " " << shards << " shards")
    {
        g_shards = shards;
        g_msgs.assign(size_t(shards) * shards * kPerPair, Msg{});
        for (unsigned s = 0; s < shards; s++)
            for (unsigned d = 0; d < shards; d++)
                for (uint32_t i = 0; i < kPerPair; i++) {
                    Msg &m = g_msgs[(size_t(s) * shards + d) * kPerPair + i];
                    m.x.fn = on_msg;
                    m.src = s;
                    m.dst = d;
                    m.seq = i;
                }
        memset(g_next_seq, 0, sizeof(g_next_seq));
        g_delivered = g_misrouted = g_out_of_order = 0;
        Engine eng(echo_config(backend, shards));
        REQUIRE(eng_run_on_shards(eng.e, send_all_msgs, nullptr) == 0);
        uint64_t total = uint64_t(shards) * shards * kPerPair;
        REQUIRE(eventually([&] { return g_delivered == total; }, 10000));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        CHECK(g_delivered == total); // and no more
        CHECK(g_misrouted == 0);
        CHECK(g_out_of_order == 0);
        eng_stats st = eng.stats();
        CHECK(st.xmsg_sent == total);
        CHECK(st.xmsg_received == total);
        CHECK(st.xmsg_overflow > 0);
    }
}

namespace
{

struct Ball {
    eng_xmsg x;
    std::atomic<uint32_t> hits{0};
    uint32_t limit;
};
Ball g_ball;

void ball_hit(eng_shard *sh, eng_xmsg *m)
{
    Ball *b = reinterpret_cast<Ball *>(m);
    uint32_t n = ++b->hits;
    if (n < b->limit)
        eng_xshard_send(sh, eng_shard_index(sh) == 0 ? 1 : 0, &b->x);
}

} // namespace

TEST_CASE("ping-pong wakes the sleeping shard every time", "[xshard]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend, 2));
        g_ball.hits = 0;
        g_ball.limit = 20000;
        g_ball.x.fn = ball_hit;
        REQUIRE(eng_run_on_shards(
                    eng.e,
                    [](eng_shard *sh, void *, void *) {
                        if (eng_shard_index(sh) == 0)
                            eng_xshard_send(sh, 1, &g_ball.x);
                    },
                    nullptr) == 0);
        REQUIRE(eventually([] { return g_ball.hits == g_ball.limit; }, 20000));
        eng_stats st = eng.stats();
        CHECK(st.xmsg_received == g_ball.limit);
        CHECK(st.wakes_sent > 0); // the receiving shard was asleep at least once
    }
}

// Regression: the sender read a message's next link after pushing it from the overflow list
// into the ring, racing with the destination, which owned (and wrote) the message by then; the
// rest of the overflow list could be lost. Many rounds of full rings make the window likely.
TEST_CASE("overflowed messages are never lost (overflow list race)", "[xshard]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        const unsigned shards = 4;
        g_shards = shards;
        g_msgs.assign(size_t(shards) * shards * kPerPair, Msg{});
        Engine eng(echo_config(backend, shards));
        for (int round = 0; round < 20; round++) {
            for (unsigned s = 0; s < shards; s++)
                for (unsigned d = 0; d < shards; d++)
                    for (uint32_t i = 0; i < kPerPair; i++) {
                        Msg &m = g_msgs[(size_t(s) * shards + d) * kPerPair + i];
                        m.x.fn = on_msg;
                        m.src = s;
                        m.dst = d;
                        m.seq = i;
                    }
            memset(g_next_seq, 0, sizeof(g_next_seq));
            g_delivered = g_misrouted = g_out_of_order = 0;
            REQUIRE(eng_run_on_shards(eng.e, send_all_msgs, nullptr) == 0);
            uint64_t total = uint64_t(shards) * shards * kPerPair;
            INFO("round " << round);
            REQUIRE(eventually([&] { return g_delivered == total; }, 10000));
            CHECK(g_out_of_order == 0);
        }
    }
}
