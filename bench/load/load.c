/*
 * ringpolicyd-load: closed-loop load generator for Postfix policy servers.
 *
 * N persistent connections, spread over T threads (worker.c, one epoll loop each) and over one
 * or more servers; each connection sends one request, waits for the reply, and sends the next.
 * Requests are realistic Postfix 3.7 requests from the seeded generator (bench/common/reqgen.h),
 * or one fixed request from a file. Replies during the warm-up are not counted; after it, for
 * --duration seconds, every reply's latency goes into a histogram and its action into a count.
 * The result is printed with the whole setup (git sha, kernel, CPU, connections, threads, the
 * command line), as text or as one JSON object (--json).
 *
 * --idle N instead opens N connections, sends one request on each, and holds them open and idle
 * (for measuring a daemon's memory per connection), until --hold seconds pass or SIGTERM/SIGINT.
 *
 * Start-up errors (bad options, unresolvable server, unreadable request file) exit 2 with one
 * message; a run always completes and reports its errors, exiting 1 if nothing was answered.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_assert.h"
#include "load.h"
#include "worker.h"

#define THREADS_MAX 256u
#define CONNECTIONS_MAX 100000u
#define REQUEST_FILE_BYTES_MAX 65536u

static const char usage_text[] =
    "usage: ringpolicyd-load [options]\n"
    "  --server HOST:PORT|PATH  policy server; repeat for several (connections are spread\n"
    "                           round-robin); default 127.0.0.1:12345\n"
    "  --port-map HOST:P1-P2    add one server per port P1..P2 (e.g. one per shard)\n"
    "  --connections N          persistent connections (default 16)\n"
    "  --threads N              load threads (default: one per online CPU, at most N\n"
    "                           connections)\n"
    "  --duration S             measured seconds (default 10)\n"
    "  --warmup S               seconds before measuring, not counted (default 2)\n"
    "  --timeout-ms MS          a reply later than this is an error; the connection is\n"
    "                           closed and opened again (default 10000)\n"
    "  --request-file FILE      send this one request (name=value lines) every time instead\n"
    "                           of generated Postfix 3.7 requests\n"
    "  --seed N                 seed of the request generator (default 1)\n"
    "  --rcpt-min N, --rcpt-max N  recipients per generated mail (default 1 and 5)\n"
    "  --with-data              generated mails also get a DATA-stage request\n"
    "  --policy-context TEXT    value of policy_context in generated requests (default empty)\n"
    "  --clients N              distinct clients mails come from (default 65536)\n"
    "  --hot-clients N          of which N send half the mails (default 256)\n"
    "  --fresh-clients          every mail from a new client (address, names, sender\n"
    "                           domain): lookups never repeat, so no cache can hit\n"
    "  --instance-epoch N       seconds field of the generated instances (default: now, so\n"
    "                           that each run's mails are new to a daemon's session cache)\n"
    "  --label TEXT             a name for this run, printed with the result\n"
    "  --json                   print one JSON object instead of text\n"
    "  --idle N                 memory mode: open N connections, send one request on each,\n"
    "                           print \"ready\", keep them open and idle\n"
    "  --hold S                 with --idle: how long to hold them (default 600; SIGTERM or\n"
    "                           SIGINT ends it sooner)\n"
    "  --help                   this text\n"
    "Errors counted: closed (the server closed or reset a connection while a request was\n"
    "out), malformed (no action, a line without '=', bytes after the reply, a reply over\n"
    "4096 bytes), timeouts, connect failures. Exit status: 0 when replies were counted, 1\n"
    "when none were, 2 on bad usage or setup.\n";

static __attribute__((noreturn, format(printf, 1, 2))) void fail_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ringpolicyd-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static unsigned long parse_num(const char *opt, const char *text, unsigned long lo,
                               unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (*text == '\0' || *text == '-' || *end != '\0' || errno || n < lo || n > hi)
        fail_usage("--%s wants a number from %lu to %lu, not '%s'", opt, lo, hi, text);
    return n;
}

static void add_server(struct load_opts *o, const char *text)
{
    if (o->server_count == LOAD_SERVERS_MAX)
        fail_usage("at most %u servers", LOAD_SERVERS_MAX);
    char err[512];
    if (bench_addr_parse(text, &o->servers[o->server_count], err, sizeof(err)) < 0)
        fail_usage("%s", err);
    o->server_count++;
}

/* HOST:P1-P2 -> one server per port. */
static void add_port_map(struct load_opts *o, const char *text)
{
    const char *colon = strrchr(text, ':');
    const char *dash = colon ? strchr(colon, '-') : NULL;
    if (!colon || !dash || colon == text)
        fail_usage("--port-map wants HOST:FIRST-LAST, not '%s'", text);
    char first_text[16];
    size_t first_len = (size_t)(dash - colon - 1);
    if (first_len == 0 || first_len >= sizeof(first_text))
        fail_usage("--port-map wants HOST:FIRST-LAST, not '%s'", text);
    memcpy(first_text, colon + 1, first_len);
    first_text[first_len] = '\0';
    unsigned long first = parse_num("port-map", first_text, 1, 65535);
    unsigned long last = parse_num("port-map", dash + 1, first, 65535);
    for (unsigned long port = first; port <= last; port++) {
        char one[BENCH_ADDR_TEXT_BYTES];
        snprintf(one, sizeof(one), "%.*s:%lu", (int)(colon - text), text, port);
        add_server(o, one);
    }
}

