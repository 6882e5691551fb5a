// saawl_test.cpp: SaAwlLookup and SaAwlAction (policy/plugins/saawllookup.c, saawlaction.c,
// spec 13.23, 13.24) through the testkit, over AWL files written with libdb as SpamAssassin's
// DB_File does (keys and values without NUL): the IPv4 and IPv6 address keys, both keys
// required, the cached "SCORE COUNT", appendix D #11, min_count, gt/lt/other, score and
// score_factor once per mail, the reject message's placeholders, start-up errors.
#include <catch2/catch.hpp>

#include "../plugins/plugin_kit.hpp"
#include "ldb_testutil.hpp"

using namespace plugkit;
using namespace ldbtest;

namespace
{

std::string lookup(const std::string &db_file)
{
    return plugin("awl", "SaAwlLookup", "    db_file = \"" + db_file + "\"\n");
}

std::string action(const std::string &options)
{
    return plugin("act", "SaAwlAction", "    result_from = \"awl\"\n" + options);
}

// An AWL entry: count and total score for sender|ip=KEY.
void entry(std::vector<std::pair<std::string, std::string>> &pairs, const std::string &key,
           const std::string &count, const std::string &total)
{
    pairs.push_back({key, count});
    pairs.push_back({key + "|totscore", total});
}

std::string mail(const std::string &instance, const std::string &sender, const std::string &ip)
{
    return req("instance=" + instance + "\nsender=" + sender + "\nclient_address=" + ip + "\n");
}

} // namespace

TEST_CASE("SaAwlLookup: address keys and the cached result", "[saawl]")
{
    TempDir dir;
    std::vector<std::pair<std::string, std::string>> pairs;
    entry(pairs, "bad@example.com|ip=12.34", "100", "2000");
    entry(pairs, "v6@example.com|ip=2A01:04F8:0D12::", "4", "-10");
    entry(pairs, "lo@example.com|ip=0000::", "3", "1");
    pairs.push_back({"half@example.com|ip=12.34", "5"}); // no totscore
    entry(pairs, "zero@example.com|ip=12.34", "0", "7");
    entry(pairs, "|ip=12.34", "2", "3"); // the null sender
    bdb_write(dir.file("awl"), pairs);

    Kit k(conf(lookup(dir.file("awl")), true));
    REQUIRE(k.ok());
    CHECK(k.ask(mail("m1", "bad@example.com", "12.34.56.78")) == dunno);
    CHECK(k.session("m1", "sa-awl-awl-result") == "20 100");
    CHECK(k.ask(mail("m2", "v6@example.com", "2a01:4f8:d12:242::2")) == dunno);
    CHECK(k.session("m2", "sa-awl-awl-result") == "-2.5 4");
    CHECK(k.ask(mail("m3", "lo@example.com", "::1")) == dunno);
    CHECK(k.session("m3", "sa-awl-awl-result") == "0.33333333333333331 3");
    CHECK(k.ask(mail("m4", "half@example.com", "12.34.0.1")) == dunno);
    CHECK(k.session("m4", "sa-awl-awl-result") == "");
    CHECK(k.ask(mail("m5", "bad@example.com", "12.35.56.78")) == dunno);
    CHECK(k.session("m5", "sa-awl-awl-result") == "");
    CHECK(k.ask(mail("m6", "bad@example.com", "unknown")) == dunno);
    CHECK(k.session("m6", "sa-awl-awl-result") == "");
    CHECK(k.ask(mail("m7", "", "12.34.1.1")) == dunno);
    CHECK(k.session("m7", "sa-awl-awl-result") == "1.5 2");
    // 2.05: Perl's "Illegal division by zero"
    CHECK(k.ask(mail("m8", "zero@example.com", "12.34.1.1")) ==
          "FAILED: plugin awl failed: Illegal division by zero");
    // no sender or no address: nothing looked up, nothing cached
    CHECK(k.ask(req("instance=m9\nclient_address=12.34.56.78\n")) == dunno);
    CHECK(k.session("m9", "sa-awl-awl-result") == "<absent>");
}

