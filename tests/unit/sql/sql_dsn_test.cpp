// sql_dsn_test.cpp: the pure parsers behind the Sql connection (policy/sql_dsn.c): the DSN
// table (good and bad, every driver), libpq conninfo quoting checked by libpq's own parser,
// the `?` placeholder table (strings, identifiers, comments, dollar quotes, escapes, $n,
// mixing), output buffers at N and N+1 bytes, identifier quoting, and every input flush
// against a guard page.
extern "C" {
#include "sql_dsn.h"
}

#include <libpq-fe.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <string>

#include <catch2/catch.hpp>

namespace
{

// Copies s so that its last byte (the NUL) is the last byte before a PROT_NONE page.
struct Guarded {
    char *base = nullptr;
    size_t map_len = 0;
    char *str = nullptr;
    explicit Guarded(const std::string &s)
    {
        size_t pg = size_t(sysconf(_SC_PAGESIZE));
        size_t pages = (s.size() + 1 + pg - 1) / pg;
        map_len = (pages + 1) * pg;
        void *m = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(m != MAP_FAILED);
        base = static_cast<char *>(m);
        REQUIRE(mprotect(base + pages * pg, pg, PROT_NONE) == 0);
        str = base + pages * pg - (s.size() + 1);
        memcpy(str, s.c_str(), s.size() + 1);
    }
    ~Guarded() { munmap(base, map_len); }
};

std::map<std::string, std::string> conninfo_parse(const char *ci)
{
    char *errmsg = nullptr;
    PQconninfoOption *opts = PQconninfoParse(ci, &errmsg);
    INFO(ci);
    INFO((errmsg ? errmsg : ""));
    REQUIRE(opts != nullptr);
    std::map<std::string, std::string> m;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val)
            m[o->keyword] = o->val;
    PQconninfoFree(opts);
    return m;
}

struct Parsed {
    int rc;
    pol_sql_dsn dsn;
    std::string err;
};

Parsed parse(const std::string &dsn, const char *user = nullptr, const char *pass = nullptr)
{
    Guarded g(dsn);
    Parsed p{};
    char err[512] = "";
    p.rc = pol_sql_dsn_parse(g.str, user, pass, &p.dsn, err, sizeof(err));
    p.err = err;
    return p;
}

std::string xlate(const std::string &sql, long *count, size_t out_len = 4096)
{
    Guarded g(sql);
    std::string out(out_len, '\xff');
    *count = pol_sql_placeholders_pg(g.str, sql.size(), &out[0], out_len);
    return *count >= 0 ? std::string(out.c_str()) : std::string();
}

} // namespace

TEST_CASE("SQLite DSNs", "[sql_dsn]")
{
    struct {
        const char *dsn;
        const char *path;
        bool memory, uri;
    } good[] = {
        {"dbi:SQLite:dbname=/var/lib/mtpolicyd/mtpolicyd.sqlite",
         "/var/lib/mtpolicyd/mtpolicyd.sqlite", false, false},
        {"DBI:SQLite:/tmp/x.db", "/tmp/x.db", false, false},
        {"dbi:SQLite:db=rel.db", "rel.db", false, false},
        {"dbi:SQLite:database = spaced.db ", "spaced.db", false, false},
        {"dbi:SQLite::memory:", ":memory:", true, false},
        {"dbi:SQLite:dbname=:memory:", ":memory:", true, false},
        {"dbi:SQLite:", "", true, false},
        {"dbi:sqlite:x.db", "x.db", false, false},
        {"dbi:SQLite:uri=file:/tmp/x.db?mode=rwc", "file:/tmp/x.db?mode=rwc", false, true},
        {"dbi:SQLite:file:/tmp/y.db", "file:/tmp/y.db", false, true},
    };
    for (auto &t : good) {
        INFO(t.dsn);
        Parsed p = parse(t.dsn);
        INFO(p.err);
        REQUIRE(p.rc == 0);
        CHECK(p.dsn.driver == POL_SQL_SQLITE);
        CHECK(std::string(p.dsn.path) == t.path);
        CHECK(p.dsn.memory == t.memory);
        CHECK(p.dsn.uri == t.uri);
        CHECK(p.dsn.warning[0] == '\0');
    }
    Parsed w = parse("dbi:SQLite:dbname=/x.db;sqlite_unicode=1");
    REQUIRE(w.rc == 0);
    CHECK(std::string(w.dsn.path) == "/x.db");
    CHECK(std::string(w.dsn.warning) == "DSN attribute sqlite_unicode ignored");
}

