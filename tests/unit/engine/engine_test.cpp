// engine_test.cpp: the runtime's lifecycle on both backends: configuration errors, backend
// choice, eng_run_on_shards, graceful stop (idle connections closed at once, busy ones allowed to
// finish, the rest closed after drain_timeout_ms), signals (TERM stops, USR1 reaches on_signal),
// a shard that fails to start, and the loop's own counters.
#include "harness.h"

#include <csignal>
#include <pthread.h>

using namespace th;

TEST_CASE("configuration errors name the field", "[engine]")
{
    eng_config cfg = echo_config(ENG_BACKEND_EPOLL);
    eng *e = nullptr;
    char err[256];
    SECTION("recv_buf_count not a power of two")
    {
        cfg.limits.recv_buf_count = 100;
        CHECK(eng_create(&cfg, &e, err, sizeof(err)) == -EINVAL);
        CHECK(std::string(err).find("recv_buf_count") != std::string::npos);
    }
    SECTION("no on_bytes")
    {
        cfg.ops = nullptr;
        CHECK(eng_create(&cfg, &e, err, sizeof(err)) == -EINVAL);
        CHECK(std::string(err).find("on_bytes") != std::string::npos);
    }
    SECTION("conns_per_shard_max 0")
    {
        cfg.limits.conns_per_shard_max = 0;
        CHECK(eng_create(&cfg, &e, err, sizeof(err)) == -EINVAL);
        CHECK(std::string(err).find("conns_per_shard_max") != std::string::npos);
    }
    CHECK(e == nullptr);
}

TEST_CASE("backend choice and shard count", "[engine]")
{
    eng_config cfg = echo_config(ENG_BACKEND_URING);
    cfg.shard_count = 0; // one per online CPU
    eng *e;
    char err[256];
    REQUIRE(eng_create(&cfg, &e, err, sizeof(err)) == 0);
    CHECK(std::string(eng_backend_name(e)) == "io_uring");
    CHECK(std::string(eng_backend_desc(e)).find("io_uring") == 0);
    CHECK(eng_shard_count_of(e) == unsigned(sysconf(_SC_NPROCESSORS_ONLN)));
    CHECK(eng_run_on_shards(e, [](eng_shard *, void *, void *) {}, nullptr) == -ESRCH);
    eng_destroy(e); // without eng_run
    cfg.backend = ENG_BACKEND_EPOLL;
    REQUIRE(eng_create(&cfg, &e, err, sizeof(err)) == 0);
    CHECK(std::string(eng_backend_name(e)) == "epoll");
    eng_destroy(e);
}

TEST_CASE("eng_run_on_shards runs once on every shard's own thread", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend, 3));
        static std::atomic<int> ran[3];
        static std::atomic<int> wrong_thread;
        for (auto &r : ran)
            r = 0;
        wrong_thread = 0;
        for (int round = 0; round < 5; round++)
            REQUIRE(eng_run_on_shards(
                        eng.e,
                        [](eng_shard *sh, void *, void *) {
                            if (eng_shard_self() != sh)
                                wrong_thread++;
                            ran[eng_shard_index(sh)]++;
                        },
                        nullptr) == 0);
        for (auto &r : ran)
            CHECK(r == 5);
        CHECK(wrong_thread == 0);
        CHECK(g_echo.shard_starts == 3);
        eng.stop();
        CHECK(g_echo.shard_stops == 3);
        CHECK(eng.run_rc == 0);
        CHECK(eng_run_on_shards(eng.e, [](eng_shard *, void *, void *) {}, nullptr) == -ESRCH);
        eng_stats st = eng.stats();
        CHECK(st.turns > 0);
        uint64_t hist = 0;
        for (uint64_t h : st.turn_us_hist)
            hist += h;
        CHECK(hist == st.turns);
    }
}

