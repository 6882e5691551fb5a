// harness.cpp: see harness.h. Processes, temporary directories, loopback sockets, the policy
// client and the differential rig. Failures to set something up are reported through return
// values and messages; the tests turn them into Catch2 failures.
#include "harness.h"

#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>

extern char **environ;

namespace itest
{

/* ---------------------------------------------------------------------------------------------
 * Environment and prerequisites
 */

namespace
{

std::string env_or(const char *name, const std::string &dflt)
{
    const char *v = std::getenv(name);
    return (v && *v) ? std::string(v) : dflt;
}

std::vector<std::string> g_partial_skips;

/* Process groups of daemons still running: killed at exit, so that an early exit (a skip, a
 * failed REQUIRE unwinding past a Daemon is fine, but exit() is not) never leaves a daemon. */
std::set<pid_t> &live_groups()
{
    static std::set<pid_t> s;
    return s;
}

void kill_live_groups()
{
    for (pid_t g : live_groups())
        if (kill(-g, 0) == 0)
            kill(-g, SIGKILL);
}

/* meson kills a test that runs past its timeout with SIGTERM (Ctrl-C sends SIGINT): take our
 * daemons down first, then die of the same signal. kill() is async-signal-safe; the set is
 * not modified from a handler. */
void on_fatal_signal(int signo)
{
    for (pid_t g : live_groups())
        kill(-g, SIGKILL);
    signal(signo, SIG_DFL);
    raise(signo);
}

struct AtExitInstaller {
    AtExitInstaller()
    {
        std::atexit(kill_live_groups);
        signal(SIGPIPE, SIG_IGN);
        for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT})
            signal(s, on_fatal_signal);
    }
} g_atexit_installer;

} // namespace

bool in_ci()
{
    const char *v = std::getenv("CI");
    return v && *v && std::strcmp(v, "0") != 0;
}

void skip_or_fail(const std::string &why)
{
    kill_live_groups();
    if (in_ci()) {
        std::fprintf(stderr, "FAIL (CI=1, prerequisite missing): %s\n", why.c_str());
        std::fflush(nullptr);
        std::_Exit(1);
    }
    std::fprintf(stderr, "SKIP: %s\n", why.c_str());
    std::fflush(nullptr);
    std::_Exit(77);
}

void note_partial_skip(const std::string &why)
{
    std::fprintf(stderr, "%s: %s\n", in_ci() ? "FAIL (CI=1)" : "partial SKIP", why.c_str());
    g_partial_skips.push_back(why);
}

namespace
{

/* At the end of a run with a part skipped: no failure -> SKIP (77) outside CI, FAIL in CI.
 * Listeners run before the reporter, so print the totals ourselves before leaving. */
struct PartialSkipListener : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    void testRunEnded(Catch::TestRunStats const &stats) override
    {
        if (g_partial_skips.empty() || stats.totals.assertions.failed > 0)
            return;
        std::fprintf(stderr,
                     "%zu assertions passed in %zu test cases, but a part of the test did not "
                     "run: %s\n",
                     static_cast<size_t>(stats.totals.assertions.passed),
                     static_cast<size_t>(stats.totals.testCases.total()),
                     g_partial_skips.front().c_str());
        std::fflush(nullptr);
        kill_live_groups();
        std::_Exit(in_ci() ? 1 : 77);
    }
};

/* Daemons alive now (constructed, not yet destroyed), for FailedAssertionLogListener. */
std::set<const Daemon *> &live_daemons()
{
    static std::set<const Daemon *> s;
    return s;
}

/* At a test case's first failed assertion, the tail of the log of every daemon alive then goes
 * to stderr (meson keeps it in the test's log; CI prints it with --print-errorlogs): the log
 * files live in temporary directories removed at the end of the test, and a failure seen only
 * in CI (a timing under a sanitizer, a loaded machine) is otherwise not diagnosable. */
