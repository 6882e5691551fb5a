/*
 * dns_text.c: Net::DNS 1.36's presentation of TXT rdata (pol/dns.h, pol_dns_txt_rdstring), the
 * info text of RBL, RBLAction and DBL replies: Net::DNS::Text::unicode and RR::_wrap over
 * Encode 3.17's lax UTF-8 decoding as Perl 5.36 runs it, down to how long a malformation is.
 *
 * Pure: no state, no allocation, any thread; the caller supplies the output room
 * (pol_dns_txt_rdstring_bytes). Rdata from a checked message is a sequence of <length><octets>
 * strings; a last string that overruns the rdata is cut to what is there. Tests compare it
 * with Net::DNS itself (tests/unit/dns/dns_txt_test.cpp); tests/fuzz/fuzz_dns_txt.c fuzzes it.
 */
#include "pol/dns.h"

#include <stdbool.h>
#include <string.h>

#include "eng/assert.h"

/* Net::DNS wraps presentation lines at 80 columns (RR::_wrap). */
#define WRAP_COLUMNS 80u
/* A TXT character string is at most 255 bytes; escaped, every byte may take 4. */
#define STRING_BYTES_MAX 255u
#define STRING_PRES_MAX (4u * STRING_BYTES_MAX + 2u)

/* ---------------------------------------------------------------------------------------------
 * Net::DNS's TXT presentation (Net::DNS::Text::unicode, RR::_wrap) and Encode's lax UTF-8
 */

/* Net::DNS's %escapeUTF8 table: the bytes written \DDD (ASCII controls, ", \, DEL, and the
 * octets that cannot occur in UTF-8: 192, 193, 255). */
static bool txt_escaped(unsigned char c)
{
    return c < 32 || c == '"' || c == '\\' || c == 127 || c == 192 || c == 193 || c == 255;
}

/* Perl 5.36's strict UTF-8 DFA (perl.h PL_strict_utf8_dfa_tab): byte classes, then transitions
 * (19 classes per node; node 1 is "reject"). Encode uses it only to measure a malformation (see
 * malformed_len), where Perl's inline utf8n_to_uvchr_msgs runs it without stopping in the
 * reject node before the second byte: transitions "from node 1" read node 0's row shifted by
 * one class, so e.g. 81 C0 BF counts as one 3-byte malformation. Copied as data, not derived,
 * because that quirk is part of what Perl prints. */
