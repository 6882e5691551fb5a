// fault_backends.cpp: backends failing under a steady load of 64 connections (issue 8), with
// real servers on loopback:
//  - memcached killed and restarted (Greylist's tickets; on_error = continue, so the configured
//    degradation is "dunno" while it is down): every request answered during the outage, only
//    with the greylist's defer or the degradation's dunno; after the restart greylisting is back
//    within the memcached client's longest reconnect backoff (5 s) + 1 s;
//  - the DNS server silent (nsd stopped with SIGSTOP: queries are read by nobody, not refused):
//    RBL lookups wait out the resolver's tries (2 s + 4 s), every request is still answered
//    (not listed: dunno) well inside request_timeout, and once nsd runs again answers come back
//    at their usual latency within the resolver's timeout + 1 s.
// Recovery time is measured from the backend's return to the first request started after it
// that got the healthy answer. Figures: one JSON line per test.
#include "fault_load.h"
#include "itcommon.h"
#include "../../unit/dns/dns_server.h"
#include "../../unit/mc/mc_server.h"

#include <dirent.h>
#include <signal.h>

#include <fstream>

using namespace itest;
using namespace faultit;

namespace
{

constexpr unsigned kConns = 64;

/* A request with its own triplet (sender) and client address, so every one is a new greylist
 * ticket and a new DNS name (nothing answered from a cache). */
std::string fresh_req(uint64_t seq)
{
    std::string n = std::to_string(seq);
    std::string ip = "10." + std::to_string((seq >> 16) & 255) + "." +
                     std::to_string((seq >> 8) & 255) + "." + std::to_string(seq & 255);
    return encode_request(postfix_request({{"instance", "b" + n},
                                           {"sender", "s" + n + "@example.org"},
                                           {"client_address", ip}}));
}

/* Start of the first request started at or after t whose action word is want (-1: none). */
int64_t first_healthy(const std::vector<Sample> &s, int64_t t, const std::string &want)
{
    int64_t best = -1;
    for (auto &x : s)
        if (x.start_ms >= t && x.outcome == Outcome::Reply && action_word(x.action) == want &&
            (best < 0 || x.start_ms < best))
            best = x.start_ms;
    return best;
}

/* pid and every descendant of it (nsd forks its serving process). */
std::vector<pid_t> process_tree(pid_t root)
{
    std::vector<pid_t> out{root};
    for (size_t i = 0; i < out.size(); i++) {
        DIR *d = opendir("/proc");
        if (!d)
            break;
        while (dirent *e = readdir(d)) {
            pid_t p = static_cast<pid_t>(atoi(e->d_name));
            if (p <= 0)
                continue;
            std::ifstream f("/proc/" + std::string(e->d_name) + "/stat");
            std::string line;
            std::getline(f, line);
            size_t rp = line.rfind(')');
            if (rp == std::string::npos)
                continue;
            int ppid = 0;
            char state;
            if (sscanf(line.c_str() + rp + 1, " %c %d", &state, &ppid) == 2 && ppid == out[i])
                out.push_back(p);
        }
        closedir(d);
    }
    return out;
}

std::string windows_json(const std::vector<Sample> &s, int64_t t0, int64_t t1, int64_t t2,
                         int64_t t3)
{
    return Load::json("before", Load::window(s, t0, t1)) + "," +
           Load::json("during", Load::window(s, t1, t2)) + "," +
           Load::json("after", Load::window(s, t2, t3));
}

} // namespace

