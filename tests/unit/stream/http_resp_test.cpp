// http_resp_test.cpp: the HTTP/1.x response parser of the network plugins
// (policy/plugins/http_resp.c) and Fail2Ban's command bytes (fail2ban.c). Every complete
// response is also fed in fragments of 1, 2, 5, 10 and 100 bytes (need-more until the last
// byte, then the same result), and placed flush against the end of its allocation; limits at N
// and N+1; malformed input is refused with a position.
extern "C" {
#include "plugins/http_resp.h"
#include "plugins/netcall.h"
}

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

namespace
{

// Parses s in a buffer of exactly its size (ASan sees any read past it).
// The buffer lives until the next call (h->reason points into it).
ssize_t parse(const std::string &s, bool eof, pol_http_resp *h, size_t *err = nullptr)
{
    static std::unique_ptr<char[]> b;
    b.reset(new char[s.size() ? s.size() : 1]);
    memcpy(b.get(), s.data(), s.size());
    return pol_http_resp_parse(b.get(), s.size(), eof, h, err);
}

std::string body(const std::string &s)
{
    pol_http_resp h;
    REQUIRE(parse(s, false, &h) > 0);
    std::string out(h.msg_len, '\0');
    ssize_t n = pol_http_resp_body(s.data(), &h, &out[0], out.size());
    REQUIRE(n >= 0);
    out.resize(static_cast<size_t>(n));
    return out;
}

// Every prefix shorter than the message needs more; the whole parses to its length.
void fragments(const std::string &s)
{
    for (size_t step : {1, 2, 5, 10, 100}) {
        INFO("fragment size " << step);
        for (size_t len = step; len < s.size(); len += step) {
            pol_http_resp h;
            REQUIRE(parse(s.substr(0, len), false, &h) == 0);
        }
        pol_http_resp h;
        CHECK(parse(s, false, &h) == static_cast<ssize_t>(s.size()));
    }
}

const std::string kLen = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
                         "hello world";
const std::string kChunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n";

} // namespace

TEST_CASE("Content-Length, chunked, close-delimited; bodies", "[http_resp]")
{
    pol_http_resp h;
    REQUIRE(parse(kLen, false, &h) == static_cast<ssize_t>(kLen.size()));
    CHECK(h.status == 200);
    CHECK(h.minor == 1);
    CHECK(std::string(h.reason, h.reason_len) == "OK");
    CHECK(h.keep);
    CHECK(body(kLen) == "hello world");
    fragments(kLen);

    REQUIRE(parse(kChunked, false, &h) == static_cast<ssize_t>(kChunked.size()));
    CHECK(h.chunked);
    CHECK(body(kChunked) == "hello world");
    fragments(kChunked);

    std::string c = "HTTP/1.0 200 OK\nServer: x\n\nbody until close";
    CHECK(parse(c, false, &h) == 0);
    REQUIRE(parse(c, true, &h) == static_cast<ssize_t>(c.size()));
    CHECK_FALSE(h.keep);
    CHECK(h.minor == 0);

    std::string nc = "HTTP/1.1 204 No Content\r\n\r\n";
    REQUIRE(parse(nc, false, &h) == static_cast<ssize_t>(nc.size()));
    std::string noreason = "HTTP/1.1 500\r\nContent-Length: 0\r\n\r\n";
    REQUIRE(parse(noreason, false, &h) > 0);
    CHECK(h.status == 500);
    CHECK(h.reason_len == 0);
}

TEST_CASE("keep-alive and close", "[http_resp]")
{
    pol_http_resp h;
    REQUIRE(parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
                  false, &h) > 0);
    CHECK_FALSE(h.keep);
    REQUIRE(parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", false,
                  &h) > 0);
    CHECK(h.keep);
    REQUIRE(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, &h) > 0);
    CHECK_FALSE(h.keep);
    // Both framings: chunked wins, and the connection is not reused.
    REQUIRE(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "0\r\n\r\n",
                  false, &h) > 0);
    CHECK(h.chunked);
    CHECK_FALSE(h.keep);
    // Bytes after the response are not part of it.
    std::string two = kLen + "HTTP/1.1 200 OK\r\n";
    CHECK(parse(two, false, &h) == static_cast<ssize_t>(kLen.size()));
}

