// agg_test.cpp: one shard's table of accounting rows (policy/plugins/acct_agg.c): rows by
// (key, time), the dirty FIFO, flush success and failure, the stored value and quota value,
// the row limit at N and N+1 with eviction of clean rows only, spilled counts, and a seeded
// random workload against a std::map model (the failing seed is printed).
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "plugins/acct_agg.h"
}

namespace
{

struct Agg {
    pol_acct_agg a{};
    explicit Agg(uint32_t rows)
    {
        REQUIRE(pol_acct_agg_init(&a, rows) == 0);
    }
    ~Agg()
    {
        pol_acct_agg_fini(&a);
    }
    pol_acct_row *get(const std::string &k, const std::string &t = "2024-05")
    {
        return pol_acct_agg_get(&a, k.data(), k.size(), t.data(), t.size());
    }
    pol_acct_row *find(const std::string &k, const std::string &t = "2024-05")
    {
        return pol_acct_agg_find(&a, k.data(), k.size(), t.data(), t.size());
    }
    void add(const std::string &k, uint64_t c, uint64_t cr, uint64_t s, uint64_t sr,
             const std::string &t = "2024-05")
    {
        pol_acct_row *row = get(k, t);
        REQUIRE(row != nullptr);
        const uint64_t m[POL_ACCT_METRICS] = {c, cr, s, sr};
        pol_acct_agg_add(&a, row, m);
    }
    std::vector<uint32_t> take(uint32_t max)
    {
        std::vector<uint32_t> idx(max);
        idx.resize(pol_acct_agg_take_dirty(&a, max, idx.data()));
        return idx;
    }
    std::string key_of(uint32_t idx)
    {
        return pol_acct_row_key(pol_acct_agg_row(&a, idx));
    }
};

const uint64_t one[POL_ACCT_METRICS] = {1, 1, 100, 100};

} // namespace

TEST_CASE("metric names map to columns in order", "[agg]")
{
    CHECK(pol_acct_metric_of("count", 5) == POL_ACCT_COUNT);
    CHECK(pol_acct_metric_of("count_rcpt", 10) == POL_ACCT_COUNT_RCPT);
    CHECK(pol_acct_metric_of("size", 4) == POL_ACCT_SIZE);
    CHECK(pol_acct_metric_of("size_rcpt", 9) == POL_ACCT_SIZE_RCPT);
    CHECK(pol_acct_metric_of("id", 2) == -1);
    CHECK(pol_acct_metric_of("coun", 4) == -1);
    CHECK(pol_acct_metric_of("counts", 6) == -1);
}

TEST_CASE("rows are found by key and time; the separator keeps them apart", "[agg]")
{
    Agg g(16);
    g.add("192.168.0.1", 1, 1, 100, 100);
    g.add("192.168.0.1", 1, 3, 100, 300);
    g.add("192.168.0.1", 1, 1, 5, 5, "2024-06");
    g.add("ab", 1, 1, 1, 1, "c");
    g.add("a", 1, 1, 2, 2, "bc");
    pol_acct_row *r = g.find("192.168.0.1");
    REQUIRE(r != nullptr);
    CHECK(r->delta[POL_ACCT_COUNT] == 2);
    CHECK(r->delta[POL_ACCT_COUNT_RCPT] == 4);
    CHECK(r->delta[POL_ACCT_SIZE] == 200);
    CHECK(r->delta[POL_ACCT_SIZE_RCPT] == 400);
    CHECK(g.find("192.168.0.1", "2024-06")->delta[POL_ACCT_SIZE] == 5);
    CHECK(g.find("ab", "c")->delta[POL_ACCT_SIZE] == 1);
    CHECK(g.find("a", "bc")->delta[POL_ACCT_SIZE] == 2);
    CHECK(g.find("abc", "") == nullptr);
    CHECK(std::string(pol_acct_row_time(r)) == "2024-05");
    CHECK(g.a.used == 4);
    CHECK(g.a.dirty_count == 4);
}

