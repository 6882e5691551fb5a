// gen_test.cpp: the synthetic maillog writer (bench/replay/gen.c): deterministic, and what it
// writes reads back through the maillog parser and the corpus as the mix it claims to be.
#include <catch2/catch.hpp>

#include <cstdio>
#include <set>
#include <string>

extern "C" {
#include "corpus.h"
#include "gen.h"
#include "render.h"
}

#include "corpus_testutil.h"

namespace {

std::string generate(const rpl_gen_opts &o)
{
    char *buf = nullptr;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != nullptr);
    REQUIRE(rpl_gen_write(f, &o) == 0);
    fclose(f);
    std::string out(buf, len);
    free(buf);
    return out;
}

using loaded = rpltest::log_corpus;

size_t count(const std::string &hay, const std::string &needle)
{
    size_t n = 0;
    for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1))
        n++;
    return n;
}

} // namespace

TEST_CASE("the same options write the same bytes; another seed does not", "[gen]")
{
    rpl_gen_opts o;
    rpl_gen_defaults(&o);
    o.sessions = 300;
    std::string a = generate(o), b = generate(o);
    CHECK(a == b);
    o.seed = 2;
    CHECK(generate(o) != a);
}

TEST_CASE("an inbound MX log: connections, rejects, accepted mails, all parsed", "[gen]")
{
    rpl_gen_opts o;
    rpl_gen_defaults(&o);
    o.sessions = 2000;
    std::string log = generate(o);
    CHECK(count(log, ": connect from ") == 2000);
    CHECK(count(log, ": disconnect from ") == 2000);
    loaded l(log);
    const rpl_load_stats &s = l.c.stats;
    CHECK(s.kind_count[RPL_LINE_GARBAGE] == 0);
    CHECK(s.kind_count[RPL_LINE_OTHER_PROGRAM] == 0);
    CHECK(s.mails == count(log, ": client="));
    CHECK(s.rejects_rcpt == count(log, "NOQUEUE: reject: RCPT from"));
    CHECK(s.mails_no_rcpt == 0);     // every mail has its delivery lines
    CHECK(s.orphan_lines == 0);      // every queue id comes from smtpd
    CHECK(s.implicit_conns == 0);
    // Roughly the documented mix: about half the sessions deliver, a good share only rejects,
    // and some rejected recipients come before an accepted one of the same mail.
    CHECK(s.mails > 800);
    CHECK(s.mails < 1200);
    CHECK(s.noqueue_txns > 600);
    CHECK(s.merged_txns > 50);
    CHECK(l.c.proc_count == 50);
    CHECK(l.c.req_count_by_stage[RPL_STAGE_EOM] == s.mails);
    // Recipients through an alias are logged with orig_to=, and the policy saw the alias.
    CHECK(count(log, "orig_to=<info") > 0);
}

TEST_CASE("a submission log: SASL users, several recipients, port 587", "[gen]")
{
    rpl_gen_opts o;
    rpl_gen_defaults(&o);
    o.mix = RPL_GEN_SUBMISSION;
    o.sessions = 1000;
    o.rfc3339 = true;
    std::string log = generate(o);
    CHECK(log.rfind("2026-11-24T00:00:00.", 0) == 0);
    loaded l(log);
    const rpl_load_stats &s = l.c.stats;
    CHECK(s.kind_count[RPL_LINE_GARBAGE] == 0);
    CHECK(s.mails == count(log, ", sasl_username="));
    CHECK(s.mails > 900);
    CHECK(count(log, "SASL LOGIN authentication failed") + count(log, "SASL PLAIN authentication failed") ==
          1000 - s.mails);
    CHECK(s.rcpts_accepted == count(log, "postfix/smtp["));
    CHECK(l.c.proc_count == 20);
    std::set<std::string> users;
    rpl_render_opts ro{};
    ro.copy_span_us = rpl_copy_span_us(&l.c);
    char buf[8192];
    size_t n = rpl_render(&l.c, &l.c.reqs[0], 0, &ro, buf, sizeof(buf));
    REQUIRE(n > 0);
    std::string req(buf, n);
    CHECK(req.find("server_port=587\n") != std::string::npos);
    CHECK(req.find("sasl_username=user") != std::string::npos);
    for (uint32_t i = 0; i < l.c.txn_count; i++)
        users.insert(std::string(l.c.strs + l.c.txns[i].sasl_username.off,
                                 l.c.txns[i].sasl_username.len));
    CHECK(users.size() > 100); // a skewed pool of 500, not one user
}

TEST_CASE("times: sessions at the given start and rate", "[gen]")
{
    rpl_gen_opts o;
    rpl_gen_defaults(&o);
    o.sessions = 5000;
    o.rate = 50.0;
    loaded l(generate(o));
    double span_s = (double)(l.c.t_last_us - l.c.t_first_us) / 1e6;
    // 5000 sessions at 50/s: about 100 s (a Poisson stream; 20% is many standard deviations).
    CHECK(span_s > 80.0);
    CHECK(span_s < 120.0);
    CHECK(l.c.t_first_us / 1000000 >= o.start_sec);
    CHECK(l.c.t_first_us / 1000000 < o.start_sec + 2);
}

TEST_CASE("mix names", "[gen]")
{
    rpl_gen_mix m;
    CHECK(rpl_gen_mix_parse("inbound", &m) == 0);
    CHECK(m == RPL_GEN_INBOUND);
    CHECK(rpl_gen_mix_parse("submission", &m) == 0);
    CHECK(m == RPL_GEN_SUBMISSION);
    CHECK(rpl_gen_mix_parse("outbound", &m) == -1);
}
