// diff_protocol.cpp: the protocol edge cases of appendix D #12 (spec 6, 7), byte for byte, on the
// Perl mtpolicyd and on ringpolicyd: CRLF lines, pipelined requests, `=value`, values holding
// '=', NUL, CR and 8-bit bytes, a line without '=' (no reply, close), EOF in the middle of a
// request (no reply), max_keepalive = 2, request_timeout exceeded (no reply), and the request
// without a `request` attribute, where ringpolicyd differs by design (spec 16 #12).
#include "diffcheck.h"

#include <cstdio>

using namespace itest;

namespace
{

const char *kChain = R"(
  <Plugin eq>
    module = "Condition"
    key = "sender"
    match = "a=b"
    action = "reject sender has ="
  </Plugin>
  <Plugin emptyname>
    module = "Condition"
    key = "r:"
    match = "v"
    action = "reject empty name"
  </Plugin>
  <Plugin nul>
    module = "Condition"
    key = "helo_name"
    re_match = "^a\x00b$"
    action = "reject nul byte"
  </Plugin>
  <Plugin cr>
    module = "Condition"
    key = "helo_name"
    re_match = "^x\r$"
    action = "reject cr kept"
  </Plugin>
  <Plugin eightbit>
    module = "Condition"
    key = "sender"
    match = "müller@example.org"
    action = "reject eight bit"
  </Plugin>
  <Plugin echo>
    module = "Condition"
    key = "recipient"
    re_match = "^n[0-9]+$"
    action = "reject numbered"
  </Plugin>)";

const std::string R = "request=smtpd_access_policy\n";

/* What a client sees after sending data: the bytes until the peer closed, or until settle_ms
 * passed, and whether it closed. */
std::string exchange(const Endpoint &ep, const std::string &data, bool half_close, int settle_ms)
{
    Conn c(ep);
    if (!c.ok())
        return "<connect failed: " + c.error() + ">";
    c.send(data);
    if (half_close)
        c.shutdown_write();
    /* Wait up to 8 s for the first byte or the close (a Perl daemon that just started may
       still be forking workers), then until the peer closes or stays silent for settle_ms. */
    bool closed = false;
    size_t seen = 0;
    int64_t deadline = now_ms() + 8000, last_change = now_ms();
    while (!closed) {
        closed = c.wait_closed(50);
        if (c.pending().size() != seen) {
            seen = c.pending().size();
            last_change = now_ms();
        }
        if (seen > 0 && now_ms() - last_change >= settle_ms)
            break;
        if (seen == 0 && now_ms() >= deadline)
            break;
    }
    std::string shown;
    for (char ch : c.pending()) {
        if (ch == '\n')
            shown += "\\n";
        else if (static_cast<unsigned char>(ch) < 0x20) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(ch));
            shown += hex;
        } else
            shown += ch;
    }
    return shown + (closed ? " <closed>" : " <open>");
}

struct RawCase {
    std::string what;
    std::string data;
    bool half_close;
    std::string expect;      /* Perl (and ringpolicyd unless ring_expect is set) */
    std::string ring_expect; /* a difference by design */
    std::string decision;
};

void run_raw(DiffRig &rig, const std::string &vhost, const std::vector<RawCase> &cases,
             int settle_ms = 1500)
{
    for (auto &c : cases) {
        INFO("case '" << c.what << "': sent " << c.data.size() << " bytes"
                      << (c.half_close ? " then shut down writing" : ""));
        std::string perl =
            exchange(rig.endpoint(Impl::Perl, vhost), c.data, c.half_close, settle_ms);
        if (!rig.daemon(Impl::Perl).alive())
            FAIL("the Perl mtpolicyd died; its log:\n" << rig.daemon(Impl::Perl).log());
        {
            INFO("Perl mtpolicyd 2.05: " << perl << "\nthe table expects: " << c.expect);
            CHECK(perl == c.expect);
        }
        if (!rig.has_ring())
            continue;
        std::string ring =
            exchange(rig.endpoint(Impl::Ring, vhost), c.data, c.half_close, settle_ms);
        if (!rig.daemon(Impl::Ring).alive())
            FAIL("ringpolicyd died; its log:\n" << rig.daemon(Impl::Ring).log());
        if (c.decision.empty()) {
            INFO("ringpolicyd: " << ring << "\nPerl mtpolicyd: " << perl);
            CHECK(ring == perl);
        } else {
            INFO("documented difference (" << c.decision << "): ringpolicyd must give "
                                           << c.ring_expect << "; it gave " << ring);
            CHECK(ring == c.ring_expect);
        }
    }
}

} // namespace

