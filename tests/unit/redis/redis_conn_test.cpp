// redis_conn_test.cpp: the Redis connection (policy/redis.c over engine/redis.c, hiredis async
// on the shard's loop) built from configuration text like the daemon does, against real
// redis-server instances the test starts (redis_server.h): start-up errors naming file and line
// (bad server, bad db, bad sentinels), lookup, commands and every status on 2 shards
// (completion on the issuing shard), 2000 commands pipelined from one loop turn, AUTH and
// SELECT (and a wrong password), a Unix socket, reconnect after redis is killed and restarted,
// a deadline while redis is SIGSTOPped (TIMEOUT, then recovery), shard stop completing what
// is still out with DOWN, and Redis Sentinel against real sentinels (redis-server --sentinel):
// the master named, a dead sentinel skipped, a failover followed, an unknown service.
#include "../mc/mc_rig.h"
#include "redis_server.h"

extern "C" {
#include "redis_conn.h"
}

using namespace mcrig;

namespace
{

struct RRes {
    int st = -1; // -1: done has not run
    int type = -1;
    std::string str;
    long long integer = 0;
    int shard = -1;
};

void on_rdone(void *ctx, eng_redis_status st, const eng_redis_reply *rep)
{
    RRes *r = static_cast<RRes *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    r->st = st;
    r->type = rep->type;
    r->str = rep->str ? std::string(rep->str, rep->len) : std::string();
    r->integer = rep->integer;
    eng_shard *self = eng_shard_self();
    r->shard = self ? int(eng_shard_index(self)) : -1;
}

bool rfinished(const RRes &r)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return r.st != -1;
}

std::vector<std::string> split(const std::string &cmd)
{
    std::vector<std::string> out;
    size_t p = 0;
    while (p < cmd.size()) {
        size_t q = cmd.find(' ', p);
        if (q == std::string::npos)
            q = cmd.size();
        out.push_back(cmd.substr(p, q - p));
        p = q + 1;
    }
    return out;
}

int issue(eng_shard *sh, pol_redis *rc, const std::vector<std::string> &args, RRes *r,
          uint32_t timeout_ms = 0)
{
    std::vector<const char *> argv;
    std::vector<size_t> lens;
    for (const std::string &a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return pol_redis_command(sh, rc, int(args.size()), argv.data(), lens.data(), timeout_ms,
                             on_rdone, r);
}

// Rig (mc_rig.h) always runs io_uring; this one takes the backend (the epoll backend registers
// an fd number once per turn: a reconnect must not reuse the closed socket's number too early).
struct BackendRig {
    std::unique_ptr<Engine> eng;
    BackendRig(const std::string &conns, eng_backend backend)
    {
        std::string err = load(conns, &g_srv);
        INFO(err);
        REQUIRE(err.empty());
        eng_config cfg = echo_config(backend, 1);
        g_ops = echo_ops;
        g_ops.shard_start = app_start;
        g_ops.shard_stop = app_stop;
        cfg.ops = &g_ops;
        eng = std::make_unique<Engine>(cfg);
    }
    ~BackendRig()
    {
        eng.reset();
        pol_server_free(g_srv);
        g_srv = nullptr;
    }
    void on(unsigned idx, const std::function<void(eng_shard *)> &fn)
    {
        struct C {
            unsigned idx;
            const std::function<void(eng_shard *)> *fn;
        } c{idx, &fn};
        REQUIRE(eng_run_on_shards(
                    eng->e,
                    [](eng_shard *sh, void *, void *p) {
                        C *c = static_cast<C *>(p);
                        if (eng_shard_index(sh) == c->idx)
                            (*c->fn)(sh);
                    },
                    &c) == 0);
    }
};

template <class R>
RRes run(R &rig, unsigned shard, pol_redis *rc, const std::vector<std::string> &args,
         uint32_t timeout_ms = 0)
{
    RRes r;
    int rc_ = 99;
    rig.on(shard, [&](eng_shard *sh) { rc_ = issue(sh, rc, args, &r, timeout_ms); });
    REQUIRE(rc_ == 0);
    REQUIRE(eventually([&] { return rfinished(r); }, 10000));
    return r;
}

template <class R>
RRes run(R &rig, unsigned shard, pol_redis *rc, const std::string &cmd, uint32_t timeout_ms = 0)
{
    return run(rig, shard, rc, split(cmd), timeout_ms);
}

std::string block(const std::string &name, const std::string &body)
{
    return "<Connection " + name + ">\n module = \"Redis\"\n" + body + "</Connection>\n";
}

rpdtest::RedisServer &rserver()
{
    static rpdtest::RedisServer s;
    return s;
}

pol_redis *rlookup(const char *name, std::string *err = nullptr)
{
    pol_plugin p{};
    p.srv = g_srv;
    char e[256] = "";
    pol_redis *rc = pol_redis_lookup(&p, name, e, sizeof(e));
    if (err)
        *err = e;
    return rc;
}

template <class R>
eng_redis_stats rstats(R &rig, unsigned shard, pol_redis *rc)
{
    eng_redis_stats st{};
    rig.on(shard, [&](eng_shard *sh) { pol_redis_get_stats(sh, rc, &st); });
    return st;
}

} // namespace

