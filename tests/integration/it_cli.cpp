// it_cli.cpp: ringpolicyd's command line and start-up (spec 2, 3, 8; the daemon issue): --check,
// configuration errors naming file and line with a non-zero exit (also inside includes and
// nested plugins, spec 16 #20), a missing file, -d/--dump_config/--dump_vhosts, -h, unknown
// options, -l, pid_file (written, refused while running, stale overwritten, removed at exit),
// detaching without -f, and log_file.
#include "itcommon.h"

#include <signal.h>
#include <cerrno>
#include <cstdlib>
#include <unistd.h>

using namespace itest;

namespace
{

std::string good_config(uint16_t port)
{
    return simple_config(port, action_plugin("a", "reject test"));
}

/* A config whose line `line` holds the error: line 1 port, 2 <VirtualHost>, 3 name, 4.. body. */
std::string config_with_body(uint16_t port, const std::string &body)
{
    return "port = \"127.0.0.1:" + std::to_string(port) + "\"\n<VirtualHost " +
           std::to_string(port) + ">\n  name = \"t\"\n" + body + "</VirtualHost>\n";
}

bool pid_running(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return false;
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    size_t rp = stat.rfind(')');
    return rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] != 'Z';
}

/* For detached daemons, which are not our children: TERM, then wait for them to go. */
bool terminate_pid(pid_t pid, int timeout_ms)
{
    kill(pid, SIGTERM);
    int64_t deadline = now_ms() + timeout_ms;
    while (pid_running(pid)) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            return false;
        }
        sleep_ms(20);
    }
    return true;
}

pid_t read_pid(const std::string &path)
{
    std::string s = read_file(path);
    return s.empty() ? -1 : static_cast<pid_t>(std::atol(s.c_str()));
}

} // namespace

TEST_CASE("--check accepts a valid configuration and serves nothing", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring, good_config(port));
    RunResult r = d.run({"--check"});
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK_FALSE(Conn(Endpoint::tcp(port), 300).ok());
    /* the long option may be abbreviated, as getopt_long allows */
    CHECK(d.run({"--chec"}).status == 0);
}

TEST_CASE("configuration errors name file and line and exit non-zero", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    struct Bad {
        const char *what;
        std::string body; /* starts on line 4 */
        int line;         /* 0: the error is not about one line; only the file is named */
        std::string tail = "";
    } cases[] = {
        {"an option given twice",
         "  <Plugin a>\n    module = \"Action\"\n    action = \"x\"\n    action = \"y\"\n"
         "  </Plugin>\n",
         7},
        {"a plugin name given twice",
         action_plugin("a", "x") + "  <Plugin a>\n    module = \"Action\"\n    action = \"y\"\n"
                                   "  </Plugin>\n",
         8},
        {"an unknown option of a built-in plugin",
         "  <Plugin a>\n    module = \"Action\"\n    action = \"x\"\n    colour = \"red\"\n"
         "  </Plugin>\n",
         7},
        {"a missing required option", "  <Plugin a>\n    module = \"Action\"\n  </Plugin>\n", 4},
        {"a mistyped number",
         "  <Plugin c>\n    module = \"Condition\"\n    key = \"size\"\n    gt_match = \"ten\"\n"
         "  </Plugin>\n",
         7},
        {"a bool given as yes",
         "  <Plugin c>\n    module = \"Condition\"\n    key = \"size\"\n    invert = yes\n"
         "  </Plugin>\n",
         7},
        {"a bad regex",
         "  <Plugin c>\n    module = \"Condition\"\n    key = \"size\"\n    re_match = \"(\"\n"
         "  </Plugin>\n",
         7},
        {"an error in a nested plugin (spec 16 #20)",
         "  <Plugin c>\n    module = \"Condition\"\n    key = \"size\"\n    match = \"1\"\n"
         "    <Plugin inner>\n      module = \"Action\"\n      bogus = 1\n    </Plugin>\n"
         "  </Plugin>\n",
         10},
        {"nested plugins in a plugin that takes none",
         "  <Plugin a>\n    module = \"Action\"\n    action = \"x\"\n    <Plugin inner>\n"
         "      module = \"Action\"\n      action = \"y\"\n    </Plugin>\n  </Plugin>\n",
         7},
        {"an unbalanced block", "  <Plugin a>\n    module = \"Action\"\n    action = \"x\"\n", 0},
        {"a mismatched closing tag",
         "  <Plugin a>\n    module = \"Action\"\n    action = \"x\"\n  </Plugn>\n", 7},
        {"a missing include", "  <<include does-not-exist.conf>>\n", 4},
        {"an unknown session cache module", "", 6,
         "<SessionCache>\n  module = \"Cassandra\"\n</SessionCache>\n"},
    };
    for (auto &c : cases) {
        INFO(c.what);
        std::string config = config_with_body(port, c.body) + c.tail;
        Daemon d(Impl::Ring, config);
        RunResult r = d.run({"--check"});
        INFO("config:\n"
             << config << "status " << r.status << "\nstdout: " << r.out << "\nstderr: " << r.err);
        CHECK(r.status > 0);
        if (c.line > 0)
            CHECK(contains(r.out + r.err, d.config_path() + ":" + std::to_string(c.line)));
        else
            CHECK(contains(r.out + r.err, d.config_path()));
        RunResult s = d.run({"-f"}, 10000);
        CHECK(s.status > 0);
        CHECK_FALSE(Conn(Endpoint::tcp(port), 200).ok());
    }
}

