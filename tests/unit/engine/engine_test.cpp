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
    CHECK(eng_run_on_shards(
              e, [](eng_shard *, void *, void *) {}, nullptr) == -ESRCH);
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
        CHECK(eng_run_on_shards(
                  eng.e, [](eng_shard *, void *, void *) {}, nullptr) == -ESRCH);
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
        // The busy connection finishes its work, then is closed; the line it had staged is
        // not begun (Postfix sends its next request as soon as it reads a reply: beginning
        // staged input would keep a loaded connection busy until drain_timeout_ms).
        REQUIRE(recv_n(busy, 8) == "RESUMED\n");
        timeval tv{2, 0};
        setsockopt(busy, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::string rest;
        char buf[64];
        ssize_t n;
        while ((n = recv(busy, buf, sizeof buf, 0)) > 0)
            rest.append(buf, size_t(n));
        CHECK(n == 0); // EOF, not the timeout
        CHECK(rest.empty());
        CHECK(g_echo.lines == 2);
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

TEST_CASE("graceful stop: a drained shard runs until work of another shard's connection is "
          "done on it",
          "[engine]")
{
    // The connection's shard sends its work to the other shard, which has no connection (so
    // it is drained at once) and answers after 300 ms. A shard that ended its loop when it
    // had no connection left would never answer: the connection would wait for
    // drain_timeout_ms and be closed without a reply.
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend, 2);
        cfg.drain_timeout_ms = 5000;
        Engine eng(cfg);
        int fd = connect_to(eng.bound());
        REQUIRE(send_all(fd, "HOP 300\n"));
        REQUIRE(eventually([] { return g_echo.hops_arrived == 1; }));
        auto t0 = std::chrono::steady_clock::now();
        eng_stop(eng.e);
        CHECK(recv_n(fd, 7, 3000) == "HOPPED\n");
        REQUIRE(wait_eof(fd, 3000));
        eng.stop();
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        CHECK(ms < 2000);
        CHECK(g_echo.hops_done == 1);
        CHECK(g_echo.close_reason[ENG_CLOSE_SHUTDOWN] == 1);
        CHECK(g_echo.shard_stops == 2);
        close(fd);
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

namespace
{
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

namespace
{
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
        CHECK(eng_run(e) == -EALREADY);
        eng_destroy(e);
    }
}

// ---------------------------------------------------------------------------------------------
// The start-up probe, with io_uring really blocked: a seccomp filter in a forked child makes
// io_uring_setup fail as a container profile or kernel.io_uring_disabled would.

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

extern "C" {
#include "eng/log.h"
}

namespace
{

int block_io_uring_setup(int err)
{
    sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned(err) & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof(f) / sizeof(f[0])), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

std::string slurp(const std::string &path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// In a child with io_uring_setup failing with err: AUTO falls back to epoll (and logs why), URING
// fails with a sentence. Returns the child's exit code (0 = as expected).
int probe_child(int err, const char *why, const std::string &log)
{
    fflush(nullptr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (block_io_uring_setup(err) < 0)
            _exit(10);
        eng_log_config lc{};
        lc.level = 4;
        lc.target = ENG_LOG_FILE;
        lc.path = log.c_str();
        char msg[512];
        if (eng_log_open(&lc, msg, sizeof(msg)) < 0)
            _exit(11);
        eng_config cfg = echo_config(ENG_BACKEND_AUTO, 1);
        eng *e;
        if (eng_create(&cfg, &e, msg, sizeof(msg)) < 0)
            _exit(12);
        bool epoll = std::string(eng_backend_name(e)) == "epoll";
        bool desc = std::string(eng_backend_desc(e)).find(why) != std::string::npos;
        eng_destroy(e);
        if (!epoll)
            _exit(13);
        if (!desc)
            _exit(14);
        cfg.backend = ENG_BACKEND_URING;
        int rc = eng_create(&cfg, &e, msg, sizeof(msg));
        if (rc != -err)
            _exit(15);
        if (std::string(msg).find(why) == std::string::npos)
            _exit(16);
        eng_log_close();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

} // namespace

TEST_CASE("io_uring blocked: AUTO falls back to epoll and says why, URING fails", "[engine]")
{
    std::string log = "/tmp/ringpolicyd-probe-test-" + std::to_string(getpid());
    CHECK(probe_child(EPERM, "seccomp", log) == 0);
    std::string text = slurp(log);
    CHECK(text.find("io_uring is not usable (io_uring_setup is blocked (EPERM)") !=
          std::string::npos);
    CHECK(text.find("using the epoll backend") != std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1); // one line
    unlink(log.c_str());
    CHECK(probe_child(ENOSYS, "this kernel has no io_uring", log) == 0);
    unlink(log.c_str());
    CHECK(probe_child(ENOMEM, "ulimit -l", log) == 0);
    unlink(log.c_str());
}

TEST_CASE("a slow turn is counted and logged once", "[engine]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string log = "/tmp/ringpolicyd-slow-test-" + std::to_string(getpid());
        eng_log_config lc{};
        lc.level = 4;
        lc.target = ENG_LOG_FILE;
        lc.path = log.c_str();
        char msg[256];
        REQUIRE(eng_log_open(&lc, msg, sizeof(msg)) == 0);
        {
            eng_config cfg = echo_config(backend);
            cfg.limits.turn_warn_ms = 5;
            Engine eng(cfg);
            for (int i = 0; i < 3; i++)
                REQUIRE(eng_run_on_shards(
                            eng.e,
                            [](eng_shard *, void *, void *) {
                                std::this_thread::sleep_for(std::chrono::milliseconds(30));
                            },
                            nullptr) == 0);
            REQUIRE(eventually([&] { return eng.stats().turns_slow >= 3; }));
            CHECK(eng.stats().turn_us_max >= 30000);
        }
        eng_log_close();
        std::string text = slurp(log);
        CHECK(text.find("shard 0: one loop turn took") != std::string::npos);
        CHECK(std::count(text.begin(), text.end(), '\n') == 1); // rate-limited
        unlink(log.c_str());
    }
}
