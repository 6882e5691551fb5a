/*
 * gen.c: the synthetic maillog writer (see gen.h for the two mixes).
 *
 * A splitmix64 generator drives every choice, so a seed reproduces a log byte for byte. Queue
 * ids are a bijection of the mail counter (times an odd constant modulo 2^40, in hex), so they
 * never repeat within a log. All names use the reserved example domains and 192.0.2.0/24-like
 * documentation ranges where a network is implied; the big client pool is spread over all of
 * IPv4 (it is only text in a log).
 */
#include "gen.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "bench_assert.h"

struct gen {
    FILE *out;
    const struct rpl_gen_opts *o;
    uint64_t rng;
    uint64_t mail_count;
    int64_t t_us; /* time of the next line */
    uint32_t pid;
    const char *tag; /* "postfix/smtpd" or "postfix/submission/smtpd" */
};

static uint64_t next(struct gen *g)
{
    uint64_t z = (g->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t below(struct gen *g, uint32_t n)
{
    BENCH_ASSERT(n > 0);
    return (uint32_t)(next(g) % n);
}

static double unit(struct gen *g)
{
    return (double)(next(g) >> 11) * (1.0 / 9007199254740992.0);
}

/* Writes the timestamp and host of a line at g->t_us, then moves time on by 1-4 ms. */
static void stamp(struct gen *g)
{
    time_t sec = (time_t)(g->t_us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char buf[64];
    if (g->o->rfc3339) {
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(g->out, "%s.%06u+00:00 mx ", buf, (unsigned)(g->t_us % 1000000));
    } else {
        strftime(buf, sizeof(buf), "%b %e %H:%M:%S", &tm);
        fprintf(g->out, "%s mx ", buf);
    }
    g->t_us += 1000 + below(g, 3000);
}

static void smtpd(struct gen *g, const char *fmt_line)
{
    stamp(g);
    fprintf(g->out, "%s[%u]: %s\n", g->tag, g->pid, fmt_line);
}

static void daemon_line(struct gen *g, const char *daemon, uint32_t pid, const char *line)
{
    stamp(g);
    fprintf(g->out, "postfix/%s[%u]: %s\n", daemon, pid, line);
}

struct client {
    char name[96];
    char addr[48];
    char helo[96];
};

static void client_inbound(struct gen *g, struct client *c)
{
    if (unit(g) < 0.3) { /* a busy legitimate sender */
        uint32_t n = below(g, 20);
        snprintf(c->name, sizeof(c->name), "mail-out%u.sender%u.example", n % 4, n);
        snprintf(c->addr, sizeof(c->addr), "198.51.100.%u", 10 + n);
        snprintf(c->helo, sizeof(c->helo), "%s", c->name);
        return;
    }
    uint32_t ip = (uint32_t)next(g);
    snprintf(c->addr, sizeof(c->addr), "%u.%u.%u.%u", 1 + (ip >> 24) % 223, (ip >> 16) & 255,
             (ip >> 8) & 255, 1 + (ip & 255) % 254);
    if (unit(g) < 0.6)
        snprintf(c->name, sizeof(c->name), "unknown");
    else
        snprintf(c->name, sizeof(c->name), "host-%u.isp%u.example", ip & 0xffff, ip % 37);
    if (unit(g) < 0.5)
        snprintf(c->helo, sizeof(c->helo), "%s", strcmp(c->name, "unknown") ? c->name : "localhost");
    else
        snprintf(c->helo, sizeof(c->helo), "[%s]", c->addr);
}

static void queue_id(struct gen *g, char *out, size_t len)
{
    uint64_t id = (++g->mail_count * 0x9E3779B1ull + g->o->seed) & 0xFFFFFFFFFFull;
    snprintf(out, len, "%010" PRIX64, id);
}

static const char *const reject_texts[] = {
    "554 5.7.1 Service unavailable; Client host [%s] blocked using zen.spamhaus.org; "
    "https://www.spamhaus.org/query/ip/%s",
    "550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table",
    "450 4.2.0 <%s>: Recipient address rejected: Greylisted, see https://postgrey.example/",
};

static void reject_line(struct gen *g, const struct client *c, const char *sender,
                        const char *rcpt, unsigned kind)
{
    char why[256], line[768];
    if (kind == 0)
        snprintf(why, sizeof(why), reject_texts[0], c->addr, c->addr);
    else
        snprintf(why, sizeof(why), reject_texts[kind], rcpt);
    snprintf(line, sizeof(line),
             "NOQUEUE: reject: RCPT from %s[%s]: %s; from=<%s> to=<%s> proto=ESMTP helo=<%s>",
             c->name, c->addr, why, sender, rcpt, c->helo);
    smtpd(g, line);
}

/* The lines of one accepted mail from the client= line to qmgr's removed. */
static void accepted_mail(struct gen *g, const struct client *c, const char *sasl,
                          const char *sender, char rcpts[][96], const char origs[][96],
                          unsigned n, const char *agent)
{
    char qid[16], line[768];
    queue_id(g, qid, sizeof(qid));
    snprintf(line, sizeof(line), "%s: client=%s[%s]%s", qid, c->name, c->addr, sasl);
    smtpd(g, line);
    snprintf(line, sizeof(line), "%s: message-id=<%" PRIu64 ".%s@%s>", qid, g->mail_count, qid,
             c->helo[0] == '[' ? "localhost" : c->helo);
    daemon_line(g, "cleanup", 3000 + g->pid % 7, line);
    snprintf(line, sizeof(line), "%s: from=<%s>, size=%u, nrcpt=%u (queue active)", qid, sender,
             800 + below(g, 60000), n);
    daemon_line(g, "qmgr", 999, line);
    for (unsigned i = 0; i < n; i++) {
        char orig[128] = "";
        if (origs != NULL && origs[i][0] != '\0')
            snprintf(orig, sizeof(orig), ", orig_to=<%s>", origs[i]);
        snprintf(line, sizeof(line),
                 "%s: to=<%s>%s, relay=%s, delay=0.%u, delays=0.01/0/0/0.%u, dsn=2.0.0, "
                 "status=sent (delivered)",
                 qid, rcpts[i], orig, strcmp(agent, "local") == 0 ? "local" : "mx.example.org[203.0.113.25]:25",
                 below(g, 9) + 1, below(g, 9));
        daemon_line(g, agent, 4000 + below(g, 5), line);
    }
    snprintf(line, sizeof(line), "%s: removed", qid);
    daemon_line(g, "qmgr", 999, line);
}

static void session_inbound(struct gen *g)
{
    struct client c;
    client_inbound(g, &c);
    char line[512], sender[96];
    snprintf(line, sizeof(line), "connect from %s[%s]", c.name, c.addr);
    smtpd(g, line);
    snprintf(sender, sizeof(sender), "bounce-%u@sender%u.example", below(g, 100000), below(g, 500));
    double r = unit(g);
    if (r < 0.05) {
        snprintf(line, sizeof(line), "lost connection after CONNECT from %s[%s]", c.name, c.addr);
        smtpd(g, line);
    } else if (r < 0.50) {
        unsigned kind = below(g, 3), n = 1 + below(g, 3);
        for (unsigned i = 0; i < n; i++) {
            char rcpt[96];
            snprintf(rcpt, sizeof(rcpt), "user%u@mx.example.net", below(g, 400));
            reject_line(g, &c, sender, rcpt, kind);
        }
    } else {
        if (unit(g) < 0.15) {
            char bad[96];
            snprintf(bad, sizeof(bad), "nobody%u@mx.example.net", below(g, 1000));
            reject_line(g, &c, sender, bad, 1);
        }
        unsigned n = 1 + below(g, 3);
        char rcpts[3][96], origs[3][96];
        for (unsigned i = 0; i < n; i++) {
            snprintf(rcpts[i], sizeof(rcpts[i]), "user%u@mx.example.net", below(g, 200) + 3 * i);
            origs[i][0] = '\0';
            if (unit(g) < 0.1)
                snprintf(origs[i], sizeof(origs[i]), "info%u@mx.example.net", i);
        }
        accepted_mail(g, &c, "", sender, rcpts, (const char(*)[96])origs, n, "local");
    }
    snprintf(line, sizeof(line), "disconnect from %s[%s]", c.name, c.addr);
    smtpd(g, line);
}

static void session_submission(struct gen *g)
{
    struct client c;
    if (unit(g) < 0.4) {
        snprintf(c.name, sizeof(c.name), "localhost");
        snprintf(c.addr, sizeof(c.addr), "127.0.0.1");
    } else {
        uint32_t net = below(g, 5), host = 1 + below(g, 254);
        snprintf(c.name, sizeof(c.name), "client%u.dsl%u.example.org", host, net);
        snprintf(c.addr, sizeof(c.addr), "203.0.%u.%u", 113 + net, host);
    }
    snprintf(c.helo, sizeof(c.helo), "%s", c.name);
    char line[512];
    snprintf(line, sizeof(line), "connect from %s[%s]", c.name, c.addr);
    smtpd(g, line);
    const char *method = unit(g) < 0.7 ? "LOGIN" : "PLAIN";
    if (unit(g) < 0.05) {
        snprintf(line, sizeof(line), "warning: %s[%s]: SASL %s authentication failed: "
                 "authentication failure", c.name, c.addr, method);
        smtpd(g, line);
    } else {
        /* Skewed users: the product of two uniform picks favours small numbers. */
        uint32_t user = below(g, 500) * below(g, 500) / 500;
        char sasl[160], sender[96];
        snprintf(sender, sizeof(sender), "user%u@example.com", user);
        snprintf(sasl, sizeof(sasl), ", sasl_method=%s, sasl_username=%s", method, sender);
        unsigned n = 1 + below(g, 5);
        char rcpts[5][96];
        for (unsigned i = 0; i < n; i++)
            snprintf(rcpts[i], sizeof(rcpts[i]), "contact%u@ext%u.example", below(g, 5000),
                     below(g, 300));
        accepted_mail(g, &c, sasl, sender, rcpts, NULL, n, "smtp");
    }
    snprintf(line, sizeof(line), "disconnect from %s[%s]", c.name, c.addr);
    smtpd(g, line);
}

void rpl_gen_defaults(struct rpl_gen_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->mix = RPL_GEN_INBOUND;
    o->sessions = 1000;
    o->seed = 1;
    o->start_sec = 1795478400; /* 2026-11-24T00:00:00Z */
    o->rate = 5.0;
}

int rpl_gen_mix_parse(const char *s, enum rpl_gen_mix *out)
{
    if (strcmp(s, "inbound") == 0)
        *out = RPL_GEN_INBOUND;
    else if (strcmp(s, "submission") == 0)
        *out = RPL_GEN_SUBMISSION;
    else
        return -1;
    return 0;
}

int rpl_gen_write(FILE *out, const struct rpl_gen_opts *o)
{
    BENCH_ASSERT(o->rate > 0);
    struct gen g = {.out = out, .o = o, .rng = o->seed};
    bool inbound = o->mix == RPL_GEN_INBOUND;
    uint32_t pids = o->pids ? o->pids : (inbound ? 50u : 20u);
    uint32_t pid_base = inbound ? 10000u : 20000u;
    g.tag = inbound ? "postfix/smtpd" : "postfix/submission/smtpd";
    int64_t start_us = o->start_sec * 1000000;
    double t = 0;
    for (uint64_t i = 0; i < o->sessions; i++) {
        g.t_us = start_us + (int64_t)t;
        g.pid = pid_base + below(&g, pids);
        if (inbound)
            session_inbound(&g);
        else
            session_submission(&g);
        /* Exponential inter-arrival times: a Poisson stream of sessions. */
        double u = unit(&g);
        t += -1e6 / o->rate * (u > 0 ? log(u) : -30.0);
        if (ferror(out))
            return -EIO;
    }
    return fflush(out) == 0 && !ferror(out) ? 0 : -EIO;
}
