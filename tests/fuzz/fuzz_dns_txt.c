/*
 * fuzz_dns_txt.c: libFuzzer target for the DNS answers ringpolicyd reads itself: the response
 * parser (engine/dns_msg.c, eng_dns_parse, eng_dns_txt_next) and Net::DNS's TXT presentation
 * that becomes the %INFO% of RBL/DBL replies (policy/dns.c, pol_dns_txt_rdstring).
 *
 * Byte 0 picks the asked type (A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SPF or a raw type) and
 * byte 1 the default negative TTL; the rest is a response message from a hostile server. Each
 * result checks itself:
 *   parse: 0 or -EBADMSG; a failure leaves ENG_DNS_ERROR and no records; records are of the
 *          asked type, at most ENG_DNS_RRS_MAX, their rdata inside the message; names are
 *          NUL-terminated presentation forms (printable ASCII, no raw dot inside a label
 *          escape); a negative TTL is at most 3 hours; parsing again from an exactly sized copy
 *          gives the same answer.
 *   TXT:   the strings of a TXT/SPF record fill its rdata exactly; its presentation fits the
 *          advertised room, is refused (0) with one byte less than that room when it needs
 *          it all, holds no control byte except the LF TAB of a wrap, and is the same twice.
 * The message bytes are also presented as TXT rdata directly (not checked by a parser), which
 * must never read past them.
 * Build: see README.md (tests/fuzz/build.sh dns_txt OUT).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/dns.h"
#include "pol/dns.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_dns_txt: %s\n", what);
        abort();
    }
}

static const uint16_t qtypes[] = {
    ENG_DNS_T_A,   ENG_DNS_T_NS,  ENG_DNS_T_CNAME, ENG_DNS_T_SOA, ENG_DNS_T_PTR,
    ENG_DNS_T_MX,  ENG_DNS_T_TXT, ENG_DNS_T_AAAA,  ENG_DNS_T_SPF, 257,
};

static struct eng_dns_parse_buf buf1, buf2;

static void check_name(const char *n)
{
    size_t len = strnlen(n, ENG_DNS_PRES_NAME_BYTES);
    check(len > 0 && len < ENG_DNS_PRES_NAME_BYTES, "a name is empty or unterminated");
    for (size_t i = 0; i < len; i++)
        check(n[i] > 0x20 && n[i] < 0x7F, "a name holds a byte outside printable ASCII");
}

/* The presentation of one TXT rdata, with the room checks. */
static void check_rdstring(const unsigned char *rd, size_t len)
{
    size_t room = pol_dns_txt_rdstring_bytes(len);
    char *out = malloc(room), *again = malloc(room);
    check(out && again, "out of memory");
    size_t n = pol_dns_txt_rdstring(rd, len, out, room);
    check(n <= room, "the presentation overran its room");
    check(len == 0 || n > 0, "non-empty rdata gave no text");
    check(pol_dns_txt_rdstring(rd, len, again, room) == n && memcmp(out, again, n) == 0,
          "the presentation is not deterministic");
    if (room > 0)
        check(pol_dns_txt_rdstring(rd, len, again, room - 1) == 0,
              "less room than advertised was accepted");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == '\n') {
            check(i + 1 < n && out[i + 1] == '\t', "a line break without its tab");
            continue;
        }
        check(c >= 0x20 || c == '\t', "a control byte in the presentation");
        check(c != 0x7F, "a raw DEL in the presentation");
    }
    free(out);
    free(again);
}

static void check_answer(const unsigned char *m, size_t len, uint16_t qtype, int rc,
                         const struct eng_dns_answer *a)
{
    check(rc == 0 || rc == -EBADMSG, "eng_dns_parse returned something else");
    check(a->qtype == qtype && a->qname == NULL, "qtype or qname not as asked");
    if (rc != 0) {
        check(a->status == ENG_DNS_ERROR && a->count == 0, "a failed parse left records");
        return;
    }
    check(a->count <= ENG_DNS_RRS_MAX, "more records than ENG_DNS_RRS_MAX");
    /* NOERROR: OK iff records; another RCODE may come with records (a CNAME before an
     * NXDOMAIN target), never with OK. */
    check(a->rcode == 0 ? (a->status == ENG_DNS_OK) == (a->count > 0) : a->status != ENG_DNS_OK,
          "status does not follow RCODE and records");
    if (a->status == ENG_DNS_NODATA || a->status == ENG_DNS_NXDOMAIN)
        check(a->ttl_s <= 10800, "a negative TTL over 3 hours");
    for (uint32_t i = 0; i < a->count; i++) {
        const struct eng_dns_rr *rr = &a->rrs[i];
        check(rr->type == qtype, "a record of another type");
        check(rr->rdata >= m && rr->rdata + rr->rdata_len <= m + len,
              "rdata outside the message");
        if (qtype == ENG_DNS_T_MX)
            check_name(rr->u.mx.exchange);
        if (qtype == ENG_DNS_T_PTR || qtype == ENG_DNS_T_CNAME || qtype == ENG_DNS_T_NS)
            check_name(rr->u.name);
        if (qtype == ENG_DNS_T_TXT || qtype == ENG_DNS_T_SPF) {
            size_t pos = 0, total = 0, slen;
            const unsigned char *s;
            while (eng_dns_txt_next(rr, &pos, &s, &slen)) {
                check(s >= rr->rdata && s + slen <= rr->rdata + rr->rdata_len,
                      "a TXT string outside its rdata");
                total += 1 + slen;
            }
            check(total == rr->rdata_len, "the TXT strings do not fill their rdata");
            check_rdstring(rr->rdata, rr->rdata_len);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint16_t qtype = qtypes[data[0] % (sizeof qtypes / sizeof qtypes[0])];
    uint32_t neg_ttl = data[1];
    size_t len = size - 2;
    unsigned char *m = malloc(len ? len : 1); /* exactly sized: ASan sees any overrun */
    check(m != NULL, "out of memory");
    memcpy(m, data + 2, len);

    struct eng_dns_answer a1, a2;
    int rc1 = eng_dns_parse(m, len, qtype, neg_ttl, &buf1, &a1);
    check_answer(m, len, qtype, rc1, &a1);
    int rc2 = eng_dns_parse(m, len, qtype, neg_ttl, &buf2, &a2);
    check(rc1 == rc2 && a1.status == a2.status && a1.count == a2.count && a1.ttl_s == a2.ttl_s &&
              a1.rcode == a2.rcode && a1.truncated == a2.truncated,
          "a second parse differs");
    for (uint32_t i = 0; i < a1.count; i++)
        check(a1.rrs[i].rdata == a2.rrs[i].rdata && a1.rrs[i].ttl_s == a2.rrs[i].ttl_s,
              "a second parse gives other records");

    /* The bytes as TXT rdata that no parser checked (overrunning strings are cut). */
    if (len <= 4096)
        check_rdstring(m, len);
    free(m);
    return 0;
}
