// proto_test.cpp: policy/proto.c, the policy delegation protocol parser and reply encoder.
//
// Every input goes through feed(), which plays the engine: it presents the unconsumed bytes
// again from the request's first byte with each new fragment appended (sizes 1, 2, 5, 10,
// 100 and all at once), copies them flush against a guard page on every call (so the buffer
// also moves between calls), drops consumed bytes after each request and stops at the first
// error. All fragmentations must give the same outcomes, and the attribute array must stay
// untouched by calls that do not return a request.
#define CATCH_CONFIG_ENABLE_BENCHMARKING
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "parse_testutil.h"

extern "C" {
#include "proto.h"
}

#ifndef PARSE_TEST_DATA_DIR
#error "PARSE_TEST_DATA_DIR must be defined by the build"
#endif

namespace
{

using Attrs = std::vector<std::pair<std::string, std::string>>;

struct Outcome {
    pol_proto_status status;
    Attrs attrs;      // REQUEST only
    size_t consumed;  // REQUEST only
    uint32_t err_off; // errors only, relative to the request's first byte
    bool operator==(const Outcome &o) const
    {
        return status == o.status && attrs == o.attrs && consumed == o.consumed &&
               err_off == o.err_off;
    }
};

std::ostream &operator<<(std::ostream &os, const Outcome &o)
{
    os << "{" << pol_proto_status_text(o.status) << " consumed=" << o.consumed
       << " err_off=" << o.err_off << " attrs=[";
    for (auto &a : o.attrs) {
        os << "'" << a.first << "'='" << a.second << "' ";
    }
    return os << "]}";
}

Outcome request(Attrs attrs, size_t consumed)
{
    return Outcome{POL_PROTO_REQUEST, std::move(attrs), consumed, 0};
}
Outcome error(pol_proto_status s, uint32_t off)
{
    return Outcome{s, {}, 0, off};
}

const pol_proto_attr kPoison = {0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0xdeadbeef};

// Feeds input in fragments of frag bytes (0: all at once). Returns the requests and the
// error, if any, in order. A trailing incomplete request adds nothing.
std::vector<Outcome> feed(const std::string &input, size_t frag, const pol_proto_limits *lim)
{
    pol_proto_parser p;
    pol_proto_parser_init(&p, lim);
    uint32_t cap = lim != nullptr ? lim->attrs_max : POL_PROTO_ATTRS_DEFAULT;
    std::vector<pol_proto_attr> attrs(cap + 1, kPoison);
    // Inputs past 8 KiB are not copied again on each call (that would be quadratic); the whole
    // input then sits flush against the guard once, which still catches overruns at its end.
    bool copy_each_call = input.size() <= 8192;
    GuardBuf guard(input.size() + 1);
    const char *whole = guard.place(input);
    std::vector<Outcome> out;
    size_t start = 0; // first byte of the current request
    size_t avail = 0; // bytes delivered so far
    const size_t step = frag == 0 ? input.size() : frag;
    while (avail < input.size()) {
        avail = std::min(input.size(), avail + step);
        for (;;) {
            size_t len = avail - start;
            const char *buf =
                copy_each_call ? guard.place(input.data() + start, len) : whole + start;
            uint32_t count = 0;
            size_t consumed = 0;
            pol_proto_status s = pol_proto_parse(&p, buf, len, attrs.data(), &count, &consumed);
            if (s == POL_PROTO_NEED_MORE) {
                bool untouched = true;
                for (auto &a : attrs) {
                    untouched = untouched && memcmp(&a, &kPoison, sizeof a) == 0;
                }
                REQUIRE(untouched);
                break;
            }
            if (s != POL_PROTO_REQUEST) {
                out.push_back(error(s, p.err_off));
                return out;
            }
            REQUIRE(consumed <= len);
            REQUIRE(count <= cap);
            REQUIRE(memcmp(&attrs[count], &kPoison, sizeof kPoison) == 0);
            Attrs got;
            for (uint32_t i = 0; i < count; i++) {
                const pol_proto_attr &a = attrs[i];
                REQUIRE(a.name_off + a.name_len < consumed);
                REQUIRE(a.value_off + a.value_len < consumed);
                got.emplace_back(std::string(buf + a.name_off, a.name_len),
                                 std::string(buf + a.value_off, a.value_len));
            }
            out.push_back(request(std::move(got), consumed));
            std::fill(attrs.begin(), attrs.end(), kPoison);
            REQUIRE(p.scanned == 0);
            REQUIRE(p.count == 0);
            start += consumed;
            if (start == avail) {
                break;
            }
        }
    }
    return out;
}

// Checks that every fragmentation gives `expected`.
void check(const std::string &input, const std::vector<Outcome> &expected,
           const pol_proto_limits *lim = nullptr)
{
    for (size_t frag : kFragmentSizes) {
        INFO("fragment size " << frag);
        CHECK(feed(input, frag, lim) == expected);
    }
}

pol_proto_limits limits(uint32_t request_bytes, uint32_t line_bytes, uint32_t attrs)
{
    pol_proto_limits l;
    l.request_bytes_max = request_bytes;
    l.line_bytes_max = line_bytes;
    l.attrs_max = attrs;
    return l;
}

std::string postfix_request()
{
    return read_file(std::string(PARSE_TEST_DATA_DIR) + "/postfix-3.7-rcpt.txt");
}

} // namespace

