/*
 * smtpverify_io.c: SMTPVerify's connection (smtpverify.h): one call-out dialogue on a
 * non-blocking TCP socket, driven by the shard's eng_poll and eng_timer. engine/stream.c does
 * not fit here: its endpoint is fixed at start-up (a call-out goes to whichever MX the DNS
 * names, per request), and its protocol is request-first, while an SMTP server speaks first
 * and the dialogue is five exchanges on one connection.
 *
 * Owns per plugin and shard (pol_smtpv_shard, shard start .. stop, on that shard) the limits,
 * the counters (also a /metrics source, ringpolicyd_smtpverify_*), one read buffer per
 * dialogue slot (connections_max of reply_bytes_max) and a graveyard of shut-down sockets; per
 * dialogue its socket, poll and timer (in the plugin's req_state), its command buffer and the
 * verdict's text (in the request arena). Each wait (connect, then each reply) is bounded by
 * timeout_ms and by the request's deadline, so a silent server costs one request its answer
 * (request_timeout's default action) and nothing else. The request resumes exactly once, from a
 * poll or timer callback, never inside pol_smtpv_conn_start.
 *
 * Why a graveyard: as in engine/stream.c, eng_poll_stop takes effect at the loop's flush, and
 * the epoll backend registers an fd number once; closing at once could hand the number to a
 * socket opened in the same turn. So a socket is shut down at once and close(2)d a turn later.
 * Writes are plain send(2) calls (a command is under a few hundred bytes).
 */
#include "plugins/smtpverify.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <eng/assert.h>
#include <eng/log.h>

#include "metrics.h"
#include "request.h"

enum {
    SV_CHECKS,
    SV_CONNECTS,
    SV_CONNECT_FAILURES,
    SV_TIMEOUTS,
    SV_REPLY_TOO_LONG,
    SV_PROTOCOL_ERRORS,
    SV_RESETS,
    SV_BUSY,
    SV_ACCEPTED,
    SV_TEMP_FAILS,
    SV_PERM_FAILS,
    SV_NO_VERDICT,
    SV_OPEN,
    SV_COUNT
};

static const struct pol_metrics_field sv_fields[SV_COUNT] = {
    [SV_CHECKS] = {"ringpolicyd_smtpverify_dialogues_total",
                   "SMTP call-out dialogues SMTPVerify started.", false, false},
    [SV_CONNECTS] = {"ringpolicyd_smtpverify_connects_total",
                     "Connections SMTPVerify opened to mail servers.", false, false},
    [SV_CONNECT_FAILURES] = {"ringpolicyd_smtpverify_connect_failures_total",
                             "Connections SMTPVerify failed to open.", false, false},
    [SV_TIMEOUTS] = {"ringpolicyd_smtpverify_timeouts_total",
                     "SMTPVerify connects or replies that took longer than allowed.", false, false},
    [SV_REPLY_TOO_LONG] = {"ringpolicyd_smtpverify_reply_too_long_total",
                           "SMTP replies longer than reply_bytes_max.", false, false},
    [SV_PROTOCOL_ERRORS] = {"ringpolicyd_smtpverify_protocol_errors_total",
                            "Malformed SMTP replies.", false, false},
    [SV_RESETS] = {"ringpolicyd_smtpverify_resets_total",
                   "Connections closed by the server before the dialogue ended.", false, false},
    [SV_BUSY] = {"ringpolicyd_smtpverify_busy_total",
                 "Checks refused because connections_max dialogues were running.", false, false},
    [SV_ACCEPTED] = {"ringpolicyd_smtpverify_accepted_total",
                     "Addresses the server accepted (2xx).", false, false},
    [SV_TEMP_FAILS] = {"ringpolicyd_smtpverify_temp_fails_total",
                       "Addresses the server refused temporarily (4xx).", false, false},
    [SV_PERM_FAILS] = {"ringpolicyd_smtpverify_perm_fails_total",
                       "Addresses the server refused permanently (5xx).", false, false},
    [SV_NO_VERDICT] = {"ringpolicyd_smtpverify_no_verdict_total",
                       "Checks that ended without a reply code for the address.", false, false},
    [SV_OPEN] = {"ringpolicyd_smtpverify_connections_open", "SMTPVerify dialogues running now.",
                 true, false},
};
static const struct pol_metrics_source_desc sv_metrics = {"plugin", sv_fields, SV_COUNT};

