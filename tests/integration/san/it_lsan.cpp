// it_lsan.cpp: LeakSanitizer and UBSan on a whole daemon life (issue 8). ringpolicyd from the
// sanitizer build (-Db_sanitize=address,undefined; the test is only registered there) serves the
// shipped etc/ringpolicyd.conf (its two virtual hosts on free ports: scoring with the Memory
// session cache, Quota and Accounting on SQLite) plus a third virtual host whose chain uses
// SetField, Condition on session keys, RegexList, Honeypot and (for some senders) Greylist on a
// real memcached, on two shards with the HTTP listener. It gets load from four threads, a valid
// SIGHUP (the replaced generation is freed), an invalid one (the half-built one is freed), more
// load, /metrics, and SIGTERM. ASan/LSan/UBSan write to log_path files in the daemon's directory:
// the test asserts the daemon really runs with the ASan runtime (libasan in its maps), exits 0,
// and that no sanitizer log file exists.
#include "../itcommon.h"
#include "../../unit/mc/mc_server.h"

#include <dirent.h>
#include <signal.h>

#include <atomic>
#include <thread>

using namespace itest;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

std::string replace_all(std::string s, const std::string &from, const std::string &to)
{
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
    return s;
}

/* The shipped configuration on the ports given, plus the memcached connection, shards, the
 * HTTP listener and the third virtual host (answer: its last Action). */
std::string config(uint16_t p1, uint16_t p2, uint16_t p3, uint16_t http, const std::string &answer)
{
    std::string shipped = read_file(source_root() + "/etc/ringpolicyd.conf");
    REQUIRE(contains(shipped, "127.0.0.1:12345,127.0.0.1:12346"));
    shipped = replace_all(shipped, "127.0.0.1:12345,127.0.0.1:12346",
                          "127.0.0.1:" + std::to_string(p1) + ",127.0.0.1:" +
                              std::to_string(p2) + ",127.0.0.1:" + std::to_string(p3));
    shipped = replace_all(shipped, "<VirtualHost 12345>", "<VirtualHost " + std::to_string(p1) + ">");
    shipped = replace_all(shipped, "<VirtualHost 12346>", "<VirtualHost " + std::to_string(p2) + ">");
    std::string globals = "shards = 2\nhttp_port = \"127.0.0.1:" + std::to_string(http) +
                          "\"\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
                          mc().addr() + "\"\n  namespace = \"lsan-" + std::to_string(getpid()) +
                          "-\"\n</Connection>\n";
    std::string chain =
        "  <Plugin mark>\n    module = \"SetField\"\n    key = \"mark\"\n    value = \"on\"\n"
        "  </Plugin>\n"
        "  <Plugin marked>\n    module = \"Condition\"\n    key = \"s:mark\"\n"
        "    match = \"off\"\n    action = \"reject never\"\n  </Plugin>\n"
        "  <Plugin helo>\n    module = \"RegexList\"\n    key = \"helo_name\"\n"
        "    regex = \"^unknown$\"\n    score = 1\n  </Plugin>\n"
        "  <Plugin trap>\n    module = \"Honeypot\"\n"
        "    recipients = \"spamtrap@example.com\"\n"
        "    recipients_re = \"^trap[0-9]+@example\\\\.org$\"\n  </Plugin>\n"
        "  <Plugin grey-gate>\n    module = \"Condition\"\n    key = \"sender\"\n"
        "    re_match = \"^s[0-3]@\"\n"
        "    <Plugin greylist>\n      module = \"Greylist\"\n      use_autowl = 0\n"
        "    </Plugin>\n  </Plugin>\n" +
        action_plugin("answer", answer);
    return globals + shipped + vhost_block(std::to_string(p3), "leakcheck", chain);
}

/* Sanitizer log files (log_path=DIR/san → DIR/san.PID) left in dir. */
std::vector<std::string> san_logs(const std::string &dir)
{
    std::vector<std::string> found;
    DIR *d = opendir(dir.c_str());
    REQUIRE(d != nullptr);
    while (dirent *e = readdir(d))
        if (std::string(e->d_name).rfind("san.", 0) == 0)
            found.push_back(dir + "/" + e->d_name);
    closedir(d);
    return found;
}

