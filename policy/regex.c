/*
 * regex.c: compiling and matching POL_OPT_REGEX patterns with PCRE2 (see regex.h).
 *
 * Owns the compiled codes (freed by pol_regex_free) and one match-data block per thread
 * (thread-local, freed by pol_regex_thread_fini). A match that hits a PCRE2 resource limit
 * (catastrophic backtracking) counts as no match, like a Perl match that gives up, and is
 * counted (pol_regex_errors).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/assert.h"

struct pol_regex {
    pcre2_code *code;
    bool jit;
};

static __thread pcre2_match_data *tl_md;
static __thread unsigned long tl_errors;

/* Perl reads a pattern that comes from a variable (m/$regex/, as mtpolicyd does) without
 * interpolation, so the interpolation escapes \Q \E \U \L \u \l \F are not special there: the
 * regex engine passes them through as the letters. PCRE2 gives them meaning (quoting) or
 * refuses them, so they become the plain letters here. A backslash that is itself escaped
 * (\\Q) is left alone. out has room for strlen(pattern) + 1 bytes. */
static void perl_unescape_interpolation(const char *pattern, char *out)
{
    size_t slashes = 0;
    for (const char *p = pattern; *p; p++) {
        if (*p == '\\') {
            slashes++;
            *out++ = *p;
            continue;
        }
        if (slashes % 2 == 1 && strchr("QEULulF", *p))
            out--; /* drop the escaping backslash */
        slashes = 0;
        *out++ = *p;
    }
    *out = '\0';
}

struct pol_regex *pol_regex_compile(const char *pattern, char *err, size_t err_len)
{
    int ec = 0;
    PCRE2_SIZE eo = 0;
    char *perl = malloc(strlen(pattern) + 1);
    if (!perl) {
        snprintf(err, err_len, "out of memory compiling regex '%s'", pattern);
        return NULL;
    }
    perl_unescape_interpolation(pattern, perl);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)perl, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
    free(perl);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        snprintf(err, err_len, "bad regex '%s': %s at offset %zu", pattern, (const char *)msg,
                 (size_t)eo);
        return NULL;
    }
    struct pol_regex *re = calloc(1, sizeof(*re));
    if (!re) {
        pcre2_code_free(code);
        snprintf(err, err_len, "out of memory compiling regex '%s'", pattern);
        return NULL;
    }
    re->code = code;
    /* JIT is an optimisation: where it is unavailable (no executable memory under some
     * hardening) the interpreter gives the same answers. */
    re->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

void pol_regex_free(struct pol_regex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}

int pol_regex_thread_init(void)
{
    if (tl_md)
        return 0;
    /* One ovector pair: we only ask whether a pattern matches. */
    tl_md = pcre2_match_data_create(1, NULL);
    return tl_md ? 0 : -ENOMEM;
}

void pol_regex_thread_fini(void)
{
    pcre2_match_data_free(tl_md);
    tl_md = NULL;
}

bool pol_regex_match(const struct pol_regex *re, const char *s, size_t len)
{
    ENG_ASSERT(re != NULL);
    if (!tl_md && pol_regex_thread_init() != 0)
        return false;
    int rc = pcre2_match(re->code, (PCRE2_SPTR)(s ? s : ""), s ? len : 0, 0, 0, tl_md, NULL);
    if (rc >= 0)
        return true;
    if (rc != PCRE2_ERROR_NOMATCH)
        tl_errors++;
    return false;
}

unsigned long pol_regex_errors(void)
{
    return tl_errors;
}