/* clang-format off */
static const unsigned char perl_dfa_class[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 00-0F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 10-1F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 20-2F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 30-3F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 40-4F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 50-5F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 60-6F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 70-7F */
     9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9, 10, /* 80-8F */
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, /* 90-9F */
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 14, /* A0-AF */
    15, 15, 15, 15, 15, 15, 15, 16, 15, 15, 15, 15, 15, 15, 17, 18, /* B0-BF */
     1,  1,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* C0-CF */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* D0-DF */
     7,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  1,  3,  4, /* E0-EF */
     8,  6,  6,  6,  5,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1, /* F0-FF */
};
#define DFA_CLASSES 19u
#define N0 0
#define N1 (1 * DFA_CLASSES)
#define N2 (2 * DFA_CLASSES)
#define N3 (3 * DFA_CLASSES)
#define N4 (4 * DFA_CLASSES)
#define N5 (5 * DFA_CLASSES)
#define N6 (6 * DFA_CLASSES)
#define N7 (7 * DFA_CLASSES)
#define N8 (8 * DFA_CLASSES)
#define N9 (9 * DFA_CLASSES)
#define N10 (10 * DFA_CLASSES)
#define N11 (11 * DFA_CLASSES)
static const unsigned char perl_dfa_next[12u * DFA_CLASSES] = {
    /* N0  */ 0, 1, N1, N2, N4, N7, N6, N3, N5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* N1  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* N2  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, N1, N1, N1, N1, N1, N1, N1, N1, N1, N1,
    /* N3  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, N1, N1, N1, N1, N1, N1,
    /* N4  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, N1, N1, N1, N1, N1, N1, N1, N8, N1, N9,
    /* N5  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, N2, N10, N2, N10, N2, N2, N2, N10,
    /* N6  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, N2, N10, N2, N10, N2, N10, N2, N2, N2, N10,
    /* N7  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, N2, N10, 1, 1, 1, 1, 1, 1, 1, 1,
    /* N8  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0,
    /* N9  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
    /* N10 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, N1, N1, N1, N1, N1, N1, N1, N1, N1, N11,
    /* N11 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
};
#undef N0
#undef N1
#undef N2
#undef N3
#undef N4
#undef N5
#undef N6
#undef N7
#undef N8
#undef N9
#undef N10
#undef N11

/* clang-format on */
_Static_assert(12u * DFA_CLASSES <= 256u, "node numbers fit the table's bytes");

/* Bytes a sequence starting with lead takes in Perl's extended UTF-8 (UTF8SKIP; 1 for a
 * continuation byte). */
static unsigned utf8_skip(unsigned char lead)
{
    if (lead < 0xC0)
        return 1;
    if (lead < 0xE0)
        return 2;
    if (lead < 0xF0)
        return 3;
    if (lead < 0xF8)
        return 4;
    if (lead < 0xFC)
        return 5;
    if (lead < 0xFE)
        return 6;
    return lead == 0xFE ? 7 : 13;
}

/* A complete sequence that is not overlong (the shortest form of its code point): the only
 * thing Perl's lax 'utf8' checks. Surrogates, non-characters and code points above U+10FFFF
 * (Perl's extended forms up to 7 bytes) are accepted. */
static bool utf8_minimal(const unsigned char *s, unsigned skip)
{
    switch (skip) {
    case 2:
        return s[0] >= 0xC2;
    case 3:
        return s[0] != 0xE0 || s[1] >= 0xA0;
    case 4:
        return s[0] != 0xF0 || s[1] >= 0x90;
    case 5:
        return s[0] != 0xF8 || s[1] >= 0x88;
    case 6:
        return s[0] != 0xFC || s[1] >= 0x84;
    case 7:
        return s[0] != 0xFE || s[1] >= 0x82;
    default:
        return false; /* 0xFF's 13-byte form: escaped before we get here */
    }
}

/* Bytes at s (n available, s[0] not ASCII) that form a valid character of Perl's extended
 * UTF-8 (is_utf8_string_loc), or 0 when s starts a malformation. */
static size_t valid_len(const unsigned char *s, size_t n)
{
    unsigned skip = utf8_skip(s[0]);
    if ((s[0] & 0xC0u) == 0x80u || skip > n)
        return 0;
    for (unsigned k = 1; k < skip; k++)
        if ((s[k] & 0xC0u) != 0x80u)
            return 0;
    return utf8_minimal(s, skip) ? skip : 0;
}

/* How many bytes Encode 3.17 replaces by one U+FFFD at a malformation s (n available):
 * Perl 5.36's utf8n_to_uvchr(s, n, &len, UTF8_ALLOW_ANY), i.e. the inline DFA (which may
 * accept past the malformation, see perl_dfa_next), else _utf8n_to_uvchr_msgs_helper: 1 for a
 * continuation byte, else the start byte and the continuation bytes after it, up to its
 * length. */
static size_t malformed_len(const unsigned char *s, size_t n)
{
    unsigned state = perl_dfa_next[perl_dfa_class[s[0]]];
    for (size_t k = 1; k < n; k++) {
        state = perl_dfa_next[state + perl_dfa_class[s[k]]];
        if (state == 0)
            return k + 1;
        if (state == 1)
            break;
    }
    if ((s[0] & 0xC0u) == 0x80u)
        return 1;
    size_t end = utf8_skip(s[0]) < n ? utf8_skip(s[0]) : n, k = 1;
    while (k < end && (s[k] & 0xC0u) == 0x80u)
        k++;
    return k;
}

/* Encode 3.17 decode('utf8', e) without CHECK, written back in Perl's internal form: valid
 * sequences copied, each malformation (as long as malformed_len says) replaced by U+FFFD.
 * Returns the bytes written; out holds 3 bytes per input byte. */
static size_t lax_decode(const unsigned char *e, size_t n, char *out)
{
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = e[i] < 0x80 ? 1 : valid_len(e + i, n - i);
        if (len > 0) {
            memcpy(out + o, e + i, len);
            o += len;
            i += len;
            continue;
        }
        memcpy(out + o, fffd, sizeof(fffd));
        o += sizeof(fffd);
        i += malformed_len(e + i, n - i);
    }
    return o;
}

