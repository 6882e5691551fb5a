// config_test.cpp: policy/config.c, the mtpolicyd.conf (Config::General) parser.
//
// Trees are compared as text: one line per node, "LINE name=value" for options and
// "LINE <name key>" for blocks, children indented. Every input is parsed once whole and again
// fed in fragments of 1, 2, 5, 10 and 100 bytes: the trees and errors must be the same. The
// corpus in configs/ (also used by the differential test against Config::General,
// cfg_diff.py) goes through the same check against pol_cfg_load.
#include <catch2/catch.hpp>

#include <dirent.h>

#include <algorithm>
#include <string>
#include <vector>

#include "parse_testutil.h"

extern "C" {
#include "config.h"
}

#ifndef PARSE_TEST_CONFIG_DIR
#error "PARSE_TEST_CONFIG_DIR must be defined by the build"
#endif

namespace
{

const std::string kConfigDir = PARSE_TEST_CONFIG_DIR;

void dump(const pol_cfg_node *b, int depth, std::string &out)
{
    for (const pol_cfg_node *n = b->children; n != nullptr; n = n->next) {
        out += std::string(depth * 2, ' ') + std::to_string(n->line) + " ";
        if (n->is_block) {
            out +=
                "<" + std::string(n->name) + (n->value ? " " + std::string(n->value) : "") + ">\n";
            dump(n, depth + 1, out);
        } else {
            out += std::string(n->name) + "=" + n->value + "\n";
        }
    }
}

std::string error_text(const pol_cfg_error &err)
{
    char buf[1200];
    return std::string("ERROR ") + pol_cfg_error_format(&err, buf, sizeof buf);
}

// Parses text as the file `name` in fragments of frag bytes (0: one feed).
std::string parse(const std::string &text, size_t frag = 0, const std::string &name = "test.conf",
                  const char *base = nullptr)
{
    pol_cfg_parser *p = pol_cfg_parser_new(name.c_str(), base);
    REQUIRE(p != nullptr);
    pol_cfg_error err;
    GuardBuf guard(text.size() + 1);
    const char *data = guard.place(text);
    size_t step = frag == 0 ? std::max<size_t>(text.size(), 1) : frag;
    bool failed = false;
    for (size_t off = 0; off < text.size() && !failed; off += step) {
        // Each fragment sits flush against the guard page.
        size_t n = std::min(step, text.size() - off);
        const char *piece = frag == 0 ? data : guard.place(text.data() + off, n);
        failed = pol_cfg_parser_feed(p, piece, n, &err) != 0;
    }
    pol_cfg *c = nullptr;
    if (pol_cfg_parser_finish(p, &c, &err) != 0) {
        REQUIRE(c == nullptr);
        return error_text(err);
    }
    REQUIRE(!failed);
    std::string out;
    dump(pol_cfg_root(c), 0, out);
    pol_cfg_free(c);
    return out;
}

// The tree (or error) of text, checked to be the same for every fragment size.
std::string tree(const std::string &text)
{
    std::string whole = parse(text);
    for (size_t frag : kFragmentSizes) {
        INFO("fragment size " << frag);
        CHECK(parse(text, frag) == whole);
    }
    return whole;
}

std::string load(const std::string &path)
{
    pol_cfg *c = nullptr;
    pol_cfg_error err;
    if (pol_cfg_load(path.c_str(), &c, &err) != 0) {
        return error_text(err);
    }
    std::string out;
    dump(pol_cfg_root(c), 0, out);
    pol_cfg_free(c);
    return out;
}

std::vector<std::string> corpus()
{
    std::vector<std::string> files;
    DIR *d = opendir(kConfigDir.c_str());
    REQUIRE(d != nullptr);
    while (dirent *e = readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 5 && n.compare(n.size() - 5, 5, ".conf") == 0) {
            files.push_back(kConfigDir + "/" + n);
        }
    }
    closedir(d);
    std::sort(files.begin(), files.end());
    return files;
}

} // namespace

TEST_CASE("every corpus file gives the same result whole, loaded and in fragments", "[config]")
{
    auto files = corpus();
    REQUIRE(files.size() >= 30);
    for (const std::string &path : files) {
        INFO(path);
        std::string loaded = load(path);
        std::string text = read_file(path);
        for (size_t frag : kFragmentSizes) {
            INFO("fragment size " << frag);
            CHECK(parse(text, frag, path, kConfigDir.c_str()) == loaded);
        }
    }
}

