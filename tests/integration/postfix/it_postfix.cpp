// it_postfix.cpp: Postfix end to end (issue 6). A throwaway Postfix 3.7 instance (its own
// configuration, queue and data directories, ports on 127.0.0.1; /work/shared/TOOLCHAIN.md 7.5)
// runs with deploy/postfix/main.cf.snippet and master.cf.snippet as documented (only the policy
// ports and the service addresses moved to free ports), so the documented snippet is the tested
// one. One ringpolicyd answers on the snippet's two policy ports:
//   RCPT (smtpd_recipient_restrictions, policy_context=recipient): a chain that REJECTs a chosen
//     sender and otherwise scores and PREPENDs X-MtScore with AddScoreHeader;
//   END-OF-MESSAGE (smtpd_end_of_data_restrictions, policy_context=accounting): the accounting
//     how-to's Quota (3 mails a month per client address) then Accounting, on SQLite.
// smtp-source sends mails one by one; Postfix relays what it accepts to smtp-sink, which dumps
// every message into a directory. Checked: the REJECT shows in Postfix's log (and to the
// client), the 4th mail from the over-quota host is deferred (4xx to smtp-source and in the
// log), the delivered messages carry the X-MtScore header, and the accounting row equals the
// mails Postfix accepted (and smtp-sink received). Postfix, smtp-sink and the daemon are stopped
// on every path (destructors).
#include "../itcommon.h"
#include "../acct/acct_rig.h"

#include <sqlite3.h>

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>

using namespace itest;

