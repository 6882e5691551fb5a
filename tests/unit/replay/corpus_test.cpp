// corpus_test.cpp: joining maillog lines into smtpd processes, connections, transactions and
// requests (bench/replay/corpus.c, layout.c). Crafted logs check each joining rule and limit;
// the [data] cases check the two full shared maillogs against counts taken from the log text
// with regular expressions (the "grep counts"), independently of the parser.
//
// GCC 12 with -fsanitize=address warns -Wmaybe-uninitialized inside libstdc++'s <regex>
// (std::function moved out of _NFA's __tmp state; a false positive, GCC PR 105616), which
// -Werror turns into a failed sanitizer build. Ignored for this file, before any header
// pulls in <functional>.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include "corpus.h"
}

#include "corpus_testutil.h"

namespace {

struct corpus_t : rpltest::log_corpus {
    explicit corpus_t(const std::string &log, unsigned mask = 7u, int year = 2015)
        : log_corpus(log, mask, year)
    {
    }
    const rpl_txn &txn_of(const rpl_req &r) const { return c.txns[r.txn_idx]; }
    std::string rcpt_of(const rpl_req &r) const
    {
        const rpl_txn &x = txn_of(r);
        return str(c.rcpts[x.rcpt_first + r.rcpt_idx].addr);
    }
    std::vector<const rpl_req *> stage(rpl_stage s) const
    {
        std::vector<const rpl_req *> out;
        for (uint64_t i = 0; i < c.req_count; i++)
            if (c.reqs[i].stage == s)
                out.push_back(&c.reqs[i]);
        return out;
    }
};

const std::string H = "Oct 22 02:30:02 mx ";

std::string smtpd(int pid, const std::string &msg)
{
    return H + "postfix/smtpd[" + std::to_string(pid) + "]: " + msg + "\n";
}

std::string daemon(const char *name, const std::string &msg)
{
    return H + "postfix/" + name + "[900]: " + msg + "\n";
}

} // namespace

TEST_CASE("an accepted mail: recipients from to= lines, DATA and END-OF-MESSAGE", "[corpus]")
{
    std::string log = smtpd(100, "connect from a.example[192.0.2.1]") +
                      smtpd(100, "AAAA1: client=a.example[192.0.2.1]") +
                      daemon("cleanup", "AAAA1: message-id=<m@a>") +
                      daemon("qmgr", "AAAA1: from=<s@a.example>, size=2152, nrcpt=3 (queue active)") +
                      daemon("smtp", "AAAA1: to=<r1@b>, relay=x[1.2.3.4]:25, status=deferred (x)") +
                      daemon("smtp", "AAAA1: to=<r1@b>, relay=x[1.2.3.4]:25, status=sent (250)") +
                      daemon("local", "AAAA1: to=<u1@h>, orig_to=<alias@b>, relay=local, status=sent") +
                      daemon("local", "AAAA1: to=<u2@h>, orig_to=<alias@b>, relay=local, status=sent") +
                      daemon("qmgr", "AAAA1: removed") + smtpd(100, "disconnect from a.example[192.0.2.1]");
    corpus_t t(log);
    CHECK(t.c.stats.mails == 1);
    REQUIRE(t.c.txn_count == 1);
    const rpl_txn &x = t.c.txns[0];
    CHECK(x.rcpt_count == 2); // r1 delivered twice, alias expanded to two: the policy saw two
    CHECK(x.accepted_count == 2);
    CHECK(x.first_accepted_idx == 0);
    CHECK(x.size == 2152);
    CHECK(x.nrcpt == 3);
    CHECK(t.str(x.sender) == "s@a.example");
    CHECK(t.str(x.queue_id) == "AAAA1");
    REQUIRE(t.c.req_count == 4);
    CHECK(t.c.reqs[0].stage == RPL_STAGE_RCPT);
    CHECK(t.rcpt_of(t.c.reqs[0]) == "r1@b");
    CHECK(t.rcpt_of(t.c.reqs[1]) == "alias@b");
    CHECK(t.c.reqs[2].stage == RPL_STAGE_DATA);
    CHECK(t.c.reqs[3].stage == RPL_STAGE_EOM);
    const rpl_conn &cn = t.c.conns[x.conn_idx];
    CHECK(t.str(cn.client_name) == "a.example");
    CHECK(t.str(cn.client_addr) == "192.0.2.1");
    CHECK(t.str(cn.reverse_name) == "a.example");
    CHECK(t.c.stats.implicit_conns == 0);
}

