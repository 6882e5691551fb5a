/*
 * cfg_dump.c: loads a configuration with pol_cfg_load and prints it in the shape
 * Config::General gives it (cfg_dump.pl prints Perl's side the same way), for cfg_diff.py.
 *
 * Perl's shape: every block is an ordered hash; an option is NAME => value, an anonymous
 * block NAME => {children}, and named blocks NAME => {KEY => {children}, ...}, all the keys of
 * one NAME grouped where that NAME first appears. One line per entry:
 *   S DEPTH KEY VALUE   (an option)
 *   H DEPTH KEY         (a hash; its entries follow at DEPTH+1)
 * Bytes outside '!'..'~' and '%' are written %XX. On a refused file: "ERROR" and the message
 * on standard error, exit status 1.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"

static void put(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c > ' ' && c < 0x7f && c != '%') {
            putchar(c);
        } else {
            printf("%%%02X", c);
        }
    }
}

static void head(char kind, unsigned depth, const char *key)
{
    printf("%c %u ", kind, depth);
    put(key);
}

static void dump_block(const struct pol_cfg_node *b, unsigned depth);

/* All named blocks called like n, from n on, as one hash of keys. */
static void dump_named_group(const struct pol_cfg_node *n, unsigned depth)
{
    head('H', depth, n->name);
    putchar('\n');
    for (const struct pol_cfg_node *m = n; m != NULL; m = m->next) {
        if (m->is_block && m->value != NULL && strcmp(m->name, n->name) == 0) {
            head('H', depth + 1, m->value);
            putchar('\n');
            dump_block(m, depth + 2);
        }
    }
}

static bool named_seen_before(const struct pol_cfg_node *first, const struct pol_cfg_node *n)
{
    for (const struct pol_cfg_node *m = first; m != n; m = m->next) {
        if (m->is_block && m->value != NULL && strcmp(m->name, n->name) == 0) {
            return true;
        }
    }
    return false;
}

static void dump_block(const struct pol_cfg_node *b, unsigned depth)
{
    for (const struct pol_cfg_node *n = b->children; n != NULL; n = n->next) {
        if (!n->is_block) {
            head('S', depth, n->name);
            putchar(' ');
            put(n->value);
            putchar('\n');
        } else if (n->value == NULL) {
            head('H', depth, n->name);
            putchar('\n');
            dump_block(n, depth + 1);
        } else if (!named_seen_before(b->children, n)) {
            dump_named_group(n, depth);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: cfg_dump FILE\n");
        return 2;
    }
    struct pol_cfg *c;
    struct pol_cfg_error err;
    if (pol_cfg_load(argv[1], &c, &err) != 0) {
        char msg[1200];
        puts("ERROR");
        fprintf(stderr, "%s\n", pol_cfg_error_format(&err, msg, sizeof(msg)));
        return 1;
    }
    dump_block(pol_cfg_root(c), 0);
    pol_cfg_free(c);
    return 0;
}
