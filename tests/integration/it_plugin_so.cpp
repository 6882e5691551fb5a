// it_plugin_so.cpp: user plugins as shared objects (the daemon issue's plugin API), with the
// HelloWorld example (policy/examples): loaded by path and through plugin_dir, its options (text,
// enabled with uc_enabled, score, header_name), its weekly cron task (`--cron=weekly` logs
// "i am a weekly task"), and start-up errors for bad plugin blocks, naming file and line.
#include "itcommon.h"

using namespace itest;

namespace
{

std::string hello(const std::string &name, const std::string &module, const std::string &opts)
{
    return "  <Plugin " + name + ">\n    module = \"" + module + "\"\n" + opts + "  </Plugin>\n";
}

std::string dir_of(const std::string &path)
{
    return path.substr(0, path.rfind('/'));
}

} // namespace

TEST_CASE("HelloWorld.so loaded by path and by plugin_dir", "[plugin_so]")
{
    need_file(helloworld_so(), "policy/examples/HelloWorld.so");
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port(), p3 = free_tcp_port(), p4 = free_tcp_port();
    std::string so = helloworld_so();
    std::string config =
        "port = \"127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" + std::to_string(p2) +
        ",127.0.0.1:" + std::to_string(p3) + ",127.0.0.1:" + std::to_string(p4) +
        "\"\nplugin_dir = \"" + dir_of(so) + "\"\n" +
        vhost_block(std::to_string(p1), "by-path", hello("hello-world", so, "")) +
        vhost_block(std::to_string(p2), "by-name",
                    hello("hello-world", "HelloWorld", "    text = \"Hello Universe!\"\n")) +
        vhost_block(std::to_string(p3), "uc",
                    std::string("  <Plugin off>\n    module = \"SetField\"\n"
                                "    key = \"hello_enabled\"\n    value = \"off\"\n"
                                "  </Plugin>\n") +
                        "  <Plugin gate>\n    module = \"Condition\"\n    key = \"sender\"\n"
                        "    match = \"quiet@example.org\"\n" +
                        hello("inner", "HelloWorld", "") + "  </Plugin>\n" +
                        hello("hello-world", "HelloWorld",
                              "    enabled = on\n    uc_enabled = \"hello_enabled\"\n") +
                        action_plugin("after", "defer hello was off")) +
        vhost_block(
            std::to_string(p4), "scored",
            hello("hello-world", "HelloWorld", "    score = 2.5\n    header_name = \"X-Hello\"\n"));
    auto d = start_ring(config, Endpoint::tcp(p1));

    CHECK(ask(Endpoint::tcp(p1), postfix_request()).actions ==
          std::vector<std::string>{"reject Hello World!"});
    CHECK(ask(Endpoint::tcp(p2), postfix_request()).actions ==
          std::vector<std::string>{"reject Hello Universe!"});
    /* uc_enabled reads the session: SetField switched it off */
    CHECK(ask(Endpoint::tcp(p3), postfix_request()).actions ==
          std::vector<std::string>{"defer hello was off"});
    CHECK(ask(Endpoint::tcp(p3), postfix_request({{"sender", "quiet@example.org"}})).actions ==
          std::vector<std::string>{"reject Hello World!"});
    CHECK(ask(Endpoint::tcp(p4), postfix_request()).actions ==
          std::vector<std::string>{"PREPEND X-Hello: Hello World!"});
    CHECK(d->wait_log("by-path: instance=", 2000));
    CHECK(d->wait_log("plugin=hello-world, result=reject Hello World!", 2000));
}

TEST_CASE("HelloWorld once-per-mail header and score with a Memory session", "[plugin_so]")
{
    need_file(helloworld_so(), "policy/examples/HelloWorld.so");
    uint16_t p = free_tcp_port();
    std::string config = simple_config(
        p,
        hello("hello-world", helloworld_so(), "    score = 2.5\n    header_name = \"X-Hello\"\n"),
        "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n");
    auto d = start_ring(config, Endpoint::tcp(p));
    auto req = postfix_request({{"instance", "hello-mail-1"}});
    CHECK(ask(Endpoint::tcp(p), req).actions ==
          std::vector<std::string>{"PREPEND X-Hello: Hello World!"});
    CHECK(ask(Endpoint::tcp(p), req).actions == std::vector<std::string>{"dunno"});
    CHECK(ask(Endpoint::tcp(p), postfix_request({{"instance", "hello-mail-2"}})).actions ==
          std::vector<std::string>{"PREPEND X-Hello: Hello World!"});
}

