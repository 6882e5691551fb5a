// scache_mc_test.cpp: the Memcached session cache (policy/scache_mc.c) against a real memcached:
// options and start-up errors, the serialisation (round trip with NUL and CRLF bytes, foreign
// values refused), a new session stored under the namespace and its lock deleted, the stored
// session read back on the other shard, lock contention between two shards (the waiter gets the
// holder's session once it is released), giving up after lock_max_retry - 1 attempts in about
// the total wait of 2.05, lock_max_retry 1 (no attempt), cancel while waiting, expire, memcached
// killed (unavailable, one outage logged per shard) and restarted (recovers by itself).
#include "mc_rig.h"

extern "C" {
#include "config.h"
#include "scache_mc.h"
}

#include <map>

using namespace mcrig;

namespace
{

pol_scache_mc *g_sc;

struct Got {
    int res = -1; // -1: done has not run
    std::string value;
    pol_scache_mc_lock *l = nullptr;
    std::chrono::steady_clock::time_point at;
};

void sc_done(void *ctx, pol_scache_mc_lock *l, pol_scache_mc_result r, const char *v, size_t len)
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

// The options of a <SessionCache> block given as text.
std::string parse(const std::string &opts, pol_scache_mc_config *out)
{
    std::string text = "<SessionCache>\n module = \"Memcached\"\n" + opts + "</SessionCache>\n";
    pol_cfg_error e{};
    pol_cfg_parser *p = pol_cfg_parser_new("sc.conf", ".");
    pol_cfg *cfg = nullptr;
    REQUIRE(pol_cfg_parser_feed(p, text.data(), text.size(), &e) == 0);
    REQUIRE(pol_cfg_parser_finish(p, &cfg, &e) == 0);
    const pol_cfg_node *b = pol_cfg_root(cfg)->children;
    REQUIRE(b != nullptr);
    char err[512] = "";
    int rc = pol_scache_mc_parse(b, out, err, sizeof(err));
    static std::string conn; // the block goes away with cfg
    conn = out->conn;
    out->conn = conn.c_str();
    pol_cfg_free(cfg);
    return rc == 0 ? "" : err;
}

// A rig with one Memcached connection "memcached" (namespace "sc:") and the session cache on
// every shard.
struct ScRig {
    std::unique_ptr<Rig> rig;
    explicit ScRig(const std::string &opts, unsigned shards = 2)
    {
        pol_scache_mc_config cfg{};
        std::string err = parse(opts, &cfg);
        INFO(err);
        REQUIRE(err.empty());
        /* On the shard threads: no Catch2 assertion there (not thread-safe), a count. */
        g_start_failures = 0;
        g_extra_start = [](eng_shard *sh) {
            if (pol_scache_mc_shard_start(g_sc, sh, 64) != 0)
                g_start_failures++;
        };
        g_extra_stop = [](eng_shard *sh) { pol_scache_mc_shard_stop(g_sc, sh); };
        rig = std::make_unique<Rig>(conn_block("memcached", server().addr(), "sc:"), shards, [&] {
            char e[256] = "";
            g_sc = pol_scache_mc_open(g_srv, &cfg, e, sizeof(e));
            INFO(e);
            REQUIRE(g_sc != nullptr);
        });
        REQUIRE(g_start_failures == 0);
    }
    ~ScRig()
    {
        rig.reset();
        pol_scache_mc_close(g_sc);
        g_sc = nullptr;
        g_extra_start = nullptr;
        g_extra_stop = nullptr;
    }
    int acquire(unsigned shard, const std::string &inst, Got *g)
    {
        int rc = 99;
        rig->on(shard, [&](eng_shard *sh) {
            pol_scache_mc_lock *l = nullptr;
            rc = pol_scache_mc_acquire(g_sc, sh, inst.data(), inst.size(), sc_done, g, &l);
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
    // Releases a held lock, storing the given entries.
    void release(unsigned shard, pol_scache_mc_lock *l,
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
            pol_scache_mc_release(l, buf.data(), buf.size());
        });
    }
    void cancel(unsigned shard, pol_scache_mc_lock *l)
    {
        rig->on(shard, [&](eng_shard *) { pol_scache_mc_cancel(l); });
    }
    pol_scache_mc_stats stats(unsigned shard)
    {
        pol_scache_mc_stats st{};
        rig->on(shard, [&](eng_shard *sh) { pol_scache_mc_get_stats(g_sc, sh, &st); });
        return st;
    }
};

std::map<std::string, std::string> decode(const std::string &v, int *rc = nullptr)
{
    static char mem[65536];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    int r = pol_scache_mc_decode(&s, &a, v.data(), v.size());
    if (rc)
        *rc = r;
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

TEST_CASE("options: defaults, bounds and errors", "[scache_mc]")
{
    pol_scache_mc_config c{};
    REQUIRE(parse("", &c).empty());
    CHECK(std::string(c.conn) == "memcached");
    CHECK(c.expire_s == 300);
    CHECK(c.lock_wait_us == 50);
    CHECK(c.lock_max_retry == 50);
    CHECK(c.lock_timeout_s == 10);
    REQUIRE(parse(" memcached = \"mc2\"\n expire = 0\n lock_wait = 0\n lock_max_retry = 1\n"
                  " lock_timeout = 1\n",
                  &c)
                .empty());
    CHECK(std::string(c.conn) == "mc2");
    CHECK(c.expire_s == 0);
    CHECK(c.lock_max_retry == 1);
    CHECK(parse(" expire = abc\n", &c) ==
          "sc.conf:3: SessionCache option expire must be a whole number from 0 to 4294967295, "
          "not 'abc'");
    CHECK(parse(" lock_timeout = 0\n", &c).find("lock_timeout must be a whole number from 1") !=
          std::string::npos);
    CHECK(parse(" lock_wait = -5\n", &c).find("lock_wait") != std::string::npos);
    CHECK(parse(" lock_wait = 1000001\n", &c).find("lock_wait") != std::string::npos);
    CHECK(parse(" lock_wait = 1000000\n", &c).empty());
}

TEST_CASE("open: the connection must exist and be Memcached", "[scache_mc]")
{
    std::string err = load("<Connection r>\n module = \"Redis\"\n</Connection>\n", &g_srv);
    REQUIRE(err.empty());
    pol_scache_mc_config c{};
    REQUIRE(parse("", &c).empty());
    char e[256] = "";
    CHECK(pol_scache_mc_open(g_srv, &c, e, sizeof(e)) == nullptr);
    CHECK(std::string(e) == "no connection memcached configured!");
    REQUIRE(parse(" memcached = r\n", &c).empty());
    CHECK(pol_scache_mc_open(g_srv, &c, e, sizeof(e)) == nullptr);
    CHECK(std::string(e) == "connection r is not a Memcached connection");
    pol_server_free(g_srv);
    g_srv = nullptr;
}

TEST_CASE("serialisation round trip; foreign values are refused", "[scache_mc]")
{
    static char mem[65536];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    pol_session s;
    pol_sess_init(&s);
    std::vector<std::pair<std::string, std::string>> in = {
        {"_instance", "4F2A.1"},
        {"score", "-2.5"},
        {"bin", std::string("a\0b\r\nEND\r\n", 10)},
        {"", ""},
        {"k", std::string(3000, 'v')}};
    for (const auto &e : in)
        REQUIRE(pol_sess_set(&s, &a, e.first.data(), e.first.size(), e.second.data(),
                             e.second.size()) == 0);
    REQUIRE(pol_sess_del(&s, "score", 5));
    std::string buf(pol_scache_mc_encoded_bytes(&s), '\0');
    pol_scache_mc_encode(&s, &buf[0]);
    CHECK(buf.compare(0, 5, "RPDS1") == 0);
    CHECK(buf.substr(5, 8) == std::string("\0\0\0\x09\0\0\0\x06", 8));
    int rc = 1;
    auto out = decode(buf, &rc);
    CHECK(rc == 0);
    CHECK(out.size() == 4);
    CHECK(out["_instance"] == "4F2A.1");
    CHECK(out["bin"] == std::string("a\0b\r\nEND\r\n", 10));
    CHECK(out[""] == "");
    CHECK(out["k"] == std::string(3000, 'v'));
    CHECK(out.count("score") == 0);
    // Truncated anywhere, a bad magic, a length running past the end: -EINVAL, nothing added.
    for (size_t cut = 0; cut < buf.size(); cut++) {
        if (cut == 5)
            continue; // the magic alone is a valid empty session
        INFO("cut at " << cut);
        bool entry_end = false;
        size_t off = 5;
        while (off < cut) {
            uint32_t kl = uint32_t(uint8_t(buf[off])) << 24 |
                          uint32_t(uint8_t(buf[off + 1])) << 16 |
                          uint32_t(uint8_t(buf[off + 2])) << 8 | uint8_t(buf[off + 3]);
            uint32_t vl = uint32_t(uint8_t(buf[off + 4])) << 24 |
                          uint32_t(uint8_t(buf[off + 5])) << 16 |
                          uint32_t(uint8_t(buf[off + 6])) << 8 | uint8_t(buf[off + 7]);
            off += 8 + kl + vl;
            entry_end = off == cut;
        }
        if (entry_end)
            continue;
        decode(buf.substr(0, cut), &rc);
        CHECK(rc == -EINVAL);
    }
    CHECK(decode("RPDS1").empty());
    decode("\x04\x08{\x06", &rc); // a Perl Storable value
    CHECK(rc == -EINVAL);
    decode("RPDS1\xff\xff\xff\xff\0\0\0\0", &rc);
    CHECK(rc == -EINVAL);
}

TEST_CASE("a new session is stored under the namespace, read back on the other shard",
          "[scache_mc]")
{
    ScRig r("");
    std::string inst = unique("inst new");
    Got g = r.acquire_wait(0, inst);
    REQUIRE(g.res == POL_SCACHE_MC_NEW);
    REQUIRE(g.l != nullptr);
    char enc[ENG_MC_KEY_BYTES_MAX + 1];
    std::string lock = "lock_" + inst;
    size_t n = eng_mc_key_encode("sc:", 3, lock.data(), lock.size(), enc);
    CHECK(server().raw_get(std::string(enc, n)) == "1"); // held
    r.release(0, g.l, {{"_instance", inst}, {"score", "5"}});
    REQUIRE(eventually([&] { return server().raw_get(std::string(enc, n)) == "(none)"; }));
    n = eng_mc_key_encode("sc:", 3, inst.data(), inst.size(), enc);
    auto stored = decode(server().raw_get(std::string(enc, n)));
    CHECK(stored["score"] == "5");
    Got h = r.acquire_wait(1, inst);
    REQUIRE(h.res == POL_SCACHE_MC_FOUND);
    auto back = decode(h.value);
    CHECK(back["_instance"] == inst);
    CHECK(back["score"] == "5");
    r.release(1, h.l, {{"_instance", inst}, {"score", "7"}});
    Got k = r.acquire_wait(0, inst);
    REQUIRE(k.res == POL_SCACHE_MC_FOUND);
    CHECK(decode(k.value)["score"] == "7");
    r.cancel(0, k.l); // unlocks without storing
    Got m = r.acquire_wait(1, inst);
    REQUIRE(m.res == POL_SCACHE_MC_FOUND);
    CHECK(decode(m.value)["score"] == "7");
    r.release(1, m.l, {});
    pol_scache_mc_stats st0 = r.stats(0), st1 = r.stats(1);
    CHECK(st0.created == 1);
    CHECK(st0.found + st1.found == 3);
    // One server: every ADD carries its GET (a retry after a lock still held adds one).
    CHECK(st0.round_trips_saved + st1.round_trips_saved >= 4);
    CHECK(st0.locks_held == 0);
    CHECK(st1.locks_held == 0);
    CHECK(st0.unavailable + st1.unavailable == 0);
}

TEST_CASE("lock contention between two shards: the waiter gets the holder's session", "[scache_mc]")
{
    ScRig r(" lock_wait = 1000\n lock_max_retry = 50\n"); // up to ~1.2 s of retries
    std::string inst = unique("contended");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    Got b;
    REQUIRE(r.acquire(1, inst, &b) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(!got(b)); // waiting on its ring timer; the shard goes on meanwhile
    Got other = r.acquire_wait(1, unique("other")); // the waiting shard serves others
    CHECK(other.res == POL_SCACHE_MC_NEW);
    r.release(1, other.l, {});
    auto released = std::chrono::steady_clock::now();
    r.release(0, a.l, {{"_instance", inst}, {"from", "shard 0"}});
    REQUIRE(eventually([&] { return got(b); }, 5000));
    REQUIRE(b.res == POL_SCACHE_MC_FOUND);
    CHECK(decode(b.value)["from"] == "shard 0");
    CHECK(b.at - released < std::chrono::milliseconds(500));
    CHECK(r.stats(1).lock_busy >= 2);
    r.release(1, b.l, {});
}

TEST_CASE("giving up after lock_max_retry - 1 attempts; lock_max_retry 1 makes none", "[scache_mc]")
{
    SECTION("defaults: about 60 ms")
    {
        ScRig r("");
        std::string inst = unique("busy");
        Got a = r.acquire_wait(0, inst);
        REQUIRE(a.res == POL_SCACHE_MC_NEW);
        auto t0 = std::chrono::steady_clock::now();
        Got b = r.acquire_wait(1, inst);
        auto took = b.at - t0;
        CHECK(b.res == POL_SCACHE_MC_LOCK_FAILED);
        CHECK(b.l == nullptr);
        CHECK(took >= std::chrono::milliseconds(58)); // 2.05: 49 attempts, 58.8 ms of waits
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

TEST_CASE("cancel while waiting: no report, the holder's lock stays", "[scache_mc]")
{
    ScRig r(" lock_wait = 1000\n");
    std::string inst = unique("cancel");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    Got b;
    pol_scache_mc_lock *bl = nullptr;
    r.rig->on(1, [&](eng_shard *sh) {
        REQUIRE(pol_scache_mc_acquire(g_sc, sh, inst.data(), inst.size(), sc_done, &b, &bl) == 0);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r.cancel(1, bl);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(!got(b));
    CHECK(r.stats(1).locks_held == 0);
    char enc[ENG_MC_KEY_BYTES_MAX + 1];
    std::string lock = "lock_" + inst;
    size_t n = eng_mc_key_encode("sc:", 3, lock.data(), lock.size(), enc);
    CHECK(server().raw_get(std::string(enc, n)) == "1"); // still shard 0's
    r.release(0, a.l, {});
}

TEST_CASE("expire: a stored session lives expire seconds", "[scache_mc]")
{
    // memcached's clock ticks in whole seconds: lifetime 2 lives between 1 and 2 seconds.
    ScRig r(" expire = 2\n", 1);
    std::string inst = unique("expire");
    Got a = r.acquire_wait(0, inst);
    r.release(0, a.l, {{"x", "1"}});
    Got b = r.acquire_wait(0, inst);
    REQUIRE(b.res == POL_SCACHE_MC_FOUND);
    r.release(0, b.l, {{"x", "2"}});
    std::this_thread::sleep_for(std::chrono::milliseconds(3100));
    Got c = r.acquire_wait(0, inst);
    CHECK(c.res == POL_SCACHE_MC_NEW);
    r.release(0, c.l, {});
}

TEST_CASE("memcached down: unavailable at once, one outage logged; recovers by itself",
          "[scache_mc]")
{
    ScRig r("", 1);
    std::string inst = unique("down");
    Got a = r.acquire_wait(0, inst);
    REQUIRE(a.res == POL_SCACHE_MC_NEW);
    r.release(0, a.l, {{"k", "v"}});
    server().kill_now();
    REQUIRE(
        eventually([&] { return r.acquire_wait(0, inst).res == POL_SCACHE_MC_UNAVAILABLE; }, 5000));
    for (int i = 0; i < 5; i++)
        CHECK(r.acquire_wait(0, inst).res == POL_SCACHE_MC_UNAVAILABLE);
    pol_scache_mc_stats st = r.stats(0);
    CHECK(st.outages == 1);
    CHECK(st.unavailable >= 6);
    CHECK(st.locks_held == 0);
    REQUIRE(server().start());
    Got b;
    REQUIRE(eventually(
        [&] {
            b = r.acquire_wait(0, inst);
            return b.res == POL_SCACHE_MC_NEW; // memcached lost everything when killed
        },
        15000));
    r.release(0, b.l, {});
    CHECK(r.stats(0).outages == 1);
}
