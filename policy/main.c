/*
 * main.c: the ringpolicyd command line (spec 2): mtpolicyd 2.05's options, long forms and
 * abbreviations as getopt_long allows, plus --check, --shards and --version. Unknown options
 * print a warning and are ignored, as 2.05 does. Everything else is daemon.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "ringpolicyd_config.h"

enum {
    OPT_CHECK = 256,
    OPT_SHARDS,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"foreground", no_argument, NULL, 'f'},
    {"loglevel", required_argument, NULL, 'l'},
    {"dump_config", no_argument, NULL, 'd'},
    {"dump_vhosts", no_argument, NULL, 'd'}, /* the manual's name; 2.05 rejects it (16 #16) */
    {"cron", required_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {"check", no_argument, NULL, OPT_CHECK},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fputs("Usage: ringpolicyd [options]\n"
          "A Postfix policy daemon that serves mtpolicyd 2.05 configuration files.\n"
          "\n"
          "Options (mtpolicyd's, long forms may be abbreviated):\n"
          "  -c, --config=FILE     configuration file (default " POL_DAEMON_DEFAULT_CONFIG ")\n"
          "  -f, --foreground      stay in the foreground (log to stderr unless log_file is set)\n"
          "  -l, --loglevel=N      override the configuration's log_level (4: dump requests)\n"
          "  -d, --dump_vhosts     print the parsed virtual hosts and plugins, then exit\n"
          "  -t, --cron=TASKS      run the plugins' cron tasks (comma-separated: hourly,\n"
          "                        daily, weekly, monthly, reboot or a plugin's own), then exit\n"
          "  -h, --help            print this text and exit\n"
          "\n"
          "ringpolicyd's own:\n"
          "      --check           load the configuration and build every plugin, check that\n"
          "                        the listening addresses can be bound, report, and exit\n"
          "                        (status 0 when the configuration is usable)\n"
          "      --shards=N        engine threads, one io_uring each (default: one per CPU,\n"
          "                        or the configuration's `shards`)\n"
          "      --version         print the version and exit\n"
          "\n"
          "Unknown options print a warning and are ignored, as in mtpolicyd. Signals: TERM\n"
          "and INT stop after in-flight requests are answered; USR1 logs counters; HUP\n"
          "reloads the configuration (an invalid one is logged and the running one kept).\n"
          "The configuration format, options and plugins are described in README.md.\n",
          out);
}

/* A decimal number in [lo, hi], or -1. */
static long number(const char *s, long lo, long hi)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    return v;
}

int main(int argc, char **argv)
{
    struct pol_daemon_opts o = {0};
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "c:fl:dt:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (*optarg) /* an empty value keeps the default (2.05) */
                o.config_path = optarg;
            break;
        case 'f':
            o.foreground = true;
            break;
        case 'l':
            if ((v = number(optarg, 0, 1000)) < 0)
                fprintf(stderr, "Value \"%s\" invalid for option loglevel (number expected)\n",
                        optarg);
            else
                o.log_level = (int)v;
            break;
        case 'd':
            o.dump = true;
            break;
        case 't':
            o.cron = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_CHECK:
            o.check = true;
            break;
        case OPT_VERSION:
            printf("ringpolicyd %s\n", RINGPOLICYD_VERSION);
            return 0;
        case OPT_SHARDS:
            if ((v = number(optarg, 1, 1024)) < 0) {
                fprintf(stderr, "ringpolicyd: --shards needs a number from 1 to 1024\n");
                return 1;
            }
            o.shards = (unsigned)v;
            break;
        default:
            /* getopt_long printed the warning; 2.05 goes on as well. */
            break;
        }
    }
    for (int i = optind; i < argc; i++)
        fprintf(stderr, "ringpolicyd: ignoring argument %s\n", argv[i]);
    return pol_daemon_main(&o);
}