TEST_CASE("PostgreSQL DSNs become quoted libpq conninfo", "[sql_dsn]")
{
    Parsed p = parse("dbi:Pg:dbname=policyd;host=127.0.0.1;port=5432", "policyd", "pa'ss\\word");
    INFO(p.err);
    REQUIRE(p.rc == 0);
    CHECK(p.dsn.driver == POL_SQL_PG);
    CHECK(std::string(p.dsn.host) == "127.0.0.1");
    CHECK(std::string(p.dsn.conninfo) ==
          "dbname='policyd' host='127.0.0.1' port='5432' user='policyd' password='pa\\'ss\\\\word'");
    auto m = conninfo_parse(p.dsn.conninfo);
    CHECK(m["dbname"] == "policyd");
    CHECK(m["host"] == "127.0.0.1");
    CHECK(m["port"] == "5432");
    CHECK(m["user"] == "policyd");
    CHECK(m["password"] == "pa'ss\\word");

    // Aliases, quoting, blanks, an empty part, the block's user over the DSN's.
    Parsed q = parse("DBI:pg:database=\"my db\" ; host = 'h x' ;; user=dsnuser", "blockuser", "");
    REQUIRE(q.rc == 0);
    m = conninfo_parse(q.dsn.conninfo);
    CHECK(m["dbname"] == "my db");
    CHECK(m["host"] == "h x");
    CHECK(m["user"] == "blockuser");
    CHECK(m.count("password") == 0);
    Parsed r = parse("dbi:Pg:db=x");
    REQUIRE(r.rc == 0);
    CHECK(std::string(r.dsn.conninfo) == "dbname='x'");
    CHECK(std::string(r.dsn.host).empty());
    Parsed e = parse("dbi:Pg:");
    REQUIRE(e.rc == 0);
    CHECK(std::string(e.dsn.conninfo).empty());
    // A value that tries to inject another keyword stays one value.
    Parsed inj = parse("dbi:Pg:dbname=x' host='evil");
    REQUIRE(inj.rc == 0);
    m = conninfo_parse(inj.dsn.conninfo);
    CHECK(m["dbname"] == "x' host='evil");
    CHECK(m.count("host") == 0);
}

TEST_CASE("MySQL DSNs as DBD::mysql parses them", "[sql_dsn]")
{
    Parsed a = parse("dbi:mysql:database=policyd;host=127.0.0.1;port=3307", "mtpolicyd", "pw");
    REQUIRE(a.rc == 0);
    CHECK(a.dsn.driver == POL_SQL_MYSQL);
    CHECK(std::string(a.dsn.database) == "policyd");
    CHECK(std::string(a.dsn.host) == "127.0.0.1");
    CHECK(a.dsn.port == 3307);
    CHECK(std::string(a.dsn.user) == "mtpolicyd");
    CHECK(std::string(a.dsn.password) == "pw");
    // Positional parts: database, host, port; ':' separates like ';'; IPv6 in brackets.
    Parsed b = parse("DBI:MariaDB:mail:[::1]:3310");
    REQUIRE(b.rc == 0);
    CHECK(b.dsn.driver == POL_SQL_MYSQL);
    CHECK(std::string(b.dsn.database) == "mail");
    CHECK(std::string(b.dsn.host) == "::1");
    CHECK(b.dsn.port == 3310);
    // db/dbname/hostname aliases, the socket, DSN credentials unless the block has its own.
    Parsed c = parse("dbi:mysql:dbname=x;hostname=localhost;mysql_socket=/run/m.sock;"
                     "user=u;password=p;mysql_enable_utf8=1",
                     "", "blockpw");
    REQUIRE(c.rc == 0);
    CHECK(std::string(c.dsn.database) == "x");
    CHECK(std::string(c.dsn.host) == "localhost");
    CHECK(std::string(c.dsn.socket) == "/run/m.sock");
    CHECK(std::string(c.dsn.user) == "u");
    CHECK(std::string(c.dsn.password) == "blockpw");
    CHECK(std::string(c.dsn.warning) == "DSN attribute mysql_enable_utf8 ignored");
    Parsed d = parse("dbi:mysql:db=x;port=3306;y");
    REQUIRE(d.rc == 0);
    CHECK(std::string(d.dsn.host) == "y"); // a bare part fills the first positional left
    CHECK(d.dsn.port == 3306);
}

