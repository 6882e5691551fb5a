// timer_test.cpp: the timer wheel, driven by a test clock (pure: no threads, no sockets), and
// timers on a running shard of each backend. Checks ordering, cancel, re-arm, re-arming from a
// callback, timers more than one wheel revolution away, many timers, and the next-timeout
// computation the loop waits with.
#include "harness.h"

#include <algorithm>
#include <random>

using namespace th;

namespace
{

struct Rec {
    eng_timer t; // first member: the callback casts back
    int id;
    uint64_t fired_at;
    int fired;
};

std::vector<int> g_order;

void rec_fire(eng_shard *sh, eng_timer *t)
{
    Rec *r = reinterpret_cast<Rec *>(t);
    r->fired++;
    r->fired_at = eng_now_ms(sh);
    g_order.push_back(r->id);
}

struct Wheel {
    eng_shard *sh;
    explicit Wheel(uint64_t now) : sh(eng_test_wheel_shard_new(now))
    {
        g_order.clear();
    }
    ~Wheel()
    {
        eng_test_wheel_shard_free(sh);
    }
};

} // namespace

TEST_CASE("timers fire in expiry order, once", "[timer]")
{
    Wheel w(1000);
    Rec r[5];
    uint64_t delays[5] = {50, 10, 30, 20, 40};
    for (int i = 0; i < 5; i++) {
        r[i] = Rec{};
        r[i].id = int(delays[i]);
        eng_timer_init(&r[i].t, rec_fire);
        eng_timer_arm(w.sh, &r[i].t, delays[i]);
        CHECK(eng_timer_armed(&r[i].t));
    }
    CHECK(eng_test_wheel_timeout(w.sh) == 10);
    eng_test_wheel_advance(w.sh, 1009);
    CHECK(g_order.empty());
    eng_test_wheel_advance(w.sh, 1010);
    CHECK(g_order == std::vector<int>{10});
    CHECK(eng_test_wheel_timeout(w.sh) == 10);
    eng_test_wheel_advance(w.sh, 1100); // several due in one turn: still in order
    CHECK(g_order == std::vector<int>{10, 20, 30, 40, 50});
    for (auto &x : r) {
        CHECK(x.fired == 1);
        CHECK_FALSE(eng_timer_armed(&x.t));
        CHECK(x.fired_at == (x.id == 10 ? 1010u : 1100u));
    }
    CHECK(eng_test_wheel_timeout(w.sh) == UINT32_MAX);
}

