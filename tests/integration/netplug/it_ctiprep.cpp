// it_ctiprep.cpp: the CtIpRep plugin (spec 13.6) in a real ringpolicyd against a fake ctipd on
// loopback (fake_ctipd.h; there is no ctipd package): the request's bytes, permfail/tempfail/
// accept through Content-Length, chunked and close-delimited responses, the messages and their
// placeholders, scores and passive modes, failures (status 500, no action, unknown verdict,
// timeout; on_error = continue), the license key, the per-mail cache, connection reuse,
// start-up errors; and differentially against the Perl mtpolicyd 2.05's CtIpRep (LWP) on the
// same fake ctipd: same replies and the same request bodies.
#include "diffcheck.h"
#include "fake_ctipd.h"
#include "itcommon.h"
#include "netplug_common.h"

using namespace itest;

namespace
{

const std::string kRejectTail = " is rejected. Check at "
                                "http://www.commtouch.com/Site/Resources/Check_IP_Reputation.asp. "
                                "Reference code: ";
const std::string kDeferTail = " is deferred,repeatedly. Send again or check at "
                               "http://www.commtouch.com/Site/Resources/Check_IP_Reputation.asp. "
                               "Reference code: ";

std::string ct_plugin(const std::string &url, const std::string &extra = "")
{
    return "  <Plugin ctip>\n    module = \"CtIpRep\"\n    url = \"" + url + "\"\n" + extra +
           "  </Plugin>\n" + action_plugin("after", "dunno");
}

std::string passive_body(const std::string &url)
{
    return "  <Plugin ctip>\n    module = \"CtIpRep\"\n    url = \"" + url +
           "\"\n    permfail_mode = passive\n    tempfail_mode = passive\n"
           "    permfail_score = 5\n    tempfail_score = 0\n  </Plugin>\n"
           "  <Plugin sc>\n    module = \"ScoreAction\"\n    threshold = 5\n"
           "    action = \"reject score reached\"\n  </Plugin>\n" +
           action_plugin("after", "dunno");
}

std::string body_for(const std::string &ip, const std::string &key = "")
{
    return "x-ctch-request-type: classifyip\r\nx-ctch-pver: 1.0\r\n" +
           (key.empty() ? "" : "x-ctch-key: " + key + "\r\n") + "\r\nx-ctch-ip: " + ip + "\r\n";
}

} // namespace

TEST_CASE("verdicts, messages, the request's bytes, keep-alive", "[it_ctiprep]")
{
    FakeCtipd ct;
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, ct_plugin(ct.url()), "shards = 1\nlog_level = 4\n"),
                        Endpoint::tcp(port));
    CHECK(first(send_from(port, "192.0.2.1")) == "reject 550 delivery from 192.0.2.1" + kRejectTail +
                                                 "REF-1");
    CHECK(first(send_from(port, "192.0.2.2")) == "defer 450 delivery from 192.0.2.2" + kDeferTail +
                                                 "REF-2");
    CHECK(first(send_from(port, "192.0.2.9")) == "dunno");
    CHECK(ct.accepted() == 1); // one kept connection
    CHECK(first(send_from(port, "192.0.2.3")) == "dunno"); // HTTP/1.0, closed by ctipd
    CHECK(first(send_from(port, "192.0.2.7")) == "reject 550 delivery from 192.0.2.7" + kRejectTail);
    CHECK(ct.accepted() == 2);
    auto seen = ct.seen();
    REQUIRE(seen.size() == 5);
    CHECK(seen[0].body == body_for("192.0.2.1"));
    CHECK(contains(seen[0].head, "POST /ctipd/iprep HTTP/1.1\r\n"));
    CHECK(contains(seen[0].head, "\r\nHost: 127.0.0.1:" + std::to_string(ct.port()) + "\r\n"));
    CHECK(d->wait_log("CtIpRep: result=permfail, mode=reject", 2000));
    CHECK(d->wait_log("CtIpRep: sender IP is ok", 2000));
}

TEST_CASE("failures: status, no action, unknown verdict, timeout; on_error", "[it_ctiprep]")
{
    FakeCtipd ct;
    uint16_t port = free_tcp_port(), port2 = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(port2) +
        "\"\nlog_level = 4\n" +
        vhost_block(std::to_string(port), "strict", ct_plugin(ct.url(), "    timeout_ms = 300\n")) +
        vhost_block(std::to_string(port2), "lenient",
                    ct_plugin(ct.url(), "    timeout_ms = 300\n    on_error = continue\n"));
    auto d = start_ring(conf, Endpoint::tcp(port));
    const std::string closed = reply_status_name(Reply::CLOSED);
    for (std::string ip : {"192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.8"}) {
        INFO(ip);
        CHECK(first(send_from(port, ip)) == closed);
        CHECK(first(send_from(port2, ip)) == "dunno");
    }
    CHECK(first(send_from(port, "")) == "dunno"); // empty client_address is defined: accepted
    CHECK(first(send_from(port, "\x7f")) == closed); // none: "no client_address in request!"
    CHECK(d->wait_log("error while accessing Commtouch ctipd: 500 Internal Server Error", 2000));
    CHECK(d->wait_log("could not find action in response", 2000));
    CHECK(d->wait_log("unknown ctiprep action: weird", 2000));
    CHECK(d->wait_log("timed out", 2000));
    CHECK(d->wait_log("no client_address in request!", 2000));
    // ctipd down: a connect failure.
    uint16_t nothing = free_tcp_port();
    uint16_t port3 = free_tcp_port();
    auto d3 = start_ring(simple_config(port3, ct_plugin("http://127.0.0.1:" +
                                                        std::to_string(nothing) + "/x")),
                         Endpoint::tcp(port3));
    CHECK(first(send_from(port3, "192.0.2.1")) == closed);
    CHECK(d3->wait_log("error while accessing Commtouch ctipd: Connection refused", 2000));
}

