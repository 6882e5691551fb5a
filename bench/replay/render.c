/*
 * render.c: one corpus request in Postfix's wire form (see render.h for what is synthesized).
 *
 * Appends with memcpy into the caller's buffer; the only formatting calls are for numbers and
 * the copy's address. A request that does not fit returns 0 and leaves out undefined.
 */
#include "render.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench_assert.h"

struct out {
    char *p;
    size_t len, cap;
    bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->full || o->cap - o->len < n) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_lit(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_str(struct out *o, const struct rpl_corpus *c, struct rpl_str s)
{
    put(o, c->strs + s.off, s.len);
}

static void put_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

static void put_hex(struct out *o, uint64_t v, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[16];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = digits[v & 15u];
        v >>= 4;
    } while (v != 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

int64_t rpl_copy_span_us(const struct rpl_corpus *c)
{
    int64_t lo = c->t_first_us, hi = c->t_last_us;
    for (uint32_t i = 0; i < c->txn_count; i++) {
        int64_t t = c->txns[i].t_start_us;
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    /* Whole seconds, so a copy's instance keeps the microsecond field of the original. */
    return ((hi - lo) / 1000000 + 1) * 1000000;
}

size_t rpl_copy_addr(const char *addr, size_t len, uint32_t copy, char *out, size_t cap)
{
    char tmp[64];
    if (copy != 0 && len < sizeof(tmp)) {
        memcpy(tmp, addr, len);
        tmp[len] = '\0';
        unsigned char b[16];
        if (inet_pton(AF_INET, tmp, b) == 1) {
            /* Stay in the same /8 (loopback stays loopback, 10/8 stays private); the odd step
             * makes copies 1..2^24-1 of one address all different. */
            uint32_t low = ((uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
            low = (low + copy * 0x9E3779u) & 0xFFFFFFu;
            int n = snprintf(out, cap, "%u.%u.%u.%u", b[0], low >> 16, (low >> 8) & 255u,
                             low & 255u);
            return n > 0 && (size_t)n < cap ? (size_t)n : 0;
        }
        if (inet_pton(AF_INET6, tmp, b) == 1) {
            uint32_t low;
            memcpy(&low, b + 12, 4);
            low = htonl(ntohl(low) + copy);
            memcpy(b + 12, &low, 4);
            if (inet_ntop(AF_INET6, b, out, (socklen_t)cap) == NULL)
                return 0;
            return strlen(out);
        }
    }
    if (len + 1 > cap)
        return 0;
    memcpy(out, addr, len);
    out[len] = '\0';
    return len;
}

static uint32_t default_server_port(const struct rpl_corpus *c, const struct rpl_proc *p)
{
    const char *name = rpl_str_ptr(c, p->syslog_name);
    const char *slash = strrchr(name, '/');
    const char *service = slash != NULL ? slash + 1 : "";
    if (strcmp(service, "submission") == 0)
        return 587;
    if (strcmp(service, "smtps") == 0 || strcmp(service, "submissions") == 0)
        return 465;
    return 25;
}

static void put_client(struct out *o, const struct rpl_corpus *c, const struct rpl_conn *cn,
                       uint32_t copy, const struct rpl_render_opts *opt)
{
    char addr[64];
    size_t alen = rpl_copy_addr(rpl_str_ptr(c, cn->client_addr), cn->client_addr.len, copy,
                                addr, sizeof(addr));
    if (alen == 0 && cn->client_addr.len > 0)
        o->full = true;
    put_lit(o, "client_address=");
    put(o, addr, alen);
    put_lit(o, "\nclient_name=");
    put_str(o, c, cn->client_name);
    /* A plausible ephemeral port, fixed per connection and copy. */
    put_lit(o, "\nclient_port=");
    put_u64(o, 32768u + ((uint64_t)(cn - c->conns) * 2654435761u + copy * 40503u) % 28232u);
    put_lit(o, "\nreverse_client_name=");
    put_str(o, c, cn->reverse_name);
    put_lit(o, "\nserver_address=");
    put_lit(o, opt->server_address != NULL ? opt->server_address : "127.0.0.1");
    put_lit(o, "\nserver_port=");
    put_u64(o, opt->server_port != 0 ? opt->server_port
                                     : default_server_port(c, &c->procs[cn->proc_idx]));
    put_lit(o, "\nhelo_name=");
    if (cn->helo.len > 0) {
        put_str(o, c, cn->helo);
    } else if (cn->client_name.len > 0 && strcmp(rpl_str_ptr(c, cn->client_name), "unknown")) {
        put_str(o, c, cn->client_name);
    } else {
        put_lit(o, "[");
        put(o, addr, alen);
        put_lit(o, "]");
    }
    put_lit(o, "\n");
}

static void put_queue_id(struct out *o, const struct rpl_corpus *c, const struct rpl_txn *x,
                         uint32_t copy)
{
    put_lit(o, "queue_id=");
    if (x->queue_id.len > 0) {
        put_str(o, c, x->queue_id);
        if (copy != 0) {
            put_lit(o, "Z");
            put_hex(o, copy, true);
        }
    }
    put_lit(o, "\n");
}

static void put_instance(struct out *o, const struct rpl_corpus *c, const struct rpl_txn *x,
                         uint32_t copy, const struct rpl_render_opts *opt)
{
    /* smtpd.c: "%x.%lx.%lx.%x" of pid, arrival seconds, microseconds, transaction number. */
    int64_t t = x->t_start_us + (int64_t)copy * opt->copy_span_us;
    uint64_t sec = t >= 0 ? (uint64_t)(t / 1000000) : 0;
    uint64_t usec = t >= 0 ? (uint64_t)(t % 1000000) : 0;
    const struct rpl_conn *cn = &c->conns[x->conn_idx];
    put_lit(o, "instance=");
    put_hex(o, c->procs[cn->proc_idx].pid, false);
    put_lit(o, ".");
    put_hex(o, sec, false);
    put_lit(o, ".");
    put_hex(o, usec, false);
    put_lit(o, ".");
    put_hex(o, x->seq, false);
    put_lit(o, "\n");
}

size_t rpl_render(const struct rpl_corpus *c, const struct rpl_req *r, uint32_t copy,
                  const struct rpl_render_opts *opt, char *buf, size_t cap)
{
    BENCH_ASSERT(r->txn_idx < c->txn_count);
    BENCH_ASSERT(r->stage < RPL_STAGE_COUNT);
    const struct rpl_txn *x = &c->txns[r->txn_idx];
    const struct rpl_conn *cn = &c->conns[x->conn_idx];
    const struct rpl_rcpt *rc = NULL;
    if (r->stage == RPL_STAGE_RCPT) {
        BENCH_ASSERT(r->rcpt_idx < x->rcpt_count);
        rc = &c->rcpts[x->rcpt_first + r->rcpt_idx];
    }
    struct out o = {buf, 0, cap, false};
    put_lit(&o, "request=smtpd_access_policy\nprotocol_state=");
    put_lit(&o, rpl_stage_name((enum rpl_stage)r->stage));
    put_lit(&o, "\nprotocol_name=");
    put_lit(&o, cn->proto.len > 0 ? rpl_str_ptr(c, cn->proto) : "ESMTP");
    put_lit(&o, "\n");
    put_client(&o, c, cn, copy, opt);
    put_lit(&o, "sender=");
    put_str(&o, c, x->sender);
    put_lit(&o, "\nrecipient=");
    uint32_t count = x->accepted_count > 0 ? x->accepted_count : x->nrcpt;
    if (rc != NULL)
        put_str(&o, c, rc->addr);
    else if (x->accepted_count == 1) /* DATA and END-OF-MESSAGE name a single recipient */
        put_str(&o, c, c->rcpts[x->rcpt_first + x->first_accepted_idx].addr);
    put_lit(&o, "\nrecipient_count=");
    put_u64(&o, rc != NULL ? 0 : count);
    put_lit(&o, "\n");
    /* The queue file exists once the first recipient was accepted: the requests up to and
     * including that one carry an empty queue_id. */
    bool before_queue = rc != NULL && (rc->group == 0 || (rc->group == 1 &&
                                                           r->rcpt_idx == x->first_accepted_idx));
    if (before_queue)
        put_lit(&o, "queue_id=\n");
    else
        put_queue_id(&o, c, x, copy);
    put_instance(&o, c, x, copy, opt);
    put_lit(&o, "size=");
    put_u64(&o, r->stage == RPL_STAGE_EOM ? x->size : 0);
    put_lit(&o, "\netrn_domain=\nstress=\nsasl_method=");
    put_str(&o, c, x->sasl_method);
    put_lit(&o, "\nsasl_username=");
    put_str(&o, c, x->sasl_username);
    put_lit(&o, "\nsasl_sender=");
    put_str(&o, c, x->sasl_sender);
    put_lit(&o, "\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n"
                "ccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\n"
                "encryption_keysize=0\npolicy_context=");
    if (opt->policy_context != NULL)
        put_lit(&o, opt->policy_context);
    put_lit(&o, "\n\n");
    return o.full ? 0 : o.len;
}
