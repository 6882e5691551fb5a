/*
 * config_read.c: the reader half of the configuration parser (config_read.h): the lines of one
 * file to items, as Config::General 2.65's _read does it with mtpolicyd's options (CComments
 * on, the "guess" split policy). In the order _read applies them: here-document lines, C
 * comments, '#' comments (`\#` escapes), backslash continuation, explicit empty blocks
 * `<a/>`, here-document starts, the end of a continued line, blank lines, <<include FILE>>.
 * Each rule follows the Perl regex it mirrors, quirks included (named where they happen).
 *
 * State is per file (struct pol_cfg_reader), so an include starts fresh, as in Perl. Where
 * Perl silently drops data at the end of a file (an open here-document, C comment or
 * continued line), pol_cfg_reader_finish refuses with the line it started on. A NUL byte is
 * refused. A UTF-8 byte order mark at the start of a file is skipped.
 */
#include "config_read.h"

#include <stdio.h>
#include <strings.h>

static const char *find2(const char *s, size_t n, size_t from, char a, char b)
{
    for (size_t i = from; i + 1 < n; i++) {
        if (s[i] == a && s[i + 1] == b) {
            return s + i;
        }
    }
    return NULL;
}

static const char *rfind2(const char *s, size_t n, char a, char b)
{
    for (size_t i = n; i >= 2; i--) {
        if (s[i - 2] == a && s[i - 1] == b) {
            return s + i - 2;
        }
    }
    return NULL;
}

static bool all_ws(const char *s, size_t n)
{
    return skip_ws(s, n, 0) == n;
}

/* Here-doc lines up to /^(\s*)\Q$hierend\E\s*$/; $1 is removed from every line. */
static bool heredoc_end(const struct pol_cfg_reader *r, const char *s, size_t n, size_t *indent)
{
    const char *m = r->here_end.p;
    size_t mlen = r->here_end.len;
    for (size_t k = skip_ws(s, n, 0) + 1; k-- > 0;) {
        if (n - k >= mlen && memcmp(s + k, m, mlen) == 0 && all_ws(s + k + mlen, n - k - mlen)) {
            *indent = k;
            return true;
        }
    }
    return false;
}

static int heredoc_finish(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *indent,
                          size_t indent_len)
{
    struct pol_cfg_buf body = {0};
    const char *s = r->here_body.p ? r->here_body.p : "";
    for (size_t i = 0; i < r->here_lines; i++) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        const char *line = s;
        if (indent_len > 0 && n >= indent_len && memcmp(line, indent, indent_len) == 0) {
            line += indent_len;
            n -= indent_len;
        }
        bool sep = indent_len > 0 || i + 1 < r->here_lines;
        if (buf_add(&body, line, n) != 0 || (sep && buf_add(&body, "\n", 1) != 0)) {
            buf_free(&body);
            return pol_cfg_oom(p, r);
        }
        s = e ? e + 1 : s + n;
    }
    /* _parse: the value after the separator loses leading and trailing whitespace. */
    char *v = body.p ? body.p : (char *)"";
    size_t a = skip_ws(v, body.len, 0);
    const char *name = r->here_name.p;
    size_t na = skip_ws(name, r->here_name.len, 0);
    int rc = pol_cfg_option_item(p, r, r->here_line, name + na,
                                 rtrim_len(name + na, r->here_name.len - na), v + a,
                                 rtrim_len(v + a, body.len - a));
    buf_free(&body);
    r->in_heredoc = false;
    r->here_name.len = r->here_end.len = r->here_body.len = 0;
    r->here_lines = 0;
    return rc;
}