/* Replaces every 4-byte `from` in s[0..len) by the 2-byte `to`. Returns the new length. */
static size_t replace_4_by_2(char *s, size_t len, const char *from, const char *to)
{
    size_t r = 0, w = 0;
    while (r < len) {
        if (r + 4 <= len && memcmp(s + r, from, 4) == 0) {
            s[w++] = to[0];
            s[w++] = to[1];
            r += 4;
        } else {
            s[w++] = s[r++];
        }
    }
    return w;
}

/* One character string as Net::DNS::Text::unicode and the substitutions of _wrap give it.
 * Returns the bytes written to out (room: 3 * STRING_PRES_MAX); *chars counts characters. */
static size_t txt_string(const unsigned char *s, size_t len, char *out, size_t *chars)
{
    unsigned char esc[STRING_PRES_MAX];
    size_t n = 0;
    bool quote = len == 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (txt_escaped(c)) {
            esc[n++] = '\\';
            esc[n++] = (unsigned char)('0' + c / 100);
            esc[n++] = (unsigned char)('0' + c / 10 % 10);
            esc[n++] = (unsigned char)('0' + c % 10);
        } else {
            esc[n++] = c;
            /* /[ \t\n\r\f();]/: the controls were escaped, so only these remain */
            quote = quote || c == ' ' || c == '(' || c == ')' || c == ';';
        }
    }
    size_t o = 0;
    if (quote)
        out[o++] = '"';
    o += lax_decode(esc, n, out + o);
    if (quote)
        out[o++] = '"';
    o = replace_4_by_2(out, o, "\\034", "\\\"");
    o = replace_4_by_2(out, o, "\\092", "\\\\");
    size_t count = 0; /* characters: the bytes that start one */
    for (size_t i = 0; i < o; i++)
        count += ((unsigned char)out[i] & 0xC0u) != 0x80u;
    *chars = count;
    return o;
}

size_t pol_dns_txt_rdstring_bytes(size_t rdata_len)
{
    /* Each string: its length byte in the rdata pays for the separator, each byte becomes at
     * most \DDD (4) or U+FFFD (3), plus two quotes; an empty string is "" for one byte. */
    return 4u * rdata_len + 2u * (rdata_len + 1u) + 1u;
}

size_t pol_dns_txt_rdstring(const unsigned char *rdata, size_t rdata_len, char *out, size_t out_len)
{
    if (out_len < pol_dns_txt_rdstring_bytes(rdata_len))
        return 0;
    char piece[3u * STRING_PRES_MAX];
    size_t o = 0, pos = 0, col = 0;
    bool line_empty = true;
    while (pos < rdata_len) {
        size_t l = rdata[pos];
        if (pos + 1 + l > rdata_len)
            l = rdata_len - pos - 1; /* not from a checked message: take what is there */
        size_t chars;
        size_t n = txt_string(rdata + pos + 1, l, piece, &chars);
        pos += 1 + l;
        /* _wrap: a string that would take the line past 80 columns starts a new one */
        col += chars + 1;
        if (col > WRAP_COLUMNS) {
            if (!line_empty) {
                out[o++] = '\n';
                out[o++] = '\t';
            }
            col = chars;
            line_empty = true;
        }
        if (!line_empty)
            out[o++] = ' ';
        memcpy(out + o, piece, n);
        o += n;
        line_empty = false;
    }
    ENG_ASSERT(o <= out_len);
    return o;
}
