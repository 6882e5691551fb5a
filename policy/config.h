/*
 * config.h: the Config::General subset mtpolicyd.conf files use (spec 8), parsed into a tree.
 *
 * The tree keeps file order. Options and blocks carry the file and line they came from, so
 * every later error can name them. Parsing is a push parser (feed bytes in any fragments, then
 * finish), so the same code serves files, includes, tests and the fuzzer; pol_cfg_load reads a
 * file and follows <<include FILE>> (relative paths: current directory first, then the main
 * file's directory; a missing include is an error).
 *
 * Errors (first one wins, parsing stops): the same option name twice in one block, the same
 * block name+key twice in one block, unbalanced or mismatched </Name>, unterminated here-doc
 * or comment, include that cannot be read, include recursion deeper than 16. All of them carry
 * file, line and a sentence.
 *
 * Memory: the tree owns all its strings; pol_cfg_free releases everything. Main thread only.
 */
#ifndef POL_CONFIG_H
#define POL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct pol_cfg_node {
    const char *name;  /* option or block name ("port", "VirtualHost", "Plugin") */
    const char *value; /* option value (trimmed, unquoted) or block key (NULL: anonymous) */
    bool is_block;
    const char *file;  /* the file it was read from */
    unsigned line;     /* 1-based */
    struct pol_cfg_node *children; /* blocks: first child, in file order */
    struct pol_cfg_node *next;     /* next sibling */
};

struct pol_cfg_error {
    char file[512];
    unsigned line; /* 0 when not about a line (e.g. the main file is missing) */
    char msg[512];
};

struct pol_cfg; /* owns a tree */

/* Returns 0, or -1 with err filled ("FILE:LINE: message" via pol_cfg_error_format). */
int pol_cfg_load(const char *path, struct pol_cfg **out, struct pol_cfg_error *err);
const struct pol_cfg_node *pol_cfg_root(const struct pol_cfg *c); /* an anonymous block */
void pol_cfg_free(struct pol_cfg *c);

/* Push parser, for buffers and tests. name is used in errors and as the base for includes. */
struct pol_cfg_parser;
struct pol_cfg_parser *pol_cfg_parser_new(const char *name, const char *include_base_dir);
int pol_cfg_parser_feed(struct pol_cfg_parser *p, const char *buf, size_t len,
                        struct pol_cfg_error *err);
/* Ends input; on success returns 0 and the tree in *out (the parser is freed either way). */
int pol_cfg_parser_finish(struct pol_cfg_parser *p, struct pol_cfg **out,
                          struct pol_cfg_error *err);

/* Lookup helpers over one block's direct children. */
const struct pol_cfg_node *pol_cfg_option(const struct pol_cfg_node *block, const char *name);
const char *pol_cfg_value(const struct pol_cfg_node *block, const char *name, const char *dflt);

/* "FILE:LINE: msg" (or "FILE: msg" when line is 0). Returns out. */
char *pol_cfg_error_format(const struct pol_cfg_error *err, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif
