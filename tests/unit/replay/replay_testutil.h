// replay_testutil.h: helpers shared by the bench/replay unit tests: where the shared maillogs
// are, reading files, the whyscream YAML fixtures, and a guard-page buffer.
#ifndef REPLAY_TESTUTIL_H
#define REPLAY_TESTUTIL_H

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef RPL_MAILLOG_DIR
#error "RPL_MAILLOG_DIR must name shared/data/maillogs"
#endif

namespace rpltest {

inline std::string maillog_dir()
{
    const char *env = std::getenv("RPL_MAILLOG_DIR");
    return env != nullptr ? env : RPL_MAILLOG_DIR;
}

inline std::string read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline std::vector<std::string> split_lines(const std::string &s)
{
    std::vector<std::string> out;
    size_t start = 0;
    while (start < s.size()) {
        size_t lf = s.find('\n', start);
        if (lf == std::string::npos)
            lf = s.size();
        out.push_back(s.substr(start, lf - start));
        start = lf + 1;
    }
    return out;
}

// A YAML scalar as the whyscream fixtures write it: bare, or double-quoted with \" \\ \n \r \t.
inline std::string yaml_scalar(const std::string &v)
{
    if (v.size() < 2 || v.front() != '"' || v.back() != '"')
        return v;
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); i++) {
        if (v[i] == '\\' && i + 2 < v.size()) {
            char e = v[++i];
            out += e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
        } else {
            out += v[i];
        }
    }
    return out;
}

struct fixture {
    std::string name, pattern, data;
    std::map<std::string, std::string> results;
};

inline fixture read_fixture(const std::string &path)
{
    fixture fx;
    fx.name = path.substr(path.rfind('/') + 1);
    for (const std::string &line : split_lines(read_file(path))) {
        if (line.rfind("pattern: ", 0) == 0) {
            fx.pattern = yaml_scalar(line.substr(9));
        } else if (line.rfind("data: ", 0) == 0) {
            fx.data = yaml_scalar(line.substr(6));
        } else if (line.rfind("    ", 0) == 0) {
            size_t colon = line.find(": ", 4);
            if (colon != std::string::npos)
                fx.results[line.substr(4, colon - 4)] = yaml_scalar(line.substr(colon + 2));
        }
    }
    return fx;
}

// len bytes copied to the end of a page followed by an inaccessible page: reading past the
// end faults (picohttpparser's test.c trick).
class guarded {
  public:
    explicit guarded(const std::string &s)
    {
        long page = sysconf(_SC_PAGESIZE);
        size_t pages = (s.size() + (size_t)page - 1) / (size_t)page + 1;
        map_len_ = (pages + 1) * (size_t)page;
        base_ = (char *)mmap(nullptr, map_len_, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        char *guard = base_ + pages * (size_t)page;
        mprotect(guard, (size_t)page, PROT_NONE);
        ptr_ = guard - s.size();
        std::memcpy(ptr_, s.data(), s.size());
    }
    ~guarded() { munmap(base_, map_len_); }
    guarded(const guarded &) = delete;
    guarded &operator=(const guarded &) = delete;
    const char *data() const { return ptr_; }

  private:
    char *base_ = nullptr;
    char *ptr_ = nullptr;
    size_t map_len_ = 0;
};

} // namespace rpltest

#endif