TEST_CASE("bad DSNs are refused with a reason", "[sql_dsn]")
{
    struct {
        const char *dsn;
        const char *msg;
    } bad[] = {
        {"dbi:Oracle:x",
         "unsupported DBI driver 'Oracle' (supported drivers: SQLite, Pg, mysql, MariaDB)"},
        {"dbi:mysql:database=x;port=12a", "dbi:mysql: bad port '12a'"},
        {"dbi:mysql:database=x;port=65536", "dbi:mysql: bad port '65536'"},
        {"dbi:mysql:database=x;frob=1", "dbi:mysql: unsupported DSN attribute 'frob'"},
        {"mysql:x", "dsn 'mysql:x' does not start with dbi:DRIVER:"},
        {"dbi:", "dsn 'dbi:' does not start with dbi:DRIVER:"},
        {"dbi::memory:", "dsn 'dbi::memory:' does not start with dbi:DRIVER:"},
        {"dbi:SQLite", "dsn 'dbi:SQLite' does not start with dbi:DRIVER:"},
        {"", "dsn '' does not start with dbi:DRIVER:"},
        {"dbi:Pg(AutoCommit=>0):dbname=x",
         "dsn 'dbi:Pg(AutoCommit=>0):dbname=x': DBI attributes in the DSN are not supported"},
        {"dbi:Pg:dbname", "dbi:Pg: DSN part 'dbname' is not key=value"},
        {"dbi:Pg:=x", "dbi:Pg: DSN part '=x' is not key=value"},
        {"dbi:Pg:db name=x", "dbi:Pg: bad DSN key 'db name'"},
        {"dbi:SQLite:dbname=x;foo=1", "dbi:SQLite: unsupported DSN attribute 'foo'"},
        {"dbi:SQLite:dbname=x;oops", "dbi:SQLite: DSN part 'oops' is not key=value"},
    };
    for (auto &t : bad) {
        INFO(t.dsn);
        Parsed p = parse(t.dsn);
        CHECK(p.rc == -1);
        CHECK(p.err == t.msg);
    }
}

TEST_CASE("DSN, user and password lengths at the limit and one past it", "[sql_dsn]")
{
    std::string head = "dbi:SQLite:";
    std::string ok = head + std::string(POL_SQL_DSN_BYTES_MAX - 1 - head.size(), 'a');
    CHECK(parse(ok).rc == 0);
    Parsed p = parse(ok + "a");
    CHECK(p.rc == -1);
    CHECK(p.err == "dsn, user or password longer than 4095 bytes");
    std::string user(POL_SQL_DSN_BYTES_MAX - 1, 'u');
    CHECK(parse("dbi:Pg:dbname=x", user.c_str(), "p").rc == 0);
    CHECK(parse("dbi:Pg:dbname=x", (user + "u").c_str(), "p").rc == -1);
    CHECK(parse("dbi:Pg:dbname=x", "u", (user + "u").c_str()).rc == -1);
    // Values that double when quoted still fit the conninfo buffer.
    std::string quotes(POL_SQL_DSN_BYTES_MAX - 1, '\'');
    Parsed q = parse("dbi:Pg:dbname=x", quotes.c_str(), quotes.c_str());
    REQUIRE(q.rc == 0);
    CHECK(conninfo_parse(q.dsn.conninfo)["password"] == quotes);
}

TEST_CASE("conninfo_add fits at N and not at N-1", "[sql_dsn]")
{
    const std::string want = "k='a\\'b'";
    std::string buf(want.size() + 1, '\0');
    CHECK(pol_sql_conninfo_add(&buf[0], want.size() + 1, "k", "a'b", 3) == 0);
    CHECK(std::string(buf.c_str()) == want);
    std::string small(want.size(), '\0');
    CHECK(pol_sql_conninfo_add(&small[0], want.size(), "k", "a'b", 3) == -1);
    CHECK(small[0] == '\0'); // left as it was
    char nul[32] = "";
    CHECK(pol_sql_conninfo_add(nul, sizeof(nul), "k", "a\0b", 3) == -1);
}