enum {
    OPT_SERVER = 256,
    OPT_PORT_MAP,
    OPT_CONNECTIONS,
    OPT_THREADS,
    OPT_DURATION,
    OPT_WARMUP,
    OPT_TIMEOUT,
    OPT_REQUEST_FILE,
    OPT_SEED,
    OPT_RCPT_MIN,
    OPT_RCPT_MAX,
    OPT_WITH_DATA,
    OPT_POLICY_CONTEXT,
    OPT_CLIENTS,
    OPT_HOT_CLIENTS,
    OPT_FRESH_CLIENTS,
    OPT_INSTANCE_EPOCH,
    OPT_LABEL,
    OPT_JSON,
    OPT_IDLE,
    OPT_HOLD,
    OPT_HELP,
};

static void apply_opt(struct load_opts *o, int c, const char *name, const char *arg)
{
    switch (c) {
    case OPT_SERVER:
        add_server(o, arg);
        break;
    case OPT_PORT_MAP:
        add_port_map(o, arg);
        break;
    case OPT_CONNECTIONS:
        o->connections = (unsigned)parse_num(name, arg, 1, CONNECTIONS_MAX);
        break;
    case OPT_THREADS:
        o->threads = (unsigned)parse_num(name, arg, 1, THREADS_MAX);
        break;
    case OPT_DURATION:
        o->duration_s = (unsigned)parse_num(name, arg, 1, 86400);
        break;
    case OPT_WARMUP:
        o->warmup_s = (unsigned)parse_num(name, arg, 0, 3600);
        break;
    case OPT_TIMEOUT:
        o->timeout_ms = (int)parse_num(name, arg, 1, 3600000);
        break;
    case OPT_REQUEST_FILE:
        o->request_file = arg;
        break;
    case OPT_SEED:
        o->seed = strtoull(arg, NULL, 10);
        break;
    case OPT_RCPT_MIN:
        o->gen_opts.rcpt_min = (uint32_t)parse_num(name, arg, 1, BENCH_REQGEN_RCPT_MAX);
        break;
    case OPT_RCPT_MAX:
        o->gen_opts.rcpt_max = (uint32_t)parse_num(name, arg, 1, BENCH_REQGEN_RCPT_MAX);
        break;
    case OPT_WITH_DATA:
        o->gen_opts.with_data = true;
        break;
    case OPT_POLICY_CONTEXT:
        o->gen_opts.policy_context = arg;
        break;
    case OPT_CLIENTS:
        o->gen_opts.client_pool = (uint32_t)parse_num(name, arg, 1, UINT32_MAX);
        break;
    case OPT_HOT_CLIENTS:
        o->gen_opts.hot_clients = (uint32_t)parse_num(name, arg, 1, UINT32_MAX);
        break;
    case OPT_FRESH_CLIENTS:
        o->gen_opts.fresh_clients = true;
        break;
    case OPT_INSTANCE_EPOCH:
        o->gen_opts.instance_epoch = (uint32_t)parse_num(name, arg, 0, UINT32_MAX);
        o->instance_epoch_set = true;
        break;
    case OPT_LABEL:
        o->label = arg;
        break;
    case OPT_JSON:
        o->json = true;
        break;
    case OPT_IDLE:
        o->idle = (unsigned)parse_num(name, arg, 1, CONNECTIONS_MAX);
        break;
    case OPT_HOLD:
        o->hold_s = (unsigned)parse_num(name, arg, 0, 86400);
        break;
    case OPT_HELP:
        fputs(usage_text, stdout);
        exit(0);
    default:
        fputs(usage_text, stderr);
        exit(2);
    }
}

