// it_limits.cpp: the protocol limits of ringpolicyd (spec 6.1; STYLE 4 "a limit on everything"):
// max_request_bytes (the whole request including its empty line), max_line_bytes (a line's bytes
// before its LF, a CR included) and max_attributes, each at N (answered) and N+1 (that connection
// closed without a reply, with one log line), configured and at their defaults (65536, 16384,
// 256). A parallel connection holding a half-sent request is never affected.
#include "itcommon.h"

#include <algorithm>

using namespace itest;

namespace
{

const std::string kReq = "request=smtpd_access_policy";

/* A request of exactly total bytes (including its empty line), made of `request=...`, a
 * recipient=v1 line (so the reply shows it was parsed), and filler lines of at most line_max
 * bytes before their LF. */
std::string request_of_size(size_t total, size_t line_max)
{
    std::string head = kReq + "\nrecipient=v1\n";
    std::string s = head;
    REQUIRE(total >= head.size() + 1 + 4);
    size_t left = total - head.size() - 1; /* bytes for filler lines, LFs included */
    const size_t min_line = 8;             /* "fNNN=x" and its LF, with room to spare */
    int i = 0;
    while (left > 0) {
        std::string name = "f" + std::to_string(i++) + "=";
        size_t take = std::min(left, line_max + 1); /* this line with its LF */
        if (left - take > 0 && left - take < min_line)
            take = left - min_line; /* leave room for a last well-formed line */
        REQUIRE(take >= name.size() + 1);
        s += name + std::string(take - 1 - name.size(), 'x') + "\n";
        left -= take;
    }
    s += "\n";
    REQUIRE(s.size() == total);
    return s;
}

/* A request whose longest line (sender=...) has exactly line_bytes bytes before its LF. */
std::string request_with_line(size_t line_bytes, bool crlf)
{
    std::string line = "sender=";
    size_t fill = line_bytes - line.size() - (crlf ? 1 : 0);
    line += std::string(fill, 's');
    if (crlf)
        line += "\r";
    REQUIRE(line.size() == line_bytes);
    return kReq + "\nrecipient=v1\n" + line + "\n\n";
}

/* A request of exactly n attribute lines. */
std::string request_with_attrs(size_t n)
{
    std::string s = kReq + "\nrecipient=v1\n";
    for (size_t i = 2; i < n; i++)
        s += "a" + std::to_string(i) + "=x\n";
    return s + "\n";
}

struct LimitProbe {
    Daemon &d;
    uint16_t port;

    /* Sends `bytes` on a new connection while another connection holds half a request; the
     * return value says whether it was answered (with the right action); a refusal must
     * close the connection and log exactly one line. */
    bool answered(const std::string &bytes)
    {
        Conn bystander(Endpoint::tcp(port));
        REQUIRE(bystander.ok());
        /* small enough for every limit tested here */
        std::string half = encode_request({kReq, "instance=bystander", "recipient=v1"});
        REQUIRE(bystander.send(half.substr(0, half.size() / 2)));

        std::string tag = "[" + std::to_string(port) + "]: error while reading request";
        size_t errors_before = log_lines_with(d, tag);
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        c.send(bytes); /* may fail part-way once the daemon closed */
        Reply r = c.read_reply(5000);
        bool ok = r.ok();
        if (ok) {
            CHECK(r.actions == std::vector<std::string>{"reject recipient=v1"});
        } else {
            INFO("refused: " << reply_status_name(r.status) << " raw: " << r.raw);
            CHECK(r.status == Reply::CLOSED);
            CHECK(r.raw.empty());
            sleep_ms(100);
            d.wait_log(tag, 2000);
            CHECK(log_lines_with(d, tag) == errors_before + 1);
        }
        /* The bystander finishes its request and is answered. */
        REQUIRE(bystander.send(half.substr(half.size() / 2)));
        CHECK(bystander.read_reply().actions == std::vector<std::string>{"reject recipient=v1"});
        return ok;
    }
};

} // namespace

TEST_CASE("configured limits at N and N+1", "[limits]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, match_plugin("m", "recipient", "v1"),
                                      "max_request_bytes = 1000\nmax_line_bytes = 200\n"
                                      "max_attributes = 10\n"),
                        Endpoint::tcp(port));
    LimitProbe p{*d, port};

    SECTION("max_request_bytes")
    {
        CHECK(p.answered(request_of_size(1000, 200)));
        CHECK_FALSE(p.answered(request_of_size(1001, 200)));
        CHECK_FALSE(p.answered(request_of_size(3000, 150) /* more than 10 attrs too */));
    }
    SECTION("max_line_bytes")
    {
        CHECK(p.answered(request_with_line(200, false)));
        CHECK(p.answered(request_with_line(200, true)));
        CHECK_FALSE(p.answered(request_with_line(201, false)));
        CHECK_FALSE(p.answered(request_with_line(201, true)));
        /* an oversized line is refused before its LF arrives */
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(kReq + "\nsender=" + std::string(400, 'x')));
        CHECK(c.wait_closed(3000));
    }
    SECTION("max_attributes")
    {
        CHECK(p.answered(request_with_attrs(10)));
        CHECK_FALSE(p.answered(request_with_attrs(11)));
    }
    CHECK(d->alive());
}

TEST_CASE("default limits at N and N+1", "[limits]")
{
    uint16_t port = free_tcp_port();
    auto d =
        start_ring(simple_config(port, match_plugin("m", "recipient", "v1")), Endpoint::tcp(port));
    LimitProbe p{*d, port};

    SECTION("request bytes 65536")
    {
        CHECK(p.answered(request_of_size(65536, 16000)));
        CHECK_FALSE(p.answered(request_of_size(65537, 16000)));
    }
    SECTION("line bytes 16384")
    {
        CHECK(p.answered(request_with_line(16384, false)));
        CHECK_FALSE(p.answered(request_with_line(16385, false)));
    }
    SECTION("attributes 256")
    {
        CHECK(p.answered(request_with_attrs(256)));
        CHECK_FALSE(p.answered(request_with_attrs(257)));
    }
    CHECK(d->alive());
}

TEST_CASE("max_connections: backpressure, never a crash", "[limits]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(
        simple_config(port, action_plugin("a", "reject test"), "shards = 1\nmax_connections = 8\n"),
        Endpoint::tcp(port));
    std::vector<Conn> held;
    for (int i = 0; i < 8; i++) {
        held.emplace_back(Endpoint::tcp(port));
        REQUIRE(held.back().ok());
        CHECK(held.back().request({kReq}).actions == std::vector<std::string>{"reject test"});
    }
    /* The ninth connects (the kernel's backlog accepts it) but is not served while eight are
       open; once one closes it is. */
    Conn extra(Endpoint::tcp(port));
    REQUIRE(extra.ok());
    REQUIRE(extra.send(encode_request({kReq})));
    Reply early = extra.read_reply(1000);
    CHECK(early.status == Reply::TIMEOUT);
    held.front().close();
    Reply late = extra.read_reply(5000);
    CHECK(late.actions == std::vector<std::string>{"reject test"});
    for (size_t i = 1; i < held.size(); i++)
        CHECK(held[i].request({kReq}).actions == std::vector<std::string>{"reject test"});
    CHECK(d->alive());
}
