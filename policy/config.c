/*
 * config.c: the Config::General 2.65 subset mtpolicyd.conf files use (spec 8), as a push
 * parser building the tree of config.h. Main thread only (start-up and reload).
 *
 * Like Config::General with mtpolicyd's options (-AllowMultiOptions no, -Tie), in two halves
 * (config_read.h): config_read.c turns each file's lines into items, and this file turns items
 * into options and blocks (_parse), checks duplicates, follows includes and holds the public
 * API. Each rule follows the Perl regex it mirrors, quirks included (named where they happen);
 * tests/unit/parse/cfg_diff.py compares our trees with Config::General's over a corpus.
 *
 * Intentional differences (where Perl silently loses or merges data, we refuse with file and
 * line): a </Name> whose first word is not the open block's name (case-insensitive; Perl
 * closes whatever is open); a named <Name key> after an anonymous <Name> in the same block
 * (Perl merges it into the anonymous block); the reader's cases (config_read.c). An option
 * without value is "" (Perl: undef). Include nesting stops at 16 files, block nesting at 64,
 * an item at POL_CFG_ITEM_BYTES_MAX (Perl has no limits). A relative include is looked up in
 * the current directory, then in the main file's directory (Perl: only when the main path is
 * absolute). A file included again (same path text) is skipped, as Perl does (it warns).
 * Duplicate checks use a hash per open block, so a block with many options stays linear.
 *
 * Memory: the tree lives in its own arena, released by pol_cfg_free. Errors are sticky: the
 * first one is kept and every later call returns it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <eng/assert.h>

#include "config_read.h"

enum {
    INCLUDE_DEPTH_MAX = 16,    /* files including files (config.h) */
    BLOCK_DEPTH_MAX = 64,      /* nested blocks; the model nests 3-5 deep */
    READ_CHUNK_BYTES = 65536,  /* file reads */
    ARENA_CHUNK_BYTES = 16384, /* tree arena granularity */
};
_Static_assert(POL_CFG_ITEM_BYTES_MAX < UINT32_MAX / 4, "item sizes fit easily in size_t math");

/* ---------------------------------------------------------------------------------------------
 * Tree memory: a bump arena owned by struct pol_cfg
 */

struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

struct pol_cfg {
    struct pol_cfg_node root;
    struct chunk *chunks;
};

static void *arena_alloc(struct pol_cfg *c, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct chunk *k = c->chunks;
    if (k == NULL || k->cap - k->used < n) {
        size_t cap = n > ARENA_CHUNK_BYTES ? n : ARENA_CHUNK_BYTES;
        k = malloc(sizeof(*k) + cap);
        if (k == NULL) {
            return NULL;
        }
        k->next = c->chunks;
        k->used = 0;
        k->cap = cap;
        c->chunks = k;
    }
    void *p = k->data + k->used;
    k->used += n;
    return p;
}