TEST_CASE("appendix D #11: SaAwlAction on (100, 20) and (100, -5)", "[saawl]")
{
    TempDir dir;
    std::vector<std::pair<std::string, std::string>> pairs;
    entry(pairs, "bad@example.com|ip=12.34", "100", "2000");
    entry(pairs, "good@example.com|ip=12.34", "100", "-500");
    entry(pairs, "new@example.com|ip=12.34", "9", "900");
    bdb_write(dir.file("awl"), pairs);
    std::string awl = lookup(dir.file("awl"));
    std::string hdr = plugin("hdr", "AddScoreHeader");

    Kit reject(conf(awl + action("")));
    REQUIRE(reject.ok());
    CHECK(reject.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("reject sender address/ip has bad reputation"));
    CHECK(reject.ask(mail("b", "good@example.com", "12.34.5.6")) == dunno);
    CHECK(reject.ask(mail("c", "new@example.com", "12.34.5.6")) == dunno); // below min_count

    Kit passive(conf(awl + action("    mode = \"passive\"\n    score_factor = 0.5\n") + hdr, true));
    REQUIRE(passive.ok());
    CHECK(passive.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("PREPEND X-MtScore: YES score=10 [act=10]"));
    CHECK(passive.ask(mail("a", "bad@example.com", "12.34.5.6")) == dunno);
    CHECK(passive.session("a", "score") == "10"); // once per mail
    CHECK(passive.session("a", "sa-awl-act-score") == "1");

    Kit accept(conf(awl +
                    action("    match = \"lt\"\n    threshold = -1\n    mode = \"accept\"\n"
                           "    score = -3\n") +
                    hdr));
    REQUIRE(accept.ok());
    CHECK(accept.ask(mail("a", "good@example.com", "12.34.5.6")) == dunno);
    CHECK(accept.ask(mail("b", "bad@example.com", "12.34.5.6")) ==
          reply("PREPEND X-MtScore: NO score=0"));
}

TEST_CASE("SaAwlAction options: match, min_count, score before factor, message", "[saawl]")
{
    TempDir dir;
    std::vector<std::pair<std::string, std::string>> pairs;
    entry(pairs, "bad@example.com|ip=12.34", "10", "50");
    bdb_write(dir.file("awl"), pairs);
    std::string awl = lookup(dir.file("awl"));
    std::string hdr = plugin("hdr", "AddScoreHeader");

    // score 5 >= threshold 5 at count 10 >= min_count 10: the boundaries match
    Kit msg(conf(awl + action("    reject_message = \"%SENDER% from %IP% scored %SCORE%\"\n")));
    REQUIRE(msg.ok());
    CHECK(msg.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("reject bad@example.com from 12.34.5.6 scored 5"));
    Kit above(conf(awl + action("    min_count = 11\n")));
    CHECK(above.ask(mail("a", "bad@example.com", "12.34.5.6")) == dunno);
    Kit other(conf(awl + action("    match = \"eq\"\n")));
    CHECK(other.ask(mail("a", "bad@example.com", "12.34.5.6")) == dunno);
    Kit lt(conf(awl + action("    match = \"lt\"\n")));
    CHECK(lt.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("reject sender address/ip has bad reputation"));
    // score wins over score_factor; a score of 0 lets the factor count
    Kit both(
        conf(awl + action("    mode = \"passive\"\n    score = 2\n    score_factor = 3\n") + hdr));
    CHECK(both.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("PREPEND X-MtScore: NO score=2 [act=2]"));
    Kit dunno_mode(conf(awl + action("    mode = \"dunno\"\n") + hdr));
    CHECK(dunno_mode.ask(mail("a", "bad@example.com", "12.34.5.6")) == dunno);
    Kit zero(conf(awl + action("    mode = \"off\"\n    score = 0\n    score_factor = 3\n") + hdr));
    CHECK(zero.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("PREPEND X-MtScore: YES score=15 [act=15]"));
    // no lookup result in the session: nothing
    Kit alone(conf(action("") + hdr));
    REQUIRE(alone.ok());
    CHECK(alone.ask(mail("a", "bad@example.com", "12.34.5.6")) ==
          reply("PREPEND X-MtScore: NO score=0"));
}

TEST_CASE("SaAwlLookup start-up errors", "[saawl]")
{
    TempDir dir;
    Kit missing(conf(lookup(dir.file("none"))));
    CHECK_FALSE(missing.ok());
    CHECK(missing.error().find("cannot open " + dir.file("none")) != std::string::npos);
    std::string cdb = postmap(dir, "cdb", "c", "a 1\n");
    Kit foreign(conf(lookup(cdb)));
    CHECK_FALSE(foreign.ok());
    CHECK(foreign.error().find(cdb + " is not a Berkeley DB hash file") != std::string::npos);
}
