// dns_msg_test.cpp: the DNS answer parser (engine/dns_msg.c, eng_dns_parse and
// eng_dns_txt_next) on messages built here: status from RCODE and answer count, records of the
// asked type only (CNAMEs followed, other types and classes skipped), the TTL rules (lowest of
// the answer and its CNAMEs; SOA rule for negative answers, capped at 3 hours; neg_ttl_s
// without a SOA; top-bit TTLs read as 0), name compression, ENG_DNS_RRS_MAX, and every kind of
// malformed message ending in -EBADMSG with ENG_DNS_ERROR (truncations at every length,
// compression loops, bad rdata sizes, TXT strings that overrun their rdata).
#include <catch2/catch.hpp>

extern "C" {
#include "eng/dns.h"
}

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace
{

using Bytes = std::vector<unsigned char>;

void put16(Bytes &b, unsigned v)
{
    b.push_back((unsigned char)(v >> 8));
    b.push_back((unsigned char)v);
}

void put32(Bytes &b, uint32_t v)
{
    put16(b, v >> 16);
    put16(b, v & 0xFFFF);
}

// A name in wire form, uncompressed.
Bytes wire_name(const std::string &name)
{
    Bytes b;
    size_t start = 0;
    while (start < name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string::npos)
            dot = name.size();
        b.push_back((unsigned char)(dot - start));
        b.insert(b.end(), name.begin() + long(start), name.begin() + long(dot));
        start = dot + 1;
    }
    b.push_back(0);
    return b;
}

struct RR {
    Bytes name; // wire form (may be a compression pointer)
    unsigned type, klass;
    uint32_t ttl;
    Bytes rdata;
};

RR rr(const std::string &name, unsigned type, uint32_t ttl, Bytes rdata, unsigned klass = 1)
{
    return RR{wire_name(name), type, klass, ttl, std::move(rdata)};
}

Bytes a_rdata(const char *ip)
{
    Bytes b(4);
    inet_pton(AF_INET, ip, b.data());
    return b;
}