TEST_CASE("backends: memcached killed and restarted", "[fault][memcached]")
{
    rpdtest::McServer mc;
    uint16_t port = free_tcp_port();
    std::string conf = simple_config(
        port,
        "  <Plugin greylist>\n    module = \"Greylist\"\n    use_autowl = 0\n"
        "    on_error = \"continue\"\n  </Plugin>\n" +
            action_plugin("pass", "dunno"),
        "shards = 2\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" +
            mc.addr() + "\"\n</Connection>\n<Connection db>\n  module = \"Sql\"\n  dsn = "
                        "\"dbi:SQLite:dbname=@DIR@/awl.sqlite\"\n</Connection>\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    Load load(port, kConns, fresh_req);
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    int64_t t1 = now_ms();
    mc.kill_now();
    sleep_ms(3000);
    int64_t t2 = now_ms();
    REQUIRE(mc.start());
    sleep_ms(7000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    /* "before" ends 250 ms ahead of the kill: requests in flight when memcached dies fail over
     * to on_error (dunno), as they should, and belong to "during". */
    Window before = Load::window(s, t0, t1 - 250), during = Load::window(s, t1 - 250, t2);
    int64_t healthy = first_healthy(s, t2, "defer");
    int64_t recovery = healthy < 0 ? -1 : healthy - t2;
    print_json("memcached_restart", windows_json(s, t0, t1, t2, t3) +
                                        ",\"down_ms\":" + std::to_string(t2 - t1) +
                                        ",\"recovery_ms\":" + std::to_string(recovery));
    std::string notes;
    for (auto &l : split_lines(d->log()))
        if (l.find("greylisting is active") == std::string::npos && notes.size() < 4000)
            notes += l + "\n";
    INFO(notes);
    REQUIRE(d->alive());
    CHECK(before.actions["defer"] == before.answered);
    CHECK(before.answered > 100);
    CHECK(during.answered > 0);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(during.actions["defer"] + during.actions["dunno"] == during.answered);
    CHECK(during.actions["dunno"] > 0); /* the degradation was used */
    CHECK(recovery >= 0);
    CHECK(recovery <= 6000); /* backoff_max 5 s + 1 s */
    CHECK(d->stop() == 0);
}

TEST_CASE("backends: the DNS server stops answering", "[fault][dns]")
{
    dnstest::DnsServer dns;
    std::ifstream pf(dns.dir() + "/nsd.pid");
    pid_t nsd = 0;
    pf >> nsd;
    REQUIRE(nsd > 0);
    uint16_t port = free_tcp_port();
    std::string conf = simple_config(port,
                                     "  <Plugin zen>\n    module = \"RBL\"\n    domain = "
                                     "\"zen.example\"\n  </Plugin>\n" +
                                         action_plugin("pass", "dunno"),
                                     "shards = 2\ndns_servers = \"" + dns.servers() + "\"\n");
    auto d = start_ring(conf, Endpoint::tcp(port));
    Load load(port, kConns, fresh_req);
    load.start();
    sleep_ms(500);
    int64_t t0 = now_ms();
    sleep_ms(2000);
    auto tree = process_tree(nsd);
    int64_t t1 = now_ms();
    for (pid_t p : tree)
        kill(p, SIGSTOP);
    sleep_ms(3000);
    int64_t t2 = now_ms();
    for (pid_t p : tree)
        kill(p, SIGCONT);
    sleep_ms(8000);
    int64_t t3 = now_ms();
    load.stop();
    auto s = load.snapshot();
    Window before = Load::window(s, t0, t1), during = Load::window(s, t1, t2);
    /* Healthy again: a request started after SIGCONT answered at the usual latency. */
    int64_t healthy = -1;
    for (auto &x : s)
        if (x.start_ms >= t2 && x.outcome == Outcome::Reply &&
            x.latency_us < static_cast<int64_t>(before.p99_ms * 1000 * 2 + 50000) &&
            (healthy < 0 || x.start_ms < healthy))
            healthy = x.start_ms;
    int64_t recovery = healthy < 0 ? -1 : healthy - t2;
    print_json("dns_silent", windows_json(s, t0, t1, t2, t3) + ",\"silent_ms\":" +
                                 std::to_string(t2 - t1) + ",\"nsd_processes\":" +
                                 std::to_string(tree.size()) + ",\"recovery_ms\":" +
                                 std::to_string(recovery));
    INFO(d->log().substr(0, 3000));
    REQUIRE(d->alive());
    CHECK(before.answered > 100);
    CHECK(before.actions["dunno"] == before.answered);
    CHECK(during.closed + during.timeouts + during.connect_failed == 0);
    CHECK(during.actions["dunno"] == during.answered);
    CHECK(during.max_ms < 20000.0); /* inside request_timeout */
    Window after = Load::window(s, t2, t3);
    CHECK(after.closed + after.timeouts + after.connect_failed == 0);
    CHECK(recovery >= 0);
    CHECK(recovery <= 7000); /* the resolver's tries (2 s + 4 s) + 1 s */
    CHECK(d->stop() == 0);
}