namespace
{

std::string sh_quote(const std::string &s)
{
    return "'" + replace_all(s, "'", "'\\''") + "'";
}

int sh(const std::string &cmd)
{
    int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The Postfix instance: started by start(), stopped (postfix stop, then the master killed if it
 * is still there) by the destructor. */
struct Postfix {
    TempDir dir;
    std::string pf, log;
    bool started = false;
    Postfix()
    {
        pf = dir.path() + "/pf";
        log = pf + "/maillog";
        REQUIRE(sh("mkdir -p " + pf + "/etc " + pf + "/queue " + pf + "/data && chown postfix:postfix " +
                   pf + "/data") == 0);
    }
    ~Postfix()
    {
        if (!started)
            return;
        sh("postfix -c " + pf + "/etc stop >/dev/null 2>&1");
        std::string pid = read_file(pf + "/queue/pid/master.pid");
        long p = std::atol(pid.c_str());
        if (p > 0 && kill(static_cast<pid_t>(p), 0) == 0)
            kill(static_cast<pid_t>(p), SIGKILL);
    }
    bool start()
    {
        started = true;
        return sh("script -qec " + sh_quote("postfix -c " + pf + "/etc start") + " /dev/null >" +
                  dir.path() + "/postfix-start.out 2>&1") == 0;
    }
    std::string maillog() const
    {
        return read_file(log);
    }
};

/* smtp-sink dumping every message into dir/msgs. */
struct Sink {
    pid_t pid = -1;
    std::string msgs;
    Sink(const std::string &dir, uint16_t port)
    {
        msgs = dir + "/msgs";
        REQUIRE(sh("mkdir -p " + msgs + " && chmod 777 " + msgs) == 0);
        std::string addr = "127.0.0.1:" + std::to_string(port), tmpl = msgs + "/m";
        pid = fork();
        if (pid == 0) {
            setsid();
            execl("/usr/sbin/smtp-sink", "smtp-sink", "-u", "nobody", "-d", tmpl.c_str(),
                  addr.c_str(), "16", static_cast<char *>(nullptr));
            _exit(127);
        }
    }
    ~Sink()
    {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    std::vector<std::string> messages() const
    {
        std::vector<std::string> out;
        DIR *d = opendir(msgs.c_str());
        for (struct dirent *e; d && (e = readdir(d));)
            if (e->d_name[0] != '.')
                out.push_back(read_file(msgs + "/" + e->d_name));
        if (d)
            closedir(d);
        return out;
    }
};

bool port_open(uint16_t port)
{
    return Conn(Endpoint::tcp(port), 200).ok();
}

bool wait_until(const std::function<bool()> &f, int timeout_ms)
{
    for (int64_t end = now_ms() + timeout_ms;; sleep_ms(100)) {
        if (f())
            return true;
        if (now_ms() > end)
            return false;
    }
}

/* SELECT of one integer from an SQLite file; -1 when there is no row or no table yet. */
long sqlite_long(const std::string &path, const std::string &sql)
{
    sqlite3 *db = nullptr;
    long v = -1;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *st = nullptr;
        if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

} // namespace

TEST_CASE("Postfix with the documented snippets: REJECT, PREPEND X-MtScore, quota deferral, "
          "accounting rows",
          "[postfix]")
{
    need_ringpolicyd();
    if (geteuid() != 0 || !is_executable("/usr/sbin/postfix") ||
        !is_executable("/usr/sbin/smtp-source") || !is_executable("/usr/sbin/smtp-sink"))
        skip_or_fail("needs root and Postfix with smtp-source and smtp-sink (apt-get install "
                     "postfix)");
    std::string snip = itest::source_root() + "/deploy/postfix/";
    need_file(snip + "main.cf.snippet", "deploy/postfix/main.cf.snippet");

    uint16_t p_rcpt = free_tcp_port(), p_eom = free_tcp_port(), smtpd = free_tcp_port(),
             sub = free_tcp_port(), reinj = free_tcp_port(), sink_port = free_tcp_port();

    /* ringpolicyd: the snippet's two policy ports. */
    std::string conf =
        "port = \"127.0.0.1:" + std::to_string(p_rcpt) + ",127.0.0.1:" + std::to_string(p_eom) +
        "\"\nshards = 2\nkeepalive_timeout = 150\nrequest_timeout = 15\n"
        "<Connection acct>\n  module = \"Sql\"\n  dsn = \"dbi:SQLite:dbname=@DIR@/acct.sqlite\"\n"
        "</Connection>\n" +
        vhost_block(std::to_string(p_rcpt), "reputation",
                    "  <Plugin blocked-sender>\n    module = \"Condition\"\n    key = \"sender\"\n"
                    "    re_match = \"@blocked\\\\.example$\"\n"
                    "    action = \"reject sender blocked by policy\"\n  </Plugin>\n"
                    "  <Plugin client-score>\n    module = \"Condition\"\n"
                    "    key = \"client_name\"\n    re_match = \".*\"\n    score = 1.5\n"
                    "  </Plugin>\n"
                    "  <Plugin score-header>\n    module = \"AddScoreHeader\"\n  </Plugin>\n") +
        vhost_block(std::to_string(p_eom), "accounting",
                    "  <Plugin QuotaIP>\n    module = \"Quota\"\n    db = \"acct\"\n"
                    "    field = \"client_address\"\n    metric = \"count\"\n    threshold = 3\n"
                    "  </Plugin>\n"
                    "  <Plugin AcctIP>\n    module = \"Accounting\"\n    db = \"acct\"\n"
                    "    fields = \"client_address\"\n    flush_interval = 0.1\n  </Plugin>\n");
    auto d = start_ring(conf, Endpoint::tcp(p_rcpt));
    INFO("ringpolicyd log:\n" << d->log());

    Postfix pfx;
    Sink sink(pfx.dir.path(), sink_port);
    REQUIRE(wait_until([&] { return port_open(sink_port); }, 5000));

    /* main.cf: a minimal instance relaying to smtp-sink (TOOLCHAIN 7.5), then the snippet. The
     * test client (loopback) stays out of mynetworks, so permit_mynetworks skips nothing. */
    std::string main_cf =
        "compatibility_level = 3.6\nqueue_directory = " + pfx.pf +
        "/queue\ndata_directory = " + pfx.pf +
        "/data\ndaemon_directory = /usr/lib/postfix/sbin\ncommand_directory = /usr/sbin\n"
        "shlib_directory = /usr/lib/postfix\nmeta_directory = /etc/postfix\nmail_owner = postfix\n"
        "setgid_group = postdrop\nmaillog_file = " +
        pfx.log + "\nmaillog_file_prefixes = " + pfx.dir.path() +
        "\nmyhostname = mx.test.example\nmydestination =\ninet_interfaces = 127.0.0.1\n"
        "inet_protocols = ipv4\nmynetworks = 192.0.2.0/24\nrelay_domains = example.com\n"
        "alias_maps =\nalias_database =\nsmtputf8_enable = no\n"
        "relayhost = [127.0.0.1]:" +
        std::to_string(sink_port) +
        "\ndefault_transport = smtp\nrelay_transport = smtp\nlocal_transport = discard:local\n"
        "smtp_tls_security_level = none\nsmtp_dns_support_level = disabled\n" +
        read_file(snip + "main.cf.snippet");
    main_cf = replace_all(main_cf, "127.0.0.1:12345", "127.0.0.1:" + std::to_string(p_rcpt));
    main_cf = replace_all(main_cf, "127.0.0.1:12346", "127.0.0.1:" + std::to_string(p_eom));
    REQUIRE(contains(main_cf, "check_policy_service { inet:127.0.0.1:" + std::to_string(p_eom)));
    pfx.dir.write("pf/etc/main.cf", main_cf);
    /* master.cf: Debian's without chroot, then the snippet, services on free ports. */
    REQUIRE(sh("awk '/^[^#[:space:]]/ && NF >= 8 { $5 = \"n\" } { print }' "
               "/usr/share/postfix/master.cf.dist > " +
               pfx.pf + "/etc/master.cf && cat " + snip + "master.cf.snippet >> " + pfx.pf +
               "/etc/master.cf") == 0);
    REQUIRE(sh("sed -E -i 's/^smtp[[:space:]]+inet /127.0.0.1:" + std::to_string(smtpd) +
               " inet /; s/^submission[[:space:]]+inet /127.0.0.1:" + std::to_string(sub) +
               " inet /; s/^127\\.0\\.0\\.1:10025[[:space:]]+inet /127.0.0.1:" +
               std::to_string(reinj) + " inet /' " + pfx.pf + "/etc/master.cf") == 0);
    bool started = pfx.start();
    INFO("postfix start:\n" << read_file(pfx.dir.path() + "/postfix-start.out") << "\nmaillog:\n"
                            << pfx.maillog());
    REQUIRE(started);
    REQUIRE(wait_until([&] { return port_open(smtpd); }, 10000));

    auto source = [&](const std::string &sender) {
        return run_command({"/usr/sbin/smtp-source", "-s", "1", "-m", "1", "-f", sender, "-t",
                            "rcpt@example.com", "-M", "client.test.example",
                            "127.0.0.1:" + std::to_string(smtpd)},
                           60000);
    };

    /* A REJECT from the RCPT chain: to the client and in Postfix's log. */
    RunResult rej = source("someone@blocked.example");
    CHECK(rej.status != 0);
    CHECK(contains(rej.out + rej.err, "sender blocked by policy"));
    CHECK(wait_until(
        [&] {
            return contains(pfx.maillog(), "reject: RCPT from") &&
                   contains(pfx.maillog(), "sender blocked by policy");
        },
        5000));

    /* Three mails within the quota, then the host is over it: deferred (4xx). */
    int accepted = 0, deferred = 0;
    std::string outs;
    for (int i = 0; i < 5; i++) {
        RunResult r = source("sender" + std::to_string(i) + "@test.example");
        outs += r.out + r.err;
        if (r.status == 0)
            accepted++;
        else if (contains(r.out + r.err, " 4") && contains(r.out + r.err, "quota has been exceeded"))
            deferred++;
    }
    INFO("smtp-source:\n" << outs);
    CHECK(accepted == 3);
    CHECK(deferred == 2);
    CHECK(contains(outs, "450 4.7.1"));
    CHECK(wait_until(
        [&] { return count_of(pfx.maillog(), "smtp traffic quota has been exceeded") >= 2; },
        5000));

    /* Delivered: smtp-sink has the 3 accepted mails, each with the PREPENDed header. */
    CHECK(wait_until([&] { return sink.messages().size() == 3; }, 20000));
    for (const std::string &m : sink.messages()) {
        INFO(m);
        CHECK(contains(m, "X-MtScore: NO score=1.5"));
    }
    /* The accounting row counts what Postfix accepted. */
    std::string db = d->dir() + "/acct.sqlite";
    CHECK(wait_until(
        [&] {
            return sqlite_long(db, "SELECT count FROM acct_client_address WHERE key = "
                                   "'127.0.0.1' AND time = '" +
                                       acctit::month_bucket() + "'") == accepted;
        },
        5000));
    CHECK(sqlite_long(db, "SELECT count_rcpt FROM acct_client_address WHERE key = '127.0.0.1'") ==
          accepted);
    CHECK(static_cast<int>(sink.messages().size()) == accepted);
    CHECK(d->stop() == 0);
}
