// smtpverify_proto_test.cpp: SMTPVerify's pure parts (policy/plugins/smtpverify_proto.c): the
// SMTP reply parser fed in fragments of 1, 2, 5, 10 and 100 bytes, the reply size limit at N
// and N+1, malformed replies, the dialogue driven by scripted servers (the commands it sends,
// SIZE only when announced, HELO after a refused EHLO, the verdict of MAIL and RCPT), Net::SMTP's
// address cleaning and the OPENPGPKEY owner name.
#include <catch2/catch.hpp>

#include <cerrno>
#include <string>
#include <vector>

#include "plugins/smtpverify.h"

namespace
{

const size_t frag_sizes[] = {1, 2, 5, 10, 100};

struct Parsed {
    ssize_t rc = 0;
    pol_smtpv_reply rep{};
    std::string text;
    size_t err_pos = 0;
};

Parsed parse(const std::string &buf, size_t bytes_max = 4096)
{
    Parsed p;
    std::vector<char> text(bytes_max + 1);
    p.rc = pol_smtpv_reply_parse(buf.data(), buf.size(), bytes_max, &p.rep, text.data(),
                                 text.size(), &p.err_pos);
    p.text = text.data();
    return p;
}

// Feeds reply in fragments of frag bytes; every prefix short of the whole reply is incomplete.
Parsed parse_fragmented(const std::string &reply, size_t frag)
{
    std::string buf;
    for (size_t off = 0; off < reply.size(); off += frag) {
        buf += reply.substr(off, frag);
        Parsed p = parse(buf);
        if (buf.size() < reply.size()) {
            INFO("prefix of " << buf.size() << " bytes");
            REQUIRE(p.rc == 0);
        } else {
            return p;
        }
    }
    return parse(buf);
}

// A scripted server: its replies in order, as one byte stream the client reads in fragments
// of frag bytes. Returns the commands the dialogue sent (as the client would, one per reply).
struct Run {
    std::vector<std::string> commands;
    pol_smtpv_dialog dlg{};
    std::string verdict_text;
    int error = 0;
};

Run run_dialog(const std::string &server, size_t frag, bool size_known = true,
               long long size = 1234, const char *from = "me@example.net",
               const char *to = "joe@example.com")
{
    Run run;
    pol_smtpv_dialog_init(&run.dlg, "policy.example", from, to, size_known, size);
    std::vector<char> out(pol_smtpv_dialog_out_bytes(&run.dlg));
    std::vector<char> text(4097);
    std::string in;
    size_t off = 0;
    while (run.dlg.phase != POL_SMTPV_DONE) {
        pol_smtpv_reply rep;
        ssize_t rc = pol_smtpv_reply_parse(in.data(), in.size(), 4096, &rep, text.data(),
                                           text.size(), nullptr);
        if (rc < 0) {
            run.error = (int)rc;
            break;
        }
        if (rc == 0) {
            if (off >= server.size())
                break; // the server has nothing more to say
            in += server.substr(off, frag);
            off += frag;
            continue;
        }
        enum pol_smtpv_phase before = run.dlg.phase;
        size_t n = pol_smtpv_dialog_next(&run.dlg, &rep, out.data(), out.size());
        if (before == POL_SMTPV_MAIL || before == POL_SMTPV_RCPT)
            run.verdict_text = text.data();
        in.erase(0, (size_t)rc);
        if (n > 0)
            run.commands.emplace_back(out.data(), n);
    }
    return run;
}

const std::string ehlo_full = "250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                              "250-STARTTLS\r\n250 8BITMIME\r\n";

} // namespace

TEST_CASE("a one-line reply in every fragment size", "[smtpverify_proto]")
{
    const std::string r = "220 mx.example.com ESMTP ready\r\n";
    for (size_t f : frag_sizes) {
        INFO("fragment " << f);
        Parsed p = parse_fragmented(r, f);
        CHECK(p.rc == (ssize_t)r.size());
        CHECK(p.rep.code == 220);
        CHECK(p.text == "mx.example.com ESMTP ready");
        CHECK(p.rep.text_len == p.text.size());
    }
}

