/*
 * main.c: ringpolicyd-replay's command line: load the maillogs, then print the synthesized
 * requests (--emit), replay them against a policy server (--server, optionally --against a
 * second one: differential mode), or write a synthetic maillog (--generate).
 *
 * Exit status: 0 done (no differences in differential mode), 1 could not start (files, memory,
 * addresses, io_uring), 2 bad usage, 3 differences found, 4 some requests failed (errors or
 * timeouts) but no differences. Only the addresses given on the command line are contacted.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "corpus.h"
#include "gen.h"
#include "render.h"
#include "report.h"
#include "run.h"

#define EXIT_START 1
#define EXIT_USAGE 2
#define EXIT_DIFFERENCES 3
#define EXIT_FAILED_REQUESTS 4

struct cli {
    bool emit, json, max_speed, stats;
    const char *generate;
    const char *server_text[RPL_SERVERS_MAX];
    int port_map[RPL_SERVERS_MAX][RPL_STAGE_COUNT]; /* 0: the server's own port */
    unsigned stage_mask;
    char stages_text[64];
    double speed, rate;
    int progress; /* -1: when stderr is a terminal */
    struct rpl_load_opts load;
    struct rpl_run_opts run;
    struct rpl_gen_opts gen;
    double duration_s;
    double max_gap_s;
};

static void usage(FILE *out)
{
    fputs("usage: ringpolicyd-replay --emit [OPTIONS] FILE...\n"
          "       ringpolicyd-replay --server HOST:PORT [--against HOST:PORT] [OPTIONS] FILE...\n"
          "       ringpolicyd-replay --generate inbound|submission [GENERATOR OPTIONS]\n"
          "FILE is a Postfix maillog (classic or RFC 3339 syslog lines, plain or gzip); - is\n"
          "standard input. Files are read in order.\n"
          "logs:     --year Y (of the first classic line; default: from each file's mtime)\n"
          "          --stages LIST (RCPT,DATA,END-OF-MESSAGE or all; default RCPT)\n"
          "          --multiply N (copies with shifted addresses, instances, queue ids)\n"
          "          --requests N (at most N requests)  --stats (log summary on stderr)\n"
          "requests: --server-address A  --server-port P  --policy-context NAME\n"
          "replay:   --port-map STAGE=PORT (repeatable; for --server)\n"
          "          --against-port-map STAGE=PORT (repeatable; for --against)\n"
          "          --max-speed (closed loop, the default) | --speed X (open loop, X times the\n"
          "          recorded pace) | --rate R (open loop at R requests/s on average)\n"
          "          --max-gap S (open loop: recorded pauses over S seconds are cut to S)\n"
          "          --connections N (streams, i.e. smtpd processes, at most; default 16)\n"
          "          --threads N (default 1)  --duration S  --timeout-ms MS (default 10000)\n"
          "          --json  --progress | --no-progress  --show-diffs N (default 10)\n"
          "generate: --sessions N (default 1000)  --seed S  --session-rate R (per second of\n"
          "          log time, default 5)  --start EPOCH_SECONDS  --pids N  --rfc3339\n"
          "exit: 0 done, 1 could not start, 2 usage, 3 differences, 4 failed requests\n",
          out);
}

