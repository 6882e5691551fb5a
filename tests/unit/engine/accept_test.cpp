// accept_test.cpp: listening sockets and accepting, on both backends: IPv6 (v6only) and Unix
// listeners, listener tags and peer addresses, connections spread over SO_REUSEPORT shards,
// conns_per_shard_max backpressure (N accepted, N+1 waits in the backlog and is accepted when
// one closes), a port held by another process, and stale versus live Unix socket files.
#include "harness.h"

#include <set>
#include <sys/stat.h>

using namespace th;

namespace
{
std::string tmp_path(const char *name)
{
    return "/tmp/ringpolicyd-engine-test-" + std::to_string(getpid()) + "-" + name;
}
} // namespace

TEST_CASE("IPv6 and Unix listeners, tags and peers", "[accept]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        std::string path = tmp_path("sock");
        eng_listen v4 = tcp4_any_port(), v6 = tcp6_any_port(), ux = unix_at(path);
        v4.tag = 7;
        v6.tag = 8;
        ux.tag = 9;
        ux.unix_mode = 0660;
        struct stat st;
        {
            Engine eng(echo_config(backend, 2), {v4, v6, ux});
            REQUIRE(stat(path.c_str(), &st) == 0);
            CHECK((st.st_mode & 0777) == 0660);
            for (size_t i = 0; i < 3; i++) {
                sockaddr_storage a = eng.bound(i);
                int fd = connect_to(a);
                REQUIRE(send_all(fd, "TAG\nPEER\n"));
                CHECK(recv_line(fd) == std::to_string(7 + i));
                std::string peer = recv_line(fd);
                if (i == 0)
                    CHECK(peer.rfind("127.0.0.1:", 0) == 0);
                else if (i == 1)
                    CHECK(peer.rfind("[::1]:", 0) == 0);
                else
                    CHECK(peer == "unix:");
                close(fd);
            }
        }
        CHECK(stat(path.c_str(), &st) < 0); // eng_destroy removed the socket file
    }
}

TEST_CASE("connections spread over the shards' SO_REUSEPORT sockets", "[accept]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        Engine eng(echo_config(backend, 4));
        std::set<std::string> shards;
        std::vector<int> fds;
        for (int i = 0; i < 64; i++) {
            int fd = connect_to(eng.bound());
            REQUIRE(send_all(fd, "SHARD\n"));
            shards.insert(recv_line(fd));
            fds.push_back(fd);
        }
        CHECK(shards.size() > 1);
        for (int fd : fds)
            close(fd);
    }
}

TEST_CASE("conns_per_shard_max: N accepted, N+1 waits until one closes", "[accept]")
{
    eng_backend backend = ENG_BACKENDS;
    SECTION(backend_label(backend))
    {
        eng_config cfg = echo_config(backend);
        cfg.limits.conns_per_shard_max = 3;
        Engine eng(cfg);
        std::vector<int> fds;
        for (int i = 0; i < 3; i++) {
            fds.push_back(connect_to(eng.bound()));
            REQUIRE(send_all(fds[i], "n\n"));
            REQUIRE(recv_n(fds[i], 2) == "n\n");
        }
        int extra = connect_to(eng.bound()); // completes in the kernel's backlog
        REQUIRE(send_all(extra, "waiting\n"));
        CHECK(recv_n(extra, 8, 300).empty()); // not accepted: no answer
        CHECK(g_echo.opens == 3);
        CHECK(eng.stats().accept_paused >= 1);
        close(fds[0]);
        CHECK(recv_n(extra, 8, 3000) == "waiting\n"); // accepted once a slot freed
        CHECK(g_echo.opens == 4);
        CHECK(eng.stats().accept_overflow == 0);
        for (size_t i = 1; i < fds.size(); i++)
            close(fds[i]);
        close(extra);
    }
}

TEST_CASE("a port another socket listens on is refused", "[accept]")
{
    int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    // Even with SO_REUSEPORT on the other socket we must not join its group.
    setsockopt(other, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    REQUIRE(bind(other, reinterpret_cast<sockaddr *>(&in), sizeof(in)) == 0);
    REQUIRE(listen(other, 8) == 0);
    socklen_t len = sizeof(in);
    getsockname(other, reinterpret_cast<sockaddr *>(&in), &len);
    eng_listen l = tcp4_any_port();
    memcpy(&l.addr, &in, sizeof(in));
    eng_config cfg = echo_config(ENG_BACKEND_EPOLL, 2);
    cfg.listens = &l;
    cfg.listen_count = 1;
    eng *e = nullptr;
    char err[256];
    CHECK(eng_create(&cfg, &e, err, sizeof(err)) == -EADDRINUSE);
    CHECK(std::string(err).find("cannot bind 127.0.0.1:") == 0);
    CHECK(std::string(err).find("Address already in use") != std::string::npos);
    CHECK(e == nullptr);
    close(other);
}

TEST_CASE("a stale Unix socket file is replaced, a live one refused", "[accept]")
{
    std::string path = tmp_path("stale");
    unlink(path.c_str());
    // A socket file nobody accepts on.
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path.c_str());
    REQUIRE(bind(s, reinterpret_cast<sockaddr *>(&un), sizeof(un)) == 0);
    close(s);
    eng_config cfg = echo_config(ENG_BACKEND_EPOLL);
    eng_listen l = unix_at(path);
    cfg.listens = &l;
    cfg.listen_count = 1;
    eng *e = nullptr;
    char err[256];
    REQUIRE(eng_create(&cfg, &e, err, sizeof(err)) == 0);
    // Now it is live (listening): a second engine must refuse it.
    eng *e2 = nullptr;
    CHECK(eng_create(&cfg, &e2, err, sizeof(err)) == -EADDRINUSE);
    CHECK(std::string(err).find("another process is accepting") != std::string::npos);
    eng_destroy(e);
    // A regular file in the way is not removed.
    FILE *f = fopen(path.c_str(), "w");
    fclose(f);
    CHECK(eng_create(&cfg, &e2, err, sizeof(err)) == -EEXIST);
    CHECK(std::string(err).find("not a socket") != std::string::npos);
    unlink(path.c_str());
}
