// hello_world_test.cpp: the HelloWorld example plugin, loaded from the built HelloWorld.so
// through the normal module loading path (`module = "/abs/path/HelloWorld.so"`). Meson passes
// the path in HELLO_WORLD_SO; this executable exports the plugin API (export_dynamic) as
// ringpolicyd does.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "plugin_kit.hpp"

using namespace plugkit;

static std::string so_path()
{
    const char *path = std::getenv("HELLO_WORLD_SO");
    REQUIRE(path != nullptr);
    REQUIRE(path[0] == '/');
    return path;
}

static std::string hello(const std::string &options = "", const std::string &name = "hello")
{
    return "  <Plugin " + name + ">\n    module = \"" + so_path() + "\"\n" + options +
           "  </Plugin>\n";
}

TEST_CASE("HelloWorld says reject Hello World! (BasicModule)", "[hello_world]")
{
    Kit k(conf(hello()));
    INFO(k.error());
    REQUIRE(k.ok());
    CHECK(k.ask(req("client_address=192.0.2.1\n")) == reply("reject Hello World!"));
    CHECK(k.result_line().find("plugin=hello, result=reject Hello World!") != std::string::npos);
}

TEST_CASE("HelloWorld text is configurable", "[hello_world]")
{
    Kit k(conf(hello("    text = \"Hello Universe!\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("reject Hello Universe!"));
}

TEST_CASE("HelloWorld enabled is user-configurable", "[hello_world]")
{
    const std::string end = "  <Plugin end>\n    module = \"Action\"\n    action = \"dunno end\"\n"
                            "  </Plugin>\n";
    Kit off(conf(hello("    enabled = off\n") + end));
    REQUIRE(off.ok());
    CHECK(off.ask(req("")) == reply("dunno end"));
    Kit user_off(conf(set_field("hello_world_enabled", "off") +
                      hello("    enabled = on\n    uc_enabled = \"hello_world_enabled\"\n") + end));
    REQUIRE(user_off.ok());
    CHECK(user_off.ask(req("")) == reply("dunno end"));
    Kit user_on(conf(set_field("hello_world_enabled", "on") +
                     hello("    enabled = off\n    uc_enabled = \"hello_world_enabled\"\n") + end));
    REQUIRE(user_on.ok());
    CHECK(user_on.ask(req("")) == reply("reject Hello World!"));
}

TEST_CASE("HelloWorld adds its score once per mail", "[hello_world]")
{
    Kit k(conf(hello("    score = 3\n    header_name = \"X-Hello\"\n"), true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=h1\n")) == reply("PREPEND X-Hello: Hello World!"));
    CHECK(k.ask(req("instance=h1\n")) == dunno);
    CHECK(k.session("h1", "score") == "3");
    CHECK(k.session("h1", "score_detail") == "hello=3");
    CHECK(k.session("h1", "hello-score") == "1");
    CHECK(k.session("h1", "hello-tag") == "1");
}

TEST_CASE("HelloWorld header mode without a session cache prepends every time", "[hello_world]")
{
    Kit k(conf(hello("    header_name = \"X-Hello\"\n    text = \"hi\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=h2\n")) == reply("PREPEND X-Hello: hi"));
    CHECK(k.ask(req("instance=h2\n")) == reply("PREPEND X-Hello: hi"));
}

TEST_CASE("HelloWorld caches its greeting per mail under NAME-result", "[hello_world]")
{
    Kit k(conf(hello("", "greeter"), true));
    REQUIRE(k.ok());
    CHECK(k.ask(req("instance=h3\n")) == reply("reject Hello World!"));
    CHECK(k.session("h3", "greeter-result") == "Hello World!");
    // A cached result is used as it is: a value stored earlier wins over `text`.
    Kit preset(conf(set_field("greeter-result", "Bonjour") + hello("", "greeter")));
    REQUIRE(preset.ok());
    CHECK(preset.ask(req("")) == reply("reject Bonjour"));
}

TEST_CASE("HelloWorld looks its greeting up in its nested chain", "[hello_world]")
{
    const std::string inner = "    <Plugin inner>\n      module = \"Action\"\n"
                              "      action = \"Bonjour\"\n    </Plugin>\n";
    Kit k(conf(hello(inner), true));
    REQUIRE(k.ok());
    // The nested answer is the greeting, not the reply: HelloWorld still answers itself.
    CHECK(k.ask(req("instance=h4\n")) == reply("reject Bonjour"));
    CHECK(k.result_line().find("plugin=hello, result=reject Bonjour") != std::string::npos);
    CHECK(k.session("h4", "hello-result") == "Bonjour");

    const std::string quiet = "    <Plugin quiet>\n      module = \"SetField\"\n"
                              "      key = \"inner\"\n      value = \"ran\"\n    </Plugin>\n";
    Kit none(conf(hello(quiet), true));
    REQUIRE(none.ok());
    CHECK(none.ask(req("instance=h5\n")) == reply("reject Hello World!"));
    CHECK(none.session("h5", "inner") == "ran");
    // Cached for the mail: the nested chain does not run again.
    Kit twice(conf(hello(inner + "    <Plugin count>\n      module = \"Condition\"\n"
                                 "      key = \"client_address\"\n      invert = 1\n"
                                 "      score = 1\n    </Plugin>\n"),
                   true));
    REQUIRE(twice.ok());
    CHECK(twice.ask(req("instance=h6\n")) == reply("reject Bonjour"));
    CHECK(twice.ask(req("instance=h6\nclient_address=192.0.2.1\n")) == reply("reject Bonjour"));
    CHECK(twice.session("h6", "score") == "<absent>");
}

TEST_CASE("HelloWorld's asynchronous lookup is skipped when the result is cached", "[hello_world]")
{
    // A cached result answers without starting the lookup. The lookup itself needs the event
    // loop the testkit does not run; the daemon's integration tests cover it.
    Kit k(
        conf(set_field("greeter-result", "Hej") + hello("    lookup_delay_ms = 50\n", "greeter")));
    REQUIRE(k.ok());
    CHECK(k.ask(req("")) == reply("reject Hej"));
}

TEST_CASE("HelloWorld refuses bad options at start-up", "[hello_world]")
{
    Kit too_long(conf(hello("    lookup_delay_ms = 10001\n")));
    CHECK_FALSE(too_long.ok());
    CHECK(too_long.error().find("lookup_delay_ms must be between 0 and 10000") !=
          std::string::npos);
    CHECK(Kit(conf(hello("    lookup_delay_ms = 10000\n"))).ok());
    CHECK_FALSE(Kit(conf(hello("    lookup_delay_ms = -1\n"))).ok());
    CHECK_FALSE(Kit(conf(hello("    score = many\n"))).ok());
}

TEST_CASE("A module path that does not exist is refused naming it", "[hello_world]")
{
    Kit k(conf("  <Plugin x>\n    module = \"/nonexistent/HelloWorld.so\"\n  </Plugin>\n"));
    CHECK_FALSE(k.ok());
    CHECK(k.error().find("/nonexistent/HelloWorld.so") != std::string::npos);
}

TEST_CASE("HelloWorld logs at its log_level", "[hello_world]")
{
    Kit k(conf(hello("    log_level = 2\n")));
    REQUIRE(k.ok());
    LogCapture log(ENG_LOG_NOTICE);
    REQUIRE(log.ok());
    CHECK(k.ask(req("client_address=192.0.2.9\n")) == reply("reject Hello World!"));
    CHECK(log.has_line("test: saying hello to 192.0.2.9"));
    Kit quiet(conf(hello()));
    REQUIRE(quiet.ok());
    CHECK(quiet.ask(req("client_address=192.0.2.10\n")) == reply("reject Hello World!"));
    CHECK(log.text().find("192.0.2.10") == std::string::npos);
}