TEST_CASE("the longest key and time fit; an empty key and bucket work", "[agg]")
{
    Agg g(4);
    std::string k(POL_ACCT_KEY_BYTES_MAX, 'k'), t(POL_ACCT_TIME_BYTES_MAX, 't');
    g.add(k, 1, 1, 1, 1, t);
    g.add("", 1, 1, 1, 1, "");
    REQUIRE(g.find(k, t) != nullptr);
    CHECK(std::string(pol_acct_row_key(g.find(k, t))) == k);
    CHECK(std::string(pol_acct_row_time(g.find(k, t))) == t);
    CHECK(g.find("", "") != nullptr);
}

TEST_CASE("dirty rows are taken first seen first; a failed flush gives the counts back", "[agg]")
{
    Agg g(16);
    g.add("a", 1, 1, 10, 10);
    g.add("b", 1, 1, 20, 20);
    g.add("c", 1, 1, 30, 30);
    g.add("a", 1, 1, 10, 10); // already dirty: keeps its place
    std::vector<uint32_t> first = g.take(2);
    REQUIRE(first.size() == 2);
    CHECK(g.key_of(first[0]) == "a");
    CHECK(g.key_of(first[1]) == "b");
    pol_acct_row *a = g.find("a");
    CHECK(a->inflight[POL_ACCT_SIZE] == 20);
    CHECK(a->delta[POL_ACCT_SIZE] == 0);
    CHECK((a->flags & POL_ACCT_ROW_INFLIGHT) != 0);
    // More counts while the statement is out: dirty again, inflight untouched.
    g.add("a", 1, 1, 1, 1);
    CHECK(a->delta[POL_ACCT_SIZE] == 1);
    CHECK(pol_acct_row_value(a, POL_ACCT_SIZE) == 21);
    pol_acct_agg_flush_done(&g.a, first.data(), (uint32_t)first.size(), false);
    CHECK(a->delta[POL_ACCT_SIZE] == 21);
    CHECK(a->inflight[POL_ACCT_SIZE] == 0);
    CHECK((a->flags & POL_ACCT_ROW_INFLIGHT) == 0);
    // Order now: c, a (dirty again when counted while in flight), b (given back).
    std::vector<uint32_t> all = g.take(10);
    REQUIRE(all.size() == 3);
    CHECK(g.key_of(all[0]) == "c");
    CHECK(g.key_of(all[1]) == "a");
    CHECK(g.key_of(all[2]) == "b");
    CHECK(g.a.dirty_count == 0);
    CHECK(g.take(10).empty());
}

TEST_CASE("a successful flush adds to a fetched stored value, not to an unknown one", "[agg]")
{
    Agg g(16);
    g.add("known", 1, 1, 10, 10);
    g.add("unknown", 1, 1, 10, 10);
    pol_acct_row *k = g.find("known");
    k->flags |= POL_ACCT_ROW_STORED;
    k->stored[POL_ACCT_COUNT] = 7;
    std::vector<uint32_t> b = g.take(10);
    CHECK(pol_acct_row_value(k, POL_ACCT_COUNT) == 8); // stored + inflight
    pol_acct_agg_flush_done(&g.a, b.data(), (uint32_t)b.size(), true);
    CHECK(k->stored[POL_ACCT_COUNT] == 8);
    CHECK(pol_acct_row_value(k, POL_ACCT_COUNT) == 8);
    CHECK(g.find("unknown")->stored[POL_ACCT_COUNT] == 0);
    uint64_t u[POL_ACCT_METRICS];
    pol_acct_row_unflushed(k, u);
    CHECK(u[POL_ACCT_COUNT] == 0);
}

TEST_CASE("counts saturate instead of wrapping", "[agg]")
{
    Agg g(4);
    g.add("x", UINT64_MAX - 1, 0, 0, 0);
    g.add("x", 5, 0, 0, 0);
    CHECK(g.find("x")->delta[POL_ACCT_COUNT] == UINT64_MAX);
}