TEST_CASE("errors inside an included file name that file and line", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring, config_with_body(port, "  <<include plugins.conf>>\n"));
    d.write_file("plugins.conf", "# plugins\n<Plugin a>\n  module = \"Action\"\n"
                                 "  action = \"x\"\n  action = \"y\"\n</Plugin>\n");
    RunResult r = d.run({"--check"});
    INFO(r.out << r.err);
    CHECK(r.status > 0);
    CHECK(contains(r.out + r.err, "plugins.conf:5"));

    /* and a good include works */
    Daemon ok(Impl::Ring, config_with_body(port, "  <<include plugins.conf>>\n"));
    ok.write_file("plugins.conf", action_plugin("a", "reject included"));
    ok.set_ready(Endpoint::tcp(port));
    REQUIRE(ok.start());
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject included"});
}

TEST_CASE("a missing configuration file", "[cli]")
{
    need_ringpolicyd();
    TempDir t;
    std::string missing = t.file("nope.conf");
    RunResult r = run_command({ringpolicyd_bin(), "-f", "-c", missing}, 10000);
    INFO(r.out << r.err);
    CHECK(r.status == 1);
    CHECK(contains(r.out + r.err, missing));
    RunResult c = run_command({ringpolicyd_bin(), "--check", "--config=" + missing}, 10000);
    CHECK(c.status == 1);
}

TEST_CASE("no virtual host configured", "[cli]")
{
    need_ringpolicyd();
    Daemon d(Impl::Ring, "port = \"127.0.0.1:" + std::to_string(free_tcp_port()) + "\"\n");
    RunResult r = d.run({"-f"});
    INFO(r.out << r.err);
    CHECK(r.status == 1);
}

TEST_CASE("-d, --dump_config and --dump_vhosts print the virtual hosts and exit 0", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(port) + "\"\n" +
        vhost_block(std::to_string(port), "frontline",
                    "  <Plugin outer-cond>\n    module = \"Condition\"\n"
                    "    key = \"sender\"\n    match = \"x\"\n" +
                        action_plugin("inner-action", "reject x") + "  </Plugin>\n" +
                        action_plugin("last-action", "reject y")) +
        vhost_block("0", "by-context", action_plugin("ctx-action", "dunno"));
    Daemon d(Impl::Ring, config);
    for (const char *flag : {"-d", "--dump_config", "--dump_vhosts"}) {
        INFO(flag);
        RunResult r = d.run({flag}, 10000);
        INFO(r.out << r.err);
        CHECK(r.status == 0);
        for (const char *name :
             {"frontline", "by-context", "outer-cond", "inner-action", "last-action", "ctx-action"})
            CHECK(contains(r.out + r.err, name));
        CHECK_FALSE(Conn(Endpoint::tcp(port), 200).ok());
    }
}

