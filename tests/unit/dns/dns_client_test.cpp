// dns_client_test.cpp: the engine's DNS client (engine/dns.c) on a shard, against nsd on
// loopback (dns_server.h), on both backends: A/AAAA/TXT/MX/PTR/CNAME answers, NXDOMAIN and
// NODATA with the SOA's negative TTL, names compared case-insensitively without a trailing dot,
// done never inside eng_dns_query (also for cache hits), the answer cache (hits, TTL left,
// expiry of a 1-second record, NXDOMAIN cached, errors not cached, LRU eviction under
// cache_entries_max, cache off), in-flight de-duplication, the timeout path (a server that
// never answers), server switching (a dead first server, then nsd), bad names, ops_max at N
// and N+1, inflight_max queueing, a done that asks again, cancellation at destroy, and the
// servers-list and configuration checks.
#include "../engine/harness.h"
#include "dns_server.h"

extern "C" {
#include "eng/dns.h"
}

#include <arpa/inet.h>

#include <mutex>

using namespace th;

namespace
{

struct Res {
    eng_dns_op op{};
    std::atomic<bool> done{false};
    int status = -1;
    std::string qname;
    uint32_t ttl_s = 0;
    bool from_cache = false;
    bool truncated = false;
    std::vector<std::string> rrs; // presentation of each record
    int shard = -1;
    int rcode = -1;
    bool in_call = false; // done ran while eng_dns_query was on the stack
};

thread_local bool tl_in_query = false;

void sleep_ms(int ms)
{
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}
eng_dns *g_dns;

std::string rr_text(const eng_dns_rr &r)
{
    char buf[INET6_ADDRSTRLEN];
    switch (r.type) {
    case ENG_DNS_T_A:
        return inet_ntop(AF_INET, &r.u.a, buf, sizeof(buf));
    case ENG_DNS_T_AAAA:
        return inet_ntop(AF_INET6, &r.u.aaaa, buf, sizeof(buf));
    case ENG_DNS_T_MX:
        return std::to_string(r.u.mx.preference) + " " + r.u.mx.exchange;
    case ENG_DNS_T_PTR:
    case ENG_DNS_T_CNAME:
        return r.u.name;
    case ENG_DNS_T_TXT: {
        std::string s;
        size_t pos = 0;
        const unsigned char *p;
        size_t len;
        while (eng_dns_txt_next(&r, &pos, &p, &len))
            s += (s.empty() ? "" : "|") + std::string(reinterpret_cast<const char *>(p), len);
        return s;
    }
    default:
        return "?";
    }
}

void on_done(void *ctx, const eng_dns_answer *ans)
{
    Res *r = static_cast<Res *>(ctx);
    r->status = ans->status;
    r->rcode = ans->rcode;
    r->qname = ans->qname ? ans->qname : "<null>";
    r->ttl_s = ans->ttl_s;
    r->from_cache = ans->from_cache;
    r->truncated = ans->truncated;
    r->rrs.clear();
    for (uint32_t i = 0; i < ans->count; i++)
        r->rrs.push_back(rr_text(ans->rrs[i]));
    r->in_call = tl_in_query;
    eng_shard *self = eng_shard_self();
    r->shard = self ? int(eng_shard_index(self)) : -1;
    r->done = true;
}

void on_shard0(eng *e, const std::function<void(eng_shard *)> &fn)
{
    REQUIRE(eng_run_on_shards(
                e,
                [](eng_shard *sh, void *, void *p) {
                    if (eng_shard_index(sh) == 0)
                        (*static_cast<const std::function<void(eng_shard *)> *>(p))(sh);
                },
                const_cast<std::function<void(eng_shard *)> *>(&fn)) == 0);
}

int start_query(eng_dns *d, Res &r, const std::string &name, uint16_t qtype)
{
    tl_in_query = true;
    int rc = eng_dns_query(d, &r.op, name.data(), name.size(), qtype, on_done, &r);
    tl_in_query = false;
    return rc;
}

struct Fixture {
    dnstest::DnsServer &dns = dnstest::dns_server();
    Engine eng;
    std::string servers;
    explicit Fixture(eng_backend b, std::function<void(eng_dns_config &)> tune = nullptr,
                     std::string srv = "")
        : eng(echo_config(b, 1)), servers(srv.empty() ? dns.servers() : srv)
    {
        eng_dns_config c;
        eng_dns_config_defaults(&c);
        c.servers = servers.c_str();
        c.timeout_ms = 300;
        c.tries = 1;
        if (tune)
            tune(c);
        int rc = -1;
        char err[256] = "";
        on_shard0(eng.e,
                  [&](eng_shard *sh) { rc = eng_dns_create(sh, &c, &g_dns, err, sizeof(err)); });
        INFO(err);
        REQUIRE(rc == 0);
    }
    ~Fixture()
    {
        on_shard0(eng.e, [](eng_shard *) { eng_dns_destroy(g_dns); });
        g_dns = nullptr;
    }
    eng_dns_stats stats()
    {
        eng_dns_stats st;
        on_shard0(eng.e, [&](eng_shard *) { eng_dns_stats_get(g_dns, &st); });
        return st;
    }
    // Asks and waits for the answer.
    void ask(Res &r, const std::string &name, uint16_t qtype, int wait_ms = 5000)
    {
        r.done = false;
        int rc = 99;
        on_shard0(eng.e, [&](eng_shard *) { rc = start_query(g_dns, r, name, qtype); });
        REQUIRE(rc == 0);
        REQUIRE(eventually([&] { return r.done.load(); }, wait_ms));
        CHECK_FALSE(r.in_call);
        CHECK(r.shard == 0);
    }
};

} // namespace