TEST_CASE("? placeholders become $n outside quotes and comments", "[sql_dsn]")
{
    struct {
        const char *in;
        const char *out;
        long count;
    } t[] = {
        {"SELECT * FROM t WHERE a=? AND b=?", "SELECT * FROM t WHERE a=$1 AND b=$2", 2},
        {"SELECT '?', ?", "SELECT '?', $1", 1},
        {"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1},
        {"SELECT E'\\'?', ?", "SELECT E'\\'?', $1", 1},
        {"SELECT e'\\\\', ?", "SELECT e'\\\\', $1", 1},
        {"SELECT some'\\', ?", "SELECT some'\\', $1", 1}, // not an E string: '\' ends there
        {"SELECT \"col?\"\"x\" FROM t WHERE x = ?", "SELECT \"col?\"\"x\" FROM t WHERE x = $1",
         1},
        {"SELECT 1 -- what?\n, ?", "SELECT 1 -- what?\n, $1", 1},
        {"SELECT /* a /* nested ? */ ? */ ?", "SELECT /* a /* nested ? */ ? */ $1", 1},
        {"SELECT $$ ? $$, ?", "SELECT $$ ? $$, $1", 1},
        {"SELECT $tag$ ? $ta$ ?$tag$, ?", "SELECT $tag$ ? $ta$ ?$tag$, $1", 1},
        {"SELECT $1, $2 FROM t", "SELECT $1, $2 FROM t", 2},
        {"SELECT $12", "SELECT $12", 12},
        {"SELECT data \\? 'k' FROM t WHERE id = ?", "SELECT data ? 'k' FROM t WHERE id = $1", 1},
        {"SELECT a$b, c FROM t WHERE c=?", "SELECT a$b, c FROM t WHERE c=$1", 1},
        {"SELECT 'abc ?", "SELECT 'abc ?", 0},
        {"SELECT $x ?", "SELECT $x $1", 1},
        {"SELECT 1 /* ? unterminated", "SELECT 1 /* ? unterminated", 0},
        {"SELECT $$ ? unterminated", "SELECT $$ ? unterminated", 0},
        {"?????????????", "$1 $2 $3 $4 $5 $6 $7 $8 $9 $10 $11 $12 $13", 13},
        {"SELECT a?, ?AND, $?", "SELECT a $1, $2 AND, $ $3", 3},
        {"", "", 0},
        {"SELECT - ? - / ?", "SELECT - $1 - / $2", 2},
    };
    for (auto &c : t) {
        INFO(c.in);
        long n = 0;
        std::string out = xlate(c.in, &n);
        CHECK(n == c.count);
        CHECK(out == c.out);
    }
    long n = 0;
    xlate("SELECT ?, $1", &n);
    CHECK(n == -2);
}

TEST_CASE("placeholder output buffer at N and N-1 bytes", "[sql_dsn]")
{
    const std::string in = "INSERT INTO t VALUES (?, ?, ?)";
    const std::string want = "INSERT INTO t VALUES ($1, $2, $3)";
    long n = 0;
    CHECK(xlate(in, &n, want.size() + 1) == want);
    CHECK(n == 3);
    xlate(in, &n, want.size());
    CHECK(n == -1);
    xlate(in, &n, 0);
    CHECK(n == -1);
    CHECK(xlate("", &n, 1).empty());
    CHECK(n == 0);
}

TEST_CASE("identifiers are quoted for each dialect", "[sql_dsn]")
{
    char out[16];
    CHECK(pol_sql_ident_quote(POL_SQL_PG, "acct_a", 6, out, sizeof(out)) == 8);
    CHECK(std::string(out) == "\"acct_a\"");
    CHECK(pol_sql_ident_quote(POL_SQL_SQLITE, "a\"b", 3, out, sizeof(out)) == 6);
    CHECK(std::string(out) == "\"a\"\"b\"");
    CHECK(pol_sql_ident_quote(POL_SQL_MYSQL, "a`b", 3, out, sizeof(out)) == 6);
    CHECK(std::string(out) == "`a``b`");
    // N and N-1: "abc" quoted is 5 bytes plus the NUL.
    CHECK(pol_sql_ident_quote(POL_SQL_PG, "abc", 3, out, 6) == 5);
    CHECK(pol_sql_ident_quote(POL_SQL_PG, "abc", 3, out, 5) == 0);
    CHECK(pol_sql_ident_quote(POL_SQL_PG, "a\0c", 3, out, sizeof(out)) == 0);
    CHECK(pol_sql_ident_quote(POL_SQL_PG, "", 0, out, sizeof(out)) == 2);
}
