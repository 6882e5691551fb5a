/*
 * mc_proto.c: the memcached text protocol, pure: key encoding, request formatting and the reply
 * parser (eng/mc.h). No I/O, no allocation, no global state; callable from any thread.
 *
 * The parser sees one reply at the start of a buffer and either spans it whole, asks for more
 * input, or calls it malformed (the client then resets the connection: once framing is lost no
 * later reply can be matched). A reply line is at most ENG_MC_LINE_BYTES_MAX bytes; a value is
 * taken whole when it is at most value_bytes_max bytes, otherwise its header is reported with
 * discard_bytes so the client can skip the data without buffering it.
 *
 * Limits: keys as sent are at most ENG_MC_KEY_BYTES_MAX bytes (the encoding guarantees it), the
 * prefix at most ENG_MC_PREFIX_BYTES_MAX. Known gap: the hash form of an encoded key ("~h" and
 * 128 bits) can in theory collide; at 2^-64 for a billion keys it is not worth a fallback.
 */
#include "eng/mc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "eng/assert.h"
#include "mc_int.h"

_Static_assert(ENG_MC_PREFIX_BYTES_MAX + 2 + 32 <= ENG_MC_KEY_BYTES_MAX,
               "a hashed key fits after the longest prefix");

static const char *const status_text[ENG_MC_STATUS_COUNT] = {
    [ENG_MC_OK] = "ok",
    [ENG_MC_NOT_FOUND] = "not found",
    [ENG_MC_NOT_STORED] = "not stored",
    [ENG_MC_DOWN] = "server down",
    [ENG_MC_TIMEOUT] = "timeout",
    [ENG_MC_ERROR] = "error",
};

const char *eng_mc_status_text(enum eng_mc_status st)
{
    return (unsigned)st < ENG_MC_STATUS_COUNT ? status_text[st] : "?";
}

/* ---------------------------------------------------------------------------------------------
 * Keys
 */

static bool key_byte_ok(unsigned char c)
{
    return c > 0x20 && c != 0x7f;
}

int eng_mc_prefix_check(const char *prefix, char *err, size_t err_len)
{
    size_t n = strlen(prefix);
    if (n > ENG_MC_PREFIX_BYTES_MAX) {
        snprintf(err, err_len, "namespace is %zu bytes long, at most %u are allowed", n,
                 ENG_MC_PREFIX_BYTES_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!key_byte_ok((unsigned char)prefix[i])) {
            snprintf(err, err_len,
                     "namespace contains a space or control character (byte %zu), which memcached "
                     "keys cannot carry",
                     i + 1);
            return -1;
        }
    }
    return 0;
}

static bool key_is_plain(const char *key, size_t len, size_t room)
{
    if (len == 0 || len > room || key[0] == '~')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!key_byte_ok((unsigned char)key[i]))
            return false;
    return true;
}

static size_t base64url(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
    }
    return o;
}

size_t eng_mc_key_encode(const char *prefix, size_t prefix_len, const char *key, size_t key_len,
                         char *out)
{
    ENG_ASSERT(prefix_len <= ENG_MC_PREFIX_BYTES_MAX);
    memcpy(out, prefix, prefix_len);
    size_t room = ENG_MC_KEY_BYTES_MAX - prefix_len, n = prefix_len;
    if (key_is_plain(key, key_len, room)) {
        memcpy(out + n, key, key_len);
        n += key_len;
    } else if (2 + (key_len + 2) / 3 * 4 <= room) {
        out[n++] = '~';
        out[n++] = 'b';
        n += base64url((const unsigned char *)key, key_len, out + n);
    } else {
        XXH128_hash_t h = XXH3_128bits(key, key_len);
        n += (size_t)snprintf(out + n, room + 1, "~h%016llx%016llx", (unsigned long long)h.high64,
                              (unsigned long long)h.low64);
    }
    ENG_ASSERT(n <= ENG_MC_KEY_BYTES_MAX);
    out[n] = '\0';
    return n;
}

