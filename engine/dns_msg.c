/*
 * dns_msg.c: DNS response messages (eng/dns.h, "Answer messages"): the pure parser the client
 * (dns.c) runs on every answer, fresh or cached, and the TXT string iterator.
 *
 * Reads a message in place and writes only into the caller's parse buffer; no allocation, no
 * state, any thread. Everything in a message is untrusted: every length is checked against the
 * message, compression pointers are followed at most NAME_HOPS_MAX times and a name may not
 * exceed 255 octets on the wire, so a hostile message costs a bounded amount of work and ends
 * in -EBADMSG. Only the header, the question and answer sections and the SOA of the authority
 * section are read; the additional section is ignored.
 */
#include "eng/dns.h"

#include <errno.h>
#include <string.h>

#include "eng/assert.h"

#define HEADER_BYTES 12u
#define RR_FIXED_BYTES 10u /* type, class, ttl, rdlength */
#define CLASS_IN 1u
/* Compression pointers followed for one name; a well-formed name needs at most one per label
 * (127 labels fit in 255 octets). */
#define NAME_HOPS_MAX 127u
#define NAME_WIRE_MAX 255u
/* RFC 2308 section 5: negative answers are cached for at most 3 hours. */
#define NEG_TTL_CAP_S 10800u

_Static_assert(ENG_DNS_PRES_NAME_BYTES >= 4u * NAME_WIRE_MAX + 1u, "room for an escaped name");

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* RFC 2181 8: a TTL with the top bit set is read as 0. */
static uint32_t ttl_of(const unsigned char *p)
{
    uint32_t t = rd32(p);
    return (t & 0x80000000u) ? 0 : t;
}

/* Steps over the (possibly compressed) name at *off. 0 or -EBADMSG. */
static int name_skip(const unsigned char *m, size_t len, size_t *off)
{
    size_t o = *off;
    for (unsigned labels = 0; labels <= NAME_WIRE_MAX; labels++) {
        if (o >= len)
            return -EBADMSG;
        unsigned c = m[o];
        if (c == 0) {
            *off = o + 1;
            return 0;
        }
        if ((c & 0xC0u) == 0xC0u) {
            if (o + 2 > len)
                return -EBADMSG;
            *off = o + 2;
            return 0;
        }
        if (c & 0xC0u) /* 0x40, 0x80: label types nobody uses */
            return -EBADMSG;
        o += 1u + c;
    }
    return -EBADMSG;
}

/* One label octet in presentation form: \. \\ for the two that would read as syntax, \DDD
 * outside printable ASCII (space included), else itself. Returns the bytes written. */
static size_t pres_octet(unsigned char c, char *out)
{
    if (c == '.' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c <= 0x20 || c >= 0x7F) {
        out[0] = '\\';
        out[1] = (char)('0' + c / 100);
        out[2] = (char)('0' + c / 10 % 10);
        out[3] = (char)('0' + c % 10);
        return 4;
    }
    out[0] = (char)c;
    return 1;
}

/* Expands the name at off into presentation form ("." for the root), following compression
 * pointers. out holds ENG_DNS_PRES_NAME_BYTES. 0 or -EBADMSG. */
static int name_read(const unsigned char *m, size_t len, size_t off, char *out)
{
    size_t o = off, n = 0, wire = 1; /* the root octet */
    unsigned hops = 0;
    for (;;) {
        if (o >= len)
            return -EBADMSG;
        unsigned c = m[o];
        if (c == 0)
            break;
        if ((c & 0xC0u) == 0xC0u) {
            if (o + 2 > len || ++hops > NAME_HOPS_MAX)
                return -EBADMSG;
            o = ((size_t)(c & 0x3Fu) << 8) | m[o + 1];
            continue;
        }
        if ((c & 0xC0u) || o + 1 + c > len)
            return -EBADMSG;
        wire += 1u + c;
        if (wire > NAME_WIRE_MAX)
            return -EBADMSG;
        if (n > 0)
            out[n++] = '.';
        for (unsigned i = 0; i < c; i++)
            n += pres_octet(m[o + 1 + i], out + n);
        o += 1u + c;
    }
    if (n == 0)
        out[n++] = '.';
    ENG_ASSERT(n < ENG_DNS_PRES_NAME_BYTES);
    out[n] = '\0';
    return 0;
}

