// map_test.cpp: read-only key/value files (policy/plugins/ldb_map.c): format detection, the
// db_file forms (hash:/cdb: prefixes, plain paths), lookups in tables built by the real postmap
// and in a libdb-written AWL file with each NUL rule, the value and key limits at N and N+1,
// re-opening a file postmap rewrote (in place, hash:, seen at once through the open file) or
// replaced (rename, cdb:, seen at the next check of the path), the shared
// lock while a writer holds the file, and keeping the old handle when the new file is broken.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>

#include <cstdio>
#include <string>

#include "ldb_testutil.hpp"

extern "C" {
#include "plugins/ldb_map.h"
}

using namespace ldbtest;

namespace
{

struct Spec {
    int rc;
    struct ldb_map_spec spec;
    std::string err;
};

Spec parse(const std::string &text, bool prefixes = true)
{
    Spec s{};
    char err[512] = "";
    s.rc = ldb_map_spec_parse(text.c_str(), prefixes, &s.spec, err, sizeof err);
    s.err = err;
    return s;
}

// One open map and its lookups; begin/end around each get.
class Map
{
  public:
    explicit Map(const std::string &text, bool prefixes = true)
    {
        Spec s = parse(text, prefixes);
        INFO(s.err);
        REQUIRE(s.rc == 0);
        char err[512] = "";
        int rc = ldb_map_open(&s.spec, &map_, err, sizeof err);
        INFO(err);
        REQUIRE(rc == 0);
    }
    ~Map()
    {
        ldb_map_close(map_, nullptr);
    }
    Map(const Map &) = delete;
    Map &operator=(const Map &) = delete;

    // The value, "<missing>", "<busy>" or "<error: ...>".
    std::string get(const std::string &key, uint64_t now_ms = 0)
    {
        char err[512] = "";
        enum ldb_status st = ldb_map_begin(map_, now_ms, err, sizeof err);
        if (st == LDB_BUSY)
            return "<busy>";
        if (st != LDB_OK)
            return std::string("<error: ") + err + ">";
        size_t len = 0;
        st = ldb_map_get(map_, key.data(), key.size(), val_, &len, err, sizeof err);
        ldb_map_end(map_);
        if (st == LDB_MISSING)
            return "<missing>";
        if (st != LDB_OK)
            return std::string("<error: ") + err + ">";
        CHECK(val_[len] == '\0');
        return std::string(val_, len);
    }
    struct ldb_map_stats stats() const
    {
        struct ldb_map_stats s;
        ldb_map_stats(map_, &s);
        return s;
    }

  private:
    struct ldb_map *map_ = nullptr;
    char val_[LDB_VALUE_BYTES_MAX + 1];
};

const std::string table = "123.123.123.123 OK\n"
                          "123.124 OK\n"
                          "fe81 OK\n"
                          "111.111.111.1 REJECT you are not welcome\n";

} // namespace

TEST_CASE("formats are told by content", "[map]")
{
    TempDir dir;
    std::string db = postmap(dir, "hash", "t", table);
    std::string head = read_file(db).substr(0, 2048);
    auto detect = [](const std::string &h, uint64_t size) {
        return ldb_map_detect(reinterpret_cast<const unsigned char *>(h.data()), h.size(), size);
    };
    CHECK(detect(head, 12288) == LDB_MAP_HASH);
    std::string swapped = head; // a big-endian file: the magic's bytes reversed
    std::swap(swapped[12], swapped[15]);
    std::swap(swapped[13], swapped[14]);
    CHECK(detect(swapped, 12288) == LDB_MAP_HASH);
    std::string btree = head;
    btree[25] = 9; // P_BTREEMETA
    CHECK(detect(btree, 12288) == -1);

    std::string cdb = read_file(postmap(dir, "cdb", "c", table));
    CHECK(detect(cdb.substr(0, 2048), cdb.size()) == LDB_MAP_CDB);
    CHECK(detect(cdb.substr(0, 2047), cdb.size()) == -1);
    std::string empty_cdb;
    for (int i = 0; i < 256; i++)
        empty_cdb += std::string("\x00\x08\x00\x00\x00\x00\x00\x00", 8);
    CHECK(detect(empty_cdb, 2048) == LDB_MAP_CDB);
    CHECK(detect(empty_cdb, 2047) == -1);
    std::string bad = empty_cdb;
    bad[2047] = 1; // the last table claims 2^24 slots
    CHECK(detect(bad, 2048) == -1);
    CHECK(detect(std::string(2048, 'x'), 2048) == -1);
    CHECK(detect("", 0) == -1);
}