TEST_CASE("-h prints usage; unknown options warn and continue", "[cli]")
{
    need_ringpolicyd();
    for (const char *flag : {"-h", "--help"}) {
        RunResult r = run_command({ringpolicyd_bin(), flag}, 10000);
        INFO(flag << ": " << r.out << r.err);
        CHECK(r.status == 0);
        CHECK(contains(r.out + r.err, "-c"));
    }
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring, good_config(port));
    RunResult r = d.run({"--frobnicate", "--check"});
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK(contains(r.out + r.err, "frobnicate"));
}

TEST_CASE("--version prints the version and exits without loading a configuration", "[cli]")
{
    need_ringpolicyd();
    /* No -c: were the option not handled, the daemon would load the system configuration and
     * detach. */
    RunResult r = run_command({ringpolicyd_bin(), "--version"}, 10000);
    INFO(r.out << r.err);
    CHECK(r.status == 0);
    CHECK(r.out.rfind("ringpolicyd ", 0) == 0);
    CHECK(r.err.empty());
}

TEST_CASE("-l overrides log_level", "[cli]")
{
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, action_plugin("a", "reject test"), "log_level = 1\n"),
                        Endpoint::tcp(port), {"-l", "4"});
    CHECK(ask(Endpoint::tcp(port), postfix_request()).ok());
    CHECK(d->wait_log("request: ", 2000)); /* the level-4 request dump */
    CHECK(d->wait_log("test: instance=", 2000));
}

TEST_CASE("pid_file: written, refused while running, stale overwritten, removed", "[cli]")
{
    uint16_t port = free_tcp_port();
    TempDir t;
    std::string pidfile = t.file("ringpolicyd.pid");
    std::string globals = "pid_file = \"" + pidfile + "\"\n";
    {
        auto d = start_ring(simple_config(port, action_plugin("a", "reject test"), globals),
                            Endpoint::tcp(port));
        CHECK(read_pid(pidfile) == d->pid());

        /* a second instance with the same pid file refuses to start */
        uint16_t other = free_tcp_port();
        Daemon second(Impl::Ring, simple_config(other, action_plugin("a", "x"), globals));
        RunResult r = second.run({"-f"}, 10000);
        INFO(r.out << r.err);
        CHECK(r.status > 0);
        CHECK(contains(r.out + r.err, std::to_string(d->pid())));
        CHECK(read_pid(pidfile) == d->pid());

        CHECK(d->stop() == 0);
        CHECK_FALSE(file_exists(pidfile));
    }
    /* a stale file (its process is gone) is overwritten */
    pid_t dead = 0;
    for (pid_t candidate = 4194000; candidate > 300000; candidate -= 9973)
        if (kill(candidate, 0) != 0 && errno == ESRCH) {
            dead = candidate;
            break;
        }
    REQUIRE(dead > 0);
    t.write("ringpolicyd.pid", std::to_string(dead) + "\n");
    auto d = start_ring(simple_config(port, action_plugin("a", "reject test"), globals),
                        Endpoint::tcp(port));
    CHECK(read_pid(pidfile) == d->pid());
}

TEST_CASE("without -f the daemon detaches", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    TempDir t;
    std::string pidfile = t.file("detached.pid");
    Daemon d(Impl::Ring, simple_config(port, action_plugin("a", "reject detached"),
                                       "pid_file = \"" + pidfile + "\"\nlog_file = \"" +
                                           t.file("detached.log") + "\"\n"));
    d.set_foreground(false);
    REQUIRE(d.start(3000));
    CHECK(d.wait_exit(10000) == 0); /* the launcher returns at once, successfully */
    int64_t deadline = now_ms() + 10000;
    while (!Conn(Endpoint::tcp(port), 200).ok() && now_ms() < deadline)
        sleep_ms(50);
    pid_t pid = read_pid(pidfile);
    REQUIRE(pid > 0);
    CHECK(pid != d.pid());
    CHECK(pid_running(pid));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject detached"});
    CHECK(terminate_pid(pid, 10000));
    CHECK_FALSE(file_exists(pidfile));
    CHECK(contains(read_file(t.file("detached.log")), "test: instance="));
}

