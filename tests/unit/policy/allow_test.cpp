// allow_test.cpp: the client allow-list (policy/allow.c): parsing IPv4/IPv6 networks with and
// without prefixes, separators, errors naming the entry, the entry limit at N and N+1, matching
// at prefix boundaries, IPv4-mapped IPv6 peers, Unix peers, the refusal counter, and the global
// option in the configuration model (errors naming file:line, max_staging_bytes_per_shard).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "kit.hpp"

extern "C" {
#include "allow.h"
#include "server.h"
}

namespace
{

bool match(const pol_allow &a, const char *ip)
{
    sockaddr_storage ss{};
    socklen_t len;
    if (std::strchr(ip, ':')) {
        auto *s6 = reinterpret_cast<sockaddr_in6 *>(&ss);
        s6->sin6_family = AF_INET6;
        REQUIRE(inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1);
        len = sizeof(*s6);
    } else {
        auto *s4 = reinterpret_cast<sockaddr_in *>(&ss);
        s4->sin_family = AF_INET;
        REQUIRE(inet_pton(AF_INET, ip, &s4->sin_addr) == 1);
        len = sizeof(*s4);
    }
    return pol_allow_match(&a, reinterpret_cast<sockaddr *>(&ss), len);
}

pol_allow parsed(const char *text)
{
    pol_allow a;
    char why[256] = "";
    INFO(why);
    REQUIRE(pol_allow_parse(text, &a, why, sizeof why) == 0);
    return a;
}

std::string parse_error(const char *text)
{
    pol_allow a;
    char why[256] = "";
    REQUIRE(pol_allow_parse(text, &a, why, sizeof why) == -1);
    return why;
}

std::string build(const std::string &conf, pol_server **out = nullptr)
{
    probe_register();
    pol_server *s = nullptr;
    char err[2048] = "";
    int rc = pol_server_from_text("test.conf", conf.c_str(), &s, err, sizeof err);
    if (rc == 0 && out)
        *out = s;
    else if (rc == 0)
        pol_server_free(s);
    return rc == 0 ? "" : err;
}

} // namespace

TEST_CASE("allow: an empty list accepts everyone", "[allow]")
{
    pol_allow a = parsed("");
    CHECK(a.count == 0);
    CHECK(match(a, "192.0.2.1"));
    CHECK(match(a, "2001:db8::1"));
    a = parsed(" , ,\t");
    CHECK(a.count == 0);
}

TEST_CASE("allow: IPv4 networks and prefix boundaries", "[allow]")
{
    pol_allow a = parsed("127.0.0.0/8, 10.1.2.0/23 192.0.2.7");
    REQUIRE(a.count == 3);
    CHECK(match(a, "127.0.0.1"));
    CHECK(match(a, "127.255.255.255"));
    CHECK_FALSE(match(a, "128.0.0.0"));
    CHECK_FALSE(match(a, "126.255.255.255"));
    CHECK(match(a, "10.1.2.0"));
    CHECK(match(a, "10.1.3.255"));
    CHECK_FALSE(match(a, "10.1.4.0"));
    CHECK_FALSE(match(a, "10.1.1.255"));
    CHECK(match(a, "192.0.2.7")); // no prefix: /32
    CHECK_FALSE(match(a, "192.0.2.6"));
    CHECK_FALSE(match(a, "192.0.2.8"));
    CHECK_FALSE(match(a, "::1")); // IPv4 networks never match IPv6 peers
}

TEST_CASE("allow: host bits of a network are ignored; /0 matches its family", "[allow]")
{
    pol_allow a = parsed("10.9.9.9/8");
    CHECK(match(a, "10.0.0.1"));
    CHECK_FALSE(match(a, "11.0.0.1"));
    a = parsed("0.0.0.0/0");
    CHECK(match(a, "203.0.113.9"));
    CHECK_FALSE(match(a, "2001:db8::1"));
    a = parsed("::/0");
    CHECK(match(a, "2001:db8::1"));
    CHECK_FALSE(match(a, "203.0.113.9"));
}

TEST_CASE("allow: IPv6 networks, odd prefixes, mapped IPv4 peers", "[allow]")
{
    pol_allow a = parsed("::1, 2001:db8::/32, fd00:ab::/29, 127.0.0.0/8");
    CHECK(match(a, "::1"));
    CHECK_FALSE(match(a, "::2"));
    CHECK(match(a, "2001:db8:ffff::1"));
    CHECK_FALSE(match(a, "2001:db9::1"));
    CHECK(match(a, "fd00:ab::1"));
    CHECK(match(a, "fd00:af:ffff::1"));  // 0x00af: 29 bits 0xfd0000a8 .. 0xfd0000af
    CHECK_FALSE(match(a, "fd00:b0::1"));
    CHECK_FALSE(match(a, "fd00:a7::1"));
    CHECK(match(a, "::ffff:127.0.0.1")); // a v4 client of a [::] listener
    CHECK_FALSE(match(a, "::ffff:10.0.0.1"));
}

