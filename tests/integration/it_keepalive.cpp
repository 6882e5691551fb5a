// it_keepalive.cpp: connection lifecycle of ringpolicyd (spec 3, 7.1, 7.2, 16 #13): many
// requests on one connection, pipelining, keepalive_timeout (0 = forever, N seconds),
// max_keepalive, request_timeout (with the Sleep test plugin) and error_action.
//
// Times are checked with wide bounds: the point is which side of a timeout a connection ends
// on, not how fast the daemon is.
#include "itcommon.h"

#include <memory>

using namespace itest;

namespace
{

const std::string kReq = "request=smtpd_access_policy";

std::string expected_for(int i)
{
    int v = i % 9; /* v0..v7 match, v8 does not */
    return v < 8 ? "reject recipient=v" + std::to_string(v) : "dunno";
}

std::vector<std::string> numbered_request(int i)
{
    return postfix_request(
        {{"recipient", "v" + std::to_string(i % 9)}, {"instance", "inst" + std::to_string(i)}});
}

} // namespace

TEST_CASE("many requests on one connection, sequential and pipelined", "[keepalive]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, numbered_plugins("recipient", 8)), Endpoint::tcp(port));
    Conn c(Endpoint::tcp(port));
    REQUIRE(c.ok());
    int wrong = 0;
    for (int i = 0; i < 2000; i++) {
        Reply r = c.request(numbered_request(i));
        std::string got =
            r.ok() && r.actions.size() == 1 ? r.actions[0] : reply_status_name(r.status);
        if (got != expected_for(i) && wrong++ < 5)
            FAIL_CHECK("request #" << i << ": expected " << expected_for(i) << ", got " << got);
        if (!r.ok())
            FAIL("no reply to request #" << i << "; daemon log:\n" << d->log());
    }
    CHECK(wrong == 0);

    /* 300 requests in one write: answered in order. */
    std::string batch;
    for (int i = 0; i < 300; i++)
        batch += encode_request(numbered_request(i));
    REQUIRE(c.send(batch));
    wrong = 0;
    for (int i = 0; i < 300; i++) {
        Reply r = c.read_reply(5000);
        std::string got =
            r.ok() && r.actions.size() == 1 ? r.actions[0] : reply_status_name(r.status);
        if (got != expected_for(i) && wrong++ < 5)
            FAIL_CHECK("pipelined #" << i << ": expected " << expected_for(i) << ", got " << got);
        if (!r.ok())
            break; /* the connection is gone: the rest would only time out */
    }
    CHECK(wrong == 0);
    CHECK(c.pending().empty());
    CHECK(d->alive());
}

TEST_CASE("keepalive_timeout = 0 waits forever", "[keepalive]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject test"),
                                      "keepalive_timeout = 0\nlog_level = 3\n"),
                        Endpoint::tcp(port));
    Conn fresh(Endpoint::tcp(port)), used(Endpoint::tcp(port));
    REQUIRE(fresh.ok());
    REQUIRE(used.ok());
    CHECK(used.request({kReq}).actions == std::vector<std::string>{"reject test"});
    /* Nothing on either connection for a while: neither may be closed. */
    CHECK_FALSE(fresh.wait_closed(3500));
    CHECK_FALSE(used.wait_closed(10));
    CHECK(fresh.request({kReq}).actions == std::vector<std::string>{"reject test"});
    CHECK(used.request({kReq}).actions == std::vector<std::string>{"reject test"});
    CHECK_FALSE(contains(d->log(), "keepalive timeout"));
}

TEST_CASE("keepalive_timeout = 1 closes idle and dribbling connections", "[keepalive]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject test"),
                                      "keepalive_timeout = 1\nlog_level = 3\n"),
                        Endpoint::tcp(port));

    SECTION("an idle new connection")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        int64_t t0 = now_ms();
        CHECK(c.wait_closed(5000));
        int64_t waited = now_ms() - t0;
        CHECK(waited >= 700);
        CHECK(waited <= 4000);
        CHECK(c.pending().empty());
        CHECK(d->wait_log("[" + std::to_string(port) + "]: keepalive timeout: closing connection",
                          2000));
    }
    SECTION("idle after a reply")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        CHECK(c.request({kReq}).actions == std::vector<std::string>{"reject test"});
        int64_t t0 = now_ms();
        CHECK(c.wait_closed(5000));
        CHECK(now_ms() - t0 >= 700);
    }
    SECTION("the timer covers the whole request: a dribbled request is cut off")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(kReq + "\n"));
        int64_t t0 = now_ms();
        bool closed = false;
        for (int i = 0; i < 40 && !closed; i++) { /* one byte every 200 ms, for up to 8 s */
            c.send("x");
            closed = c.wait_closed(200);
        }
        CHECK(closed);
        CHECK(now_ms() - t0 <= 4500);
        CHECK(c.pending().empty());
    }
    SECTION("a connection with a request every 400 ms stays open")
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        for (int i = 0; i < 8; i++) {
            CHECK(c.request({kReq}).actions == std::vector<std::string>{"reject test"});
            CHECK_FALSE(c.wait_closed(400));
        }
    }
    CHECK(d->alive());
}

