/*
 * ringpolicyd-client: ask a policy server from the command line, like mtpolicyd's
 * policyd-client (spec 15), with the same options.
 *
 * Reads name=value lines from standard input; each empty line sends one request, with
 * request=smtpd_access_policy and a random instance in front (a fresh instance per request, so
 * requests never share a session). Prints the action values of each reply, one per line, and
 * flushes after each reply. With -v the request and the reply are copied to standard error,
 * prefixed ">> " and "<< ".
 *
 * Owns one socket at a time. Blocking I/O with a bounded wait (--timeout) for connect and for
 * every reply. Errors (connect, protocol, bad input) print one line to standard error and exit
 * 1; bad usage exits 2. Known limits: a request is at most CLIENT_REQUEST_BYTES_MAX bytes (well
 * above any server's limit, so oversized requests can still be tested), a reply at most
 * BENCH_REPLY_BYTES_DEFAULT bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "bench_assert.h"
#include "reply.h"

#define CLIENT_REQUEST_BYTES_MAX (1024u * 1024u) /* what one request may grow to */
#define CLIENT_TIMEOUT_S_DEFAULT 100             /* Postfix's smtpd_policy_service_timeout */
#define CLIENT_DEFAULT_HOST "localhost:12345"

enum { EXIT_ERROR = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: ringpolicyd-client [-?hksvt] [long options...]\n"
    "\t-h, --host HOST:PORT      policy server (default " CLIENT_DEFAULT_HOST ");\n"
    "\t                          [IPV6]:PORT works, and a path (containing '/') or\n"
    "\t                          unix:PATH is a Unix socket\n"
    "\t-s, --socket_path PATH    Unix socket of the policy server (preferred over --host)\n"
    "\t-k, --[no-]keepalive      send all requests over one connection (reconnects once\n"
    "\t                          when the server has closed it)\n"
    "\t-v, --[no-]verbose        copy each request (\">> \") and reply (\"<< \") to stderr\n"
    "\t-t, --timeout SECONDS     wait at most this long to connect and for each reply\n"
    "\t                          (default 100, Postfix's smtpd_policy_service_timeout)\n"
    "\t-?, --help, --usage       print this text\n"
    "\n"
    "Reads name=value lines from standard input; each empty line sends one request, with\n"
    "request=smtpd_access_policy and a random instance=0.NNN (a new one per request) in\n"
    "front; lines given later win on the server. Prints each action of each reply on its\n"
    "own line.\n"
    "\n"
    "Differences from policyd-client of mtpolicyd 2.05: the end of input ends the program\n"
    "with status 0 (2.05 prints \"could not read response\" and exits 255), and lines left\n"
    "without a closing empty line are sent as a last request; -k works (2.05 hangs after\n"
    "the first reply); every action line of a reply is printed (2.05 prints the last one);\n"
    "attributes are sent in the order given (2.05 sends them in hash order); --timeout\n"
    "is new.\n"
    "\n"
    "Exit status: 0 when every request was answered; 1 on a connection, protocol or input\n"
    "error (one line on stderr); 2 on bad usage.\n";

struct client_opts {
    const char *host;
    const char *socket_path;
    bool keepalive;
    bool verbose;
    int timeout_ms;
};

struct client {
    struct client_opts opts;
    struct bench_addr addr;
    int fd;       /* -1 while not connected */
    bool fd_used; /* the connection has already carried a request */
    char *req;    /* the request being built (CLIENT_REQUEST_BYTES_MAX + 1) */
    size_t req_len;
    size_t attr_lines; /* lines read from stdin for this request */
    char *rbuf;        /* reply bytes (BENCH_REPLY_BYTES_DEFAULT) */
    size_t rbuf_len;
    struct bench_reply_parser parser;
};

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ringpolicyd-client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    exit(EXIT_ERROR);
}

static __attribute__((noreturn)) void usage_exit(FILE *out, int status)
{
    fputs(usage_text, out);
    exit(status);
}