TEST_CASE("start-up errors name the file and line", "[redis_conn]")
{
    pol_server *s = nullptr;
    // A name is resolved at each connection attempt, not at start-up.
    std::string err = load(block("r", " server = \"no-such-host.invalid:6379\"\n"), &s);
    CHECK(err.empty());
    if (err.empty())
        pol_server_free(s);
    err = load(block("r", " server = \"bad/host:6379\"\n"), &s);
    CHECK(err == "test.conf:1: could not open connection r: bad host in redis server "
                 "'bad/host:6379'");
    err = load("\n" + block("r", " server = \"127.0.0.1:99999\"\n"), &s);
    CHECK(err == "test.conf:2: could not open connection r: bad port in redis server "
                 "'127.0.0.1:99999'");
    err = load(block("r", " db = \"x\"\n"), &s);
    CHECK(err == "test.conf:1: could not open connection r: db must be a database number (0, 1, "
                 "...), not 'x'");
    err = load(block("r", " sentinels = \" , \"\n service = \"mymaster\"\n"), &s);
    CHECK(err == "test.conf:1: could not open connection r: sentinels names no address");
    err = load(block("r", " sentinels = \"127.0.0.1:26379,127.0.0.1:0\"\n service = \"m\"\n"),
               &s);
    CHECK(err == "test.conf:1: could not open connection r: bad port in redis server "
                 "'127.0.0.1:0'");
    err = load(block("r", " sentinels = \"1,2,3,4,5,6,7,8,9\"\n service = \"m\"\n"), &s);
    CHECK(err == "test.conf:1: could not open connection r: more than 8 sentinels");
    // sentinels without service: 2.05 uses server; so do we. With service: Sentinel (2.05
    // splits only at " ,"; commas and blanks both separate here). IPv6 forms.
    for (const char *body : {" sentinels = \"127.0.0.1:26379\"\n",
                             " sentinels = \"127.0.0.1:26379,[::1] localhost:26380\"\n"
                             " service = \"mymaster\"\n",
                             " server = \"[::1]:6380\"\n",
                             " server = \"::1\"\n", " server = \"localhost\"\n",
                             " sock = \"/tmp/x.sock\"\n password = \"p\"\n db = 3\n"}) {
        INFO(body);
        err = load(block("r", body), &s);
        CHECK(err.empty());
        if (err.empty())
            pol_server_free(s);
    }
}

