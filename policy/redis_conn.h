/*
 * redis_conn.h: the Redis connection module inside policy/ (spec 9.3): its pol_conn_ops for the
 * core's connection registry, and the operations Greylist's Redis stores and the Redis session
 * cache use. Internal to policy/ (no plugin API header yet: a pol/redis.h would be the place).
 *
 * <Connection NAME> module = "Redis" options, as 2.05's Connection/Redis.pm: server
 * ("host:port", default 127.0.0.1:6379; "[v6addr]:port" too; a host name is resolved at
 * every connection attempt, off the shard), sock (a Unix socket path, used instead of server), password (AUTH), db (SELECT,
 * default 0), debug (accepted, unused), sentinels + service (Redis Sentinel, used before server
 * and sock as in 2.05: "host:port" addresses separated by commas or blanks, default port 26379,
 * names resolved per attempt, at most ENG_REDIS_SENTINELS_MAX; every connection attempt
 * asks one of them, in turn, for the master of `service`). sentinels without service are
 * ignored, as 2.05 ignores them.
 *
 * Each shard has its own client (engine/redis.c: hiredis async on the shard's loop, pipelined,
 * deadlines, reconnect with backoff, fail-fast while down). Threads: lookup at start-up (main
 * thread); commands on a shard thread for a connection started there; done runs later on that
 * shard, never inside the call.
 */
#ifndef POL_REDIS_CONN_H
#define POL_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "eng/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

struct pol_server;
struct pol_plugin;
struct pol_redis;

extern const struct pol_conn_ops pol_conn_Redis;

/* The Redis connection named name: NULL with "no connection NAME configured!" or "connection
 * NAME is not a Redis connection" in err. */
struct pol_redis *pol_redis_lookup(struct pol_plugin *p, const char *name, char *err,
                                   size_t err_len);
/* The same for the session cache (no plugin): NULL when absent or of another module. */
struct pol_redis *pol_redis_of_server(const struct pol_server *s, const char *name);
const char *pol_redis_name(const struct pol_redis *rc);

/* One command on sh's client (eng_redis_command: the same returns, statuses and reply). */
int pol_redis_command(struct eng_shard *sh, struct pol_redis *rc, int argc,
                      const char *const *argv, const size_t *argv_len, uint32_t timeout_ms,
                      eng_redis_done_fn *done, void *ctx);

/* Counters of sh's client (on sh's thread). */
void pol_redis_get_stats(struct eng_shard *sh, struct pol_redis *rc, struct eng_redis_stats *out);

#ifdef __cplusplus
}
#endif

#endif
