/*
 * itcommon.h: small helpers shared by the ringpolicyd integration tests (tests/integration/it_*):
 * configuration snippets and starting one ringpolicyd with a Catch2 failure (and its log) when
 * it does not come up.
 */
#ifndef ITEST_ITCOMMON_H
#define ITEST_ITCOMMON_H

#include "harness.h"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

namespace itest
{

inline std::string action_plugin(const std::string &name, const std::string &action)
{
    return "  <Plugin " + name + ">\n    module = \"Action\"\n    action = \"" + action +
           "\"\n  </Plugin>\n";
}

/* A Condition replying "reject KEY=VALUE" when request attribute key equals value. */
inline std::string match_plugin(const std::string &name, const std::string &key,
                                const std::string &value)
{
    return "  <Plugin " + name + ">\n    module = \"Condition\"\n    key = \"" + key +
           "\"\n    match = \"" + value + "\"\n    action = \"reject " + key + "=" + value +
           "\"\n  </Plugin>\n";
}

/* A Condition echoing a request attribute's value for values matching ^[a-z0-9]+$ is not
 * possible with built-in plugins, so tests that need per-request distinct answers use a set of
 * match_plugin()s over a small alphabet of values. */
inline std::string numbered_plugins(const std::string &key, int count)
{
    std::string s;
    for (int i = 0; i < count; i++)
        s += match_plugin("m" + std::to_string(i), key, "v" + std::to_string(i));
    return s;
}

inline std::string vhost_block(const std::string &key, const std::string &name,
                               const std::string &body)
{
    return "<VirtualHost " + key + ">\n  name = \"" + name + "\"\n" + body + "</VirtualHost>\n";
}

/* Greylist's reply to an early retry with append_waittime: "defer greylisting is active (Ns
 * left)" with N in [min_left, max_left] and N >= 0. The caller derives the range from its own
 * clock readings around the requests: a loaded or sanitizer-slowed machine can take over a
 * second between two requests, so the exact N is not fixed; the text and the range are. */
inline bool greylist_early_retry(const std::string &got, long min_left, long max_left)
{
    for (long n = min_left < 0 ? 0 : min_left; n <= max_left; n++)
        if (got == "defer greylisting is active (" + std::to_string(n) + "s left)")
            return true;
    return false;
}

/* `port = "127.0.0.1:P"`, the globals, and one vhost on P. */
inline std::string simple_config(uint16_t port, const std::string &body,
                                 const std::string &globals = "")
{
    return "port = \"127.0.0.1:" + std::to_string(port) + "\"\n" + globals +
           vhost_block(std::to_string(port), "test", body);
}

/* Creates and starts ringpolicyd (skips or fails when it is not built); REQUIREs that it
 * accepts on ready. */
inline std::unique_ptr<Daemon> start_ring(const std::string &config, const Endpoint &ready,
                                          const std::vector<std::string> &args = {})
{
    need_ringpolicyd();
    std::unique_ptr<Daemon> d(new Daemon(Impl::Ring, config, args));
    d->set_ready(ready);
    bool ok = d->start();
    INFO(d->error() << "\nconfig:\n" << config);
    REQUIRE(ok);
    return d;
}

/* Lines of the daemon's log containing needle. */
inline size_t log_lines_with(const Daemon &d, const std::string &needle)
{
    size_t n = 0;
    for (auto &l : split_lines(d.log()))
        n += contains(l, needle);
    return n;
}

} // namespace itest

#endif
