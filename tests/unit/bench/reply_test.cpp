// Tests for bench/common/reply.c: complete replies in fragments of 1, 2, 5, 10 and 100 bytes,
// several actions, CRLF, pipelined replies, the reply size limit at N and N+1, bad input.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

extern "C" {
#include "reply.h"
}

namespace
{

struct parsed {
    bench_reply_status status;
    size_t consumed;
    std::vector<std::string> actions;
    uint32_t action_count;
    uint32_t attr_count;
};

// Presents input growing by frag bytes at a time, as a socket would deliver it.
parsed parse_fragmented(const std::string &input, size_t frag, uint32_t bytes_max = 0)
{
    bench_reply_parser p;
    bench_reply_parser_init(&p, bytes_max);
    parsed out{BENCH_REPLY_NEED_MORE, 0, {}, 0, 0};
    for (size_t len = 0; len < input.size();) {
        len = std::min(input.size(), len + frag);
        // A fresh copy each time: the buffer may move between calls.
        std::string buf = input.substr(0, len);
        out.status = bench_reply_parse(&p, buf.data(), buf.size(), &out.consumed);
        if (out.status != BENCH_REPLY_NEED_MORE) {
            for (uint32_t i = 0; i < p.reply.action_count && i < BENCH_REPLY_ACTIONS_MAX; i++)
                out.actions.push_back(buf.substr(p.reply.action_off[i], p.reply.action_len[i]));
            out.action_count = p.reply.action_count;
            out.attr_count = p.reply.attr_count;
            break;
        }
    }
    return out;
}

} // namespace

TEST_CASE("reply: one action, every fragment size", "[reply]")
{
    size_t frag = GENERATE(1, 2, 5, 10, 100);
    INFO("fragment " << frag);
    parsed r = parse_fragmented("action=DUNNO\n\n", frag);
    CHECK(r.status == BENCH_REPLY_DONE);
    CHECK(r.consumed == 14);
    REQUIRE(r.actions.size() == 1);
    CHECK(r.actions[0] == "DUNNO");
}

TEST_CASE("reply: actions keep their text, order and '=' signs", "[reply]")
{
    size_t frag = GENERATE(1, 2, 5, 10, 100);
    parsed r = parse_fragmented(
        "action=PREPEND X-MtScore: YES score=10\r\nfoo=bar\naction=reject go away\r\n\r\n", frag);
    CHECK(r.status == BENCH_REPLY_DONE);
    REQUIRE(r.actions.size() == 2);
    CHECK(r.actions[0] == "PREPEND X-MtScore: YES score=10");
    CHECK(r.actions[1] == "reject go away");
    CHECK(r.attr_count == 3);
}

TEST_CASE("reply: no action is complete with action_count 0", "[reply]")
{
    parsed r = parse_fragmented("foo=bar\n\n", 3);
    CHECK(r.status == BENCH_REPLY_DONE);
    CHECK(r.action_count == 0);
    parsed empty = parse_fragmented("\n", 1);
    CHECK(empty.status == BENCH_REPLY_DONE);
    CHECK(empty.consumed == 1);
    CHECK(empty.attr_count == 0);
}

TEST_CASE("reply: more actions than kept are counted", "[reply]")
{
    std::string in;
    for (unsigned i = 0; i < BENCH_REPLY_ACTIONS_MAX + 3; i++)
        in += "action=a" + std::to_string(i) + "\n";
    in += "\n";
    parsed r = parse_fragmented(in, 100);
    CHECK(r.status == BENCH_REPLY_DONE);
    CHECK(r.action_count == BENCH_REPLY_ACTIONS_MAX + 3);
    CHECK(r.actions.size() == BENCH_REPLY_ACTIONS_MAX);
    CHECK(r.actions.back() == "a" + std::to_string(BENCH_REPLY_ACTIONS_MAX - 1));
}