TEST_CASE("lines: separators, trimming, case, empty values", "[config]")
{
    CHECK(tree("a = 1\nb=2\nc 3\n  d   =   inner   kept  \n") ==
          "1 a=1\n2 b=2\n3 c=3\n4 d=inner   kept\n");
    CHECK(tree("Plugin = x\nplugin = y\n") == "1 Plugin=x\n2 plugin=y\n");
    CHECK(tree("empty =\nbare\n= v\nm = a = b\nx==y\nsp name = v\n") ==
          "1 empty=\n2 bare=\n3 =v\n4 m=a = b\n5 x==y\n6 sp=name = v\n");
    CHECK(tree("") == "");
    CHECK(tree("\n\n   \n\t\n") == "");
    CHECK(tree("last = no newline") == "1 last=no newline\n");
}

TEST_CASE("quotes and escapes", "[config]")
{
    CHECK(tree("a = \"q v\"\nb = \"a\" \"b\"\nc = 'single'\nd = \"open\ne = \"\nf = \"\"\n") ==
          "1 a=q v\n2 b=a\" \"b\n3 c='single'\n4 d=\"open\n5 e=\n6 f=\n");
    CHECK(tree("a = \\\"x\\\"\nb = c\\$d\nc = \\\\\\\\\nd = \\q\n") ==
          "1 a=\"x\"\n2 b=c$d\n3 c=\\\\\n4 d=\\q\n");
}

TEST_CASE("hash comments, also inside quotes; \\# is a literal #", "[config]")
{
    CHECK(tree("action = \"reject see #1\"\n") == "1 action=\"reject see\n");
    CHECK(tree("a = b # c\nd = e#f\ng = h \\# i\n# full\n   # indented\nj = \\\\# k\n") ==
          "1 a=b\n2 d=e\n3 g=h # i\n6 j=\\# k\n");
}

TEST_CASE("C comments, over several lines", "[config]")
{
    CHECK(tree("a = x /* c */ y /* d */ z\nb = 1 /* open\nhidden = 1\n*/ c = 2\nd = 3\n") ==
          "1 a=xz\n2 b=1 /* open\n3 hidden=1\n4 c=2\n5 d=3\n");
    CHECK(tree("/* start\nhidden = 1\n  end */\ne = 4\n/* one line */\nf = 5\n") ==
          "4 e=4\n6 f=5\n");
    CHECK(tree("/*/\n") == "1 /*/=\n");
}

TEST_CASE("backslash continuation", "[config]")
{
    CHECK(tree("a = one \\\n   two \\\n\tthree\nb = 2\n") == "1 a=one two three\n4 b=2\n");
    CHECK(tree("a = not \\\\\nb = 2\n") == "1 a=not \\\n2 b=2\n");
    // Config::General's truthiness: a continued "0" is false, so the next line stands alone.
    CHECK(tree("0\\\nf = 1\ng = \\\nh\n") == "2 f=1\n1 0g=h\n");
    // A CR before the LF hides the backslash.
    CHECK(tree("a = x \\\r\nb = 2\r\n") == "1 a=x \\\n2 b=2\n");
}

TEST_CASE("here-documents", "[config]")
{
    CHECK(tree("t = <<END\nline 1\n  line 2 # kept\nEND\nn = 1\n") ==
          "1 t=line 1\n  line 2 # kept\n5 n=1\n");
    CHECK(tree("t <<EOT\n    a\n      b\n    EOT\n") == "1 t=a\n  b\n");
    CHECK(tree("t = <<E\n\n\n  x\n\nE\n") == "1 t=x\n");
    CHECK(tree("t = <<E\nE\n") == "1 t=\n");
    CHECK(tree("t = << M  \nbody\n  M  \n") == "1 t=body\n");
    CHECK(tree("t = <<Q\n\"quoted\"\nQ\n") == "1 t=quoted\n");
}

TEST_CASE("blocks: anonymous, named, nested, quoted, explicit empty", "[config]")
{
    CHECK(tree("<SessionCache>\n module = None\n</SessionCache>\n<VirtualHost 12345>\n"
               " name = a\n <Plugin x>\n  <Plugin y>\n  </Plugin>\n </Plugin>\n</VirtualHost>\n") ==
          "1 <SessionCache>\n  2 module=None\n4 <VirtualHost 12345>\n  5 name=a\n"
          "  6 <Plugin x>\n    7 <Plugin y>\n");
    CHECK(tree("<Plugin \"a b\">\n</Plugin>\n<Plugin two words>\n</plugin>\n<\"Q N\">\n</\"Q "
               "N\">\n") == "1 <Plugin a b>\n3 <Plugin two words>\n5 <Q N>\n");
    // A quoted "0" key is false to Perl: the block is anonymous.
    CHECK(tree("<V \"0\">\n</V>\n<W 0>\n</W>\n") == "1 <V>\n3 <W 0>\n");
    CHECK(tree("<Empty/>\n<Named key/>\n<Sp />\n") == "1 <Empty>\n2 <Named key>\n3 <Sp >\n");
    // Different keys are fine.
    CHECK(tree("<VirtualHost 1>\n</VirtualHost>\n<VirtualHost 2>\n</VirtualHost>\n") ==
          "1 <VirtualHost 1>\n3 <VirtualHost 2>\n");
}

