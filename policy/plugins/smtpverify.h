/*
 * plugins/smtpverify.h: the SMTPVerify plugin's parts (spec 13.21), internal to
 * policy/plugins/: the SMTP reply parser and the call-out dialogue (smtpverify_proto.c, pure:
 * no I/O, no allocation, any thread), and the connection that drives a dialogue on a shard
 * (smtpverify_io.c: a non-blocking socket on eng_poll and eng_timer, per-shard limits and
 * counters). smtpverify.c is the plugin (options, DNS, scores, actions).
 *
 * The dialogue is the one Net::SMTP::Verify 2.05 runs through Net::SMTP: wait for the greeting,
 * EHLO (HELO when EHLO is refused), note STARTTLS and SIZE, MAIL FROM:<S> [SIZE=N],
 * RCPT TO:<R>, QUIT. Its verdict is the RCPT reply (or a refused MAIL FROM's reply); a refused
 * greeting or HELO, a closed connection or a malformed reply before the verdict leave no code,
 * as a failed Net::SMTP->new does.
 */
#ifndef POL_PLUGINS_SMTPVERIFY_H
#define POL_PLUGINS_SMTPVERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <eng/engine.h>

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Replies (RFC 5321 section 4.2): lines "NNN-text" then "NNN text" (or just "NNN"), ending in
 * CRLF or a bare LF (Net::Cmd accepts both).
 */

/* Bounds of the `reply_bytes_max` option: the bytes of one reply, all its lines. */
#define POL_SMTPV_REPLY_BYTES_MIN 512u /* RFC 5321's reply line limit */
#define POL_SMTPV_REPLY_BYTES_MAX 65536u
#define POL_SMTPV_REPLY_BYTES_DEFAULT 4096u

struct pol_smtpv_reply {
    unsigned code;   /* 200..599: the last line's code (Net::Cmd's code) */
    size_t text_len; /* the lines' texts (after "NNN-" / "NNN "), joined by one space */
    bool starttls;   /* a line after the first is the keyword STARTTLS (EHLO replies) */
    bool size;       /* a line after the first is SIZE, or starts with "SIZE " */
};

/* Looks for the first complete reply in buf[0..len). Returns its length in bytes (> 0) with
 * *out filled and its text written to text[0..text_cap) (NUL-terminated, cut at text_cap - 1);
 * 0 when buf holds only the start of a reply and len < bytes_max; -EMSGSIZE when no complete
 * reply fits in bytes_max bytes; -EPROTO when a line does not start with a code 200..599
 * followed by ' ', '-' or its end (*err_pos then is the offset of the bad line). */
ssize_t pol_smtpv_reply_parse(const char *buf, size_t len, size_t bytes_max,
                              struct pol_smtpv_reply *out, char *text, size_t text_cap,
                              size_t *err_pos);

/* ---------------------------------------------------------------------------------------------
 * The dialogue
 */

enum pol_smtpv_phase {
    POL_SMTPV_GREETING, /* waiting for the server's greeting */
    POL_SMTPV_EHLO,
    POL_SMTPV_HELO,
    POL_SMTPV_MAIL,
    POL_SMTPV_RCPT,
    POL_SMTPV_QUIT,
    POL_SMTPV_DONE, /* QUIT answered, or the dialogue gave up */
};

struct pol_smtpv_dialog {
    enum pol_smtpv_phase phase;
    /* Set by init; borrowed, NUL-terminated, free of CR and LF (pol_smtpv_addr_ok). */
    const char *helo;
    const char *mail_from; /* without the angle brackets; "" is the null sender */
    const char *rcpt_to;
    long long size; /* SIZE=N when the server supports SIZE and size_known */
    bool size_known;
    /* Results. */
    bool hello_done; /* EHLO or HELO accepted: starttls is known */
    bool starttls;   /* the EHLO reply advertised STARTTLS */
    bool size_ext;   /* ... and SIZE */
    bool size_sent;
    unsigned code; /* the verdict: RCPT's reply code, or a refused MAIL FROM's; 0: none */
    enum pol_smtpv_phase code_from; /* POL_SMTPV_RCPT or POL_SMTPV_MAIL */
    unsigned fail_code; /* no verdict: the refusing reply's code (greeting, HELO), else 0 */
    enum pol_smtpv_phase fail_phase;
};

void pol_smtpv_dialog_init(struct pol_smtpv_dialog *d, const char *helo, const char *mail_from,
                           const char *rcpt_to, bool size_known, long long size);

/* Bytes an output buffer needs for every command of d (the longest one plus its CRLF). */
size_t pol_smtpv_dialog_out_bytes(const struct pol_smtpv_dialog *d);