/* TXT rdata is a sequence of <length><octets> strings that must end exactly at its end. */
static bool txt_well_formed(const unsigned char *p, size_t len)
{
    size_t pos = 0;
    while (pos < len)
        pos += 1u + p[pos];
    return pos == len;
}

/* Fills rr's parsed form from its rdata (at rdata_off in m). 0 or -EBADMSG. */
static int rr_decode(const unsigned char *m, size_t len, size_t rdata_off, struct eng_dns_rr *rr,
                     char *name_buf)
{
    const unsigned char *p = m + rdata_off;
    size_t rdlen = rr->rdata_len;
    size_t end = rdata_off + rdlen;
    size_t o = rdata_off;
    switch (rr->type) {
    case ENG_DNS_T_A:
        if (rdlen != 4)
            return -EBADMSG;
        memcpy(&rr->u.a, p, 4);
        return 0;
    case ENG_DNS_T_AAAA:
        if (rdlen != 16)
            return -EBADMSG;
        memcpy(&rr->u.aaaa, p, 16);
        return 0;
    case ENG_DNS_T_MX:
        if (rdlen < 3)
            return -EBADMSG;
        rr->u.mx.preference = rd16(p);
        o += 2;
        if (name_skip(m, end, &o) != 0 || o != end)
            return -EBADMSG;
        rr->u.mx.exchange = name_buf;
        return name_read(m, len, rdata_off + 2, name_buf);
    case ENG_DNS_T_PTR:
    case ENG_DNS_T_CNAME:
    case ENG_DNS_T_NS:
        if (name_skip(m, end, &o) != 0 || o != end)
            return -EBADMSG;
        rr->u.name = name_buf;
        return name_read(m, len, rdata_off, name_buf);
    case ENG_DNS_T_TXT:
    case ENG_DNS_T_SPF:
        return txt_well_formed(p, rdlen) ? 0 : -EBADMSG;
    default:
        return 0; /* raw rdata only */
    }
}

/* min(SOA TTL, SOA MINIMUM) of a SOA record whose rdata starts at off. 0 or -EBADMSG. */
static int soa_neg_ttl(const unsigned char *m, size_t off, size_t rdlen, uint32_t ttl,
                       uint32_t *out)
{
    size_t end = off + rdlen, o = off;
    if (name_skip(m, end, &o) != 0 || name_skip(m, end, &o) != 0 || o + 20 != end)
        return -EBADMSG;
    uint32_t minimum = ttl_of(m + o + 16);
    *out = minimum < ttl ? minimum : ttl;
    return 0;
}

static enum eng_dns_status status_of(unsigned rcode, uint32_t count)
{
    switch (rcode) {
    case 0:
        return count > 0 ? ENG_DNS_OK : ENG_DNS_NODATA;
    case 2:
        return ENG_DNS_SERVFAIL;
    case 3:
        return ENG_DNS_NXDOMAIN;
    case 4: /* NOTIMP */
    case 5:
        return ENG_DNS_REFUSED;
    default: /* FORMERR and the rest */
        return ENG_DNS_ERROR;
    }
}

/* The answer section: records of ans->qtype into buf, and the lowest TTL of those records and
 * of the CNAMEs leading to them. 0 or -EBADMSG. */
static int answers_read(const unsigned char *m, size_t len, size_t *off, uint16_t an,
                        struct eng_dns_parse_buf *buf, struct eng_dns_answer *ans,
                        uint32_t *ttl_min)
{
    for (uint16_t i = 0; i < an; i++) {
        if (name_skip(m, len, off) != 0 || *off + RR_FIXED_BYTES > len)
            return -EBADMSG;
        const unsigned char *h = m + *off;
        uint16_t type = rd16(h), klass = rd16(h + 2), rdlen = rd16(h + 8);
        uint32_t ttl = ttl_of(h + 4);
        size_t rdata_off = *off + RR_FIXED_BYTES;
        if (rdata_off + rdlen > len)
            return -EBADMSG;
        *off = rdata_off + rdlen;
        if (klass != CLASS_IN || (type != ans->qtype && type != ENG_DNS_T_CNAME))
            continue;
        if (ttl < *ttl_min)
            *ttl_min = ttl;
        if (type != ans->qtype)
            continue;
        if (ans->count == ENG_DNS_RRS_MAX) {
            ans->truncated = true;
            continue;
        }
        struct eng_dns_rr *rr = &buf->rrs[ans->count];
        memset(rr, 0, sizeof(*rr));
        rr->type = type;
        rr->ttl_s = ttl;
        rr->rdata = m + rdata_off;
        rr->rdata_len = rdlen;
        if (rr_decode(m, len, rdata_off, rr, buf->names[ans->count]) != 0)
            return -EBADMSG;
        ans->count++;
    }
    return 0;
}

