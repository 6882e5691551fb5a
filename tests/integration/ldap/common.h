// common.h: what it_ldap and diff_ldap share: the slapd of tests/unit/ldap, the <Connection>
// block for it, and a chain in which LdapUserConfig's session values drive later plugins
// (Conditions on session:mtpolicydMailMessageLimit and session:description).
#ifndef ITEST_LDAP_COMMON_H
#define ITEST_LDAP_COMMON_H

#include "itcommon.h"

#include "../../unit/ldap/slapd_server.h"

namespace ldaptest
{

inline rpdtest::SlapdServer &slapd()
{
    static rpdtest::SlapdServer s(false);
    return s;
}

inline std::string conn_block(int port, const std::string &extra = "")
{
    return "<Connection ldap>\n  module = \"Ldap\"\n  host = \"127.0.0.1\"\n  port = " +
           std::to_string(port) + "\n  starttls = 0\n" + extra + "</Connection>\n";
}

// LdapUserConfig (options given by uc) then the Conditions reading what it stored.
inline std::string chain(const std::string &uc)
{
    return "  <Plugin ldap_uc>\n    module = \"LdapUserConfig\"\n" + uc +
           "  </Plugin>\n"
           "  <Plugin limit_high>\n    module = \"Condition\"\n"
           "    key = \"session:mtpolicydMailMessageLimit\"\n    gt_match = 15\n"
           "    action = \"reject limit above 15\"\n  </Plugin>\n"
           "  <Plugin desc>\n    module = \"Condition\"\n    key = \"session:description\"\n"
           "    match = \"first\"\n    action = \"reject description first\"\n  </Plugin>\n"
           "  <Plugin title>\n    module = \"Condition\"\n    key = \"session:title\"\n"
           "    re_match = \".\"\n    action = \"reject has a title\"\n  </Plugin>\n" +
           itest::action_plugin("pass", "dunno");
}

inline std::string uc_opts(const std::string &filter = "(mail=%s)",
                           const std::string &more = "")
{
    return "    basedn = \"ou=users,dc=example,dc=com\"\n    filter = \"" + filter +
           "\"\n    config_fields = \"mtpolicydMailMessageLimit,description,title\"\n" + more;
}

inline std::string first_action(const itest::Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0]
                                        : std::string(itest::reply_status_name(r.status));
}

} // namespace ldaptest

#endif
