// ldap_client_test.cpp: the Ldap connection's client (policy/ldap.c) on engine shards against a
// real slapd (slapd_server.h): options, RFC 4515 escaping, searches (found, multi-valued, none,
// several, errors), anonymous and simple binds and a refused bind (then backing off), a search
// deadline while slapd is SIGSTOPped, reconnecting after slapd was killed and restarted, many
// searches outstanding on one connection, STARTTLS with a generated self-signed certificate
// (trusted, hostname mismatch, plain server). Tags: [ldap_opts], [ldap_client], [ldap_tls].
#include <catch2/catch.hpp>

#include "../engine/harness.h"

#include "slapd_server.h"

extern "C" {
#include "config.h"
#include "ldap_conn.h"
#include "server.h"
}

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

using namespace th;

namespace
{

struct Res {
    std::atomic<int> st{-1};
    std::string error, dn;
    size_t count = 0;
    std::vector<std::string> limit, desc;
};

std::mutex g_mu;

void on_done(void *ctx, const pol_ldap_result *res)
{
    Res *r = static_cast<Res *>(ctx);
    std::lock_guard<std::mutex> lk(g_mu);
    r->error = pol_ldap_result_error(res);
    r->count = pol_ldap_result_count(res);
    const char *dn = pol_ldap_result_dn(res);
    r->dn = dn ? dn : "";
    const char *v;
    size_t len;
    for (size_t i = 0; pol_ldap_result_value(res, "mtpolicydmailmessagelimit", i, &v, &len) == 0;
         i++)
        r->limit.emplace_back(v, len);
    for (size_t i = 0; pol_ldap_result_value(res, "description", i, &v, &len) == 0; i++)
        r->desc.emplace_back(v, len);
    r->st = pol_ldap_result_status(res);
}

const char *const k_attrs[] = {"mtpolicydMailMessageLimit", "description", nullptr};
const char *const k_base = "dc=example,dc=com";

pol_server *g_srv;
pol_ldap_conn *g_lc;

int app_start(eng_shard *sh, void *, void **app)
{
    *app = nullptr;
    char err[256] = "";
    if (pol_ldap_conn_shard_start(g_lc, sh, err, sizeof(err)) != 0) {
        fprintf(stderr, "shard_start: %s\n", err);
        return -EIO;
    }
    return 0;
}

void app_stop(eng_shard *sh, void *)
{
    pol_ldap_conn_shard_stop(g_lc, sh);
}

eng_app_ops g_ops;

std::string conn_text(int port, const std::string &extra)
{
    return "<Connection ldap>\n module = \"Ldap\"\n host = \"127.0.0.1\"\n port = " +
           std::to_string(port) + "\n" + extra + "</Connection>\n";
}

// A server with one Ldap connection and an engine whose shards run its clients.
struct Rig {
    std::unique_ptr<Engine> eng;
    explicit Rig(const std::string &conn, unsigned shards = 2)
    {
        std::string text = conn + "<VirtualHost 12345>\n name = test\n <Plugin a>\n"
                                  "  module = \"Action\"\n  action = \"dunno\"\n"
                                  " </Plugin>\n</VirtualHost>\n";
        char err[1024] = "";
        int rc = pol_server_from_text("test.conf", text.c_str(), &g_srv, err, sizeof(err));
        INFO(err);
        REQUIRE(rc == 0);
        const pol_conn_def *def = pol_server_conn(g_srv, "ldap");
        REQUIRE(def != nullptr);
        g_lc = pol_ldap_conn_get(def, err, sizeof(err));
        INFO(err);
        REQUIRE(g_lc != nullptr);
        eng_config cfg = echo_config(ENG_BACKEND_URING, shards);
        g_ops = echo_ops;
        g_ops.shard_start = app_start;
        g_ops.shard_stop = app_stop;
        cfg.ops = &g_ops;
        eng = std::make_unique<Engine>(cfg);
    }
    ~Rig()
    {
        eng.reset();
        pol_ldap_conn_put(g_lc);
        g_lc = nullptr;
        pol_server_free(g_srv);
        g_srv = nullptr;
    }
    void on(unsigned idx, const std::function<void(eng_shard *)> &fn)
    {
        struct C {
            unsigned idx;
            const std::function<void(eng_shard *)> *fn;
        } c{idx, &fn};
        REQUIRE(eng_run_on_shards(
                    eng->e,
                    [](eng_shard *sh, void *, void *p) {
                        C *c = static_cast<C *>(p);
                        if (eng_shard_index(sh) == c->idx)
                            (*c->fn)(sh);
                    },
                    &c) == 0);
    }
    // Starts a search on shard 0; filter must outlive it.
    void start(Res *r, const std::string *filter, const char *base = k_base, unsigned shard = 0)
    {
        int rc = 99;
        on(shard, [&](eng_shard *sh) {
            rc = pol_ldap_search(pol_ldap_conn_client(g_lc, sh), base, filter->c_str(), k_attrs,
                                 on_done, r);
        });
        REQUIRE(rc == 0);
    }
    void search(Res *r, const std::string &filter, const char *base = k_base, int wait_ms = 10000)
    {
        start(r, &filter, base);
        REQUIRE(eventually([&] { return r->st != -1; }, wait_ms));
    }
    pol_ldap_stats stats(unsigned shard = 0)
    {
        pol_ldap_stats st{};
        on(shard, [&](eng_shard *sh) { pol_ldap_client_stats(pol_ldap_conn_client(g_lc, sh), &st); });
        return st;
    }
};

rpdtest::SlapdServer &plain()
{
    static rpdtest::SlapdServer s(false);
    return s;
}

bool all_done(const std::vector<std::unique_ptr<Res>> &rs)
{
    for (auto &r : rs)
        if (r->st == -1)
            return false;
    return true;
}

pol_ldap_config parse(const std::string &block, std::string *err)
{
    pol_cfg_parser *p = pol_cfg_parser_new("t.conf", ".");
    pol_cfg_error e{};
    pol_cfg *cfg = nullptr;
    std::string text = "<Connection x>\n module = \"Ldap\"\n" + block + "</Connection>\n";
    REQUIRE(pol_cfg_parser_feed(p, text.data(), text.size(), &e) == 0);
    REQUIRE(pol_cfg_parser_finish(p, &cfg, &e) == 0);
    const pol_cfg_node *b = pol_cfg_root(cfg)->children;
    pol_ldap_config out;
    char buf[256] = "";
    int rc = pol_ldap_config_parse(b, &out, buf, sizeof(buf));
    *err = rc == 0 ? "" : buf;
    if (rc != 0)
        pol_ldap_config_free(&out);
    pol_cfg_free(cfg);
    return out;
}

std::string esc(const std::string &in, size_t cap = 256)
{
    std::vector<char> out(cap);
    size_t n = pol_ldap_escape(in.data(), in.size(), out.data(), out.size());
    std::string s(out.data());
    if (n >= cap)
        return "TRUNC:" + s;
    return s;
}

} // namespace

