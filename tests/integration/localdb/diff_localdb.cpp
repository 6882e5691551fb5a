// diff_localdb.cpp: differential tests of the local-database plugins against the Perl
// mtpolicyd 2.05 (spec 13.10, 13.11, 13.15, 13.23, 13.24): PostfixMap over a table built by
// the real `postmap hash:` (appendix D #7's map), GeoIPLookup/GeoIPAction over Debian's
// geoip-database, SaAwlLookup/SaAwlAction over an AWL file written with libdb as
// SpamAssassin's DB_File does. Both daemons read the same files. Where ringpolicyd answers
// differently by design (cdb: tables, database_v6, the "::" loop of 2.05), the case says so.
#include "diffcheck.h"

#include <unistd.h>

#include "../../unit/localdb/ldb_testutil.hpp"

using namespace itest;

namespace
{

const std::string d7_map = "123.123.123.123 OK\n"
                           "123.123.124 OK\n"
                           "123.124 OK\n"
                           "124 OK\n"
                           "fe80::250:56ff:fe85:56f5 OK\n"
                           "fe80::250:56ff:fe84 OK\n"
                           "fe81 OK\n"
                           "111.111.111.111 1\n"
                           "111.111.111.11 DUNNO\n"
                           "111.111.111.1 REJECT\n";

std::string block(const std::string &name, const std::string &module, const std::string &options)
{
    return "\n  <Plugin " + name + ">\n    module = \"" + module + "\"\n" + options +
           "  </Plugin>\n";
}

const std::string header = block("hdr", "AddScoreHeader", "");

std::vector<std::string> from(const std::string &ip)
{
    return rq({{"client_address", ip}});
}

std::vector<std::string> mail(const std::string &sender, const std::string &ip)
{
    return rq({{"sender", sender}, {"client_address", ip}});
}

} // namespace

