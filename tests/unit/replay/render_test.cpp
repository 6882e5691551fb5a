// render_test.cpp: synthesized requests in Postfix 3.7's wire form (bench/replay/render.c):
// attribute order, how the requests of one mail differ (TOOLCHAIN.md section 8), copies for
// --multiply, the output buffer at N and N-1 bytes.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include "corpus.h"
#include "render.h"
}

#include "corpus_testutil.h"

namespace {

// Postfix 3.7.11's attribute order (TOOLCHAIN.md section 8).
const std::vector<std::string> wire_order = {
    "request", "protocol_state", "protocol_name", "client_address", "client_name", "client_port",
    "reverse_client_name", "server_address", "server_port", "helo_name", "sender", "recipient",
    "recipient_count", "queue_id", "instance", "size", "etrn_domain", "stress", "sasl_method",
    "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer", "ccert_fingerprint",
    "ccert_pubkey_fingerprint", "encryption_protocol", "encryption_cipher",
    "encryption_keysize", "policy_context"};

struct request {
    std::vector<std::string> names;
    std::map<std::string, std::string> attrs;
};

request split(const std::string &wire)
{
    REQUIRE(wire.size() >= 2);
    REQUIRE(wire.substr(wire.size() - 2) == "\n\n");
    request r;
    for (const std::string &line : rpltest::split_lines(wire.substr(0, wire.size() - 1))) {
        size_t eq = line.find('=');
        REQUIRE(eq != std::string::npos);
        r.names.push_back(line.substr(0, eq));
        r.attrs[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return r;
}

struct corpus_t : rpltest::log_corpus {
    rpl_render_opts o{};
    explicit corpus_t(const std::string &log) : log_corpus(log)
    {
        o.copy_span_us = rpl_copy_span_us(&c);
    }
    request render(uint64_t i, uint32_t copy = 0)
    {
        char buf[8192];
        size_t n = rpl_render(&c, &c.reqs[i], copy, &o, buf, sizeof(buf));
        REQUIRE(n > 0);
        return split(std::string(buf, n));
    }
};

const std::string two_rcpt_mail =
    "Nov 24 01:02:03.250000 mx postfix/smtpd[22308]: connect from client.test.example[192.0.2.7]\n"
    "Nov 24 01:02:03.300000 mx postfix/smtpd[22308]: NOQUEUE: reject: RCPT from "
    "client.test.example[192.0.2.7]: 550 no; from=<sender@test.example> to=<x@example.com> "
    "proto=ESMTP helo=<client.test.example>\n"
    "Nov 24 01:02:03.400000 mx postfix/smtpd[22308]: 5A0B1C2D3E: client=client.test.example[192.0.2.7]\n"
    "Nov 24 01:02:03.500000 mx postfix/cleanup[2]: 5A0B1C2D3E: message-id=<a@b>\n"
    "Nov 24 01:02:03.600000 mx postfix/qmgr[3]: 5A0B1C2D3E: from=<sender@test.example>, size=2152, "
    "nrcpt=2 (queue active)\n"
    "Nov 24 01:02:04 mx postfix/smtp[4]: 5A0B1C2D3E: to=<1rcpt@example.com>, relay=x, status=sent\n"
    "Nov 24 01:02:04 mx postfix/smtp[4]: 5A0B1C2D3E: to=<2rcpt@example.com>, relay=x, status=sent\n";

} // namespace

TEST_CASE("attribute names in Postfix 3.7's order, for every stage", "[render]")
{
    corpus_t t(two_rcpt_mail);
    REQUIRE(t.c.req_count == 5);
    for (uint64_t i = 0; i < t.c.req_count; i++)
        CHECK(t.render(i).names == wire_order);
}

TEST_CASE("the requests of one mail differ the way Postfix's do", "[render]")
{
    corpus_t t(two_rcpt_mail);
    request rej = t.render(0), r1 = t.render(1), r2 = t.render(2), data = t.render(3),
            eom = t.render(4);
    CHECK(rej.attrs["protocol_state"] == "RCPT");
    CHECK(rej.attrs["recipient"] == "x@example.com");
    CHECK(rej.attrs["queue_id"].empty());
    // The first accepted recipient: the queue file does not exist yet.
    CHECK(r1.attrs["recipient"] == "1rcpt@example.com");
    CHECK(r1.attrs["queue_id"].empty());
    CHECK(r1.attrs["recipient_count"] == "0");
    CHECK(r1.attrs["size"] == "0");
    CHECK(r2.attrs["queue_id"] == "5A0B1C2D3E");
    CHECK(r2.attrs["recipient_count"] == "0");
    CHECK(data.attrs["protocol_state"] == "DATA");
    CHECK(data.attrs["recipient"].empty());
    CHECK(data.attrs["recipient_count"] == "2");
    CHECK(data.attrs["size"] == "0");
    CHECK(eom.attrs["protocol_state"] == "END-OF-MESSAGE");
    CHECK(eom.attrs["recipient"].empty());
    CHECK(eom.attrs["recipient_count"] == "2");
    CHECK(eom.attrs["size"] == "2152");
    // One instance for the whole transaction, the rejected recipient included:
    // pid 22308 = 0x5724; the MAIL FROM (the first reject) at 2026-11-24 01:02:03.3 UTC =
    // 0x6b04e20b s + 300000 (0x493e0) us; the connection's first transaction.
    std::set<std::string> instances;
    for (const request *r : {&rej, &r1, &r2, &data, &eom})
        instances.insert(r->attrs.at("instance"));
    REQUIRE(instances.size() == 1);
    CHECK(*instances.begin() == "5724.6b04e20b.493e0.0");
    for (const request *r : {&rej, &r1, &data, &eom}) {
        CHECK(r->attrs.at("request") == "smtpd_access_policy");
        CHECK(r->attrs.at("protocol_name") == "ESMTP");
        CHECK(r->attrs.at("client_address") == "192.0.2.7");
        CHECK(r->attrs.at("client_name") == "client.test.example");
        CHECK(r->attrs.at("reverse_client_name") == "client.test.example");
        CHECK(r->attrs.at("helo_name") == "client.test.example");
        CHECK(r->attrs.at("sender") == "sender@test.example");
        CHECK(r->attrs.at("server_address") == "127.0.0.1");
        CHECK(r->attrs.at("server_port") == "25");
        CHECK(r->attrs.at("encryption_keysize") == "0");
        CHECK(r->attrs.at("policy_context").empty());
    }
    CHECK(r1.attrs["client_port"] == rej.attrs["client_port"]);
}

TEST_CASE("DATA and END-OF-MESSAGE name a single recipient", "[render]")
{
    corpus_t t("Nov 24 01:02:03 mx postfix/smtpd[1]: AAAAA1: client=a[192.0.2.1]\n"
               "Nov 24 01:02:03 mx postfix/qmgr[3]: AAAAA1: from=<s@a>, size=10, nrcpt=1 (queue "
               "active)\n"
               "Nov 24 01:02:04 mx postfix/smtp[4]: AAAAA1: to=<only@b>, relay=x, status=sent\n");
    REQUIRE(t.c.req_count == 3);
    CHECK(t.render(1).attrs["recipient"] == "only@b");
    CHECK(t.render(2).attrs["recipient"] == "only@b");
    CHECK(t.render(2).attrs["recipient_count"] == "1");
    // No HELO was logged for this connection: the client name stands in for it.
    CHECK(t.render(0).attrs["helo_name"] == "a");
}

TEST_CASE("options and service names: server address and port, policy_context, SASL", "[render]")
{
    corpus_t t("Nov 24 01:02:03 mx postfix/submission/smtpd[1]: AAAAA1: client=unknown[192.0.2.1], "
               "sasl_method=LOGIN, sasl_username=jordy\n");
    REQUIRE(t.c.req_count == 1);
    request r = t.render(0);
    CHECK(r.attrs["server_port"] == "587");
    CHECK(r.attrs["helo_name"] == "[192.0.2.1]");
    CHECK(r.attrs["sasl_method"] == "LOGIN");
    CHECK(r.attrs["sasl_username"] == "jordy");
    CHECK(r.attrs["recipient"] == "unlogged1@recipient.invalid");
    t.o.server_address = "198.51.100.25";
    t.o.server_port = 12345;
    t.o.policy_context = "submission";
    r = t.render(0);
    CHECK(r.attrs["server_address"] == "198.51.100.25");
    CHECK(r.attrs["server_port"] == "12345");
    CHECK(r.attrs["policy_context"] == "submission");
}

TEST_CASE("copies differ in instance, client address and queue id only", "[render]")
{
    corpus_t t(two_rcpt_mail);
    for (uint64_t i = 0; i < t.c.req_count; i++) {
        request a = t.render(i, 0), b = t.render(i, 1), c = t.render(i, 0x2a);
        for (const std::string &name : wire_order) {
            INFO(name);
            if (name == "instance" || name == "client_address" || name == "client_port" ||
                (name == "queue_id" && !a.attrs[name].empty()) ||
                (name == "helo_name" && a.attrs[name][0] == '[')) {
                CHECK(a.attrs[name] != b.attrs[name]);
                CHECK(b.attrs[name] != c.attrs[name]);
            } else {
                CHECK(a.attrs[name] == b.attrs[name]);
            }
        }
        if (!a.attrs["queue_id"].empty()) {
            CHECK(b.attrs["queue_id"] == a.attrs["queue_id"] + "Z1");
            CHECK(c.attrs["queue_id"] == a.attrs["queue_id"] + "Z2A");
        }
    }
}

TEST_CASE("copy addresses stay in their /8 (IPv6: /64) and are distinct", "[render]")
{
    char out[64];
    CHECK(rpl_copy_addr("127.0.0.1", 9, 0, out, sizeof(out)) == 9);
    CHECK(std::string(out) == "127.0.0.1");
    std::set<std::string> seen;
    for (uint32_t k = 1; k <= 5000; k++) {
        size_t n = rpl_copy_addr("127.0.0.1", 9, k, out, sizeof(out));
        REQUIRE(n > 0);
        CHECK(std::string(out).rfind("127.", 0) == 0);
        seen.insert(out);
    }
    CHECK(seen.size() == 5000);
    REQUIRE(rpl_copy_addr("2001:db8::ffff:ffff", 19, 1, out, sizeof(out)) > 0);
    CHECK(std::string(out) == "2001:db8::");
    REQUIRE(rpl_copy_addr("2001:db8::1", 11, 2, out, sizeof(out)) > 0);
    CHECK(std::string(out) == "2001:db8::3");
    CHECK(rpl_copy_addr("unknown", 7, 5, out, sizeof(out)) == 7);
    CHECK(std::string(out) == "unknown");
    CHECK(rpl_copy_addr("unknown", 7, 0, out, 7) == 0); // no room for the NUL
    CHECK(rpl_copy_addr("unknown", 7, 0, out, 8) == 7);
}

TEST_CASE("the output buffer at N and N-1 bytes", "[render]")
{
    corpus_t t(two_rcpt_mail);
    char big[8192];
    size_t n = rpl_render(&t.c, &t.c.reqs[4], 0, &t.o, big, sizeof(big));
    REQUIRE(n > 0);
    std::vector<char> exact(n), short_by_one(n - 1);
    CHECK(rpl_render(&t.c, &t.c.reqs[4], 0, &t.o, exact.data(), n) == n);
    CHECK(std::string(exact.data(), n) == std::string(big, n));
    CHECK(rpl_render(&t.c, &t.c.reqs[4], 0, &t.o, short_by_one.data(), n - 1) == 0);
}

TEST_CASE("every request of the shared maillogs is well-formed, also in copies",
          "[render][data]")
{
    for (const char *name : {"kdent-postfix_log_analysis", "louisitvn-pflgviewer"}) {
        std::string path = rpltest::maillog_dir() + "/" + name + "/mail.log";
        rpl_corpus c;
        rpl_load_opts lo = {2015, 0};
        char err[256];
        const char *paths[] = {path.c_str()};
        REQUIRE(rpl_corpus_load(&c, paths, 1, &lo, err, sizeof(err)) == 0);
        REQUIRE(rpl_corpus_build(&c, 7u) == 0);
        rpl_render_opts o{};
        o.copy_span_us = rpl_copy_span_us(&c);
        std::set<std::string> instances[2];
        for (uint32_t copy : {0u, 3u}) {
            for (uint64_t i = 0; i < c.req_count; i++) {
                char buf[8192];
                size_t n = rpl_render(&c, &c.reqs[i], copy, &o, buf, sizeof(buf));
                REQUIRE(n > 0);
                request r = split(std::string(buf, n));
                REQUIRE(r.names == wire_order);
                instances[copy != 0].insert(r.attrs["instance"]);
            }
        }
        // Copies never reuse an instance of the original.
        for (const std::string &s : instances[1])
            CHECK(instances[0].count(s) == 0);
        CHECK(instances[0].size() == instances[1].size());
        rpl_corpus_free(&c);
    }
}

TEST_CASE("the order matches a request captured from Postfix 3.7", "[render][data]")
{
    std::string captured = rpltest::read_file(rpltest::maillog_dir() +
                                              "/../policy-requests/postfix-3.7-rcpt.txt");
    REQUIRE(!captured.empty());
    if (captured.substr(captured.size() - 2) != "\n\n")
        captured += "\n";
    CHECK(split(captured).names == wire_order);
}