TEST_CASE("stage masks choose the requests", "[corpus]")
{
    std::string log = smtpd(1, "connect from a[192.0.2.1]") + smtpd(1, "Q1: client=a[192.0.2.1]") +
                      daemon("qmgr", "Q1AAA: from=<>, size=1, nrcpt=1 (queue active)") +
                      daemon("qmgr", "Q1: from=<s@a>, size=10, nrcpt=1 (queue active)") +
                      daemon("smtp", "Q1: to=<r@b>, relay=x, status=sent");
    // "Q1" is shorter than a queue id (5 characters at least): those lines are not Postfix
    // mail lines at all, so nothing is accepted; the same log with real ids is.
    corpus_t none(log);
    CHECK(none.c.stats.mails == 0);
    std::string real = std::regex_replace(log, std::regex("Q1:"), "QQQQ1:");
    for (unsigned mask : {1u, 3u, 5u, 7u, 4u}) {
        corpus_t t(real, mask);
        CHECK(t.c.req_count_by_stage[RPL_STAGE_RCPT] == ((mask & 1u) ? 1u : 0u));
        CHECK(t.c.req_count_by_stage[RPL_STAGE_DATA] == ((mask & 2u) ? 1u : 0u));
        CHECK(t.c.req_count_by_stage[RPL_STAGE_EOM] == ((mask & 4u) ? 1u : 0u));
    }
}

TEST_CASE("NOQUEUE rejects: one transaction per sender run, folded into the next mail", "[corpus]")
{
    std::string rej = "NOQUEUE: reject: RCPT from a[192.0.2.1]: 550 5.1.1 <x>: Recipient address "
                      "rejected: User unknown; ";
    std::string log =
        smtpd(7, "connect from a[192.0.2.1]") +
        smtpd(7, rej + "from=<s@a> to=<bad1@b> proto=ESMTP helo=<a.helo>") +
        smtpd(7, rej + "from=<s@a> to=<bad2@b> proto=ESMTP helo=<a.helo>") +
        smtpd(7, "BBBB1: client=a[192.0.2.1]") +
        smtpd(7, "BBBB1: reject: RCPT from a[192.0.2.1]: 550 5.1.1 <bad3@b>: no; from=<s@a> "
                 "to=<bad3@b> proto=ESMTP helo=<a.helo>") +
        daemon("qmgr", "BBBB1: from=<s@a>, size=99, nrcpt=1 (queue active)") +
        daemon("smtp", "BBBB1: to=<good@b>, relay=x, status=sent") +
        smtpd(7, rej + "from=<other@a> to=<bad4@b> proto=ESMTP helo=<a.helo>") +
        smtpd(7, "disconnect from a[192.0.2.1]");
    corpus_t t(log);
    CHECK(t.c.stats.mails == 1);
    CHECK(t.c.stats.noqueue_txns == 2);
    CHECK(t.c.stats.merged_txns == 1);
    CHECK(t.c.stats.rejects_rcpt == 4);
    auto rcpts = t.stage(RPL_STAGE_RCPT);
    REQUIRE(rcpts.size() == 5);
    // The mail's transaction: two rejected before the queue file, the accepted one, one after.
    const rpl_txn &m = t.txn_of(*rcpts[0]);
    CHECK(t.str(m.queue_id) == "BBBB1");
    CHECK(m.rcpt_count == 4);
    CHECK(m.first_accepted_idx == 2);
    CHECK(t.rcpt_of(*rcpts[0]) == "bad1@b");
    CHECK(t.rcpt_of(*rcpts[1]) == "bad2@b");
    CHECK(t.rcpt_of(*rcpts[2]) == "good@b");
    CHECK(t.rcpt_of(*rcpts[3]) == "bad3@b");
    CHECK(t.c.rcpts[m.rcpt_first + 0].group == 0);
    CHECK(t.c.rcpts[m.rcpt_first + 2].group == 1);
    CHECK(t.c.rcpts[m.rcpt_first + 3].group == 2);
    // The other sender's reject is its own transaction with a later instance number.
    const rpl_txn &o = t.txn_of(*rcpts[4]);
    CHECK(&o != &m);
    CHECK(o.seq > m.seq);
    CHECK(t.str(o.sender) == "other@a");
    CHECK(t.str(o.queue_id).empty());
    const rpl_conn &cn = t.c.conns[m.conn_idx];
    CHECK(t.str(cn.helo) == "a.helo");
    CHECK(t.str(cn.proto) == "ESMTP");
}

