/*
 * ucjson.c: SqlUserConfig's JSON (see acct.h, pol_ucjson_members): the top-level members of a
 * JSON object as session values, the way 2.05 (JSON::PP) would hand them to Perl code.
 *
 * cJSON parses and validates; its allocations go to the caller's allocator (the request
 * arena, so the request path does not malloc) through global cJSON hooks that consult a
 * thread-local allocator and fall back to malloc/free when none is set (installed once; no
 * other module of ringpolicyd uses cJSON). Number texts come from the source, found by a small
 * scanner that walks the already validated text, because cJSON keeps only a double (a 19-digit
 * integer would lose digits). cJSON is more lenient than JSON::PP (leading zeros, "1.",
 * raw control characters in strings), so a second pass over its accepted text refuses what
 * 2.05 refuses. Pure apart from the allocator; any thread.
 */
#include "plugins/acct.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <eng/assert.h>

/* ---------------------------------------------------------------------------------------------
 * Allocation
 */

static _Thread_local pol_ucjson_alloc_fn *tl_alloc;
static _Thread_local void *tl_alloc_ctx;
static _Thread_local bool tl_alloc_failed;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void *hook_malloc(size_t bytes)
{
    if (!tl_alloc)
        return malloc(bytes);
    void *p = tl_alloc(tl_alloc_ctx, bytes);
    if (!p)
        tl_alloc_failed = true;
    return p;
}

static void hook_free(void *p)
{
    if (!tl_alloc)
        free(p); /* with an allocator set, memory goes back with the arena */
}

static void hooks_install(void)
{
    cJSON_Hooks h = {.malloc_fn = hook_malloc, .free_fn = hook_free};
    cJSON_InitHooks(&h);
}

/* ---------------------------------------------------------------------------------------------
 * Numbers
 */

size_t pol_ucjson_number_text(const char *num, size_t len, char *out, size_t out_len)
{
    ENG_ASSERT(out_len >= 32);
    bool integer = memchr(num, '.', len) == NULL && memchr(num, 'e', len) == NULL &&
                   memchr(num, 'E', len) == NULL;
    if (integer) {
        /* JSON::PP keeps integer literals as written (big ones as strings); -0 becomes 0. */
        if (len == 2 && num[0] == '-' && num[1] == '0')
            len = 1, num++;
        if (len >= out_len)
            len = out_len - 1;
        memcpy(out, num, len);
        out[len] = '\0';
        return len;
    }
    char buf[64];
    size_t bl = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
    memcpy(buf, num, bl);
    buf[bl] = '\0';
    double v = strtod(buf, NULL);
    /* Perl turns a numified string that is an integer within 64 bits into an integer. */
    int n;
    if (v == floor(v) && fabs(v) < 9223372036854775808.0)
        n = snprintf(out, out_len, "%lld", (long long)v);
    else if (v == floor(v) && v >= 0 && v < 18446744073709551616.0)
        n = snprintf(out, out_len, "%llu", (unsigned long long)v);
    else
        return pol_num_format(out, out_len, v);
    return n > 0 ? (size_t)n : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Spans of the top-level members in validated JSON text
 */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"': the index after the closing quote. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

static size_t skip_value(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '"')
        return skip_string(s, i, n);
    if (i < n && (s[i] == '{' || s[i] == '[')) {
        unsigned depth = 0;
        while (i < n) {
            if (s[i] == '"') {
                i = skip_string(s, i, n);
                continue;
            }
            if (s[i] == '{' || s[i] == '[')
                depth++;
            else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
           s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

/* Moves *pos past the next member of the object (just after '{' or ','); its value's span. */
static void next_member(const char *s, size_t n, size_t *pos, size_t *vstart, size_t *vend)
{
    size_t i = skip_ws(s, *pos, n);
    i = skip_string(s, i, n); /* the key */
    i = skip_ws(s, i, n) + 1; /* ':' */
    *vstart = skip_ws(s, i, n);
    *vend = skip_value(s, *vstart, n);
    i = skip_ws(s, *vend, n) + 1; /* ',' or '}' */
    *pos = i;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; the end, or 0. */
static size_t number_end(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return 0;
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i;
}

/* What cJSON accepts and JSON::PP does not. The offset of the first such byte, or n. */
static size_t strict_check(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        if (s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if ((unsigned char)s[i] < 0x20)
                    return i;
                if (s[i] == '\\')
                    i++;
            }
            i++;
        } else if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
            size_t e = number_end(s, i, n);
            if (e == 0 || (e < n && ((s[e] >= '0' && s[e] <= '9') || s[e] == '.' || s[e] == 'e' ||
                                     s[e] == 'E' || s[e] == '+' || s[e] == '-')))
                return i;
            i = e;
        } else {
            i++;
        }
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Members
 */

static int each_member(const cJSON *obj, const char *json, size_t len, pol_ucjson_fn *fn, void *ctx)
{
    size_t pos = skip_ws(json, 0, len) + 1; /* after '{' */
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t vs = 0, ve = 0;
        next_member(json, len, &pos, &vs, &ve);
        const char *key = c->string ? c->string : "";
        char num[64];
        if (cJSON_IsString(c)) {
            fn(ctx, key, strlen(key), c->valuestring, strlen(c->valuestring));
        } else if (cJSON_IsNumber(c)) {
            size_t nl = pol_ucjson_number_text(json + vs, ve - vs, num, sizeof(num));
            fn(ctx, key, strlen(key), num, nl);
        } else if (cJSON_IsBool(c)) {
            fn(ctx, key, strlen(key), cJSON_IsTrue(c) ? "1" : "0", 1);
        } else if (cJSON_IsNull(c)) {
            fn(ctx, key, strlen(key), NULL, 0);
        } else {
            char *text = cJSON_PrintUnformatted(c);
            if (!text)
                return -3;
            fn(ctx, key, strlen(key), text, strlen(text));
            hook_free(text);
        }
    }
    return 0;
}

int pol_ucjson_members(const char *json, size_t len, pol_ucjson_alloc_fn *alloc, void *alloc_ctx,
                       pol_ucjson_fn *fn, void *ctx, char *err, size_t err_len)
{
    pthread_once(&hooks_once, hooks_install);
    tl_alloc = alloc;
    tl_alloc_ctx = alloc_ctx;
    tl_alloc_failed = false;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    int rc = 0;
    if (!root) {
        rc = tl_alloc_failed ? -3 : -1;
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        snprintf(err, err_len, "%s at character offset %zu",
                 rc == -3 ? "out of memory parsing JSON" : "malformed JSON string", at);
    } else if (skip_ws(json, (size_t)(end - json), len) != len) {
        rc = -1;
        snprintf(err, err_len, "garbage after JSON object, at character offset %zu",
                 (size_t)(end - json));
    } else if (strict_check(json, len) != len) {
        rc = -1;
        snprintf(err, err_len, "malformed JSON string, at character offset %zu",
                 strict_check(json, len));
    } else if (!cJSON_IsObject(root)) {
        rc = -2;
        snprintf(err, err_len, "the JSON value is not an object");
    } else {
        rc = each_member(root, json, len, fn, ctx);
        if (rc == -3)
            snprintf(err, err_len, "out of memory printing JSON");
    }
    cJSON_Delete(root);
    tl_alloc = NULL;
    tl_alloc_ctx = NULL;
    return rc;
}