TEST_CASE("PostfixMap over a postmap hash: table (appendix D #7)", "[diff][localdb]")
{
    ldbtest::TempDir dir;
    std::string db = ldbtest::postmap(dir, "hash", "map", d7_map);
    ldbtest::postmap(dir, "cdb", "map", d7_map);
    std::string actions = "    match_action = \"reject matched\"\n"
                          "    not_match_action = \"defer not matched\"\n";
    std::vector<VhostSpec> vhosts = {
        {"pfm", block("pfm", "PostfixMap", "    db_file = \"" + db + "\"\n" + actions), ""},
        {"score",
         block("pfm", "PostfixMap", "    db_file = \"" + db + "\"\n    score = -5\n") + header, ""},
        {"cdb",
         block("pfm", "PostfixMap", "    db_file = \"cdb:" + dir.file("map") + "\"\n" + actions),
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases;
    for (const char *yes : {"123.123.123.123", "123.123.124.1", "123.124.200.1", "124.1.1.1",
                            "fe80::250:56ff:fe85:56f5", "fe81::250:56ff:eeee:ffff",
                            "fe80::250:56ff:fe84:1", "111.111.111.111"}) {
        cases.push_back({"pfm", from(yes), "reject matched", "", ""});
        cases.push_back({"score", from(yes), "PREPEND X-MtScore: NO score=-5 [pfm=-5]", "", ""});
        // 2.05 reads Berkeley DB only: it fails on a cdb file; ringpolicyd reads it
        cases.push_back(
            {"cdb", from(yes), "<closed>", "reject matched", "new in ringpolicyd: cdb: tables"});
    }
    for (const char *no : {"192.168.0.0", "111.111.111.11", "111.111.111.1", "111.111.111.2",
                           "123.123.125.1", "fe80::1", "fe82::1", "1.2.3.4"}) {
        cases.push_back({"pfm", from(no), "defer not matched", "", ""});
        cases.push_back({"score", from(no), "PREPEND X-MtScore: NO score=0", "", ""});
    }
    for (const char *bad : {"unknown", "FE80::1", "::ffff:1.2.3.4", "1.2.3", ""})
        cases.push_back({"pfm", from(bad), "<closed>", "", ""});
    run_cases(rig, vhosts, cases);
}

TEST_CASE("GeoIPLookup and GeoIPAction over Debian's GeoIP.dat", "[diff][localdb]")
{
    need_file("/usr/share/GeoIP/GeoIP.dat", "Debian's geoip-database");
    need_file("/usr/share/GeoIP/GeoIPv6.dat", "Debian's geoip-database");
    std::string lookup = block("geo", "GeoIPLookup", "");
    std::string codes = "    result_from = \"geo\"\n    country_codes = \"DE,US,JP\"\n";
    std::vector<VhostSpec> vhosts = {
        {"reject", lookup + block("act", "GeoIPAction", codes + "    score = 2\n"), ""},
        {"message",
         lookup + block("act", "GeoIPAction",
                        codes + "    reject_message = \"no mail from %CC% (%IP%, %CC%)\"\n"),
         ""},
        {"passive",
         lookup + block("act", "GeoIPAction", codes + "    mode = \"passive\"\n    score = 2\n") +
             header,
         ""},
        {"accept", lookup + block("act", "GeoIPAction", codes + "    mode = \"accept\"\n") + header,
         ""},
        {"v6",
         block("geo", "GeoIPLookup", "    database_v6 = \"/usr/share/GeoIP/GeoIPv6.dat\"\n") +
             block("act", "GeoIPAction", codes) + header,
         ""},
        {"wrong_name", block("act", "GeoIPAction", codes) + header, ""},
        // 2.05 splits on /\s*,\s*/: blanks at the ends of the list stay part of the codes
        {"blanks",
         lookup +
             block("act", "GeoIPAction",
                   "    result_from = \"geo\"\n    country_codes = \" DE , US ,JP,\"\n") +
             header,
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases = {
        {"reject", from("193.99.144.80"), "reject delivery from DE (193.99.144.80) rejected", "",
         ""},
        {"reject", from("8.8.8.8"), "reject delivery from US (8.8.8.8) rejected", "", ""},
        {"reject", from("133.11.0.1"), "reject delivery from JP (133.11.0.1) rejected", "", ""},
        {"reject", from("212.58.244.20"), "dunno", "", ""},
        {"reject", from("127.0.0.1"), "dunno", "", ""},
        {"reject", from("2001:4860:4860::8888"), "dunno", "", ""},
        {"reject", from("unknown"), "dunno", "", ""},
        {"message", from("193.99.144.80"), "reject no mail from DE (193.99.144.80, %CC%)", "", ""},
        {"passive", from("193.99.144.80"), "PREPEND X-MtScore: NO score=2 [act=2]", "", ""},
        {"passive", from("200.160.2.3"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"accept", from("8.8.8.8"), "dunno", "", ""},
        {"accept", from("81.169.145.78"), "dunno", "", ""},
        {"accept", from("212.58.244.20"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"v6", from("193.99.144.80"), "reject delivery from DE (193.99.144.80) rejected", "", ""},
        // 2.05 has no database_v6 (and ignores the option): no country for IPv6 clients
        {"v6", from("2001:4860:4860::8888"), "PREPEND X-MtScore: NO score=0",
         "reject delivery from US (2001:4860:4860::8888) rejected",
         "new in ringpolicyd: database_v6"},
        {"v6", from("2001:200::1"), "PREPEND X-MtScore: NO score=0",
         "reject delivery from JP (2001:200::1) rejected", "new in ringpolicyd: database_v6"},
        {"wrong_name", from("193.99.144.80"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"blanks", from("193.99.144.80"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"blanks", from("8.8.8.8"), "reject delivery from US (8.8.8.8) rejected", "", ""},
        {"blanks", from("133.11.0.1"), "reject delivery from JP (133.11.0.1) rejected", "", ""},
    };
    run_cases(rig, vhosts, cases);
}

TEST_CASE("SaAwlLookup and SaAwlAction over an AWL file (appendix D #11)", "[diff][localdb]")
{
    ldbtest::TempDir dir;
    std::string awl = dir.file("auto-whitelist");
    ldbtest::bdb_write(awl, {
                                {"bad@example.com|ip=12.34", "100"},
                                {"bad@example.com|ip=12.34|totscore", "2000"},
                                {"good@example.com|ip=12.34", "100"},
                                {"good@example.com|ip=12.34|totscore", "-500"},
                                {"few@example.com|ip=12.34", "9"},
                                {"few@example.com|ip=12.34|totscore", "900"},
                                {"half@example.com|ip=12.34", "50"},
                                {"v6@example.com|ip=2A01:04F8:0D12::", "20"},
                                {"v6@example.com|ip=2A01:04F8:0D12::|totscore", "200"},
                                {"|ip=12.34", "30"},
                                {"|ip=12.34|totscore", "300"},
                                {"lo@example.com|ip=0000::", "11"},
                                {"lo@example.com|ip=0000::|totscore", "66"},
                                {"edge@example.com|ip=12.34", "10"},
                                {"edge@example.com|ip=12.34|totscore", "50"},
                            });
    std::string lookup = block("awl", "SaAwlLookup", "    db_file = \"" + awl + "\"\n");
    std::string from_awl = "    result_from = \"awl\"\n";
    std::vector<VhostSpec> vhosts = {
        {"reject", lookup + block("act", "SaAwlAction", from_awl) + header, ""},
        {"message",
         lookup + block("act", "SaAwlAction",
                        from_awl + "    reject_message = \"%SENDER% at %IP% has %SCORE%\"\n"),
         ""},
        {"factor",
         lookup +
             block("act", "SaAwlAction",
                   from_awl + "    mode = \"passive\"\n    score_factor = 0.5\n") +
             header,
         ""},
        {"lt",
         lookup +
             block("act", "SaAwlAction",
                   from_awl + "    match = \"lt\"\n    threshold = -1\n    mode = \"accept\"\n") +
             header,
         ""},
    };
    DiffRig rig(vhosts);
    ITEST_START_RIG(rig);
    std::vector<DiffCase> cases = {
        {"reject", mail("bad@example.com", "12.34.56.78"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("bad@example.com", "12.35.56.78"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"reject", mail("good@example.com", "12.34.56.78"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"reject", mail("few@example.com", "12.34.56.78"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"reject", mail("half@example.com", "12.34.56.78"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"reject", mail("edge@example.com", "12.34.1.1"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("v6@example.com", "2a01:4f8:d12:242::2"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("v6@example.com", "2a01:4f8:d13::2"), "PREPEND X-MtScore: NO score=0", "",
         ""},
        {"reject", mail("", "12.34.9.9"), "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("bad@example.com", "unknown"), "PREPEND X-MtScore: NO score=0", "", ""},
        // 2.05's /^(\d+\.\d+).\d+.\d+$/ (unescaped dots) and NetAddr::IP's parsing
        {"reject", mail("bad@example.com", "12.34x5x6"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("bad@example.com", "12.345.6"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"reject", mail("v6@example.com", "2A01:4F8:D12:242::2"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("lo@example.com", "::ffff:12.34.5.6"),
         "reject sender address/ip has bad reputation", "", ""},
        {"reject", mail("lo@example.com", "fe80::1%eth0"), "PREPEND X-MtScore: NO score=0", "", ""},
        {"message", mail("bad@example.com", "12.34.56.78"),
         "reject bad@example.com at 12.34.56.78 has 20", "", ""},
        {"factor", mail("bad@example.com", "12.34.56.78"),
         "PREPEND X-MtScore: YES score=10 [act=10]", "", ""},
        {"factor", mail("edge@example.com", "12.34.56.78"),
         "PREPEND X-MtScore: NO score=2.5 [act=2.5]", "", ""},
        {"lt", mail("good@example.com", "12.34.56.78"), "dunno", "", ""},
        {"lt", mail("bad@example.com", "12.34.56.78"), "PREPEND X-MtScore: NO score=0", "", ""},
    };
    run_cases(rig, vhosts, cases);
}
