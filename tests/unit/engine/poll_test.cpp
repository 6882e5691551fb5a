// poll_test.cpp: eng_poll on a pipe, on both backends: level-triggered readiness (a callback
// that reads one byte at a time is called again while bytes remain), POLLOUT, changing events,
// no callback after eng_poll_stop, and polls_per_shard_max at N and N+1.
#include "harness.h"

using namespace th;

namespace
{

struct Pipe {
    int r = -1, w = -1;
    Pipe()
    {
        int fds[2];
        REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
    ~Pipe()
    {
        close(r);
        close(w);
    }
};

eng_poll g_p, g_q;
std::atomic<int> g_calls{0};
std::atomic<int> g_bytes{0};
std::atomic<uint32_t> g_revents{0};
int g_fd;

void read_one(eng_shard *, eng_poll *, uint32_t revents)
{
    g_revents = revents;
    char c;
    if (read(g_fd, &c, 1) == 1)
        g_bytes++;
    g_calls++;
}

void on_shard0(eng *e, void (*fn)(eng_shard *))
{
    struct Ctx {
        void (*fn)(eng_shard *);
    } ctx{fn};
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    if (eng_shard_index(sh) == 0)
                        static_cast<Ctx *>(p)->fn(sh);
                },
                &ctx) == 0);
}

int g_start_rc;

} // namespace

TEST_CASE("POLLIN on a pipe is level-triggered and stops with eng_poll_stop", "[poll]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Pipe p; // outlives the engine
        Engine eng(echo_config(backend, 2));
        g_fd = p.r;
        g_calls = g_bytes = 0;
        on_shard0(eng.e, [](eng_shard *sh) {
            g_start_rc = eng_poll_start(sh, &g_p, g_fd, POLLIN, read_one);
        });
        REQUIRE(g_start_rc == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        CHECK(g_calls == 0); // nothing to read yet
        REQUIRE(write(p.w, "abc", 3) == 3);
        REQUIRE(eventually([] { return g_bytes == 3; }));
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        CHECK(g_calls == 3); // once per byte: the fd stayed ready after each read
        CHECK((g_revents & POLLIN) != 0);
        on_shard0(eng.e, [](eng_shard *sh) { eng_poll_stop(sh, &g_p); });
        REQUIRE(write(p.w, "d", 1) == 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        CHECK(g_calls == 3);                                              // never after stop
        on_shard0(eng.e, [](eng_shard *sh) { eng_poll_stop(sh, &g_p); }); // idempotent
    }
}

namespace
{
void count_out(eng_shard *sh, eng_poll *p, uint32_t revents)
{
    g_revents = revents;
    if (++g_calls == 3)
        eng_poll_stop(sh, p); // stop from its own callback
}
} // namespace

TEST_CASE("POLLOUT, and changing events with eng_poll_update", "[poll]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Pipe p; // outlives the engine
        Engine eng(echo_config(backend));
        g_fd = p.w;
        g_calls = 0;
        on_shard0(eng.e, [](eng_shard *sh) {
            g_start_rc = eng_poll_start(sh, &g_p, g_fd, POLLOUT, count_out);
        });
        REQUIRE(g_start_rc == 0);
        REQUIRE(eventually([] { return g_calls == 3; }));
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        CHECK(g_calls == 3);
        CHECK((g_revents & POLLOUT) != 0);

        // Waiting for input on the read end, then switching it to POLLOUT-only... on the write
        // end: update from POLLIN (never ready on a write end) to POLLOUT.
        g_calls = 0;
        on_shard0(eng.e, [](eng_shard *sh) {
            g_start_rc = eng_poll_start(sh, &g_q, g_fd, POLLIN, count_out);
        });
        REQUIRE(g_start_rc == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        CHECK(g_calls == 0);
        on_shard0(eng.e, [](eng_shard *sh) { g_start_rc = eng_poll_update(sh, &g_q, POLLOUT); });
        REQUIRE(g_start_rc == 0);
        REQUIRE(eventually([] { return g_calls == 3; }));
    }
}

TEST_CASE("polls_per_shard_max at N and N+1", "[poll]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend);
        cfg.limits.polls_per_shard_max = 2;
        Pipe p; // outlives the engine
        Engine eng(cfg);
        g_fd = p.r;
        static eng_poll polls[3];
        static int rcs[3];
        static int fds[3];
        for (int i = 0; i < 3; i++)
            fds[i] = dup(p.r);
        on_shard0(eng.e, [](eng_shard *sh) {
            for (int i = 0; i < 3; i++)
                rcs[i] = eng_poll_start(sh, &polls[i], fds[i], POLLIN, read_one);
        });
        CHECK(rcs[0] == 0);
        CHECK(rcs[1] == 0);
        CHECK(rcs[2] == -ENOSPC);
        on_shard0(eng.e, [](eng_shard *sh) {
            static eng_poll other;
            rcs[2] = eng_poll_start(sh, &other, fds[0], POLLIN, read_one);
        });
        CHECK(rcs[2] == -EBUSY); // one poll per fd
        on_shard0(eng.e, [](eng_shard *sh) { eng_poll_stop(sh, &polls[0]); });
        // The slot is free once its last operation completed.
        REQUIRE(eventually([&] {
            on_shard0(eng.e, [](eng_shard *sh) {
                rcs[2] = eng_poll_start(sh, &polls[2], fds[2], POLLIN, read_one);
            });
            return rcs[2] == 0;
        }));
        on_shard0(eng.e, [](eng_shard *sh) {
            eng_poll_stop(sh, &polls[1]);
            eng_poll_stop(sh, &polls[2]);
        });
        on_shard0(eng.e, [](eng_shard *sh) {
            rcs[0] = eng_poll_start(sh, &polls[0], -1, POLLIN, read_one);
            rcs[1] = eng_poll_start(sh, &polls[1], g_fd, 0, read_one);
        });
        CHECK(rcs[0] == -EBADF);
        CHECK(rcs[1] == -EINVAL);
        for (int fd : fds)
            close(fd);
    }
}