static char *arena_strndup(struct pol_cfg *c, const char *s, size_t n)
{
    char *d = arena_alloc(c, n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

void pol_cfg_free(struct pol_cfg *c)
{
    if (c == NULL) {
        return;
    }
    for (struct chunk *k = c->chunks, *next; k != NULL; k = next) {
        next = k->next;
        free(k);
    }
    free(c);
}

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

/* ---------------------------------------------------------------------------------------------
 * Parser state
 */

/* Children of an open block, indexed by name (and name+key for named blocks) for the
 * duplicate checks: open addressing, grown at half full. */
struct index {
    struct pol_cfg_node **slots;
    uint8_t *is_pair;
    size_t cap, used;
};

struct frame {
    struct pol_cfg_node *block;
    struct pol_cfg_node *last;
    struct index idx;
};

struct pol_cfg_parser {
    struct pol_cfg *cfg;
    const char *base_dir; /* arena copy, NULL when none */
    struct pol_cfg_reader main;
    struct frame frames[BLOCK_DEPTH_MAX + 1];
    unsigned depth; /* frames[0] is the root */
    unsigned include_depth;
    const char **loaded; /* files read so far, as their path text (Perl: $this->{files}) */
    size_t loaded_count, loaded_cap;
    bool failed;
    struct pol_cfg_error err;
};

int pol_cfg_fail(struct pol_cfg_parser *p, const char *file, unsigned line, const char *fmt, ...)
{
    if (!p->failed) {
        p->failed = true;
        snprintf(p->err.file, sizeof(p->err.file), "%s", file);
        p->err.line = line;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err.msg, sizeof(p->err.msg), fmt, ap);
        va_end(ap);
    }
    return -1;
}

int pol_cfg_oom(struct pol_cfg_parser *p, const struct pol_cfg_reader *r)
{
    return pol_cfg_fail(p, r->file, r->line_no, "out of memory");
}

/* ---------------------------------------------------------------------------------------------
 * The duplicate index
 */

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static uint64_t node_hash(const struct pol_cfg_node *n, bool pair)
{
    uint64_t h = fnv(14695981039346656037ull, n->name);
    return pair ? fnv(h * 31 + 1, n->value) : h;
}

static bool node_same(const struct pol_cfg_node *a, const struct pol_cfg_node *b, bool pair)
{
    return strcmp(a->name, b->name) == 0 && (!pair || strcmp(a->value, b->value) == 0);
}

/* The entry equal to n (by name, or name and key), or the empty slot where it would go. */
static size_t index_slot(const struct index *x, const struct pol_cfg_node *n, bool pair)
{
    size_t i = node_hash(n, pair) & (x->cap - 1);
    while (x->slots[i] != NULL && !(x->is_pair[i] == pair && node_same(x->slots[i], n, pair))) {
        i = (i + 1) & (x->cap - 1);
    }
    return i;
}

static const struct pol_cfg_node *index_find(const struct index *x, const struct pol_cfg_node *n,
                                             bool pair)
{
    return x->cap ? x->slots[index_slot(x, n, pair)] : NULL;
}

static int index_grow(struct index *x)
{
    struct index bigger = {.cap = x->cap ? x->cap * 2 : 16};
    bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
    bigger.is_pair = calloc(bigger.cap, 1);
    if (bigger.slots == NULL || bigger.is_pair == NULL) {
        free(bigger.slots);
        free(bigger.is_pair);
        return -1;
    }
    for (size_t i = 0; i < x->cap; i++) {
        if (x->slots[i] != NULL) {
            size_t j = index_slot(&bigger, x->slots[i], x->is_pair[i]);
            bigger.slots[j] = x->slots[i];
            bigger.is_pair[j] = x->is_pair[i];
            bigger.used++;
        }
    }
    free(x->slots);
    free(x->is_pair);
    *x = bigger;
    return 0;
}

/* Adds n unless an equal entry exists (the first occurrence stays). */
static int index_add(struct index *x, struct pol_cfg_node *n, bool pair)
{
    if ((x->used + 1) * 2 > x->cap && index_grow(x) != 0) {
        return -1;
    }
    size_t i = index_slot(x, n, pair);
    if (x->slots[i] == NULL) {
        x->slots[i] = n;
        x->is_pair[i] = pair;
        x->used++;
    }
    return 0;
}

static void index_free(struct index *x)
{
    free(x->slots);
    free(x->is_pair);
    memset(x, 0, sizeof(*x));
}

/* ---------------------------------------------------------------------------------------------
 * The builder (Config::General's _parse): items to options and blocks
 */

/* Checks n against its future siblings; returns -1 with the error set on a duplicate. */
static int check_duplicate(struct pol_cfg_parser *p, const struct frame *f,
                           const struct pol_cfg_node *n)
{
    const struct pol_cfg_node *old = index_find(&f->idx, n, false);
    if (old == NULL) {
        return 0;
    }
    if (!n->is_block && old->is_block) {
        return pol_cfg_fail(p, n->file, n->line,
                            "option \"%s\" has the name of block <%s> (at %s:%u)", n->name,
                            old->name, old->file, old->line);
    }
    const char *what = !n->is_block ? "option" : n->value == NULL ? "block" : NULL;
    if (what != NULL) {
        return pol_cfg_fail(p, n->file, n->line,
                            "%s \"%s\" occurs more than once in this block (also at %s:%u)", what,
                            n->name, old->file, old->line);
    }
    if (!old->is_block) {
        return pol_cfg_fail(p, n->file, n->line,
                            "block <%s %s> has the name of option \"%s\" (at %s:%u)", n->name,
                            n->value, old->name, old->file, old->line);
    }
    if (old->value == NULL) {
        return pol_cfg_fail(
            p, n->file, n->line,
            "block <%s %s> follows the anonymous block <%s> (at %s:%u) in the same block", n->name,
            n->value, old->name, old->file, old->line);
    }
    old = index_find(&f->idx, n, true);
    if (old != NULL) {
        return pol_cfg_fail(p, n->file, n->line,
                            "block <%s %s> occurs more than once (also at %s:%u)", n->name,
                            n->value, old->file, old->line);
    }
    return 0;
}

static struct pol_cfg_node *new_node(struct pol_cfg_parser *p, const struct pol_cfg_reader *r,
                                     unsigned line, const char *name, size_t name_len,
                                     const char *value, size_t value_len)
{
    struct pol_cfg_node *n = arena_alloc(p->cfg, sizeof(*n));
    if (n == NULL) {
        return NULL;
    }
    memset(n, 0, sizeof(*n));
    n->name = arena_strndup(p->cfg, name, name_len);
    n->value = value != NULL ? arena_strndup(p->cfg, value, value_len) : NULL;
    n->file = r->file;
    n->line = line;
    if (n->name == NULL || (value != NULL && n->value == NULL)) {
        return NULL;
    }
    return n;
}

static int attach(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, struct pol_cfg_node *n)
{
    struct frame *f = &p->frames[p->depth];
    if (check_duplicate(p, f, n) != 0) {
        return -1;
    }
    if (index_add(&f->idx, n, false) != 0 ||
        (n->is_block && n->value != NULL && index_add(&f->idx, n, true) != 0)) {
        return pol_cfg_oom(p, r);
    }
    if (f->last == NULL) {
        f->block->children = n;
    } else {
        f->last->next = n;
    }
    f->last = n;
    return 0;
}

/* Option values: s/^"(.*)"$/$1/ when both quotes are there, then s/\\([\$\\\"#])/$1/g. */
static size_t unquote_unescape(char *v, size_t n)
{
    if (n > 0 && v[0] == '"' && v[n - 1] == '"') {
        n = n >= 2 ? n - 2 : 0;
        memmove(v, v + 1, n);
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && i + 1 < n && strchr("$\\\"#", v[i + 1]) != NULL) {
            i++;
        }
        v[w++] = v[i];
    }
    return w;
}

