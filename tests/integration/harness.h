/*
 * harness.h: black-box test harness for the integration and differential tests.
 *
 * It starts a daemon process (our `ringpolicyd` or the Perl /usr/bin/mtpolicyd) in the
 * foreground, in its own process group, with a configuration written to a private temporary
 * directory (mode 755), on free loopback ports, its standard output and error captured to a log
 * file; waits until its first listener accepts; and stops it (SIGTERM, then SIGKILL to the whole
 * process group after a bound). A policy client connects over TCP (IPv4 or IPv6 loopback) or a
 * Unix socket, sends requests given as attribute lines, reads replies up to the empty line with a
 * timeout, and can also send and receive raw bytes for malformed-input tests.
 *
 * Prerequisites: a missing binary or facility makes the test exit 77 (meson reports SKIP) outside
 * CI; with CI=1 in the environment (set by .ci/run) the same absence is a failure, so nothing is
 * silently skipped in CI. Paths come from the environment meson sets for the tests
 * (RPD_BUILD_ROOT, RPD_SOURCE_ROOT, RPD_ITEST_DIR, RPD_ITEST_BUILD_DIR), each overridable;
 * RPD_PRODUCT_ROOT names another build tree whose daemon, client and plugins are run instead
 * (.ci/run: its ASan+UBSan build, driven by these test programs built without sanitizers).
 *
 * Only loopback addresses are ever connected to. Not thread-safe; one test process drives its
 * daemons from one thread (helpers that open many connections do so sequentially or with poll).
 * Keeps TMPDIRs when RPD_KEEP_TMP=1 (for debugging a failure).
 */