static void parse_args(int argc, char **argv, struct load_opts *o)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, OPT_SERVER},
        {"port-map", required_argument, NULL, OPT_PORT_MAP},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"request-file", required_argument, NULL, OPT_REQUEST_FILE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"rcpt-min", required_argument, NULL, OPT_RCPT_MIN},
        {"rcpt-max", required_argument, NULL, OPT_RCPT_MAX},
        {"with-data", no_argument, NULL, OPT_WITH_DATA},
        {"policy-context", required_argument, NULL, OPT_POLICY_CONTEXT},
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"hot-clients", required_argument, NULL, OPT_HOT_CLIENTS},
        {"fresh-clients", no_argument, NULL, OPT_FRESH_CLIENTS},
        {"instance-epoch", required_argument, NULL, OPT_INSTANCE_EPOCH},
        {"label", required_argument, NULL, OPT_LABEL},
        {"json", no_argument, NULL, OPT_JSON},
        {"idle", required_argument, NULL, OPT_IDLE},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->connections = 16;
    o->duration_s = 10;
    o->warmup_s = 2;
    o->timeout_ms = 10000;
    o->seed = 1;
    o->hold_s = 600;
    o->label = "";
    bench_reqgen_opts_default(&o->gen_opts);
    int c, long_idx = 0;
    while ((c = getopt_long(argc, argv, "", longopts, &long_idx)) != -1)
        apply_opt(o, c, c >= OPT_SERVER ? longopts[long_idx].name : "?", optarg);
    if (optind < argc)
        fail_usage("unexpected argument '%s' (see --help)", argv[optind]);
    if (o->gen_opts.rcpt_min > o->gen_opts.rcpt_max)
        fail_usage("--rcpt-min is larger than --rcpt-max");
    if (!o->instance_epoch_set)
        o->gen_opts.instance_epoch = (uint32_t)time(NULL);
    if (o->server_count == 0)
        add_server(o, "127.0.0.1:12345");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (o->threads == 0)
        o->threads = cpus > 0 ? (unsigned)cpus : 2;
    if (o->threads > o->connections)
        o->threads = o->connections;
}

