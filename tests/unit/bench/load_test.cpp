// Tests for bench/load: the statistics (action counting and merging, pure) and the real
// ringpolicyd-load binary (path in $RINGPOLICYD_LOAD) for about a second at a time against the
// in-test server of test_server.h: what it sends on the wire, what it counts, each kind of
// error, --request-file and --idle. Nothing here asserts a speed.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>

#include "test_server.h"

extern "C" {
#include "stats.h"
}

extern char **environ;

namespace
{

struct run_result {
    int status = -1;
    std::string out;
};

// Runs ringpolicyd-load with args; stdout captured, stderr passed through.
run_result run_load(const std::vector<std::string> &args)
{
    const char *path = std::getenv("RINGPOLICYD_LOAD");
    REQUIRE(path != nullptr);
    int out_pipe[2];
    REQUIRE(pipe2(out_pipe, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    std::vector<char *> argv{const_cast<char *>(path)};
    for (const auto &a : args)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    REQUIRE(posix_spawn(&pid, path, &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(out_pipe[1]);
    run_result r;
    char buf[4096];
    ssize_t n;
    while ((n = read(out_pipe[0], buf, sizeof(buf))) > 0)
        r.out.append(buf, (size_t)n);
    close(out_pipe[0]);
    int ws = 0;
    REQUIRE(waitpid(pid, &ws, 0) == pid);
    REQUIRE(WIFEXITED(ws));
    r.status = WEXITSTATUS(ws);
    return r;
}

// The number after "key": in the JSON output (keys used here are unique in it).
double json_number(const std::string &json, const std::string &key)
{
    size_t at = json.find("\"" + key + "\":");
    INFO("key " << key << " in " << json);
    REQUIRE(at != std::string::npos);
    return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

std::map<std::string, std::string> attrs_of(const std::string &request)
{
    std::map<std::string, std::string> out;
    size_t start = 0, nl;
    while ((nl = request.find('\n', start)) != std::string::npos && nl > start) {
        std::string line = request.substr(start, nl - start);
        size_t eq = line.find('=');
        out[line.substr(0, eq)] = line.substr(eq + 1);
        start = nl + 1;
    }
    return out;
}

std::vector<std::string> base_args(const test_server &srv)
{
    return {"--server", srv.address(), "--duration", "1", "--warmup", "0", "--json"};
}

} // namespace

TEST_CASE("load stats: merge adds every counter, the actions and the histogram", "[load]")
{
    std::unique_ptr<load_stats> s(new load_stats()), t(new load_stats());
    load_stats_init(s.get());
    load_stats_init(t.get());
    bench_actions_count(&s->actions, "dunno", 5);
    bench_actions_count(&t->actions, "dunno", 5);
    bench_actions_count(&t->actions, "reject x", 8);
    s->requests = 3;
    s->err_closed = 1;
    s->err_warmup = 4;
    t->requests = 7;
    t->err_timeout = 2;
    t->err_malformed = 1;
    t->err_connect = 5;
    t->connects = 9;
    bench_hist_add(&t->latency, 100);
    load_stats_merge(s.get(), t.get());
    CHECK(s->requests == 10);
    CHECK(s->err_closed == 1);
    CHECK(s->err_timeout == 2);
    CHECK(s->err_malformed == 1);
    CHECK(s->err_connect == 5);
    CHECK(s->err_warmup == 4); // outside the window: not in the error total
    CHECK(load_stats_errors(s.get()) == 9);
    CHECK(s->connects == 9);
    REQUIRE(s->actions.kind_count == 2);
    CHECK(s->actions.kinds[0].count == 2);
    CHECK(std::string(s->actions.kinds[1].name) == "reject");
    CHECK(bench_hist_count(&s->latency) == 1);
}

TEST_CASE("load: closed loop over N connections, Postfix-shaped requests", "[load]")
{
    bool unix_socket = GENERATE(false, true);
    test_server srv(unix_socket);
    srv.start();
    auto args = base_args(srv);
    args.insert(args.end(), {"--connections", "3", "--threads", "2", "--seed", "5"});
    run_result r = run_load(args);
    srv.stop();
    INFO(r.out);
    CHECK(r.status == 0);
    double requests = json_number(r.out, "requests");
    CHECK(requests > 0);
    CHECK(json_number(r.out, "errors") == 0);
    CHECK(json_number(r.out, "dunno") == requests);
    CHECK(json_number(r.out, "connections") == 3);
    CHECK(json_number(r.out, "p50") > 0);
    CHECK(r.out.find("\"kernel\":") != std::string::npos);
    CHECK(r.out.find("\"command\":") != std::string::npos);
    CHECK(srv.connections() == 3);

    // On each connection the requests follow mails: RCPT..., END-OF-MESSAGE, sharing instance.
    std::map<int, std::vector<std::map<std::string, std::string>>> by_conn;
    for (const auto &rq : srv.requests())
        by_conn[rq.conn_idx].push_back(attrs_of(rq.request));
    REQUIRE(by_conn.size() == 3);
    std::set<std::string> all_instances;
    for (auto &kv : by_conn) {
        const auto &reqs = kv.second;
        std::string instance;
        for (size_t i = 0; i < reqs.size(); i++) {
            const auto &a = reqs[i];
            CHECK(a.size() == 29);
            CHECK(a.at("request") == "smtpd_access_policy");
            if (instance.empty()) {
                instance = a.at("instance");
                CHECK(a.at("protocol_state") == "RCPT");
                CHECK(a.at("queue_id").empty());
                CHECK(all_instances.insert(instance).second);
            }
            CHECK(a.at("instance") == instance);
            if (a.at("protocol_state") == "END-OF-MESSAGE")
                instance.clear();
        }
    }
}

TEST_CASE("load: errors are counted by kind", "[load]")
{
    test_server srv(false);
    std::vector<std::string> extra;
    std::string kind;
    SECTION("malformed: a reply line without '='")
    {
        srv.reply_fn = [](const std::string &) { return std::string("garbage\n\n"); };
        kind = "malformed";
    }
    SECTION("malformed: no action")
    {
        srv.reply_fn = [](const std::string &) { return std::string("foo=bar\n\n"); };
        kind = "malformed";
    }
    SECTION("closed: no reply, connection closed")
    {
        srv.reply_fn = [](const std::string &) { return std::string(); };
        kind = "closed";
    }
    SECTION("timeouts: no reply at all")
    {
        srv.reply_fn = [](const std::string &) { return std::string(test_server_hang); };
        extra = {"--timeout-ms", "100"};
        kind = "timeouts";
    }
    srv.start();
    auto args = base_args(srv);
    args.insert(args.end(), {"--connections", "2"});
    args.insert(args.end(), extra.begin(), extra.end());
    run_result r = run_load(args);
    srv.stop();
    INFO(r.out);
    CHECK(r.status == 1); // nothing answered
    CHECK(json_number(r.out, "requests") == 0);
    CHECK(json_number(r.out, kind) > 0);
    CHECK(json_number(r.out, "errors") >= json_number(r.out, kind));
}

TEST_CASE("load: connect failures are counted and retried", "[load]")
{
    int port;
    {
        test_server gone(false); // bound, listening, then closed: nobody is there afterwards
        port = std::stoi(gone.address().substr(gone.address().rfind(':') + 1));
    }
    run_result r = run_load({"--server", "127.0.0.1:" + std::to_string(port), "--duration", "1",
                             "--warmup", "0", "--json", "--connections", "1"});
    INFO(r.out);
    CHECK(r.status == 1);
    CHECK(json_number(r.out, "connect") >= 5); // one retry per 100 ms
}

TEST_CASE("load: a server closing after each reply costs reconnects, not the run", "[load]")
{
    test_server srv(false);
    srv.close_after = 1;
    srv.start();
    auto args = base_args(srv);
    args.insert(args.end(), {"--connections", "2"});
    run_result r = run_load(args);
    srv.stop();
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK(json_number(r.out, "requests") > 0);
    CHECK(json_number(r.out, "connects") > 2);
}

TEST_CASE("load: --request-file sends that request", "[load]")
{
    char path[] = "/tmp/rpd-load-req-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    std::string body = "request=smtpd_access_policy\ninstance=fixed.1\nclient_address=192.0.2.7\n";
    REQUIRE(write(fd, body.data(), body.size()) == (ssize_t)body.size());
    close(fd);
    test_server srv(false);
    srv.start();
    auto args = base_args(srv);
    args.insert(args.end(), {"--connections", "1", "--request-file", path});
    run_result r = run_load(args);
    srv.stop();
    unlink(path);
    INFO(r.out);
    CHECK(r.status == 0);
    auto reqs = srv.requests();
    REQUIRE(!reqs.empty());
    for (const auto &rq : reqs)
        REQUIRE(rq.request == body + "\n");
    CHECK(r.out.find("fixed request from") != std::string::npos);
}

TEST_CASE("load: bad request files and options are refused with exit 2", "[load]")
{
    char path[] = "/tmp/rpd-load-req-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    std::string body = "a=b\n\nc=d\n";
    REQUIRE(write(fd, body.data(), body.size()) == (ssize_t)body.size());
    close(fd);
    CHECK(run_load({"--request-file", path}).status == 2);
    unlink(path);
    CHECK(run_load({"--request-file", "/nonexistent/file"}).status == 2);
    CHECK(run_load({"--connections", "0"}).status == 2);
    CHECK(run_load({"--server", "no-port"}).status == 2);
    CHECK(run_load({"--port-map", "127.0.0.1:5-3"}).status == 2);
    CHECK(run_load({"--rcpt-min", "4", "--rcpt-max", "2"}).status == 2);
    CHECK(run_load({"--bogus"}).status == 2);
    run_result help = run_load({"--help"});
    CHECK(help.status == 0);
    CHECK(help.out.rfind("usage: ringpolicyd-load", 0) == 0);
}

TEST_CASE("load: --port-map adds one server per port", "[load]")
{
    // Port P has our server; P+1 most likely nobody (then its connections count connect
    // errors). Either way, half of the connections go to P.
    test_server a(false);
    int pa = std::stoi(a.address().substr(a.address().rfind(':') + 1));
    if (pa == 65535)
        return; // no room for a second port; --server covers the spread below
    a.start();
    run_result r =
        run_load({"--port-map", "127.0.0.1:" + std::to_string(pa) + "-" + std::to_string(pa + 1),
                  "--connections", "4", "--duration", "1", "--warmup", "0", "--json"});
    a.stop();
    INFO(r.out);
    CHECK(a.connections() == 2);
    std::string servers = "\"servers\":[\"127.0.0.1:" + std::to_string(pa) +
                          "\",\"127.0.0.1:" + std::to_string(pa + 1) + "\"]";
    CHECK(r.out.find(servers) != std::string::npos);
}

TEST_CASE("load: two --server options share the connections", "[load]")
{
    test_server a(false), b(true);
    a.start();
    b.start();
    run_result r = run_load({"--server", a.address(), "--server", b.address(), "--connections", "4",
                             "--duration", "1", "--warmup", "0"});
    a.stop();
    b.stop();
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK(a.connections() == 2);
    CHECK(b.connections() == 2);
    CHECK(r.out.find("requests in 1.00 s") != std::string::npos);
    CHECK(r.out.find("setup: git ") != std::string::npos);
    CHECK(r.out.find("command: ") != std::string::npos);
}

TEST_CASE("load: --idle opens, serves once and holds N connections", "[load]")
{
    test_server srv(false);
    srv.start();
    run_result r = run_load({"--server", srv.address(), "--idle", "20", "--hold", "0"});
    srv.stop();
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK(r.out.rfind("ready: 20 idle connections open, 0 errors", 0) == 0);
    CHECK(srv.connections() == 20);
    CHECK(srv.requests().size() == 20);
}