struct grave {
    int fd;
    uint64_t turn;
};

struct pol_smtpv_shard {
    struct eng_shard *sh;
    const struct pol_plugin *p;
    struct pol_smtpv_limits lim;
    struct eng_dns *dns;
    uint64_t st[SV_COUNT]; /* SV_OPEN: dialogues holding a slot */
    /* Read buffers, one per slot: connections_max * reply_bytes_max bytes, allocated at shard
     * start (the request arena is too small to hold them: a request has a few KiB). */
    char *bufs;
    uint32_t *free_slots; /* a stack of free slot indexes */
    uint32_t free_count;
    char *scratch; /* reply_bytes_max + 1: the text of the reply being handled (one at a time:
                      process() runs to its end on the shard's thread) */
    struct pol_smtpv_conn *active; /* dialogues started and not finished (intrusive list) */
    struct grave *graves;
    uint32_t grave_count, grave_max;
    struct eng_timer grave_timer;
};

static void sv_snap(void *ctx, uint64_t *v)
{
    const struct pol_smtpv_shard *ss = ctx;
    memcpy(v, ss->st, sizeof(ss->st));
}

/* ---------------------------------------------------------------------------------------------
 * Closing sockets: the graveyard
 */

static void grave_reap(struct pol_smtpv_shard *ss, bool all)
{
    uint64_t turn = eng_shard_stats(ss->sh)->turns;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < ss->grave_count; i++) {
        if (all || ss->graves[i].turn != turn)
            close(ss->graves[i].fd);
        else
            ss->graves[kept++] = ss->graves[i];
    }
    ss->grave_count = kept;
    if (kept > 0 && !all)
        eng_timer_arm(ss->sh, &ss->grave_timer, 1);
}

static void grave_timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    grave_reap((struct pol_smtpv_shard *)(void *)((char *)t -
                                                  offsetof(struct pol_smtpv_shard, grave_timer)),
               false);
}

static void grave_add(struct pol_smtpv_shard *ss, int fd)
{
    if (ss->grave_count == ss->grave_max)
        grave_reap(ss, false);
    /* Each dialogue holding a slot closes its socket once, and the graveyard has room for two
     * per slot, so it cannot be full of this turn's sockets. */
    ENG_ASSERT(ss->grave_count < ss->grave_max);
    ss->graves[ss->grave_count].fd = fd;
    ss->graves[ss->grave_count].turn = eng_shard_stats(ss->sh)->turns;
    ss->grave_count++;
    if (!eng_timer_armed(&ss->grave_timer))
        eng_timer_arm(ss->sh, &ss->grave_timer, 1);
}

static void finish(struct pol_smtpv_conn *c, int status);

/* ---------------------------------------------------------------------------------------------
 * Per shard
 */

int pol_smtpv_shard_create(const struct pol_plugin *p, struct eng_shard *sh,
                           const struct pol_smtpv_limits *lim, struct eng_dns *dns,
                           struct pol_smtpv_shard **out)
{
    ENG_ASSERT(lim->connections_max > 0);
    struct pol_smtpv_shard *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return -ENOMEM;
    ss->grave_max = 2 * lim->connections_max;
    ss->graves = calloc(ss->grave_max, sizeof(*ss->graves));
    ss->bufs = malloc((size_t)lim->connections_max * lim->reply_bytes_max);
    ss->free_slots = calloc(lim->connections_max, sizeof(*ss->free_slots));
    ss->scratch = malloc((size_t)lim->reply_bytes_max + 1);
    if (!ss->graves || !ss->bufs || !ss->free_slots || !ss->scratch) {
        free(ss->graves);
        free(ss->bufs);
        free(ss->free_slots);
        free(ss->scratch);
        free(ss);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < lim->connections_max; i++)
        ss->free_slots[i] = lim->connections_max - 1 - i;
    ss->free_count = lim->connections_max;
    ss->sh = sh;
    ss->p = p;
    ss->lim = *lim;
    ss->dns = dns;
    eng_timer_init(&ss->grave_timer, grave_timer_fired);
    if (pol_metrics_source_add(&sv_metrics, pol_plugin_name(p), sv_snap, ss) != 0)
        eng_log(ENG_LOG_WARNING, "plugin %s: no room for its metrics on shard %u",
                pol_plugin_name(p), eng_shard_index(sh));
    *out = ss;
    return 0;
}

