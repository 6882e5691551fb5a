// Tests for bench/common/reqgen.c: Postfix 3.7 attribute order, how the requests of one mail
// differ by stage, instance sharing within a mail and uniqueness across mails and streams,
// determinism per seed, option clamping, and the buffer-too-small path.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "reqgen.h"
}

namespace
{

// TOOLCHAIN.md section 8, copied by hand rather than from the generator.
const std::vector<std::string> postfix37_order = {"request",
                                                  "protocol_state",
                                                  "protocol_name",
                                                  "client_address",
                                                  "client_name",
                                                  "client_port",
                                                  "reverse_client_name",
                                                  "server_address",
                                                  "server_port",
                                                  "helo_name",
                                                  "sender",
                                                  "recipient",
                                                  "recipient_count",
                                                  "queue_id",
                                                  "instance",
                                                  "size",
                                                  "etrn_domain",
                                                  "stress",
                                                  "sasl_method",
                                                  "sasl_username",
                                                  "sasl_sender",
                                                  "ccert_subject",
                                                  "ccert_issuer",
                                                  "ccert_fingerprint",
                                                  "ccert_pubkey_fingerprint",
                                                  "encryption_protocol",
                                                  "encryption_cipher",
                                                  "encryption_keysize",
                                                  "policy_context"};

struct request {
    std::vector<std::pair<std::string, std::string>> attrs;
    std::map<std::string, std::string> by_name;
    bench_req_info info;
    std::string raw;
};

request next(bench_reqgen *g)
{
    char buf[BENCH_REQGEN_REQUEST_BYTES_MAX];
    request r;
    size_t len = bench_reqgen_next(g, buf, sizeof(buf), &r.info);
    REQUIRE(len > 0);
    r.raw.assign(buf, len);
    REQUIRE(r.raw.size() >= 2);
    REQUIRE(r.raw.substr(r.raw.size() - 2) == "\n\n");
    std::istringstream in(r.raw.substr(0, r.raw.size() - 1));
    std::string line;
    while (std::getline(in, line)) {
        size_t eq = line.find('=');
        REQUIRE(eq != std::string::npos);
        r.attrs.emplace_back(line.substr(0, eq), line.substr(eq + 1));
        r.by_name[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return r;
}

} // namespace

TEST_CASE("reqgen: attributes in Postfix 3.7 wire order", "[reqgen]")
{
    bench_reqgen g;
    bench_reqgen_init(&g, nullptr, 1, 0);
    REQUIRE(postfix37_order.size() == BENCH_REQGEN_ATTR_COUNT);
    for (int i = 0; i < 200; i++) {
        request r = next(&g);
        REQUIRE(r.attrs.size() == postfix37_order.size());
        for (size_t j = 0; j < r.attrs.size(); j++)
            REQUIRE(r.attrs[j].first == postfix37_order[j]);
        CHECK(r.by_name["request"] == "smtpd_access_policy");
        CHECK(r.raw.find('\r') == std::string::npos);
    }
}

TEST_CASE("reqgen: one mail shares its instance; stages differ like Postfix's", "[reqgen]")
{
    bool with_data = GENERATE(false, true);
    bench_reqgen_opts o;
    bench_reqgen_opts_default(&o);
    o.with_data = with_data;
    bench_reqgen g;
    bench_reqgen_init(&g, &o, 42, 3);
    std::set<std::string> instances;
    std::set<uint32_t> rcpt_counts_seen;
    for (int mail = 0; mail < 300; mail++) {
        request first = next(&g);
        REQUIRE(first.info.step_idx == 0);
        REQUIRE(first.info.mail_idx == (uint64_t)mail);
        uint32_t n = first.info.rcpt_count;
        REQUIRE(n >= 1);
        REQUIRE(n <= 5);
        rcpt_counts_seen.insert(n);
        REQUIRE(first.info.step_count == n + (with_data ? 2 : 1));
        const std::string instance = first.by_name["instance"];
        CHECK(instances.insert(instance).second); // a new mail, a new instance
        std::string queue_id;
        std::set<std::string> recipients;
        for (uint32_t step = 0; step < first.info.step_count; step++) {
            request r = step == 0 ? first : next(&g);
            INFO("mail " << mail << " step " << step << "\n" << r.raw);
            REQUIRE(r.info.step_idx == step);
            CHECK(r.by_name["instance"] == instance);
            for (const char *same : {"client_address", "client_name", "helo_name", "sender",
                                     "client_port", "encryption_protocol", "sasl_username"})
                CHECK(r.by_name[same] == first.by_name[same]);
            if (step < n) {
                CHECK(r.info.stage == BENCH_STAGE_RCPT);
                CHECK(r.by_name["protocol_state"] == "RCPT");
                CHECK(r.by_name["recipient_count"] == "0");
                CHECK(r.by_name["size"] == first.by_name["size"]);
                CHECK(!r.by_name["recipient"].empty());
                recipients.insert(r.by_name["recipient"]);
            } else if (with_data && step == n) {
                CHECK(r.info.stage == BENCH_STAGE_DATA);
                CHECK(r.by_name["protocol_state"] == "DATA");
                CHECK(r.by_name["recipient"].empty());
                CHECK(r.by_name["recipient_count"] == std::to_string(n));
            } else {
                CHECK(r.info.stage == BENCH_STAGE_EOM);
                CHECK(step == first.info.step_count - 1);
                CHECK(r.by_name["protocol_state"] == "END-OF-MESSAGE");
                CHECK(r.by_name["recipient"].empty());
                CHECK(r.by_name["recipient_count"] == std::to_string(n));
                CHECK(std::stoull(r.by_name["size"]) > 0);
            }
            if (step == 0) {
                CHECK(r.by_name["queue_id"].empty());
            } else {
                CHECK(!r.by_name["queue_id"].empty());
                if (queue_id.empty())
                    queue_id = r.by_name["queue_id"];
                CHECK(r.by_name["queue_id"] == queue_id);
            }
        }
    }
    CHECK(rcpt_counts_seen == std::set<uint32_t>{1, 2, 3, 4, 5});
}

TEST_CASE("reqgen: values vary between mails", "[reqgen]")
{
    bench_reqgen g;
    bench_reqgen_init(&g, nullptr, 7, 0);
    std::map<std::string, std::set<std::string>> seen;
    for (int i = 0; i < 2000; i++) {
        request r = next(&g);
        for (const auto &a : r.attrs)
            seen[a.first].insert(a.second);
    }
    CHECK(seen["client_address"].size() > 100);
    CHECK(seen["sender"].size() > 100);
    CHECK(seen["recipient"].size() > 100);
    CHECK(seen["helo_name"].size() > 50);
    CHECK(seen["instance"].size() > 300);
    CHECK(seen["sender"].count("") == 1); // some bounces
    CHECK(seen["client_name"].count("unknown") == 1);
    CHECK(seen["protocol_state"] == std::set<std::string>{"RCPT", "END-OF-MESSAGE"});
    CHECK(seen["server_port"] == std::set<std::string>{"25"});
}

TEST_CASE("reqgen: the same seed and stream give the same bytes", "[reqgen]")
{
    bench_reqgen a, b, other_seed, other_stream;
    bench_reqgen_init(&a, nullptr, 99, 5);
    bench_reqgen_init(&b, nullptr, 99, 5);
    bench_reqgen_init(&other_seed, nullptr, 100, 5);
    bench_reqgen_init(&other_stream, nullptr, 99, 6);
    std::set<std::string> instances_a;
    bool seed_differs = false;
    for (int i = 0; i < 500; i++) {
        request ra = next(&a), rb = next(&b), rs = next(&other_seed), rt = next(&other_stream);
        REQUIRE(ra.raw == rb.raw);
        seed_differs |= ra.raw != rs.raw;
        instances_a.insert(ra.by_name["instance"]);
        // Different streams never share an instance.
        CHECK(instances_a.count(rt.by_name["instance"]) == 0);
    }
    CHECK(seed_differs);
}

TEST_CASE("reqgen: options are clamped; policy_context is copied", "[reqgen]")
{
    bench_reqgen_opts o;
    bench_reqgen_opts_default(&o);
    std::string ctx = "tc-test";
    o.policy_context = ctx.c_str();
    o.rcpt_min = 9;
    o.rcpt_max = 99;
    bench_reqgen g;
    bench_reqgen_init(&g, &o, 1, 0);
    ctx = "changed-after-init";
    for (int i = 0; i < 30; i++) {
        request r = next(&g);
        CHECK(r.info.rcpt_count == BENCH_REQGEN_RCPT_MAX);
        CHECK(r.by_name["policy_context"] == "tc-test");
    }
    o.rcpt_min = 0;
    o.rcpt_max = 0;
    o.policy_context = nullptr;
    bench_reqgen_init(&g, &o, 1, 0);
    request r = next(&g);
    CHECK(r.info.rcpt_count == 1);
    CHECK(r.by_name["policy_context"].empty());
}

TEST_CASE("reqgen: a buffer too small returns 0 and does not advance", "[reqgen]")
{
    bench_reqgen a, b;
    bench_reqgen_init(&a, nullptr, 5, 1);
    bench_reqgen_init(&b, nullptr, 5, 1);
    char small[100];
    char big[BENCH_REQGEN_REQUEST_BYTES_MAX], ref[BENCH_REQGEN_REQUEST_BYTES_MAX];
    for (int i = 0; i < 20; i++) {
        CHECK(bench_reqgen_next(&a, small, sizeof(small), nullptr) == 0);
        size_t len = bench_reqgen_next(&a, big, sizeof(big), nullptr);
        size_t ref_len = bench_reqgen_next(&b, ref, sizeof(ref), nullptr);
        REQUIRE(len == ref_len);
        REQUIRE(std::string(big, len) == std::string(ref, ref_len));
        // Exactly the length fits; one byte less does not.
        bench_reqgen c;
        bench_reqgen_init(&c, nullptr, 5, 1);
        for (int j = 0; j < i; j++)
            REQUIRE(bench_reqgen_next(&c, ref, sizeof(ref), nullptr) > 0);
        bench_reqgen d = c;
        CHECK(bench_reqgen_next(&c, ref, len - 1, nullptr) == 0);
        CHECK(bench_reqgen_next(&d, ref, len, nullptr) == len);
    }
}
