// alloc_test.cpp: the data path does not allocate (STYLE.md 4). This test program interposes
// malloc, calloc, realloc and the aligned allocators and counts calls made on shard threads
// (eng_shard_self() != NULL). After a warm-up, steady-state traffic on both backends (accepts,
// pipelined echo, staging, pause/resume with timers, cross-shard messages, closes, buffered log
// lines) must make no allocation at all.
#include "harness.h"

#include <malloc.h>

extern "C" {
#include "eng/log.h"
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
}

namespace
{
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_shard_allocs{0};

inline void note()
{
    if (g_counting.load(std::memory_order_relaxed) && eng_shard_self() != nullptr)
        g_shard_allocs.fetch_add(1, std::memory_order_relaxed);
}
} // namespace

extern "C" {
void *malloc(size_t n)
{
    note();
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    note();
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    note();
    return __libc_realloc(p, n);
}
void *memalign(size_t al, size_t n)
{
    note();
    return __libc_memalign(al, n);
}
void *aligned_alloc(size_t al, size_t n)
{
    note();
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n)
{
    note();
    *out = __libc_memalign(al, n);
    return *out ? 0 : ENOMEM;
}
}

using namespace th;

namespace
{

struct Hop {
    eng_xmsg x;
    std::atomic<uint32_t> count{0};
};
Hop g_hop;

void hop(eng_shard *sh, eng_xmsg *m)
{
    Hop *h = reinterpret_cast<Hop *>(m);
    eng_log(ENG_LOG_WARNING, "hop %u on shard %u", unsigned(h->count.load()), eng_shard_index(sh));
    if (++h->count < 2000)
        eng_xshard_send(sh, (eng_shard_index(sh) + 1) % eng_shard_count(sh), &h->x);
}

void traffic(Engine &eng, int rounds)
{
    std::vector<int> fds;
    for (int i = 0; i < 8; i++)
        fds.push_back(connect_to(eng.bound()));
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < fds.size(); i++) {
            int fd = fds[i];
            std::string text;
            for (int j = 0; j < 50; j++)
                text += "r" + std::to_string(r) + " l" + std::to_string(j) + "\n";
            REQUIRE(send_all(fd, text.substr(0, 100)));
            REQUIRE(send_all(fd, text.substr(100)));
            REQUIRE(recv_n(fd, text.size()) == text);
            REQUIRE(send_all(fd, "PAUSE 2\nafter\n"));
            REQUIRE(recv_n(fd, 14) == "RESUMED\nafter\n");
        }
    }
    for (int fd : fds)
        close(fd);
    REQUIRE(eventually([&] { return eng.stats().conns_open == 0; }));
}

} // namespace

TEST_CASE("steady-state traffic makes no allocation on shard threads", "[alloc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string path = "/tmp/ringpolicyd-alloc-test-" + std::to_string(getpid());
        eng_log_config lc{};
        lc.level = 4;
        lc.target = ENG_LOG_FILE;
        lc.path = path.c_str();
        char err[256];
        REQUIRE(eng_log_open(&lc, err, sizeof(err)) == 0);
        Engine eng(echo_config(backend, 2));
        traffic(eng, 2); // warm-up
        g_shard_allocs = 0;
        g_counting = true;
        traffic(eng, 5);
        g_hop.count = 0;
        g_hop.x.fn = hop;
        REQUIRE(eng_run_on_shards(
                    eng.e,
                    [](eng_shard *sh, void *, void *) {
                        if (eng_shard_index(sh) == 0)
                            eng_xshard_send(sh, 1, &g_hop.x);
                    },
                    nullptr) == 0);
        REQUIRE(eventually([] { return g_hop.count == 2000; }));
        g_counting = false;
        CHECK(g_shard_allocs == 0);
        eng.stop();
        eng_log_close();
        unlink(path.c_str());
    }
}

TEST_CASE("the interposer sees allocations on shard threads", "[alloc]")
{
    // Proves the check above can fail: an allocation inside a shard callback is counted.
    Engine eng(echo_config(ENG_BACKEND_EPOLL));
    g_shard_allocs = 0;
    g_counting = true;
    REQUIRE(eng_run_on_shards(
                eng.e,
                [](eng_shard *, void *, void *) {
                    void *volatile p = malloc(32); // volatile: the pair must not be elided
                    free(p);
                },
                nullptr) == 0);
    g_counting = false;
    CHECK(g_shard_allocs == 1);
}
