// Tests for bench/common/hist.c: bucket layout, percentile accuracy against a sorted reference
// over seeded random data (uniform, log-uniform, heavy-tailed), merge, and the extremes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

extern "C" {
#include "hist.h"
}

namespace
{

// Nearest rank, in integers: per_mille 500 = p50, 999 = p99.9.
uint64_t reference_percentile(const std::vector<uint64_t> &sorted, uint64_t per_mille)
{
    uint64_t n = sorted.size();
    uint64_t rank = (per_mille * n + 999) / 1000;
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

std::unique_ptr<bench_hist> make_hist()
{
    std::unique_ptr<bench_hist> h(new bench_hist);
    bench_hist_init(h.get());
    return h;
}

void check_against_reference(const bench_hist *h, std::vector<uint64_t> values)
{
    std::sort(values.begin(), values.end());
    for (uint64_t pm : {1u, 100u, 500u, 900u, 990u, 999u}) {
        uint64_t want = reference_percentile(values, pm);
        uint64_t got = bench_hist_percentile(h, (double)pm / 10.0);
        double err = want ? std::fabs((double)got - (double)want) / (double)want : (double)got;
        INFO("p" << pm / 10.0 << " want " << want << " got " << got);
        CHECK(err <= 0.01);
    }
    CHECK(bench_hist_max(h) == values.back());
    CHECK(bench_hist_min(h) == values.front());
    CHECK(bench_hist_percentile(h, 100.0) == values.back());
    CHECK(bench_hist_percentile(h, 0.0) == values.front());
    CHECK(bench_hist_count(h) == values.size());
    long double sum = 0;
    for (uint64_t v : values)
        sum += v;
    CHECK(bench_hist_mean(h) == Approx((double)(sum / values.size())).epsilon(1e-9));
}

} // namespace

TEST_CASE("hist: buckets tile the value range without gaps", "[hist]")
{
    CHECK(bench_hist_bucket_lo(0) == 0);
    for (uint32_t i = 0; i + 1 < BENCH_HIST_BUCKET_COUNT; i++) {
        INFO("bucket " << i);
        REQUIRE(bench_hist_bucket_hi(i) + 1 == bench_hist_bucket_lo(i + 1));
        REQUIRE(bench_hist_bucket_idx(bench_hist_bucket_lo(i)) == i);
        REQUIRE(bench_hist_bucket_idx(bench_hist_bucket_hi(i)) == i);
    }
    CHECK(bench_hist_bucket_hi(BENCH_HIST_BUCKET_COUNT - 1) == UINT64_MAX);
    CHECK(bench_hist_bucket_idx(UINT64_MAX) == BENCH_HIST_BUCKET_COUNT - 1);
}

TEST_CASE("hist: every bucket is at most 1/64 of its lower bound wide", "[hist]")
{
    for (uint32_t i = BENCH_HIST_EXACT_COUNT; i < BENCH_HIST_BUCKET_COUNT; i++) {
        uint64_t lo = bench_hist_bucket_lo(i);
        uint64_t width = bench_hist_bucket_hi(i) - lo + 1;
        INFO("bucket " << i);
        REQUIRE(width * 64 <= lo);
    }
    // Values below 128 are exact.
    for (uint64_t v = 0; v < 128; v++)
        REQUIRE(bench_hist_bucket_lo(bench_hist_bucket_idx(v)) == v);
}

TEST_CASE("hist: empty histogram answers 0", "[hist]")
{
    auto h = make_hist();
    CHECK(bench_hist_count(h.get()) == 0);
    CHECK(bench_hist_max(h.get()) == 0);
    CHECK(bench_hist_min(h.get()) == 0);
    CHECK(bench_hist_mean(h.get()) == 0.0);
    CHECK(bench_hist_percentile(h.get(), 50) == 0);
    CHECK(bench_hist_percentile(h.get(), 99.9) == 0);
}

TEST_CASE("hist: percentiles within 1% of a sorted reference", "[hist]")
{
    uint32_t seed = GENERATE(1u, 7u, 42u, 1234567u);
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> values;
    auto h = make_hist();

    SECTION("uniform 0..100 ms")
    {
        std::uniform_int_distribution<uint64_t> d(0, 100000);
        for (int i = 0; i < 100000; i++)
            values.push_back(d(rng));
    }
    SECTION("log-uniform 1 us .. 100 s")
    {
        std::uniform_real_distribution<double> d(0.0, std::log(1e8));
        for (int i = 0; i < 100000; i++)
            values.push_back((uint64_t)std::exp(d(rng)));
    }
    SECTION("heavy tail: mostly 20-60 us, 0.5% up to 2 s")
    {
        std::uniform_int_distribution<uint64_t> fast(20, 60), slow(1000, 2000000);
        std::uniform_int_distribution<int> pick(0, 999);
        for (int i = 0; i < 50000; i++)
            values.push_back(pick(rng) < 5 ? slow(rng) : fast(rng));
    }
    SECTION("small counts")
    {
        std::uniform_int_distribution<uint64_t> d(100, 100000000);
        int n = std::uniform_int_distribution<int>(1, 9)(rng);
        for (int i = 0; i < n; i++)
            values.push_back(d(rng));
    }
    for (uint64_t v : values)
        bench_hist_add(h.get(), v);
    check_against_reference(h.get(), values);
}

TEST_CASE("hist: merge equals adding everything to one", "[hist]")
{
    std::mt19937_64 rng(99);
    std::uniform_real_distribution<double> d(0.0, std::log(1e7));
    auto a = make_hist(), b = make_hist(), all = make_hist();
    std::vector<uint64_t> values;
    for (int i = 0; i < 30000; i++) {
        uint64_t v = (uint64_t)std::exp(d(rng));
        values.push_back(v);
        bench_hist_add(i % 3 ? a.get() : b.get(), v);
        bench_hist_add(all.get(), v);
    }
    bench_hist_merge(a.get(), b.get());
    CHECK(std::memcmp(a.get(), all.get(), sizeof(bench_hist)) == 0);
    check_against_reference(a.get(), values);

    SECTION("merging an empty histogram changes nothing")
    {
        auto empty = make_hist();
        bench_hist_merge(a.get(), empty.get());
        CHECK(std::memcmp(a.get(), all.get(), sizeof(bench_hist)) == 0);
    }
    SECTION("merging into an empty histogram copies")
    {
        auto empty = make_hist();
        bench_hist_merge(empty.get(), all.get());
        CHECK(std::memcmp(empty.get(), all.get(), sizeof(bench_hist)) == 0);
    }
    SECTION("merging with itself doubles the counts, keeps the percentiles")
    {
        uint64_t p99 = bench_hist_percentile(a.get(), 99);
        bench_hist_merge(a.get(), a.get());
        CHECK(bench_hist_count(a.get()) == 2 * values.size());
        CHECK(bench_hist_percentile(a.get(), 99) == p99);
    }
}

TEST_CASE("hist: extremes", "[hist]")
{
    auto h = make_hist();
    SECTION("zero")
    {
        bench_hist_add(h.get(), 0);
        CHECK(bench_hist_percentile(h.get(), 50) == 0);
        CHECK(bench_hist_max(h.get()) == 0);
        CHECK(bench_hist_min(h.get()) == 0);
    }
    SECTION("UINT64_MAX is kept, not clamped")
    {
        bench_hist_add(h.get(), UINT64_MAX);
        CHECK(bench_hist_max(h.get()) == UINT64_MAX);
        CHECK(bench_hist_percentile(h.get(), 50) == UINT64_MAX);
    }
    SECTION("100 s is within 1%")
    {
        bench_hist_add(h.get(), 1);
        bench_hist_add(h.get(), 100000000);
        bench_hist_add(h.get(), 100000001);
        double got = (double)bench_hist_percentile(h.get(), 50);
        CHECK(std::fabs(got - 1e8) / 1e8 <= 0.01);
    }
    SECTION("add_n counts n samples, n = 0 adds nothing")
    {
        bench_hist_add_n(h.get(), 5, 0);
        CHECK(bench_hist_count(h.get()) == 0);
        bench_hist_add_n(h.get(), 5, 999);
        bench_hist_add_n(h.get(), 5000, 1);
        CHECK(bench_hist_count(h.get()) == 1000);
        CHECK(bench_hist_percentile(h.get(), 99.9) == 5);
        CHECK(bench_hist_percentile(h.get(), 99.95) == 5000);
        CHECK(bench_hist_mean(h.get()) == Approx((5.0 * 999 + 5000) / 1000));
    }
    SECTION("percentile arguments out of range are clamped")
    {
        bench_hist_add(h.get(), 10);
        bench_hist_add(h.get(), 20);
        CHECK(bench_hist_percentile(h.get(), -5) == 10);
        CHECK(bench_hist_percentile(h.get(), 250) == 20);
        CHECK(bench_hist_percentile(h.get(), NAN) == 10);
    }
}