struct eng_dns *pol_smtpv_shard_dns(const struct pol_smtpv_shard *ss)
{
    return ss->dns;
}

void pol_smtpv_shard_destroy(struct pol_smtpv_shard *ss)
{
    if (!ss)
        return;
    pol_metrics_source_remove(ss);
    /* Dialogues still running end now (their requests resume and are released), as
     * eng_stream_destroy ends its requests with -ECANCELED. */
    while (ss->active)
        finish(ss->active, -ECANCELED);
    eng_log(ENG_LOG_INFO,
            "plugin %s: shard %u: %llu dialogues, %llu connects, %llu connect failures, "
            "%llu timeouts, %llu replies over reply_bytes_max, %llu malformed replies, "
            "%llu resets, %llu busy; %llu accepted, %llu temp fails, %llu perm fails, "
            "%llu without a verdict",
            pol_plugin_name(ss->p), eng_shard_index(ss->sh), (unsigned long long)ss->st[SV_CHECKS],
            (unsigned long long)ss->st[SV_CONNECTS],
            (unsigned long long)ss->st[SV_CONNECT_FAILURES],
            (unsigned long long)ss->st[SV_TIMEOUTS], (unsigned long long)ss->st[SV_REPLY_TOO_LONG],
            (unsigned long long)ss->st[SV_PROTOCOL_ERRORS], (unsigned long long)ss->st[SV_RESETS],
            (unsigned long long)ss->st[SV_BUSY], (unsigned long long)ss->st[SV_ACCEPTED],
            (unsigned long long)ss->st[SV_TEMP_FAILS], (unsigned long long)ss->st[SV_PERM_FAILS],
            (unsigned long long)ss->st[SV_NO_VERDICT]);
    eng_timer_cancel(ss->sh, &ss->grave_timer);
    grave_reap(ss, true);
    ENG_ASSERT(ss->free_count == ss->lim.connections_max); /* every dialogue finished */
    free(ss->graves);
    free(ss->bufs);
    free(ss->free_slots);
    free(ss->scratch);
    free(ss);
}

