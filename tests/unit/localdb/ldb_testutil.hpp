// ldb_testutil.hpp: what the local-database tests share: a private temporary directory, text
// files, Postfix tables built by the real `postmap` (hash: and cdb:), Berkeley DB hash files
// written with libdb (SpamAssassin's AWL: keys and values without NUL), and the test's exit
// when a tool is missing (77, SKIP; a failure in CI, where .ci/run installs everything).
// Header-only, C++17.
#ifndef LDB_TESTUTIL_HPP
#define LDB_TESTUTIL_HPP

#include <db.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ldbtest
{

// Outside CI: exit 77 (SKIP). In CI (CI set, not 0): the missing tool is a failure.
[[noreturn]] inline void skip_or_fail(const std::string &why)
{
    const char *ci = std::getenv("CI");
    bool in_ci = ci != nullptr && *ci != '\0' && std::strcmp(ci, "0") != 0;
    std::cerr << (in_ci ? "FAIL (CI): " : "SKIP: ") << why << "\n";
    std::exit(in_ci ? 1 : 77);
}

inline bool executable(const std::string &path)
{
    return access(path.c_str(), X_OK) == 0;
}

class TempDir
{
  public:
    TempDir()
    {
        char name[] = "/tmp/localdb_test.XXXXXX";
        if (mkdtemp(name) == nullptr)
            skip_or_fail("cannot create a temporary directory");
        chmod(name, 0755);
        path_ = name;
    }
    ~TempDir()
    {
        std::string cmd = "rm -rf '" + path_ + "'";
        if (std::system(cmd.c_str()) != 0)
            std::cerr << "cannot remove " << path_ << "\n";
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const
    {
        return path_;
    }
    std::string file(const std::string &name) const
    {
        return path_ + "/" + name;
    }
    std::string write(const std::string &name, const std::string &content) const
    {
        std::string p = file(name);
        std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
        return p;
    }

  private:
    std::string path_;
};

inline std::string read_file(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Runs argv, returns the exit status (-1 when it could not run).
inline int run(const std::vector<std::string> &argv)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        std::vector<char *> args;
        for (auto &a : argv)
            args.push_back(const_cast<char *>(a.c_str()));
        args.push_back(nullptr);
        execv(args[0], args.data());
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline const char *const postmap_bin = "/usr/sbin/postmap";

// Builds TYPE:DIR/NAME (TYPE hash or cdb) from the text with the real postmap, which needs a
// main.cf: an empty one in DIR/postfix-etc (-c). Returns the table file's path.
inline std::string postmap(const TempDir &dir, const std::string &type, const std::string &name,
                           const std::string &text)
{
    if (!executable(postmap_bin))
        skip_or_fail(std::string(postmap_bin) + " is not installed (Debian package postfix)");
    std::string etc = dir.file("postfix-etc");
    mkdir(etc.c_str(), 0755);
    dir.write("postfix-etc/main.cf", "");
    std::string src = dir.write(name, text);
    int rc = run({postmap_bin, "-c", etc, type + ":" + src});
    if (rc != 0 && type == "cdb")
        skip_or_fail("postmap cannot write cdb: tables (Debian package postfix-cdb)");
    if (rc != 0)
        skip_or_fail("postmap " + type + ":" + src + " failed");
    return src + (type == "cdb" ? ".cdb" : ".db");
}

// Writes a Berkeley DB file of this type (DB_HASH, DB_BTREE) with the pairs as given (no NUL
// added), as SpamAssassin's AWL (DB_File) stores them.
inline void bdb_write(const std::string &path,
                      const std::vector<std::pair<std::string, std::string>> &pairs,
                      DBTYPE type = DB_HASH)
{
    std::remove(path.c_str());
    DB *db = nullptr;
    if (db_create(&db, nullptr, 0) != 0)
        skip_or_fail("db_create failed");
    if (db->open(db, nullptr, path.c_str(), nullptr, type, DB_CREATE, 0644) != 0)
        skip_or_fail("cannot create " + path);
    for (auto &kv : pairs) {
        DBT k, v;
        std::memset(&k, 0, sizeof k);
        std::memset(&v, 0, sizeof v);
        k.data = const_cast<char *>(kv.first.data());
        k.size = static_cast<u_int32_t>(kv.first.size());
        v.data = const_cast<char *>(kv.second.data());
        v.size = static_cast<u_int32_t>(kv.second.size());
        db->put(db, nullptr, &k, &v, 0);
    }
    db->close(db, 0);
}

} // namespace ldbtest

#endif
