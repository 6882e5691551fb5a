// reader_test.cpp: the maillog line reader (bench/replay/reader.c): plain and gzip files,
// standard input fed in fragments of 1, 2, 5, 10 and 100 bytes, CRLF, a last line without LF,
// the line length limit at N and N+1, errors.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#ifdef RPL_HAVE_ZLIB
#include <zlib.h>
#endif

extern "C" {
#include "reader.h"
}

#include "replay_testutil.h"

namespace {

struct tmpfile_t {
    std::string path;
    explicit tmpfile_t(const std::string &content)
    {
        char tmpl[] = "/tmp/rpl_reader_XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, content.data(), content.size()) == (ssize_t)content.size());
        close(fd);
        path = tmpl;
    }
    ~tmpfile_t() { unlink(path.c_str()); }
};

std::vector<std::string> read_all(const std::string &path, uint32_t max = 0,
                                  uint64_t *long_lines = nullptr)
{
    rpl_reader *r = nullptr;
    char err[256];
    REQUIRE(rpl_reader_open(&r, path.c_str(), max, err, sizeof(err)) == 0);
    std::vector<std::string> out;
    const char *line;
    size_t len;
    int rc;
    while ((rc = rpl_reader_next(r, &line, &len, err, sizeof(err))) == 1)
        out.emplace_back(line, len);
    CHECK(rc == 0);
    CHECK(rpl_reader_line_count(r) == out.size());
    if (long_lines != nullptr)
        *long_lines = rpl_reader_long_line_count(r);
    rpl_reader_close(r);
    return out;
}

#ifdef RPL_HAVE_ZLIB
std::string gzip(const std::string &s)
{
    z_stream z{};
    REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    std::string out(deflateBound(&z, s.size()) + 32, '\0');
    z.next_in = (Bytef *)s.data();
    z.avail_in = (uInt)s.size();
    z.next_out = (Bytef *)&out[0];
    z.avail_out = (uInt)out.size();
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
}
#endif

const std::string sample = "line one\nline two\r\n\nline four without LF";

} // namespace

TEST_CASE("plain file: lines, CR kept, empty line, last line without LF", "[reader]")
{
    tmpfile_t f(sample);
    std::vector<std::string> lines = read_all(f.path);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "line one");
    CHECK(lines[1] == "line two\r"); // the line parser drops the CR
    CHECK(lines[2].empty());
    CHECK(lines[3] == "line four without LF");
}

TEST_CASE("empty file and a file of one LF", "[reader]")
{
    tmpfile_t empty("");
    CHECK(read_all(empty.path).empty());
    tmpfile_t lf("\n");
    std::vector<std::string> lines = read_all(lf.path);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].empty());
}

TEST_CASE("line length limit at N and N+1", "[reader]")
{
    const uint32_t max = 16;
    std::string at_max(max, 'a'), over(max + 1, 'b');
    tmpfile_t f("x\n" + at_max + "\n" + over + "\ny\n" + over);
    uint64_t long_lines = 0;
    std::vector<std::string> lines = read_all(f.path, max, &long_lines);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "x");
    CHECK(lines[1] == at_max);
    CHECK(lines[2] == "y");
    CHECK(long_lines == 2); // one in the middle, one at the end without LF
}

TEST_CASE("a line much longer than the buffer is skipped, the next one kept", "[reader]")
{
    std::string huge(3u * 1024u * 1024u, 'z');
    tmpfile_t f("before\n" + huge + "\nafter\n");
    uint64_t long_lines = 0;
    std::vector<std::string> lines = read_all(f.path, 1024, &long_lines);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == "before");
    CHECK(lines[1] == "after");
    CHECK(long_lines == 1);
}

TEST_CASE("many lines across buffer refills", "[reader]")
{
    std::string text;
    for (int i = 0; i < 100000; i++)
        text += "Oct 22 02:12:45 conch postfix/smtpd[" + std::to_string(i) + "]: connect\n";
    tmpfile_t f(text);
    std::vector<std::string> lines = read_all(f.path);
    REQUIRE(lines.size() == 100000);
    CHECK(lines[0] == "Oct 22 02:12:45 conch postfix/smtpd[0]: connect");
    CHECK(lines[99999] == "Oct 22 02:12:45 conch postfix/smtpd[99999]: connect");
}

