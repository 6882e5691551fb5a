// server_test.cpp: the configuration model: option typing errors naming file and line, common
// plugin options, nested blocks validated at start-up, global options (2.05's read the Perl
// way, ours strictly), <SessionCache>, <Connection> references, virtual host selection
// (appendix D #3), -d and --cron.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "kit.hpp"

extern "C" {
#include "server.h"
}

namespace
{

// Builds a server; returns "" or the error.
std::string build(const std::string &conf, pol_server **out = nullptr)
{
    probe_register();
    pol_server *s = nullptr;
    char err[2048] = "";
    int rc = pol_server_from_text("test.conf", conf.c_str(), &s, err, sizeof err);
    if (rc == 0 && out)
        *out = s;
    else if (rc == 0)
        pol_server_free(s);
    return rc == 0 ? "" : err;
}

// A plugin block on line 3 of the file: "<VirtualHost>" is line 1, "name" line 2.
std::string one_plugin(const std::string &body)
{
    return vhost("<Plugin p>\nmodule = Probe\n" + body + "\n</Plugin>\n");
}

} // namespace

TEST_CASE("option typing errors name the file and the line", "[server]")
{
    CHECK(build(one_plugin("bogus = 1")) ==
          "test.conf:5: plugin p: unknown option 'bogus' for module Probe");
    CHECK(build(one_plugin("num = 1.5")).rfind("test.conf:5: plugin p: option num: \"1.5\"", 0) ==
          0);
    CHECK(build(one_plugin("score = 5.")).rfind("test.conf:5: plugin p: option score:", 0) == 0);
    CHECK(build(one_plugin("noabort = yes")).rfind("test.conf:5: plugin p: option noabort:", 0) ==
          0);
    CHECK(build(one_plugin("re = \"(unclosed\""))
              .rfind("test.conf:5: plugin p: option re: bad regex", 0) == 0);
    CHECK(
        build(one_plugin("keyvar = x:y")) ==
        "test.conf:5: plugin p: option keyvar: unknown scope x while retrieving variable for x:y");
    CHECK(build(one_plugin("log_level = high")) ==
          "test.conf:5: plugin p: log_level: 'high' is not an integer");
}

TEST_CASE("values of each option type are parsed once at start-up", "[server]")
{
    Kit k(
        vhost(probe("l", "list = \"a, b ,c\"\nnoabort = 1") + probe("r", "re = ^192\\.0\\.2\\.")));
    REQUIRE(k.err == "");
    CHECK(k.ask(req()) == "action=3:a|b|c\naction=re-match\n\n");
}

TEST_CASE("required options, modules and blocks", "[server]")
{
    CHECK(build(vhost("<Plugin a>\nmodule = Action\n</Plugin>\n")) ==
          "test.conf:3: plugin a: missing required option 'action'");
    CHECK(build(vhost("<Plugin a>\nfoo = 1\n</Plugin>\n")) ==
          "test.conf:3: no module defined for plugin a!");
    CHECK(build(vhost("<Plugin a>\nmodule = NoSuchThing\n</Plugin>\n"))
              .rfind("test.conf:4: unknown module NoSuchThing: not built in, and ", 0) == 0);
    CHECK(build(vhost("<Plugin a>\nmodule = /nonexistent/dir/X.so\n</Plugin>\n"))
              .rfind("test.conf:4: unknown module /nonexistent/dir/X.so", 0) == 0);
    CHECK(build(vhost("<Plugin a>\nmodule = Action\naction = x\n<Plugin b>\nmodule = Action\n"
                      "action = y\n</Plugin>\n</Plugin>\n")) ==
          "test.conf:6: plugin a: module Action accepts no <Plugin> block");
    CHECK(build(one_plugin("<Other>\nx = 1\n</Other>")) ==
          "test.conf:5: plugin p: module Probe accepts no <Other> block");
}