TEST_CASE("db_file forms: postfix prefixes and plain paths", "[map]")
{
    TempDir dir;
    postmap(dir, "hash", "h", table);
    postmap(dir, "cdb", "c", table);

    Spec s = parse("hash:" + dir.file("h"));
    CHECK(s.rc == 0);
    CHECK(s.spec.kind == LDB_MAP_HASH);
    CHECK(s.spec.nul == LDB_NUL_ONE);
    CHECK(std::string(s.spec.path) == dir.file("h.db"));
    s = parse("cdb:" + dir.file("c"));
    CHECK(s.rc == 0);
    CHECK(s.spec.kind == LDB_MAP_CDB);
    CHECK(s.spec.nul == LDB_NUL_BOTH);
    CHECK(std::string(s.spec.path) == dir.file("c.cdb"));
    s = parse(dir.file("h.db"));
    CHECK(s.rc == 0);
    CHECK(s.spec.kind == LDB_MAP_HASH);
    s = parse(dir.file("c.cdb")); // 2.05's plain path, the content decides
    CHECK(s.rc == 0);
    CHECK(s.spec.kind == LDB_MAP_CDB);

    s = parse("hash:" + dir.file("c.cdb"));
    CHECK(s.rc == -1);
    CHECK(s.err == "cannot open " + dir.file("c.cdb.db") + ": No such file or directory");
    std::rename(dir.file("c.cdb").c_str(), dir.file("x.db").c_str());
    s = parse("hash:" + dir.file("x"));
    CHECK(s.rc == -1);
    CHECK(s.err == dir.file("x.db") + " is not a Berkeley DB hash file");
    std::rename(dir.file("h.db").c_str(), dir.file("y.cdb").c_str());
    s = parse("cdb:" + dir.file("y"));
    CHECK(s.err == dir.file("y.cdb") + " is not a cdb file");
    s = parse(dir.file("x.db"), false); // SaAwlLookup: Berkeley DB hash only
    CHECK(s.err == dir.file("x.db") + " is not a Berkeley DB hash file");
    s = parse("hash:" + dir.file("h"), false); // no prefixes there: a path
    CHECK(s.err == "cannot open hash:" + dir.file("h") + ": No such file or directory");
    s = parse(dir.write("text", table));
    CHECK(s.err == dir.file("text") + " is not a Berkeley DB hash or cdb file");
    s = parse(dir.path());
    CHECK(s.rc == -1);
    s = parse("");
    CHECK(s.err == "db_file \"\" is empty");
    s = parse("cdb:");
    CHECK(s.err == "db_file \"cdb:\" is empty");
    s = parse(std::string(LDB_PATH_BYTES_MAX, 'a'));
    CHECK(s.err.find("is too long") != std::string::npos);

    bdb_write(dir.file("btree.db"), {{"a", "b"}}, DB_BTREE);
    s = parse(dir.file("btree.db"));
    CHECK(s.err == dir.file("btree.db") + " is not a Berkeley DB hash or cdb file");
}

TEST_CASE("lookups in postmap's hash: and cdb: tables", "[map]")
{
    TempDir dir;
    postmap(dir, "hash", "h", table);
    postmap(dir, "cdb", "c", table);
    for (std::string spec : {"hash:" + dir.file("h"), "cdb:" + dir.file("c")}) {
        INFO(spec);
        Map m(spec);
        CHECK(m.get("123.123.123.123") == "OK");
        CHECK(m.get("123.124") == "OK");
        CHECK(m.get("111.111.111.1") == "REJECT you are not welcome");
        CHECK(m.get("123.123.123") == "<missing>");
        CHECK(m.get("") == "<missing>");
        CHECK(m.get(std::string("123.124\0", 8)) == "<missing>");
        CHECK(m.stats().lookups == 6);
        CHECK(m.stats().errors == 0);
    }
}

