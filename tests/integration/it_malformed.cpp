// it_malformed.cpp: bad and odd input to ringpolicyd (spec 6.1, 7.2, 16 #12): a line without
// '=' (no reply, close, one log line), EOF and resets in the middle of a request, CRLF,
// pipelining, `=value`, values with '=', requests delivered one byte at a time, a request
// without a `request` attribute (answered, connection kept, empty type= in the result line),
// and random garbage from many connections. Other connections never notice.
#include "itcommon.h"

#include <sys/socket.h>

#include <random>

using namespace itest;

namespace
{

const std::string kReq = "request=smtpd_access_policy";

std::string chain()
{
    return match_plugin("eq", "sender", "a=b") + match_plugin("empty", "r:", "v") +
           match_plugin("num", "recipient", "v1") + match_plugin("num2", "recipient", "v2");
}

/* Closes with an RST instead of a FIN. */
void reset_close(Conn &c)
{
    struct linger lg = {1, 0};
    setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    c.close();
}

} // namespace

TEST_CASE("malformed input closes only the offending connection", "[malformed]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, chain(), "log_level = 3\n"), Endpoint::tcp(port));
    const std::string tag = "[" + std::to_string(port) + "]: error while reading request";

    Conn bystander(Endpoint::tcp(port));
    REQUIRE(bystander.ok());
    CHECK(bystander.request({kReq, "recipient=v1"}).actions ==
          std::vector<std::string>{"reject recipient=v1"});
    REQUIRE(bystander.send(kReq + "\nrecip")); /* half a request, held across the cases */

    SECTION("a line without '='")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(kReq + "\ngarbage\n\n" + kReq + "\nrecipient=v1\n\n"));
        CHECK(c.wait_closed(3000));
        CHECK(c.pending().empty());
        CHECK(d->wait_log(tag, 2000));
        sleep_ms(200);
        CHECK(log_lines_with(*d, tag) == 1);
    }
    SECTION("EOF in the middle of a request")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(kReq + "\nrecipient=v1\n"));
        c.shutdown_write();
        CHECK(c.wait_closed(3000));
        CHECK(c.pending().empty());
    }
    SECTION("reset in the middle of a request and in the middle of a line")
    {
        for (int i = 0; i < 20; i++) {
            Conn c(Endpoint::tcp(port));
            REQUIRE(c.ok());
            c.send(i % 2 ? kReq + "\nrecipient=v1\n" : kReq + "\nrecip");
            reset_close(c);
        }
    }
    SECTION("reset right after sending a complete request")
    {
        for (int i = 0; i < 20; i++) {
            Conn c(Endpoint::tcp(port));
            REQUIRE(c.ok());
            c.send(encode_request({kReq, "recipient=v1"}));
            reset_close(c);
        }
    }
    SECTION("CRLF, `=value`, values with '=', pipelining")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(kReq + "\r\nsender=a=b\r\n\r\n"));
        CHECK(c.read_reply().actions == std::vector<std::string>{"reject sender=a=b"});
        CHECK(c.request({kReq, "=v"}).actions == std::vector<std::string>{"reject r:=v"});
        REQUIRE(c.send(encode_request({kReq, "recipient=v2"}) + encode_request({kReq, "x=y"}) +
                       encode_request({kReq, "recipient=v1"})));
        CHECK(c.read_reply().actions == std::vector<std::string>{"reject recipient=v2"});
        CHECK(c.read_reply().actions == std::vector<std::string>{"dunno"});
        CHECK(c.read_reply().actions == std::vector<std::string>{"reject recipient=v1"});
    }
    SECTION("one byte per write")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        std::string req = encode_request(postfix_request({{"recipient", "v2"}}));
        for (char ch : req) {
            REQUIRE(c.send(std::string(1, ch)));
            sleep_ms(1);
        }
        CHECK(c.read_reply().actions == std::vector<std::string>{"reject recipient=v2"});
    }
    SECTION("a request without `request` attribute is answered and the connection kept (16 #12)")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        CHECK(c.request({"recipient=v1"}).actions ==
              std::vector<std::string>{"reject recipient=v1"});
        CHECK(c.request({}).actions == std::vector<std::string>{"dunno"});
        CHECK(c.request({kReq, "recipient=v2"}).actions ==
              std::vector<std::string>{"reject recipient=v2"});
        CHECK(d->wait_log("test: instance=, type=, t=", 2000));
    }
    SECTION("random garbage on many connections")
    {
        std::mt19937 rng(20240601u);
        INFO("seed 20240601");
        for (int i = 0; i < 200; i++) {
            Conn c(Endpoint::tcp(port));
            REQUIRE(c.ok());
            std::string junk;
            size_t n = rng() % 3000;
            for (size_t k = 0; k < n; k++) {
                /* mostly protocol-ish bytes, so some lines parse and some do not */
                static const char alphabet[] = "ab=\n\n\r\0xyz=request";
                junk += rng() % 4 ? alphabet[rng() % (sizeof alphabet - 1)]
                                  : static_cast<char>(rng() & 0xff);
            }
            c.send(junk);
            if (i % 3 == 0)
                reset_close(c);
            else
                c.shutdown_write();
        }
    }

    /* Whatever happened above, the bystander's request completes. */
    REQUIRE(bystander.send("ient=v1\n\n"));
    CHECK(bystander.read_reply().actions == std::vector<std::string>{"reject recipient=v1"});
    CHECK(d->alive());
    CHECK(ask(Endpoint::tcp(port), {kReq, "recipient=v2"}).actions ==
          std::vector<std::string>{"reject recipient=v2"});
}