TEST_CASE("timers armed for the same millisecond fire in arming order", "[timer]")
{
    Wheel w(0);
    Rec r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = Rec{};
        r[i].id = i;
        eng_timer_init(&r[i].t, rec_fire);
        eng_timer_arm(w.sh, &r[i].t, 7);
    }
    eng_test_wheel_advance(w.sh, 7);
    CHECK(g_order == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("cancel and re-arm", "[timer]")
{
    Wheel w(500);
    Rec a{}, b{};
    a.id = 1;
    b.id = 2;
    eng_timer_init(&a.t, rec_fire);
    eng_timer_init(&b.t, rec_fire);
    eng_timer_cancel(w.sh, &a.t); // not armed: no-op
    eng_timer_arm(w.sh, &a.t, 100);
    eng_timer_arm(w.sh, &b.t, 100);
    eng_timer_cancel(w.sh, &a.t);
    CHECK_FALSE(eng_timer_armed(&a.t));
    eng_timer_arm(w.sh, &b.t, 10); // re-arm earlier
    eng_test_wheel_advance(w.sh, 510);
    CHECK(g_order == std::vector<int>{2});
    eng_test_wheel_advance(w.sh, 700);
    CHECK(g_order == std::vector<int>{2}); // b fired once, a never
    CHECK(a.fired == 0);
    CHECK(b.fired == 1);
    eng_timer_arm(w.sh, &b.t, 5); // re-arm after firing
    eng_test_wheel_advance(w.sh, 705);
    CHECK(b.fired == 2);
}

namespace
{
int g_rearm_left;
void rearm_fire(eng_shard *sh, eng_timer *t)
{
    Rec *r = reinterpret_cast<Rec *>(t);
    r->fired++;
    if (--g_rearm_left > 0)
        eng_timer_arm(sh, t, 0); // delay 0 from a callback: the next pass, not this one
}
} // namespace

TEST_CASE("a callback may re-arm its own timer", "[timer]")
{
    Wheel w(0);
    Rec r{};
    eng_timer_init(&r.t, rearm_fire);
    g_rearm_left = 3;
    eng_timer_arm(w.sh, &r.t, 1);
    eng_test_wheel_advance(w.sh, 1);
    CHECK(r.fired == 1);
    CHECK(eng_test_wheel_timeout(w.sh) == 0); // due now: the loop must not sleep
    eng_test_wheel_advance(w.sh, 1);
    CHECK(r.fired == 2);
    eng_test_wheel_advance(w.sh, 2);
    CHECK(r.fired == 3);
    CHECK_FALSE(eng_timer_armed(&r.t));
}

TEST_CASE("timers beyond one wheel revolution (4096 ms) and long stalls", "[timer]")
{
    Wheel w(10000);
    Rec near{}, far{}, farther{};
    near.id = 1;
    far.id = 2;
    farther.id = 3;
    for (Rec *x : {&near, &far, &farther})
        eng_timer_init(&x->t, rec_fire);
    eng_timer_arm(w.sh, &far.t, 4096 + 5); // same slot as near, next revolution
    eng_timer_arm(w.sh, &near.t, 5);
    eng_timer_arm(w.sh, &farther.t, 3 * 4096 + 1);
    eng_test_wheel_advance(w.sh, 10005);
    CHECK(g_order == std::vector<int>{1});
    // The wait may end early for a far timer, but never late.
    CHECK(eng_test_wheel_timeout(w.sh) <= 4096);
    eng_test_wheel_advance(w.sh, 10000 + 4096 + 4);
    CHECK(g_order == std::vector<int>{1});
    eng_test_wheel_advance(w.sh, 10000 + 4096 + 5);
    CHECK(g_order == std::vector<int>{1, 2});
    eng_test_wheel_advance(w.sh, 10000 + 50000); // a stall longer than the wheel
    CHECK(g_order == std::vector<int>{1, 2, 3});
}

TEST_CASE("many timers: each fires once, never early, in order", "[timer]")
{
    Wheel w(0);
    const int n = 20000;
    std::vector<Rec> recs(n);
    std::mt19937 rng(12345);
    std::uniform_int_distribution<uint64_t> d(0, 9000);
    for (int i = 0; i < n; i++) {
        recs[i].id = i;
        eng_timer_init(&recs[i].t, rec_fire);
        eng_timer_arm(w.sh, &recs[i].t, d(rng));
    }
    // Cancel every tenth.
    for (int i = 0; i < n; i += 10)
        eng_timer_cancel(w.sh, &recs[i].t);
    uint64_t now = 0;
    while (now < 9100) {
        uint32_t t = eng_test_wheel_timeout(w.sh);
        if (t == UINT32_MAX)
            break;
        now += t; // 0: something is due now
        eng_test_wheel_advance(w.sh, now);
    }
    uint64_t last = 0;
    for (int id : g_order) {
        CHECK(recs[id].t.expires_ms >= last);
        last = recs[id].t.expires_ms;
    }
    for (int i = 0; i < n; i++) {
        CHECK(recs[i].fired == (i % 10 == 0 ? 0 : 1));
        if (recs[i].fired)
            CHECK(recs[i].fired_at == recs[i].t.expires_ms); // stepped by the timeout: exact
    }
}

// ---------------------------------------------------------------------------------------------
// On a running shard

namespace
{
std::atomic<int> g_loop_fired{0};
std::atomic<uint64_t> g_loop_elapsed{0};
uint64_t g_loop_start;
eng_timer g_loop_timer;
void loop_fire(eng_shard *, eng_timer *)
{
    g_loop_elapsed = eng_clock_ms() - g_loop_start;
    g_loop_fired++;
}
} // namespace

TEST_CASE("a timer on a running shard wakes the loop", "[timer]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend));
        g_loop_fired = 0;
        REQUIRE(eng_run_on_shards(
                    eng.e,
                    [](eng_shard *sh, void *, void *) {
                        eng_timer_init(&g_loop_timer, loop_fire);
                        g_loop_start = eng_clock_ms();
                        eng_timer_arm(sh, &g_loop_timer, 50);
                    },
                    nullptr) == 0);
        REQUIRE(eventually([] { return g_loop_fired == 1; }, 2000));
        CHECK(g_loop_elapsed >= 49);
        CHECK(g_loop_elapsed < 1000);
    }
}