TEST_CASE("NUL rules: postmap hash: with, AWL without, cdb: both", "[map]")
{
    TempDir dir;
    // a hash file with keys without NUL: 2.05 (and PostfixMap) do not find them
    bdb_write(dir.file("plain.db"), {{"k", "v"}, {std::string("n\0", 2), std::string("w\0", 2)}});
    Map with_nul(dir.file("plain.db"));
    CHECK(with_nul.get("k") == "<missing>");
    CHECK(with_nul.get("n") == "w");
    Map awl(dir.file("plain.db"), false);
    CHECK(awl.get("k") == "v");
    CHECK(awl.get("n") == "<missing>");
    CHECK(awl.get(std::string("n\0", 2)) == std::string("w\0", 2)); // kept as stored

    // cdb: postmap writes keys without NUL; a file with NUL keys is read too
    std::string cdb = postmap(dir, "cdb", "c", "a 1\n");
    Map c(cdb);
    CHECK(c.get("a") == "1");
    CHECK(c.get("b") == "<missing>");
}

TEST_CASE("value and key limits at N and N+1", "[map]")
{
    TempDir dir;
    std::string n(LDB_VALUE_BYTES_MAX, 'v');
    bdb_write(dir.file("awl.db"), {{"n", n}, {"n1", n + "v"}});
    Map awl(dir.file("awl.db"), false);
    CHECK(awl.get("n") == n);
    CHECK(awl.get("n1") == "<error: cannot read " + dir.file("awl.db") + ": value too long>");
    CHECK(awl.stats().errors == 1);
    // postmap's NUL counts: N stored bytes including it
    std::string m(LDB_VALUE_BYTES_MAX - 1, 'v');
    bdb_write(dir.file("pm.db"),
              {{std::string("n\0", 2), m + '\0'}, {std::string("n1\0", 3), m + "v" + '\0'}});
    Map pm(dir.file("pm.db"));
    CHECK(pm.get("n") == m);
    CHECK(pm.get("n1").rfind("<error:", 0) == 0);

    std::string key(LDB_KEY_BYTES_MAX, 'k');
    bdb_write(dir.file("keys.db"), {{key, "at max"}, {key + "k", "past max"}});
    Map keys(dir.file("keys.db"), false);
    CHECK(keys.get(key) == "at max");
    CHECK(keys.get(key + "k") == "<missing>");
}

TEST_CASE("a table postmap rewrote or replaced is opened again", "[map]")
{
    TempDir dir;
    postmap(dir, "hash", "h", "1.2.3.4 OK\n");
    postmap(dir, "cdb", "c", "1.2.3.4 OK\n");
    for (std::string type : {"hash", "cdb"}) {
        INFO(type);
        std::string name = type == "hash" ? "h" : "c";
        Map m(type + ":" + dir.file(name));
        CHECK(m.get("1.2.3.4", 5000) == "OK");
        CHECK(m.stats().checks == 1);
        postmap(dir, type, name, "1.2.3.4 REJECT\n5.6.7.8 OK\n");
        if (type == "cdb") {
            // replaced by rename: within the check interval the old handle answers (no stat)
            CHECK(m.get("5.6.7.8", 5000 + LDB_MAP_CHECK_MS - 1) == "<missing>");
            CHECK(m.stats().checks == 1);
        } else {
            // rewritten in place: the open file itself shows it, at once
            CHECK(m.get("5.6.7.8", 5000 + 1) == "OK");
            CHECK(m.stats().checks == 2);
            CHECK(m.stats().reopens == 1);
            // and the path is not looked at again before the interval is over
            CHECK(m.get("5.6.7.8", 5000 + LDB_MAP_CHECK_MS) == "OK");
            CHECK(m.stats().checks == 2);
            CHECK(m.get("1.2.3.4", 5000 + 2 * LDB_MAP_CHECK_MS) == "REJECT");
            CHECK(m.stats().checks == 3);
            CHECK(m.stats().reopens == 1);
            continue;
        }
        CHECK(m.get("1.2.3.4", 5000 + LDB_MAP_CHECK_MS) == "REJECT");
        CHECK(m.get("5.6.7.8", 5000 + LDB_MAP_CHECK_MS) == "OK");
        CHECK(m.stats().checks == 2);
        CHECK(m.stats().reopens == 1);
        // unchanged: checked, not reopened
        CHECK(m.get("5.6.7.8", 5000 + 2 * LDB_MAP_CHECK_MS) == "OK");
        CHECK(m.stats().checks == 3);
        CHECK(m.stats().reopens == 1);
    }
}