TEST_CASE("answers of every type from a real server", "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        Res r;
        f.ask(r, "host.rec.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_OK);
        CHECK(r.rrs == std::vector<std::string>{"192.0.2.1", "192.0.2.2"});
        CHECK(r.ttl_s == 300);
        CHECK(r.qname == "host.rec.example");
        CHECK_FALSE(r.from_cache);

        f.ask(r, "host.rec.example", ENG_DNS_T_AAAA);
        CHECK(r.rrs == std::vector<std::string>{"2001:db8::1"});
        f.ask(r, "host.rec.example", ENG_DNS_T_TXT);
        CHECK(r.rrs == std::vector<std::string>{"v=spf1 -all"});
        f.ask(r, "host.rec.example", ENG_DNS_T_MX);
        REQUIRE(r.rrs.size() == 2);
        CHECK((r.rrs[0] == "10 mx1.rec.example" || r.rrs[1] == "10 mx1.rec.example"));
        f.ask(r, "nullmx.rec.example", ENG_DNS_T_MX);
        CHECK(r.rrs == std::vector<std::string>{"0 ."});
        f.ask(r, "ptr.rec.example", ENG_DNS_T_PTR);
        CHECK(r.rrs == std::vector<std::string>{"host.rec.example"});
        f.ask(r, "alias.rec.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_OK);
        CHECK(r.rrs == std::vector<std::string>{"192.0.2.1", "192.0.2.2"});
        f.ask(r, "8.0.0.127.zen.example", ENG_DNS_T_TXT);
        CHECK(r.rrs == std::vector<std::string>{
                           "q\"uote back\\slash tab\t nl\n del\x7f bin\xc8\xff utf8 caf\xc3\xa9"});
        f.ask(r, "7.0.0.127.zen.example", ENG_DNS_T_TXT);
        CHECK(r.rrs == std::vector<std::string>{"two words|one|(paren)|semi;colon"});

        // Negative answers: the SOA rule (min(SOA TTL 60 as served, MINIMUM 60)).
        f.ask(r, "3.0.0.127.zen.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_NXDOMAIN);
        CHECK(r.ttl_s == 60);
        CHECK(r.rrs.empty());
        f.ask(r, "9.0.0.127.zen.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_NODATA);
        CHECK(r.ttl_s == 60);
        f.ask(r, "nothing.rec.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_NXDOMAIN);
        CHECK(r.ttl_s == 120);
        // A zone nsd does not serve: REFUSED (c-ares 1.18: ECONNREFUSED, no message).
        f.ask(r, "elsewhere.invalid", ENG_DNS_T_A);
        INFO("rcode " << r.rcode);
        CHECK(r.status == ENG_DNS_REFUSED);

        eng_dns_stats st = f.stats();
        CHECK(st.answers[ENG_DNS_OK] == 9);
        CHECK(st.answers[ENG_DNS_NXDOMAIN] == 2);
        CHECK(st.answers[ENG_DNS_NODATA] == 1);
        CHECK(st.answers[ENG_DNS_REFUSED] == 1);
        CHECK(st.sent == 13);
        CHECK(st.queries == 13);
    }
}

TEST_CASE("the cache: hits, TTL left, case and trailing dot, expiry, negative answers",
          "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        Res r;
        f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
        REQUIRE(r.status == ENG_DNS_OK);
        CHECK_FALSE(r.from_cache);
        // The same name in other spellings: one cache entry.
        f.ask(r, "2.0.0.127.ZEN.Example.", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_OK);
        CHECK(r.from_cache);
        CHECK(r.qname == "2.0.0.127.zen.example");
        CHECK(r.rrs == std::vector<std::string>{"127.0.0.2"});
        CHECK(r.ttl_s <= 300);
        CHECK(r.ttl_s >= 299);
        // Another type of the same name is another entry.
        f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_TXT);
        CHECK_FALSE(r.from_cache);
        // NXDOMAIN is cached.
        f.ask(r, "3.0.0.127.zen.example", ENG_DNS_T_A);
        CHECK_FALSE(r.from_cache);
        f.ask(r, "3.0.0.127.zen.example", ENG_DNS_T_A);
        CHECK(r.status == ENG_DNS_NXDOMAIN);
        CHECK(r.from_cache);
        eng_dns_stats st = f.stats();
        CHECK(st.cache_hits == 2);
        CHECK(st.sent == 3);
        CHECK(st.cache_entries == 3);
        CHECK(st.cache_inserts == 3);

        // A 1-second TTL: cached, then expired.
        f.ask(r, "ttl1.zen.example", ENG_DNS_T_A);
        CHECK(r.ttl_s == 1);
        f.ask(r, "ttl1.zen.example", ENG_DNS_T_A);
        CHECK(r.from_cache);
        sleep_ms(1100);
        f.ask(r, "ttl1.zen.example", ENG_DNS_T_A);
        CHECK_FALSE(r.from_cache);
        CHECK(r.status == ENG_DNS_OK);
        CHECK(f.stats().cache_expired == 1);

        // eng_dns_cache_clear forgets everything.
        on_shard0(f.eng.e, [](eng_shard *) { eng_dns_cache_clear(g_dns); });
        CHECK(f.stats().cache_entries == 0);
        CHECK(f.stats().cache_bytes == 0);
        f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
        CHECK_FALSE(r.from_cache);
    }
}

TEST_CASE("errors are not cached; timeouts; a dead first server is skipped", "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        dnstest::DnsServer &srv = dnstest::dns_server();
        {
            Fixture f(backend, nullptr, srv.hole());
            Res r;
            f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_TIMEOUT);
            CHECK(r.ttl_s == 0);
            f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_TIMEOUT);
            CHECK_FALSE(r.from_cache);
            eng_dns_stats st = f.stats();
            CHECK(st.answers[ENG_DNS_TIMEOUT] == 2);
            CHECK(st.sent == 2);
            CHECK(st.cache_entries == 0);
        }
        {
            // REFUSED is not cached either.
            Fixture f(backend);
            Res r;
            f.ask(r, "x.invalid", ENG_DNS_T_A);
            f.ask(r, "x.invalid", ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_REFUSED);
            CHECK_FALSE(r.from_cache);
        }
        {
            Fixture f(backend, nullptr, srv.hole() + ", " + srv.servers());
            Res r;
            f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_OK);
            CHECK(r.rrs == std::vector<std::string>{"127.0.0.2"});
        }
    }
}

