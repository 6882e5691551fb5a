// mc_test.cpp: the memcached client (engine/mc.c, engine/mc_proto.c). The reply parser and the
// key encoding are pure and tested byte by byte (fragments, a guard page, every limit at N and
// N+1); the client runs against real memcached servers started by the test
// (tests/unit/mc/mc_server.h) on both backends: every command's statuses, N operations in one
// turn leaving in one write, replies in order, keys with spaces, control bytes and 300 bytes,
// a SIGSTOPped server (timeouts, then fail fast, then recovery), a killed and restarted server,
// two servers with ketama, ops_max and value_bytes_max at N and N+1, an oversized value skipped
// without losing the connection, destroy with operations in flight.
#include "harness.h"

#include "../mc/mc_server.h"

extern "C" {
#include "eng/mc.h"
}

#include <sys/mman.h>

#include <map>
#include <mutex>
#include <set>

using namespace th;
using namespace std::string_literals;

namespace
{

// ---------------------------------------------------------------------------------------------
// Parser helpers

struct Parsed {
    long n;
    eng_mc_reply rep;
};

Parsed parse(eng_mc_cmd cmd, const std::string &in, size_t vmax = 1 << 20)
{
    Parsed p;
    p.n = eng_mc_reply_parse(cmd, in.data(), in.size(), vmax, &p.rep);
    return p;
}

// Parses in arriving in pieces of frag bytes: every prefix before the end must ask for more.
void check_fragments(eng_mc_cmd cmd, const std::string &in, size_t vmax = 1 << 20)
{
    for (size_t frag : {1, 2, 5, 10, 100}) {
        INFO("fragment size " << frag);
        for (size_t have = frag; have < in.size(); have += frag) {
            eng_mc_reply rep;
            REQUIRE(eng_mc_reply_parse(cmd, in.data(), have, vmax, &rep) == 0);
        }
        eng_mc_reply rep;
        REQUIRE(eng_mc_reply_parse(cmd, in.data(), in.size(), vmax, &rep) == long(in.size()));
    }
}

// The input placed flush against an unreadable page: the parser must not read past it.
long parse_guarded(eng_mc_cmd cmd, const std::string &in, eng_mc_reply *rep)
{
    long page = sysconf(_SC_PAGESIZE);
    char *m = static_cast<char *>(mmap(nullptr, size_t(page) * 2, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    REQUIRE(m != MAP_FAILED);
    REQUIRE(mprotect(m + page, size_t(page), PROT_NONE) == 0);
    REQUIRE(in.size() <= size_t(page));
    char *p = m + page - in.size();
    memcpy(p, in.data(), in.size());
    long n = eng_mc_reply_parse(cmd, p, in.size(), 1 << 20, rep);
    munmap(m, size_t(page) * 2);
    return n;
}

std::string encode(const std::string &prefix, const std::string &key)
{
    char out[ENG_MC_KEY_BYTES_MAX + 1];
    size_t n = eng_mc_key_encode(prefix.data(), prefix.size(), key.data(), key.size(), out);
    REQUIRE(out[n] == '\0');
    return std::string(out, n);
}

bool key_bytes_ok(const std::string &k)
{
    for (unsigned char c : k)
        if (c <= 0x20 || c == 0x7f)
            return false;
    return !k.empty() && k.size() <= ENG_MC_KEY_BYTES_MAX;
}

// ---------------------------------------------------------------------------------------------
// Client helpers

struct Res {
    int st = -1; // -1: done has not run
    std::string value;
    int seq = -1;
    int shard = -1;
};

std::mutex g_mu;
std::atomic<int> g_seq{0};
eng_mc *g_mc;
eng_mc_servers *g_servers;

void on_done(void *ctx, eng_mc_status st, const char *v, size_t len)
{
    Res *r = static_cast<Res *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    r->st = st;
    r->value = v ? std::string(v, len) : std::string();
    r->seq = g_seq++;
    eng_shard *self = eng_shard_self();
    r->shard = self ? int(eng_shard_index(self)) : -1;
}

bool finished(const Res &r)
{
    std::lock_guard<std::mutex> lk(g_mu);
    return r.st != -1;
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

eng_mc_config test_config()
{
    eng_mc_config c;
    eng_mc_config_defaults(&c);
    c.name = "test";
    c.timeout_ms = 2000;
    c.backoff_min_ms = 50;
    c.backoff_max_ms = 200;
    return c;
}

eng_mc_stats stats(eng *e)
{
    eng_mc_stats st;
    on_shard0(e, [&](eng_shard *) { eng_mc_get_stats(g_mc, &st); });
    return st;
}

bool server_up(eng *e, unsigned idx = 0)
{
    bool up = false;
    on_shard0(e, [&](eng_shard *) { up = eng_mc_server_up(g_mc, idx); });
    return up;
}

enum Op { GET, SET, ADD, DEL, INCR, TOUCH };

int issue(eng_mc *mc, Op op, const std::string &key, Res *r, const std::string &val = "",
          uint32_t exp = 0, uint32_t timeout_ms = 0)
{
    switch (op) {
    case GET:
        return eng_mc_get(mc, key.data(), key.size(), timeout_ms, on_done, r);
    case SET:
        return eng_mc_set(mc, key.data(), key.size(), val.data(), val.size(), exp, timeout_ms,
                          on_done, r);
    case ADD:
        return eng_mc_add(mc, key.data(), key.size(), val.data(), val.size(), exp, timeout_ms,
                          on_done, r);
    case DEL:
        return eng_mc_delete(mc, key.data(), key.size(), timeout_ms, on_done, r);
    case INCR:
        return eng_mc_incr(mc, key.data(), key.size(), std::stoull(val), timeout_ms, on_done, r);
    case TOUCH:
        return eng_mc_touch(mc, key.data(), key.size(), exp, timeout_ms, on_done, r);
    }
    return -1;
}

// One operation, waited for.
Res run(eng *e, Op op, const std::string &key, const std::string &val = "", uint32_t exp = 0,
        uint32_t timeout_ms = 0)
{
    Res r;
    int rc = 99;
    on_shard0(e, [&](eng_shard *) { rc = issue(g_mc, op, key, &r, val, exp, timeout_ms); });
    REQUIRE(rc == 0);
    REQUIRE(eventually([&] { return finished(r); }, 10000));
    return r;
}

struct Fixture {
    Engine eng;
    // wait_up: until every server is connected (false: a server that cannot be reached).
    explicit Fixture(eng_backend b, const std::string &servers, eng_mc_config cfg = test_config(),
                     bool wait_up = true)
        : eng(echo_config(b, 2))
    {
        char err[256] = "";
        int rc = eng_mc_servers_parse(servers.c_str(), &g_servers, err, sizeof(err));
        INFO(err);
        REQUIRE(rc == 0);
        on_shard0(eng.e, [&](eng_shard *sh) { rc = eng_mc_create(sh, g_servers, &cfg, &g_mc); });
        REQUIRE(rc == 0);
        for (unsigned i = 0; wait_up && i < eng_mc_servers_count(g_servers); i++)
            REQUIRE(eventually([&] { return server_up(eng.e, i); }, 5000));
    }
    ~Fixture()
    {
        if (g_mc)
            on_shard0(eng.e, [](eng_shard *) { eng_mc_destroy(g_mc); });
        g_mc = nullptr;
        eng.stop();
        eng_mc_servers_free(g_servers);
        g_servers = nullptr;
    }
};

rpdtest::McServer &server_a()
{
    static rpdtest::McServer s;
    return s;
}

rpdtest::McServer &server_b()
{
    static rpdtest::McServer s;
    return s;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// The parser

TEST_CASE("every reply kind parses whole, in fragments and against a guard page", "[mc]")
{
    struct Case {
        eng_mc_cmd cmd;
        std::string in;
        eng_mc_status st;
        std::string value;
    };
    const std::string v = "a b\r\nc\0d"s; // a value may hold CRLF and NUL
    const Case cases[] = {
        {ENG_MC_CMD_GET, "END\r\n", ENG_MC_NOT_FOUND, ""},
        {ENG_MC_CMD_GET, "VALUE k 0 3\r\nabc\r\nEND\r\n", ENG_MC_OK, "abc"},
        {ENG_MC_CMD_GET, "VALUE k 4294967295 0 77\r\n\r\nEND\r\n", ENG_MC_OK, ""},
        {ENG_MC_CMD_GET, "VALUE ~bYQ 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\nEND\r\n",
         ENG_MC_OK, v},
        {ENG_MC_CMD_GET, "SERVER_ERROR out of memory\r\n", ENG_MC_ERROR, ""},
        {ENG_MC_CMD_SET, "STORED\r\n", ENG_MC_OK, ""},
        {ENG_MC_CMD_SET, "NOT_STORED\r\n", ENG_MC_NOT_STORED, ""},
        {ENG_MC_CMD_SET, "SERVER_ERROR object too large for cache\r\n", ENG_MC_ERROR, ""},
        {ENG_MC_CMD_ADD, "STORED\r\n", ENG_MC_OK, ""},
        {ENG_MC_CMD_ADD, "NOT_STORED\r\n", ENG_MC_NOT_STORED, ""},
        {ENG_MC_CMD_DELETE, "DELETED\r\n", ENG_MC_OK, ""},
        {ENG_MC_CMD_DELETE, "NOT_FOUND\r\n", ENG_MC_NOT_FOUND, ""},
        {ENG_MC_CMD_INCR, "18446744073709551615\r\n", ENG_MC_OK, "18446744073709551615"},
        {ENG_MC_CMD_INCR, "NOT_FOUND\r\n", ENG_MC_NOT_FOUND, ""},
        {ENG_MC_CMD_INCR, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
         ENG_MC_ERROR, ""},
        {ENG_MC_CMD_TOUCH, "TOUCHED\r\n", ENG_MC_OK, ""},
        {ENG_MC_CMD_TOUCH, "NOT_FOUND\r\n", ENG_MC_NOT_FOUND, ""},
        {ENG_MC_CMD_DELETE, "ERROR\r\n", ENG_MC_ERROR, ""},
    };
    for (const Case &c : cases) {
        INFO("reply " << c.in);
        Parsed p = parse(c.cmd, c.in);
        REQUIRE(p.n == long(c.in.size()));
        CHECK(p.rep.st == c.st);
        CHECK(std::string(p.rep.value ? p.rep.value : "", p.rep.value_len) == c.value);
        check_fragments(c.cmd, c.in);
        eng_mc_reply rep;
        CHECK(parse_guarded(c.cmd, c.in, &rep) == long(c.in.size()));
        CHECK(parse_guarded(c.cmd, c.in.substr(0, c.in.size() - 1), &rep) == 0);
        // A following reply is left alone.
        CHECK(parse(c.cmd, c.in + "STORED\r\n").n == long(c.in.size()));
    }
    Parsed g = parse(ENG_MC_CMD_GET, "VALUE some-key 42 1\r\nx\r\nEND\r\n");
    CHECK(g.rep.flags == 42);
    CHECK(g.rep.key_hash == eng_mc_key_hash("some-key", 8));
}

TEST_CASE("malformed replies are refused", "[mc]")
{
    const std::pair<eng_mc_cmd, std::string> bad[] = {
        {ENG_MC_CMD_GET, "VALUE k 0 3\r\nabcX\r\nEND\r\n"}, // data longer than announced
        {ENG_MC_CMD_GET, "VALUE k 0 3\r\nabc\r\nENDX\r\n"},
        {ENG_MC_CMD_GET, "VALUE k 0\r\n"},
        {ENG_MC_CMD_GET, "VALUE k x 3\r\nabc\r\nEND\r\n"},
        {ENG_MC_CMD_GET, "VALUE k 0 -1\r\n"},
        {ENG_MC_CMD_GET, "VALUE k 4294967296 1\r\nx\r\nEND\r\n"}, // flags over 32 bits
        {ENG_MC_CMD_GET, "VALUE  k 0 1\r\nx\r\nEND\r\n"},         // empty field
        {ENG_MC_CMD_GET, "VALUE k 0 1 2 3\r\nx\r\nEND\r\n"},
        {ENG_MC_CMD_GET, "STORED\r\n"}, // not a reply to get
        {ENG_MC_CMD_SET, "DELETED\r\n"},
        {ENG_MC_CMD_ADD, "END\r\n"},
        {ENG_MC_CMD_INCR, "12a\r\n"},
        {ENG_MC_CMD_INCR, "18446744073709551616\r\n"},
        {ENG_MC_CMD_INCR, "\r\n"},
        {ENG_MC_CMD_TOUCH, "STORED\r\n"},
        {ENG_MC_CMD_DELETE, "DELETED\n"}, // LF without CR
        {ENG_MC_CMD_DELETE, "DELETED\rX"},
        {ENG_MC_CMD_GET_TAIL, "VALUE k 0 1\r\nx\r\nEND\r\n"},
    };
    for (const auto &b : bad) {
        INFO("reply " << b.second);
        CHECK(parse(b.first, b.second).n == -EPROTO);
    }
}

TEST_CASE("reply line and value limits at N and N+1", "[mc]")
{
    // A line of ENG_MC_LINE_BYTES_MAX bytes is fine; one more byte is not.
    std::string line = "SERVER_ERROR ";
    line.resize(ENG_MC_LINE_BYTES_MAX, 'x');
    CHECK(parse(ENG_MC_CMD_SET, line + "\r\n").n == long(line.size() + 2));
    CHECK(parse(ENG_MC_CMD_SET, line + "x\r\n").n == -EPROTO);
    CHECK(parse(ENG_MC_CMD_SET, line).n == 0); // may still end
    CHECK(parse(ENG_MC_CMD_SET, line + "xx").n == -EPROTO);

    // value_bytes_max: N is taken whole, N+1 is reported for discarding.
    std::string val(100, 'v');
    std::string whole = "VALUE k 0 100\r\n" + val + "\r\nEND\r\n";
    Parsed ok = parse(ENG_MC_CMD_GET, whole, 100);
    CHECK(ok.n == long(whole.size()));
    CHECK(ok.rep.st == ENG_MC_OK);
    CHECK(ok.rep.discard_bytes == 0);
    Parsed big = parse(ENG_MC_CMD_GET, whole, 99);
    CHECK(big.n == long(strlen("VALUE k 0 100\r\n")));
    CHECK(big.rep.st == ENG_MC_ERROR);
    CHECK(big.rep.discard_bytes == 102);
    Parsed tail = parse(ENG_MC_CMD_GET_TAIL, "END\r\n");
    CHECK(tail.n == 5);
    CHECK(tail.rep.st == ENG_MC_ERROR);
}

// ---------------------------------------------------------------------------------------------
// Keys

TEST_CASE("keys the protocol cannot carry are encoded, others are sent as they are", "[mc]")
{
    CHECK(encode("", "sender,1.2.3.4,rcpt") == "sender,1.2.3.4,rcpt");
    CHECK(encode("mt-", "abc") == "mt-abc");
    CHECK(encode("", "a b") == "~bYSBi");
    CHECK(encode("", "") == "~b");
    CHECK(encode("", "~x") == "~bfng");                // raw keys never start with '~'
    CHECK(encode("", "caf\xc3\xa9") == "caf\xc3\xa9"); // UTF-8 is fine as it is
    // 250 bytes with the prefix: plain; 251: encoded.
    std::string k250(247, 'k');
    CHECK(encode("ns-", k250) == "ns-" + k250);
    std::string e251 = encode("ns-", k250 + "k");
    CHECK(e251.rfind("ns-~h", 0) == 0);
    CHECK(e251.size() == 3 + 2 + 32);
    // Short enough for base64 after the prefix, or hashed.
    std::string ctl(150, '\x01');
    CHECK(encode("", ctl).rfind("~b", 0) == 0);
    CHECK(encode("", ctl).size() == 2 + 200);
    CHECK(encode("", std::string(200, '\x01')).rfind("~h", 0) == 0);

    // Distinct keys stay distinct, every encoding is a valid memcached key.
    std::set<std::string> seen;
    std::vector<std::string> keys = {"a b",
                                     "a_b",
                                     "a\tb",
                                     "a\nb",
                                     "a\rb",
                                     "a\x7f"
                                     "b",
                                     "~ba",
                                     "~bYSBi",
                                     "",
                                     " ",
                                     "x",
                                     std::string(300, 'y'),
                                     std::string(300, 'z'),
                                     std::string(251, 'y'),
                                     std::string("a\0b", 3)};
    for (const std::string &k : keys) {
        std::string e = encode("p:", k);
        CHECK(key_bytes_ok(e));
        CHECK(seen.insert(e).second);
    }
}

TEST_CASE("a prefix with spaces, control bytes or too long is refused", "[mc]")
{
    char err[256];
    CHECK(eng_mc_prefix_check("mtpolicyd-", err, sizeof(err)) == 0);
    CHECK(eng_mc_prefix_check("", err, sizeof(err)) == 0);
    CHECK(eng_mc_prefix_check("a b", err, sizeof(err)) == -1);
    CHECK(std::string(err).find("space or control") != std::string::npos);
    CHECK(eng_mc_prefix_check("a\x01", err, sizeof(err)) == -1);
    CHECK(eng_mc_prefix_check(std::string(ENG_MC_PREFIX_BYTES_MAX, 'p').c_str(), err,
                              sizeof(err)) == 0);
    CHECK(eng_mc_prefix_check(std::string(ENG_MC_PREFIX_BYTES_MAX + 1, 'p').c_str(), err,
                              sizeof(err)) == -1);
}

TEST_CASE("server lists: defaults, errors", "[mc]")
{
    char err[256] = "";
    eng_mc_servers *s = nullptr;
    REQUIRE(eng_mc_servers_parse("127.0.0.1:11311, localhost", &s, err, sizeof(err)) == 0);
    REQUIRE(eng_mc_servers_count(s) == 2);
    CHECK(std::string(eng_mc_servers_name(s, 0)) == "127.0.0.1:11311");
    CHECK(std::string(eng_mc_servers_name(s, 1)) == "localhost:11211");
    eng_mc_servers_free(s);
    CHECK(eng_mc_servers_parse("", &s, err, sizeof(err)) == -1);
    CHECK(std::string(err) == "no memcached server in ''");
    // A host name is not looked up at start-up (its connection resolves it when connecting).
    REQUIRE(eng_mc_servers_parse("no-such-host.invalid:1", &s, err, sizeof(err)) == 0);
    CHECK(std::string(eng_mc_servers_name(s, 0)) == "no-such-host.invalid:1");
    eng_mc_servers_free(s);
}

TEST_CASE("servers by name: resolved when connecting, off the shard; a name that does not "
          "resolve fails fast, is counted and retried",
          "[mc][resolve]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string a = server_a().addr();
        {
            Fixture f(backend, "localhost" + a.substr(a.rfind(':')));
            eng *e = f.eng.e;
            REQUIRE(eventually([&] { return run(e, SET, "byname-k", "v").st == ENG_MC_OK; },
                               5000));
            CHECK(run(e, GET, "byname-k").value == "v");
        }
        eng_mc_config cfg = test_config();
        cfg.backoff_min_ms = 50;
        cfg.backoff_max_ms = 100;
        Fixture f(backend, "no-such-host..invalid:11211", cfg, false);
        eng *e = f.eng.e;
        REQUIRE(eventually([&] { return stats(e).connect_failures >= 2; }, 10000));
        auto t0 = std::chrono::steady_clock::now();
        CHECK(run(e, GET, "k").st == ENG_MC_DOWN);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(200));
        CHECK(stats(e).connects == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The client against memcached

TEST_CASE("commands and their statuses", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend, server_a().addr());
        eng *e = f.eng.e;
        std::string k = "cmd-" + std::string(backend_label(backend));
        run(e, DEL, k);
        CHECK(run(e, GET, k).st == ENG_MC_NOT_FOUND);
        CHECK(run(e, ADD, k, "1", 60).st == ENG_MC_OK);
        CHECK(run(e, ADD, k, "2", 60).st == ENG_MC_NOT_STORED);
        Res g = run(e, GET, k);
        CHECK(g.st == ENG_MC_OK);
        CHECK(g.value == "1");
        Res i = run(e, INCR, k, "41");
        CHECK(i.st == ENG_MC_OK);
        CHECK(i.value == "42");
        CHECK(run(e, TOUCH, k, "", 120).st == ENG_MC_OK);
        CHECK(run(e, SET, k, std::string("x\r\nEND\r\n\0y", 10)).st == ENG_MC_OK);
        CHECK(run(e, GET, k).value == std::string("x\r\nEND\r\n\0y", 10));
        CHECK(run(e, INCR, k, "1").st == ENG_MC_ERROR); // not a number
        CHECK(run(e, DEL, k).st == ENG_MC_OK);
        CHECK(run(e, DEL, k).st == ENG_MC_NOT_FOUND);
        CHECK(run(e, INCR, k, "1").st == ENG_MC_NOT_FOUND);
        CHECK(run(e, TOUCH, k, "", 1).st == ENG_MC_NOT_FOUND);
        // An expiry above 30 days is sent as a Unix time: the item is still there.
        CHECK(run(e, SET, k, "v", ENG_MC_EXPTIME_RELATIVE_MAX + 100).st == ENG_MC_OK);
        CHECK(run(e, GET, k).value == "v");
        CHECK(run(e, SET, k, "short", 1).st == ENG_MC_OK);
        std::this_thread::sleep_for(std::chrono::milliseconds(2100));
        CHECK(run(e, GET, k).st == ENG_MC_NOT_FOUND);
        eng_mc_stats st = stats(e);
        CHECK(st.protocol_errors == 0);
        CHECK(st.resets == 0);
        CHECK(st.queue_depth == 0);
    }
}

TEST_CASE("operations of one turn leave in one write; replies come back in order", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend, server_a().addr());
        eng *e = f.eng.e;
        run(e, SET, "warm", "1");
        eng_mc_stats before = stats(e);
        static Res res[300];
        int rcs[300];
        g_seq = 0;
        on_shard0(e, [&](eng_shard *) {
            for (int i = 0; i < 300; i++) {
                res[i] = Res();
                std::string key = "pipe-" + std::to_string(i % 100);
                rcs[i] = i < 100   ? issue(g_mc, SET, key, &res[i], std::to_string(i))
                         : i < 200 ? issue(g_mc, GET, key, &res[i])
                                   : issue(g_mc, INCR, key, &res[i], "1000");
            }
        });
        for (int rc : rcs)
            REQUIRE(rc == 0);
        REQUIRE(eventually([&] { return finished(res[299]); }, 10000));
        for (int i = 0; i < 300; i++) {
            INFO("op " << i);
            REQUIRE(finished(res[i]));
            CHECK(res[i].seq == i);
            CHECK(res[i].shard == 0);
            CHECK(res[i].st == ENG_MC_OK);
            if (i >= 100 && i < 200)
                CHECK(res[i].value == std::to_string(i - 100));
            if (i >= 200)
                CHECK(res[i].value == std::to_string(i - 200 + 1000));
        }
        eng_mc_stats after = stats(e);
        CHECK(after.writes - before.writes == 1);
        CHECK(after.ops - before.ops == 300);
        CHECK(after.replies - before.replies == 300);
        CHECK(after.queue_depth_max >= 300);
    }
}

TEST_CASE("keys with spaces, control bytes and 300 bytes round-trip", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_mc_config cfg = test_config();
        cfg.prefix = "ns:";
        Fixture f(backend, server_a().addr(), cfg);
        eng *e = f.eng.e;
        std::vector<std::string> keys = {
            "with space", "tab\there", "cr\rlf\n", "nul\0x"s,  std::string(300, 'L'),
            "~tilde",     "del\x7f",   "",         "plain-key"};
        for (size_t i = 0; i < keys.size(); i++)
            REQUIRE(run(e, SET, keys[i], "value " + std::to_string(i)).st == ENG_MC_OK);
        for (size_t i = 0; i < keys.size(); i++) {
            INFO("key #" << i);
            CHECK(run(e, GET, keys[i]).value == "value " + std::to_string(i));
            // Stored under the encoded key, with the prefix, readable by any client.
            CHECK(server_a().raw_get(encode("ns:", keys[i])) == "value " + std::to_string(i));
        }
        CHECK(server_a().raw_get("ns:plain-key") == "value 8");
        CHECK(stats(e).protocol_errors == 0);
    }
}

TEST_CASE("a stopped server: timeouts reset, then fail fast, then recovery", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_mc_config cfg = test_config();
        cfg.timeout_ms = 300;
        cfg.backoff_min_ms = 1000;
        cfg.backoff_max_ms = 1000;
        Fixture f(backend, server_a().addr(), cfg);
        eng *e = f.eng.e;
        REQUIRE(run(e, SET, "stop-k", "v").st == ENG_MC_OK);
        REQUIRE(server_a().pause());
        Res a, b;
        on_shard0(e, [&](eng_shard *) {
            REQUIRE(issue(g_mc, GET, "stop-k", &a) == 0);
            REQUIRE(issue(g_mc, GET, "stop-k", &b, "", 0, 5000) == 0);
        });
        REQUIRE(eventually([&] { return finished(a) && finished(b); }, 5000));
        CHECK(a.st == ENG_MC_TIMEOUT);
        CHECK(b.st == ENG_MC_DOWN); // not late itself, but its connection was reset
        // During the backoff operations fail at once, without being sent.
        auto t0 = std::chrono::steady_clock::now();
        Res c = run(e, GET, "stop-k");
        CHECK(c.st == ENG_MC_DOWN);
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(200));
        eng_mc_stats st = stats(e);
        CHECK(st.timeouts == 1);
        CHECK(st.fail_fast >= 1);
        REQUIRE(server_a().resume());
        REQUIRE(eventually(
            [&] {
                Res r = run(e, GET, "stop-k");
                return r.st == ENG_MC_OK && r.value == "v";
            },
            10000));
        CHECK(stats(e).connects >= 2);
    }
}

