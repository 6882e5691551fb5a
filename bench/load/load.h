/*
 * load.h: what the parts of ringpolicyd-load share: the options, the setup printed with every
 * result (report.c), the result, and the idle-connection mode (idle.c).
 */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>

#include "addr.h"
#include "reqgen.h"
#include "setup.h"
#include "worker.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOAD_SERVERS_MAX 64u

struct load_opts {
    struct bench_addr servers[LOAD_SERVERS_MAX];
    unsigned server_count;
    unsigned connections;
    unsigned threads;
    unsigned duration_s;
    unsigned warmup_s;
    int timeout_ms;
    const char *request_file;
    const char *fixed_request; /* contents of request_file, closing empty line included */
    size_t fixed_request_len;
    uint64_t seed;
    struct bench_reqgen_opts gen_opts;
    bool instance_epoch_set; /* --instance-epoch given; else the current time */
    const char *label;
    bool json;
    unsigned idle; /* --idle N: memory mode */
    unsigned hold_s;
};

struct load_result {
    struct load_stats stats;
    double seconds;
    double client_cpu_s; /* CPU time this process used during the measured window */
};

void load_report_text(FILE *out, const struct load_opts *o, const struct bench_setup *s,
                      const struct load_result *r);
void load_report_json(FILE *out, const struct load_opts *o, const struct bench_setup *s,
                      const struct load_result *r);
/* Writes s as a JSON string (quotes included). */
void load_json_string(FILE *out, const char *s);

/* --idle: returns the exit status. */
int load_idle_run(const struct load_opts *o, const struct bench_setup *s);

void load_sleep_until(uint64_t deadline_ns);
double load_rusage_seconds(const struct rusage *ru);

#ifdef __cplusplus
}
#endif

#endif