TEST_CASE("RFC 4515 escaping as Net::LDAP::Util::escape_filter_value", "[ldap_opts]")
{
    CHECK(esc("alice@example.com") == "alice@example.com");
    CHECK(esc("a*b(c)d\\e") == "a\\2ab\\28c\\29d\\5ce");
    CHECK(esc(std::string("x\x01y\x1f\x7f", 5)) == "x\\01y\\1f\x7f");
    CHECK(esc(std::string("\0z", 2)) == "\\00z");
    CHECK(esc("\xc3\xa9t\xc3\xa9") == "\xc3\xa9t\xc3\xa9"); // bytes >= 0x20 as they are
    CHECK(esc("") == "");
    // The escaped length is returned even when it does not fit; the output stays terminated.
    CHECK(esc("((", 4) == "TRUNC:\\28"); // 6 bytes wanted, 3 fit
    CHECK(pol_ldap_escape("((", 2, nullptr, 0) == 6);
}

TEST_CASE("Ldap connection options: 2.05's names and defaults", "[ldap_opts]")
{
    std::string err;
    pol_ldap_config c = parse("", &err);
    REQUIRE(err.empty());
    CHECK(std::string(c.host) == "localhost");
    CHECK(c.port == 389);
    CHECK(c.starttls);
    CHECK(c.keepalive);
    CHECK(c.timeout_s == 120);
    CHECK(c.binddn == nullptr);
    CHECK(c.password == nullptr);
    pol_ldap_config_free(&c);

    c = parse(" host = ldap.example.com\n port = 1389\n starttls = 0\n keepalive = 0\n"
              " timeout = 5\n binddn = \"cn=x,dc=y\"\n password = \"p w\"\n"
              " connection_class = \"Net::LDAP\"\n",
              &err);
    REQUIRE(err.empty());
    CHECK(std::string(c.host) == "ldap.example.com");
    CHECK(c.port == 1389);
    CHECK_FALSE(c.starttls);
    CHECK_FALSE(c.keepalive);
    CHECK(c.timeout_s == 5);
    CHECK(std::string(c.binddn) == "cn=x,dc=y");
    CHECK(std::string(c.password) == "p w");
    pol_ldap_config_free(&c);

    parse(" port = 65536\n", &err);
    CHECK(err.find("port") != std::string::npos);
    parse(" port = 0\n", &err);
    CHECK(err.find("port") != std::string::npos);
    parse(" port = 38x\n", &err);
    CHECK(err.find("port") != std::string::npos);
    parse(" starttls = yes\n", &err);
    CHECK(err.find("starttls") != std::string::npos);
    parse(" timeout = -1\n", &err);
    CHECK(err.find("timeout") != std::string::npos);
    parse(" host = \"\"\n", &err);
    CHECK(err.find("host") != std::string::npos);
}