TEST_CASE("a killed and restarted server: fail fast while down, recovery by itself", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend, server_a().addr());
        eng *e = f.eng.e;
        REQUIRE(run(e, SET, "kill-k", "v").st == ENG_MC_OK);
        server_a().kill_now();
        REQUIRE(eventually([&] { return !server_up(e); }, 5000));
        // An operation queued while a reconnect attempt is in progress waits for it and fails
        // with it; once the attempt failed, operations fail at once without being sent.
        REQUIRE(eventually(
            [&] {
                Res d = run(e, GET, "kill-k");
                CHECK(d.st == ENG_MC_DOWN);
                return stats(e).fail_fast >= 1;
            },
            5000));
        REQUIRE(server_a().start());
        REQUIRE(eventually([&] { return run(e, SET, "kill-k", "w").st == ENG_MC_OK; }, 10000));
        CHECK(run(e, GET, "kill-k").value == "w");
        eng_mc_stats st = stats(e);
        CHECK(st.connects >= 2);
        CHECK(st.connect_failures >= 1);
    }
}

TEST_CASE("two servers: keys are spread with ketama and found where it says", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend, server_a().addr() + ", " + server_b().addr());
        eng *e = f.eng.e;
        int on[2] = {0, 0};
        for (int i = 0; i < 200; i++) {
            std::string k = "spread-" + std::to_string(i);
            REQUIRE(run(e, SET, k, "v" + std::to_string(i)).st == ENG_MC_OK);
            unsigned idx = 9;
            on_shard0(e, [&](eng_shard *) { idx = eng_mc_server_of(g_mc, k.data(), k.size()); });
            REQUIRE(idx < 2);
            on[idx]++;
            rpdtest::McServer &mine = idx == 0 ? server_a() : server_b();
            rpdtest::McServer &other = idx == 0 ? server_b() : server_a();
            CHECK(mine.raw_get(k) == "v" + std::to_string(i));
            CHECK(other.raw_get(k) == "(none)");
        }
        CHECK(on[0] > 40);
        CHECK(on[1] > 40);
    }
}

