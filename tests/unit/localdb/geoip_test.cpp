// geoip_test.cpp: country databases (policy/plugins/ldb_geo.c) and the GeoIPLookup and
// GeoIPAction plugins (spec 13.10, 13.11) through the testkit. Legacy .dat files are Debian's
// geoip-database (GeoIP.dat, GeoIPv6.dat, release 20191224): the addresses below were looked
// up with geoiplookup/geoiplookup6 and Perl's Geo::IP when the test was written, and are
// networks whose country has not moved in years. MaxMind DB files are written by the test
// (mmdb_writer.hpp). The format is told by content: the files get misleading names on purpose.
#include <catch2/catch.hpp>

#include <cstdio>

#include "../plugins/plugin_kit.hpp"
#include "ldb_testutil.hpp"
#include "mmdb_writer.hpp"

extern "C" {
#include "plugins/ldb_geo.h"
}

using namespace plugkit;
using namespace ldbtest;

namespace
{

const std::string geoip_dat = "/usr/share/GeoIP/GeoIP.dat";
const std::string geoip6_dat = "/usr/share/GeoIP/GeoIPv6.dat";

void need_geoip_database()
{
    if (access(geoip_dat.c_str(), R_OK) != 0 || access(geoip6_dat.c_str(), R_OK) != 0)
        skip_or_fail("Debian's geoip-database (" + geoip_dat + ", " + geoip6_dat +
                     ") is not installed");
}

// An open database, closed at the end.
class Geo
{
  public:
    explicit Geo(const std::string &path)
    {
        char err[512] = "";
        rc_ = ldb_geo_open(path.c_str(), &g_, err, sizeof err);
        err_ = err;
    }
    ~Geo()
    {
        ldb_geo_close(g_);
    }
    Geo(const Geo &) = delete;
    Geo &operator=(const Geo &) = delete;
    bool ok() const
    {
        return rc_ == 0;
    }
    const std::string &err() const
    {
        return err_;
    }
    const struct ldb_geo *get() const
    {
        return g_;
    }
    // The country, or "-" for none.
    std::string cc(const std::string &addr) const
    {
        char out[LDB_GEO_CC_BYTES];
        size_t n = ldb_geo_country(g_, addr.data(), addr.size(), out);
        return n == 0 ? "-" : std::string(out, n);
    }

  private:
    struct ldb_geo *g_ = nullptr;
    int rc_ = -1;
    std::string err_;
};

// An IPv6 .mmdb with IPv4 and IPv6 networks, written under `name`.
std::string write_mmdb6(const TempDir &dir, const std::string &name)
{
    MmdbWriter w(6);
    w.add("193.99.144.0/24", "DE");
    w.add("8.8.8.0/24", "US");
    w.add("203.0.113.0/24", "AP", true); // registered_country only
    w.add("2001:db8:1::/48", "FR");
    w.add("2001:db8:2::/48", "NL", true);
    std::string p = dir.file(name);
    w.write(p);
    return p;
}

std::string write_mmdb4(const TempDir &dir, const std::string &name)
{
    MmdbWriter w(4);
    w.add("193.99.144.0/24", "AT"); // not DE: tells this file's answers apart
    w.add("10.1.0.0/16", "CH");
    std::string p = dir.file(name);
    w.write(p);
    return p;
}

std::string ip(const std::string &addr)
{
    return req("client_address=" + addr + "\n");
}

std::string geo_conf(const std::string &lookup_opts, const std::string &action_opts,
                     bool sessions = false)
{
    return conf(
        plugin("geo", "GeoIPLookup", lookup_opts) +
            plugin("act", "GeoIPAction",
                   "    result_from = \"geo\"\n    country_codes = \"DE,FR,US\"\n" + action_opts) +
            plugin("hdr", "AddScoreHeader"),
        sessions);
}

} // namespace

