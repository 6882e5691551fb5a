// sstore_test.cpp: the Memory session cache of one shard: store and read back, expiry, LRU
// eviction at sessions_max N and N+1, eviction for memory, the size limit at N and N+1 bytes,
// the wait list (order, hand-over, cancel) and refusal when every session is held.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

extern "C" {
#include "sstore.h"
}

namespace
{

struct Store {
    pol_sstore *st = nullptr;
    explicit Store(uint32_t sessions, size_t memory = 1 << 20, uint32_t max_bytes = 4096,
                   uint64_t expire_ms = 300000)
    {
        pol_sstore_config c{sessions, memory, max_bytes, expire_ms};
        REQUIRE(pol_sstore_create(&c, &st) == 0);
    }
    ~Store()
    {
        pol_sstore_destroy(st);
    }
    // Takes, writes and releases a session.
    void put(const std::string &key, const std::string &blob, uint64_t now = 0)
    {
        pol_sstore_waiter w{};
        pol_sstore_ent *e = nullptr;
        REQUIRE(pol_sstore_acquire(st, key.data(), key.size(), now, &w, &e) == POL_SSTORE_OWNED);
        pol_sstore_waiter *next = nullptr;
        pol_sstore_release(st, e, blob.data(), blob.size(), now, &next);
        REQUIRE(next == nullptr);
    }
    // The stored blob, or "<none>".
    std::string get(const std::string &key, uint64_t now = 0)
    {
        const pol_sstore_ent *e = pol_sstore_peek(st, key.data(), key.size(), now);
        if (!e)
            return "<none>";
        std::string out(pol_sstore_blob_bytes(e), '\0');
        pol_sstore_blob_read(st, e, &out[0]);
        return out;
    }
    pol_sstore_stats stats()
    {
        pol_sstore_stats s;
        pol_sstore_get_stats(st, &s);
        return s;
    }
};

} // namespace

TEST_CASE("store, read back, overwrite; keys and blobs across several blocks", "[sstore]")
{
    Store s(8);
    std::string key(300, 'k'), blob(1000, 'b');
    blob[999] = 'z';
    s.put(key, blob);
    CHECK(s.get(key) == blob);
    s.put(key, "short");
    CHECK(s.get(key) == "short");
    CHECK(s.get(std::string(300, 'j')) == "<none>");
    CHECK(s.stats().sessions == 1);
    CHECK(s.stats().blocks_used == 2); // 305 bytes
    CHECK(s.stats().bytes_used > 2 * POL_SSTORE_BLOCK_BYTES);
}

TEST_CASE("sessions grow and shrink in their own blocks", "[sstore]")
{
    Store s(8, 8 * POL_SSTORE_BLOCK_BYTES);
    std::string key(POL_SSTORE_BLOCK_BYTES, 'k'); // exactly one block
    s.put(key, "");
    CHECK(s.get(key) == "");
    CHECK(s.stats().blocks_used == 1);
    std::string big(3 * POL_SSTORE_BLOCK_BYTES + 1, 'x');
    s.put(key, big);
    CHECK(s.get(key) == big);
    CHECK(s.stats().blocks_used == 5);
    s.put(key, "y");
    CHECK(s.get(key) == "y");
    CHECK(s.stats().blocks_used == 2);
    // Growing a session to the whole budget works while it is the only one.
    s.put("other", "z");
    std::string all(7 * POL_SSTORE_BLOCK_BYTES - 5, 'w');
    s.put("other", all);
    CHECK(s.get("other") == all);
    CHECK(s.get(key) == "<none>"); // evicted to make room
    CHECK(s.stats().store_failed == 0);
}

TEST_CASE("expire: a session lives expire_ms after its last store", "[sstore]")
{
    Store s(8, 1 << 20, 4096, 1000);
    s.put("a", "1", 0);
    CHECK(s.get("a", 999) == "1");
    CHECK(s.get("a", 1000) == "<none>");
    s.put("a", "2", 500); // stored again: lives until 1500
    CHECK(s.get("a", 1499) == "2");
    pol_sstore_waiter w{};
    pol_sstore_ent *e = nullptr;
    REQUIRE(pol_sstore_acquire(s.st, "a", 1, 1600, &w, &e) == POL_SSTORE_OWNED);
    CHECK(pol_sstore_is_new(e)); // the old one expired
    pol_sstore_waiter *next = nullptr;
    pol_sstore_release(s.st, e, "3", 1, 1600, &next);
    CHECK(s.stats().expired == 1);
}

