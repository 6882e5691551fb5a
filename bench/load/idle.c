/*
 * idle.c: ringpolicyd-load --idle N: open N connections, send one request on each and read its
 * reply (so every connection has really been served, as a Postfix smtpd's would have), then keep
 * them all open and idle until --hold seconds pass or SIGTERM/SIGINT arrives. bench/run/bench.sh
 * reads the daemon's VmRSS before and while they are held to get the memory per connection.
 *
 * Runs on the main thread with blocking sockets, one connection after another (10,000 take about
 * a second on loopback); owns every fd it opens and closes them on the way out.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_assert.h"
#include "load.h"
#include "reply.h"

/* One request and its reply on a fresh blocking connection. Returns 0 or -errno. */
static int serve_once(int fd, const char *req, size_t req_len, int timeout_ms)
{
    size_t off = 0;
    while (off < req_len) {
        ssize_t n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        off += (size_t)n;
    }
    char buf[LOAD_REPLY_BYTES_MAX];
    size_t len = 0;
    struct bench_reply_parser p;
    bench_reply_parser_init(&p, sizeof(buf));
    for (;;) {
        size_t consumed;
        enum bench_reply_status s = bench_reply_parse(&p, buf, len, &consumed);
        if (s == BENCH_REPLY_DONE)
            return p.reply.action_count > 0 ? 0 : -EPROTO;
        if (s != BENCH_REPLY_NEED_MORE)
            return -EPROTO;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return pr == 0 ? -ETIMEDOUT : -errno;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? -ECONNRESET : -errno;
        len += (size_t)n;
    }
}

/* Waits for SIGTERM/SIGINT or hold_s seconds. */
static void hold(unsigned hold_s, const sigset_t *sigs)
{
    struct timespec ts = {.tv_sec = hold_s, .tv_nsec = 0};
    while (sigtimedwait(sigs, NULL, &ts) < 0 && errno == EINTR) {
    }
}

/* The line bench.sh waits for ("ready: ..." or a JSON object with "ready":true). */
static void print_ready(const struct load_opts *o, const struct bench_setup *s, unsigned open_count,
                        unsigned errors, int last_error)
{
    if (o->json) {
        printf("{\"ready\":true,\"idle_connections\":%u,\"errors\":%u,\"last_error\":", open_count,
               errors);
        load_json_string(stdout, last_error ? strerror(-last_error) : "");
        printf(",\"hold_s\":%u,\"setup\":{\"git\":", o->hold_s);
        load_json_string(stdout, s->git);
        printf(",\"kernel\":");
        load_json_string(stdout, s->kernel);
        printf(",\"command\":");
        load_json_string(stdout, s->command);
        printf("}}\n");
    } else {
        printf("ready: %u idle connections open, %u errors%s%s; holding for %u s (SIGTERM ends "
               "sooner)\n",
               open_count, errors, last_error ? ", last: " : "",
               last_error ? strerror(-last_error) : "", o->hold_s);
        printf("setup: git %s, kernel %s\ncommand: %s\n", s->git, s->kernel, s->command);
    }
}

int load_idle_run(const struct load_opts *o, const struct bench_setup *s)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    int *fds = malloc(o->idle * sizeof(*fds));
    if (!fds) {
        fprintf(stderr, "ringpolicyd-load: out of memory\n");
        return 2;
    }
    unsigned open_count = 0, errors = 0;
    int last_error = 0;
    struct bench_reqgen gen;
    char req[BENCH_REQGEN_REQUEST_BYTES_MAX];
    for (unsigned i = 0; i < o->idle; i++) {
        char err[512];
        int fd = bench_addr_connect(&o->servers[i % o->server_count], o->timeout_ms, false, err,
                                    sizeof(err));
        if (fd < 0) {
            errors++;
            last_error = fd;
            continue;
        }
        const char *r = o->fixed_request;
        size_t r_len = o->fixed_request_len;
        if (!r) {
            bench_reqgen_init(&gen, &o->gen_opts, o->seed, i);
            r_len = bench_reqgen_next(&gen, req, sizeof(req), NULL);
            r = req;
        }
        int rc = serve_once(fd, r, r_len, o->timeout_ms);
        if (rc < 0) {
            errors++;
            last_error = rc;
            close(fd);
            continue;
        }
        fds[open_count++] = fd;
    }
    print_ready(o, s, open_count, errors, last_error);
    fflush(stdout);
    hold(o->hold_s, &sigs);
    for (unsigned i = 0; i < open_count; i++)
        close(fds[i]);
    free(fds);
    return errors ? 1 : 0;
}

void load_sleep_until(uint64_t deadline_ns)
{
    for (;;) {
        uint64_t now = load_now_ns();
        if (now >= deadline_ns)
            return;
        uint64_t left = deadline_ns - now;
        struct timespec ts = {.tv_sec = (time_t)(left / 1000000000u),
                              .tv_nsec = (long)(left % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

double load_rusage_seconds(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}
