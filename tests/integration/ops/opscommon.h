/*
 * opscommon.h: helpers of the ops integration tests (tests/integration/ops): a minimal HTTP/1.1
 * client over the harness's Conn, and reading one sample out of a Prometheus text page.
 */
#ifndef ITEST_OPSCOMMON_H
#define ITEST_OPSCOMMON_H

#include "itcommon.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

namespace itest
{

struct HttpResponse {
    int status = 0; /* 0: no response */
    std::string head, body;
};

/* Sends raw bytes on a new connection and reads until the server closes (the request should
 * say Connection: close, or be one the server refuses). */
inline HttpResponse http_raw(uint16_t port, const std::string &bytes, int timeout_ms = 5000)
{
    HttpResponse r;
    Conn c(Endpoint::tcp(port), timeout_ms);
    if (!c.ok() || !c.send(bytes))
        return r;
    c.wait_closed(timeout_ms);
    const std::string &all = c.pending();
    size_t e = all.find("\r\n\r\n");
    if (all.compare(0, 9, "HTTP/1.1 ") != 0 || e == std::string::npos)
        return r;
    r.status = std::atoi(all.c_str() + 9);
    r.head = all.substr(0, e + 4);
    r.body = all.substr(e + 4);
    return r;
}

/* Replaces a file the way a ConfigMap update or an editor does: a new file renamed over it. */
inline void write_text(const std::string &path, const std::string &content)
{
    std::string tmp = path + ".new";
    FILE *f = std::fopen(tmp.c_str(), "w");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(content.data(), 1, content.size(), f) == content.size());
    REQUIRE(std::fclose(f) == 0);
    REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
}

inline HttpResponse http_get(uint16_t port, const std::string &path)
{
    return http_raw(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

/* The value of the sample `series` (name with its labels exactly as printed, e.g.
 * `ringpolicyd_requests_total{vhost="test"}`), or -1 when the page has no such line. */
inline double metric(const std::string &page, const std::string &series)
{
    for (auto &l : split_lines(page))
        if (l.size() > series.size() && l.compare(0, series.size(), series) == 0 &&
            l[series.size()] == ' ')
            return std::atof(l.c_str() + series.size() + 1);
    return -1;
}

/* Polls f every 100 ms until it returns true or timeout_ms passed. */
inline bool eventually(const std::function<bool()> &f, int timeout_ms)
{
    for (int waited = 0;; waited += 100) {
        if (f())
            return true;
        if (waited >= timeout_ms)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

/* One sample of a fresh GET /metrics (-1: no such series, -2: no 200 response). */
inline double scrape(uint16_t http, const std::string &series)
{
    HttpResponse r = http_get(http, "/metrics");
    return r.status == 200 ? metric(r.body, series) : -2;
}

} // namespace itest

#endif
