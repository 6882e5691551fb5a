// keys_test.cpp: the pure parts of PostfixMap and SaAwlLookup (policy/plugins/ldb_keys.c):
// address classes and the keys tried (spec 13.15), the value tests, Perl truth, SaAwlLookup's
// address keys (spec 13.24) and its cached result. Rows marked "2.05:" were produced by the
// Perl code itself (the regular expressions of PostfixMap.pm/SaAwlLookup.pm, NetAddr::IP 4.079
// ->new6("ADDR/48")->network->full6 with s/(:0000)+/::/), run with perl 5.36.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "plugins/ldb_keys.h"
}

namespace
{

enum ldb_pfm_class cls(const std::string &s)
{
    return ldb_pfm_classify(s.data(), s.size());
}

// Every key PostfixMap tries for an address, longest first.
std::vector<std::string> chain(const std::string &ip)
{
    std::vector<std::string> keys;
    enum ldb_pfm_class c = cls(ip);
    size_t len = ip.size();
    while (len > 0 && keys.size() < 64) {
        keys.push_back(ip.substr(0, len));
        len = ldb_pfm_parent_len(c, ip.data(), len);
    }
    return keys;
}

// SaAwlLookup's address key, "<none>" when there is none.
std::string awl(const std::string &ip)
{
    char out[LDB_AWL_IP_KEY_BYTES];
    size_t len = 0;
    const char *key = ldb_awl_ip_key(ip.data(), ip.size(), out, &len);
    return key != nullptr ? std::string(key, len) : std::string("<none>");
}

bool matches(const std::string &v)
{
    return ldb_pfm_value_matches(v.data(), v.size());
}

} // namespace

TEST_CASE("PostfixMap classifies addresses with 2.05's regular expressions", "[keys]")
{
    CHECK(cls("192.168.0.1") == LDB_PFM_IPV4);
    CHECK(cls("01.2.3.4") == LDB_PFM_IPV4);
    CHECK(cls("999.2.3.4") == LDB_PFM_IPV4); // \d+ only; the map simply has no such key
    CHECK(cls("1.2.3.4\n") == LDB_PFM_IPV4); // Perl's $ before a final LF
    CHECK(cls("fe80::250:56ff:fe85:56f5") == LDB_PFM_IPV6);
    CHECK(cls("::") == LDB_PFM_IPV6);
    CHECK(cls("abc") == LDB_PFM_IPV6); // [:0-9a-f]+ needs no colon
    CHECK(cls("123") == LDB_PFM_IPV6);
    // 2.05 dies with "ip is neither a valid ipv4 nor ipv6 address." on these
    CHECK(cls("") == LDB_PFM_OTHER);
    CHECK(cls("unknown") == LDB_PFM_OTHER);
    CHECK(cls("FE80::1") == LDB_PFM_OTHER);
    CHECK(cls("::ffff:1.2.3.4") == LDB_PFM_OTHER);
    CHECK(cls("1.2.3") == LDB_PFM_OTHER);
    CHECK(cls("1.2.3.4.5") == LDB_PFM_OTHER);
    CHECK(cls(" 1.2.3.4") == LDB_PFM_OTHER);
    CHECK(cls("1.2.3.4 ") == LDB_PFM_OTHER);
    CHECK(cls(std::string("1.2.3.4\0", 8)) == LDB_PFM_OTHER);
    CHECK(cls("fe80::1%eth0") == LDB_PFM_OTHER);
}

TEST_CASE("PostfixMap tries shorter keys as 2.05 does", "[keys]")
{
    CHECK(chain("123.123.124.1") ==
          std::vector<std::string>{"123.123.124.1", "123.123.124", "123.123", "123"});
    // spec 13.15's example
    CHECK(chain("fe81::250:56ff:eeee:ffff") ==
          std::vector<std::string>{"fe81::250:56ff:eeee:ffff", "fe81::250:56ff:eeee",
                                   "fe81::250:56ff", "fe81::250", "fe81"});
    CHECK(chain("::1") == std::vector<std::string>{"::1"});
    CHECK(chain("abc") == std::vector<std::string>{"abc"});
    // 2.05 loops forever on these (s/:+[^:]+$// cannot match); the trailing colons go instead
    CHECK(chain("2001:db8::") == std::vector<std::string>{"2001:db8::", "2001:db8", "2001"});
    CHECK(chain("::") == std::vector<std::string>{"::"});
    CHECK(chain("fe80:") == std::vector<std::string>{"fe80:", "fe80"});
}