TEST_CASE("defaults and lookup", "[redis_conn]")
{
    std::string err = load(block("redis", "") +
                               "<Connection m>\n module = \"Memcached\"\n</Connection>\n",
                           &g_srv);
    INFO(err);
    REQUIRE(err.empty());
    std::string why;
    pol_redis *rc = rlookup("redis", &why);
    REQUIRE(rc != nullptr);
    CHECK(std::string(pol_redis_name(rc)) == "redis");
    CHECK(pol_redis_of_server(g_srv, "redis") == rc);
    CHECK(pol_redis_of_server(g_srv, "m") == nullptr);
    CHECK(rlookup("nope", &why) == nullptr);
    CHECK(why == "no connection nope configured!");
    CHECK(rlookup("m", &why) == nullptr);
    CHECK(why == "connection m is not a Redis connection");
    pol_server_free(g_srv);
    g_srv = nullptr;
}

TEST_CASE("commands and statuses on two shards", "[redis_conn]")
{
    Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"));
    pol_redis *rc = rlookup("r");
    REQUIRE(rc != nullptr);
    for (unsigned sh = 0; sh < 2; sh++) {
        INFO("shard " << sh);
        std::string k = "op-key-" + std::to_string(sh);
        run(rig, sh, rc, "DEL " + k);
        RRes g = run(rig, sh, rc, "GET " + k);
        CHECK(g.st == ENG_REDIS_NIL);
        CHECK(g.shard == int(sh));
        RRes s = run(rig, sh, rc, "SET " + k + " 5 EX 60 NX");
        CHECK(s.st == ENG_REDIS_OK);
        CHECK(s.type == ENG_REDIS_T_STATUS);
        CHECK(s.str == "OK");
        CHECK(run(rig, sh, rc, "SET " + k + " 6 EX 60 NX").st == ENG_REDIS_NIL);
        CHECK(rserver().raw("GET " + k) == "5");
        RRes i = run(rig, sh, rc, "INCR " + k);
        CHECK(i.st == ENG_REDIS_OK);
        CHECK(i.type == ENG_REDIS_T_INTEGER);
        CHECK(i.integer == 6);
        CHECK(i.shard == int(sh));
        // binary-safe values
        std::string bin("a\0b\r\n c", 7);
        CHECK(run(rig, sh, rc, std::vector<std::string>{"SET", k, bin}).st == ENG_REDIS_OK);
        RRes b = run(rig, sh, rc, "GET " + k);
        CHECK(b.type == ENG_REDIS_T_STRING);
        CHECK(b.str == bin);
        RRes e = run(rig, sh, rc, "INCR " + k);
        CHECK(e.st == ENG_REDIS_ERROR);
        CHECK(e.str.find("not an integer") != std::string::npos);
        CHECK(run(rig, sh, rc, "DEL " + k).integer == 1);
        CHECK(run(rig, sh, rc, "DEL " + k).integer == 0);
    }
    // argc limits are refused at the call
    int rc_ = 0;
    RRes none;
    rig.on(0, [&](eng_shard *sh) {
        rc_ = issue(sh, rc, std::vector<std::string>(ENG_REDIS_ARGS_MAX + 1, "x"), &none);
    });
    CHECK(rc_ == -EINVAL);
    rig.on(0, [&](eng_shard *sh) {
        rc_ = issue(sh, rc, std::vector<std::string>(ENG_REDIS_ARGS_MAX, "x"), &none);
    });
    CHECK(rc_ == 0); // at the limit it is sent (Redis answers an error: unknown command)
    REQUIRE(eventually([&] { return rfinished(none); }, 10000));
    CHECK(none.st == ENG_REDIS_ERROR);
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.queue_depth == 0);
    CHECK(st.connects == 1);
    CHECK(st.resets == 0);
    CHECK(st.refused == 1);
}

