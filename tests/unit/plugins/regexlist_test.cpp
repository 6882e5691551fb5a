// regexlist_test.cpp: the RegexList plugin (spec 13.20) through the testkit: inline pattern,
// pattern file (comments, blanks, order, limits, errors), invert, per-mail cache, score once,
// enabled, user-configurable action and score, sub-chain. Answers marked "2.05:" were observed
// on the Perl mtpolicyd 2.05 with the same configuration, file and requests.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>

#include "plugin_kit.hpp"

using namespace plugkit;

namespace
{

// A temporary pattern file, removed when it goes out of scope.
class TempFile
{
  public:
    explicit TempFile(const std::string &content)
    {
        char name[] = "/tmp/regexlist_test.XXXXXX";
        int fd = mkstemp(name);
        REQUIRE(fd >= 0);
        close(fd);
        path_ = name;
        std::ofstream(path_, std::ios::binary) << content;
    }
    ~TempFile()
    {
        std::remove(path_.c_str());
    }
    TempFile(const TempFile &) = delete;
    TempFile &operator=(const TempFile &) = delete;
    const std::string &path() const
    {
        return path_;
    }

  private:
    std::string path_;
};

std::string regexlist(const std::string &name, const std::string &options)
{
    return "  <Plugin " + name + ">\n    module = \"RegexList\"\n" + options + "  </Plugin>\n";
}

const std::string header = "  <Plugin hdr>\n    module = \"AddScoreHeader\"\n  </Plugin>\n";

// The file of the 2.05 run: comments (also indented), blank lines, two patterns.
const std::string listed_file = "# comment\n   \n  # indented comment\n^bad\\.example$\n\n"
                                "@spam\\.\n";

} // namespace

TEST_CASE("RegexList matches the inline pattern, then the file's, per mail (2.05 run)",
          "[regexlist]")
{
    TempFile file(listed_file);
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    regex = \"^inline@\"\n"
                               "    file = \"" +
                                   file.path() +
                                   "\"\n    score = 2\n"
                                   "    action = \"reject listed\"\n") +
                   header,
               true));
    REQUIRE(k.ok());
    // 2.05, same requests: reject, reject (cached for instance c1), header, reject, reject,
    // header (no sender).
    CHECK(k.ask(req("sender=x@spam.com\ninstance=c1\n")) == reply("reject listed"));
    CHECK(k.ask(req("sender=ok@good.com\ninstance=c1\n")) == reply("reject listed"));
    CHECK(k.ask(req("sender=ok@good.com\ninstance=c2\n")) ==
          reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.ask(req("sender=inline@x\ninstance=c3\n")) == reply("reject listed"));
    CHECK(k.ask(req("sender=bad.example\ninstance=c4\n")) == reply("reject listed"));
    CHECK(k.ask(req("instance=c5\n")) == reply("PREPEND X-MtScore: NO score=0"));
    // The score was added once for c1 although two requests matched.
    CHECK(k.session("c1", "score") == "2");
    CHECK(k.session("c1", "score_detail") == "rl=2");
    CHECK(k.session("c1", "rl-score") == "1");
    CHECK(k.session("c1", "rl-result") != "<absent>");
    CHECK(k.session("c2", "rl-result") != "<absent>");
    CHECK(k.session("c5", "rl-result") == "<absent>");
}

TEST_CASE("RegexList patterns are unanchored and case-sensitive; comments are not patterns",
          "[regexlist]")
{
    TempFile file(listed_file);
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() +
                                   "\"\n"
                                   "    action = \"reject listed\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=a@spam.example\n")) == reply("reject listed"));
    CHECK(k.ask(req("sender=a@SPAM.example\n")) == dunno);
    CHECK(k.ask(req("sender=xbad.example\n")) == dunno);
    CHECK(k.ask(req("sender=# comment\n")) == dunno);
    CHECK(k.ask(req("sender=\n")) == dunno);
}