TEST_CASE("PostfixMap judges values as 2.05 does", "[keys]")
{
    CHECK(matches("OK"));
    CHECK(matches("1"));
    CHECK(matches("0"));
    CHECK(matches("0123456789"));
    CHECK(matches("12\n"));
    CHECK_FALSE(matches(""));
    CHECK_FALSE(matches("ok"));
    CHECK_FALSE(matches("OK "));
    CHECK_FALSE(matches(" OK"));
    CHECK_FALSE(matches("REJECT"));
    CHECK_FALSE(matches("DUNNO"));
    CHECK_FALSE(matches("1.5"));
    CHECK_FALSE(matches("-1"));
    CHECK_FALSE(matches("12\n\n"));
    CHECK_FALSE(matches("\n"));

    CHECK(ldb_pfm_value_counts(LDB_PFM_IPV4, "", 0));
    CHECK(ldb_pfm_value_counts(LDB_PFM_IPV4, "0", 1));
    CHECK_FALSE(ldb_pfm_value_counts(LDB_PFM_IPV6, "", 0));
    CHECK_FALSE(ldb_pfm_value_counts(LDB_PFM_IPV6, "0", 1));
    CHECK(ldb_pfm_value_counts(LDB_PFM_IPV6, "00", 2));
    CHECK(ldb_pfm_value_counts(LDB_PFM_IPV6, "0.0", 3));
    CHECK(ldb_pfm_value_counts(LDB_PFM_IPV6, "REJECT", 6));

    CHECK_FALSE(ldb_perl_true("", 0));
    CHECK_FALSE(ldb_perl_true("0", 1));
    CHECK(ldb_perl_true("0.0", 3));
    CHECK(ldb_perl_true(" 0", 2));
    CHECK(ldb_perl_true("-0", 2));
}

TEST_CASE("SaAwlLookup address keys are 2.05's", "[keys]")
{
    // 2.05: IPv4 through /^(\d+\.\d+).\d+.\d+$/
    CHECK(awl("12.34.56.78") == "12.34");
    CHECK(awl("192.168.0.1") == "192.168");
    CHECK(awl("12.34x5y6") == "12.34"); // unescaped dots match any byte
    CHECK(awl("1.23456") == "1.2");     // backtracking gives the second \d+ one digit
    CHECK(awl("1.234567") == "1.23");   // the longest capture that still leaves the rest
    CHECK(awl("12.34.56") == "<none>");
    CHECK(awl("12.34.56.78.9") == "<none>");
    CHECK(awl("a.b.c.d") == "<none>");
    CHECK(awl("") == "<none>");
    CHECK(awl("12.34.56.78\n") == "12.34");
    CHECK(awl("12.34\n56.78") == "<none>"); // . does not match LF
    // 2.05: IPv6 /48 with NetAddr::IP
    CHECK(awl("2a01:4f8:d12:242::2") == "2A01:04F8:0D12::");
    CHECK(awl("::1") == "0000::");
    CHECK(awl("::") == "0000::");
    CHECK(awl("2A01:4F8::1") == "2A01:04F8::");
    CHECK(awl("::ffff:1.2.3.4") == "0000::");
    CHECK(awl("1:2:3:4:5:6:7:8") == "0001:0002:0003::");
    CHECK(awl("2a01:0:0:1::") == "2A01::");
    CHECK(awl("2a01::0:1:2") == "2A01::");
    CHECK(awl("0:0:1::") == "0000:::0001:0000:0000:0000:0000:0000");
    CHECK(awl("0001::") == "0001::");
    CHECK(awl("1:2:3:4:5:6:7::") == "0001:0002:0003::");
    CHECK(awl("::2:3:4:5:6:7:8") == "0000:0002:0003::");
    CHECK(awl("1:2:3:4:5:6:1.2.3.4") == "0001:0002:0003::");
    CHECK(awl("a:b:c:d:e:f:1:2") == "000A:000B:000C::");
    CHECK(awl("fe80::1%eth0") == "<none>");
    CHECK(awl("1:2:3:4:5:6:7:8:9") == "<none>");
    CHECK(awl("gg::1") == "<none>");
    CHECK(awl(":") == "<none>");
    CHECK(awl("1::2::3") == "<none>");
    CHECK(awl("2001:db8::1 ") == "<none>");
    CHECK(awl("1.2.3.4:25") == "<none>");
    CHECK(awl("01234::") == "<none>");
    CHECK(awl("1::1.2.3") == "<none>");
    CHECK(awl(":::") == "<none>");
    CHECK(awl("::ffff:256.1.1.1") == "<none>");
    CHECK(awl(std::string(200, ':')) == "<none>");
}

TEST_CASE("SaAwlLookup's cached result reads back exactly", "[keys]")
{
    double score = 0;
    const char *count = nullptr;
    size_t count_len = 0;
    std::string t = "0.33333333333333331 3";
    REQUIRE(ldb_awl_result_parse(t.data(), t.size(), &score, &count, &count_len));
    CHECK(score == 1.0 / 3.0);
    CHECK(std::string(count, count_len) == "3");
    t = "-5 100 and more";
    REQUIRE(ldb_awl_result_parse(t.data(), t.size(), &score, &count, &count_len));
    CHECK(score == -5.0);
    CHECK(std::string(count, count_len) == "100 and more");
    CHECK_FALSE(ldb_awl_result_parse("", 0, &score, &count, &count_len));
    CHECK_FALSE(ldb_awl_result_parse("5", 1, &score, &count, &count_len));
    CHECK_FALSE(ldb_awl_result_parse("x 5", 3, &score, &count, &count_len));
    CHECK_FALSE(ldb_awl_result_parse(" 5", 2, &score, &count, &count_len));
}
