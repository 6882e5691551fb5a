// scache_redis_test.cpp: the Redis session cache (policy/scache_redis.c) against a real
// redis-server: options and start-up errors, a new session stored under INSTANCE with its TTL
// and its lock deleted, read back on the other shard, lock contention between two shards (the
// waiter gets the holder's session once it is released), giving up after lock_max_retry - 1
// attempts in about the total wait of 2.05, lock_max_retry 1 (no attempt), cancel while
// waiting (the holder's lock stays), Redis killed (unavailable, counted) and back.
#include "../mc/mc_rig.h"
#include "redis_server.h"

extern "C" {
#include "config.h"
#include "scache_redis.h"
}

#include <map>

using namespace mcrig;

namespace
{

pol_scache_redis *g_sc;

rpdtest::RedisServer &rserver()
{
    static rpdtest::RedisServer s;
    return s;
}

struct Got {
    int res = -1; // -1: done has not run
    std::string value;
    pol_scache_redis_lock *l = nullptr;
    std::chrono::steady_clock::time_point at;
};

void sc_done(void *ctx, pol_scache_redis_lock *l, pol_scache_mc_result r, const char *v,
             size_t len)
{
    Got *g = static_cast<Got *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    g->res = r;
    g->value = v ? std::string(v, len) : std::string();
    g->l = l;
    g->at = std::chrono::steady_clock::now();
}

bool got(const Got &g)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return g.res != -1;
}

std::string parse(const std::string &opts, pol_scache_redis_config *out)
{
    std::string text = "<SessionCache>\n module = \"Redis\"\n" + opts + "</SessionCache>\n";
    pol_cfg_error e{};
    pol_cfg_parser *p = pol_cfg_parser_new("sc.conf", ".");
    pol_cfg *cfg = nullptr;
    REQUIRE(pol_cfg_parser_feed(p, text.data(), text.size(), &e) == 0);
    REQUIRE(pol_cfg_parser_finish(p, &cfg, &e) == 0);
    const pol_cfg_node *b = pol_cfg_root(cfg)->children;
    REQUIRE(b != nullptr);
    char err[512] = "";
    int rc = pol_scache_redis_parse(b, out, err, sizeof(err));
    static std::string conn; // the block goes away with cfg
    conn = out->conn;
    out->conn = conn.c_str();
    pol_cfg_free(cfg);
    return rc == 0 ? "" : err;
}

std::string conn_text()
{
    return "<Connection redis>\n module = \"Redis\"\n server = \"" + rserver().addr() +
           "\"\n db = 6\n</Connection>\n";
}

struct ScRig {
    std::unique_ptr<Rig> rig;
    explicit ScRig(const std::string &opts, unsigned shards = 2)
    {
        pol_scache_redis_config cfg{};
        std::string err = parse(opts, &cfg);
        INFO(err);
        REQUIRE(err.empty());
        /* On the shard threads: no Catch2 assertion there (not thread-safe), a count. */
        g_start_failures = 0;
        g_extra_start = [](eng_shard *sh) {
            if (pol_scache_redis_shard_start(g_sc, sh, 64) != 0)
                g_start_failures++;
        };
        g_extra_stop = [](eng_shard *sh) { pol_scache_redis_shard_stop(g_sc, sh); };
        rig = std::make_unique<Rig>(conn_text(), shards, [&] {
            char e[256] = "";
            g_sc = pol_scache_redis_open(g_srv, &cfg, e, sizeof(e));
            INFO(e);
            REQUIRE(g_sc != nullptr);
        });
        REQUIRE(g_start_failures == 0);
    }
    ~ScRig()
    {
        rig.reset();
        pol_scache_redis_close(g_sc);
        g_sc = nullptr;
        g_extra_start = nullptr;
        g_extra_stop = nullptr;
    }
    int acquire(unsigned shard, const std::string &inst, Got *g)
    {
        int rc = 99;
        rig->on(shard, [&](eng_shard *sh) {
            pol_scache_redis_lock *l = nullptr;
            rc = pol_scache_redis_acquire(g_sc, sh, inst.data(), inst.size(), sc_done, g, &l);
        });
        return rc;
    }
    Got acquire_wait(unsigned shard, const std::string &inst)
    {
        Got g;
        REQUIRE(acquire(shard, inst, &g) == 0);
        REQUIRE(eventually([&] { return got(g); }, 10000));
        return g;
    }
    void release(unsigned shard, pol_scache_redis_lock *l,
                 const std::vector<std::pair<std::string, std::string>> &entries)
    {
        rig->on(shard, [&](eng_shard *) {
            static char mem[65536];
            pol_arena a;
            pol_arena_init(&a, mem, sizeof mem);
            pol_session s;
            pol_sess_init(&s);
            for (const auto &e : entries)
                REQUIRE(pol_sess_set(&s, &a, e.first.data(), e.first.size(), e.second.data(),
                                     e.second.size()) == 0);
            std::string buf(pol_scache_mc_encoded_bytes(&s), '\0');
            pol_scache_mc_encode(&s, &buf[0]);
            pol_scache_redis_release(l, buf.data(), buf.size());
        });
    }
    pol_scache_mc_stats stats(unsigned shard)
    {
        pol_scache_mc_stats st{};
        rig->on(shard, [&](eng_shard *sh) { pol_scache_redis_get_stats(g_sc, sh, &st); });
        return st;
    }
};