/* Reads the fixed request: name=value lines, one request; the closing empty line is added. */
static void read_request_file(struct load_opts *o)
{
    FILE *f = fopen(o->request_file, "r");
    if (!f)
        fail_usage("cannot open request file %s: %s", o->request_file, strerror(errno));
    static char buf[REQUEST_FILE_BYTES_MAX + 2];
    size_t len = fread(buf, 1, REQUEST_FILE_BYTES_MAX + 1, f);
    bool read_error = ferror(f);
    fclose(f);
    if (read_error)
        fail_usage("cannot read request file %s", o->request_file);
    if (len > REQUEST_FILE_BYTES_MAX)
        fail_usage("request file %s is larger than %u bytes", o->request_file,
                   REQUEST_FILE_BYTES_MAX);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    size_t line_start = 0, lineno = 1;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && buf[i] != '\n')
            continue;
        size_t line_len = i - line_start;
        if (line_len > 0 && buf[line_start + line_len - 1] == '\r')
            line_len--;
        if (line_len == 0 && len > 0)
            fail_usage("request file %s line %zu: empty line inside the request (one request "
                       "per file)",
                       o->request_file, lineno);
        if (line_len > 0 && !memchr(buf + line_start, '=', line_len))
            fail_usage("request file %s line %zu: no '='", o->request_file, lineno);
        line_start = i + 1;
        lineno++;
    }
    bool has_request =
        len >= 8 && (memcmp(buf, "request=", 8) == 0 || memmem(buf, len, "\nrequest=", 9));
    if (!has_request)
        fprintf(stderr,
                "ringpolicyd-load: warning: %s has no request= line; mtpolicyd 2.05 "
                "closes the connection after answering such a request\n",
                o->request_file);
    if (len > 0)
        buf[len++] = '\n';
    buf[len++] = '\n';
    o->fixed_request = buf;
    o->fixed_request_len = len;
}

/* Lets one process hold many sockets: the soft fd limit up to the hard one. */
static void raise_fd_limit(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want + 64)
        return;
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

static struct load_shared shared;

static int run_load(const struct load_opts *o, struct load_result *res)
{
    shared.servers = o->servers;
    shared.server_count = o->server_count;
    shared.fixed_request = o->fixed_request;
    shared.fixed_request_len = o->fixed_request_len;
    shared.gen_opts = o->gen_opts;
    shared.seed = o->seed;
    shared.timeout_ms = o->timeout_ms;
    uint64_t t0 = load_now_ns();
    shared.measure_start_ns = t0 + (uint64_t)o->warmup_s * 1000000000u;
    shared.measure_end_ns = shared.measure_start_ns + (uint64_t)o->duration_s * 1000000000u;
    atomic_store(&shared.stop, false);

    struct load_worker *workers = calloc(o->threads, sizeof(*workers));
    pthread_t *tids = calloc(o->threads, sizeof(*tids));
    if (!workers || !tids)
        fail_usage("out of memory");
    uint32_t next_conn = 0;
    for (unsigned t = 0; t < o->threads; t++) {
        unsigned n = o->connections / o->threads + (t < o->connections % o->threads ? 1 : 0);
        int rc = load_worker_init(&workers[t], t, &shared, next_conn, n);
        if (rc < 0)
            fail_usage("cannot set up thread %u: %s", t, strerror(-rc));
        next_conn += n;
    }
    for (unsigned t = 0; t < o->threads; t++)
        if (pthread_create(&tids[t], NULL, load_worker_run, &workers[t]) != 0)
            fail_usage("cannot start thread %u", t);

    load_sleep_until(shared.measure_start_ns);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    load_sleep_until(shared.measure_end_ns);
    getrusage(RUSAGE_SELF, &ru1);
    atomic_store(&shared.stop, true);
    for (unsigned t = 0; t < o->threads; t++)
        pthread_join(tids[t], NULL);

    load_stats_init(&res->stats);
    for (unsigned t = 0; t < o->threads; t++) {
        load_stats_merge(&res->stats, &workers[t].stats);
        load_worker_fini(&workers[t]);
    }
    free(workers);
    free(tids);
    res->seconds = (double)o->duration_s;
    res->client_cpu_s = load_rusage_seconds(&ru1) - load_rusage_seconds(&ru0);
    return res->stats.requests > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct load_opts opts;
    parse_args(argc, argv, &opts);
    if (opts.request_file)
        read_request_file(&opts);
    signal(SIGPIPE, SIG_IGN);
    struct bench_setup setup;
    bench_setup_collect(&setup, argc, argv);
    if (opts.idle) {
        raise_fd_limit(opts.idle);
        return load_idle_run(&opts, &setup);
    }
    raise_fd_limit(opts.connections);
    static struct load_result res;
    int rc = run_load(&opts, &res);
    if (opts.json)
        load_report_json(stdout, &opts, &setup, &res);
    else
        load_report_text(stdout, &opts, &setup, &res);
    return rc;
}