TEST_CASE("nested plugins are built and checked at start-up (spec 16 #20)", "[server]")
{
    CHECK(build(vhost("<Plugin outer>\nmodule = Probe\n<Plugin inner>\nmodule = Probe\n"
                      "num = x\n</Plugin>\n</Plugin>\n"))
              .rfind("test.conf:7: plugin inner: option num:", 0) == 0);
    pol_server *s = nullptr;
    REQUIRE(build(vhost("<Plugin outer>\nmodule = Probe\n" + probe("in1", "") +
                        "<Plugin in2>\nmodule = Probe\n" + probe("deep", "") + "</Plugin>\n" +
                        "</Plugin>\n"),
                  &s) == "");
    CHECK(s->plugin_count == 4);
    CHECK(s->depth_max == 3);
    pol_server_free(s);
}

TEST_CASE("common plugin options: log_level, on_error, score_field, uc_, name", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build(vhost(probe("p", "log_level = 1\non_error = continue\nscore_field = sc\n"
                                   "uc_score = user_score\nname = renamed") +
                        "<Plugin a>\nmodule = Action\naction = x\n</Plugin>\n"),
                  &s) == "");
    const pol_plugin *p = s->vhosts[0].chain.plugins[0];
    CHECK(pol_plugin_log_level(p) == 1);
    CHECK(p->on_error_continue);
    CHECK(std::string(pol_plugin_score_field(p)) == "sc");
    CHECK(std::string(p->score_detail_field) == "sc_detail");
    CHECK(std::string(pol_plugin_name(p)) == "renamed");
    CHECK(pol_plugin_log_level(s->vhosts[0].chain.plugins[1]) == 4);
    CHECK(std::string(pol_plugin_score_field(s->vhosts[0].chain.plugins[1])) == "score");
    pol_server_free(s);
    // score_field only for scoring types, uc_ only for user-configurable options
    CHECK(build(vhost("<Plugin a>\nmodule = Action\naction = x\nscore_field = s\n</Plugin>\n")) ==
          "test.conf:6: plugin a: unknown option 'score_field' for module Action");
    CHECK(build(one_plugin("uc_action = k")) ==
          "test.conf:5: plugin p: unknown option 'uc_action' for module Probe");
}

TEST_CASE("virtual hosts: keys, names and plugins are required", "[server]")
{
    CHECK(build("port = 12345\n") == "test.conf: no virtual hosts configured!");
    CHECK(build("<VirtualHost 12345>\n" + probe("p", "") + "</VirtualHost>\n") ==
          "test.conf:1: <VirtualHost 12345> has no name");
    CHECK(build("<VirtualHost 12345>\nname =\n" + probe("p", "") + "</VirtualHost>\n") == "");
    CHECK(build("<VirtualHost 12345>\nname = x\n</VirtualHost>\n") ==
          "test.conf:1: no <Plugin> defined for <VirtualHost> on port 12345!");
    CHECK(build("<VirtualHost>\nname = x\n" + probe("p", "") + "</VirtualHost>\n")
              .rfind("test.conf:1: <VirtualHost> needs a key", 0) == 0);
}

TEST_CASE("D #3: virtual host by port and by policy_context", "[server]")
{
    std::string conf = "vhost_by_policy_context = 1\n"
                       "<VirtualHost 12345>\nname = fred\n" +
                       probe("f", "action = fred") +
                       "</VirtualHost>\n<VirtualHost 0>\nname = horst\n" +
                       probe("h", "action = horst") + "</VirtualHost>\n";
    Kit k(conf);
    REQUIRE(k.err == "");
    CHECK(k.ask("policy_context=fred\n") == "action=fred\n\n");
    CHECK(k.ask("policy_context=horst\n") == "action=horst\n\n");
    CHECK(k.ask("request=smtpd_access_policy\n") == "action=fred\n\n");
    CHECK(k.ask("policy_context=\n") == "action=fred\n\n");
    CHECK(k.ask("policy_context=nobody\n") == "action=fred\n\n");
    CHECK(k.ask("request=x\n", "0") == "action=horst\n\n");
    CHECK(k.ask("request=x\n", "54321") == "ERR no virtual host defined for port 54321");

    std::string off = conf.substr(conf.find('\n') + 1);
    Kit k2(off); // without the option, policy_context is an ordinary attribute
    CHECK(k2.ask("policy_context=horst\n") == "action=fred\n\n");
}