TEST_CASE("--cron=weekly runs HelloWorld's weekly task and exits 0", "[plugin_so][cron]")
{
    need_file(helloworld_so(), "policy/examples/HelloWorld.so");
    need_ringpolicyd();
    uint16_t p = free_tcp_port();
    std::string config = simple_config(
        p,
        "  <Plugin outer>\n    module = \"Condition\"\n    key = \"sender\"\n    match = \"x\"\n" +
            hello("nested-hello", helloworld_so(), "") + "  </Plugin>\n" +
            hello("hello-world", helloworld_so(), ""));
    Daemon d(Impl::Ring, config);

    RunResult weekly = d.run({"-f", "-l", "4", "--cron=weekly"});
    INFO("--cron=weekly: status " << weekly.status << "\nstdout:\n"
                                  << weekly.out << "\nstderr:\n"
                                  << weekly.err);
    CHECK(weekly.status == 0);
    std::string out = weekly.out + weekly.err;
    CHECK(count_of(out, "i am a weekly task") == 2); /* the nested plugin too */
    CHECK(contains(out, "running cron for plugin hello-world"));
    CHECK(contains(out, "running cron for plugin nested-hello"));

    RunResult daily = d.run({"-f", "-l", "4", "--cron=hourly,daily"});
    CHECK(daily.status == 0);
    CHECK_FALSE(contains(daily.out + daily.err, "i am a weekly task"));

    RunResult all = d.run({"-f", "-l", "4", "--cron", "hourly,daily,weekly,monthly"});
    CHECK(all.status == 0);
    CHECK(count_of(all.out + all.err, "i am a weekly task") == 2);

    /* cron does not serve: nothing listens on the port afterwards */
    CHECK_FALSE(Conn(Endpoint::tcp(p), 500).ok());
}

TEST_CASE("bad plugin blocks are start-up errors naming file and line", "[plugin_so][cli]")
{
    need_file(helloworld_so(), "policy/examples/HelloWorld.so");
    need_ringpolicyd();
    uint16_t p = free_tcp_port();
    struct Bad {
        const char *what;
        std::string plugin; /* starts on line 4 of the file (see below) */
        int line;           /* the line the message must name: the offending option's
                               (module = ... for loading errors), or the block's when an
                               option is missing */
    } cases[] = {
        {"unknown option of a .so plugin",
         "  <Plugin h>\n    module = \"" + helloworld_so() +
             "\"\n    colour = \"red\"\n  </Plugin>\n",
         6},
        {"mistyped option of a .so plugin",
         "  <Plugin h>\n    module = \"" + helloworld_so() +
             "\"\n    score = \"lots\"\n  </Plugin>\n",
         6},
        {"a missing .so", "  <Plugin h>\n    module = \"/nonexistent/Nothing.so\"\n  </Plugin>\n",
         5},
        {"a .so without the plugin entry point",
         "  <Plugin h>\n    module = \"" + itest_build_dir() + "/NotAPlugin.so\"\n  </Plugin>\n",
         5},
        {"a .so refusing the host's API version",
         "  <Plugin h>\n    module = \"" + itest_build_dir() + "/WrongApi.so\"\n  </Plugin>\n", 5},
        {"a file that is not a shared object",
         "  <Plugin h>\n    module = \"" + itest_dir() + "/harness.h\"\n  </Plugin>\n", 5},
        {"an unknown module name", "  <Plugin h>\n    module = \"NoSuchPlugin\"\n  </Plugin>\n", 5},
        {"a plugin without module", "  <Plugin h>\n    action = \"reject\"\n  </Plugin>\n", 4},
    };
    for (auto &c : cases) {
        INFO(c.what);
        /* line 1 port, line 2 <VirtualHost>, line 3 name, line 4 <Plugin h> */
        std::string config = "port = \"127.0.0.1:" + std::to_string(p) + "\"\n<VirtualHost " +
                             std::to_string(p) + ">\n  name = \"t\"\n" + c.plugin +
                             "</VirtualHost>\n";
        Daemon d(Impl::Ring, config);
        RunResult r = d.run({"--check"});
        INFO("status " << r.status << "\nstdout: " << r.out << "\nstderr: " << r.err);
        CHECK(r.status > 0);
        CHECK(contains(r.out + r.err, d.config_path() + ":" + std::to_string(c.line)));

        /* starting (foreground) fails the same way, before serving anything */
        RunResult s = d.run({"-f"}, 10000);
        CHECK(s.status > 0);
        CHECK(contains(s.out + s.err, d.config_path() + ":" + std::to_string(c.line)));
    }
}
