// stream_test.cpp: the outbound stream client (engine/stream.c) on both backends against small
// scripted loopback servers (peer.h): request and reply, keep-alive reuse, partial writes of a
// large request, a reply trickled byte by byte, peer close before the reply, a silent peer
// (deadline), connection refused then backoff then reconnect, queueing behind one connection,
// queue_max and response_bytes_max at N and N+1, Unix sockets, idle close, destroy with work
// pending, and target parsing.
#include "../engine/harness.h"
#include "peer.h"

extern "C" {
#include "eng/stream.h"
}

#include <mutex>

using namespace th;

namespace
{

struct Result {
    int status;
    std::string reply;
    int tag;
};

std::mutex g_mu;
std::vector<Result> g_results;
eng_stream *g_s;
eng_stream_target g_target;
eng_stream_config g_cfg;
int g_rc;
eng_stream_req g_rq[16];
std::string g_out[16];

ssize_t line_frame(void *, const char *buf, size_t len, bool, bool *)
{
    const void *nl = memchr(buf, '\n', len);
    return nl ? static_cast<const char *>(nl) - buf + 1 : 0;
}

void done(eng_stream_req *rq, int status, const char *reply, size_t len)
{
    std::lock_guard<std::mutex> lk(g_mu);
    g_results.push_back({status, reply ? std::string(reply, len) : std::string(),
                         static_cast<int>(reinterpret_cast<intptr_t>(rq->ctx))});
}

size_t results()
{
    std::lock_guard<std::mutex> lk(g_mu);
    return g_results.size();
}

Result result(size_t i)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return g_results.at(i);
}

void on_shard0(eng *e, const std::function<void(eng_shard *)> &fn)
{
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    if (eng_shard_index(sh) == 0)
                        (*static_cast<const std::function<void(eng_shard *)> *>(p))(sh);
                },
                const_cast<std::function<void(eng_shard *)> *>(&fn)) == 0);
}

void setup(eng *e, const std::string &target)
{
    g_results.clear();
    char err[256] = "";
    if (target.rfind("unix:", 0) == 0)
        REQUIRE(eng_stream_target_unix(target.c_str() + 5, &g_target, err, sizeof(err)) == 0);
    else
        REQUIRE(eng_stream_target_tcp(target.c_str(), &g_target, err, sizeof(err)) == 0);
    on_shard0(e, [](eng_shard *sh) { g_rc = eng_stream_create(sh, &g_target, &g_cfg, &g_s); });
    REQUIRE(g_rc == 0);
}

void config(uint32_t conns_max = 2)
{
    eng_stream_config_defaults(&g_cfg);
    g_cfg.conns_max = conns_max;
    g_cfg.frame = line_frame;
    g_cfg.backoff_min_ms = 200;
    g_cfg.backoff_max_ms = 400;
}

void send(eng *e, int i, const std::string &text, uint32_t timeout_ms = 3000)
{
    g_out[i] = text;
    static int s_i;
    static uint32_t s_t;
    s_i = i;
    s_t = timeout_ms;
    on_shard0(e, [](eng_shard *) {
        g_rc = eng_stream_request(g_s, &g_rq[s_i], g_out[s_i].data(), g_out[s_i].size(), s_t, done,
                                  reinterpret_cast<void *>(static_cast<intptr_t>(s_i)));
    });
    REQUIRE(g_rc == 0);
}

eng_stream_stats stats(eng *e)
{
    static eng_stream_stats st;
    on_shard0(e, [](eng_shard *) { eng_stream_get_stats(g_s, &st); });
    return st;
}

void teardown(eng *e)
{
    on_shard0(e, [](eng_shard *) {
        eng_stream_destroy(g_s);
        g_s = nullptr;
    });
}

} // namespace

TEST_CASE("request, reply and keep-alive reuse", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ECHO);
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, peer.addr());
        send(eng.e, 0, "hello\n");
        REQUIRE(eventually([] { return results() == 1; }));
        CHECK(result(0).status == 0);
        CHECK(result(0).reply == "hello\n");
        send(eng.e, 1, "again\n");
        REQUIRE(eventually([] { return results() == 2; }));
        CHECK(result(1).reply == "again\n");
        eng_stream_stats st = stats(eng.e);
        CHECK(st.connects == 1);
        CHECK(st.reuses == 1);
        CHECK(st.replies == 2);
        CHECK(st.bytes_out == 12);
        CHECK(peer.accepted() == 1);
        teardown(eng.e);
    }
}

TEST_CASE("a large request is written in parts, a reply read byte by byte", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::SLOW_READER_TRICKLE);
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, peer.addr());
        std::string big(4 << 20, 'x');
        big += "\n";
        send(eng.e, 0, big, 20000);
        REQUIRE(eventually([] { return results() == 1; }, 20000));
        CHECK(result(0).status == 0);
        CHECK(result(0).reply == "got 4194305\n");
        teardown(eng.e);
    }
}