TEST_CASE("the row limit: N rows fit, row N+1 needs a clean row to evict", "[agg]")
{
    const uint32_t n = 8;
    Agg g(n);
    for (uint32_t i = 0; i < n; i++)
        g.add("k" + std::to_string(i), 1, 1, 1, 1);
    CHECK(g.a.used == n);
    CHECK(g.get("k-extra") == nullptr); // every row is dirty
    CHECK(g.a.stats.full == 1);
    std::vector<uint32_t> b = g.take(n);
    CHECK(g.get("k-extra") == nullptr); // in flight
    pol_acct_agg_flush_done(&g.a, b.data(), (uint32_t)b.size(), true);
    pol_acct_row *extra = g.get("k-extra"); // clean rows may go now
    REQUIRE(extra != nullptr);
    CHECK(g.a.used == n);
    CHECK(g.a.stats.evicted == 1);
    int left = 0;
    for (uint32_t i = 0; i < n; i++)
        left += g.find("k" + std::to_string(i)) != nullptr;
    CHECK(left == (int)n - 1);
}

TEST_CASE("rows being fetched, waited on or holding spilled counts are not evicted", "[agg]")
{
    Agg g(3);
    g.add("fetching", 1, 1, 1, 1);
    g.add("waited", 1, 1, 1, 1);
    g.add("spilled", 1, 1, 1, 1);
    std::vector<uint32_t> b = g.take(3);
    pol_acct_agg_flush_done(&g.a, b.data(), (uint32_t)b.size(), true);
    g.find("fetching")->flags |= POL_ACCT_ROW_FETCH;
    pol_acct_waiter w{};
    g.find("waited")->waiters = g.find("waited")->waiters_tail = &w;
    g.find("spilled")->spilled[POL_ACCT_SIZE] = 1;
    CHECK(g.get("new") == nullptr);
    g.find("waited")->waiters = g.find("waited")->waiters_tail = nullptr;
    CHECK(g.get("new") != nullptr);
    CHECK(g.find("waited") == nullptr);
    CHECK(g.find("fetching") != nullptr);
    CHECK(g.find("spilled") != nullptr);
}

TEST_CASE("a read-back may evict a row holding only spilled counts, never a dirty one", "[agg]")
{
    Agg g(2);
    g.add("s1", 1, 1, 1, 1);
    g.add("s2", 1, 1, 1, 1);
    uint32_t idx[2];
    REQUIRE(pol_acct_agg_peek_dirty(&g.a, 2, idx) == 2);
    pol_acct_agg_mark_spilled(&g.a, idx, 2); // both rows hold nothing but spilled counts
    const std::string t = "2024-05";
    CHECK(g.get("new") == nullptr); // new counts: never at the cost of spilled ones
    pol_acct_row *r = pol_acct_agg_get_replay(&g.a, "back", 4, t.data(), t.size());
    REQUIRE(r != nullptr);
    CHECK(g.a.stats.evicted_spilled == 1);
    pol_acct_agg_unspill(&g.a, r, one);
    CHECK(r->delta[POL_ACCT_COUNT] == 1);
    int spilled_left = (g.find("s1") != nullptr) + (g.find("s2") != nullptr);
    CHECK(spilled_left == 1);
    // Now one row is dirty and one spilled: a read-back takes the spilled one, then none.
    pol_acct_row *m = pol_acct_agg_get_replay(&g.a, "more", 4, t.data(), t.size());
    REQUIRE(m != nullptr);
    pol_acct_agg_unspill(&g.a, m, one);
    CHECK(pol_acct_agg_get_replay(&g.a, "full", 4, t.data(), t.size()) == nullptr);
    CHECK(g.find("back") != nullptr); // dirty: kept
}