TEST_CASE("standard input fed in fragments", "[reader]")
{
    std::string text;
    for (int i = 0; i < 300; i++)
        text += "line " + std::to_string(i) + (i % 7 == 0 ? "\r\n" : "\n");
    text += "tail";
    for (size_t frag : {1, 2, 5, 10, 100}) {
        INFO("fragment " << frag);
        int p[2];
        REQUIRE(pipe(p) == 0);
        int saved = dup(STDIN_FILENO);
        REQUIRE(dup2(p[0], STDIN_FILENO) == STDIN_FILENO);
        close(p[0]);
        std::thread writer([&] {
            for (size_t off = 0; off < text.size(); off += frag) {
                size_t n = std::min(frag, text.size() - off);
                if (write(p[1], text.data() + off, n) != (ssize_t)n)
                    break;
            }
            close(p[1]);
        });
        std::vector<std::string> lines = read_all("-");
        writer.join();
        dup2(saved, STDIN_FILENO);
        close(saved);
        REQUIRE(lines.size() == 301);
        CHECK(lines[0] == "line 0\r");
        CHECK(lines[1] == "line 1");
        CHECK(lines[300] == "tail");
    }
}

TEST_CASE("errors: missing file, directory", "[reader]")
{
    rpl_reader *r = nullptr;
    char err[256];
    CHECK(rpl_reader_open(&r, "/nonexistent/mail.log", 0, err, sizeof(err)) == -ENOENT);
    CHECK(std::string(err).find("/nonexistent/mail.log") != std::string::npos);
    CHECK(r == nullptr);
    CHECK(rpl_reader_open(&r, "/tmp", 0, err, sizeof(err)) == -EISDIR);
}

TEST_CASE("the reference time is the file's mtime", "[reader]")
{
    tmpfile_t f("x\n");
    struct timespec ts[2] = {{1445480000, 0}, {1445480000, 0}}; // 2015-10-22
    REQUIRE(utimensat(AT_FDCWD, f.path.c_str(), ts, 0) == 0);
    rpl_reader *r = nullptr;
    char err[256];
    REQUIRE(rpl_reader_open(&r, f.path.c_str(), 0, err, sizeof(err)) == 0);
    CHECK(rpl_reader_ref_sec(r) == 1445480000);
    rpl_reader_close(r);
}

#ifdef RPL_HAVE_ZLIB
TEST_CASE("gzip files, single and concatenated members, detected by content", "[reader]")
{
    tmpfile_t gz(gzip(sample));
    std::vector<std::string> lines = read_all(gz.path);
    REQUIRE(lines.size() == 4);
    CHECK(lines[1] == "line two\r");
    CHECK(lines[3] == "line four without LF");

    tmpfile_t two(gzip("a\nb\n") + gzip("c\n")); // logrotate'd files cat'ed together
    lines = read_all(two.path);
    REQUIRE(lines.size() == 3);
    CHECK(lines[2] == "c");

    rpl_reader *r = nullptr;
    char err[256];
    REQUIRE(rpl_reader_open(&r, gz.path.c_str(), 0, err, sizeof(err)) == 0);
    const char *line;
    size_t len;
    REQUIRE(rpl_reader_next(r, &line, &len, err, sizeof(err)) == 1);
    CHECK(rpl_reader_is_gzip(r) == 1);
    rpl_reader_close(r);
}

TEST_CASE("a truncated gzip file is an error, not a crash", "[reader]")
{
    std::string text;
    for (int i = 0; i < 5000; i++)
        text += "line " + std::to_string(i * 7919) + "\n";
    std::string z = gzip(text);
    tmpfile_t f(z.substr(0, z.size() / 2));
    rpl_reader *r = nullptr;
    char err[256];
    REQUIRE(rpl_reader_open(&r, f.path.c_str(), 0, err, sizeof(err)) == 0);
    const char *line;
    size_t len;
    int rc;
    size_t n = 0;
    while ((rc = rpl_reader_next(r, &line, &len, err, sizeof(err))) == 1)
        n++;
    // zlib reports a truncated stream as an error or as the end of the data; either way the
    // lines before the cut were delivered and nothing crashed.
    CHECK(rc <= 0);
    CHECK(n > 0);
    CHECK(n < 5000);
    rpl_reader_close(r);
}
#endif

TEST_CASE("the shared maillogs read line for line (one of them has CRLF)", "[reader][data]")
{
    std::string dir = rpltest::maillog_dir();
    std::vector<std::string> kdent = read_all(dir + "/kdent-postfix_log_analysis/mail.log");
    CHECK(kdent.size() == 6646);
    std::vector<std::string> lv = read_all(dir + "/louisitvn-pflgviewer/mail.log");
    REQUIRE(lv.size() == 20000);
    size_t crlf = 0;
    for (const std::string &l : lv)
        crlf += !l.empty() && l.back() == '\r';
    CHECK(crlf == 20000);
}