TEST_CASE("peer closes before the reply: ECONNRESET, no retry on a fresh connection", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::CLOSE_AFTER_READ);
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, peer.addr());
        send(eng.e, 0, "x\n");
        REQUIRE(eventually([] { return results() == 1; }));
        CHECK(result(0).status == -ECONNRESET);
        CHECK(stats(eng.e).retries == 0);
        CHECK(stats(eng.e).errors == 1);
        CHECK(stats(eng.e).conns_open == 0);
        teardown(eng.e);
    }
}

TEST_CASE("a silent peer: the deadline ends the request and closes the connection", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::SILENT);
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, peer.addr());
        auto t0 = std::chrono::steady_clock::now();
        send(eng.e, 0, "x\n", 150);
        REQUIRE(eventually([] { return results() == 1; }));
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        CHECK(result(0).status == -ETIMEDOUT);
        CHECK(ms >= 140);
        eng_stream_stats st = stats(eng.e);
        CHECK(st.timeouts == 1);
        CHECK(st.conns_open == 0);
        REQUIRE(eventually([&] { return peer.closed() == 1; }));
        teardown(eng.e);
    }
}

TEST_CASE("refused, fail fast while backing off, then reconnect", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        int port = Peer::free_port();
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, "127.0.0.1:" + std::to_string(port));
        send(eng.e, 0, "a\n");
        REQUIRE(eventually([] { return results() == 1; }));
        CHECK(result(0).status == -ECONNREFUSED);
        send(eng.e, 1, "b\n");
        REQUIRE(eventually([] { return results() == 2; }));
        CHECK(result(1).status == -ECONNREFUSED);
        eng_stream_stats st = stats(eng.e);
        CHECK(st.connect_failures == 1); // the second failed at once (backing off)
        CHECK(st.fast_failures == 2);
        Peer peer(Peer::ECHO, port);
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        send(eng.e, 2, "c\n");
        REQUIRE(eventually([] { return results() == 3; }));
        CHECK(result(2).status == 0);
        CHECK(result(2).reply == "c\n");
        CHECK(stats(eng.e).connects == 1);
        teardown(eng.e);
    }
}

TEST_CASE("one connection: requests queue and are answered in order", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ECHO_SLOW);
        Engine eng(echo_config(backend));
        config(1);
        setup(eng.e, peer.addr());
        for (int i = 0; i < 4; i++)
            send(eng.e, i, "r" + std::to_string(i) + "\n");
        REQUIRE(eventually([] { return results() == 4; }));
        for (int i = 0; i < 4; i++) {
            CHECK(result(i).status == 0);
            CHECK(result(i).tag == i);
            CHECK(result(i).reply == "r" + std::to_string(i) + "\n");
        }
        CHECK(peer.accepted() == 1);
        teardown(eng.e);
    }
}

TEST_CASE("queue_max at N and N+1", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ECHO_SLOW);
        Engine eng(echo_config(backend));
        config(1);
        g_cfg.queue_max = 2;
        setup(eng.e, peer.addr());
        send(eng.e, 0, "a\n"); // on the connection
        send(eng.e, 1, "b\n"); // queued 1
        send(eng.e, 2, "c\n"); // queued 2 = queue_max
        send(eng.e, 3, "d\n"); // refused
        REQUIRE(eventually([] { return results() == 4; }));
        CHECK(result(0).tag == 3);
        CHECK(result(0).status == -EAGAIN);
        for (int i = 1; i < 4; i++)
            CHECK(result(i).status == 0);
        CHECK(stats(eng.e).queue_full == 1);
        teardown(eng.e);
    }
}

TEST_CASE("response_bytes_max at N and N+1", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ECHO);
        Engine eng(echo_config(backend));
        config();
        g_cfg.response_bytes_max = 8;
        setup(eng.e, peer.addr());
        send(eng.e, 0, "1234567\n"); // 8 bytes
        REQUIRE(eventually([] { return results() == 1; }));
        CHECK(result(0).status == 0);
        send(eng.e, 1, "12345678\n"); // 9 bytes
        REQUIRE(eventually([] { return results() == 2; }));
        CHECK(result(1).status == -EMSGSIZE);
        teardown(eng.e);
    }
}

TEST_CASE("Unix socket target; idle connections close after idle_ms_max", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string path = "/tmp/stream_test_" + std::to_string(getpid()) + ".sock";
        Peer peer(Peer::ECHO, 0, path);
        Engine eng(echo_config(backend));
        config();
        g_cfg.idle_ms_max = 100;
        setup(eng.e, "unix:" + path);
        send(eng.e, 0, "u\n");
        REQUIRE(eventually([] { return results() == 1; }));
        CHECK(result(0).reply == "u\n");
        REQUIRE(eventually([&] { return peer.closed() == 1; }));
        eng_stream_stats st = stats(eng.e);
        CHECK(st.idle_closes == 1);
        CHECK(st.conns_open == 0);
        teardown(eng.e);
    }
}