void pol_smtpv_count_verdict(struct pol_smtpv_shard *ss, unsigned code)
{
    switch (code / 100) {
    case 2:
        ss->st[SV_ACCEPTED]++;
        break;
    case 4:
        ss->st[SV_TEMP_FAILS]++;
        break;
    case 5:
        ss->st[SV_PERM_FAILS]++;
        break;
    default:
        ss->st[SV_NO_VERDICT]++;
        break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * One dialogue
 */

static struct pol_smtpv_conn *conn_of_timer(struct eng_timer *t)
{
    return (struct pol_smtpv_conn *)(void *)((char *)t - offsetof(struct pol_smtpv_conn, timer));
}

/* Ends the dialogue and resumes the request; c must not be touched afterwards. */
static void finish(struct pol_smtpv_conn *c, int status)
{
    ENG_ASSERT(!c->finished);
    struct pol_smtpv_shard *ss = c->ss;
    c->finished = true;
    c->status = status;
    if (c->prev)
        c->prev->next = c->next;
    else
        ss->active = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    eng_timer_cancel(ss->sh, &c->timer);
    if (c->polled) {
        eng_poll_stop(ss->sh, &c->poll);
        c->polled = false;
    }
    if (c->fd >= 0) {
        shutdown(c->fd, SHUT_RDWR);
        grave_add(ss, c->fd);
        c->fd = -1;
    }
    if (c->in) {
        ENG_ASSERT(ss->st[SV_OPEN] > 0);
        ENG_ASSERT(ss->free_count < ss->lim.connections_max);
        ss->st[SV_OPEN]--;
        ss->free_slots[ss->free_count++] = (uint32_t)((c->in - ss->bufs) / ss->lim.reply_bytes_max);
        c->in = NULL;
    }
    switch (status) {
    case 0:
    case -EBUSY:
    case -ENOMEM:
    case -ECANCELED:
        break;
    case -ETIMEDOUT:
        ss->st[SV_TIMEOUTS]++;
        break;
    case -EMSGSIZE:
        ss->st[SV_REPLY_TOO_LONG]++;
        pol_log_at(ENG_LOG_WARNING, ss->p, c->r,
                   "SMTP reply in %s longer than reply_bytes_max (%u): connection closed",
                   pol_smtpv_phase_name(c->dlg.phase), ss->lim.reply_bytes_max);
        break;
    case -EPROTO:
        ss->st[SV_PROTOCOL_ERRORS]++;
        break;
    case -ECONNRESET:
        ss->st[SV_RESETS]++;
        break;
    default:
        if (!c->connected)
            ss->st[SV_CONNECT_FAILURES]++;
        break;
    }
    pol_req_resume(c->r);
}

/* Arms the wait for the connect or the next reply: timeout_ms, but never past the request's
 * deadline (then it fires at once: the request was already answered by its default action). */
static void wait_arm(struct pol_smtpv_conn *c)
{
    uint64_t ms = c->ss->lim.timeout_ms;
    if (c->deadline_ms != UINT64_MAX) {
        uint64_t now = eng_now_ms(c->ss->sh);
        uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
        ms = left < ms ? left : ms;
    }
    eng_timer_arm(c->ss->sh, &c->timer, ms);
}

static void timer_fired(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct pol_smtpv_conn *c = conn_of_timer(t);
    /* A status set before the timer was armed for 0 ms is a deferred failure of the start. */
    finish(c, c->status != 0 ? c->status : -ETIMEDOUT);
}

/* Sends what is left of the command. Returns false when the dialogue ended (c is dead). */
static bool flush_out(struct pol_smtpv_conn *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            eng_poll_update(c->ss->sh, &c->poll, POLLIN | POLLOUT);
            return true;
        }
        if (n < 0) {
            finish(c, errno == EPIPE ? -ECONNRESET : -errno);
            return false;
        }
        c->out_sent += (size_t)n;
    }
    eng_poll_update(c->ss->sh, &c->poll, POLLIN);
    return true;
}

/* Handles every complete reply in the input. Returns false when the dialogue ended. */
static bool process(struct pol_smtpv_conn *c)
{
    uint32_t cap = c->ss->lim.reply_bytes_max;
    for (;;) {
        struct pol_smtpv_reply rep;
        char *scratch = c->ss->scratch;
        ssize_t rc = pol_smtpv_reply_parse(c->in, c->in_len, cap, &rep, scratch, cap + 1, NULL);
        if (rc == 0)
            return true;
        if (rc < 0) {
            finish(c, (int)rc);
            return false;
        }
        enum pol_smtpv_phase before = c->dlg.phase;
        size_t n = pol_smtpv_dialog_next(&c->dlg, &rep, c->out, c->out_cap);
        if (before == POL_SMTPV_MAIL || before == POL_SMTPV_RCPT || before == POL_SMTPV_GREETING ||
            before == POL_SMTPV_HELO) {
            /* The verdict's text, or the text of the reply that ended the dialogue, kept in the
             * request arena. */
            c->text = pol_req_strndup(c->r, scratch, rep.text_len);
            c->text_len = rep.text_len;
            if (!c->text) {
                finish(c, -ENOMEM);
                return false;
            }
        }
        memmove(c->in, c->in + rc, c->in_len - (size_t)rc);
        c->in_len -= (size_t)rc;
        if (n == 0) {
            finish(c, 0);
            return false;
        }
        c->out_len = n;
        c->out_sent = 0;
        wait_arm(c);
        if (!flush_out(c))
            return false;
    }
}