TEST_CASE("a NOQUEUE reject of another sender is not folded into the mail", "[corpus]")
{
    std::string log =
        smtpd(7, "connect from a[192.0.2.1]") +
        smtpd(7, "NOQUEUE: reject: RCPT from a[192.0.2.1]: 554 no; from=<x@a> to=<r@b> "
                 "proto=SMTP helo=<h>") +
        smtpd(7, "CCCC1: client=a[192.0.2.1]") +
        daemon("qmgr", "CCCC1: from=<y@a>, size=5, nrcpt=1 (queue active)") +
        daemon("smtp", "CCCC1: to=<r@b>, relay=x, status=sent");
    corpus_t t(log);
    CHECK(t.c.stats.merged_txns == 0);
    CHECK(t.c.req_count_by_stage[RPL_STAGE_RCPT] == 2);
    CHECK(t.c.txn_count == 2);
}

TEST_CASE("mails without delivery lines get placeholder recipients", "[corpus]")
{
    std::string log = smtpd(5, "connect from l[127.0.0.1]") +
                      smtpd(5, "DDDD1: client=l[127.0.0.1], sasl_method=LOGIN, sasl_username=jordy") +
                      daemon("cleanup", "DDDD1: message-id=<x@y>") +
                      daemon("qmgr", "DDDD1: from=<j@d>, size=300, nrcpt=3 (queue active)") +
                      smtpd(5, "DDDD2: client=l[127.0.0.1], sasl_method=LOGIN, sasl_username=jordy");
    corpus_t t(log);
    CHECK(t.c.stats.mails == 2);
    CHECK(t.c.stats.mails_no_rcpt == 2);
    CHECK(t.c.stats.rcpts_unlogged == 4);
    auto rcpts = t.stage(RPL_STAGE_RCPT);
    REQUIRE(rcpts.size() == 4);
    CHECK(t.rcpt_of(*rcpts[0]) == "unlogged1@recipient.invalid");
    CHECK(t.rcpt_of(*rcpts[2]) == "unlogged3@recipient.invalid");
    CHECK(t.str(t.txn_of(*rcpts[0]).sasl_username) == "jordy");
    CHECK(t.str(t.txn_of(*rcpts[0]).sasl_method) == "LOGIN");
    // The second mail never reached cleanup or qmgr: no DATA, no END-OF-MESSAGE.
    CHECK(t.c.req_count_by_stage[RPL_STAGE_DATA] == 1);
    CHECK(t.c.req_count_by_stage[RPL_STAGE_EOM] == 1);
}

TEST_CASE("queue ids are reused after removed; unknown ids are orphans", "[corpus]")
{
    std::string log = smtpd(5, "connect from a[192.0.2.1]") +
                      smtpd(5, "EEEE1: client=a[192.0.2.1]") +
                      daemon("smtp", "EEEE1: to=<first@b>, relay=x, status=sent") +
                      daemon("qmgr", "EEEE1: removed") +
                      daemon("pickup", "FFFF1: uid=0 from=<root>") +
                      daemon("qmgr", "FFFF1: from=<root@h>, size=5, nrcpt=1 (queue active)") +
                      daemon("local", "FFFF1: to=<root@h>, relay=local, status=sent") +
                      daemon("smtp", "EEEE1: to=<late@b>, relay=x, status=sent") +
                      smtpd(5, "EEEE1: client=a[192.0.2.1]") +
                      daemon("smtp", "EEEE1: to=<second@b>, relay=x, status=sent");
    corpus_t t(log);
    CHECK(t.c.stats.mails == 2);
    CHECK(t.c.stats.orphan_lines == 3); // FFFF1 qmgr + local, EEEE1 after its removal
    auto rcpts = t.stage(RPL_STAGE_RCPT);
    REQUIRE(rcpts.size() == 2);
    CHECK(t.rcpt_of(*rcpts[0]) == "first@b");
    CHECK(t.rcpt_of(*rcpts[1]) == "second@b");
}

TEST_CASE("connections: implicit ones, reverse names, processes and services", "[corpus]")
{
    std::string log =
        smtpd(9, "GGGG1: client=a[192.0.2.1]") + // the log starts mid-connection
        smtpd(9, "warning: hostname fake.example does not resolve to address 192.0.2.2") +
        smtpd(9, "connect from unknown[192.0.2.2]") + smtpd(9, "GGGG2: client=unknown[192.0.2.2]") +
        H + "postfix/submission/smtpd[9]: connect from s[192.0.2.3]\n" + H +
        "postfix/submission/smtpd[9]: GGGG3: client=s[192.0.2.3], sasl_method=PLAIN, "
        "sasl_username=u\n";
    corpus_t t(log);
    CHECK(t.c.stats.implicit_conns == 1);
    CHECK(t.c.proc_count == 2); // same pid, another service: another process
    REQUIRE(t.c.conn_count == 3);
    CHECK(t.str(t.c.conns[1].client_name) == "unknown");
    CHECK(t.str(t.c.conns[1].reverse_name) == "fake.example");
    CHECK(t.c.conns[1].seq == 1);
    CHECK(t.str(t.c.procs[t.c.conns[2].proc_idx].syslog_name) == "postfix/submission");
}