TEST_CASE("a writer's lock makes lookups wait; a broken new file keeps the old one", "[map]")
{
    TempDir dir;
    std::string db = postmap(dir, "hash", "h", "1.2.3.4 OK\n");
    Map m("hash:" + dir.file("h"));
    CHECK(m.get("1.2.3.4", 1) == "OK");
    int fd = open(db.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(flock(fd, LOCK_EX) == 0); // as postmap holds it while it rewrites
    CHECK(m.get("1.2.3.4", 2) == "<busy>");
    CHECK(m.stats().busy == 1);
    flock(fd, LOCK_UN);
    close(fd);
    // after a busy begin the file is checked at once, whatever the interval
    uint64_t checks = m.stats().checks;
    CHECK(m.get("1.2.3.4", 3) == "OK");
    CHECK(m.stats().checks == checks + 1);

    // a file that is no table replaces it: keep answering from the old one
    std::string junk = dir.write("junk", std::string(4096, 'j'));
    REQUIRE(std::rename(junk.c_str(), db.c_str()) == 0);
    CHECK(m.get("1.2.3.4", 10000) == "OK");
    CHECK(m.stats().reopen_fails == 1);
    // and a removed file too
    std::remove(db.c_str());
    CHECK(m.get("1.2.3.4", 20000) == "OK");
    CHECK(m.stats().reopen_fails == 1);
}

TEST_CASE("an AWL file updated in place is read again at the next session", "[map]")
{
    TempDir dir;
    std::string awl = dir.file("auto-whitelist");
    bdb_write(awl, {{"a@b|ip=1.2", "3"}});
    Map m(awl, false);
    CHECK(m.get("a@b|ip=1.2", 1) == "3");
    // as SpamAssassin does: the same file opened read-write and a value stored
    DB *db = nullptr;
    REQUIRE(db_create(&db, nullptr, 0) == 0);
    REQUIRE(db->open(db, nullptr, awl.c_str(), nullptr, DB_HASH, 0, 0644) == 0);
    DBT k, v;
    std::memset(&k, 0, sizeof k);
    std::memset(&v, 0, sizeof v);
    std::string key = "a@b|ip=1.2", val = "4";
    for (int i = 0; i < 200; i++) { // enough to change the file's size, not only its pages
        std::string filler = "filler" + std::to_string(i);
        k.data = filler.data();
        k.size = static_cast<u_int32_t>(filler.size());
        v.data = filler.data();
        v.size = static_cast<u_int32_t>(filler.size());
        REQUIRE(db->put(db, nullptr, &k, &v, 0) == 0);
    }
    k.data = key.data();
    k.size = static_cast<u_int32_t>(key.size());
    v.data = val.data();
    v.size = static_cast<u_int32_t>(val.size());
    REQUIRE(db->put(db, nullptr, &k, &v, 0) == 0);
    REQUIRE(db->close(db, 0) == 0);
    CHECK(m.get("a@b|ip=1.2", 2) == "4"); // within the check interval: seen through the fd
    CHECK(m.get("filler7", 3) == "filler7");
    CHECK(m.stats().reopens == 1);
}
