// Tests for bench/common/actions.c: counting by first word in lower case, the table limit
// (N kinds and N+1), cut names, merging, and both printed forms.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

extern "C" {
#include "actions.h"
}

namespace
{

void count(bench_actions *a, const std::string &action)
{
    bench_actions_count(a, action.data(), action.size());
}

std::string printed(const bench_actions *a, bool json)
{
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    REQUIRE(f != nullptr);
    if (json)
        bench_actions_print_json(f, a);
    else
        bench_actions_print_text(f, a);
    fclose(f);
    return buf;
}

} // namespace

TEST_CASE("actions: counted by first word, lower case", "[actions]")
{
    bench_actions a;
    bench_actions_init(&a);
    count(&a, "REJECT go away");
    count(&a, "reject");
    count(&a, "PREPEND X-MtScore: YES score=5");
    count(&a, "DUNNO");
    count(&a, "defer_if_permit\tlater");
    count(&a, "");
    REQUIRE(a.kind_count == 5);
    CHECK(std::string(a.kinds[0].name) == "reject");
    CHECK(a.kinds[0].count == 2);
    CHECK(std::string(a.kinds[1].name) == "prepend");
    CHECK(std::string(a.kinds[2].name) == "dunno");
    CHECK(std::string(a.kinds[3].name) == "defer_if_permit");
    CHECK(std::string(a.kinds[4].name).empty());
    CHECK(a.other == 0);
}

TEST_CASE("actions: the table holds BENCH_ACTIONS_MAX kinds, the rest is other", "[actions]")
{
    bench_actions a;
    bench_actions_init(&a);
    for (unsigned i = 0; i < BENCH_ACTIONS_MAX; i++)
        count(&a, "a" + std::to_string(i));
    CHECK(a.kind_count == BENCH_ACTIONS_MAX);
    CHECK(a.other == 0);
    count(&a, "one-more");
    CHECK(a.kind_count == BENCH_ACTIONS_MAX);
    CHECK(a.other == 1);
    count(&a, "a0"); // known kinds still count
    CHECK(a.kinds[0].count == 2);
}

TEST_CASE("actions: long words are cut, not overflowed", "[actions]")
{
    bench_actions a;
    bench_actions_init(&a);
    count(&a, std::string(100, 'X') + " tail");
    CHECK(std::string(a.kinds[0].name) == std::string(BENCH_ACTION_NAME_BYTES - 1, 'x'));
}

TEST_CASE("actions: merge by name; overflow goes to other", "[actions]")
{
    bench_actions a, b;
    bench_actions_init(&a);
    bench_actions_init(&b);
    count(&a, "dunno");
    count(&b, "reject");
    count(&b, "dunno");
    count(&b, "dunno");
    b.other = 3;
    bench_actions_merge(&a, &b);
    REQUIRE(a.kind_count == 2);
    CHECK(a.kinds[0].count == 3);
    CHECK(std::string(a.kinds[1].name) == "reject");
    CHECK(a.other == 3);

    bench_actions full;
    bench_actions_init(&full);
    for (unsigned i = 0; i < BENCH_ACTIONS_MAX; i++)
        count(&full, "k" + std::to_string(i));
    bench_actions_merge(&full, &a);
    CHECK(full.other == 3 + 3 + 1);
}

TEST_CASE("actions: printed as text and as JSON", "[actions]")
{
    bench_actions a;
    bench_actions_init(&a);
    CHECK(printed(&a, false) == " none");
    CHECK(printed(&a, true) == "{}");
    count(&a, "dunno");
    count(&a, "dunno");
    count(&a, "a\"b");
    a.other = 1;
    CHECK(printed(&a, false) == " dunno 2, a\"b 1, (other) 1");
    CHECK(printed(&a, true) == "{\"dunno\":2,\"a\\\"b\":1,\"(other)\":1}");
}
