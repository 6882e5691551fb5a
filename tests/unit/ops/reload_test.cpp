/*
 * reload_test.cpp: policy/reload.c's loading half (pol_reload_load): a valid file is built,
 * restart-only options keep the running values, every running listener needs a vhost, and a
 * broken file is refused with FILE:LINE. The shard half is tested against a real daemon in
 * tests/integration/ops/it_reload.cpp.
 */
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <string>

extern "C" {
#include "reload.h"
#include "server.h"
}

namespace
{

struct File {
    std::string path;
    explicit File(const std::string &text)
    {
        char tmpl[] = "/tmp/ops-reload-XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
        close(fd);
        path = tmpl;
    }
    ~File()
    {
        unlink(path.c_str());
    }
};

std::string conf(const std::string &globals, const std::string &key = "12345",
                 const std::string &action = "dunno")
{
    return "port = \"127.0.0.1:" + key + "\"\n" + globals + "<VirtualHost " + key +
           ">\n  name = \"v\"\n  <Plugin a>\n    module = \"Action\"\n    action = \"" + action +
           "\"\n  </Plugin>\n</VirtualHost>\n";
}

pol_server *running(const std::string &text)
{
    pol_server *s = nullptr;
    char err[POL_ERR_MAX];
    REQUIRE(pol_server_from_text("run.conf", text.c_str(), &s, err, sizeof(err)) == 0);
    return s;
}

} // namespace

TEST_CASE("a valid file loads; restart-only numbers keep the running values", "[reload]")
{
    pol_server *cur = running(conf("max_connections = 100\nshards = 2\nkeepalive_timeout = 5\n"));
    File f(conf("max_connections = 7\nshards = 4\nkeepalive_timeout = 9\nmax_attributes = 9\n",
                "12345", "reject new"));
    const char *keys[] = {"12345"};
    pol_server *n = nullptr;
    char err[POL_ERR_MAX] = "";
    REQUIRE(pol_reload_load(f.path.c_str(), cur, keys, 1, &n, err, sizeof(err)) == 0);
    CHECK(n->g.max_connections == 100);
    CHECK(n->g.shards == 2);
    CHECK(n->g.max_attributes == cur->g.max_attributes);
    CHECK(n->g.keepalive_timeout_s == 9); /* reloadable */
    CHECK(n->vhost_count == 1);
    pol_server_free(n);
    pol_server_free(cur);
}

TEST_CASE("the session cache stays as it runs", "[reload]")
{
    pol_server *cur =
        running(conf("<SessionCache>\n  module = \"Memory\"\n  max_sessions = 1000\n</SessionCache>\n"));
    File f(conf(""));
    const char *keys[] = {"12345"};
    pol_server *n = nullptr;
    char err[POL_ERR_MAX] = "";
    REQUIRE(pol_reload_load(f.path.c_str(), cur, keys, 1, &n, err, sizeof(err)) == 0);
    CHECK(n->scache.kind == POL_SCACHE_MEMORY);
    CHECK(n->scache.sessions_max == 1000);
    pol_server_free(n);
    pol_server_free(cur);
}

TEST_CASE("refusals: broken file, missing file, no vhost for a running listener", "[reload]")
{
    pol_server *cur = running(conf(""));
    const char *keys[] = {"12345"};
    pol_server *n = nullptr;
    char err[POL_ERR_MAX] = "";

    File broken("port = \"127.0.0.1:12345\"\n<VirtualHost 12345>\n  </Plugin>\n");
    CHECK(pol_reload_load(broken.path.c_str(), cur, keys, 1, &n, err, sizeof(err)) == -1);
    CHECK(std::string(err).rfind(broken.path + ":3:", 0) == 0);
    CHECK(n == nullptr);

    CHECK(pol_reload_load("/nonexistent/ops.conf", cur, keys, 1, &n, err, sizeof(err)) == -1);
    CHECK(std::string(err).find("does not exist") != std::string::npos);

    File other(conf("", "23456"));
    CHECK(pol_reload_load(other.path.c_str(), cur, keys, 1, &n, err, sizeof(err)) == -1);
    CHECK(std::string(err).find("no <VirtualHost 12345> for the running listener") !=
          std::string::npos);
    CHECK(n == nullptr);

    File module(conf("") + "<VirtualHost 9>\n  name = \"x\"\n  <Plugin p>\n    module = "
                           "\"NoSuchModule\"\n  </Plugin>\n</VirtualHost>\n");
    CHECK(pol_reload_load(module.path.c_str(), cur, keys, 1, &n, err, sizeof(err)) == -1);
    CHECK(std::string(err).rfind(module.path + ":", 0) == 0);
    pol_server_free(cur);
}
