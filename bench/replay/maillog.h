/*
 * maillog.h: parses one Postfix syslog line into the facts the replay needs. Pure: no I/O, no
 * allocation; every string in the result is a slice of the caller's line.
 *
 * Two header formats are understood: the classic BSD one (`Oct 22 02:12:45 host prog[pid]: msg`,
 * no year, optional fraction of a second) and RFC 3339 (`2026-11-24T01:02:03.456789+00:00 host
 * prog[pid]: msg`). A program is Postfix when its tag is `NAME/DAEMON` (syslog_name may contain
 * further slashes, e.g. `postfix/submission/smtpd`) and DAEMON is a Postfix daemon; any other tag
 * is another program. Lines that have no syslog header at all are garbage. Nothing here is ever
 * fatal: an unrecognised message is reported as RPL_LINE_POSTFIX_OTHER.
 *
 * The year of a classic timestamp is not in the line; rpl_clock (below) supplies it.
 */
#ifndef RPL_MAILLOG_H
#define RPL_MAILLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rpl_slice {
    const char *ptr;
    uint32_t len;
};

enum rpl_line_kind {
    RPL_LINE_GARBAGE,       /* no syslog header */
    RPL_LINE_OTHER_PROGRAM, /* a well-formed line from a program that is not Postfix */
    RPL_LINE_POSTFIX_OTHER, /* Postfix, but nothing the replay uses */
    RPL_LINE_CONNECT,       /* smtpd: connect from H[A] */
    RPL_LINE_DISCONNECT,    /* smtpd: disconnect from H[A] ... */
    RPL_LINE_CLIENT,        /* smtpd: QID: client=H[A][, sasl_method=..][, sasl_username=..] */
    RPL_LINE_REJECT,        /* any: QID|NOQUEUE: ACTION: STAGE from H[A]: ...; from=<S> to=<R> */
    RPL_LINE_MESSAGE_ID,    /* cleanup: QID: message-id=... */
    RPL_LINE_QMGR_FROM,     /* qmgr: QID: from=<S>, size=N, nrcpt=K */
    RPL_LINE_DELIVERY,      /* delivery agent: QID: to=<R>[, orig_to=<O>], ... */
    RPL_LINE_REMOVED,       /* qmgr: QID: removed */
    RPL_LINE_REVERSE_NAME,  /* smtpd: the client's reverse name did not verify (see below) */
    RPL_LINE_KIND_COUNT
};

enum rpl_time_kind {
    RPL_TIME_CLASSIC, /* month/day/time, no year, no zone (taken as UTC) */
    RPL_TIME_ABS,     /* RFC 3339: epoch_us is absolute */
};

struct rpl_ltime {
    enum rpl_time_kind kind;
    uint8_t mon;         /* 1..12 */
    uint8_t day;         /* 1..31 */
    uint32_t sec_of_day; /* 0..86399 (a leap second 60 is folded into 59) */
    uint32_t usec;       /* 0..999999 */
    int64_t epoch_us;    /* RPL_TIME_ABS only */
};

/* Which Postfix daemon wrote the line (the last component of the tag). */
enum rpl_daemon {
    RPL_DAEMON_NONE,     /* not Postfix */
    RPL_DAEMON_SMTPD,
    RPL_DAEMON_CLEANUP,
    RPL_DAEMON_QMGR,
    RPL_DAEMON_DELIVERY, /* smtp, lmtp, local, virtual, pipe, error, retry, discard */
    RPL_DAEMON_OTHER,    /* any other Postfix daemon (anvil, pickup, bounce, postscreen, ...) */
};

struct rpl_line {
    enum rpl_line_kind kind;
    enum rpl_daemon daemon;
    struct rpl_ltime time;
    struct rpl_slice host;
    struct rpl_slice syslog_name; /* the tag minus "/DAEMON": "postfix", "postfix/submission" */
    struct rpl_slice daemon_name; /* "smtpd" */
    uint32_t pid;
    struct rpl_slice message;     /* everything after "]: " */

    /* Filled according to kind; empty slices otherwise. */
    struct rpl_slice queue_id;    /* empty for NOQUEUE */
    struct rpl_slice client_name; /* CONNECT, DISCONNECT, CLIENT, REJECT, REVERSE_NAME */
    struct rpl_slice client_addr;
    struct rpl_slice reverse_name;             /* REVERSE_NAME */
    struct rpl_slice sasl_method, sasl_username, sasl_sender; /* CLIENT */
    struct rpl_slice action;                   /* REJECT: reject, milter-reject, ... */
    struct rpl_slice stage;                    /* REJECT: RCPT, MAIL, DATA, END-OF-MESSAGE, ... */
    struct rpl_slice sender;                   /* REJECT, QMGR_FROM */
    struct rpl_slice recipient;                /* REJECT, DELIVERY (to=) */
    struct rpl_slice orig_recipient;           /* DELIVERY (orig_to=) */
    struct rpl_slice proto, helo;              /* REJECT */
    bool has_sender, has_recipient, has_helo;  /* the key was present (the value may be empty) */
    uint64_t size;                             /* QMGR_FROM */
    uint32_t nrcpt;                            /* QMGR_FROM */
};

/* Parses line[0..len) (no trailing LF; a trailing CR is ignored). Always fills *out and returns
 * out->kind. The slices point into line and live as long as it does. */
enum rpl_line_kind rpl_line_parse(const char *line, size_t len, struct rpl_line *out);

const char *rpl_line_kind_name(enum rpl_line_kind k);

/* Parses a timestamp at the start of s: classic or RFC 3339. Returns the bytes used (> 0), or 0
 * when s does not start with a valid timestamp. */
size_t rpl_ltime_parse(const char *s, size_t len, struct rpl_ltime *out);

/* ---------------------------------------------------------------------------------------------
 * Years for classic timestamps.
 *
 * The first classic line gets fixed_year when it is non-zero; otherwise the year of ref_sec (the
 * file's mtime, or now for stdin), minus one when the line's month/day/time would lie after
 * ref_sec (a log cannot be written after its file was last modified). Later lines keep that year
 * and move to the next one when the month steps back by more than six months (December to
 * January); a small step back (out-of-order lines) keeps the year. Known limit: a log spanning
 * more than a year without a line in some half-year is folded into fewer years.
 */
struct rpl_clock {
    int fixed_year;  /* 0: derive from ref_sec */
    int64_t ref_sec; /* epoch seconds */
    int year;        /* 0 until the first classic line */
    uint8_t last_mon;
    uint32_t wrap_count; /* December -> January steps seen */
};

void rpl_clock_init(struct rpl_clock *c, int fixed_year, int64_t ref_sec);
/* Starts a new file with its own reference time; keeps the year when fixed_year is set (files
 * given in order continue one another), else derives it again from ref_sec. */
void rpl_clock_next_file(struct rpl_clock *c, int64_t ref_sec);
/* Epoch microseconds of t (UTC for classic timestamps). */
int64_t rpl_clock_resolve(struct rpl_clock *c, const struct rpl_ltime *t);

/* Days since 1970-01-01 of a proleptic Gregorian date (m 1..12). */
int64_t rpl_days_from_civil(int64_t y, unsigned m, unsigned d);

#ifdef __cplusplus
}
#endif

#endif