static int heredoc_line(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *s, size_t n)
{
    size_t indent;
    if (heredoc_end(r, s, n, &indent)) {
        return heredoc_finish(p, r, s, indent);
    }
    if (r->here_body.len + n + 1 > POL_CFG_ITEM_BYTES_MAX) {
        return pol_cfg_fail(p, r->file, r->here_line, "here-document longer than %u bytes",
                            (unsigned)POL_CFG_ITEM_BYTES_MAX);
    }
    if ((r->here_lines > 0 && buf_add(&r->here_body, "\n", 1) != 0) ||
        buf_add(&r->here_body, s, n) != 0) {
        return pol_cfg_oom(p, r);
    }
    r->here_lines++;
    return 0;
}

/* CComments: returns true when the line is to be skipped; may shorten it. */
static bool c_comments(struct pol_cfg_reader *r, char *s, size_t *np)
{
    size_t n = *np;
    const char *open = find2(s, n, 0, '/', '*');
    const char *close = open ? rfind2(s, n, '*', '/') : NULL;
    if (open != NULL && close != NULL && close >= open + 2) {
        /* Remove from the first opener (with the whitespace before it) to the last closer
         * (with the whitespace after it). */
        size_t a = (size_t)(open - s);
        while (a > 0 && is_ws(s[a - 1])) {
            a--;
        }
        size_t b = skip_ws(s, n, (size_t)(close - s) + 2);
        memmove(s + a, s + b, n - b);
        *np = n - (b - a);
    } else if (find2(s, n, skip_ws(s, n, 0), '/', '*') == s + skip_ws(s, n, 0)) {
        /* The line starts a comment, which ends here only if the line ends with its end. */
        size_t t = rtrim_len(s, n);
        r->c_comment = !(t >= 2 && s[t - 2] == '*' && s[t - 1] == '/');
        r->c_comment_line = r->line_no;
    } else if ((close = rfind2(s, n, '*', '/')) != NULL) {
        /* Remove up to the last closer (Perl warns when no comment was open). */
        size_t b = (size_t)(close - s) + 2;
        memmove(s, s + b, n - b);
        *np = n - b;
        r->c_comment = false;
    }
    return r->c_comment;
}

/* s/(?<!\\)#.*$// */
static size_t strip_hash_comment(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '#' && (i == 0 || s[i - 1] != '\\')) {
            return i;
        }
    }
    return n;
}

/* /\s*<([^\/]+?.*?)\/>\s*$/: *lt is the '<', *slash the final "/>". */
static bool explicit_empty_block(const char *s, size_t n, size_t *lt, size_t *slash)
{
    size_t t = rtrim_len(s, n);
    if (t < 4 || s[t - 2] != '/' || s[t - 1] != '>') {
        return false;
    }
    size_t q = t - 2; /* the "/>"; the first '<' not followed by '/' opens the name */
    for (size_t i = 0; i + 1 < q; i++) {
        if (s[i] == '<' && s[i + 1] != '/') {
            *lt = i;
            *slash = q;
            return true;
        }
    }
    return false;
}

static int do_explicit_empty(struct pol_cfg_parser *p, struct pol_cfg_reader *r, char *s, size_t n,
                             size_t lt, size_t slash)
{
    /* The block name is the text after '<' up to its first whitespace; the line itself
     * loses its "/" only when "/>" ends it exactly (s/\/>$/>/). */
    size_t w = lt + 1;
    while (w < slash && !is_ws(s[w])) {
        w++;
    }
    struct pol_cfg_buf close = {0};
    if (buf_add(&close, "</", 2) != 0 || buf_add(&close, s + lt + 1, w - lt - 1) != 0 ||
        buf_add(&close, ">", 1) != 0) {
        buf_free(&close);
        return pol_cfg_oom(p, r);
    }
    if (n >= 2 && s[n - 2] == '/' && s[n - 1] == '>') {
        s[n - 2] = '>';
        n--;
    }
    int rc = pol_cfg_item(p, r, r->line_no, s, n);
    if (rc == 0) {
        rc = pol_cfg_item(p, r, r->line_no, close.p, close.len);
    }
    buf_free(&close);
    return rc;
}

/* (.+?)\s*$ after "<<\s*": the end marker, trimmed; all-whitespace text gives its last
 * character (the regex backtracks into the \s*). */
