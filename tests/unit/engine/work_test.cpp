// work_test.cpp: the worker pool (engine/work.c) on both backends: jobs run on worker threads
// and complete on the shard that submitted them (2 shards), in order with one worker,
// concurrently with two, queue_max at N and N+1, detach at shard stop (queued jobs cancelled,
// running ones waited for, every done run before the shard ends), submit from a shard that is
// not attached, bad configurations.
#include "harness.h"

extern "C" {
#include "eng/work.h"
}

#include <condition_variable>
#include <mutex>

using namespace th;

namespace
{

eng_work_pool *g_pool;
std::atomic<int> g_attach_rc{0};
bool g_attach = true;

struct Job {
    eng_work w;
    unsigned submit_shard = 0;
    std::atomic<int> ran_on_shard{-2}; // eng_shard_self() seen by run (-1: not a shard thread)
    std::atomic<int> done_shard{-1};
    std::atomic<int> status{1};
    std::atomic<int> done_seq{-1};
    unsigned worker = 0;
    bool block = false;
};

std::atomic<int> g_done_seq{0};
std::atomic<int> g_running{0}, g_running_max{0};

// A gate blocking jobs until opened.
std::mutex g_gate_mu;
std::condition_variable g_gate_cv;
bool g_gate_open = true;

void gate_set(bool open)
{
    std::lock_guard<std::mutex> lk(g_gate_mu);
    g_gate_open = open;
    g_gate_cv.notify_all();
}

void job_run(eng_work *w, unsigned worker)
{
    Job *j = reinterpret_cast<Job *>(w);
    eng_shard *self = eng_shard_self();
    j->ran_on_shard = self ? int(eng_shard_index(self)) : -1;
    j->worker = worker;
    int now = ++g_running;
    int prev = g_running_max.load();
    while (now > prev && !g_running_max.compare_exchange_weak(prev, now)) {
    }
    if (j->block) {
        std::unique_lock<std::mutex> lk(g_gate_mu);
        g_gate_cv.wait(lk, [] { return g_gate_open; });
    }
    --g_running;
}

void job_done(eng_shard *sh, eng_work *w)
{
    Job *j = reinterpret_cast<Job *>(w);
    // No Catch2 assertion here: it is not thread-safe (ThreadSanitizer saw its counters raced by
    // the shards). A done on a thread other than sh's records -3, which the tests' done_shard
    // checks reject.
    j->status = w->status;
    j->done_seq = g_done_seq++;
    j->done_shard = sh == eng_shard_self() ? int(eng_shard_index(sh)) : -3;
}

int work_shard_start(eng_shard *sh, void *, void **app)
{
    *app = nullptr;
    g_attach_rc = g_attach ? eng_work_shard_attach(g_pool, sh) : 0;
    return 0;
}

void work_shard_stop(eng_shard *sh, void *)
{
    eng_work_shard_detach(g_pool, sh);
}

eng_app_ops g_ops;

eng_config work_config(eng_backend backend, unsigned shards)
{
    eng_config cfg = echo_config(backend, shards);
    g_ops = echo_ops;
    g_ops.shard_start = work_shard_start;
    g_ops.shard_stop = work_shard_stop;
    cfg.ops = &g_ops;
    return cfg;
}

eng_work_pool *make_pool(unsigned threads, uint32_t queue_max)
{
    eng_work_config c;
    eng_work_config_defaults(&c);
    c.thread_count = threads;
    c.queue_max = queue_max;
    c.name = "test";
    eng_work_pool *wp = nullptr;
    REQUIRE(eng_work_create(&c, &wp) == 0);
    return wp;
}

struct Submit {
    Job *jobs;
    size_t count;
    unsigned shard;
    std::vector<int> rcs;
};

// Submits jobs from shard `shard` (on its thread) and records each return code.
void submit_on(eng *e, Submit &s)
{
    s.rcs.assign(s.count, 99);
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    Submit *s = static_cast<Submit *>(p);
                    if (eng_shard_index(sh) != s->shard)
                        return;
                    for (size_t i = 0; i < s->count; i++) {
                        Job &j = s->jobs[i];
                        j.w.run = job_run;
                        j.w.done = job_done;
                        j.submit_shard = s->shard;
                        s->rcs[i] = eng_work_submit(g_pool, sh, &j.w);
                    }
                },
                &s) == 0);
}

void reset_counters()
{
    g_done_seq = 0;
    g_running = 0;
    g_running_max = 0;
    g_attach = true;
    gate_set(true);
}

} // namespace

TEST_CASE("jobs run on workers and complete on the submitting shard", "[work]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        reset_counters();
        g_pool = make_pool(2, 1024);
        {
            Engine eng(work_config(backend, 2));
            REQUIRE(g_attach_rc == 0);
            static Job jobs[2][200];
            Submit s0{jobs[0], 200, 0, {}}, s1{jobs[1], 200, 1, {}};
            submit_on(eng.e, s0);
            submit_on(eng.e, s1);
            for (int rc : s0.rcs)
                REQUIRE(rc == 0);
            for (int rc : s1.rcs)
                REQUIRE(rc == 0);
            REQUIRE(eventually([] { return g_done_seq == 400; }));
            for (unsigned sh = 0; sh < 2; sh++)
                for (Job &j : jobs[sh]) {
                    CHECK(j.ran_on_shard == -1); // a worker, not a shard thread
                    CHECK(j.done_shard == int(sh));
                    CHECK(j.status == 0);
                    CHECK(j.worker < 2);
                }
            eng_work_stats st;
            eng_work_pool_stats(g_pool, &st);
            CHECK(st.submitted == 400);
            CHECK(st.completed == 400);
            CHECK(st.cancelled == 0);
            CHECK(st.queue_full == 0);
            CHECK(st.queue_depth == 0);
            CHECK(st.wakes >= 1);
            CHECK(st.wakes <= 400);
        }
        eng_work_destroy(g_pool);
    }
}

