// values_test.cpp: policy/values.c, the option value types and Perl's number conversions.
//
// The expectations in values_expect.inc were produced by perl 5.36 and Moose (the versions
// mtpolicyd 2.05 runs on) with gen_values_expect.pl; every row is checked here. Each input is
// also placed flush against a guard page, so reading past the given length faults.
#include <catch2/catch.hpp>

#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "parse_testutil.h"

extern "C" {
#include <pol/plugin.h>

#include "values.h"
}

namespace
{

enum Kind { K_FINITE, K_PINF, K_NINF, K_NAN };

struct NumPerlRow {
    const char *s;
    size_t len;
    Kind kind;
    double value;     // K_FINITE only
    const char *perl; // how perl prints the value
};

struct NumFormatRow {
    Kind kind;
    double value; // K_FINITE only
    const char *perl;
};

struct TypeRow {
    const char *s;
    size_t len;
    bool is_int, is_num, is_bool;
    Kind num_kind;
    double num; // Perl's value when is_num
};

struct Item {
    const char *s;
    size_t len;
};

struct ListRow {
    const char *s;
    size_t len;
    pol_list_sep sep;
    std::vector<Item> items;
};

#include "values_expect.inc"

double kind_value(Kind k, double finite)
{
    switch (k) {
    case K_PINF:
        return INFINITY;
    case K_NINF:
        return -INFINITY;
    case K_NAN:
        return NAN;
    case K_FINITE:
        break;
    }
    return finite;
}

// Same double, with every NaN equal to every NaN and +0 equal to -0 (Perl shows both as 0).
bool same_number(double a, double b)
{
    if (std::isnan(a) || std::isnan(b)) {
        return std::isnan(a) && std::isnan(b);
    }
    return a == b;
}

std::string show(const char *s, size_t len)
{
    std::string out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            out += (char)c;
        } else {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", c);
            out += b;
        }
    }
    return out;
}

GuardBuf &guard()
{
    static GuardBuf g(4096);
    return g;
}

} // namespace

TEST_CASE("pol_num_perl matches perl's numification", "[values]")
{
    for (const NumPerlRow &r : kNumPerl) {
        INFO("input \"" << show(r.s, r.len) << "\", perl says " << r.perl);
        const char *s = guard().place(r.s, r.len);
        double got = pol_num_perl(s, r.len);
        CHECK(same_number(got, kind_value(r.kind, r.value)));
        // And printed back, what perl prints.
        char buf[POL_NUM_FORMAT_BYTES];
        size_t n = pol_num_format(buf, sizeof buf, got);
        CHECK(std::string(buf, n) == r.perl);
    }
}

TEST_CASE("pol_num_perl stops at the given length", "[values]")
{
    CHECK(pol_num_perl("12", 1) == 1);
    CHECK(pol_num_perl("1e5", 2) == 1);
    CHECK(pol_num_perl("infinity", 2) == 0);
    CHECK(pol_num_perl("nan", 2) == 0);
    CHECK(pol_num_perl("1.#INF", 4) == 1);
    CHECK(pol_num_perl(nullptr, 0) == 0);
    CHECK(pol_num_perl("-5", 1) == 0);
}

TEST_CASE("pol_num_format matches perl's stringification", "[values]")
{
    for (const NumFormatRow &r : kNumFormat) {
        double v = kind_value(r.kind, r.value);
        INFO("value " << v << " (" << r.value << "), perl says " << r.perl);
        char buf[POL_NUM_FORMAT_BYTES];
        size_t n = pol_num_format(buf, sizeof buf, v);
        CHECK(std::string(buf, n) == r.perl);
        CHECK(buf[n] == '\0');
    }
}

TEST_CASE("pol_num_format truncates like snprintf and returns the full length", "[values]")
{
    char buf[4];
    CHECK(pol_num_format(buf, sizeof buf, 12345.5) == 7);
    CHECK(std::string(buf) == "123");
    CHECK(pol_num_format(nullptr, 0, -1.5) == 4);
    CHECK(pol_num_format(buf, sizeof buf, -INFINITY) == 4);
    CHECK(std::string(buf) == "-In");
}