static void on_readable(struct pol_smtpv_conn *c)
{
    uint32_t cap = c->ss->lim.reply_bytes_max;
    ENG_ASSERT(c->in_len < cap);
    ssize_t n = recv(c->fd, c->in + c->in_len, cap - c->in_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* level-triggered: called again while data waits */
    if (n < 0) {
        finish(c, -errno);
        return;
    }
    if (n == 0) { /* a server may close after the verdict without answering QUIT */
        finish(c,
               c->dlg.phase == POL_SMTPV_QUIT || c->dlg.phase == POL_SMTPV_DONE ? 0 : -ECONNRESET);
        return;
    }
    c->in_len += (size_t)n;
    process(c);
}

static void on_connected(struct pol_smtpv_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        finish(c, -err);
        return;
    }
    c->connected = true;
    c->ss->st[SV_CONNECTS]++;
    eng_poll_update(c->ss->sh, &c->poll, POLLIN);
    wait_arm(c); /* for the greeting */
}

static void on_poll(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct pol_smtpv_conn *c =
        (struct pol_smtpv_conn *)(void *)((char *)p - offsetof(struct pol_smtpv_conn, poll));
    ENG_ASSERT(!c->finished);
    if (!c->connected) {
        if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))
            on_connected(c);
        return;
    }
    if ((revents & POLLOUT) && c->out_sent < c->out_len && !flush_out(c))
        return;
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
        on_readable(c);
}

/* Fails the start from the loop (the request must not resume inside its step). */
static enum pol_step fail_later(struct pol_smtpv_conn *c, int status)
{
    c->status = status;
    eng_timer_arm(c->ss->sh, &c->timer, 0);
    return POL_WAIT;
}

enum pol_step pol_smtpv_conn_start(struct pol_smtpv_conn *c, struct pol_smtpv_shard *ss,
                                   struct pol_req *r, const struct sockaddr *addr,
                                   socklen_t addr_len, const struct pol_smtpv_dialog *d)
{
    ENG_ASSERT(ss != NULL);
    ENG_ASSERT(eng_shard_self() == ss->sh);
    memset(c, 0, sizeof(*c));
    c->ss = ss;
    c->r = r;
    c->fd = -1;
    c->dlg = *d;
    eng_timer_init(&c->timer, timer_fired);
    c->next = ss->active;
    if (ss->active)
        ss->active->prev = c;
    ss->active = c;
    /* The request's deadline (policy/request.h): its timer is armed when request_timeout is
     * set; the plugin API has no call for it yet. */
    c->deadline_ms = eng_timer_armed(&r->deadline) ? r->deadline.expires_ms : UINT64_MAX;
    ss->st[SV_CHECKS]++;
    c->out_cap = pol_smtpv_dialog_out_bytes(&c->dlg);
    c->out = pol_req_alloc(r, c->out_cap);
    if (!c->out)
        return pol_req_fail(r, "no memory left in the request arena for the SMTP dialogue");
    if (ss->free_count == 0) {
        ss->st[SV_BUSY]++;
        return fail_later(c, -EBUSY);
    }
    c->in = ss->bufs + (size_t)ss->free_slots[--ss->free_count] * ss->lim.reply_bytes_max;
    ss->st[SV_OPEN]++;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail_later(c, -errno);
    c->fd = fd;
    int rc = connect(fd, addr, addr_len);
    if (rc != 0 && errno != EINPROGRESS)
        return fail_later(c, -errno);
    rc = eng_poll_start(ss->sh, &c->poll, fd, POLLOUT, on_poll);
    if (rc != 0)
        return fail_later(c, rc);
    c->polled = true;
    wait_arm(c); /* connect: timeout_ms (30 s by default, as 2.05) */
    return POL_WAIT;
}

const char *pol_smtpv_strerror(int status)
{
    switch (status) {
    case 0:
        return "ok";
    case -ETIMEDOUT:
        return "timed out";
    case -EMSGSIZE:
        return "reply longer than reply_bytes_max";
    case -EPROTO:
        return "malformed reply";
    case -ECONNRESET:
        return "connection closed by the server";
    case -EBUSY:
        return "too many dialogues running (connections_max)";
    case -ENOMEM:
        return "out of memory";
    default:
        return strerror(-status);
    }
}