static bool heredoc_marker(const char *s, size_t n, size_t *a, size_t *b)
{
    if (n == 0) {
        return false;
    }
    size_t i = skip_ws(s, n, 0);
    if (i == n) {
        *a = n - 1;
        *b = n;
        return true;
    }
    *a = i;
    *b = rtrim_len(s, n);
    return true;
}

/* /^\s*([^=]+?)\s*=\s*<<\s*(.+?)\s*$/ or /^\s*(\S+?)\s+<<\s*(.+?)\s*$/ */
static bool heredoc_start(const char *s, size_t n, size_t *name_end, size_t *ma, size_t *mb)
{
    const char *eq = memchr(s, '=', n);
    if (eq != NULL && eq > s) {
        size_t j = skip_ws(s, n, (size_t)(eq - s) + 1);
        if (n - j >= 2 && s[j] == '<' && s[j + 1] == '<' &&
            heredoc_marker(s + j + 2, n - j - 2, ma, mb)) {
            *name_end = (size_t)(eq - s);
            *ma += j + 2;
            *mb += j + 2;
            return true;
        }
    }
    size_t w = skip_ws(s, n, 0);
    size_t we = w;
    while (we < n && !is_ws(s[we])) {
        we++;
    }
    size_t j = skip_ws(s, n, we);
    if (we > w && j > we && n - j >= 2 && s[j] == '<' && s[j + 1] == '<' &&
        heredoc_marker(s + j + 2, n - j - 2, ma, mb)) {
        *name_end = we;
        *ma += j + 2;
        *mb += j + 2;
        return true;
    }
    return false;
}

/* /^\s*<<include\s+(.+?)>>\s*$/i */
static bool include_line(const char *s, size_t n, size_t *fa, size_t *fb)
{
    size_t i = skip_ws(s, n, 0);
    if (n - i < 10 || strncasecmp(s + i, "<<include", 9) != 0 || !is_ws(s[i + 9])) {
        return false;
    }
    size_t w = skip_ws(s, n, i + 9);
    size_t t = rtrim_len(s, n);
    if (t < w + 2 || s[t - 2] != '>' || s[t - 1] != '>') {
        /* The file may still be the last whitespace character: "<<include  >>". */
        return false;
    }
    *fa = w;
    *fb = t - 2;
    if (*fa == *fb) {
        if (w - (i + 9) < 2) {
            return false;
        }
        (*fa)--;
    }
    return true;
}

static int append_longline(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *s,
                           size_t n)
{
    size_t a = skip_ws(s, n, 0);
    if (r->longline.len + n - a > POL_CFG_ITEM_BYTES_MAX) {
        return pol_cfg_fail(p, r->file, r->longline_line, "continued line longer than %u bytes",
                            (unsigned)POL_CFG_ITEM_BYTES_MAX);
    }
    if (r->longline.len == 0) {
        r->longline_line = r->line_no;
    }
    return buf_add(&r->longline, s + a, n - a) == 0 ? 0 : pol_cfg_oom(p, r);
}

/* Perl truthiness of $longline: "" and "0" are false. */
static bool longline_true(const struct pol_cfg_reader *r)
{
    return r->longline.len > 0 && !(r->longline.len == 1 && r->longline.p[0] == '0');
}

static int start_heredoc(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *s,
                         size_t name_end, size_t ma, size_t mb)
{
    r->here_name.len = r->here_end.len = r->here_body.len = 0;
    if (buf_add(&r->here_name, s, name_end) != 0 || buf_add(&r->here_end, s + ma, mb - ma) != 0) {
        return pol_cfg_oom(p, r);
    }
    r->in_heredoc = true;
    r->here_line = r->line_no;
    r->here_lines = 0;
    return 0;
}