TEST_CASE("a multi-line EHLO reply: keywords after the first line, text joined",
          "[smtpverify_proto]")
{
    for (size_t f : frag_sizes) {
        INFO("fragment " << f);
        Parsed p = parse_fragmented(ehlo_full, f);
        CHECK(p.rc == (ssize_t)ehlo_full.size());
        CHECK(p.rep.code == 250);
        CHECK(p.rep.starttls);
        CHECK(p.rep.size);
        CHECK(p.text == "mx.example.com Hello PIPELINING SIZE 10240000 STARTTLS 8BITMIME");
    }
    // Keywords are case-insensitive, SIZE may come without a number, and a keyword only counts
    // as a whole word and not on the greeting line.
    Parsed p = parse("250-STARTTLS here\r\n250-size\r\n250 STARTTLSX\r\n");
    CHECK(p.rep.size);
    CHECK_FALSE(p.rep.starttls);
    p = parse("250-mx\r\n250-SIZEX\r\n250 starttls\r\n");
    CHECK(p.rep.starttls);
    CHECK_FALSE(p.rep.size);
}

TEST_CASE("line ends, a bare code, what follows a reply", "[smtpverify_proto]")
{
    Parsed p = parse("250-first\n250 second\n"); // bare LF, as Net::Cmd accepts
    CHECK(p.rc == 21);
    CHECK(p.text == "first second");
    p = parse("250\r\n");
    CHECK(p.rc == 5);
    CHECK(p.rep.code == 250);
    CHECK(p.text.empty());
    p = parse("550 5.1.1 no\r\n221 bye\r\n"); // the first reply only
    CHECK(p.rc == 14);
    CHECK(p.rep.code == 550);
    p = parse("250-a\r\n250-b\r\n"); // continuation lines only: incomplete
    CHECK(p.rc == 0);
    p = parse("");
    CHECK(p.rc == 0);
    p = parse("451-first\r\n452 last\r\n"); // Net::Cmd: the last line's code
    CHECK(p.rep.code == 452);
}

TEST_CASE("the reply size limit at N and N+1", "[smtpverify_proto]")
{
    const size_t max = 512;
    // A complete reply of exactly max bytes parses.
    std::string line = "250 " + std::string(max - 6, 'x') + "\r\n";
    REQUIRE(line.size() == max);
    Parsed p = parse(line, max);
    CHECK(p.rc == (ssize_t)max);
    CHECK(p.text.size() == max - 6);
    // One byte more: no complete reply fits.
    std::string over = "250 " + std::string(max - 5, 'x') + "\r\n";
    CHECK(parse(over, max).rc == -EMSGSIZE);
    // max bytes of an unfinished reply are already too many; max - 1 may still complete.
    CHECK(parse(over.substr(0, max), max).rc == -EMSGSIZE);
    CHECK(parse(over.substr(0, max - 1), max).rc == 0);
    // A multi-line reply counts all its lines.
    std::string ml;
    while (ml.size() < max)
        ml += "250-" + std::string(40, 'k') + "\r\n";
    CHECK(parse(ml + "250 end\r\n", max).rc == -EMSGSIZE);
}

TEST_CASE("malformed replies are refused with the bad line's position", "[smtpverify_proto]")
{
    struct Bad {
        const char *text;
        size_t pos;
    } bad[] = {
        {"hello\r\n", 0},      {"099 x\r\n", 0},  {"600 x\r\n", 0}, {"1xx ok\r\n", 0},
        {"25\r\n", 0},         {"2500 x\r\n", 0}, {"250x\r\n", 0},  {"250-ok\r\nbad\r\n", 8},
        {"250-ok\r\n\r\n", 8}, {"\r\n", 0},
    };
    for (const Bad &b : bad) {
        INFO(b.text);
        Parsed p = parse(b.text);
        CHECK(p.rc == -EPROTO);
        CHECK(p.err_pos == b.pos);
    }
    // Binary junk without a line end is incomplete until the limit, then too long.
    std::string junk(100, '\x01');
    CHECK(parse(junk).rc == 0);
    CHECK(parse(junk, 100).rc == -EMSGSIZE);
}

