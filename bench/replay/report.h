/*
 * report.h: what ringpolicyd-replay prints after a run: the setup (git, kernel, CPU, the exact
 * command), what the logs held, and per server the throughput, latency percentiles, errors and
 * actions, then the differences in differential mode. As text, or as one JSON object (--json)
 * with at least requests, errors, timeouts, seconds, rps, latency_us {p50, p90, p99, p999, max}
 * and actions {word: count}. Runs once, on the main thread, after the workers stopped.
 */
#ifndef RPL_REPORT_H
#define RPL_REPORT_H

#include <stdio.h>

#include "run.h"
#include "setup.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rpl_report_setup {
    struct bench_setup base;                  /* git, kernel, CPU, command line */
    const char *server_text[RPL_SERVERS_MAX]; /* as given on the command line */
    const char *stages_text;                  /* "RCPT,END-OF-MESSAGE" */
    double client_cpu_s;                      /* user + system time of the tool during the run */
};

void rpl_report_text(FILE *out, const struct rpl_run_opts *o, const struct rpl_report_setup *s,
                     const struct rpl_run_result *r);
void rpl_report_json(FILE *out, const struct rpl_run_opts *o, const struct rpl_report_setup *s,
                     const struct rpl_run_result *r);

/* The corpus summary line(s) printed by every mode (--emit prints it to stderr). */
void rpl_report_corpus(FILE *out, const struct rpl_corpus *c);

#ifdef __cplusplus
}
#endif

#endif
