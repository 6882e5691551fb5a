// diff_ldap.cpp: LdapUserConfig, the Perl mtpolicyd 2.05 (Net::LDAP) against ringpolicyd on the
// same configuration and the same slapd (tests/unit/ldap/slapd_server.h): values that drive
// later Conditions, multi-valued attributes, zero and several entries, escaping, every %s,
// filter_field, a search error, and an unreachable server with on_error = continue. Replies must
// be identical.
#include "common.h"

using namespace itest;
using namespace ldaptest;

TEST_CASE("LdapUserConfig: Perl 2.05 and ringpolicyd agree", "[diff_ldap]")
{
    int dead = rpdtest::mc_free_port();
    std::string conns = conn_block(slapd().port()) +
                        "<Connection down>\n  module = \"Ldap\"\n  host = \"127.0.0.1\"\n"
                        "  port = " + std::to_string(dead) + "\n  starttls = 0\n  timeout = 5\n"
                        "</Connection>\n";
    DiffRig rig({{"mail", chain(uc_opts()), ""},
                 {"or", chain(uc_opts("(|(mail=%s)(uid=%s))")), ""},
                 {"sender", chain(uc_opts("(mail=%s)", "    filter_field = \"sender\"\n")), ""},
                 {"badbase",
                  chain("    basedn = \"ou=missing,dc=example,dc=com\"\n    filter = "
                        "\"(mail=%s)\"\n    config_fields = \"mtpolicydMailMessageLimit\"\n"),
                  ""},
                 {"down",
                  chain(uc_opts("(mail=%s)", "    ldap = \"down\"\n    on_error = \"continue\"\n")),
                  ""}},
                conns);
    bool ok = rig.start();
    INFO(rig.error());
    REQUIRE(ok);
    REQUIRE(rig.has_ring());
    struct Case {
        const char *vhost;
        std::vector<std::pair<std::string, std::string>> over;
        const char *want;
    };
    const std::vector<Case> cases = {
        {"mail", {{"sasl_username", "alice@example.com"}}, "reject description first"},
        {"mail", {{"sasl_username", "bob@example.com"}}, "reject limit above 15"},
        {"mail", {{"sasl_username", "dup@example.com"}}, "dunno"},
        {"mail", {{"sasl_username", "nobody@example.com"}}, "dunno"},
        {"mail", {{"sasl_username", ""}}, "dunno"},
        {"mail", {{"sasl_username", "ali*"}}, "dunno"},
        {"mail", {{"sasl_username", "st*r (x)\\y@example.com"}}, "reject limit above 15"},
        {"mail", {{"sasl_username", "x)(mail=bob@example.com"}}, "dunno"},
        {"mail", {{"sasl_username", "ALICE@EXAMPLE.COM"}}, "reject description first"},
        {"or", {{"sasl_username", "bob"}}, "reject limit above 15"},
        {"or", {{"sasl_username", "alice@example.com"}}, "reject description first"},
        {"sender", {{"sender", "bob@example.com"}, {"sasl_username", "alice@example.com"}},
         "reject limit above 15"},
        {"sender", {{"sender", ""}}, "dunno"},
        {"badbase", {{"sasl_username", "bob@example.com"}}, "dunno"},
        {"down", {{"sasl_username", "bob@example.com"}}, "dunno"},
    };
    for (const Case &c : cases) {
        std::vector<std::string> req = postfix_request(c.over);
        Reply p = rig.ask(Impl::Perl, c.vhost, req, 15000);
        Reply r = rig.ask(Impl::Ring, c.vhost, req, 15000);
        INFO(c.vhost << " " << (c.over.empty() ? "" : c.over[0].second) << "\nperl: " << p.raw
                     << "\nring: " << r.raw);
        CHECK(first_action(p) == c.want);
        CHECK(r.raw == p.raw);
    }
}