TEST_CASE("every error names file, line and what is wrong", "[config]")
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"a = 1\nb = 2\na = 3\n",
         "test.conf:3: option \"a\" occurs more than once in this block (also at test.conf:1)"},
        {"<P x>\n</P>\n<P x>\n</P>\n",
         "test.conf:3: block <P x> occurs more than once (also at test.conf:1)"},
        {"<S>\n</S>\n<S>\n</S>\n",
         "test.conf:3: block \"S\" occurs more than once in this block (also at test.conf:1)"},
        {"<F a>\n</F>\n<F>\n</F>\n",
         "test.conf:3: block \"F\" occurs more than once in this block (also at test.conf:1)"},
        {"<F>\n</F>\n<F a>\n</F>\n",
         "test.conf:3: block <F a> follows the anonymous block <F> (at test.conf:1) in the same "
         "block"},
        {"P = 1\n<P x>\n</P>\n",
         "test.conf:2: block <P x> has the name of option \"P\" (at test.conf:1)"},
        {"<P x>\n</P>\nP = 1\n",
         "test.conf:3: option \"P\" has the name of block <P> (at test.conf:1)"},
        {"a = 1\n</P>\n", "test.conf:2: </P> has no matching <P>"},
        {"<P x>\n</Q>\n", "test.conf:2: </Q> does not close <P> (opened at test.conf:1)"},
        {"<V 1>\n <P x>\n </P>\n", "test.conf:1: <V 1> has no </V>"},
        {"<V 1>\n <P x>\n", "test.conf:2: <P x> has no </P>"},
        {"a = 1\nt = <<END\nx\n", "test.conf:2: here-document <<END has no end line"},
        {"a = 1\n/* open\nb = 2\n", "test.conf:2: comment /* is not closed"},
        {"a = 1\nb = 2 \\\nc \\", "test.conf:2: the line continues past the end of the file"},
        {std::string("a = x\0y\n", 8), "test.conf:1: NUL byte in the line"},
        {"<<include does/not/exist.inc>>\n",
         "test.conf:1: include file \"does/not/exist.inc\" does not exist (looked in the current "
         "directory)"},
    };
    for (auto &c : cases) {
        INFO(c.first);
        CHECK(tree(c.first) == "ERROR " + c.second);
    }
}

TEST_CASE("the first error sticks; feeding more changes nothing", "[config]")
{
    pol_cfg_parser *p = pol_cfg_parser_new("s.conf", nullptr);
    pol_cfg_error err;
    CHECK(pol_cfg_parser_feed(p, "a = 1\na = 2\n", 12, &err) == -1);
    CHECK(error_text(err) == "ERROR s.conf:2: option \"a\" occurs more than once in this block "
                             "(also at s.conf:1)");
    pol_cfg_error again;
    CHECK(pol_cfg_parser_feed(p, "</X>\n", 5, &again) == -1);
    CHECK(error_text(again) == error_text(err));
    pol_cfg *c = reinterpret_cast<pol_cfg *>(1);
    CHECK(pol_cfg_parser_finish(p, &c, &again) == -1);
    CHECK(c == nullptr);
    CHECK(error_text(again) == error_text(err));
}

TEST_CASE("block nesting at 64 and 65", "[config]")
{
    auto nested = [](int depth) {
        std::string s;
        for (int i = 0; i < depth; i++) {
            s += "<B" + std::to_string(i) + ">\n";
        }
        for (int i = depth - 1; i >= 0; i--) {
            s += "</B" + std::to_string(i) + ">\n";
        }
        return s;
    };
    CHECK(parse(nested(64)).rfind("ERROR", 0) != 0);
    CHECK(tree(nested(65)) == "ERROR test.conf:65: blocks nested deeper than 64");
}

