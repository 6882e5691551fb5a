// util_test.cpp: the SQL plugins' pure helpers (policy/plugins/acct_util.c): Accounting's
// metrics (spec 13.1 and appendix D #5, Perl's truthiness and numbers), Perl's blank test,
// which keys a table can store (255 and 256 bytes, NUL, UTF-8 for PostgreSQL), and time
// buckets (local time, the 64-byte limit at N and N+1, the empty pattern).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <ctime>
#include <cstring>
#include <string>

extern "C" {
#include "plugins/acct.h"
}

namespace
{

struct M {
    uint64_t count, count_rcpt, size, size_rcpt;
    bool operator==(const M &o) const
    {
        return count == o.count && count_rcpt == o.count_rcpt && size == o.size &&
               size_rcpt == o.size_rcpt;
    }
};

std::ostream &operator<<(std::ostream &os, const M &m)
{
    return os << "{" << m.count << "," << m.count_rcpt << "," << m.size << "," << m.size_rcpt
              << "}";
}

// nullptr means the attribute is absent.
M metrics(const char *size, const char *rcpt)
{
    uint64_t m[POL_ACCT_METRICS];
    pol_acct_metrics_of(size, size ? strlen(size) : 0, rcpt, rcpt ? strlen(rcpt) : 0, m);
    return M{m[POL_ACCT_COUNT], m[POL_ACCT_COUNT_RCPT], m[POL_ACCT_SIZE], m[POL_ACCT_SIZE_RCPT]};
}

M sum(std::initializer_list<M> ms)
{
    M s{0, 0, 0, 0};
    for (const M &m : ms) {
        s.count += m.count;
        s.count_rcpt += m.count_rcpt;
        s.size += m.size;
        s.size_rcpt += m.size_rcpt;
    }
    return s;
}

std::string bucket(const char *pattern, time_t t)
{
    char out[POL_ACCT_TIME_BYTES_MAX + 1];
    int n = pol_acct_bucket(pattern, t, out);
    return n < 0 ? "<too long>" : std::string(out, (size_t)n);
}

} // namespace

TEST_CASE("metrics: the spec's example and appendix D #5", "[util]")
{
    // 13.1: two mails of 100 bytes, recipient_count 0 then 3.
    CHECK(sum({metrics("100", "0"), metrics("100", "3")}) == M{2, 4, 200, 400});
    // D #5: 11 mails of 13371 bytes with recipient_count 0; 10 with recipient_count 10.
    M a{0, 0, 0, 0}, b{0, 0, 0, 0};
    for (int i = 0; i < 11; i++)
        a = sum({a, metrics("13371", "0")});
    for (int i = 0; i < 10; i++)
        b = sum({b, metrics("13371", "10")});
    CHECK(a == M{11, 11, 147081, 147081});
    CHECK(b == M{10, 100, 133710, 1337100});
}

TEST_CASE("metrics: absent, empty and odd attributes as Perl treats them", "[util]")
{
    CHECK(metrics(nullptr, nullptr) == M{1, 1, 0, 0}); // both missing: rcpt counts as 1
    CHECK(metrics("500", nullptr) == M{1, 1, 500, 500});
    CHECK(metrics(nullptr, "4") == M{1, 4, 0, 0});
    CHECK(metrics("500", "") == M{1, 1, 500, 500});    // "" is false
    CHECK(metrics("500", "00") == M{1, 0, 500, 0});    // "00" is true in Perl, numerically 0
    CHECK(metrics("500", "abc") == M{1, 0, 500, 0});   // true, numerically 0
    CHECK(metrics("500", "2x") == M{1, 2, 500, 1000}); // leading number
    CHECK(metrics("-5", "2") == M{1, 2, 0, 0});        // unsigned columns: no negatives
    CHECK(metrics("12.9", "1") == M{1, 1, 12, 12});
    CHECK(metrics("1e30", "1e30") == M{1, UINT64_MAX, UINT64_MAX, UINT64_MAX});
}

TEST_CASE("blank is Perl's /^\\s*$/", "[util]")
{
    CHECK(pol_acct_blank(nullptr, 0));
    CHECK(pol_acct_blank("", 0));
    CHECK(pol_acct_blank(" \t\r\n\f\v", 6));
    CHECK_FALSE(pol_acct_blank(" x ", 3));
    CHECK_FALSE(pol_acct_blank("0", 1));
}

TEST_CASE("keys: 255 bytes fit, 256 do not; NUL never; UTF-8 only for PostgreSQL", "[util]")
{
    std::string k255(255, 'a'), k256(256, 'a');
    CHECK(pol_acct_key_problem(k255.data(), k255.size(), true) == nullptr);
    CHECK(pol_acct_key_problem(k256.data(), k256.size(), false) != nullptr);
    CHECK(pol_acct_key_problem("a\0b", 3, false) != nullptr);
    const std::string good = "m\xc3\xbcller@\xe4\xbe\x8b.example \xf0\x9f\x98\x80";
    CHECK(pol_acct_key_problem(good.data(), good.size(), true) == nullptr);
    for (const char *bad : {"\xff", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                            "\xf4\x90\x80\x80", "ab\x80"}) {
        INFO(bad);
        CHECK(pol_acct_key_problem(bad, strlen(bad), true) != nullptr);
        CHECK(pol_acct_key_problem(bad, strlen(bad), false) == nullptr); // SQLite stores bytes
    }
}

TEST_CASE("buckets: strftime in local time; the 64-byte limit", "[util]")
{
    setenv("TZ", "UTC", 1);
    tzset();
    const time_t t = 1418000000; // 2014-12-08 00:53:20 UTC
    CHECK(bucket("%Y-%m", t) == "2014-12");
    CHECK(bucket("%Y-%m-%d", t) == "2014-12-08");
    CHECK(bucket("%Y-%W", t) == "2014-49");
    CHECK(bucket("", t) == "");
    CHECK(bucket("static", t) == "static");
    setenv("TZ", "Pacific/Kiritimati", 1); // UTC+14: already the next day there
    tzset();
    CHECK(bucket("%Y-%m-%d", t) == "2014-12-08");
    CHECK(bucket("%Y-%m-%d", 1418000000 + 12 * 3600) == "2014-12-09");
    setenv("TZ", "UTC", 1);
    tzset();
    std::string p64(POL_ACCT_TIME_BYTES_MAX, 'x'), p65(POL_ACCT_TIME_BYTES_MAX + 1, 'x');
    CHECK(bucket(p64.c_str(), t) == p64);
    CHECK(bucket(p65.c_str(), t) == "<too long>");
    CHECK(bucket((std::string(POL_ACCT_TIME_BYTES_MAX - 4, 'x') + "%Y").c_str(), t) ==
          std::string(POL_ACCT_TIME_BYTES_MAX - 4, 'x') + "2014");
    CHECK(bucket((std::string(POL_ACCT_TIME_BYTES_MAX - 3, 'x') + "%Y").c_str(), t) ==
          "<too long>");
}