int pol_cfg_option_item(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line,
                        const char *name, size_t name_len, char *value, size_t value_len)
{
    value_len = unquote_unescape(value, value_len);
    struct pol_cfg_node *n = new_node(p, r, line, name, name_len, value, value_len);
    return n != NULL ? attach(p, r, n) : pol_cfg_oom(p, r);
}

/* Block name and key from the text between < and >, as _parse does it:
 *   /^"([^"]+)"$/: the whole text unquoted is the name, no key;
 *   /^(?:"([^"]+)"|(\S+))(?:\s+(?:"([^"]+)"|(.*)))?$/: name $1||$2, key $3||$4 (so a quoted
 *   key "0" is false in Perl and gives an anonymous block: kept);
 *   otherwise (it starts with whitespace) the whole text is the name. */
struct block_head {
    const char *name, *key;
    size_t name_len, key_len;
};

static bool quoted_span(const char *s, size_t n, size_t *inner_end)
{
    if (n < 3 || s[0] != '"') {
        return false;
    }
    const char *q = memchr(s + 1, '"', n - 1);
    if (q == NULL || q == s + 1) {
        return false;
    }
    *inner_end = (size_t)(q - s);
    return true;
}

static void split_head_key(struct block_head *h, const char *rest, size_t n)
{
    size_t k = skip_ws(rest, n, 0);
    size_t q;
    if (quoted_span(rest + k, n - k, &q) && k + q + 1 == n) {
        h->key = rest + k + 1;
        h->key_len = q - 1;
        if (h->key_len == 1 && h->key[0] == '0') {
            h->key = NULL; /* Perl: "0" || undef */
        }
        return;
    }
    h->key = rest + k;
    h->key_len = n - k;
}

