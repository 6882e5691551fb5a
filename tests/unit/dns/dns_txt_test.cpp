// dns_txt_test.cpp: Net::DNS's TXT presentation (policy/dns_text.c, pol_dns_txt_rdstring), which
// becomes the %INFO% of RBL, RBLAction and DBL replies: a table of cases whose expected texts
// were printed by Net::DNS 1.36 (quoting on space ( ) ; and the empty string, \DDD for
// controls, ", \ (then written \" and \\), DEL, 192, 193, 255, lax UTF-8 with U+FFFD for
// malformed sequences, the 80-column wrap), then 3000 random rdata compared with Net::DNS
// itself run once over all of them (skipped, or failed in CI, without Perl's Net::DNS).
#include <catch2/catch.hpp>

extern "C" {
#include "pol/dns.h"
}

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace
{

std::string rdstring(const std::string &rdata)
{
    size_t cap = pol_dns_txt_rdstring_bytes(rdata.size());
    std::string out(cap, '\0');
    size_t n = pol_dns_txt_rdstring(reinterpret_cast<const unsigned char *>(rdata.data()),
                                    rdata.size(), &out[0], cap);
    out.resize(n);
    return out;
}

// <len><bytes>... from strings.
std::string txt(const std::vector<std::string> &strings)
{
    std::string r;
    for (auto &s : strings) {
        r += char(s.size());
        r += s;
    }
    return r;
}

std::string hex(const std::string &s)
{
    static const char d[] = "0123456789abcdef";
    std::string h;
    for (unsigned char c : s) {
        h += d[c >> 4];
        h += d[c & 15];
    }
    return h;
}

std::string unhex(const std::string &h)
{
    std::string s;
    for (size_t i = 0; i + 1 < h.size(); i += 2)
        s += char(std::stoi(h.substr(i, 2), nullptr, 16));
    return s;
}

bool in_ci()
{
    const char *ci = getenv("CI");
    return ci && ci[0] && std::string(ci) != "0";
}

} // namespace

TEST_CASE("TXT presentation as Net::DNS 1.36 prints it", "[dns_txt]")
{
    struct {
        std::vector<std::string> strings;
        std::string want; // Perl's internal form (UTF-8 of its characters)
    } cases[] = {
        {{"Listed in test zen; see http://zen.example/?127.0.0.2"},
         "\"Listed in test zen; see http://zen.example/?127.0.0.2\""},
        {{"plain"}, "plain"},
        {{""}, "\"\""},
        {{"two words", "one", "(paren)", "semi;colon"},
         "\"two words\" one \"(paren)\" \"semi;colon\""},
        {{"q\"uote back\\slash tab\t nl\n del\x7f bin\x80\xff utf8 caf\xc3\xa9"},
         "\"q\\\"uote back\\\\slash tab\\009 nl\\010 del\\127 bin\xef\xbf\xbd\\255 utf8 "
         "caf\xc3\xa9\""},
        {{"euro \xe2\x82\xac sign"}, "\"euro \xe2\x82\xac sign\""},
        {{"a\"b"}, "a\\\"b"},                       // \034 written \" also outside quotes
        {{"a\\b"}, "a\\\\b"},                       // \092 written \\ (Net::DNS _wrap)
        {{"x\xc0\xc1y"}, "x\\192\\193y"},           // bytes that cannot occur in UTF-8 stay escaped
        {{"\xe2\x82"}, "\xef\xbf\xbd"},             // a truncated sequence: one U+FFFD
        {{"\x80\x80"}, "\xef\xbf\xbd\xef\xbf\xbd"}, // two lone continuation bytes
        {{"\xe0\x80\x80"}, "\xef\xbf\xbd"},         // overlong
        {{"\xed\xa0\x80"}, "\xed\xa0\x80"},         // a surrogate: accepted by the lax decoder
        {{"tab\there"}, "tab\\009here"},            // escaped controls do not cause quoting
        {{std::string(45, 'a'), std::string(47, 'b'), "c"},
         std::string(45, 'a') + "\n\t" + std::string(47, 'b') + " c"},
        {{std::string(79, 'a')}, std::string(79, 'a')},
        {{std::string(80, 'a')}, std::string(80, 'a')}, // one string never wraps before itself
        {{std::string(39, 'a'), std::string(39, 'b')},  // 40 + 40 columns: one line
         std::string(39, 'a') + " " + std::string(39, 'b')},
        {{std::string(39, 'a'), std::string(40, 'b')}, // 40 + 41: wrapped
         std::string(39, 'a') + "\n\t" + std::string(40, 'b')},
        {{"\x81\xf8\xbf"
          "A"},
         "\xef\xbf\xbd"
         "A"}, // Perl 5.36 DFA quirk: one malformation
        {{std::string(39, 'a'), std::string(41, 'b')},
         std::string(39, 'a') + "\n\t" + std::string(41, 'b')},
        {{}, ""},
    };
    for (auto &c : cases) {
        std::string rd = txt(c.strings);
        INFO("rdata " << hex(rd));
        CHECK(rdstring(rd) == c.want);
    }
    // Room: too little is refused (0), the advertised size always suffices.
    std::string rd = txt({"\x01\x01\x01"});
    char small[8];
    CHECK(pol_dns_txt_rdstring(reinterpret_cast<const unsigned char *>(rd.data()), rd.size(), small,
                               sizeof(small)) == 0);
    std::string worst = txt({std::string(255, '\x01'), std::string(255, '\xff')});
    CHECK(rdstring(worst).size() <= pol_dns_txt_rdstring_bytes(worst.size()));
    // rdata whose last string overruns it (not from a checked message): what is there.
    CHECK(rdstring(std::string("\x05"
                               "ab",
                               3)) == "ab");
}