TEST_CASE("the text is cut at the caller's buffer, the length stays consistent",
          "[smtpverify_proto]")
{
    pol_smtpv_reply rep;
    char text[8];
    std::string r = "550 5.1.1 user unknown\r\n";
    CHECK(pol_smtpv_reply_parse(r.data(), r.size(), 4096, &rep, text, sizeof text, nullptr) ==
          (ssize_t)r.size());
    CHECK(std::string(text) == "5.1.1 u");
    CHECK(rep.text_len == 7);
}

TEST_CASE("the dialogue: EHLO, MAIL FROM with SIZE when announced, RCPT TO, QUIT",
          "[smtpverify_proto]")
{
    const std::string server = "220 mx ESMTP\r\n" + ehlo_full +
                               "250 2.1.0 Ok\r\n550 5.1.1 <joe@example.com>: unknown\r\n"
                               "221 2.0.0 Bye\r\n";
    for (size_t f : frag_sizes) {
        INFO("fragment " << f);
        Run run = run_dialog(server, f);
        REQUIRE(run.error == 0);
        REQUIRE(run.commands.size() == 4);
        CHECK(run.commands[0] == "EHLO policy.example\r\n");
        CHECK(run.commands[1] == "MAIL FROM:<me@example.net> SIZE=1234\r\n");
        CHECK(run.commands[2] == "RCPT TO:<joe@example.com>\r\n");
        CHECK(run.commands[3] == "QUIT\r\n");
        CHECK(run.dlg.phase == POL_SMTPV_DONE);
        CHECK(run.dlg.hello_done);
        CHECK(run.dlg.starttls);
        CHECK(run.dlg.size_sent);
        CHECK(run.dlg.code == 550);
        CHECK(run.dlg.code_from == POL_SMTPV_RCPT);
        CHECK(run.verdict_text == "5.1.1 <joe@example.com>: unknown");
    }
}

TEST_CASE("no SIZE announced or no size known: MAIL FROM without it", "[smtpverify_proto]")
{
    const std::string tail = "250 ok\r\n250 ok\r\n221 bye\r\n";
    Run run = run_dialog("220 mx\r\n250-mx\r\n250 PIPELINING\r\n" + tail, 5);
    REQUIRE(run.commands.size() == 4);
    CHECK(run.commands[1] == "MAIL FROM:<me@example.net>\r\n");
    CHECK_FALSE(run.dlg.starttls);
    CHECK(run.dlg.code == 250);
    run = run_dialog("220 mx\r\n" + ehlo_full + tail, 5, false);
    CHECK(run.commands[1] == "MAIL FROM:<me@example.net>\r\n");
    run = run_dialog("220 mx\r\n" + ehlo_full + tail, 5, true, 0, "", "postmaster");
    CHECK(run.commands[1] == "MAIL FROM:<> SIZE=0\r\n"); // the null sender, size 0 is known
    CHECK(run.commands[2] == "RCPT TO:<postmaster>\r\n");
}

TEST_CASE("a refused EHLO falls back to HELO: STARTTLS known as absent", "[smtpverify_proto]")
{
    Run run = run_dialog("220 old\r\n502 5.5.1 what\r\n250 old\r\n250 ok\r\n450 4.2.0 later\r\n"
                         "221 bye\r\n",
                         2);
    REQUIRE(run.commands.size() == 5);
    CHECK(run.commands[0] == "EHLO policy.example\r\n");
    CHECK(run.commands[1] == "HELO policy.example\r\n");
    CHECK(run.commands[2] == "MAIL FROM:<me@example.net>\r\n");
    CHECK(run.dlg.hello_done);
    CHECK_FALSE(run.dlg.starttls);
    CHECK(run.dlg.code == 450);
    CHECK(run.verdict_text == "4.2.0 later");
}

