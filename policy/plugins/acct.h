/*
 * acct.h: the SQL plugins of issue 3 (Accounting, Quota, SqlUserConfig, SqlList; spec 13.1,
 * 13.17, 13.27, 13.28) and the pure helpers they share, exported for the unit tests (internal
 * to policy/plugins/; builtin.c lists the types).
 */
#ifndef POL_PLUGINS_ACCT_H
#define POL_PLUGINS_ACCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "plugins/acct_agg.h"
#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const struct pol_plugin_type pol_type_Accounting;
extern const struct pol_plugin_type pol_type_Quota;
extern const struct pol_plugin_type pol_type_SqlList;
extern const struct pol_plugin_type pol_type_SqlUserConfig;

/* create of SqlList and SqlUserConfig: the Sql connection named by option db_idx becomes the
 * plugin's data. 0, or -1 with a sentence in err. */
int pol_acct_db_create(struct pol_plugin *p, unsigned db_idx, char *err, size_t err_len);

/* Spec 13.1 step 2 from the `size` and `recipient_count` attributes (NULL when absent), with
 * Perl's numeric conversion and truthiness ("" and "0" are false): count 1; size or 0;
 * count_rcpt recipient_count when true, else 1; size_rcpt size * recipient_count when true,
 * else size. Negative or non-numeric values count as 0; products saturate. */
void pol_acct_metrics_of(const char *size, size_t size_len, const char *rcpt, size_t rcpt_len,
                         uint64_t out[POL_ACCT_METRICS]);

/* Perl's /^\s*$/ on a byte string (absent counts as blank). */
bool pol_acct_blank(const char *s, size_t len);

/* Whether a key can be stored: at most POL_ACCT_KEY_BYTES_MAX bytes, no NUL, and for
 * PostgreSQL (utf8_only) valid UTF-8. NULL or a sentence saying why not. */
const char *pol_acct_key_problem(const char *key, size_t len, bool utf8_only);

/* strftime(pattern) of t in local time. Returns the length (0 is a valid empty bucket), or -1
 * when it does not fit POL_ACCT_TIME_BYTES_MAX bytes. out has POL_ACCT_TIME_BYTES_MAX + 1. */
int pol_acct_bucket(const char *pattern, time_t t, char *out);

/* SqlUserConfig's JSON (spec 13.28): calls fn for every top-level member of a JSON object, in
 * document order: strings as they are (UTF-8), numbers as Perl's JSON::PP prints them,
 * true/false as 1/0, nested arrays and objects as compact JSON text, null with value NULL
 * (the key is then deleted). Allocations go through alloc (the request arena; NULL: malloc,
 * for tests). Returns 0, -1 for invalid JSON (err says where), -2 for valid JSON that is not an
 * object, -3 when alloc failed. */
typedef void pol_ucjson_fn(void *ctx, const char *key, size_t key_len, const char *value,
                           size_t value_len);
typedef void *pol_ucjson_alloc_fn(void *alloc_ctx, size_t bytes);
int pol_ucjson_members(const char *json, size_t len, pol_ucjson_alloc_fn *alloc, void *alloc_ctx,
                       pol_ucjson_fn *fn, void *ctx, char *err, size_t err_len);

/* The text JSON::PP gives a number written num[0..len) (valid JSON number) in Perl: integer
 * literals as written ("-0" as "0"), other values as an integer when integral and within
 * 64 bits, else %.15g. Returns the length written to out (32 bytes are enough). */
size_t pol_ucjson_number_text(const char *num, size_t len, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif
