/*
 * dns.c: the DNS stub resolver of one shard (eng/dns.h): a c-ares 1.18 channel driven by the
 * shard's loop, with in-flight de-duplication and a TTL-honouring answer cache in front of it.
 *
 * How a query travels: eng_dns_query only checks and queues the caller's op and arms a
 * zero-delay timer, so done never runs inside the call. The timer's flush takes each queued op
 * to the cache (hit: done now, from the loop), else to the query already in flight for the
 * same (type, name) (joined as a waiter), else starts a c-ares query in a free in-flight slot
 * (or leaves the op queued until a slot frees). When c-ares calls back, the message is parsed
 * (dns_msg.c), cached if it is an answer with a TTL, and every waiter's done runs.
 *
 * Owns: the c-ares channel and, through it, its sockets (polled with eng_poll from the
 * socket-state callback, in a table of socks_max slots) and its retransmission timer; the
 * in-flight slots; the cache (entries, a hash index, an LRU list and fixed 64-byte chunks
 * holding each entry's name and answer message). All of it is allocated in eng_dns_create;
 * after that only c-ares allocates (for each query it sends, which a cache hit avoids).
 *
 * Threads: one shard (asserted). Callbacks from c-ares (socket state, query done) run inside
 * ares_query (ares_send for TLSA/OPENPGPKEY), ares_process_fd and ares_destroy, all called from
 * this file on the shard; the callers' dones run from those or from the flush, never from
 * eng_dns_query.
 *
 * Failure: every query ends in exactly one done. Errors are never cached; c-ares' own timeouts
 * bound every query. Known limits: the cache is per shard (a name asked on two shards is sent
 * twice); c-ares 1.18 re-reads nothing after start-up (a changed resolv.conf needs a restart).
 */
#include "eng/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include "eng/assert.h"

/* ---------------------------------------------------------------------------------------------
 * Constants and types
 */

#define NIL UINT32_MAX
#define CHUNK_BYTES 64u
#define SERVERS_CSV_MAX 1024u
/* Limits on the configuration itself (not on traffic). */
#define OPS_MAX_LIMIT (1u << 24)
#define INFLIGHT_MAX_LIMIT (1u << 16)
#define CACHE_ENTRIES_LIMIT (1u << 24)
#define SOCKS_MAX_LIMIT 1024u

enum op_state {
    OP_IDLE = 0,
    OP_QUEUED = 0x51u,  /* on the client's queue */
    OP_WAITING = 0x57u, /* a waiter of an in-flight query */
};

/* An op flagged BADNAME carries no name; it is answered from the flush without a query. */
#define OP_NAME_BAD UINT16_MAX

/* A query handed to c-ares, shared by every op asking the same (type, name). */
struct dq {
    struct eng_dns *d;
    uint64_t hash;
    uint32_t hnext; /* hash chain, or free list */
    uint32_t idx;
    bool used;
    uint16_t qtype;
    uint16_t name_len;
    struct eng_dns_op *head, *tail; /* waiters */
    char name[ENG_DNS_NAME_BYTES_MAX + 1];
};

/* A cached answer: its key (name) then its message, in a chain of chunks. */
struct cent {
    uint64_t hash;
    uint64_t expires_ms;
    uint32_t hnext; /* hash chain, or free list */
    uint32_t lru_prev, lru_next;
    uint32_t chunk; /* first chunk */
    uint32_t chunk_count;
    uint32_t msg_len;
    uint16_t qtype;
    uint16_t key_len;
};

struct dsock {
    struct eng_poll poll;
    struct eng_dns *d;
    int fd; /* -1: free */
};

struct eng_dns {
    struct eng_shard *sh;
    struct eng_dns_config cfg;
    char servers[SERVERS_CSV_MAX];
    ares_channel ch;
    bool ch_ok;
    bool stopping;
    uint64_t seed;
    struct eng_timer flush_timer; /* zero delay: the queue has work */
    struct eng_timer ares_timer;  /* c-ares' next retransmission or timeout */

    struct eng_dns_op *q_head, *q_tail; /* queued ops */
    uint32_t q_count;
    uint32_t ops_count; /* queued + waiting */

    struct dq *dqs;
    uint32_t *dq_buckets; /* index + 1 chains */
    uint32_t dq_mask;
    uint32_t dq_free;

    struct cent *ents;
    uint32_t *ent_buckets;
    uint32_t ent_mask;
    uint32_t ent_free;
    uint32_t lru_head, lru_tail; /* most / least recently used */
    unsigned char *chunks;
    uint32_t *chunk_next;
    uint32_t chunk_count, chunk_free, chunks_free_count;

    struct dsock *socks;
    int *grave; /* sockets c-ares closed, closed by us one loop turn later (on_grave) */
    uint32_t grave_count;
    struct eng_timer grave_timer;

    unsigned char *msg_buf; /* a cached message, contiguous for parsing */
    struct eng_dns_parse_buf pbuf;
    char qname[ENG_DNS_NAME_BYTES_MAX + 1]; /* answer.qname during a delivery */
    struct eng_dns_stats st;
};

static const char *const status_names[ENG_DNS_STATUS_COUNT] = {
    "OK", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT", "BADNAME", "ERROR", "CANCELLED",
};

const char *eng_dns_status_name(enum eng_dns_status st)
{
    return (unsigned)st < ENG_DNS_STATUS_COUNT ? status_names[st] : "?";
}

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

void eng_dns_config_defaults(struct eng_dns_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->timeout_ms = 2000;
    cfg->tries = 2;
    cfg->ops_max = 8192;
    cfg->inflight_max = 1024;
    cfg->cache_entries_max = 8192;
    cfg->cache_bytes_max = 4u << 20;
    cfg->cache_answer_bytes_max = 4096;
    cfg->ttl_max_s = 86400;
    cfg->neg_ttl_s = 60;
    cfg->socks_max = 16;
}

/* A port: decimal 1..65535. */
static bool port_ok(const char *s, size_t len)
{
    if (len == 0 || len > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

static bool addr_ok(int af, const char *s, size_t len)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char bin[sizeof(struct in6_addr)];
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(af, tmp, bin) == 1;
}

/* One element: IPv4[:PORT], IPv6, [IPv6] or [IPv6]:PORT. */
static bool server_ok(const char *s, size_t len)
{
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return false;
        size_t alen = (size_t)(close - s) - 1, rest = len - alen - 2;
        if (!addr_ok(AF_INET6, s + 1, alen))
            return false;
        return rest == 0 || (close[1] == ':' && port_ok(close + 2, rest - 1));
    }
    const char *colon = memchr(s, ':', len);
    if (colon && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1))
        return addr_ok(AF_INET6, s, len);
    if (!colon)
        return addr_ok(AF_INET, s, len);
    return addr_ok(AF_INET, s, (size_t)(colon - s)) &&
           port_ok(colon + 1, len - (size_t)(colon - s) - 1);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Checks the list and writes it without blanks, as c-ares wants it. 0 or -EINVAL. */
static int servers_normalize(const char *in, char *out, size_t out_len, char *err, size_t err_len)
{
    size_t n = 0;
    const char *p = in;
    for (;;) {
        while (blank(*p))
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && blank(end[-1]))
            end--;
        size_t len = (size_t)(end - start);
        if (!server_ok(start, len)) {
            snprintf(err, err_len,
                     "bad DNS server '%.*s' (expected IPv4[:PORT], IPv6 or [IPv6]:PORT)",
                     (int)(len > 64 ? 64 : len), start);
            return -EINVAL;
        }
        if (n + len + 2 > out_len) {
            snprintf(err, err_len, "the DNS server list is longer than %zu bytes", out_len - 1);
            return -EINVAL;
        }
        if (n > 0)
            out[n++] = ',';
        memcpy(out + n, start, len);
        n += len;
        if (*p != ',')
            break;
        p++;
    }
    out[n] = '\0';
    return 0;
}

int eng_dns_servers_check(const char *servers, char *err, size_t err_len)
{
    char csv[SERVERS_CSV_MAX];
    if (servers == NULL || servers[0] == '\0')
        return 0;
    return servers_normalize(servers, csv, sizeof(csv), err, err_len);
}

static int config_check(const struct eng_dns_config *c, char *err, size_t err_len)
{
    const char *bad = NULL;
    if (c->timeout_ms < 1 || c->timeout_ms > 600000)
        bad = "timeout_ms must be 1..600000";
    else if (c->tries < 1 || c->tries > 16)
        bad = "tries must be 1..16";
    else if (c->ops_max < 1 || c->ops_max > OPS_MAX_LIMIT)
        bad = "ops_max must be 1..16777216";
    else if (c->inflight_max < 1 || c->inflight_max > INFLIGHT_MAX_LIMIT)
        bad = "inflight_max must be 1..65536";
    else if (c->cache_entries_max > CACHE_ENTRIES_LIMIT)
        bad = "cache_entries_max must be at most 16777216";
    else if (c->cache_entries_max > 0 && c->cache_bytes_max / CHUNK_BYTES < 8)
        bad = "cache_bytes_max must be at least 512 when the cache is on";
    else if (c->cache_answer_bytes_max < 12 || c->cache_answer_bytes_max > 65535)
        bad = "cache_answer_bytes_max must be 12..65535";
    else if (c->socks_max < 1 || c->socks_max > SOCKS_MAX_LIMIT)
        bad = "socks_max must be 1..1024";
    if (bad) {
        snprintf(err, err_len, "DNS client: %s", bad);
        return -EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Keys: a name is compared lower-cased without its trailing dot, together with its type.
 */

static uint64_t key_hash(const struct eng_dns *d, uint16_t qtype, const char *name, size_t len)
{
    return XXH3_64bits_withSeed(name, len, d->seed ^ ((uint64_t)qtype * 0x9E3779B97F4A7C15ull));
}

/* Copies name lower-cased into out without one unescaped trailing dot. Returns the length, or
 * OP_NAME_BAD when it is too long or holds a NUL byte. */
static uint16_t name_normalize(const char *name, size_t len, char *out)
{
    if (len > 1 && name[len - 1] == '.') {
        size_t bs = 0; /* backslashes right before the dot: odd means the dot is escaped */
        while (bs + 1 < len && name[len - 2 - bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            len--;
    }
    if (len > ENG_DNS_NAME_BYTES_MAX || memchr(name, '\0', len))
        return OP_NAME_BAD;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[len] = '\0';
    return (uint16_t)len;
}

/* ---------------------------------------------------------------------------------------------
 * Cache
 */

static void lru_unlink(struct eng_dns *d, uint32_t i)
{
    struct cent *e = &d->ents[i];
    if (e->lru_prev != NIL)
        d->ents[e->lru_prev].lru_next = e->lru_next;
    else
        d->lru_head = e->lru_next;
    if (e->lru_next != NIL)
        d->ents[e->lru_next].lru_prev = e->lru_prev;
    else
        d->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NIL;
}

static void lru_push_front(struct eng_dns *d, uint32_t i)
{
    struct cent *e = &d->ents[i];
    e->lru_prev = NIL;
    e->lru_next = d->lru_head;
    if (d->lru_head != NIL)
        d->ents[d->lru_head].lru_prev = i;
    d->lru_head = i;
    if (d->lru_tail == NIL)
        d->lru_tail = i;
}

/* Removes entry i from the index and the LRU list and frees its chunks. */
static void cache_remove(struct eng_dns *d, uint32_t i)
{
    struct cent *e = &d->ents[i];
    uint32_t *link = &d->ent_buckets[e->hash & d->ent_mask];
    while (*link != i + 1) {
        ENG_ASSERT(*link != 0);
        link = &d->ents[*link - 1].hnext;
    }
    *link = e->hnext;
    lru_unlink(d, i);
    uint32_t c = e->chunk;
    for (uint32_t k = 0; k < e->chunk_count; k++) {
        uint32_t next = d->chunk_next[c];
        d->chunk_next[c] = d->chunk_free;
        d->chunk_free = c;
        c = next;
    }
    d->chunks_free_count += e->chunk_count;
    d->st.cache_bytes -= (uint64_t)e->key_len + e->msg_len;
    d->st.cache_entries--;
    e->hnext = d->ent_free;
    d->ent_free = i + 1;
}

/* Copies bytes [from, from+len) of entry e's chain into out. */
static void chain_read(const struct eng_dns *d, const struct cent *e, size_t from, size_t len,
                       void *out)
{
    uint32_t c = e->chunk;
    for (size_t skip = from / CHUNK_BYTES; skip > 0; skip--)
        c = d->chunk_next[c];
    size_t off = from % CHUNK_BYTES, done = 0;
    while (done < len) {
        size_t n = CHUNK_BYTES - off < len - done ? CHUNK_BYTES - off : len - done;
        memcpy((unsigned char *)out + done, d->chunks + (size_t)c * CHUNK_BYTES + off, n);
        done += n;
        off = 0;
        c = d->chunk_next[c];
    }
}

static bool key_equal(const struct eng_dns *d, const struct cent *e, const char *name, size_t len)
{
    char key[ENG_DNS_NAME_BYTES_MAX];
    chain_read(d, e, 0, len, key);
    return memcmp(key, name, len) == 0;
}

/* The live entry for the key (moved to the front of the LRU list), or NIL. An expired entry
 * found on the way is removed. */
static uint32_t cache_find(struct eng_dns *d, uint64_t hash, uint16_t qtype, const char *name,
                           uint16_t len)
{
    if (d->cfg.cache_entries_max == 0)
        return NIL;
    for (uint32_t i = d->ent_buckets[hash & d->ent_mask]; i != 0; i = d->ents[i - 1].hnext) {
        struct cent *e = &d->ents[i - 1];
        if (e->hash != hash || e->qtype != qtype || e->key_len != len ||
            !key_equal(d, e, name, len))
            continue;
        if (eng_now_ms(d->sh) >= e->expires_ms) {
            d->st.cache_expired++;
            cache_remove(d, i - 1);
            return NIL;
        }
        lru_unlink(d, i - 1);
        lru_push_front(d, i - 1);
        return i - 1;
    }
    return NIL;
}

static void chain_write(struct eng_dns *d, uint32_t first, const void *src, size_t len, size_t *pos)
{
    uint32_t c = first;
    for (size_t skip = *pos / CHUNK_BYTES; skip > 0; skip--)
        c = d->chunk_next[c];
    size_t off = *pos % CHUNK_BYTES, done = 0;
    while (done < len) {
        size_t n = CHUNK_BYTES - off < len - done ? CHUNK_BYTES - off : len - done;
        memcpy(d->chunks + (size_t)c * CHUNK_BYTES + off, (const unsigned char *)src + done, n);
        done += n;
        off = 0;
        c = d->chunk_next[c];
    }
    *pos += len;
}

/* Takes need chunks off the free list, linked in order. */
static uint32_t chunks_take(struct eng_dns *d, uint32_t need)
{
    ENG_ASSERT(need >= 1);
    ENG_ASSERT(d->chunks_free_count >= need);
    uint32_t first = d->chunk_free, c = first;
    for (uint32_t k = 1; k < need; k++)
        c = d->chunk_next[c];
    d->chunk_free = d->chunk_next[c];
    d->chunks_free_count -= need;
    return first;
}

static void cache_insert(struct eng_dns *d, uint64_t hash, uint16_t qtype, const char *name,
                         uint16_t len, const unsigned char *msg, size_t msg_len, uint32_t ttl_s)
{
    if (d->cfg.cache_entries_max == 0 || ttl_s == 0)
        return;
    uint32_t need = (uint32_t)((len + msg_len + CHUNK_BYTES - 1) / CHUNK_BYTES);
    if (msg_len > d->cfg.cache_answer_bytes_max || need > d->chunk_count) {
        d->st.cache_too_big++;
        return;
    }
    uint32_t old = cache_find(d, hash, qtype, name, len);
    if (old != NIL)
        cache_remove(d, old);
    while (d->ent_free == 0 || d->chunks_free_count < need) {
        ENG_ASSERT(d->lru_tail != NIL);
        d->st.cache_evictions++;
        cache_remove(d, d->lru_tail);
    }
    uint32_t i = d->ent_free - 1;
    struct cent *e = &d->ents[i];
    d->ent_free = e->hnext;
    if (ttl_s > d->cfg.ttl_max_s)
        ttl_s = d->cfg.ttl_max_s;
    *e = (struct cent){.hash = hash,
                       .expires_ms = eng_now_ms(d->sh) + (uint64_t)ttl_s * 1000u,
                       .chunk = chunks_take(d, need),
                       .chunk_count = need,
                       .msg_len = (uint32_t)msg_len,
                       .qtype = qtype,
                       .key_len = len};
    size_t pos = 0;
    chain_write(d, e->chunk, name, len, &pos);
    chain_write(d, e->chunk, msg, msg_len, &pos);
    e->hnext = d->ent_buckets[hash & d->ent_mask];
    d->ent_buckets[hash & d->ent_mask] = i + 1;
    lru_push_front(d, i);
    d->st.cache_inserts++;
    d->st.cache_entries++;
    d->st.cache_bytes += (uint64_t)len + msg_len;
}

void eng_dns_cache_clear(struct eng_dns *d)
{
    ENG_ASSERT(eng_shard_self() == d->sh);
    while (d->lru_head != NIL)
        cache_remove(d, d->lru_head);
}

/* ---------------------------------------------------------------------------------------------
 * Delivery
 */

static void deliver(struct eng_dns *d, struct eng_dns_op *op, struct eng_dns_answer *ans)
{
    ENG_ASSERT(op->state == OP_QUEUED || op->state == OP_WAITING);
    ENG_ASSERT(d->ops_count > 0);
    d->ops_count--;
    op->state = OP_IDLE;
    op->next = NULL;
    d->st.answers[ans->status]++;
    ans->qname = d->qname;
    op->done(op->ctx, ans);
}

static void deliver_status(struct eng_dns *d, struct eng_dns_op *op, enum eng_dns_status st)
{
    struct eng_dns_answer ans;
    memset(&ans, 0, sizeof(ans));
    ans.status = st;
    ans.qtype = op->qtype;
    ans.rrs = d->pbuf.rrs;
    if (op->name_len == OP_NAME_BAD)
        d->qname[0] = '\0';
    else
        memcpy(d->qname, op->name, (size_t)op->name_len + 1);
    deliver(d, op, &ans);
}

/* A cache hit: the stored message parsed again, its TTLs reduced to what is left. */
static void deliver_cached(struct eng_dns *d, struct eng_dns_op *op, uint32_t i)
{
    const struct cent *e = &d->ents[i];
    chain_read(d, e, e->key_len, e->msg_len, d->msg_buf);
    uint64_t left_ms = e->expires_ms - eng_now_ms(d->sh);
    uint32_t left_s = (uint32_t)((left_ms + 999) / 1000);
    struct eng_dns_answer ans;
    int rc = eng_dns_parse(d->msg_buf, e->msg_len, op->qtype, d->cfg.neg_ttl_s, &d->pbuf, &ans);
    ENG_ASSERT(rc == 0); /* it parsed before it was stored */
    ans.ad = (d->msg_buf[3] & 0x20u) != 0;
    ans.ttl_s = left_s;
    for (uint32_t k = 0; k < ans.count; k++)
        if (d->pbuf.rrs[k].ttl_s > left_s)
            d->pbuf.rrs[k].ttl_s = left_s;
    ans.from_cache = true;
    memcpy(d->qname, op->name, (size_t)op->name_len + 1);
    d->st.cache_hits++;
    deliver(d, op, &ans);
}

/* ---------------------------------------------------------------------------------------------
 * c-ares: sockets and timers
 */

static void ares_timer_update(struct eng_dns *d)
{
    if (!d->ch_ok || d->stopping)
        return;
    struct timeval tv, *tp = ares_timeout(d->ch, NULL, &tv);
    if (!tp) {
        eng_timer_cancel(d->sh, &d->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tp->tv_sec * 1000u + ((uint64_t)tp->tv_usec + 999u) / 1000u;
    eng_timer_arm(d->sh, &d->ares_timer, ms);
}

static void on_ares_timer(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_dns *d = (struct eng_dns *)((char *)t - offsetof(struct eng_dns, ares_timer));
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ares_timer_update(d);
}

static void on_sock_ready(struct eng_shard *sh, struct eng_poll *p, uint32_t revents)
{
    (void)sh;
    struct dsock *s = (struct dsock *)((char *)p - offsetof(struct dsock, poll));
    struct eng_dns *d = s->d;
    int fd = s->fd;
    /* Errors and hang-ups are read by c-ares from the socket itself. */
    ares_socket_t rfd = (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = (revents & POLLOUT) ? fd : ARES_SOCKET_BAD;
    ares_process_fd(d->ch, rfd, wfd); /* may close s (on_sock_state) */
    ares_timer_update(d);
}

static struct dsock *sock_find(struct eng_dns *d, int fd)
{
    for (uint32_t i = 0; i < d->cfg.socks_max; i++)
        if (d->socks[i].fd == fd)
            return &d->socks[i];
    return NULL;
}

/* c-ares opened, changed or closed a socket. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct eng_dns *d = data;
    struct dsock *s = sock_find(d, fd);
    uint32_t events = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
    if (events == 0) {
        if (s) {
            eng_poll_stop(d->sh, &s->poll);
            s->fd = -1;
        }
        return;
    }
    if (s) {
        int rc = eng_poll_update(d->sh, &s->poll, events);
        ENG_ASSERT(rc == 0); /* events is valid and s is started */
        return;
    }
    s = sock_find(d, -1);
    if (!s || eng_poll_start(d->sh, &s->poll, fd, events, on_sock_ready) != 0) {
        d->st.socks_full++; /* its queries time out */
        return;
    }
    s->fd = fd;
}

/* ---------------------------------------------------------------------------------------------
 * In-flight queries
 */

static struct dq *dq_find(struct eng_dns *d, uint64_t hash, uint16_t qtype, const char *name,
                          uint16_t len)
{
    for (uint32_t i = d->dq_buckets[hash & d->dq_mask]; i != 0; i = d->dqs[i - 1].hnext) {
        struct dq *q = &d->dqs[i - 1];
        if (q->hash == hash && q->qtype == qtype && q->name_len == len &&
            memcmp(q->name, name, len) == 0)
            return q;
    }
    return NULL;
}

static void dq_release(struct eng_dns *d, struct dq *q)
{
    ENG_ASSERT(q->used);
    uint32_t *link = &d->dq_buckets[q->hash & d->dq_mask];
    while (*link != q->idx + 1) {
        ENG_ASSERT(*link != 0);
        link = &d->dqs[*link - 1].hnext;
    }
    *link = q->hnext;
    q->used = false;
    q->hnext = d->dq_free;
    d->dq_free = q->idx + 1;
    d->st.inflight--;
}

static enum eng_dns_status status_of_ares(int status)
{
    switch (status) {
    case ARES_ETIMEOUT:
        return ENG_DNS_TIMEOUT;
    case ARES_EBADNAME:
        return ENG_DNS_BADNAME;
    case ARES_ESERVFAIL:
        return ENG_DNS_SERVFAIL;
    case ARES_EREFUSED:
    case ARES_ENOTIMP:
    /* c-ares 1.18 ends a query whose every server answered SERVFAIL, REFUSED or NOTIMP (it
     * tries the next server on those) with the ECONNREFUSED it started with, no message: seen
     * against nsd. A refused connection (ICMP port unreachable) looks the same. */
    case ARES_ECONNREFUSED:
        return ENG_DNS_REFUSED;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return ENG_DNS_CANCELLED;
    default:
        return ENG_DNS_ERROR;
    }
}

static void flush_soon(struct eng_dns *d)
{
    if (d->q_head && !d->stopping && !eng_timer_armed(&d->flush_timer))
        eng_timer_arm(d->sh, &d->flush_timer, 0);
}

/* c-ares is done with a query: parse, cache, answer every waiter. */
static void on_ares_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dq *q = arg;
    struct eng_dns *d = q->d;
    struct eng_dns_answer ans;
    bool parsed =
        abuf != NULL && alen > 0 && status != ARES_EDESTRUCTION && status != ARES_ECANCELLED &&
        eng_dns_parse(abuf, (size_t)alen, q->qtype, d->cfg.neg_ttl_s, &d->pbuf, &ans) == 0;
    if (parsed)
        ans.ad = (abuf[3] & 0x20u) != 0; /* header flags: RA Z AD CD RCODE */
    if (!parsed) {
        memset(&ans, 0, sizeof(ans));
        ans.status = status_of_ares(status);
        ans.qtype = q->qtype;
        ans.rrs = d->pbuf.rrs;
    }
    if (ans.truncated)
        d->st.rrs_truncated++;
    if (parsed && !d->stopping &&
        (ans.status == ENG_DNS_OK || ans.status == ENG_DNS_NODATA ||
         ans.status == ENG_DNS_NXDOMAIN))
        cache_insert(d, q->hash, q->qtype, q->name, q->name_len, abuf, (size_t)alen, ans.ttl_s);
    memcpy(d->qname, q->name, (size_t)q->name_len + 1);
    struct eng_dns_op *op = q->head;
    q->head = q->tail = NULL;
    dq_release(d, q); /* a done asking the same again starts afresh (or hits the cache) */
    while (op) {
        struct eng_dns_op *next = op->next;
        deliver(d, op, &ans);
        op = next;
    }
    flush_soon(d); /* a slot is free for a queued op */
}

/* DNSSEC-dependent types (TLSA, OPENPGPKEY): their users trust a record only when the resolver
 * validated it, which it reports with the AD bit; RFC 6840 section 5.7 makes a resolver set AD
 * in its response only when the query had AD (or DO) set. ares_query cannot set header bits, so
 * these are built with ares_create_query, AD set, and sent with ares_send (same retries, server
 * rotation and callback). Returns false (the caller uses ares_query) for other types, or when
 * building fails (memory), so a query is always started. */
static bool query_with_ad(struct eng_dns *d, struct dq *q)
{
    if (q->qtype != ENG_DNS_T_TLSA && q->qtype != ENG_DNS_T_OPENPGPKEY)
        return false;
    unsigned char *buf = NULL;
    int len = 0;
    if (ares_create_query(q->name, 1 /* IN */, q->qtype, 0 /* ares_send sets the id */, 1 /* RD */,
                          &buf, &len, 0 /* no EDNS */) != ARES_SUCCESS)
        return false;
    ENG_ASSERT(len > 12);
    buf[3] |= 0x20u; /* AD */
    ares_send(d->ch, buf, len, on_ares_done, q); /* copies buf; may call back now */
    ares_free_string(buf);
    return true;
}

/* Starts a c-ares query for op in a free slot; op becomes its first waiter. */
static void dq_start(struct eng_dns *d, struct eng_dns_op *op)
{
    ENG_ASSERT(d->dq_free != 0);
    struct dq *q = &d->dqs[d->dq_free - 1];
    ENG_ASSERT(!q->used);
    d->dq_free = q->hnext;
    q->used = true;
    q->hash = op->hash;
    q->qtype = op->qtype;
    q->name_len = op->name_len;
    memcpy(q->name, op->name, (size_t)op->name_len + 1);
    op->state = OP_WAITING;
    op->next = NULL;
    q->head = q->tail = op;
    q->hnext = d->dq_buckets[q->hash & d->dq_mask];
    d->dq_buckets[q->hash & d->dq_mask] = q->idx + 1;
    d->st.sent++;
    if (++d->st.inflight > d->st.inflight_max_seen)
        d->st.inflight_max_seen = d->st.inflight;
    if (!query_with_ad(d, q))
        ares_query(d->ch, q->name, 1 /* IN */, q->qtype, on_ares_done, q); /* may call back now */
}

/* Takes one queued op as far as it goes. Returns false when it must wait for a free slot (it
 * is then back at the head of the queue). */
static bool flush_one(struct eng_dns *d, struct eng_dns_op *op)
{
    if (op->name_len == OP_NAME_BAD) {
        deliver_status(d, op, ENG_DNS_BADNAME);
        return true;
    }
    uint32_t hit = cache_find(d, op->hash, op->qtype, op->name, op->name_len);
    if (hit != NIL) {
        deliver_cached(d, op, hit);
        return true;
    }
    struct dq *q = dq_find(d, op->hash, op->qtype, op->name, op->name_len);
    if (q) {
        op->state = OP_WAITING;
        op->next = NULL;
        q->tail->next = op;
        q->tail = op;
        d->st.dedup_hits++;
        return true;
    }
    if (d->dq_free == 0) {
        op->next = d->q_head;
        d->q_head = op;
        if (!d->q_tail)
            d->q_tail = op;
        d->q_count++;
        d->st.queued++;
        return false;
    }
    dq_start(d, op);
    return true;
}

/* The queued ops present at the start, in order; later ones wait for the next turn, so a done
 * that keeps asking cannot hold the loop. */
static void on_flush(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_dns *d = (struct eng_dns *)((char *)t - offsetof(struct eng_dns, flush_timer));
    for (uint32_t n = d->q_count; n > 0 && d->q_head && !d->stopping; n--) {
        struct eng_dns_op *op = d->q_head;
        d->q_head = op->next;
        if (!d->q_head)
            d->q_tail = NULL;
        d->q_count--;
        if (!flush_one(d, op))
            break;
    }
    if (d->dq_free != 0)
        flush_soon(d);
    ares_timer_update(d);
}

int eng_dns_query(struct eng_dns *d, struct eng_dns_op *op, const char *name, size_t name_len,
                  uint16_t qtype, eng_dns_done_fn *done, void *ctx)
{
    ENG_ASSERT(d != NULL);
    ENG_ASSERT(eng_shard_self() == d->sh);
    if (op == NULL || name == NULL || done == NULL || qtype == 0 || op->state != OP_IDLE)
        return -EINVAL;
    if (d->stopping)
        return -ESHUTDOWN;
    if (d->ops_count >= d->cfg.ops_max) {
        d->st.queue_full++;
        return -ENOBUFS;
    }
    op->dns = d;
    op->done = done;
    op->ctx = ctx;
    op->qtype = qtype;
    op->name_len = name_normalize(name, name_len, op->name);
    op->hash = op->name_len == OP_NAME_BAD ? 0 : key_hash(d, qtype, op->name, op->name_len);
    op->state = OP_QUEUED;
    op->next = NULL;
    if (d->q_tail)
        d->q_tail->next = op;
    else
        d->q_head = op;
    d->q_tail = op;
    d->q_count++;
    d->ops_count++;
    d->st.queries++;
    flush_soon(d);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
    lib_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

/* Everything but the channel: sizing is the configuration's arithmetic, nothing more. */
static int tables_alloc(struct eng_dns *d)
{
    const struct eng_dns_config *c = &d->cfg;
    /* In-flight slots: inflight_max, indexed by a table twice as large (short chains). */
    d->dqs = calloc(c->inflight_max, sizeof(*d->dqs));
    d->dq_mask = (uint32_t)pow2_at_least(2u * c->inflight_max) - 1;
    d->dq_buckets = calloc((size_t)d->dq_mask + 1, sizeof(uint32_t));
    /* Cache: entries_max entries (indexed the same way) and cache_bytes_max of 64-byte chunks;
     * an entry takes ceil((name + message) / 64) chunks. */
    uint32_t ents = c->cache_entries_max ? c->cache_entries_max : 1;
    d->ents = calloc(ents, sizeof(*d->ents));
    d->ent_mask = (uint32_t)pow2_at_least(2u * ents) - 1;
    d->ent_buckets = calloc((size_t)d->ent_mask + 1, sizeof(uint32_t));
    d->chunk_count = c->cache_entries_max ? c->cache_bytes_max / CHUNK_BYTES : 1;
    d->chunks = malloc((size_t)d->chunk_count * CHUNK_BYTES);
    d->chunk_next = calloc(d->chunk_count, sizeof(uint32_t));
    d->socks = calloc(c->socks_max, sizeof(*d->socks));
    d->grave = calloc(c->socks_max, sizeof(*d->grave));
    d->msg_buf = malloc(c->cache_answer_bytes_max);
    if (!d->dqs || !d->dq_buckets || !d->ents || !d->ent_buckets || !d->chunks || !d->chunk_next ||
        !d->socks || !d->grave || !d->msg_buf)
        return -ENOMEM;
    for (uint32_t i = c->inflight_max; i-- > 0;) {
        d->dqs[i] = (struct dq){.d = d, .idx = i, .hnext = d->dq_free};
        d->dq_free = i + 1;
    }
    for (uint32_t i = ents; i-- > 0;) {
        d->ents[i].hnext = d->ent_free;
        d->ent_free = i + 1;
    }
    for (uint32_t i = d->chunk_count; i-- > 0;) {
        d->chunk_next[i] = d->chunk_free;
        d->chunk_free = i;
    }
    d->chunks_free_count = d->chunk_count;
    d->lru_head = d->lru_tail = NIL;
    for (uint32_t i = 0; i < c->socks_max; i++)
        d->socks[i] = (struct dsock){.d = d, .fd = -1};
    return 0;
}

/* c-ares' socket calls, as c-ares would make them, except that a socket it closes stays open
 * until the next loop turn. Its poll was stopped just before (on_sock_state), and the engine
 * drops that poll at the end of the turn; a new socket taking the same fd number in the
 * meantime (c-ares reopens at once after an error) would meet the old poll in the epoll
 * backend. A full graveyard closes at once. */
static ares_socket_t sf_socket(int domain, int type, int protocol, void *data)
{
    (void)data;
    /* c-ares configures only the sockets it opens itself: non-blocking, and TCP_NODELAY. */
    int fd = socket(domain, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
    int one = 1;
    if (fd >= 0 && type == SOCK_STREAM)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd >= 0 ? fd : ARES_SOCKET_BAD;
}

static void on_grave(struct eng_shard *sh, struct eng_timer *t)
{
    (void)sh;
    struct eng_dns *d = (struct eng_dns *)((char *)t - offsetof(struct eng_dns, grave_timer));
    for (uint32_t i = 0; i < d->grave_count; i++)
        close(d->grave[i]);
    d->grave_count = 0;
}

static int sf_close(ares_socket_t fd, void *data)
{
    struct eng_dns *d = data;
    if (d->stopping || d->grave_count == d->cfg.socks_max)
        return close(fd);
    d->grave[d->grave_count++] = fd;
    if (!eng_timer_armed(&d->grave_timer))
        eng_timer_arm(d->sh, &d->grave_timer, 1);
    return 0;
}

static int sf_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *data)
{
    (void)data;
    return connect(fd, sa, len);
}

static ares_ssize_t sf_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags,
                                struct sockaddr *from, ares_socklen_t *from_len, void *data)
{
    (void)data;
    return recvfrom(fd, buf, len, flags, from, from_len);
}

static ares_ssize_t sf_sendv(ares_socket_t fd, const struct iovec *iov, int iov_count, void *data)
{
    (void)data;
    return writev(fd, iov, iov_count);
}

static const struct ares_socket_functions socket_functions = {
    sf_socket, sf_close, sf_connect, sf_recvfrom, sf_sendv,
};

static int channel_open(struct eng_dns *d, char *err, size_t err_len)
{
    pthread_once(&lib_once, lib_init);
    if (lib_rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(lib_rc));
        return -EIO;
    }
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    /* NOALIASES: ignore $HOSTALIASES. No search list: ares_query never applies one. STAYOPEN:
     * keep the UDP sockets between queries (no socket and close per query; and a closed fd
     * reused at once by the next socket is what the epoll backend cannot yet poll again). */
    o.flags = ARES_FLAG_NOALIASES | ARES_FLAG_STAYOPEN;
    o.timeout = (int)d->cfg.timeout_ms;
    o.tries = (int)d->cfg.tries;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
    int rc = ares_init_options(&d->ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares cannot initialise: %s", ares_strerror(rc));
        return -EIO;
    }
    d->ch_ok = true;
    ares_set_socket_functions(d->ch, &socket_functions, d);
    if (d->servers[0] != '\0' && (rc = ares_set_servers_ports_csv(d->ch, d->servers)) != 0) {
        snprintf(err, err_len, "c-ares refused the DNS servers '%s': %s", d->servers,
                 ares_strerror(rc));
        return -EINVAL;
    }
    return 0;
}

int eng_dns_create(struct eng_shard *sh, const struct eng_dns_config *cfg, struct eng_dns **out,
                   char *err, size_t err_len)
{
    ENG_ASSERT(sh != NULL);
    ENG_ASSERT(eng_shard_self() == sh);
    *out = NULL;
    int rc = config_check(cfg, err, err_len);
    if (rc != 0)
        return rc;
    struct eng_dns *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "DNS client: out of memory");
        return -ENOMEM;
    }
    d->sh = sh;
    d->cfg = *cfg;
    d->cfg.servers = NULL;
    if (cfg->servers && cfg->servers[0] &&
        (rc = servers_normalize(cfg->servers, d->servers, sizeof(d->servers), err, err_len)) != 0) {
        free(d);
        return rc;
    }
    if (getrandom(&d->seed, sizeof(d->seed), GRND_NONBLOCK) != (ssize_t)sizeof(d->seed))
        d->seed = eng_clock_us() * 0x9E3779B97F4A7C15ull; /* a weaker seed beats failing */
    eng_timer_init(&d->flush_timer, on_flush);
    eng_timer_init(&d->ares_timer, on_ares_timer);
    eng_timer_init(&d->grave_timer, on_grave);
    if (tables_alloc(d) != 0) {
        snprintf(err, err_len, "DNS client: out of memory for its tables and cache");
        eng_dns_destroy(d);
        return -ENOMEM;
    }
    if ((rc = channel_open(d, err, err_len)) != 0) {
        eng_dns_destroy(d);
        return rc;
    }
    *out = d;
    return 0;
}

void eng_dns_destroy(struct eng_dns *d)
{
    if (!d)
        return;
    ENG_ASSERT(eng_shard_self() == d->sh);
    d->stopping = true;
    eng_timer_cancel(d->sh, &d->flush_timer);
    eng_timer_cancel(d->sh, &d->ares_timer);
    if (d->ch_ok)
        ares_destroy(d->ch); /* every in-flight query: on_ares_done with ARES_EDESTRUCTION */
    while (d->q_head) {
        struct eng_dns_op *op = d->q_head;
        d->q_head = op->next;
        d->q_count--;
        deliver_status(d, op, ENG_DNS_CANCELLED);
    }
    d->q_tail = NULL;
    ENG_ASSERT(d->ops_count == 0);
    for (uint32_t i = 0; d->socks && i < d->cfg.socks_max; i++)
        if (d->socks[i].fd >= 0)
            eng_poll_stop(d->sh, &d->socks[i].poll);
    eng_timer_cancel(d->sh, &d->grave_timer);
    on_grave(d->sh, &d->grave_timer);
    free(d->dqs);
    free(d->dq_buckets);
    free(d->ents);
    free(d->ent_buckets);
    free(d->chunks);
    free(d->chunk_next);
    free(d->socks);
    free(d->grave);
    free(d->msg_buf);
    free(d);
}

void eng_dns_stats_get(const struct eng_dns *d, struct eng_dns_stats *out)
{
    *out = d->st;
}
