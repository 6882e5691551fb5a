// it_smtpverify.cpp: the SMTPVerify plugin (spec 13.21) in a real ringpolicyd against real peers
// on 127.0.0.1: a scripted SMTP server written here (smtp_fakes.h: the exact dialogue, STARTTLS
// and SIZE advertised or not, RCPT answered 250/450/550), Postfix's smtp-sink (the real-server
// path), nsd with a zone whose MX points at 127.0.0.1 (the MX path, tests/unit/dns's harness),
// and a fake DNS responder that sets AD (TLSA and OPENPGPKEY; see smtp_fakes.h for why).
// Also: a refused connection leaves nothing, a silent server ends in the request's timeout
// without holding up other requests, and each address is checked once per mail.
//
// There is no differential test: 2.05's SMTPVerify needs Net::SMTP::Verify, which Debian does
// not package, so the Perl plugin cannot run here.
#include "../../unit/dns/dns_server.h"
#include "../itcommon.h"
#include "smtp_fakes.h"

#include <sys/wait.h>

#include <cstdlib>
#include <future>

using namespace itest;
using svtest::FakeDns;
using svtest::FakeSmtp;
using svtest::SmtpScript;

namespace
{

std::string verify_plugin(const std::string &options)
{
    return "  <Plugin verify>\n    module = \"SMTPVerify\"\n    helo_name = \"policy.test\"\n" +
           options + "  </Plugin>\n  <Plugin tag>\n    module = \"AddScoreHeader\"\n  </Plugin>\n";
}

std::string host_opts(uint16_t port)
{
    return "    host = \"127.0.0.1\"\n    port = " + std::to_string(port) + "\n";
}

const std::string scores = "    has_starttls_score = -1\n    no_starttls_score = 2\n"
                           "    perm_fail_score = 5\n    temp_fail_score = 1.5\n";

Reply rcpt(uint16_t port, const std::string &sender, const std::string &recipient,
           const std::string &instance = "", const std::string &size = "0")
{
    std::vector<std::pair<std::string, std::string>> o = {
        {"sender", sender}, {"recipient", recipient}, {"size", size}};
    if (!instance.empty())
        o.push_back({"instance", instance});
    return ask(Endpoint::tcp(port), postfix_request(o), 10000);
}

std::string first(const Reply &r)
{
    return r.ok() && !r.actions.empty() ? r.actions[0] : reply_status_name(r.status);
}

std::unique_ptr<Daemon> start(uint16_t port, const std::string &body,
                              const std::string &globals = "")
{
    return start_ring(simple_config(port, body, "log_level = 4\n" + globals), Endpoint::tcp(port));
}

// Runs smtp-sink on a free port with extra arguments until destroyed.
class Sink
{
  public:
    explicit Sink(const std::vector<std::string> &args)
    {
        if (access("/usr/sbin/smtp-sink", X_OK) != 0)
            skip_or_fail("smtp-sink is not installed (apt-get install postfix)");
        port_ = free_tcp_port();
        std::vector<std::string> argv = {"/usr/sbin/smtp-sink", "-u", "nobody"};
        argv.insert(argv.end(), args.begin(), args.end());
        argv.push_back("127.0.0.1:" + std::to_string(port_));
        argv.push_back("16");
        pid_ = fork();
        if (pid_ == 0) {
            setsid();
            std::vector<char *> av;
            for (auto &a : argv)
                av.push_back(const_cast<char *>(a.c_str()));
            av.push_back(nullptr);
            execv(av[0], av.data());
            _exit(127);
        }
        for (int i = 0; i < 100; i++) { // ready when it accepts
            Conn c(Endpoint::tcp(port_), 200);
            if (c.ok())
                return;
            sleep_ms(20);
        }
        FAIL("smtp-sink did not start");
    }
    ~Sink()
    {
        kill(pid_, SIGTERM);
        waitpid(pid_, nullptr, 0);
    }
    uint16_t port() const
    {
        return port_;
    }

