/*
 * daemon.h: the composition root of ringpolicyd (internal to policy/): loads the configuration,
 * opens the log, hands policy's callbacks to the engine, detaches, writes the pid file, drops
 * privileges and runs. main.c turns the command line into struct pol_daemon_opts.
 *
 * Main thread. Start-up errors are printed to standard error (before detaching) as one sentence
 * naming file and line, and give a non-zero exit status.
 */
#ifndef POL_DAEMON_H
#define POL_DAEMON_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POL_DAEMON_DEFAULT_CONFIG "/etc/mtpolicyd/mtpolicyd.conf"

struct pol_daemon_opts {
    const char *config_path; /* default POL_DAEMON_DEFAULT_CONFIG */
    bool foreground;         /* -f: do not detach; log to stderr without log_file */
    int log_level;           /* -l N: overrides log_level when non-zero (2.05) */
    bool dump;               /* -d, --dump_config, --dump_vhosts */
    bool check;              /* --check: validate and exit 0/1 */
    const char *cron;        /* --cron=LIST, NULL or blank: none */
    unsigned shards;         /* --shards=N, 0: from the configuration */
};

/* Runs the daemon (or -d, --check, --cron) and returns the process exit status: 0; 1 for a
 * missing configuration file, no virtual host, or any --check failure; 255 for other start-up
 * errors (2.05's statuses). */
int pol_daemon_main(const struct pol_daemon_opts *o);

#ifdef __cplusplus
}
#endif

#endif