TEST_CASE("defaults are the ones in the header", "[proto]")
{
    pol_proto_limits l;
    pol_proto_limits_default(&l);
    CHECK(l.request_bytes_max == 65536u);
    CHECK(l.line_bytes_max == 16384u);
    CHECK(l.attrs_max == 256u);
    pol_proto_parser p;
    pol_proto_parser_init(&p, nullptr);
    CHECK(p.limits.request_bytes_max == l.request_bytes_max);
    CHECK(p.scanned == 0);
    CHECK(p.count == 0);
}

TEST_CASE("a real Postfix 3.7 request", "[proto]")
{
    std::string in = postfix_request();
    REQUIRE(in.size() == 577);
    auto got = feed(in, 0, nullptr);
    REQUIRE(got.size() == 1);
    REQUIRE(got[0].status == POL_PROTO_REQUEST);
    CHECK(got[0].consumed == in.size());
    REQUIRE(got[0].attrs.size() == 29);
    CHECK(got[0].attrs[0] ==
          std::make_pair(std::string("request"), std::string("smtpd_access_policy")));
    CHECK(got[0].attrs[13] == std::make_pair(std::string("queue_id"), std::string("")));
    CHECK(got[0].attrs[14] ==
          std::make_pair(std::string("instance"), std::string("5724.6b04e877.80ffc.0")));
    CHECK(got[0].attrs[28] ==
          std::make_pair(std::string("policy_context"), std::string("tc-test")));
    check(in, got);
    // Three pipelined copies, also with CRLF line ends.
    check(in + in + in, {got[0], got[0], got[0]});
    std::string crlf;
    for (char c : in) {
        crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
    }
    Outcome o = got[0];
    o.consumed = crlf.size();
    check(crlf + crlf, {o, o});
}

TEST_CASE("empty requests", "[proto]")
{
    check("\n", {request({}, 1)});
    check("\r\n", {request({}, 2)});
    check("\n\n\r\n", {request({}, 1), request({}, 1), request({}, 2)});
    check("", {});
}