TEST_CASE("2000 commands issued in one loop turn are pipelined", "[redis_conn]")
{
    Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), 1);
    pol_redis *rc = rlookup("r");
    REQUIRE(run(rig, 0, rc, "DEL pipe-counter").st == ENG_REDIS_OK);
    static RRes res[2000];
    rig.on(0, [&](eng_shard *sh) {
        for (RRes &r : res) {
            r = RRes();
            REQUIRE(issue(sh, rc, {"INCR", "pipe-counter"}, &r) == 0);
        }
    });
    REQUIRE(eventually(
        [&] {
            for (const RRes &r : res)
                if (!rfinished(r))
                    return false;
            return true;
        },
        20000));
    // Redis ran them in the order they were issued: the n-th saw n.
    for (size_t i = 0; i < 2000; i++) {
        INFO(i);
        CHECK(res[i].st == ENG_REDIS_OK);
        CHECK(res[i].integer == (long long)(i + 1));
    }
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.queue_depth_max >= 2000);
    CHECK(st.status[ENG_REDIS_OK] >= 2001);
    CHECK(rserver().raw("GET pipe-counter") == "2000");
}

TEST_CASE("AUTH and SELECT are sent first; a wrong password is refused", "[redis_conn]")
{
    rpdtest::RedisServer locked("s3cret word");
    {
        Rig rig(block("r", " server = \"" + locked.addr() +
                               "\"\n password = \"s3cret word\"\n db = 3\n"),
                1);
        pol_redis *rc = rlookup("r");
        CHECK(run(rig, 0, rc, "SET auth-k in-db-3").st == ENG_REDIS_OK);
        CHECK(locked.raw("GET auth-k", 3) == "in-db-3");
        CHECK(locked.raw("GET auth-k", 0).empty());
        eng_redis_stats st = rstats(rig, 0, rc);
        CHECK(st.handshake_errors == 0);
    }
    {
        Rig rig(block("r", " server = \"" + locked.addr() + "\"\n password = \"wrong\"\n"), 1);
        pol_redis *rc = rlookup("r");
        RRes r = run(rig, 0, rc, "SET auth-k2 v");
        CHECK(r.st == ENG_REDIS_DOWN);
        REQUIRE(eventually([&] { return rstats(rig, 0, rc).handshake_errors >= 1; }, 5000));
        CHECK(locked.raw("EXISTS auth-k2") == "0");
    }
    {
        // no password at all: NOAUTH error replies reach the caller as errors
        Rig rig(block("r", " server = \"" + locked.addr() + "\"\n"), 1);
        pol_redis *rc = rlookup("r");
        RRes r = run(rig, 0, rc, "GET auth-k");
        CHECK(r.st == ENG_REDIS_ERROR);
        CHECK(r.str.find("NOAUTH") == 0);
    }
}

TEST_CASE("a Unix socket", "[redis_conn]")
{
    Rig rig(block("r", " sock = \"" + rserver().sock() + "\"\n db = 2\n"), 1);
    pol_redis *rc = rlookup("r");
    CHECK(run(rig, 0, rc, "SET sock-k via-unix").st == ENG_REDIS_OK);
    CHECK(rserver().raw("GET sock-k", 2) == "via-unix");
}

TEST_CASE("reconnect after redis is killed and restarted", "[redis_conn]")
{
    Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), 1);
    pol_redis *rc = rlookup("r");
    REQUIRE(run(rig, 0, rc, "SET down-k v").st == ENG_REDIS_OK);
    // GET /readyz's view (the shard's probe publishes every 250 ms).
    const pol_conn_def *def = pol_server_conn(g_srv, "r");
    REQUIRE(def != nullptr);
    char why[128] = "";
    CHECK(eventually([&] { return def->ops->ready(def, why, sizeof(why)) == 0; }, 5000));
    rserver().kill_now();
    CHECK(eventually([&] { return def->ops->ready(def, why, sizeof(why)) != 0; }, 5000));
    CHECK(std::string(why) == "redis not connected");
    REQUIRE(eventually([&] { return run(rig, 0, rc, "GET down-k").st == ENG_REDIS_DOWN; }, 5000));
    auto t0 = std::chrono::steady_clock::now();
    CHECK(run(rig, 0, rc, "GET down-k").st == ENG_REDIS_DOWN); // fails fast
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500));
    REQUIRE(rserver().start());
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET down-k w").st == ENG_REDIS_OK; }, 15000));
    CHECK(run(rig, 0, rc, "GET down-k").str == "w");
    CHECK(eventually([&] { return def->ops->ready(def, why, sizeof(why)) == 0; }, 5000));
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.resets >= 1);
    CHECK(st.connects >= 2);
    CHECK(st.fail_fast >= 1);
}

