/*
 * config_read.h: the two halves of the configuration parser, internal to config.c and
 * config_read.c. The reader (config_read.c, Config::General's _read) turns the lines of one
 * file into items; the builder (config.c, _parse) turns items into the tree and also owns
 * includes, errors and the public API of config.h. Main thread only.
 */
#ifndef POL_CONFIG_READ_H
#define POL_CONFIG_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* One line, continued line or here-document; Perl has no limit. */
#define POL_CFG_ITEM_BYTES_MAX (1u << 20)

/* A growable, NUL-terminated byte string. */
struct pol_cfg_buf {
    char *p;
    size_t len, cap;
};

static inline int buf_add(struct pol_cfg_buf *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n + 1) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, s, n);
    }
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static inline void buf_free(struct pol_cfg_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Perl's \s on byte strings. */
static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static inline size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && is_ws(s[i])) {
        i++;
    }
    return i;
}

static inline size_t rtrim_len(const char *s, size_t n)
{
    while (n > 0 && is_ws(s[n - 1])) {
        n--;
    }
    return n;
}

/* Config::General's _read() locals, one per file being read (an include starts afresh). */
struct pol_cfg_reader {
    const char *file;           /* interned in the tree arena */
    unsigned line_no;           /* the line being processed */
    struct pol_cfg_buf partial; /* bytes of a line not yet ended by LF */
    bool c_comment;
    unsigned c_comment_line;
    struct pol_cfg_buf longline; /* Perl: $longline ("" when undef) */
    unsigned longline_line;
    bool in_heredoc;
    struct pol_cfg_buf here_name, here_end, here_body;
    size_t here_lines;
    unsigned here_line;
};

/* The reader (config_read.c). feed splits bytes into lines (an unfinished line waits in the
 * reader); finish ends the file. Both return 0, or -1 after pol_cfg_fail. */
int pol_cfg_reader_feed(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *buf,
                        size_t len);
int pol_cfg_reader_finish(struct pol_cfg_parser *p, struct pol_cfg_reader *r);
void pol_cfg_reader_free(struct pol_cfg_reader *r);

/* The builder (config.c). Each returns 0, or -1 with the parser's error set. */
int pol_cfg_fail(struct pol_cfg_parser *p, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int pol_cfg_oom(struct pol_cfg_parser *p, const struct pol_cfg_reader *r);
/* One item (a line, a continued line, half of <a/>); s may be modified. */
int pol_cfg_item(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line, char *s,
                 size_t n);
/* An option whose name and value are already split (a here-document). */
int pol_cfg_option_item(struct pol_cfg_parser *p, const struct pol_cfg_reader *r, unsigned line,
                        const char *name, size_t name_len, char *value, size_t value_len);
/* <<include NAME>> (NAME not NUL-terminated). */
int pol_cfg_include(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *name, size_t n);

#endif
