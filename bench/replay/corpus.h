/*
 * corpus.h: what a set of maillogs says smtpd would have asked a policy server.
 *
 * rpl_corpus_load reads the files in order (reader.h), parses every line (maillog.h) and joins
 * them: per smtpd process (syslog_name + pid) its connections ("connect from"), per connection
 * its transactions (one per MAIL FROM, shared `instance`), per transaction its recipients. An
 * accepted mail is an smtpd `QID: client=` line joined on the queue id with cleanup's
 * message-id, qmgr's `from=<>, size=, nrcpt=` and the delivery agents' `to=<>` lines (the
 * recipient the policy saw is orig_to= when present; repeated deliveries count once). A rejected
 * recipient is a `NOQUEUE|QID: reject: RCPT from ...; from=<> to=<>` line; consecutive NOQUEUE
 * rejects of one connection with the same sender are one transaction, and such a transaction
 * directly followed by an accepted mail of the same sender is that mail's transaction (its
 * first recipients were rejected). An accepted mail without any to= line in the logs gets
 * qmgr's nrcpt= placeholder recipients `unloggedN@recipient.invalid`. rpl_corpus_build then lays the requests out in time order
 * for the chosen stages.
 *
 * Memory: everything is malloc'ed during the load (the tool's start-up) and freed by
 * rpl_corpus_free; strings live in one arena addressed by offsets. Lines of other programs,
 * garbage and over-long lines are counted, never fatal. Limits: RPL_RCPTS_PER_MAIL_MAX
 * recipients per transaction (Postfix's smtpd_recipient_limit default), 4 GiB of strings.
 * Not thread-safe while loading; read-only (shareable between threads) once built.
 */
#ifndef RPL_CORPUS_H
#define RPL_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "maillog.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RPL_RCPTS_PER_MAIL_MAX 1000u

enum rpl_stage {
    RPL_STAGE_RCPT,
    RPL_STAGE_DATA,
    RPL_STAGE_EOM, /* END-OF-MESSAGE */
    RPL_STAGE_COUNT
};

#define RPL_STAGE_MASK(s) (1u << (s))

struct rpl_str {
    uint32_t off, len;
};

struct rpl_proc {
    struct rpl_str syslog_name; /* "postfix", "postfix/submission" */
    uint32_t pid;
};

struct rpl_conn {
    uint32_t proc_idx;
    uint32_t seq; /* connection number within its process, from 0 */
    struct rpl_str client_name, client_addr, reverse_name;
    struct rpl_str helo, proto; /* from reject lines of this connection; empty if none */
};

#define RPL_TXN_ACCEPTED 0x01u /* has a `QID: client=` line */
#define RPL_TXN_QMGR 0x02u     /* qmgr from= seen: sender, size, nrcpt are known */
#define RPL_TXN_DATA 0x04u     /* the client reached DATA (cleanup/qmgr/DATA reject) */
#define RPL_TXN_MERGED 0x08u   /* NOQUEUE transaction folded into the accepted one after it */

struct rpl_txn {
    uint32_t conn_idx;
    uint32_t seq; /* transaction number within its connection (instance counter) */
    uint32_t flags;
    struct rpl_str queue_id; /* empty for a transaction that never got a queue file */
    struct rpl_str sender;
    struct rpl_str sasl_method, sasl_username, sasl_sender;
    uint64_t size;           /* qmgr size= */
    uint32_t nrcpt;          /* qmgr nrcpt= */
    uint32_t rcpt_first;     /* range in corpus rcpts, after the load */
    uint32_t rcpt_count;
    uint32_t accepted_count;     /* recipients that reached the queue */
    uint32_t first_accepted_idx; /* index within the range; rcpt_count if none */
    uint32_t merge_candidate;    /* private to the load */
    int64_t t_start_us;          /* first event: first reject or client= */
    int64_t t_data_us;           /* cleanup message-id (or qmgr) time; 0 if unknown */
};

struct rpl_rcpt {
    struct rpl_str addr;
    uint32_t txn_idx;
    uint32_t seq;   /* load order (sort tie-break) */
    uint8_t group;  /* 0 rejected before the queue file, 1 accepted, 2 rejected after */
    int64_t t_us;
};