TEST_CASE("a server given by name: resolved at each attempt; a name that does not resolve fails "
          "fast",
          "[redis_conn][resolve]")
{
    {
        Rig rig(block("r", " server = \"localhost:" + std::to_string(rserver().port()) + "\"\n"),
                1);
        pol_redis *rc = rlookup("r");
        REQUIRE(eventually([&] { return run(rig, 0, rc, "SET nk v").st == ENG_REDIS_OK; }, 10000));
        CHECK(rserver().raw("GET nk") == "v");
    }
    Rig rig(block("r", " server = \"no-such-host..invalid:6379\"\n"), 1);
    pol_redis *rc = rlookup("r");
    REQUIRE(eventually([&] { return rstats(rig, 0, rc).connect_failures >= 2; }, 10000));
    CHECK(run(rig, 0, rc, "GET nk").st == ENG_REDIS_DOWN);
    CHECK(rstats(rig, 0, rc).connects == 0);
}

TEST_CASE("Redis Sentinel: the master it names, the next sentinel when one is dead, and a "
          "failover followed",
          "[redis_conn]")
{
    rpdtest::RedisServer a, b;
    rpdtest::RedisServer sentinel(a.port(), "mymaster");
    int dead = rpdtest::mc_free_port();
    // A dead sentinel first: the first attempt fails, the next one asks the live sentinel.
    Rig rig(block("r", " server = \"127.0.0.1:1\"\n sentinels = \"127.0.0.1:" +
                           std::to_string(dead) + ", 127.0.0.1:" +
                           std::to_string(sentinel.port()) + "\"\n service = \"mymaster\"\n"),
            1);
    pol_redis *rc = rlookup("r");
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET sk a").st == ENG_REDIS_OK; }, 10000));
    CHECK(a.raw("GET sk") == "a");
    CHECK(b.raw("GET sk") == "");
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.sentinel_queries >= 2);
    CHECK(st.sentinel_failures >= 1);
    // Failover by hand: the sentinel now names b, and a goes away.
    CHECK(sentinel.raw("SENTINEL REMOVE mymaster") == "OK");
    CHECK(sentinel.raw("SENTINEL MONITOR mymaster 127.0.0.1 " + std::to_string(b.port()) + " 1") ==
          "OK");
    a.kill_now();
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET sk b").st == ENG_REDIS_OK; }, 15000));
    CHECK(b.raw("GET sk") == "b");
    CHECK(run(rig, 0, rc, "GET sk").str == "b");
    st = rstats(rig, 0, rc);
    CHECK(st.sentinel_queries >= 3);
    CHECK(st.resets >= 1);
}

TEST_CASE("Redis Sentinel: an unknown service fails fast and is asked again", "[redis_conn]")
{
    rpdtest::RedisServer a;
    rpdtest::RedisServer sentinel(a.port(), "mymaster");
    Rig rig(block("r", " sentinels = \"127.0.0.1:" + std::to_string(sentinel.port()) +
                           "\"\n service = \"other\"\n"),
            1);
    pol_redis *rc = rlookup("r");
    REQUIRE(eventually([&] { return rstats(rig, 0, rc).sentinel_failures >= 2; }, 10000));
    CHECK(run(rig, 0, rc, "GET x").st == ENG_REDIS_DOWN);
    CHECK(rstats(rig, 0, rc).connects == 0);
    // The service appears: the next attempt (backoff at most 5 s) finds it.
    CHECK(sentinel.raw("SENTINEL MONITOR other 127.0.0.1 " + std::to_string(a.port()) + " 1") ==
          "OK");
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET ok 1").st == ENG_REDIS_OK; }, 15000));
    CHECK(a.raw("GET ok") == "1");
}

