// smtpverify_config_test.cpp: the SMTPVerify plugin's options and its synchronous paths through
// the testkit (no shards, so no DNS and no connections): option errors name test.conf and the
// line, limits at N and N+1, enabled = off and a missing address do nothing, and a check that
// needs the network fails the plugin here (on_error decides) instead of crashing.
#include <catch2/catch.hpp>

#include "../plugins/plugin_kit.hpp"

using namespace plugkit;

namespace
{

std::string sv(const std::string &options)
{
    return conf(plugin("verify", "SMTPVerify", options));
}

} // namespace

TEST_CASE("the defaults load; every option is accepted", "[smtpverify_config]")
{
    Kit k(sv("    host = \"127.0.0.1\"\n    port = 2525\n    sender = \"me@example.net\"\n"
             "    sender_field = \"recipient\"\n    recipient_field = \"sender\"\n"
             "    size_field = \"size\"\n    check_tlsa = \"on\"\n    check_openpgp = \"on\"\n"
             "    perm_fail_action = \"reject %MSG%\"\n    temp_fail_action = \"defer %MSG%\"\n"
             "    perm_fail_score = 5\n    temp_fail_score = 1.5\n"
             "    has_starttls_score = -1\n    no_starttls_score = 2\n"
             "    has_tlsa_score = -3\n    no_tlsa_score = 0\n"
             "    has_openpgp_score = -3\n    no_openpgp_score = 1e1\n"
             "    uc_enabled = \"sv\"\n    helo_name = \"policy.example\"\n"
             "    timeout_ms = 1000\n    connections = 8\n    reply_bytes_max = 1024\n"));
    INFO(k.error());
    CHECK(k.ok());
    Kit d(sv(""));
    INFO(d.error());
    CHECK(d.ok());
}

TEST_CASE("bad options are start-up errors naming test.conf and the line", "[smtpverify_config]")
{
    struct Bad {
        const char *option;
        const char *says;
    } bad[] = {
        {"    port = 0\n", "port must be 1..65535, not 0 (test.conf:5)"},
        {"    port = 65536\n", "port must be 1..65535, not 65536 (test.conf:5)"},
        {"    port = \"smtp\"\n", "test.conf:5"},
        {"    timeout_ms = 0\n", "timeout_ms must be 1..600000, not 0 (test.conf:5)"},
        {"    timeout_ms = 600001\n", "timeout_ms must be 1..600000"},
        {"    connections = 0\n", "connections must be 1..4096, not 0 (test.conf:5)"},
        {"    connections = 4097\n", "connections must be 1..4096"},
        {"    reply_bytes_max = 511\n",
         "reply_bytes_max must be 512..65536, not 511 (test.conf:5)"},
        {"    reply_bytes_max = 65537\n", "reply_bytes_max must be 512..65536"},
        {"    perm_fail_score = \"lots\"\n", "test.conf:5"},
        {"    connections = 2049\n    reply_bytes_max = 8192\n",
         "connections (2049) times reply_bytes_max (8192) must be at most 16777216 (test.conf:5)"},
        {"    helo_name = \"a<b\"\n",
         "helo_name must be 1..255 printable characters without < or > (test.conf:5)"},
        {"    helo_name = \"\"\n", "helo_name must be 1..255 printable characters"},
        {"    sender = \"<<x>>\"\n",
         "sender must be an address without control characters (test.conf:5)"},
        {"    host = \"\"\n", "host must be a host name or an IP address (test.conf:5)"},
    };
    for (const Bad &b : bad) {
        INFO(b.option);
        Kit k(sv(b.option));
        CHECK_FALSE(k.ok());
        CHECK_THAT(k.error(), Catch::Contains(b.says));
        CHECK_THAT(k.error(), Catch::Contains("test.conf:"));
    }
    // The limits themselves are accepted (N).
    for (const char *good : {"    port = 1\n", "    port = 65535\n", "    timeout_ms = 600000\n",
                             "    connections = 4096\n", "    reply_bytes_max = 512\n",
                             "    reply_bytes_max = 65536\n",
                             "    connections = 2048\n    reply_bytes_max = 8192\n"}) {
        INFO(good);
        Kit k(sv(good));
        CHECK(k.ok());
    }
}

TEST_CASE("enabled = off (also through uc_enabled) and a missing address do nothing",
          "[smtpverify_config]")
{
    Kit off(sv("    enabled = off\n"));
    REQUIRE(off.ok());
    CHECK(off.ask(req("sender=joe@example.com\nrecipient=me@example.net\n")) == dunno);

    Kit uc(
        conf(set_field("sv", "off") + plugin("verify", "SMTPVerify", "    uc_enabled = \"sv\"\n"),
             true));
    REQUIRE(uc.ok());
    CHECK(uc.ask(req("instance=m1\nsender=joe@example.com\nrecipient=me@example.net\n")) == dunno);

    Kit k(sv(""));
    REQUIRE(k.ok());
    CHECK(k.ask(req("sender=\nrecipient=me@example.net\n")) == dunno); // the null sender
    CHECK(k.ask(req("recipient=me@example.net\n")) == dunno);
}

TEST_CASE("a check that needs the network fails the plugin without shards; on_error applies",
          "[smtpverify_config]")
{
    Kit k(sv(""));
    REQUIRE(k.ok());
    std::string r = k.ask(req("sender=joe@example.com\nrecipient=me@example.net\n"));
    CHECK_THAT(r, Catch::StartsWith("FAILED: "));
    CHECK_THAT(r, Catch::Contains("plugin verify failed"));
    CHECK_THAT(r, Catch::Contains("no DNS client"));

    Kit host(conf(plugin("verify", "SMTPVerify", "    host = \"127.0.0.1\"\n") +
                  action("after", "dunno")));
    REQUIRE(host.ok());
    CHECK_THAT(host.ask(req("sender=joe@example.com\n")), Catch::Contains("need a shard"));

    Kit cont(conf(plugin("verify", "SMTPVerify", "    on_error = \"continue\"\n") +
                  action("after", "reject next")));
    REQUIRE(cont.ok());
    CHECK(cont.ask(req("sender=joe@example.com\n")) == reply("reject next"));

    // Control characters in the address are refused before anything is sent.
    Kit ctl(conf(plugin("verify", "SMTPVerify", "    host = \"127.0.0.1\"\n")));
    REQUIRE(ctl.ok());
    CHECK_THAT(ctl.ask(req("sender=joe@example.com\rRSET\n")),
               Catch::Contains("control characters"));
    // An address without a domain and no host: nothing to look up.
    CHECK_THAT(k.ask(req("sender=postmaster\n")), Catch::Contains("has no domain"));
}