TEST_CASE("pol_conn_Ldap: options checked at start-up, the entry shared with plugins",
          "[ldap_opts]")
{
    for (const char *port : {"389", "x"}) {
        std::string text = "<Connection ldap>\n module = \"Ldap\"\n port = \"" +
                           std::string(port) +
                           "\"\n</Connection>\n<VirtualHost 12345>\n name = t\n <Plugin a>\n"
                           "  module = \"Action\"\n  action = \"dunno\"\n </Plugin>\n"
                           "</VirtualHost>\n";
        pol_server *srv = nullptr;
        char err[512] = "";
        int rc = pol_server_from_text("t.conf", text.c_str(), &srv, err, sizeof(err));
        if (std::string(port) == "x") {
            /* The core opens every <Connection> block at start-up, used or not. */
            CHECK(rc == -1);
            INFO(err);
            CHECK(std::string(err).find("option port: 'x' is not an integer") !=
                  std::string::npos);
            continue;
        }
        REQUIRE(rc == 0);
        const pol_conn_def *def = pol_server_conn(srv, "ldap");
        REQUIRE(def != nullptr);
        REQUIRE(def->impl != nullptr);
        pol_ldap_conn *lc = pol_ldap_conn_get(def, err, sizeof(err));
        CHECK(lc == def->impl);
        CHECK(pol_ldap_conn_config(lc)->port == 389);
        pol_ldap_conn_put(lc);
        pol_server_free(srv);
    }
}

