/*
 * pol/dns.h: DNS for plugins. Part of the plugin API (version 1): built-in and user plugins use
 * the same calls.
 *
 * The resolver is the shard's eng_dns client (eng/dns.h: c-ares on the ring, in-flight
 * de-duplication, a TTL-honouring answer cache), created on each shard by the first plugin that
 * attaches to it and shared by all of them, with the servers of the global option
 * `dns_servers` (default: the system's /etc/resolv.conf). Plugins ask it directly
 * (eng_dns_query with pol_dns_client) or through the blocklist lookup below.
 *
 * The blocklist lookup is mtpolicyd's (spec 12.9, Mail::RBL over Net::DNS): a name is listed
 * when its A query returns at least one A record, the first one being the result; every
 * failure (NXDOMAIN, NODATA, SERVFAIL, timeout, a bad name) means "not listed". When listed, a
 * TXT query for the same name gives the info text: the first TXT record as Net::DNS 1.36
 * prints it (pol_dns_txt_rdstring). The outcome is cached per mail in the session under a key
 * the plugin names (spec 12.3), so later requests of the mail, and RBLAction, reuse it.
 *
 * Texts: Net::DNS decodes TXT data as UTF-8, so an info text is a Perl character string. Here
 * it is held in Perl's internal form (UTF-8 of its characters; a byte that is not part of
 * valid UTF-8 became U+FFFD). pol_dns_reply_expand turns it, with the request's and the
 * configuration's byte strings, into the bytes Perl writes to the socket.
 *
 * Threads: attach and detach on the shard at its start and stop; everything taking a
 * struct pol_req * on the request's shard, inside a step or a completion callback.
 */
#ifndef POL_DNS_H
#define POL_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eng/dns.h>
#include <eng/engine.h>
#include <pol/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * The shard's client
 */

/* Attaches p to sh's client, creating it (with the global dns_servers) for the first plugin.
 * *out is the client, or NULL when sh is NULL (the testkit has no shards; lookups then fail
 * the request). Returns 0, or -1 with a sentence in err. */
int pol_dns_attach(struct pol_plugin *p, struct eng_shard *sh, struct eng_dns **out, char *err,
                   size_t err_len);
/* Detaches; the last plugin to detach destroys the client (its pending queries are answered
 * ENG_DNS_CANCELLED first) after logging its counters. dns may be NULL. */
void pol_dns_detach(struct pol_plugin *p, struct eng_shard *sh, struct eng_dns *dns);

/* The two above as a type's shard_start / shard_stop (the client becomes the plugin's shard
 * data), for types that need nothing else per shard. */
int pol_dns_shard_start(struct pol_plugin *p, struct eng_shard *sh, void **shard_data, char *err,
                        size_t err_len);
void pol_dns_shard_stop(struct pol_plugin *p, struct eng_shard *sh, void *shard_data);
/* The client p attached to on r's shard (with either call above); NULL in the testkit. */
struct eng_dns *pol_dns_client(const struct pol_plugin *p, const struct pol_req *r);

/* ---------------------------------------------------------------------------------------------
 * Blocklist lookups (spec 12.9) cached per mail (spec 12.3)
 */

struct pol_dns_list_result {
    bool listed;
    const char *addr;  /* listed: the first A record, dotted quad */
    const char *info;  /* listed and a TXT record came: its text (Perl internal form), maybe
                          empty; NULL when there was none */
    size_t info_len;
};

/* Per-request state of one lookup, kept in the plugin's req_state (zeroed: idle). May be used
 * for several lookups one after another. Fields are private. */
struct pol_dns_list {
    struct eng_dns_op op;
    struct eng_dns *dns;
    struct pol_req *r;
    const char *name;
    size_t name_len;
    uint32_t phase;
    bool listed;
    char addr[16];
    char *info;
    size_t info_len;
};

/* The result cached under session key `key`, else a lookup of name (A, then TXT when listed)
 * whose outcome is stored under key. Returns
 *   POL_NEXT  *res holds the result (strings valid until the request ends);
 *   POL_WAIT  a lookup started: return POL_WAIT from the step; when the chain calls the step
 *             again, call this again with the same l, key and name;
 *   POL_FAIL  pol_req_fail was called (no client on this shard, the request arena or the
 *             session is full, or the resolver refused the query).
 * name must stay valid until the lookup is done (request attributes and arena strings do). */
enum pol_step pol_dns_list_lookup(struct pol_plugin *p, struct pol_req *r, struct pol_dns_list *l,
                                  const char *key, const char *name, size_t name_len,
                                  struct pol_dns_list_result *res);

/* Only the cache: true with *res filled when the session holds a result under key. */
bool pol_dns_list_cached(struct pol_req *r, const char *key, struct pol_dns_list_result *res);

/* ---------------------------------------------------------------------------------------------
 * Perl's texts
 */

/* A TXT record's rdata as Net::DNS 1.36 `rdatastr` gives it, in Perl's internal form: each
 * character string escaped (bytes 0-31, ", \, 127, 192, 193 and 255 as \DDD), decoded as
 * Perl's lax UTF-8 (each malformed sequence becomes U+FFFD), enclosed in double quotes when it
 * contains a space, ( ) ; or is empty, \034 and \092 then written \" and \\; the strings
 * separated by a space, or by LF TAB where a line would pass 80 characters. Returns the length
 * written to out (no NUL), or 0 when out_len is below pol_dns_txt_rdstring_bytes(rdata_len). */
size_t pol_dns_txt_rdstring(const unsigned char *rdata, size_t rdata_len, char *out,
                            size_t out_len);
/* Room that suffices for pol_dns_txt_rdstring. */
size_t pol_dns_txt_rdstring_bytes(size_t rdata_len);

/* Expands tmpl (spec 12.7, pol_template_expand) as Perl would build and print the string:
 * vars[info_idx].value is in Perl's internal form (an info text with ASCII around it), every
 * other value and tmpl are byte strings. When the info holds a character above U+00FF Perl
 * prints everything as UTF-8 (the byte strings' bytes above 0x7F then take two bytes each);
 * otherwise it prints one byte per character (the info's U+0080..U+00FF as single bytes).
 * info_idx >= var_count: no info. Result in the request arena; NULL when it is full. */
char *pol_dns_reply_expand(struct pol_req *r, const char *tmpl, const struct pol_tvar *vars,
                           size_t var_count, size_t info_idx);

#ifdef __cplusplus
}
#endif

#endif