TEST_CASE("database formats are told by content", "[geoip]")
{
    need_geoip_database();
    TempDir dir;
    Geo v4(geoip_dat), v6(geoip6_dat);
    REQUIRE(v4.ok());
    REQUIRE(v6.ok());
    CHECK(ldb_geo_kind(v4.get()) == LDB_GEO_LEGACY_V4);
    CHECK_FALSE(ldb_geo_has_v6(v4.get()));
    CHECK(ldb_geo_kind(v6.get()) == LDB_GEO_LEGACY_V6);
    CHECK(ldb_geo_has_v6(v6.get()));
    Geo m6(write_mmdb6(dir, "GeoIP.dat")), m4(write_mmdb4(dir, "v6.dat"));
    INFO(m6.err() + " / " + m4.err());
    REQUIRE(m6.ok());
    REQUIRE(m4.ok());
    CHECK(ldb_geo_kind(m6.get()) == LDB_GEO_MMDB);
    CHECK(ldb_geo_has_v6(m6.get()));
    CHECK(ldb_geo_kind(m4.get()) == LDB_GEO_MMDB);
    CHECK_FALSE(ldb_geo_has_v6(m4.get()));

    Geo missing(dir.file("none.mmdb"));
    CHECK(missing.err() == "cannot open " + dir.file("none.mmdb") + ": No such file or directory");
    std::string junk = dir.write("junk.mmdb", std::string(1000, 'x'));
    Geo bad(junk);
    CHECK(bad.err() ==
          junk + " is neither a GeoIP Country database (.dat) nor a MaxMind DB (.mmdb)");
    Geo empty(dir.write("empty.dat", ""));
    CHECK_FALSE(empty.ok());
    Geo directory(dir.path());
    CHECK_FALSE(directory.ok());
    // the legacy edition byte decides: a City edition (6) is refused
    std::string city = std::string(100, '\0') + "\xff\xff\xff\x06";
    CHECK(ldb_geo_detect(reinterpret_cast<const unsigned char *>(city.data()), city.size()) == -1);
    std::string country = std::string(100, '\0') + "\xff\xff\xff\x01";
    CHECK(ldb_geo_detect(reinterpret_cast<const unsigned char *>(country.data()), country.size()) ==
          LDB_GEO_LEGACY_V4);
}

TEST_CASE("countries from Debian's legacy databases", "[geoip]")
{
    need_geoip_database();
    Geo v4(geoip_dat), v6(geoip6_dat);
    REQUIRE(v4.ok());
    REQUIRE(v6.ok());
    CHECK(v4.cc("8.8.8.8") == "US");
    CHECK(v4.cc("193.99.144.80") == "DE");
    CHECK(v4.cc("212.58.244.20") == "GB");
    CHECK(v4.cc("133.11.0.1") == "JP");
    CHECK(v4.cc("200.160.2.3") == "BR");
    CHECK(v4.cc("127.0.0.1") == "-");
    CHECK(v4.cc("10.0.0.1") == "-");
    // 2.05 (IPv4 database): IPv6 clients and non-addresses get no country
    CHECK(v4.cc("2001:4860:4860::8888") == "-");
    CHECK(v4.cc("unknown") == "-");
    CHECK(v4.cc("") == "-");
    CHECK(v4.cc(std::string(LDB_GEO_ADDR_BYTES_MAX + 1, '1')) == "-");
    CHECK(v4.cc(std::string("8.8.8.8\0", 8)) == "-");

    CHECK(v6.cc("2001:4860:4860::8888") == "US");
    CHECK(v6.cc("2a01:4f8::1") == "DE");
    CHECK(v6.cc("2001:200::1") == "JP");
    CHECK(v6.cc("8.8.8.8") == "US"); // as ::ffff:8.8.8.8, which the V6 edition holds
    CHECK(v6.cc("::ffff:193.99.144.80") == "DE");
    CHECK(v6.cc("::1") == "-");
    CHECK(v6.cc("2001:db8::1") == "-");
    CHECK(v6.cc("fe80::1%eth0") == "-");
}

TEST_CASE("countries from MaxMind DB files", "[geoip]")
{
    TempDir dir;
    Geo m6(write_mmdb6(dir, "a")), m4(write_mmdb4(dir, "b"));
    REQUIRE(m6.ok());
    REQUIRE(m4.ok());
    CHECK(m6.cc("193.99.144.80") == "DE");
    CHECK(m6.cc("8.8.8.8") == "US");
    CHECK(m6.cc("203.0.113.9") == "AP");
    CHECK(m6.cc("2001:db8:1:ffff::1") == "FR");
    CHECK(m6.cc("2001:db8:2::2") == "NL");
    CHECK(m6.cc("2001:db8:3::1") == "-");
    CHECK(m6.cc("9.9.9.9") == "-");
    CHECK(m6.cc("not an address") == "-");
    CHECK(m4.cc("193.99.144.1") == "AT");
    CHECK(m4.cc("10.1.2.3") == "CH");
    CHECK(m4.cc("10.2.2.3") == "-");
    CHECK(m4.cc("2001:db8:1::1") == "-");
}

