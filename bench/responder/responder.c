/*
 * responder.c: ringpolicyd-bare, the throughput ceiling for benchmarks. A policy responder built
 * on engine/ alone: it splits the input into requests (lines up to an empty line, found with one
 * memmem per request; an empty line on its own is an empty request) and answers every request
 * with "action=dunno" and an empty line, batching the answers of one read into one send. It does
 * not parse attributes and does not use policy/.
 *
 * Usage: ringpolicyd-bare [--listen ADDR]... [--shards N] [--backend auto|uring|epoll]
 *                         [--conns-max N]
 * ADDR is 127.0.0.1:PORT, [::1]:PORT or unix:/path (default 127.0.0.1:10040). Runs until
 * SIGTERM or SIGINT, then prints the engine's counters.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng/engine.h"
#include "eng/log.h"

#define BARE_LISTENS_MAX 16
#define BARE_REPLY "action=dunno\n\n"
#define BARE_REPLY_BATCH 256 /* replies per eng_conn_send */

#define R16                                                                                        \
    BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY        \
        BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY BARE_REPLY
/* 256 replies back to back: the answers of one read go out in one eng_conn_send. */
static const char reply_block[] = R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16 R16;
_Static_assert(sizeof(reply_block) - 1 == BARE_REPLY_BATCH * (sizeof(BARE_REPLY) - 1),
               "one block holds a batch of replies");

/* Counts the complete requests at the start of buf; *used is the bytes they take. */
static size_t requests_scan(const char *buf, size_t len, size_t *used)
{
    size_t pos = 0, count = 0;
    while (pos < len) {
        if (buf[pos] == '\n') { /* an empty request */
            pos++;
            count++;
            continue;
        }
        const char *end = memmem(buf + pos, len - pos, "\n\n", 2);
        if (!end)
            break;
        pos = (size_t)(end - buf) + 2;
        count++;
    }
    *used = pos;
    return count;
}

static size_t bare_on_bytes(void *shard_app, struct eng_conn *c, const char *buf, size_t len)
{
    (void)shard_app;
    size_t used;
    size_t count = requests_scan(buf, len, &used);
    while (count > 0) {
        size_t n = count < BARE_REPLY_BATCH ? count : BARE_REPLY_BATCH;
        if (eng_conn_send(c, reply_block, n * (sizeof(BARE_REPLY) - 1)) < 0) {
            eng_conn_close(c); /* the client does not read its answers */
            return len;
        }
        count -= n;
    }
    return used;
}

static const struct eng_app_ops bare_ops = {
    .on_bytes = bare_on_bytes,
};

static int listen_parse(const char *arg, struct eng_listen *l)
{
    memset(l, 0, sizeof(*l));
    if (strncmp(arg, "unix:", 5) == 0 || arg[0] == '/') {
        const char *path = arg[0] == '/' ? arg : arg + 5;
        if (strlen(path) >= sizeof(l->path))
            return -ENAMETOOLONG;
        l->kind = ENG_LISTEN_UNIX;
        strcpy(l->path, path);
        return 0;
    }
    char host[256];
    const char *colon = strrchr(arg, ':');
    if (!colon || (size_t)(colon - arg) >= sizeof(host))
        return -EINVAL;
    memcpy(host, arg, (size_t)(colon - arg));
    host[colon - arg] = '\0';
    char *h = host;
    if (h[0] == '[') { /* [::1]:port */
        h++;
        char *rb = strchr(h, ']');
        if (!rb)
            return -EINVAL;
        *rb = '\0';
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    if (getaddrinfo(h, colon + 1, &hints, &ai) != 0)
        return -EINVAL;
    l->kind = ENG_LISTEN_TCP;
    memcpy(&l->addr, ai->ai_addr, ai->ai_addrlen);
    l->addr_len = ai->ai_addrlen;
    l->v6only = true;
    freeaddrinfo(ai);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: ringpolicyd-bare [--listen ADDR]... [--shards N] "
                    "[--backend auto|uring|epoll] [--conns-max N]\n"
                    "ADDR: 127.0.0.1:PORT, [::1]:PORT or unix:/path\n");
    exit(2);
}

static void stats_print(const struct eng *e)
{
    struct eng_stats st;
    eng_stats_sum(e, &st);
    fprintf(stderr,
            "ringpolicyd-bare: accepted %llu, bytes in %llu out %llu, turns %llu (slow %llu, "
            "max %llu us), recv_enobufs %llu, short_sends %llu, accept_paused %llu\n",
            (unsigned long long)st.accepted, (unsigned long long)st.bytes_in,
            (unsigned long long)st.bytes_out, (unsigned long long)st.turns,
            (unsigned long long)st.turns_slow, (unsigned long long)st.turn_us_max,
            (unsigned long long)st.recv_enobufs, (unsigned long long)st.short_sends,
            (unsigned long long)st.accept_paused);
}

int main(int argc, char **argv)
{
    struct eng_listen listens[BARE_LISTENS_MAX];
    size_t nl = 0;
    struct eng_config cfg;
    eng_config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (strcmp(a, "--listen") == 0) {
            if (nl == BARE_LISTENS_MAX || listen_parse(v, &listens[nl]) < 0) {
                fprintf(stderr, "ringpolicyd-bare: bad or too many --listen: %s\n", v);
                return 2;
            }
            nl++;
        } else if (strcmp(a, "--shards") == 0) {
            cfg.shard_count = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--conns-max") == 0) {
            cfg.limits.conns_per_shard_max = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--backend") == 0) {
            cfg.backend = strcmp(v, "uring") == 0   ? ENG_BACKEND_URING
                          : strcmp(v, "epoll") == 0 ? ENG_BACKEND_EPOLL
                          : strcmp(v, "auto") == 0  ? ENG_BACKEND_AUTO
                                                    : (usage(), ENG_BACKEND_AUTO);
        } else {
            usage();
        }
    }
    if (nl == 0 && listen_parse("127.0.0.1:10040", &listens[nl++]) < 0)
        return 2;
    cfg.listens = listens;
    cfg.listen_count = nl;
    cfg.ops = &bare_ops;
    struct eng *e;
    char err[512];
    int rc = eng_create(&cfg, &e, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "ringpolicyd-bare: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < nl; i++) {
        struct sockaddr_storage a;
        socklen_t alen;
        char name[200];
        if (eng_listen_bound(e, i, &a, &alen) == 0) {
            eng_addr_format((struct sockaddr *)&a, alen, name, sizeof(name));
            fprintf(stderr, "ringpolicyd-bare: listening on %s\n", name);
        }
    }
    fprintf(stderr,
            "ringpolicyd-bare: %u shards, backend %s, conns_per_shard_max %u, "
            "recv %u x %u B\n",
            eng_shard_count_of(e), eng_backend_desc(e), cfg.limits.conns_per_shard_max,
            cfg.limits.recv_buf_count, cfg.limits.recv_buf_bytes);
    rc = eng_run(e);
    stats_print(e);
    eng_destroy(e);
    return rc < 0 ? 1 : 0;
}