TEST_CASE("a line, a continued line and a here-document at 1 MiB and 1 MiB + 1", "[config]")
{
    const size_t max = 1u << 20;
    std::string at = "a=" + std::string(max - 2, 'x');
    CHECK(parse(at + "\n") == "1 a=" + at.substr(2) + "\n");
    CHECK(parse(at + "\n", 100000) == "1 a=" + at.substr(2) + "\n");
    CHECK(parse(at + "y\n") == "ERROR test.conf:1: line longer than 1048576 bytes");
    CHECK(parse(at + "y") == "ERROR test.conf:1: line longer than 1048576 bytes");
    CHECK(parse("b = 1\n" + at + "y\n", 4096) ==
          "ERROR test.conf:2: line longer than 1048576 bytes");

    std::string half(max / 2, 'h');
    CHECK(parse("a = " + half + "\\\n" + half.substr(4) + "\n") ==
          "1 a=" + half + half.substr(4) + "\n");
    CHECK(parse("a = " + half + "\\\n" + half.substr(3) + "\n") ==
          "ERROR test.conf:1: continued line longer than 1048576 bytes");

    // Here-document bytes: the lines plus the LFs between them.
    CHECK(parse("t = <<E\n" + half + "\n" + half.substr(1) + "\nE\n") ==
          "1 t=" + half + "\n" + half.substr(1) + "\n");
    CHECK(parse("t = <<E\n" + half + "\n" + half + "\nE\n") ==
          "ERROR test.conf:1: here-document longer than 1048576 bytes");
}

TEST_CASE("includes: relative lookup, nesting limit, files read once", "[config]")
{
    const std::string dir = kConfigDir;
    // From a directory where the include is not, the main file's directory is used.
    CHECK(parse("<<include inc/a.inc>>\nz = 1\n", 0, dir + "/virtual.conf", dir.c_str()) ==
          "1 from_a=1\n2 z=1\n");
    CHECK(parse("<<include inc/a.inc>>\n", 0, "virtual.conf", nullptr) ==
          "ERROR virtual.conf:1: include file \"inc/a.inc\" does not exist (looked in the "
          "current directory)");
    // Read once: the second include of the same path is skipped, as Config::General does.
    CHECK(parse("<<include inc/a.inc>>\n<<include inc/a.inc>>\n", 0, "v.conf", dir.c_str()) ==
          "1 from_a=1\n");
    // Nodes carry the file they come from.
    pol_cfg *c = nullptr;
    pol_cfg_error err;
    REQUIRE(pol_cfg_load((dir + "/include.conf").c_str(), &c, &err) == 0);
    const pol_cfg_node *a = pol_cfg_option(pol_cfg_root(c), "from_a");
    REQUIRE(a != nullptr);
    CHECK(std::string(a->file) == dir + "/inc/a.inc");
    CHECK(a->line == 1);
    pol_cfg_free(c);
    // 16 nested files load, 17 do not.
    CHECK(load(dir + "/include-depth-16.conf").rfind("ERROR", 0) != 0);
    CHECK(load(dir + "/diff-include-depth-17.conf") ==
          "ERROR " + dir + "/inc/chain/c17.inc:2: includes nested deeper than 16 files");
}

TEST_CASE("pol_cfg_load refuses a missing file or a directory without a line", "[config]")
{
    CHECK(load("/nonexistent/x.conf") ==
          "ERROR /nonexistent/x.conf: cannot read the configuration file: No such file or "
          "directory");
    CHECK(load(kConfigDir) ==
          "ERROR " + kConfigDir + ": cannot read the configuration file: it is a directory");
}

TEST_CASE("lookup helpers", "[config]")
{
    pol_cfg_error err;
    pol_cfg_parser *p = pol_cfg_parser_new("h.conf", nullptr);
    const char ok[] = "port = 1\n<Plugin a>\n  module = M\n</Plugin>\n";
    REQUIRE(pol_cfg_parser_feed(p, ok, sizeof ok - 1, &err) == 0);
    pol_cfg *c = nullptr;
    REQUIRE(pol_cfg_parser_finish(p, &c, &err) == 0);
    const pol_cfg_node *root = pol_cfg_root(c);
    CHECK(root->is_block);
    CHECK(root->value == nullptr);
    CHECK(std::string(pol_cfg_value(root, "port", "d")) == "1");
    CHECK(std::string(pol_cfg_value(root, "nope", "d")) == "d");
    CHECK(pol_cfg_value(root, "nope", nullptr) == nullptr);
    CHECK(pol_cfg_option(root, "Plugin") == nullptr); // a block, not an option
    const pol_cfg_node *plugin = root->children->next;
    REQUIRE(plugin->is_block);
    CHECK(std::string(pol_cfg_value(plugin, "module", "")) == "M");
    pol_cfg_free(c);

    pol_cfg_error e = {};
    snprintf(e.file, sizeof e.file, "f.conf");
    snprintf(e.msg, sizeof e.msg, "bad");
    char out[64];
    CHECK(std::string(pol_cfg_error_format(&e, out, sizeof out)) == "f.conf: bad");
    e.line = 7;
    CHECK(std::string(pol_cfg_error_format(&e, out, sizeof out)) == "f.conf:7: bad");
    CHECK(std::string(pol_cfg_error_format(&e, out, 5)) == "f.co");
}
