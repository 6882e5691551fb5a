// listen_test.cpp: policy/listen.c, the `port` and `host` options as listening addresses.
//
// The entry table was checked against Net::Server 2.x's own parser (Net::Server::Proto
// parse_info, driven by a small perl script with host 127.0.0.1); rows marked "differs" are
// the intentional differences listed at the top of listen.c. Resolution is tested with numeric
// addresses, and with "localhost" against what getaddrinfo itself says.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "parse_testutil.h"

extern "C" {
#include "listen.h"
}

namespace
{

std::string spec(const std::string &entry, const char *host = "127.0.0.1")
{
    pol_listen_spec sp;
    char err[256];
    GuardBuf guard(entry.size() + 1);
    const char *e = guard.place(entry);
    if (pol_listen_spec_parse(e, entry.size(), host, &sp, err, sizeof err) != 0) {
        return std::string("error: ") + err;
    }
    if (sp.is_unix) {
        return std::string("unix ") + sp.path;
    }
    return "tcp " + std::string(sp.host) + " " + std::to_string(sp.port) + " " +
           (sp.want4 ? "4" : "") + (sp.want6 ? "6" : "");
}

std::string show(const pol_listen &l)
{
    if (l.eng.kind == ENG_LISTEN_UNIX) {
        return std::string("unix ") + l.eng.path + " key=" + l.key;
    }
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    if (l.eng.addr.ss_family == AF_INET) {
        auto *a = reinterpret_cast<const sockaddr_in *>(&l.eng.addr);
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        REQUIRE(l.eng.addr_len == sizeof(sockaddr_in));
    } else {
        REQUIRE(l.eng.addr.ss_family == AF_INET6);
        auto *a = reinterpret_cast<const sockaddr_in6 *>(&l.eng.addr);
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        REQUIRE(l.eng.addr_len == sizeof(sockaddr_in6));
    }
    CHECK(l.eng.tag == 0);
    return "tcp " + std::string(ip) + " " + std::to_string(port) + (l.eng.v6only ? " v6only" : "") +
           " key=" + l.key;
}

std::vector<std::string> listen(const char *port, const char *host, std::string *error = nullptr,
                                size_t cap = POL_LISTEN_MAX)
{
    std::vector<pol_listen> out(cap);
    char err[256] = "";
    int n = pol_listen_parse(port, host, out.data(), cap, err, sizeof err);
    std::vector<std::string> got;
    if (n < 0) {
        if (error != nullptr) {
            *error = err;
        }
        return got;
    }
    REQUIRE(n >= 1);
    REQUIRE((size_t)n <= cap);
    for (int i = 0; i < n; i++) {
        got.push_back(show(out[i]));
    }
    return got;
}

bool have_ipv6()
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

} // namespace

