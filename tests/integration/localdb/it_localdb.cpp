// it_localdb.cpp: the local-database plugins in the running ringpolicyd (two shards), where the
// testkit cannot go: PostfixMap picks up a table that postmap rewrote (hash:, in place) or
// replaced (cdb:, rename) on every shard within a second; a request waits on an engine timer
// while a writer holds the hash: file's lock and is answered once it is released, and fails
// (connection closed, as for any plugin failure) when the lock is held longer than the wait
// bound; GeoIPLookup reads a MaxMind DB for IPv4 and IPv6 clients.
#include "itcommon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "../../unit/localdb/ldb_testutil.hpp"
#include "../../unit/localdb/mmdb_writer.hpp"

using namespace itest;

namespace
{

std::string pfm(const std::string &db_file)
{
    return "  <Plugin pfm>\n    module = \"PostfixMap\"\n    db_file = \"" + db_file +
           "\"\n    match_action = \"reject matched\"\n  </Plugin>\n";
}

std::vector<std::string> from(const std::string &ip, const std::string &instance = "i1")
{
    return postfix_request({{"client_address", ip}, {"instance", instance}});
}

// The replies of n requests, each on its own connection (so both shards answer some).
std::vector<std::string> ask_many(const Endpoint &ep, const std::string &ip, int n)
{
    std::vector<std::string> out;
    for (int i = 0; i < n; i++) {
        Reply r = ask(ep, from(ip, "i" + std::to_string(i)));
        out.push_back(r.status == Reply::OK && !r.actions.empty() ? r.actions[0] : "<no reply>");
    }
    return out;
}

} // namespace

TEST_CASE("PostfixMap sees a table postmap rewrote or replaced, on every shard", "[localdb]")
{
    for (std::string type : {"hash", "cdb"}) {
        INFO(type);
        ldbtest::TempDir dir;
        ldbtest::postmap(dir, type, "map", "1.2.3.4 OK\n");
        uint16_t port = free_tcp_port();
        auto d = start_ring(
            simple_config(port, pfm(type + ":" + dir.file("map")), "shards = 2\nlog_level = 4\n"),
            Endpoint::tcp(port));
        Endpoint ep = Endpoint::tcp(port);
        for (auto &a : ask_many(ep, "1.2.3.4", 6))
            CHECK(a == "reject matched");
        for (auto &a : ask_many(ep, "5.6.7.8", 6))
            CHECK(a == "dunno");
        ldbtest::postmap(dir, type, "map", "5.6.7.8 OK\n");
        sleep_ms(1100); // LDB_MAP_CHECK_MS: each shard looks at the file at most once a second
        for (auto &a : ask_many(ep, "5.6.7.8", 6))
            CHECK(a == "reject matched");
        for (auto &a : ask_many(ep, "1.2.3.4", 6))
            CHECK(a == "dunno");
        d->stop();
        INFO(d->log());
        CHECK(log_lines_with(*d, "reopens=1 reopen_fails=0") == 2); // one line per shard
    }
}

TEST_CASE("PostfixMap waits while a writer holds a hash: table", "[localdb]")
{
    ldbtest::TempDir dir;
    std::string db = ldbtest::postmap(dir, "hash", "map", "1.2.3.4 OK\n");
    uint16_t port = free_tcp_port();
    auto d = start_ring(simple_config(port, pfm("hash:" + dir.file("map")), "shards = 2\n"),
                        Endpoint::tcp(port));
    Endpoint ep = Endpoint::tcp(port);
    int fd = open(db.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(flock(fd, LOCK_EX) == 0); // as postmap holds it while it rewrites the file

    Conn c(ep);
    REQUIRE(c.ok());
    REQUIRE(c.send(encode_request(from("1.2.3.4"))));
    Reply early = c.read_reply(300);
    CHECK(early.status == Reply::TIMEOUT);
    // other requests on the shard go on meanwhile (this one fails at once: no class)
    Reply other = ask(ep, from("unknown"), 2000);
    CHECK(other.status == Reply::CLOSED);
    flock(fd, LOCK_UN);
    Reply late = c.read_reply(3000);
    REQUIRE(late.status == Reply::OK);
    CHECK(late.actions == std::vector<std::string>{"reject matched"});

    // held past the bound (LDB_BUSY_WAIT_MS_MAX, 3 s): the plugin fails
    REQUIRE(flock(fd, LOCK_EX) == 0);
    int64_t t0 = now_ms();
    Reply failed = ask(ep, from("1.2.3.4", "i2"), 8000);
    int64_t waited = now_ms() - t0;
    flock(fd, LOCK_UN);
    close(fd);
    CHECK(failed.status == Reply::CLOSED);
    CHECK(waited >= 2900);
    CHECK(waited < 6000);
    CHECK(d->wait_log("is locked by a writer (postmap?) for more than 3000 ms", 2000));
}

TEST_CASE("GeoIPLookup reads a MaxMind DB for IPv4 and IPv6 clients", "[localdb]")
{
    ldbtest::TempDir dir;
    ldbtest::MmdbWriter w(6);
    w.add("193.99.144.0/24", "DE");
    w.add("2001:db8:1::/48", "FR");
    std::string mmdb = dir.file("GeoLite2-Country.mmdb");
    w.write(mmdb);
    uint16_t port = free_tcp_port();
    std::string body = "  <Plugin geo>\n    module = \"GeoIPLookup\"\n    database = \"" + mmdb +
                       "\"\n  </Plugin>\n  <Plugin act>\n    module = \"GeoIPAction\"\n"
                       "    result_from = \"geo\"\n    country_codes = \"DE,FR\"\n  </Plugin>\n";
    auto d = start_ring(simple_config(port, body, "shards = 2\n"), Endpoint::tcp(port));
    Endpoint ep = Endpoint::tcp(port);
    for (auto &a : ask_many(ep, "2001:db8:1::25", 4))
        CHECK(a == "reject delivery from FR (2001:db8:1::25) rejected");
    for (auto &a : ask_many(ep, "193.99.144.80", 4))
        CHECK(a == "reject delivery from DE (193.99.144.80) rejected");
    for (auto &a : ask_many(ep, "2001:db8:2::25", 4))
        CHECK(a == "dunno");
}
