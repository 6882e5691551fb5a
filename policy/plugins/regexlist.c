/*
 * regexlist.c: the RegexList plugin (spec 13.20): tests a request attribute or session value
 * (`key`, spec 12.1) against PCRE2 patterns: the `regex` option first, then the lines of
 * `file`. The outcome (which pattern matched, or none) is cached per mail under `NAME-result`,
 * so later requests of the same mail reuse it even when their value differs, as in 2.05. When
 * matched (or, with `invert`, not matched) it adds `score` once per mail (flag `NAME-score`),
 * then returns `action`, else the nested chain's results, else nothing. `enabled`, `score` and
 * `action` are user-configurable.
 *
 * Owns: the compiled file patterns (create .. destroy, main thread); they are compiled and
 * matched by the same code as POL_OPT_REGEX options (policy/regex.h: PCRE2, JIT where
 * available, per-thread match data, a match that hits a PCRE2 limit counts as no match). The
 * file is read once, at start-up: blank lines and lines whose first non-blank is `#` are
 * skipped, a line keeps everything but its LF (a CR stays, as Perl's chomp leaves it). A
 * pattern that does not compile, an unreadable file, a NUL byte in a line, or a file past
 * REGEXLIST_PATTERNS_MAX patterns or REGEXLIST_LINE_BYTES_MAX bytes in a line refuses the
 * configuration naming the file and line (2.05 logged and skipped bad patterns; spec 13.20
 * prefers this).
 */
#include "plugins/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eng/assert.h>

#include "regex.h"

/* Patterns one file may hold. A value that matches none tries them all in one step, and that
 * step holds its shard: measured with JIT on a 2-core test box, 1,000 patterns cost 0.13 ms per
 * request and 10,000 cost 12 ms (the JIT code no longer fits the CPU caches), 100,000 cost
 * 137 ms and 3 s of start-up. 2.05 has no limit but recompiles every pattern on every request,
 * so lists near this size were already impractical there. */
#define REGEXLIST_PATTERNS_MAX 10000u
/* Bytes in one line of the file, LF excluded. PCRE2's compiled-size limit (64 KiB with the
 * default link size) refuses long patterns anyway; this refuses binary junk before reading it
 * all into memory. */
#define REGEXLIST_LINE_BYTES_MAX (1024u * 1024u)

enum {
    OPT_KEY,
    OPT_REGEX,
    OPT_FILE,
    OPT_INVERT,
    OPT_SCORE,
    OPT_ACTION,
    OPT_ENABLED,
    OPT_COUNT,
};

static const struct pol_opt_def regexlist_opts[] = {
    [OPT_KEY] = {"key", POL_OPT_VAR, NULL, POL_OPT_REQUIRED},
    [OPT_REGEX] = {"regex", POL_OPT_REGEX, NULL, 0},
    [OPT_FILE] = {"file", POL_OPT_STRING, NULL, 0},
    [OPT_INVERT] = {"invert", POL_OPT_BOOL, "0", 0},
    [OPT_SCORE] = {"score", POL_OPT_NUMBER, NULL, POL_OPT_UC},
    [OPT_ACTION] = {"action", POL_OPT_STRING, NULL, POL_OPT_UC},
    [OPT_ENABLED] = {"enabled", POL_OPT_STRING, "on", POL_OPT_UC},
};
_Static_assert(sizeof regexlist_opts / sizeof regexlist_opts[0] == OPT_COUNT, "one def per option");

struct regexlist_pattern {
    struct pol_regex *re;
    char *text; /* as written in the file, NUL-terminated */
};

/* Plugin data: the file's patterns in file order. */
struct regexlist_file {
    size_t count;
    size_t cap;
    struct regexlist_pattern *patterns;
};

static void file_free(struct regexlist_file *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->count; i++) {
        pol_regex_free(f->patterns[i].re);
        free(f->patterns[i].text);
    }
    free(f->patterns);
    free(f);
}

/* Perl's \s on a byte string: ASCII blanks only. */
static bool perl_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Perl's /^\s*$/ and /^\s*#/ on a chomped line: blank or comment. */
static bool line_is_skipped(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && perl_space(line[i]))
        i++;
    return i == len || line[i] == '#';
}

/* Compiles one line and appends it. Returns 0, or -1 with a sentence in err. */
static int file_add(struct regexlist_file *f, const char *path, unsigned line_no, const char *line,
                    size_t len, char *err, size_t err_len)
{
    if (f->count == REGEXLIST_PATTERNS_MAX) {
        snprintf(err, err_len, "file %s line %u: more than %u patterns", path, line_no,
                 REGEXLIST_PATTERNS_MAX);
        return -1;
    }
    if (memchr(line, '\0', len) != NULL) {
        snprintf(err, err_len, "file %s line %u: the pattern contains a NUL byte", path, line_no);
        return -1;
    }
    char why[512];
    struct pol_regex *re = pol_regex_compile(line, why, sizeof why);
    if (re == NULL) {
        snprintf(err, err_len, "file %s line %u: %s", path, line_no, why);
        return -1;
    }
    if (f->count == f->cap) {
        size_t cap = f->cap == 0 ? 16 : f->cap * 2;
        struct regexlist_pattern *grown = realloc(f->patterns, cap * sizeof *grown);
        if (grown == NULL) {
            pol_regex_free(re);
            snprintf(err, err_len, "file %s: out of memory", path);
            return -1;
        }
        f->patterns = grown;
        f->cap = cap;
    }
    char *text = strndup(line, len);
    if (text == NULL) {
        pol_regex_free(re);
        snprintf(err, err_len, "file %s: out of memory", path);
        return -1;
    }
    f->patterns[f->count++] = (struct regexlist_pattern){.re = re, .text = text};
    return 0;
}

