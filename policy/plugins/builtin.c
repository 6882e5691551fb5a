/*
 * builtin.c: the list of plugin types compiled into ringpolicyd (builtin.h). The config loader
 * looks a `module = "..."` name up here before trying PLUGIN_DIR/NAME.so. Read-only data.
 */
#include "plugins/builtin.h"

#include "plugins/acct.h" /* the SQL plugins (owner: accounting) */
#include "plugins/common.h"
#include "plugins/localdb.h"

/* DNS blocklists (owner: dns), in rbl.c, rblaction.c, dbl.c. */
extern const struct pol_plugin_type pol_type_DBL;
extern const struct pol_plugin_type pol_type_RBL;
extern const struct pol_plugin_type pol_type_RBLAction;
/* SPF (owner: spf), in spf.c. */
extern const struct pol_plugin_type pol_type_SPF;

/* SMTP call-outs (owner: smtpverify), in smtpverify.c. */
extern const struct pol_plugin_type pol_type_SMTPVerify;

/* LDAP (owner: ldap), in ldapuserconfig.c. */
extern const struct pol_plugin_type pol_type_LdapUserConfig;

/* network (owner: netplug), in proxy.c, fail2ban.c, ctiprep.c. */
extern const struct pol_plugin_type pol_type_Proxy;
extern const struct pol_plugin_type pol_type_Fail2Ban;
extern const struct pol_plugin_type pol_type_CtIpRep;

/* memcached (owner: memcached), in honeypot.c, greylist.c. */
extern const struct pol_plugin_type pol_type_Honeypot;
extern const struct pol_plugin_type pol_type_Greylist;

const struct pol_plugin_type *const pol_builtin_types[] = {
    &pol_type_Action,      &pol_type_AddScoreHeader,
    &pol_type_ClearFields, &pol_type_Condition,
    &pol_type_Eval,        &pol_type_RegexList,
    &pol_type_ScoreAction, &pol_type_SetField,
    &pol_type_Stress,      &pol_type_DBL,
    &pol_type_RBL,         &pol_type_RBLAction,
    &pol_type_SPF,
    /* local databases (owner: localdb), declared in localdb.h */
    &pol_type_GeoIPAction, &pol_type_GeoIPLookup,
    &pol_type_PostfixMap,  &pol_type_SaAwlAction,
    &pol_type_SaAwlLookup,
    /* SQL (owner: accounting), in accounting.c, quota.c, sqllist.c, sqluserconfig.c */
    &pol_type_Accounting,  &pol_type_Quota,
    &pol_type_SqlList,     &pol_type_SqlUserConfig,
    /* memcached (owner: memcached) */
    &pol_type_Honeypot,
    &pol_type_Greylist,
    /* network (owner: netplug) */
    &pol_type_Proxy,
    &pol_type_Fail2Ban,
    &pol_type_CtIpRep,
    /* LDAP (owner: ldap) */
    &pol_type_LdapUserConfig,
    /* SMTP call-outs (owner: smtpverify) */
    &pol_type_SMTPVerify,
    NULL,
};