TEST_CASE("recipients per mail: the limit at N and N+1", "[corpus]")
{
    for (uint32_t n : {RPL_RCPTS_PER_MAIL_MAX, RPL_RCPTS_PER_MAIL_MAX + 1}) {
        std::string log = smtpd(5, "connect from a[192.0.2.1]") + smtpd(5, "HHHH1: client=a[192.0.2.1]");
        for (uint32_t i = 0; i < n; i++)
            log += daemon("smtp", "HHHH1: to=<r" + std::to_string(i) + "@b>, relay=x, status=sent");
        corpus_t t(log, 1u);
        CHECK(t.c.req_count == RPL_RCPTS_PER_MAIL_MAX);
        CHECK(t.c.stats.rcpts_dropped == n - RPL_RCPTS_PER_MAIL_MAX);
    }
}

TEST_CASE("odd lines are counted and never fatal; times cross the new year", "[corpus]")
{
    std::string log = "garbage\n\nDec 31 23:59:59 mx dovecot: imap: hi\n" +
                      std::string("Dec 31 23:59:59 mx postfix/smtpd[1]: connect from a[192.0.2.1]\n") +
                      "Dec 31 23:59:59 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a[192.0.2.1]: "
                      "554 no; from=<s@a> to=<r1@b> proto=ESMTP helo=<h>\n"
                      "Jan  1 00:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a[192.0.2.1]: "
                      "554 no; from=<t@a> to=<r2@b> proto=ESMTP helo=<h>\n"
                      "Jan  1 00:00:02 mx postfix/smtpd[1]: NOQUEUE: reject: MAIL from a[192.0.2.1]: "
                      "554 no; from=<u@a> proto=ESMTP helo=<h>\n"
                      "Jan  1 00:00:03 mx postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from "
                      "a[192.0.2.1]: 554 no; from=<u@a> to=<r3@b> proto=ESMTP helo=<h>\n";
    corpus_t t(log, 7u, 2015);
    CHECK(t.c.stats.kind_count[RPL_LINE_GARBAGE] == 2);
    CHECK(t.c.stats.kind_count[RPL_LINE_OTHER_PROGRAM] == 1);
    CHECK(t.c.stats.year_wraps == 1);
    CHECK(t.c.stats.rejects_other == 1);
    REQUIRE(t.c.req_count == 2);
    CHECK(t.c.reqs[1].t_us - t.c.reqs[0].t_us == 2000000);
    CHECK(t.c.t_first_us ==
          (rpl_days_from_civil(2015, 12, 31) * 86400 + 86399) * 1000000LL);
}

TEST_CASE("requests are in time order and each transaction keeps its order", "[corpus]")
{
    std::string log;
    for (int i = 0; i < 50; i++) {
        std::string q = "QQ" + std::to_string(10000 + i);
        int pid = 100 + i % 7;
        char ts[32];
        snprintf(ts, sizeof(ts), "Oct 22 02:%02d:%02d mx ", i / 60, i % 60);
        log += ts + std::string("postfix/smtpd[") + std::to_string(pid) + "]: connect from a[192.0.2." +
               std::to_string(i) + "]\n";
        log += ts + std::string("postfix/smtpd[") + std::to_string(pid) + "]: " + q +
               ": client=a[192.0.2." + std::to_string(i) + "]\n";
        log += ts + std::string("postfix/qmgr[1]: ") + q + ": from=<s@a>, size=9, nrcpt=2 (queue active)\n";
        for (int r = 0; r < 2; r++)
            log += "Oct 22 05:00:00 mx postfix/smtp[2]: " + q + ": to=<r" + std::to_string(r) +
                   "@b>, relay=x, status=sent\n";
    }
    corpus_t t(log);
    REQUIRE(t.c.req_count == 200);
    std::map<uint32_t, std::vector<int>> per_txn;
    for (uint64_t i = 0; i < t.c.req_count; i++) {
        if (i > 0)
            CHECK(t.c.reqs[i - 1].t_us <= t.c.reqs[i].t_us);
        const rpl_req &r = t.c.reqs[i];
        per_txn[r.txn_idx].push_back(r.stage * 1000 + (int)r.rcpt_idx);
    }
    for (const auto &kv : per_txn)
        CHECK(kv.second == std::vector<int>({0, 1, 1000, 2000}));
}