TEST_CASE("key, templates, scores and passive modes, per-mail cache", "[it_ctiprep]")
{
    FakeCtipd ct;
    uint16_t port = free_tcp_port(), port2 = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(port2) +
        "\"\n<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n" +
        vhost_block(std::to_string(port), "keyed",
                    ct_plugin(ct.url(), "    key = \"K-123\"\n"
                                        "    reject_message = \"no %IP% %IP% (%REFID%)\"\n")) +
        vhost_block(std::to_string(port2), "passive", passive_body(ct.url()));
    auto d = start_ring(conf, Endpoint::tcp(port));
    CHECK(first(send_from(port, "192.0.2.1", "m1")) == "reject no 192.0.2.1 %IP% (REF-1)");
    REQUIRE(ct.count() == 1);
    CHECK(ct.seen()[0].body == body_for("192.0.2.1", "K-123"));
    CHECK(first(send_from(port, "192.0.2.1", "m1")) == "reject no 192.0.2.1 %IP% (REF-1)");
    CHECK(ct.count() == 1); // cached for the mail
    CHECK(first(send_from(port2, "192.0.2.1", "m2")) == "reject score reached");
    CHECK(first(send_from(port2, "192.0.2.2", "m3")) == "dunno"); // tempfail_score 0: no score
    CHECK(ct.count() == 3);
}

TEST_CASE("start-up errors: https, no host, bad timeout", "[it_ctiprep]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    struct Bad {
        std::string extra, message;
    } bad[] = {
        {"    url = \"https://127.0.0.1/x\"\n", "only http:// URLs are supported"},
        {"    url = \"http:///x\"\n", "no host"},
        {"    url = \"http://127.0.0.1:99999/x\"\n", "bad port"},
        {"    timeout_ms = 0\n", "timeout_ms must be"},
    };
    for (auto &b : bad) {
        Daemon dm(Impl::Ring, simple_config(port, "  <Plugin c>\n    module = \"CtIpRep\"\n" +
                                                      b.extra + "  </Plugin>\n"));
        RunResult rr = dm.run({"--check"});
        INFO(rr.out << rr.err);
        CHECK(rr.status != 0);
        CHECK(contains(rr.out + rr.err, b.message));
    }
}

TEST_CASE("Perl mtpolicyd 2.05 (LWP) and ringpolicyd against the same fake ctipd",
          "[it_ctiprep][diff]")
{
    FakeCtipd ct;
    std::vector<VhostSpec> vhosts = {
        {"ct", ct_plugin(ct.url()), ""},
        {"keyed", ct_plugin(ct.url(), "    key = \"K-9\"\n    reject_message = \"x %IP% %REFID%\"\n"
                                      "    tempfail_mode = reject\n"),
         ""},
        {"passive", passive_body(ct.url()), ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases = {
        {"ct", rq({{"client_address", "192.0.2.1"}}),
         "reject 550 delivery from 192.0.2.1" + kRejectTail + "REF-1", "", ""},
        {"ct", rq({{"client_address", "192.0.2.2"}}),
         "defer 450 delivery from 192.0.2.2" + kDeferTail + "REF-2", "", ""},
        {"ct", rq({{"client_address", "192.0.2.3"}}), "dunno", "", ""},
        {"ct", rq({{"client_address", "192.0.2.9"}}), "dunno", "", ""},
        {"ct", rq({{"client_address", "192.0.2.7"}}),
         "reject 550 delivery from 192.0.2.7" + kRejectTail, "", ""},
        {"ct", rq({{"client_address", "192.0.2.4"}}), "<closed>", "", ""},
        {"ct", rq({{"client_address", "192.0.2.5"}}), "<closed>", "", ""},
        {"ct", rq({{"client_address", "192.0.2.6"}}), "<closed>", "", ""},
        {"ct", rq({{"client_address", "\x7f"}}), "<closed>", "", ""},
        {"keyed", rq({{"client_address", "192.0.2.2"}}), "reject x 192.0.2.2 REF-2", "", ""},
        {"passive", rq({{"client_address", "192.0.2.1"}}), "reject score reached", "", ""},
        {"passive", rq({{"client_address", "192.0.2.2"}}), "dunno", "", ""},
    };
    run_cases(rig, vhosts, cases);
    // Each case reached ctipd once from each daemon (Perl first) with the same body.
    auto seen = ct.seen();
    REQUIRE(seen.size() % 2 == 0);
    for (size_t i = 0; i + 1 < seen.size(); i += 2) {
        INFO("request #" << i << "\nPerl:\n" << seen[i].head << seen[i].body << "\nringpolicyd:\n"
                         << seen[i + 1].head << seen[i + 1].body);
        CHECK(seen[i].body == seen[i + 1].body);
        CHECK(seen[i].head.substr(0, seen[i].head.find('\n')) ==
              seen[i + 1].head.substr(0, seen[i + 1].head.find('\n')));
    }
}
