// mc_conn_test.cpp: the Memcached connection (policy/mc.c) as plugins use it, built from
// configuration text like the daemon does: start-up errors naming file and line (bad servers,
// a namespace memcached keys cannot carry), lookup errors, every pol_mc_* operation and its
// statuses against a real memcached started by the test (mc_server.h), the namespace on the
// wire, keys with spaces and control bytes, completion on the issuing shard with 2 shards, a
// stopped server (fail fast with POL_MC_DOWN, recovery by itself) and shard stop completing
// what is still out with POL_MC_DOWN.
#include "mc_rig.h"

using namespace mcrig;

TEST_CASE("start-up errors name the file and line", "[mc_conn]")
{
    pol_server *s = nullptr;
    std::string err = load(conn_block("mc", "127.0.0.1:11211", "a b"), &s);
    CHECK(err.find("test.conf:1: could not open connection mc: ") == 0);
    CHECK(err.find("space or control") != std::string::npos);
    // A host name is resolved when connecting, not at start-up: a name that does not resolve
    // yet opens.
    err = load(conn_block("mc", "no-such-host.invalid:11211"), &s);
    CHECK(err.empty());
    if (err.empty())
        pol_server_free(s);
    err = load(conn_block("mc", ""), &s);
    CHECK(err == "test.conf:1: could not open connection mc: no memcached server in ''");
    err = load("\n" + conn_block("mc", "/tmp/memcached.sock"), &s);
    CHECK(err.find("test.conf:2: could not open connection mc: ") == 0);
    CHECK(err.find("Unix sockets are not supported") != std::string::npos);
    err = load(conn_block("mc", "127.0.0.1:11211", std::string(ENG_MC_PREFIX_BYTES_MAX + 1, 'n')),
               &s);
    CHECK(err.find("could not open connection mc") != std::string::npos);
    // At the limit it opens (nothing connects before a shard starts).
    err = load(conn_block("mc", "127.0.0.1:11211", std::string(ENG_MC_PREFIX_BYTES_MAX, 'n')), &s);
    CHECK(err.empty());
    if (err.empty())
        pol_server_free(s);
}

TEST_CASE("defaults and lookup", "[mc_conn]")
{
    std::string err = load("<Connection memcached>\n module = \"Memcached\"\n</Connection>\n"
                           "<Connection r>\n module = \"Redis\"\n</Connection>\n",
                           &g_srv);
    INFO(err);
    REQUIRE(err.empty());
    std::string why;
    pol_mc *mc = lookup("memcached", &why);
    REQUIRE(mc != nullptr);
    CHECK(std::string(pol_mc_namespace(mc)).empty());
    CHECK(std::string(pol_mc_name(mc)) == "memcached");
    CHECK(pol_mc_of_server(g_srv, "memcached") == mc);
    CHECK(pol_mc_of_server(g_srv, "r") == nullptr);
    CHECK(pol_mc_of_server(g_srv, "nope") == nullptr);
    CHECK(lookup("nope", &why) == nullptr);
    CHECK(why == "no connection nope configured!");
    CHECK(lookup("r", &why) == nullptr);
    CHECK(why == "connection r is not a Memcached connection");
    pol_server_free(g_srv);
    g_srv = nullptr;
}

TEST_CASE("operations, statuses and the namespace on the wire", "[mc_conn]")
{
    Rig rig(conn_block("mc", server().addr(), "rpd-test:"));
    pol_mc *mc = lookup("mc");
    REQUIRE(mc != nullptr);
    for (unsigned sh = 0; sh < 2; sh++) {
        INFO("shard " << sh);
        std::string k = "op-key-" + std::to_string(sh);
        rig.run(sh, mc, DEL, k);
        Res g = rig.run(sh, mc, GET, k);
        CHECK(g.st == POL_MC_NOT_FOUND);
        CHECK(g.shard == int(sh));
        CHECK(rig.run(sh, mc, ADD, k, "5", 60).st == POL_MC_OK);
        CHECK(rig.run(sh, mc, ADD, k, "6", 60).st == POL_MC_NOT_STORED);
        CHECK(server().raw_get("rpd-test:" + k) == "5");
        Res i = rig.run(sh, mc, INCR, k, "37");
        CHECK(i.st == POL_MC_OK);
        CHECK(i.value == "42");
        CHECK(i.shard == int(sh));
        CHECK(rig.run(sh, mc, SET, k, "v\r\nEND\r\n").st == POL_MC_OK);
        CHECK(rig.run(sh, mc, GET, k).value == "v\r\nEND\r\n");
        CHECK(rig.run(sh, mc, INCR, k, "1").st == POL_MC_ERROR);
        CHECK(rig.run(sh, mc, DEL, k).st == POL_MC_OK);
        CHECK(rig.run(sh, mc, DEL, k).st == POL_MC_NOT_FOUND);
        CHECK(rig.run(sh, mc, INCR, k, "1").st == POL_MC_NOT_FOUND);
    }
    // A key from mail attributes with spaces and control bytes: encoded, still round-trips,
    // and one shard sees what the other stored.
    std::string odd = "Sender Name <a@b>\t,10.0.0.1";
    CHECK(rig.run(0, mc, SET, odd, "odd").st == POL_MC_OK);
    CHECK(rig.run(1, mc, GET, odd).value == "odd");
    char enc[ENG_MC_KEY_BYTES_MAX + 1];
    size_t n = eng_mc_key_encode("rpd-test:", 9, odd.data(), odd.size(), enc);
    CHECK(server().raw_get(std::string(enc, n)) == "odd");
    CHECK(std::string(pol_mc_status_text(POL_MC_DOWN)) == eng_mc_status_text(ENG_MC_DOWN));
    eng_mc_stats st = rig.stats(0, mc);
    CHECK(st.protocol_errors == 0);
    CHECK(st.queue_depth == 0);
}

TEST_CASE("a stopped server fails fast and the connection recovers by itself", "[mc_conn]")
{
    Rig rig(conn_block("mc", server().addr()), 1);
    pol_mc *mc = lookup("mc");
    REQUIRE(rig.run(0, mc, SET, "down-k", "v").st == POL_MC_OK);
    server().kill_now();
    // Once the client noticed, operations fail with POL_MC_DOWN without waiting.
    REQUIRE(eventually([&] { return rig.run(0, mc, GET, "down-k").st == POL_MC_DOWN; }, 5000));
    auto t0 = std::chrono::steady_clock::now();
    CHECK(rig.run(0, mc, GET, "down-k").st == POL_MC_DOWN);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(500));
    REQUIRE(server().start());
    REQUIRE(eventually([&] { return rig.run(0, mc, SET, "down-k", "w").st == POL_MC_OK; }, 15000));
    CHECK(rig.run(0, mc, GET, "down-k").value == "w");
}

TEST_CASE("shard stop completes what is still out with POL_MC_DOWN", "[mc_conn]")
{
    static Res res[64];
    {
        Rig rig(conn_block("mc", server().addr()), 1);
        pol_mc *mc = lookup("mc");
        REQUIRE(
            eventually([&] { return rig.run(0, mc, SET, "stop-k", "v").st == POL_MC_OK; }, 10000));
        REQUIRE(server().pause());
        rig.on(0, [&](eng_shard *sh) {
            for (Res &r : res) {
                r = Res();
                REQUIRE(Rig::issue(sh, mc, GET, "stop-k", &r, "", 0) == 0);
            }
        });
    } // the engine stops: shard_stop destroys the client with 64 operations in flight
    REQUIRE(server().resume());
    for (const Res &r : res) {
        CHECK(finished(r));
        CHECK(r.st == POL_MC_DOWN);
    }
}