TEST_CASE("graceful stop: idle closed at once, busy allowed to finish", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend);
        cfg.drain_timeout_ms = 3000;
        Engine eng(cfg);
        int idle = connect_to(eng.bound());
        int busy = connect_to(eng.bound());
        REQUIRE(send_all(idle, "hi\n"));
        REQUIRE(recv_n(idle, 3) == "hi\n");
        REQUIRE(send_all(busy, "PAUSE 300\nqueued\n"));
        REQUIRE(eventually([] { return g_echo.lines == 2; }));
        auto t0 = std::chrono::steady_clock::now();
        eng_stop(eng.e);
        REQUIRE(wait_eof(idle, 1000));
        // The busy connection finishes its work, then is closed.
        REQUIRE(recv_n(busy, 15) == "RESUMED\nqueued\n");
        REQUIRE(wait_eof(busy, 2000));
        eng.stop();
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        CHECK(ms < 2500);
        CHECK(g_echo.close_reason[ENG_CLOSE_SHUTDOWN] == 2);
        CHECK(g_echo.shard_stops == 1);
        close(idle);
        close(busy);
    }
}

TEST_CASE("graceful stop: what is still busy after drain_timeout_ms is closed", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend);
        cfg.drain_timeout_ms = 200;
        Engine eng(cfg);
        int busy = connect_to(eng.bound());
        int partial = connect_to(eng.bound());
        REQUIRE(send_all(busy, "PAUSE 10000\n"));
        REQUIRE(send_all(partial, "no newline yet"));
        REQUIRE(eventually([&] { return g_echo.lines == 1 && eng.stats().bytes_in >= 26; }));
        auto t0 = std::chrono::steady_clock::now();
        eng_stop(eng.e);
        REQUIRE(wait_eof(busy, 3000));
        REQUIRE(wait_eof(partial, 3000));
        eng.stop();
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        CHECK(ms >= 190);
        CHECK(ms < 2000);
        CHECK(g_echo.close_reason[ENG_CLOSE_SHUTDOWN] == 2);
        close(busy);
        close(partial);
    }
}

namespace {
std::atomic<int> g_signals{0};
std::atomic<int> g_last_signo{0};
void on_signal(void *, eng *, int signo)
{
    g_last_signo = signo;
    g_signals++;
}
} // namespace

TEST_CASE("signals: USR1/HUP reach on_signal, TERM stops", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        static eng_app_ops ops = echo_ops;
        ops.on_signal = on_signal;
        eng_config cfg = echo_config(backend, 2);
        cfg.ops = &ops;
        g_signals = 0;
        Engine eng(cfg);
        pthread_t t = eng.thread.native_handle();
        REQUIRE(pthread_kill(t, SIGUSR1) == 0);
        REQUIRE(eventually([] { return g_signals == 1; }));
        CHECK(g_last_signo == SIGUSR1);
        REQUIRE(pthread_kill(t, SIGHUP) == 0);
        REQUIRE(eventually([] { return g_signals == 2; }));
        CHECK(g_last_signo == SIGHUP);
        REQUIRE(pthread_kill(t, SIGTERM) == 0);
        eng.thread.join(); // eng_run returns by itself
        CHECK(eng.run_rc == 0);
        CHECK(g_echo.shard_stops == 2);
        CHECK(g_signals == 2);
    }
}

namespace {
int failing_start(eng_shard *sh, void *, void **app)
{
    *app = nullptr;
    return eng_shard_index(sh) == 1 ? -ENOENT : 0;
}
} // namespace

TEST_CASE("a shard that fails to start makes eng_run return its error", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        static eng_app_ops ops = echo_ops;
        ops.shard_start = failing_start;
        eng_config cfg = echo_config(backend, 2);
        cfg.ops = &ops;
        eng_listen l = tcp4_any_port();
        cfg.listens = &l;
        cfg.listen_count = 1;
        eng *e;
        char err[256];
        REQUIRE(eng_create(&cfg, &e, err, sizeof(err)) == 0);
        CHECK(eng_run(e) == -ENOENT);
        eng_destroy(e);
    }
}

TEST_CASE("eng_stop before eng_run: run returns at once", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend, 2);
        eng_listen l = tcp4_any_port();
        cfg.listens = &l;
        cfg.listen_count = 1;
        eng *e;
        char err[256];
        REQUIRE(eng_create(&cfg, &e, err, sizeof(err)) == 0);
        eng_stop(e);
        eng_stop(e); // idempotent
        CHECK(eng_run(e) == 0);
        eng_destroy(e);
    }
}