/* Feeds the next reply. Writes the command to send next (with CRLF) to out and returns its
 * length; returns 0 when the dialogue is over (phase POL_SMTPV_DONE: nothing more to send, the
 * connection may close). out_cap must be at least pol_smtpv_dialog_out_bytes(d). The verdict's
 * reply text is the caller's to keep (the reply that set d->code). */
size_t pol_smtpv_dialog_next(struct pol_smtpv_dialog *d, const struct pol_smtpv_reply *rep,
                             char *out, size_t out_cap);

/* "greeting", "EHLO", "HELO", "MAIL FROM", "RCPT TO", "QUIT", "done". */
const char *pol_smtpv_phase_name(enum pol_smtpv_phase ph);

/* Net::SMTP's _addr: blanks and one '<' at the start, one '>' and blanks at the end removed.
 * Returns the length of the cleaned address starting at *s (updated). */
size_t pol_smtpv_addr_clean(const char **s, size_t len);
/* False when s holds a byte below 0x20 or 0x7F (CR or LF would inject SMTP commands), or '<'
 * or '>' after cleaning. */
bool pol_smtpv_addr_ok(const char *s, size_t len);

/* The OPENPGPKEY owner name (the intended behaviour, spec 16 #9): the hex SHA2-224 of the
 * local part as written, then "._openpgpkey.", then the domain. Returns the length written
 * to out (NUL-terminated) or 0 when out_cap is too small. */
size_t pol_smtpv_openpgp_name(const char *local, size_t local_len, const char *domain,
                              size_t domain_len, char *out, size_t out_cap);

/* ---------------------------------------------------------------------------------------------
 * The connection (smtpverify_io.c), on the request's shard
 */

struct eng_dns;
struct pol_smtpv_shard; /* per plugin and shard: limits, counters, closed sockets */

struct pol_smtpv_limits {
    uint32_t connections_max; /* dialogues at once per shard */
    uint32_t timeout_ms;      /* connect, and each reply */
    uint32_t reply_bytes_max;
};

/* On sh at shard start: the per-shard state, holding dns (the shard's client, attached by the
 * caller) for pol_smtpv_shard_dns. Returns 0 or -ENOMEM. */
int pol_smtpv_shard_create(const struct pol_plugin *p, struct eng_shard *sh,
                           const struct pol_smtpv_limits *lim, struct eng_dns *dns,
                           struct pol_smtpv_shard **out);
struct eng_dns *pol_smtpv_shard_dns(const struct pol_smtpv_shard *ss);
/* At shard stop: ends every running dialogue with -ECANCELED (its request resumes), logs the
 * counters, closes the graveyard's sockets. NULL is a no-op. */
void pol_smtpv_shard_destroy(struct pol_smtpv_shard *ss);

/* One dialogue, in the plugin's req_state. */
struct pol_smtpv_conn {
    struct pol_smtpv_conn *next, *prev; /* the shard's running dialogues */
    struct pol_smtpv_shard *ss;
    struct pol_req *r;
    int fd;
    bool polled, connected, finished;
    struct eng_poll poll;
    struct eng_timer timer;
    uint64_t deadline_ms; /* the request's deadline (eng_now_ms), UINT64_MAX: none */
    char *in;             /* its slot's read buffer (reply_bytes_max), NULL: no slot */
    size_t in_len;
    char *out; /* the command being sent, request arena */
    size_t out_len, out_sent, out_cap;
    char *text; /* the verdict's reply text, request arena; NULL: none */
    size_t text_len;
    struct pol_smtpv_dialog dlg;
    int status; /* 0: the dialogue ended (see dlg), or -ETIMEDOUT, -ECONNREFUSED..., -EMSGSIZE
                   (a reply over reply_bytes_max), -EPROTO (malformed reply), -ECONNRESET
                   (closed early), -EBUSY (connections_max reached), -ENOMEM (arena),
                   -ECANCELED (the shard stopped) */
};

/* Starts the dialogue d (copied) with addr. Returns POL_WAIT: the request resumes when it is
 * over (c->finished; c->status and c->dlg tell how), never inside this call; or POL_FAIL when
 * the request arena is full. */
enum pol_step pol_smtpv_conn_start(struct pol_smtpv_conn *c, struct pol_smtpv_shard *ss,
                                   struct pol_req *r, const struct sockaddr *addr,
                                   socklen_t addr_len, const struct pol_smtpv_dialog *d);

/* A sentence for a failed dialogue's status. */
const char *pol_smtpv_strerror(int status);

/* Counts one finished check's verdict (for the metrics). */
void pol_smtpv_count_verdict(struct pol_smtpv_shard *ss, unsigned code);

#ifdef __cplusplus
}
#endif

#endif