struct rpl_req {
    int64_t t_us;     /* recorded time */
    uint32_t txn_idx;
    uint32_t rcpt_idx; /* within the transaction's range (RCPT only) */
    uint8_t stage;     /* enum rpl_stage */
};

struct rpl_load_opts {
    int year;                /* classic timestamps: year of the first line; 0 = from mtime */
    uint32_t line_bytes_max; /* 0 = RPL_READER_LINE_BYTES_DEFAULT */
};

struct rpl_load_stats {
    uint64_t files, lines, bytes;
    uint64_t kind_count[RPL_LINE_KIND_COUNT];
    uint64_t long_lines;
    uint64_t year_wraps;
    uint64_t orphan_lines;      /* queue id with no smtpd client= line (pickup, log start) */
    uint64_t implicit_conns;    /* client=/reject without a preceding connect line */
    uint64_t mails;             /* accepted transactions */
    uint64_t mails_no_rcpt;     /* accepted, but no to= line in the logs */
    uint64_t noqueue_txns;      /* transactions made of rejected recipients only */
    uint64_t merged_txns;       /* NOQUEUE transactions folded into the next accepted mail */
    uint64_t rejects_rcpt;      /* rejected-recipient lines used */
    uint64_t rejects_other;     /* reject lines at other stages (MAIL, CONNECT, ...): no request */
    uint64_t rcpts_accepted;    /* distinct accepted recipients (placeholders included) */
    uint64_t rcpts_unlogged;    /* placeholders for mails whose to= lines are missing */
    uint64_t rcpts_dropped;     /* over RPL_RCPTS_PER_MAIL_MAX */
};

struct rpl_corpus {
    char *strs;
    size_t strs_len, strs_cap;
    struct rpl_proc *procs;
    uint32_t proc_count, proc_cap;
    struct rpl_conn *conns;
    uint32_t conn_count, conn_cap;
    struct rpl_txn *txns;
    uint32_t txn_count, txn_cap;
    struct rpl_rcpt *rcpts;
    uint32_t rcpt_count, rcpt_cap;
    struct rpl_req *reqs; /* after rpl_corpus_build, sorted by time */
    uint64_t req_count;
    uint64_t req_count_by_stage[RPL_STAGE_COUNT];
    int64_t t_first_us, t_last_us; /* of the requests */
    struct rpl_load_stats stats;
    struct rpl_load_state *load; /* private: only between init and finish */
};

/* Loads the files in order. Returns 0, or -errno with one sentence in err (a file that cannot be
 * opened or read, memory). The corpus must be freed with rpl_corpus_free in both cases. */
int rpl_corpus_load(struct rpl_corpus *c, const char *const *paths, size_t path_count,
                    const struct rpl_load_opts *o, char *err, size_t err_len);

/* Incremental form of the load, for tests and the fuzzer: init, then lines, then finish. */
void rpl_corpus_init(struct rpl_corpus *c, const struct rpl_load_opts *o);
/* ref_sec: the reference time for classic timestamps of this file (its mtime). */
void rpl_corpus_begin_file(struct rpl_corpus *c, int64_t ref_sec);
/* Returns 0, or -ENOMEM / -E2BIG (string arena full). */
int rpl_corpus_feed(struct rpl_corpus *c, const char *line, size_t len);
int rpl_corpus_finish(struct rpl_corpus *c);

/* Lays out the requests of the stages in stage_mask (RPL_STAGE_MASK bits), in time order.
 * May be called again with another mask. Returns 0 or -ENOMEM. */
int rpl_corpus_build(struct rpl_corpus *c, unsigned stage_mask);

void rpl_corpus_free(struct rpl_corpus *c);

static inline const char *rpl_str_ptr(const struct rpl_corpus *c, struct rpl_str s)
{
    return c->strs + s.off;
}

const char *rpl_stage_name(enum rpl_stage s); /* "RCPT", "DATA", "END-OF-MESSAGE" */
/* Parses RCPT, DATA, END-OF-MESSAGE (or EOM), any case. Returns the stage or -1. */
int rpl_stage_parse(const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