TEST_CASE("line splitting and CR handling", "[proto]")
{
    check("a=b\n\n", {request({{"a", "b"}}, 5)});
    check("a=b=c\n\n", {request({{"a", "b=c"}}, 7)});
    check("=x\n=\n\n", {request({{"", "x"}, {"", ""}}, 6)});
    check("name=\n\n", {request({{"name", ""}}, 7)});
    check("a=b\r\n\r\n", {request({{"a", "b"}}, 7)});
    // Only a CR right before the LF is dropped.
    check("a=b\rc\n\n", {request({{"a", "b\rc"}}, 7)});
    check("a=b\r\r\n\n", {request({{"a", "b\r"}}, 7)});
    check("\ra=b\n\n", {request({{"\ra", "b"}}, 6)});
    // Values are opaque bytes, spaces and NULs included; names too.
    check(std::string(" a = b \0c\xff\n\n", 12),
          {request({{" a ", std::string(" b \0c\xff", 6)}}, 12)});
    // Duplicates stay, in wire order (the later-wins rule is the request's, not the parser's).
    check("a=1\nb=2\na=3\n\n", {request({{"a", "1"}, {"b", "2"}, {"a", "3"}}, 13)});
    // "\r\r\n" is the line "\r": not empty, no '='.
    check("\r\r\n\n", {error(POL_PROTO_ERR_NO_EQUALS, 0)});
}

TEST_CASE("a line without '=' is an error at its offset", "[proto]")
{
    check("abc\n\n", {error(POL_PROTO_ERR_NO_EQUALS, 0)});
    check("a=1\nabc\n\n", {error(POL_PROTO_ERR_NO_EQUALS, 4)});
    check("a=1\nabc\r\n", {error(POL_PROTO_ERR_NO_EQUALS, 4)});
    // An '=' as the last byte before the dropped CR still splits the line.
    check("abc=\r\n\n", {request({{"abc", ""}}, 7)});
    // The error is in the second request; the first is still returned.
    check("a=1\n\nbad\n\n", {request({{"a", "1"}}, 5), error(POL_PROTO_ERR_NO_EQUALS, 0)});
    // No error before the line is complete: "abc" may still get its '='.
    check("a=1\nabc", {});
}

// One parser called directly, for the tests that look at its state between calls.
struct Direct {
    pol_proto_parser p;
    std::vector<pol_proto_attr> attrs = std::vector<pol_proto_attr>(POL_PROTO_ATTRS_DEFAULT);
    uint32_t count = 0;
    size_t consumed = 0;
    Direct()
    {
        pol_proto_parser_init(&p, nullptr);
    }
    pol_proto_status parse(const std::string &in, size_t len)
    {
        return pol_proto_parse(&p, in.data(), len, attrs.data(), &count, &consumed);
    }
};

TEST_CASE("presenting the same bytes after an error gives the same error", "[proto]")
{
    Direct d;
    const std::string in = "a=1\nb\n\n";
    for (int i = 0; i < 2; i++) {
        CHECK(d.parse(in, in.size()) == POL_PROTO_ERR_NO_EQUALS);
        CHECK(d.p.err_off == 4);
    }
}

TEST_CASE("the scan position advances line by line", "[proto]")
{
    Direct d;
    const std::string in = "a=1\nbb=2\nc";
    CHECK(d.parse(in, 2) == POL_PROTO_NEED_MORE);
    CHECK(d.p.scanned == 0);
    CHECK(d.parse(in, in.size()) == POL_PROTO_NEED_MORE);
    CHECK(d.p.scanned == 9);
    CHECK(d.p.count == 2);
    pol_proto_parser_reset(&d.p);
    CHECK(d.p.scanned == 0);
    CHECK(d.p.count == 0);
}

TEST_CASE("line_bytes_max at N and N+1", "[proto]")
{
    const uint32_t n = 40;
    pol_proto_limits l = limits(1000, n, 10);
    std::string at_n = "a=" + std::string(n - 2, 'x');
    std::string over = at_n + "y";
    check(at_n + "\n\n", {request({{"a", at_n.substr(2)}}, n + 2)}, &l);
    // The CR before the LF counts towards the line.
    check(at_n + "\r\n\n", {error(POL_PROTO_ERR_LINE_LONG, 0)}, &l);
    check(over + "\n\n", {error(POL_PROTO_ERR_LINE_LONG, 0)}, &l);
    // Detected without the LF, as soon as N+1 bytes of the line are there.
    check("b=1\n" + at_n, {}, &l);
    check("b=1\n" + over, {error(POL_PROTO_ERR_LINE_LONG, 4)}, &l);
    // Also for a line without '=' (the length is checked first).
    check(std::string(n + 1, 'z'), {error(POL_PROTO_ERR_LINE_LONG, 0)}, &l);

    // The default, with the default parser.
    std::string def = "a=" + std::string(POL_PROTO_LINE_BYTES_DEFAULT - 2, 'x');
    check(def + "\n\n", {request({{"a", def.substr(2)}}, def.size() + 2)});
    check(def + "x\n\n", {error(POL_PROTO_ERR_LINE_LONG, 0)});
}

