/*
 * gen.h: writes synthetic Postfix maillogs of any size, for replays bigger than the captured
 * logs. Deterministic: the same options give the same bytes.
 *
 * Two mixes, modelled on the shared samples (shared/data/maillogs/SOURCES.md):
 *  - inbound MX (like kdent): about 45% of connections only get rejected recipients (RBL 554,
 *    unknown user 550, greylisting 450), a few drop after CONNECT, the rest deliver 1-3
 *    recipients (some through an alias, logged with orig_to=), sometimes after a rejected one;
 *    clients are a large pool with a few busy senders, most without a verified name.
 *  - SASL submission (like louisitvn): postfix/submission/smtpd, clients from a few networks
 *    and the webmail on 127.0.0.1, sasl_method LOGIN or PLAIN, a skewed pool of users, 1-5
 *    external recipients, some failed authentications.
 * Each session is a block of lines with times inside one second of its start; sessions start
 * at exponentially distributed intervals (mean 1/rate) and run on a pool of smtpd pids, each
 * pid serving its sessions one after another. No allocation beyond stdio's buffer.
 */
#ifndef RPL_GEN_H
#define RPL_GEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum rpl_gen_mix {
    RPL_GEN_INBOUND,
    RPL_GEN_SUBMISSION,
};

struct rpl_gen_opts {
    enum rpl_gen_mix mix;
    uint64_t sessions;   /* SMTP connections to write */
    uint64_t seed;
    int64_t start_sec;   /* epoch seconds of the first session */
    double rate;         /* sessions per second of log time (> 0) */
    bool rfc3339;        /* RFC 3339 timestamps instead of classic ones */
    uint32_t pids;       /* smtpd processes; 0 = 50 (inbound) or 20 (submission) */
};

/* Fills defaults: inbound, 1000 sessions, seed 1, 2026-11-24 00:00:00 UTC, 5 sessions/s. */
void rpl_gen_defaults(struct rpl_gen_opts *o);

/* Writes the log. Returns 0, or -EIO when a write failed. */
int rpl_gen_write(FILE *out, const struct rpl_gen_opts *o);

/* Parses "inbound" or "submission". Returns 0 or -1. */
int rpl_gen_mix_parse(const char *s, enum rpl_gen_mix *out);

#ifdef __cplusplus
}
#endif

#endif