uint64_t eng_mc_key_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static const char *const cmd_word[ENG_MC_CMD_COUNT] = {
    [ENG_MC_CMD_GET] = "get",       [ENG_MC_CMD_SET] = "set",     [ENG_MC_CMD_ADD] = "add",
    [ENG_MC_CMD_DELETE] = "delete", [ENG_MC_CMD_INCR] = "incr",   [ENG_MC_CMD_TOUCH] = "touch",
    [ENG_MC_CMD_GET_TAIL] = NULL,
};

size_t mc_request_bytes(enum eng_mc_cmd cmd, size_t key_len, size_t value_len)
{
    /* word, space, key, then at most " 0 4294967295 18446744073709551615" and two CRLFs */
    size_t n = 8 + key_len + 48;
    return cmd == ENG_MC_CMD_SET || cmd == ENG_MC_CMD_ADD ? n + value_len : n;
}

size_t mc_request_format(char *out, enum eng_mc_cmd cmd, const char *key, size_t key_len,
                         uint64_t num, const void *value, size_t value_len)
{
    ENG_ASSERT(cmd < ENG_MC_CMD_GET_TAIL);
    ENG_ASSERT(key_len <= ENG_MC_KEY_BYTES_MAX);
    size_t n = strlen(cmd_word[cmd]);
    memcpy(out, cmd_word[cmd], n);
    out[n++] = ' ';
    memcpy(out + n, key, key_len);
    n += key_len;
    switch (cmd) {
    case ENG_MC_CMD_SET:
    case ENG_MC_CMD_ADD: /* num: exptime; flags are always 0 */
        n += (size_t)sprintf(out + n, " 0 %llu %zu\r\n", (unsigned long long)num, value_len);
        memcpy(out + n, value, value_len);
        n += value_len;
        break;
    case ENG_MC_CMD_INCR:  /* num: delta */
    case ENG_MC_CMD_TOUCH: /* num: exptime */
        n += (size_t)sprintf(out + n, " %llu", (unsigned long long)num);
        break;
    default:
        break;
    }
    out[n++] = '\r';
    out[n++] = '\n';
    ENG_ASSERT(n <= mc_request_bytes(cmd, key_len, value_len));
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Replies
 */

/* Length of the line at buf (without CRLF): >= 0, -1 when incomplete, -2 when too long or a bare
 * LF/CR breaks the framing. */
static long line_len(const char *buf, size_t len)
{
    /* The CR may sit at most at offset ENG_MC_LINE_BYTES_MAX. */
    size_t lim = len < ENG_MC_LINE_BYTES_MAX + 1 ? len : ENG_MC_LINE_BYTES_MAX + 1;
    for (size_t i = 0; i < lim; i++) {
        if (buf[i] == '\n')
            return -2; /* LF without CR */
        if (buf[i] != '\r')
            continue;
        if (i + 1 == len)
            return -1;
        return buf[i + 1] == '\n' ? (long)i : -2;
    }
    return len > ENG_MC_LINE_BYTES_MAX ? -2 : -1;
}

static bool is_word(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len == n && memcmp(line, word, n) == 0;
}

static bool starts(const char *line, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(line, word, n) == 0;
}

/* Decimal without sign; false on an empty field, a non-digit or overflow past max. */
static bool parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Splits "a b c" into at most max fields on single spaces. Returns the count, or -1 when a field
 * is empty or there are more. */
static int fields(const char *line, size_t len, const char **f, size_t *fl, int max)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (i == start || n == max)
            return -1;
        f[n] = line + start;
        fl[n++] = i - start;
        start = i + 1;
    }
    return n;
}

