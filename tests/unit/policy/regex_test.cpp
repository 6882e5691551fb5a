// regex_test.cpp: POL_OPT_REGEX patterns: Perl semantics where PCRE2 differs (a pattern read
// from a variable has no interpolation escapes), bad patterns refused with a reason, matching
// bytes, unanchored, on threads that never called pol_regex_thread_init.
#include <catch2/catch.hpp>

#include <string>
#include <thread>

extern "C" {
#include "regex.h"
}

namespace
{

bool matches(const char *pattern, const std::string &s)
{
    char err[256];
    pol_regex *re = pol_regex_compile(pattern, err, sizeof err);
    INFO(err);
    REQUIRE(re != nullptr);
    bool m = pol_regex_match(re, s.data(), s.size());
    pol_regex_free(re);
    return m;
}

} // namespace

TEST_CASE("unanchored, case sensitive, bytes", "[regex]")
{
    CHECK(matches("dyn", "host.dyn.example"));
    CHECK_FALSE(matches("DYN", "host.dyn.example"));
    CHECK(matches("(?i)DYN", "host.dyn.example"));
    CHECK(matches("^a\\x00b$", std::string("a\0b", 3)));
    CHECK(matches("\\xff", "\xff"));
    CHECK_FALSE(matches("^x$", "x\r"));
    CHECK(matches("^x$", "x\n")); // $ before a final newline, as in Perl
}

TEST_CASE("interpolation escapes are letters in a pattern from a variable (Perl)", "[regex]")
{
    CHECK(matches("\\Qa.b+c@\\E", "Qa.bbc@E"));
    CHECK_FALSE(matches("\\Qa.b+c@\\E", "a.b+c@"));
    CHECK(matches("\\Uabc", "Uabc"));
    CHECK(matches("\\lx\\u\\L\\F", "lxuLF"));
    CHECK(matches("\\\\Q", "\\Q"));   // an escaped backslash, then the letter
    CHECK(matches("\\\\\\Q", "\\Q")); // escaped backslash, then \Q: still the letter
    CHECK(matches("[\\Q]", "Q"));
}

TEST_CASE("bad patterns are refused with the reason and offset", "[regex]")
{
    char err[256];
    CHECK(pol_regex_compile("(unclosed", err, sizeof err) == nullptr);
    CHECK(std::string(err).rfind("bad regex '(unclosed': missing closing parenthesis at offset 9",
                                 0) == 0);
}

TEST_CASE("any thread can match", "[regex]")
{
    char err[256];
    pol_regex *re = pol_regex_compile("^[0-9]+$", err, sizeof err);
    REQUIRE(re != nullptr);
    bool a = false, b = true;
    std::thread t([&] {
        a = pol_regex_match(re, "12345", 5);
        b = pol_regex_match(re, "12a45", 5);
        pol_regex_thread_fini();
    });
    t.join();
    CHECK(a);
    CHECK_FALSE(b);
    CHECK(pol_regex_errors() == 0);
    pol_regex_free(re);
}
