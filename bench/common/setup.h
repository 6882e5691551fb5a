/*
 * setup.h: what the benchmark tools print with every number so that it can be reproduced
 * (STYLE.md section 10): the commit the tool was built from, the kernel, the CPU, and the
 * command line, shell-quoted. Also the JSON string writer their reports share.
 * bench_setup_collect reads /proc/cpuinfo and uname once; call it at start-up, not in a loop.
 */
#ifndef BENCH_SETUP_H
#define BENCH_SETUP_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bench_setup {
    char git[64];       /* git describe of the tree the tool was built from */
    char kernel[128];   /* uname -r */
    char cpu[128];      /* "model name" from /proc/cpuinfo, or "unknown" */
    long cpus;          /* online CPUs */
    char command[2048]; /* argv, shell-quoted where needed; cut (never overflowed) if longer */
};

void bench_setup_collect(struct bench_setup *s, int argc, char **argv);

/* Appends arg to the NUL-terminated command in cmd[0..cmd_len), single-quoted when a shell
 * would split or expand it; stops short rather than overflow. */
void bench_command_append(char *cmd, size_t cmd_len, const char *arg);

/* Writes s[0..len) as a JSON string, quotes included; control bytes as \u00XX. */
void bench_json_string(FILE *out, const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
