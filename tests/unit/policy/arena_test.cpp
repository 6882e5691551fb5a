// arena_test.cpp: the bounded request arena (limit at N and N+1 bytes, alignment, strndup)
// and the per-shard pool of arena buffers (size classes, exhaustion counted, buffers return).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>

extern "C" {
#include "arena.h"
}

TEST_CASE("an arena of N bytes gives N and refuses N+1", "[arena]")
{
    alignas(8) static char mem[256];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    CHECK(pol_arena_alloc(&a, sizeof mem + 1) == nullptr);
    CHECK(a.used_bytes == 0);
    void *all = pol_arena_alloc(&a, sizeof mem);
    CHECK(all == mem);
    CHECK(pol_arena_alloc(&a, 1) == nullptr);
    pol_arena_reset(&a);
    CHECK(pol_arena_free_bytes(&a) == sizeof mem);
}

TEST_CASE("arena pieces are 8-byte aligned and strndup terminates", "[arena]")
{
    alignas(8) static char mem[64];
    pol_arena a;
    pol_arena_init(&a, mem, sizeof mem);
    char *s = pol_arena_strndup(&a, "abcdef", 3);
    REQUIRE(s != nullptr);
    CHECK(std::strcmp(s, "abc") == 0);
    void *p = pol_arena_alloc(&a, 1);
    CHECK(reinterpret_cast<uintptr_t>(p) % POL_ARENA_ALIGN == 0);
    CHECK(a.used_bytes == 16);
    CHECK(pol_arena_strndup(&a, "x", 60) == nullptr); // 61 bytes do not fit in 48
    CHECK(pol_arena_calloc(&a, 48) != nullptr);
    CHECK(pol_arena_free_bytes(&a) == 0);
    CHECK(pol_arena_alloc(&a, SIZE_MAX) == nullptr); // no overflow in the rounding
}

TEST_CASE("arena pool: smallest fitting class, then bigger, then exhaustion", "[arena]")
{
    pol_arena_pool pl;
    pol_arena_class cls[2] = {{4096, 2}, {65536, 1}};
    REQUIRE(pol_arena_pool_init(&pl, cls, 2) == 0);
    CHECK(pol_arena_pool_max_bytes(&pl) == 65536);
    uint32_t c1, c2, c3, c4;
    size_t b1, b2, b3, b4;
    void *x1 = pol_arena_pool_get(&pl, 100, &c1, &b1);
    void *x2 = pol_arena_pool_get(&pl, 4096, &c2, &b2);
    CHECK(c1 == 0);
    CHECK(c2 == 0);
    CHECK(b1 == 4096);
    void *x3 = pol_arena_pool_get(&pl, 100, &c3, &b3); // class 0 empty: a big one
    CHECK(c3 == 1);
    CHECK(b3 == 65536);
    CHECK(pol_arena_pool_get(&pl, 100, &c4, &b4) == nullptr);
    CHECK(pol_arena_pool_get(&pl, 65537, &c4, &b4) == nullptr);
    CHECK(pl.exhausted == 2);
    std::memset(x3, 1, b3); // the mapping is writable all the way
    pol_arena_pool_put(&pl, x1, c1);
    void *x4 = pol_arena_pool_get(&pl, 10, &c4, &b4);
    CHECK(x4 == x1);
    pol_arena_pool_put(&pl, x2, c2);
    pol_arena_pool_put(&pl, x3, c3);
    pol_arena_pool_put(&pl, x4, c4);
    pol_arena_pool_fini(&pl);
}