/* One line of a file, without its LF. s may be modified. */
static int read_line(struct pol_cfg_parser *p, struct pol_cfg_reader *r, char *s, size_t n)
{
    if (memchr(s, '\0', n) != NULL) {
        return pol_cfg_fail(p, r->file, r->line_no, "NUL byte in the line");
    }
    if (r->in_heredoc) {
        return heredoc_line(p, r, s, n);
    }
    if (c_comments(r, s, &n)) {
        return 0;
    }
    n = strip_hash_comment(s, n);
    if (n > 0 && s[n - 1] == '\\' && (n == 1 || s[n - 2] != '\\')) {
        return append_longline(p, r, s, n - 1);
    }
    size_t a, b, c;
    if (explicit_empty_block(s, n, &a, &b)) {
        return do_explicit_empty(p, r, s, n, a, b);
    }
    if (heredoc_start(s, n, &a, &b, &c)) {
        return start_heredoc(p, r, s, a, b, c);
    }
    if (longline_true(r)) {
        if (append_longline(p, r, s, n) != 0) {
            return -1;
        }
        int rc = pol_cfg_item(p, r, r->longline_line, r->longline.p, r->longline.len);
        r->longline.len = 0;
        return rc;
    }
    if (all_ws(s, n)) {
        return 0;
    }
    if (include_line(s, n, &a, &b)) {
        return pol_cfg_include(p, r, s + a, b - a);
    }
    return pol_cfg_item(p, r, r->line_no, s, n);
}

static int reader_line(struct pol_cfg_parser *p, struct pol_cfg_reader *r, char *s, size_t n)
{
    r->line_no++;
    if (n > POL_CFG_ITEM_BYTES_MAX) {
        return pol_cfg_fail(p, r->file, r->line_no, "line longer than %u bytes",
                            (unsigned)POL_CFG_ITEM_BYTES_MAX);
    }
    if (r->line_no == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3; /* a UTF-8 byte order mark, skipped as Config::General does */
        n -= 3;
    }
    return read_line(p, r, s, n);
}

/* Splits bytes into lines; an unfinished line waits in r->partial. */
int pol_cfg_reader_feed(struct pol_cfg_parser *p, struct pol_cfg_reader *r, const char *buf,
                        size_t len)
{
    while (len > 0) {
        const char *lf = memchr(buf, '\n', len);
        size_t n = lf ? (size_t)(lf - buf) : len;
        if (r->partial.len + n > POL_CFG_ITEM_BYTES_MAX) {
            return pol_cfg_fail(p, r->file, r->line_no + 1, "line longer than %u bytes",
                                (unsigned)POL_CFG_ITEM_BYTES_MAX);
        }
        if (buf_add(&r->partial, buf, n) != 0) {
            return pol_cfg_oom(p, r);
        }
        if (lf == NULL) {
            return 0;
        }
        int rc = reader_line(p, r, r->partial.p, r->partial.len);
        r->partial.len = 0;
        if (rc != 0) {
            return rc;
        }
        buf += n + 1;
        len -= n + 1;
    }
    return 0;
}

/* End of a file: its last line, then what Perl would silently drop. */
int pol_cfg_reader_finish(struct pol_cfg_parser *p, struct pol_cfg_reader *r)
{
    if (r->partial.len > 0 && reader_line(p, r, r->partial.p, r->partial.len) != 0) {
        return -1;
    }
    if (r->in_heredoc) {
        return pol_cfg_fail(p, r->file, r->here_line, "here-document <<%s has no end line",
                            r->here_end.p);
    }
    if (r->c_comment) {
        return pol_cfg_fail(p, r->file, r->c_comment_line, "comment /* is not closed");
    }
    if (r->longline.len > 0) {
        return pol_cfg_fail(p, r->file, r->longline_line,
                            "the line continues past the end of the file");
    }
    return 0;
}

void pol_cfg_reader_free(struct pol_cfg_reader *r)
{
    buf_free(&r->partial);
    buf_free(&r->longline);
    buf_free(&r->here_name);
    buf_free(&r->here_end);
    buf_free(&r->here_body);
}