  private:
    pid_t pid_ = -1;
    uint16_t port_ = 0;
};

} // namespace

TEST_CASE("the dialogue exactly: EHLO, MAIL FROM with SIZE, RCPT TO, QUIT", "[it_smtpverify]")
{
    FakeSmtp smtp(SmtpScript{});
    uint16_t port = free_tcp_port();
    auto d = start(port, verify_plugin(host_opts(smtp.port()) + scores));
    // Defaults: MAIL FROM from `recipient`, RCPT TO from `sender`, SIZE from `size`.
    CHECK(first(rcpt(port, "joe@example.com", "me@example.net", "", "4321")) ==
          "PREPEND X-MtScore: NO score=-1 [verify-joe@example.com-starttls=-1]");
    auto s = smtp.sessions();
    REQUIRE(s.size() == 1);
    CHECK(s[0] == std::vector<std::string>{"EHLO policy.test",
                                           "MAIL FROM:<me@example.net> SIZE=4321",
                                           "RCPT TO:<joe@example.com>", "QUIT"});
    CHECK(d->wait_log("verify joe@example.com: server 127.0.0.1 (127.0.0.1:" +
                          std::to_string(smtp.port()) + "): 250 2.1.5 Ok",
                      2000));
}

TEST_CASE("no STARTTLS and no SIZE advertised; a fixed sender and other fields", "[it_smtpverify]")
{
    SmtpScript sc;
    sc.starttls = false;
    sc.size = false;
    FakeSmtp smtp(sc);
    uint16_t port = free_tcp_port();
    auto d = start(port, verify_plugin(host_opts(smtp.port()) + scores +
                                       "    sender = \"<probe@policy.test>\"\n"
                                       "    recipient_field = \"recipient\"\n"));
    CHECK(first(rcpt(port, "joe@example.com", "me@example.net", "", "99")) ==
          "PREPEND X-MtScore: NO score=2 [verify-me@example.net-starttls=2]");
    auto s = smtp.sessions();
    REQUIRE(s.size() == 1);
    CHECK(s[0] == std::vector<std::string>{"EHLO policy.test", "MAIL FROM:<probe@policy.test>",
                                           "RCPT TO:<me@example.net>", "QUIT"});
}

TEST_CASE("RCPT 550 and 450: scores, actions with %MSG% (first occurrence only)", "[it_smtpverify]")
{
    const std::string actions =
        "    perm_fail_action = \"reject sender refused: %MSG% (%MSG%)\"\n"
        "    temp_fail_action = \"defer_if_permit sender deferred: %MSG%\"\n";
    SECTION("550")
    {
        SmtpScript sc;
        sc.rcpt = "550 5.1.1 <joe@example.com>: Recipient address rejected";
        FakeSmtp smtp(sc);
        uint16_t port = free_tcp_port();
        auto d = start(port, verify_plugin(host_opts(smtp.port()) + scores + actions));
        CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) ==
              "reject sender refused: 5.1.1 <joe@example.com>: Recipient address rejected "
              "(%MSG%)");
    }
    SECTION("450, and the score it adds")
    {
        SmtpScript sc;
        sc.rcpt = "450 4.2.0 greylisted";
        FakeSmtp smtp(sc);
        uint16_t port = free_tcp_port();
        auto d = start(port, verify_plugin(host_opts(smtp.port()) + scores + actions));
        CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) ==
              "defer_if_permit sender deferred: 4.2.0 greylisted");
        // Without an action the scores remain for later plugins.
        uint16_t port2 = free_tcp_port();
        auto d2 = start(port2, verify_plugin(host_opts(smtp.port()) + scores));
        CHECK(first(rcpt(port2, "joe@example.com", "me@example.net")) ==
              "PREPEND X-MtScore: NO score=0.5 [verify-joe@example.com-starttls=-1, "
              "verify-joe@example.com=1.5]");
    }
    SECTION("a refused MAIL FROM answers for the address; no RCPT is sent")
    {
        SmtpScript sc;
        sc.mail = "553 5.7.1 sender not allowed";
        FakeSmtp smtp(sc);
        uint16_t port = free_tcp_port();
        auto d = start(port, verify_plugin(host_opts(smtp.port()) + actions));
        CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) ==
              "reject sender refused: 5.7.1 sender not allowed (%MSG%)");
        auto s = smtp.sessions();
        REQUIRE(s.size() == 1);
        CHECK(s[0].size() == 3);
        CHECK(s[0].back() == "QUIT");
    }
}