TEST_CASE("RegexList keeps a CR at the end of a line as part of the pattern", "[regexlist]")
{
    // Perl's chomp removes the LF only, so a CRLF file's patterns end in CR.
    TempFile file("^a$\r\n^b$\n");
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() +
                                   "\"\n"
                                   "    action = \"reject listed\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=a\n")) == dunno);
    CHECK(k.ask(req("sender=b\n")) == reply("reject listed"));
}

TEST_CASE("RegexList invert acts when nothing matched", "[regexlist]")
{
    Kit k(conf(regexlist("allowed", "    key = \"client_name\"\n"
                                    "    regex = \"\\\\.example\\\\.org$\"\n    invert = 1\n"
                                    "    action = \"reject not from example.org\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_name=mx.example.org\n")) == dunno);
    CHECK(k.ask(req("client_name=mx.example.com\n")) == reply("reject not from example.org"));
    CHECK(k.ask(req("client_name=\n")) == reply("reject not from example.org"));
    CHECK(k.ask(req("")) == dunno); // absent: nothing, whatever invert says
}

TEST_CASE("RegexList runs its sub-chain when matched and has no action", "[regexlist]")
{
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    regex = \"@example\\\\.net$\"\n"
                               "    <Plugin inner>\n      module = \"Action\"\n"
                               "      action = \"reject from the sub-chain\"\n"
                               "    </Plugin>\n") +
               "  <Plugin end>\n    module = \"Action\"\n    action = \"reject end\"\n"
               "  </Plugin>\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=a@example.net\n")) == reply("reject from the sub-chain"));
    CHECK(k.result_line().find("plugin=rl,") != std::string::npos);
    CHECK(k.ask(req("sender=a@example.com\n")) == reply("reject end"));
}

TEST_CASE("RegexList enabled, action and score are user-configurable", "[regexlist]")
{
    const std::string rl = regexlist("rl", "    key = \"sender\"\n    regex = \"@\"\n"
                                           "    score = 1\n    uc_score = \"user_score\"\n"
                                           "    action = \"reject configured\"\n"
                                           "    uc_action = \"user_action\"\n"
                                           "    uc_enabled = \"user_enabled\"\n");
    SECTION("enabled off in the session disables it")
    {
        Kit k(conf(set_field("user_enabled", "off") + rl));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=a@b\n")) == dunno);
    }
    SECTION("any other enabled value counts as on")
    {
        Kit k(conf(set_field("user_enabled", "OFF") + rl));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=a@b\n")) == reply("reject configured"));
    }
    SECTION("enabled = off in the configuration")
    {
        Kit k(conf(regexlist("rl", "    key = \"sender\"\n    regex = \"@\"\n"
                                   "    enabled = off\n    action = \"reject\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=a@b\n")) == dunno);
    }
    SECTION("the session's action and score replace the configured ones")
    {
        Kit k(conf(set_field("user_action", "reject personal") + set_field("user_score", "7") + rl,
                   true));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=a@b\ninstance=u1\n")) == reply("reject personal"));
        CHECK(k.session("u1", "score_detail") == "rl=7");
    }
}

TEST_CASE("RegexList adds its score once per mail and then goes on", "[regexlist]")
{
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    regex = \"@\"\n    score = -2.5\n") +
                   header,
               true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=a@b\ninstance=s1\n")) ==
          reply("PREPEND X-MtScore: NO score=-2.5 [rl=-2.5]"));
    CHECK(k.ask(req("sender=a@b\ninstance=s1\n")) == dunno);
    CHECK(k.session("s1", "score") == "-2.5");
}

TEST_CASE("RegexList reads session values by scope", "[regexlist]")
{
    Kit k(conf("  <Plugin set>\n    module = \"SetField\"\n    key = \"country\"\n"
               "    value = \"XX\"\n  </Plugin>\n" +
               regexlist("geo", "    key = \"s:country\"\n    regex = \"^(XX|YY)$\"\n"
                                "    action = \"reject country\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("country=ZZ\n")) == reply("reject country"));
}

TEST_CASE("RegexList refuses a bad pattern in the file naming the file and line", "[regexlist]")
{
    TempFile file("# ok\n^good$\n\n^bad(\n");
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() + "\"\n")));
    CHECK_FALSE(k.ok());
    CHECK(k.error().find("test.conf:") == 0);
    CHECK(k.error().find(file.path()) != std::string::npos);
    CHECK(k.error().find("line 4") != std::string::npos);
    CHECK(k.error().find("^bad(") != std::string::npos);
}