Bytes txt_rdata(const std::vector<std::string> &strings)
{
    Bytes b;
    for (auto &s : strings) {
        b.push_back((unsigned char)s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    return b;
}

Bytes soa_rdata(uint32_t minimum)
{
    Bytes b = wire_name("ns.zen.example");
    Bytes m = wire_name("hostmaster.zen.example");
    b.insert(b.end(), m.begin(), m.end());
    for (uint32_t v : {1u, 3600u, 600u, 86400u})
        put32(b, v);
    put32(b, minimum);
    return b;
}

// A response to (qname, qtype) with the given RCODE and sections.
Bytes message(const std::string &qname, unsigned qtype, unsigned rcode,
              const std::vector<RR> &answers, const std::vector<RR> &authority = {})
{
    Bytes b;
    put16(b, 0x1234);
    put16(b, 0x8180 | rcode); // QR RD RA
    put16(b, 1);
    put16(b, unsigned(answers.size()));
    put16(b, unsigned(authority.size()));
    put16(b, 0);
    Bytes q = wire_name(qname);
    b.insert(b.end(), q.begin(), q.end());
    put16(b, qtype);
    put16(b, 1);
    for (const auto *sec : {&answers, &authority})
        for (const RR &r : *sec) {
            b.insert(b.end(), r.name.begin(), r.name.end());
            put16(b, r.type);
            put16(b, r.klass);
            put32(b, r.ttl);
            put16(b, unsigned(r.rdata.size()));
            b.insert(b.end(), r.rdata.begin(), r.rdata.end());
        }
    return b;
}

struct Parsed {
    int rc;
    eng_dns_answer ans;
    std::unique_ptr<eng_dns_parse_buf> buf{new eng_dns_parse_buf};
};

std::unique_ptr<Parsed> parse(const Bytes &m, unsigned qtype, uint32_t neg_ttl_s = 60)
{
    std::unique_ptr<Parsed> p(new Parsed);
    p->rc = eng_dns_parse(m.data(), m.size(), uint16_t(qtype), neg_ttl_s, p->buf.get(), &p->ans);
    return p;
}

std::string ip4(const eng_dns_rr &r)
{
    char s[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &r.u.a, s, sizeof(s));
    return s;
}

std::vector<std::string> txt_strings(const eng_dns_rr &r)
{
    std::vector<std::string> out;
    size_t pos = 0;
    const unsigned char *s;
    size_t len;
    while (eng_dns_txt_next(&r, &pos, &s, &len))
        out.emplace_back(reinterpret_cast<const char *>(s), len);
    return out;
}

} // namespace

TEST_CASE("status follows RCODE and the records of the asked type", "[dns_msg]")
{
    const char *q = "2.0.0.127.zen.example";
    auto ok = parse(message(q, ENG_DNS_T_A, 0,
                            {rr(q, ENG_DNS_T_A, 300, a_rdata("127.0.0.2")),
                             rr(q, ENG_DNS_T_A, 200, a_rdata("127.0.0.3"))}),
                    ENG_DNS_T_A);
    REQUIRE(ok->rc == 0);
    CHECK(ok->ans.status == ENG_DNS_OK);
    CHECK(ok->ans.rcode == 0);
    REQUIRE(ok->ans.count == 2);
    CHECK(ip4(ok->ans.rrs[0]) == "127.0.0.2"); // message order
    CHECK(ip4(ok->ans.rrs[1]) == "127.0.0.3");
    CHECK(ok->ans.rrs[0].ttl_s == 300);
    CHECK(ok->ans.ttl_s == 200); // the lowest
    CHECK_FALSE(ok->ans.truncated);
    CHECK(ok->ans.qname == nullptr);

    // A TXT record in an answer to A is not an A record: NODATA.
    auto nodata = parse(message(q, ENG_DNS_T_A, 0, {rr(q, ENG_DNS_T_TXT, 300, txt_rdata({"x"}))},
                                {rr("zen.example", ENG_DNS_T_SOA, 300, soa_rdata(60))}),
                        ENG_DNS_T_A);
    REQUIRE(nodata->rc == 0);
    CHECK(nodata->ans.status == ENG_DNS_NODATA);
    CHECK(nodata->ans.count == 0);
    CHECK(nodata->ans.ttl_s == 60);

    // Class CH records are skipped.
    auto chaos = parse(message(q, ENG_DNS_T_A, 0, {rr(q, ENG_DNS_T_A, 300, a_rdata("1.2.3.4"), 3)}),
                       ENG_DNS_T_A);
    CHECK(chaos->ans.status == ENG_DNS_NODATA);

    struct {
        unsigned rcode;
        eng_dns_status st;
    } rcodes[] = {{1, ENG_DNS_ERROR},   {2, ENG_DNS_SERVFAIL}, {3, ENG_DNS_NXDOMAIN},
                  {4, ENG_DNS_REFUSED}, {5, ENG_DNS_REFUSED},  {9, ENG_DNS_ERROR}};
    for (auto &c : rcodes) {
        auto p = parse(message(q, ENG_DNS_T_A, c.rcode, {}), ENG_DNS_T_A);
        INFO("rcode " << c.rcode);
        REQUIRE(p->rc == 0);
        CHECK(p->ans.status == c.st);
        CHECK(p->ans.rcode == c.rcode);
        CHECK(std::string(eng_dns_status_name(p->ans.status)) == eng_dns_status_name(c.st));
    }
    CHECK(std::string(eng_dns_status_name(ENG_DNS_NXDOMAIN)) == "NXDOMAIN");
    CHECK(std::string(eng_dns_status_name(ENG_DNS_STATUS_COUNT)) == "?");
}

TEST_CASE("negative TTLs: SOA rule, default, cap; top-bit TTLs are 0", "[dns_msg]")
{
    const char *q = "3.0.0.127.zen.example";
    // min(SOA TTL, SOA MINIMUM)
    auto a = parse(message(q, 1, 3, {}, {rr("zen.example", ENG_DNS_T_SOA, 30, soa_rdata(60))}), 1);
    CHECK(a->ans.status == ENG_DNS_NXDOMAIN);
    CHECK(a->ans.ttl_s == 30);
    auto b = parse(message(q, 1, 3, {}, {rr("zen.example", ENG_DNS_T_SOA, 300, soa_rdata(45))}), 1);
    CHECK(b->ans.ttl_s == 45);
    // No SOA: the caller's default.
    auto c = parse(message(q, 1, 3, {}), 1, 77);
    CHECK(c->ans.ttl_s == 77);
    // Capped at 3 hours (RFC 2308).
    auto d = parse(message(q, 1, 3, {}, {rr("zen.example", 6, 999999, soa_rdata(999999))}), 1);
    CHECK(d->ans.ttl_s == 10800);
    // A TTL with its top bit set reads as 0 (RFC 2181 8).
    auto e = parse(message(q, 1, 0, {rr(q, 1, 0x80000010u, a_rdata("127.0.0.2"))}), 1);
    CHECK(e->ans.status == ENG_DNS_OK);
    CHECK(e->ans.ttl_s == 0);
    // Failures carry no TTL.
    auto f = parse(message(q, 1, 2, {}, {rr("zen.example", 6, 300, soa_rdata(60))}), 1);
    CHECK(f->ans.status == ENG_DNS_SERVFAIL);
    CHECK(f->ans.ttl_s == 0);
}

TEST_CASE("CNAME chains: the target's records, the lowest TTL of the chain", "[dns_msg]")
{
    Bytes cname_rdata = wire_name("host.rec.example");
    auto p = parse(message("alias.rec.example", 1, 0,
                           {rr("alias.rec.example", ENG_DNS_T_CNAME, 50, cname_rdata),
                            rr("host.rec.example", 1, 300, a_rdata("192.0.2.1"))}),
                   1);
    REQUIRE(p->rc == 0);
    REQUIRE(p->ans.count == 1);
    CHECK(ip4(p->ans.rrs[0]) == "192.0.2.1");
    CHECK(p->ans.ttl_s == 50);
    // Asking for the CNAME itself gives its parsed target.
    auto c = parse(message("alias.rec.example", ENG_DNS_T_CNAME, 0,
                           {rr("alias.rec.example", ENG_DNS_T_CNAME, 50, cname_rdata)}),
                   ENG_DNS_T_CNAME);
    REQUIRE(c->ans.count == 1);
    CHECK(std::string(c->ans.rrs[0].u.name) == "host.rec.example");
}

TEST_CASE("parsed forms: AAAA, MX (with compression), PTR, TXT, raw types", "[dns_msg]")
{
    Bytes aaaa(16);
    inet_pton(AF_INET6, "2001:db8::1", aaaa.data());
    auto p6 = parse(message("h.example", ENG_DNS_T_AAAA, 0, {rr("h.example", 28, 300, aaaa)}), 28);
    REQUIRE(p6->ans.count == 1);
    char s6[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &p6->ans.rrs[0].u.aaaa, s6, sizeof(s6));
    CHECK(std::string(s6) == "2001:db8::1");

    // MX whose exchange is compressed against the question name (offset 12).
    Bytes mx;
    put16(mx, 10);
    mx.push_back(3);
    mx.insert(mx.end(), {'m', 'x', '1'});
    mx.push_back(0xC0);
    mx.push_back(12);
    Bytes nullmx;
    put16(nullmx, 0);
    nullmx.push_back(0);
    RR r1 = rr("h.example", ENG_DNS_T_MX, 300, mx);
    r1.name = {0xC0, 12};
    auto pm = parse(message("h.example", ENG_DNS_T_MX, 0, {r1, rr("h.example", 15, 300, nullmx)}),
                    ENG_DNS_T_MX);
    REQUIRE(pm->rc == 0);
    REQUIRE(pm->ans.count == 2);
    CHECK(pm->ans.rrs[0].u.mx.preference == 10);
    CHECK(std::string(pm->ans.rrs[0].u.mx.exchange) == "mx1.h.example");
    CHECK(std::string(pm->ans.rrs[1].u.mx.exchange) == ".");

    // PTR with odd octets in its labels: escaped in presentation form.
    Bytes ptr = {3, 'a', '.', 'b', 2, ' ', 0xFF, 1, '\\', 0};
    auto pp = parse(message("1.2.0.192.in-addr.arpa", ENG_DNS_T_PTR, 0,
                            {rr("1.2.0.192.in-addr.arpa", 12, 300, ptr)}),
                    ENG_DNS_T_PTR);
    REQUIRE(pp->ans.count == 1);
    CHECK(std::string(pp->ans.rrs[0].u.name) == "a\\.b.\\032\\255.\\\\");

    // rdata points into the message, which must outlive the parsed records.
    Bytes tm =
        message("t.example", 16, 0, {rr("t.example", 16, 300, txt_rdata({"v=spf1", "", "-all"}))});
    auto pt = parse(tm, 16);
    REQUIRE(pt->ans.count == 1);
    CHECK(txt_strings(pt->ans.rrs[0]) == std::vector<std::string>{"v=spf1", "", "-all"});

    // An unparsed type keeps its raw rdata.
    Bytes raw = {1, 2, 3};
    Bytes rm = message("t.example", 257, 0, {rr("t.example", 257, 300, raw)});
    auto pr = parse(rm, 257);
    REQUIRE(pr->ans.count == 1);
    CHECK(Bytes(pr->ans.rrs[0].rdata, pr->ans.rrs[0].rdata + pr->ans.rrs[0].rdata_len) == raw);
}

TEST_CASE("at most ENG_DNS_RRS_MAX records; more are flagged", "[dns_msg]")
{
    std::vector<RR> many;
    for (unsigned i = 0; i < ENG_DNS_RRS_MAX + 1; i++) {
        Bytes a = {10, 0, (unsigned char)(i >> 8), (unsigned char)i};
        many.push_back(rr("m.example", 1, 300 - i, a));
    }
    auto at = parse(
        message("m.example", 1, 0, std::vector<RR>(many.begin(), many.begin() + ENG_DNS_RRS_MAX)),
        1);
    CHECK(at->ans.count == ENG_DNS_RRS_MAX);
    CHECK_FALSE(at->ans.truncated);
    auto over = parse(message("m.example", 1, 0, many), 1);
    REQUIRE(over->rc == 0);
    CHECK(over->ans.count == ENG_DNS_RRS_MAX);
    CHECK(over->ans.truncated);
    CHECK(over->ans.ttl_s == 300 - ENG_DNS_RRS_MAX); // the dropped record's TTL still counts
}

TEST_CASE("malformed messages end in -EBADMSG, never out of bounds", "[dns_msg]")
{
    const char *q = "2.0.0.127.zen.example";
    Bytes good = message(
        q, 16, 0,
        {rr(q, 1, 300, a_rdata("127.0.0.2")), rr(q, 16, 300, txt_rdata({"Listed", "here"}))},
        {rr("zen.example", 6, 300, soa_rdata(60))});
    REQUIRE(parse(good, 16)->rc == 0);
    // Every truncation of a valid message (each in its own heap block of exactly that size, so
    // a sanitizer sees any read past the end).
    for (size_t len = 0; len < good.size(); len++) {
        std::unique_ptr<unsigned char[]> m(new unsigned char[len ? len : 1]);
        memcpy(m.get(), good.data(), len);
        eng_dns_parse_buf buf;
        eng_dns_answer ans;
        INFO("length " << len);
        CHECK(eng_dns_parse(m.get(), len, 16, 60, &buf, &ans) == -EBADMSG);
        CHECK(ans.status == ENG_DNS_ERROR);
        CHECK(ans.count == 0);
    }
    // Not a response (QR clear).
    Bytes query = good;
    query[2] &= 0x7F;
    CHECK(parse(query, 16)->rc == -EBADMSG);
    {
        std::unique_ptr<eng_dns_parse_buf> buf(new eng_dns_parse_buf);
        eng_dns_answer ans;
        CHECK(eng_dns_parse(nullptr, 0, 1, 60, buf.get(), &ans) == -EBADMSG);
    }

    // A compression pointer to itself (a PTR target), and two pointing at each other (a CNAME
    // target pointing at the PTR target's offset and back).
    size_t at = message(q, 1, 0, {}).size() + wire_name(q).size() + 10; // first rdata offset
    RR self_ptr = rr(q, ENG_DNS_T_PTR, 300, {0xC0, (unsigned char)at});
    CHECK(parse(message(q, ENG_DNS_T_PTR, 0, {self_ptr}), ENG_DNS_T_PTR)->rc == -EBADMSG);
    size_t at2 = at + 2 + wire_name(q).size() + 10; // second record's rdata
    RR first = rr(q, ENG_DNS_T_CNAME, 300, {0xC0, (unsigned char)at2});
    RR second = rr(q, ENG_DNS_T_CNAME, 300, {0xC0, (unsigned char)at});
    CHECK(parse(message(q, ENG_DNS_T_CNAME, 0, {first, second}), ENG_DNS_T_CNAME)->rc == -EBADMSG);
    // A pointer past the end.
    RR past = rr(q, ENG_DNS_T_PTR, 300, {0xC0, 0xFF});
    CHECK(parse(message(q, ENG_DNS_T_PTR, 0, {past}), ENG_DNS_T_PTR)->rc == -EBADMSG);

    // Label types 0x40 and 0x80.
    Bytes badlabel = message(q, 1, 0, {});
    badlabel[12] = 0x41;
    CHECK(parse(badlabel, 1)->rc == -EBADMSG);

    // Wrong rdata sizes for A, AAAA, MX; a PTR with junk after its name.
    CHECK(parse(message(q, 1, 0, {rr(q, 1, 300, {1, 2, 3})}), 1)->rc == -EBADMSG);
    CHECK(parse(message(q, 1, 0, {rr(q, 1, 300, {1, 2, 3, 4, 5})}), 1)->rc == -EBADMSG);
    CHECK(parse(message(q, 28, 0, {rr(q, 28, 300, a_rdata("1.2.3.4"))}), 28)->rc == -EBADMSG);
    CHECK(parse(message(q, 15, 0, {rr(q, 15, 300, {0, 10})}), 15)->rc == -EBADMSG);
    Bytes ptr_junk = wire_name("x.example");
    ptr_junk.push_back(7);
    CHECK(parse(message(q, 12, 0, {rr(q, 12, 300, ptr_junk)}), 12)->rc == -EBADMSG);
    // TXT strings must fill the rdata exactly.
    CHECK(parse(message(q, 16, 0, {rr(q, 16, 300, {5, 'a', 'b'})}), 16)->rc == -EBADMSG);
    CHECK(parse(message(q, 16, 0, {rr(q, 16, 300, {})}), 16)->rc == 0);
    // A bad SOA in the authority section.
    CHECK(parse(message(q, 1, 3, {}, {rr("zen.example", 6, 300, {0, 0, 1, 2})}), 1)->rc ==
          -EBADMSG);
    // A name longer than 255 octets on the wire.
    Bytes longname;
    for (int i = 0; i < 5; i++) {
        longname.push_back(63);
        longname.insert(longname.end(), 63, 'a');
    }
    longname.push_back(0);
    CHECK(parse(message(q, 12, 0, {rr(q, 12, 300, longname)}), 12)->rc == -EBADMSG);
}

TEST_CASE("eng_dns_txt_next stops at rdata that overruns", "[dns_msg]")
{
    unsigned char rd[] = {2, 'a', 'b', 5, 'c'};
    eng_dns_rr r{};
    r.type = 16;
    r.rdata = rd;
    r.rdata_len = sizeof(rd);
    CHECK(txt_strings(r) == std::vector<std::string>{"ab"});
    r.rdata_len = 0;
    CHECK(txt_strings(r).empty());
}