/* Reads every line of an open file. Returns 0, or -1 with a sentence in err. */
static int file_read(struct regexlist_file *f, FILE *in, const char *path, char *err,
                     size_t err_len)
{
    char *line = NULL;
    size_t line_cap = 0;
    unsigned line_no = 0;
    int rc = 0;
    ssize_t got;
    while (rc == 0 && (got = getline(&line, &line_cap, in)) >= 0) {
        size_t len = (size_t)got;
        line_no++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > REGEXLIST_LINE_BYTES_MAX) {
            snprintf(err, err_len, "file %s line %u: longer than %u bytes", path, line_no,
                     REGEXLIST_LINE_BYTES_MAX);
            rc = -1;
        } else if (!line_is_skipped(line, len)) {
            rc = file_add(f, path, line_no, line, len, err, err_len);
        }
    }
    if (rc == 0 && ferror(in)) {
        snprintf(err, err_len, "cannot read file %s: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

static int regexlist_create(struct pol_plugin *p, char *err, size_t err_len)
{
    const struct pol_opt_value *file = pol_opt(p, OPT_FILE);
    if (!file->set)
        return 0;
    FILE *in = fopen(file->text, "re");
    if (in == NULL) {
        snprintf(err, err_len, "cannot open file %s: %s", file->text, strerror(errno));
        return -1;
    }
    struct regexlist_file *f = calloc(1, sizeof *f);
    int rc = -1;
    if (f == NULL)
        snprintf(err, err_len, "file %s: out of memory", file->text);
    else
        rc = file_read(f, in, file->text, err, err_len);
    fclose(in);
    if (rc != 0) {
        file_free(f);
        return -1;
    }
    pol_plugin_set_data(p, f);
    return 0;
}

static void regexlist_destroy(struct pol_plugin *p)
{
    file_free(pol_plugin_data(p));
    pol_plugin_set_data(p, NULL);
}

/* The first pattern matching value ("regex" option, then the file's), NULL for none. */
static const char *first_match(const struct pol_plugin *p, const char *value, size_t len)
{
    const struct pol_opt_value *regex = pol_opt(p, OPT_REGEX);
    if (regex->set && pol_regex_match(regex->re, value, len))
        return regex->text;
    const struct regexlist_file *f = pol_plugin_data(p);
    if (f == NULL || f->count == 0)
        return NULL;
    for (size_t i = 0; i < f->count; i++) {
        if (pol_regex_match(f->patterns[i].re, value, len))
            return f->patterns[i].text;
    }
    return NULL;
}

/* The per-mail cached outcome under NAME-result: "1:PATTERN" or "0". Returns 1 matched,
 * 0 not matched, -1 when the session is full. */
static int cached_outcome(struct pol_plugin *p, struct pol_req *r, const char *value, size_t len)
{
    const char *key = pol_req_printf(r, "%s-result", pol_plugin_name(p));
    if (key == NULL)
        return -1;
    size_t cached_len = 0;
    const char *cached = pol_session_get(r, key, &cached_len);
    if (cached != NULL)
        return cached_len > 0 && cached[0] == '1';
    const char *pattern = first_match(p, value, len);
    const char *store = pattern != NULL ? pol_req_printf(r, "1:%s", pattern) : "0";
    if (store == NULL || pol_session_set(r, key, store, strlen(store)) != 0)
        return -1;
    return pattern != NULL;
}

static enum pol_step regexlist_step(struct pol_plugin *p, struct pol_req *r, void *req_state)
{
    (void)req_state;
    if (pol_builtin_subchain_adopted(r))
        return POL_NEXT;
    const struct pol_opt_value *key = pol_opt(p, OPT_KEY);
    size_t len = 0;
    const char *value = key->var != NULL ? pol_req_var(r, key->var, &len) : NULL;
    if (!pol_uc_enabled(r, p, OPT_ENABLED))
        return POL_NEXT;
    if (value == NULL) {
        pol_log(p, r, "no attribute '%s' in request", key->text);
        return POL_NEXT;
    }
    int matched = cached_outcome(p, r, value, len);
    if (matched < 0)
        return pol_req_fail(r, "cannot cache the outcome: out of memory");
    if ((matched == 1) == pol_opt(p, OPT_INVERT)->b)
        return POL_NEXT;

    pol_log(p, r, "%s=%.*s matched %s", key->text, (int)len, value, pol_plugin_name(p));
    const char *flag = pol_req_printf(r, "%s-score", pol_plugin_name(p));
    if (flag == NULL || pol_builtin_uc_score(p, r, OPT_SCORE, flag) != 0)
        return pol_req_fail(r, "cannot add score: out of memory");
    return pol_builtin_uc_action(p, r, OPT_ACTION);
}

const struct pol_plugin_type pol_type_RegexList = {
    .api_version = POL_PLUGIN_API_VERSION,
    .module = "RegexList",
    .opts = regexlist_opts,
    .opt_count = OPT_COUNT,
    .flags = POL_TYPE_CHAIN | POL_TYPE_SCORING,
    .create = regexlist_create,
    .step = regexlist_step,
    .destroy = regexlist_destroy,
};