TEST_CASE("a server that refuses: every query REFUSED, sockets reopened safely", "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        dnstest::dns_server();
        int port = 0;
        close(dnstest::udp_bound(&port)); // nobody listens there: ICMP port unreachable
        Fixture f(backend, nullptr, "127.0.0.1:" + std::to_string(port));
        // c-ares closes the socket after each refusal and opens a new one for the next query,
        // which gets the same fd number unless the old one is still open.
        for (int i = 0; i < 5; i++) {
            Res r;
            f.ask(r, "n" + std::to_string(i) + ".zen.example", ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_REFUSED);
        }
        std::vector<Res> rs(4);
        on_shard0(f.eng.e, [&](eng_shard *) {
            for (int i = 0; i < 4; i++)
                REQUIRE(start_query(g_dns, rs[i], "m" + std::to_string(i) + ".zen.example",
                                    ENG_DNS_T_A) == 0);
        });
        REQUIRE(eventually([&] {
            for (auto &r : rs)
                if (!r.done)
                    return false;
            return true;
        }));
        // The refusal (ICMP) reaches one of them; the others on that socket time out.
        for (auto &r : rs)
            CHECK((r.status == ENG_DNS_REFUSED || r.status == ENG_DNS_TIMEOUT));
    }
}

TEST_CASE("identical queries in flight share one; a done may ask again", "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Fixture f(backend);
        std::vector<Res> rs(10);
        int rcs[10];
        on_shard0(f.eng.e, [&](eng_shard *) {
            for (int i = 0; i < 10; i++)
                rcs[i] = start_query(g_dns, rs[i],
                                     i % 2 ? "5.0.0.127.zen.example" : "5.0.0.127.zen.example.",
                                     ENG_DNS_T_A);
        });
        for (int i = 0; i < 10; i++)
            REQUIRE(rcs[i] == 0);
        REQUIRE(eventually([&] {
            for (auto &r : rs)
                if (!r.done)
                    return false;
            return true;
        }));
        for (auto &r : rs) {
            CHECK(r.status == ENG_DNS_OK);
            CHECK(r.rrs.size() == 2);
            CHECK_FALSE(r.in_call);
            CHECK(r.rrs == rs[0].rrs);
        }
        eng_dns_stats st = f.stats();
        CHECK(st.sent == 1);
        CHECK(st.dedup_hits == 9);
        CHECK(st.queries == 10);

        // A done that asks the TXT of the same name with the same op (what a blocklist lookup
        // does).
        struct Chain {
            Res a, txt;
        } ch;
        ch.a.op = {};
        on_shard0(f.eng.e, [&](eng_shard *) {
            REQUIRE(eng_dns_query(
                        g_dns, &ch.a.op, "2.0.0.127.zen.example", 21, ENG_DNS_T_A,
                        [](void *ctx, const eng_dns_answer *ans) {
                            Chain *c = static_cast<Chain *>(ctx);
                            on_done(&c->a, ans);
                            int rc = eng_dns_query(g_dns, &c->a.op, "2.0.0.127.zen.example", 21,
                                                   ENG_DNS_T_TXT, on_done, &c->txt);
                            if (rc != 0)
                                c->txt.status = 1000 - rc;
                        },
                        &ch) == 0);
        });
        REQUIRE(eventually([&] { return ch.txt.done.load(); }));
        CHECK(ch.a.rrs == std::vector<std::string>{"127.0.0.2"});
        CHECK(ch.txt.rrs ==
              std::vector<std::string>{"Listed in test zen; see http://zen.example/?127.0.0.2"});
    }
}