TEST_CASE("protocol edge cases (D #12)", "[diff][protocol]")
{
    std::vector<VhostSpec> vhosts = {{"proto", kChain, ""}};
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);

    const std::string eq = R + "sender=a=b\n\n";
    std::vector<RawCase> cases = {
        {"value containing '='", eq, false, "action=reject sender has =\\n\\n <open>", "", ""},
        {"CRLF lines", "request=smtpd_access_policy\r\nsender=a=b\r\n\r\n", false,
         "action=reject sender has =\\n\\n <open>", "", ""},
        {"`=value` (empty name)", R + "=v\n\n", false, "action=reject empty name\\n\\n <open>", "",
         ""},
        {"NUL inside a value", R + std::string("helo_name=a\0b\n\n", 16), false,
         "action=reject nul byte\\n\\n <open>", "", ""},
        {"CR inside a value (only the one before LF is dropped)", R + "helo_name=x\r\r\n\n", false,
         "action=reject cr kept\\n\\n <open>", "", ""},
        {"8-bit bytes", R + "sender=m\xc3\xbcller@example.org\n\n", false,
         "action=reject eight bit\\n\\n <open>", "", ""},
        {"pipelined requests answered in order",
         R + "recipient=n1\n\n" + R + "recipient=x\n\n" + R + "recipient=n3\n\n", false,
         "action=reject numbered\\n\\naction=dunno\\n\\naction=reject numbered\\n\\n <open>", "",
         ""},
        {"line without '=': no reply, close", R + "garbage\n\n", false, " <closed>", "", ""},
        {"line without '=' discards what follows", R + "garbage\n\n" + eq, false, " <closed>", "",
         ""},
        {"line without '=' after a good request", eq + R + "garbage\n\n", false,
         "action=reject sender has =\\n\\n <closed>", "", ""},
        {"EOF in the middle of a request: no reply", R + "sender=a=b\n", true, " <closed>", "", ""},
        {"EOF in the middle of a line: no reply", R + "sender=a=b", true, " <closed>", "", ""},
        {"EOF after a complete request and a partial one", eq + R, true,
         "action=reject sender has =\\n\\n <closed>", "", ""},
        {"EOF before anything", "", true, " <closed>", "", ""},
        {"request without `request` attribute", "sender=a=b\n\n", false,
         "action=reject sender has =\\n\\n <closed>", "action=reject sender has =\\n\\n <open>",
         "spec 16 #12: answer and keep the connection"},
        {"empty request", "\n", false, "action=dunno\\n\\n <closed>", "action=dunno\\n\\n <open>",
         "spec 16 #12: answer and keep the connection"},
    };
    run_raw(rig, "proto", cases);
}

TEST_CASE("max_keepalive = 2 closes after two replies (D #12)", "[diff][protocol]")
{
    std::vector<VhostSpec> vhosts = {{"proto", kChain, ""}};
    DiffRig rig(vhosts, "max_keepalive = 2\n");
    ITEST_START_RIG(rig);

    const std::string n = R + "recipient=n1\n\n";
    std::vector<RawCase> cases = {
        {"one request", n, false, "action=reject numbered\\n\\n <open>", "", ""},
        {"two pipelined", n + n, false,
         "action=reject numbered\\n\\naction=reject numbered\\n\\n <closed>", "", ""},
        {"three pipelined", n + n + n, false,
         "action=reject numbered\\n\\naction=reject numbered\\n\\n <closed>", "", ""},
    };
    run_raw(rig, "proto", cases);

    /* One after the other on one connection: the third is never answered. */
    for (Impl impl : {Impl::Perl, Impl::Ring}) {
        if (impl == Impl::Ring && !rig.has_ring())
            continue;
        INFO(impl_name(impl));
        Conn c(rig.endpoint(impl, "proto"));
        REQUIRE(c.ok());
        CHECK(summarize(c.request({"request=smtpd_access_policy", "recipient=n1"})) ==
              "reject numbered");
        CHECK(summarize(c.request({"request=smtpd_access_policy", "recipient=x"})) == "dunno");
        CHECK(c.wait_closed(3000));
        CHECK(summarize(c.request({"request=smtpd_access_policy", "recipient=n3"})) == "<closed>");
    }
}

TEST_CASE("request_timeout exceeded: no reply (D #12)", "[diff][protocol]")
{
    need_file(sleep_so(), "the Sleep test plugin");
    std::vector<VhostSpec> vhosts = {{"slow", R"(
  <Plugin nap>
    module = "Sleep"
    ms = 2500
  </Plugin>
  <Plugin answer>
    module = "Action"
    action = "reject too late"
  </Plugin>)",
                                      ""},
                                     {"quick", R"(
  <Plugin nap>
    module = "Sleep"
    ms = 100
  </Plugin>
  <Plugin answer>
    module = "Action"
    action = "reject in time"
  </Plugin>)",
                                      ""}};
    DiffRig rig(vhosts, "request_timeout = 1\nplugin_dir = \"" + itest_build_dir() + "\"\n");
    ITEST_START_RIG(rig);

    std::vector<DiffCase> cases = {
        {"slow", postfix_request(), "<closed>", "", ""},
        {"quick", postfix_request(), "reject in time", "", ""},
    };
    run_cases(rig, vhosts, cases, 6000);
    CHECK(rig.daemon(Impl::Perl).wait_log("request timed out", 3000));
    if (rig.has_ring())
        CHECK(rig.daemon(Impl::Ring).wait_log("request timed out", 3000));
}
