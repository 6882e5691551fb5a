// request_test.cpp: building a request from the parser's offsets (copied once, later
// duplicate wins, wire order kept), well-known attributes, variable references and the arena
// the plugins allocate from (limits at N and N+1).
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "pol/plugin.h"
#include "request.h"
#include "var.h"
}

namespace
{

struct Built {
    std::vector<char> mem;
    pol_req r{};
    int rc = 0;
    // Parses text (complete request) and builds r into an arena of arena_bytes.
    Built(std::string text, size_t arena_bytes = 1 << 16)
    {
        pol_proto_attr attrs[300];
        pol_proto_limits lim;
        pol_proto_limits_default(&lim);
        pol_proto_parser pp;
        pol_proto_parser_init(&pp, &lim);
        uint32_t count = 0;
        size_t used = 0;
        REQUIRE(pol_proto_parse(&pp, text.data(), text.size(), attrs, &count, &used) ==
                POL_PROTO_REQUEST);
        need = pol_req_build_bytes(attrs, count);
        mem.assign(arena_bytes + 16, '\0');
        char *base = mem.data() + (8 - reinterpret_cast<uintptr_t>(mem.data()) % 8) % 8;
        pol_arena_init(&r.arena, base, arena_bytes);
        rc = pol_req_build(&r, text.data(), attrs, count);
        std::fill(text.begin(), text.end(), '#'); // the receive buffer goes back
    }
    size_t need = 0;
    std::string attr(const char *name)
    {
        size_t len = 0;
        const char *v = pol_req_attr(&r, name, &len);
        return v ? std::string(v, len) : "<none>";
    }
};

} // namespace

TEST_CASE("attributes are copied; a later duplicate wins, wire order is kept", "[request]")
{
    Built b("request=smtpd_access_policy\nsender=a@x\nfoo=1\nsender=b@y\n=empty name\n"
            "odd=a=b\n\n");
    REQUIRE(b.rc == 0);
    CHECK(pol_req_attr_count(&b.r) == 5);
    CHECK(b.attr("sender") == "b@y");
    CHECK(b.attr("foo") == "1");
    CHECK(b.attr("") == "empty name");
    CHECK(b.attr("odd") == "a=b");
    CHECK(b.attr("missing") == "<none>");
    const char *n, *v;
    size_t nl, vl;
    pol_req_attr_at(&b.r, 1, &n, &nl, &v, &vl);
    CHECK(std::string(n, nl) == "sender");
    CHECK(std::string(v, vl) == "b@y");
    size_t len = 0;
    CHECK(std::string(pol_req_wk(&b.r, POL_WK_REQUEST, &len)) == "smtpd_access_policy");
    CHECK(pol_req_wk(&b.r, POL_WK_INSTANCE, &len) == nullptr);
}

TEST_CASE("variable references read the request or the session", "[request]")
{
    Built b("queue_id=Q1\na:b=colon\n\n");
    REQUIRE(b.rc == 0);
    alignas(8) static char smem[512];
    pol_arena sa;
    pol_arena_init(&sa, smem, sizeof smem);
    pol_sess_init(&b.r.sess);
    pol_sess_set(&b.r.sess, &sa, "queue_id", 8, "from-session", 12);
    struct Case {
        const char *ref, *want;
    } cases[] = {{"queue_id", "Q1"},
                 {"r:queue_id", "Q1"},
                 {"request:queue_id", "Q1"},
                 {"s:queue_id", "from-session"},
                 {"session:queue_id", "from-session"},
                 {"r:a:b", "colon"},
                 {"", nullptr},
                 {"s:nothing", nullptr}};
    for (const Case &c : cases) {
        pol_var v;
        char err[128];
        REQUIRE(pol_var_parse(c.ref, &v, err, sizeof err) == 0);
        size_t len = 0;
        const char *got = pol_req_var(&b.r, &v, &len);
        INFO(c.ref);
        if (c.want)
            CHECK(std::string(got ? got : "<null>", got ? len : 6) == c.want);
        else
            CHECK(got == nullptr);
    }
    pol_var v;
    char err[128];
    CHECK(pol_var_parse("x:y", &v, err, sizeof err) == -1);
    CHECK(std::string(err) == "unknown scope x while retrieving variable for x:y");
}

TEST_CASE("a request fits an arena of exactly the bytes it needs, not one less", "[request]")
{
    std::string text = "request=smtpd_access_policy\nclient_address=192.0.2.1\n\n";
    Built probe(text);
    size_t need = probe.need;
    // The build needs at most pol_req_build_bytes; find the exact minimum N by shrinking.
    size_t n = need;
    while (n > 0 && Built(text, n - 1).rc == 0)
        n--;
    CHECK(Built(text, n).rc == 0);
    CHECK(Built(text, n - 1).rc == -ENOMEM);
    CHECK(n <= need);
}

TEST_CASE("many attributes: duplicates found without a quadratic scan", "[request]")
{
    std::string text;
    for (int i = 0; i < 250; i++)
        text += "a" + std::to_string(i % 100) + "=" + std::to_string(i) + "\n";
    text += "\n";
    Built b(text);
    REQUIRE(b.rc == 0);
    CHECK(pol_req_attr_count(&b.r) == 100);
    CHECK(b.attr("a7") == "207");
}

TEST_CASE("pol_req_alloc and pol_req_printf stop at the arena's end", "[request]")
{
    Built b("x=1\n\n", 512);
    REQUIRE(b.rc == 0);
    size_t room = pol_arena_free_bytes(&b.r.arena);
    CHECK(pol_req_alloc(&b.r, room + 1) == nullptr);
    std::string big(room, 'z');
    CHECK(pol_req_printf(&b.r, "%s", big.c_str()) == nullptr); // needs room + 1
    char *s = pol_req_printf(&b.r, "%s-%d", "ok", 7);
    REQUIRE(s != nullptr);
    CHECK(std::string(s) == "ok-7");
    CHECK(pol_req_strndup(&b.r, "abc", 2) == std::string("ab"));
}