static void parse_block_head(const char *s, size_t n, struct block_head *h)
{
    memset(h, 0, sizeof(*h));
    size_t q;
    if (quoted_span(s, n, &q) && q == n - 1) {
        h->name = s + 1;
        h->name_len = n - 2;
        return;
    }
    if (quoted_span(s, n, &q) && (q + 1 == n || is_ws(s[q + 1]))) {
        h->name = s + 1;
        h->name_len = q - 1;
        if (q + 1 < n) {
            split_head_key(h, s + q + 1, n - q - 1);
        }
        return;
    }
    size_t w = 0;
    while (w < n && !is_ws(s[w])) {
        w++;
    }
    h->name = s;
    h->name_len = w == 0 ? n : w; /* w == 0: starts with whitespace, no match */
    if (w > 0 && w < n) {
        split_head_key(h, s + w, n - w);
    }
}

static int open_block(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line,
                      const char *s, size_t n)
{
    if (p->depth == BLOCK_DEPTH_MAX) {
        return pol_cfg_fail(p, r->file, line, "blocks nested deeper than %d", BLOCK_DEPTH_MAX);
    }
    struct block_head h;
    parse_block_head(s, n, &h);
    struct pol_cfg_node *b = new_node(p, r, line, h.name, h.name_len, h.key, h.key_len);
    if (b == NULL) {
        return pol_cfg_oom(p, r);
    }
    b->is_block = true;
    if (attach(p, r, b) != 0) {
        return -1;
    }
    struct frame *f = &p->frames[++p->depth];
    memset(f, 0, sizeof(*f));
    f->block = b;
    return 0;
}

/* Whether </TEXT> may close <name ...>: TEXT (trimmed, unquoted) or its first word is the
 * name, ignoring case. */
static bool closes(const char *s, size_t n, const char *name)
{
    size_t a = skip_ws(s, n, 0);
    s += a;
    n = rtrim_len(s, n - a);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    size_t len = strlen(name);
    if (n == len && strncasecmp(s, name, n) == 0) {
        return true;
    }
    size_t w = 0;
    while (w < n && !is_ws(s[w])) {
        w++;
    }
    return w == len && strncasecmp(s, name, w) == 0;
}

static int close_block(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line,
                       const char *s, size_t n)
{
    if (p->depth == 0) {
        return pol_cfg_fail(p, r->file, line, "</%.*s> has no matching <%.*s>", (int)n, s, (int)n,
                            s);
    }
    const struct pol_cfg_node *b = p->frames[p->depth].block;
    if (!closes(s, n, b->name)) {
        return pol_cfg_fail(p, r->file, line, "</%.*s> does not close <%s> (opened at %s:%u)",
                            (int)n, s, b->name, b->file, b->line);
    }
    index_free(&p->frames[p->depth].idx);
    p->depth--;
    return 0;
}

/* split /\s*=\s*|\s+/, $_, 2 on a trimmed item: the first '=' or whitespace run ends the name;
 * *value_off is -1 when there is no separator (Perl: undef value). */
static size_t split_option(const char *s, size_t n, ptrdiff_t *value_off)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=' && !is_ws(s[i])) {
            continue;
        }
        size_t j = skip_ws(s, n, i);
        if (j < n && s[j] == '=') {
            *value_off = (ptrdiff_t)skip_ws(s, n, j + 1);
        } else {
            *value_off = (ptrdiff_t)j;
        }
        return i;
    }
    *value_off = -1;
    return n;
}

/* One item of the content list (a line, a continued line, one half of <a/>). */
int pol_cfg_item(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line, char *s,
                 size_t n)
{
    size_t a = skip_ws(s, n, 0);
    s += a;
    n = rtrim_len(s, n - a);
    if (n >= 3 && s[0] == '<' && s[1] != '/' && s[n - 1] == '>') {
        return open_block(p, r, line, s + 1, n - 2);
    }
    if (n >= 4 && s[0] == '<' && s[1] == '/' && s[n - 1] == '>') {
        return close_block(p, r, line, s + 2, n - 3);
    }
    ptrdiff_t v;
    size_t name_len = split_option(s, n, &v);
    if (v < 0) {
        return pol_cfg_option_item(p, r, line, s, name_len, s + n, 0);
    }
    return pol_cfg_option_item(p, r, line, s, name_len, s + v, n - (size_t)v);
}

/* ---------------------------------------------------------------------------------------------
 * The reader (Config::General's _read): lines to items
 */

static int read_file(struct pol_cfg_parser *p, const struct pol_cfg_reader *from, const char *path);

