// ucjson_test.cpp: SqlUserConfig's JSON (policy/plugins/ucjson.c): members in document order,
// strings, numbers as the Perl mtpolicyd 2.05 (JSON::PP) prints them (values below were
// observed with `perl -MJSON`), booleans, null, nested values as JSON text, invalid JSON and
// non-objects refused, and an allocator that runs out.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "plugins/acct.h"
}

namespace
{

using Members = std::vector<std::pair<std::string, std::string>>;

void collect(void *ctx, const char *key, size_t key_len, const char *value, size_t value_len)
{
    static_cast<Members *>(ctx)->emplace_back(std::string(key, key_len),
                                              value ? std::string(value, value_len) : "<null>");
}

int parse(const std::string &json, Members *out, std::string *err = nullptr,
          pol_ucjson_alloc_fn *alloc = nullptr, void *alloc_ctx = nullptr)
{
    char why[256] = "";
    int rc = pol_ucjson_members(json.data(), json.size(), alloc, alloc_ctx, collect, out, why,
                                sizeof(why));
    if (err)
        *err = why;
    return rc;
}

Members members(const std::string &json)
{
    Members m;
    std::string err;
    INFO(json);
    REQUIRE(parse(json, &m, &err) == 0);
    return m;
}

std::string number(const std::string &num)
{
    char out[64];
    size_t n = pol_ucjson_number_text(num.data(), num.size(), out, sizeof(out));
    return std::string(out, n);
}

// A bump allocator over a fixed buffer (what the request arena does).
struct Bump {
    std::vector<char> buf;
    size_t used = 0;
    explicit Bump(size_t n) : buf(n) {}
    static void *alloc(void *ctx, size_t bytes)
    {
        Bump *b = static_cast<Bump *>(ctx);
        size_t at = (b->used + 15) & ~size_t(15);
        if (at + bytes > b->buf.size())
            return nullptr;
        b->used = at + bytes;
        return b->buf.data() + at;
    }
};

} // namespace

TEST_CASE("the how-to's relay policy config", "[ucjson]")
{
    CHECK(members(R"({"quota_count":"10000"})") == Members{{"quota_count", "10000"}});
    CHECK(members(" {\n\t\"greylisting\" : \"on\" ,\"a\":\"\"}\r\n") ==
          Members{{"greylisting", "on"}, {"a", ""}});
    CHECK(members("{}").empty());
}

TEST_CASE("numbers print as JSON::PP gives them to Perl", "[ucjson]")
{
    // Observed: perl -MJSON -e 'print JSON->new->decode(q({"a":1e15}))->{a}' and so on.
    CHECK(number("1e15") == "1000000000000000");
    CHECK(number("1e16") == "10000000000000000");
    CHECK(number("-1e15") == "-1000000000000000");
    CHECK(number("1E5") == "100000");
    CHECK(number("1e20") == "1e+20");
    CHECK(number("1e300") == "1e+300");
    CHECK(number("1.0") == "1");
    CHECK(number("1.50") == "1.5");
    CHECK(number("0.1") == "0.1");
    CHECK(number("2.5e-7") == "2.5e-07");
    CHECK(number("-0") == "0");
    CHECK(number("-5") == "-5");
    CHECK(number("123456789012345678") == "123456789012345678");
    CHECK(number("9223372036854775807") == "9223372036854775807");
    CHECK(number("12345678901234567890") == "12345678901234567890");
    CHECK(members(R"({"n":1e15,"m":-2.5,"k":10000})") ==
          Members{{"n", "1000000000000000"}, {"m", "-2.5"}, {"k", "10000"}});
}

TEST_CASE("booleans, null, nested values, escapes, duplicates", "[ucjson]")
{
    CHECK(members(R"({"t":true,"f":false,"z":null})") ==
          Members{{"t", "1"}, {"f", "0"}, {"z", "<null>"}});
    CHECK(members(R"({"list":[1, 2,{"x" : "y"}],"o":{"a":[]}})") ==
          Members{{"list", "[1,2,{\"x\":\"y\"}]"}, {"o", "{\"a\":[]}"}});
    CHECK(members(R"({"s":"caf\u00e9 \"q\" \\ \/","e\u00e9":"\ud83d\ude00"})") ==
          Members{{"s", "caf\xc3\xa9 \"q\" \\ /"}, {"e\xc3\xa9", "\xf0\x9f\x98\x80"}});
    // Later members win when the session takes them in order, as Perl's hash does.
    CHECK(members(R"({"a":"1","a":"2"})") == Members{{"a", "1"}, {"a", "2"}});
    CHECK(members(R"({"a":"x,}]{[","b":2})") == Members{{"a", "x,}]{["}, {"b", "2"}});
}

TEST_CASE("invalid JSON and non-objects are refused", "[ucjson]")
{
    Members m;
    std::string err;
    for (const char *bad : {"", "{", "{\"a\":}", "{\"a\":1,}", "{'a':1}", "{\"a\":01}",
                            "{\"a\":1} x", "nul", "{\"a\":\"\x01\"}", "{\"a\":1.}", "{\"a\":1.e5}",
                            "{\"a\":[-01]}", "{\"a\":{\"b\":\"\n\"}}"}) {
        INFO(bad);
        CHECK(parse(bad, &m, &err) == -1);
        CHECK_FALSE(err.empty());
    }
    for (const char *other : {"[1,2]", "\"str\"", "42", "null", "true"}) {
        INFO(other);
        CHECK(parse(other, &m, &err) == -2);
    }
    CHECK(m.empty());
}

TEST_CASE("allocations go to the given allocator; running out is reported", "[ucjson]")
{
    Members m;
    Bump big(1 << 16);
    CHECK(parse(R"({"a":[1,2,3],"b":"x"})", &m, nullptr, Bump::alloc, &big) == 0);
    CHECK(big.used > 0);
    CHECK(m == Members{{"a", "[1,2,3]"}, {"b", "x"}});
    Bump tiny(64);
    Members none;
    std::string err;
    CHECK(parse(R"({"a":[1,2,3],"b":"x","c":{"d":"e"}})", &none, &err, Bump::alloc, &tiny) == -3);
    CHECK(err.find("out of memory") != std::string::npos);
    // The default allocator (malloc) still works afterwards on this thread.
    Members again;
    CHECK(parse(R"({"c":"d"})", &again) == 0);
    CHECK(again == Members{{"c", "d"}});
}