std::map<std::string, std::string> decode(const std::string &v)
{
    static char mem[65536];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    REQUIRE(pol_scache_mc_decode(&s, &a, v.data(), v.size()) == 0);
    std::map<std::string, std::string> out;
    for (const pol_sess_ent *e = s.head; e; e = e->next)
        if (e->live)
            out[std::string(e->key, e->key_len)] = std::string(e->val, e->val_len);
    return out;
}

std::string unique(const std::string &base)
{
    static int n = 0;
    return base + "-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

} // namespace

TEST_CASE("options: defaults, bounds and errors", "[scache_redis]")
{
    pol_scache_redis_config c{};
    CHECK(parse("", &c).empty());
    CHECK(std::string(c.conn) == "redis");
    CHECK(c.expire_s == 300);
    CHECK(c.lock_wait_us == 50);
    CHECK(c.lock_max_retry == 50);
    CHECK(c.lock_timeout_s == 10);
    CHECK(parse(" redis = \"r2\"\n expire = 1\n lock_timeout = 1\n", &c).empty());
    CHECK(std::string(c.conn) == "r2");
    CHECK(parse(" expire = 0\n", &c) ==
          "sc.conf:3: SessionCache option expire must be a whole number from 1 to 2147483647, "
          "not '0'");
    CHECK(parse(" lock_timeout = x\n", &c).find("sc.conf:3: SessionCache option lock_timeout") ==
          0);
    CHECK(parse(" lock_wait = 1000001\n", &c).find("lock_wait must be") != std::string::npos);
}

TEST_CASE("open: the connection must exist and be Redis", "[scache_redis]")
{
    pol_server *s = nullptr;
    REQUIRE(load("<Connection m>\n module = \"Memcached\"\n</Connection>\n", &s).empty());
    pol_scache_redis_config c{};
    REQUIRE(parse(" redis = \"m\"\n", &c).empty());
    char e[256] = "";
    CHECK(pol_scache_redis_open(s, &c, e, sizeof(e)) == nullptr);
    CHECK(std::string(e) == "connection m is not a Redis connection");
    REQUIRE(parse("", &c).empty());
    CHECK(pol_scache_redis_open(s, &c, e, sizeof(e)) == nullptr);
    CHECK(std::string(e) == "no connection redis configured!");
    pol_server_free(s);
}

TEST_CASE("a new session is stored with its TTL and read back on the other shard",
          "[scache_redis]")
{
    ScRig r(" expire = 120\n");
    std::string inst = unique("new");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    CHECK(rserver().raw("GET lock_" + inst, 6) == "1");
    r.release(0, a.l, {{"_instance", inst}, {"k", std::string("a\0b\r\n", 5)}});
    REQUIRE(eventually([&] { return rserver().raw("EXISTS lock_" + inst, 6) == "0"; }, 5000));
    long ttl = std::stol(rserver().raw("TTL " + inst, 6));
    CHECK(ttl > 110);
    CHECK(ttl <= 120);
    Got b = r.acquire_wait(1, inst);
    REQUIRE(b.res == POL_SCACHE_MC_FOUND);
    CHECK(decode(b.value)["k"] == std::string("a\0b\r\n", 5));
    r.release(1, b.l, {});
    CHECK(r.stats(0).round_trips_saved == 1);
    CHECK(r.stats(1).found == 1);
}

