// maillog_test.cpp: the Postfix syslog line parser and the year clock (bench/replay/maillog.c).
// Real lines come from the whyscream fixtures (one line per case, with the fields a grok
// parser extracts) and the fail2ban sample (with the time of each line); every parse also runs
// on a copy flush against a guard page, and on every truncation of the line.
//
// GCC 12 with -fsanitize=address warns -Wmaybe-uninitialized inside libstdc++'s <regex>
// (std::function moved out of _NFA's __tmp state; a false positive, GCC PR 105616), which
// -Werror turns into a failed sanitizer build. Ignored for this file, before any header
// pulls in <functional>.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <catch2/catch.hpp>

#include <dirent.h>

#include <algorithm>
#include <memory>
#include <regex>
#include <string>

extern "C" {
#include "maillog.h"
}

#include "replay_testutil.h"

using rpltest::guarded;

namespace {

std::string sl(struct rpl_slice s)
{
    return std::string(s.ptr != nullptr ? s.ptr : "", s.len);
}

// Parses a copy placed against a guard page, so any read past the end faults.
rpl_line_kind parse(const std::string &line, rpl_line *out)
{
    // The slices of *out point into the guarded copy: keep it until the next call.
    static std::unique_ptr<guarded> g;
    g.reset(new guarded(line));
    return rpl_line_parse(g->data(), line.size(), out);
}

const char *daemon_of_pattern(const std::string &pattern)
{
    static const std::pair<const char *, const char *> map[] = {
        {"POSTFIX_SMTPD", "smtpd"},     {"POSTFIX_CLEANUP", "cleanup"},
        {"POSTFIX_QMGR", "qmgr"},       {"POSTFIX_SMTP", "smtp"},
        {"POSTFIX_LMTP", "lmtp"},       {"POSTFIX_LOCAL", "local"},
        {"POSTFIX_PIPE", "pipe"},       {"POSTFIX_VIRTUAL", "virtual"},
        {"POSTFIX_ERROR", "error"},     {"POSTFIX_DISCARD", "discard"},
        {"POSTFIX_ANVIL", "anvil"},     {"POSTFIX_BOUNCE", "bounce"},
        {"POSTFIX_POSTSCREEN", "postscreen"}, {"POSTFIX_DNSBLOG", "dnsblog"},
        {"POSTFIX_MASTER", "master"},   {"POSTFIX_PICKUP", "pickup"},
        {"POSTFIX_SCACHE", "scache"},   {"POSTFIX_TLSMGR", "tlsmgr"},
    };
    for (const auto &m : map)
        if (pattern.find(std::string("%{") + m.first + "}") != std::string::npos)
            return m.second;
    return nullptr;
}

std::vector<std::string> fixture_files()
{
    std::vector<std::string> out;
    std::string dir = rpltest::maillog_dir() + "/whyscream-postfix-grok-patterns/test";
    DIR *d = opendir(dir.c_str());
    if (d == nullptr)
        return out;
    while (struct dirent *e = readdir(d))
        if (std::string(e->d_name).find(".yaml") != std::string::npos)
            out.push_back(dir + "/" + e->d_name);
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace

TEST_CASE("classic timestamps", "[maillog]")
{
    rpl_ltime t;
    CHECK(rpl_ltime_parse("Oct 22 02:12:45 host", 20, &t) == 15);
    CHECK(t.kind == RPL_TIME_CLASSIC);
    CHECK(t.mon == 10);
    CHECK(t.day == 22);
    CHECK(t.sec_of_day == 2 * 3600 + 12 * 60 + 45);
    CHECK(t.usec == 0);

    CHECK(rpl_ltime_parse("Oct  2 23:59:59 h", 17, &t) == 15); // space-padded day
    CHECK(t.day == 2);
    CHECK(t.sec_of_day == 86399);
    CHECK(rpl_ltime_parse("Aug 3 15:30:49 h", 16, &t) == 14); // unpadded (a fail2ban line)
    CHECK(t.day == 3);
    CHECK(rpl_ltime_parse("Jan 01 00:00:00.25 h", 20, &t) == 18); // high-precision classic
    CHECK(t.usec == 250000);
    CHECK(rpl_ltime_parse("Dec 31 23:59:60 h", 17, &t) == 15); // leap second folds into :59
    CHECK(t.sec_of_day == 86399);

    for (const char *bad : {"Foo 22 02:12:45 h", "Oct 32 02:12:45 h", "Oct 0 02:12:45 h",
                            "Oct 22 24:00:00 h", "Oct 22 02:60:00 h", "Oct 22 2:12:45 h",
                            "Oct22 02:12:45 h", "Oct 22 02:12", "", "O"}) {
        INFO(bad);
        CHECK(rpl_ltime_parse(bad, strlen(bad), &t) == 0);
    }
}

TEST_CASE("RFC 3339 timestamps", "[maillog]")
{
    rpl_ltime t;
    const char *z = "2026-11-24T01:02:03.456789+00:00 host";
    CHECK(rpl_ltime_parse(z, strlen(z), &t) == 32);
    CHECK(t.kind == RPL_TIME_ABS);
    // 2026-11-24 is day 20781 since the epoch.
    CHECK(t.epoch_us == ((int64_t)20781 * 86400 + 3723) * 1000000 + 456789);

    const char *plus = "2026-11-24T02:02:03+01:00 h";
    CHECK(rpl_ltime_parse(plus, strlen(plus), &t) == 25);
    CHECK(t.epoch_us == ((int64_t)20781 * 86400 + 3723) * 1000000);
    const char *zulu = "2026-11-24T01:02:03Z h";
    CHECK(rpl_ltime_parse(zulu, strlen(zulu), &t) == 20);
    CHECK(t.epoch_us == ((int64_t)20781 * 86400 + 3723) * 1000000);
    const char *minus = "2026-11-23T20:32:03.5-04:30 h";
    CHECK(rpl_ltime_parse(minus, strlen(minus), &t) == 27);
    CHECK(t.epoch_us == ((int64_t)20781 * 86400 + 3723) * 1000000 + 500000);

    for (const char *bad : {"2026-13-24T01:02:03Z h", "2026-11-24 01:02:03Z h",
                            "2026-11-24T01:02:03 h", "2026-11-24T01:02:03+0100 h",
                            "2026-11-24T25:02:03Z h", "20261124T010203Z h"}) {
        INFO(bad);
        CHECK(rpl_ltime_parse(bad, strlen(bad), &t) == 0);
    }
}

TEST_CASE("days_from_civil", "[maillog]")
{
    CHECK(rpl_days_from_civil(1970, 1, 1) == 0);
    CHECK(rpl_days_from_civil(2000, 3, 1) == 11017);
    CHECK(rpl_days_from_civil(2024, 2, 29) + 1 == rpl_days_from_civil(2024, 3, 1));
    CHECK(rpl_days_from_civil(2023, 2, 28) + 1 == rpl_days_from_civil(2023, 3, 1));
    CHECK(rpl_days_from_civil(1969, 12, 31) == -1);
}

TEST_CASE("years of classic timestamps", "[maillog]")
{
    rpl_ltime t;
    auto at = [&](const char *s) {
        REQUIRE(rpl_ltime_parse(s, strlen(s), &t) > 0);
        return &t;
    };
    const int64_t day_us = 86400LL * 1000000;
    // Reference: 2026-01-10 12:00:00 UTC (a file last written in January).
    int64_t ref = rpl_days_from_civil(2026, 1, 10) * 86400 + 43200;

    SECTION("a log that starts in December of the previous year wraps into January")
    {
        rpl_clock c;
        rpl_clock_init(&c, 0, ref);
        CHECK(rpl_clock_resolve(&c, at("Dec 30 10:00:00")) ==
              rpl_days_from_civil(2025, 12, 30) * day_us + 36000LL * 1000000);
        CHECK(rpl_clock_resolve(&c, at("Dec 31 23:59:59")) ==
              rpl_days_from_civil(2025, 12, 31) * day_us + 86399LL * 1000000);
        CHECK(rpl_clock_resolve(&c, at("Jan  1 00:00:01")) ==
              rpl_days_from_civil(2026, 1, 1) * day_us + 1000000);
        CHECK(c.wrap_count == 1);
    }
    SECTION("a line not after the reference keeps the reference's year")
    {
        rpl_clock c;
        rpl_clock_init(&c, 0, ref);
        CHECK(rpl_clock_resolve(&c, at("Jan 10 12:00:00")) ==
              rpl_days_from_civil(2026, 1, 10) * day_us + 43200LL * 1000000);
    }
    SECTION("a small step back does not start a new year")
    {
        rpl_clock c;
        rpl_clock_init(&c, 2015, 0);
        rpl_clock_resolve(&c, at("Dec  1 00:00:00"));
        CHECK(rpl_clock_resolve(&c, at("Nov 30 23:59:59")) ==
              rpl_days_from_civil(2015, 11, 30) * day_us + 86399LL * 1000000);
        CHECK(c.wrap_count == 0);
    }
    SECTION("a fixed year is the first line's and carries over files")
    {
        rpl_clock c;
        rpl_clock_init(&c, 2024, 0);
        CHECK(rpl_clock_resolve(&c, at("Feb 29 01:00:00")) ==
              rpl_days_from_civil(2024, 2, 29) * day_us + 3600LL * 1000000);
        rpl_clock_resolve(&c, at("Dec 31 00:00:00"));
        rpl_clock_next_file(&c, ref);
        CHECK(rpl_clock_resolve(&c, at("Jan  2 00:00:00")) ==
              rpl_days_from_civil(2025, 1, 2) * day_us);
    }
    SECTION("absolute timestamps pass through")
    {
        rpl_clock c;
        rpl_clock_init(&c, 0, ref);
        const char *s = "2026-11-24T01:02:03Z";
        REQUIRE(rpl_ltime_parse(s, strlen(s), &t) > 0);
        CHECK(rpl_clock_resolve(&c, &t) == t.epoch_us);
    }
}

TEST_CASE("headers: Postfix, other programs, garbage", "[maillog]")
{
    rpl_line l;
    CHECK(parse("Oct 22 02:13:41 conch postfix/smtpd[26895]: connect from jurann.biz[77.95.228.43]",
                &l) == RPL_LINE_CONNECT);
    CHECK(sl(l.host) == "conch");
    CHECK(sl(l.syslog_name) == "postfix");
    CHECK(sl(l.daemon_name) == "smtpd");
    CHECK(l.pid == 26895);
    CHECK(sl(l.client_name) == "jurann.biz");
    CHECK(sl(l.client_addr) == "77.95.228.43");

    CHECK(parse("Sep  6 00:44:56 trianon postfix/submission/smtpd[11538]: connect from "
                "unknown[2001:db8::1]",
                &l) == RPL_LINE_CONNECT);
    CHECK(sl(l.syslog_name) == "postfix/submission");
    CHECK(sl(l.client_addr) == "2001:db8::1");

    CHECK(parse("2026-11-24T01:02:03.456789+00:00 mx postfix-in/smtpd[7]: disconnect from "
                "a.example[192.0.2.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
                &l) == RPL_LINE_DISCONNECT);
    CHECK(sl(l.syslog_name) == "postfix-in");
    CHECK(l.time.kind == RPL_TIME_ABS);

    CHECK(parse("Dec 15 07:46:27 phoenix postfix/qmgr[28945]: B12B9110102D: removed\r", &l) ==
          RPL_LINE_REMOVED); // CRLF export
    CHECK(sl(l.queue_id) == "B12B9110102D");

    for (const char *other :
         {"Oct 22 02:12:45 conch dovecot: imap-login: Login: user=<kdent>",
          "Oct 22 02:12:45 conch CRON[1234]: (root) CMD (run-parts /etc/cron.hourly)",
          "Oct 22 02:12:45 conch kernel: [12345.678] eth0: link up",
          "Oct 22 02:12:45 conch amavis/foo[12]: (12-01) Passed CLEAN",
          "Oct 22 02:12:45 conch postfix/smtpd: connect from x[1.2.3.4]"}) { // no pid
        INFO(other);
        CHECK(parse(other, &l) == RPL_LINE_OTHER_PROGRAM);
    }
    for (const char *garbage :
         {"", "garbage", "# failJSON: { \"time\": \"2005-02-21T09:21:54\" }",
          "Oct 22 02:12:45", "Oct 22 02:12:45 ", "Oct 22 02:12:45 conch",
          "Oct 22 02:12:45 conch -- MARK --", "Oct 22 02:12:45 conch postfix/smtpd[12x]: hi",
          "Oct 22 02:12:45 conch postfix/smtpd[99999999999]: hi",
          "\x1f\x8b\x08\x00\x00\x00\x00\x00"}) {
        INFO(garbage);
        CHECK(parse(garbage, &l) == RPL_LINE_GARBAGE);
    }
    CHECK(parse("Oct 22 02:12:45 conch postfix/anvil[26709]: statistics: max cache size 2", &l) ==
          RPL_LINE_POSTFIX_OTHER);
    CHECK(l.daemon == RPL_DAEMON_OTHER);
}

TEST_CASE("smtpd, cleanup, qmgr and delivery messages", "[maillog]")
{
    rpl_line l;
    const std::string h = "Dec 15 12:14:21 phoenix ";
    CHECK(parse(h + "postfix/smtpd[6270]: 7C220110013E: client=phoenix.shared.net.au[127.0.0.1], "
                    "sasl_method=LOGIN, sasl_username=jordy",
                &l) == RPL_LINE_CLIENT);
    CHECK(sl(l.queue_id) == "7C220110013E");
    CHECK(sl(l.client_name) == "phoenix.shared.net.au");
    CHECK(sl(l.client_addr) == "127.0.0.1");
    CHECK(sl(l.sasl_method) == "LOGIN");
    CHECK(sl(l.sasl_username) == "jordy");
    CHECK(sl(l.sasl_sender).empty());

    CHECK(parse(h + "postfix/smtpd[1]: 4104E3D: client=a.example[192.0.2.1], sasl_method=PLAIN, "
                    "sasl_username=u@example.org, sasl_sender=s@example.org, orig_queue_id=X1",
                &l) == RPL_LINE_CLIENT);
    CHECK(sl(l.sasl_username) == "u@example.org");
    CHECK(sl(l.sasl_sender) == "s@example.org");

    CHECK(parse(h + "postfix/smtpd[26895]: NOQUEUE: reject: RCPT from jurann.biz[77.95.228.43]: "
                    "554 5.7.1 Service unavailable; Client host [77.95.228.43] blocked using "
                    "zen.spamhaus.org; http://www.spamhaus.org/sbl/query/SBLCSS; "
                    "from=<botanised@jurann.biz> to=<kdent@seaglass.com> proto=ESMTP "
                    "helo=<jurann.biz>",
                &l) == RPL_LINE_REJECT);
    CHECK(sl(l.queue_id).empty());
    CHECK(sl(l.action) == "reject");
    CHECK(sl(l.stage) == "RCPT");
    CHECK(sl(l.sender) == "botanised@jurann.biz");
    CHECK(sl(l.recipient) == "kdent@seaglass.com");
    CHECK(sl(l.proto) == "ESMTP");
    CHECK(sl(l.helo) == "jurann.biz");

    // A status text that itself says "from=<": the last "; from=<" is the key-value part.
    CHECK(parse(h + "postfix/smtpd[1]: 00ADB3C0899: reject: RCPT from a[192.0.2.1]: 550 5.1.1 "
                    "<x>: odd; from=<fake> text; from=<> to=<sales@server.com> proto=SMTP helo=",
                &l) == RPL_LINE_REJECT);
    CHECK(sl(l.queue_id) == "00ADB3C0899");
    CHECK(l.has_sender);
    CHECK(sl(l.sender).empty());
    CHECK(sl(l.recipient) == "sales@server.com");
    CHECK(l.has_helo);
    CHECK(sl(l.helo).empty());

    CHECK(parse(h + "postfix/cleanup[6273]: 7C220110013E: message-id=<1c76@x>", &l) ==
          RPL_LINE_MESSAGE_ID);
    CHECK(parse(h + "postfix/qmgr[28945]: 7C220110013E: from=<patrim@d.co.uk>, size=21633, "
                    "nrcpt=3 (queue active)",
                &l) == RPL_LINE_QMGR_FROM);
    CHECK(sl(l.sender) == "patrim@d.co.uk");
    CHECK(l.size == 21633);
    CHECK(l.nrcpt == 3);
    CHECK(parse(h + "postfix/qmgr[1]: EF0771103AB0: from=<p@d>, status=expired, returned to "
                    "sender",
                &l) == RPL_LINE_POSTFIX_OTHER);
    CHECK(parse(h + "postfix/smtp[1]: 0D9633D: to=<jos@example.com>, orig_to=<bestuur@example."
                    "com>, relay=mail1.example.net[10.74.103.11]:25, delay=11, status=sent (250)",
                &l) == RPL_LINE_DELIVERY);
    CHECK(sl(l.recipient) == "jos@example.com");
    CHECK(sl(l.orig_recipient) == "bestuur@example.com");
    CHECK(parse(h + "postfix/local[1]: 0D9633D: to=<root@h>, relay=local, status=sent", &l) ==
          RPL_LINE_DELIVERY);
    CHECK(sl(l.orig_recipient).empty());

    CHECK(parse(h + "postfix/smtpd[1]: warning: hostname exemple.com does not resolve to "
                    "address 185.14.29.32",
                &l) == RPL_LINE_REVERSE_NAME);
    CHECK(sl(l.reverse_name) == "exemple.com");
    CHECK(sl(l.client_addr) == "185.14.29.32");
    CHECK(parse(h + "postfix/smtpd[1]: warning: hostname h.example does not resolve to address "
                    "2001:db8::5: Name or service not known",
                &l) == RPL_LINE_REVERSE_NAME);
    CHECK(sl(l.client_addr) == "2001:db8::5");
    CHECK(parse(h + "postfix/smtpd[1]: warning: 122.179.84.12: address not listed for hostname "
                    "abts.airtelbroadband.in",
                &l) == RPL_LINE_REVERSE_NAME);
    CHECK(sl(l.reverse_name) == "abts.airtelbroadband.in");
    CHECK(sl(l.client_addr) == "122.179.84.12");
}

TEST_CASE("whyscream fixtures: fields agree with the grok patterns' results", "[maillog][data]")
{
    std::vector<std::string> files = fixture_files();
    REQUIRE(files.size() >= 150); // 191 fixtures in shared/data
    size_t postfix_lines = 0, checked_fields = 0;
    for (const std::string &path : files) {
        rpltest::fixture fx = rpltest::read_fixture(path);
        const char *daemon = daemon_of_pattern(fx.pattern);
        if (daemon == nullptr || fx.data.find('\n') != std::string::npos)
            continue; // a pattern for a sub-part of a message, or a multi-line message
        std::string line = "Oct 22 02:12:45 mx postfix/" + std::string(daemon) + "[123]: " + fx.data;
        INFO(fx.name << ": " << line);
        rpl_line l;
        rpl_line_kind k = parse(line, &l);
        REQUIRE(k != RPL_LINE_GARBAGE);
        REQUIRE(k != RPL_LINE_OTHER_PROGRAM);
        postfix_lines++;
        auto res = [&](const char *key) -> const std::string * {
            auto it = fx.results.find(key);
            return it == fx.results.end() ? nullptr : &it->second;
        };
        bool has_qid = k == RPL_LINE_CLIENT || k == RPL_LINE_MESSAGE_ID ||
                       k == RPL_LINE_QMGR_FROM || k == RPL_LINE_DELIVERY || k == RPL_LINE_REMOVED ||
                       (k == RPL_LINE_REJECT && l.queue_id.len > 0);
        if (has_qid && res("postfix_queueid") != nullptr) {
            CHECK(sl(l.queue_id) == *res("postfix_queueid"));
            checked_fields++;
        }
        bool has_client = k == RPL_LINE_CONNECT || k == RPL_LINE_DISCONNECT ||
                          k == RPL_LINE_CLIENT || k == RPL_LINE_REJECT;
        if (has_client && res("postfix_client_ip") != nullptr) {
            CHECK(sl(l.client_addr) == *res("postfix_client_ip"));
            CHECK(sl(l.client_name) == *res("postfix_client_hostname"));
            checked_fields += 2;
        }
        if (k == RPL_LINE_REJECT && res("postfix_smtp_stage") != nullptr) {
            CHECK(sl(l.stage) == *res("postfix_smtp_stage"));
            checked_fields++;
        }
        if (k == RPL_LINE_REJECT && res("postfix_action") != nullptr) {
            CHECK(sl(l.action) == *res("postfix_action"));
            checked_fields++;
        }
        // "from=<S> to=<R> proto=P helo=<H>" as grok's keyvalue_data has it.
        if (k == RPL_LINE_REJECT && res("postfix_keyvalue_data") != nullptr && l.has_recipient) {
            std::string kv = *res("postfix_keyvalue_data");
            std::smatch m;
            if (std::regex_search(kv, m, std::regex("to=<([^>]*)>"))) {
                CHECK(sl(l.recipient) == m[1].str());
                checked_fields++;
            }
            if (std::regex_search(kv, m, std::regex("helo=<([^>]*)>"))) {
                CHECK(sl(l.helo) == m[1].str());
                checked_fields++;
            }
        }
        if (k == RPL_LINE_QMGR_FROM) {
            std::smatch m;
            std::string kv = *res("postfix_keyvalue_data");
            REQUIRE(std::regex_search(kv, m,
                                      std::regex("from=<([^>]*)>, size=([0-9]+), nrcpt=([0-9]+)")));
            CHECK(sl(l.sender) == m[1].str());
            CHECK(l.size == std::stoull(m[2].str()));
            CHECK(l.nrcpt == std::stoul(m[3].str()));
            checked_fields += 3;
        }
        if (k == RPL_LINE_DELIVERY && res("postfix_keyvalue_data") != nullptr) {
            std::smatch m;
            std::string kv = *res("postfix_keyvalue_data");
            REQUIRE(std::regex_search(kv, m, std::regex("^to=<([^>]*)>")));
            CHECK(sl(l.recipient) == m[1].str());
            if (std::regex_search(kv, m, std::regex("orig_to=<([^>]*)>")))
                CHECK(sl(l.orig_recipient) == m[1].str());
            checked_fields++;
        }
    }
    CHECK(postfix_lines >= 150);
    CHECK(checked_fields >= 100);
}

TEST_CASE("fail2ban sample: times and client addresses", "[maillog][data]")
{
    std::string text = rpltest::read_file(rpltest::maillog_dir() + "/fail2ban/postfix");
    REQUIRE(!text.empty());
    std::regex json("\"time\": \"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\"");
    std::regex host("\"host\": \"([^\"]+)\"");
    std::string pending_json;
    size_t lines = 0, with_addr = 0, with_time = 0;
    for (const std::string &line : rpltest::split_lines(text)) {
        if (line.rfind("# failJSON:", 0) == 0) {
            pending_json = line;
            continue;
        }
        rpl_line l;
        rpl_line_kind k = parse(line, &l);
        if (line.empty() || line[0] == '#') {
            CHECK(k == RPL_LINE_GARBAGE);
            continue;
        }
        INFO(line);
        REQUIRE(k != RPL_LINE_GARBAGE);
        lines++;
        std::smatch m;
        if (std::regex_search(pending_json, m, json)) { // a few "match": false entries have none
            rpl_clock c;
            rpl_clock_init(&c, std::stoi(m[1].str()), 0);
            int64_t day = rpl_days_from_civil(std::stoi(m[1].str()),
                                              (unsigned)std::stoi(m[2].str()),
                                              (unsigned)std::stoi(m[3].str()));
            int64_t sec = std::stoi(m[4].str()) * 3600 + std::stoi(m[5].str()) * 60 +
                          std::stoi(m[6].str());
            CHECK(rpl_clock_resolve(&c, &l.time) == (day * 86400 + sec) * 1000000LL);
            with_time++;
        }
        bool has_client = k == RPL_LINE_CONNECT || k == RPL_LINE_DISCONNECT ||
                          k == RPL_LINE_CLIENT || k == RPL_LINE_REJECT;
        if (has_client && pending_json.find("\"match\": true") != std::string::npos &&
            std::regex_search(pending_json, m, host)) {
            CHECK(sl(l.client_addr) == m[1].str());
            with_addr++;
        }
    }
    CHECK(lines == 63);
    CHECK(with_time >= 55);
    CHECK(with_addr >= 15);
}

TEST_CASE("every truncation of real lines parses without reading past the end", "[maillog]")
{
    const char *samples[] = {
        "Oct 22 02:13:42 conch postfix/smtpd[26895]: NOQUEUE: reject: RCPT from jurann.biz[77.95."
        "228.43]: 554 5.7.1 Service unavailable; from=<b@jurann.biz> to=<k@seaglass.com> "
        "proto=ESMTP helo=<jurann.biz>",
        "Dec 15 12:14:21 phoenix postfix/smtpd[6270]: 7C220110013E: client=phoenix[127.0.0.1], "
        "sasl_method=LOGIN, sasl_username=jordy, sasl_sender=x",
        "Dec 15 12:14:21 phoenix postfix/qmgr[1]: 7C220110013E: from=<p@d>, size=21633, nrcpt=1 "
        "(queue active)",
        "Dec 15 12:14:26 phoenix postfix/smtp[6274]: 7C220110013E: to=<a@b>, orig_to=<c@d>, "
        "relay=x[1.2.3.4]:25, status=sent",
        "2026-11-24T01:02:03.456789+00:00 h postfix/smtpd[1]: warning: hostname x does not "
        "resolve to address 1.2.3.4: y",
        "Oct 22 02:38:35 conch postfix/smtpd[26965]: warning: 122.179.84.12: address not listed "
        "for hostname abts",
    };
    for (const char *s : samples) {
        std::string full(s);
        for (size_t n = 0; n <= full.size(); n++) {
            std::string cut = full.substr(0, n);
            guarded g(cut);
            rpl_line l;
            rpl_line_kind k = rpl_line_parse(g.data(), n, &l);
            CHECK((unsigned)k < RPL_LINE_KIND_COUNT);
        }
    }
}