TEST_CASE("a peer closing an idle connection is noticed; the next request reconnects",
          "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ONE_REPLY_THEN_CLOSE);
        Engine eng(echo_config(backend));
        config();
        setup(eng.e, peer.addr());
        send(eng.e, 0, "a\n");
        REQUIRE(eventually([] { return results() == 1; }));
        REQUIRE(eventually([&] { return stats(eng.e).conns_open == 0; }));
        send(eng.e, 1, "b\n");
        REQUIRE(eventually([] { return results() == 2; }));
        CHECK(result(1).status == 0);
        CHECK(result(1).reply == "b\n");
        CHECK(stats(eng.e).connects == 2);
        teardown(eng.e);
    }
}

TEST_CASE("destroy ends running and waiting requests with ECANCELED", "[stream]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::SILENT);
        Engine eng(echo_config(backend));
        config(1);
        setup(eng.e, peer.addr());
        send(eng.e, 0, "a\n");
        send(eng.e, 1, "b\n");
        teardown(eng.e);
        REQUIRE(results() == 2);
        CHECK(result(0).status == -ECANCELED);
        CHECK(result(1).status == -ECANCELED);
    }
}

TEST_CASE("a target by name is looked up at each connection attempt", "[stream][resolve]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Peer peer(Peer::ECHO);
        Engine eng(echo_config(backend));
        config();
        g_cfg.idle_ms_max = 0; /* each reply closes its connection: every request connects */
        std::string a = peer.addr();
        setup(eng.e, "localhost" + a.substr(a.rfind(':')));
        for (int i = 0; i < 3; i++) {
            send(eng.e, i, "hello\n");
            REQUIRE(eventually([i] { return results() == (size_t)i + 1; }));
            CHECK(result((size_t)i).status == 0);
            CHECK(result((size_t)i).reply == "hello\n");
        }
        CHECK(stats(eng.e).connects == 3);
        CHECK(peer.accepted() == 3); /* localhost: its IPv4 address, where the peer listens */
        teardown(eng.e);
    }
}

TEST_CASE("a name that does not resolve fails the request as a failed connect", "[stream][resolve]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend));
        config();
        /* An empty label: glibc refuses it without sending a query (no traffic off loopback). */
        setup(eng.e, "bad..name:80");
        send(eng.e, 0, "hello\n");
        send(eng.e, 1, "again\n");
        REQUIRE(eventually([] { return results() == 2; }));
        CHECK(result(0).status == -EHOSTUNREACH);
        CHECK(result(1).status == -EHOSTUNREACH);
        eng_stream_stats st = stats(eng.e);
        CHECK(st.connect_failures == 1);
        CHECK(st.connects == 0);
        send(eng.e, 2, "within the backoff\n");
        REQUIRE(eventually([] { return results() == 3; }));
        CHECK(result(2).status == -EHOSTUNREACH);
        CHECK(stats(eng.e).connect_failures == 1); /* failed at once, no new lookup */
        teardown(eng.e);
    }
}

TEST_CASE("targets: HOST:PORT, [V6]:PORT, names, paths, and bad input", "[stream]")
{
    eng_stream_target t;
    char err[256];
    REQUIRE(eng_stream_target_tcp("127.0.0.1:10023", &t, err, sizeof(err)) == 0);
    CHECK(std::string(t.name) == "127.0.0.1:10023");
    REQUIRE(eng_stream_target_tcp("[::1]:80", &t, err, sizeof(err)) == 0);
    CHECK(std::string(t.name) == "[::1]:80");
    REQUIRE(eng_stream_target_tcp("localhost:12345", &t, err, sizeof(err)) == 0);
    CHECK(t.addr_len == 0); // a name: looked up at each connection attempt, not now
    CHECK(std::string(t.host) == "localhost");
    CHECK(std::string(t.port) == "12345");
    CHECK(std::string(t.name) == "localhost:12345");
    CHECK(eng_stream_target_tcp((std::string(256, 'h') + ":80").c_str(), &t, err, sizeof(err)) ==
          -EINVAL);
    CHECK(eng_stream_target_tcp("127.0.0.1", &t, err, sizeof(err)) == -EINVAL);
    CHECK(eng_stream_target_tcp("127.0.0.1:", &t, err, sizeof(err)) == -EINVAL);
    CHECK(eng_stream_target_tcp(":80", &t, err, sizeof(err)) == -EINVAL);
    CHECK(eng_stream_target_tcp("127.0.0.1:65536", &t, err, sizeof(err)) == -EINVAL);
    CHECK(eng_stream_target_tcp("127.0.0.1:0", &t, err, sizeof(err)) == -EINVAL);
    CHECK(eng_stream_target_tcp("127.0.0.1:8x", &t, err, sizeof(err)) == -EINVAL);
    REQUIRE(eng_stream_target_tcp("bad..name:80", &t, err, sizeof(err)) == 0); // fails later
    REQUIRE(eng_stream_target_unix("/run/x.sock", &t, err, sizeof(err)) == 0);
    CHECK(std::string(t.name) == "unix:/run/x.sock");
    CHECK(eng_stream_target_unix("", &t, err, sizeof(err)) == -EINVAL);
    std::string longp(200, 'p');
    CHECK(eng_stream_target_unix(longp.c_str(), &t, err, sizeof(err)) == -ENAMETOOLONG);
}
