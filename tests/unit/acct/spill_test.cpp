// spill_test.cpp: accounting spill files (policy/plugins/acct_spill.c): records encode and
// decode, damage is detected, append and pop from the end (last first, same-table stop), a
// torn tail is cut on open, the lock keeps a second owner out, empty files are removed, and
// files of other processes are found as orphans while ours and locked ones are not.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "plugins/acct_spill.h"
}

namespace
{

struct TmpDir {
    std::string path;
    TmpDir()
    {
        char t[] = "/tmp/acct_spill_test.XXXXXX";
        REQUIRE(mkdtemp(t) != nullptr);
        path = t;
    }
    ~TmpDir()
    {
        DIR *d = opendir(path.c_str());
        if (d) {
            for (dirent *e; (e = readdir(d)) != nullptr;)
                if (e->d_name[0] != '.')
                    unlink((path + "/" + e->d_name).c_str());
            closedir(d);
        }
        rmdir(path.c_str());
    }
};

pol_acct_spill_rec rec(const std::string &table, const std::string &key, uint64_t count,
                       const std::string &time = "2024-05")
{
    pol_acct_spill_rec r{};
    const uint64_t m[POL_ACCT_METRICS] = {count, count * 2, count * 100, count * 200};
    pol_acct_spill_rec_set(&r, table.data(), table.size(), key.data(), key.size(), time.data(),
                           time.size(), m);
    return r;
}

off_t size_of(const std::string &path)
{
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

} // namespace

TEST_CASE("records round-trip, the longest fields included", "[spill]")
{
    std::string t(POL_ACCT_TABLE_BYTES_MAX, 't'), k(POL_ACCT_KEY_BYTES_MAX, 'k'),
        tm(POL_ACCT_TIME_BYTES_MAX, 'm');
    for (const pol_acct_spill_rec &in : {rec("acct_client_address", "192.168.0.1", 7),
                                         rec(t, k, UINT64_MAX / 300, tm), rec("x", "", 1, "")}) {
        unsigned char buf[POL_ACCT_SPILL_RECORD_BYTES];
        pol_acct_spill_encode(&in, buf);
        pol_acct_spill_rec out{};
        REQUIRE(pol_acct_spill_decode(buf, &out) == 0);
        CHECK(std::string(out.table, out.table_len) == std::string(in.table, in.table_len));
        CHECK(std::string(out.key, out.key_len) == std::string(in.key, in.key_len));
        CHECK(std::string(out.time, out.time_len) == std::string(in.time, in.time_len));
        for (int m = 0; m < POL_ACCT_METRICS; m++)
            CHECK(out.m[m] == in.m[m]);
    }
}

TEST_CASE("a damaged record is refused: any flipped byte, bad magic", "[spill]")
{
    pol_acct_spill_rec in = rec("acct_sender", "a@b.example", 3);
    unsigned char buf[POL_ACCT_SPILL_RECORD_BYTES];
    pol_acct_spill_encode(&in, buf);
    pol_acct_spill_rec out{};
    for (size_t i = 0; i < sizeof(buf); i += 37) {
        unsigned char copy[sizeof(buf)];
        memcpy(copy, buf, sizeof(buf));
        copy[i] ^= 0x40;
        INFO("byte " << i);
        CHECK(pol_acct_spill_decode(copy, &out) == -EINVAL);
    }
    unsigned char zero[POL_ACCT_SPILL_RECORD_BYTES] = {};
    CHECK(pol_acct_spill_decode(zero, &out) == -EINVAL);
}

TEST_CASE("append, then pop from the end; same_table stops at a table change", "[spill]")
{
    TmpDir dir;
    pol_acct_spill s;
    pol_acct_spill_init(&s);
    REQUIRE(pol_acct_spill_path(dir.path.c_str(), 0xabcULL, 3, s.path, sizeof(s.path)) == 0);
    std::vector<pol_acct_spill_rec> recs;
    for (int i = 0; i < 20; i++) // 20 records, one write of 16 and one of 4
        recs.push_back(rec(i < 12 ? "acct_a" : "acct_b", "k" + std::to_string(i), (uint64_t)i));
    REQUIRE(pol_acct_spill_append(&s, recs.data(), recs.size()) == 0); // opens lazily
    CHECK(s.records == 20);
    CHECK(size_of(s.path) == 20 * POL_ACCT_SPILL_RECORD_BYTES);
    pol_acct_spill_rec out[32];
    int n = pol_acct_spill_pop(&s, out, 3, false, nullptr);
    REQUIRE(n == 3);
    CHECK(std::string(out[0].key) == "k19");
    CHECK(std::string(out[2].key) == "k17");
    CHECK(s.records == 17);
    CHECK(size_of(s.path) == 17 * POL_ACCT_SPILL_RECORD_BYTES);
    n = pol_acct_spill_pop(&s, out, 32, true, nullptr); // k16..k12 are acct_b
    REQUIRE(n == 5);
    CHECK(std::string(out[4].key) == "k12");
    n = pol_acct_spill_pop(&s, out, 32, true, nullptr);
    REQUIRE(n == 12);
    CHECK(std::string(out[11].key) == "k0");
    CHECK(out[11].m[2] == 0);
    CHECK(pol_acct_spill_pop(&s, out, 32, true, nullptr) == 0);
    pol_acct_spill_remove_if_empty(&s);
    CHECK(size_of(s.path) == -1);
    CHECK(s.fd == -1);
}

TEST_CASE("opening cuts a torn tail and skips damaged records when popping", "[spill]")
{
    TmpDir dir;
    std::string path = dir.path + "/acct-0000000000000001-1-0.spill";
    {
        pol_acct_spill s;
        pol_acct_spill_init(&s);
        REQUIRE(pol_acct_spill_open(&s, path.c_str()) == 0);
        std::vector<pol_acct_spill_rec> recs = {rec("t", "a", 1), rec("t", "b", 2),
                                                rec("t", "c", 3)};
        REQUIRE(pol_acct_spill_append(&s, recs.data(), recs.size()) == 0);
        pol_acct_spill_close(&s);
    }
    // Damage b, and add half a record (a crash while appending).
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    unsigned char junk = 0xff;
    REQUIRE(pwrite(fd, &junk, 1, POL_ACCT_SPILL_RECORD_BYTES + 100) == 1);
    std::string half(POL_ACCT_SPILL_RECORD_BYTES / 2, 'x');
    REQUIRE(pwrite(fd, half.data(), half.size(), 3 * POL_ACCT_SPILL_RECORD_BYTES) ==
            (ssize_t)half.size());
    close(fd);
    pol_acct_spill s;
    pol_acct_spill_init(&s);
    REQUIRE(pol_acct_spill_open(&s, path.c_str()) == 0);
    CHECK(s.records == 3);
    CHECK(size_of(path) == 3 * POL_ACCT_SPILL_RECORD_BYTES);
    pol_acct_spill_rec out[8];
    uint64_t bad = 0;
    REQUIRE(pol_acct_spill_pop(&s, out, 8, false, &bad) == 2);
    CHECK(bad == 1);
    CHECK(std::string(out[0].key) == "c");
    CHECK(std::string(out[1].key) == "a");
    pol_acct_spill_close(&s);
}

TEST_CASE("a file held by one owner cannot be opened by another", "[spill]")
{
    TmpDir dir;
    std::string path = dir.path + "/acct-0000000000000001-1-0.spill";
    pol_acct_spill a, b;
    pol_acct_spill_init(&a);
    pol_acct_spill_init(&b);
    REQUIRE(pol_acct_spill_open(&a, path.c_str()) == 0);
    CHECK(pol_acct_spill_open(&b, path.c_str()) == -EWOULDBLOCK);
    pol_acct_spill_close(&a);
    CHECK(pol_acct_spill_open(&b, path.c_str()) == 0);
    pol_acct_spill_close(&b);
}

TEST_CASE("orphans: other processes' unlocked files of this ident only", "[spill]")
{
    TmpDir dir;
    const uint64_t ident = 0x1234;
    auto name = [&](uint64_t id, long pid, unsigned shard) {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s/acct-%016llx-%ld-%u.spill", dir.path.c_str(),
                 (unsigned long long)id, pid, shard);
        return std::string(buf);
    };
    auto make = [&](const std::string &path, int records) {
        pol_acct_spill s;
        pol_acct_spill_init(&s);
        REQUIRE(pol_acct_spill_open(&s, path.c_str()) == 0);
        std::vector<pol_acct_spill_rec> r(records, rec("t", "k", 1));
        if (records)
            REQUIRE(pol_acct_spill_append(&s, r.data(), r.size()) == 0);
        pol_acct_spill_close(&s);
    };
    make(name(ident, 999999, 0), 2);         // a dead run's file: found
    make(name(ident, 999998, 1), 1);         // another: found
    make(name(0x9999, 999999, 0), 5);        // another database: not ours
    make(name(ident, (long)getpid(), 0), 1); // our own pid: skipped
    pol_acct_spill held;                     // a live owner: skipped
    pol_acct_spill_init(&held);
    make(name(ident, 999997, 0), 1);
    REQUIRE(pol_acct_spill_open(&held, name(ident, 999997, 0).c_str()) == 0);
    make(dir.path + "/unrelated.spill", 1);

    std::vector<pol_acct_spill> found;
    auto cb = [](void *ctx, pol_acct_spill *s) {
        static_cast<std::vector<pol_acct_spill> *>(ctx)->push_back(*s);
    };
    CHECK(pol_acct_spill_orphans(dir.path.c_str(), ident, cb, &found) == 2);
    REQUIRE(found.size() == 2);
    uint64_t records = 0;
    for (pol_acct_spill &s : found) {
        records += s.records;
        CHECK(s.fd >= 0);
        pol_acct_spill_close(&s);
    }
    CHECK(records == 3);
    pol_acct_spill_close(&held);
    CHECK(pol_acct_spill_orphans((dir.path + "/missing").c_str(), ident, cb, &found) == 0);
}