TEST_CASE("lock contention between two shards: the waiter gets the holder's session",
          "[scache_redis]")
{
    ScRig r(" lock_wait = 1000\n lock_max_retry = 50\n");
    std::string inst = unique("contended");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    Got b;
    REQUIRE(r.acquire(1, inst, &b) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(!got(b));
    auto released = std::chrono::steady_clock::now();
    r.release(0, a.l, {{"_instance", inst}, {"from", "shard 0"}});
    REQUIRE(eventually([&] { return got(b); }, 5000));
    REQUIRE(b.res == POL_SCACHE_MC_FOUND);
    CHECK(decode(b.value)["from"] == "shard 0");
    CHECK(b.at - released < std::chrono::milliseconds(500));
    CHECK(r.stats(1).lock_busy >= 2);
    r.release(1, b.l, {});
}

TEST_CASE("giving up after lock_max_retry - 1 attempts; lock_max_retry 1 makes none",
          "[scache_redis]")
{
    SECTION("defaults: about 60 ms")
    {
        ScRig r("");
        std::string inst = unique("busy");
        Got a = r.acquire_wait(0, inst);
        REQUIRE(a.res == POL_SCACHE_MC_NEW);
        auto t0 = std::chrono::steady_clock::now();
        Got b = r.acquire_wait(1, inst);
        CHECK(b.res == POL_SCACHE_MC_LOCK_FAILED);
        CHECK(b.l == nullptr);
        CHECK(b.at - t0 >= std::chrono::milliseconds(58));
        pol_scache_mc_stats st = r.stats(1);
        CHECK(st.lock_busy == 49);
        CHECK(st.lock_failed == 1);
        CHECK(st.locks_held == 0);
        r.release(0, a.l, {});
    }
    SECTION("lock_max_retry = 1")
    {
        ScRig r(" lock_max_retry = 1\n");
        Got b = r.acquire_wait(0, unique("never"));
        CHECK(b.res == POL_SCACHE_MC_LOCK_FAILED);
        CHECK(r.stats(0).lock_busy == 0);
    }
}

TEST_CASE("cancel while waiting: no report, the holder's lock stays", "[scache_redis]")
{
    ScRig r(" lock_wait = 1000\n");
    std::string inst = unique("cancel");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    Got b;
    pol_scache_redis_lock *bl = nullptr;
    r.rig->on(1, [&](eng_shard *sh) {
        REQUIRE(pol_scache_redis_acquire(g_sc, sh, inst.data(), inst.size(), sc_done, &b, &bl) ==
                0);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r.rig->on(1, [&](eng_shard *) { pol_scache_redis_cancel(bl); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(!got(b));
    CHECK(r.stats(1).locks_held == 0);
    CHECK(rserver().raw("GET lock_" + inst, 6) == "1"); // still shard 0's
    r.release(0, a.l, {});
}

TEST_CASE("Redis down: unavailable, counted; recovers by itself", "[scache_redis]")
{
    ScRig r("", 1);
    REQUIRE(r.acquire_wait(0, unique("up")).res == POL_SCACHE_MC_NEW);
    rserver().kill_now();
    Got g = r.acquire_wait(0, unique("down"));
    CHECK(g.res == POL_SCACHE_MC_UNAVAILABLE);
    CHECK(r.stats(0).outages == 1);
    REQUIRE(rserver().start());
    Got back;
    REQUIRE(eventually(
        [&] {
            back = r.acquire_wait(0, unique("back"));
            return back.res == POL_SCACHE_MC_NEW;
        },
        15000));
    r.release(0, back.l, {});
    CHECK(r.stats(0).outages == 1);
}