TEST_CASE("max_keepalive closes after N replies", "[keepalive]")
{
    uint16_t port = free_tcp_port();
    auto d =
        start_ring(simple_config(port, action_plugin("a", "reject test"), "max_keepalive = 3\n"),
                   Endpoint::tcp(port));
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        for (int i = 0; i < 3; i++)
            CHECK(c.request({kReq}).actions == std::vector<std::string>{"reject test"});
        CHECK(c.wait_closed(3000));
    }
    {
        Conn c(Endpoint::tcp(port));
        REQUIRE(c.ok());
        REQUIRE(c.send(encode_request({kReq}) + encode_request({kReq}) + encode_request({kReq}) +
                       encode_request({kReq}) + encode_request({kReq})));
        for (int i = 0; i < 3; i++)
            CHECK(c.read_reply().actions == std::vector<std::string>{"reject test"});
        CHECK(c.wait_closed(3000));
        CHECK(c.pending().empty());
    }
    /* A new connection starts counting again. */
    CHECK(ask(Endpoint::tcp(port), {kReq}).actions == std::vector<std::string>{"reject test"});
}

TEST_CASE("request_timeout: no reply, close; other connections are not delayed", "[keepalive]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t slow = free_tcp_port(), quick = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(slow) + ",127.0.0.1:" + std::to_string(quick) +
        "\"\nrequest_timeout = 1\nplugin_dir = \"" + itest_build_dir() + "\"\n" +
        vhost_block(std::to_string(slow), "slow",
                    "  <Plugin nap>\n    module = \"Sleep\"\n    ms = 3000\n"
                    "  </Plugin>\n" +
                        action_plugin("late", "reject too late")) +
        vhost_block(std::to_string(quick), "quick", action_plugin("now", "reject right now"));
    auto d = start_ring(config, Endpoint::tcp(slow));

    Conn c(Endpoint::tcp(slow));
    REQUIRE(c.ok());
    int64_t t0 = now_ms();
    REQUIRE(c.send(encode_request(postfix_request())));
    /* While that request sleeps, another connection is answered at once. */
    Reply q = ask(Endpoint::tcp(quick), postfix_request(), 800);
    CHECK(q.actions == std::vector<std::string>{"reject right now"});
    CHECK(now_ms() - t0 < 900);

    Reply r = c.read_reply(6000);
    int64_t waited = now_ms() - t0;
    INFO("slow request: " << reply_status_name(r.status) << " " << r.raw << " after " << waited
                          << " ms");
    CHECK(r.status == Reply::CLOSED);
    CHECK(r.raw.empty());
    CHECK(waited >= 800);
    CHECK(waited < 2900);
    CHECK(d->wait_log("[" + std::to_string(slow) + "]: request timed out", 2000));

    /* After the plugin's timer fired (the request is released then), all is still well. */
    sleep_ms(2500);
    CHECK(d->alive());
    CHECK(ask(Endpoint::tcp(quick), postfix_request()).actions ==
          std::vector<std::string>{"reject right now"});
}

TEST_CASE("error_action answers failed and timed-out requests (spec 16 #13)", "[keepalive]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    uint16_t slow = free_tcp_port(), broken = free_tcp_port();
    const std::string failing = "  <Plugin threshold>\n    module = \"ScoreAction\"\n"
                                "    threshold = 0\n    match = \"ge\"\n"
                                "    action = \"reject never\"\n  </Plugin>\n";
    auto config = [&](const std::string &error_action) {
        return "port = \"127.0.0.1:" + std::to_string(slow) +
               ",127.0.0.1:" + std::to_string(broken) + "\"\nrequest_timeout = 1\nplugin_dir = \"" +
               itest_build_dir() + "\"\n" + error_action +
               vhost_block(std::to_string(slow), "slow",
                           "  <Plugin nap>\n    module = \"Sleep\"\n    ms = 2500\n"
                           "  </Plugin>\n") +
               vhost_block(std::to_string(broken), "broken", failing);
    };

    /* The timed-out request stays with the Sleep plugin until its timer fires; the daemon must
     * not stop before (a shard stopping with a request still waiting keeps its pools to the
     * exit, which LeakSanitizer reports in the sanitizer build). */
    auto let_sleep_end = [](int64_t t0) {
        int64_t left = t0 + 3000 - now_ms();
        if (left > 0)
            sleep_ms(int(left));
    };

    SECTION("without error_action: closed without reply, as 2.05")
    {
        auto d = start_ring(config(""), Endpoint::tcp(slow));
        int64_t t0 = now_ms();
        CHECK(ask(Endpoint::tcp(slow), postfix_request(), 5000).status == Reply::CLOSED);
        CHECK(ask(Endpoint::tcp(broken), postfix_request(), 5000).status == Reply::CLOSED);
        CHECK(d->wait_log("error while processing request: plugin threshold failed", 2000));
        let_sleep_end(t0);
    }
    SECTION("with error_action")
    {
        auto d = start_ring(
            config("error_action = \"defer_if_permit service temporarily unavailable\"\n"),
            Endpoint::tcp(slow));
        int64_t t0 = now_ms();
        Reply r = ask(Endpoint::tcp(slow), postfix_request(), 5000);
        CHECK(r.actions ==
              std::vector<std::string>{"defer_if_permit service temporarily unavailable"});
        CHECK(now_ms() - t0 < 2400);
        CHECK(ask(Endpoint::tcp(broken), postfix_request(), 5000).actions ==
              std::vector<std::string>{"defer_if_permit service temporarily unavailable"});
        CHECK(d->wait_log("error while processing request: plugin threshold failed", 2000));
        CHECK(d->wait_log("request timed out", 2000));
        let_sleep_end(t0);
    }
}
