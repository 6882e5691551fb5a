// fault_test.cpp: the fault-injection seam (engine/ring_fault.c) over both backends. A seeded
// sweep runs pipelined echo traffic on several connections while the fake ring makes recv arms
// fail with -ENOBUFS, cuts sends short, fails sends with -EAGAIN, and resets the connection whose
// operation is the Nth (N swept with the seed). Every connection must receive an in-order
// prefix of its echo (all of it unless it was the one reset), nothing may crash, and once the
// clients are gone every pool slot must be back (no leak). A failure prints its seed.
#include "harness.h"

using namespace th;

namespace
{

struct Plan {
    eng_fault_plan p;
    Plan(uint64_t seed, uint64_t reset_at)
    {
        memset(&p, 0, sizeof(p));
        p.seed = seed;
        p.recv_enobufs_permille = 300;
        p.send_short_permille = 300;
        p.send_eagain_permille = 100;
        p.reset_at_step = reset_at;
        eng_test_set_fault_plan(&p);
    }
    ~Plan()
    {
        eng_test_set_fault_plan(nullptr);
    }
};

void pool_usage(eng *e, uint32_t out[3])
{
    out[0] = out[1] = out[2] = 0;
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    uint32_t *o = static_cast<uint32_t *>(p);
                    uint32_t c, s, d;
                    eng_test_pool_usage(sh, &c, &s, &d);
                    o[0] += c;
                    o[1] += s;
                    o[2] += d;
                },
                out) == 0);
}

} // namespace

TEST_CASE("seeded fault sweep: ENOBUFS, short sends, EAGAIN, reset at step N", "[fault]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        uint64_t enobufs = 0, short_sends = 0;
        for (uint64_t seed = 1; seed <= 24; seed++) {
            uint64_t reset_at = 3 + seed * 5;
            CAPTURE(seed, reset_at, backend_label(backend));
            Plan plan(seed, reset_at);
            eng_config cfg = echo_config(backend, 2);
            cfg.limits.recv_buf_bytes = 256;
            Engine eng(cfg);
            const int conns = 6;
            std::vector<int> fds;
            std::vector<std::string> want(conns), got(conns);
            for (int i = 0; i < conns; i++) {
                fds.push_back(connect_to(eng.bound()));
                for (int j = 0; j < 60; j++)
                    want[i] += "c" + std::to_string(i) + " " + std::to_string(j) +
                               std::string(size_t(j * 7 % 50), '.') + "\n";
            }
            for (int i = 0; i < conns; i++)
                for (size_t off = 0; off < want[i].size(); off += 333)
                    send_all(fds[i], want[i].substr(off, 333));
            int complete = 0;
            for (int i = 0; i < conns; i++) {
                got[i] = recv_n(fds[i], want[i].size(), 3000);
                CHECK(want[i].compare(0, got[i].size(), got[i]) == 0); // an in-order prefix
                complete += got[i] == want[i];
            }
            eng_stats st = eng.stats();
            CHECK(complete >= conns - 2); // each shard's ring resets one connection at most
            CHECK(st.closed[ENG_CLOSE_ERROR] == 0);
            for (int fd : fds)
                close(fd);
            REQUIRE(eventually([&] { return eng.stats().conns_open == 0; }));
            uint32_t u[3];
            pool_usage(eng.e, u);
            CHECK(u[0] == 0);
            CHECK(u[1] == 0);
            CHECK(u[2] == 0);
            enobufs += st.recv_enobufs;
            short_sends += st.short_sends;
        }
        CHECK(enobufs > 0); // the sweep did exercise the faults
        CHECK(short_sends > 0);
    }
}

TEST_CASE("staging and send pools failing after N gets degrade, not crash", "[fault]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        for (uint32_t n = 1; n <= 6; n++) {
            CAPTURE(n);
            Engine eng(echo_config(backend));
            struct Ctx {
                uint32_t n;
            } ctx{n};
            REQUIRE(eng_run_on_shards(
                        eng.e,
                        [](eng_shard *sh, void *, void *p) {
                            uint32_t k = static_cast<Ctx *>(p)->n;
                            eng_test_stage_fail_after(sh, k);
                            eng_test_send_fail_after(sh, k);
                        },
                        &ctx) == 0);
            std::vector<int> fds;
            for (int i = 0; i < 4; i++) {
                int fd = connect_to(eng.bound());
                send_all(fd, "part");
                send_all(fd, "ial " + std::to_string(i) + "\n");
                fds.push_back(fd);
            }
            for (int i = 0; i < 4; i++) {
                std::string w = "partial " + std::to_string(i) + "\n";
                std::string g = recv_n(fds[i], w.size(), 3000); // all of it, or EOF
                CHECK((g.empty() || g == w));
                close(fds[i]);
            }
            REQUIRE(eventually([&] { return eng.stats().conns_open == 0; }));
            uint32_t u[3];
            pool_usage(eng.e, u);
            CHECK(u[0] + u[1] + u[2] == 0);
        }
    }
}