// ---- the full shared maillogs against counts taken with regular expressions ----------------

namespace {

struct grep_counts {
    uint64_t mails = 0, rcpt = 0, data = 0, rejects = 0;
};

std::string strip_cr(const std::string &s)
{
    return !s.empty() && s.back() == '\r' ? s.substr(0, s.size() - 1) : s;
}

grep_counts grep_log(const std::string &path)
{
    std::regex client(R"(postfix/[^ ]*smtpd\[\d+\]: ([0-9A-Za-z]+): client=)");
    std::regex to(R"(: ([0-9A-Za-z]+): to=<([^>]*)>(, orig_to=<([^>]*)>)?)");
    std::regex qmgr(R"(postfix/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=\d+, nrcpt=(\d+))");
    std::regex msgid(R"(postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=)");
    std::regex reject(R"(postfix/[^ ]*smtpd\[\d+\]: [0-9A-Za-z]+: (reject|milter-reject): RCPT from .*; from=<[^>]*> to=<)");
    std::set<std::string> mails;
    std::map<std::string, std::set<std::string>> tos;
    std::map<std::string, unsigned> nrcpt;
    std::set<std::string> data;
    grep_counts g;
    for (const std::string &raw : rpltest::split_lines(rpltest::read_file(path))) {
        std::string line = strip_cr(raw);
        // A cheap substring test first: std::regex is slow, and very slow in sanitizer builds.
        auto has = [&line](const char *s) { return line.find(s) != std::string::npos; };
        std::smatch m;
        if (has("client=") && std::regex_search(line, m, client)) {
            mails.insert(m[1].str());
            g.mails++;
        } else if (has(": to=<") && !has("smtpd[") && std::regex_search(line, m, to)) {
            tos[m[1].str()].insert(m[4].matched && m[4].length() > 0 ? m[4].str() : m[2].str());
        } else if (has("nrcpt=") && std::regex_search(line, m, qmgr)) {
            nrcpt.emplace(m[1].str(), (unsigned)std::stoul(m[2].str()));
            data.insert(m[1].str());
        } else if (has("message-id=") && std::regex_search(line, m, msgid)) {
            data.insert(m[1].str());
        } else if (has("reject: RCPT from") && std::regex_search(line, m, reject)) {
            g.rejects++;
        }
    }
    for (const std::string &q : mails) {
        auto it = tos.find(q);
        if (it != tos.end())
            g.rcpt += it->second.size();
        else
            g.rcpt += nrcpt.count(q) ? std::max(nrcpt[q], 1u) : 1u;
        g.data += data.count(q);
    }
    g.rcpt += g.rejects;
    return g;
}

void check_full_log(const std::string &path)
{
    grep_counts g = grep_log(path);
    rpl_corpus c;
    rpl_load_opts o = {2015, 0};
    char err[256];
    const char *paths[] = {path.c_str()};
    REQUIRE(rpl_corpus_load(&c, paths, 1, &o, err, sizeof(err)) == 0);
    REQUIRE(rpl_corpus_build(&c, 7u) == 0);
    CHECK(c.stats.mails == g.mails);
    CHECK(c.stats.rejects_rcpt == g.rejects);
    CHECK(c.req_count_by_stage[RPL_STAGE_RCPT] == g.rcpt);
    CHECK(c.req_count_by_stage[RPL_STAGE_DATA] == g.data);
    CHECK(c.req_count_by_stage[RPL_STAGE_EOM] == g.data);
    CHECK(c.stats.kind_count[RPL_LINE_GARBAGE] == 0);
    for (uint64_t i = 1; i < c.req_count; i++)
        REQUIRE(c.reqs[i - 1].t_us <= c.reqs[i].t_us);
    rpl_corpus_free(&c);
}

} // namespace

TEST_CASE("kdent inbound MX log: every accepted mail and reject yields its requests",
          "[corpus][data]")
{
    std::string path = rpltest::maillog_dir() + "/kdent-postfix_log_analysis/mail.log";
    grep_counts g = grep_log(path);
    CHECK(g.mails == 489); // SOURCES.md: 489 client= lines
    check_full_log(path);
}

TEST_CASE("louisitvn SASL submission log: every accepted mail yields its requests",
          "[corpus][data]")
{
    std::string path = rpltest::maillog_dir() + "/louisitvn-pflgviewer/mail.log";
    grep_counts g = grep_log(path);
    CHECK(g.mails == 1417);
    check_full_log(path);
}