TEST_CASE("allow: Unix socket peers are not filtered", "[allow]")
{
    pol_allow a = parsed("127.0.0.1");
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    CHECK(pol_allow_match(&a, reinterpret_cast<sockaddr *>(&un), sizeof(sa_family_t)));
}

TEST_CASE("allow: bad entries are named", "[allow]")
{
    CHECK(parse_error("127.0.0.0/8, localhost") == "'localhost' is not an IPv4 or IPv6 address");
    CHECK(parse_error("10.0.0.0/33") ==
          "'10.0.0.0/33': the prefix length must be a number from 0 to 32");
    CHECK(parse_error("::/129") == "'::/129': the prefix length must be a number from 0 to 128");
    CHECK(parse_error("10.0.0.0/") ==
          "'10.0.0.0/': the prefix length must be a number from 0 to 32");
    CHECK(parse_error("10.0.0.0/-1") ==
          "'10.0.0.0/-1': the prefix length must be a number from 0 to 32");
    CHECK(parse_error("10.0.0.0/8x") ==
          "'10.0.0.0/8x': the prefix length must be a number from 0 to 32");
    CHECK(parse_error("10.0.0.256") == "'10.0.0.256' is not an IPv4 or IPv6 address");
    CHECK(parse_error(std::string(100, '1').c_str()).find("is not an IPv4 or IPv6") !=
          std::string::npos);
}

TEST_CASE("allow: at most POL_ALLOW_NETS_MAX networks", "[allow]")
{
    std::string list;
    for (unsigned i = 0; i < POL_ALLOW_NETS_MAX; i++)
        list += "10.0." + std::to_string(i) + ".0/24,";
    pol_allow a = parsed(list.c_str());
    CHECK(a.count == POL_ALLOW_NETS_MAX);
    CHECK(match(a, "10.0.63.4"));
    CHECK_FALSE(match(a, "10.0.64.4"));
    list += "10.0.200.0/24";
    CHECK(parse_error(list.c_str()) == "more than 64 networks");
}

TEST_CASE("allow: refusals are counted", "[allow]")
{
    pol_allow a = parsed("127.0.0.0/8");
    sockaddr_in s4{};
    s4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
    uint64_t before = pol_allow_refused_count();
    CHECK(pol_allow_refused(&a, reinterpret_cast<sockaddr *>(&s4), sizeof s4, "12345", 1000));
    CHECK(pol_allow_refused(&a, reinterpret_cast<sockaddr *>(&s4), sizeof s4, "12345", 1001));
    inet_pton(AF_INET, "127.0.0.9", &s4.sin_addr);
    CHECK_FALSE(pol_allow_refused(&a, reinterpret_cast<sockaddr *>(&s4), sizeof s4, "12345", 1002));
    CHECK(pol_allow_refused_count() == before + 2);
}

TEST_CASE("allow: the global option in a configuration file", "[allow]")
{
    pol_server *s = nullptr;
    REQUIRE(build("allow = \"127.0.0.0/8, ::1\"\n" + vhost(probe("p", "")), &s) == "");
    CHECK(s->g.allow.count == 2);
    pol_server_free(s);
    REQUIRE(build(vhost(probe("p", "")), &s) == "");
    CHECK(s->g.allow.count == 0);
    pol_server_free(s);
    CHECK(build("\nallow = \"127.0.0.0/8 example.org\"\n" + vhost(probe("p", ""))) ==
          "test.conf:2: allow: 'example.org' is not an IPv4 or IPv6 address");
}

TEST_CASE("max_staging_bytes_per_shard: typed, at least 4 of the largest buffers", "[allow]")
{
    pol_server *s = nullptr;
    REQUIRE(build(vhost(probe("p", "")), &s) == "");
    CHECK(s->g.max_staging_bytes_per_shard == 0);
    pol_server_free(s);
    // Defaults: max_pipelined_bytes 256 KiB is the largest input: 4 x (262144 + 4096).
    REQUIRE(build("max_staging_bytes_per_shard = 1064960\n" + vhost(probe("p", "")), &s) == "");
    CHECK(s->g.max_staging_bytes_per_shard == 1064960);
    pol_server_free(s);
    CHECK(build("max_staging_bytes_per_shard = 1064959\n" + vhost(probe("p", ""))) ==
          "test.conf:1: max_staging_bytes_per_shard must be 0 (64 MiB) or at least 1064960 (4 x "
          "(the larger of max_request_bytes + 1024 and max_pipelined_bytes, plus 4096)), not "
          "1064959");
    // The minimum follows max_pipelined_bytes, whichever line comes first.
    REQUIRE(build("max_staging_bytes_per_shard = 300000\nmax_pipelined_bytes = 65536\n" +
                  vhost(probe("p", "")),
                  &s) == "");
    pol_server_free(s);
    CHECK(build("max_staging_bytes_per_shard = 64MiB\n" + vhost(probe("p", ""))).find("test.conf:1: "
                                                                          "max_staging_bytes_"
                                                                          "per_shard must be an "
                                                                          "integer") == 0);
}