TEST_CASE("searches against slapd", "[ldap_client]")
{
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 10\n"));

    SECTION("one entry: DN, values (multi-valued in order), attribute names without case")
    {
        Res r;
        rig.search(&r, "(mail=alice@example.com)");
        REQUIRE(r.st == POL_LDAP_OK);
        CHECK(r.count == 1);
        CHECK(r.dn == "uid=alice,ou=users,dc=example,dc=com");
        CHECK(r.limit == std::vector<std::string>{"10"});
        CHECK(r.desc == std::vector<std::string>{"first", "second"});
        CHECK(r.error.empty());
        pol_ldap_stats st = rig.stats();
        CHECK(st.connects == 1);
        CHECK(st.ok == 1);
    }
    SECTION("several entries, none, escaped value")
    {
        Res a, b, c;
        rig.search(&a, "(mail=dup@example.com)");
        CHECK(a.st == POL_LDAP_OK);
        CHECK(a.count == 2);
        rig.search(&b, "(mail=nobody@example.com)");
        CHECK(b.st == POL_LDAP_OK);
        CHECK(b.count == 0);
        CHECK(b.dn.empty());
        char e[128];
        std::string v = "st*r (x)\\y@example.com";
        pol_ldap_escape(v.data(), v.size(), e, sizeof(e));
        rig.search(&c, std::string("(mail=") + e + ")");
        CHECK(c.st == POL_LDAP_OK);
        CHECK(c.count == 1);
        CHECK(c.limit == std::vector<std::string>{"30"});
    }
    SECTION("errors: missing base, bad filter")
    {
        Res a, b;
        rig.search(&a, "(mail=alice@example.com)", "ou=missing,dc=example,dc=com");
        CHECK(a.st == POL_LDAP_ERROR);
        CHECK(a.error.find("No such object") != std::string::npos);
        rig.search(&b, "(mail=alice@example.com");
        CHECK(b.st == POL_LDAP_ERROR);
        CHECK(b.error.find("filter") != std::string::npos);
        Res c; // the connection is still fine
        rig.search(&c, "(uid=bob)");
        CHECK(c.st == POL_LDAP_OK);
        CHECK(c.limit == std::vector<std::string>{"20"});
        CHECK(rig.stats().connects == 1);
    }
    SECTION("each shard has its own connection")
    {
        Res a, b;
        std::string f = "(uid=bob)";
        rig.start(&a, &f, k_base, 0);
        rig.start(&b, &f, k_base, 1);
        REQUIRE(eventually([&] { return a.st != -1 && b.st != -1; }, 10000));
        CHECK(a.st == POL_LDAP_OK);
        CHECK(b.st == POL_LDAP_OK);
        CHECK(rig.stats(0).connects == 1);
        CHECK(rig.stats(1).connects == 1);
    }
}

TEST_CASE("binds: simple bind, a refused bind fails the search and backs off", "[ldap_client]")
{
    SECTION("simple bind as cn=reader")
    {
        Rig rig(conn_text(plain().port(), " starttls = 0\n binddn = \"cn=reader,dc=example,dc=com\"\n"
                                          " password = readerpw\n"));
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_OK);
        CHECK(r.count == 1);
    }
    SECTION("wrong password")
    {
        Rig rig(conn_text(plain().port(), " starttls = 0\n binddn = \"cn=reader,dc=example,dc=com\"\n"
                                          " password = wrong\n"));
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_DOWN);
        CHECK(r.error.find("bind failed: Invalid credentials") != std::string::npos);
        // Backing off: the next search fails at once with the same error, without connecting.
        Res r2;
        rig.search(&r2, "(uid=alice)");
        CHECK(r2.st == POL_LDAP_DOWN);
        CHECK(r2.error == r.error);
        pol_ldap_stats st = rig.stats();
        CHECK(st.connect_failures == 1);
        CHECK(st.down == 2);
        CHECK(st.connects == 0);
    }
    SECTION("nothing listening")
    {
        int port = rpdtest::mc_free_port();
        Rig rig(conn_text(port, " starttls = 0\n"));
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_DOWN);
        CHECK(r.error.find("cant connect ldap") != std::string::npos);
    }
}