TEST_CASE("attrs_max at N and N+1", "[proto]")
{
    const uint32_t n = 5;
    pol_proto_limits l = limits(1000, 100, n);
    std::string in;
    Attrs want;
    for (uint32_t i = 0; i < n; i++) {
        in += "k" + std::to_string(i) + "=v\n";
        want.emplace_back("k" + std::to_string(i), "v");
    }
    check(in + "\n", {request(want, in.size() + 1)}, &l);
    check(in + "k=v\n\n", {error(POL_PROTO_ERR_ATTRS, (uint32_t)in.size())}, &l);
    // Not before the extra line is complete.
    check(in + "k=v", {}, &l);

    // The default, past the parser's 64-entry single-pass array (and exactly at it).
    for (uint32_t count : {63u, 64u, 65u, POL_PROTO_ATTRS_DEFAULT}) {
        std::string many;
        Attrs many_want;
        for (uint32_t i = 0; i < count; i++) {
            many += "n" + std::to_string(i) + "=" + std::to_string(i) + "\n";
            many_want.emplace_back("n" + std::to_string(i), std::to_string(i));
        }
        INFO("count " << count);
        check(many + "\n", {request(many_want, many.size() + 1)});
        if (count == POL_PROTO_ATTRS_DEFAULT) {
            check(many + "x=1\n\n", {error(POL_PROTO_ERR_ATTRS, (uint32_t)many.size())});
        }
    }
}

TEST_CASE("request_bytes_max at N and N+1", "[proto]")
{
    const uint32_t n = 64;
    pol_proto_limits l = limits(n, 1000, 100);
    // 10 lines of 6 bytes ("kk=vv\n") = 60, plus "x=\n" (3) and the empty line (1) = 64.
    std::string body;
    Attrs want;
    for (int i = 0; i < 10; i++) {
        body += "k" + std::to_string(i) + "=vv\n";
        want.emplace_back("k" + std::to_string(i), "vv");
    }
    want.emplace_back("x", "");
    std::string at_n = body + "x=\n\n";
    REQUIRE(at_n.size() == n);
    check(at_n, {request(want, n)}, &l);
    // N+1: refused once N+1 bytes are presented, LF or not.
    std::string over = body + "xy=\n\n";
    // "xy=" still fits and is split; the empty line's LF is byte N+1.
    check(over, {error(POL_PROTO_ERR_TOO_BIG, n)}, &l);
    check(body + "xyzwq", {error(POL_PROTO_ERR_TOO_BIG, 60)}, &l);
    check(body + "xyzw", {}, &l);
    // A pipelined request after a request of exactly N bytes is not counted against it.
    check(at_n + at_n, {request(want, n), request(want, n)}, &l);
    // A CRLF empty line whose LF falls at N+1.
    check(body + "x=\n\r\n", {error(POL_PROTO_ERR_TOO_BIG, 63)}, &l);

    // The default.
    std::string big;
    while (big.size() + 1000 < POL_PROTO_REQUEST_BYTES_DEFAULT) {
        big += "a=" + std::string(997, 'x') + "\n";
    }
    size_t pad = POL_PROTO_REQUEST_BYTES_DEFAULT - big.size() - 4;
    std::string last = "b=" + std::string(pad, 'y') + "\n";
    REQUIRE(big.size() + last.size() + 1 == POL_PROTO_REQUEST_BYTES_DEFAULT);
    auto ok = feed(big + last + "\n", 0, nullptr);
    REQUIRE(ok.size() == 1);
    CHECK(ok[0].status == POL_PROTO_REQUEST);
    CHECK(ok[0].consumed == POL_PROTO_REQUEST_BYTES_DEFAULT);
    check(big + last + "\n", ok);
    check(big + "b=" + std::string(pad + 1, 'y') + "\n\n",
          {error(POL_PROTO_ERR_TOO_BIG, POL_PROTO_REQUEST_BYTES_DEFAULT)});
}