TEST_CASE("one worker completes jobs in submission order; two run concurrently", "[work]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        reset_counters();
        g_pool = make_pool(1, 1024);
        {
            Engine eng(work_config(backend, 1));
            static Job jobs[100];
            for (Job &j : jobs)
                j.done_seq = -1;
            Submit s{jobs, 100, 0, {}};
            submit_on(eng.e, s);
            REQUIRE(eventually([] { return g_done_seq == 100; }));
            for (int i = 0; i < 100; i++)
                CHECK(jobs[i].done_seq == i);
            CHECK(g_running_max == 1);
        }
        eng_work_destroy(g_pool);

        reset_counters();
        g_pool = make_pool(2, 1024);
        {
            Engine eng(work_config(backend, 1));
            gate_set(false);
            static Job jobs[2];
            jobs[0].block = jobs[1].block = true;
            Submit s{jobs, 2, 0, {}};
            submit_on(eng.e, s);
            REQUIRE(eventually([] { return g_running == 2; }));
            gate_set(true);
            REQUIRE(eventually([] { return g_done_seq == 2; }));
            CHECK(jobs[0].worker != jobs[1].worker);
        }
        eng_work_destroy(g_pool);
    }
}

TEST_CASE("queue_max jobs wait; one more is refused and counted", "[work]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        reset_counters();
        const uint32_t N = 8;
        g_pool = make_pool(1, N);
        {
            Engine eng(work_config(backend, 1));
            gate_set(false);
            static Job blocker[1];
            blocker[0].block = true;
            Submit b{blocker, 1, 0, {}};
            submit_on(eng.e, b);
            REQUIRE(b.rcs[0] == 0);
            REQUIRE(eventually([] { return g_running == 1; })); // taken off the queue
            static Job jobs[N + 1];
            Submit s{jobs, N + 1, 0, {}};
            submit_on(eng.e, s);
            for (uint32_t i = 0; i < N; i++)
                CHECK(s.rcs[i] == 0);
            CHECK(s.rcs[N] == -ENOBUFS);
            eng_work_stats st;
            eng_work_pool_stats(g_pool, &st);
            CHECK(st.queue_full == 1);
            CHECK(st.queue_depth == N);
            CHECK(st.queue_depth_max == N);
            gate_set(true);
            REQUIRE(eventually([] { return g_done_seq == int(N) + 1; }));
            CHECK(jobs[N].done_seq == -1); // refused: done never runs
        }
        eng_work_destroy(g_pool);
    }
}

TEST_CASE("detach at shard stop cancels queued jobs and waits for running ones", "[work]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        reset_counters();
        g_pool = make_pool(1, 64);
        static Job jobs[10];
        for (Job &j : jobs) {
            j.done_seq = -1;
            j.status = 1;
        }
        jobs[0].block = true;
        {
            Engine eng(work_config(backend, 1));
            gate_set(false);
            Submit s{jobs, 10, 0, {}};
            submit_on(eng.e, s);
            REQUIRE(eventually([] { return g_running == 1; }));
            // Open the gate a little after the stop began: the detach must wait for it.
            std::thread opener([] {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                gate_set(true);
            });
            eng.stop();
            opener.join();
            CHECK(g_done_seq == 10); // every done ran before the shard ended
        }
        CHECK(jobs[0].status == 0);
        for (int i = 1; i < 10; i++)
            CHECK(jobs[i].status == -ECANCELED);
        eng_work_stats st;
        eng_work_pool_stats(g_pool, &st);
        CHECK(st.completed == 1);
        CHECK(st.cancelled == 9);
        eng_work_destroy(g_pool);
    }
}

TEST_CASE("a shard that did not attach cannot submit", "[work]")
{
    reset_counters();
    g_pool = make_pool(1, 4);
    g_attach = false;
    {
        Engine eng(work_config(ENG_BACKEND_EPOLL, 1));
        static Job jobs[1];
        Submit s{jobs, 1, 0, {}};
        submit_on(eng.e, s);
        CHECK(s.rcs[0] == -ENOTCONN);
    }
    eng_work_destroy(g_pool);
    g_attach = true;
}

TEST_CASE("bad pool configurations are refused", "[work]")
{
    eng_work_config c;
    eng_work_config_defaults(&c);
    CHECK(c.thread_count == 2);
    CHECK(c.queue_max == 1024);
    eng_work_pool *wp = nullptr;
    c.thread_count = 0;
    CHECK(eng_work_create(&c, &wp) == -EINVAL);
    c.thread_count = ENG_WORK_THREADS_MAX + 1;
    CHECK(eng_work_create(&c, &wp) == -EINVAL);
    c.thread_count = ENG_WORK_THREADS_MAX;
    c.queue_max = 0;
    CHECK(eng_work_create(&c, &wp) == -EINVAL);
    c.queue_max = 1;
    REQUIRE(eng_work_create(&c, &wp) == 0);
    CHECK(eng_work_thread_count(wp) == ENG_WORK_THREADS_MAX);
    eng_work_destroy(wp); // never started: nothing to join
    eng_work_destroy(nullptr);
}