TEST_CASE("spilling moves the dirty head to spilled; reading back moves it to delta", "[agg]")
{
    Agg g(8);
    g.add("a", 1, 1, 10, 10);
    g.add("b", 2, 2, 20, 20);
    g.add("c", 3, 3, 30, 30);
    uint32_t idx[2];
    REQUIRE(pol_acct_agg_peek_dirty(&g.a, 2, idx) == 2);
    CHECK(g.key_of(idx[0]) == "a");
    CHECK(g.a.dirty_count == 3); // peek changes nothing
    pol_acct_agg_mark_spilled(&g.a, idx, 2);
    CHECK(g.a.dirty_count == 1);
    pol_acct_row *a = g.find("a");
    CHECK(a->delta[POL_ACCT_SIZE] == 0);
    CHECK(a->spilled[POL_ACCT_SIZE] == 10);
    CHECK(pol_acct_row_value(a, POL_ACCT_SIZE) == 10); // quota still sees it
    pol_acct_agg_unspill(&g.a, a, one);
    CHECK(a->spilled[POL_ACCT_SIZE] == 0);
    CHECK(a->spilled[POL_ACCT_COUNT] == 0);
    CHECK(a->delta[POL_ACCT_SIZE] == 100);
    CHECK((a->flags & POL_ACCT_ROW_DIRTY) != 0);
    std::vector<uint32_t> order = g.take(8);
    REQUIRE(order.size() == 2);
    CHECK(g.key_of(order[0]) == "c");
    CHECK(g.key_of(order[1]) == "a");
}

TEST_CASE("pol_acct_agg_init refuses 0 and more than the maximum", "[agg]")
{
    pol_acct_agg a{};
    CHECK(pol_acct_agg_init(&a, 0) != 0);
    CHECK(pol_acct_agg_init(&a, POL_ACCT_ROWS_MAX + 1) != 0);
    REQUIRE(pol_acct_agg_init(&a, 1) == 0);
    pol_acct_agg_fini(&a);
}

TEST_CASE("random workload against a model (lookups survive evictions)", "[agg]")
{
    uint64_t seed = std::random_device{}();
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const uint32_t n = 64;
    Agg g(n);
    std::map<std::string, uint64_t> unflushed, flushed;
    for (int step = 0; step < 20000; step++) {
        std::string k = "key" + std::to_string(rng() % 200);
        if (rng() % 4 != 0) {
            pol_acct_row *row = g.get(k);
            if (!row)
                continue; // full of dirty rows
            const uint64_t m[POL_ACCT_METRICS] = {1, 2, 3, 4};
            pol_acct_agg_add(&g.a, row, m);
            unflushed[k] += 1;
        } else {
            std::vector<uint32_t> b = g.take(1 + (uint32_t)(rng() % 16));
            bool ok = rng() % 3 != 0;
            for (uint32_t i : b) {
                std::string key = g.key_of(i);
                uint64_t c = pol_acct_agg_row(&g.a, i)->inflight[POL_ACCT_COUNT];
                REQUIRE(c == unflushed[key]);
                if (ok) {
                    flushed[key] += c;
                    unflushed.erase(key);
                }
            }
            pol_acct_agg_flush_done(&g.a, b.data(), (uint32_t)b.size(), ok);
        }
        REQUIRE(g.a.used <= n);
    }
    // Every unflushed count is still in its row.
    uint64_t total = 0;
    for (auto &kv : unflushed) {
        pol_acct_row *row = g.find(kv.first);
        REQUIRE(row != nullptr);
        uint64_t u[POL_ACCT_METRICS];
        pol_acct_row_unflushed(row, u);
        CHECK(u[POL_ACCT_COUNT] == kv.second);
        CHECK(u[POL_ACCT_SIZE_RCPT] == 4 * kv.second);
        total += kv.second;
    }
    std::vector<uint32_t> rest = g.take(n);
    uint64_t sum = 0;
    for (uint32_t i : rest)
        sum += pol_acct_agg_row(&g.a, i)->inflight[POL_ACCT_COUNT];
    CHECK(sum == total);
}
