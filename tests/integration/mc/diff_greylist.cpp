// diff_greylist.cpp: Greylist's ticket cycle with use_autowl = 0 on memcached, the Perl mtpolicyd
// 2.05 against ringpolicyd, where 2.05 behaves as intended (spec 13.12): the first attempt is
// deferred, an early retry is deferred with the wait left, a retry once the ticket is due passes
// (the ticket is then deleted, so the next attempt is deferred again), per triplet. Each daemon
// has its own memcached namespace; "the ticket is due" is made by rewriting the ticket's value in
// memcached (2.05 ignores min_retry_wait: its wait is always 300 s). The wait left is compared
// within one second (the two daemons are asked a moment apart).
// GCC 12 with -fsanitize=address warns -Wmaybe-uninitialized inside libstdc++'s <regex> (a
// false positive, GCC PR 105616), which -Werror turns into a failed sanitizer build.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "itcommon.h"

#include "../../unit/mc/mc_server.h"

#include <regex>

using namespace itest;

namespace
{

rpdtest::McServer &mc()
{
    static rpdtest::McServer s;
    return s;
}

struct Side {
    Impl impl = Impl::Ring;
    std::string ns;
    uint16_t port = free_tcp_port();
    std::unique_ptr<Daemon> d;
};

std::string config(const Side &s)
{
    return "port = \"127.0.0.1:" + std::to_string(s.port) +
           "\"\n<Connection memcached>\n  module = \"Memcached\"\n  servers = \"" + mc().addr() +
           "\"\n  namespace = \"" + s.ns +
           "\"\n</Connection>\n"
           // 2.05 opens its auto-whitelist store even with use_autowl = 0.
           "<Connection db>\n  module = \"Sql\"\n  dsn = \"dbi:SQLite:dbname=@DIR@/awl.sqlite\"\n"
           "</Connection>\n" +
           vhost_block(std::to_string(s.port), "gl",
                       "  <Plugin greylist>\n    module = \"Greylist\"\n    use_autowl = 0\n"
                       "  </Plugin>\n" +
                           action_plugin("pass", "dunno"));
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

// "(298s left)" -> the number; -1 when the text has none.
long left_of(const std::string &a)
{
    std::smatch m;
    static const std::regex re(R"(\((-?\d+)s left\)$)");
    return std::regex_search(a, m, re) ? std::stol(m[1]) : -1;
}

std::string without_left(const std::string &a)
{
    return std::regex_replace(a, std::regex(R"( \(-?\d+s left\)$)"), " (Ns left)");
}

} // namespace

TEST_CASE("the ticket cycle with use_autowl = 0: Perl 2.05 and ringpolicyd agree",
          "[diff_greylist]")
{
    need_perl();
    need_ringpolicyd();
    Side sides[2];
    sides[0].impl = Impl::Perl;
    sides[0].ns = "gp" + std::to_string(getpid()) + "-";
    sides[1].impl = Impl::Ring;
    sides[1].ns = "gr" + std::to_string(getpid()) + "-";
    for (Side &s : sides) {
        s.d.reset(new Daemon(s.impl, config(s)));
        s.d->set_ready(Endpoint::tcp(s.port));
        bool ok = s.d->start();
        INFO(impl_name(s.impl) << ": " << s.d->error() << "\n" << s.d->log());
        REQUIRE(ok);
    }
    auto ask_both = [&](const std::string &sender, const std::string &ip, const std::string &rcpt) {
        std::vector<std::string> out;
        for (Side &s : sides)
            out.push_back(first(ask(
                Endpoint::tcp(s.port),
                postfix_request({{"sender", sender}, {"client_address", ip}, {"recipient", rcpt}}),
                10000)));
        return out;
    };
    const std::string s1 = "alice@sender.example", ip = "192.0.2.77", r1 = "bob@rcpt.example";
    std::vector<std::string> a = ask_both(s1, ip, r1);
    CHECK(a[0] == "defer greylisting is active");
    CHECK(a[1] == a[0]);
    a = ask_both(s1, ip, r1);
    INFO("perl: " << a[0] << " / ring: " << a[1]);
    CHECK(without_left(a[0]) == "defer greylisting is active (Ns left)");
    CHECK(without_left(a[1]) == without_left(a[0]));
    CHECK(std::labs(left_of(a[0]) - left_of(a[1])) <= 1);
    CHECK(left_of(a[1]) >= 298);
    CHECK(left_of(a[1]) <= 300);
    // Another triplet of the same client is greylisted on its own.
    a = ask_both(s1, ip, "carol@rcpt.example");
    CHECK(a[0] == "defer greylisting is active");
    CHECK(a[1] == a[0]);
    // The ticket falls due: both daemons stored it under SENDER,CLIENT,RECIPIENT with the Unix
    // time from which a retry is accepted.
    std::string key = s1 + "," + ip + "," + r1;
    for (Side &s : sides) {
        std::string v = mc().raw_get(s.ns + key);
        INFO(impl_name(s.impl) << " ticket " << v);
        REQUIRE(v != "(none)");
        CHECK(std::labs(std::stol(v) - long(time(nullptr)) - 300) <= 5);
        REQUIRE(mc().raw_set(s.ns + key, std::to_string(long(time(nullptr)) - 1), 7200));
    }
    a = ask_both(s1, ip, r1);
    CHECK(a[0] == "dunno");
    CHECK(a[1] == a[0]);
    // The pass deleted the ticket: greylisted again.
    for (Side &s : sides)
        CHECK(mc().raw_get(s.ns + key) == "(none)");
    a = ask_both(s1, ip, r1);
    CHECK(a[0] == "defer greylisting is active");
    CHECK(a[1] == a[0]);
    for (Side &s : sides)
        s.d->stop();
}
