// log_test.cpp: logging: every escaping rule of spec 5.2, the %HH encoding of file and stderr
// lines (5.1), levels (0 means errors only, above 4 means 4), truncation with "...", lines
// buffered on a shard and written once per loop turn, and syslog datagrams with ident[pid] and
// facility, sent to a socket the test listens on.
#include "harness.h"

#include <fstream>
#include <sstream>
#include <syslog.h>

extern "C" {
#include "eng/log.h"
}

using namespace th;

namespace
{
std::string esc(const std::string &in, size_t out_len = 4096)
{
    std::vector<char> out(out_len);
    size_t n = eng_log_escape(out.data(), out.size(), in.data(), in.size());
    CHECK(out[n] == '\0');
    return std::string(out.data(), n);
}

std::string tmp_path(const char *name)
{
    return "/tmp/ringpolicyd-log-test-" + std::to_string(getpid()) + "-" + name;
}

std::string slurp(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void open_file(const std::string &path, int level)
{
    unlink(path.c_str());
    eng_log_config cfg{};
    cfg.level = level;
    cfg.target = ENG_LOG_FILE;
    cfg.path = path.c_str();
    char err[256];
    INFO(err);
    REQUIRE(eng_log_open(&cfg, err, sizeof(err)) == 0);
}
} // namespace

TEST_CASE("escaping (spec 5.2): every rule", "[log]")
{
    CHECK(esc(std::string("a\0b", 3)) == "a\\0b");
    CHECK(esc("a\rb") == "a\\rb");
    CHECK(esc("a\nb") == "a\\nb");
    CHECK(esc("a\\b") == "a\\\\b");
    CHECK(esc("tab\there") == "tab\there"); // TAB is kept
    for (int b = 1; b < 0x20; b++) {
        if (b == '\t' || b == '\n' || b == '\r')
            continue;
        char want[8];
        snprintf(want, sizeof(want), "\\x%02X", b);
        CHECK(esc(std::string(1, char(b))) == want);
    }
    CHECK(esc("\x7f") == "\\x7F");
    CHECK(esc("\x1b[31m") == "\\x1B[31m");                // uppercase hex
    CHECK(esc("caf\xc3\xa9 \xff") == "caf\xc3\xa9 \xff"); // bytes >= 0x80 kept
    CHECK(esc("plain text ~!@#$%^&*()") == "plain text ~!@#$%^&*()");
    // Truncation never splits an escape, and always terminates.
    CHECK(esc("ab\n", 4) == "ab");
    CHECK(esc("abc", 1) == "");
    CHECK(esc("\x01", 4) == "");
    CHECK(esc("\x01", 5) == "\\x01");
}

TEST_CASE("file lines: %HH for what is not printable (spec 5.1), no timestamp", "[log]")
{
    std::string path = tmp_path("file");
    open_file(path, 4);
    eng_log(ENG_LOG_WARNING, "a\tb\xe9%s", "c\n100%");
    eng_log(ENG_LOG_ERR, "second");
    CHECK(slurp(path) == "a%09b%E9c\\n100%\nsecond\n");
    eng_log_close();
    unlink(path.c_str());
}

TEST_CASE("levels: not above the configured one; 0 is errors only; above 4 is 4", "[log]")
{
    std::string path = tmp_path("levels");
    open_file(path, 2);
    CHECK(eng_log_level() == 2);
    CHECK(eng_log_enabled(ENG_LOG_NOTICE));
    CHECK_FALSE(eng_log_enabled(ENG_LOG_INFO));
    eng_log(ENG_LOG_INFO, "info");
    eng_log(ENG_LOG_NOTICE, "notice");
    open_file(path, 0);
    eng_log(ENG_LOG_WARNING, "warning");
    eng_log(ENG_LOG_ERR, "err");
    open_file(path, 9);
    CHECK(eng_log_level() == 4);
    eng_log(ENG_LOG_DEBUG, "debug");
    CHECK(slurp(path) == "debug\n"); // each open truncated the test file first
    eng_log_close();
    CHECK(eng_log_level() == ENG_LOG_NOTICE); // back to the start-up default
    unlink(path.c_str());
}

TEST_CASE("a long message is cut at ENG_LOG_LINE_MAX with ...", "[log]")
{
    std::string path = tmp_path("long");
    open_file(path, 4);
    std::string big(3 * ENG_LOG_LINE_MAX, 'a');
    eng_log(ENG_LOG_ERR, "%s", big.c_str());
    std::string escaped(ENG_LOG_LINE_MAX, '\n'); // every byte grows to two
    eng_log(ENG_LOG_ERR, "%s", escaped.c_str());
    std::string got = slurp(path);
    size_t nl = got.find('\n');
    REQUIRE(nl != std::string::npos);
    std::string first = got.substr(0, nl);
    CHECK(first.size() < ENG_LOG_LINE_MAX);
    CHECK(first.size() > ENG_LOG_LINE_MAX - 8);
    CHECK(first.substr(first.size() - 3) == "...");
    std::string second = got.substr(nl + 1, got.size() - nl - 2);
    CHECK(second.size() < ENG_LOG_LINE_MAX);
    CHECK(second.substr(second.size() - 3) == "...");
    CHECK(second.substr(0, 4) == "\\n\\n");
    eng_log_close();
    unlink(path.c_str());
}


TEST_CASE("eng_log_bytes: NUL bytes and '%' as they are, with a prefix, cut with ...", "[log]")
{
    std::string path = tmp_path("bytes");
    open_file(path, 2);
    const char data[] = "x\0y%d%%s\0"; // 9 bytes without the terminator
    eng_log_bytes(ENG_LOG_WARNING, "pre: ", data, 9);
    eng_log_bytes(ENG_LOG_ERR, nullptr, "no prefix", 9);
    eng_log_bytes(ENG_LOG_ERR, "only a prefix", nullptr, 0);
    eng_log_bytes(ENG_LOG_INFO, "", "above the level", 15);
    std::string many_nuls(40, '\0'); // more NULs than a format trick could carry
    eng_log_bytes(ENG_LOG_ERR, "", many_nuls.data(), many_nuls.size());
    std::string want_nuls;
    for (int i = 0; i < 40; i++)
        want_nuls += "\\0";
    CHECK(slurp(path) == "pre: x\\0y%d%%s\\0\nno prefix\nonly a prefix\n" + want_nuls + "\n");

    open_file(path, 2);
    std::string big(2 * ENG_LOG_LINE_MAX, 'b');
    eng_log_bytes(ENG_LOG_ERR, "p ", big.data(), big.size());
    eng_log_bytes(ENG_LOG_ERR, "p ", big.data(), ENG_LOG_LINE_MAX - 1 - 2 - 3);
    std::string got = slurp(path);
    size_t nl = got.find('\n');
    REQUIRE(nl != std::string::npos);
    std::string first = got.substr(0, nl);
    CHECK(first.substr(0, 3) == "p b");
    CHECK(first.size() < ENG_LOG_LINE_MAX);
    CHECK(first.substr(first.size() - 3) == "...");
    std::string second = got.substr(nl + 1, got.size() - nl - 2);
    CHECK(second == "p " + std::string(ENG_LOG_LINE_MAX - 1 - 2 - 3, 'b')); // fits: not cut
    eng_log_close();
    unlink(path.c_str());
}
TEST_CASE("shard threads buffer lines and write them once per turn", "[log]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string path = tmp_path("shard");
        open_file(path, 4);
        {
            Engine eng(echo_config(backend, 2));
            REQUIRE(eng_run_on_shards(
                        eng.e,
                        [](eng_shard *sh, void *, void *) {
                            for (int i = 0; i < 100; i++)
                                eng_log(ENG_LOG_WARNING, "shard %u line %d", eng_shard_index(sh),
                                        i);
                        },
                        nullptr) == 0);
            REQUIRE(eventually([&] {
                std::string s = slurp(path);
                return std::count(s.begin(), s.end(), '\n') == 200;
            }));
            std::string s = slurp(path);
            // Each shard's lines are whole and in order.
            for (unsigned sh = 0; sh < 2; sh++) {
                size_t pos = 0;
                for (int i = 0; i < 100; i++) {
                    std::string line =
                        "shard " + std::to_string(sh) + " line " + std::to_string(i) + "\n";
                    size_t at = s.find(line, pos);
                    REQUIRE(at != std::string::npos);
                    pos = at + line.size();
                }
            }
        }
        eng_log_close();
        unlink(path.c_str());
    }
}