TEST_CASE("deadline while slapd is stopped, then recovery", "[ldap_client]")
{
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 1\n"));
    Res warm;
    rig.search(&warm, "(uid=alice)");
    REQUIRE(warm.st == POL_LDAP_OK);
    REQUIRE(plain().pause());
    Res r;
    uint64_t t0 = eng_clock_ms();
    rig.search(&r, "(uid=alice)", k_base, 5000);
    uint64_t took = eng_clock_ms() - t0;
    CHECK(r.st == POL_LDAP_TIMEOUT);
    CHECK(r.error.find("within 1 s") != std::string::npos);
    CHECK(took >= 900);
    CHECK(took < 4000);
    REQUIRE(plain().resume());
    Res r2;
    rig.search(&r2, "(uid=bob)");
    CHECK(r2.st == POL_LDAP_OK);
    CHECK(r2.limit == std::vector<std::string>{"20"});
    pol_ldap_stats st = rig.stats();
    CHECK(st.timeouts == 1);
    CHECK(st.connects == 1); // the same connection: the abandoned search's answer was dropped
}

TEST_CASE("reconnect after slapd was killed and restarted", "[ldap_client]")
{
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 5\n"));
    Res a;
    rig.search(&a, "(uid=alice)");
    REQUIRE(a.st == POL_LDAP_OK);
    plain().kill_now();
    // The first search after the kill fails (connection lost or refused), and so may a few
    // within the backoff.
    Res b;
    rig.search(&b, "(uid=alice)");
    CHECK((b.st == POL_LDAP_LOST || b.st == POL_LDAP_DOWN || b.st == POL_LDAP_ERROR));
    REQUIRE(plain().start());
    bool ok = eventually(
        [&] {
            Res r;
            std::string f = "(uid=bob)";
            rig.start(&r, &f);
            if (!eventually([&] { return r.st != -1; }, 10000))
                return false;
            return r.st == POL_LDAP_OK;
        },
        15000);
    CHECK(ok);
    CHECK(rig.stats().connects == 2);
}

TEST_CASE("many searches outstanding on one connection", "[ldap_client]")
{
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 20\n"));
    const int n = 300;
    std::vector<std::unique_ptr<Res>> rs;
    std::vector<std::string> filters;
    filters.reserve(n);
    for (int i = 0; i < n; i++) {
        rs.push_back(std::make_unique<Res>());
        filters.push_back(i % 3 == 0 ? "(uid=alice)" : i % 3 == 1 ? "(uid=bob)" : "(uid=none)");
    }
    rig.on(0, [&](eng_shard *sh) {
        for (int i = 0; i < n; i++)
            REQUIRE(pol_ldap_search(pol_ldap_conn_client(g_lc, sh), k_base, filters[i].c_str(),
                                    k_attrs, on_done, rs[i].get()) == 0);
    });
    REQUIRE(eventually([&] { return all_done(rs); },
        20000));
    for (int i = 0; i < n; i++) {
        INFO(i);
        REQUIRE(rs[i]->st == POL_LDAP_OK);
        CHECK(rs[i]->count == (i % 3 == 2 ? 0u : 1u));
        if (i % 3 == 1)
            CHECK(rs[i]->limit == std::vector<std::string>{"20"});
    }
    pol_ldap_stats st = rig.stats();
    CHECK(st.connects == 1);
    CHECK(st.ok == (uint64_t)n);
    CHECK(st.outstanding == 0);
    CHECK(st.outstanding_max == (uint64_t)n);
}

TEST_CASE("the op table's limit: ops_max outstanding, one more refused", "[ldap_client]")
{
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 20\n"), 1);
    std::vector<std::unique_ptr<Res>> rs;
    const unsigned n = POL_LDAP_OPS_MAX_DEFAULT;
    for (unsigned i = 0; i < n; i++)
        rs.push_back(std::make_unique<Res>());
    std::string f = "(uid=alice)";
    int extra_rc = 0;
    rig.on(0, [&](eng_shard *sh) {
        pol_ldap_client *c = pol_ldap_conn_client(g_lc, sh);
        for (unsigned i = 0; i < n; i++)
            REQUIRE(pol_ldap_search(c, k_base, f.c_str(), k_attrs, on_done, rs[i].get()) == 0);
        Res unused;
        extra_rc = pol_ldap_search(c, k_base, f.c_str(), k_attrs, on_done, &unused);
    });
    CHECK(extra_rc == -EBUSY);
    REQUIRE(eventually([&] { return all_done(rs); },
        30000));
    size_t ok = 0;
    for (auto &r : rs)
        ok += r->st == POL_LDAP_OK;
    CHECK(ok == n);
    pol_ldap_stats st = rig.stats();
    CHECK(st.busy == 1);
    CHECK(st.searches == n + 1);
}