TEST_CASE("global options: 2.05's read the Perl way, unknown ones warned about", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build("request_timeout = abc\nkeepalive_timeout = 0\nmax_keepalive = 3x\n"
                  "log_level = 9\nvhost_by_policy_context = yes\nmin_servers = 2\n"
                  "db_dsn = dbi:SQLite:x\n<Unknown>\n</Unknown>\n" +
                      vhost(probe("p", "")),
                  &s) == "");
    CHECK(s->g.request_timeout_s == 0);
    CHECK(s->g.keepalive_timeout_s == 0);
    CHECK(s->g.max_keepalive == 3);
    CHECK(s->g.log_level == 4);
    CHECK(s->g.vhost_by_policy_context);
    CHECK(s->g.min_servers == 2);
    REQUIRE(s->warning_count == 2);
    CHECK(std::string(s->warnings[0]) == "test.conf:7: unknown option db_dsn ignored");
    CHECK(std::string(s->warnings[1]) == "test.conf:8: unknown block <Unknown> ignored");
    pol_server_free(s);
    REQUIRE(build("log_level = debug\nvhost_by_policy_context = 0\n" + vhost(probe("p", "")), &s) ==
            "");
    CHECK(s->g.log_level == 2);
    CHECK_FALSE(s->g.vhost_by_policy_context);
    CHECK(s->g.request_timeout_s == 20);
    CHECK(s->g.keepalive_timeout_s == 60);
    CHECK(std::string(s->g.port) == "127.0.0.1:12345");
    pol_server_free(s);
}

TEST_CASE("ringpolicyd's own global options are strictly typed", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build("shards = 3\nerror_action = dunno\nbackend = epoll\nmax_connections = 10\n"
                  "max_request_bytes = 1000\nmax_line_bytes = 500\nmax_attributes = 20\n"
                  "drain_timeout = 2\nplugin_dir = /tmp\nmax_pipelined_bytes = 4096\n" +
                      vhost(probe("p", "")),
                  &s) == "");
    CHECK(s->g.shards == 3);
    CHECK(std::string(s->g.error_action) == "dunno");
    CHECK(s->g.backend == ENG_BACKEND_EPOLL);
    CHECK(s->g.max_connections == 10);
    CHECK(s->g.max_request_bytes == 1000);
    CHECK(s->g.max_line_bytes == 500);
    CHECK(s->g.max_attributes == 20);
    CHECK(s->g.drain_timeout_s == 2);
    CHECK(s->g.max_pipelined_bytes == 4096);
    CHECK(std::string(s->g.plugin_dir) == "/tmp");
    pol_server_free(s);
    CHECK(build("shards = many\n" + vhost(probe("p", ""))) ==
          "test.conf:1: shards must be an integer from 0 to 1024, not 'many'");
    CHECK(build("\nbackend = kqueue\n" + vhost(probe("p", ""))) ==
          "test.conf:2: backend must be auto, uring or epoll, not 'kqueue'");
    CHECK(build("max_attributes = 0\n" + vhost(probe("p", ""))) ==
          "test.conf:1: max_attributes must be an integer from 1 to 65000, not '0'");
}