TEST_CASE("malformed responses are refused with a position", "[http_resp]")
{
    struct Bad {
        std::string text;
        size_t pos;
    } bad[] = {
        {"HTTP/2.0 200 OK\r\n\r\n", 0},
        {"HTTP/1.2 200 OK\r\n\r\n", 7},
        {"HTTP/1.1  200 OK\r\n\r\n", 9},
        {"HTTP/1.1 20 OK\r\n\r\n", 9},
        {"HTTP/1.1 099 OK\r\n\r\n", 9},
        {"HTTP/1.1 200x\r\n\r\n", 12},
        {"HTTP/1.1 200 O\x01K\r\n\r\n", 14},
        {"HTTP/1.1 100 Continue\r\n\r\n", 9},
        {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", 20},
        {"HTTP/1.1 200 OK\r\n: x\r\n\r\n", 17},
        {"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", 24},
        {"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", 23},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 34},
        {"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", 33},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 52},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n", 33},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 36},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 47},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n123456789\r\n", 56},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n", 52},
    };
    for (auto &b : bad) {
        INFO(b.text);
        pol_http_resp h;
        size_t pos = 9999;
        CHECK(parse(b.text, false, &h, &pos) == -EPROTO);
        CHECK(pos == b.pos);
    }
}

TEST_CASE("truncated at close; the head limit at N and N+1", "[http_resp]")
{
    pol_http_resp h;
    CHECK(parse(kLen.substr(0, kLen.size() - 1), true, &h) == -EPROTO);
    CHECK(parse(kChunked.substr(0, kChunked.size() - 2), true, &h) == -EPROTO);
    CHECK(parse("HTTP/1.1 200 OK\r\n", true, &h) == -EPROTO);
    CHECK(parse("", true, &h) == -EPROTO);
    CHECK(parse("", false, &h) == 0);
    // A head of exactly POL_HTTP_HEAD_BYTES_MAX bytes parses; one more byte is refused.
    std::string start = "HTTP/1.1 200 OK\r\nX: ";
    std::string end = "\r\nContent-Length: 0\r\n\r\n";
    std::string at = start + std::string(POL_HTTP_HEAD_BYTES_MAX - start.size() - end.size(), 'a') +
                     end;
    REQUIRE(at.size() == POL_HTTP_HEAD_BYTES_MAX);
    CHECK(parse(at, false, &h) == static_cast<ssize_t>(at.size()));
    std::string over = start + "a" + at.substr(start.size());
    CHECK(parse(over, false, &h) == -EMSGSIZE);
    CHECK(parse(over.substr(0, POL_HTTP_HEAD_BYTES_MAX - 1), false, &h) == 0);
}

TEST_CASE("Fail2Ban's command is 2.05's bytes", "[http_resp]")
{
    // spec 13.9: jail postfix, IP 1.2.3.4.
    const unsigned char want[] = {0x80, 0x02, 0x5d, 0x71, 0x00, 0x28, 0x55, 0x03, 0x73, 0x65,
                                  0x74, 0x71, 0x01, 0x55, 0x07, 0x70, 0x6f, 0x73, 0x74, 0x66,
                                  0x69, 0x78, 0x71, 0x02, 0x55, 0x05, 0x62, 0x61, 0x6e, 0x69,
                                  0x70, 0x71, 0x03, 0x55, 0x07, 0x31, 0x2e, 0x32, 0x2e, 0x33,
                                  0x2e, 0x34, 0x71, 0x04, 0x65, 0x2e};
    std::string expect(reinterpret_cast<const char *>(want), sizeof(want));
    expect += "<F2B_END_COMMAND>";
    char buf[256];
    size_t n = pol_f2b_command(buf, sizeof(buf), "postfix", 7, "1.2.3.4", 7);
    CHECK(std::string(buf, n) == expect);
    CHECK(pol_f2b_command(buf, expect.size(), "postfix", 7, "1.2.3.4", 7) == expect.size());
    CHECK(pol_f2b_command(buf, expect.size() - 1, "postfix", 7, "1.2.3.4", 7) == 0);
    std::string ip6 = "2001:db8::1";
    n = pol_f2b_command(buf, sizeof(buf), "j", 1, ip6.data(), ip6.size());
    CHECK(std::string(buf + 14, 2) == std::string("\x01j", 2));
    CHECK(static_cast<unsigned char>(buf[28]) == ip6.size());
    CHECK(std::string(buf + 29, ip6.size()) == ip6);
}