TEST_CASE("once per address and mail; every request without a session", "[it_smtpverify]")
{
    FakeSmtp smtp(SmtpScript{});
    uint16_t port = free_tcp_port();
    auto d = start(port, verify_plugin(host_opts(smtp.port()) + scores),
                   "<SessionCache>\n  module = \"Memory\"\n</SessionCache>\n");
    CHECK(first(rcpt(port, "joe@example.com", "a@example.net", "m1")) ==
          "PREPEND X-MtScore: NO score=-1 [verify-joe@example.com-starttls=-1]");
    // The same mail, another recipient: the sender is not asked again (the score is the
    // session's, and the header is tagged once per mail).
    CHECK(first(rcpt(port, "joe@example.com", "b@example.net", "m1")) == "dunno");
    CHECK(smtp.connections() == 1);
    // Another address in the same mail is checked.
    CHECK(first(rcpt(port, "ann@example.com", "b@example.net", "m1")) == "dunno");
    CHECK(smtp.connections() == 2);
    // Another mail checks again.
    CHECK(first(rcpt(port, "joe@example.com", "a@example.net", "m2")) ==
          "PREPEND X-MtScore: NO score=-1 [verify-joe@example.com-starttls=-1]");
    CHECK(smtp.connections() == 3);
}

TEST_CASE("a refused connection leaves nothing; enabled = off asks nobody", "[it_smtpverify]")
{
    uint16_t closed_port = free_tcp_port();
    uint16_t port = free_tcp_port();
    auto d = start(port, verify_plugin(host_opts(closed_port) + scores +
                                       "    perm_fail_action = \"reject %MSG%\"\n"));
    CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(d->wait_log("no verdict: Connection refused", 2000));

    FakeSmtp smtp(SmtpScript{});
    uint16_t port2 = free_tcp_port();
    auto d2 = start(port2, verify_plugin(host_opts(smtp.port()) + "    enabled = off\n"));
    CHECK(first(rcpt(port2, "joe@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(smtp.connections() == 0);
}

TEST_CASE("a silent server: the request's timeout, other requests unaffected", "[it_smtpverify]")
{
    SmtpScript quiet;
    quiet.silent = true;
    FakeSmtp silent(quiet);
    FakeSmtp normal(SmtpScript{});
    // Two vhosts on two ports of one daemon: one asks the silent server, one the normal one.
    uint16_t port = free_tcp_port(), port2 = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(port2) +
        "\"\nlog_level = 4\nrequest_timeout = 1\n" +
        vhost_block(std::to_string(port), "slow", verify_plugin(host_opts(silent.port()))) +
        vhost_block(std::to_string(port2), "fast",
                    verify_plugin(host_opts(normal.port()) + scores));
    auto d = start_ring(conf, Endpoint::tcp(port));
    int64_t t0 = now_ms();
    auto slow = std::async(std::launch::async,
                           [&] { return rcpt(port, "joe@example.com", "me@example.net"); });
    sleep_ms(100);
    // While the first waits for a greeting that never comes, the other vhost answers at once.
    for (int i = 0; i < 3; i++) {
        int64_t t1 = now_ms();
        CHECK(first(rcpt(port2, "ann" + std::to_string(i) + "@example.com", "me@example.net")) ==
              "PREPEND X-MtScore: NO score=-1 [verify-ann" + std::to_string(i) +
                  "@example.com-starttls=-1]");
        CHECK(now_ms() - t1 < 900);
    }
    Reply r = slow.get();
    int64_t ms = now_ms() - t0;
    CHECK(first(r) == reply_status_name(Reply::CLOSED)); // request_timeout: no reply, as 2.05
    CHECK(ms >= 900);
    CHECK(ms < 3000);
    // The dialogue ends with the request's deadline (not timeout_ms's 30 s): the daemon closed
    // its connection to the silent server.
    int64_t until = now_ms() + 2000;
    while (silent.closed() < 1 && now_ms() < until)
        sleep_ms(20);
    CHECK(silent.closed() == 1);
    CHECK(d->alive());
}

TEST_CASE("smtp-sink: accepted, 550 and 450 from a real SMTP server", "[it_smtpverify]")
{
    const std::string opts = scores + "    perm_fail_action = \"reject no: %MSG%\"\n"
                                      "    temp_fail_action = \"defer later: %MSG%\"\n";
    struct Case {
        std::vector<std::string> sink_args;
        std::string answer, log;
    } cases[] = {
        // Accepted; smtp-sink announces no STARTTLS.
        {{}, "PREPEND X-MtScore: NO score=2 [verify-joe@example.com-starttls=2]", "250 2.1.5 Ok"},
        {{"-f", "RCPT", "-B", "550 5.1.1 no such user"}, "reject no: 5.1.1 no such user", ""},
        // Soft-rejected with smtp-sink's default reply text.
        {{"-r", "RCPT"}, "defer later: 4.3.0 Error: command failed", ""},
        // Disconnects at RCPT: no verdict, only the STARTTLS score.
        {{"-q", "RCPT"},
         "PREPEND X-MtScore: NO score=2 [verify-joe@example.com-starttls=2]",
         "connection closed by the server"},
    };
    for (const Case &c : cases) {
        INFO("smtp-sink " << (c.sink_args.empty() ? "" : c.sink_args[0]));
        Sink sink(c.sink_args);
        uint16_t port = free_tcp_port();
        auto d = start(port, verify_plugin(host_opts(sink.port()) + opts));
        CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) == c.answer);
        if (!c.log.empty())
            CHECK(d->wait_log(c.log, 2000));
    }
}

TEST_CASE("the MX path on nsd: lowest preference, the domain's A, null MX, no domain",
          "[it_smtpverify]")
{
    dnstest::DnsServer dns(std::vector<dnstest::Zone>{{"sv.example", R"Z($ORIGIN sv.example.
$TTL 300
@ IN SOA ns.sv.example. hostmaster.sv.example. 1 3600 600 86400 60
@ IN NS ns.sv.example.
ns IN A 127.0.0.1
mx IN A 127.0.0.1
far IN A 127.0.0.1
mail IN MX 20 far.sv.example.
mail IN MX 10 mx.sv.example.
plain IN A 127.0.0.1
nullmx IN MX 0 .
lost IN MX 10 nowhere.sv.example.
)Z"}});
    Sink sink({"-f", "RCPT", "-B", "550 5.1.1 unknown here"});
    uint16_t port = free_tcp_port();
    auto d = start(port,
                   verify_plugin("    port = " + std::to_string(sink.port()) + "\n" + scores +
                                 "    perm_fail_action = \"reject %MSG%\"\n"),
                   "dns_servers = \"" + dns.servers() + "\"\n");
    CHECK(first(rcpt(port, "joe@mail.sv.example", "me@example.net")) ==
          "reject 5.1.1 unknown here");
    CHECK(d->wait_log("server mx.sv.example (127.0.0.1:" + std::to_string(sink.port()), 2000));
    // No MX: the domain's own address.
    CHECK(first(rcpt(port, "joe@plain.sv.example", "me@example.net")) ==
          "reject 5.1.1 unknown here");
    // A null MX and an MX host without an address: no verdict, nothing happens.
    CHECK(first(rcpt(port, "joe@nullmx.sv.example", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(first(rcpt(port, "joe@lost.sv.example", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    // A domain that does not resolve: the plugin fails (on_error = abort: no reply).
    CHECK(first(rcpt(port, "joe@gone.sv.example", "me@example.net")) ==
          reply_status_name(Reply::CLOSED));
    CHECK(d->wait_log("unable to resolve gone.sv.example", 2000));
}

TEST_CASE("TLSA and OPENPGPKEY: has_ only with AD, no_ without", "[it_smtpverify]")
{
    FakeDns dns;
    FakeSmtp smtp(SmtpScript{});
    const std::string tlsa(35, '\x01');
    const std::string key = "pgp-key-bytes";
    // joe's SHA2-224 (tests/unit/smtpverify checks the function against Python's hashlib).
    const std::string joe = "c7e8f969fb2abbbe56a301c5bd65ca0ab772788b274d244a55e5e7f9";
    for (const char *dom : {"signed.example", "plain.example"}) {
        bool ad = std::string(dom) == "signed.example";
        std::string mx = std::string("mx.") + dom;
        dns.add(dom, 15, svtest::rdata_mx(10, mx), ad);
        dns.add(mx, 1, svtest::rdata_a("127.0.0.1"), ad);
        dns.add("_25._tcp." + mx, 52, tlsa, ad);
        dns.add(joe + "._openpgpkey." + dom, 61, key, ad);
    }
    uint16_t port = free_tcp_port();
    auto d = start(port,
                   verify_plugin("    port = " + std::to_string(smtp.port()) + "\n" +
                                 "    check_tlsa = on\n    check_openpgp = on\n"
                                 "    has_tlsa_score = -3\n    no_tlsa_score = 3\n"
                                 "    has_openpgp_score = -4\n    no_openpgp_score = 4\n"
                                 "    has_starttls_score = -1\n"),
                   "dns_servers = \"" + dns.servers() + "\"\n");
    Reply signed_joe = rcpt(port, "joe@signed.example", "me@example.net");
    INFO(d->log());
    CHECK(first(signed_joe) ==
          "PREPEND X-MtScore: NO score=-8 [verify-joe@signed.example-starttls=-1, "
          "verify-joe@signed.example-tlsa=-3, verify-joe@signed.example-openpgp=-4]");
    CHECK(first(rcpt(port, "joe@plain.example", "me@example.net")) ==
          "PREPEND X-MtScore: YES score=6 [verify-joe@plain.example-starttls=-1, "
          "verify-joe@plain.example-tlsa=3, verify-joe@plain.example-openpgp=4]");
    // Another local part has no key: no_openpgp even in the signed domain.
    CHECK(first(rcpt(port, "ann@signed.example", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0 [verify-ann@signed.example-starttls=-1, "
          "verify-ann@signed.example-tlsa=-3, verify-ann@signed.example-openpgp=4]");
    // TLSA and OPENPGPKEY queries asked for AD; the others did not.
    bool tlsa_ad = false, pgp_ad = false, mx_plain = false;
    for (auto &q : dns.queries()) {
        if (std::get<1>(q) == 52)
            tlsa_ad = std::get<2>(q);
        if (std::get<1>(q) == 61)
            pgp_ad = std::get<2>(q);
        if (std::get<1>(q) == 15)
            mx_plain = !std::get<2>(q);
    }
    CHECK(tlsa_ad);
    CHECK(pgp_ad);
    CHECK(mx_plain);
    CHECK(smtp.connections() == 3);
}

TEST_CASE("reply_bytes_max and malformed replies close the connection: no verdict",
          "[it_smtpverify]")
{
    SmtpScript big;
    big.greeting = "220 " + std::string(600, 'x'); // 606 bytes with CRLF
    FakeSmtp smtp(big);
    SmtpScript junk;
    junk.greeting = "hello, this is not SMTP";
    FakeSmtp bad(junk);
    uint16_t port = free_tcp_port(), port2 = free_tcp_port(), port3 = free_tcp_port();
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(port) + ",127.0.0.1:" + std::to_string(port2) +
        ",127.0.0.1:" + std::to_string(port3) + "\"\nlog_level = 4\n" +
        vhost_block(
            std::to_string(port), "small",
            verify_plugin(host_opts(smtp.port()) + scores + "    reply_bytes_max = 512\n")) +
        vhost_block(
            std::to_string(port2), "large",
            verify_plugin(host_opts(smtp.port()) + scores + "    reply_bytes_max = 606\n")) +
        vhost_block(std::to_string(port3), "junk", verify_plugin(host_opts(bad.port()) + scores));
    auto d = start_ring(conf, Endpoint::tcp(port));
    // N+1 (606 bytes against 512): closed, logged, no score at all (no EHLO was answered).
    CHECK(first(rcpt(port, "joe@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(d->wait_log("SMTP reply in greeting longer than reply_bytes_max (512): connection "
                      "closed",
                      2000));
    // N (606 bytes against 606): the dialogue goes on.
    CHECK(first(rcpt(port2, "joe@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=-1 [verify-joe@example.com-starttls=-1]");
    CHECK(first(rcpt(port3, "joe@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(d->wait_log("no verdict: malformed reply", 2000));
}

TEST_CASE("connections: one dialogue per shard at N, the next one fails the plugin",
          "[it_smtpverify]")
{
    SmtpScript quiet;
    quiet.silent = true;
    FakeSmtp silent(quiet);
    uint16_t port = free_tcp_port();
    // One shard, so both requests meet the same limit; on_error = continue, so the failed
    // check goes on to the next plugin.
    auto d =
        start_ring(simple_config(port,
                                 verify_plugin(host_opts(silent.port()) +
                                               "    connections = 1\n"
                                               "    timeout_ms = 1500\n    on_error = continue\n"),
                                 "log_level = 4\n"),
                   Endpoint::tcp(port), {"--shards=1"});
    auto held = std::async(std::launch::async,
                           [&] { return rcpt(port, "joe@example.com", "me@example.net"); });
    int64_t until = now_ms() + 2000;
    while (silent.connections() < 1 && now_ms() < until)
        sleep_ms(10);
    REQUIRE(silent.connections() == 1);
    int64_t t0 = now_ms();
    CHECK(first(rcpt(port, "ann@example.com", "me@example.net")) ==
          "PREPEND X-MtScore: NO score=0");
    CHECK(now_ms() - t0 < 1000); // failed at once, not after the held dialogue
    CHECK(d->wait_log("cannot verify ann@example.com: too many dialogues running", 2000));
    // The held one ends with timeout_ms (no verdict), and frees the slot.
    CHECK(first(held.get()) == "PREPEND X-MtScore: NO score=0");
    CHECK(d->wait_log("no verdict: timed out", 2000));
    CHECK(silent.connections() == 1);
}

TEST_CASE("SIGTERM while a dialogue waits: answered after timeout_ms, exit 0", "[it_smtpverify]")
{
    // The drain waits for the dialogue, which ends after timeout_ms without a verdict.
    // (drain_timeout ending the wait first is the daemon's business: the shard then keeps its
    // pools to the exit, which the sanitizer build reports as a leak.)
    SmtpScript quiet;
    quiet.silent = true;
    FakeSmtp silent(quiet);
    uint16_t port = free_tcp_port();
    auto d = start(port, verify_plugin(host_opts(silent.port()) + "    timeout_ms = 1500\n"));
    auto held = std::async(std::launch::async,
                           [&] { return rcpt(port, "joe@example.com", "me@example.net"); });
    int64_t until = now_ms() + 2000;
    while (silent.connections() == 0 && now_ms() < until)
        sleep_ms(10);
    REQUIRE(silent.connections() == 1);
    int64_t t0 = now_ms();
    REQUIRE(d->send_signal(SIGTERM) == 0);
    int status = d->wait_exit(8000);
    INFO(d->log());
    CHECK(status == 0);
    CHECK(now_ms() - t0 < 4000);
    CHECK(first(held.get()) == "PREPEND X-MtScore: NO score=0");
}
