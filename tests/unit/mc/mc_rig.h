// mc_rig.h: what the tests of tests/unit/mc share: a pol_server from configuration text whose
// connections run on the shards of an engine (as exec.c starts them), a memcached server
// (mc_server.h) and pol_mc_* operations run on a chosen shard and waited for.
#ifndef RPD_TEST_MC_RIG_H
#define RPD_TEST_MC_RIG_H

#include <atomic>

#include "../engine/harness.h"

#include "mc_server.h"

extern "C" {
#include "mc_conn.h"
#include "pol/mc.h"
#include "server.h"
}

#include <functional>
#include <memory>
#include <mutex>

namespace mcrig
{
using namespace th;

struct Res {
    int st = -1; // -1: done has not run
    std::string value;
    int shard = -1;
};

inline std::mutex g_mu;
inline pol_server *g_srv;

inline void on_done(void *ctx, pol_mc_status st, const char *v, size_t len)
{
    Res *r = static_cast<Res *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    r->st = st;
    r->value = v ? std::string(v, len) : std::string();
    eng_shard *self = eng_shard_self();
    r->shard = self ? int(eng_shard_index(self)) : -1;
}

inline bool finished(const Res &r)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return r.st != -1;
}

// The engine app: each shard starts and stops the server's connections, as exec.c does.
// Run on each shard after its connections started / before they stop (the session cache).
inline std::function<void(eng_shard *)> g_extra_start, g_extra_stop;
// Failures of g_extra_start, counted on the shard threads (Catch2 assertions are not
// thread-safe there), checked by the test on its own thread once the rig is up.
inline std::atomic<int> g_start_failures{0};

inline int app_start(eng_shard *sh, void *, void **app)
{
    *app = nullptr;
    for (uint32_t i = 0; i < g_srv->conn_count; i++) {
        pol_conn_def *d = &g_srv->conns[i];
        char err[256] = "";
        if (d->opened && d->ops->shard_start && d->ops->shard_start(d, sh, err, sizeof(err))) {
            fprintf(stderr, "shard_start: %s\n", err);
            return -EIO;
        }
    }
    if (g_extra_start)
        g_extra_start(sh);
    return 0;
}

inline void app_stop(eng_shard *sh, void *)
{
    if (g_extra_stop)
        g_extra_stop(sh);
    for (uint32_t i = g_srv->conn_count; i-- > 0;) {
        pol_conn_def *d = &g_srv->conns[i];
        if (d->opened && d->ops->shard_stop)
            d->ops->shard_stop(d, sh);
    }
}

inline eng_app_ops g_ops;

inline std::string load(const std::string &conns, pol_server **out)
{
    std::string text = conns + "\n<VirtualHost 12345>\n name = test\n <Plugin a>\n"
                               "  module = \"Action\"\n  action = \"dunno\"\n"
                               " </Plugin>\n</VirtualHost>\n";
    char err[1024] = "";
    int rc = pol_server_from_text("test.conf", text.c_str(), out, err, sizeof(err));
    return rc == 0 ? "" : err;
}

inline std::string conn_block(const std::string &name, const std::string &servers,
                              const std::string &ns = "")
{
    std::string b =
        "<Connection " + name + ">\n module = \"Memcached\"\n servers = \"" + servers + "\"\n";
    if (!ns.empty())
        b += " namespace = \"" + ns + "\"\n";
    return b + "</Connection>\n";
}

inline rpdtest::McServer &server()
{
    static rpdtest::McServer s;
    return s;
}

enum Op { GET, SET, ADD, DEL, INCR };

// A server and an engine running its connections on `shards` shards.
struct Rig {
    std::unique_ptr<Engine> eng;
    // prepare runs after the server was loaded, before the engine (and its shards) start.
    explicit Rig(const std::string &conns, unsigned shards = 2,
                 const std::function<void()> &prepare = {})
    {
        std::string err = load(conns, &g_srv);
        INFO(err);
        REQUIRE(err.empty());
        if (prepare)
            prepare();
        eng_config cfg = echo_config(ENG_BACKEND_URING, shards);
        g_ops = echo_ops;
        g_ops.shard_start = app_start;
        g_ops.shard_stop = app_stop;
        cfg.ops = &g_ops;
        eng = std::make_unique<Engine>(cfg);
    }
    ~Rig()
    {
        eng.reset(); // shards stop their connections
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
    static int issue(eng_shard *sh, pol_mc *mc, Op op, const std::string &key, Res *r,
                     const std::string &val, uint32_t exp)
    {
        switch (op) {
        case GET:
            return pol_mc_get(sh, mc, key.data(), key.size(), 0, on_done, r);
        case SET:
            return pol_mc_set(sh, mc, key.data(), key.size(), val.data(), val.size(), exp, 0,
                              on_done, r);
        case ADD:
            return pol_mc_add(sh, mc, key.data(), key.size(), val.data(), val.size(), exp, 0,
                              on_done, r);
        case DEL:
            return pol_mc_delete(sh, mc, key.data(), key.size(), 0, on_done, r);
        case INCR:
            return pol_mc_incr(sh, mc, key.data(), key.size(), std::stoull(val), 0, on_done, r);
        }
        return -1;
    }
    Res run(unsigned shard, pol_mc *mc, Op op, const std::string &key, const std::string &val = "",
            uint32_t exp = 0)
    {
        Res r;
        int rc = 99;
        on(shard, [&](eng_shard *sh) { rc = issue(sh, mc, op, key, &r, val, exp); });
        REQUIRE(rc == 0);
        REQUIRE(eventually([&] { return finished(r); }, 10000));
        return r;
    }
    eng_mc_stats stats(unsigned shard, pol_mc *mc)
    {
        eng_mc_stats st{};
        on(shard, [&](eng_shard *sh) { pol_mc_get_stats(sh, mc, &st); });
        return st;
    }
};

inline pol_mc *lookup(const char *name, std::string *err = nullptr)
{
    pol_plugin p{};
    p.srv = g_srv;
    char e[256] = "";
    pol_mc *mc = pol_mc_lookup(&p, name, e, sizeof(e));
    if (err)
        *err = e;
    return mc;
}

} // namespace mcrig

#endif