enum {
    OPT_EMIT = 256, OPT_SERVER, OPT_AGAINST, OPT_PORT_MAP, OPT_AGAINST_PORT_MAP, OPT_SPEED,
    OPT_MAX_SPEED, OPT_RATE, OPT_MULTIPLY, OPT_CONNECTIONS, OPT_DURATION, OPT_JSON, OPT_YEAR,
    OPT_STAGES, OPT_REQUESTS, OPT_TIMEOUT, OPT_THREADS, OPT_PROGRESS, OPT_NO_PROGRESS,
    OPT_SHOW_DIFFS, OPT_SERVER_ADDRESS, OPT_SERVER_PORT, OPT_POLICY_CONTEXT, OPT_STATS,
    OPT_MAX_GAP, OPT_GENERATE, OPT_SESSIONS, OPT_SEED, OPT_SESSION_RATE, OPT_START, OPT_PIDS, OPT_RFC3339,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"emit", no_argument, 0, OPT_EMIT},
    {"server", required_argument, 0, OPT_SERVER},
    {"against", required_argument, 0, OPT_AGAINST},
    {"port-map", required_argument, 0, OPT_PORT_MAP},
    {"against-port-map", required_argument, 0, OPT_AGAINST_PORT_MAP},
    {"speed", required_argument, 0, OPT_SPEED},
    {"max-speed", no_argument, 0, OPT_MAX_SPEED},
    {"rate", required_argument, 0, OPT_RATE},
    {"multiply", required_argument, 0, OPT_MULTIPLY},
    {"connections", required_argument, 0, OPT_CONNECTIONS},
    {"duration", required_argument, 0, OPT_DURATION},
    {"json", no_argument, 0, OPT_JSON},
    {"year", required_argument, 0, OPT_YEAR},
    {"stages", required_argument, 0, OPT_STAGES},
    {"requests", required_argument, 0, OPT_REQUESTS},
    {"timeout-ms", required_argument, 0, OPT_TIMEOUT},
    {"threads", required_argument, 0, OPT_THREADS},
    {"progress", no_argument, 0, OPT_PROGRESS},
    {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
    {"show-diffs", required_argument, 0, OPT_SHOW_DIFFS},
    {"server-address", required_argument, 0, OPT_SERVER_ADDRESS},
    {"server-port", required_argument, 0, OPT_SERVER_PORT},
    {"policy-context", required_argument, 0, OPT_POLICY_CONTEXT},
    {"stats", no_argument, 0, OPT_STATS},
    {"max-gap", required_argument, 0, OPT_MAX_GAP},
    {"generate", required_argument, 0, OPT_GENERATE},
    {"sessions", required_argument, 0, OPT_SESSIONS},
    {"seed", required_argument, 0, OPT_SEED},
    {"session-rate", required_argument, 0, OPT_SESSION_RATE},
    {"start", required_argument, 0, OPT_START},
    {"pids", required_argument, 0, OPT_PIDS},
    {"rfc3339", no_argument, 0, OPT_RFC3339},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

/* An unsigned integer in [lo, hi]; prints the problem and returns false otherwise. */
static bool parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "ringpolicyd-replay: --%s wants a whole number from %llu to %llu, not "
                "'%s'\n", opt, (unsigned long long)lo, (unsigned long long)hi, s);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_positive(const char *opt, const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v > 0) || !isfinite(v)) {
        fprintf(stderr, "ringpolicyd-replay: --%s wants a positive number, not '%s'\n", opt, s);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_stages(const char *s, struct cli *c)
{
    c->stage_mask = 0;
    if (strcmp(s, "all") == 0)
        s = "RCPT,DATA,END-OF-MESSAGE";
    for (const char *p = s; *p != '\0';) {
        size_t n = strcspn(p, ",");
        int st = rpl_stage_parse(p, n);
        if (st < 0) {
            fprintf(stderr, "ringpolicyd-replay: unknown stage '%.*s' (RCPT, DATA, "
                    "END-OF-MESSAGE)\n", (int)n, p);
            return false;
        }
        c->stage_mask |= RPL_STAGE_MASK(st);
        p += n + (p[n] == ',');
    }
    c->stages_text[0] = '\0';
    for (int st = 0; st < RPL_STAGE_COUNT; st++)
        if (c->stage_mask & RPL_STAGE_MASK(st))
            snprintf(c->stages_text + strlen(c->stages_text),
                     sizeof(c->stages_text) - strlen(c->stages_text), "%s%s",
                     c->stages_text[0] ? "," : "", rpl_stage_name((enum rpl_stage)st));
    return c->stage_mask != 0;
}

static bool parse_port_map(const char *s, int *map)
{
    const char *eq = strchr(s, '=');
    int st = eq != NULL ? rpl_stage_parse(s, (size_t)(eq - s)) : -1;
    uint64_t port;
    if (st < 0) {
        fprintf(stderr, "ringpolicyd-replay: --port-map wants STAGE=PORT (RCPT, DATA, "
                "END-OF-MESSAGE), not '%s'\n", s);
        return false;
    }
    if (!parse_u64("port-map", eq + 1, 1, 65535, &port))
        return false;
    map[st] = (int)port;
    return true;
}

static int parse_args(int argc, char **argv, struct cli *c)
{
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        bool ok = true;
        switch (opt) {
        case OPT_EMIT: c->emit = true; break;
        case OPT_SERVER: c->server_text[0] = optarg; break;
        case OPT_AGAINST: c->server_text[1] = optarg; break;
        case OPT_PORT_MAP: ok = parse_port_map(optarg, c->port_map[0]); break;
        case OPT_AGAINST_PORT_MAP: ok = parse_port_map(optarg, c->port_map[1]); break;
        case OPT_SPEED: ok = parse_positive("speed", optarg, &c->speed); break;
        case OPT_MAX_SPEED: c->max_speed = true; break;
        case OPT_RATE: ok = parse_positive("rate", optarg, &c->rate); break;
        case OPT_MULTIPLY:
            ok = parse_u64("multiply", optarg, 1, 1000000, &v);
            c->run.multiply = (uint32_t)v;
            break;
        case OPT_CONNECTIONS:
            ok = parse_u64("connections", optarg, 1, 100000, &v);
            c->run.conn_cap = (uint32_t)v;
            break;
        case OPT_DURATION: ok = parse_positive("duration", optarg, &c->duration_s); break;
        case OPT_JSON: c->json = true; break;
        case OPT_YEAR:
            ok = parse_u64("year", optarg, 1970, 9999, &v);
            c->load.year = (int)v;
            break;
        case OPT_STAGES: ok = parse_stages(optarg, c); break;
        case OPT_REQUESTS: ok = parse_u64("requests", optarg, 1, UINT64_MAX, &c->run.max_requests); break;
        case OPT_TIMEOUT:
            ok = parse_u64("timeout-ms", optarg, 1, 3600000, &v);
            c->run.timeout_ms = (uint32_t)v;
            break;
        case OPT_THREADS:
            ok = parse_u64("threads", optarg, 1, RPL_THREADS_MAX, &v);
            c->run.threads = (unsigned)v;
            break;
        case OPT_PROGRESS: c->progress = 1; break;
        case OPT_NO_PROGRESS: c->progress = 0; break;
        case OPT_SHOW_DIFFS:
            ok = parse_u64("show-diffs", optarg, 0, 1000, &v);
            c->run.diff_show_max = (uint32_t)v;
            break;
        case OPT_SERVER_ADDRESS: c->run.render.server_address = optarg; break;
        case OPT_SERVER_PORT:
            ok = parse_u64("server-port", optarg, 1, 65535, &v);
            c->run.render.server_port = (uint32_t)v;
            break;
        case OPT_POLICY_CONTEXT: c->run.render.policy_context = optarg; break;
        case OPT_STATS: c->stats = true; break;
        case OPT_MAX_GAP: ok = parse_positive("max-gap", optarg, &c->max_gap_s); break;
        case OPT_GENERATE:
            c->generate = optarg;
            if (rpl_gen_mix_parse(optarg, &c->gen.mix) != 0) {
                fprintf(stderr, "ringpolicyd-replay: --generate wants inbound or submission\n");
                ok = false;
            }
            break;
        case OPT_SESSIONS: ok = parse_u64("sessions", optarg, 1, UINT64_MAX, &c->gen.sessions); break;
        case OPT_SEED: ok = parse_u64("seed", optarg, 0, UINT64_MAX, &c->gen.seed); break;
        case OPT_SESSION_RATE: ok = parse_positive("session-rate", optarg, &c->gen.rate); break;
        case OPT_START:
            ok = parse_u64("start", optarg, 0, 253402300799ull, &v);
            c->gen.start_sec = (int64_t)v;
            break;
        case OPT_PIDS:
            ok = parse_u64("pids", optarg, 1, 4000000, &v);
            c->gen.pids = (uint32_t)v;
            break;
        case OPT_RFC3339: c->gen.rfc3339 = true; break;
        case 'h':
        case OPT_HELP: usage(stdout); exit(0);
        default: ok = false; break;
        }
        if (!ok)
            return EXIT_USAGE;
    }
    int modes = c->emit + (c->generate != NULL) + (c->server_text[0] != NULL);
    if (modes != 1 || (c->server_text[1] != NULL && c->server_text[0] == NULL)) {
        fprintf(stderr, "ringpolicyd-replay: choose one of --emit, --server or --generate\n");
        return EXIT_USAGE;
    }
    if ((c->speed > 0) + (c->rate > 0) + c->max_speed > 1) {
        fprintf(stderr, "ringpolicyd-replay: --speed, --rate and --max-speed exclude each other\n");
        return EXIT_USAGE;
    }
    if (c->generate == NULL && optind >= argc) {
        fprintf(stderr, "ringpolicyd-replay: no maillog given (use - for standard input)\n");
        return EXIT_USAGE;
    }
    return 0;
}