/* "VALUE <key> <flags> <bytes> [<cas>]" and what follows. */
static long parse_value(const char *buf, size_t len, size_t ll, size_t value_bytes_max,
                        struct eng_mc_reply *out)
{
    const char *f[5];
    size_t fl[5];
    int n = fields(buf, ll, f, fl, 5);
    uint64_t flags, bytes, cas;
    if (n < 4 || !parse_u64(f[2], fl[2], UINT32_MAX, &flags) ||
        !parse_u64(f[3], fl[3], UINT64_MAX - 16, &bytes) ||
        (n == 5 && !parse_u64(f[4], fl[4], UINT64_MAX, &cas)) || fl[1] > ENG_MC_KEY_BYTES_MAX)
        return -EPROTO;
    out->flags = (uint32_t)flags;
    out->key_hash = eng_mc_key_hash(f[1], fl[1]);
    size_t hdr = ll + 2;
    if (bytes > value_bytes_max) {
        out->st = ENG_MC_ERROR;
        out->discard_bytes = bytes + 2;
        return (long)hdr;
    }
    size_t need = hdr + (size_t)bytes + 2 + 5; /* data, CRLF, "END\r\n" */
    if (len < need) {
        /* Catch broken framing early where the bytes are already there. */
        if (len >= hdr + bytes + 2 && memcmp(buf + hdr + bytes, "\r\n", 2) != 0)
            return -EPROTO;
        return 0;
    }
    if (memcmp(buf + hdr + bytes, "\r\nEND\r\n", 7) != 0)
        return -EPROTO;
    out->st = ENG_MC_OK;
    out->value = buf + hdr;
    out->value_len = (size_t)bytes;
    return (long)need;
}

/* Lines every command may get instead of its own replies. */
static bool error_line(const char *line, size_t ll)
{
    return is_word(line, ll, "ERROR") || starts(line, ll, "CLIENT_ERROR") ||
           starts(line, ll, "SERVER_ERROR");
}

static long parse_line_reply(enum eng_mc_cmd cmd, const char *line, size_t ll,
                             struct eng_mc_reply *out)
{
    static const struct {
        enum eng_mc_cmd cmd;
        const char *word;
        enum eng_mc_status st;
    } tab[] = {
        {ENG_MC_CMD_GET, "END", ENG_MC_NOT_FOUND},
        {ENG_MC_CMD_GET_TAIL, "END", ENG_MC_ERROR},
        {ENG_MC_CMD_SET, "STORED", ENG_MC_OK},
        {ENG_MC_CMD_SET, "NOT_STORED", ENG_MC_NOT_STORED},
        {ENG_MC_CMD_SET, "EXISTS", ENG_MC_NOT_STORED},
        {ENG_MC_CMD_SET, "NOT_FOUND", ENG_MC_NOT_FOUND},
        {ENG_MC_CMD_ADD, "STORED", ENG_MC_OK},
        {ENG_MC_CMD_ADD, "NOT_STORED", ENG_MC_NOT_STORED},
        {ENG_MC_CMD_DELETE, "DELETED", ENG_MC_OK},
        {ENG_MC_CMD_DELETE, "NOT_FOUND", ENG_MC_NOT_FOUND},
        {ENG_MC_CMD_INCR, "NOT_FOUND", ENG_MC_NOT_FOUND},
        {ENG_MC_CMD_TOUCH, "TOUCHED", ENG_MC_OK},
        {ENG_MC_CMD_TOUCH, "NOT_FOUND", ENG_MC_NOT_FOUND},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (tab[i].cmd == cmd && is_word(line, ll, tab[i].word)) {
            out->st = tab[i].st;
            return (long)ll + 2;
        }
    }
    if (error_line(line, ll)) {
        out->st = ENG_MC_ERROR;
        return (long)ll + 2;
    }
    uint64_t v;
    if (cmd == ENG_MC_CMD_INCR && parse_u64(line, ll, UINT64_MAX, &v)) {
        out->st = ENG_MC_OK;
        out->value = line;
        out->value_len = ll;
        return (long)ll + 2;
    }
    return -EPROTO;
}

long eng_mc_reply_parse(enum eng_mc_cmd cmd, const char *buf, size_t len, size_t value_bytes_max,
                        struct eng_mc_reply *out)
{
    ENG_ASSERT(cmd < ENG_MC_CMD_COUNT);
    memset(out, 0, sizeof(*out));
    long ll = line_len(buf, len);
    if (ll == -1)
        return 0;
    if (ll < 0)
        return -EPROTO;
    if (cmd == ENG_MC_CMD_GET && starts(buf, (size_t)ll, "VALUE "))
        return parse_value(buf, len, (size_t)ll, value_bytes_max, out);
    return parse_line_reply(cmd, buf, (size_t)ll, out);
}