/* The authority section: the negative TTL from its SOA, if there is one. 0 or -EBADMSG. */
static int authority_read(const unsigned char *m, size_t len, size_t *off, uint16_t ns,
                          bool *found, uint32_t *neg_ttl)
{
    for (uint16_t i = 0; i < ns; i++) {
        if (name_skip(m, len, off) != 0 || *off + RR_FIXED_BYTES > len)
            return -EBADMSG;
        const unsigned char *h = m + *off;
        uint16_t type = rd16(h), klass = rd16(h + 2), rdlen = rd16(h + 8);
        size_t rdata_off = *off + RR_FIXED_BYTES;
        if (rdata_off + rdlen > len)
            return -EBADMSG;
        *off = rdata_off + rdlen;
        if (type == ENG_DNS_T_SOA && klass == CLASS_IN && !*found) {
            if (soa_neg_ttl(m, rdata_off, rdlen, ttl_of(h + 4), neg_ttl) != 0)
                return -EBADMSG;
            *found = true;
        }
    }
    return 0;
}

static int parse_failed(struct eng_dns_answer *ans)
{
    ans->status = ENG_DNS_ERROR;
    ans->count = 0;
    ans->truncated = false;
    ans->ttl_s = 0;
    return -EBADMSG;
}

int eng_dns_parse(const unsigned char *msg, size_t len, uint16_t qtype, uint32_t neg_ttl_s,
                  struct eng_dns_parse_buf *buf, struct eng_dns_answer *ans)
{
    ENG_ASSERT(buf != NULL);
    ENG_ASSERT(ans != NULL);
    memset(ans, 0, sizeof(*ans));
    ans->qtype = qtype;
    ans->rrs = buf->rrs;
    if (msg == NULL || len < HEADER_BYTES || !(msg[2] & 0x80u)) /* QR: a response */
        return parse_failed(ans);
    ans->rcode = msg[3] & 0x0Fu;
    uint16_t qd = rd16(msg + 4), an = rd16(msg + 6), ns = rd16(msg + 8);
    size_t off = HEADER_BYTES;
    for (uint16_t i = 0; i < qd; i++) {
        if (name_skip(msg, len, &off) != 0 || off + 4 > len)
            return parse_failed(ans);
        off += 4;
    }
    uint32_t ttl_min = UINT32_MAX, neg_ttl = 0;
    bool soa = false;
    if (answers_read(msg, len, &off, an, buf, ans, &ttl_min) != 0 ||
        authority_read(msg, len, &off, ns, &soa, &neg_ttl) != 0)
        return parse_failed(ans);
    ans->status = status_of(ans->rcode, ans->count);
    if (ans->status == ENG_DNS_OK) {
        ans->ttl_s = ttl_min;
    } else if (ans->status == ENG_DNS_NODATA || ans->status == ENG_DNS_NXDOMAIN) {
        ans->ttl_s = soa ? neg_ttl : neg_ttl_s;
        if (ans->ttl_s > NEG_TTL_CAP_S)
            ans->ttl_s = NEG_TTL_CAP_S;
    }
    return 0;
}

bool eng_dns_txt_next(const struct eng_dns_rr *rr, size_t *pos, const unsigned char **s,
                      size_t *len)
{
    ENG_ASSERT(rr != NULL);
    ENG_ASSERT(pos != NULL);
    if (*pos >= rr->rdata_len)
        return false;
    size_t l = rr->rdata[*pos];
    if (*pos + 1 + l > rr->rdata_len) /* only for rdata the parser did not check */
        return false;
    *s = rr->rdata + *pos + 1;
    *len = l;
    *pos += 1 + l;
    return true;
}