TEST_CASE("searches held back by the in-flight limit survive the connection's loss",
          "[ldap_client]")
{
    // 100 searches: 64 go out (LDAP_IN_FLIGHT_MAX), 36 wait. slapd is stopped, then killed: the
    // 64 are lost, the 36 try a new connection, which is refused. Nobody waits for the 20 s
    // deadline.
    Rig rig(conn_text(plain().port(), " starttls = 0\n timeout = 20\n"), 1);
    Res warm;
    rig.search(&warm, "(uid=alice)");
    REQUIRE(warm.st == POL_LDAP_OK);
    REQUIRE(plain().pause());
    const int n = 100;
    std::vector<std::unique_ptr<Res>> rs;
    for (int i = 0; i < n; i++)
        rs.push_back(std::make_unique<Res>());
    std::string f = "(uid=bob)";
    rig.on(0, [&](eng_shard *sh) {
        for (int i = 0; i < n; i++)
            REQUIRE(pol_ldap_search(pol_ldap_conn_client(g_lc, sh), k_base, f.c_str(), k_attrs,
                                    on_done, rs[i].get()) == 0);
    });
    plain().kill_stopped();
    uint64_t t0 = eng_clock_ms();
    REQUIRE(eventually([&] { return all_done(rs); },
        15000));
    CHECK(eng_clock_ms() - t0 < 5000);
    int by[POL_LDAP_CANCELLED + 1] = {};
    for (auto &r : rs)
        by[r->st]++;
    INFO("ok " << by[POL_LDAP_OK] << " error " << by[POL_LDAP_ERROR] << " lost "
               << by[POL_LDAP_LOST] << " down " << by[POL_LDAP_DOWN] << " timeout "
               << by[POL_LDAP_TIMEOUT]);
    CHECK(by[POL_LDAP_LOST] == 64);
    CHECK(by[POL_LDAP_DOWN] == n - 64);
    REQUIRE(plain().start());
}

TEST_CASE("STARTTLS with a generated certificate", "[ldap_tls]")
{
    static rpdtest::SlapdServer tls(true);
    // libldap reads LDAPTLS_CACERT once, at its first use in this process.
    setenv("LDAPTLS_CACERT", tls.cacert().c_str(), 1);
    SECTION("trusted certificate, name matches: the search runs over TLS")
    {
        Rig rig(conn_text(tls.port(), " timeout = 10\n"));
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_OK);
        CHECK(r.count == 1);
        // slapd logs nothing at -d 0; ask it through ldapsearch -ZZ that TLS works at all
        std::string cmd = "LDAPTLS_CACERT=" + tls.cacert() +
                          " ldapsearch -x -ZZ -H ldap://127.0.0.1:" + std::to_string(tls.port()) +
                          " -b dc=example,dc=com '(uid=alice)' dn > /dev/null 2>&1";
        CHECK(system(cmd.c_str()) == 0);
    }
    SECTION("host name not in the certificate: STARTTLS fails, the search is DOWN")
    {
        std::string conn = "<Connection ldap>\n module = \"Ldap\"\n host = \"localhost\"\n port = " +
                           std::to_string(tls.port()) + "\n timeout = 10\n</Connection>\n";
        Rig rig(conn);
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_DOWN);
        CHECK(r.error.find("starttls on ldap connection failed") != std::string::npos);
    }
    SECTION("starttls = 1 (the default) against a server without TLS")
    {
        Rig rig(conn_text(plain().port(), " timeout = 10\n"));
        Res r;
        rig.search(&r, "(uid=alice)");
        CHECK(r.st == POL_LDAP_DOWN);
        CHECK(r.error.find("starttls on ldap connection failed") != std::string::npos);
    }
}
