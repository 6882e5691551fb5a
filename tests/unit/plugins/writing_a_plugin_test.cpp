// writing_a_plugin_test.cpp: docs/writing-a-plugin.md promises that every C snippet compiles,
// because each is copied from a file the build compiles (policy/examples/hello_world.c, or a
// built-in plugin). This checks it: every ```c block of the guide must appear, verbatim, in
// one of those files. Meson passes the guide in WRITING_A_PLUGIN_DOC and the sources, separated
// by ':', in WRITING_A_PLUGIN_SOURCES.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace
{

std::string read_file(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string env(const char *name)
{
    const char *v = std::getenv(name);
    REQUIRE(v != nullptr);
    return v;
}

// The bodies of the fenced blocks opened by "```c" lines, in order.
std::vector<std::string> c_blocks(const std::string &markdown)
{
    std::vector<std::string> blocks;
    const std::string open = "\n```c\n";
    size_t at = 0;
    while ((at = markdown.find(open, at)) != std::string::npos) {
        size_t body = at + open.size();
        size_t close = markdown.find("\n```\n", body - 1);
        REQUIRE(close != std::string::npos);
        blocks.push_back(markdown.substr(body, close + 1 - body));
        at = close;
    }
    return blocks;
}

std::vector<std::string> sources()
{
    std::vector<std::string> texts;
    std::string list = env("WRITING_A_PLUGIN_SOURCES");
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(':', start);
        if (end == std::string::npos)
            end = list.size();
        texts.push_back(read_file(list.substr(start, end - start)));
        start = end + 1;
    }
    return texts;
}

bool found_in(const std::vector<std::string> &texts, const std::string &snippet)
{
    for (const std::string &t : texts)
        if (t.find(snippet) != std::string::npos)
            return true;
    return false;
}

} // namespace

TEST_CASE("Every C snippet of the plugin guide is code the build compiles", "[writing_a_plugin]")
{
    const std::vector<std::string> blocks = c_blocks(read_file(env("WRITING_A_PLUGIN_DOC")));
    const std::vector<std::string> texts = sources();
    REQUIRE(blocks.size() >= 15); // skeleton to versioning: the guide has not lost its code
    for (const std::string &block : blocks) {
        INFO("snippet:\n" << block);
        CHECK_FALSE(block.empty());
        CHECK(found_in(texts, block));
    }
}

TEST_CASE("The snippet check notices a snippet that drifted", "[writing_a_plugin]")
{
    const std::vector<std::string> texts = sources();
    const std::string real = "#include <pol/plugin.h>\n";
    CHECK(found_in(texts, real));
    CHECK_FALSE(found_in(texts, "#include <pol/plugin.h> \n"));
    const std::vector<std::string> blocks =
        c_blocks("text\n```c\nint a;\n```\nmore\n```c\nint b;\nint c;\n```\n```sh\nls\n```\n");
    REQUIRE(blocks.size() == 2);
    CHECK(blocks[0] == "int a;\n");
    CHECK(blocks[1] == "int b;\nint c;\n");
}
