// listen_test.cpp: listeners added and removed while the engine runs (eng_listen_add,
// eng_listen_start, eng_listen_remove), on both backends, with the engine tests' echo app
// (tests/unit/engine/harness.h): an added TCP or Unix listener accepts only once started and
// carries its tag; a removed one refuses new connections (its socket closed on every shard,
// its Unix file gone) while connections accepted from it keep working; a bind failure is one
// sentence and leaves nothing behind; bad indexes are refused.
#include "../engine/harness.h"

#include <sys/stat.h>

using namespace th;

namespace
{

std::string tmp_path(const char *name)
{
    return "/tmp/ringpolicyd-ops-listen-" + std::to_string(getpid()) + "-" + name;
}

// A connect that fails (refused) within the timeout.
bool refused(const sockaddr_storage &a)
{
    int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = a.ss_family == AF_INET ? sizeof(sockaddr_in)
                    : a.ss_family == AF_INET6 ? sizeof(sockaddr_in6)
                                               : sizeof(sockaddr_un);
    int rc = connect(fd, reinterpret_cast<const sockaddr *>(&a), len);
    close(fd);
    return rc < 0;
}

sockaddr_storage bound_of(eng *e, size_t idx)
{
    sockaddr_storage a{};
    socklen_t len = 0;
    REQUIRE(eng_listen_bound(e, idx, &a, &len) == 0);
    return a;
}

} // namespace

TEST_CASE("a TCP listener added, started and removed while running", "[listen]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend, 2));
        char err[256] = "";
        eng_listen l = tcp4_any_port();
        l.tag = 42;
        int idx = eng_listen_add(eng.e, &l, err, sizeof(err));
        INFO(err);
        REQUIRE(idx == 1);
        sockaddr_storage a = bound_of(eng.e, 1);
        /* Bound but not accepting yet: a connect waits in the backlog and is taken once the
         * listener starts. */
        int early = connect_to(a);
        REQUIRE(early >= 0);
        REQUIRE(eng_listen_start(eng.e, 1) == 0);
        REQUIRE(send_all(early, "TAG\n"));
        CHECK(recv_line(early) == "42");
        /* Several connections, over both shards' sockets. */
        std::vector<int> fds;
        for (int i = 0; i < 8; i++) {
            int fd = connect_to(a);
            REQUIRE(send_all(fd, "TAG\n"));
            CHECK(recv_line(fd) == "42");
            fds.push_back(fd);
        }
        REQUIRE(eng_listen_remove(eng.e, 1) == 0);
        CHECK(eventually([&] { return refused(a); }));
        CHECK(eng_listen_bound(eng.e, 1, &a, nullptr) == -EINVAL);
        /* Connections from the removed listener still work, and close as usual. */
        for (int fd : fds) {
            REQUIRE(send_all(fd, "hello\nTAG\n"));
            CHECK(recv_line(fd) == "hello");
            CHECK(recv_line(fd) == "42");
            close(fd);
        }
        close(early);
        /* The listener from the configuration still accepts. */
        int fd = connect_to(eng.bound(0));
        REQUIRE(send_all(fd, "ping\n"));
        CHECK(recv_line(fd) == "ping");
        close(fd);
        CHECK(eng_listen_remove(eng.e, 1) == -EINVAL); /* already removed */
        CHECK(eng_listen_start(eng.e, 1) == -EINVAL);
        CHECK(eng_listen_remove(eng.e, 7) == -EINVAL);
        CHECK(eventually([&] { return eng.stats().conns_open == 0; }));
    }
}

TEST_CASE("a listener from the configuration removed; a Unix listener added and removed",
          "[listen]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string path = tmp_path("add.sock");
        Engine eng(echo_config(backend, 2), {tcp4_any_port(), tcp4_any_port()});
        sockaddr_storage first = eng.bound(0);
        int kept = connect_to(first);
        REQUIRE(send_all(kept, "ping\n"));
        REQUIRE(recv_line(kept) == "ping");
        REQUIRE(eng_listen_remove(eng.e, 0) == 0);
        CHECK(eventually([&] { return refused(first); }));
        REQUIRE(send_all(kept, "still\n"));
        CHECK(recv_line(kept) == "still");
        close(kept);

        char err[256] = "";
        eng_listen u = unix_at(path);
        u.tag = 5;
        int idx = eng_listen_add(eng.e, &u, err, sizeof(err));
        INFO(err);
        REQUIRE(idx == 2);
        REQUIRE(eng_listen_start(eng.e, 2) == 0);
        sockaddr_storage ua = bound_of(eng.e, 2);
        int fd = connect_to(ua);
        REQUIRE(send_all(fd, "TAG\n"));
        CHECK(recv_line(fd) == "5");
        REQUIRE(eng_listen_remove(eng.e, 2) == 0);
        struct stat st;
        CHECK(eventually([&] { return stat(path.c_str(), &st) < 0; })); /* file removed */
        REQUIRE(send_all(fd, "after\n"));
        CHECK(recv_line(fd) == "after");
        close(fd);
        int other = connect_to(eng.bound(1));
        REQUIRE(send_all(other, "ping\n"));
        CHECK(recv_line(other) == "ping");
        close(other);
    }
}

TEST_CASE("eng_listen_add: a port in use is one sentence and leaves nothing behind", "[listen]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend, 2));
        eng_listen l = tcp4_any_port();
        l.addr = eng.bound(0); /* the engine's own port: taken */
        char err[256] = "";
        int rc = eng_listen_add(eng.e, &l, err, sizeof(err));
        CHECK(rc == -EADDRINUSE);
        CHECK(std::string(err).find("cannot bind 127.0.0.1:") == 0);
        /* The index was not used: the next addition gets it. */
        eng_listen ok = tcp4_any_port();
        CHECK(eng_listen_add(eng.e, &ok, err, sizeof(err)) == 1);
        REQUIRE(eng_listen_start(eng.e, 1) == 0);
        int fd = connect_to(bound_of(eng.e, 1));
        REQUIRE(send_all(fd, "ping\n"));
        CHECK(recv_line(fd) == "ping");
        close(fd);
    }
}