int pol_cfg_include(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *name, size_t n)
{
    if (p->include_depth == INCLUDE_DEPTH_MAX) {
        return pol_cfg_fail(p, r->file, r->line_no, "includes nested deeper than %d files",
                            INCLUDE_DEPTH_MAX);
    }
    char path[4096];
    if (n + (p->base_dir ? strlen(p->base_dir) : 0) + 2 > sizeof(path)) {
        return pol_cfg_fail(p, r->file, r->line_no, "include file name longer than %zu bytes",
                            sizeof(path) / 2);
    }
    struct stat st;
    snprintf(path, sizeof(path), "%.*s", (int)n, name);
    if (stat(path, &st) != 0 && p->base_dir != NULL) {
        snprintf(path, sizeof(path), "%s/%.*s", p->base_dir, (int)n, name);
    }
    if (stat(path, &st) != 0) {
        return pol_cfg_fail(
            p, r->file, r->line_no,
            "include file \"%.*s\" does not exist (looked in the current directory%s%s)", (int)n,
            name, p->base_dir ? " and in " : "", p->base_dir ? p->base_dir : "");
    }
    if (S_ISDIR(st.st_mode)) {
        return pol_cfg_fail(p, r->file, r->line_no, "include file \"%s\" is a directory", path);
    }
    for (size_t i = 0; i < p->loaded_count; i++) {
        if (strcmp(p->loaded[i], path) == 0) {
            return 0; /* Config::General: "File ... already loaded", skipped */
        }
    }
    return read_file(p, r, path);
}

static int remember_file(struct pol_cfg_parser *p, const char *file)
{
    if (p->loaded_count == p->loaded_cap) {
        size_t cap = p->loaded_cap ? p->loaded_cap * 2 : 8;
        const char **l = realloc(p->loaded, cap * sizeof(*l));
        if (l == NULL) {
            return -1;
        }
        p->loaded = l;
        p->loaded_cap = cap;
    }
    p->loaded[p->loaded_count++] = file;
    return 0;
}

/* Reads an include with a fresh reader. from: the including reader, for messages. */
static int read_file(struct pol_cfg_parser *p, const struct pol_cfg_reader *from, const char *path)
{
    struct pol_cfg_reader r = {.file = arena_strndup(p->cfg, path, strlen(path))};
    if (r.file == NULL || remember_file(p, r.file) != 0) {
        return pol_cfg_oom(p, from);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return pol_cfg_fail(p, from->file, from->line_no, "cannot open include file \"%s\": %s",
                            path, strerror(errno));
    }
    p->include_depth++;
    char *chunk = malloc(READ_CHUNK_BYTES);
    int rc = chunk ? 0 : pol_cfg_oom(p, from);
    while (rc == 0) {
        ssize_t got = read(fd, chunk, READ_CHUNK_BYTES);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rc = pol_cfg_fail(p, r.file, r.line_no, "cannot read: %s", strerror(errno));
        } else if (got == 0) {
            rc = pol_cfg_reader_finish(p, &r);
            break;
        } else {
            rc = pol_cfg_reader_feed(p, &r, chunk, (size_t)got);
        }
    }
    free(chunk);
    close(fd);
    pol_cfg_reader_free(&r);
    p->include_depth--;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Public API
 */

struct pol_cfg_parser *pol_cfg_parser_new(const char *name, const char *include_base_dir)
{
    ENG_ASSERT(name != NULL);
    struct pol_cfg_parser *p = calloc(1, sizeof(*p));
    struct pol_cfg *c = calloc(1, sizeof(*c));
    if (p == NULL || c == NULL) {
        free(p);
        free(c);
        return NULL;
    }
    p->cfg = c;
    c->root.name = "";
    c->root.is_block = true;
    c->root.file = p->main.file = arena_strndup(c, name, strlen(name));
    p->base_dir =
        include_base_dir ? arena_strndup(c, include_base_dir, strlen(include_base_dir)) : NULL;
    p->frames[0].block = &c->root;
    if (p->main.file == NULL || (include_base_dir && p->base_dir == NULL) ||
        remember_file(p, p->main.file) != 0) {
        free(p->loaded);
        pol_cfg_free(c);
        free(p);
        return NULL;
    }
    return p;
}

