// it_client.cpp: ringpolicyd-client (spec 15) against the running daemons: -h HOST:PORT over TCP,
// Unix socket paths (-h PATH and -s PATH), -k (one connection), -v (the exchange copied to
// standard error), and the same output as the Perl policyd-client for the same input.
#include "itcommon.h"

using namespace itest;

namespace
{

const std::string kInput = "sender=bad@example.org\n\nsender=good@example.org\n\n"
                           "sender=bad@example.org\nrecipient=x@y\n\n";
const std::string kOutput = "reject bad sender\ndunno\nreject bad sender\n";

/* The chain answers `reject bad sender` for sender=bad@example.org. */
std::string chain()
{
    return "  <Plugin fix>\n    module = \"Condition\"\n    key = \"sender\"\n"
           "    match = \"bad@example.org\"\n    action = \"reject bad sender\"\n  </Plugin>\n";
}

} // namespace

TEST_CASE("ringpolicyd-client over TCP and Unix sockets", "[client]")
{
    need_file(client_bin(), "ringpolicyd-client");
    TempDir t;
    std::string sock = t.file("c.sock");
    uint16_t p = free_tcp_port();
    std::string config = "port = \"127.0.0.1:" + std::to_string(p) + "," + sock + "|unix\"\n" +
                         vhost_block(std::to_string(p), "tcp", chain()) +
                         vhost_block(sock, "unix", chain());
    auto d = start_ring(config, Endpoint::tcp(p));

    for (std::vector<std::string> args :
         {std::vector<std::string>{"-h", "127.0.0.1:" + std::to_string(p)},
          std::vector<std::string>{"--host", "127.0.0.1:" + std::to_string(p), "-k"},
          std::vector<std::string>{"-h", sock}, std::vector<std::string>{"-s", sock, "-k"}}) {
        args.insert(args.begin(), client_bin());
        std::string shown;
        for (auto &a : args)
            shown += a + " ";
        INFO(shown);
        RunResult r = run_command(args, 15000, kInput);
        INFO("stderr: " << r.err);
        CHECK(r.status == 0);
        CHECK(r.out == kOutput);
    }
    CHECK(d->wait_log("unix: instance=", 2000));
    CHECK(d->wait_log("tcp: instance=", 2000));

    /* -v copies the exchange to standard error */
    RunResult v = run_command({client_bin(), "-v", "-h", "127.0.0.1:" + std::to_string(p)}, 15000,
                              "sender=bad@example.org\n\n");
    CHECK(v.status == 0);
    CHECK(v.out == "reject bad sender\n");
    CHECK(contains(v.err, ">> sender=bad@example.org"));
    CHECK(contains(v.err, "<< action=reject bad sender"));

    /* nothing listening: an error, not a hang */
    RunResult none = run_command(
        {client_bin(), "-h", "127.0.0.1:" + std::to_string(free_tcp_port())}, 15000, kInput);
    CHECK(none.status != 0);
    CHECK(none.status != -1);
}

TEST_CASE("ringpolicyd-client prints what the Perl policyd-client prints", "[client][diff]")
{
    need_file(client_bin(), "ringpolicyd-client");
    need_perl();
    need_file("/usr/bin/policyd-client", "the Perl policyd-client");
    uint16_t p = free_tcp_port();
    Daemon perl(Impl::Perl, simple_config(p, chain()));
    perl.set_ready(Endpoint::tcp(p));
    REQUIRE(perl.start());

    RunResult ours =
        run_command({client_bin(), "-h", "127.0.0.1:" + std::to_string(p)}, 15000, kInput);
    RunResult theirs = run_command(
        {"/usr/bin/policyd-client", "-h", "127.0.0.1:" + std::to_string(p)}, 15000, kInput);
    INFO("ours: " << ours.status << " " << ours.out << ours.err << "\ntheirs: " << theirs.status
                  << " " << theirs.out << theirs.err);
    CHECK(ours.out == kOutput);
    CHECK(theirs.out == kOutput);
    /* documented difference: 2.05's client exits 255 at the end of input, ours 0 */
    CHECK(ours.status == 0);
}