struct FailedAssertionLogListener : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;
    static constexpr size_t tail_lines = 60;
    bool dumped = false;

    void testCaseStarting(Catch::TestCaseInfo const &) override
    {
        dumped = false;
    }
    bool assertionEnded(Catch::AssertionStats const &stats) override
    {
        if (dumped || stats.assertionResult.succeeded())
            return true;
        dumped = true;
        for (const Daemon *d : live_daemons()) {
            if (d->pid() <= 0)
                continue; /* never started (one-shot runs return their own output) */
            /* Under load the log is mostly one line per request ("instance=..., result=..."):
               those are left out, the rest (errors, warnings, state changes) is what explains
               a failure. */
            std::vector<std::string> lines;
            size_t requests = 0;
            for (std::string &l : split_lines(d->log())) {
                if (contains(l, "instance=") && contains(l, ", result="))
                    requests++;
                else
                    lines.push_back(std::move(l));
            }
            size_t from = lines.size() > tail_lines ? lines.size() - tail_lines : 0;
            std::fprintf(stderr,
                         "---- at the failed assertion (%s:%zu): the last %zu of %zu lines of "
                         "the log of %s pid %d (and %zu request lines, left out)\n",
                         stats.assertionResult.getSourceInfo().file,
                         stats.assertionResult.getSourceInfo().line, lines.size() - from,
                         lines.size(), impl_name(d->impl()), static_cast<int>(d->pid()),
                         requests);
            for (size_t i = from; i < lines.size(); i++)
                std::fprintf(stderr, "| %s\n", lines[i].c_str());
        }
        std::fflush(stderr);
        return true;
    }
};

} // namespace

CATCH_REGISTER_LISTENER(PartialSkipListener)
CATCH_REGISTER_LISTENER(FailedAssertionLogListener)

namespace
{

/* Daemons run in their own directory, so every path handed to them must be absolute. */
std::string absolute(const std::string &p)
{
    char *r = realpath(p.c_str(), nullptr);
    if (!r)
        return p;
    std::string out(r);
    std::free(r);
    return out;
}

} // namespace

std::string build_root()
{
    return absolute(env_or("RPD_BUILD_ROOT", "."));
}

std::string source_root()
{
    return absolute(env_or("RPD_SOURCE_ROOT", "."));
}

std::string itest_dir()
{
    return env_or("RPD_ITEST_DIR", source_root() + "/tests/integration");
}

/* The build tree whose products (daemon, client, plugins, bench tools) the tests run: this
 * build's, or RPD_PRODUCT_ROOT's. .ci/run points it at its ASan+UBSan build, so that these
 * test programs, built once without sanitizers, drive a daemon that runs under ASan. */
std::string product_root()
{
    const char *v = std::getenv("RPD_PRODUCT_ROOT");
    return (v && *v) ? absolute(v) : build_root();
}

std::string itest_build_dir()
{
    const char *v = std::getenv("RPD_PRODUCT_ROOT");
    if (v && *v)
        return product_root() + "/tests/integration";
    return env_or("RPD_ITEST_BUILD_DIR", build_root() + "/tests/integration");
}

std::string ringpolicyd_bin()
{
    return env_or("RINGPOLICYD", product_root() + "/policy/ringpolicyd");
}

std::string perl_bin()
{
    return env_or("MTPOLICYD", "/usr/bin/mtpolicyd");
}

std::string client_bin()
{
    return env_or("RINGPOLICYD_CLIENT", product_root() + "/policy/client/ringpolicyd-client");
}

std::string helloworld_so()
{
    return env_or("HELLOWORLD_SO", product_root() + "/policy/examples/HelloWorld.so");
}

std::string sleep_so()
{
    return env_or("SLEEP_SO", itest_build_dir() + "/Sleep.so");
}

std::string perl_lib()
{
    return itest_dir() + "/perl";
}