TEST_CASE("RegexList refuses a bad inline pattern and an unreadable file", "[regexlist]")
{
    Kit bad(conf(regexlist("rl", "    key = \"sender\"\n    regex = \"[a-\"\n")));
    CHECK_FALSE(bad.ok());
    CHECK(bad.error().find("test.conf:") == 0);
    Kit missing(conf(regexlist("rl", "    key = \"sender\"\n"
                                     "    file = \"/nonexistent/regexlist.txt\"\n")));
    CHECK_FALSE(missing.ok());
    CHECK(missing.error().find("/nonexistent/regexlist.txt") != std::string::npos);
    CHECK_FALSE(Kit(conf(regexlist("rl", "    regex = \"x\"\n"))).ok()); // key is required
}

TEST_CASE("RegexList file limits: patterns and line bytes at N and N+1", "[regexlist]")
{
    const size_t patterns_max = 10000;
    const size_t line_bytes_max = 1024 * 1024;
    SECTION("10000 patterns load; the last one matches")
    {
        std::string content;
        for (size_t i = 0; i < patterns_max; i++)
            content += "^p" + std::to_string(i) + "$\n";
        TempFile file(content);
        Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() +
                                       "\"\n"
                                       "    action = \"reject many\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=p9999\n")) == reply("reject many"));
        CHECK(k.ask(req("sender=p10000\n")) == dunno);
    }
    SECTION("10001 patterns are refused")
    {
        std::string content;
        for (size_t i = 0; i <= patterns_max; i++)
            content += "^p" + std::to_string(i) + "$\n";
        TempFile file(content);
        Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() + "\"\n")));
        CHECK_FALSE(k.ok());
        CHECK(k.error().find("line 10001") != std::string::npos);
    }
    SECTION("a line of 1 MiB is read (a comment here), one byte more is refused")
    {
        TempFile at("#" + std::string(line_bytes_max - 1, 'x') + "\n^ok$\n");
        Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + at.path() +
                                       "\"\n"
                                       "    action = \"reject ok\"\n")));
        REQUIRE(k.ok());
        CHECK(k.ask(req("sender=ok\n")) == reply("reject ok"));
        TempFile over("#" + std::string(line_bytes_max, 'x') + "\n^ok$\n");
        Kit refused(
            conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + over.path() + "\"\n")));
        CHECK_FALSE(refused.ok());
        CHECK(refused.error().find("line 1") != std::string::npos);
    }
}

TEST_CASE("RegexList stops a pathological match and counts it as no match", "[regexlist]")
{
    // Catastrophic backtracking: PCRE2 would grind for a very long time without the limit.
    TempFile file("^(a+)+$\n");
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() +
                                   "\"\n"
                                   "    action = \"reject a\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=" + std::string(40, 'a') + "!\n")) == dunno);
    CHECK(k.ask(req("sender=aaaa\n")) == reply("reject a"));
}

TEST_CASE("RegexList logs a match and a missing attribute", "[regexlist]")
{
    TempFile file(listed_file);
    Kit k(conf(regexlist("rl", "    key = \"sender\"\n    file = \"" + file.path() +
                                   "\"\n"
                                   "    action = \"reject listed\"\n")));
    REQUIRE(k.ok());
    LogCapture log;
    REQUIRE(log.ok());
    CHECK(k.ask(req("sender=x@spam.com\n")) == reply("reject listed"));
    CHECK(k.ask(req("")) == dunno);
    // 2.05, same requests.
    CHECK(log.has_line("test: sender=x@spam.com matched rl"));
    CHECK(log.has_line("test: no attribute 'sender' in request"));
}