TEST_CASE("no verdict: refused greeting or HELO; a refused MAIL FROM answers", "[smtpverify_proto]")
{
    Run run = run_dialog("554 5.3.2 go away\r\n", 1);
    CHECK(run.commands.empty());
    CHECK(run.dlg.phase == POL_SMTPV_DONE);
    CHECK(run.dlg.code == 0);
    CHECK(run.dlg.fail_code == 554);
    CHECK(run.dlg.fail_phase == POL_SMTPV_GREETING);
    CHECK_FALSE(run.dlg.hello_done);

    run = run_dialog("220 x\r\n500 no\r\n501 no\r\n", 100);
    CHECK(run.commands.size() == 2);
    CHECK(run.dlg.code == 0);
    CHECK(run.dlg.fail_code == 501);
    CHECK(run.dlg.fail_phase == POL_SMTPV_HELO);

    run = run_dialog("220 x\r\n250 x\r\n553 5.7.1 sender refused\r\n221 bye\r\n", 10);
    REQUIRE(run.commands.size() == 3);
    CHECK(run.commands[2] == "QUIT\r\n"); // no RCPT after a refused sender
    CHECK(run.dlg.code == 553);
    CHECK(run.dlg.code_from == POL_SMTPV_MAIL);
    CHECK(run.verdict_text == "5.7.1 sender refused");
}

TEST_CASE("a server that stops talking leaves the dialogue where it was", "[smtpverify_proto]")
{
    Run run = run_dialog("220 x\r\n" + ehlo_full + "250 ok\r\n", 5);
    CHECK(run.dlg.phase == POL_SMTPV_RCPT);
    CHECK(run.dlg.code == 0);
    run = run_dialog("220 x\r\n250 ok\r\nnot smtp\r\n", 5);
    CHECK(run.error == -EPROTO);
    CHECK(run.dlg.phase == POL_SMTPV_MAIL);
}

TEST_CASE("Net::SMTP's address cleaning and the safety check", "[smtpverify_proto]")
{
    struct Case {
        const char *in, *out;
    } cases[] = {
        {"joe@example.com", "joe@example.com"},
        {"<joe@example.com>", "joe@example.com"},
        {"  < joe@example.com >  ", "joe@example.com"},
        {"<>", ""},
        {"", ""},
        {"<<a>>", "<a>"},
    };
    for (const Case &c : cases) {
        const char *s = c.in;
        size_t len = pol_smtpv_addr_clean(&s, strlen(s));
        CHECK(std::string(s, len) == c.out);
    }
    CHECK(pol_smtpv_addr_ok("joe@example.com", 15));
    CHECK_FALSE(pol_smtpv_addr_ok("joe\r\nRSET", 10));
    CHECK_FALSE(pol_smtpv_addr_ok("a\x7f", 2));
    CHECK_FALSE(pol_smtpv_addr_ok("<a>", 3));
    CHECK(pol_smtpv_addr_ok("", 0));
}

TEST_CASE("the OPENPGPKEY owner name: hex SHA2-224 of the local part", "[smtpverify_proto]")
{
    char out[128];
    size_t n = pol_smtpv_openpgp_name("joe", 3, "example.com", 11, out, sizeof out);
    CHECK(std::string(out, n) ==
          "c7e8f969fb2abbbe56a301c5bd65ca0ab772788b274d244a55e5e7f9._openpgpkey.example.com");
    n = pol_smtpv_openpgp_name("", 0, "x", 1, out, sizeof out);
    CHECK(std::string(out) ==
          "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f._openpgpkey.x");
    // The buffer limit: exactly enough, one byte short.
    size_t need = 56 + 13 + 11 + 1;
    CHECK(pol_smtpv_openpgp_name("joe", 3, "example.com", 11, out, need) == need - 1);
    CHECK(pol_smtpv_openpgp_name("joe", 3, "example.com", 11, out, need - 1) == 0);
}