int pol_cfg_parser_feed(struct pol_cfg_parser *p, const char *buf, size_t len,
                        struct pol_cfg_error *err)
{
    ENG_ASSERT(p != NULL);
    ENG_ASSERT(buf != NULL || len == 0);
    if (!p->failed) {
        pol_cfg_reader_feed(p, &p->main, buf, len);
    }
    if (p->failed && err != NULL) {
        *err = p->err;
    }
    return p->failed ? -1 : 0;
}

static void parser_free(struct pol_cfg_parser *p)
{
    for (unsigned d = 0; d <= p->depth; d++) {
        index_free(&p->frames[d].idx);
    }
    pol_cfg_reader_free(&p->main);
    free(p->loaded);
    free(p);
}

int pol_cfg_parser_finish(struct pol_cfg_parser *p, struct pol_cfg **out, struct pol_cfg_error *err)
{
    ENG_ASSERT(p != NULL);
    ENG_ASSERT(out != NULL);
    *out = NULL;
    if (!p->failed && pol_cfg_reader_finish(p, &p->main) == 0 && p->depth > 0) {
        const struct pol_cfg_node *b = p->frames[p->depth].block;
        pol_cfg_fail(p, b->file, b->line, "<%s%s%s> has no </%s>", b->name, b->value ? " " : "",
                     b->value ? b->value : "", b->name);
    }
    int rc = 0;
    if (p->failed) {
        if (err != NULL) {
            *err = p->err;
        }
        pol_cfg_free(p->cfg);
        rc = -1;
    } else {
        *out = p->cfg;
    }
    parser_free(p);
    return rc;
}

int pol_cfg_load(const char *path, struct pol_cfg **out, struct pol_cfg_error *err)
{
    ENG_ASSERT(path != NULL);
    ENG_ASSERT(out != NULL);
    ENG_ASSERT(err != NULL);
    memset(err, 0, sizeof(*err));
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        snprintf(err->file, sizeof(err->file), "%s", path);
        snprintf(err->msg, sizeof(err->msg), "cannot read the configuration file: %s",
                 fd < 0 ? strerror(errno) : "it is a directory");
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 0, path);
    struct pol_cfg_parser *p = pol_cfg_parser_new(path, slash ? dir : NULL);
    char *chunk = malloc(READ_CHUNK_BYTES);
    int rc = p && chunk ? 0 : -1;
    if (p != NULL && chunk == NULL) {
        pol_cfg_fail(p, path, 0, "out of memory");
    }
    while (rc == 0) {
        ssize_t got = read(fd, chunk, READ_CHUNK_BYTES);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            if (got < 0) {
                pol_cfg_fail(p, path, 0, "cannot read the configuration file: %s", strerror(errno));
            }
            break;
        }
        rc = pol_cfg_parser_feed(p, chunk, (size_t)got, err);
    }
    free(chunk);
    close(fd);
    if (p == NULL) {
        snprintf(err->file, sizeof(err->file), "%s", path);
        snprintf(err->msg, sizeof(err->msg), "out of memory");
        return -1;
    }
    return pol_cfg_parser_finish(p, out, err);
}

const struct pol_cfg_node *pol_cfg_root(const struct pol_cfg *c)
{
    ENG_ASSERT(c != NULL);
    return &c->root;
}

const struct pol_cfg_node *pol_cfg_option(const struct pol_cfg_node *block, const char *name)
{
    ENG_ASSERT(block != NULL);
    ENG_ASSERT(name != NULL);
    for (const struct pol_cfg_node *n = block->children; n != NULL; n = n->next) {
        if (!n->is_block && strcmp(n->name, name) == 0) {
            return n;
        }
    }
    return NULL;
}

const char *pol_cfg_value(const struct pol_cfg_node *block, const char *name, const char *dflt)
{
    const struct pol_cfg_node *n = pol_cfg_option(block, name);
    return n != NULL ? n->value : dflt;
}

char *pol_cfg_error_format(const struct pol_cfg_error *err, char *out, size_t out_len)
{
    ENG_ASSERT(err != NULL);
    ENG_ASSERT(out != NULL && out_len > 0);
    if (err->line > 0) {
        snprintf(out, out_len, "%s:%u: %s", err->file, err->line, err->msg);
    } else {
        snprintf(out, out_len, "%s: %s", err->file, err->msg);
    }
    return out;
}
