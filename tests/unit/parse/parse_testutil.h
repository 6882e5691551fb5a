// parse_testutil.h: helpers shared by the parser tests in tests/unit/parse.
//
// - kFragmentSizes: the fragment sizes every parser is fed in (STYLE.md section 9), 0 meaning
//   "everything in one piece".
// - GuardBuf: a buffer whose last byte sits flush against a PROT_NONE page, so that a parser
//   reading one byte past what it was given faults at once (picohttpparser test.c).
// - read_file: a whole file as a string (test data lives next to the tests).
#ifndef PARSE_TESTUTIL_H
#define PARSE_TESTUTIL_H

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

static const size_t kFragmentSizes[] = {1, 2, 5, 10, 100, 0};

class GuardBuf
{
  public:
    explicit GuardBuf(size_t capacity)
    {
        page_ = (size_t)sysconf(_SC_PAGESIZE);
        data_bytes_ = (capacity + page_ - 1) / page_ * page_ + page_;
        map_ = (char *)mmap(nullptr, data_bytes_ + page_, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map_ == MAP_FAILED) {
            throw std::runtime_error("mmap failed");
        }
        if (mprotect(map_ + data_bytes_, page_, PROT_NONE) != 0) {
            throw std::runtime_error("mprotect failed");
        }
    }
    ~GuardBuf()
    {
        munmap(map_, data_bytes_ + page_);
    }
    GuardBuf(const GuardBuf &) = delete;
    GuardBuf &operator=(const GuardBuf &) = delete;

    // Copies s so that its last byte is the last readable byte; returns where it starts.
    const char *place(const char *s, size_t len)
    {
        if (len > data_bytes_) {
            throw std::runtime_error("GuardBuf too small");
        }
        char *dst = map_ + data_bytes_ - len;
        if (len > 0) {
            memmove(dst, s, len);
        }
        return dst;
    }
    const char *place(const std::string &s)
    {
        return place(s.data(), s.size());
    }

  private:
    size_t page_ = 0;
    size_t data_bytes_ = 0;
    char *map_ = nullptr;
};

static inline std::string read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        throw std::runtime_error("cannot read " + path);
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

#endif