bool hup_and_wait(Daemon &d, const std::string &needle)
{
    size_t before = log_lines_with(d, needle);
    if (d.send_signal(SIGHUP) != 0)
        return false;
    int64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        if (log_lines_with(d, needle) > before)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* threads x per requests over keep-alive connections, spread over the three ports and varied
 * senders, clients and recipients; the number of requests answered. */
int load(const std::vector<uint16_t> &ports, int threads, int per)
{
    std::atomic<int> answered{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++)
        ts.emplace_back([&, t] {
            Conn c(Endpoint::tcp(ports[size_t(t) % ports.size()]));
            for (int i = 0; i < per && c.ok(); i++) {
                std::string n = std::to_string(t * 1000 + i);
                Reply r = c.request(postfix_request(
                    {{"instance", "lsan." + n},
                     {"client_address", "192.0.2." + std::to_string(i % 200 + 1)},
                     {"sender", "s" + std::to_string(i % 7) + "@example.net"},
                     {"recipient", i % 10 == 0 ? "trap" + n + "@example.org" : "r@example.com"},
                     {"helo_name", i % 3 ? "mail.example.net" : "unknown"}}));
                if (r.ok())
                    answered++;
            }
        });
    for (auto &t : ts)
        t.join();
    return answered.load();
}

} // namespace

TEST_CASE("a daemon started, loaded, reloaded twice and stopped leaks nothing", "[lsan]")
{
    need_ringpolicyd();
    uint16_t p1 = free_tcp_port(), p2 = free_tcp_port(), p3 = free_tcp_port();
    uint16_t http = free_tcp_port();
    Daemon d(Impl::Ring, config(p1, p2, p3, http, "dunno"));
    d.set_ready(Endpoint::tcp(p3));
    d.set_env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=0:log_path=" + d.dir() + "/san");
    d.set_env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0:log_path=" + d.dir() + "/san");
    d.set_env("LSAN_OPTIONS", "");
    if (!d.start(60000))
        FAIL(d.error() << "\n" << d.log());

    /* The sanitizer runtime is really in the daemon (not a plain build by mistake). */
    std::string maps = read_file("/proc/" + std::to_string(d.pid()) + "/maps");
    REQUIRE(contains(maps, "libasan"));

    std::vector<uint16_t> ports{p1, p2, p3};
    CHECK(load(ports, 4, 100) == 400);

    /* Valid reload: the third vhost answers differently afterwards. */
    std::string conf = d.config_path();
    {
        std::string tmp = conf + ".new";
        FILE *f = std::fopen(tmp.c_str(), "w");
        REQUIRE(f != nullptr);
        std::string text = config(p1, p2, p3, http, "reject reloaded");
        REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
        REQUIRE(std::fclose(f) == 0);
        REQUIRE(std::rename(tmp.c_str(), conf.c_str()) == 0);
    }
    if (!hup_and_wait(d, "reload: configuration " + conf + " loaded"))
        FAIL("no reload line; daemon log:\n" << d.log());
    Reply r = ask(Endpoint::tcp(p3), postfix_request({{"instance", "after.reload"}}));
    CHECK(r.actions == std::vector<std::string>{"reject reloaded"});

    /* Invalid reload: an unknown module in a block after valid ones (parsed, half built). */
    {
        std::string tmp = conf + ".new";
        FILE *f = std::fopen(tmp.c_str(), "w");
        REQUIRE(f != nullptr);
        std::string text = config(p1, p2, p3, http, "reject broken") +
                           vhost_block("1", "broken",
                                       "  <Plugin x>\n    module = \"NoSuchModule\"\n  </Plugin>\n");
        REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
        REQUIRE(std::fclose(f) == 0);
        REQUIRE(std::rename(tmp.c_str(), conf.c_str()) == 0);
    }
    if (!hup_and_wait(d, "reload failed: "))
        FAIL("no reload line; daemon log:\n" << d.log());
    CHECK(load(ports, 4, 50) == 200);
    r = ask(Endpoint::tcp(p3), postfix_request({{"instance", "after.broken"}}));
    CHECK(r.actions == std::vector<std::string>{"reject reloaded"});

    /* The HTTP listener's page. */
    Conn h(Endpoint::tcp(http));
    REQUIRE(h.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    h.wait_closed(10000);
    CHECK(contains(h.pending(), "ringpolicyd_requests_total"));

    int status = d.stop(60000);
    std::string reports;
    for (auto &path : san_logs(d.dir()))
        reports += path + ":\n" + read_file(path) + "\n";
    CHECK(reports == "");
    if (status != 0)
        FAIL_CHECK("exit status " << status << "; daemon log:\n" << d.log());
}
