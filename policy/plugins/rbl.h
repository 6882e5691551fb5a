/*
 * plugins/rbl.h: what RBL, RBLAction and DBL share (spec 13.18, 13.19, 13.7): the session keys
 * of RBL and RBLAction, Mail::RBL's test for an address, and the verdict once a blocklist
 * answer is known to apply. Internal to policy/plugins/.
 */
#ifndef POL_PLUGINS_RBL_H
#define POL_PLUGINS_RBL_H

#include <stdbool.h>
#include <stddef.h>

#include <pol/dns.h>
#include <pol/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Plugin data of RBL and RBLAction: their session keys. */
struct pol_rbl_keys {
    char *result; /* rbl-RESULT_OF-result: the cached answer */
    char *score;  /* rbl-NAME-score: the once-per-mail score flag */
};

/* create: makes the keys (result_of: the RBL whose answer is used) the plugin's data. 0, or -1
 * with a sentence in err. */
int pol_rbl_keys_create(struct pol_plugin *p, const char *result_of, char *err, size_t err_len);
void pol_rbl_keys_destroy(struct pol_plugin *p);

/* Perl's /^\d+\.\d+\.\d+\.\d+$/ on a byte string: Mail::RBL's (and DBL's) idea of an IPv4
 * address. */
bool pol_rbl_dotted_quad(const char *s, size_t len);

/* Listed: adds the number option score_idx once per mail (flag score_flag, label the plugin's
 * name) when it is set, then by the user-configurable mode_idx: `reject` answers
 * "reject " + the template msg_idx with %IP% = client_address and %INFO% = "(INFO)", or nothing
 * when there is no info or it is empty (2.05 then leaves the space before it); `accept`
 * answers `dunno`; any other mode nothing. Both answers stop the chain. */
enum pol_step pol_rbl_verdict(struct pol_plugin *p, struct pol_req *r,
                              const struct pol_dns_list_result *res, unsigned mode_idx,
                              unsigned score_idx, unsigned msg_idx, const char *score_flag);

#ifdef __cplusplus
}
#endif

#endif