bool is_executable(const std::string &path)
{
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

bool file_exists(const std::string &path)
{
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

void need_ringpolicyd()
{
    if (!is_executable(ringpolicyd_bin()))
        skip_or_fail("ringpolicyd is not built (" + ringpolicyd_bin() + ")");
}

void need_perl()
{
    if (!is_executable(perl_bin()))
        skip_or_fail("the Perl mtpolicyd is not installed (" + perl_bin() +
                     "; apt-get install mtpolicyd)");
}

void need_file(const std::string &path, const std::string &what)
{
    if (!file_exists(path))
        skip_or_fail(what + " is missing (" + path + ")");
}

/* ---------------------------------------------------------------------------------------------
 * Files and strings
 */

TempDir::TempDir()
{
    std::string tmpl = env_or("TMPDIR", "/tmp") + "/rpd-itest-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
        std::fprintf(stderr, "mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
        std::abort(); /* the harness cannot work at all; nothing to test */
    }
    path_ = buf.data();
    chmod(path_.c_str(), 0755);
}

TempDir::~TempDir()
{
    if (path_.empty() || env_or("RPD_KEEP_TMP", "0") == "1")
        return;
    /* No shell: fork rm -rf on our own private directory. */
    run_command({"/bin/rm", "-rf", "--", path_}, 10000);
}

std::string TempDir::file(const std::string &name) const
{
    return path_ + "/" + name;
}

std::string TempDir::write(const std::string &name, const std::string &content) const
{
    std::string p = file(name);
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << content;
    f.close();
    chmod(p.c_str(), 0644);
    return p;
}

std::string read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        return "";
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string replace_all(std::string s, const std::string &from, const std::string &to)
{
    if (from.empty())
        return s;
    size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
        s.replace(pos, from.size(), to);
        pos += to.size();
    }
    return s;
}

std::vector<std::string> split_lines(const std::string &s)
{
    std::vector<std::string> out;
    size_t start = 0;
    while (start < s.size()) {
        size_t nl = s.find('\n', start);
        if (nl == std::string::npos) {
            out.push_back(s.substr(start));
            break;
        }
        out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

bool contains(const std::string &hay, const std::string &needle)
{
    return hay.find(needle) != std::string::npos;
}

size_t count_of(const std::string &hay, const std::string &needle)
{
    size_t n = 0, pos = 0;
    if (needle.empty())
        return 0;
    while ((pos = hay.find(needle, pos)) != std::string::npos) {
        n++;
        pos += needle.size();
    }
    return n;
}

int64_t now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------------------------------
 * Processes
 */

namespace
{

int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

std::vector<char *> cstr_vector(std::vector<std::string> &v)
{
    std::vector<char *> out;
    for (auto &s : v)
        out.push_back(&s[0]);
    out.push_back(nullptr);
    return out;
}

std::vector<std::string> merged_env(const std::map<std::string, std::string> &extra)
{
    std::vector<std::string> out;
    for (char **e = environ; *e; e++) {
        std::string kv(*e);
        std::string k = kv.substr(0, kv.find('='));
        if (!extra.count(k))
            out.push_back(kv);
    }
    for (auto &kv : extra)
        out.push_back(kv.first + "=" + kv.second);
    return out;
}

/* In the child after fork: never returns. */
[[noreturn]] void exec_child(std::vector<std::string> argv, std::vector<std::string> envv,
                             const std::string &cwd)
{
    setsid(); /* own process group, so the whole group can be killed */
    if (!cwd.empty() && chdir(cwd.c_str()) != 0)
        _exit(126);
    signal(SIGPIPE, SIG_DFL);
    auto a = cstr_vector(argv);
    auto e = cstr_vector(envv);
    execve(a[0], a.data(), e.data());
    std::fprintf(stderr, "exec %s: %s\n", a[0], std::strerror(errno));
    _exit(127);
}

} // namespace

RunResult run_command(const std::vector<std::string> &argv, int timeout_ms,
                      const std::string &stdin_data, const std::string &cwd,
                      const std::map<std::string, std::string> &env)
{
    RunResult r;
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
        r.err = "pipe failed";
        return r;
    }
    std::vector<std::string> envv = merged_env(env);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        exec_child(argv, envv, cwd);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    if (pid < 0) {
        ::close(in[1]);
        ::close(out[0]);
        ::close(err[0]);
        r.err = "fork failed";
        return r;
    }
    live_groups().insert(pid);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t in_off = 0;
    int fds[3] = {in[1], out[0], err[0]};
    if (stdin_data.empty()) {
        ::close(in[1]);
        fds[0] = -1;
    }
    int64_t deadline = now_ms() + timeout_ms;
    bool timed_out = false;
    while (fds[1] >= 0 || fds[2] >= 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p[3];
        for (int i = 0; i < 3; i++)
            p[i] = {fds[i], static_cast<short>(i == 0 ? POLLOUT : POLLIN), 0};
        if (poll(p, 3, static_cast<int>(left)) < 0 && errno != EINTR)
            break;
        if (fds[0] >= 0 && (p[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = ::write(fds[0], stdin_data.data() + in_off, stdin_data.size() - in_off);
            if (n > 0)
                in_off += static_cast<size_t>(n);
            if (n < 0 && errno != EAGAIN) /* the child closed its stdin */
                in_off = stdin_data.size();
            if (in_off == stdin_data.size()) {
                ::close(fds[0]);
                fds[0] = -1;
            }
        }
        for (int i = 1; i < 3; i++) {
            if (fds[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[4096];
            ssize_t n = ::read(fds[i], buf, sizeof buf);
            if (n > 0)
                (i == 1 ? r.out : r.err).append(buf, static_cast<size_t>(n));
            else if (n == 0 || errno != EINTR) {
                ::close(fds[i]);
                fds[i] = -1;
            }
        }
    }
    for (int fd : fds)
        if (fd >= 0)
            ::close(fd);
    int st = 0;
    if (timed_out) {
        kill(-pid, SIGKILL);
        waitpid(pid, &st, 0);
        r.status = -1;
    } else {
        /* Output closed: the process is exiting (or a detached child kept the pipes; then it
         * is gone too, since it held them). Wait for the bound that is left. */
        while (waitpid(pid, &st, WNOHANG) == 0) {
            if (now_ms() > deadline) {
                kill(-pid, SIGKILL);
                waitpid(pid, &st, 0);
                r.status = -1;
                live_groups().erase(pid);
                return r;
            }
            sleep_ms(5);
        }
        r.status = decode_status(st);
    }
    live_groups().erase(pid);
    return r;
}

const char *impl_name(Impl impl)
{
    return impl == Impl::Ring ? "ringpolicyd" : "mtpolicyd(Perl)";
}

Daemon::Daemon(Impl impl, const std::string &config_text,
               const std::vector<std::string> &extra_args)
    : impl_(impl), config_text_(config_text), args_(extra_args)
{
    config_path_ = dir_.file("conf");
    log_path_ = dir_.file("log");
    if (impl == Impl::Perl)
        env_["PERL5LIB"] = perl_lib();
    live_daemons().insert(this);
}

Daemon::~Daemon()
{
    live_daemons().erase(this);
    if (pid_ > 0 && !reaped_)
        stop(3000);
}

std::string Daemon::write_file(const std::string &name, const std::string &content)
{
    return dir_.write(name, replace_all(content, "@DIR@", dir_.path()));
}

bool Daemon::reap(bool block)
{
    if (reaped_)
        return true;
    if (pid_ <= 0)
        return false;
    int st = 0;
    pid_t r = waitpid(pid_, &st, block ? 0 : WNOHANG);
    if (r == pid_) {
        reaped_ = true;
        exit_status_ = decode_status(st);
        /* Perl workers may outlive a killed master: take the rest of the group down. */
        if (kill(-pid_, 0) == 0)
            kill(-pid_, SIGKILL);
        live_groups().erase(pid_);
        return true;
    }
    return false;
}

namespace
{

bool endpoint_accepts(const Endpoint &ep, int timeout_ms)
{
    Conn c(ep, timeout_ms);
    return c.ok();
}

} // namespace

const std::string &Daemon::write_config()
{
    dir_.write("conf", replace_all(config_text_, "@DIR@", dir_.path()));
    return config_path_;
}

RunResult Daemon::run(const std::vector<std::string> &args, int timeout_ms)
{
    std::vector<std::string> argv = {impl_ == Impl::Ring ? ringpolicyd_bin() : perl_bin(), "-c",
                                     write_config()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, timeout_ms, "", dir_.path(), env_);
}

bool Daemon::start(int ready_timeout_ms)
{
    write_config();
    std::vector<std::string> argv = {impl_ == Impl::Ring ? ringpolicyd_bin() : perl_bin()};
    if (foreground_)
        argv.push_back("-f");
    argv.push_back("-c");
    argv.push_back(config_path_);
    argv.insert(argv.end(), args_.begin(), args_.end());
    std::vector<std::string> envv = merged_env(env_);

    int logfd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int nullfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (logfd < 0 || nullfd < 0) {
        error_ = "cannot open " + log_path_;
        return false;
    }
    pid_ = fork();
    if (pid_ == 0) {
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        exec_child(argv, envv, dir_.path());
    }
    ::close(logfd);
    ::close(nullfd);
    if (pid_ < 0) {
        error_ = "fork failed";
        return false;
    }
    live_groups().insert(pid_);

    int64_t deadline = now_ms() + ready_timeout_ms;
    if (!ready_.valid()) {
        /* Nothing to poll: give it a moment and check it is still there. */
        sleep_ms(300);
        if (reap(false) && foreground_) {
            error_ = std::string(impl_name(impl_)) + " exited with status " +
                     std::to_string(exit_status_) + " during start-up";
            return false;
        }
        return true;
    }
    while (now_ms() < deadline) {
        if (reap(false) && foreground_) {
            error_ = std::string(impl_name(impl_)) + " exited with status " +
                     std::to_string(exit_status_) + " during start-up; log:\n" + log();
            return false;
        }
        if (endpoint_accepts(ready_, 200)) {
            /* Bound sockets accept before the daemon serves: make sure it did not die (or
               crash in its shard start-up) right after binding. */
            sleep_ms(150);
            if (reap(false)) {
                error_ = std::string(impl_name(impl_)) + " exited with status " +
                         std::to_string(exit_status_) + " right after binding; log:\n" + log();
                return false;
            }
            return true;
        }
        sleep_ms(50);
    }
    error_ = std::string(impl_name(impl_)) + " did not accept on " + ready_.str() + " within " +
             std::to_string(ready_timeout_ms) + " ms; log:\n" + log();
    return false;
}

bool Daemon::alive()
{
    if (pid_ <= 0 || reap(false))
        return false;
    return kill(pid_, 0) == 0;
}

int Daemon::send_signal(int signo)
{
    if (pid_ <= 0 || reaped_)
        return -ESRCH;
    return kill(pid_, signo) == 0 ? 0 : -errno;
}

int Daemon::wait_exit(int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (!reap(false)) {
        if (pid_ <= 0 || now_ms() >= deadline)
            return -1;
        sleep_ms(10);
    }
    return exit_status_;
}

int Daemon::stop(int grace_ms)
{
    if (pid_ <= 0)
        return -1;
    if (!reaped_) {
        kill(pid_, SIGTERM);
        /* The Perl master waits 2-3 s for its workers; nothing is tested about how the Perl
           daemon stops, so it gets a short grace before the whole group is killed. */
        if (impl_ == Impl::Perl && grace_ms > 300)
            grace_ms = 300;
        if (wait_exit(grace_ms) < 0) {
            kill(-pid_, SIGKILL);
            reap(true);
        }
    }
    return exit_status_;
}

std::string Daemon::log() const
{
    return read_file(log_path_);
}

bool Daemon::wait_log(const std::string &needle, int timeout_ms) const
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (contains(log(), needle))
            return true;
        if (now_ms() >= deadline)
            return false;
        sleep_ms(20);
    }
}

} // namespace itest