TEST_CASE("entries read as Net::Server reads them", "[listen]")
{
    struct Row {
        const char *entry, *host, *want;
    };
    const Row rows[] = {
        {"12345", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"127.0.0.1:12345", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"*:12345", "127.0.0.1", "tcp * 12345 46"},
        {"[::1]:12345", "127.0.0.1", "tcp ::1 12345 46"},
        {"::1:12345", "127.0.0.1", "tcp ::1 12345 46"},
        {"[::]:12345", "127.0.0.1", "tcp :: 12345 46"},
        {"localhost:12345", "127.0.0.1", "tcp localhost 12345 46"},
        {"12345/tcp", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"127.0.0.1:12345/TCP", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"127.0.0.1:12345:tcp", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"/var/run/x.sock|unix", "127.0.0.1", "unix /var/run/x.sock"},
        {"/var/run/x.sock|UNIX", "127.0.0.1", "unix /var/run/x.sock"},
        {"/tmp/s|sock_stream|unix", "127.0.0.1", "unix /tmp/s"},
        {"12345|IPv4", "127.0.0.1", "tcp 127.0.0.1 12345 4"},
        {"12345|IPv6", "127.0.0.1", "tcp 127.0.0.1 12345 6"},
        {"12345|IPv*", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"*:12345|IPv4|IPv6", "127.0.0.1", "tcp * 12345 46"},
        {"*:12345|ipv6", "127.0.0.1", "tcp * 12345 6"},
        {"[::1]:12345|IPv4", "127.0.0.1", "tcp ::1 12345 6"},
        {":12345", "127.0.0.1", "tcp * 12345 46"},
        {"[]:12345", "127.0.0.1", "tcp * 12345 46"},
        {"[*]:12345", "127.0.0.1", "tcp * 12345 46"},
        {"127.0.0.1 12345", "127.0.0.1", "tcp 127.0.0.1 12345 46"},
        {"1.2.3:80", "127.0.0.1", "tcp 1.2.3 80 46"},
        {"mx.example.org:10040", "127.0.0.1", "tcp mx.example.org 10040 46"},
        // The global host: used when the entry has none; empty or "*" means every address.
        {"12345", "", "tcp * 12345 46"},
        {"12345", "*", "tcp * 12345 46"},
        {"12345", "[::1]", "tcp ::1 12345 46"},
        {"12345", "0.0.0.0|IPv4", "tcp 0.0.0.0 12345 4"},
        {"12345", nullptr, "tcp 127.0.0.1 12345 46"},
        {"10.0.0.1:12345", "[::1]", "tcp 10.0.0.1 12345 46"},
        // Refused by Net::Server too.
        {"/var/run/x.sock", "127.0.0.1",
         "error: port entry \"/var/run/x.sock\": \"/var/run/x.sock\" is neither a port number "
         "nor a service"},
        {"a b:12345", "127.0.0.1",
         "error: port entry \"a b:12345\": cannot tell the host from \"a b\""},
        {"12345|IPv5", "127.0.0.1",
         "error: port entry \"12345|IPv5\": IPv5: the IP version must be 4, 6 or *"},
        {"12345", "bad host!",
         "error: port entry \"12345\": cannot tell the host from \"bad host!\""},
        {"nosuchservice", "127.0.0.1",
         "error: port entry \"nosuchservice\": \"nosuchservice\" is neither a port number nor a "
         "service"},
        {"localhost:", "127.0.0.1",
         "error: port entry \"localhost:\": \"localhost:\" is neither a port number nor a "
         "service"},
        // Differs: Net::Server accepts these, and then binds port 0, fails or serves datagrams.
        {"0", "127.0.0.1",
         "error: port entry \"0\": port 0 is not between 1 and 65535 (port 0 is not supported)"},
        {"70000", "127.0.0.1",
         "error: port entry \"70000\": port 70000 is not between 1 and 65535 (port 0 is not "
         "supported)"},
        {"99999999999999999999", "127.0.0.1",
         "error: port entry \"99999999999999999999\": port 99999999999999999999 is not between 1 "
         "and 65535 (port 0 is not supported)"},
        {"", "127.0.0.1", "error: port entry \"\": an empty entry"},
        {"12345/udp", "127.0.0.1",
         "error: port entry \"12345/udp\": protocol \"udp\" is not supported (tcp, or unix for a "
         "socket path)"},
        {"12345/ssl", "127.0.0.1",
         "error: port entry \"12345/ssl\": protocol \"ssl\" is not supported (tcp, or unix for a "
         "socket path)"},
        {"80/Net::Server::Proto::TCP", "127.0.0.1",
         "error: port entry \"80/Net::Server::Proto::TCP\": protocol \"Net::Server::Proto::TCP\" "
         "is not supported (tcp, or unix for a socket path)"},
        {"/tmp/s|sock_dgram|unix", "127.0.0.1",
         "error: port entry \"/tmp/s|sock_dgram|unix\": datagram sockets are not supported"},
        {"/x/sock|unixdgram", "127.0.0.1",
         "error: port entry \"/x/sock|unixdgram\": protocol \"unixdgram\" is not supported (tcp, "
         "or unix for a socket path)"},
        // Differs: the path is taken whole (Net::Server: host "/tmp/a", path "b").
        {"/tmp/a:b|unix", "127.0.0.1", "unix /tmp/a:b"},
        {"|unix", "127.0.0.1",
         "error: port entry \"|unix\": \"unix\" is neither a port number nor a service"},
    };
    for (const Row &r : rows) {
        INFO("entry \"" << r.entry << "\" host " << (r.host ? r.host : "(default)"));
        CHECK(spec(r.entry, r.host) == r.want);
    }
}

TEST_CASE("socket paths up to the size of sun_path", "[listen]")
{
    std::string at = "/" + std::string(POL_LISTEN_PATH_BYTES - 2, 's');
    CHECK(spec(at + "|unix") == "unix " + at);
    CHECK(spec(at + "x|unix") == "error: port entry \"" + (at + "x|unix").substr(0, 100) +
                                     "\": the socket path is too long");
}

