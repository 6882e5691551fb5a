// Tests for bench/common/setup.c: the setup printed with results (every field filled), shell
// quoting of the command line (and its length limit), and JSON string escaping.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "setup.h"
}

namespace
{

std::string json(const std::string &s)
{
    char buf[1024] = {0};
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    REQUIRE(f != nullptr);
    bench_json_string(f, s.data(), s.size());
    fclose(f);
    return buf;
}

} // namespace

TEST_CASE("setup: every field is filled", "[setup]")
{
    std::vector<std::string> args = {"./ringpolicyd-load", "--label", "two words", "--json"};
    std::vector<char *> argv;
    for (auto &a : args)
        argv.push_back(&a[0]);
    bench_setup s;
    bench_setup_collect(&s, (int)argv.size(), argv.data());
    CHECK(std::strlen(s.git) > 0);
    CHECK(std::strlen(s.kernel) > 0);
    CHECK(std::strlen(s.cpu) > 0);
    CHECK(s.cpus >= 1);
    CHECK(std::string(s.command) == "./ringpolicyd-load --label 'two words' --json");
}

TEST_CASE("setup: command quoting", "[setup]")
{
    char cmd[256] = "";
    bench_command_append(cmd, sizeof(cmd), "a");
    bench_command_append(cmd, sizeof(cmd), "");
    bench_command_append(cmd, sizeof(cmd), "it's");
    bench_command_append(cmd, sizeof(cmd), "$HOME");
    bench_command_append(cmd, sizeof(cmd), "127.0.0.1:10040");
    CHECK(std::string(cmd) == "a '' 'it'\\''s' '$HOME' 127.0.0.1:10040");
}

TEST_CASE("setup: a long command is cut, never overflowed", "[setup]")
{
    char cmd[32];
    std::memset(cmd, 'Z', sizeof(cmd));
    cmd[0] = '\0';
    std::string big(100, 'x');
    for (int i = 0; i < 5; i++)
        bench_command_append(cmd, sizeof(cmd), big.c_str());
    CHECK(std::strlen(cmd) < sizeof(cmd));
    CHECK(std::string(cmd).find_first_not_of('x') == std::string::npos);
}

TEST_CASE("setup: JSON strings are escaped", "[setup]")
{
    CHECK(json("plain") == "\"plain\"");
    CHECK(json("q\"b\\s") == "\"q\\\"b\\\\s\"");
    CHECK(json("l1\nl2\t\x7f") == "\"l1\\nl2\\u0009\\u007f\"");
    CHECK(json(std::string("nul\0x", 5)) == "\"nul\\u0000x\"");
    CHECK(json("ü") == "\"ü\"");
}