TEST_CASE("dns_cache_entries and dns_cache_bytes size each shard's DNS cache", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build(vhost(probe("p", "")), &s) == "");
    CHECK(s->g.dns_cache_entries == POL_DNS_CACHE_ENTRIES_DEFAULT);
    CHECK(s->g.dns_cache_bytes == POL_DNS_CACHE_BYTES_DEFAULT);
    pol_server_free(s);
    REQUIRE(build("dns_cache_entries = 0\ndns_cache_bytes = 1048576\n" + vhost(probe("p", "")),
                  &s) == "");
    CHECK(s->g.dns_cache_entries == 0);
    CHECK(s->g.dns_cache_bytes == 1048576);
    pol_server_free(s);
    CHECK(build("dns_cache_bytes = 100\n" + vhost(probe("p", ""))) ==
          "test.conf:1: dns_cache_bytes must be an integer from 4096 to 2147483648, not '100'");
    CHECK(build("dns_cache_entries = lots\n" + vhost(probe("p", ""))) ==
          "test.conf:1: dns_cache_entries must be an integer from 0 to 16777216, not 'lots'");
}

TEST_CASE("<SessionCache>: None, Memory, Memcached; Redis refused for now", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build(vhost(probe("p", "")), &s) == "");
    CHECK(s->scache.kind == POL_SCACHE_NONE);
    pol_server_free(s);
    REQUIRE(build("<SessionCache>\nmodule = None\n</SessionCache>\n" + vhost(probe("p", "")), &s) ==
            "");
    CHECK(s->scache.kind == POL_SCACHE_NONE);
    pol_server_free(s);
    REQUIRE(build("<SessionCache>\nmodule = \"Memory\"\nexpire = 60\nmax_sessions = 1000\n"
                  "lock_wait = 50\n</SessionCache>\n" +
                      vhost(probe("p", "")),
                  &s) == "");
    CHECK(s->scache.kind == POL_SCACHE_MEMORY);
    CHECK(s->scache.expire_s == 60);
    CHECK(s->scache.sessions_max == 1000);
    CHECK(s->scache.memory_bytes == 1000 * 1024);
    REQUIRE(s->warning_count == 1);
    CHECK(std::string(s->warnings[0]) == "test.conf:5: SessionCache option lock_wait ignored");
    pol_server_free(s);
    // Memcached (scache_mc.h): needs its connection; options checked at start-up.
    CHECK(build("<SessionCache>\nmodule = Memcached\n</SessionCache>\n" + vhost(probe("p", ""))) ==
          "test.conf:1: SessionCache: no connection memcached configured!");
    CHECK(build("<SessionCache>\nmodule = Memcached\nlock_wait = abc\n</SessionCache>\n" +
                vhost(probe("p", ""))) ==
          "test.conf:3: SessionCache option lock_wait must be a whole number from 0 to 1000000, "
          "not 'abc'");
    REQUIRE(build("<Connection mc>\nmodule = Memcached\n</Connection>\n<SessionCache>\n"
                  "module = Memcached\nmemcached = mc\nexpire = 60\nlock_wait = 70\n"
                  "</SessionCache>\n" +
                      vhost(probe("p", "")),
                  &s) == "");
    CHECK(s->scache.kind == POL_SCACHE_MEMCACHED);
    CHECK(s->scache.mc != nullptr);
    CHECK(s->scache.mc_cfg.expire_s == 60);
    CHECK(s->scache.mc_cfg.lock_wait_us == 70);
    CHECK(s->scache.mc_cfg.lock_max_retry == 50);
    pol_server_free(s);
    CHECK(build("<SessionCache>\nmodule = Redis\n</SessionCache>\n" + vhost(probe("p", "")))
              .rfind("test.conf:1: SessionCache: no connection redis configured!", 0) == 0);
    CHECK(build("<SessionCache>\nexpire = 1\n</SessionCache>\n" + vhost(probe("p", ""))) ==
          "test.conf:1: no module defined for SessionCache!");
}

namespace
{
const pol_opt_def db_opts[] = {{"db", POL_OPT_STRING, "db", 0}};
enum pol_step db_step(pol_plugin *, pol_req *, void *)
{
    return POL_NEXT;
}
const pol_plugin_type db_type = {POL_PLUGIN_API_VERSION,
                                 "DbUser",
                                 db_opts,
                                 1,
                                 0,
                                 0,
                                 nullptr,
                                 nullptr,
                                 nullptr,
                                 db_step,
                                 nullptr,
                                 nullptr};
} // namespace