TEST_CASE("bad names, limits at N and N+1, queueing, cancellation", "[dns_client]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        SECTION("a name too long is BADNAME; an empty label fails")
        {
            Fixture f(backend);
            Res r;
            // 253 characters: the longest name the DNS carries (255 octets on the wire).
            std::string at_max(253, 'a');
            for (size_t i = 63; i < at_max.size(); i += 64)
                at_max[i] = '.';
            f.ask(r, at_max, ENG_DNS_T_A);
            CHECK(r.status != ENG_DNS_BADNAME);  // asked (REFUSED by nsd)
            f.ask(r, at_max + "a", ENG_DNS_T_A); // c-ares refuses it
            CHECK(r.status == ENG_DNS_BADNAME);
            std::string over(ENG_DNS_NAME_BYTES_MAX + 1, 'a'); // refused before c-ares
            f.ask(r, over, ENG_DNS_T_A);
            CHECK(r.status == ENG_DNS_BADNAME);
            CHECK(r.qname == "");
            f.ask(r, "a..zen.example", ENG_DNS_T_A);
            CHECK(r.status != ENG_DNS_OK);
            // Invalid arguments are refused in the call.
            Res bad;
            int rc = 0;
            on_shard0(f.eng.e, [&](eng_shard *) {
                rc = eng_dns_query(g_dns, &bad.op, "x", 1, 0, on_done, &bad);
            });
            CHECK(rc == -EINVAL);
            CHECK_FALSE(bad.done);
        }
        SECTION("ops_max: N accepted, N+1 refused and counted")
        {
            Fixture f(backend, [](eng_dns_config &c) { c.ops_max = 3; });
            std::vector<Res> rs(4);
            int rcs[4];
            on_shard0(f.eng.e, [&](eng_shard *) {
                for (int i = 0; i < 4; i++)
                    rcs[i] = start_query(g_dns, rs[i], "h" + std::to_string(i) + ".rec.example",
                                         ENG_DNS_T_A);
            });
            CHECK(rcs[0] == 0);
            CHECK(rcs[1] == 0);
            CHECK(rcs[2] == 0);
            CHECK(rcs[3] == -ENOBUFS);
            REQUIRE(eventually([&] { return rs[0].done && rs[1].done && rs[2].done; }));
            CHECK_FALSE(rs[3].done);
            CHECK(f.stats().queue_full == 1);
            Res again; // room again once they are done
            f.ask(again, "host.rec.example", ENG_DNS_T_A);
            CHECK(again.status == ENG_DNS_OK);
        }
        SECTION("inflight_max 1: distinct queries wait their turn")
        {
            Fixture f(backend, [](eng_dns_config &c) { c.inflight_max = 1; });
            std::vector<Res> rs(3);
            on_shard0(f.eng.e, [&](eng_shard *) {
                for (int i = 0; i < 3; i++)
                    REQUIRE(start_query(g_dns, rs[i],
                                        std::to_string(i + 2) + ".0.0.127.zen.example",
                                        ENG_DNS_T_A) == 0);
            });
            REQUIRE(eventually([&] { return rs[0].done && rs[1].done && rs[2].done; }));
            CHECK(rs[0].status == ENG_DNS_OK);
            CHECK(rs[1].status == ENG_DNS_NXDOMAIN);
            CHECK(rs[2].status == ENG_DNS_OK);
            eng_dns_stats st = f.stats();
            CHECK(st.queued >= 1);
            CHECK(st.inflight_max_seen == 1);
            CHECK(st.inflight == 0);
        }
        SECTION("the cache is bounded (LRU) and can be off")
        {
            // One Fixture at a time (g_dns is the only handle): f ends before off starts.
            {
                Fixture f(backend, [](eng_dns_config &c) { c.cache_entries_max = 4; });
                Res r;
                for (int i = 0; i < 4; i++)
                    f.ask(r, std::to_string(i + 2) + ".0.0.127.zen.example", ENG_DNS_T_A);
                f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A); // most recent now
                CHECK(r.from_cache);
                f.ask(r, "host.rec.example", ENG_DNS_T_A); // evicts the least recent: 3.0.0.127
                eng_dns_stats st = f.stats();
                CHECK(st.cache_entries == 4);
                CHECK(st.cache_evictions == 1);
                f.ask(r, "2.0.0.127.zen.example", ENG_DNS_T_A);
                CHECK(r.from_cache);
                f.ask(r, "3.0.0.127.zen.example", ENG_DNS_T_A);
                CHECK_FALSE(r.from_cache);
            }
            Fixture off(backend, [](eng_dns_config &c) { c.cache_entries_max = 0; });
            Res o;
            off.ask(o, "2.0.0.127.zen.example", ENG_DNS_T_A);
            off.ask(o, "2.0.0.127.zen.example", ENG_DNS_T_A);
            CHECK_FALSE(o.from_cache);
            CHECK(off.stats().cache_entries == 0);
        }
        SECTION("destroy answers every pending query CANCELLED")
        {
            dnstest::DnsServer &srv = dnstest::dns_server();
            Fixture f(
                backend, [](eng_dns_config &c) { c.timeout_ms = 5000; }, srv.hole());
            std::vector<Res> rs(3);
            on_shard0(f.eng.e, [&](eng_shard *) {
                REQUIRE(start_query(g_dns, rs[0], "a.zen.example", ENG_DNS_T_A) == 0);
                REQUIRE(start_query(g_dns, rs[1], "a.zen.example", ENG_DNS_T_A) == 0);
            });
            sleep_ms(50); // both are in flight now (one query, two waiters)
            on_shard0(f.eng.e, [&](eng_shard *) {
                REQUIRE(start_query(g_dns, rs[2], "b.zen.example", ENG_DNS_T_A) == 0); // queued
                eng_dns_destroy(g_dns);
                g_dns = nullptr;
            });
            for (auto &r : rs) {
                CHECK(r.done);
                CHECK(r.status == ENG_DNS_CANCELLED);
            }
            // The fixture's destructor destroys nothing more (NULL is a no-op).
        }
    }
}