TEST_CASE("int, number and bool accept exactly what Moose accepts", "[values]")
{
    for (const TypeRow &r : kTypes) {
        INFO("input \"" << show(r.s, r.len) << "\"");
        const char *s = guard().place(r.s, r.len);
        char err[256] = "";
        long long i = -42;
        bool int_ok = pol_value_int(s, r.len, &i, err, sizeof err);
        // Moose takes any digit string; we refuse what does not fit in a long long.
        bool too_big = r.is_int && (r.num > 9.2e18 || r.num < -9.2e18) && !int_ok;
        if (too_big) {
            CHECK(std::string(err).find("out of range") != std::string::npos);
        } else {
            CHECK(int_ok == r.is_int);
        }
        if (int_ok) {
            CHECK((double)i == r.num);
        } else {
            CHECK(std::string(err).find('"') == 0);
        }

        double d = -42;
        err[0] = '\0';
        bool num_ok = pol_value_number(s, r.len, &d, err, sizeof err);
        CHECK(num_ok == r.is_num);
        if (num_ok) {
            CHECK(same_number(d, kind_value(r.num_kind, r.num)));
        } else {
            CHECK(std::string(err).find("is not a number") != std::string::npos);
        }

        bool b = true;
        err[0] = '\0';
        bool bool_ok = pol_value_bool(s, r.len, &b, err, sizeof err);
        CHECK(bool_ok == r.is_bool);
        if (bool_ok) {
            CHECK(b == (r.len == 1 && r.s[0] == '1'));
        } else {
            CHECK(std::string(err).find("is not a boolean (1, 0 or empty)") != std::string::npos);
        }
    }
}

TEST_CASE("int limits at N and N+1", "[values]")
{
    long long v = 0;
    char err[128];
    CHECK(pol_value_int("9223372036854775807", 19, &v, err, sizeof err));
    CHECK(v == LLONG_MAX);
    CHECK_FALSE(pol_value_int("9223372036854775808", 19, &v, err, sizeof err));
    CHECK(std::string(err) == "\"9223372036854775808\" is out of range for an integer");
    CHECK(pol_value_int("-9223372036854775808", 20, &v, err, sizeof err));
    CHECK(v == LLONG_MIN);
    CHECK_FALSE(pol_value_int("-9223372036854775809", 20, &v, err, sizeof err));
    CHECK(pol_value_int("-0", 2, &v, err, sizeof err));
    CHECK(v == 0);
}

TEST_CASE("error messages are one readable line, cut at 64 bytes", "[values]")
{
    char err[256];
    bool b;
    CHECK_FALSE(pol_value_bool("yes", 3, &b, err, sizeof err));
    CHECK(std::string(err) == "\"yes\" is not a boolean (1, 0 or empty)");
    CHECK_FALSE(pol_value_bool("a\nb\x01", 4, &b, err, sizeof err));
    CHECK(std::string(err) == "\"a?b?\" is not a boolean (1, 0 or empty)");
    std::string longer(100, 'x');
    CHECK_FALSE(pol_value_bool(longer.data(), longer.size(), &b, err, sizeof err));
    CHECK(std::string(err) ==
          "\"" + std::string(64, 'x') + "...\" is not a boolean (1, 0 or empty)");
    // A small or missing buffer is fine.
    CHECK_FALSE(pol_value_bool("yes", 3, &b, err, 5));
    CHECK(std::string(err) == "\"yes");
    CHECK_FALSE(pol_value_bool("yes", 3, &b, nullptr, 0));
    double d;
    CHECK_FALSE(pol_value_number("5.", 2, &d, err, sizeof err));
    CHECK(std::string(err) ==
          "\"5.\" is not a number (digits with an optional sign, fraction and exponent, such as "
          "5, -2.5, .5 or 1e3)");
    long long i;
    CHECK_FALSE(pol_value_int("+5", 2, &i, err, sizeof err));
    CHECK(std::string(err) == "\"+5\" is not an integer (an optional '-' then digits)");
}

TEST_CASE("lists split as Perl's split does", "[values]")
{
    for (const ListRow &r : kLists) {
        INFO("input \"" << show(r.s, r.len) << "\" "
                        << (r.sep == POL_LIST_COMMA ? "comma" : "comma or space"));
        const char *s = guard().place(r.s, r.len);
        size_t count = pol_value_list_split(s, r.len, r.sep, nullptr, 0);
        REQUIRE(count == r.items.size());
        std::vector<pol_value_slice> got(count + 1);
        CHECK(pol_value_list_split(s, r.len, r.sep, got.data(), got.size()) == count);
        for (size_t i = 0; i < count; i++) {
            CHECK(std::string(got[i].ptr, got[i].len) == std::string(r.items[i].s, r.items[i].len));
            CHECK(got[i].ptr >= s);
            CHECK(got[i].ptr + got[i].len <= s + r.len);
        }
    }
}

TEST_CASE("list split with a short array fills what fits and counts everything", "[values]")
{
    pol_value_slice items[2];
    const char text[] = "a, b, c, d";
    CHECK(pol_value_list_split(text, strlen(text), POL_LIST_COMMA, items, 2) == 4);
    CHECK(std::string(items[0].ptr, items[0].len) == "a");
    CHECK(std::string(items[1].ptr, items[1].len) == "b");
}