TEST_CASE("TXT presentation equals Net::DNS on random rdata", "[dns_txt]")
{
    if (system("perl -MNet::DNS -e 1 >/dev/null 2>&1") != 0) {
        if (in_ci())
            FAIL("Perl's Net::DNS is missing (CI=1)");
        WARN("SKIP: Perl's Net::DNS is missing");
        return;
    }
    std::mt19937 rng(20261124);
    // Bytes biased towards the interesting ones.
    static const char special_bytes[] = "\"\\ ();\t\n\r\f\x7f\xc0\xc1\xff\x80\xbf\xc3\xa9\xe2"
                                        "\x82\xac\xed\xf0\x9f\x98\x80\xf8\xfc\xfe";
    const std::string special(special_bytes, sizeof(special_bytes) - 1);
    std::vector<std::string> rdatas;
    for (int i = 0; i < 3000; i++) {
        std::string rd;
        int strings = int(rng() % 4) + 1;
        for (int s = 0; s < strings; s++) {
            size_t len = rng() % 8 == 0 ? rng() % 256 : rng() % 24;
            std::string str;
            for (size_t k = 0; k < len; k++) {
                unsigned pick = rng() % 4;
                str += pick == 0   ? char(rng() % 256)
                       : pick == 1 ? special[rng() % special.size()]
                                   : char('a' + rng() % 26);
            }
            rd += char(str.size());
            rd += str;
        }
        rdatas.push_back(rd);
    }
    char in_path[] = "/tmp/rpd-dns-txt-XXXXXX";
    int fd = mkstemp(in_path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    for (auto &rd : rdatas)
        fprintf(f, "%s\n", hex(rd).c_str());
    fclose(f);
    std::string cmd =
        std::string("perl -MNet::DNS -ne 'chomp; my $rd = pack(\"H*\", $_); "
                    "my $w = \"\\0\" . pack(\"nnNn\", 16, 1, 300, length $rd) . $rd; "
                    "my ($rr) = Net::DNS::RR->decode(\\$w, 0); my $s = $rr->rdatastr; "
                    "utf8::encode($s); print unpack(\"H*\", $s), \"\\n\"' ") +
        in_path;
    FILE *p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::vector<std::string> perl;
    char line[1 << 14];
    while (fgets(line, sizeof(line), p)) {
        std::string l(line);
        if (!l.empty() && l.back() == '\n')
            l.pop_back();
        perl.push_back(unhex(l));
    }
    int st = pclose(p);
    unlink(in_path);
    REQUIRE(WIFEXITED(st));
    REQUIRE(WEXITSTATUS(st) == 0);
    REQUIRE(perl.size() == rdatas.size());
    int mismatches = 0;
    for (size_t i = 0; i < rdatas.size() && mismatches < 10; i++) {
        std::string ours = rdstring(rdatas[i]);
        if (ours != perl[i]) {
            mismatches++;
            INFO("rdata " << hex(rdatas[i]) << "\nours " << hex(ours) << "\nperl " << hex(perl[i]));
            CHECK(ours == perl[i]);
        }
    }
    CHECK(mismatches == 0);
}