TEST_CASE("servers list and configuration checks", "[dns_client]")
{
    char err[256];
    for (const char *ok : {"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]", "[::1]:53",
                           " 127.0.0.1:5353 , [::1]:5353 ", "", "2001:db8::53"}) {
        err[0] = '\0';
        INFO(ok);
        CHECK(eng_dns_servers_check(ok, err, sizeof(err)) == 0);
    }
    CHECK(eng_dns_servers_check(nullptr, err, sizeof(err)) == 0);
    for (const char *bad :
         {"localhost", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "[::1", "[::1]:", "1.2.3",
          "127.0.0.1,", ",127.0.0.1", "[127.0.0.1]:53", "::1:53:x"}) {
        INFO(bad);
        err[0] = '\0';
        CHECK(eng_dns_servers_check(bad, err, sizeof(err)) == -EINVAL);
        CHECK(std::string(err).find("DNS server") != std::string::npos);
    }
    CHECK(eng_dns_servers_check("127.0.0.1:5353x", err, sizeof(err)) == -EINVAL);
    CHECK(std::string(err) ==
          "bad DNS server '127.0.0.1:5353x' (expected IPv4[:PORT], IPv6 or [IPv6]:PORT)");

    Engine eng(echo_config(ENG_BACKEND_URING, 1));
    struct {
        std::function<void(eng_dns_config &)> set;
        const char *msg;
    } cases[] = {
        {[](eng_dns_config &c) { c.timeout_ms = 0; }, "DNS client: timeout_ms must be 1..600000"},
        {[](eng_dns_config &c) { c.tries = 17; }, "DNS client: tries must be 1..16"},
        {[](eng_dns_config &c) { c.ops_max = 0; }, "DNS client: ops_max must be 1..16777216"},
        {[](eng_dns_config &c) { c.inflight_max = 65537; },
         "DNS client: inflight_max must be 1..65536"},
        {[](eng_dns_config &c) { c.cache_bytes_max = 511; },
         "DNS client: cache_bytes_max must be at least 512 when the cache is on"},
        {[](eng_dns_config &c) { c.socks_max = 0; }, "DNS client: socks_max must be 1..1024"},
        {[](eng_dns_config &c) { c.servers = "nope"; },
         "bad DNS server 'nope' (expected IPv4[:PORT], IPv6 or [IPv6]:PORT)"},
    };
    for (auto &c : cases) {
        eng_dns_config cfg;
        eng_dns_config_defaults(&cfg);
        c.set(cfg);
        int rc = 0;
        eng_dns *d = reinterpret_cast<eng_dns *>(1);
        on_shard0(eng.e,
                  [&](eng_shard *sh) { rc = eng_dns_create(sh, &cfg, &d, err, sizeof(err)); });
        CHECK(rc == -EINVAL);
        CHECK(d == nullptr);
        CHECK(std::string(err) == c.msg);
    }
}