static void parse_args(int argc, char **argv, struct client_opts *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},    {"socket_path", required_argument, NULL, 's'},
        {"keepalive", no_argument, NULL, 'k'},     {"no-keepalive", no_argument, NULL, 'K'},
        {"verbose", no_argument, NULL, 'v'},       {"no-verbose", no_argument, NULL, 'V'},
        {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'H'},
        {"usage", no_argument, NULL, 'H'},         {NULL, 0, NULL, 0},
    };
    *o = (struct client_opts){.host = CLIENT_DEFAULT_HOST,
                              .timeout_ms = CLIENT_TIMEOUT_S_DEFAULT * 1000};
    opterr = 0; /* we explain bad options ourselves */
    /* getopt returns '?' both for "-?" and for a bad option, so look for "-?" first. A lone
     * "-h" without a value is help too, as in 2.05 (MooseX::Getopt maps -h to usage). */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "-?") == 0 || (i == argc - 1 && strcmp(argv[i], "-h") == 0))
            usage_exit(stdout, 0);
    int c;
    while ((c = getopt_long(argc, argv, "h:s:kvt:", longopts, NULL)) != -1) {
        char *end;
        long n;
        switch (c) {
        case 'h':
            o->host = optarg;
            break;
        case 's':
            o->socket_path = optarg;
            break;
        case 'k':
        case 'K':
            o->keepalive = c == 'k';
            break;
        case 'v':
        case 'V':
            o->verbose = c == 'v';
            break;
        case 't':
            n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || n < 1 || n > 86400) {
                fprintf(stderr, "ringpolicyd-client: --timeout wants 1..86400 seconds\n");
                exit(EXIT_USAGE);
            }
            o->timeout_ms = (int)n * 1000;
            break;
        case 'H':
            usage_exit(stdout, 0);
        case '?':
            fprintf(stderr, "ringpolicyd-client: bad option or missing argument: %s\n",
                    argv[optind - 1]);
            usage_exit(stderr, EXIT_USAGE);
        default:
            usage_exit(stderr, EXIT_USAGE);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringpolicyd-client: unexpected argument: %s\n", argv[optind]);
        usage_exit(stderr, EXIT_USAGE);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Building a request from standard input
 */

static void req_append(struct client *cl, const char *s, size_t len)
{
    if (cl->req_len + len > CLIENT_REQUEST_BYTES_MAX)
        die("request longer than %u bytes", CLIENT_REQUEST_BYTES_MAX);
    memcpy(cl->req + cl->req_len, s, len);
    cl->req_len += len;
}

/* request= and a random instance, formatted like Perl's rand (0. and 15 digits). */
static void req_start(struct client *cl)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 32;
    }
    char head[96];
    int n = snprintf(head, sizeof(head), "request=smtpd_access_policy\ninstance=0.%015llu\n",
                     (unsigned long long)(r % 1000000000000000ull));
    BENCH_ASSERT(n > 0 && (size_t)n < sizeof(head));
    cl->req_len = 0;
    cl->attr_lines = 0;
    req_append(cl, head, (size_t)n);
}

/* Reads stdin up to the next empty line. Returns true when a request is ready to send (an
 * empty line, or lines left at the end of input), false at the end of input. */
static bool read_request(struct client *cl, FILE *in, size_t *lineno)
{
    static char *line;
    static size_t line_cap;
    req_start(cl);
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &line_cap, in);
        if (n < 0) {
            if (errno && errno != EINTR)
                die("reading standard input: %s", strerror(errno));
            return cl->attr_lines > 0;
        }
        (*lineno)++;
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n')
            len--;
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0)
            return true;
        if (!memchr(line, '=', len))
            die("standard input line %zu: no '=' (expected name=value)", *lineno);
        req_append(cl, line, len);
        req_append(cl, "\n", 1);
        cl->attr_lines++;
    }
}