TEST_CASE("GeoIPLookup and GeoIPAction on GeoIP.dat (2.05's setup)", "[geoip]")
{
    need_geoip_database();
    Kit k(geo_conf("", "    score = 3\n"));
    REQUIRE(k.ok());
    CHECK(k.ask(ip("193.99.144.80")) == reply("reject delivery from DE (193.99.144.80) rejected"));
    CHECK(k.ask(ip("8.8.8.8")) == reply("reject delivery from US (8.8.8.8) rejected"));
    CHECK(k.ask(ip("212.58.244.20")) == reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.ask(ip("127.0.0.1")) == reply("PREPEND X-MtScore: NO score=0"));
    // 2.05: no country for IPv6 clients with an IPv4 database
    CHECK(k.ask(ip("2001:4860:4860::8888")) == reply("PREPEND X-MtScore: NO score=0"));
    CHECK(k.ask(req("")) == reply("PREPEND X-MtScore: NO score=0"));

    Kit passive(geo_conf("", "    score = 3\n    mode = \"passive\"\n", true));
    REQUIRE(passive.ok());
    CHECK(passive.ask(req("instance=m1\nclient_address=193.99.144.80\n")) ==
          reply("PREPEND X-MtScore: NO score=3 [act=3]"));
    CHECK(passive.session("m1", "geoip-geo-result") == "DE");
    CHECK(passive.session("m1", "geoip-act-score") == "1");
    CHECK(passive.ask(req("instance=m1\nclient_address=193.99.144.80\n")) == dunno);
    CHECK(passive.session("m1", "score") == "3"); // once per mail
    CHECK(passive.ask(req("instance=m2\nclient_address=127.0.0.1\n")) ==
          reply("PREPEND X-MtScore: NO score=0"));
    CHECK(passive.session("m2", "geoip-geo-result") == "");

    Kit accept(geo_conf("", "    mode = \"accept\"\n    reject_message = \"%IP% %CC% %IP%\"\n"));
    CHECK(accept.ask(ip("193.99.144.80")) == dunno);
    Kit msg(geo_conf("", "    reject_message = \"no mail from %CC% (%IP%, %CC%)\"\n"));
    CHECK(msg.ask(ip("193.99.144.80")) == reply("reject no mail from DE (193.99.144.80, %CC%)"));
}

TEST_CASE("GeoIPLookup: database_v6 and MaxMind DB files for IPv6 clients", "[geoip]")
{
    need_geoip_database();
    TempDir dir;
    Kit dat6(geo_conf("    database_v6 = \"" + geoip6_dat + "\"\n", ""));
    REQUIRE(dat6.ok());
    CHECK(dat6.ask(ip("2001:4860:4860::8888")) ==
          reply("reject delivery from US (2001:4860:4860::8888) rejected"));
    CHECK(dat6.ask(ip("193.99.144.80")) ==
          reply("reject delivery from DE (193.99.144.80) rejected"));

    std::string mmdb = write_mmdb6(dir, "GeoLite2-Country.dat");
    Kit m(geo_conf("    database = \"" + mmdb + "\"\n", ""));
    REQUIRE(m.ok());
    CHECK(m.ask(ip("2001:db8:1::5")) == reply("reject delivery from FR (2001:db8:1::5) rejected"));
    CHECK(m.ask(ip("2001:db8:2::5")) == reply("PREPEND X-MtScore: NO score=0"));
    CHECK(m.ask(ip("193.99.144.80")) == reply("reject delivery from DE (193.99.144.80) rejected"));

    // database_v6 must be able to answer for IPv6
    Kit v4only(geo_conf("    database_v6 = \"" + geoip_dat + "\"\n", ""));
    CHECK_FALSE(v4only.ok());
    CHECK(v4only.error().find("database_v6 " + geoip_dat + " holds IPv4 addresses only") !=
          std::string::npos);
    Kit missing(geo_conf("    database = \"" + dir.file("none") + "\"\n", ""));
    CHECK_FALSE(missing.ok());
    CHECK(missing.error().find("cannot open " + dir.file("none")) != std::string::npos);
    Kit no_codes(conf(plugin("geo", "GeoIPLookup") +
                      plugin("act", "GeoIPAction", "    result_from = \"geo\"\n")));
    CHECK_FALSE(no_codes.ok());
}

TEST_CASE("GeoIPAction without a lookup result, and its log lines", "[geoip]")
{
    need_geoip_database();
    LogCapture log;
    REQUIRE(log.ok());
    Kit k(conf(plugin("act", "GeoIPAction",
                      "    result_from = \"nothere\"\n    country_codes = \"DE\"\n")));
    REQUIRE(k.ok());
    CHECK(k.ask(ip("193.99.144.80")) == dunno);
    Kit g(geo_conf("", "    mode = \"passive\"\n"));
    REQUIRE(g.ok());
    g.ask(ip("212.58.244.20"));
    g.ask(ip("193.99.144.80"));
    g.ask(ip("127.0.0.1"));
    std::string text = log.text();
    // 2.05's texts, their missing spaces included
    CHECK(text.find("no GeoIP check result for act found!") != std::string::npos);
    CHECK(text.find("country_code GB of IP not in country_code listact") != std::string::npos);
    CHECK(text.find("country code DE on listact") != std::string::npos);
    CHECK(text.find("no GeoIP record for 127.0.0.1 found") != std::string::npos);
}