TEST_CASE("<Connection>: kept, and a plugin naming a missing one fails", "[server]")
{
    static bool reg = pol_server_register_type(&db_type) == 0;
    REQUIRE(reg);
    std::string plugin = "<Plugin acct>\nmodule = DbUser\n%s</Plugin>\n";
    std::string none = plugin;
    none.replace(none.find("%s"), 2, "");
    CHECK(build(vhost(none)) == "test.conf:3: plugin acct: no connection db configured!");
    std::string named = plugin;
    named.replace(named.find("%s"), 2, "db = maria\n");
    CHECK(build(vhost(named)) == "test.conf:5: plugin acct: no connection maria configured!");
    CHECK(build("<Connection db>\nmodule = Memcached\n</Connection>\n" + vhost(none)) ==
          "test.conf:6: plugin acct: no connection db configured!");
    pol_server *s = nullptr;
    REQUIRE(
        build("<Connection db>\nmodule = Sql\ndsn = dbi:SQLite::memory:\n</Connection>\n"
              "<Connection maria>\nmodule = \"Sql\"\ndsn = dbi:SQLite::memory:\n</Connection>\n" +
                  vhost(none) + "<VirtualHost 2>\nname = b\n" + named + "</VirtualHost>\n",
              &s) == "");
    CHECK(s->conn_count == 2);
    CHECK(std::string(s->conns[1].name) == "maria");
    CHECK(s->warning_count == 0);
    pol_server_free(s);
    REQUIRE(build("<Connection db>\nmodule = Sql\ndsn = dbi:SQLite::memory:\nuser = u\n"
                  "memcached_servers = 1\n"
                  "</Connection>\n" +
                      vhost(none),
                  &s) == "");
    REQUIRE(s->warning_count == 1);
    CHECK(std::string(s->warnings[0]) ==
          "test.conf:5: Connection db: option memcached_servers ignored");
    pol_server_free(s);
    CHECK(build("<Connection x>\nmodule = Mongo\n</Connection>\n" + vhost(none))
              .rfind("test.conf:2: could not load connection x: unknown module Mongo", 0) == 0);
}

TEST_CASE("--cron runs every plugin, nested ones after their parent", "[server]")
{
    LogCapture log(3);
    pol_server *s = nullptr;
    REQUIRE(build(vhost("<Plugin a>\nmodule = Probe\n" + probe("a1", "") + "</Plugin>\n" +
                        "<Plugin b>\nmodule = Probe\ncron_fail = 1\n" + probe("b1", "") +
                        "</Plugin>\n" + probe("c", "")),
                  &s) == "");
    probe_cron_log[0] = '\0';
    const char *tasks[] = {"hourly", "daily"};
    pol_server_cron(s, tasks, 2);
    CHECK(std::string(probe_cron_log) ==
          "a(hourly,...) a1(hourly,...) b(hourly,...) c(hourly,...)");
    std::string t = log.text();
    CHECK(t.find("running cron for plugin a\nrunning cron for plugin a1\n"
                 "running cron for plugin b\nplugin b failed in cron: cron of b failed on purpose\n"
                 "running cron for plugin c\n") != std::string::npos);
    pol_server_free(s);
}

TEST_CASE("-d describes the virtual hosts", "[server]")
{
    pol_server *s = nullptr;
    REQUIRE(build(vhost(probe("p", "action = hello")), &s) == "");
    char *buf = nullptr;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    pol_server_dump(s, f);
    fclose(f);
    std::string d(buf, len);
    free(buf);
    CHECK(d.find("<VirtualHost 12345> name=test (test.conf:1)") != std::string::npos);
    CHECK(d.find("<Plugin p> module=Probe (test.conf:3)") != std::string::npos);
    CHECK(d.find("action = \"hello\"") != std::string::npos);
    pol_server_free(s);
}