TEST_CASE("resolution, keys and the defaults", "[listen]")
{
    CHECK(listen(nullptr, nullptr) == std::vector<std::string>{"tcp 127.0.0.1 12345 key=12345"});
    CHECK(listen("127.0.0.2:10040", nullptr) ==
          std::vector<std::string>{"tcp 127.0.0.2 10040 key=10040"});
    CHECK(listen("00080", "127.0.0.1") == std::vector<std::string>{"tcp 127.0.0.1 80 key=80"});
    // Service names need /etc/services (Debian's netbase); without it they are refused.
    if (getservbyname("smtp", "tcp") != nullptr) {
        CHECK(spec("localhost:smtp") == "tcp localhost 25 46");
        CHECK(listen("smtp", "127.0.0.1") == std::vector<std::string>{"tcp 127.0.0.1 25 key=25"});
    } else {
        WARN("no /etc/services: service names not tested");
    }
    CHECK(listen("12345, /run/mtpolicyd/sock|unix ,127.0.0.3:54321", nullptr) ==
          std::vector<std::string>{"tcp 127.0.0.1 12345 key=12345",
                                   "unix /run/mtpolicyd/sock key=/run/mtpolicyd/sock",
                                   "tcp 127.0.0.3 54321 key=54321"});
    // Exact duplicates are bound once, as Net::Server skips them.
    CHECK(listen("12345,127.0.0.1:12345,/s|unix,/s|unix", nullptr) ==
          std::vector<std::string>{"tcp 127.0.0.1 12345 key=12345", "unix /s key=/s"});
    if (have_ipv6()) {
        CHECK(listen("*:12345", nullptr) ==
              std::vector<std::string>{"tcp 0.0.0.0 12345 key=12345",
                                       "tcp :: 12345 v6only key=12345"});
        CHECK(listen("[::1]:12345", nullptr) ==
              std::vector<std::string>{"tcp ::1 12345 key=12345"});
        CHECK(listen("[::]:12345", nullptr) == std::vector<std::string>{"tcp :: 12345 key=12345"});
        CHECK(listen("*:12345|IPv6", nullptr) ==
              std::vector<std::string>{"tcp :: 12345 key=12345"});
    } else {
        CHECK(listen("*:12345", nullptr) ==
              std::vector<std::string>{"tcp 0.0.0.0 12345 key=12345"});
    }
    CHECK(listen("*:12345|IPv4", nullptr) ==
          std::vector<std::string>{"tcp 0.0.0.0 12345 key=12345"});
}

TEST_CASE("a host name binds every address it resolves to", "[listen]")
{
    addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo *res = nullptr;
    REQUIRE(getaddrinfo("localhost", "12345", &hints, &res) == 0);
    std::vector<std::string> want;
    bool has4 = false;
    for (addrinfo *a = res; a != nullptr; a = a->ai_next) {
        has4 = has4 || a->ai_family == AF_INET;
    }
    for (addrinfo *a = res; a != nullptr; a = a->ai_next) {
        pol_listen l = {};
        memcpy(&l.eng.addr, a->ai_addr, a->ai_addrlen);
        l.eng.addr_len = a->ai_addrlen;
        l.eng.v6only = a->ai_family == AF_INET6 && has4;
        snprintf(l.key, sizeof l.key, "12345");
        std::string s = show(l);
        if (std::find(want.begin(), want.end(), s) == want.end()) {
            want.push_back(s);
        }
    }
    freeaddrinfo(res);
    CHECK(listen("localhost:12345", nullptr) == want);
    CHECK(listen("12345", "localhost") == want);
}

TEST_CASE("list errors name the entry", "[listen]")
{
    std::string err;
    CHECK(listen("", nullptr, &err).empty());
    CHECK(err == "port is empty: no address to listen on");
    CHECK(listen(" , ", nullptr, &err).empty());
    CHECK(err == "port is empty: no address to listen on");
    CHECK(listen(",12345", nullptr, &err).empty());
    CHECK(err == "port entry \"\": an empty entry");
    CHECK(listen("12345,host..invalid:1", nullptr, &err).empty());
    CHECK(err.rfind("port entry \"host..invalid:1\": cannot resolve \"host..invalid\": ", 0) == 0);
    CHECK(listen("12345|IPv6", "127.0.0.1", &err).empty());
    CHECK(err.rfind("port entry \"12345|IPv6\": cannot resolve \"127.0.0.1\": ", 0) == 0);
}

TEST_CASE("at most POL_LISTEN_MAX entries, and no more than the caller's array", "[listen]")
{
    auto ports = [](int n) {
        std::string s;
        for (int i = 0; i < n; i++) {
            s += (i ? "," : "") + std::to_string(20000 + i);
        }
        return s;
    };
    std::string err;
    CHECK(listen(ports(POL_LISTEN_MAX).c_str(), nullptr, &err).size() == POL_LISTEN_MAX);
    CHECK(listen(ports(POL_LISTEN_MAX + 1).c_str(), nullptr, &err).empty());
    CHECK(err == "port lists 65 entries, more than the 64 supported");
    CHECK(listen(ports(3).c_str(), nullptr, &err, 3).size() == 3);
    CHECK(listen(ports(4).c_str(), nullptr, &err, 3).empty());
    CHECK(err == "port lists 4 entries, more than the 3 supported");
    // One entry may give several addresses: the array limit holds after resolution too.
    if (have_ipv6()) {
        CHECK(listen("1,*:2", nullptr, &err, 2).empty());
        CHECK(err == "port gives more than 2 listening addresses");
    }
}