TEST_CASE("status texts", "[proto]")
{
    for (pol_proto_status s :
         {POL_PROTO_NEED_MORE, POL_PROTO_REQUEST, POL_PROTO_ERR_NO_EQUALS, POL_PROTO_ERR_LINE_LONG,
          POL_PROTO_ERR_ATTRS, POL_PROTO_ERR_TOO_BIG}) {
        CHECK(strlen(pol_proto_status_text(s)) > 5);
    }
    CHECK(std::string(pol_proto_status_text(POL_PROTO_ERR_NO_EQUALS)) ==
          "error parsing request: line without '='");
}

TEST_CASE("reply encoding", "[proto]")
{
    char out[64];
    SECTION("no action is dunno")
    {
        size_t n = pol_proto_encode_reply(out, sizeof out, nullptr, nullptr, 0);
        CHECK(std::string(out, n) == "action=dunno\n\n");
        CHECK(pol_proto_encode_reply(out, 14, nullptr, nullptr, 0) == 14);
        CHECK(pol_proto_encode_reply(out, 13, nullptr, nullptr, 0) == 0);
    }
    SECTION("one and several actions, with and without lengths")
    {
        const char *acts[] = {"reject no thanks", "PREPEND X-Score: 5"};
        size_t lens[] = {6, 18};
        size_t n = pol_proto_encode_reply(out, sizeof out, acts, nullptr, 1);
        CHECK(std::string(out, n) == "action=reject no thanks\n\n");
        n = pol_proto_encode_reply(out, sizeof out, acts, lens, 2);
        const std::string want = "action=reject\naction=PREPEND X-Score: 5\n\n";
        CHECK(std::string(out, n) == want);
        // Every buffer size below the exact one is refused, the exact one works.
        for (size_t len = 0; len < want.size(); len++) {
            CHECK(pol_proto_encode_reply(out, len, acts, lens, 2) == 0);
        }
        CHECK(pol_proto_encode_reply(out, want.size(), acts, lens, 2) == want.size());
    }
    SECTION("an empty action is kept; an LF inside an action becomes a space")
    {
        const char *acts[] = {"", "a\nb\n\nc\r"};
        size_t n = pol_proto_encode_reply(out, sizeof out, acts, nullptr, 2);
        CHECK(std::string(out, n) == "action=\naction=a b  c\r\n\n");
    }
}

TEST_CASE("parse a 29-attribute Postfix request", "[proto][!benchmark]")
{
    const std::string in = postfix_request();
    std::string pipelined;
    for (int i = 0; i < 16; i++) {
        pipelined += in;
    }
    pol_proto_parser p;
    pol_proto_parser_init(&p, nullptr);
    std::vector<pol_proto_attr> attrs(POL_PROTO_ATTRS_DEFAULT);
    uint32_t count = 0;
    size_t consumed = 0;

    BENCHMARK("one request, one call")
    {
        return pol_proto_parse(&p, in.data(), in.size(), attrs.data(), &count, &consumed);
    };
    BENCHMARK("16 pipelined requests")
    {
        size_t off = 0;
        while (off < pipelined.size()) {
            pol_proto_parse(&p, pipelined.data() + off, pipelined.size() - off, attrs.data(),
                            &count, &consumed);
            off += consumed;
        }
        return off;
    };
    BENCHMARK("one request in 4 segments of ~144 bytes")
    {
        size_t seg = in.size() / 4 + 1;
        pol_proto_status s = POL_PROTO_NEED_MORE;
        for (size_t len = seg; s == POL_PROTO_NEED_MORE; len += seg) {
            s = pol_proto_parse(&p, in.data(), std::min(len, in.size()), attrs.data(), &count,
                                &consumed);
        }
        return s;
    };
}