TEST_CASE("start-up errors are reported before detaching", "[cli]")
{
    need_ringpolicyd();
    uint16_t port = free_tcp_port();
    Daemon d(Impl::Ring,
             config_with_body(port, "  <Plugin a>\n    module = \"Action\"\n  </Plugin>\n"));
    RunResult r = d.run({}, 10000); /* no -f */
    INFO(r.out << r.err);
    CHECK(r.status > 0);
    CHECK(contains(r.out + r.err, d.config_path() + ":4"));
}

TEST_CASE("log_file receives the log", "[cli]")
{
    uint16_t port = free_tcp_port();
    TempDir t;
    std::string logfile = t.file("ring.log");
    auto d = start_ring(
        simple_config(port, action_plugin("a", "reject test"), "log_file = \"" + logfile + "\"\n"),
        Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).ok());
    int64_t deadline = now_ms() + 3000;
    while (!contains(read_file(logfile), "test: instance=") && now_ms() < deadline)
        sleep_ms(20);
    CHECK(contains(read_file(logfile), "test: instance=5f3c.6571a2b3.1d2e3.0, type="));
    CHECK_FALSE(contains(d->log(), "test: instance="));
}

TEST_CASE("1.x and pre-fork options are accepted (real files carry them)", "[cli]")
{
    uint16_t port = free_tcp_port();
    std::string globals = "db_dsn = \"dbi:SQLite:dbname=/nonexistent.sqlite\"\n"
                          "memcached_servers = \"127.0.0.1:11211\"\n"
                          "session_lock_wait = 10\n"
                          "min_servers = 4\nmin_spare_servers = 4\nmax_spare_servers = 12\n"
                          "max_servers = 25\nmax_requests = 1000\n"
                          "program_name = \"mtpolicyd\"\nsyslog_ident = \"ringtest\"\n"
                          "syslog_facility = \"mail\"\n";
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(port) + "\"\n" + globals +
        vhost_block(std::to_string(port), "old",
                    "  unknown_vhost_option = 1\n" + action_plugin("a", "reject old config"));
    auto d = start_ring(config, Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
          std::vector<std::string>{"reject old config"});
    /* the Perl daemon takes the same file */
    if (is_executable(perl_bin())) {
        uint16_t pp = free_tcp_port();
        Daemon perl(Impl::Perl, replace_all(config, std::to_string(port), std::to_string(pp)));
        perl.set_ready(Endpoint::tcp(pp));
        REQUIRE(perl.start());
        CHECK(ask(Endpoint::tcp(pp), postfix_request()).actions ==
              std::vector<std::string>{"reject old config"});
    }
}

TEST_CASE("--shards=N and the shards option", "[cli]")
{
    uint16_t port = free_tcp_port();
    for (const std::vector<std::string> &args :
         {std::vector<std::string>{"--shards=1"}, std::vector<std::string>{"--shards=3"}}) {
        INFO(args[0]);
        auto d = start_ring(simple_config(port, action_plugin("a", "reject sharded")),
                            Endpoint::tcp(port), args);
        for (int i = 0; i < 20; i++)
            CHECK(ask(Endpoint::tcp(port), postfix_request()).actions ==
                  std::vector<std::string>{"reject sharded"});
        CHECK(d->stop() == 0);
    }
    auto d = start_ring(simple_config(port, action_plugin("a", "reject sharded"), "shards = 1\n"),
                        Endpoint::tcp(port));
    CHECK(ask(Endpoint::tcp(port), postfix_request()).ok());
}