TEST_CASE("sessions_max N stored; N+1 evicts the least recently stored", "[sstore]")
{
    const uint32_t n = 4;
    Store s(n);
    for (uint32_t i = 0; i < n; i++)
        s.put("s" + std::to_string(i), "v" + std::to_string(i), i);
    CHECK(s.stats().sessions == n);
    CHECK(s.stats().evicted == 0);
    s.put("s0", "v0b", 10); // s0 is now the most recent: s1 is the oldest
    s.put("s" + std::to_string(n), "new", 11);
    CHECK(s.stats().evicted == 1);
    CHECK(s.get("s1") == "<none>");
    CHECK(s.get("s0") == "v0b");
    CHECK(s.get("s4") == "new");
}

TEST_CASE("memory budget: sessions are evicted to make room", "[sstore]")
{
    Store s(100, 4 * POL_SSTORE_BLOCK_BYTES);
    std::string blob(POL_SSTORE_BLOCK_BYTES + 10, 'x'); // 2 blocks with its key
    s.put("a", blob);
    s.put("b", blob);
    CHECK(s.stats().blocks_used == 4);
    s.put("c", blob);
    CHECK(s.stats().evicted == 1);
    CHECK(s.get("a") == "<none>");
    CHECK(s.get("c") == blob);
}

TEST_CASE("session_bytes_max: N bytes stored, N+1 refused and the old version kept", "[sstore]")
{
    const uint32_t max = 600;
    Store s(8, 1 << 20, max);
    std::string key = "inst";
    s.put(key, std::string(max - key.size(), 'a'));
    CHECK(s.get(key).size() == max - key.size());
    s.put(key, std::string(max - key.size() + 1, 'b'));
    CHECK(s.stats().too_big == 1);
    CHECK(s.get(key) == std::string(max - key.size(), 'a'));
}

TEST_CASE("wait list: requests of one instance get the session in order", "[sstore]")
{
    Store s(8);
    pol_sstore_waiter w1{}, w2{}, w3{};
    pol_sstore_ent *e = nullptr, *unused = nullptr;
    REQUIRE(pol_sstore_acquire(s.st, "x", 1, 0, &w1, &e) == POL_SSTORE_OWNED);
    CHECK(pol_sstore_acquire(s.st, "x", 1, 0, &w2, &unused) == POL_SSTORE_QUEUED);
    CHECK(pol_sstore_acquire(s.st, "x", 1, 0, &w3, &unused) == POL_SSTORE_QUEUED);
    CHECK(s.stats().waits == 2);
    pol_sstore_waiter *next = nullptr;
    pol_sstore_release(s.st, e, "one", 3, 0, &next);
    REQUIRE(next == &w2);
    CHECK(w2.ent == e);
    std::string got(pol_sstore_blob_bytes(e), '\0');
    pol_sstore_blob_read(s.st, e, &got[0]);
    CHECK(got == "one");
    pol_sstore_cancel_wait(s.st, &w3); // timed out while queued
    pol_sstore_release(s.st, w2.ent, "two", 3, 0, &next);
    CHECK(next == nullptr);
    CHECK(s.get("x") == "two");
}

TEST_CASE("every session held: new instances are refused, held ones never evicted", "[sstore]")
{
    Store s(2);
    pol_sstore_waiter w1{}, w2{}, w3{};
    pol_sstore_ent *a = nullptr, *b = nullptr, *c = nullptr;
    REQUIRE(pol_sstore_acquire(s.st, "a", 1, 0, &w1, &a) == POL_SSTORE_OWNED);
    REQUIRE(pol_sstore_acquire(s.st, "b", 1, 0, &w2, &b) == POL_SSTORE_OWNED);
    CHECK(pol_sstore_acquire(s.st, "c", 1, 0, &w3, &c) == POL_SSTORE_FULL);
    CHECK(s.stats().full == 1);
    pol_sstore_waiter *next = nullptr;
    pol_sstore_release(s.st, a, "A", 1, 0, &next);
    CHECK(pol_sstore_acquire(s.st, "c", 1, 0, &w3, &c) == POL_SSTORE_OWNED); // evicts a
    CHECK(s.get("a") == "<none>");
    pol_sstore_release(s.st, b, "B", 1, 0, &next);
    pol_sstore_release(s.st, c, "C", 1, 0, &next);
    CHECK(s.get("b") == "B");
    CHECK(s.get("c") == "C");
}