TEST_CASE("ops_max and value_bytes_max at N and N+1; an oversized value is skipped", "[mc]")
{
    eng_mc_config cfg = test_config();
    cfg.ops_max = 8;
    cfg.value_bytes_max = 1000;
    cfg.out_bytes_max = 4096;
    Fixture f(ENG_BACKEND_URING, server_a().addr(), cfg);
    eng *e = f.eng.e;
    static Res res[9];
    int rcs[9];
    on_shard0(e, [&](eng_shard *) {
        for (int i = 0; i < 9; i++) {
            res[i] = Res();
            rcs[i] = issue(g_mc, GET, "lim", &res[i]);
        }
    });
    for (int i = 0; i < 8; i++)
        CHECK(rcs[i] == 0);
    CHECK(rcs[8] == -ENOBUFS);
    REQUIRE(eventually([&] { return finished(res[7]); }));
    CHECK(run(e, SET, "lim", std::string(1000, 'v')).st == ENG_MC_OK);
    int rc = 0;
    Res r;
    on_shard0(e, [&](eng_shard *) { rc = issue(g_mc, SET, "lim", &r, std::string(1001, 'v')); });
    CHECK(rc == -E2BIG);
    // Another client stored a value above our limit: reported as an error, skipped, and the
    // connection stays usable for the replies behind it.
    REQUIRE(server_a().raw_set("huge", std::string(5000, 'h')));
    static Res g1, g2;
    g1 = Res();
    g2 = Res();
    on_shard0(e, [&](eng_shard *) {
        REQUIRE(issue(g_mc, GET, "huge", &g1) == 0);
        REQUIRE(issue(g_mc, GET, "lim", &g2) == 0);
    });
    REQUIRE(eventually([&] { return finished(g2); }));
    CHECK(g1.st == ENG_MC_ERROR);
    CHECK(g2.st == ENG_MC_OK);
    CHECK(g2.value == std::string(1000, 'v'));
    eng_mc_stats st = stats(e);
    CHECK(st.refused == 2);
    CHECK(st.resets == 0);
    CHECK(st.protocol_errors == 0);
}

TEST_CASE("destroy with operations in flight reports them down", "[mc]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend, server_a().addr());
        eng *e = f.eng.e;
        static Res res[50];
        on_shard0(e, [&](eng_shard *) {
            for (int i = 0; i < 50; i++) {
                res[i] = Res();
                REQUIRE(issue(g_mc, SET, "gone-" + std::to_string(i), &res[i], "v") == 0);
            }
            eng_mc_destroy(g_mc);
            g_mc = nullptr;
        });
        for (int i = 0; i < 50; i++) {
            REQUIRE(finished(res[i]));
            CHECK(res[i].st == ENG_MC_DOWN);
        }
        // The shard goes on: a new client works.
        eng_mc_config cfg = test_config();
        int rc = -1;
        on_shard0(e, [&](eng_shard *sh) { rc = eng_mc_create(sh, g_servers, &cfg, &g_mc); });
        REQUIRE(rc == 0);
        REQUIRE(eventually([&] { return server_up(e); }));
        CHECK(run(e, SET, "gone-0", "again").st == ENG_MC_OK);
    }
}
