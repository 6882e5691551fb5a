/*
 * reqgen.h: a seeded generator of realistic Postfix 3.7 policy requests (TOOLCHAIN.md 8).
 *
 * One generator plays one smtpd process: it invents a mail (client, HELO, sender, 1-5
 * recipients, TLS and SASL details, size) and emits that mail's requests in order - one RCPT
 * per recipient, optionally DATA, then END-OF-MESSAGE - all carrying the same instance, so a
 * daemon's session cache sees the hits it would see behind Postfix. Then the next mail.
 * Attributes come in Postfix 3.7's wire order (29 of them) and differ between stages the way
 * Postfix's do: the first RCPT has an empty queue_id, later requests have it; RCPT has
 * recipient_count=0; DATA and END-OF-MESSAGE have an empty recipient and the real count;
 * END-OF-MESSAGE has the final size.
 *
 * Deterministic: the same options, seed and stream id give the same bytes. Instances are unique
 * per (stream id, mail), like Postfix's pid.time.usec.counter. Clients are skewed: about half of
 * the mails come from a small set of hot clients, the rest from a large pool. No allocation, no
 * I/O; one generator per connection, not shared between threads.
 */
#ifndef BENCH_REQGEN_H
#define BENCH_REQGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_REQGEN_RCPT_MAX 5u             /* recipients per mail, at most */
#define BENCH_REQGEN_REQUEST_BYTES_MAX 2048u /* a generated request always fits in this */
#define BENCH_REQGEN_ATTR_COUNT 29u

struct bench_reqgen_opts {
    uint32_t rcpt_min;          /* default 1 */
    uint32_t rcpt_max;          /* default 5, at most BENCH_REQGEN_RCPT_MAX */
    bool with_data;             /* also send a DATA-stage request; default false */
    uint32_t client_pool;       /* distinct client addresses; default 65536 */
    uint32_t hot_clients;       /* of which this many send half the mail; default 256 */
    uint32_t instance_epoch;    /* the seconds field of the first mails' instances (Postfix's
                                   instance is pid.seconds.usec.counter); default 0x6b04e877.
                                   Runs against one daemon must differ in it (or in the seed):
                                   the same instance would find the earlier mail's session */
    bool fresh_clients;         /* every mail from a client never seen before (address, names,
                                   sender domain): no lookup can hit a cache; default false */
    const char *policy_context; /* value of policy_context; default "" (copied at init) */
};

enum bench_stage {
    BENCH_STAGE_RCPT,
    BENCH_STAGE_DATA,
    BENCH_STAGE_EOM, /* protocol_state=END-OF-MESSAGE */
};

struct bench_req_info {
    enum bench_stage stage;
    uint32_t step_idx;   /* this request's position within its mail */
    uint32_t step_count; /* requests in this mail */
    uint32_t rcpt_count; /* recipients in this mail */
    uint64_t mail_idx;   /* mails started by this generator, counting from 0 */
};

/* Everything about the mail in progress (values as sent). */
struct bench_mail {
    char instance[48];
    char client_address[48];
    char client_name[80];
    char reverse_client_name[80];
    char helo_name[80];
    char sender[96];
    char recipient[BENCH_REQGEN_RCPT_MAX][96];
    char queue_id[16];
    char protocol_name[8];
    char sasl_method[8];
    char sasl_username[32];
    char encryption_protocol[16];
    char encryption_cipher[40];
    uint32_t encryption_keysize;
    uint32_t client_port;
    uint32_t rcpt_count;
    uint64_t size_param; /* from MAIL FROM SIZE=, 0 when the client sent none */
    uint64_t size;       /* the message size seen at END-OF-MESSAGE */
    /* The attribute lines that are the same in every request of the mail, rendered once when
     * the mail starts: protocol_name .. sender, and etrn_domain .. policy_context. */
    uint32_t fixed_head_len, fixed_tail_len;
    char fixed_head[640];
    char fixed_tail[640];
};

struct bench_reqgen {
    struct bench_reqgen_opts opts;
    char policy_context[128];
    uint64_t rng;
    uint64_t seed;
    uint32_t stream_id;
    uint32_t step_idx; /* next request of the mail; == step_count: start a new mail */
    uint32_t step_count;
    uint64_t mail_count; /* mails started */
    struct bench_mail mail;
};

void bench_reqgen_opts_default(struct bench_reqgen_opts *o);

/* opts NULL means the defaults. rcpt_min/rcpt_max are clamped to 1..BENCH_REQGEN_RCPT_MAX and
 * rcpt_min <= rcpt_max; a policy_context longer than 127 bytes is cut. stream_id makes the
 * instances of one generator differ from every other's (use the connection index). */
void bench_reqgen_init(struct bench_reqgen *g, const struct bench_reqgen_opts *opts, uint64_t seed,
                       uint32_t stream_id);

/* Writes the next request, including its closing empty line, into buf. Returns its length, or 0
 * when cap is too small (then nothing advances; BENCH_REQGEN_REQUEST_BYTES_MAX always fits).
 * info, if not NULL, describes the request. */
size_t bench_reqgen_next(struct bench_reqgen *g, char *buf, size_t cap,
                         struct bench_req_info *info);

#ifdef __cplusplus
}
#endif

#endif