TEST_CASE("a deadline while redis is stopped: TIMEOUT, then recovery", "[redis_conn]")
{
    Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), 1);
    pol_redis *rc = rlookup("r");
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET stop-k v").st == ENG_REDIS_OK; }, 10000));
    REQUIRE(rserver().pause());
    auto t0 = std::chrono::steady_clock::now();
    RRes r = run(rig, 0, rc, "GET stop-k", 200);
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(r.st == ENG_REDIS_TIMEOUT);
    CHECK(took >= std::chrono::milliseconds(190));
    CHECK(took < std::chrono::milliseconds(3000));
    REQUIRE(rserver().resume());
    REQUIRE(eventually([&] { return run(rig, 0, rc, "GET stop-k").str == "v"; }, 15000));
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.timeouts == 1);
    CHECK(st.status[ENG_REDIS_TIMEOUT] == 1);
    CHECK(st.queue_depth == 0);
}

TEST_CASE("shard stop completes what is still out with DOWN", "[redis_conn]")
{
    static RRes res[64];
    {
        Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), 1);
        pol_redis *rc = rlookup("r");
        REQUIRE(
            eventually([&] { return run(rig, 0, rc, "SET stop-k v").st == ENG_REDIS_OK; }, 10000));
        REQUIRE(rserver().pause());
        rig.on(0, [&](eng_shard *sh) {
            for (RRes &r : res) {
                r = RRes();
                REQUIRE(issue(sh, rc, {"GET", "stop-k"}, &r, 60000) == 0);
            }
        });
    } // the engine stops: shard_stop destroys the client with 64 commands in flight
    REQUIRE(rserver().resume());
    for (const RRes &r : res) {
        CHECK(rfinished(r));
        CHECK(r.st == ENG_REDIS_DOWN);
    }
}

TEST_CASE("the epoll backend: restart, stop and timeout", "[redis_conn]")
{
    BackendRig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), ENG_BACKEND_EPOLL);
    pol_redis *rc = rlookup("r");
    REQUIRE(eventually([&] { return run(rig, 0, rc, "SET ep-k v").st == ENG_REDIS_OK; }, 10000));
    for (int round = 0; round < 3; round++) {
        INFO("round " << round);
        rserver().kill_now();
        REQUIRE(
            eventually([&] { return run(rig, 0, rc, "GET ep-k").st == ENG_REDIS_DOWN; }, 5000));
        REQUIRE(rserver().start());
        REQUIRE(
            eventually([&] { return run(rig, 0, rc, "SET ep-k w").st == ENG_REDIS_OK; }, 15000));
    }
    REQUIRE(rserver().pause());
    CHECK(run(rig, 0, rc, "GET ep-k", 200).st == ENG_REDIS_TIMEOUT);
    REQUIRE(rserver().resume());
    REQUIRE(eventually([&] { return run(rig, 0, rc, "GET ep-k").str == "w"; }, 15000));
    eng_redis_stats st = rstats(rig, 0, rc);
    CHECK(st.resets >= 4);
    CHECK(st.queue_depth == 0);
}

TEST_CASE("throughput of pipelined GETs", "[!benchmark][redis_conn_bench]")
{
    Rig rig(block("r", " server = \"" + rserver().addr() + "\"\n"), 1);
    pol_redis *rc = rlookup("r");
    REQUIRE(run(rig, 0, rc, "SET bench-k 1234567890").st == ENG_REDIS_OK);
    static RRes res[4000];
    const int batches = 50;
    auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < batches; b++) {
        rig.on(0, [&](eng_shard *sh) {
            for (RRes &r : res) {
                r = RRes();
                REQUIRE(issue(sh, rc, {"GET", "bench-k"}, &r) == 0);
            }
        });
        REQUIRE(eventually([&] { return rfinished(res[3999]); }, 20000));
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("redis_conn: %d GETs in batches of 4000 from one shard: %.3f s, %.0f commands/s\n",
           batches * 4000, s, batches * 4000 / s);
    CHECK(rstats(rig, 0, rc).status[ENG_REDIS_OK] >= (uint64_t)batches * 4000);
}