TEST_CASE("reply: pipelined replies are taken one at a time", "[reply]")
{
    std::string in = "action=one\n\naction=two\n\n";
    bench_reply_parser p;
    bench_reply_parser_init(&p, 0);
    size_t consumed = 0;
    REQUIRE(bench_reply_parse(&p, in.data(), in.size(), &consumed) == BENCH_REPLY_DONE);
    CHECK(consumed == 12);
    CHECK(in.substr(p.reply.action_off[0], p.reply.action_len[0]) == "one");
    bench_reply_parser_reset(&p);
    std::string rest = in.substr(consumed);
    REQUIRE(bench_reply_parse(&p, rest.data(), rest.size(), &consumed) == BENCH_REPLY_DONE);
    CHECK(rest.substr(p.reply.action_off[0], p.reply.action_len[0]) == "two");
}

TEST_CASE("reply: a line without '=' is an error, and stays one", "[reply]")
{
    size_t frag = GENERATE(1, 2, 5, 10, 100);
    parsed r = parse_fragmented("action=dunno\nbogus\n\n", frag);
    CHECK(r.status == BENCH_REPLY_ERR_NO_EQUALS);
    CHECK(r.consumed == 0);

    bench_reply_parser p;
    bench_reply_parser_init(&p, 0);
    std::string in = "bogus\naction=x\n\n";
    size_t consumed = 0;
    CHECK(bench_reply_parse(&p, in.data(), in.size(), &consumed) == BENCH_REPLY_ERR_NO_EQUALS);
    CHECK(p.err_off == 0);
    CHECK(bench_reply_parse(&p, in.data(), in.size(), &consumed) == BENCH_REPLY_ERR_NO_EQUALS);
    bench_reply_parser_reset(&p);
    std::string good = "action=x\n\n";
    CHECK(bench_reply_parse(&p, good.data(), good.size(), &consumed) == BENCH_REPLY_DONE);
}

TEST_CASE("reply: the size limit at N and N+1", "[reply]")
{
    std::string in = "action=" + std::string(50, 'x') + "\n\n"; // 59 bytes
    REQUIRE(in.size() == 59);
    size_t frag = GENERATE(1, 7, 100);
    CHECK(parse_fragmented(in, frag, 59).status == BENCH_REPLY_DONE);
    CHECK(parse_fragmented(in, frag, 58).status == BENCH_REPLY_ERR_TOO_BIG);
    // An endless line with no newline at all also hits the limit.
    CHECK(parse_fragmented(std::string(200, 'a'), frag, 64).status == BENCH_REPLY_ERR_TOO_BIG);
}

TEST_CASE("reply: status texts", "[reply]")
{
    CHECK(std::string(bench_reply_status_text(BENCH_REPLY_ERR_NO_EQUALS)) ==
          "reply line without '='");
    CHECK(std::string(bench_reply_status_text(BENCH_REPLY_ERR_TOO_BIG)) == "reply too long");
}

TEST_CASE("reply: random input gives the same outcome in any fragmentation", "[reply]")
{
    // Inputs built from the bytes that matter ('=', '\n', '\r', letters), seeded; the
    // one-shot parse is the reference. A failure prints the seed and the input.
    uint32_t seed = GENERATE(1u, 2u, 3u, 99u);
    std::mt19937 rng(seed);
    const char alphabet[] = {'=', '\n', '\r', 'a', 'c', 't', 'i', 'o', 'n', ' ', '\0', '\xff'};
    for (int round = 0; round < 2000; round++) {
        std::string in;
        size_t len = std::uniform_int_distribution<size_t>(0, 80)(rng);
        for (size_t i = 0; i < len; i++)
            in += alphabet[std::uniform_int_distribution<size_t>(0, sizeof(alphabet) - 1)(rng)];
        if (round % 3 == 0)
            in = "action=" + in; // more replies that get somewhere
        uint32_t bytes_max = std::uniform_int_distribution<uint32_t>(1, 100)(rng);
        parsed whole = parse_fragmented(in, in.size() ? in.size() : 1, bytes_max);
        for (size_t frag : {1, 2, 5, 10}) {
            parsed part = parse_fragmented(in, frag, bytes_max);
            INFO("seed " << seed << " round " << round << " frag " << frag << " input "
                         << Catch::Detail::stringify(in));
            REQUIRE(part.status == whole.status);
            REQUIRE(part.consumed == whole.consumed);
            REQUIRE(part.actions == whole.actions);
            if (whole.status == BENCH_REPLY_DONE)
                REQUIRE(whole.consumed <= bytes_max);
        }
    }
}
