// pool_test.cpp: fixed-size slot pools: exhaustion at N and N+1, LIFO reuse, slots keep their
// bytes across put/get, the fail-after test hook, and index arithmetic.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <set>

extern "C" {
#include "pool.h"
}

TEST_CASE("a pool hands out exactly cap slots", "[pool]")
{
    eng_pool p;
    REQUIRE(eng_pool_init(&p, 100, 8) == 0);
    std::set<uint32_t> got;
    for (int i = 0; i < 8; i++) {
        uint32_t idx = eng_pool_get(&p);
        REQUIRE(idx != ENG_POOL_NONE);
        got.insert(idx);
        memset(eng_pool_at(&p, idx), i, 100); // every slot is writable memory
    }
    CHECK(got.size() == 8);
    CHECK(p.used == 8);
    CHECK(eng_pool_get(&p) == ENG_POOL_NONE); // N+1
    eng_pool_put(&p, 3);
    CHECK(eng_pool_get(&p) == 3); // LIFO
    eng_pool_fini(&p);
}

TEST_CASE("slots keep their bytes and are found by pointer", "[pool]")
{
    eng_pool p;
    REQUIRE(eng_pool_init(&p, 48, 4) == 0);
    uint32_t a = eng_pool_get(&p);
    *static_cast<uint32_t *>(eng_pool_at(&p, a)) = 77; // e.g. a connection's generation
    eng_pool_put(&p, a);
    uint32_t b = eng_pool_get(&p);
    CHECK(b == a);
    CHECK(*static_cast<uint32_t *>(eng_pool_at(&p, b)) == 77);
    CHECK(eng_pool_index(&p, eng_pool_at(&p, b)) == b);
    eng_pool_fini(&p);
}

TEST_CASE("fail_after makes get fail after that many successes", "[pool]")
{
    eng_pool p;
    REQUIRE(eng_pool_init(&p, 16, 100) == 0);
    p.fail_after = 3; // two more gets succeed, the third fails
    CHECK(eng_pool_get(&p) != ENG_POOL_NONE);
    CHECK(eng_pool_get(&p) != ENG_POOL_NONE);
    CHECK(eng_pool_get(&p) == ENG_POOL_NONE);
    CHECK(eng_pool_get(&p) == ENG_POOL_NONE);
    p.fail_after = 0;
    CHECK(eng_pool_get(&p) != ENG_POOL_NONE);
    eng_pool_fini(&p);
}

TEST_CASE("bad sizes are refused", "[pool]")
{
    eng_pool p;
    CHECK(eng_pool_init(&p, 0, 4) == -EINVAL);
    CHECK(eng_pool_init(&p, 4, 0) == -EINVAL);
}
