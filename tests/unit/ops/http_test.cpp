/*
 * http_test.cpp: eng_http_parse (the pure HTTP request-head parser of engine/http.c) and the
 * response body helpers. Every limit at N and N+1, each refusal with its status code, inputs
 * in fragments and flush against a guard page.
 */
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

extern "C" {
#include "eng/http.h"
}

namespace
{

struct Parsed {
    enum eng_http_parse_status st;
    eng_http_req rq;
};

eng_http_limits defaults()
{
    eng_http_limits l;
    eng_http_limits_defaults(&l);
    return l;
}

/* Parses s placed flush against a PROT_NONE page, so any read past the end faults. */
Parsed parse_guarded(const std::string &s, const eng_http_limits &lim)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (s.size() + (size_t)page - 1) / (size_t)page + 1;
    char *m = static_cast<char *>(mmap(nullptr, (pages + 1) * (size_t)page,
                                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    REQUIRE(m != MAP_FAILED);
    REQUIRE(mprotect(m + pages * (size_t)page, (size_t)page, PROT_NONE) == 0);
    char *p = m + pages * (size_t)page - s.size();
    memcpy(p, s.data(), s.size());
    Parsed out;
    out.st = eng_http_parse(p, s.size(), &lim, &out.rq);
    /* The slices point into the mapping: copy what the tests read before unmapping. */
    static std::string path, query;
    path.assign(out.rq.path ? out.rq.path : "", out.rq.path ? out.rq.path_len : 0);
    query.assign(out.rq.query ? out.rq.query : "", out.rq.query ? out.rq.query_len : 0);
    out.rq.path = path.c_str();
    out.rq.query = out.rq.query ? query.c_str() : nullptr;
    munmap(m, (pages + 1) * (size_t)page);
    return out;
}

Parsed parse(const std::string &s, const eng_http_limits &lim = defaults())
{
    return parse_guarded(s, lim);
}

int code_of(const std::string &s, const eng_http_limits &lim = defaults())
{
    Parsed p = parse(s, lim);
    REQUIRE(p.st != ENG_HTTP_NEED_MORE);
    return p.st == ENG_HTTP_REQUEST ? 200 : eng_http_status_code(p.st);
}

const std::string k_get = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9125\r\n"
                          "User-Agent: Prometheus/2.45\r\nAccept: text/plain\r\n\r\n";

} // namespace

TEST_CASE("a Prometheus scrape parses", "[http]")
{
    Parsed p = parse(k_get);
    REQUIRE(p.st == ENG_HTTP_REQUEST);
    CHECK(std::string(p.rq.path, p.rq.path_len) == "/metrics");
    CHECK(p.rq.query == nullptr);
    CHECK(p.rq.minor == 1);
    CHECK(p.rq.keep_alive);
    CHECK_FALSE(p.rq.head);
    CHECK(p.rq.head_bytes == k_get.size());
}

TEST_CASE("query, HEAD, bare LF, HTTP/1.0 and Connection", "[http]")
{
    Parsed p = parse("HEAD /readyz?verbose=1 HTTP/1.0\n\n");
    REQUIRE(p.st == ENG_HTTP_REQUEST);
    CHECK(std::string(p.rq.path, p.rq.path_len) == "/readyz");
    CHECK(std::string(p.rq.query, p.rq.query_len) == "verbose=1");
    CHECK(p.rq.head);
    CHECK_FALSE(p.rq.keep_alive); /* 1.0 without keep-alive */
    CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").rq.keep_alive);
    CHECK_FALSE(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n")
                    .rq.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").st == ENG_HTTP_REQUEST);
}

TEST_CASE("pipelined requests: head_bytes ends at the first blank line", "[http]")
{
    std::string two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    Parsed p = parse(two);
    REQUIRE(p.st == ENG_HTTP_REQUEST);
    CHECK(p.rq.head_bytes == two.size() / 2);
}

TEST_CASE("every prefix of a request needs more; fragments of 1, 2, 5, 10, 100", "[http]")
{
    eng_http_limits lim = defaults();
    eng_http_req rq;
    for (size_t n = 0; n < k_get.size(); n++)
        REQUIRE(eng_http_parse(k_get.data(), n, &lim, &rq) == ENG_HTTP_NEED_MORE);
    for (size_t frag : {1u, 2u, 5u, 10u, 100u}) {
        std::string have;
        enum eng_http_parse_status st = ENG_HTTP_NEED_MORE;
        for (size_t off = 0; off < k_get.size(); off += frag) {
            have += k_get.substr(off, frag);
            st = eng_http_parse(have.data(), have.size(), &lim, &rq);
            if (have.size() < k_get.size())
                REQUIRE(st == ENG_HTTP_NEED_MORE);
        }
        CHECK(st == ENG_HTTP_REQUEST);
    }
}

TEST_CASE("head_bytes_max: N bytes accepted, N+1 refused with 431", "[http]")
{
    eng_http_limits lim = defaults();
    lim.head_bytes_max = 200;
    std::string base = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    std::string tail = "\r\n\r\n";
    std::string n(lim.head_bytes_max - base.size() - tail.size(), 'a');
    std::string exact = base + n + tail;
    REQUIRE(exact.size() == lim.head_bytes_max);
    CHECK(parse(exact, lim).st == ENG_HTTP_REQUEST);
    CHECK(parse(base + n + "a" + tail, lim).st == ENG_HTTP_HEAD_TOO_LARGE);
    /* Incomplete and already over: refused without waiting for the end. */
    CHECK(parse(std::string("GET / HTTP/1.1\r\nX: ") + std::string(300, 'b'), lim).st ==
          ENG_HTTP_HEAD_TOO_LARGE);
    CHECK(code_of(base + n + "a" + tail, lim) == 431);
}

TEST_CASE("header_count_max: N accepted, N+1 refused with 431", "[http]")
{
    eng_http_limits lim = defaults();
    lim.header_count_max = 5;
    auto req = [](int headers) {
        std::string s = "GET / HTTP/1.1\r\nHost: x\r\n";
        for (int i = 1; i < headers; i++)
            s += "X-" + std::to_string(i) + ": v\r\n";
        return s + "\r\n";
    };
    CHECK(parse(req(5), lim).st == ENG_HTTP_REQUEST);
    CHECK(parse(req(6), lim).st == ENG_HTTP_HEAD_TOO_LARGE);
}

TEST_CASE("uri_bytes_max: N accepted, N+1 refused with 414", "[http]")
{
    eng_http_limits lim = defaults();
    lim.uri_bytes_max = 16;
    CHECK(parse("GET /" + std::string(15, 'u') + " HTTP/1.1\r\nHost: x\r\n\r\n", lim).st ==
          ENG_HTTP_REQUEST);
    CHECK(code_of("GET /" + std::string(16, 'u') + " HTTP/1.1\r\nHost: x\r\n\r\n", lim) == 414);
}

TEST_CASE("refusals and their status codes", "[http]")
{
    CHECK(code_of("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == 405);
    CHECK(code_of("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n") == 405);
    CHECK(code_of("GET / HTTP/2.0\r\nHost: x\r\n\r\n") == 505);
    CHECK(code_of("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n") == 413);
    CHECK(code_of("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n") == 413);
    const char *bad[] = {
        "GET / HTTP/1.1\r\n\r\n",                       /* 1.1 without Host */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", /* two Hosts */
        "GET /\r\n\r\n",                                /* HTTP/0.9 */
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",           /* empty target */
        "GET metrics HTTP/1.1\r\nHost: x\r\n\r\n",      /* not origin-form */
        "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",         /* space in target */
        "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",        /* control byte in target */
        "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",           /* trailing space */
        "GET / HTTX/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",             /* no colon */
        "GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n",     /* empty name */
        "GET / HTTP/1.1\r\nHo st: x\r\n\r\n",           /* space in name */
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",           /* space before colon */
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",         /* bare CR */
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
        "\r\n\r\n",
        "\x16\x03\x01\x02\x00", /* a TLS ClientHello: refused at once, no wait */
    };
    for (const char *b : bad) {
        INFO(b);
        Parsed p = parse(b);
        CHECK(p.st == ENG_HTTP_BAD_REQUEST);
        CHECK(p.rq.why != nullptr);
    }
    std::string nul("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 30);
    CHECK(parse(nul).st == ENG_HTTP_BAD_REQUEST);
}

TEST_CASE("body helpers cut at the capacity and flag it", "[http]")
{
    char buf[16];
    eng_http_body b = {buf, sizeof(buf), 0, false};
    eng_http_body_printf(&b, "%s %d\n", "abc", 12);
    CHECK(std::string(buf, b.len) == "abc 12\n");
    CHECK_FALSE(b.overflow);
    eng_http_body_append(&b, "123456789", 9);
    CHECK(b.len == 16);
    CHECK_FALSE(b.overflow);
    eng_http_body_append(&b, "x", 1);
    CHECK(b.overflow);
    CHECK(b.len == 16);
    eng_http_body c = {buf, sizeof(buf), 10, false};
    eng_http_body_printf(&c, "%s", "too long for it");
    CHECK(c.overflow);
    CHECK(c.len == 10); /* a partial line is not kept */
}

TEST_CASE("create refuses bad route tables", "[http]")
{
    eng_http_config cfg;
    eng_http_config_defaults(&cfg);
    eng_http *h = nullptr;
    eng_http_route r = {"/x", nullptr, nullptr};
    cfg.routes = &r;
    cfg.route_count = 1;
    CHECK(eng_http_create(&cfg, &h) == -EINVAL);
    cfg.route_count = ENG_HTTP_ROUTES_MAX + 1;
    CHECK(eng_http_create(&cfg, &h) == -EINVAL);
    cfg.route_count = 0;
    REQUIRE(eng_http_create(&cfg, &h) == 0);
    eng_http_destroy(h);
}
