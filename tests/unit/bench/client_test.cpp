// Tests for policy/client/ringpolicyd-client: the real binary (path in $RINGPOLICYD_CLIENT)
// against a tiny policy server run by the test on 127.0.0.1 (port chosen by the kernel) or on a
// Unix socket in a fresh temporary directory. Checks what is sent (request= and instance=
// first, then the given lines in order, a new instance per request), what is printed, -k,
// -v, the Unix socket forms, and every error path's exit status. The server is test_server.h.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_server.h"

extern char **environ;

namespace
{

struct run_result {
    int status = -1;
    std::string out, err;
};

std::string client_path()
{
    const char *p = std::getenv("RINGPOLICYD_CLIENT");
    REQUIRE(p != nullptr);
    return p;
}

// Runs the client with args, feeding it input; returns its exit status and output.
run_result run_client(const std::vector<std::string> &args, const std::string &input)
{
    int in_pipe[2], out_pipe[2], err_pipe[2];
    REQUIRE(pipe2(in_pipe, O_CLOEXEC) == 0);
    REQUIRE(pipe2(out_pipe, O_CLOEXEC) == 0);
    REQUIRE(pipe2(err_pipe, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
    std::string path = client_path();
    std::vector<char *> argv{const_cast<char *>(path.c_str())};
    for (const auto &a : args)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    REQUIRE(posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    signal(SIGPIPE, SIG_IGN);
    (void)!write(in_pipe[1], input.data(), input.size()); // inputs here are far below 64 KiB
    close(in_pipe[1]);
    run_result r;
    pollfd pfd[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string *dst[2] = {&r.out, &r.err};
    for (int open_count = 2; open_count > 0;) {
        REQUIRE(poll(pfd, 2, 30000) > 0);
        for (int i = 0; i < 2; i++) {
            if (!pfd[i].revents)
                continue;
            char tmp[4096];
            ssize_t n = read(pfd[i].fd, tmp, sizeof(tmp));
            if (n > 0) {
                dst[i]->append(tmp, (size_t)n);
            } else {
                pfd[i].fd = -1;
                open_count--;
            }
        }
    }
    close(out_pipe[0]);
    close(err_pipe[0]);
    int wstatus = 0;
    REQUIRE(waitpid(pid, &wstatus, 0) == pid);
    REQUIRE(WIFEXITED(wstatus));
    r.status = WEXITSTATUS(wstatus);
    return r;
}

std::vector<std::string> lines_of(const std::string &s)
{
    std::vector<std::string> out;
    size_t start = 0, nl;
    while ((nl = s.find('\n', start)) != std::string::npos) {
        out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    if (start < s.size())
        out.push_back(s.substr(start));
    return out;
}

// A loopback port nobody listens on: bound by us, then closed.
int closed_port()
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (sockaddr *)&sin, sizeof(sin)) == 0);
    socklen_t len = sizeof(sin);
    REQUIRE(getsockname(fd, (sockaddr *)&sin, &len) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

} // namespace

TEST_CASE("client: sends request= and a fresh instance first, prints actions", "[client]")
{
    bool unix_socket = GENERATE(false, true);
    INFO((unix_socket ? "unix socket" : "tcp"));
    test_server srv(unix_socket);
    srv.reply_fn = [](const std::string &req) {
        size_t at = req.find("client_address=");
        std::string ip = req.substr(at + 15, req.find('\n', at) - at - 15);
        return "action=REJECT seen " + ip + "\n\n";
    };
    srv.start();
    std::vector<std::string> args = {"-h", srv.address()};
    if (unix_socket)
        args = {"-s", srv.path()};
    run_result r = run_client(args, "client_address=192.0.2.1\nsender=a@example.com\n\n"
                                    "client_address=192.0.2.2\r\nrecipient=x=y\r\n\r\n");
    srv.stop();
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(r.out == "REJECT seen 192.0.2.1\nREJECT seen 192.0.2.2\n");
    auto reqs = srv.requests();
    REQUIRE(reqs.size() == 2);
    CHECK(srv.connections() == 2); // no -k: one connection per request, as 2.05
    std::set<std::string> instances;
    for (const auto &rq : reqs) {
        auto l = lines_of(rq.request);
        REQUIRE(l.size() >= 4);
        CHECK(l[0] == "request=smtpd_access_policy");
        REQUIRE(l[1].rfind("instance=0.", 0) == 0);
        CHECK(l[1].size() == std::string("instance=0.").size() + 15);
        instances.insert(l[1]);
        CHECK(l.back().empty());
    }
    CHECK(instances.size() == 2);
    CHECK(lines_of(reqs[0].request)[2] == "client_address=192.0.2.1");
    CHECK(lines_of(reqs[0].request)[3] == "sender=a@example.com");
    CHECK(lines_of(reqs[1].request)[3] == "recipient=x=y"); // CR dropped, later '=' kept
}

TEST_CASE("client: a Unix socket path given to -h, and unix:PATH", "[client]")
{
    test_server srv(true);
    srv.start();
    run_result a = run_client({"-h", srv.path()}, "a=b\n\n");
    run_result b = run_client({"--host", "unix:" + srv.path()}, "a=b\n\n");
    srv.stop();
    CHECK(a.status == 0);
    CHECK(a.out == "DUNNO\n");
    CHECK(b.status == 0);
    CHECK(b.out == "DUNNO\n");
}

TEST_CASE("client: -k uses one connection and survives the server closing it", "[client]")
{
    test_server srv(false);
    int close_after = GENERATE(0, 1, 2);
    INFO("server closes after " << close_after << " replies");
    srv.close_after = close_after;
    srv.start();
    run_result r = run_client({"-k", "-h", srv.address()}, "a=1\n\na=2\n\na=3\n\na=4\n\n");
    srv.stop();
    CHECK(r.status == 0);
    CHECK(r.err.empty());
    CHECK(r.out == "DUNNO\nDUNNO\nDUNNO\nDUNNO\n");
    CHECK(srv.connections() == (close_after ? 4 / close_after : 1));
    CHECK(srv.requests().size() == 4);
}

TEST_CASE("client: -v copies request and reply to stderr", "[client]")
{
    test_server srv(false);
    srv.reply_fn = [](const std::string &) { return std::string("action=dunno\n\n"); };
    srv.start();
    run_result r = run_client({"--verbose", "--host", srv.address()}, "foo=bar\n\n");
    srv.stop();
    CHECK(r.status == 0);
    CHECK(r.out == "dunno\n");
    auto l = lines_of(r.err);
    REQUIRE(l.size() == 6);
    CHECK(l[0] == ">> request=smtpd_access_policy");
    CHECK(l[1].rfind(">> instance=0.", 0) == 0);
    CHECK(l[2] == ">> foo=bar");
    CHECK(l[3] == ">> ");
    CHECK(l[4] == "<< action=dunno");
    CHECK(l[5] == "<< ");
}

TEST_CASE("client: every action line of a reply is printed", "[client]")
{
    test_server srv(false);
    srv.reply_fn = [](const std::string &) {
        return std::string("action=PREPEND X-Test: 1\nother=x\naction=DUNNO\n\n");
    };
    srv.start();
    run_result r = run_client({"-h", srv.address()}, "a=b\n\n");
    srv.stop();
    CHECK(r.status == 0);
    CHECK(r.out == "PREPEND X-Test: 1\nDUNNO\n");
}

TEST_CASE("client: end of input", "[client]")
{
    test_server srv(false);
    srv.start();
    SECTION("nothing at all: exit 0, no connection")
    {
        run_result r = run_client({"-h", srv.address()}, "");
        CHECK(r.status == 0);
        CHECK(r.out.empty());
    }
    SECTION("lines without the closing empty line are sent")
    {
        run_result r = run_client({"-h", srv.address()}, "a=b\n\nc=d");
        CHECK(r.status == 0);
        CHECK(r.out == "DUNNO\nDUNNO\n");
    }
    srv.stop();
    if (srv.requests().size() == 2)
        CHECK(lines_of(srv.requests()[1].request)[2] == "c=d");
    else
        CHECK(srv.connections() == 0);
}

TEST_CASE("client: errors exit 1 with one line on stderr", "[client]")
{
    test_server srv(false);
    SECTION("input line without '='; earlier requests are still answered")
    {
        srv.start();
        run_result r = run_client({"-h", srv.address()}, "a=b\n\nbogus\n\n");
        CHECK(r.status == 1);
        CHECK(r.out == "DUNNO\n");
        CHECK(r.err == "ringpolicyd-client: standard input line 3: no '=' (expected "
                       "name=value)\n");
    }
    SECTION("reply without action")
    {
        srv.reply_fn = [](const std::string &) { return std::string("foo=bar\n\n"); };
        srv.start();
        run_result r = run_client({"-h", srv.address()}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("no action found") != std::string::npos);
    }
    SECTION("reply line without '='")
    {
        srv.reply_fn = [](const std::string &) { return std::string("garbage\n\n"); };
        srv.start();
        run_result r = run_client({"-h", srv.address()}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("reply line without '='") != std::string::npos);
    }
    SECTION("server closes without a reply")
    {
        srv.reply_fn = [](const std::string &) { return std::string(); };
        srv.start();
        run_result r = run_client({"-k", "-h", srv.address()}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("closed the connection without a reply") != std::string::npos);
    }
    SECTION("server closes in the middle of a reply")
    {
        srv.reply_fn = [](const std::string &) { return std::string("action=DUN"); };
        srv.close_after = 1;
        srv.start();
        run_result r = run_client({"-h", srv.address()}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("in the middle of a reply") != std::string::npos);
    }
    SECTION("no reply within --timeout")
    {
        srv.reply_fn = [](const std::string &) { return std::string(test_server_hang); };
        srv.start();
        run_result r = run_client({"--timeout", "1", "-h", srv.address()}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("no reply from") != std::string::npos);
    }
    SECTION("connection refused")
    {
        run_result r = run_client({"-h", "127.0.0.1:" + std::to_string(closed_port())}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("cannot connect to") != std::string::npos);
        CHECK(r.err.find("Connection refused") != std::string::npos);
    }
    SECTION("missing Unix socket")
    {
        run_result r = run_client({"-s", "/nonexistent/dir/policy.sock"}, "a=b\n\n");
        CHECK(r.status == 1);
        CHECK(r.err.find("No such file or directory") != std::string::npos);
    }
    srv.stop();
}

TEST_CASE("client: usage", "[client]")
{
    for (const char *help : {"--help", "-?", "--usage", "-h"}) {
        run_result r = run_client({help}, "");
        INFO(help);
        CHECK(r.status == 0);
        CHECK(r.out.rfind("usage: ringpolicyd-client", 0) == 0);
        CHECK(r.out.find("Differences from policyd-client") != std::string::npos);
    }
    run_result bad = run_client({"--bogus"}, "");
    CHECK(bad.status == 2);
    CHECK(bad.err.rfind("ringpolicyd-client: bad option", 0) == 0);
    run_result bad_addr = run_client({"-h", "no-port-here"}, "a=b\n\n");
    CHECK(bad_addr.status == 2);
    CHECK(bad_addr.err.find("expected HOST:PORT") != std::string::npos);
    run_result bad_timeout = run_client({"-t", "0"}, "");
    CHECK(bad_timeout.status == 2);
}