TEST_CASE("syslog datagrams carry priority, ident[pid] and the escaped message", "[log]")
{
    std::string path = tmp_path("syslog");
    unlink(path.c_str());
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path.c_str());
    REQUIRE(bind(s, reinterpret_cast<sockaddr *>(&un), sizeof(un)) == 0);
    set_timeouts(s, 2000);
    eng_test_log_syslog_path(path.c_str());
    eng_log_config cfg{};
    cfg.level = 4;
    cfg.target = ENG_LOG_SYSLOG;
    cfg.ident = "testd";
    cfg.facility = LOG_MAIL;
    char err[256];
    REQUIRE(eng_log_open(&cfg, err, sizeof(err)) == 0);
    eng_log(ENG_LOG_WARNING, "vhost: result=%s", "reject\tnow\xe9\n");
    char buf[1024];
    ssize_t n = recv(s, buf, sizeof(buf), 0);
    REQUIRE(n > 0);
    std::string d(buf, size_t(n));
    CHECK(d.rfind("<20>", 0) == 0); // LOG_MAIL | LOG_WARNING
    std::string tail = "testd[" + std::to_string(getpid()) + "]: vhost: result=reject\tnow\xe9\\n";
    CHECK(d.size() > tail.size());
    CHECK(d.substr(d.size() - tail.size()) == tail);
    eng_log(ENG_LOG_DEBUG, "dbg");
    n = recv(s, buf, sizeof(buf), 0);
    REQUIRE(n > 0);
    CHECK(std::string(buf, 4) == "<23>"); // LOG_MAIL | LOG_DEBUG
    CHECK(eng_log_write_errors() == 0);
    eng_log_close();
    eng_test_log_syslog_path(nullptr);
    close(s);
    unlink(path.c_str());
}