#ifndef ITEST_HARNESS_H
#define ITEST_HARNESS_H

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace itest
{

/* ---------------------------------------------------------------------------------------------
 * Environment and prerequisites
 */

bool in_ci(); /* CI=1 (or any non-empty value other than 0) */

/* Outside CI: print why and exit 77 (SKIP). In CI: print why and exit 1 (FAIL). */
[[noreturn]] void skip_or_fail(const std::string &why);

/* Differential tests run the Perl side even when ringpolicyd is not built yet. They call this
 * instead of skip_or_fail; at the end of the run, if no assertion failed, the process exits 77
 * (SKIP, outside CI) or 1 (CI), so a partial run is never reported as a pass. */
void note_partial_skip(const std::string &why);

std::string build_root();
std::string product_root();    /* $RPD_PRODUCT_ROOT or build_root(): where the products are */
std::string source_root();
std::string itest_dir();       /* tests/integration in the source tree */
std::string itest_build_dir(); /* tests/integration in the product tree (test plugins) */
std::string ringpolicyd_bin(); /* $RINGPOLICYD or BUILD/policy/ringpolicyd */
std::string perl_bin();        /* $MTPOLICYD or /usr/bin/mtpolicyd */
std::string client_bin();      /* $RINGPOLICYD_CLIENT or BUILD/policy/client/ringpolicyd-client */
std::string helloworld_so();   /* $HELLOWORLD_SO or BUILD/policy/examples/HelloWorld.so */
std::string sleep_so();        /* the test plugin: BUILD/tests/integration/Sleep.so */
std::string perl_lib();        /* tests/integration/perl: Mail::MtPolicyd::Plugin::Sleep */

bool is_executable(const std::string &path);
bool file_exists(const std::string &path);

/* skip_or_fail unless the file exists (and is executable for the binaries). */
void need_ringpolicyd();
void need_perl();
void need_file(const std::string &path, const std::string &what);

/* ---------------------------------------------------------------------------------------------
 * Files and strings
 */

/* A private directory (mode 755, so that daemons dropping privileges can read it), removed
 * recursively at destruction. */
class TempDir
{
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const
    {
        return path_;
    }
    std::string file(const std::string &name) const; /* path()/name */
    std::string write(const std::string &name, const std::string &content) const;

  private:
    std::string path_;
};

std::string read_file(const std::string &path); /* "" when unreadable */
std::string replace_all(std::string s, const std::string &from, const std::string &to);
std::vector<std::string> split_lines(const std::string &s); /* on LF, no empty last element */
bool contains(const std::string &hay, const std::string &needle);
size_t count_of(const std::string &hay, const std::string &needle);

/* ---------------------------------------------------------------------------------------------
 * Ports and addresses
 */

/* A port that was free a moment ago: bind port 0 on the loopback address, read it, close. */
uint16_t free_tcp_port(bool v6 = false);
/* ::1 exists and can be bound (containers sometimes disable IPv6). */
bool ipv6_loopback_usable();

struct Endpoint {
    std::string host; /* "127.0.0.1" or "::1" */
    uint16_t port = 0;
    std::string unix_path; /* non-empty: a Unix socket */

    static Endpoint tcp(uint16_t port, const std::string &host = "127.0.0.1");
    static Endpoint unix_socket(const std::string &path);
    bool valid() const
    {
        return port != 0 || !unix_path.empty();
    }
    std::string str() const; /* "127.0.0.1:N", "[::1]:N" or the path */
};

/* ---------------------------------------------------------------------------------------------
 * Processes
 */

struct RunResult {
    int status = -1; /* exit code; 128+signal if killed by a signal; -1 when it timed out */
    std::string out, err;
};

/* Runs argv (argv[0] a path) with stdin_data on its standard input, in cwd (empty: unchanged),
 * with extra environment variables; kills it (SIGKILL, its process group) after timeout_ms. */
RunResult run_command(const std::vector<std::string> &argv, int timeout_ms,
                      const std::string &stdin_data = "", const std::string &cwd = "",
                      const std::map<std::string, std::string> &env = {});

enum class Impl { Ring, Perl };
const char *impl_name(Impl impl);

/* One daemon process. The configuration text may contain @DIR@, replaced by the daemon's
 * temporary directory (for pid files, sockets and pattern files). */
class Daemon
{
  public:
    Daemon(Impl impl, const std::string &config_text,
           const std::vector<std::string> &extra_args = {});
    ~Daemon(); /* stop() if still running */
    Daemon(const Daemon &) = delete;
    Daemon &operator=(const Daemon &) = delete;

    /* Before start(): put a file next to the configuration; returns its path. */
    std::string write_file(const std::string &name, const std::string &content);
    /* Before start(): where readiness is checked (default: none; then start() only checks the
     * process did not exit during a short settle time). */
    void set_ready(const Endpoint &ep)
    {
        ready_ = ep;
    }
    void set_env(const std::string &name, const std::string &value)
    {
        env_[name] = value;
    }
    /* Run with -f (default) or without (the daemon detaches; then pid() is the launcher). */
    void set_foreground(bool fg)
    {
        foreground_ = fg;
    }

    /* Writes the configuration file (start() and run() do it too); returns its path. */
    const std::string &write_config();
    /* A one-shot run of the binary on this configuration: `BIN -c CONF ARGS...` in dir(), for
     * --check, -d, --cron and the like (no -f unless given). */
    RunResult run(const std::vector<std::string> &args, int timeout_ms = 20000);

    /* Writes the configuration, spawns `BIN [-f] -c CONF ARGS...` and waits until the ready
     * endpoint accepts a connection. Returns false (reason in error(), log in log()) when the
     * process exits first or is not ready within ready_timeout_ms. */
    bool start(int ready_timeout_ms = 20000);

    pid_t pid() const
    {
        return pid_;
    }
    bool alive();               /* running and not a zombie */
    int send_signal(int signo); /* kill(pid, signo); 0 or -errno */
    /* Waits for the process to exit; its status (code, or 128+signal), or -1 on timeout. */
    int wait_exit(int timeout_ms);
    /* SIGTERM, wait up to grace_ms (at most 300 ms for the Perl daemon), then SIGKILL to the
     * process group; the exit status. Also SIGKILLs leftovers of the group (Perl workers) so no
     * process outlives the test. */
    int stop(int grace_ms = 5000);

    std::string log() const;
    bool wait_log(const std::string &needle, int timeout_ms) const;
    const std::string &dir() const
    {
        return dir_.path();
    }
    const std::string &config_path() const
    {
        return config_path_;
    }
    const std::string &error() const
    {
        return error_;
    }
    Impl impl() const
    {
        return impl_;
    }

  private:
    Impl impl_;
    TempDir dir_;
    std::string config_text_, config_path_, log_path_, error_;
    std::vector<std::string> args_;
    std::map<std::string, std::string> env_;
    Endpoint ready_;
    bool foreground_ = true;
    pid_t pid_ = -1;
    int exit_status_ = -1;
    bool reaped_ = false;

    bool reap(bool block);
};

/* ---------------------------------------------------------------------------------------------
 * Policy client
 */

struct Reply {
    enum Status { OK, CLOSED, TIMEOUT, ERROR } status = ERROR;
    std::vector<std::string> actions; /* the values of the action= lines, in order */
    std::string raw;                  /* the reply's bytes including the empty line */
    bool ok() const
    {
        return status == OK;
    }
};
const char *reply_status_name(Reply::Status s);

/* "a=b\nc=d\n\n" from {"a=b", "c=d"}. */
std::string encode_request(const std::vector<std::string> &attr_lines);

/* A realistic Postfix 3.7 RCPT request (attribute order of TOOLCHAIN.md 8) with some values
 * replaced (or appended, for names Postfix does not send) from overrides; a value of "\x7f"
 * removes the attribute. */
std::vector<std::string>
postfix_request(const std::vector<std::pair<std::string, std::string>> &overrides = {});

class Conn
{
  public:
    Conn() = default;
    explicit Conn(const Endpoint &ep, int timeout_ms = 5000);
    ~Conn();
    Conn(Conn &&o) noexcept;
    Conn &operator=(Conn &&o) noexcept;
    Conn(const Conn &) = delete;
    Conn &operator=(const Conn &) = delete;

    bool ok() const
    {
        return fd_ >= 0;
    }
    const std::string &error() const
    {
        return error_;
    }
    int fd() const
    {
        return fd_;
    }

    bool send(const std::string &bytes); /* all bytes; false on error (EPIPE, reset) */
    /* One reply: everything up to and including the first empty line. */
    Reply read_reply(int timeout_ms = 5000);
    Reply request(const std::vector<std::string> &attr_lines, int timeout_ms = 5000);
    /* Reads until the peer closes (EOF or reset), keeping what arrived; true when it closed
     * within timeout_ms. */
    bool wait_closed(int timeout_ms);
    /* Bytes received but not yet returned by read_reply. */
    const std::string &pending() const
    {
        return buf_;
    }
    bool peer_closed() const
    {
        return eof_;
    }
    /* True when the connection can carry another request right now: open, nothing unread,
     * and the peer has not closed it (checked without waiting). */
    bool reusable();
    void shutdown_write();
    void close();

  private:
    int fd_ = -1;
    std::string buf_, error_;
    bool eof_ = false;

    /* Reads once (waiting at most timeout_ms); 1 data, 0 EOF/reset, -1 timeout, -2 error. */
    int fill(int timeout_ms);
};

/* One request on a new connection. */
Reply ask(const Endpoint &ep, const std::vector<std::string> &attr_lines, int timeout_ms = 5000);

/* Monotonic milliseconds. */
int64_t now_ms();
void sleep_ms(int ms);

/* ---------------------------------------------------------------------------------------------
 * Differential rig: the same virtual hosts served by the Perl mtpolicyd and by ringpolicyd,
 * each on its own free ports. A vhost spec is a name and its plugin blocks; the rig writes the
 * globals, the `port` list and one <VirtualHost PORT> per spec for each daemon.
 */

struct VhostSpec {
    std::string name;
    std::string body; /* <Plugin> blocks (and any other vhost lines); may use @DIR@ */
    std::string key;  /* empty: a port of its own; else the literal <VirtualHost KEY> (e.g. "0",
                         reachable only through policy_context) */
};

class DiffRig
{
  public:
    /* globals: extra global option lines (identical for both daemons). files: name -> content
     * written into each daemon's directory before start (e.g. RegexList pattern files). */
    DiffRig(std::vector<VhostSpec> vhosts, std::string globals = "",
            std::map<std::string, std::string> files = {});
    DiffRig(const DiffRig &) = delete;
    DiffRig &operator=(const DiffRig &) = delete;
    /* Starts the Perl daemon (need_perl) and ringpolicyd when built (else note_partial_skip;
     * with_ring false: only the Perl daemon, for configurations ringpolicyd refuses by design).
     * Returns false with the reason in error() when a daemon refused to start. */
    bool start(bool with_ring = true);
    bool has_ring() const
    {
        return ring_ != nullptr;
    }
    Daemon &daemon(Impl impl);
    Endpoint endpoint(Impl impl, const std::string &vhost_name) const;
    /* One request. Each (daemon, vhost) keeps one connection open between requests (new
     * connections to the Perl daemon cost up to 250 ms while it forks workers); a connection
     * the daemon closed is replaced, and a request that meets a closed reused connection is
     * sent again on a new one. */
    Reply ask(Impl impl, const std::string &vhost_name, const std::vector<std::string> &attrs,
              int timeout_ms = 5000);
    const std::string &error() const
    {
        return error_;
    }
    std::string config_text(Impl impl) const;

  private:
    std::vector<VhostSpec> vhosts_;
    std::string globals_, error_;
    std::map<std::string, std::string> files_;
    std::map<std::string, uint16_t> perl_ports_, ring_ports_;
    std::unique_ptr<Daemon> perl_, ring_;
    std::map<std::pair<Impl, std::string>, Conn> conns_;
};

} // namespace itest

#endif
