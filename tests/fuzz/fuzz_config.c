/*
 * fuzz_config.c: libFuzzer target for policy/config.c and config_read.c (the mtpolicyd.conf
 * parser).
 *
 * The first input byte chooses a fragment size; the rest is a configuration file, parsed once
 * in one piece and once fed in fragments (each copied to an exactly sized buffer, so reads
 * past a fragment show up under ASan). Both must give the same tree, or the same error (file,
 * line and message). Includes: the main file's directory is a temporary directory holding one
 * file "a.inc", and inputs with a line holding both "<<include" and a '/' are skipped, so an
 * include can only reach that file, a file of the current directory, or fail (never
 * /dev/stdin or the rest of the file system; a continued line is never an include).
 * Build: see README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: %s\n", what);
        abort();
    }
}

static uint64_t mix(uint64_t h, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return (h ^ (s == NULL)) * 1099511628211ull;
}

/* A digest of the whole tree: names, values, kinds, files, lines, shape. */
static uint64_t digest(const struct pol_cfg_node *b, uint64_t h, unsigned depth)
{
    for (const struct pol_cfg_node *n = b->children; n != NULL; n = n->next) {
        check(n->name != NULL && n->file != NULL, "names and files are set");
        check(n->is_block || n->value != NULL, "options have values");
        h = mix(h, n->name);
        h = mix(h, n->value);
        h = mix(h, n->file);
        h = (h ^ (n->line * 2u + n->is_block) ^ depth) * 1099511628211ull;
        if (n->is_block) {
            h = digest(n, h, depth + 1);
        }
    }
    return h;
}

static char include_dir[] = "/tmp/fuzz_config.XXXXXX";

static uint64_t parse(const uint8_t *data, size_t size, size_t frag, char *err_text, size_t err_len)
{
    struct pol_cfg_parser *p = pol_cfg_parser_new("fuzz.conf", include_dir);
    check(p != NULL, "parser allocated");
    struct pol_cfg_error err;
    size_t step = frag == 0 || frag > size ? size : frag;
    for (size_t off = 0; off < size; off += step) {
        size_t n = size - off < step ? size - off : step;
        char *piece = malloc(n);
        memcpy(piece, data + off, n);
        int rc = pol_cfg_parser_feed(p, piece, n, &err);
        free(piece);
        if (rc != 0) {
            break;
        }
    }
    struct pol_cfg *c = NULL;
    if (pol_cfg_parser_finish(p, &c, &err) != 0) {
        check(c == NULL, "no tree on error");
        pol_cfg_error_format(&err, err_text, err_len);
        return 0;
    }
    err_text[0] = '\0';
    uint64_t h = digest(pol_cfg_root(c), 14695981039346656037ull, 0);
    pol_cfg_free(c);
    return h;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (mkdtemp(include_dir) == NULL) {
        perror("fuzz_config: temporary directory");
        abort();
    }
    char path[sizeof(include_dir) + 8];
    snprintf(path, sizeof(path), "%s/a.inc", include_dir);
    FILE *f = fopen(path, "w");
    check(f != NULL, "a.inc created");
    fputs("included = 1\n<Block in>\n  x = \"y\"\n</Block>\n", f);
    fclose(f);
    return 0;
}

/* Whether some line has "<<include" (any case) and a '/'. */
static int include_with_path(const uint8_t *s, size_t n)
{
    size_t start = 0;
    while (start < n) {
        const uint8_t *lf = memchr(s + start, '\n', n - start);
        size_t end = lf ? (size_t)(lf - s) : n;
        int slash = memchr(s + start, '/', end - start) != NULL;
        for (size_t i = start; slash && i + 9 <= end; i++) {
            if (strncasecmp((const char *)s + i, "<<include", 9) == 0) {
                return 1;
            }
        }
        start = end + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || include_with_path(data, size)) {
        return 0;
    }
    size_t frag = 1 + data[0] % 16;
    char e1[1200], e2[1200];
    uint64_t whole = parse(data + 1, size - 1, 0, e1, sizeof(e1));
    uint64_t parts = parse(data + 1, size - 1, frag, e2, sizeof(e2));
    check(whole == parts, "same tree in one piece and in fragments");
    check(strcmp(e1, e2) == 0, "same error in one piece and in fragments");
    return 0;
}