/* --server's host with another port: "HOST:PORT" and "[V6]:PORT" forms. */
static int addr_with_port(const char *text, int port, struct bench_addr *out, char *err,
                          size_t err_len)
{
    if (port == 0)
        return bench_addr_parse(text, out, err, err_len);
    const char *colon = strrchr(text, ':');
    if (strchr(text, '/') != NULL || colon == NULL) {
        snprintf(err, err_len, "--port-map needs a HOST:PORT server, not '%s'", text);
        return -EINVAL;
    }
    char buf[BENCH_ADDR_TEXT_BYTES];
    snprintf(buf, sizeof(buf), "%.*s:%d", (int)(colon - text), text, port);
    return bench_addr_parse(buf, out, err, err_len);
}

static int emit(const struct cli *c, const struct rpl_corpus *corpus)
{
    static char out_buf[1 << 20];
    setvbuf(stdout, out_buf, _IOFBF, sizeof(out_buf));
    struct rpl_render_opts ro = c->run.render;
    uint64_t left = c->run.max_requests ? c->run.max_requests : UINT64_MAX;
    char buf[RPL_REQUEST_BYTES_MAX];
    uint64_t skipped = 0;
    for (uint32_t copy = 0; copy < c->run.multiply && left > 0; copy++) {
        for (uint64_t i = 0; i < corpus->req_count && left > 0; i++, left--) {
            size_t n = rpl_render(corpus, &corpus->reqs[i], copy, &ro, buf, sizeof(buf));
            skipped += n == 0;
            if (n > 0 && fwrite(buf, 1, n, stdout) != n)
                return EXIT_START;
        }
    }
    if (skipped)
        fprintf(stderr, "ringpolicyd-replay: %llu requests longer than %u bytes skipped\n",
                (unsigned long long)skipped, RPL_REQUEST_BYTES_MAX);
    return fflush(stdout) == 0 ? 0 : EXIT_START;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int replay(struct cli *c, const struct rpl_corpus *corpus, int argc, char **argv)
{
    struct rpl_run_opts *o = &c->run;
    char err[512];
    o->corpus = corpus;
    o->server_count = c->server_text[1] != NULL ? 2 : 1;
    for (unsigned srv = 0; srv < o->server_count; srv++)
        for (unsigned st = 0; st < RPL_STAGE_COUNT; st++)
            if (addr_with_port(c->server_text[srv], c->port_map[srv][st], &o->servers[srv][st],
                               err, sizeof(err)) != 0) {
                fprintf(stderr, "ringpolicyd-replay: %s\n", err);
                return EXIT_START;
            }
    o->open_loop = c->speed > 0 || c->rate > 0;
    o->speed = c->speed;
    o->rate = c->rate;
    o->max_gap_us = (int64_t)(c->max_gap_s * 1e6);
    o->duration_ms = (uint64_t)(c->duration_s * 1000.0);
    o->progress = c->progress < 0 ? isatty(STDERR_FILENO) : c->progress;
    struct rpl_report_setup setup;
    memset(&setup, 0, sizeof(setup));
    bench_setup_collect(&setup.base, argc, argv);
    setup.server_text[0] = c->server_text[0];
    setup.server_text[1] = c->server_text[1];
    setup.stages_text = c->stages_text;
    struct rpl_run_result res;
    double cpu0 = cpu_seconds();
    int rc = rpl_run(o, &res, err, sizeof(err));
    setup.client_cpu_s = cpu_seconds() - cpu0;
    if (rc != 0) {
        fprintf(stderr, "ringpolicyd-replay: %s\n", err);
        return EXIT_START;
    }
    if (c->json) {
        rpl_report_json(stdout, o, &setup, &res);
    } else {
        rpl_report_corpus(stdout, corpus);
        rpl_report_text(stdout, o, &setup, &res);
    }
    uint64_t failed = 0;
    for (unsigned srv = 0; srv < o->server_count; srv++)
        failed += rpl_server_stats_errors(&res.total.server[srv]);
    int status = res.total.diff_count ? EXIT_DIFFERENCES : failed ? EXIT_FAILED_REQUESTS : 0;
    rpl_run_result_free(&res);
    return status;
}

int main(int argc, char **argv)
{
    struct cli c;
    memset(&c, 0, sizeof(c));
    c.progress = -1;
    c.run.multiply = 1;
    c.run.conn_cap = 16;
    c.run.threads = 1;
    c.run.timeout_ms = 10000;
    c.run.diff_show_max = 10;
    rpl_gen_defaults(&c.gen);
    parse_stages("RCPT", &c);
    int rc = parse_args(argc, argv, &c);
    if (rc != 0) {
        usage(stderr);
        return rc;
    }
    if (c.generate != NULL)
        return rpl_gen_write(stdout, &c.gen) == 0 ? 0 : EXIT_START;
    struct rpl_corpus corpus;
    char err[512];
    rc = rpl_corpus_load(&corpus, (const char *const *)argv + optind, (size_t)(argc - optind),
                         &c.load, err, sizeof(err));
    if (rc == 0 && rpl_corpus_build(&corpus, c.stage_mask) != 0) {
        snprintf(err, sizeof(err), "out of memory");
        rc = -ENOMEM;
    }
    if (rc != 0) {
        fprintf(stderr, "ringpolicyd-replay: %s\n", err);
        rpl_corpus_free(&corpus);
        return EXIT_START;
    }
    c.run.render.copy_span_us = rpl_copy_span_us(&corpus);
    if (c.stats || (c.emit && c.progress == 1))
        rpl_report_corpus(stderr, &corpus);
    rc = c.emit ? emit(&c, &corpus) : replay(&c, &corpus, argc, argv);
    rpl_corpus_free(&corpus);
    return rc;
}