/* Copies text to stderr with prefix before every line; text ends with a newline. */
static void dump(const char *prefix, const char *text, size_t len)
{
    size_t start = 0;
    while (start < len) {
        const char *nl = memchr(text + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - text) : len;
        fprintf(stderr, "%s%.*s\n", prefix, (int)(end - start), text + start);
        start = end + 1;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Talking to the server
 */

static void conn_close(struct client *cl)
{
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    cl->fd_used = false;
    cl->rbuf_len = 0;
}

/* With -k: true if the server has closed (or reset) the idle connection since the last reply.
 * This is the check 2.05 does with a blocking eof(), which is why it hangs. */
static bool conn_closed_by_peer(struct client *cl)
{
    struct pollfd pfd = {.fd = cl->fd, .events = POLLIN | POLLRDHUP};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return true;
    char byte;
    return recv(cl->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void conn_ensure(struct client *cl)
{
    if (cl->fd >= 0 && conn_closed_by_peer(cl))
        conn_close(cl);
    if (cl->fd >= 0)
        return;
    char err[512];
    int fd = bench_addr_connect(&cl->addr, cl->opts.timeout_ms, false, err, sizeof(err));
    if (fd < 0)
        die("%s", err);
    cl->fd = fd;
    cl->fd_used = false;
    cl->rbuf_len = 0;
}

/* Returns 0, or -errno when the send failed. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives until one complete reply is in rbuf. Returns its length; 0 when the server closed
 * the connection before sending any byte of it; dies on errors and timeouts. */
static size_t recv_reply(struct client *cl)
{
    bench_reply_parser_reset(&cl->parser);
    for (;;) {
        size_t consumed = 0;
        enum bench_reply_status s =
            bench_reply_parse(&cl->parser, cl->rbuf, cl->rbuf_len, &consumed);
        if (s == BENCH_REPLY_DONE)
            return consumed;
        if (s != BENCH_REPLY_NEED_MORE)
            die("bad reply from %s: %s", cl->addr.text, bench_reply_status_text(s));
        struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, cl->opts.timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            die("no reply from %s within %d s", cl->addr.text, cl->opts.timeout_ms / 1000);
        ssize_t n =
            recv(cl->fd, cl->rbuf + cl->rbuf_len, BENCH_REPLY_BYTES_DEFAULT - cl->rbuf_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != ECONNRESET)
            die("receiving from %s: %s", cl->addr.text, strerror(errno));
        if (n <= 0) {
            if (cl->rbuf_len == 0)
                return 0;
            die("%s closed the connection in the middle of a reply", cl->addr.text);
        }
        cl->rbuf_len += (size_t)n;
    }
}

/* Sends the request and waits for its reply. A kept-alive connection may have been closed
 * by the server in the meantime (max_keepalive, keepalive_timeout) without our noticing yet:
 * then the request is sent once more on a new connection. */
static size_t transact(struct client *cl)
{
    for (int attempt = 0;; attempt++) {
        conn_ensure(cl);
        bool reused = cl->fd_used;
        cl->fd_used = true;
        int rc = send_all(cl->fd, cl->req, cl->req_len);
        size_t len = rc == 0 ? recv_reply(cl) : 0;
        if (len > 0)
            return len;
        if (!reused || attempt > 0) {
            if (rc < 0)
                die("sending to %s: %s", cl->addr.text, strerror(-rc));
            die("%s closed the connection without a reply", cl->addr.text);
        }
        conn_close(cl);
    }
}

static void print_reply(struct client *cl, size_t len)
{
    const struct bench_reply *r = &cl->parser.reply;
    if (cl->opts.verbose)
        dump("<< ", cl->rbuf, len);
    if (r->action_count == 0)
        die("no action found in the reply from %s", cl->addr.text);
    for (uint32_t i = 0; i < r->action_count && i < BENCH_REPLY_ACTIONS_MAX; i++)
        printf("%.*s\n", (int)r->action_len[i], cl->rbuf + r->action_off[i]);
    if (r->action_count > BENCH_REPLY_ACTIONS_MAX)
        fprintf(stderr, "ringpolicyd-client: %u more action lines not shown\n",
                r->action_count - BENCH_REPLY_ACTIONS_MAX);
    fflush(stdout);
    /* Keep what followed the reply (nothing, from a sane server) for the next one. */
    memmove(cl->rbuf, cl->rbuf + len, cl->rbuf_len - len);
    cl->rbuf_len -= len;
}

int main(int argc, char **argv)
{
    struct client cl = {.fd = -1};
    parse_args(argc, argv, &cl.opts);
    const char *target = cl.opts.socket_path ? cl.opts.socket_path : cl.opts.host;
    char err[512];
    /* --socket_path is always a path, even without a '/'. */
    char unix_target[BENCH_ADDR_TEXT_BYTES + 8];
    if (cl.opts.socket_path) {
        snprintf(unix_target, sizeof(unix_target), "unix:%s", cl.opts.socket_path);
        target = unix_target;
    }
    if (bench_addr_parse(target, &cl.addr, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringpolicyd-client: %s\n", err);
        return EXIT_USAGE;
    }
    cl.req = malloc(CLIENT_REQUEST_BYTES_MAX + 1);
    cl.rbuf = malloc(BENCH_REPLY_BYTES_DEFAULT);
    if (!cl.req || !cl.rbuf)
        die("out of memory");
    bench_reply_parser_init(&cl.parser, BENCH_REPLY_BYTES_DEFAULT);

    size_t lineno = 0;
    while (read_request(&cl, stdin, &lineno)) {
        req_append(&cl, "\n", 1);
        if (cl.opts.verbose)
            dump(">> ", cl.req, cl.req_len);
        size_t len = transact(&cl);
        print_reply(&cl, len);
        if (!cl.opts.keepalive)
            conn_close(&cl);
    }
    conn_close(&cl);
    free(cl.req);
    free(cl.rbuf);
    return 0;
}
